"""The Job controller (batch/v1), close to the real one in what it writes.

Pods come from the template with an ownerReference to the Job and the ``controller-uid`` /
``job-name`` labels (added to the template by defaulting). ``parallelism`` and ``completions`` bound
the active pods; ``completionMode: Indexed`` gives each pod its index (annotation and label
``batch.kubernetes.io/job-completion-index``, env ``JOB_COMPLETION_INDEX``, hostname
``{job}-{index}``) and tracks ``completedIndexes``. Failed pods (and container restarts under
``OnFailure``) count against ``backoffLimit``; ``activeDeadlineSeconds``, ``suspend`` and
``ttlSecondsAfterFinished`` work. Finished Jobs get ``SuccessCriteriaMet``+``Complete`` or
``FailureTarget``+``Failed`` conditions, as Kubernetes 1.31 writes them.

Not emulated: ``podFailurePolicy``, ``successPolicy``, ``backoffLimitPerIndex``, pod-creation
backoff delays, and the ``batch.kubernetes.io/job-tracking`` finalizer (counts are kept in memory).
"""

from __future__ import annotations

import copy
import time
from typing import Any, NamedTuple

from .controller import Controller
from .errors import ApiError
from .meta import controller_of, owner_reference, rfc3339
from .scheduler import is_terminal, set_condition
from .store import DeleteOptions

__all__ = ["JobController", "format_indexes"]

INDEX_KEY = "batch.kubernetes.io/job-completion-index"

#: why a Job finishes -> the message of its conditions (the first succeeds, the others fail)
_FINISH_MESSAGES = {
    "CompletionsReached": "Reached expected number of succeeded pods",
    "BackoffLimitExceeded": "Job has reached the specified backoff limit",
    "DeadlineExceeded": "Job was active longer than specified deadline",
}


def format_indexes(indexes: set[int]) -> str:
    """``{0, 1, 2, 5}`` -> ``"0-2,5"`` (the format of ``status.completedIndexes``)."""
    parts: list[str] = []
    ordered = sorted(indexes)
    start = previous = None
    for index in ordered + [None]:  # type: ignore[list-item]
        if start is None:
            start = previous = index
        elif index is not None and index == previous + 1:  # type: ignore[operator]
            previous = index
        else:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
            start = previous = index
    return ",".join(parts)


def _condition_true(job: dict[str, Any], condition_type: str) -> bool:
    return any(
        c["type"] == condition_type and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def _pod_ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _index_of(pod: dict[str, Any]) -> int | None:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(INDEX_KEY)
    return int(value) if value is not None and value.isdigit() else None


class _Tally(NamedTuple):
    """A Job's pods as its status counts them."""

    active: list[dict[str, Any]]
    terminating: list[dict[str, Any]]
    succeeded: int
    failed: int
    #: the indexes that succeeded; None unless the Job is Indexed
    completed_indexes: set[int] | None

    def stopped(self) -> _Tally:
        """The same once the active pods are deleted: they count as terminating."""
        return self._replace(active=[], terminating=self.terminating + self.active)


class JobController(Controller):
    name = "job-controller"
    watches = (("batch", "jobs"), ("", "pods"), ("", "resourcequotas"), ("", "serviceaccounts"))

    def __init__(self, emulator: Any) -> None:
        super().__init__(emulator)
        #: job uid -> pod uid -> (phase, completion index) of finished pods already counted
        self.counted: dict[str, dict[str, tuple[str, int | None]]] = {}
        #: job uid -> monotonic time it finished (for ttlSecondsAfterFinished)
        self.finished_at: dict[str, float] = {}

    def reset(self) -> None:
        super().reset()
        self.counted.clear()
        self.finished_at.clear()

    def reconcile(self) -> None:
        jobs_rt, pods_rt = self.emulator.rt("jobs", "batch"), self.emulator.rt("pods")
        jobs = self.store.list(jobs_rt)
        if not jobs:
            self.counted.clear()
            self.finished_at.clear()
            return
        pods_by_job: dict[str, list[dict[str, Any]]] = {}
        for pod in self.store.list(pods_rt):
            owner = controller_of(pod)
            if owner is not None and owner.get("kind") == "Job":
                pods_by_job.setdefault(owner["uid"], []).append(pod)
        uids = set()
        for job in jobs:
            uids.add(job["metadata"]["uid"])
            self._sync(job, pods_by_job.get(job["metadata"]["uid"], []))
        for uid in set(self.counted) - uids:
            del self.counted[uid]
        for uid in set(self.finished_at) - uids:
            del self.finished_at[uid]

    # --- one Job ----------------------------------------------------------------------------------

    def _sync(self, job: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        if job["metadata"].get("deletionTimestamp"):
            return
        uid = job["metadata"]["uid"]
        spec = job.get("spec") or {}
        if _condition_true(job, "Complete") or _condition_true(job, "Failed"):
            self._expire(job)
            return
        counted = self.counted.setdefault(uid, {})
        for pod in pods:
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed") and pod["metadata"]["uid"] not in counted:
                counted[pod["metadata"]["uid"]] = (phase, _index_of(pod))
        indexed = spec.get("completionMode") == "Indexed"
        succeeded_indexes = {
            index for phase, index in counted.values() if phase == "Succeeded" and index is not None
        }
        succeeded = (
            len(succeeded_indexes)
            if indexed
            else sum(1 for phase, _ in counted.values() if phase == "Succeeded")
        )
        failed = sum(1 for phase, _ in counted.values() if phase == "Failed")
        if (spec.get("template", {}).get("spec") or {}).get("restartPolicy") == "OnFailure":
            failed += sum(
                int(s.get("restartCount") or 0)
                for pod in pods
                for s in (pod.get("status") or {}).get("containerStatuses") or []
            )
        active = [
            p for p in pods if not is_terminal(p) and not p["metadata"].get("deletionTimestamp")
        ]
        terminating = [
            p for p in pods if not is_terminal(p) and p["metadata"].get("deletionTimestamp")
        ]
        status = copy.deepcopy(job.get("status") or {})
        tally = _Tally(
            active, terminating, succeeded, failed, succeeded_indexes if indexed else None
        )

        if spec.get("suspend"):
            status.pop("startTime", None)
            set_condition(status, "Suspended", "True", "JobSuspended", "Job suspended")
            self._stop(job, status, tally)
            return
        if _condition_true(job, "Suspended"):
            set_condition(status, "Suspended", "False", "JobResumed", "Job resumed")
        status.setdefault("startTime", rfc3339())

        completions = spec.get("completions")
        if failed > int(spec.get("backoffLimit", 6)):
            self._finish(job, status, tally, "BackoffLimitExceeded")
            return
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None:
            started = self._started(job, status)
            remaining = started + float(deadline) - time.time()
            if remaining <= 0:
                self._finish(job, status, tally, "DeadlineExceeded")
                return
            self.kick_later(remaining)
        done = (
            (succeeded >= completions)
            if completions is not None
            else (succeeded > 0 and not active)
        )
        if done:
            self._finish(job, status, tally, "CompletionsReached")
            return
        parallelism = int(spec.get("parallelism", 1))
        if indexed:
            active_indexes = {_index_of(p) for p in active}
            pending = [
                i
                for i in range(int(completions))
                if i not in succeeded_indexes and i not in active_indexes
            ]
            room = max(0, parallelism - len(active))
            for index in pending[:room]:
                pod = self._create_pod(job, index)
                if pod is None:
                    break
                active.append(pod)
        else:
            if completions is not None:
                want = min(parallelism, int(completions) - succeeded)
            else:
                want = parallelism if succeeded == 0 else 0
            for _ in range(want - len(active)):
                pod = self._create_pod(job, None)
                if pod is None:
                    break
                active.append(pod)
            extra = len(active) - max(want, 0)
            for pod in (
                sorted(active, key=lambda p: p["metadata"]["creationTimestamp"])[-extra:]
                if extra > 0
                else []
            ):
                self._delete_pod(pod)
                active.remove(pod)
        # tally.active is the list `active`, as changed above
        self._write_status(job, status, tally)

    @staticmethod
    def _started(job: dict[str, Any], status: dict[str, Any]) -> float:
        import calendar

        stamp = status.get("startTime") or job["metadata"]["creationTimestamp"]
        return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))

    def _write_status(
        self, job: dict[str, Any], status: dict[str, Any], tally: _Tally
    ) -> dict[str, Any]:
        for field, value in (
            ("active", len(tally.active)),
            ("succeeded", tally.succeeded),
            ("failed", tally.failed),
        ):
            if value:
                status[field] = value
            else:
                status.pop(field, None)
        status["ready"] = sum(1 for p in tally.active if _pod_ready(p))
        status["terminating"] = len(tally.terminating)
        status.setdefault("uncountedTerminatedPods", {})
        if tally.completed_indexes is not None:
            if tally.completed_indexes:
                status["completedIndexes"] = format_indexes(tally.completed_indexes)
            else:
                status.pop("completedIndexes", None)
        if status == (job.get("status") or {}):
            return job
        new = copy.deepcopy(job)
        new["status"] = status
        return self.store.write(self.emulator.rt("jobs", "batch"), job, new)

    def _stop(self, job: dict[str, Any], status: dict[str, Any], tally: _Tally) -> dict[str, Any]:
        """Delete the active pods and write *status* with them terminating."""
        for pod in tally.active:
            self._delete_pod(pod)
        return self._write_status(job, status, tally.stopped())

    def _finish(
        self, job: dict[str, Any], status: dict[str, Any], tally: _Tally, reason: str
    ) -> None:
        ok, message = reason == "CompletionsReached", _FINISH_MESSAGES[reason]
        if ok:
            set_condition(status, "SuccessCriteriaMet", "True", reason, message)
            set_condition(status, "Complete", "True", reason, message)
            status["completionTime"] = rfc3339()
        else:
            set_condition(status, "FailureTarget", "True", reason, message)
            set_condition(status, "Failed", "True", reason, message)
        stored = self._stop(job, status, tally)
        self.finished_at[job["metadata"]["uid"]] = time.monotonic()
        if ok:
            self.emulator.events.record(
                stored, "Normal", "Completed", "Job completed", component="job-controller"
            )
        else:
            self.emulator.events.record(
                stored, "Warning", reason, message, component="job-controller"
            )
        self._expire(stored)

    def _expire(self, job: dict[str, Any]) -> None:
        """ttlSecondsAfterFinished: the TTL controller deletes finished Jobs (foreground)."""
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        finished = self.finished_at.setdefault(job["metadata"]["uid"], time.monotonic())
        remaining = finished + float(ttl) - time.monotonic()
        if remaining > 0:
            self.kick_later(remaining)
            return
        try:
            self.store.delete(
                self.emulator.rt("jobs", "batch"),
                job["metadata"]["namespace"],
                job["metadata"]["name"],
                DeleteOptions(propagation_policy="Foreground"),
            )
        except ApiError:
            pass

    # --- pods -------------------------------------------------------------------------------------

    def _create_pod(self, job: dict[str, Any], index: int | None) -> dict[str, Any] | None:
        name = job["metadata"]["name"]
        template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
        meta = template.get("metadata") or {}
        labels = dict(meta.get("labels") or {})
        annotations = dict(meta.get("annotations") or {})
        spec = template.get("spec") or {}
        if index is not None:
            labels[INDEX_KEY] = str(index)
            annotations[INDEX_KEY] = str(index)
            spec.setdefault("hostname", f"{name}-{index}")
            env_var = {
                "name": "JOB_COMPLETION_INDEX",
                "valueFrom": {
                    "fieldRef": {
                        "apiVersion": "v1",
                        "fieldPath": f"metadata.annotations['{INDEX_KEY}']",
                    }
                },
            }
            for container in list(spec.get("initContainers") or []) + list(
                spec.get("containers") or []
            ):
                env = container.setdefault("env", [])
                if not any(e.get("name") == "JOB_COMPLETION_INDEX" for e in env):
                    env.insert(0, dict(env_var))
        pod_meta: dict[str, Any] = {
            "generateName": f"{name}-{index}-" if index is not None else f"{name}-",
            "labels": labels,
            "ownerReferences": [owner_reference(job)],
        }
        if annotations:
            pod_meta["annotations"] = annotations
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": spec}
        return self.create_pod(job, pod)

    def _delete_pod(self, pod: dict[str, Any]) -> None:
        try:
            self.store.delete(
                self.emulator.rt("pods"),
                pod["metadata"]["namespace"],
                pod["metadata"]["name"],
                DeleteOptions(),
            )
        except ApiError:
            return
        owner = controller_of(pod)
        job = None
        if owner is not None:
            job = self.store.get(
                self.emulator.rt("jobs", "batch"), pod["metadata"]["namespace"], owner["name"]
            )
        if job is not None:
            self.emulator.events.record(
                job,
                "Normal",
                "SuccessfulDelete",
                f"Deleted pod: {pod['metadata']['name']}",
                component="job-controller",
            )
