"""Training jobs: one API, two backends (local processes, Kubernetes).

- :mod:`.types` — :class:`JobSpec` (what to run), :class:`JobStatus`, :class:`JobInfo`;
- :mod:`.errors` — the one exception hierarchy (:class:`JobError` and subclasses);
- :mod:`.api` — :func:`train`, :func:`jobs`, :func:`job`, :func:`jobs_gc` and the :class:`Job`
  handle;
- :mod:`.backend` — the abstract backend; :mod:`.local` and :mod:`.kubernetes` implement it;
- :mod:`.snapshot` — content-addressed workspace snapshots; :mod:`.validate` — the admin limits;
- :mod:`.metrics` — ``kubelab.report(...)`` from training code.

Names are imported lazily: training code calls ``kubelab.report`` and should not pay for the
config schema (pydantic) or a Kubernetes client. docs/jobs.md explains the whole and why.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    **dict.fromkeys(["Job", "get_backend", "job", "jobs", "jobs_gc", "set_backend", "spec_for",
                     "train"], "api"),
    **dict.fromkeys([
        "BackendError", "DatasetNotAllowed", "ImageNotAllowed", "InvalidJobSpec", "JobError",
        "JobExists", "JobFailed", "JobNotFound", "NotAllowed", "QuotaExceeded",
        "SnapshotTooLarge", "WaitTimeout"], "errors"),
    **dict.fromkeys(["report", "history"], "metrics"),
    **dict.fromkeys(["JobInfo", "JobPhase", "JobSpec", "JobStatus"], "types"),
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
