"""A record of every request the test server answered, for tests and benchmarks to count API calls.

Controllers of the emulated cluster act on the store directly, so only client traffic is recorded:
"zero API requests per render" means zero entries here. Appends happen on the server thread and
reads on the test thread; a lock keeps both consistent.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["RecordedRequest", "RequestLog"]


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    #: list, watch, get, create, update, patch, delete, deletecollection, log, discovery, other
    verb: str
    watch: bool
    group: str | None = None
    version: str | None = None
    resource: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    #: the HTTP status answered (for watches: 200 once the stream starts)
    status: int | None = None
    #: the fault rule that answered instead of the emulator, if any
    fault: str | None = None
    user_agent: str = ""
    started: float = field(default_factory=time.monotonic)

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.query.items())
        return f"{self.method} {self.path}{'?' + query if query else ''} -> {self.status}"


class RequestLog:
    """The requests in arrival order; filter with :meth:`filter` or count with :meth:`count`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[RecordedRequest] = []

    def append(self, request: RecordedRequest) -> None:
        with self._lock:
            self._items.append(request)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __iter__(self) -> Iterator[RecordedRequest]:
        return iter(self.snapshot())

    def __getitem__(self, index: int) -> RecordedRequest:
        return self.snapshot()[index]

    def mark(self) -> int:
        """A position to count from: ``log.since(mark)`` are the requests made after it."""
        return len(self)

    def since(self, mark: int) -> list[RecordedRequest]:
        return self.snapshot()[mark:]

    def filter(
        self,
        *,
        method: str | None = None,
        verb: str | None = None,
        resource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        path: str | re.Pattern[str] | None = None,
        watch: bool | None = None,
        since: int = 0,
    ) -> list[RecordedRequest]:
        pattern = re.compile(path) if isinstance(path, str) else path
        return [
            r
            for r in self.snapshot()[since:]
            if (method is None or r.method == method.upper())
            and (verb is None or r.verb == verb)
            and (resource is None or r.resource == resource)
            and (namespace is None or r.namespace == namespace)
            and (name is None or r.name == name)
            and (watch is None or r.watch == watch)
            and (pattern is None or pattern.search(r.path))
        ]

    def count(self, **criteria: object) -> int:
        return len(self.filter(**criteria))  # type: ignore[arg-type]
