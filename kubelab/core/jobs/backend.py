"""The abstract job backend, and the submit steps every backend shares.

A backend runs jobs somewhere (local processes, a Kubernetes cluster) and reports on them; it is
synchronous from the caller's side so that scripts, magics and widgets use it alike (the Kubernetes
backend runs its asyncio client on its own loop thread). :meth:`Backend.submit` is a template:
name → validation against the admin config → workspace snapshot → :meth:`Backend._launch`.
"""

from __future__ import annotations

import abc
import collections
import os
import queue
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from kubelab.core import objects
from kubelab.core.jobs.context import JobContext
from kubelab.core.jobs.errors import (
    BackendError,
    InvalidJobSpec,
    JobExists,
    JobFailed,
    JobNotFound,
    WaitTimeout,
)
from kubelab.core.jobs.folder import JobFolder
from kubelab.core.jobs.snapshot import GcReport, Snapshot, SnapshotStore
from kubelab.core.jobs.types import JobInfo, JobPhase, JobSpec, JobStatus, make_job_name
from kubelab.core.jobs.validate import Resolved, validate
from kubelab.core.notebook_env import NotebookDataset, NotebookEnv
from kubelab.core.quantity import parse_quantity
from kubelab.core.text import shorten

__all__ = ["Backend", "LogStream", "Lines", "Prepared", "CELL_FILE", "check_timeout", "check_rank",
           "check_lines"]

#: the file a cell's code is written to in the job's workspace
CELL_FILE = "_kubelab_cell.py"


def check_timeout(timeout: object, *, what: str = "timeout", no_limit: bool = True) -> float | None:
    """*timeout* (seconds, or with *no_limit* None: no limit) if it is one, else
    :class:`InvalidJobSpec` naming it *what*."""
    if timeout is None and no_limit:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise InvalidJobSpec(f"{what} must be a number of seconds, 0 or more"
                             f"{' (or None: no limit)' if no_limit else ''}, "
                             f"got {type(timeout).__name__} {shorten(timeout)}")
    return float(timeout)


def check_rank(rank: object) -> int:
    """*rank* (a worker's index, 0 for the first node) if it is one, else :class:`InvalidJobSpec`."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise InvalidJobSpec(f"rank must be a whole number, 0 or more (the node's index), "
                             f"got {type(rank).__name__} {shorten(rank)}")
    return rank


def check_lines(lines: object) -> int:
    """A count of log lines: a whole number, 0 or more (a huge one means the whole log)."""
    if isinstance(lines, bool) or not isinstance(lines, int) or lines < 0:
        raise InvalidJobSpec(f"the number of lines must be a whole number, 0 or more, "
                             f"got {type(lines).__name__} {shorten(lines)}")
    return min(lines, sys.maxsize)


@dataclass
class Prepared:
    """A submission that passed validation and has its workspace: what a backend launches."""

    name: str
    spec: JobSpec
    resolved: Resolved
    snapshot: Snapshot
    job_dir: Path
    #: the entry point, relative to the workspace
    entry: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def folder(self) -> JobFolder:
        return JobFolder(self.job_dir)

    @property
    def workspace(self) -> Path:
        return self.folder.workspace

    @property
    def output_dir(self) -> Path:
        return self.folder.outputs

    @property
    def metrics_file(self) -> Path:
        return self.folder.metrics


class LogStream:
    """Lines of a job's log, delivered in batches; fed by a backend thread, read by anyone.

    ``read(timeout)`` returns the lines that arrived (at least one, unless the timeout passed: then
    an empty list), or None once the log has ended. Batches keep 100,000 lines cheap: a reader
    wakes once per batch, not once per line.
    """

    def __init__(self, *, maxsize: int = 0) -> None:
        self._queue: queue.Queue[list[str] | None] = queue.Queue(maxsize)
        self._ended = False
        self._closed = threading.Event()

    # feeding side
    def put(self, lines: list[str]) -> None:
        """Queue *lines*; blocks while the reader is behind (back pressure), not once closed."""
        while lines and not self._closed.is_set():
            try:
                self._queue.put(lines, timeout=0.1)
                return
            except queue.Full:
                continue

    def end(self) -> None:
        while not self._closed.is_set():
            try:
                self._queue.put(None, timeout=0.1)
                return
            except queue.Full:
                continue

    @property
    def closed(self) -> bool:
        """True once the reader has closed the stream: the feeder should stop."""
        return self._closed.is_set()

    # reading side
    def read(self, timeout: float | None = None) -> list[str] | None:
        if self._ended:
            return None
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return []
        if first is None:
            self._ended = True
            return None
        lines = list(first)
        while True:  # drain whatever else is there, into one batch
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                self._ended = True  # this batch is the last; the next read returns None
                break
            lines.extend(more)
        return lines

    def close(self) -> None:
        self._closed.set()

    def __iter__(self) -> Iterator[str]:
        try:
            while (batch := self.read()) is not None:
                yield from batch
        finally:
            self.close()


class Lines:
    """Whole lines out of a byte stream read in arbitrary chunks (the last, unfinished line is
    kept for the next chunk)."""

    def __init__(self) -> None:
        self.pending = b""

    def feed(self, chunk: bytes) -> list[str]:
        data = self.pending + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self.pending = data
            return []
        self.pending = data[cut + 1:]
        return data[:cut].decode("utf-8", errors="replace").split("\n")

    def rest(self) -> list[str]:
        """What is left once the stream ended (a last line without a newline)."""
        data, self.pending = self.pending, b""
        return [data.decode("utf-8", errors="replace")] if data else []


class Backend(abc.ABC):
    """Runs jobs for one user (*ctx*) and reports on them."""

    #: "local" or "kubernetes"
    kind: str = ""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.store = SnapshotStore(ctx.jobs_root / ".snapshots")

    # -- the shared submit steps ----------------------------------------------------------------

    def submit(self, spec: JobSpec) -> JobInfo:
        """Validate, snapshot and launch *spec*; return the new job."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        self.check_spec(spec)
        name = spec.name or make_job_name(_stem(spec))
        existing = spec.name is not None and self.exists(name)
        if existing and not spec.replace:
            raise JobExists(
                f"a job named {shorten(name)} exists already; pick another --name, re-run it with "
                f"--replace (replace=True), or remove it first with `%jobs delete {name}`"
            )
        # Listing every job costs; the GPUs held by the others only matter to a job that asks for GPUs
        in_use = self.gpus_in_use() if spec.total_gpus else 0
        resolved = validate(spec, self.ctx, gpus_in_use=in_use)
        self.check_quota(spec, resolved)
        timings["validate"] = time.perf_counter() - t0
        workdir = Path(spec.workdir).expanduser()
        entry, extra = _entry(spec, workdir)
        job_dir = self.ctx.jobs_root / name
        _check_job_dir(job_dir)
        t1 = time.perf_counter()
        snapshot = self.store.take(
            workdir,
            max_size=int(parse_quantity(resolved.jobs.max_snapshot_size)),
            extra=extra,
            exclude=[self.ctx.jobs_root],
        )
        if job_dir.exists() and spec.name is None:  # a random name that was taken: try another
            return self.submit(_renamed(spec))
        if existing:
            self._replace(name)
        prepared = Prepared(name, spec, resolved, snapshot, job_dir, entry, timings)
        fresh = not job_dir.exists()
        job_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(prepared.workspace, ignore_errors=True)  # left by a deleted job of that name
        self._workspace(prepared)
        prepared.output_dir.mkdir(exist_ok=True)
        timings["snapshot"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        try:
            info = self._launch(prepared)
        except BaseException:
            # nothing was started: leave no half-made job behind
            shutil.rmtree(prepared.workspace, ignore_errors=True)
            if fresh:
                shutil.rmtree(job_dir, ignore_errors=True)
            raise
        timings["launch"] = time.perf_counter() - t2
        self.last_timings = timings
        self.last_snapshot = snapshot
        return info

    #: how long the steps of the last submit took (validate, snapshot, launch), in seconds
    last_timings: dict[str, float] = {}
    last_snapshot: Snapshot | None = None

    def check_spec(self, spec: JobSpec) -> None:
        """Refuse what this backend cannot run, before anything is created (a hook: by default
        every spec that passed validation is fine)."""
        return None

    def check_quota(self, spec: JobSpec, resolved: Resolved) -> None:
        """Refuse what the place jobs run has no room for (a namespace's ResourceQuota), after
        the admin config's checks and before the snapshot (a hook: by default, no check)."""
        return None

    def exists(self, name: str) -> bool:
        try:
            self.get(name)
        except JobNotFound:
            return False
        return True

    def gpus_in_use(self) -> int:
        """GPUs held by this user's unfinished jobs (for the quota check)."""
        return sum(j.gpus * j.nodes for j in self.list_jobs() if not j.status.done)

    def _replace(self, name: str) -> None:
        """Make room for a new job called *name*: stop and forget the old one (``--replace``)."""
        self.delete(name)

    def _workspace(self, prepared: Prepared) -> None:
        """Materialise the snapshot where the job will run: here, into ``workspace/`` (the local
        backend); a backend whose jobs run elsewhere does it there instead."""
        prepared.snapshot.materialize(prepared.workspace)

    # -- what each backend does -------------------------------------------------------------------

    @abc.abstractmethod
    def _launch(self, prepared: Prepared) -> JobInfo: ...

    @abc.abstractmethod
    def get(self, name: str) -> JobInfo:
        """The job called *name*, or :class:`JobNotFound`."""

    @abc.abstractmethod
    def list_jobs(self) -> list[JobInfo]:
        """This user's jobs, current and finished, newest first."""

    @abc.abstractmethod
    def open_logs(self, name: str, *, follow: bool = False, rank: int = 0) -> LogStream:
        """The job's log (of worker *rank* when it has several pods), ending with the job if
        *follow*, else with what there is now."""

    @abc.abstractmethod
    def cancel(self, name: str) -> JobInfo:
        """Stop the job (all its processes or pods); its files stay."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Stop the job if it runs and forget it; its output directory stays on disk."""

    @abc.abstractmethod
    def wait_changed(self, name: str, timeout: float) -> None:
        """Return when the job's status may have changed, or after *timeout* seconds."""

    def close(self) -> None:
        """Release threads and connections (a hook: by default there are none)."""
        return None

    # -- built on the above ---------------------------------------------------------------------

    def wait(self, name: str, timeout: float | None = None, *, check: bool = False) -> JobInfo:
        """Block until the job is done (or raise :class:`WaitTimeout`); with *check*, raise
        :class:`JobFailed` unless it succeeded."""
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = self.get(name)
            if info.status.done:
                break
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"job {name!r} is still {info.status.phase} after {timeout:g} s")
            self.wait_changed(name, min(left, 1.0))
        if check and not info.status.ok:
            raise self.failure(info)
        return info

    def tail(self, name: str, lines: int = 20) -> list[str]:
        last: collections.deque[str] = collections.deque(maxlen=check_lines(lines))
        stream = self.open_logs(name, follow=False)
        for line in stream:
            last.append(line)
        return list(last)

    def failure(self, info: JobInfo, lines: int = 20) -> JobFailed:
        last = self.tail(info.name, lines)
        return JobFailed(f"job {info.name!r} {info.status.describe()}",
                         exit_code=info.status.exit_code, last_lines=last)

    def gc(self, *, grace: float = 900.0) -> GcReport:
        """Free the snapshot store of what no job needs: keep the contents of the snapshots of
        this backend's jobs (and of snapshots taken in the last *grace* seconds: a submit's),
        drop the rest. A deleted job's outputs are not touched: only its workspace snapshot."""
        keep = {info.snapshot for info in self.list_jobs() if info.snapshot}
        return self.store.gc(keep, grace=grace)

    def metrics(self, name: str) -> list[dict[str, Any]]:
        from kubelab.core.jobs.metrics import read_metrics

        info = self.get(name)
        if not info.output_dir:
            return []
        points, _ = read_metrics(JobFolder.of_outputs(info.output_dir).metrics)
        return points


def _stem(spec: JobSpec) -> str:
    return PurePosixPath(spec.script).stem if spec.script else "cell"


def _renamed(spec: JobSpec) -> JobSpec:
    from dataclasses import replace

    return replace(spec, name=None)


def _check_job_dir(job_dir: Path) -> None:
    """Refuse a job folder (or its ``outputs``) that something else than a folder is in the way
    of, before anything is stopped or created."""
    folder = JobFolder(job_dir)
    for path in (job_dir, folder.outputs, folder.workspace):
        if (path.exists() or path.is_symlink()) and not path.is_dir():
            raise BackendError(f"{path} is in the way of the job's folder: it is a file, not a "
                               f"folder; move or remove it, or pick another --name")
        if not path.is_dir():
            return


def _entry(spec: JobSpec, workdir: Path) -> tuple[str, dict[str, bytes]]:
    """The entry point relative to the workspace, and extra files to put in the snapshot."""
    if spec.source is not None:
        return CELL_FILE, {CELL_FILE: spec.source.encode("utf-8")}  # JobSpec refused a lone surrogate
    assert spec.script is not None
    if workdir.exists() and not workdir.is_dir():
        raise InvalidJobSpec(f"the working directory {shorten(str(workdir))} is a file, not a folder")
    script = Path(spec.script).expanduser()
    path = script if script.is_absolute() else workdir / script
    if not path.is_file():
        raise InvalidJobSpec(f"no such script: {spec.script}" + (
            f" (looked in {workdir.resolve()})" if not script.is_absolute() else ""))
    try:
        rel = path.resolve().relative_to(workdir.resolve())
    except ValueError:
        raise InvalidJobSpec(
            f"the script {spec.script} is outside the working directory {workdir.resolve()}; "
            f"the job only gets a snapshot of that directory"
        ) from None
    return rel.as_posix(), {}


def python_command(entry: str, args: Sequence[str], *, gpus: int,
                   python: str = sys.executable,
                   torchrun: Sequence[str] | None = None) -> list[str]:
    """The command of a one-node job: plain Python, or ``torchrun`` for several GPUs."""
    if gpus > 1:
        runner = list(torchrun) if torchrun else [python, "-m", "torch.distributed.run"]
        return [*runner, "--standalone", "--nnodes=1", f"--nproc-per-node={gpus}", entry, *args]
    return [python, "-u", entry, *args]


def env_for(prepared: Prepared, ctx: JobContext) -> dict[str, str]:
    """Variables every job gets, whatever the backend.

    ``KUBELAB_DATASETS`` is written as the spawners write it in the notebook (the
    :class:`~kubelab.core.notebook_env.NotebookEnv` contract, docs/notebook-env.md: a JSON list
    of entries with name, mount path, mode, sub path and source), so code that reads it in the
    notebook reads it in the job too. A dataset the notebook mounts keeps the notebook's own
    entry (the job mounts it the same way; locally, with its link and target); another is
    described as the admin config declares it, ``{username}`` expanded.
    """
    env = dict(prepared.spec.env)
    env.update({
        "KUBELAB_JOB_NAME": prepared.name,
        "KUBELAB_OUTPUT_DIR": str(prepared.output_dir),
        "KUBELAB_METRICS_FILE": str(prepared.metrics_file),
        "PYTHONUNBUFFERED": "1",
    })
    if prepared.resolved.datasets:
        entries = []
        for d in prepared.resolved.datasets:
            mounted = ctx.notebook.dataset(d.name) if ctx.notebook else None
            if mounted is None or not mounted.mount_path:
                mounted = NotebookDataset.of(objects.dataset_for_user(d, username=ctx.user))
            entries.append(mounted)
            env["KUBELAB_DATA_" + d.name.upper().replace("-", "_")] = d.mount_path
        env["KUBELAB_DATASETS"] = NotebookEnv(datasets=tuple(entries)).to_env()["KUBELAB_DATASETS"]
    return env


def process_env() -> dict[str, str]:
    """This process's environment minus what would confuse a job (the kernel's own wiring)."""
    drop = ("JPY_PARENT_PID", "JPY_SESSION_NAME", "MPLBACKEND", "KUBELAB_METRICS_FILE",
            "KUBELAB_JOB_NAME", "KUBELAB_OUTPUT_DIR")
    return {k: v for k, v in os.environ.items() if k not in drop}


def now_status(phase: JobPhase, **kw: Any) -> JobStatus:
    return JobStatus(phase, **kw)
