"""Fault injection: errors, latency and broken watch streams, scripted by the test.

Rules are checked in the order they were added; each may be limited to a method, a path regex and
whether the request is a watch, and fires for the next ``times`` matching requests and/or with a
probability ``rate`` drawn from a seeded generator (so a failing run repeats exactly). Rules are
added from the test thread and consulted on the server thread, under a lock.

    cluster.faults.fail(500, rate=0.5)                       # half the requests fail
    cluster.faults.fail(429, times=2, retry_after=1, method="POST")
    cluster.faults.delay(0.2, path=r"/pods$")
    cluster.faults.drop_watch(after_events=3)                # connection closed mid-stream
    cluster.faults.drop_watch(after_seconds=0.5, mode="gone")  # a 410 ERROR event, then EOF
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field
from typing import Literal

from .errors import ApiError

__all__ = ["Faults", "FaultRule", "WatchDrop"]


@dataclass
class FaultRule:
    """One scripted fault; ``hits`` counts how often it fired."""

    action: Literal["fail", "delay", "drop_watch"]
    status: int = 500
    seconds: float = 0.0
    rate: float = 1.0
    times: int | None = None
    method: str | None = None
    path: re.Pattern[str] | None = None
    watch: bool | None = None
    retry_after: int | None = None
    message: str | None = None
    after_events: int | None = None
    after_seconds: float | None = None
    mode: Literal["close", "eof", "gone"] = "close"
    hits: int = 0

    def matches(self, method: str, path: str, watch: bool) -> bool:
        return (
            (self.method is None or self.method == method)
            and (self.path is None or bool(self.path.search(path)))
            and (self.watch is None or self.watch == watch)
            and (self.times is None or self.hits < self.times)
        )

    def error(self) -> ApiError:
        if self.status == 429:
            return ApiError.too_many_requests(self.retry_after or 1)
        if self.status == 500:
            return ApiError.internal(self.message or "injected fault")
        if self.status == 409:
            return ApiError(
                409,
                "Conflict",
                self.message
                or "Operation cannot be fulfilled: "
                "the object has been modified; please apply your changes to the latest "
                "version and try again (injected)",
                {},
            )
        if self.status == 503:
            return ApiError(
                503,
                "ServiceUnavailable",
                self.message or "the server is currently unable to handle the request (injected)",
                {},
                {"Retry-After": str(self.retry_after)} if self.retry_after else None,
            )
        if self.status == 504:
            return ApiError(
                504,
                "Timeout",
                self.message
                or "the server was unable to return a response in the time allotted (injected)",
                {},
            )
        error = ApiError(self.status, "InjectedFault", self.message or "injected fault", {})
        if self.retry_after is not None:
            error.headers["Retry-After"] = str(self.retry_after)
        return error

    def __str__(self) -> str:
        return f"{self.action}:{self.status if self.action == 'fail' else self.seconds}"


@dataclass
class WatchDrop:
    """How a watch stream is to break (handed to the watch handler)."""

    after_events: int | None
    after_seconds: float | None
    mode: Literal["close", "eof", "gone"]


@dataclass
class Faults:
    rules: list[FaultRule] = field(default_factory=list)
    seed: int = 0
    _rng: random.Random = field(default_factory=lambda: random.Random(0))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def fail(
        self,
        status: int = 500,
        *,
        rate: float = 1.0,
        times: int | None = None,
        method: str | None = None,
        path: str | None = None,
        watch: bool | None = None,
        retry_after: int | None = None,
        message: str | None = None,
    ) -> FaultRule:
        """Answer matching requests with *status* (500, 409, 429 with Retry-After, 503...)."""
        return self._add(
            FaultRule(
                "fail",
                status=status,
                rate=rate,
                times=times,
                method=method.upper() if method else None,
                path=re.compile(path) if path else None,
                watch=watch,
                retry_after=retry_after,
                message=message,
            )
        )

    def delay(
        self,
        seconds: float,
        *,
        rate: float = 1.0,
        times: int | None = None,
        method: str | None = None,
        path: str | None = None,
        watch: bool | None = None,
    ) -> FaultRule:
        """Answer matching requests *seconds* later."""
        return self._add(
            FaultRule(
                "delay",
                seconds=seconds,
                rate=rate,
                times=times,
                method=method.upper() if method else None,
                path=re.compile(path) if path else None,
                watch=watch,
            )
        )

    def drop_watch(
        self,
        *,
        after_events: int | None = None,
        after_seconds: float | None = None,
        mode: Literal["close", "eof", "gone"] = "close",
        times: int | None = None,
        path: str | None = None,
        rate: float = 1.0,
    ) -> FaultRule:
        """Break matching watch streams after N events and/or T seconds: ``close`` drops the
        connection mid-stream, ``eof`` ends it cleanly, ``gone`` sends a 410 Expired ERROR event."""
        if after_events is None and after_seconds is None:
            after_events = 0
        return self._add(
            FaultRule(
                "drop_watch",
                rate=rate,
                times=times,
                watch=True,
                path=re.compile(path) if path else None,
                after_events=after_events,
                after_seconds=after_seconds,
                mode=mode,
            )
        )

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self._rng.seed(self.seed)

    def reseed(self, seed: int) -> None:
        with self._lock:
            self.seed = seed
            self._rng.seed(seed)

    def pick(
        self, method: str, path: str, watch: bool
    ) -> tuple[float, FaultRule | None, WatchDrop | None]:
        """For one request: the total delay, the failing rule (if any), the watch drop (if any)."""
        delay = 0.0
        failing: FaultRule | None = None
        drop: WatchDrop | None = None
        with self._lock:
            for rule in self.rules:
                if not rule.matches(method, path, watch):
                    continue
                if rule.action == "drop_watch" and (not watch or drop is not None):
                    continue
                if rule.action == "fail" and failing is not None:
                    continue
                if rule.rate < 1.0 and self._rng.random() >= rule.rate:
                    continue
                rule.hits += 1
                if rule.action == "delay":
                    delay += rule.seconds
                elif rule.action == "fail":
                    failing = rule
                else:
                    drop = WatchDrop(rule.after_events, rule.after_seconds, rule.mode)
        return delay, failing, drop
