"""One retry policy for every Kubernetes API call kubelab makes.

An API call can fail for a reason that passes: the API server is busy (429) or restarting (5xx),
a proxy in front of it hiccups, a request times out or a connection drops. Such a call is tried
again after a delay that grows (exponential backoff, capped) and is spread a little at random
(jitter: a hundred notebooks whose watches dropped together must not come back in step); every
other answer (403, 404, 409, 422...) is final at once. A policy bounds the retrying by a number
of attempts, by a deadline, or both, and then raises :class:`RetriesExhausted`, which names what
went wrong; each caller turns that into its own message (a 503 for a spawn, a ``BackendError``
for a job).

The same backoff (:meth:`RetryPolicy.delays`) paces a watch cache's reconnections.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from kubernetes_asyncio.client.exceptions import ApiException

__all__ = ["RETRY_STATUSES", "RetriesExhausted", "RetryPolicy"]

T = TypeVar("T")

#: API answers worth retrying: the server is busy or restarting, or a proxy in front hiccuped
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class RetriesExhausted(Exception):
    """A call kept failing for transient reasons until the policy gave up.

    ``problem`` says what the last failure was, in words for a message; ``cause`` is the last
    exception (an :class:`ApiException` with a transient status, a timeout, an ``OSError``)."""

    def __init__(self, problem: str, cause: BaseException, *, attempts: int, elapsed: float) -> None:
        super().__init__(problem)
        self.problem = problem
        self.cause = cause
        self.attempts = attempts
        self.elapsed = elapsed


@dataclass(frozen=True)
class RetryPolicy:
    """How a Kubernetes API call is retried (all times in seconds).

    ``attempts``: at most this many tries, the first included (None: no bound by count);
    ``deadline``: no new try starts after this long since the first (None: no bound by time);
    ``first_delay``, ``factor``, ``max_delay``: the pause before the second try, how it grows, its
    cap; ``jitter``: each pause is multiplied by a random factor within ``1 ± jitter``;
    ``request_timeout``: how long one try may take before it counts as a transient failure
    (None: the client's own); ``statuses``: the HTTP answers that are transient.
    """

    attempts: int | None = None
    deadline: float | None = 30.0
    first_delay: float = 0.1
    factor: float = 2.0
    max_delay: float = 5.0
    jitter: float = 0.1
    request_timeout: float | None = None
    statuses: frozenset[int] = field(default=RETRY_STATUSES)

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")

    def delays(self) -> Iterator[float]:
        """The pauses between tries, without end: ``first_delay``, then × ``factor`` up to
        ``max_delay``, each spread by the jitter."""
        delay = self.first_delay
        while True:
            yield delay * (1 + random.uniform(-self.jitter, self.jitter)) if self.jitter else delay
            delay = min(delay * self.factor, self.max_delay)

    def transient(self, error: BaseException) -> str | None:
        """What went wrong, in words, if *error* is worth another try; None if it is final."""
        if isinstance(error, ApiException):
            if error.status in self.statuses:
                return f"the Kubernetes API answered {error.status} {error.reason or ''}".rstrip()
            return None
        if isinstance(error, (asyncio.TimeoutError, OSError)):  # aiohttp's connection errors are OSErrors
            return f"the Kubernetes API did not answer ({type(error).__name__})"
        return None

    async def call(self, fn: Callable[[], Awaitable[T]], *,
                   on_retry: Callable[[str, float], None] | None = None) -> T:
        """``await fn()``, tried again on transient failures as the policy says.

        A final answer is raised as it is; when the policy gives up, :class:`RetriesExhausted`.
        *on_retry(problem, delay)* is told before each pause (to log it)."""
        start = time.monotonic()
        delays = self.delays()
        attempt = 0
        while True:
            attempt += 1
            try:
                if self.request_timeout is None:
                    return await fn()
                return await asyncio.wait_for(fn(), self.request_timeout)
            except (ApiException, asyncio.TimeoutError, OSError) as e:
                problem = self.transient(e)
                if problem is None:
                    raise
                delay = next(delays)
                elapsed = time.monotonic() - start
                if ((self.attempts is not None and attempt >= self.attempts)
                        or (self.deadline is not None and elapsed + delay > self.deadline)):
                    raise RetriesExhausted(problem, e, attempts=attempt, elapsed=elapsed) from e
                if on_retry is not None:
                    on_retry(problem, delay)
                await asyncio.sleep(delay)
