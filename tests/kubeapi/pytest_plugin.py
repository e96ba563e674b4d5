"""pytest fixtures for the Kubernetes API test server (``pytest_plugins = [this module]``).

* ``kube_cluster``: the cluster, reset before each test — a :class:`KubeCluster` (emulated, one per
  session, in its own thread) or, when ``KUBELAB_TEST_KUBECONFIG`` is set, a :class:`RealCluster`.
  After the test, a crash inside the emulator fails it.
* ``kube_namespace``: a fresh namespace for the test, deleted afterwards (safe on a real cluster).
* ``kube_api`` / ``kube_sync_api``: a ``kubernetes_asyncio`` / ``kubernetes`` ApiClient, closed
  after the test.
* ``kube_spawner_env``: points KubeSpawner (its process-global client configuration, reflectors and
  shared clients) at the cluster for one test, and undoes it.

Emulator-only powers (``add_node``, ``finish_pod``, ``faults``, ``requests``...) raise
:class:`EmulatorOnly` on a real cluster, which this plugin reports as a skip; call
``kube_cluster.require_emulator()`` first to skip before doing anything.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import kubernetes
import kubernetes_asyncio
import pytest
import pytest_asyncio

from .cluster import EmulatorOnly, KubeCluster, RealCluster

__all__ = [
    "kube_cluster",
    "kube_namespace",
    "kube_api",
    "kube_sync_api",
    "kube_spawner_env",
    "KUBECONFIG_ENV",
]

#: point the fixtures at a real cluster by naming its kubeconfig in this variable
KUBECONFIG_ENV = "KUBELAB_TEST_KUBECONFIG"

Cluster = KubeCluster | RealCluster


def _skip_emulator_only(outcome: Any) -> None:
    excinfo = outcome.excinfo
    if excinfo is not None and isinstance(excinfo[1], EmulatorOnly):
        outcome.force_exception(pytest.skip.Exception(str(excinfo[1]), _use_item_location=True))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """An emulator-only power used by a fixture skips the test on a real cluster."""
    _skip_emulator_only((yield))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """An emulator-only power used by the test skips it on a real cluster."""
    _skip_emulator_only((yield))


@pytest.fixture(scope="session")
def kube_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the whole session (starting a server per test would dominate run time)."""
    kubeconfig = os.environ.get(KUBECONFIG_ENV)
    cluster: Cluster
    if kubeconfig:
        cluster = RealCluster(kubeconfig)
    else:
        cluster = KubeCluster(tmp_path_factory.mktemp("kubeapi")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def kube_cluster(kube_cluster_session: Cluster) -> Iterator[Cluster]:
    """The cluster, fresh for this test (emulator: reset; real cluster: untouched)."""
    kube_cluster_session.reset()
    yield kube_cluster_session
    crashes = kube_cluster_session.crashes
    if crashes:
        pytest.fail(
            "the kubeapi test server crashed during the test:\n\n" + "\n".join(crashes),
            pytrace=False,
        )


@pytest.fixture
def kube_namespace(kube_cluster: Cluster) -> Iterator[str]:
    """A namespace of the test's own, created through the API and deleted afterwards."""
    name = f"kubelab-test-{uuid.uuid4().hex[:8]}"
    with kube_cluster.sync_api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        core.create_namespace(
            {"metadata": {"name": name, "labels": {"kubelab.test/owner": "pytest"}}}
        )
        try:
            yield name
        finally:
            try:
                core.delete_namespace(name)
            except kubernetes.client.ApiException as exc:
                if exc.status != 404:
                    raise


@pytest_asyncio.fixture
async def kube_api(kube_cluster: Cluster) -> AsyncIterator[kubernetes_asyncio.client.ApiClient]:
    """A ``kubernetes_asyncio`` ApiClient on the test's event loop."""
    async with kube_cluster.async_api_client() as api:
        yield api


@pytest.fixture
def kube_sync_api(kube_cluster: Cluster) -> Iterator[kubernetes.client.ApiClient]:
    """A synchronous ``kubernetes`` ApiClient."""
    with kube_cluster.sync_api_client() as api:
        yield api


@pytest_asyncio.fixture
async def kube_spawner_env(
    kube_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[None]:
    """Make KubeSpawner (and anything using its ``load_config``/``shared_client``) use the cluster.

    KubeSpawner loads the kubeconfig once (``kubespawner.clients.load_config`` is an lru_cache) into
    ``kubernetes_asyncio``'s process-global default ``Configuration``, reading the path from
    ``KUBECONFIG`` as captured when ``kubernetes_asyncio.config`` was imported; it also keeps
    class-level reflectors and per-loop shared clients. All of that is pointed here, then undone.
    """
    from kubernetes_asyncio.config import kube_config
    from kubespawner import KubeSpawner
    from kubespawner import clients as kubespawner_clients

    monkeypatch.setenv("KUBECONFIG", str(kube_cluster.kubeconfig_path))
    monkeypatch.setattr(
        kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kube_cluster.kubeconfig_path)
    )
    saved_default = kubernetes_asyncio.client.Configuration._default
    kubespawner_clients.load_config.cache_clear()
    try:
        yield
    finally:
        await KubeSpawner._stop_all_reflectors()
        # shared_client() leaves a task per client that closes it when cancelled (JupyterHub
        # cancels all tasks at shutdown); do the same for this test's loop.
        tasks = [
            t
            for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "__qualname__", "").endswith("close_client_task")
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        kubespawner_clients.load_config.cache_clear()
        kubernetes_asyncio.client.Configuration._default = saved_default
