"""The benchmark harness: every figure is a ratio against a baseline measured in the same run.

A benchmark module is ``bench/bench_<topic>.py`` with a module-level ``BENCHMARKS`` list of
:class:`Benchmark`. Each benchmark names two callables, the *baseline* and the *subject*, that do
comparable work (for example "plain KubeSpawner starts a pod" and "kubelab's spawner starts the same
pod"). The harness runs them interleaved, so both see the same machine load, and reports the ratio of
their medians (and of their 95th percentiles) against the target the issue names.

Absolute times on a shared 2-core CI machine say little; a ratio measured in one process, with the
two sides interleaved, says how much our code adds.

Callables may be plain functions or coroutine functions. ``setup``/``teardown`` (optional, also
sync or async) run once around the whole benchmark and may return/receive a context object: when
``setup`` returns a value, it is passed to ``baseline`` and ``subject`` as their only argument.
"""

from __future__ import annotations

import asyncio
import inspect
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Benchmark:
    """One comparison of *subject* against *baseline*."""

    name: str
    baseline: Callable[..., Any]
    subject: Callable[..., Any]
    #: what the baseline is, in words, printed beside the figures
    baseline_label: str = "baseline"
    #: the ratio (subject / baseline, by median unless ``on == "p95"``) the issue asks for
    target: float | None = None
    on: str = "p50"
    repeat: int = 30
    warmup: int = 3
    setup: Callable[..., Any] | None = None
    teardown: Callable[..., Any] | None = None


@dataclass
class Result:
    name: str
    baseline_label: str
    baseline: list[float]
    subject: list[float]
    target: float | None
    on: str
    extra: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def _pct(samples: list[float], q: float) -> float:
        ordered = sorted(samples)
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[index]

    @property
    def ratio_p50(self) -> float:
        return statistics.median(self.subject) / statistics.median(self.baseline)

    @property
    def ratio_p95(self) -> float:
        return self._pct(self.subject, 0.95) / self._pct(self.baseline, 0.95)

    @property
    def ratio(self) -> float:
        return self.ratio_p95 if self.on == "p95" else self.ratio_p50

    @property
    def ok(self) -> bool | None:
        return None if self.target is None else self.ratio <= self.target

    def line(self) -> str:
        ms = lambda s: f"{s * 1000:8.2f} ms"  # noqa: E731
        verdict = "" if self.ok is None else ("  OK" if self.ok else "  OVER TARGET")
        target = "" if self.target is None else f" (target ≤ {self.target:.2f} on {self.on})"
        return (
            f"{self.name}\n"
            f"    baseline ({self.baseline_label}): p50 {ms(statistics.median(self.baseline))}"
            f"  p95 {ms(self._pct(self.baseline, 0.95))}\n"
            f"    subject:  p50 {ms(statistics.median(self.subject))}"
            f"  p95 {ms(self._pct(self.subject, 0.95))}\n"
            f"    ratio: p50 {self.ratio_p50:.3f}  p95 {self.ratio_p95:.3f}{target}{verdict}"
            + "".join(f"\n    {k}: {v}" for k, v in self.extra.items())
        )


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    value = fn(*args)
    if inspect.isawaitable(value):
        value = await value
    return value


async def run_benchmark(bench: Benchmark) -> Result:
    """Run one benchmark: warm up both sides, then interleave baseline and subject runs."""
    context = await _call(bench.setup) if bench.setup else None
    args = () if context is None else (context,)
    try:
        for _ in range(bench.warmup):
            await _call(bench.baseline, *args)
            await _call(bench.subject, *args)
        base: list[float] = []
        subj: list[float] = []
        for i in range(bench.repeat):
            # Alternate which side goes first so that neither always sees a warmer cache.
            order = ((bench.baseline, base), (bench.subject, subj))
            for fn, samples in order if i % 2 == 0 else reversed(order):
                start = time.perf_counter()
                await _call(fn, *args)
                samples.append(time.perf_counter() - start)
        result = Result(bench.name, bench.baseline_label, base, subj, bench.target, bench.on)
        if context is not None and hasattr(context, "bench_extra"):
            result.extra.update(context.bench_extra())
        return result
    finally:
        if bench.teardown:
            await _call(bench.teardown, *args)


def run_all(benchmarks: list[Benchmark]) -> list[Result]:
    async def _all() -> list[Result]:
        return [await run_benchmark(b) for b in benchmarks]

    return asyncio.run(_all())
