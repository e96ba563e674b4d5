"""Fault injection and the request log, as the client libraries see them; plus the fixture plumbing
of real-cluster mode (exercised against the emulator, through its kubeconfig)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import kubernetes
import pytest
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import watch as awatch

from kubelab.tests.kubeapi import EmulatorOnly, RealCluster


@pytest.fixture
def emulated(kube_cluster: Any) -> Any:
    kube_cluster.require_emulator("fault injection and the request log")
    return kube_cluster


def _cm(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"f": "1"}}}


async def test_error_rate_is_seen_by_the_async_client(emulated, kube_namespace, kube_api):
    core = aclient.CoreV1Api(kube_api)
    rule = emulated.faults.fail(500, rate=0.5, method="GET", path=r"/configmaps$")
    statuses = []
    for _ in range(40):
        try:
            await core.list_namespaced_config_map(kube_namespace)
            statuses.append(200)
        except aclient.ApiException as exc:
            statuses.append(exc.status)
            assert '"reason":"InternalError"' in exc.body
    assert set(statuses) == {200, 500}
    assert statuses.count(500) == rule.hits
    assert 5 < rule.hits < 35
    # Requests the rule does not match are untouched.
    await core.create_namespaced_config_map(kube_namespace, _cm("fine"))
    failed = emulated.requests.filter(verb="list", resource="configmaps")
    assert len(failed) == 40 and sum(1 for r in failed if r.fault) == rule.hits


async def test_next_n_requests_fail_with_429_and_retry_after(emulated, kube_namespace, kube_api):
    core = aclient.CoreV1Api(kube_api)
    emulated.faults.fail(429, times=2, method="POST", retry_after=3)
    for _ in range(2):
        with pytest.raises(aclient.ApiException) as throttled:
            await core.create_namespaced_config_map(kube_namespace, _cm("x"))
        assert throttled.value.status == 429
        assert throttled.value.headers["Retry-After"] == "3"
    await core.create_namespaced_config_map(kube_namespace, _cm("x"))  # the third goes through


def test_sync_client_sees_injected_conflict_and_latency(emulated, kube_namespace, kube_sync_api):
    core = kubernetes.client.CoreV1Api(kube_sync_api)
    core.create_namespaced_config_map(kube_namespace, _cm("x"))
    emulated.faults.fail(409, times=1, method="PATCH")
    delay = emulated.faults.delay(0.05, times=1, method="GET")
    with pytest.raises(kubernetes.client.ApiException) as conflict:
        core.patch_namespaced_config_map("x", kube_namespace, {"data": {"a": "b"}})
    assert conflict.value.status == 409
    assert core.patch_namespaced_config_map("x", kube_namespace, {"data": {"a": "b"}}).data == {
        "a": "b"
    }
    core.read_namespaced_config_map("x", kube_namespace)
    assert delay.hits == 1


async def test_dropped_watch_connection_is_seen_by_the_client(emulated, kube_namespace, kube_api):
    core = aclient.CoreV1Api(kube_api)
    for name in ("a", "b", "c"):
        await core.create_namespaced_config_map(kube_namespace, _cm(name))
    emulated.faults.drop_watch(after_events=2, times=1)
    received = []
    with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, RuntimeError)):
        async with awatch.Watch().stream(
            core.list_namespaced_config_map, kube_namespace, label_selector="f=1", timeout_seconds=5
        ) as stream:
            async for event in stream:
                received.append(event["object"].metadata.name)
    assert received == ["a", "b"]  # cut mid-stream, the third event never came

    # The next watch (the rule fired its one time) gets everything.
    again = []
    async with awatch.Watch().stream(
        core.list_namespaced_config_map, kube_namespace, label_selector="f=1", timeout_seconds=5
    ) as stream:
        async for event in stream:
            again.append(event["object"].metadata.name)
            if len(again) == 3:
                break
    assert again == ["a", "b", "c"]


async def test_watch_ending_with_410_gone_and_after_seconds(emulated, kube_namespace, kube_api):
    core = aclient.CoreV1Api(kube_api)
    await core.create_namespaced_config_map(kube_namespace, _cm("a"))
    emulated.faults.drop_watch(after_seconds=0.1, mode="gone", times=1)
    received = []
    with pytest.raises(aclient.ApiException) as gone:
        async with awatch.Watch().stream(
            core.list_namespaced_config_map, kube_namespace, label_selector="f=1", timeout_seconds=5
        ) as stream:
            async for event in stream:
                received.append(event["type"])
    assert gone.value.status == 410
    assert received == ["ADDED"]

    emulated.faults.drop_watch(after_seconds=0.1, mode="eof", times=1)
    ended = []
    async with awatch.Watch().stream(
        core.list_namespaced_config_map, kube_namespace, label_selector="f=1", timeout_seconds=5
    ) as stream:
        async for event in stream:
            ended.append(event["type"])
    assert ended == ["ADDED"]  # a clean end, as when the server's timeout ends a watch


async def test_request_log_counts_api_calls(emulated, kube_namespace, kube_api):
    core = aclient.CoreV1Api(kube_api)
    mark = emulated.requests.mark()
    await core.create_namespaced_config_map(kube_namespace, _cm("x"))
    await core.read_namespaced_config_map("x", kube_namespace)
    await core.list_namespaced_config_map(kube_namespace, label_selector="f=1")
    made = emulated.requests.since(mark)
    assert [(r.method, r.verb, r.resource, r.name) for r in made] == [
        ("POST", "create", "configmaps", None),
        ("GET", "get", "configmaps", "x"),
        ("GET", "list", "configmaps", None),
    ]
    assert made[2].query["labelSelector"] == "f=1"
    assert all(r.status in (200, 201) and r.namespace == kube_namespace for r in made)
    # The emulator's own controllers do not make API requests.
    await core.create_namespaced_pod(
        kube_namespace,
        {
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
        },
    )
    await asyncio.sleep(0.05)
    assert emulated.requests.count(since=mark, verb="create") == 2


async def test_kmock_reactions_answer_before_the_emulator(emulated, kube_namespace, kube_api):
    core = aclient.CoreV1Api(kube_api)
    emulated.kmock[f"get /api/v1/namespaces/{kube_namespace}/configmaps/scripted"] << {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "scripted", "namespace": kube_namespace},
        "data": {"from": "kmock"},
    }
    scripted = await core.read_namespaced_config_map("scripted", kube_namespace)
    assert scripted.data == {"from": "kmock"}
    with pytest.raises(aclient.ApiException) as missing:
        await core.read_namespaced_config_map("other", kube_namespace)
    assert missing.value.status == 404


def test_real_cluster_mode_uses_the_kubeconfig_and_skips_emulator_powers(emulated):
    # Point "real cluster" mode at the emulator's own kubeconfig: the plumbing is the same.
    real = RealCluster(emulated.kubeconfig_path)
    assert real.host == emulated.host and not real.is_emulated
    with real.sync_api_client() as api:
        names = [n.metadata.name for n in kubernetes.client.CoreV1Api(api).list_namespace().items]
    assert "default" in names
    for power in (
        lambda: real.add_node("x"),
        lambda: real.faults,
        lambda: real.requests,
        lambda: real.finish_pod("ns", "p"),
        real.require_emulator,
        lambda: real.register_crd("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"),
    ):
        with pytest.raises(EmulatorOnly):
            power()
    emulated.register_crd("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob")
    assert (
        real.register_crd("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob")["kind"]
        == "CustomResourceDefinition"
    )
