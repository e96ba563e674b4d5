"""The kubelet: runs bound pods (on paper), keeps their logs, and ends them when told.

A bound pod becomes Running at once (or after ``settings.pod_start_delay``): ``podIP``, ``Ready``
conditions, running ``containerStatuses``, and ``Pulled``/``Created``/``Started`` events. Containers
run until the test ends them — :meth:`Kubelet.finish` (``cluster.finish_pod``) or annotations on the
pod or its Job's template:

``kubeapi.kubelab.test/exit-code``      exit code when the container ends (default 0)
``kubeapi.kubelab.test/run-seconds``    end the containers this long after they start
``kubeapi.kubelab.test/logs``           log text the containers write when they start
``kubeapi.kubelab.test/fail-times``     the first N runs exit 1 (counting earlier pods of the same
                                        Job and completion index), later ones exit 0
``kubeapi.kubelab.test/start-seconds``  stay ContainerCreating this long
``kubeapi.kubelab.test/image-pull-error`` ``"true"``: never start, ErrImagePull/ImagePullBackOff
``kubeapi.kubelab.test/pod-ip``         the pod's IP

``restartPolicy`` is honoured: a container that exits under ``Always`` (or non-zero under
``OnFailure``) restarts with ``restartCount`` + 1 and its old logs under ``previous=true``. A
gracefully deleted pod goes away after ``settings.pod_termination_delay`` (capped by its grace
period). Processes, probes, volumes and images are not emulated.
"""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import dataclass, field
from typing import Any

from .controller import Controller
from .errors import ApiError
from .meta import annotations_of, controller_of, rfc3339
from .scheduler import is_terminal, set_condition
from .store import WatchEvent

__all__ = ["Kubelet", "LogBuffer", "ANNOTATION_PREFIX"]

ANNOTATION_PREFIX = "kubeapi.kubelab.test/"


@dataclass
class LogBuffer:
    """The log of one run of one container; followers wait on it."""

    lines: list[tuple[float, str]] = field(default_factory=list)
    closed: bool = False
    _waiters: list[asyncio.Future[None]] = field(default_factory=list)

    def write(self, text: str) -> None:
        stamp = time.time()
        for line in text.splitlines():
            self.lines.append((stamp, line))
        self._notify()

    def close(self) -> None:
        self.closed = True
        self._notify()

    def _notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter


@dataclass
class _Run:
    """What the kubelet remembers about a pod it runs."""

    started: bool = False
    start_at: float | None = None
    finish_at: float | None = None
    restart_at: dict[str, float] = field(default_factory=dict)
    remove_at: float | None = None


def _annotation(pod: dict[str, Any], key: str) -> str | None:
    return annotations_of(pod).get(ANNOTATION_PREFIX + key)


def _waiting_status(container: dict[str, Any], waiting: dict[str, Any]) -> dict[str, Any]:
    """The status of a container that has not started (yet): ``state.waiting`` is *waiting*."""
    return {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "ready": False,
        "started": False,
        "restartCount": 0,
        "state": {"waiting": waiting},
        "lastState": {},
    }


def _container_id(uid: str, name: str, restarts: int) -> str:
    import hashlib

    return "containerd://" + hashlib.sha256(f"{uid}/{name}/{restarts}".encode()).hexdigest()


class Kubelet(Controller):
    name = "kubelet"
    watches = (("", "pods"), ("", "nodes"))

    def __init__(self, emulator: Any) -> None:
        super().__init__(emulator)
        self.runs: dict[str, _Run] = {}
        #: (namespace, name) of pods that changed since the last pass
        self.dirty: set[tuple[str, str]] = set()
        #: (namespace, name) of pods with a timer pending (start, finish, restart, removal)
        self.timed: set[tuple[str, str]] = set()
        #: (pod uid, container, run index) -> log
        self.logs: dict[tuple[str, str, int], LogBuffer] = {}
        self.resetting = False

    def reset(self) -> None:
        super().reset()
        self.resetting = True
        for buffer in self.logs.values():
            buffer.close()
        self.logs.clear()
        self.runs.clear()
        self.dirty.clear()
        self.timed.clear()
        self.resetting = False

    # --- the reconcile pass -----------------------------------------------------------------------

    def on_event(self, event: WatchEvent) -> None:
        """Work only on pods that changed (or have a timer due), so a pass does not scale with
        the number of pods in the cluster."""
        if event.group_resource == ("", "pods"):
            meta = event.obj["metadata"]
            if event.type == "DELETED":
                self.runs.pop(meta["uid"], None)
                for key in [k for k in self.logs if k[0] == meta["uid"]]:
                    self.logs.pop(key).close()
            else:
                self.dirty.add((meta["namespace"], meta["name"]))
                self.kick()
        elif event.group_resource == ("", "nodes") and event.type == "DELETED":
            gone = event.obj["metadata"]["name"]
            for pod in self.store.list(self.emulator.rt("pods")):
                if (pod.get("spec") or {}).get("nodeName") == gone:
                    self.dirty.add((pod["metadata"]["namespace"], pod["metadata"]["name"]))
            self.kick()

    def _later(self, pod: dict[str, Any], delay: float) -> None:
        self.timed.add((pod["metadata"]["namespace"], pod["metadata"]["name"]))
        self.kick_later(delay)

    def reconcile(self) -> None:
        pods_rt = self.emulator.rt("pods")
        keys = self.dirty | self.timed
        self.dirty = set()
        if not keys:
            return
        nodes = {n["metadata"]["name"]: n for n in self.store.list(self.emulator.rt("nodes"))}
        now = time.monotonic()
        for key in sorted(keys):
            pod = self.store.get(pods_rt, *key)
            if pod is None:
                self.timed.discard(key)
                continue
            node_name = (pod.get("spec") or {}).get("nodeName")
            if not node_name:
                continue
            uid = pod["metadata"]["uid"]
            run = self.runs.setdefault(uid, _Run())
            if node_name not in nodes:
                # Pod garbage collection: pods bound to a node that is gone are deleted.
                self.store.remove_now(pods_rt, pod)
                continue
            if pod["metadata"].get("deletionTimestamp"):
                self._terminate(pod, run, now)
                continue
            if is_terminal(pod):
                self.timed.discard(key)
                continue
            if not run.started:
                self._maybe_start(pod, run, nodes[node_name], now)
                continue
            if run.finish_at is not None and now >= run.finish_at:
                run.finish_at = None
                self.finish(pod, exit_code=self._annotated_exit_code(pod))
                continue
            for container, when in list(run.restart_at.items()):
                if now >= when:
                    del run.restart_at[container]
                    self._restart(pod, container)
            if run.finish_at is None and not run.restart_at:
                self.timed.discard(key)

    # --- starting ---------------------------------------------------------------------------------

    def _maybe_start(
        self, pod: dict[str, Any], run: _Run, node: dict[str, Any], now: float
    ) -> None:
        if _annotation(pod, "image-pull-error") == "true":
            self._image_pull_error(pod)
            run.started = True
            return
        if run.start_at is None:
            delay = self.emulator.settings.pod_start_delay
            extra = _annotation(pod, "start-seconds")
            if extra:
                delay += float(extra)
            run.start_at = now + delay
            if delay > 0:
                self._container_creating(pod)
                self._later(pod, delay)
                return
        if now < run.start_at:
            return
        run.started = True
        self._start(pod, node)
        run_seconds = _annotation(pod, "run-seconds")
        if (
            run_seconds is not None
            or _annotation(pod, "exit-code") is not None
            or _annotation(pod, "fail-times") is not None
        ):
            seconds = float(run_seconds or 0)
            run.finish_at = time.monotonic() + seconds
            self._later(pod, seconds)

    def _container_creating(self, pod: dict[str, Any]) -> None:
        new = copy.deepcopy(pod)
        status = new["status"]
        status["hostIP"] = self._node_ip(pod["spec"]["nodeName"])
        status["containerStatuses"] = [
            _waiting_status(c, {"reason": "ContainerCreating"})
            for c in pod["spec"].get("containers") or []
        ]
        set_condition(status, "Initialized", "True")
        set_condition(
            status,
            "Ready",
            "False",
            "ContainersNotReady",
            "containers with unready status: ["
            + " ".join(c["name"] for c in pod["spec"].get("containers") or [])
            + "]",
        )
        self.store.write(self.emulator.rt("pods"), pod, new)

    def _image_pull_error(self, pod: dict[str, Any]) -> None:
        new = copy.deepcopy(pod)
        status = new["status"]
        containers = pod["spec"].get("containers") or []
        status["containerStatuses"] = [
            _waiting_status(
                c,
                {
                    "reason": "ImagePullBackOff",
                    "message": f'Back-off pulling image "{c.get("image", "")}"',
                },
            )
            for c in containers
        ]
        self.store.write(self.emulator.rt("pods"), pod, new)
        for c in containers:
            self.emulator.events.record(
                pod,
                "Warning",
                "Failed",
                f'Failed to pull image "{c.get("image", "")}": '
                f"rpc error: code = NotFound desc = failed to pull and unpack image",
                component="kubelet",
                host=pod["spec"]["nodeName"],
            )
            self.emulator.events.record(
                pod,
                "Warning",
                "Failed",
                "Error: ErrImagePull",
                component="kubelet",
                host=pod["spec"]["nodeName"],
            )

    def _node_ip(self, node_name: str) -> str:
        node = self.store.get(self.emulator.rt("nodes"), None, node_name) or {}
        for address in (node.get("status") or {}).get("addresses") or []:
            if address.get("type") == "InternalIP":
                return str(address["address"])
        return "10.0.0.1"

    def _start(self, pod: dict[str, Any], node: dict[str, Any]) -> None:
        node_name = node["metadata"]["name"]
        new = copy.deepcopy(pod)
        status = new["status"]
        stamp = rfc3339()
        pod_ip = _annotation(pod, "pod-ip") or self.emulator.settings.pod_ip
        status.update(
            phase="Running",
            hostIP=self._node_ip(node_name),
            hostIPs=[{"ip": self._node_ip(node_name)}],
            podIP=pod_ip,
            podIPs=[{"ip": pod_ip}],
            startTime=stamp,
        )
        uid = pod["metadata"]["uid"]
        spec = pod["spec"]
        status["initContainerStatuses"] = [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": c.get("image", ""),
                "containerID": _container_id(uid, c["name"], 0),
                "ready": True,
                "restartCount": 0,
                "started": False,
                "state": {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "startedAt": stamp,
                        "finishedAt": stamp,
                        "containerID": _container_id(uid, c["name"], 0),
                    }
                },
                "lastState": {},
            }
            for c in spec.get("initContainers") or []
        ]
        if not status["initContainerStatuses"]:
            del status["initContainerStatuses"]
        status["containerStatuses"] = [
            self._running_status(uid, c, 0, stamp) for c in spec.get("containers") or []
        ]
        for condition in (
            "PodReadyToStartContainers",
            "Initialized",
            "ContainersReady",
            "Ready",
            "PodScheduled",
        ):
            set_condition(status, condition, "True")
        status["conditions"].sort(
            key=lambda c: (
                [
                    "PodReadyToStartContainers",
                    "Initialized",
                    "Ready",
                    "ContainersReady",
                    "PodScheduled",
                ].index(c["type"])
                if c["type"]
                in (
                    "PodReadyToStartContainers",
                    "Initialized",
                    "Ready",
                    "ContainersReady",
                    "PodScheduled",
                )
                else 9
            )
        )
        stored = self.store.write(self.emulator.rt("pods"), pod, new)
        for c in list(spec.get("initContainers") or []) + list(spec.get("containers") or []):
            self._write_start_logs(stored, c["name"], 0)
            self._container_events(stored, c, node_name)

    @staticmethod
    def _running_status(
        uid: str,
        container: dict[str, Any],
        restarts: int,
        stamp: str,
        last: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        image = container.get("image", "")
        return {
            "name": container["name"],
            "image": image,
            "imageID": f"{image}@sha256:{'0' * 64}",
            "containerID": _container_id(uid, container["name"], restarts),
            "ready": True,
            "started": True,
            "restartCount": restarts,
            "state": {"running": {"startedAt": stamp}},
            "lastState": last or {},
        }

    def _container_events(self, pod: dict[str, Any], container: dict[str, Any], host: str) -> None:
        record = self.emulator.events.record
        name = container["name"]
        record(
            pod,
            "Normal",
            "Pulled",
            f'Container image "{container.get("image", "")}" already present on machine',
            component="kubelet",
            host=host,
        )
        record(
            pod, "Normal", "Created", f"Created container: {name}", component="kubelet", host=host
        )
        record(
            pod, "Normal", "Started", f"Started container {name}", component="kubelet", host=host
        )

    def _write_start_logs(self, pod: dict[str, Any], container: str, run_index: int) -> None:
        buffer = self.buffer(pod, container, run_index)
        text = _annotation(pod, f"logs.{container}") or _annotation(pod, "logs")
        if text:
            buffer.write(text.replace("\\n", "\n"))

    # --- logs -------------------------------------------------------------------------------------

    def buffer(self, pod: dict[str, Any], container: str, run_index: int) -> LogBuffer:
        return self.logs.setdefault((pod["metadata"]["uid"], container, run_index), LogBuffer())

    def log_container(self, pod: dict[str, Any], requested: str | None) -> str:
        names = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
        init_names = [c["name"] for c in (pod.get("spec") or {}).get("initContainers") or []]
        name = pod["metadata"]["name"]
        if requested is None:
            if len(names) != 1:
                raise ApiError.bad_request(
                    f"a container name must be specified for pod {name}, "
                    f"choose one of: [{' '.join(names)}]"
                )
            return names[0]
        if requested not in names + init_names:
            raise ApiError.bad_request(f"container {requested} is not valid for pod {name}")
        return requested

    def log_buffer(self, pod: dict[str, Any], container: str, *, previous: bool) -> LogBuffer:
        status = pod.get("status") or {}
        statuses = {
            s["name"]: s
            for s in (status.get("containerStatuses") or [])
            + (status.get("initContainerStatuses") or [])
        }
        name = pod["metadata"]["name"]
        current = statuses.get(container)
        if current is None or "waiting" in (current.get("state") or {}) and not previous:
            reason = (
                ((current or {}).get("state") or {})
                .get("waiting", {})
                .get("reason", "ContainerCreating")
            )
            raise ApiError.bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: {reason}'
            )
        restarts = int(current.get("restartCount") or 0)
        if previous:
            if restarts == 0:
                raise ApiError.bad_request(
                    f'previous terminated container "{container}" in pod "{name}" not found'
                )
            return self.buffer(pod, container, restarts - 1)
        return self.buffer(pod, container, restarts)

    # --- ending -----------------------------------------------------------------------------------

    def _annotated_exit_code(self, pod: dict[str, Any]) -> int:
        fail_times = _annotation(pod, "fail-times")
        if fail_times is not None:
            return 1 if self._earlier_failures(pod) < int(fail_times) else 0
        return int(_annotation(pod, "exit-code") or 0)

    def _earlier_failures(self, pod: dict[str, Any]) -> int:
        """Failed runs before this one: restarts of this pod plus failed pods of the same Job
        (and completion index)."""
        restarts = sum(
            int(s.get("restartCount") or 0)
            for s in (pod.get("status") or {}).get("containerStatuses") or []
        )
        owner = controller_of(pod)
        if owner is None:
            return restarts
        index = annotations_of(pod).get("batch.kubernetes.io/job-completion-index")
        failed = 0
        for other in self.store.list(self.emulator.rt("pods"), pod["metadata"]["namespace"]):
            other_owner = controller_of(other)
            if (
                other["metadata"]["uid"] == pod["metadata"]["uid"]
                or other_owner is None
                or other_owner.get("uid") != owner.get("uid")
            ):
                continue
            if annotations_of(other).get("batch.kubernetes.io/job-completion-index") != index:
                continue
            if (other.get("status") or {}).get("phase") == "Failed":
                failed += 1
        return failed + restarts

    def finish(
        self,
        pod: dict[str, Any],
        *,
        exit_code: int = 0,
        logs: str | None = None,
        container: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """End a pod's containers (all, or *container*) with *exit_code*, writing *logs* first."""
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        if status.get("phase") != "Running":
            raise ValueError(f"pod {pod['metadata']['name']} is {status.get('phase')}, not Running")
        names = [c["name"] for c in spec.get("containers") or []]
        targets = [container] if container else names
        if container and container not in names:
            raise ValueError(f"pod {pod['metadata']['name']} has no container {container!r}")
        new = copy.deepcopy(pod)
        stamp = rfc3339()
        policy = spec.get("restartPolicy", "Always")
        run = self.runs.setdefault(pod["metadata"]["uid"], _Run(started=True))
        for state in new["status"].get("containerStatuses") or []:
            if state["name"] not in targets or "running" not in state.get("state", {}):
                continue
            restarts = int(state.get("restartCount") or 0)
            buffer = self.buffer(pod, state["name"], restarts)
            if logs:
                buffer.write(logs)
            buffer.close()
            terminated = {
                "exitCode": exit_code,
                "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                "startedAt": state["state"]["running"].get("startedAt", stamp),
                "finishedAt": stamp,
                "containerID": state.get("containerID", ""),
            }
            restart = policy == "Always" or (policy == "OnFailure" and exit_code != 0)
            state["ready"] = False
            state["started"] = False
            if restart:
                state["state"] = {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off restarting failed container {state['name']}",
                    }
                }
                state["lastState"] = {"terminated": terminated}
                run.restart_at[state["name"]] = (
                    time.monotonic() + self.emulator.settings.restart_delay
                )
                self._later(pod, self.emulator.settings.restart_delay)
            else:
                state["state"] = {"terminated": terminated}
        self._settle_phase(new)
        return self.store.write(self.emulator.rt("pods"), pod, new)

    @staticmethod
    def _settle_phase(pod: dict[str, Any]) -> None:
        status = pod["status"]
        states = [s.get("state") or {} for s in status.get("containerStatuses") or []]
        all_ready = all(s.get("ready") for s in status.get("containerStatuses") or [])
        if states and all("terminated" in s for s in states):
            failed = any(s["terminated"].get("exitCode") != 0 for s in states)
            status["phase"] = "Failed" if failed else "Succeeded"
            set_condition(status, "Ready", "False", "PodCompleted")
            set_condition(status, "ContainersReady", "False", "PodCompleted")
        elif not all_ready:
            waiting = [
                s["name"] for s in status.get("containerStatuses") or [] if not s.get("ready")
            ]
            message = f"containers with unready status: [{' '.join(waiting)}]"
            set_condition(status, "Ready", "False", "ContainersNotReady", message)
            set_condition(status, "ContainersReady", "False", "ContainersNotReady", message)
        else:
            set_condition(status, "Ready", "True")
            set_condition(status, "ContainersReady", "True")

    def _restart(self, pod: dict[str, Any], container: str) -> None:
        new = copy.deepcopy(pod)
        stamp = rfc3339()
        spec_container = next(c for c in pod["spec"]["containers"] if c["name"] == container)
        for index, state in enumerate(new["status"].get("containerStatuses") or []):
            if state["name"] == container and "waiting" in state.get("state", {}):
                restarts = int(state.get("restartCount") or 0) + 1
                new["status"]["containerStatuses"][index] = self._running_status(
                    pod["metadata"]["uid"], spec_container, restarts, stamp, state.get("lastState")
                )
                self._write_start_logs(pod, container, restarts)
        self._settle_phase(new)
        stored = self.store.write(self.emulator.rt("pods"), pod, new)
        self.emulator.events.record(
            stored,
            "Normal",
            "Started",
            f"Started container {container}",
            component="kubelet",
            host=pod["spec"]["nodeName"],
        )
        run = self.runs.get(pod["metadata"]["uid"])
        run_seconds = _annotation(pod, "run-seconds")
        if run is not None and (
            run_seconds is not None
            or _annotation(pod, "exit-code") is not None
            or _annotation(pod, "fail-times") is not None
        ):
            run.finish_at = time.monotonic() + float(run_seconds or 0)
            self._later(pod, float(run_seconds or 0))

    def _terminate(self, pod: dict[str, Any], run: _Run, now: float) -> None:
        if run.remove_at is None:
            grace = float(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
            delay = min(grace, self.emulator.settings.pod_termination_delay)
            run.remove_at = now + delay
            if delay > 0:
                self._later(pod, delay)
                return
        if now < run.remove_at:
            return
        for key, buffer in self.logs.items():
            if key[0] == pod["metadata"]["uid"]:
                buffer.close()
        if pod["metadata"].get("finalizers"):
            # The kubelet's part is done; the object stays until its finalizers are removed.
            if pod["metadata"].get("deletionGracePeriodSeconds"):
                rt = self.emulator.rt("pods")
                self.store.delete(
                    rt, pod["metadata"]["namespace"], pod["metadata"]["name"], _grace_zero()
                )
            return
        self.store.remove_now(self.emulator.rt("pods"), pod)


def _grace_zero() -> Any:
    from .store import DeleteOptions

    return DeleteOptions(grace_period_seconds=0)
