"""The team GPU quota, in one place: whose quota applies to a user, and whether a request fits.

An admin gives a team a GPU ``quota`` (all its members together) and optionally a ``user_quota``
(each member). The chooser form, the spawn-time validation of both spawners, the cluster cache and
the job API all ask the same two questions, answered here: :meth:`GpuQuota.of` (which ceilings apply
to someone in these groups) and :meth:`QuotaUsage.breach` (would *n* more GPUs go over one of them,
given what is in use). Each caller words the refusal for its reader; the arithmetic is this module's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from kubelab.core.config import KubelabConfig

__all__ = ["Breach", "GpuQuota", "QuotaUsage"]


@dataclass(frozen=True)
class Breach:
    """The first ceiling a request goes over: the ``team``'s or the ``user``'s own."""

    scope: Literal["team", "user"]
    limit: int
    used: int

    @property
    def left(self) -> int:
        return max(self.limit - self.used, 0)


@dataclass(frozen=True)
class QuotaUsage:
    """GPUs the user's team (and the user) use now, against their quotas (None: no quota)."""

    team: str
    gpus_used: int = 0
    gpus_quota: int | None = None
    user_gpus_used: int = 0
    user_gpus_quota: int | None = None

    def breach(self, asked: int) -> Breach | None:
        """The team's ceiling, then the user's, that *asked* more GPUs would pass; None if it fits."""
        if self.gpus_quota is not None and self.gpus_used + asked > self.gpus_quota:
            return Breach("team", self.gpus_quota, self.gpus_used)
        if self.user_gpus_quota is not None and self.user_gpus_used + asked > self.user_gpus_quota:
            return Breach("user", self.user_gpus_quota, self.user_gpus_used)
        return None


@dataclass(frozen=True)
class GpuQuota:
    """The GPU ceilings of a user's team: ``team_gpus`` for the team, ``user_gpus`` for each member."""

    team: str
    team_gpus: int | None
    user_gpus: int | None

    @classmethod
    def of(cls, config: KubelabConfig, groups: Iterable[str]) -> GpuQuota | None:
        """The quota of the first team (in file order) among *groups*; None when in no team."""
        found = config.team_for(tuple(groups))  # file order decides, not the groups' order
        if found is None:
            return None
        name, team = found
        return cls(name, team.quota.gpus, team.user_quota.gpus if team.user_quota else None)

    def usage(self, *, team_used: int = 0, user_used: int = 0) -> QuotaUsage:
        return QuotaUsage(self.team, team_used, self.team_gpus, user_used, self.user_gpus)

    def breach(self, asked: int, *, in_use: int = 0) -> Breach | None:
        """Would *asked* GPUs, on top of *in_use* held by the user (and so by the team), pass a ceiling?"""
        return self.usage(team_used=in_use, user_used=in_use).breach(asked)
