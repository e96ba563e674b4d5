"""A list+watch cache of one kind of Kubernetes object (like kubespawner's ``reflector.py``).

A :class:`Reflector` lists the objects once, then watches from the list's ``resourceVersion`` and
applies every event to its store; a watch that ends is resumed from the last version seen (with
bookmarks, so a quiet watch does not fall behind), a ``410 Gone`` lists again, and errors back off
with jitter (:meth:`RetryPolicy.delays <kubelab.core.kube.retry.RetryPolicy.delays>`). Readers ask
the store, never the API: after the first list, the cost is one watch request every
``watch_timeout`` seconds whatever the number of objects.

Why not ``kubernetes_asyncio.watch.Watch``: it builds a model object per event (for 20,000 pods,
most of the cache's cost) and has no hook for a raw dict; the generated list methods' public
``_preload_content=False`` hands out the raw response, and the events are one JSON line each.

**The index hook.** The store is any mutable mapping the caller gives (a plain dict by default):
a store class that keeps a reduced record per object and running sums (the spawner's GPU
indexes) works as well as one that keeps whole objects (the job backend). A relist clears it
first, then refills it, under the same lock.

**Threads.** The reflector runs on an event loop; readers may be on other threads (the job
backend's kernel thread). Give it a *lock* (e.g. a ``threading.Condition``): every change to the
store happens under it, and *on_change* is called under it after each change (to notify waiters).
:attr:`synced` is a ``threading.Event``, set after the first list.

**One per kind, namespace and selector.** :meth:`Reflector.shared` hands out one running reflector
per key (per event loop), so two users of the same objects in a process share one watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Awaitable, Callable, Hashable, MutableMapping
from typing import Any, ClassVar

from kubelab.core.kube.retry import RetryPolicy

__all__ = ["Lister", "Reflector", "ReflectorError", "WATCH_BACKOFF", "name_key", "namespaced_key"]

#: ``lister(**kwargs)``: a generated list method with its positional arguments and selectors bound
#: (``functools.partial(core.list_namespaced_pod, ns, label_selector=...)``); the reflector adds
#: ``watch``, ``resource_version``, ``timeout_seconds``, ``_preload_content=False``...
Lister = Callable[..., Awaitable[Any]]

#: how a reflector backs off between failed lists or watches (it never gives up until stopped)
WATCH_BACKOFF = RetryPolicy(deadline=None, first_delay=0.05, max_delay=5.0, jitter=0.2)


class ReflectorError(Exception):
    """The API answered a list or watch with an HTTP error status."""

    def __init__(self, what: str, status: int) -> None:
        super().__init__(f"listing {what} answered HTTP {status}")
        self.status = status


def name_key(obj: dict[str, Any]) -> str:
    """The store key of an object in one namespace (or a cluster-scoped one): its name."""
    return str(obj["metadata"]["name"])


def namespaced_key(obj: dict[str, Any]) -> str:
    """The store key of an object listed across namespaces: ``namespace/name``."""
    meta = obj["metadata"]
    return f"{meta.get('namespace') or ''}/{meta['name']}"


class Reflector:
    """A running list+watch cache of what *lister* lists, kept in :attr:`store`.

    *what* names the objects in messages ("your jobs", "nodes"); *key* gives an object's store
    key; *optional*: a first list refused with 401/403/404 (a Role without that read) leaves the
    store empty and stops, instead of retrying forever — :attr:`available` then says False.
    """

    _shared: ClassVar[dict[tuple[Any, Hashable], Reflector]] = {}

    def __init__(self, lister: Lister, *, what: str,
                 store: MutableMapping[str, Any] | None = None,
                 key: Callable[[dict[str, Any]], str] = name_key,
                 lock: Any = None, on_change: Callable[[], None] | None = None,
                 watch_timeout: float = 240.0, backoff: RetryPolicy = WATCH_BACKOFF,
                 optional: bool = False) -> None:
        self.lister = lister
        self.what = what
        self.store: MutableMapping[str, Any] = {} if store is None else store
        self.key = key
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.on_change = on_change
        self.watch_timeout = watch_timeout
        self.backoff = backoff
        self.optional = optional
        #: set once the first list is in the store (or an optional list was refused)
        self.synced = threading.Event()
        #: False when an optional first list was refused: nothing is cached
        self.available = True
        #: the last resourceVersion seen (None: the next round lists)
        self.resource_version: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._loaded: asyncio.Future[None] | None = None
        self._stopping = False
        self._connected = False
        self._key: tuple[Any, Hashable] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def shared(cls, key: Hashable, factory: Callable[[], Reflector]) -> Reflector:
        """The running reflector of this event loop for *key* (e.g. ``(api host, "pods", namespace,
        selector)``), made by *factory* and started on first use."""
        full = (asyncio.get_running_loop(), key)
        reflector = cls._shared.get(full)
        if reflector is None or reflector._stopping:
            reflector = cls._shared[full] = factory()
            reflector._key = full
            reflector.start()
        return reflector

    def start(self) -> asyncio.Task[None]:
        """Run on the current event loop (once)."""
        if self._task is None:
            self._loaded = asyncio.get_running_loop().create_future()
            self._task = asyncio.ensure_future(self.run())
        return self._task

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Wait until the first list is in the store; a list that failed raises its error."""
        if self._loaded is None:
            raise RuntimeError("the reflector was not started")
        if self.synced.is_set():
            return
        await asyncio.wait_for(asyncio.shield(self._loaded), timeout)

    @property
    def ready(self) -> bool:
        return self.synced.is_set()

    async def stop(self) -> None:
        self._stopping = True
        if self._key is not None and self._shared.get(self._key) is self:
            del self._shared[self._key]
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @classmethod
    async def stop_all(cls) -> None:
        """Stop every shared reflector of this event loop."""
        loop = asyncio.get_running_loop()
        for (owner, _), reflector in list(cls._shared.items()):
            if owner is loop:
                await reflector.stop()

    # -- the loop -------------------------------------------------------------------------------

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _loaded_now(self, error: BaseException | None = None) -> None:
        if self._loaded is not None and not self._loaded.done():
            if error is None:
                self._loaded.set_result(None)
            else:
                # waiters so far learn why; later ones wait for the next try (it keeps trying)
                self._loaded.set_exception(error)
                self._loaded.exception()  # retrieved: no "never retrieved" warning
                self._loaded = asyncio.get_running_loop().create_future()

    async def _list(self) -> None:
        resp = await self.lister(_preload_content=False, _request_timeout=60)
        try:
            if resp.status != 200:
                raise ReflectorError(self.what, resp.status)
            data = json.loads(await resp.read())
        finally:
            resp.release()
        with self.lock:
            self.store.clear()
            for obj in data.get("items") or []:
                self.store[self.key(obj)] = obj
            self._changed()
        self.resource_version = data["metadata"]["resourceVersion"]
        self.synced.set()
        self._loaded_now()

    async def _watch(self) -> None:
        """One watch request, applied to the store; :attr:`_connected` says if it got through."""
        resp = await self.lister(watch=True, resource_version=self.resource_version,
                                 allow_watch_bookmarks=True,
                                 timeout_seconds=int(self.watch_timeout),
                                 _request_timeout=self.watch_timeout + 30, _preload_content=False)
        try:
            if resp.status == 410:
                self.resource_version = None
                return
            if resp.status != 200:
                raise ReflectorError(self.what, resp.status)
            self._connected = True
            while True:
                line = await resp.content.readline()
                if not line:
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                kind = event.get("type")
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        self.resource_version = None  # too old: list again
                    return
                if kind not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
                    return
                self.resource_version = obj.get("metadata", {}).get(
                    "resourceVersion", self.resource_version)
                if kind == "BOOKMARK":
                    continue
                key = self.key(obj)
                with self.lock:
                    if kind == "DELETED":
                        self.store.pop(key, None)
                    else:
                        self.store[key] = obj
                    self._changed()
        finally:
            resp.release()

    async def run(self) -> None:
        """List, then watch from the list's version; resume, relist on 410, back off on errors."""
        delays = self.backoff.delays()
        while not self._stopping:
            self._connected = False
            try:
                if self.resource_version is None:
                    await self._list()
                await self._watch()
                delays = self.backoff.delays()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - an error status, a dropped connection
                if isinstance(e, ReflectorError) and e.status == 410:
                    self.resource_version = None
                    continue
                if (self.optional and isinstance(e, ReflectorError) and e.status in (401, 403, 404)
                        and not self.synced.is_set()):
                    self.available = False
                    self.synced.set()
                    self._loaded_now()
                    return
                if not self.synced.is_set():
                    self._loaded_now(e)
                if self._connected:  # the stream broke after it worked: resume at once
                    continue
                await asyncio.sleep(next(delays))
