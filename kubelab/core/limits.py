"""CPU and memory limits on one machine with no container runtime: what is applied, and what not.

Two things run processes here as the hub's own OS user: the local spawner (a notebook server and
the kernels it starts; ``kubelab.spawner.local``) and the local job backend (a training job's
processes; :mod:`kubelab.core.jobs.local`). Both apply a CPU/memory request as far as an
unprivileged process can, by the same rules, decided here by :func:`plan_limits`:

- **A delegated cgroup** (the spawner's ``cgroup_parent``, a cgroup v2 directory with the memory
  and cpu controllers): ``memory.max`` and ``cpu.max`` for the whole group, GPU or not; nothing
  else is needed, and nothing is left unenforced.
- **Memory without one**: an address-space limit (``RLIMIT_AS``; ``ulimit -v`` in a shell) on
  each process separately -- not on their sum. Never for GPU work: CUDA reserves far more address
  space than it uses and fails under such a limit.
- **CPUs without one**: a job is pinned to ``ceil(N)`` CPUs (affinity), CPUs no other running job
  is pinned to first; that bounds its parallelism, not its share of those CPUs. A server is not
  pinned (its CPU limit is reported as not enforced, with why no cgroup could be used).

What is not enforced is said, in words, in :attr:`LimitPlan.notes`: the chooser shows them per
profile, a job records them (``job.info.extra["limits"]``). The words differ by *scope*, because
they are read in different places (``"server"``: the chooser and the spawn progress, in the
profile's own units; ``"job"``: a job's record, in the units the user typed).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kubelab.core.quantity import format_bytes, format_cpu, parse_quantity

__all__ = ["LimitPlan", "Scope", "plan_limits"]

#: whose limits: a notebook server with its kernels, or a training job's processes
Scope = Literal["server", "job"]


@dataclass
class LimitPlan:
    """How CPU and memory limits are applied on this machine, and what is not."""

    memory_bytes: int | None = None
    #: apply ``memory_bytes`` as RLIMIT_AS on each process
    use_rlimit_as: bool = False
    #: the delegated cgroup v2 directory that enforces both limits (the spawner makes a child)
    cgroup: Path | None = None
    cpu_limit: float | None = None
    #: the CPUs to pin the processes to (affinity), or None: not pinned
    cpuset: frozenset[int] | None = None
    #: what is applied and what is not, in words for the user
    notes: list[str] = field(default_factory=list)

    @property
    def rlimit_as(self) -> int | None:
        """The address-space limit to set on each process, in bytes, or None."""
        return self.memory_bytes if self.use_rlimit_as else None

    @property
    def rlimit_as_kib(self) -> int | None:
        """The same in KiB (what ``ulimit -v`` takes), at least 1; or None."""
        return None if self.rlimit_as is None else max(self.rlimit_as // 1024, 1)


def plan_limits(memory: str | None, cpus: str | None, *, gpu: bool, scope: Scope,
                enforce_memory: bool = True, cgroup: Path | None = None,
                no_cgroup_reason: str = "no cgroup", busy_cpus: Collection[int] = ()) -> LimitPlan:
    """The plan for *memory* and *cpus* (Kubernetes quantities, validated by the caller; None:
    no limit) of processes that use GPUs when *gpu*.

    *cgroup*: a usable delegated cgroup directory (the spawner checks it), which then enforces
    both; else *no_cgroup_reason* says why there is none. *enforce_memory*: False when the admin
    turned RLIMIT_AS off (the spawner's ``enforce_memory_limit``). *busy_cpus*: CPUs other
    running jobs are pinned to (scope ``"job"``), avoided while others are free.
    """
    plan = LimitPlan(
        memory_bytes=int(parse_quantity(memory)) if memory else None,
        cpu_limit=float(parse_quantity(cpus)) if cpus else None,
    )
    if cgroup is not None:
        plan.cgroup = cgroup
        return plan  # memory.max and cpu.max for the whole group: nothing to add, nothing unsaid
    server = scope == "server"
    if plan.memory_bytes is not None:
        what = f"memory limit {format_bytes(plan.memory_bytes)}" if server else f"memory {memory}"
        if gpu:
            why = ("an address-space limit would break CUDA; a cgroup would enforce it" if server
                   else "an address-space limit breaks CUDA")
            plan.notes.append(f"{what} not enforced ({why})")
        elif enforce_memory:
            plan.use_rlimit_as = True
            plan.notes.append(f"{what} per process (address space, RLIMIT_AS)" + (
                ", not for the server and its kernels together" if server else ""))
        else:
            plan.notes.append(f"{what} not enforced")
    if plan.cpu_limit is not None:
        if server:
            plan.notes.append(f"CPU limit {format_cpu(plan.cpu_limit)} not enforced "
                              f"({no_cgroup_reason}; see docs/local.md)")
        else:
            plan.cpuset = _pin(plan, cpus or "", busy_cpus)
    return plan


def _pin(plan: LimitPlan, asked: str, busy: Collection[int]) -> frozenset[int] | None:
    """CPUs for a job asking *asked* CPUs: ``ceil(N)`` of those this process may use, the ones
    no other running job is pinned to first; None (with a note) when that is all of them."""
    if not hasattr(os, "sched_getaffinity"):
        plan.notes.append(f"cpus {asked}: not enforced (this system has no CPU affinity)")
        return None
    allowed = sorted(os.sched_getaffinity(0))
    want = max(1, math.ceil(plan.cpu_limit or 0))
    if want >= len(allowed):
        plan.notes.append(f"cpus {asked}: this machine's {len(allowed)} CPU(s), not limited")
        return None
    order = [c for c in allowed if c not in busy] + [c for c in allowed if c in busy]
    cores = frozenset(order[:want])
    plan.notes.append(f"cpus {asked}: pinned to CPU(s) {','.join(map(str, sorted(cores)))} "
                      f"(not a share of them)")
    return cores


# --------------------------------------------------------------------------------------------------
# cgroups (a delegated cgroup v2 directory: the local spawner's ``cgroup_parent``)


def cgroup_usable(parent: str) -> tuple[bool, str]:
    """Whether *parent* is a cgroup v2 directory we may create children in, with memory and cpu."""
    if not parent:
        return False, "no cgroup_parent configured"
    path = Path(parent)
    try:
        controllers = (path / "cgroup.subtree_control").read_text().split()
    except OSError as e:
        return False, f"{path}/cgroup.subtree_control cannot be read ({e.strerror})"
    missing = [c for c in ("memory", "cpu") if c not in controllers]
    if missing:
        return False, f"{path} does not delegate the {' and '.join(missing)} controller(s)"
    if not os.access(path, os.W_OK):
        return False, f"{path} is not writable by the hub's user"
    return True, ""


def make_cgroup(plan: LimitPlan, name: str) -> Path | None:
    """The cgroup *name* under *plan*'s parent with its ``memory.max``/``cpu.max``; None without."""
    if plan.cgroup is None:
        return None
    path = plan.cgroup / name
    path.mkdir(exist_ok=True)
    if plan.memory_bytes is not None:
        (path / "memory.max").write_text(f"{plan.memory_bytes}\n")
    if plan.cpu_limit is not None:
        period = 100_000
        (path / "cpu.max").write_text(f"{max(int(plan.cpu_limit * period), 1000)} {period}\n")
    return path


def remove_cgroup(path: Path) -> bool:
    """End what still runs in the cgroup at *path* (kernels that outlived the server) and remove
    it; False if it could not be removed."""
    kill = path / "cgroup.kill"
    with contextlib.suppress(OSError):
        if kill.exists():
            kill.write_text("1\n")
    for _ in range(20):
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(0.05)
    return False
