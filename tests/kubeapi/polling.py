"""Waiting, in a test, for what the emulator's asynchronous controllers (or a real cluster) do."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["wait_for"]


async def wait_for(
    read: Callable[[], Awaitable[Any]], check: Callable[[Any], bool], timeout: float = 10.0
) -> Any:
    """Poll *read* (through the API) until *check* holds of what it returns, and return that;
    AssertionError with the last value after *timeout* seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await read()
        if check(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value}")
        await asyncio.sleep(0.01)
