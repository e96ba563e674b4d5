"""One exception hierarchy for everything the job API refuses or cannot do.

Every expected failure is a :class:`JobError` whose ``str()`` is one short sentence a user can act
on; the magics print it in the cell and never show a traceback for it. Anything else that escapes
is a bug in kubelab. The subclasses exist so that code (and tests) can tell the cases apart:

- :class:`InvalidJobSpec` — the request itself is malformed (bad name, negative GPUs, ``K=V``
  without ``=``); :class:`NotAllowed` and its subclasses — well-formed, but the admin config says
  no (dataset not granted, GPUs over the limit or quota, image not allowed);
- :class:`SnapshotTooLarge` — the working directory is over ``jobs.max_snapshot_size``;
- :class:`JobNotFound`, :class:`JobExists` — names;
- :class:`JobFailed` — ``wait()`` on a job that failed (carries the exit code and last log lines);
- :class:`WaitTimeout`, :class:`BackendError` — the backend did not answer as hoped.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BackendError",
    "DatasetNotAllowed",
    "ImageNotAllowed",
    "InvalidJobSpec",
    "JobError",
    "JobExists",
    "JobFailed",
    "JobNotFound",
    "NotAllowed",
    "QuotaExceeded",
    "SnapshotTooLarge",
    "WaitTimeout",
]


class JobError(Exception):
    """Base of every expected job failure; ``str(e)`` is the message to show the user."""


class InvalidJobSpec(JobError, ValueError):
    """The submission is malformed."""


class NotAllowed(JobError):
    """The admin config does not allow this submission."""


class DatasetNotAllowed(NotAllowed):
    """An unknown dataset, or one the user's groups are not granted."""


class QuotaExceeded(NotAllowed):
    """More GPUs (or nodes) than the per-job limit or the team's quota allows."""


class ImageNotAllowed(NotAllowed):
    """An image that matches none of ``jobs.images``."""


class SnapshotTooLarge(JobError):
    """The working directory is larger than ``jobs.max_snapshot_size``."""

    def __init__(self, message: str, *, largest: Sequence[tuple[str, int]] = ()) -> None:
        super().__init__(message)
        #: the biggest files, (relative path, bytes), largest first
        self.largest = list(largest)


class JobNotFound(JobError, LookupError):
    """No job of that name."""


class JobExists(JobError):
    """A job of that name exists already."""


class JobFailed(JobError):
    """The job ended in failure (or was cancelled) while being waited on."""

    def __init__(self, message: str, *, exit_code: int | None = None,
                 last_lines: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.last_lines = list(last_lines)


class WaitTimeout(JobError, TimeoutError):
    """``wait(timeout=...)`` ran out before the job finished."""


class BackendError(JobError):
    """The backend could not do what was asked (API unreachable, process would not start)."""
