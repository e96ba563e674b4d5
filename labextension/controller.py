"""What the magics (and later the widgets and the lab panel) do, without IPython.

The magics parse a line into arguments and hand them here; this module turns them into job API
calls and into plain data to show (rows of a table, a failure summary). It knows nothing of
IPython or widgets, so it is tested with plain calls, and every refusal is a
:class:`~kubelab.core.jobs.errors.JobError` with a message fit to show as is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kubelab.core.jobs.api import Job, get_backend, spec_for
from kubelab.core.jobs.backend import Backend
from kubelab.core.jobs.errors import InvalidJobSpec, JobError
from kubelab.core.jobs.snapshot import GcReport
from kubelab.core.jobs.types import JobInfo, JobPhase
from kubelab.core.text import shorten

__all__ = ["JobsController", "parse_env", "Row", "format_duration", "failure_text"]


def parse_env(pairs: Sequence[str] | None) -> dict[str, str]:
    """``["A=1", "B=x=y"]`` → ``{"A": "1", "B": "x=y"}``; refuse an item without ``=``."""
    env: dict[str, str] = {}
    for item in pairs or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidJobSpec(f"--env takes KEY=VALUE, got {shorten(item)}")
        env[key] = value
    return env


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _age(when: datetime | None) -> str:
    if when is None:
        return "-"
    return format_duration((datetime.now(timezone.utc) - when).total_seconds()) + " ago"


@dataclass(frozen=True)
class Row:
    """One line of the ``%jobs`` table."""

    name: str
    status: str
    phase: JobPhase
    gpus: str
    entry: str
    created: str
    duration: str
    output_dir: str


def failure_text(info: JobInfo, last_lines: Sequence[str]) -> str:
    """What a failed job shows: the status with its exit code, then the last lines of its log."""
    head = f"job {info.name} {info.status.describe()}"
    if not last_lines:
        return head + " (its log is empty)"
    return head + f"; last {len(last_lines)} log lines:\n" + "\n".join(
        "    " + line for line in last_lines)


class JobsController:
    """The operations behind ``%train`` and ``%jobs``, over one backend."""

    def __init__(self, backend: Backend | Callable[[], Backend] | None = None) -> None:
        self._backend = backend

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            return get_backend()
        if isinstance(self._backend, Backend):
            return self._backend
        self._backend = self._backend()
        return self._backend

    def submit(self, *, code: str | None = None, script: str | None = None,
               args: Sequence[str] = (), name: str | None = None, gpus: int = 0,
               nodes: int = 1, cpus: str | None = None, memory: str | None = None,
               image: str | None = None, data: Sequence[str] = (),
               env: Sequence[str] | None = None, workdir: str = ".",
               replace: bool = False) -> Job:
        """Submit a cell's *code* or a *script*; returns the job handle."""
        if replace and not name:
            raise InvalidJobSpec("--replace needs --name: the job to re-run")
        spec = spec_for(script, code=code, name=name, gpus=gpus, nodes=nodes, cpus=cpus,
                        memory=memory, image=image, data=list(data or ()), env=parse_env(env),
                        args=list(args), workdir=workdir, replace=replace)
        backend = self.backend
        info = backend.submit(spec)
        return Job(info.name, backend, info=info)

    def job(self, name: str | None) -> Job:
        if not name:
            raise InvalidJobSpec("which job? give its name (see %jobs)")
        backend = self.backend
        return Job(name, backend, info=backend.get(name))

    def rows(self) -> list[Row]:
        rows = []
        for info in self.backend.list_jobs():
            gpus = str(info.gpus) if info.nodes == 1 else f"{info.gpus}×{info.nodes}"
            entry = " ".join([info.entry, *info.args]) if info.args else info.entry
            rows.append(Row(info.name, info.status.describe(), info.status.phase, gpus,
                            entry if len(entry) <= 40 else entry[:39] + "…",
                            _age(info.status.created), format_duration(info.duration),
                            info.output_dir or "-"))
        return rows

    def cancel(self, name: str | None) -> JobInfo:
        job = self.job(name)
        job.cancel()
        return job.info

    def delete(self, name: str | None) -> JobInfo:
        job = self.job(name)
        info = job.info
        job.delete()
        return info

    def wait(self, name: str | None, timeout: float | None = None) -> tuple[JobInfo, list[str]]:
        """Wait for the job; returns its info and, when it did not succeed, its last log lines."""
        job = self.job(name)
        info = self.backend.wait(job.name, timeout)
        return info, ([] if info.status.ok else self.backend.tail(job.name, 20))

    def failure(self, name: str) -> tuple[JobInfo, list[str]]:
        info = self.backend.get(name)
        return info, self.backend.tail(name, 20)

    def tail(self, name: str, lines: int) -> list[str]:
        return self.backend.tail(name, lines)

    def metrics(self, name: str | None) -> list[dict[str, Any]]:
        return self.job(name).metrics()

    def gc(self) -> GcReport:
        """Free the snapshot store of what no existing job needs (``%jobs gc``)."""
        return self.backend.gc()


__all__ += ["JobError"]
