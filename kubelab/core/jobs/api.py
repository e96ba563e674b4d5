"""The Python API of training jobs: :func:`train`, :func:`jobs`, :func:`job` and :class:`Job`.

The magics are a thin layer over these; scripts use them directly::

    import kubelab
    job = kubelab.train("train.py", args=["--epochs", "10"], gpus=2, data=["imagenet"])
    for line in job.logs(follow=True):
        print(line)
    job.wait()
    job.metrics()[-1]          # {'step': 9, 'loss': 0.21, ...}

Which backend runs the job: Kubernetes with the kubeconfig ``KUBELAB_KUBECONFIG`` names, when
set; else ``KUBELAB_BACKEND`` (``local`` or ``kubernetes``) when set; else Kubernetes when this
process runs in a pod (the notebook of a kubelab hub), else local processes. A ``$KUBECONFIG`` or
``~/.kube/config`` alone does not choose Kubernetes (docs/jobs.md says why). The user's code does
not change between them.
"""

from __future__ import annotations

import inspect
import json
import os
import textwrap
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from kubelab.core.jobs.backend import Backend, check_rank, check_timeout
from kubelab.core.jobs.context import JobContext
from kubelab.core.jobs.errors import BackendError, InvalidJobSpec
from kubelab.core.jobs.snapshot import GcReport
from kubelab.core.jobs.types import JobInfo, JobSpec, JobStatus
from kubelab.core.text import shorten

__all__ = ["Job", "train", "jobs", "job", "jobs_gc", "get_backend", "set_backend", "make_backend",
           "spec_for"]

_backend: Backend | None = None
_backend_lock = threading.Lock()


def _kubeconfig(environ: Mapping[str, str]) -> str | None:
    """The file ``KUBELAB_KUBECONFIG`` names (``~`` expanded), checked; None when unset."""
    value = environ.get("KUBELAB_KUBECONFIG", "").strip()
    if not value:
        return None
    path = os.path.expanduser(value)
    if not os.path.isfile(path):
        raise BackendError(f"KUBELAB_KUBECONFIG names {shorten(value)}, which is not a file; "
                           f"point it at a kubeconfig (or unset it for local jobs)")
    return path


def _choose_kind(environ: Mapping[str, str]) -> str:
    if _kubeconfig(environ) is not None:
        # Why it wins over KUBELAB_BACKEND: `kubelab up` sets KUBELAB_BACKEND=local in every
        # server it starts; naming a kubeconfig is the more specific, deliberate choice.
        return "kubernetes"
    kind = environ.get("KUBELAB_BACKEND", "").strip().lower()
    if kind:
        if kind not in ("local", "kubernetes"):
            raise InvalidJobSpec(f"KUBELAB_BACKEND must be 'local' or 'kubernetes', got {shorten(kind)}")
        return kind
    in_pod = bool(environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(
        "/var/run/secrets/kubernetes.io/serviceaccount/token")
    return "kubernetes" if in_pod else "local"


def get_backend() -> Backend:
    """The backend of this process (made on first use, then shared: one watch per kernel)."""
    global _backend
    with _backend_lock:
        if _backend is None:
            _backend = make_backend(os.environ)
        return _backend


def make_backend(environ: Mapping[str, str]) -> Backend:
    """A new backend for the settings in *environ* (see the module docstring for the choice)."""
    ctx = JobContext.from_environ(environ)
    if _choose_kind(environ) == "kubernetes":
        from kubelab.core.jobs.kubernetes import KubernetesBackend

        return KubernetesBackend(ctx, kubeconfig=_kubeconfig(environ))
    from kubelab.core.jobs.local import LocalBackend

    return LocalBackend(ctx)


def set_backend(backend: Backend | None) -> Backend | None:
    """Use *backend* for this process (tests, or an explicitly configured one); returns the old."""
    global _backend
    with _backend_lock:
        old, _backend = _backend, backend
    return old


class Job:
    """A handle on one job. Cheap to make; every property asks the backend (a cache) afresh."""

    def __init__(self, name: str, backend: Backend | None = None, *,
                 info: JobInfo | None = None) -> None:
        self.name = name
        self._backend = backend
        self._info = info

    @property
    def backend(self) -> Backend:
        return self._backend or get_backend()

    @property
    def info(self) -> JobInfo:
        """Everything known about the job, fresh."""
        self._info = self.backend.get(self.name)
        return self._info

    @property
    def status(self) -> JobStatus:
        return self.info.status

    @property
    def output_dir(self) -> str | None:
        """Where the job's ``$KUBELAB_OUTPUT_DIR`` is, as this notebook sees it."""
        return (self._info or self.info).output_dir

    def logs(self, follow: bool = False, *, rank: int = 0) -> Iterator[str]:
        """The job's log lines; with *follow*, keep yielding as they come until the job ends.
        *rank* is the node's index (0 to ``nodes - 1``)."""
        rank = check_rank(rank)
        if rank:
            nodes = self.info.nodes
            if rank >= nodes:
                raise InvalidJobSpec(
                    f"job {self.name!r} runs on {nodes} node{'s' if nodes != 1 else ''}: rank is "
                    f"{'0' if nodes == 1 else f'0 to {nodes - 1}'}, got {rank}")
        return iter(self.backend.open_logs(self.name, follow=bool(follow), rank=rank))

    def wait(self, timeout: float | None = None, *, check: bool = True) -> JobStatus:
        """Block until the job ends and return its status. Raises
        :class:`~kubelab.core.jobs.errors.WaitTimeout` after *timeout* seconds, and with *check*
        (the default) :class:`~kubelab.core.jobs.errors.JobFailed` unless it succeeded (the
        exception has the exit code and the last log lines)."""
        self._info = self.backend.wait(self.name, timeout, check=bool(check))  # it checks timeout
        return self._info.status

    def cancel(self) -> JobStatus:
        """Stop the job; its outputs and logs stay."""
        self._info = self.backend.cancel(self.name)
        return self._info.status

    def delete(self) -> None:
        """Stop the job if it runs and remove it; its output directory stays."""
        self.backend.delete(self.name)

    def metrics(self) -> list[dict[str, Any]]:
        """The points the job reported with ``kubelab.report(...)``, oldest first."""
        return self.backend.metrics(self.name)

    def __repr__(self) -> str:
        info = self._info
        status = info.status.describe() if info else "?"
        return f"<kubelab.Job {self.name!r} {status}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


def _function_source(fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> str:
    """A script that defines *fn* (its own source) and calls it with *kwargs*."""
    if not inspect.isfunction(fn) or fn.__name__ == "<lambda>":
        raise InvalidJobSpec("train() takes a script path, or a function defined with 'def'")
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        raise InvalidJobSpec(
            f"cannot find the source of {fn.__name__}(); define it in a cell or a file"
        ) from None
    lines = source.splitlines()
    while lines and lines[0].lstrip().startswith("@"):  # decorators are not shipped
        lines.pop(0)
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise InvalidJobSpec(f"kwargs must be a dict of argument names to values, like "
                             f"{{'lr': 3e-4}}; got {type(kwargs).__name__} {shorten(kwargs)}")
    try:
        encoded = json.dumps(dict(kwargs))
    except (TypeError, ValueError):
        raise InvalidJobSpec("function arguments must be JSON values (numbers, strings, lists, "
                             "dicts, True/False/None)") from None
    return "\n".join(lines) + (
        f"\n\nif __name__ == '__main__':\n    import json as _json\n"
        f"    {fn.__name__}(**_json.loads({encoded!r}))\n"
    )


def spec_for(target: str | Callable[..., Any] | None = None, *, code: str | None = None,
             name: str | None = None, gpus: int = 0, nodes: int = 1, cpus: str | None = None,
             memory: str | None = None, image: str | None = None, data: Sequence[str] = (),
             env: Mapping[str, str] | None = None, args: Sequence[str] = (),
             kwargs: Mapping[str, Any] | None = None, workdir: str = ".",
             replace: bool = False) -> JobSpec:
    """Build the :class:`JobSpec` that :func:`train` submits (handy to check one without running)."""
    if isinstance(data, str):
        data = [data]
    if isinstance(args, str):
        raise InvalidJobSpec("args must be a list of strings, like ['--epochs', '10']")
    if target is not None and code is not None:
        raise InvalidJobSpec("give a script or function, or code=, not both")
    if kwargs and not callable(target):
        raise InvalidJobSpec("kwargs= only goes with a function; pass args= to a script")
    script = source = None
    if callable(target):
        source = _function_source(target, kwargs or {})
        if name is None:
            from kubelab.core.jobs.types import make_job_name

            name = make_job_name(target.__name__)
    elif isinstance(target, (str, os.PathLike)):
        script = os.fspath(target)
    elif target is None:
        if code is None:
            raise InvalidJobSpec("train() needs a script path, a function, or code=")
        source = code
    else:
        raise InvalidJobSpec(f"train() takes a script path or a function, got {type(target).__name__}")
    return JobSpec(script=script, source=source, args=args, name=name, gpus=gpus, nodes=nodes,
                   cpus=None if cpus is None else str(cpus),
                   memory=None if memory is None else str(memory), image=image, data=data,
                   env={} if env is None else env, workdir=workdir, replace=replace)


def train(target: str | Callable[..., Any] | None = None, *, code: str | None = None,
          name: str | None = None, gpus: int = 0, nodes: int = 1, cpus: str | None = None,
          memory: str | None = None, image: str | None = None, data: Sequence[str] = (),
          env: Mapping[str, str] | None = None, args: Sequence[str] = (),
          kwargs: Mapping[str, Any] | None = None, workdir: str = ".",
          replace: bool = False) -> Job:
    """Submit a training job and return its :class:`Job` handle at once.

    *target* is a script path (relative to *workdir*) or a function (its source is shipped and it
    is called with *kwargs*); or pass the code itself as *code*. *gpus* is per node; *nodes* > 1
    runs ``torchrun`` across several pods (Kubernetes). *cpus*/*memory* are Kubernetes quantities
    per node ("4", "16Gi"). *image* defaults to the notebook's own; *data* names datasets from the
    admin config; *env* adds environment variables; *args* go to the script. The job runs on a
    snapshot of *workdir*. With *replace*, a job called *name* that exists is stopped and removed
    (its outputs stay) once the new one is accepted. Raises a :class:`~kubelab.core.jobs.errors.JobError` subclass, with a
    message to show as is, when the admin config or the backend refuses the job.
    """
    spec = spec_for(target, code=code, name=name, gpus=gpus, nodes=nodes, cpus=cpus,
                    memory=memory, image=image, data=data, env=env, args=args, kwargs=kwargs,
                    workdir=workdir, replace=replace)
    backend = get_backend()
    info = backend.submit(spec)
    return Job(info.name, backend, info=info)


def jobs() -> list[Job]:
    """Your jobs, running and finished, newest first."""
    backend = get_backend()
    return [Job(i.name, backend, info=i) for i in backend.list_jobs()]


def job(name: str) -> Job:
    """The job called *name* (raises :class:`~kubelab.core.jobs.errors.JobNotFound`)."""
    backend = get_backend()
    return Job(name, backend, info=backend.get(name))


def jobs_gc(*, grace: float = 900.0, quiet: bool = False) -> GcReport:
    """Free the workspace snapshots no job needs any more: the snapshot store (``.snapshots``
    in the jobs folder) only grows as jobs are submitted; this rewrites its pack with only the
    contents of your existing jobs' snapshots (and of those taken in the last *grace* seconds,
    which a submit may be using). Prints what it freed unless *quiet*; returns the
    :class:`~kubelab.core.jobs.snapshot.GcReport`. Outputs and logs are never touched."""
    check_timeout(grace, what="grace", no_limit=False)
    report = get_backend().gc(grace=grace)
    if not quiet:
        print(f"[kubelab] {report}")
    return report
