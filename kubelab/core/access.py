"""Who may use what the admin config offers: the one access rule both sides apply.

A profile or dataset lists the JupyterHub ``groups`` whose members may use it; none listed means
everybody. The chooser form (what it offers), spawn validation (what it accepts), the admission
policy (what the cluster lets pods mount) and the job API (which datasets a job may mount) all
ask :func:`granted`, so a user can never get by one path what another refuses.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubelab.core.config import Dataset, KubelabConfig, Profile

__all__ = ["granted", "granted_datasets", "granted_profiles"]


def granted(required_groups: Iterable[str], groups: Iterable[str]) -> bool:
    """Whether a user in *groups* may use something granted to *required_groups* (a profile or
    dataset of the admin config; none listed: everybody)."""
    required = set(required_groups)
    return not required or bool(required.intersection(groups))


def granted_profiles(config: KubelabConfig, groups: Iterable[str]) -> list[Profile]:
    """The profiles a user in *groups* may use, in file order."""
    mine = frozenset(groups)
    return [p for p in config.profiles if granted(p.groups, mine)]


def granted_datasets(config: KubelabConfig, groups: Iterable[str]) -> list[Dataset]:
    """The datasets a user in *groups* may mount, in file order."""
    mine = frozenset(groups)
    return [d for d in config.datasets if granted(d.groups, mine)]
