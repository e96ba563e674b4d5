"""``ProfileSpawner``: KubeSpawner, configured per user from ``kubelab.yaml``.

JupyterHub entry point ``kubelab`` (``c.JupyterHub.spawner_class = "kubelab"``). It subclasses
KubeSpawner and only *configures* it:

* ``profile_list`` is a callable that generates KubeSpawner's profile list for the user from the
  admin config, filtered by their JupyterHub groups (:mod:`kubelab.spawner.profiles`);
  KubeSpawner's own ``_load_profile`` applies the three-layer override merge.
* ``options_form`` renders kubelab's chooser with live GPU availability and team quota, computed
  from :class:`ClusterState`: one list+watch cache of nodes and one of pods per process, built on
  KubeSpawner's ``ResourceReflector`` and shared by every spawner — no API request per page view.
* ``user_options`` are validated on the server (JupyterHub's ``apply_user_options`` step, before
  anything is created) and refused with HTTP 400 and a message.
* The pod gets the GPU limits, node selector and tolerations, a memory-backed ``/dev/shm``, the
  chosen datasets, kubelab labels, the restricted security context and the user's service
  account, all through KubeSpawner's own traits. The user's namespace is created with a
  ResourceQuota, LimitRange, ServiceAccount, Role, RoleBinding and the notebook ConfigMap
  (:mod:`kubelab.core.objects`), once per process per content.
* A GPU pod the scheduler cannot place fails after ``gpu_unschedulable_timeout`` seconds with a
  message naming the GPU type, how many are free and what to try; the pod is deleted and every
  trait the spawn set is put back (no override leaks into the next spawn).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client.rest import ApiException
from kubespawner import KubeSpawner
from kubespawner.reflector import ResourceReflector
from tornado import web
from traitlets import Bool, Float, Unicode, default, validate

from kubelab.core import admission, objects
from kubelab.core.config import KubelabConfig, cached_config, dump_config
from kubelab.core.notebook_env import NotebookDataset, NotebookEnv
from kubelab.core.podsecurity import violations
from kubelab.spawner import profiles
from kubelab.spawner.profiles import (
    Availability,
    Choice,
    GpuAvailability,
    InvalidOptions,
    QuotaUsage,
    UserInfo,
)

try:  # JupyterHub ≥ 6: a policy failure, logged without a traceback
    from jupyterhub.spawner import SpawnException as _SpawnException
except ImportError:  # pragma: no cover - JupyterHub 5
    _SpawnException = None


def spawn_error(message: str, *, reason: str, status: int = 400) -> web.HTTPError:
    """An HTTP error whose message JupyterHub shows the user as is."""
    if _SpawnException is not None:
        return _SpawnException(message, reason=reason, status_code=status)
    error = web.HTTPError(status, "%s", message)  # pragma: no cover
    error.jupyterhub_message = message  # type: ignore[attr-defined]  # pragma: no cover
    return error  # pragma: no cover


# --------------------------------------------------------------------------------------------------
# Config file: kubelab.core.config.cached_config (re-read when it changes, last good one kept)


def default_config_path() -> str:
    env = os.environ.get("KUBELAB_CONFIG")
    if env:
        return env
    from kubelab.core.config import example_config_path

    return str(example_config_path())


# --------------------------------------------------------------------------------------------------
# The shared watch cache of nodes and pods


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


class _ReducedIndex(dict):  # type: ignore[type-arg]
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


class _RawResponse:
    """Wraps an aiohttp response of a cluster-scoped list/watch so each object carries
    ``metadata.namespace = ""``: KubeSpawner's reflector keys its store by
    ``namespace/name`` and would fail on nodes otherwise."""

    def __init__(self, resp: Any):
        self._resp = resp
        self.content = self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resp, name)

    async def read(self) -> bytes:
        data = json.loads(await self._resp.read())
        for item in data.get("items") or []:
            item.setdefault("metadata", {}).setdefault("namespace", "")
        return json.dumps(data).encode()

    async def readline(self) -> bytes:
        line = await self._resp.content.readline()
        if not line.strip():
            return line
        event = json.loads(line)
        obj = event.get("object")
        if isinstance(obj, dict) and event.get("type") not in ("ERROR", "BOOKMARK"):
            obj.setdefault("metadata", {}).setdefault("namespace", "")
        return json.dumps(event).encode() + b"\n"


class _RawApi:
    """The reflector's API object: forwards to the real client, but its list methods have no
    docstring, so the watch hands out raw dicts instead of building a model object per event
    (the reflector only reads the raw dicts), and cluster-scoped lists get a namespace."""

    def __init__(self, api: Any, method: str, cluster_scoped: bool):
        self._api = api
        real = getattr(api, method)

        async def call(*args: Any, **kwargs: Any) -> Any:
            resp = await real(*args, **kwargs)
            return _RawResponse(resp) if cluster_scoped else resp

        setattr(self, method, call)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)


class _IndexedReflector(ResourceReflector):
    """A reflector over all namespaces whose store is an index class (``index``) that keeps only
    what the availability figures need, and whose list/watch calls skip model deserialization."""

    omit_namespace = True
    index: type[dict] = dict  # type: ignore[type-arg]
    cluster_scoped = False

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.api = _RawApi(self.api, self.list_method_name, cluster_scoped=self.cluster_scoped)
        self.resources = self.index()

    @validate("resources")
    def _index(self, proposal: Any) -> Any:
        value = proposal.value
        return value if isinstance(value, self.index) else self.index(value)


class NodeReflector(_IndexedReflector):
    """All nodes, with their extended resources (GPUs) and labels, in a :class:`_NodeIndex`."""

    kind = "nodes"
    list_method_name = "list_node"
    index = _NodeIndex
    cluster_scoped = True


class GpuPodReflector(_IndexedReflector):
    """All pods in all namespaces, reduced to their extended-resource requests (:class:`_PodIndex`).

    Separate from KubeSpawner's pod reflector (which sees only notebook pods): GPUs are also held
    by jobs, model servers and pods kubelab did not create."""

    kind = "pods"
    list_method_name = "list_pod_for_all_namespaces"
    index = _PodIndex


class ClusterState:
    """The process's shared view of GPU capacity and use: one node and one pod reflector.

    ``ClusterState.get(parent)`` starts them on first use (per event loop) and returns the shared
    instance; :meth:`availability` answers from the caches only.
    """

    _instances: dict[Any, ClusterState] = {}

    def __init__(self, nodes: NodeReflector, pods: GpuPodReflector):
        self.nodes = nodes
        self.pods = pods
        self._gpu_memo: tuple[Any, dict[str, GpuAvailability]] | None = None
        #: GPUs of spawns that passed the quota check but whose pod the cache has not seen yet,
        #: by pod key ("namespace/name"): (team label, user label, GPUs, expiry on the monotonic
        #: clock). Without them two users of a team spawning at once would both fit the same
        #: remaining quota: with per-user namespaces no ResourceQuota spans the team.
        self.reservations: dict[str, tuple[str, str, int, float]] = {}

    def reserve(self, pod_key: str, *, team: str, user: str, gpus: int, ttl: float) -> None:
        """Count *gpus* against *team* and *user* until the cache sees *pod_key* (or *ttl* s)."""
        self.reservations[pod_key] = (
            objects.safe_label_value(team), objects.safe_label_value(user), gpus, time.monotonic() + ttl)

    def release(self, pod_key: str) -> None:
        self.reservations.pop(pod_key, None)

    def _reserved(self, *, exclude: str | None) -> tuple[dict[str, int], dict[str, int]]:
        """GPUs reserved per team label and per user label, dropping reservations whose pod the
        cache now counts (or that expired)."""
        pods = self.pods.resources
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
    async def get(cls, parent: Any, *, wait: float | None = None) -> ClusterState:
        loop = asyncio.get_running_loop()
        state = cls._instances.get(loop)
        if state is None:
            nodes = NodeReflector(parent=parent)
            pods = GpuPodReflector(parent=parent)
            state = cls._instances[loop] = ClusterState(nodes, pods)
            state._starting = asyncio.ensure_future(asyncio.gather(nodes.start(), pods.start()))
        starting = state._starting
        if not starting.done():
            try:
                await asyncio.wait_for(asyncio.shield(starting), wait)
            except asyncio.TimeoutError:
                pass
        if starting.done() and starting.exception() is not None:
            cls._instances.pop(loop, None)  # try again next time
            raise starting.exception()  # type: ignore[misc]
        return state

    @classmethod
    async def stop_all(cls) -> None:
        for state in list(cls._instances.values()):
            await state.stop()
        cls._instances.clear()

    async def stop(self) -> None:
        await asyncio.gather(self.nodes.stop(), self.pods.stop(), return_exceptions=True)

    @property
    def ready(self) -> bool:
        return self.nodes.first_load_future.done() and self.pods.first_load_future.done()

    def gpu_availability(self, config: KubelabConfig) -> dict[str, GpuAvailability]:
        """Free/total GPUs per GPU type of *config*, memoized until a node or pod changes."""
        nodes: _NodeIndex = self.nodes.resources  # type: ignore[assignment]
        pods: _PodIndex = self.pods.resources  # type: ignore[assignment]
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
        team = config.team_for(sorted(user.groups))
        if team is None:
            return None
        name, t = team
        pods: _PodIndex = self.pods.resources  # type: ignore[assignment]
        resources = {g.resource for g in config.gpu_types.values()}
        team_label, user_label = objects.safe_label_value(name), objects.safe_label_value(user.name)
        reserved_teams, reserved_users = self._reserved(exclude=exclude)

        def used(row: Mapping[str, int] | None) -> int:
            return sum(n for r, n in (row or {}).items() if r in resources)

        return QuotaUsage(
            team=name,
            gpus_used=used(pods.team_used.get(team_label)) + reserved_teams.get(team_label, 0),
            gpus_quota=t.quota.gpus,
            user_gpus_used=used(pods.user_used.get(user_label)) + reserved_users.get(user_label, 0),
            user_gpus_quota=t.user_quota.gpus if t.user_quota else None,
        )


# --------------------------------------------------------------------------------------------------
# The spawner


#: KubeSpawner traits a spawn sets; restored before each spawn and after a failed one
_OVERRIDDEN_TRAITS = (
    "image", "cpu_guarantee", "cpu_limit", "mem_guarantee", "mem_limit", "node_selector",
    "tolerations", "extra_resource_limits", "extra_resource_guarantees", "volumes", "volume_mounts",
    "extra_labels", "extra_annotations", "environment", "pod_security_context",
    "container_security_context", "service_account", "automount_service_account_token",
    "allow_privilege_escalation", "uid", "gid", "fs_gid",
)


class ProfileSpawner(KubeSpawner):
    """KubeSpawner with kubelab's per-user profile chooser, data mounts, namespaces and quotas.

    Configure it with the admin config file (``kubelab_config``); KubeSpawner's own settings
    (``k8s_api_*``, ``storage_*`` for the home PVC, ``start_timeout``, ...) still apply.
    """

    kubelab_config = Unicode(
        config=True,
        help="""Path of the kubelab admin config (``kubelab.yaml``).

        Default: ``$KUBELAB_CONFIG``, else the example shipped with kubelab. The file is re-read
        when it changes; an edit that breaks it is logged and the previous version kept. Check a
        file with ``kubelab config check PATH``.
        """,
    )

    @default("kubelab_config")
    def _default_kubelab_config(self) -> str:
        return default_config_path()

    gpu_unschedulable_timeout = Float(
        60.0,
        config=True,
        help="""Seconds a GPU notebook pod may stay unschedulable before the spawn fails.

        When the scheduler reports that no node can give the requested GPUs (e.g. ``Insufficient
        nvidia.com/gpu``), waiting the full ``start_timeout`` helps nobody: after this many
        seconds the pending pod is deleted and the user sees which GPU type is short, how many
        are free and what to try. Count from the pod's creation. 0 disables (wait for
        ``start_timeout``); raise it when a cluster autoscaler adds GPU nodes on demand.
        """,
    )

    refuse_unavailable_gpus = Bool(
        False,
        config=True,
        help="""Refuse (HTTP 400) a GPU count that no node can give right now, per the cache.

        Off by default: the cache may be a moment old, and an autoscaler may add nodes, so such
        a choice is marked in the form and left to ``gpu_unschedulable_timeout``.
        """,
    )

    watch_cluster = Bool(
        True,
        config=True,
        help="""Keep a shared list+watch cache of all nodes and pods to show GPU availability and
        team GPU usage in the chooser and to check quotas. Needs cluster-wide ``list``/``watch``
        on ``nodes`` and ``pods`` for the hub's service account (docs/spawner.md). When off, the
        form shows no availability and only the static quota checks apply.
        """,
    )

    availability_wait = Float(
        3.0,
        config=True,
        help="""Seconds the first form render waits for the cluster cache to load; after that
        the form says availability is not known yet rather than keep the user waiting.""",
    )

    manage_namespace_objects = Bool(
        True,
        config=True,
        help="""Create, in each user's namespace, the ResourceQuota (from the team's
        ``user_quota``, or ``quota`` for a shared team namespace), a LimitRange, the
        ``kubelab-user`` ServiceAccount with its Role and RoleBinding, and the
        ``kubelab-notebook`` ConfigMap, and run the notebook as that ServiceAccount. Each is
        written once per hub process per content (re-written when the config changes).""",
    )

    notebook_service_account = Unicode(
        objects.SERVICE_ACCOUNT,
        config=True,
        help="ServiceAccount the notebook runs as (created by kubelab when ``manage_namespace_objects``).",
    )

    # -- KubeSpawner defaults kubelab changes -------------------------------------------------

    @default("enable_user_namespaces")
    def _default_user_namespaces(self) -> bool:
        # Each user (or team) gets the namespace the config's team pattern names.
        return True

    @default("common_labels")
    def _default_common_labels(self) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": "jupyterhub",
            objects.MANAGED_BY_LABEL: objects.MANAGED_BY,
            "app": "jupyterhub",
            "heritage": "jupyterhub",
        }

    @default("profile_list")
    def _default_profile_list(self) -> Any:
        return _profile_list

    @default("options_form")
    def _default_options_form(self) -> Any:
        return _options_form

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        return profiles.options_from_form

    # -- the config and the user ---------------------------------------------------------------

    @property
    def kubelab(self) -> KubelabConfig:
        return cached_config(self.kubelab_config, self.log)

    def user_info(self) -> UserInfo:
        groups = [getattr(g, "name", g) for g in (getattr(self.user, "groups", None) or [])]
        return UserInfo.of(self.user.name, groups)

    def unusable_datasets(self, config: KubelabConfig) -> dict[str, str]:
        level = config.pod_security.level
        return {
            d.name: reason for d in config.datasets
            if (reason := objects.volume_allowed(d, level)) is not None
        }

    async def availability(self, *, wait: float | None = None) -> Availability:
        """What the chooser shows and validation checks against, from the shared cache only."""
        config = self.kubelab
        user = self.user_info()
        unusable = self.unusable_datasets(config)
        if not self.watch_cluster:
            return Availability(unusable_datasets=unusable, known=False)
        try:
            state = await ClusterState.get(self, wait=self.availability_wait if wait is None else wait)
        except Exception as e:  # the form must render even when the API is unreachable
            self.log.warning("GPU availability unavailable: %s", e)
            return Availability(unusable_datasets=unusable, known=False)
        if not state.ready:
            return Availability(unusable_datasets=unusable, known=False)
        return Availability(
            gpus=state.gpu_availability(config),
            quota=state.quota_usage(config, user, exclude=self._pod_key(user)),
            unusable_datasets=unusable,
        )

    def user_namespace(self, user: UserInfo | None = None) -> tuple[str, str | None]:
        """(namespace, team) the config gives the user (``teams.<t>.namespace``)."""
        user = user or self.user_info()
        return objects.user_namespace(self.kubelab, username=user.name, groups=sorted(user.groups))

    def _pod_key(self, user: UserInfo | None = None) -> str:
        """The reflectors' key of this server's pod, in the namespace the config gives the user."""
        namespace = self.user_namespace(user)[0] if self.enable_user_namespaces else self.namespace
        return f"{namespace}/{self.pod_name}"

    def _reserve_gpus(self, choice: Choice) -> None:
        """Hold *choice*'s GPUs against the team quota until the cache sees the pod (see
        :meth:`ClusterState.reserve`), so concurrent spawns cannot overrun it."""
        state = ClusterState._instances.get(asyncio.get_running_loop())
        if state is None or not choice.gpus:
            return
        user = self.user_info()
        team = self.kubelab.team_for(sorted(user.groups))
        if team is None:
            return
        state.reserve(self._pod_key(user), team=team[0], user=user.name, gpus=choice.gpus,
                      ttl=self.start_timeout + self.k8s_api_request_retry_timeout)

    def _release_gpus(self) -> None:
        state = ClusterState._instances.get(asyncio.get_running_loop())
        if state is not None:
            state.release(self._pod_key())

    # -- validation: JupyterHub's apply_user_options step (HTTP 400, nothing created yet) ------

    async def validate_options(self, user_options: Any, *, reserve: bool = False) -> Choice:
        """Validate untrusted *user_options* into a :class:`Choice` or raise HTTP 400; with
        *reserve*, hold the choice's GPUs against the team quota until the pod is seen."""
        availability = await self.availability()
        try:
            choice = profiles.validate_user_options(
                self.kubelab, self.user_info(), user_options, availability,
                refuse_unavailable=self.refuse_unavailable_gpus,
            )
        except InvalidOptions as e:
            raise spawn_error(f"Invalid server options: {e}", reason="invalid-options") from None
        if reserve:
            # no await between the check and the reservation: another spawn cannot slip in
            self._reserve_gpus(choice)
        return choice

    async def _run_apply_user_options(self, user_options: Any) -> None:
        # Runs in User.spawn before start(): the earliest point with the final user_options,
        # and JupyterHub answers an HTTPError raised here with that status (400).
        self._kubelab_choice = await self.validate_options(user_options)
        self._kubelab_validated = (copy.deepcopy(user_options), self.kubelab)
        if self.apply_user_options:  # an admin's own hook runs after kubelab's checks
            await super()._run_apply_user_options(user_options)

    # -- applying the choice --------------------------------------------------------------------

    _kubelab_choice: Choice | None = None
    _kubelab_pristine: dict[str, Any] | None = None
    _kubelab_failure: BaseException | None = None
    _kubelab_validated: tuple[Any, KubelabConfig] | None = None

    def _snapshot(self) -> None:
        if self._kubelab_pristine is None:
            self._kubelab_pristine = {k: copy.deepcopy(getattr(self, k)) for k in _OVERRIDDEN_TRAITS}

    def restore_traits(self) -> None:
        """Put back every trait a spawn overrides (KubeSpawner merges dict overrides into the
        spawner in place, so without this a GPU spawn's limits would stay for the next one)."""
        if self._kubelab_pristine is not None:
            for k, v in self._kubelab_pristine.items():
                if getattr(self, k) != v:  # setting a trait runs its validation: only when changed
                    setattr(self, k, copy.deepcopy(v))

    def _kubelab_pristine_list(self, name: str) -> list[Any]:
        assert self._kubelab_pristine is not None
        return list(self._sorted_dict_values(self._kubelab_pristine[name]))

    async def load_user_options(self) -> None:
        self._snapshot()
        self.restore_traits()
        # validated here unless the apply_user_options step just did it for these very options
        # (start() may be called without it: JupyterHub < 5.3, or tests)
        validated = self._kubelab_validated
        self._kubelab_validated = None
        if (validated is not None and self._kubelab_choice is not None and not self._kubelab_choice.gpus
                and validated == (self.user_options, self.kubelab)):
            choice = self._kubelab_choice
        else:
            # GPU choices are checked again against the quota, now that the spawn is committed,
            # and their GPUs reserved in the same step
            choice = await self.validate_options(self.user_options, reserve=True)
        self._kubelab_choice = choice
        config = self.kubelab
        user = self.user_info()
        namespace, team = self.user_namespace(user)
        if self.enable_user_namespaces:
            self.namespace = namespace
            self.dns_name = self.dns_name_template.format(namespace=namespace, name=self.pod_name)
        # KubeSpawner's own merge: profile override, then the chosen image and GPU count.
        given = self.user_options
        self.user_options = choice.kubespawner_user_options()
        try:
            await super().load_user_options()
        finally:
            self.user_options = given
        self._apply_choice(config, choice, user, team)
        await self._check_dataset_claims(choice, user)

    #: (API server, namespace, claim) → monotonic time a dataset's claim was last seen there
    _claims_seen: dict[tuple[str, str, str], float] = {}
    #: how long a claim seen to exist is not looked up again
    claim_recheck_seconds = 300.0

    async def _check_dataset_claims(self, choice: Choice, user: UserInfo) -> None:
        """Refuse the spawn (HTTP 400, nothing created) when a chosen PVC dataset's claim does not
        exist in the user's namespace: a PVC lives in one namespace, and the pod would otherwise
        wait, Pending, for the whole start timeout. Other API errors (e.g. the hub may not read
        claims) let the spawn go on; the pod's events then say what is wrong."""
        host = self.api.api_client.configuration.host
        now = time.monotonic()
        for m in choice.datasets:
            source = objects.expand_source(m.dataset.source, username=user.name)
            if source.pvc is None:
                continue
            claim = source.pvc.claim_name
            key = (host, self.namespace, claim)
            if now - self._claims_seen.get(key, float("-inf")) < self.claim_recheck_seconds:
                continue
            try:
                await asyncio.wait_for(
                    self.api.read_namespaced_persistent_volume_claim(claim, self.namespace),
                    self.k8s_api_request_timeout)
            except ApiException as e:
                if e.status != 404:
                    self.log.warning("Could not check claim %s/%s of dataset %s: %s",
                                     self.namespace, claim, m.dataset.name, e.reason)
                    continue
                raise spawn_error(  # _start's clean-up releases the GPUs and restores traits
                    f"Dataset {m.dataset.name!r} cannot be mounted: its PersistentVolumeClaim "
                    f"{claim!r} does not exist in namespace {self.namespace!r}. Start without this "
                    f"dataset, or ask your hub admin to create the claim there.",
                    reason="dataset-claim-missing",
                ) from None
            except asyncio.TimeoutError:
                self.log.warning("Timed out checking claim %s/%s", self.namespace, claim)
                continue
            self._claims_seen[key] = now

    def _apply_choice(self, config: KubelabConfig, choice: Choice, user: UserInfo, team: str | None) -> None:
        kind_labels = objects.labels(user=user.name, team=team, kind="notebook")
        kind_labels.pop(objects.MANAGED_BY_LABEL)
        self.extra_labels = {**self.extra_labels, **kind_labels}
        self.extra_annotations = {**self.extra_annotations, objects.USER_ANNOTATION: user.name}
        volumes = list(self._sorted_dict_values(self.volumes))
        mounts = list(self._sorted_dict_values(self.volume_mounts))
        shm, shm_mount = objects.shm_volume(choice.profile.shm_size)
        volumes.append(shm)
        mounts.append(shm_mount)
        for m in choice.datasets:
            volume, mount = objects.dataset_volume(
                m.dataset, read_only=m.read_only, mount_path=m.mount_path, sub_path=m.sub_path,
                username=user.name,
            )
            volumes.append(volume)
            mounts.append(mount)
        config_path = None
        if self.manage_namespace_objects:
            # the user's view of the admin config (namespace_objects), for the notebook's limits
            volumes.append({"name": "kubelab-settings", "configMap": {
                "name": objects.notebook_config_map_name(user.name), "optional": True}})
            mounts.append({"name": "kubelab-settings", "mountPath": objects.NOTEBOOK_CONFIG_PATH,
                           "readOnly": True})
            config_path = f"{objects.NOTEBOOK_CONFIG_PATH}/{objects.NOTEBOOK_CONFIG_FILE}"
            self.service_account = self.notebook_service_account
            # the notebook submits jobs with this account's token
            self.automount_service_account_token = True
        env = dict(self.environment)
        env.update(self.notebook_env(choice, user, team, config_path=config_path).to_env())
        # KubeSpawner expands {username}-style fields in these; ours are literal
        self.volumes = [v if v in self._kubelab_pristine_list("volumes") else _literal(v) for v in volumes]
        self.volume_mounts = [m if m in self._kubelab_pristine_list("volume_mounts") else _literal(m) for m in mounts]
        self.environment = {k: v if k in self._kubelab_pristine["environment"] else _literal(v)  # type: ignore[index]
                            for k, v in env.items()}
        psc, csc = objects.restricted_security_context(config.pod_security)
        self.uid = config.pod_security.run_as_user
        self.gid = config.pod_security.run_as_group
        self.fs_gid = config.pod_security.fs_group
        if config.pod_security.level == "restricted":
            self.allow_privilege_escalation = False
            # kubelab's settings win over anything the admin set in these dicts: relaxing the
            # standard is pod_security.level's job, where it is visible
            self.pod_security_context = {**(self.pod_security_context or {}), **psc}
            self.container_security_context = {**(self.container_security_context or {}), **csc}
        else:
            self.pod_security_context = {**psc, **(self.pod_security_context or {})}
            self.container_security_context = {**csc, **(self.container_security_context or {})}

    def home_volume(self) -> tuple[str | None, str | None]:
        """(claim name, mount path) of the home volume: the volume of KubeSpawner's PVC
        (``{pvc_name}``, as hub_config/jupyterhub_config.py and Zero to JupyterHub declare it)
        and where it is mounted; (None, None) without one."""
        for v in self._sorted_dict_values(self.volumes):
            claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
            if claim in ("{pvc_name}", self.pvc_name):
                mount = next((m for m in self._sorted_dict_values(self.volume_mounts)
                              if m.get("name") == v.get("name") and not m.get("subPath")), None)
                return self.pvc_name, (mount or {}).get("mountPath")
        return None, None

    def notebook_env(self, choice: Choice, user: UserInfo, team: str | None, *,
                     config_path: str | None) -> NotebookEnv:
        """What this spawn tells the notebook side (docs/notebook-env.md)."""
        home_claim, home_mount = self.home_volume()
        return NotebookEnv(
            backend="kubernetes", user=user.name, groups=tuple(sorted(user.groups)), team=team,
            namespace=self.namespace,
            service_account=self.notebook_service_account if self.manage_namespace_objects
            else (self.service_account or None),
            profile=choice.profile.slug, image=choice.image, gpu_type=choice.gpu_type,
            gpus=choice.gpus,
            datasets=tuple(
                NotebookDataset.of(
                    m.dataset, mount_path=m.mount_path, read_only=m.read_only, sub_path=m.sub_path,
                    source=objects.expand_source(m.dataset.source, username=user.name)
                    .model_dump(mode="json", exclude_none=True),
                )
                for m in choice.datasets
            ),
            home_claim=home_claim, home_mount=home_mount, config_path=config_path,
        )

    # -- the namespace and its objects ----------------------------------------------------------

    #: (namespace, object kind/name) → fingerprint of what this process last wrote
    _ensured: dict[tuple[str, str], str] = {}
    #: what _ensure_namespace last ensured, to skip even building the objects
    _ensured_shapes: dict[Any, KubelabConfig] = {}

    def namespace_objects(self, config: KubelabConfig, user: UserInfo) -> list[dict[str, Any]]:
        """What kubelab keeps in the user's namespace (besides the namespace itself)."""
        namespace = self.namespace
        found = config.team_for(sorted(user.groups))
        who = objects.namespace_owner(config, username=user.name, groups=sorted(user.groups))
        team = who["team"]
        out: list[dict[str, Any]] = []
        if found is not None:
            shared = who["user"] is None
            quota = found[1].quota if shared or found[1].user_quota is None else found[1].user_quota
            rq = objects.make_resource_quota(
                quota, namespace=namespace,
                gpu_resources=[g.resource for g in config.gpu_types.values()], **who,
            )
            if rq is not None:
                out.append(rq)
                out.append(objects.make_limit_range(namespace=namespace, **who))
        out.append(objects.make_service_account(namespace=namespace, name=self.notebook_service_account, **who))
        out.append(objects.make_role(namespace=namespace, **who))
        out.append(objects.make_role_binding(namespace=namespace, service_account=self.notebook_service_account, **who))
        view = profiles.user_config_view(config, user, unusable_datasets=self.unusable_datasets(config))
        if view is not None:
            out.append(objects.make_notebook_config_map(
                dump_config(view), namespace=namespace, username=user.name, team=team))
        out.append(self.policy_params(view or config, user))  # the view: already filtered
        return out

    def policy_params(self, config: KubelabConfig, user: UserInfo) -> dict[str, Any]:
        """The ``kubelab-policy`` ConfigMap: what the admission policy (docs/security.md) lets
        pods in this namespace mount and run — the user's datasets and images, their home
        claims, and what the admin's own KubeSpawner settings add to notebook pods. *config*
        may be the admin's or the user's view of it: the params are the same."""
        homes = {self.pvc_name}
        for other in (getattr(self.user, "spawners", None) or {}).values():  # named servers
            if isinstance(getattr(other, "pvc_name", None), str):
                homes.add(other.pvc_name)
        home_claim, _ = self.home_volume()
        extra_volumes = [
            v for v in self._expand_all(list(self._sorted_dict_values(self._kubelab_pristine["volumes"]
                                                                        if self._kubelab_pristine else self.volumes)))
            if (v.get("persistentVolumeClaim") or {}).get("claimName") not in homes
        ]
        containers = (*self._sorted_dict_values(self.init_containers), *self._sorted_dict_values(self.extra_containers))
        extra_images = [c["image"] for c in containers
                        if isinstance(c, Mapping) and c.get("image")]
        return admission.policy_params(
            config, username=user.name, groups=sorted(user.groups),
            home_claim=sorted(homes) if home_claim else None, namespace=self.namespace,
            extra_images=extra_images, extra_volumes=extra_volumes,
        )

    async def _ensure_namespace(self) -> None:
        config = self.kubelab
        user = self.user_info()
        # what shapes the objects: the config, the user, their groups, the namespace, the cluster
        shape = (self.api.api_client.configuration.host, self.namespace, id(config), user,
                 self.manage_namespace_objects, self.notebook_service_account)
        if self._ensured_shapes.get(shape) is config:
            return
        ns = objects.make_namespace(
            self.namespace, pod_security=config.pod_security,
            **objects.namespace_owner(config, username=user.name, groups=sorted(user.groups)),
        )
        wanted = [ns, *(self.namespace_objects(config, user) if self.manage_namespace_objects else [])]
        todo = [o for o in wanted if self._ensured.get(self._key(o)) != objects.fingerprint(o)]
        for obj in todo:
            await self._apply_object(obj)
            self._ensured[self._key(obj)] = objects.fingerprint(obj)
        self._ensured_shapes[shape] = config

    def forget_namespace(self) -> None:
        """Make the next spawn re-check this namespace's objects."""
        for shape in [k for k in self._ensured_shapes if k[1] == self.namespace]:
            self._ensured_shapes.pop(shape, None)
        for key in [k for k in self._ensured if k[0].endswith("/" + self.namespace)]:
            self._ensured.pop(key, None)

    def _key(self, obj: Mapping[str, Any]) -> tuple[str, str]:
        meta = obj["metadata"]
        # the API server too: one hub process talks to one cluster, tests to many
        host = self.api.api_client.configuration.host
        return (f"{host}/{meta.get('namespace', '')}", f"{obj['kind']}/{meta['name']}")

    async def _apply_object(self, obj: dict[str, Any]) -> None:
        """Create *obj*, or replace it when it exists (so quota or role changes take effect)."""
        kind, meta = obj["kind"], obj["metadata"]
        ns, name = meta.get("namespace"), meta["name"]
        if kind == "Namespace":
            core = self.api
            create, replace = core.create_namespace, None
            args: tuple[Any, ...] = ()
        else:
            method = {"ResourceQuota": "resource_quota", "LimitRange": "limit_range",
                      "ServiceAccount": "service_account", "ConfigMap": "config_map",
                      "Role": "role", "RoleBinding": "role_binding"}[kind]
            api = self.api if kind not in ("Role", "RoleBinding") else _rbac_api()
            create = getattr(api, f"create_namespaced_{method}")
            replace = getattr(api, f"replace_namespaced_{method}")
            args = (ns,)
        what = f"the {kind} {name!r}" + (f" in namespace {ns!r}" if ns else "")
        try:
            await self._api_call(what, create, *args, obj)
        except ApiException as e:
            if e.status != 409:
                raise self._api_failure(what, e) from None
            if replace is None or kind == "ServiceAccount":
                return  # exists; a namespace's labels are the admin's to change after creation
            try:
                if name == admission.POLICY_CONFIG_MAP and objects.USER_LABEL not in meta.get("labels", {}):
                    # a team's shared namespace: every member's grants, not only the last spawner's
                    existing = await self._api_call(what, api.read_namespaced_config_map, name, ns)
                    obj = admission.merge_policy_params(
                        obj, {"data": dict(getattr(existing, "data", None) or {})})
                await self._api_call(what, replace, name, ns, obj)
            except ApiException as e:
                raise self._api_failure(what, e) from None

    async def _api_call(self, what: str, fn: Any, *args: Any) -> Any:
        """``await fn(*args)`` with KubeSpawner's per-request timeout, retried with exponential
        backoff on transient answers (429, 5xx), timeouts and dropped connections for up to
        ``k8s_api_request_retry_timeout`` seconds; then a 503 naming *what* (never a traceback)."""
        deadline = time.monotonic() + self.k8s_api_request_retry_timeout
        delay = 0.1
        while True:
            try:
                return await asyncio.wait_for(fn(*args), self.k8s_api_request_timeout)
            except ApiException as e:
                if e.status not in objects.RETRY_STATUSES:
                    raise
                problem = f"the Kubernetes API answered {e.status} {e.reason or ''}".rstrip()
            except (asyncio.TimeoutError, OSError) as e:  # aiohttp's connection errors are OSErrors
                problem = f"the Kubernetes API did not answer ({type(e).__name__})"
            if time.monotonic() + delay > deadline:
                self.log.error("Giving up on %s for %s: %s", what, self._log_name, problem)
                raise spawn_error(
                    f"Could not set up your server: {problem} when writing {what}, for "
                    f"{self.k8s_api_request_retry_timeout:g} s. Try again in a minute; if it keeps "
                    "happening, tell your hub admin.", reason="kubernetes-api", status=503)
            self.log.warning("Retrying %s for %s in %.1f s: %s", what, self._log_name, delay, problem)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _api_failure(self, what: str, e: ApiException) -> web.HTTPError:
        """An API refusal that retrying cannot fix, as a message for the user and the admin."""
        self.log.error("Could not write %s for %s: %s %s", what, self._log_name, e.status, e.reason)
        if e.status == 403:
            hint = ("the hub's service account may not do this: give it the ClusterRole in "
                    "hub_config/hub-rbac.yaml (docs/spawner.md, Hub permissions)")
        else:
            try:
                hint = json.loads(e.body or "{}").get("message") or e.reason
            except (ValueError, AttributeError):
                hint = e.reason
        return spawn_error(
            f"Could not set up your server: the Kubernetes API refused {what} ({e.status}: {hint}). "
            "Please tell your hub admin.", reason="kubernetes-api", status=500)

    # -- the pod: checked against the Pod Security level before it is sent ---------------------

    async def get_pod_manifest(self) -> Any:
        """KubeSpawner's pod, refused (HTTP 500, with every reason) when it breaks the Pod
        Security level of ``kubelab.yaml``: something the hub admin added outside kubelab (an
        init container, ``extra_pod_config``, a Helm chart default) would otherwise be refused
        by the namespace's admission with a terse message, or, in a namespace made without
        kubelab's labels, run below the level."""
        pod = await super().get_pod_manifest()
        level = self.kubelab.pod_security.level
        found = violations(self.api.api_client.sanitize_for_serialization(pod), level)
        if found:
            self.log.error("Pod of %s breaks Pod Security %r: %s", self._log_name, level, "; ".join(found))
            raise spawn_error(
                f"The notebook pod would break the {level!r} Pod Security standard the admin "
                f"config asks for: {'; '.join(found)}. This comes from the hub's settings, not your "
                "choices: please tell your hub admin (docs/spawner.md, Pod Security).",
                reason="pod-security", status=500,
            )
        return pod

    # -- starting, failing fast on unschedulable GPU pods --------------------------------------

    async def _start(self) -> Any:
        self._kubelab_failure = None
        main = asyncio.ensure_future(super()._start())
        watchdog = asyncio.ensure_future(self._watch_gpu_scheduling(main))
        try:
            return await main
        except asyncio.CancelledError:
            self._release_gpus()
            if self._kubelab_failure is not None:
                raise self._kubelab_failure from None
            raise
        except BaseException as e:
            # keep namespace/pod name: JupyterHub's cleanup (stop) still needs them
            self._release_gpus()
            self.restore_traits()
            if isinstance(e, ApiException) and e.status == 404:
                # the namespace was deleted behind our back: re-ensure it next time
                self.forget_namespace()
            raise
        finally:
            watchdog.cancel()

    def _unschedulable(self, pod: Mapping[str, Any]) -> str | None:
        """The scheduler's message if *pod* is Pending and unschedulable, else None."""
        status = pod.get("status") or {}
        if status.get("phase") not in (None, "Pending") or (pod.get("spec") or {}).get("nodeName"):
            return None
        for c in status.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
                return c.get("message") or "unschedulable"
        for event in reversed(self.events):
            if event.get("reason") == "FailedScheduling":
                return event.get("message") or "unschedulable"
        return None

    async def _watch_gpu_scheduling(self, main: asyncio.Future[Any]) -> None:
        """Cancel *main* and delete the pod when a GPU pod stays unschedulable too long."""
        timeout = self.gpu_unschedulable_timeout
        if timeout <= 0:
            return
        first_seen: float | None = None
        tick = min(0.25, timeout / 4)
        while not main.done():
            await asyncio.sleep(tick)
            choice = self._kubelab_choice
            if choice is None or not choice.gpus or self.pod_reflector is None:
                continue
            pod = self.pod_reflector.pods.get(f"{self.namespace}/{self.pod_name}")
            if pod is None:
                continue
            if first_seen is None:
                first_seen = time.monotonic()
            reason = self._unschedulable(pod)
            if reason is None or time.monotonic() - first_seen < timeout:
                continue
            message = await self.gpu_failure_message(choice, reason)
            self.log.warning("Giving up on %s: %s", self._log_name, reason)
            # delete the pod before cancelling the start: cancelling first would cancel this
            # task too (the start's clean-up stops the watchdog)
            try:
                await self.stop(now=True)
            except Exception:
                self.log.exception("Could not delete the unschedulable pod of %s", self._log_name)
            self.restore_traits()
            self._kubelab_failure = spawn_error(message, reason="gpu-unschedulable", status=503)
            main.cancel()
            return

    async def gpu_failure_message(self, choice: Choice, reason: str) -> str:
        gpu_name = choice.gpu.display_name if choice.gpu else (choice.gpu_type or "GPU")
        availability = await self.availability(wait=0)
        a = availability.gpu(choice.gpu_type or "")
        if a is None:
            figures = "how many are free is not known"
        elif a.total == 0:
            figures = f"the cluster has no {gpu_name} now"
        else:
            figures = f"{a.free} of {a.total} free, at most {a.largest_free} on one node"
        tips = []
        if a is not None and a.largest_free and a.largest_free < choice.gpus:
            tips.append(f"ask for {a.largest_free} GPU{'s' if a.largest_free > 1 else ''}")
        elif choice.profile.gpu and min(choice.profile.gpu.counts) < choice.gpus:
            tips.append("ask for fewer GPUs")
        for p in profiles.allowed_profiles(self.kubelab, self.user_info()):
            if p.gpu and p.gpu.type != choice.gpu_type:
                other = availability.gpu(p.gpu.type)
                if other is not None and other.fits(min(p.gpu.counts)):
                    tips.append(f"choose {p.display_name} ({other.free} free)")
        tips.append("try again later")
        return (
            f"No node could take {choice.gpus} × {gpu_name} within {self.gpu_unschedulable_timeout:g} s "
            f"({figures}). Try to: {'; '.join(tips)}. The waiting server was removed. "
            f"Scheduler: {reason}"
        )

    # -- state --------------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self._kubelab_choice is not None:
            state["kubelab_choice"] = self._kubelab_choice.user_options()
        return state


def _literal(value: Any) -> Any:
    """*value* with ``{``/``}`` doubled in every string, so KubeSpawner's ``{username}``
    expansion leaves it as it is."""
    if isinstance(value, str):
        return value.replace("{", "{{").replace("}", "}}")
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal(v) for v in value]
    return value


def _rbac_api() -> Any:
    from kubespawner.clients import shared_client

    return shared_client("RbacAuthorizationV1Api")


async def _profile_list(spawner: ProfileSpawner) -> list[dict[str, Any]]:
    return profiles.kubespawner_profile_list(spawner.kubelab, spawner.user_info())


async def _options_form(spawner: ProfileSpawner) -> str:
    availability = await spawner.availability()
    return profiles.render_form(
        spawner.kubelab, spawner.user_info(), availability,
        user_options=spawner.user_options or None,
        refuse_unavailable=spawner.refuse_unavailable_gpus,
    )


__all__ = ["ClusterState", "GpuPodReflector", "NodeReflector", "ProfileSpawner", "spawn_error"]
