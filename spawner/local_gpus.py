"""This machine's GPUs, for the local spawner: detection and who holds which.

Detected with ``nvidia-smi -L`` (:func:`detect_gpus`, :func:`parse_nvidia_smi`) or declared by the
admin; one process-wide :class:`GpuAllocator` hands each GPU to at most one running server and
counts what a team and a user hold, for the quota. A server sees its GPUs through
``CUDA_VISIBLE_DEVICES`` (:attr:`LocalGpu.device`: the UUID when known, so the numbering cannot
differ from CUDA's).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from dataclasses import dataclass

from kubelab.core.text import gpus_text, plural

__all__ = ["GpuAllocator", "GpuInventory", "LocalGpu", "NoGpuFree", "detect_gpus", "parse_nvidia_smi"]


@dataclass(frozen=True)
class LocalGpu:
    """One GPU of this machine, as ``nvidia-smi -L`` lists it."""

    index: str
    model: str = ""
    uuid: str = ""

    @property
    def device(self) -> str:
        """What goes into ``CUDA_VISIBLE_DEVICES`` for this GPU."""
        return self.uuid or self.index


_NVIDIA_LINE = re.compile(r"^GPU (\d+): (.*?)(?: \(UUID: ([^)]+)\))?\s*$")


def parse_nvidia_smi(output: str) -> list[LocalGpu]:
    """``nvidia-smi -L`` output → GPUs (MIG lines and anything unexpected are skipped)."""
    gpus = []
    for line in output.splitlines():
        m = _NVIDIA_LINE.match(line.strip())
        if m:
            gpus.append(LocalGpu(index=m.group(1), model=m.group(2).strip(), uuid=m.group(3) or ""))
    return gpus


@dataclass
class GpuInventory:
    gpus: list[LocalGpu]
    #: why there are none (or what went wrong), for the chooser
    note: str = ""


def detect_gpus(command: list[str], timeout: float = 10.0) -> GpuInventory:
    """Run the detection command (``nvidia-smi -L``); never raises."""
    if not command:
        return GpuInventory([], "GPU detection is switched off (gpu_detect_command is empty)")
    exe = shutil.which(command[0])
    if exe is None:
        return GpuInventory([], f"this machine has no NVIDIA GPU ({command[0]} not found)")
    try:
        done = subprocess.run(
            [exe, *command[1:]], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return GpuInventory([], f"{' '.join(command)} failed: {e}")
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        return GpuInventory([], f"{' '.join(command)} failed: {detail[0] if detail else done.returncode}")
    gpus = parse_nvidia_smi(done.stdout)
    return GpuInventory(gpus, "" if gpus else f"{' '.join(command)} lists no GPU")


@dataclass
class _Grant:
    server: str
    user: str
    team: str | None
    devices: tuple[str, ...]


class GpuAllocator:
    """Which running server holds which GPU, for the whole hub process.

    ``allocate`` is synchronous (no ``await`` between checking and taking), so two spawns on the
    hub's event loop can never take the same GPU; a GPU comes back with ``release``.
    """

    def __init__(self) -> None:
        self._grants: dict[str, _Grant] = {}
        self._lock = threading.Lock()

    def holder(self, device: str) -> str | None:
        return next((g.server for g in self._grants.values() if device in g.devices), None)

    def in_use(self) -> set[str]:
        return {d for g in self._grants.values() for d in g.devices}

    def free(self, gpus: list[LocalGpu]) -> list[LocalGpu]:
        taken = self.in_use()
        return [g for g in gpus if g.device not in taken]

    def allocate(
        self, server: str, user: str, team: str | None, candidates: list[LocalGpu], count: int
    ) -> tuple[str, ...]:
        with self._lock:
            if server in self._grants:
                self._release(server)
            free = self.free(candidates)
            if len(free) < count:
                raise NoGpuFree(
                    f"{gpus_text(count)} asked, {len(free)} of {len(candidates)} free on this machine"
                )
            devices = tuple(g.device for g in free[:count])
            self._grants[server] = _Grant(server, user, team, devices)
            return devices

    def restore(self, server: str, user: str, team: str | None, devices: list[str]) -> None:
        """Re-register a grant from a server's saved state (after a hub restart)."""
        with self._lock:
            others = {d for s, g in self._grants.items() if s != server for d in g.devices}
            clash = others.intersection(devices)
            if clash:
                raise NoGpuFree(f"{plural(len(clash), 'GPU')} ({', '.join(sorted(clash))}) held by another server")
            self._grants[server] = _Grant(server, user, team, tuple(devices))

    def release(self, server: str) -> None:
        with self._lock:
            self._release(server)

    def _release(self, server: str) -> None:
        self._grants.pop(server, None)

    def usage(self, *, team: str | None, user: str) -> tuple[int, int]:
        """(GPUs held by the team's servers, GPUs held by the user's servers)."""
        team_used = sum(len(g.devices) for g in self._grants.values() if team and g.team == team)
        user_used = sum(len(g.devices) for g in self._grants.values() if g.user == user)
        return team_used, user_used


class NoGpuFree(RuntimeError):
    """The GPUs asked for were taken between validation and start."""
