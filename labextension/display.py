"""Live output of a job in its cell: the log as it comes, a status line updated in place, and a
plot of the metrics the training code reports.

Two faces over one follower:

- :class:`WidgetView` (ipywidgets, when the kernel has a frontend): a status line, the last
  :data:`TAIL` log lines, a metrics plot (inline SVG: no plotting library needed) and a Cancel
  button. It is fed from a background thread, so the cell returns at once and the kernel stays
  free: 100,000 log lines arrive in batches and the view re-renders at most 10 times a second,
  never holding the kernel for long. ``%jobs wait NAME`` is the way to block on a job.
- :class:`TextView` (a terminal, nbconvert, scripts): the log printed as it comes, metrics as
  ``[metrics] ...`` lines and a closing status line; it blocks, and Ctrl-C detaches (the job
  goes on).
"""

from __future__ import annotations

import collections
import html
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from kubelab.core.jobs.api import Job
from kubelab.core.jobs.folder import JobFolder
from kubelab.core.jobs.metrics import read_metrics
from kubelab.core.jobs.types import JobInfo, JobPhase
from kubelab.labextension.controller import format_duration

__all__ = ["LiveState", "TextView", "WidgetView", "follow", "metrics_svg", "want_widgets"]

#: log lines kept on screen by the widget (the whole log is a file / `%jobs logs`)
TAIL = 200
#: seconds between two renders of the widget
RENDER_EVERY = 0.1
#: seconds between two looks at the status and the metrics file
POLL_EVERY = 0.5
_AXES = ("step", "epoch", "iteration", "iter", "global_step")
_NOT_PLOTTED = {"time", "rank", *_AXES}

_COLORS = {
    JobPhase.PENDING: "#8a6d00", JobPhase.RUNNING: "#1565c0", JobPhase.SUCCEEDED: "#2e7d32",
    JobPhase.FAILED: "#c62828", JobPhase.CANCELLED: "#6d6d6d",
}


class LiveState:
    """What is known of a followed job so far."""

    def __init__(self, info: JobInfo) -> None:
        self.info = info
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL)
        self.lines = 0
        self.metrics: list[dict[str, Any]] = []
        self.metrics_offset = 0
        self.started = time.monotonic()
        self.detached = False

    def add(self, batch: Sequence[str]) -> None:
        self.lines += len(batch)
        self.tail.extend(batch[-TAIL:])

    @property
    def metrics_file(self) -> Path | None:
        return JobFolder.of_outputs(self.info.output_dir).metrics if self.info.output_dir else None

    def poll_metrics(self) -> list[dict[str, Any]]:
        path = self.metrics_file
        if path is None:
            return []
        new, self.metrics_offset = read_metrics(path, self.metrics_offset)
        self.metrics.extend(new)
        return new

    def status_line(self) -> str:
        s = self.info.status
        text = f"{self.info.name}: {s.describe()}"
        if self.info.duration is not None:
            text += f" · {format_duration(self.info.duration)}"
        if self.info.gpus:
            text += f" · {self.info.gpus} GPU{'s' if self.info.gpus > 1 else ''}"
            if self.info.nodes > 1:
                text += f" × {self.info.nodes} nodes"
        if self.metrics:
            last = self.metrics[-1]
            text += " · " + " ".join(f"{k}={_fmt(v)}" for k, v in last.items()
                                     if k not in ("time", "rank"))
        return text


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class View:
    """What a follower drives; :class:`TextView` and :class:`WidgetView` implement it."""

    def start(self, state: LiveState) -> None: ...
    def lines(self, state: LiveState, batch: Sequence[str]) -> None: ...
    def metrics(self, state: LiveState, points: Sequence[dict[str, Any]]) -> None: ...
    def render(self, state: LiveState) -> None: ...
    def finish(self, state: LiveState, last_lines: Sequence[str]) -> None: ...


def follow(job: Job, view: View, *, stop: threading.Event | None = None,
           clock: Callable[[], float] = time.monotonic) -> LiveState:
    """Feed *view* with *job*'s log, status and metrics until the job ends (or *stop* is set)."""
    backend = job.backend
    state = LiveState(job.info)
    view.start(state)
    stream = backend.open_logs(job.name, follow=True)
    last_render = last_poll = clock()
    try:
        while True:
            if stop is not None and stop.is_set():
                state.detached = True
                break
            batch = stream.read(timeout=RENDER_EVERY)
            if batch is None:
                break
            if batch:
                state.add(batch)
                view.lines(state, batch)
            now = clock()
            if now - last_poll >= POLL_EVERY:
                last_poll = now
                state.info = backend.get(job.name)
                new = state.poll_metrics()
                if new:
                    view.metrics(state, new)
            if now - last_render >= RENDER_EVERY:
                last_render = now
                view.render(state)
    finally:
        stream.close()
    if not state.detached:
        state.info = backend.wait(job.name, timeout=30)
    else:
        state.info = backend.get(job.name)
    new = state.poll_metrics()
    if new:
        view.metrics(state, new)
    failed = state.info.status.done and not state.info.status.ok
    view.finish(state, list(state.tail)[-20:] if failed else [])
    return state


# --------------------------------------------------------------------------------------------------
# Text


class TextView(View):
    """Prints to *out*: a header, the log, ``[metrics]`` lines, a closing status line."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def start(self, state: LiveState) -> None:
        where = f"; outputs in {state.info.output_dir}" if state.info.output_dir else ""
        self.out.write(f"[kubelab] {state.status_line()}{where}\n"
                       f"[kubelab] following its log (Ctrl-C detaches; the job goes on)\n")
        self.out.flush()

    def lines(self, state: LiveState, batch: Sequence[str]) -> None:
        self.out.write("\n".join(batch) + "\n")
        self.out.flush()

    def metrics(self, state: LiveState, points: Sequence[dict[str, Any]]) -> None:
        for p in points[-5:]:
            self.out.write("[metrics] " + " ".join(f"{k}={_fmt(v)}" for k, v in p.items()
                                                    if k != "time") + "\n")

    def finish(self, state: LiveState, last_lines: Sequence[str]) -> None:
        if state.detached:
            self.out.write(f"[kubelab] detached from {state.info.name} (still "
                           f"{state.info.status.phase}): `%jobs logs {state.info.name} --follow` "
                           f"to reattach, `%jobs cancel {state.info.name}` to stop it\n")
        else:
            self.out.write(f"[kubelab] {state.status_line()}\n")
        self.out.flush()


# --------------------------------------------------------------------------------------------------
# Widgets


def want_widgets() -> bool:
    """Widgets when running in a kernel with a frontend; ``KUBELAB_DISPLAY=text|widgets`` decides
    otherwise."""
    choice = os.environ.get("KUBELAB_DISPLAY", "").lower()
    if choice in ("text", "widgets"):
        return choice == "widgets"
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    if shell is None or not getattr(shell, "kernel", None):
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


class WidgetView(View):
    """A live panel for one job; see the module docstring."""

    def __init__(self, job: Job) -> None:
        import ipywidgets as w

        self.job = job
        self.header = w.HTML()
        self.log = w.HTML(layout=w.Layout(max_height="320px", overflow="auto"))
        self.plot = w.HTML()
        self.cancel_button = w.Button(description="Cancel", icon="stop",
                                      layout=w.Layout(width="auto"))
        self.cancel_button.on_click(self._cancel)
        self.note = w.HTML()
        self.widget = w.VBox([w.HBox([self.header, self.cancel_button]), self.plot, self.log,
                              self.note])
        self._rendered_lines = -1
        self._rendered_metrics = -1
        self.renders = 0

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _cancel(self, _button: Any = None) -> None:
        self.cancel_button.disabled = True
        self.note.value = "<i>cancelling…</i>"
        try:
            self.job.cancel()
        except Exception as e:  # shown, not raised: this runs in a widget callback
            self.note.value = f"<span style='color:#c62828'>{html.escape(str(e))}</span>"

    def start(self, state: LiveState) -> None:
        self.render(state)

    def render(self, state: LiveState) -> None:
        self.renders += 1
        color = _COLORS.get(state.info.status.phase, "#333")
        where = (f" <span style='color:#666'>outputs: <code>{html.escape(state.info.output_dir)}"
                 f"</code></span>" if state.info.output_dir else "")
        self.header.value = (f"<b style='color:{color}'>●</b> "
                             f"<b>{html.escape(state.status_line())}</b>{where}")
        if state.lines != self._rendered_lines:
            self._rendered_lines = state.lines
            hidden = state.lines - len(state.tail)
            more = (f"<div style='color:#666'>… {hidden:,} earlier lines: "
                    f"<code>%jobs logs {html.escape(state.info.name)}</code></div>" if hidden > 0 else "")
            self.log.value = (more + "<pre style='margin:0;font-size:12px;line-height:1.3'>"
                              + html.escape("\n".join(state.tail)) + "</pre>")
        if len(state.metrics) != self._rendered_metrics:
            self._rendered_metrics = len(state.metrics)
            self.plot.value = metrics_svg(state.metrics)

    def finish(self, state: LiveState, last_lines: Sequence[str]) -> None:
        self.render(state)
        self.cancel_button.disabled = True
        self.cancel_button.layout.display = "none"
        s = state.info.status
        if s.done and not s.ok:
            code = f"exit code {s.exit_code}" if s.exit_code is not None else "no exit code"
            self.note.value = (f"<span style='color:{_COLORS[s.phase]}'>{html.escape(state.info.name)}"
                               f" {s.phase} ({code}){': ' + html.escape(s.message) if s.message else ''}"
                               f"</span>")


def start_widget(job: Job) -> tuple[WidgetView, threading.Thread, threading.Event]:
    """Show a :class:`WidgetView` for *job* and follow it from a background thread."""
    from IPython.display import display

    view = WidgetView(job)
    display(view.widget)
    stop = threading.Event()
    thread = threading.Thread(target=_follow_safely, args=(job, view, stop), daemon=True,
                              name=f"kubelab-follow-{job.name}")
    thread.start()
    return view, thread, stop


def _follow_safely(job: Job, view: WidgetView, stop: threading.Event) -> None:
    try:
        follow(job, view, stop=stop)
    except Exception as e:  # a background thread has nobody to raise to: show it in the panel
        view.note.value = (f"<span style='color:#c62828'>kubelab: stopped following "
                           f"{html.escape(job.name)}: {html.escape(str(e) or type(e).__name__)}"
                           f"</span>")


# --------------------------------------------------------------------------------------------------
# The metrics plot


def metrics_svg(points: Sequence[dict[str, Any]], *, width: int = 260, height: int = 110,
                most: int = 4) -> str:
    """Small line charts (inline SVG), one per reported metric, of up to *most* metrics."""
    if not points:
        return ""
    axis = next((a for a in _AXES if any(a in p for p in points)), None)
    keys: list[str] = []
    for p in points:
        for k, v in p.items():
            if k not in _NOT_PLOTTED and k not in keys and isinstance(v, (int, float)):
                keys.append(k)
    charts = []
    for key in keys[:most]:
        series = [(p.get(axis, i) if axis else i, p[key]) for i, p in enumerate(points)
                  if isinstance(p.get(key), (int, float)) and math.isfinite(p[key])
                  and (axis is None or isinstance(p.get(axis, i), (int, float)))]
        if not series:
            continue
        charts.append(_chart(key, axis or "report", series, width, height))
    return "<div style='display:flex;flex-wrap:wrap;gap:8px'>" + "".join(charts) + "</div>"


def _chart(key: str, axis: str, series: list[tuple[float, float]], width: int, height: int) -> str:
    if len(series) > 2 * width:  # more points than pixels: keep every n-th, and the last
        step = len(series) // width
        series = series[::step] + [series[-1]]
    xs = [x for x, _ in series]
    ys = [y for _, y in series]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    pad_l, pad_r, pad_t, pad_b = 6, 6, 18, 14
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    sx = (lambda x: pad_l + (x - x0) / (x1 - x0) * w) if x1 > x0 else (lambda x: pad_l + w / 2)
    sy = (lambda y: pad_t + h - (y - y0) / (y1 - y0) * h) if y1 > y0 else (lambda y: pad_t + h / 2)
    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in series)
    last = series[-1][1]
    label = html.escape(f"{key} = {_fmt(last)}")
    return (
        f"<svg width='{width}' height='{height}' style='border:1px solid #ddd;background:#fff'>"
        f"<text x='{pad_l}' y='12' font-size='11' font-family='sans-serif'>{label}</text>"
        f"<text x='{width - pad_r}' y='12' font-size='9' fill='#888' text-anchor='end' "
        f"font-family='sans-serif'>{html.escape(_fmt(y0))} … {html.escape(_fmt(y1))}</text>"
        f"<polyline fill='none' stroke='#1565c0' stroke-width='1.5' points='{path}'/>"
        f"<text x='{pad_l}' y='{height - 3}' font-size='9' fill='#888' "
        f"font-family='sans-serif'>{html.escape(axis)} {html.escape(_fmt(x0))}…{html.escape(_fmt(x1))}</text>"
        f"</svg>"
    )
