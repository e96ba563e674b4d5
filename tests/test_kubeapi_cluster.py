"""What the emulated cluster does beyond the API: scheduling, running pods, logs, quotas.

These need emulator-only powers (declaring nodes, ending containers): they skip on a real cluster.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import watch as awatch

from kubelab.tests.kubeapi import wait_for


@pytest.fixture(autouse=True)
def _emulated(kube_cluster: Any) -> None:
    kube_cluster.require_emulator()


def _pod(
    name: str,
    *,
    gpus: int = 0,
    cpu: str | None = None,
    annotations: dict[str, str] | None = None,
    restart: str = "Never",
    **spec: Any,
) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if gpus:
        resources["limits"] = {"nvidia.com/gpu": str(gpus)}
    if cpu:
        resources.setdefault("requests", {})["cpu"] = cpu
    return {
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "restartPolicy": restart,
            "containers": [{"name": "main", "image": "pytorch:2.4", "resources": resources}],
            **spec,
        },
    }


def _condition(pod: Any, kind: str) -> Any:
    return next((c for c in pod.status.conditions or [] if c.type == kind), None)


async def test_gpu_pod_waits_with_failed_scheduling_then_runs_when_a_gpu_node_joins(
    kube_cluster, kube_namespace, kube_api
):
    core = aclient.CoreV1Api(kube_api)
    ns = kube_namespace
    kube_cluster.add_node("cpu-1", cpu="4", memory="16Gi")

    await core.create_namespaced_pod(ns, _pod("train", gpus=1))
    pod = await wait_for(
        lambda: core.read_namespaced_pod("train", ns),
        lambda p: _condition(p, "PodScheduled") is not None,
    )
    scheduled = _condition(pod, "PodScheduled")
    assert pod.status.phase == "Pending" and pod.spec.node_name is None
    assert (scheduled.status, scheduled.reason) == ("False", "Unschedulable")
    assert scheduled.message == "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    events = await wait_for(
        lambda: core.list_namespaced_event(
            ns, field_selector="involvedObject.name=train,reason=FailedScheduling"
        ),
        lambda e: e.items,
    )
    assert events.items[0].type == "Warning"
    assert events.items[0].message == "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."

    # A tainted GPU node that the pod does not tolerate changes the reason, not the outcome.
    kube_cluster.add_node("gpu-tainted", gpus=8, taints=["nvidia.com/gpu=present:NoSchedule"])
    pod = await wait_for(
        lambda: core.read_namespaced_pod("train", ns),
        lambda p: "untolerated taint" in (_condition(p, "PodScheduled").message or ""),
    )
    assert _condition(pod, "PodScheduled").message == (
        "0/3 nodes are available: 1 node(s) had untolerated taint {nvidia.com/gpu: present}, "
        "2 Insufficient nvidia.com/gpu."
    )

    kube_cluster.add_node("gpu-1", gpus=2, labels={"nvidia.com/gpu.product": "A100"})
    pod = await wait_for(
        lambda: core.read_namespaced_pod("train", ns), lambda p: p.status.phase == "Running"
    )
    assert pod.spec.node_name == "gpu-1"
    assert pod.status.pod_ip == "127.0.0.1" and pod.status.container_statuses[0].ready
    assert _condition(pod, "Ready").status == "True"
    reasons = {
        e.reason
        for e in (
            await core.list_namespaced_event(ns, field_selector="involvedObject.name=train")
        ).items
    }
    assert {"FailedScheduling", "Scheduled", "Pulled", "Created", "Started"} <= reasons


async def test_scheduler_counts_requests_and_deletion_frees_them(
    kube_cluster, kube_namespace, kube_api
):
    core = aclient.CoreV1Api(kube_api)
    ns = kube_namespace
    kube_cluster.add_node("gpu-1", gpus=1, labels={"accelerator": "a100"})

    # nodeSelector: only nodes with the label qualify.
    await core.create_namespaced_pod(ns, _pod("picky", nodeSelector={"accelerator": "h100"}))
    await core.create_namespaced_pod(ns, _pod("first", gpus=1))
    first = await wait_for(
        lambda: core.read_namespaced_pod("first", ns), lambda p: p.status.phase == "Running"
    )
    assert first.spec.node_name == "gpu-1"
    await core.create_namespaced_pod(ns, _pod("second", gpus=1))
    second = await wait_for(
        lambda: core.read_namespaced_pod("second", ns),
        lambda p: _condition(p, "PodScheduled") is not None,
    )
    assert (
        _condition(second, "PodScheduled").message
        == "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    )
    picky = await core.read_namespaced_pod("picky", ns)
    assert (
        _condition(picky, "PodScheduled").message
        == "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    )

    # Deleting the first GPU pod frees its GPU for the second.
    await core.delete_namespaced_pod("first", ns)
    second = await wait_for(
        lambda: core.read_namespaced_pod("second", ns), lambda p: p.status.phase == "Running"
    )
    assert second.spec.node_name == "gpu-1"


async def test_finish_pod_and_annotations_end_containers_with_logs(
    kube_cluster, kube_namespace, kube_api
):
    core = aclient.CoreV1Api(kube_api)
    ns = kube_namespace
    await core.create_namespaced_pod(ns, _pod("manual"))
    kube_cluster.finish_pod(ns, "manual", exit_code=3, logs="epoch 1\nloss 0.5\n")
    pod = await core.read_namespaced_pod("manual", ns)
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")
    assert await core.read_namespaced_pod_log("manual", ns) == "epoch 1\nloss 0.5\n"
    assert await core.read_namespaced_pod_log("manual", ns, tail_lines=1) == "loss 0.5\n"

    await core.create_namespaced_pod(
        ns,
        _pod(
            "scripted",
            annotations={
                "kubeapi.kubelab.test/logs": "hello\nworld",
                "kubeapi.kubelab.test/run-seconds": "0.05",
            },
        ),
    )
    pod = await wait_for(
        lambda: core.read_namespaced_pod("scripted", ns),
        lambda p: p.status.phase in ("Succeeded", "Failed"),
    )
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0
    assert await core.read_namespaced_pod_log("scripted", ns) == "hello\nworld\n"

    # A pod still waiting for a node has no log yet: 400, as from a real kubelet.
    await core.create_namespaced_pod(ns, _pod("stuck", gpus=4))
    with pytest.raises(aclient.ApiException) as waiting:
        await core.read_namespaced_pod_log("stuck", ns)
    assert waiting.value.status == 400 and "is waiting to start" in waiting.value.body


async def test_log_follow_streams_until_the_container_ends(kube_cluster, kube_namespace, kube_api):
    core = aclient.CoreV1Api(kube_api)
    ns = kube_namespace
    await core.create_namespaced_pod(
        ns, _pod("talker", annotations={"kubeapi.kubelab.test/logs": "start"})
    )
    await wait_for(
        lambda: core.read_namespaced_pod("talker", ns), lambda p: p.status.phase == "Running"
    )
    lines: list[str] = []
    async with awatch.Watch().stream(core.read_namespaced_pod_log, "talker", ns) as stream:
        async for line in stream:
            lines.append(line)
            if line == "start\n":
                await asyncio.to_thread(kube_cluster.append_logs, ns, "talker", "step 1\n")
            elif line == "step 1\n":
                await asyncio.to_thread(kube_cluster.finish_pod, ns, "talker", 0, "done\n")
    assert lines == ["start\n", "step 1\n", "done\n"]  # and the stream ended with the container


async def test_restart_policy_on_failure_restarts_the_container(
    kube_cluster, kube_namespace, kube_api
):
    core = aclient.CoreV1Api(kube_api)
    ns = kube_namespace
    await core.create_namespaced_pod(ns, _pod("flaky", restart="OnFailure"))
    kube_cluster.finish_pod(ns, "flaky", exit_code=1, logs="crash\n")
    pod = await wait_for(
        lambda: core.read_namespaced_pod("flaky", ns),
        lambda p: (
            p.status.container_statuses[0].restart_count == 1
            and p.status.container_statuses[0].state.running is not None
        ),
    )
    assert pod.status.phase == "Running"
    assert pod.status.container_statuses[0].last_state.terminated.exit_code == 1
    assert await core.read_namespaced_pod_log("flaky", ns, previous=True) == "crash\n"
    kube_cluster.finish_pod(ns, "flaky", exit_code=0)
    pod = await core.read_namespaced_pod("flaky", ns)
    assert pod.status.phase == "Succeeded"


async def test_resource_quota_refuses_pods_and_tracks_usage(kube_cluster, kube_namespace, kube_api):
    core = aclient.CoreV1Api(kube_api)
    ns = kube_namespace
    kube_cluster.add_node("gpu-1", gpus=8)
    await core.create_namespaced_resource_quota(
        ns,
        {
            "metadata": {"name": "team"},
            "spec": {"hard": {"pods": "3", "requests.nvidia.com/gpu": "2"}},
        },
    )
    await core.create_namespaced_pod(ns, _pod("a", gpus=2))
    with pytest.raises(aclient.ApiException) as refused:
        await core.create_namespaced_pod(ns, _pod("b", gpus=1))
    assert refused.value.status == 403
    assert (
        'pods \\"b\\" is forbidden: exceeded quota: team, requested: requests.nvidia.com/gpu=1, '
        "used: requests.nvidia.com/gpu=2, limited: requests.nvidia.com/gpu=2"
    ) in refused.value.body
    assert '"reason":"Forbidden"' in refused.value.body
    quota = await wait_for(
        lambda: core.read_namespaced_resource_quota("team", ns),
        lambda q: (q.status.used or {}).get("requests.nvidia.com/gpu") == "2",
    )
    assert quota.status.used == {"pods": "1", "requests.nvidia.com/gpu": "2"}
    assert quota.status.hard == {"pods": "3", "requests.nvidia.com/gpu": "2"}

    # A finished pod no longer counts.
    kube_cluster.finish_pod(ns, "a")
    await wait_for(
        lambda: core.read_namespaced_resource_quota("team", ns),
        lambda q: q.status.used == {"pods": "0", "requests.nvidia.com/gpu": "0"},
    )
    await core.create_namespaced_pod(ns, _pod("b", gpus=1))

    # A cpu quota requires every container to say how much cpu it wants.
    await core.create_namespaced_resource_quota(
        ns, {"metadata": {"name": "cpu"}, "spec": {"hard": {"requests.cpu": "1"}}}
    )
    with pytest.raises(aclient.ApiException) as unspecified:
        await core.create_namespaced_pod(ns, _pod("c"))
    assert "failed quota: cpu: must specify requests.cpu for: main" in unspecified.value.body
    with pytest.raises(aclient.ApiException) as too_much:
        await core.create_namespaced_pod(ns, _pod("c", cpu="1500m"))
    assert (
        "requested: requests.cpu=1500m, used: requests.cpu=0, limited: requests.cpu=1"
        in too_much.value.body
    )


async def test_pods_need_their_service_account(kube_cluster, kube_namespace, kube_api):
    core = aclient.CoreV1Api(kube_api)
    with pytest.raises(aclient.ApiException) as refused:
        await core.create_namespaced_pod(kube_namespace, _pod("x", serviceAccountName="trainer"))
    assert refused.value.status == 403
    assert 'serviceaccount \\"trainer\\" not found' in refused.value.body
    await core.create_namespaced_service_account(kube_namespace, {"metadata": {"name": "trainer"}})
    await core.create_namespaced_pod(kube_namespace, _pod("x", serviceAccountName="trainer"))


async def test_deployment_runs_replicas_through_a_replica_set(
    kube_cluster, kube_namespace, kube_api
):
    apps = aclient.AppsV1Api(kube_api)
    core = aclient.CoreV1Api(kube_api)
    ns = kube_namespace
    labels = {"app": "model"}
    await apps.create_namespaced_deployment(
        ns,
        {
            "metadata": {"name": "model"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "server", "image": "kserve:1"}]},
                },
            },
        },
    )
    deployment = await wait_for(
        lambda: apps.read_namespaced_deployment("model", ns), lambda d: d.status.ready_replicas == 2
    )
    assert deployment.status.available_replicas == 2
    pods = (await core.list_namespaced_pod(ns, label_selector="app=model")).items
    assert len(pods) == 2 and all(p.metadata.owner_references[0].kind == "ReplicaSet" for p in pods)
    assert all(p.metadata.name.startswith("model-") for p in pods)

    await apps.patch_namespaced_deployment_scale("model", ns, {"spec": {"replicas": 1}})
    await wait_for(
        lambda: core.list_namespaced_pod(ns, label_selector="app=model"),
        lambda listed: len(listed.items) == 1,
    )
    # Deleting the Deployment (background propagation) takes its ReplicaSet and pods with it.
    await apps.delete_namespaced_deployment("model", ns)
    await wait_for(
        lambda: core.list_namespaced_pod(ns, label_selector="app=model"),
        lambda listed: not listed.items,
    )
