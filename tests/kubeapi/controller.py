"""The base of the emulated controllers: level-triggered reconcile loops on the server's loop.

A controller says which store events interest it; any such event (or a timer it set) wakes its loop,
which reconciles everything it owns in one synchronous pass. Reconciling is idempotent and writes
only on change, so the loops settle. Exceptions are recorded as crashes (the pytest plugin fails the
test) instead of killing the loop.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import TYPE_CHECKING, Any

from .errors import ApiError
from .store import WatchEvent

if TYPE_CHECKING:
    from .emulator import Emulator

__all__ = ["Controller"]

log = logging.getLogger(__name__)


class Controller:
    #: group/plural pairs whose events wake this controller
    watches: tuple[tuple[str, str], ...] = ()
    name = "controller"

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.store = emulator.store
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()

    def start(self) -> None:
        self.store.listeners.append(self.on_event)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        self.cancel_timers()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def on_event(self, event: WatchEvent) -> None:
        if event.group_resource in self.watches:
            self._wake.set()

    def kick(self) -> None:
        self._wake.set()

    def kick_later(self, delay: float) -> None:
        """Reconcile again after *delay* seconds (for timeouts, run times, TTLs)."""
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            self._wake.set()

        handle = asyncio.get_running_loop().call_later(max(delay, 0.0), fire)
        self._timers.add(handle)

    def cancel_timers(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    def reset(self) -> None:
        """Forget per-test state (the store is being emptied)."""
        self.cancel_timers()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                self.reconcile()
            except Exception:
                self.emulator.handler.crashes.append(f"{self.name}\n{traceback.format_exc()}")
                log.exception("kubeapi %s crashed", self.name)

    def reconcile(self) -> None:
        raise NotImplementedError

    def create_pod(self, owner: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any] | None:
        """Create *owner*'s *pod* and record the event this controller writes: SuccessfulCreate, or
        FailedCreate (and None) when the API server refuses it."""
        try:
            created = self.store.create(
                self.emulator.rt("pods"), pod, owner["metadata"]["namespace"], internal=True
            )
        except ApiError as error:
            self.emulator.events.record(
                owner,
                "Warning",
                "FailedCreate",
                f"Error creating: {error.message}",
                component=self.name,
            )
            return None
        self.emulator.events.record(
            owner,
            "Normal",
            "SuccessfulCreate",
            f"Created pod: {created['metadata']['name']}",
            component=self.name,
        )
        return created
