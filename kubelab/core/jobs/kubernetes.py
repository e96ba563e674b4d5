"""The Kubernetes backend: jobs as Kubernetes objects, state read back from the cluster.

Everything the user sees comes from the API server: the job's object carries what was asked (an
annotation) and its status; pods carry exit codes, scheduling problems and logs. So a restarted
kernel, or a second one, lists and follows the same jobs; nothing is kept in the kernel but a cache.

**One watch per kernel.** A backend keeps a list+watch cache (the core's
:class:`~kubelab.core.kube.cache.Reflector`) of the user's job objects and of their pods, each
selected by label; every status, list and wait is answered from it. After the initial list, the cost is a watch re-connection every
``watch_timeout`` seconds per resource, whatever the number of jobs: no polling per job. A watch
that drops is resumed from its last resourceVersion (a 410 Gone relists), with backoff.

**The namespace's quota, and pods that cannot be made.** Two more watches, on the namespace's
ResourceQuotas and on its ``FailedCreate`` events: a submit is checked against the quota's
``status.hard``/``status.used`` from the cache (no request), and a Job whose pods the controller
cannot create (``exceeded quota``...) says so in its status instead of waiting silently. Both are
optional: without read access to them (an older Role), the checks are skipped.

**No duplicate jobs.** The Kubernetes object's name is the job's name, and each submission carries
a random id in an annotation. A create that failed with a 5xx, a 429 or a broken connection is
retried; a retry that meets ``409 AlreadyExists`` reads the object back, and it is ours if the
id matches (the first attempt had succeeded after all), someone else's job otherwise.

The asyncio client runs on a loop thread of its own, so the API stays synchronous for scripts and
magics, and the watches keep running while a cell computes.

Why one file of about 900 lines: it is one class, :class:`KubernetesBackend`, whose methods share
its caches and loop; the objects it creates are built elsewhere (``k8s_objects.py``, pure), the
mechanisms it uses are the core's (``kube/``), and what is left is the backend's own state machine
(submit, adopt, status from pods, logs, cancel), which reads best in one place.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from kubernetes_asyncio.client.exceptions import ApiException

from kubelab.core import objects
from kubelab.core.config import PodSecurity
from kubelab.core.jobs import k8s_objects as ko
from kubelab.core.jobs.backend import Backend, Lines, LogStream, Prepared, env_for
from kubelab.core.jobs.context import JobContext
from kubelab.core.jobs.errors import BackendError, JobExists, JobNotFound, QuotaExceeded
from kubelab.core.jobs.folder import JobFolder
from kubelab.core.jobs.types import JobInfo, JobPhase, JobSpec, JobStatus
from kubelab.core.jobs.validate import Resolved
from kubelab.core.kube import ObjectApi, Reflector, RetriesExhausted, RetryPolicy, create_or_replace
from kubelab.core.quantity import QuantityError, format_bytes, format_cpu, parse_quantity
from kubelab.core.text import gpus_text, shorten

__all__ = ["KubernetesBackend", "KINDS"]

T = TypeVar("T")


@dataclass(frozen=True)
class Kind:
    kind: str
    group: str
    version: str
    plural: str


KINDS = {
    "Job": Kind("Job", "batch", "v1", "jobs"),
    "TrainJob": Kind("TrainJob", "trainer.kubeflow.org", "v1alpha1", "trainjobs"),
    "PyTorchJob": Kind("PyTorchJob", "kubeflow.org", "v1", "pytorchjobs"),
}
#: the events the backend watches: a controller that cannot create a job's pods
FAILED_CREATE = "reason=FailedCreate"


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type"): c for c in ((obj.get("status") or {}).get("conditions") or [])
            if c.get("status") == "True"}


class KubernetesBackend(Backend):
    """Runs jobs on a Kubernetes cluster; see the module docstring."""

    kind = "kubernetes"

    def __init__(self, ctx: JobContext, *, kubeconfig: str | os.PathLike[str] | None = None,
                 namespace: str | None = None, job_kind: str | None = None,
                 watch_timeout: float = 240.0, retries: int = 6, retry_delay: float = 0.05,
                 retry: RetryPolicy | None = None) -> None:
        """*kubeconfig*: a file (default: in-cluster config in a pod, else ``$KUBECONFIG``);
        *namespace*: default the context's (``KUBELAB_NAMESPACE``, the pod's own, the kubeconfig
        context's); *job_kind*: ``Job``, ``TrainJob``, ``PyTorchJob`` or None to discover (a
        Kubeflow CRD the API server advertises wins; ``KUBELAB_JOB_KIND`` overrides); *retry*: the
        policy of every API call (default: *retries* more tries, from *retry_delay* s, doubling
        up to 2 s)."""
        super().__init__(ctx)
        self.kubeconfig = str(kubeconfig) if kubeconfig else None
        #: the namespace the jobs live in (known after connecting, when none is given)
        self.namespace: str = namespace or ctx.namespace or ""
        self.job_kind = job_kind or os.environ.get("KUBELAB_JOB_KIND") or None
        if self.job_kind is not None and self.job_kind not in KINDS:
            raise BackendError(f"job kind must be one of {', '.join(KINDS)}, got {self.job_kind!r}")
        self.watch_timeout = watch_timeout
        self.retry = retry or RetryPolicy(attempts=retries + 1, deadline=None,
                                          first_delay=retry_delay, max_delay=2.0)
        self.selector = (f"{objects.KIND_LABEL}=job,"
                         f"{objects.USER_LABEL}={objects.safe_label_value(ctx.user)}")
        self._jobs: dict[str, dict[str, Any]] = {}
        self._pods: dict[str, dict[str, Any]] = {}
        #: the namespace's ResourceQuotas, and its FailedCreate events (by object name)
        self._quotas: dict[str, dict[str, Any]] = {}
        self._events: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._reflectors: dict[str, Reflector] = {}
        self._start_lock = threading.Lock()
        self._started = False
        self._closing = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="kubelab-kubernetes")
        self._thread.start()
        self.api: Any = None
        # the generated clients' declared return types do not hold with _preload_content=False
        # (an aiohttp response), which the watches and the log stream use
        self.core: Any = None
        self.custom: Any = None

    # -- the loop thread ------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 120) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise BackendError("the Kubernetes API did not answer in time") from None

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True

        async def shutdown() -> None:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.api is not None:
                await self.api.close()

        try:
            self._run(shutdown(), timeout=10)
        except Exception:  # noqa: BLE001 - closing: nothing useful to do about it
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _ensure(self) -> None:
        """Connect, discover, list and start the two watches, once."""
        if self._started:
            return
        with self._start_lock:
            if self._started:
                return
            self._run(self._setup())
            self._tasks = self._run(self._start_watches())
            for name, reflector in self._reflectors.items():
                if not reflector.synced.wait(60):
                    raise BackendError(f"could not list your {name} from the Kubernetes API")
            self._started = True

    async def _setup(self) -> None:
        from kubernetes_asyncio import client, config

        configuration = client.Configuration()
        namespace = self.namespace or None
        try:
            if self.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(client_configuration=configuration)
            else:
                await config.load_kube_config(config_file=self.kubeconfig,
                                              client_configuration=configuration)
                if namespace is None:
                    _, active = config.list_kube_config_contexts(config_file=self.kubeconfig)
                    namespace = (active or {}).get("context", {}).get("namespace")
        except Exception as e:  # noqa: BLE001 - any config problem is one message
            raise BackendError(f"cannot reach Kubernetes: {e}") from None
        self.namespace = namespace or "default"
        self.api = client.ApiClient(configuration)
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        if self.job_kind is None:
            self.job_kind = await self._discover()
        self.k = KINDS[self.job_kind]

    async def _discover(self) -> str:
        """TrainJob when the API server serves trainer.kubeflow.org, PyTorchJob when it serves
        kubeflow.org's pytorchjobs, else a plain Job."""
        from kubernetes_asyncio import client

        groups = await self._retry(lambda: client.ApisApi(self.api).get_api_versions())
        served = {g.name: [v.version for v in g.versions] for g in groups.groups}
        for kind in ("TrainJob", "PyTorchJob"):
            k = KINDS[kind]
            if k.version in served.get(k.group, []):
                resources = await self._retry(functools.partial(
                    self.custom.get_api_resources, k.group, k.version))
                if any(r.name == k.plural for r in resources.resources):
                    return kind
        return "Job"

    async def _retry(self, call: Callable[[], Awaitable[T]]) -> T:
        """*call* under the backend's retry policy; a transient failure that outlasts it is the
        last ``ApiException`` (the caller's message names it), or a BackendError when the API did
        not answer at all."""
        try:
            return await self.retry.call(call)
        except RetriesExhausted as e:
            if isinstance(e.cause, ApiException):
                raise e.cause from None
            raise BackendError(f"the Kubernetes API is unreachable: {e.cause}") from None

    # -- the watch cache --------------------------------------------------------------------------

    async def _start_watches(self) -> list[asyncio.Task[Any]]:
        k, ns, core = self.k, self.namespace, self.core
        assert ns is not None
        listers: dict[str, tuple[Any, dict[str, dict[str, Any]], bool]] = {
            "jobs": (functools.partial(self.custom.list_namespaced_custom_object, k.group, k.version,
                                       ns, k.plural, label_selector=self.selector), self._jobs, False),
            "pods": (functools.partial(core.list_namespaced_pod, ns, label_selector=self.selector),
                     self._pods, False),
            # optional: without read access to them (an older Role), the checks are skipped
            "quotas": (functools.partial(core.list_namespaced_resource_quota, ns), self._quotas, True),
            # Why a field selector: the namespace may be a team's, busy with other events; the
            # ones that matter here are the Job controller's "cannot create your pod".
            "events": (functools.partial(core.list_namespaced_event, ns, field_selector=FAILED_CREATE),
                       self._events, True),
        }
        for what, (lister, store, optional) in listers.items():
            self._reflectors[what] = Reflector(
                lister, what=what, store=store, lock=self._cond, on_change=self._cond.notify_all,
                watch_timeout=self.watch_timeout, optional=optional)
        return [r.start() for r in self._reflectors.values()]

    # -- submit -------------------------------------------------------------------------------

    def _replace(self, name: str, timeout: float = 60.0) -> None:
        # The new object has the old one's name, and its pods are found by the job's label: wait
        # (on the watch cache) until the old object and its pods are gone.
        self.delete(name)
        deadline = time.monotonic() + timeout
        with self._cond:
            while name in self._jobs or self._job_pods(name):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BackendError(f"the old job {name!r} is still stopping after "
                                       f"{timeout:g} s; try again in a moment")
                self._cond.wait(min(left, 1.0))

    def _workspace(self, prepared: Prepared) -> None:
        # The pod unpacks the snapshot itself (k8s_objects.build); here only the folder its
        # emptyDir is mounted on, so that the mount point exists on the home volume.
        prepared.workspace.mkdir(parents=True, exist_ok=True)

    @property
    def home_mount(self) -> str:
        """Where the home volume is in the notebook, and so in job pods (``KUBELAB_HOME_MOUNT``,
        else the config's ``home.mount_path``)."""
        nb = self.ctx.notebook
        if nb is not None and nb.home_mount:
            return nb.home_mount
        return self.ctx.config.home.mount_path if self.ctx.config else "/home/jovyan"

    def check_spec(self, spec: JobSpec) -> None:
        # Job pods mount the home volume where the notebook has it, and read the workspace
        # snapshot and write outputs, metrics and logs in the jobs folder: without that volume,
        # or with a jobs folder off it, they cannot see them. Refused before anything is written
        # or created.
        ctx, home = self.ctx, self.home_mount
        if not ctx.home_claim:
            raise BackendError(
                "no home volume claim is known (KUBELAB_HOME_CLAIM is not set), so job pods "
                "could not mount the volume your jobs folder is on: they would not see the "
                "workspace snapshot, nor write outputs and logs you can read. Submit from a "
                "notebook kubelab's spawner started with a home volume, or set "
                "KUBELAB_HOME_CLAIM (and KUBELAB_HOME_MOUNT) to the claim your jobs folder is on")
        if not _under(ctx.jobs_root, home):
            raise BackendError(
                f"the jobs folder {ctx.jobs_root} is not on your home volume (mounted at {home}), "
                f"so job pods, which mount that volume, would not see its workspace snapshot or "
                f"write outputs you can read; set KUBELAB_JOBS_ROOT to a folder under {home} "
                f"(or unset it for the default, ~/kubelab-jobs) and submit again")

    def _launch(self, prepared: Prepared) -> JobInfo:
        self._ensure()
        spec, resolved, ctx = prepared.spec, prepared.resolved, self.ctx
        image = resolved.image
        if not image:
            raise BackendError("no image to run: this notebook's image is unknown "
                               "(JUPYTER_IMAGE is not set); pass --image")
        config = ctx.config
        home_mount = self.home_mount
        summary = {
            "entry": spec.entry_name, "script": prepared.entry, "args": list(spec.args),
            "gpus": spec.gpus, "nodes": spec.nodes, "cpus": spec.cpus, "memory": spec.memory,
            "image": image, "data": [d.name for d in resolved.datasets],
            "snapshot": prepared.snapshot.id, "output_dir": str(prepared.output_dir),
        }
        env = env_for(prepared, ctx)
        built = ko.build(
            name=prepared.name, namespace=self.namespace, user=ctx.user, image=image,
            entry=prepared.entry, args=spec.args, workdir=str(prepared.workspace),
            gpus=spec.gpus, nodes=spec.nodes, cpus=spec.cpus, memory=spec.memory, env=env,
            datasets=resolved.datasets, gpu_type=resolved.gpu_type,
            pod_security=config.pod_security if config else PodSecurity(),
            home_claim=ctx.home_claim, home_mount=home_mount,
            ttl_seconds_after_finished=resolved.jobs.ttl_seconds_after_finished,
            active_deadline_seconds=resolved.jobs.active_deadline_seconds,
            service_account=ctx.service_account, submission=uuid.uuid4().hex, summary=summary,
            kind=self.job_kind or "Job", snapshot_store=str(self.store.root),
            snapshot_id=prepared.snapshot.id, log_dir=str(prepared.folder.node_logs),
            team=ctx.team_name, trainer_runtime=resolved.jobs.trainer_runtime,
        )
        created = self._run(self._create(built))
        with self._cond:
            current = self._jobs.get(prepared.name)
            if current is None or _rv(current) < _rv(created):
                self._jobs[prepared.name] = created
            self._cond.notify_all()
        return self._info(created)

    async def _create(self, built: ko.JobObjects) -> dict[str, Any]:
        k, ns = self.k, self.namespace
        assert ns is not None
        main = built.main
        name = main["metadata"]["name"]
        mine = main["metadata"]["annotations"][ko.SUBMISSION_ANNOTATION]

        def ours(existing: dict[str, Any]) -> None:
            # A create retried after a 5xx or a dropped connection may meet its own first attempt:
            # that is our job (same submission id), not someone else's of the same name.
            theirs = (existing["metadata"].get("annotations") or {}).get(ko.SUBMISSION_ANNOTATION)
            if theirs != mine:
                raise JobExists(f"a job named {name!r} exists already in namespace "
                                f"{ns}; pick another --name")

        api = ObjectApi(
            create=lambda body: self.custom.create_namespaced_custom_object(
                k.group, k.version, ns, k.plural, body),
            read=lambda: self.custom.get_namespaced_custom_object(k.group, k.version, ns, k.plural, name))
        try:
            created = await create_or_replace(main, api, policy=self.retry, exists=ours)
        except RetriesExhausted as e:
            if isinstance(e.cause, ApiException):
                raise BackendError(_api_message("could not create the job", e.cause)) from None
            raise BackendError(f"the Kubernetes API is unreachable: {e.cause}") from None
        except ApiException as e:
            raise BackendError(_api_message("could not create the job", e)) from None
        if built.service is not None:
            service = dict(built.service)
            service["metadata"] = dict(service["metadata"], ownerReferences=[{
                "apiVersion": main["apiVersion"], "kind": main["kind"], "name": name,
                "uid": created["metadata"]["uid"], "controller": True,
                "blockOwnerDeletion": True}])
            try:
                await self._retry(lambda: self.core.create_namespaced_service(
                    self.namespace, service))
            except ApiException as e:
                if e.status != 409:
                    raise BackendError(_api_message(
                        "could not create the rendezvous Service", e)) from None
        return created

    # -- reading ----------------------------------------------------------------------------------

    def _object(self, name: str) -> dict[str, Any]:
        self._ensure()
        with self._cond:
            obj = self._jobs.get(name)
        if obj is None:
            with self._cond:
                names = sorted(self._jobs)[:5]
            hint = f" (your jobs: {', '.join(names)})" if names else " (you have no jobs)"
            raise JobNotFound(f"no job named {shorten(name)} in namespace {self.namespace}{hint}")
        return obj

    def _job_pods(self, name: str) -> list[dict[str, Any]]:
        with self._cond:
            pods = [p for p in self._pods.values()
                    if (p["metadata"].get("labels") or {}).get(ko.JOB_LABEL) == name]
        return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")

    def _status(self, obj: dict[str, Any]) -> JobStatus:
        meta, status = obj["metadata"], obj.get("status") or {}
        cancelled = ko.CANCELLED_ANNOTATION in (meta.get("annotations") or {})
        created = _parse_time(meta.get("creationTimestamp"))
        started = _parse_time(status.get("startTime"))
        conds = _conditions(obj)
        pods = self._job_pods(meta["name"])
        code = _exit_code(pods)
        ok = next((conds[c] for c in ("Complete", "SuccessCriteriaMet", "Succeeded") if c in conds), None)
        bad = next((conds[c] for c in ("Failed", "FailureTarget") if c in conds), None)
        if ok is not None:
            finished = _parse_time(status.get("completionTime") or ok.get("lastTransitionTime"))
            return JobStatus(JobPhase.SUCCEEDED, 0, "", created, started, finished)
        if bad is not None:
            finished = _parse_time(bad.get("lastTransitionTime"))
            if cancelled:
                return JobStatus(JobPhase.CANCELLED, code, "cancelled", created, started, finished)
            message = bad.get("message") or bad.get("reason") or ""
            if code is not None and code != 0:
                message = _pod_reason(pods) or ""
            return JobStatus(JobPhase.FAILED, code, message, created, started, finished)
        if cancelled:
            return JobStatus(JobPhase.CANCELLED, code, "cancelled (stopping)", created, started,
                             _parse_time(meta["annotations"][ko.CANCELLED_ANNOTATION]))
        running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
        want = _summary(obj).get("nodes", 1)
        if running:
            message = "" if len(running) >= want else f"{len(running)} of {want} pods running"
            return JobStatus(JobPhase.RUNNING, None, message, created, started, None)
        cannot = None if pods else self._failed_create(obj)
        message = f"its pods cannot be created: {cannot}" if cannot else _pending_reason(pods)
        return JobStatus(JobPhase.PENDING, None, message, created, started, None)

    def _failed_create(self, obj: dict[str, Any]) -> str | None:
        """The controller's last word on why it cannot create the job's pods (``exceeded
        quota: ...``), from the FailedCreate events about this job's object (for a TrainJob:
        its JobSet's Jobs, ``<name>-node-<i>``) since it was made; None if there is none."""
        meta = obj["metadata"]
        name, uid, since = meta["name"], meta.get("uid"), meta.get("creationTimestamp") or ""
        with self._cond:
            events = list(self._events.values())
        best: tuple[str, str] | None = None
        for event in events:
            involved = event.get("involvedObject") or {}
            other = involved.get("name") or ""
            if other == name:
                if uid and involved.get("uid") and involved["uid"] != uid:
                    continue  # about an older job of that name
            elif not (other.startswith(f"{name}-node-") and other[len(name) + 6:].isdigit()):
                continue
            when = event.get("lastTimestamp") or event.get("eventTime") or ""
            if when < since:
                continue
            if best is None or when >= best[0]:
                best = (when, str(event.get("message") or "").removeprefix("Error creating: "))
        return best[1] if best else None

    # -- the namespace's quota -------------------------------------------------------------------

    def check_quota(self, spec: JobSpec, resolved: Resolved) -> None:
        """Refuse a job its namespace's ResourceQuota has no room for, from the watch cache
        (``status.hard`` less ``status.used``; GPUs, and CPU and memory when the job asks for
        them), naming what holds the rest. The API server would only refuse its pods, one by
        one, long after the submit returned."""
        self._ensure()
        with self._cond:
            quotas = sorted(self._quotas.values(), key=lambda q: q["metadata"]["name"])
        if not quotas:
            return
        gpu_resource = resolved.gpu_type.resource if resolved.gpu_type else "nvidia.com/gpu"
        asks: list[tuple[tuple[str, ...], Any, str]] = []
        if spec.total_gpus:
            asks.append(((f"requests.{gpu_resource}",), spec.total_gpus, "gpu"))
        quantity_keys: tuple[str, ...]
        for value, quantity_keys, what in ((spec.cpus, ("requests.cpu", "cpu", "limits.cpu"), "cpu"),
                                  (spec.memory, ("requests.memory", "memory", "limits.memory"),
                                   "memory")):
            if value:
                asks.append((quantity_keys, parse_quantity(value) * spec.nodes, what))
        freed: dict[str, Decimal] = {}
        if spec.replace and spec.name:  # --replace: the old job's pods go first
            for pod in self._job_pods(spec.name):
                for _, _, what in asks:
                    held = _pod_request(pod, gpu_resource if what == "gpu" else what)
                    freed[what] = freed.get(what, Decimal(0)) + held
        for quota in quotas:
            status = quota.get("status") or {}
            hard = status.get("hard") or (quota.get("spec") or {}).get("hard") or {}
            used = status.get("used") or {}
            for keys, amount, what in asks:
                for key in keys:
                    if key not in hard:
                        continue
                    try:
                        limit = parse_quantity(hard[key])
                        in_use = parse_quantity(used.get(key) or "0")
                    except QuantityError:
                        continue
                    left = max(limit - in_use + freed.get(what, 0), 0)
                    if amount > left:
                        raise QuotaExceeded(self._over_quota(
                            quota["metadata"]["name"], what, amount, left, limit, in_use,
                            gpu_resource))

    def _over_quota(self, quota: str, what: str, amount: Any, left: Any, limit: Any,
                    in_use: Any, gpu_resource: str) -> str:
        show = {"gpu": lambda v: gpus_text(int(v)),
                "cpu": lambda v: f"{format_cpu(v)} CPU" + ("" if v == 1 else "s"),
                "memory": lambda v: format_bytes(v) + " of memory"}[what]
        bare = {"gpu": lambda v: str(int(v)), "cpu": format_cpu, "memory": format_bytes}[what]
        held: list[str] = []
        mine = Decimal(0)
        jobs = []
        with self._cond:
            pods = list(self._pods.values())
        for pod in pods:
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            amount_held = _pod_request(pod, gpu_resource if what == "gpu" else what)
            if amount_held:
                mine += amount_held
                jobs.append((pod["metadata"].get("labels") or {}).get(ko.JOB_LABEL, "?"))
        notebook = Decimal(0)
        nb = self.ctx.notebook
        if what == "gpu" and nb is not None and nb.gpus:
            notebook = Decimal(nb.gpus)
            held.append(f"your notebook holds {bare(notebook)}")
        if mine:
            names = ", ".join(sorted(set(jobs))[:3]) + (", ..." if len(set(jobs)) > 3 else "")
            held.append(f"your jobs hold {bare(mine)} ({names})")
        others = in_use - notebook - mine
        if others > 0:
            held.append(f"other pods in namespace {self.namespace} hold {bare(others)}")
        detail = f"{bare(in_use)} in use" + (": " + "; ".join(held) if held else "")
        return (f"this job asks for {show(amount)} but your namespace's quota ({quota}) has "
                f"{bare(left)} of {bare(limit)} left ({detail}); wait for a job to finish, "
                f"cancel one (%jobs cancel NAME) or ask for less")

    def _info(self, obj: dict[str, Any]) -> JobInfo:
        summary = _summary(obj)
        return JobInfo(
            name=obj["metadata"]["name"], backend=self.kind, status=self._status(obj),
            entry=summary.get("entry", ""), args=tuple(summary.get("args", ())),
            gpus=summary.get("gpus", 0), nodes=summary.get("nodes", 1),
            image=summary.get("image"), data=tuple(summary.get("data", ())),
            output_dir=summary.get("output_dir"), snapshot=summary.get("snapshot"),
            extra={"namespace": self.namespace, "kind": obj.get("kind", self.job_kind),
                   "pods": [p["metadata"]["name"] for p in self._job_pods(obj["metadata"]["name"])]},
        )

    def get(self, name: str) -> JobInfo:
        return self._info(self._object(name))

    def list_jobs(self) -> list[JobInfo]:
        self._ensure()
        with self._cond:
            objs = list(self._jobs.values())
        objs.sort(key=lambda o: o["metadata"].get("creationTimestamp") or "", reverse=True)
        return [self._info(o) for o in objs]

    def wait_changed(self, name: str, timeout: float) -> None:
        with self._cond:
            self._cond.wait(timeout)

    def wait(self, name: str, timeout: float | None = None, *, check: bool = False) -> JobInfo:
        info = super().wait(name, timeout, check=False)
        # The Job's status and its pods' come on two watches: give the failed pod's exit code a
        # moment to arrive, so that a failure shows it (the pod itself may not be in the cache
        # yet: its watch can lag the Job's).
        deadline = time.monotonic() + 2.0
        while (info.status.phase is JobPhase.FAILED and info.status.exit_code is None
               and time.monotonic() < deadline):
            self.wait_changed(name, 0.1)
            info = self.get(name)
        if check and not info.status.ok:
            raise self.failure(info)
        return info

    # -- cancel / delete ------------------------------------------------------------------------

    def cancel(self, name: str) -> JobInfo:
        obj = self._object(name)
        if self._status(obj).done:
            return self._info(obj)
        patch: dict[str, Any] = {"metadata": {"annotations": {
            ko.CANCELLED_ANNOTATION: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}}}
        if self.k.kind == "Job":
            # Why a deadline rather than deleting: the Job stays (and shows Cancelled) until its
            # TTL, its pods are stopped by the Job controller, and nothing restarts them.
            patch["spec"] = {"activeDeadlineSeconds": 1}
        elif self.k.kind == "TrainJob":
            patch["spec"] = {"suspend": True}
        else:
            patch["spec"] = {"runPolicy": {"suspend": True}}
        updated = self._run(self._patch(name, patch))
        self._remember(updated)
        return self._info(updated)

    async def _patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        k = self.k
        try:
            return await self._retry(lambda: self.custom.patch_namespaced_custom_object(
                k.group, k.version, self.namespace, k.plural, name, patch,
                _content_type="application/merge-patch+json"))
        except ApiException as e:
            if e.status == 404:
                raise JobNotFound(f"no job named {shorten(name)}") from None
            raise BackendError(_api_message(f"could not change job {name}", e)) from None

    def _remember(self, obj: dict[str, Any]) -> None:
        with self._cond:
            current = self._jobs.get(obj["metadata"]["name"])
            if current is None or _rv(current) <= _rv(obj):
                self._jobs[obj["metadata"]["name"]] = obj
            self._cond.notify_all()

    def delete(self, name: str) -> None:
        self._object(name)
        self._run(self._delete(name))
        with self._cond:
            self._jobs.pop(name, None)
            self._cond.notify_all()

    async def _delete(self, name: str) -> None:
        k = self.k
        try:
            await self._retry(lambda: self.custom.delete_namespaced_custom_object(
                k.group, k.version, self.namespace, k.plural, name,
                propagation_policy="Background"))
        except ApiException as e:
            if e.status != 404:
                raise BackendError(_api_message(f"could not delete job {name}", e)) from None
        try:  # the owner reference removes it too; this is for clusters without GC (tests)
            await self._retry(lambda: self.core.delete_namespaced_service(name, self.namespace))
        except ApiException:
            pass

    # -- logs -----------------------------------------------------------------------------------

    def open_logs(self, name: str, *, follow: bool = False, rank: int = 0) -> LogStream:
        self._object(name)
        stream = LogStream()
        asyncio.run_coroutine_threadsafe(self._stream_logs(name, rank, follow, stream), self._loop)
        return stream

    def _pod_for(self, name: str, rank: int) -> dict[str, Any] | None:
        pods = self._job_pods(name)
        indexed = [p for p in pods
                   if (p["metadata"].get("annotations") or {}).get(ko.INDEX_ANNOTATION) == str(rank)]
        candidates = indexed or (pods if rank == 0 else [])
        return candidates[-1] if candidates else None

    async def _stream_logs(self, name: str, rank: int, follow: bool, stream: LogStream) -> None:
        """Feed the pod's log to *stream*; when the pod is gone (the Job's TTL, a lost node),
        the copy its runner kept on the volume. A follow stream that drops is resumed where it
        stopped: lines carry the runtime's timestamps, the request asks again from a little
        before the last one seen, and what was delivered already is skipped."""
        import aiohttp
        delivered = 0
        try:
            pod = None
            while True:  # wait (on the cache, no API calls) for the pod to have started
                pod = self._pod_for(name, rank)
                phase = (pod or {}).get("status", {}).get("phase")
                obj = self._jobs.get(name)
                if phase in ("Running", "Succeeded", "Failed"):
                    break
                if not follow or obj is None or self._status(obj).done or stream.closed:
                    pod = None
                    break
                await asyncio.sleep(0.1)
            if pod is None:
                await self._log_copy(name, rank, stream, skip=0)
                return
            pod_name = pod["metadata"]["name"]
            resume = _Resume()
            backoff = 0.05
            while not stream.closed:
                try:
                    resp = await self.core.read_namespaced_pod_log(
                        pod_name, self.namespace, container=pod["spec"]["containers"][0]["name"],
                        follow=follow, timestamps=True, _preload_content=False,
                        _request_timeout=None if follow else 60, **resume.since())
                except ApiException as e:
                    if e.status == 404:  # the pod is gone: its runner's copy on the volume
                        await self._log_copy(name, rank, stream, skip=delivered)
                        return
                    raise
                broken = False
                try:
                    split = Lines()
                    async for chunk in resp.content.iter_any():
                        if stream.closed:
                            break
                        lines = resume.fresh(split.feed(chunk))
                        delivered += len(lines)
                        stream.put(lines)
                    lines = resume.fresh(split.rest())  # a last line without a newline
                    delivered += len(lines)
                    stream.put(lines)
                except (OSError, asyncio.TimeoutError, aiohttp.ClientError):  # a dropped stream
                    broken = True
                finally:
                    resp.release()
                if not follow or stream.closed:
                    return
                if not broken and await self._pod_ended(pod_name):
                    return  # the natural end of a follow: the container exited
                await asyncio.sleep(backoff)  # dropped while the pod runs: resume
                backoff = min(backoff * 2, 2.0)
        except Exception as e:  # noqa: BLE001 - shown in the log, not raised in a loop thread
            stream.put([f"[kubelab] the log is not available: {_short(e)}"])
        finally:
            stream.end()

    async def _pod_ended(self, pod_name: str, wait: float = 1.0) -> bool:
        """Whether the pod's containers ended, per the watch cache (which may lag the log's end
        by a moment: wait up to *wait* seconds for it)."""
        deadline = time.monotonic() + wait
        while True:
            with self._cond:
                pod = self._pods.get(pod_name)
            if pod is None or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") \
                    or _terminated(pod):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)

    async def _log_copy(self, name: str, rank: int, stream: LogStream, *, skip: int) -> None:
        """The job's log as its runner copied it to the volume, less the first *skip* lines."""
        out = _summary(self._jobs.get(name) or {"metadata": {}}).get("output_dir")
        if not out:
            return
        path = JobFolder.of_outputs(out).node_logs / f"rank-{rank}.txt"

        def read() -> list[str]:
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                return []
            return text.splitlines()[skip:]

        lines = await asyncio.to_thread(read)
        for i in range(0, len(lines), 10_000):
            stream.put(lines[i:i + 10_000])


def _under(path: Path, folder: str) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(folder))
    except ValueError:
        return False
    return True


class _Resume:
    """Where a pod log stream got to, so that a new request goes on from there.

    The log API's ``timestamps=true`` prefixes each line with the runtime's RFC 3339 time (its
    fraction trimmed of zeros); a new request asks ``sinceSeconds`` from a margin before the last
    line seen (covering clock skew between this machine and the node, and the API's whole-second
    precision), and the lines it repeats are skipped: those older than the last, and as many of
    those *at* the last time as were delivered."""

    #: seconds asked for before the last line seen
    MARGIN = 60

    def __init__(self) -> None:
        self.last: tuple[str, int] | None = None
        self.at_last = 0  # lines delivered with the time `last`
        self._seen_at_last = 0  # lines of this request with the time `last`

    def since(self) -> dict[str, int]:
        self._seen_at_last = 0
        if self.last is None:
            return {}
        then = datetime.fromisoformat(self.last[0] + "+00:00").timestamp()
        return {"since_seconds": max(1, int(time.time() - then) + self.MARGIN)}

    def fresh(self, lines: list[str]) -> list[str]:
        out = []
        for line in lines:
            stamp, _, text = line.partition(" ")
            key = _stamp_key(stamp)
            if key is None:  # no timestamp: a runtime that did not add one
                out.append(line)
                continue
            if self.last is not None and key < self.last:
                continue
            if key == self.last:
                self._seen_at_last += 1
                if self._seen_at_last <= self.at_last:
                    continue
                self.at_last += 1
            else:
                self.last, self.at_last, self._seen_at_last = key, 1, 1
            out.append(text)
        return out


def _stamp_key(stamp: str) -> tuple[str, int] | None:
    """``2026-01-01T00:00:00.12Z`` → ``("2026-01-01T00:00:00", 120000000)``, else None."""
    if len(stamp) < 20 or not stamp.endswith("Z") or stamp[10:11] != "T":
        return None
    seconds, _, fraction = stamp[:-1].partition(".")
    digits = (fraction + "000000000")[:9]
    if not digits.isdigit() or len(seconds) != 19:
        return None
    return seconds, int(digits)


def _rv(obj: dict[str, Any]) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


def _summary(obj: dict[str, Any]) -> dict[str, Any]:
    raw = (obj["metadata"].get("annotations") or {}).get(ko.SPEC_ANNOTATION)
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        value = {}
    return value if isinstance(value, dict) else {}


def _terminated(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [s["state"]["terminated"] for s in (pod.get("status") or {}).get("containerStatuses") or []
            if (s.get("state") or {}).get("terminated")]


def _exit_code(pods: list[dict[str, Any]]) -> int | None:
    """The first non-zero exit code of the job's containers, else 0 if one ended, else None."""
    codes = [t.get("exitCode") for p in pods for t in _terminated(p)]
    codes = [c for c in codes if isinstance(c, int)]
    bad = [c for c in codes if c != 0]
    return bad[0] if bad else (0 if codes else None)


def _pod_reason(pods: list[dict[str, Any]]) -> str | None:
    for p in pods:
        for t in _terminated(p):
            if t.get("exitCode") and t.get("reason") and t["reason"] != "Error":
                return str(t["reason"])  # OOMKilled, ...
    return None


def _pod_request(pod: dict[str, Any], resource: str) -> Decimal:
    """What *pod*'s containers ask of *resource* (requests, else limits, as the API defaults
    them), summed."""
    total = Decimal(0)
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        value = (res.get("requests") or {}).get(resource) or (res.get("limits") or {}).get(resource)
        if value:
            try:
                total += parse_quantity(value)
            except QuantityError:
                pass
    return total


def _pending_reason(pods: list[dict[str, Any]]) -> str:
    """Why nothing runs yet, in the scheduler's or the kubelet's words."""
    for p in pods:
        status = p.get("status") or {}
        for c in status.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("message"):
                return str(c["message"])
        for s in status.get("containerStatuses") or []:
            waiting = (s.get("state") or {}).get("waiting")
            if waiting and waiting.get("reason") not in (None, "ContainerCreating"):
                return f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
    return "waiting for a node" if pods else "waiting for its pods"


def _api_message(what: str, e: Any) -> str:
    try:
        message = json.loads(e.body).get("message")
    except Exception:  # noqa: BLE001
        message = None
    return f"{what}: {message or e.reason or e.status}"


def _short(e: BaseException) -> str:
    status = getattr(e, "status", None)
    if status is not None:
        return _api_message(f"HTTP {status}", e)
    return str(e) or type(e).__name__


