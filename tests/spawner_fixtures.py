"""Pytest fixtures for the Kubernetes profile spawner's tests (a pytest plugin, registered in
tests/conftest.py, so test modules use them without importing them by name).

``config_path``: the spawner tests' admin config in a temporary file. ``make_spawner``: makes
``ProfileSpawner`` instances for fake users against the Kubernetes API test server, and stops
them and the shared watches after the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from kubelab.tests.profiles_support import CONFIG_YAML
from kubelab.tests.spawner_support import FakeUser, cleanup_shared_watches, point_kubespawner_at


@pytest.fixture
def config_path(tmp_path: Path) -> str:
    path = tmp_path / "kubelab.yaml"
    path.write_text(CONFIG_YAML)
    return str(path)


@pytest_asyncio.fixture
async def make_spawner(kube_cluster: Any, config_path: str) -> AsyncIterator[Callable[..., Any]]:
    from kubelab.spawner.kubernetes import ProfileSpawner

    kube_cluster.require_emulator()
    point_kubespawner_at(str(kube_cluster.kubeconfig_path))
    made: list[Any] = []

    def make(name: str = "alice", groups: tuple[str, ...] = ("ml",), **traits: Any) -> ProfileSpawner:
        settings: dict[str, Any] = dict(
            kubelab_config=config_path, gpu_unschedulable_timeout=1.0, start_timeout=20,
            k8s_api_request_timeout=5, k8s_api_request_retry_timeout=10,
            storage_pvc_ensure=False, events_enabled=True,
        )
        settings.update(traits)
        s = ProfileSpawner(_mock=True, user=FakeUser(name, list(groups)), **settings)
        s.api_token = "token"
        made.append(s)
        return s

    yield make
    for s in made:
        try:
            await asyncio.wait_for(s.stop(now=True), 10)
        except Exception:
            pass
    await cleanup_shared_watches()
