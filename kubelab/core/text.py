"""Small text helpers for messages shown to users.

:func:`shorten` is for error messages that echo what a user typed (a job name, a dataset, an
image, an environment variable): a pasted 10 kB value must not flood the cell, and control
characters must show as escapes rather than move the cursor. One helper, so every message cuts
the same way. The other helpers here word counts (:func:`plural`, :func:`gpus_text`) and the type
of a wrong value (:func:`type_name` for Python callers, :func:`json_kind` for a form's or a REST
body's JSON), once for the hub side and the core.
"""

from __future__ import annotations

__all__ = ["LIMIT", "gpus_text", "json_kind", "plural", "shorten", "type_name"]

#: the longest value shown whole
LIMIT = 60


def shorten(value: object, limit: int = LIMIT) -> str:
    """*value* quoted as ``repr`` shows it, cut to *limit* characters (the first ``limit - 3``
    then ``...``) when longer: ``shorten("x" * 100)`` is ``'xxx...``."""
    text = repr(value)
    return text if len(text) <= limit else text[: max(limit - 3, 1)] + "..."


def plural(count: int, word: str, words: str | None = None) -> str:
    """``1 GPU``, ``2 GPUs``, ``0 GPUs``: *count* and the word in the right number."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


def gpus_text(count: int) -> str:
    """``1 GPU``, ``2 GPUs``, ``0 GPUs``."""
    return plural(count, "GPU")


def type_name(value: object) -> str:
    """The Python type of *value* (``int``, ``list``), for messages to Python callers."""
    return type(value).__name__


_JSON_KINDS: dict[type, str] = {bool: "true/false", int: "a number", float: "a number", str: "text",
                                list: "a list", dict: "an object", type(None): "null"}


def json_kind(value: object) -> str:
    """What *value* is in JSON words (``a number``, ``text``, ``null``), for a form's or REST body's reader."""
    return _JSON_KINDS.get(type(value), type(value).__name__)
