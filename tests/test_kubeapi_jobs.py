"""The emulated Job controller, driven through the batch/v1 API with kubernetes_asyncio.

Pods end by annotation on the Job's pod template (``kubeapi.kubelab.test/...``), so the tests need
no manual step; they skip on a real cluster, where the annotations mean nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client as aclient

from kubelab.tests.kubeapi import wait_for


@pytest.fixture(autouse=True)
def _emulated(kube_cluster: Any) -> None:
    kube_cluster.require_emulator("pods end by kubeapi.kubelab.test annotations")


def _job(name: str, *, annotations: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"annotations": annotations, "labels": {"app": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "subdomain": name,
                    "containers": [
                        {"name": "train", "image": "pytorch:2.4", "command": ["python", "train.py"]}
                    ],
                },
            },
            **spec,
        },
    }


def _conditions(job: Any) -> dict[str, str]:
    return {c.type: c.status for c in job.status.conditions or []}


def _finished(job: Any) -> bool:
    conditions = _conditions(job)
    return conditions.get("Complete") == "True" or conditions.get("Failed") == "True"


async def test_single_job_runs_one_pod_to_completion(kube_namespace, kube_api):
    batch, core = aclient.BatchV1Api(kube_api), aclient.CoreV1Api(kube_api)
    ns = kube_namespace
    created = await batch.create_namespaced_job(
        ns,
        _job(
            "once",
            annotations={
                "kubeapi.kubelab.test/logs": "training\ndone",
                "kubeapi.kubelab.test/run-seconds": "0.05",
            },
        ),
    )
    uid = created.metadata.uid
    assert created.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
    assert created.spec.backoff_limit == 6 and created.spec.completions == 1

    job = await wait_for(lambda: batch.read_namespaced_job("once", ns), _finished)
    assert _conditions(job) == {"SuccessCriteriaMet": "True", "Complete": "True"}
    assert job.status.succeeded == 1 and not job.status.failed and not job.status.active
    assert job.status.start_time and job.status.completion_time

    pods = (
        await core.list_namespaced_pod(
            ns, label_selector=f"batch.kubernetes.io/controller-uid={uid}"
        )
    ).items
    assert len(pods) == 1
    pod = pods[0]
    assert pod.metadata.name.startswith("once-")
    assert (
        pod.metadata.labels["job-name"] == "once" and pod.metadata.labels["controller-uid"] == uid
    )
    owner = pod.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == ("Job", "once", uid, True)
    assert pod.status.phase == "Succeeded"
    assert await core.read_namespaced_pod_log(pod.metadata.name, ns) == "training\ndone\n"
    events = {
        e.reason
        for e in (
            await core.list_namespaced_event(
                ns, field_selector="involvedObject.kind=Job,involvedObject.name=once"
            )
        ).items
    }
    assert events == {"SuccessfulCreate", "Completed"}


async def test_indexed_job_gives_each_pod_its_index(kube_namespace, kube_api):
    batch, core = aclient.BatchV1Api(kube_api), aclient.CoreV1Api(kube_api)
    ns = kube_namespace
    await batch.create_namespaced_job(
        ns,
        _job(
            "ddp",
            annotations={"kubeapi.kubelab.test/run-seconds": "0.05"},
            completionMode="Indexed",
            completions=3,
            parallelism=3,
        ),
    )
    # All three run at once (parallelism 3) before any finishes.
    running = await wait_for(
        lambda: core.list_namespaced_pod(ns, label_selector="job-name=ddp"),
        lambda listed: len(listed.items) == 3,
    )
    by_index = {
        int(p.metadata.annotations["batch.kubernetes.io/job-completion-index"]): p
        for p in running.items
    }
    assert sorted(by_index) == [0, 1, 2]
    for index, pod in by_index.items():
        assert pod.metadata.labels["batch.kubernetes.io/job-completion-index"] == str(index)
        assert pod.spec.hostname == f"ddp-{index}" and pod.spec.subdomain == "ddp"
        assert pod.metadata.name.startswith(f"ddp-{index}-")
        env = pod.spec.containers[0].env[0]
        assert env.name == "JOB_COMPLETION_INDEX"
        assert (
            env.value_from.field_ref.field_path
            == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        )
    job = await wait_for(lambda: batch.read_namespaced_job("ddp", ns), _finished)
    assert _conditions(job)["Complete"] == "True"
    assert job.status.succeeded == 3 and job.status.completed_indexes == "0-2"


async def test_job_fails_after_backoff_limit(kube_namespace, kube_api):
    batch, core = aclient.BatchV1Api(kube_api), aclient.CoreV1Api(kube_api)
    ns = kube_namespace
    await batch.create_namespaced_job(
        ns, _job("broken", annotations={"kubeapi.kubelab.test/exit-code": "1"}, backoffLimit=2)
    )
    job = await wait_for(lambda: batch.read_namespaced_job("broken", ns), _finished)
    assert _conditions(job) == {"FailureTarget": "True", "Failed": "True"}
    failed = next(c for c in job.status.conditions if c.type == "Failed")
    assert failed.reason == "BackoffLimitExceeded"
    assert job.status.failed == 3 and not job.status.succeeded  # the first try and two retries
    pods = (await core.list_namespaced_pod(ns, label_selector="job-name=broken")).items
    assert len(pods) == 3 and {p.status.phase for p in pods} == {"Failed"}
    warning = (
        await core.list_namespaced_event(
            ns, field_selector="involvedObject.name=broken,reason=BackoffLimitExceeded"
        )
    ).items
    assert warning and warning[0].type == "Warning"


async def test_job_retries_then_succeeds(kube_namespace, kube_api):
    batch = aclient.BatchV1Api(kube_api)
    ns = kube_namespace
    await batch.create_namespaced_job(
        ns, _job("flaky", annotations={"kubeapi.kubelab.test/fail-times": "2"}, backoffLimit=3)
    )
    job = await wait_for(lambda: batch.read_namespaced_job("flaky", ns), _finished)
    assert _conditions(job)["Complete"] == "True"
    assert (job.status.failed, job.status.succeeded) == (2, 1)


async def test_deleting_a_job_cascades_to_its_pods_per_propagation_policy(kube_namespace, kube_api):
    batch, core = aclient.BatchV1Api(kube_api), aclient.CoreV1Api(kube_api)
    ns = kube_namespace
    for name in ("background", "orphaned", "foreground"):
        await batch.create_namespaced_job(
            ns, _job(name, annotations={}, parallelism=2, completions=2)
        )
    await wait_for(lambda: core.list_namespaced_pod(ns), lambda listed: len(listed.items) == 6)

    await batch.delete_namespaced_job("background", ns, propagation_policy="Background")
    await wait_for(
        lambda: core.list_namespaced_pod(ns, label_selector="job-name=background"),
        lambda listed: not listed.items,
    )

    # batch/v1 Jobs orphan their pods by default (and the server says so in a Warning header).
    response = await batch.delete_namespaced_job("orphaned", ns, _preload_content=False)
    assert "child pods are preserved by default" in response.headers.get("Warning", "")
    await wait_for(
        lambda: batch.list_namespaced_job(ns, field_selector="metadata.name=orphaned"),
        lambda listed: not listed.items,
    )
    orphans = (await core.list_namespaced_pod(ns, label_selector="job-name=orphaned")).items
    assert len(orphans) == 2 and all(not p.metadata.owner_references for p in orphans)

    # Foreground: the Job stays (deletionTimestamp, foregroundDeletion) until its pods are gone.
    await batch.delete_namespaced_job("foreground", ns, propagation_policy="Foreground")
    await wait_for(
        lambda: batch.list_namespaced_job(ns, field_selector="metadata.name=foreground"),
        lambda listed: not listed.items,
    )
    assert not (await core.list_namespaced_pod(ns, label_selector="job-name=foreground")).items


async def test_finished_job_is_deleted_after_its_ttl(kube_namespace, kube_api):
    batch, core = aclient.BatchV1Api(kube_api), aclient.CoreV1Api(kube_api)
    ns = kube_namespace
    await batch.create_namespaced_job(
        ns,
        _job(
            "short", annotations={"kubeapi.kubelab.test/exit-code": "0"}, ttlSecondsAfterFinished=0
        ),
    )
    await wait_for(lambda: batch.list_namespaced_job(ns), lambda listed: not listed.items)
    await wait_for(
        lambda: core.list_namespaced_pod(ns, label_selector="job-name=short"),
        lambda listed: not listed.items,
    )


async def test_suspended_job_creates_no_pods_until_resumed(kube_namespace, kube_api):
    batch, core = aclient.BatchV1Api(kube_api), aclient.CoreV1Api(kube_api)
    ns = kube_namespace
    await batch.create_namespaced_job(ns, _job("queued", annotations={}, suspend=True))
    job = await wait_for(
        lambda: batch.read_namespaced_job("queued", ns),
        lambda j: _conditions(j).get("Suspended") == "True",
    )
    assert not (await core.list_namespaced_pod(ns, label_selector="job-name=queued")).items
    await batch.patch_namespaced_job("queued", ns, {"spec": {"suspend": False}})
    await wait_for(
        lambda: core.list_namespaced_pod(ns, label_selector="job-name=queued"),
        lambda listed: len(listed.items) == 1,
    )
    job = await batch.read_namespaced_job("queued", ns)
    assert _conditions(job)["Suspended"] == "False"


async def test_job_spec_is_validated_like_a_real_server(kube_namespace, kube_api):
    batch = aclient.BatchV1Api(kube_api)
    bad = _job("always", annotations={})
    bad["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    with pytest.raises(aclient.ApiException) as refused:
        await batch.create_namespaced_job(kube_namespace, bad)
    assert refused.value.status == 422
    assert 'spec.template.spec.restartPolicy: Unsupported value: \\"Always\\"' in refused.value.body
    indexed = _job("indexed", annotations={}, completionMode="Indexed", parallelism=2)
    with pytest.raises(aclient.ApiException) as no_completions:
        await batch.create_namespaced_job(kube_namespace, indexed)
    assert no_completions.value.status == 422
