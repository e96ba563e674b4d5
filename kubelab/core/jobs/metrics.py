"""``kubelab.report(epoch=3, loss=0.21)``: metrics from training code to the notebook.

Inside a job, kubelab sets ``KUBELAB_METRICS_FILE`` to a file in the job's output directory (on the
user's volume, which the notebook also sees); :func:`report` appends one JSON line to it per call,
and the notebook reads the file as it grows to plot the metrics live. A file rather than the log
stream: the user's logs stay theirs, and metrics survive the job being deleted from the cluster.

Only rank 0 reports by default (every ``torchrun`` worker runs the same code; four copies of each
point would only confuse the plot); ``all_ranks=True`` records every rank, tagged with it.
Outside a job, points are kept in memory (:func:`history`) so that the same training code runs
unchanged in the notebook.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["report", "history", "read_metrics", "METRICS_ENV"]

METRICS_ENV = "KUBELAB_METRICS_FILE"
_lock = threading.Lock()
_handle: tuple[str, Any] | None = None
_history: list[dict[str, Any]] = []


def _number(key: str, value: Any) -> float | int | str:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value if not (isinstance(value, float) and not math.isfinite(value)) else str(value)
    if isinstance(value, str):
        return value
    try:  # numpy scalars, 0-d arrays, torch tensors with one element
        item = value.item() if hasattr(value, "item") else float(value)
    except Exception:
        raise TypeError(f"kubelab.report: {key}={value!r} is not a number") from None
    return _number(key, item)


def report(step: int | None = None, *, all_ranks: bool = False, **metrics: Any) -> None:
    """Record *metrics* (numbers, by name) for the running job's live plot.

    ``step`` orders the points (the plot's x axis); without it, the call count is used. Numpy
    and PyTorch scalars are accepted. Example::

        for epoch in range(10):
            loss = train_one_epoch()
            kubelab.report(epoch=epoch, loss=loss)
    """
    if not metrics:
        raise TypeError("kubelab.report needs at least one metric, like report(loss=0.2)")
    rank = os.environ.get("RANK", "0") or "0"
    if rank != "0" and not all_ranks:
        return
    point: dict[str, Any] = {"time": round(time.time(), 3)}
    if step is not None:
        point["step"] = _number("step", step)
    for key, value in metrics.items():
        point[key] = _number(key, value)
    if all_ranks:
        point["rank"] = int(rank) if rank.isdigit() else rank
    path = os.environ.get(METRICS_ENV)
    global _handle
    with _lock:
        if not path:
            _history.append(point)
            return
        if _handle is None or _handle[0] != path:
            if _handle is not None:
                _handle[1].close()
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            _handle = (path, open(path, "a", encoding="utf-8", buffering=1))  # noqa: SIM115
        _handle[1].write(json.dumps(point, separators=(",", ":")) + "\n")


def history() -> list[dict[str, Any]]:
    """The points :func:`report` kept in memory when called outside a job."""
    with _lock:
        return list(_history)


def read_metrics(path: str | Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The complete JSON lines of *path* after byte *offset*, and the offset to read on from."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    points: list[dict[str, Any]] = []
    for line in data[: end + 1].splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, Mapping):
            points.append(dict(value))
    return points, offset + end + 1
