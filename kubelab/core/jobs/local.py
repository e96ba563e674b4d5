"""The local backend: jobs as processes on this machine (``kubelab up``, a laptop, a GPU box).

Each job lives in ``<jobs root>/<name>/``: ``job.json`` (what was asked, the process id),
``workspace/`` (the snapshot, the job's working directory), ``outputs/`` (``$KUBELAB_OUTPUT_DIR``),
``logs.txt`` (stdout and stderr), ``metrics.jsonl`` and, once it ended, ``exit_code``. Everything
is on disk, so a restarted kernel (or another one) lists, follows and cancels the same jobs.

Why a ``/bin/sh`` wrapper around the job: the job must outlive the kernel that started it (it runs
in its own session and process group), and its exit code must be recorded even when no kernel is
there to reap it. The shell records ``$?`` to ``exit_code``; it ignores the SIGTERM that cancel sends
to the group (with a trap, not SIG_IGN, which children would inherit) so that it can still write
the code after the job itself stopped. A shell costs a millisecond where a Python supervisor would
cost a second interpreter start.

GPUs: the job gets ``CUDA_VISIBLE_DEVICES`` set to GPUs of this server that no other running local
job holds; several GPUs run under ``torchrun --standalone --nnodes=1 --nproc-per-node=N``.

Three things torchrun does that the backend makes up for: the first two as the Kubernetes backend
does too (:mod:`kubelab.core.jobs.torchrun`):

- Its workers' lines glue together (``python -u``): the job's ``PYTHON_EXEC`` is a launcher in the
  job's folder that runs them line-buffered.
- A failed worker's error is pushed out of the last lines by torchrun's report: after a failed
  torchrun (not a cancel) the wrapper appends a summary naming the rank and its error.
- It starts each worker in a session of its own, outside the job's process group. Cancel notes
  the groups of the job's descendants while torchrun (their parent) lives, so the SIGKILL after the
  grace period reaches a worker that ignored SIGTERM too (torchrun would wait 30 s for it, be
  killed first, and leave the worker running).

CPU and memory, as far as an unprivileged process can (no cgroups here), by the rules the local
spawner uses too (:mod:`kubelab.core.limits`): ``--cpus N`` pins the job to ``ceil(N)`` CPUs
(affinity; cores no other running job is pinned to first), which bounds its parallelism, not its
share of those cores; ``--memory`` becomes an address-space limit (``ulimit -v``, RLIMIT_AS) on
each of its processes, except for GPU jobs (CUDA reserves far more address space than it uses,
so the limit would break it). The job's record says which applied.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import select
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kubelab.core.jobs.backend import (
    Backend,
    Lines,
    LogStream,
    Prepared,
    env_for,
    process_env,
    python_command,
)
from kubelab.core.jobs.context import JobContext
from kubelab.core.jobs.errors import BackendError, InvalidJobSpec, JobNotFound, QuotaExceeded
from kubelab.core.jobs.torchrun import helper_source, write_launcher
from kubelab.core.jobs.types import (
    JobInfo,
    JobPhase,
    JobSpec,
    JobStatus,
    check_job_name,
)
from kubelab.core.limits import plan_limits
from kubelab.core.text import gpus_text, shorten

__all__ = ["LocalBackend", "visible_gpus"]

#: the wrapper of a job's command: the trap, the run, the exit code; a torchrun job's puts lines
#: before and after the run
_WRAPPER_HEAD = "trap 'true' TERM INT HUP\n"
_WRAPPER_RUN = (
    '"$@"\n'
    "code=$?\n"
)
_WRAPPER_TAIL = (
    # a builtin, not mv: no extra process between the job's end and its recorded exit code
    "echo $code > exit_code\n"
    "exit $code\n"
)
_WRAPPER = _WRAPPER_HEAD + _WRAPPER_RUN + _WRAPPER_TAIL
#: a torchrun job's: the same, and after a failure (not a cancel) the summary of
#: :func:`kubelab.core.jobs.torchrun.torchrun_failure`, appended to the log before the exit code is
#: written (a reader that sees the code reads the whole log). Before the command: python,
#: :func:`kubelab.core.jobs.torchrun.helper_source`, the log, the cancel mark.
_TORCHRUN_WRAPPER = (
    _WRAPPER_HEAD
    + 'py=$1 helper=$2 log=$3 cancelled=$4\n'
    "shift 4\n"
    + _WRAPPER_RUN
    + '[ $code -eq 0 ] || [ -e "$cancelled" ] || "$py" -I -c "$helper" summary "$log"\n'
    + _WRAPPER_TAIL
)
#: torchrun's ``PYTHON_EXEC`` in the job's folder (:func:`kubelab.core.jobs.torchrun.launcher_text`)
_LAUNCHER = "torchrun-python"
#: seconds between SIGTERM and SIGKILL when cancelling
CANCEL_GRACE = 10.0


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs this server was given: ``KUBELAB_LOCAL_GPUS`` or ``CUDA_VISIBLE_DEVICES`` (ids or
    UUIDs, comma separated), else every NVIDIA GPU the driver lists, else none."""
    env = os.environ if environ is None else environ
    for var in ("KUBELAB_LOCAL_GPUS", "CUDA_VISIBLE_DEVICES"):
        value = env.get(var)
        if value is not None:
            devices = [d.strip() for d in value.split(",") if d.strip()]
            return [d for d in devices if d != "-1"]
    try:
        return [str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
    except OSError:
        return []


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of *pid* (guards against a reused pid), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):
        return None
    return fields[19].decode()


def _alive(pid: int, start: str | None) -> bool:
    if os.path.exists("/proc/self/stat"):
        return _proc_start(pid) is not None and (start is None or _proc_start(pid) == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalBackend(Backend):
    """Runs jobs as local processes; see the module docstring."""

    kind = "local"

    def __init__(self, ctx: JobContext, *, environ: Mapping[str, str] | None = None,
                 torchrun: Sequence[str] | None = None) -> None:
        """*environ* is where the server's GPUs are read from (default ``os.environ``);
        *torchrun* the command that starts several workers (default: PyTorch's
        ``python -m torch.distributed.run`` when PyTorch is installed)."""
        super().__init__(ctx)
        if torchrun is None and importlib.util.find_spec("torch") is not None:
            torchrun = [sys.executable, "-m", "torch.distributed.run"]
        self.torchrun = list(torchrun) if torchrun else None
        self.root = ctx.jobs_root
        self.gpus = visible_gpus(environ)
        #: jobs this process started: name → pid (reaped here, so they do not linger as zombies)
        self._children: dict[str, int] = {}
        self._lock = threading.Lock()

    # -- submit -------------------------------------------------------------------------------

    def check_spec(self, spec: JobSpec) -> None:
        if spec.nodes > 1:
            raise InvalidJobSpec(
                f"the local backend runs on this one machine: --nodes must be 1, got {spec.nodes} "
                f"(use --gpus for several GPUs here)"
            )
        if spec.gpus > len(self.gpus):
            have = f"has {len(self.gpus)}" if self.gpus else "has none"
            raise QuotaExceeded(f"{gpus_text(spec.gpus)} asked; this server {have}")
        if spec.gpus > 1 and not self.torchrun:
            raise BackendError(f"--gpus {spec.gpus} runs torchrun, which needs PyTorch installed")

    def _free_gpus(self) -> list[str]:
        held = {d for j in self._records() if not self._status(j).done for d in j.get("devices", [])}
        return [g for g in self.gpus if g not in held]

    def _launch(self, prepared: Prepared) -> JobInfo:
        spec = prepared.spec
        with self._lock:
            devices: list[str] = []
            if spec.gpus:
                free = self._free_gpus()
                if len(free) < spec.gpus:
                    raise QuotaExceeded(
                        f"{gpus_text(spec.gpus)} asked, {len(free)} of this server's {len(self.gpus)} "
                        f"are free (the others are held by running jobs; see %jobs)"
                    )
                devices = free[: spec.gpus]
            command = python_command(prepared.entry, spec.args, gpus=spec.gpus,
                                     torchrun=self.torchrun)
            env = process_env()
            env.update(env_for(prepared, self.ctx))
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
            job_dir = prepared.job_dir
            for leftover in ("exit_code", "cancelled", "logs.txt", "metrics.jsonl"):
                try:
                    (job_dir / leftover).unlink()
                except FileNotFoundError:
                    pass
                except OSError as e:  # a folder of that name, say: not kubelab's to remove
                    raise BackendError(
                        f"could not start the job: {job_dir / leftover} is in the way "
                        f"({e.strerror or e}); kubelab writes the job's {leftover} there: move it "
                        f"away and submit again") from None
            torchrun = spec.gpus > 1
            if torchrun and "PYTHON_EXEC" not in spec.env:
                env["PYTHON_EXEC"] = str(job_dir / _LAUNCHER)
                write_launcher(env["PYTHON_EXEC"], sys.executable)
            record: dict[str, Any] = {
                "name": prepared.name, "backend": self.kind, "user": self.ctx.user,
                "created": _now().isoformat(), "entry": spec.entry_name,
                "script": prepared.entry, "args": list(spec.args), "gpus": spec.gpus, "nodes": 1,
                "cpus": spec.cpus, "memory": spec.memory, "image": None,
                "data": [d.name for d in prepared.resolved.datasets],
                "snapshot": prepared.snapshot.id, "devices": devices, "command": command,
            }
            record["_created"] = _parse_time(record["created"])
            held = ({c for r in self._records() if not self._status(r).done
                     for c in r.get("cpuset", [])} if spec.cpus else set())
            plan = plan_limits(spec.memory, spec.cpus, gpu=spec.gpus > 0, scope="job",
                               busy_cpus=held)
            cores = plan.cpuset
            record["limits"] = plan.notes
            record["cpuset"] = sorted(cores) if cores else []
            wrapper = 'cd "$KUBELAB_WORKSPACE" || exit 126\n'
            if plan.rlimit_as_kib:
                wrapper += f"ulimit -v {plan.rlimit_as_kib} || exit 125\n"
            template = _TORCHRUN_WRAPPER if torchrun else _WRAPPER
            wrapper += template.replace("exit_code", shlex.quote(str(job_dir / "exit_code")))
            before = ([sys.executable, helper_source(), str(job_dir / "logs.txt"),
                       str(job_dir / "cancelled")] if torchrun else [])
            env["KUBELAB_WORKSPACE"] = str(prepared.workspace)
            try:
                # posix_spawn (vfork underneath) rather than fork: a kernel process is large, and
                # forking it costs milliseconds on the path to the job's first log line. The
                # child inherits this thread's CPU affinity: set for the spawn, then restored.
                mine = os.sched_getaffinity(0) if cores else None
                if cores:
                    os.sched_setaffinity(0, cores)
                pid = os.posix_spawn(
                    "/bin/sh", ["/bin/sh", "-c", wrapper, "kubelab-job", *before, *command], env,
                    file_actions=[
                        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                        (os.POSIX_SPAWN_OPEN, 1, str(job_dir / "logs.txt"),
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644),
                        (os.POSIX_SPAWN_DUP2, 1, 2),
                    ],
                    setsid=True,  # its own session and process group: it outlives the kernel
                )
            except OSError as e:
                raise BackendError(f"could not start the job: {e}") from None
            finally:
                if cores and mine:
                    os.sched_setaffinity(0, mine)
            self._children[prepared.name] = pid
            record["pid"] = pid
            record["proc_start"] = _proc_start(pid)
            _write_json(job_dir / "job.json", record)
        return self._info(record)

    # -- reading state --------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        check_job_name(name)
        return self.root / name

    def _lookup(self, name: str) -> dict[str, Any]:
        """The record of job *name*, checked or broken (:func:`_load_record`), or
        :class:`JobNotFound`."""
        try:
            job_dir = self._dir(name)
        except InvalidJobSpec:
            raise JobNotFound(f"no job named {shorten(name)}") from None
        record = _load_record(job_dir)
        if record is None:
            raise JobNotFound(f"no job named {shorten(name)}{self._hint()}")
        return record

    def _record(self, name: str) -> dict[str, Any]:
        """The checked record of job *name*: :class:`JobNotFound` if there is none,
        :class:`BackendError` (naming the file and what to do) if it cannot be read."""
        record = self._lookup(name)
        if "_broken" in record:
            raise BackendError(_broken_text(record))
        return record

    def _hint(self) -> str:
        names = [r["name"] for r in self._scan()[:5]]
        return f" (your jobs: {', '.join(names)})" if names else " (you have no jobs)"

    def _scan(self) -> list[dict[str, Any]]:
        """Every job folder's record, newest first: checked ones, and broken ones (a ``_broken``
        key says why they cannot be read) so that one damaged job.json hides nothing else."""
        out = []
        try:
            entries = list(os.scandir(self.root))
        except (FileNotFoundError, NotADirectoryError):
            return []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            record = _load_record(Path(entry.path))
            if record is None:
                continue
            if "_broken" in record:
                try:  # a folder that is no job name cannot be named in a command: not listed
                    check_job_name(entry.name)
                except InvalidJobSpec:
                    continue
            elif record.get("backend") != self.kind:
                continue
            out.append(record)
        out.sort(key=lambda r: r["_created"], reverse=True)
        return out

    def _records(self) -> list[dict[str, Any]]:
        """The jobs whose record could be read, newest first."""
        return [r for r in self._scan() if "_broken" not in r]

    def _status(self, record: dict[str, Any]) -> JobStatus:
        job_dir = Path(record["_dir"])
        created = record["_created"]  # every record has it (_load_record, submit, _broken)
        self._reap(record["name"])
        cancelled = (job_dir / "cancelled").exists()
        try:
            code_path = job_dir / "exit_code"
            code = int(code_path.read_text().strip())
            finished = datetime.fromtimestamp(code_path.stat().st_mtime, timezone.utc)
        except (OSError, ValueError):
            code = None
            finished = None
        if code is not None:
            if cancelled:
                return JobStatus(JobPhase.CANCELLED, code, "cancelled", created, created, finished)
            if code == 0:
                return JobStatus(JobPhase.SUCCEEDED, 0, "", created, created, finished)
            return JobStatus(JobPhase.FAILED, code, _signal_text(code), created, created, finished)
        pid = record.get("pid")
        if pid is not None and _alive(pid, record.get("proc_start")):
            return JobStatus(JobPhase.RUNNING, None, "", created, created, None)
        if cancelled:
            return JobStatus(JobPhase.CANCELLED, None, "cancelled", created, created,
                             _mtime(job_dir / "cancelled"))
        return JobStatus(JobPhase.FAILED, None,
                         "the job's processes ended without an exit code (killed, or the machine "
                         "restarted)", created, created, _mtime(job_dir / "logs.txt"))

    def _info(self, record: dict[str, Any]) -> JobInfo:
        if "_dir" not in record:
            record["_dir"] = str(self.root / record["name"])
        job_dir = Path(record["_dir"])
        if "_broken" in record:
            # Why listed rather than skipped: the user sees it, and what to do, in %jobs.
            status = JobStatus(JobPhase.FAILED, None, _broken_text(record, short=True),
                               record["_created"])
            return JobInfo(name=record["name"], backend=self.kind, status=status,
                           output_dir=str(job_dir / "outputs"), snapshot=record.get("snapshot"),
                           extra={"log": str(job_dir / "logs.txt"), "broken": record["_broken"]})
        return JobInfo(
            name=record["name"], backend=self.kind, status=self._status(record),
            entry=record.get("entry", ""), args=tuple(record.get("args", ())),
            gpus=record.get("gpus", 0), nodes=1, image=None, data=tuple(record.get("data", ())),
            output_dir=str(job_dir / "outputs"), snapshot=record.get("snapshot"),
            extra={"pid": record.get("pid"), "devices": record.get("devices", []),
                   "log": str(job_dir / "logs.txt"), "command": record.get("command"),
                   "limits": record.get("limits", [])},
        )

    def exists(self, name: str) -> bool:
        # a job whose record cannot be read exists too: --replace deletes it, else JobExists
        try:
            return _load_record(self._dir(name)) is not None
        except InvalidJobSpec:
            return False

    def get(self, name: str) -> JobInfo:
        # a broken record too: its status says what is wrong and what to do (%jobs delete)
        return self._info(self._lookup(name))

    def list_jobs(self) -> list[JobInfo]:
        return [self._info(r) for r in self._scan()]

    def _reap(self, name: str) -> bool:
        """Collect the exit of a job this process started; True once it has ended."""
        pid = self._children.get(name)
        if pid is None:
            return False
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            self._children.pop(name, None)
            return True
        return False

    def wait_changed(self, name: str, timeout: float) -> None:
        pid = self._children.get(name)
        if pid is not None and hasattr(os, "pidfd_open"):
            # A job this process started: block until it exits (a pidfd is readable then)
            # rather than poll, so a wait returns the moment the job ends.
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                pass
            else:
                try:
                    select.select([fd], [], [], timeout)
                finally:
                    os.close(fd)
                self._reap(name)
                return
        deadline = time.monotonic() + timeout
        delay = 0.002
        while time.monotonic() < deadline:
            if name in self._children and self._reap(name):
                return  # the shell writes exit_code just before it exits
            if name not in self._children and (self.root / name / "exit_code").exists():
                return
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 1.5, 0.05)

    # -- logs ---------------------------------------------------------------------------------

    def open_logs(self, name: str, *, follow: bool = False, rank: int = 0) -> LogStream:
        record = self._record(name)
        path = Path(record["_dir"]) / "logs.txt"
        stream = LogStream(maxsize=64 if follow else 0)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by _feed_file
        except FileNotFoundError:
            stream.end()
            return stream
        except OSError as e:
            raise BackendError(
                f"the log of job {name!r}, {path}, cannot be read ({e.strerror or e}): it should be "
                f"a file; move what is there away (`%jobs delete {name}` removes the job, its "
                f"outputs stay)") from None
        if not follow:
            _feed_file(stream, f, lambda: True)
            return stream

        def done() -> bool:
            return self._status(record).done

        thread = threading.Thread(target=_feed_file, args=(stream, f, done), daemon=True,
                                  name=f"kubelab-logs-{name}")
        thread.start()
        return stream

    # -- cancel / delete ------------------------------------------------------------------------

    def cancel(self, name: str) -> JobInfo:
        return self._cancel(name)[0]

    def _cancel(self, name: str) -> tuple[JobInfo, frozenset[int]]:
        """:meth:`cancel`, and the process groups of the job's descendants it found (none for a
        job that had ended)."""
        record = self._record(name)
        if self._status(record).done:
            return self._info(record), frozenset()
        job_dir = Path(record["_dir"])
        (job_dir / "cancelled").write_text(_now().isoformat())
        pid = record["pid"]  # a job still running has one: the status said so
        # torchrun's workers are in sessions of their own: noted while torchrun is their parent,
        # so the SIGKILL below reaches them too. The SIGTERM goes to the job's group only:
        # torchrun passes it on and stops its workers in order.
        groups = _descendant_groups(pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)

        def escalate() -> None:
            deadline = time.monotonic() + CANCEL_GRACE
            while time.monotonic() < deadline:
                if not any(_group_alive(g) for g in (pid, *groups)):
                    return
                time.sleep(0.05)
            groups.update(_descendant_groups(pid))
            _kill_groups((pid, *groups), signal.SIGKILL)

        found = frozenset(groups)  # escalate() adds to groups later
        threading.Thread(target=escalate, daemon=True, name=f"kubelab-cancel-{name}").start()
        self.wait_changed(name, 2.0)
        return self._info(record), found

    def delete(self, name: str) -> None:
        record = self._lookup(name)  # a broken one too: deleting it is how to get rid of it
        if "_broken" not in record and not self._status(record).done:
            groups = self._cancel(name)[1]
            _kill_groups((record["pid"], *groups, *_descendant_groups(record["pid"])),
                         signal.SIGKILL)
        job_dir = self.root / name
        # job.json first: once it is gone, the job is (even if a removal below fails)
        for leftover in ("job.json", "workspace", "exit_code", "cancelled", "logs.txt", _LAUNCHER):
            _remove(job_dir / leftover)
        self._reap(name)


def _descendant_groups(pid: int) -> set[int]:
    """The process groups of *pid*'s descendants other than its own (torchrun's workers: each
    leads a session of its own), from one pass over ``/proc``; empty where there is none."""
    parents: dict[int, list[tuple[int, int]]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return set()
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in (b"Z", b"X"):
            parents.setdefault(int(fields[1]), []).append((int(entry), int(fields[2])))
    groups: set[int] = set()
    todo = [pid]
    while todo:
        for child, pgid in parents.get(todo.pop(), ()):
            todo.append(child)
            if pgid != pid:
                groups.add(pgid)
    return groups


def _kill_groups(groups: Sequence[int], sig: signal.Signals) -> None:
    for pgid in dict.fromkeys(groups):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # zombies of the group still count for killpg; look for a live member in /proc
    if _proc_start(pgid) is not None:
        return True
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                return True
    return False


def _feed_file(stream: LogStream, f: Any, done: Any) -> None:
    """Feed the lines of the open file *f* to *stream* as it grows, until *done()* and all is
    read; closes *f*.

    Polling a local file is cheap; the interval is 2 ms while lines come or came in the last half
    second, then backs off to 50 ms. Until the first bytes arrive (for at most a second) it is
    0.5 ms: the wait for a fresh job's first line is what a user notices (a 2 ms poll added 1 ms
    on average to a 13 ms interpreter start).
    """
    split = Lines()
    delay = 0.0005
    quiet_since = time.monotonic()
    try:
        while not stream.closed:
            chunk = f.read(1 << 20)
            if chunk:
                delay = 0.002
                quiet_since = time.monotonic()
                stream.put(split.feed(chunk))
                continue
            if done():
                stream.put(split.feed(f.read()) + split.rest())
                break
            time.sleep(delay)
            if delay < 0.002 and time.monotonic() - quiet_since > 1.0:
                delay = 0.002  # no first line within a second: the usual pace
            if delay >= 0.002 and time.monotonic() - quiet_since > 0.5:  # quiet: look less often
                delay = min(delay * 1.5, 0.05)
    finally:
        f.close()
        stream.end()


def _signal_text(code: int) -> str:
    if code > 128:
        try:
            return f"killed by {signal.Signals(code - 128).name}"
        except ValueError:
            return ""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return ""


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    except FileNotFoundError:
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: v for k, v in data.items() if not k.startswith("_")}, indent=1))
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    """Remove *path*, a file or a folder, if it is there."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except (IsADirectoryError, PermissionError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            raise


def _parse_time(value: Any) -> datetime:
    """An ISO time of a record, timezone-aware (UTC when it says none); ValueError if it is not
    one."""
    if not isinstance(value, str):
        raise ValueError(value)
    when = datetime.fromisoformat(value)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_strs(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_opt_str(value: Any) -> bool:
    return value is None or isinstance(value, str)


#: what each field of a job.json must be (:func:`check_record`): a test, and its words
_SCHEMA: dict[str, tuple[Any, str]] = {
    "name": (lambda v: isinstance(v, str), "a string"),
    "backend": (lambda v: isinstance(v, str), "a string"),
    "user": (_is_opt_str, "a string"),
    "created": (lambda v: isinstance(v, str), "an ISO time"),
    "entry": (lambda v: isinstance(v, str), "a string"),
    "script": (_is_opt_str, "a string"),
    "args": (_is_strs, "a list of strings"),
    "gpus": (lambda v: _is_int(v) and v >= 0, "a number of GPUs"),
    "nodes": (lambda v: _is_int(v) and v >= 1, "a number of nodes"),
    "cpus": (_is_opt_str, "a quantity"),
    "memory": (_is_opt_str, "a quantity"),
    "image": (_is_opt_str, "a string"),
    "data": (_is_strs, "a list of strings"),
    "snapshot": (_is_opt_str, "a snapshot id"),
    "devices": (_is_strs, "a list of strings"),
    "command": (_is_strs, "a list of strings"),
    "limits": (_is_strs, "a list of strings"),
    "cpuset": (lambda v: isinstance(v, list) and all(_is_int(c) for c in v), "a list of CPUs"),
    "pid": (lambda v: _is_int(v) and v > 0, "a process id"),
    "proc_start": (_is_opt_str, "a string"),
}
_REQUIRED = ("name", "backend", "created")


def check_record(record: Any, folder: str) -> str | None:
    """What is wrong with *record*, a job.json's JSON read from the job folder called *folder*,
    or None if nothing is (every field :data:`_SCHEMA` knows has its type, the required ones are
    there, the name is the folder's and the time parses)."""
    if not isinstance(record, dict):
        return f"it holds {type(record).__name__} {shorten(record)}, not a job's fields"
    for key in _REQUIRED:
        if key not in record:
            return f"it has no {key!r}"
    for key, (test, what) in _SCHEMA.items():
        if key in record and not test(record[key]):
            return f"its {key!r} is {shorten(record[key])}, not {what}"
    if record["name"] != folder:
        return f"it names the job {shorten(record['name'])}, not {folder!r} (its folder)"
    try:
        _parse_time(record["created"])
    except ValueError:
        return f"its 'created' is {shorten(record['created'])}, not an ISO time"
    return None


def _load_record(job_dir: Path) -> dict[str, Any] | None:
    """The record of the job folder *job_dir* (with ``_dir`` and ``_created``), or None if it
    has none (no job). One that cannot be read, or fails :func:`check_record`, comes back as
    ``{"name": <folder>, "_broken": <why>, ...}``."""
    path = job_dir / "job.json"
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        why = "it is a folder" if isinstance(e, IsADirectoryError) else (e.strerror or str(e))
        return _broken(job_dir, path, why, None)
    try:
        record = json.loads(raw)
    except ValueError as e:  # UnicodeDecodeError too
        return _broken(job_dir, path, f"it is not valid JSON: {e}", None)
    problem = check_record(record, job_dir.name)
    if problem is not None:
        return _broken(job_dir, path, problem, record)
    record["_dir"] = str(job_dir)
    record["_created"] = _parse_time(record["created"])
    return record


def _broken(job_dir: Path, path: Path, why: str, record: Any) -> dict[str, Any]:
    snapshot = record.get("snapshot") if isinstance(record, dict) else None
    try:
        created = datetime.fromtimestamp(os.lstat(path).st_mtime, timezone.utc)
    except OSError:
        created = _now()
    return {"name": job_dir.name, "_dir": str(job_dir), "_path": str(path), "_broken": why,
            "_created": created, "snapshot": snapshot if isinstance(snapshot, str) else None}


def _broken_text(record: dict[str, Any], *, short: bool = False) -> str:
    name = record["name"]
    text = f"its record {record['_path']} cannot be read ({record['_broken']})"
    fix = f"`%jobs delete {name}` removes the job (its outputs stay)"
    if short:
        return f"{text}; {fix}"
    return f"job {name!r}: {text}; {fix}, then submit it again"
