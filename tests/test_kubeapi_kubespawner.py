"""Plain, unmodified KubeSpawner against the Kubernetes API test server.

Built the way kubespawner's own tests build it (``tests/test_spawner.py::test_spawn_start``): a mock
user, a ``Hub()``, a traitlets ``Config``; KubeSpawner finds the server through its kubeconfig (the
plugin's ``kube_spawner_env`` fixture), as in a real deployment outside the cluster. It runs its pod
and event reflectors (list + watch with ``resourceVersion`` and ``timeoutSeconds``), creates the
pod, waits for it in the reflector, polls and deletes it — all through ``kubernetes_asyncio``. On a
real cluster the same test spawns a real pod.
"""

from __future__ import annotations

import asyncio
from typing import Any
from unittest.mock import Mock

import pytest
from jupyterhub.objects import Hub, Server
from kubernetes_asyncio import client as aclient
from traitlets.config import Config

kubespawner = pytest.importorskip("kubespawner")
from kubespawner import KubeSpawner  # noqa: E402


class MockUser(Mock):
    """The stand-in user of kubespawner's own tests."""

    name = "alice@example.com"
    server = Server()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        for key, value in kwargs.items():
            setattr(self, key, value)

    @property
    def escaped_name(self) -> str:
        return self.name

    @property
    def url(self) -> str:
        return self.server.url


def _spawner(namespace: str, user: str, **settings: Any) -> KubeSpawner:
    """A plain KubeSpawner for *user* in *namespace* (start_timeout 30 s); *settings* are more of
    its traits."""
    config = Config()
    config.KubeSpawner.namespace = namespace
    config.KubeSpawner.start_timeout = 30
    for trait, value in settings.items():
        setattr(config.KubeSpawner, trait, value)
    return KubeSpawner(
        hub=Hub(),
        user=MockUser(name=user),
        config=config,
        api_token="abc123",
        oauth_client_id="unused",
    )


async def test_plain_kubespawner_start_poll_stop(
    kube_cluster, kube_namespace, kube_api, kube_spawner_env
):
    spawner = _spawner(
        kube_namespace,
        "alice",
        cmd=["jupyterhub-singleuser"],
        environment={
            "JUPYTERHUB_API_TOKEN": "test-secret-token",
            "JUPYTERHUB_CLIENT_ID": "ignored",
        },
    )
    core = aclient.CoreV1Api(kube_api)

    # An empty spawner is not running.
    assert isinstance(await spawner.poll(), int)

    url = await asyncio.wait_for(spawner.start(), 30)
    pod = await core.read_namespaced_pod(spawner.pod_name, kube_namespace)
    assert pod.status.phase == "Running"
    assert pod.metadata.labels["hub.jupyter.org/username"] == "alice"
    assert pod.spec.containers[0].name == "notebook"
    if kube_cluster.is_emulated:
        assert url == f"http://{kube_cluster.settings.pod_ip}:8888"
        # KubeSpawner watched rather than polled: one list + a watch per reflector.
        pod_requests = kube_cluster.requests.filter(resource="pods", namespace=kube_namespace)
        assert {r.verb for r in pod_requests} <= {"list", "watch", "create", "get"}
        assert sum(1 for r in pod_requests if r.verb == "watch") >= 1

    assert await spawner.poll() is None  # running

    await asyncio.wait_for(spawner.stop(), 30)
    pods = (await core.list_namespaced_pod(kube_namespace)).items
    assert spawner.pod_name not in [p.metadata.name for p in pods]
    assert isinstance(await spawner.poll(), int)  # stopped


async def test_kubespawner_poll_reports_the_exit_code(
    kube_cluster, kube_namespace, kube_spawner_env
):
    kube_cluster.require_emulator("ends the notebook container from the test")
    spawner = _spawner(kube_namespace, "bob")
    await asyncio.wait_for(spawner.start(), 30)
    # KubeSpawner's pods restart OnFailure; a clean exit ends the pod, and poll() says so.
    await asyncio.to_thread(kube_cluster.finish_pod, kube_namespace, spawner.pod_name, 0)
    for _ in range(300):
        status = await spawner.poll()
        if status is not None:
            break
        await asyncio.sleep(0.01)
    assert status == 0


async def test_kubespawner_replaces_a_leftover_pod_and_fails_on_server_errors(
    kube_cluster, kube_namespace, kube_api, kube_spawner_env
):
    spawner = _spawner(kube_namespace, "carol")
    core = aclient.CoreV1Api(kube_api)
    # A pod of the same name left over (say, by a hub that crashed): KubeSpawner gets 409 on create,
    # deletes it, waits for it to go, and creates its own.
    leftover = await core.create_namespaced_pod(
        kube_namespace,
        {
            "metadata": {"name": spawner.pod_name},
            "spec": {"containers": [{"name": "notebook", "image": "old:1"}]},
        },
    )
    await asyncio.wait_for(spawner.start(), 30)
    pod = await core.read_namespaced_pod(spawner.pod_name, kube_namespace)
    assert pod.metadata.uid != leftover.metadata.uid
    await asyncio.wait_for(spawner.stop(), 30)

    # KubeSpawner does not retry a 500 on pod creation: the spawn fails with the API's error.
    kube_cluster.require_emulator("injects API errors")
    kube_cluster.faults.fail(500, times=1, method="POST", path=r"/pods$")
    with pytest.raises(aclient.ApiException) as failed:
        await asyncio.wait_for(spawner.start(), 30)
    assert failed.value.status == 500
    creates = kube_cluster.requests.filter(verb="create", resource="pods")
    assert [r.status for r in creates] == [201, 409, 201, 500]  # ours, then KubeSpawner's three
