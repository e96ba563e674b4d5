"""Small text helpers for messages shown to users.

:func:`shorten` is for error messages that echo what a user typed (a job name, a dataset, an
image, an environment variable): a pasted 10 kB value must not flood the cell, and control
characters must show as escapes rather than move the cursor. One helper, so every message cuts
the same way.
"""

from __future__ import annotations

__all__ = ["shorten", "LIMIT"]

#: the longest value shown whole
LIMIT = 60


def shorten(value: object, limit: int = LIMIT) -> str:
    """*value* quoted as ``repr`` shows it, cut to *limit* characters (the first ``limit - 3``
    then ``...``) when longer: ``shorten("x" * 100)`` is ``'xxx...``."""
    text = repr(value)
    return text if len(text) <= limit else text[: max(limit - 3, 1)] + "..."
