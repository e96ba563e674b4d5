"""The hub's shared view of the cluster: GPU capacity and use, from two list+watch caches.

One :class:`~kubelab.core.kube.cache.Reflector` of all nodes and one of all pods per process (per
event loop), each writing into an index that keeps only what the chooser needs: per node its
labels, extended allocatable resources and schedulability (:class:`_NodeIndex`); per pod its node,
extended-resource requests and kubelab team/user labels, with running sums per node, team and user
(:class:`_PodIndex`). A form render reads sums instead of walking 20,000 pods, and asks the API
nothing. The GPU pods are not only notebooks: jobs, model servers and pods kubelab did not create
hold GPUs too, so this cache is separate from KubeSpawner's own pod reflector.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from kubelab.core import objects
from kubelab.core.config import KubelabConfig
from kubelab.core.kube.cache import Reflector, name_key, namespaced_key
from kubelab.core.quota import GpuQuota, QuotaUsage
from kubelab.spawner.profiles import GpuAvailability, UserInfo

__all__ = ["ClusterState"]


class Indexed(Protocol):
    """What :class:`ClusterState` reads of a reflector: its store and whether it has loaded."""

    store: Any

    @property
    def ready(self) -> bool: ...

    async def wait_synced(self, timeout: float | None = None) -> None: ...


_STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage", "pods")


def _extended(resources: Mapping[str, Any] | None) -> dict[str, int]:
    """The extended resources (``nvidia.com/gpu``, ...) of a requests/limits/allocatable map."""
    if not resources:
        return {}
    return {
        k: n for k, v in resources.items()
        if "/" in k and not k.startswith(("hugepages-", "kubernetes.io/"))
        and (n := objects.gpu_count(v)) > 0
    }


def _pod_requests(pod: Mapping[str, Any]) -> dict[str, int]:
    spec = pod.get("spec") or {}
    total: dict[str, int] = {}
    for c in spec.get("containers") or []:
        res = c.get("resources") or {}
        # extended resources: requests, when given, equal limits; limits alone imply requests
        for k, n in (_extended(res.get("requests")) or _extended(res.get("limits"))).items():
            total[k] = total.get(k, 0) + n
    for c in spec.get("initContainers") or []:
        res = c.get("resources") or {}
        for k, n in (_extended(res.get("requests")) or _extended(res.get("limits"))).items():
            total[k] = max(total.get(k, 0), n)
    return total


@dataclass(frozen=True)
class _PodRecord:
    node: str
    requests: tuple[tuple[str, int], ...]
    team: str
    user: str


class _ReducedIndex(dict[str, Any]):
    """A reflector's store that keeps, per object, a small record (:meth:`_record`) and keeps
    running figures up to date as records come and go (:meth:`_account`); ``version`` changes
    whenever a record does, so figures derived from the index can be memoized."""

    def __init__(self, items: Mapping[str, Any] | None = None):
        super().__init__()
        self.version = 0
        self._reset()
        for k, v in (items or {}).items():
            self[k] = v

    def _reset(self) -> None:
        """Start the running figures empty."""

    @staticmethod
    def _record(obj: Any) -> Any:
        raise NotImplementedError

    def _account(self, key: str, rec: Any, sign: int) -> None:
        """Add (*sign* +1) or take away (-1) *rec*, stored under *key*, from the figures."""
        raise NotImplementedError

    def __setitem__(self, key: str, obj: Any) -> None:
        rec = self._record(obj)
        old = super().get(key)
        if old == rec and key in self:
            return
        if old is not None:
            self._account(key, old, -1)
        if rec is not None:
            self._account(key, rec, +1)
        super().__setitem__(key, rec)
        self.version += 1

    def __delitem__(self, key: str) -> None:
        old = super().get(key)
        if old is not None:
            self._account(key, old, -1)
        super().__delitem__(key)
        self.version += 1

    def clear(self) -> None:
        """Empty, figures included (a reflector's relist clears its store, then refills it)."""
        super().clear()
        self._reset()
        self.version += 1

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            value = super().get(key)
            del self[key]
            return value
        if default:
            return default[0]
        raise KeyError(key)

    def __reduce__(self) -> Any:  # pragma: no cover - never pickled, but keep dict semantics honest
        return (type(self), (dict(self),))


class _PodIndex(_ReducedIndex):
    """A pod reflector's store that keeps, per pod, only what availability needs (node, extended
    resource requests, kubelab team/user labels) and running sums, so a form render reads sums
    instead of walking 20,000 pods. Terminal pods (Succeeded/Failed) hold nothing."""

    def _reset(self) -> None:
        self.node_used: dict[str, dict[str, int]] = {}
        self.unbound: dict[str, int] = {}
        self.team_used: dict[str, dict[str, int]] = {}
        self.user_used: dict[str, dict[str, int]] = {}

    @staticmethod
    def _record(pod: Any) -> _PodRecord | None:
        if isinstance(pod, _PodRecord) or pod is None:
            return pod
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return None
        requests = _pod_requests(pod)
        if not requests:
            return None
        labels = (pod.get("metadata") or {}).get("labels") or {}
        return _PodRecord(
            node=(pod.get("spec") or {}).get("nodeName") or "",
            requests=tuple(sorted(requests.items())),
            team=labels.get(objects.TEAM_LABEL, ""),
            user=labels.get(objects.USER_LABEL, ""),
        )

    @staticmethod
    def _add(table: dict[str, dict[str, int]], key: str, requests: tuple[tuple[str, int], ...], sign: int) -> None:
        row = table.setdefault(key, {})
        for r, n in requests:
            row[r] = row.get(r, 0) + sign * n
            if row[r] == 0:
                del row[r]
        if not row:
            del table[key]

    def _account(self, key: str, rec: _PodRecord, sign: int) -> None:
        if rec.node:
            self._add(self.node_used, rec.node, rec.requests, sign)
        else:
            for r, n in rec.requests:
                self.unbound[r] = self.unbound.get(r, 0) + sign * n
        if rec.team:
            self._add(self.team_used, rec.team, rec.requests, sign)
        if rec.user:
            self._add(self.user_used, rec.user, rec.requests, sign)


@dataclass(frozen=True)
class _NodeRecord:
    labels: tuple[tuple[str, str], ...]
    allocatable: tuple[tuple[str, int], ...]
    schedulable: bool


class _NodeIndex(_ReducedIndex):
    """A node reflector's store: per node its labels, extended allocatable resources and whether
    new pods may land there (Ready, not cordoned). Nodes without extended resources are kept too
    (a CPU node), but cost nothing at render time: only GPU nodes are indexed by resource."""

    def _reset(self) -> None:
        self.by_resource: dict[str, dict[str, _NodeRecord]] = {}

    @staticmethod
    def _record(node: Any) -> _NodeRecord:
        if isinstance(node, _NodeRecord):
            return node
        meta = node.get("metadata") or {}
        status = node.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
        ) or not status.get("conditions")
        return _NodeRecord(
            labels=tuple(sorted((meta.get("labels") or {}).items())),
            allocatable=tuple(sorted(_extended(status.get("allocatable") or status.get("capacity")).items())),
            schedulable=ready and not (node.get("spec") or {}).get("unschedulable", False),
        )

    def _account(self, key: str, rec: _NodeRecord, sign: int) -> None:
        for r, _ in rec.allocatable:
            if sign > 0:
                self.by_resource.setdefault(r, {})[key] = rec
            else:
                self.by_resource.get(r, {}).pop(key, None)


class ClusterState:
    """The process's shared view of GPU capacity and use: one node and one pod reflector.

    ``ClusterState.get(api)`` starts them on first use (per event loop) and returns the shared
    instance; :meth:`gpu_availability` and :meth:`quota_usage` answer from the caches only.
    """

    _instances: ClassVar[dict[Any, ClusterState]] = {}

    def __init__(self, nodes: Indexed, pods: Indexed):
        self.nodes = nodes
        self.pods = pods
        self._gpu_memo: tuple[Any, dict[str, GpuAvailability]] | None = None
        #: GPUs of spawns that passed the quota check but whose pod the cache has not seen yet,
        #: by pod key ("namespace/name"): (team label, user label, GPUs, expiry on the monotonic
        #: clock). Without them two users of a team spawning at once would both fit the same
        #: remaining quota: with per-user namespaces no ResourceQuota spans the team.
        self.reservations: dict[str, tuple[str, str, int, float]] = {}

    @property
    def node_index(self) -> _NodeIndex:
        store = self.nodes.store
        assert isinstance(store, _NodeIndex)
        return store

    @property
    def pod_index(self) -> _PodIndex:
        store = self.pods.store
        assert isinstance(store, _PodIndex)
        return store

    def reserve(self, pod_key: str, *, team: str, user: str, gpus: int, ttl: float) -> None:
        """Count *gpus* against *team* and *user* until the cache sees *pod_key* (or *ttl* s)."""
        self.reservations[pod_key] = (
            objects.safe_label_value(team), objects.safe_label_value(user), gpus, time.monotonic() + ttl)

    def release(self, pod_key: str) -> None:
        self.reservations.pop(pod_key, None)

    def _reserved(self, *, exclude: str | None) -> tuple[dict[str, int], dict[str, int]]:
        """GPUs reserved per team label and per user label, dropping reservations whose pod the
        cache now counts (or that expired)."""
        pods = self.pod_index
        now = time.monotonic()
        teams: dict[str, int] = {}
        users: dict[str, int] = {}
        for key, (team, user, gpus, expiry) in list(self.reservations.items()):
            if key in pods or now > expiry:
                del self.reservations[key]
                continue
            if key == exclude:
                continue
            teams[team] = teams.get(team, 0) + gpus
            users[user] = users.get(user, 0) + gpus
        return teams, users

    @classmethod
    def current(cls) -> ClusterState | None:
        """This event loop's state, if :meth:`get` made one."""
        return cls._instances.get(asyncio.get_running_loop())

    @classmethod
    async def get(cls, api: Any, *, wait: float | None = None) -> ClusterState:
        """This event loop's shared state, its two reflectors started on first use over *api* (a
        ``CoreV1Api``), after waiting up to *wait* s for their first lists (None: until loaded).
        A first list that fails raises its error, and the next call starts afresh."""
        loop = asyncio.get_running_loop()
        state = cls._instances.get(loop)
        if state is None:
            host = api.api_client.configuration.host
            nodes = Reflector.shared((host, "nodes"), lambda: Reflector(
                api.list_node, what="nodes", store=_NodeIndex(), key=name_key))
            pods = Reflector.shared((host, "pods", "*"), lambda: Reflector(
                api.list_pod_for_all_namespaces, what="pods", store=_PodIndex(),
                key=namespaced_key))
            state = cls._instances[loop] = ClusterState(nodes, pods)
        if not state.ready:
            try:
                await asyncio.wait_for(
                    asyncio.gather(state.nodes.wait_synced(), state.pods.wait_synced()), wait)
            except asyncio.TimeoutError:
                pass
            except Exception:
                cls._instances.pop(loop, None)  # try again next time
                await state.stop()
                raise
        return state

    @classmethod
    async def stop_all(cls) -> None:
        for state in list(cls._instances.values()):
            await state.stop()
        cls._instances.clear()

    async def stop(self) -> None:
        for reflector in (self.nodes, self.pods):
            if isinstance(reflector, Reflector):
                await reflector.stop()

    @property
    def ready(self) -> bool:
        return self.nodes.ready and self.pods.ready

    def gpu_availability(self, config: KubelabConfig) -> dict[str, GpuAvailability]:
        """Free/total GPUs per GPU type of *config*, memoized until a node or pod changes."""
        nodes, pods = self.node_index, self.pod_index
        key = (id(config), id(nodes), nodes.version, id(pods), pods.version)
        if self._gpu_memo is not None and self._gpu_memo[0] == key:
            return self._gpu_memo[1]
        out: dict[str, GpuAvailability] = {}
        for slug, gpu_type in config.gpu_types.items():
            selector = gpu_type.node_selector.items()
            total = free = largest = 0
            for name, rec in nodes.by_resource.get(gpu_type.resource, {}).items():
                labels = dict(rec.labels)
                if any(labels.get(k) != v for k, v in selector):
                    continue
                alloc = dict(rec.allocatable).get(gpu_type.resource, 0)
                total += alloc
                if not rec.schedulable:
                    continue
                used = pods.node_used.get(name.lstrip("/"), {}).get(gpu_type.resource, 0)
                node_free = max(alloc - used, 0)
                free += node_free
                largest = max(largest, node_free)
            out[slug] = GpuAvailability(total=total, free=free, largest_free=largest)
        self._gpu_memo = (key, out)
        return out

    def quota_usage(self, config: KubelabConfig, user: UserInfo, *, exclude: str | None = None) -> QuotaUsage | None:
        """GPUs the user's team and the user hold: their pods in the cache plus the reservations
        of spawns under way (but *exclude*'s, the pod key of the spawn asking)."""
        quota = GpuQuota.of(config, user.groups)
        if quota is None:
            return None
        pods = self.pod_index
        resources = {g.resource for g in config.gpu_types.values()}
        team_label, user_label = objects.safe_label_value(quota.team), objects.safe_label_value(user.name)
        reserved_teams, reserved_users = self._reserved(exclude=exclude)

        def used(row: Mapping[str, int] | None) -> int:
            return sum(n for r, n in (row or {}).items() if r in resources)

        return quota.usage(
            team_used=used(pods.team_used.get(team_label)) + reserved_teams.get(team_label, 0),
            user_used=used(pods.user_used.get(user_label)) + reserved_users.get(user_label, 0),
        )
