"""Which resources the test server serves, and the discovery documents that describe them.

Built-in resources are a fixed table. Custom resources appear when a ``CustomResourceDefinition`` is
created (through the API or :meth:`KubeCluster.register_crd`) and disappear with it, and discovery
(``/api``, ``/apis``, ``/apis/GROUP``, ``/apis/GROUP/VERSION``) is computed from the table each
time, so code that detects Kubeflow or KServe by discovery sees exactly what a test registered.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ResourceType", "Registry", "version_priority", "BUILTIN_RESOURCES"]

STANDARD_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One served ``group/version/plural`` and how it behaves."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = STANDARD_VERBS
    categories: tuple[str, ...] = ()
    #: True for custom resources: JSON/merge patches only, PUT needs a resourceVersion
    custom: bool = False
    singular: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> tuple[str, str]:
        """The storage identity: versions of one group/plural share their objects."""
        return (self.group, self.plural)

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def qualified(self) -> str:
        """``pods`` or ``jobs.batch``, as in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


#: a resource of an API group: ``(group, version, plural, kind, namespaced, short names,
#: subresources, **more fields)``
_api = ResourceType
#: a core (``v1``) resource: the same without the group and version
_core = functools.partial(ResourceType, "", "v1")


BUILTIN_RESOURCES: tuple[ResourceType, ...] = (
    _core(
        "namespaces",
        "Namespace",
        False,
        ("ns",),
        ("status", "finalize"),
        verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
    ),
    _core("pods", "Pod", True, ("po",), ("status", "log", "eviction"), categories=("all",)),
    _core(
        "services",
        "Service",
        True,
        ("svc",),
        ("status",),
        categories=("all",),
        verbs=("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"),
    ),
    _core("endpoints", "Endpoints", True, ("ep",)),
    _core("persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), ("status",)),
    _core("persistentvolumes", "PersistentVolume", False, ("pv",), ("status",)),
    _core("secrets", "Secret"),
    _core("configmaps", "ConfigMap", True, ("cm",)),
    _core("events", "Event", True, ("ev",)),
    _core("nodes", "Node", False, ("no",), ("status",)),
    _core("resourcequotas", "ResourceQuota", True, ("quota",), ("status",)),
    _core("limitranges", "LimitRange", True, ("limits",)),
    _core("serviceaccounts", "ServiceAccount", True, ("sa",)),
    _api("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _api("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _api("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _api("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _api("batch", "v1", "jobs", "Job", True, (), ("status",), categories=("all",)),
    _api("batch", "v1", "cronjobs", "CronJob", True, ("cj",), ("status",), categories=("all",)),
    _api(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        True,
        ("deploy",),
        ("status", "scale"),
        categories=("all",),
    ),
    _api(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        True,
        ("rs",),
        ("status", "scale"),
        categories=("all",),
    ),
    _api(
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        True,
        ("sts",),
        ("status", "scale"),
        categories=("all",),
    ),
    _api("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), ("status",), categories=("all",)),
    _api("networking.k8s.io", "v1", "ingresses", "Ingress", True, ("ing",), ("status",)),
    _api("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",)),
    _api(
        "policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ("pdb",), ("status",)
    ),
    _api("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, ("sc",)),
    _api("events.k8s.io", "v1", "events", "Event", True, ("ev",)),
    _api("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False, ("pc",)),
    _api(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        ("crd", "crds"),
        ("status",),
    ),
    _api(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        False,
        verbs=("create",),
    ),
)

_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key of Kubernetes' version priority (v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > foo)."""
    match = _VERSION.match(version)
    if not match:
        return (3, 0, 0, version)
    major, stage, minor = match.groups()
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -int(major), -int(minor or 0), "")


@dataclass
class Registry:
    """The served resource types, keyed by ``(group, version, plural)``."""

    types: dict[tuple[str, str, str], ResourceType] = field(default_factory=dict)
    #: CRD name -> the types it registered
    crds: dict[str, list[ResourceType]] = field(default_factory=dict)

    @classmethod
    def with_builtins(cls) -> Registry:
        registry = cls()
        for rt in BUILTIN_RESOURCES:
            registry.types[(rt.group, rt.version, rt.plural)] = rt
        return registry

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.types.get((group, version, plural))

    def for_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for rt in self.types.values():
            if rt.group == group and rt.version == version and rt.kind == kind:
                return rt
        return None

    def preferred(self, group: str, plural: str) -> ResourceType | None:
        """The preferred version's type of a group/plural (for storage-level operations)."""
        candidates = [rt for rt in self.types.values() if rt.group_resource == (group, plural)]
        candidates.sort(key=lambda rt: version_priority(rt.version))
        return candidates[0] if candidates else None

    def all_group_resources(self) -> list[ResourceType]:
        """One (preferred) type per stored group/plural."""
        seen: dict[tuple[str, str], ResourceType] = {}
        for rt in sorted(self.types.values(), key=lambda rt: version_priority(rt.version)):
            seen.setdefault(rt.group_resource, rt)
        return list(seen.values())

    # --- custom resources -------------------------------------------------------------------------

    def add_crd(self, crd: Mapping[str, Any]) -> list[ResourceType]:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        types = []
        for version in spec.get("versions") or []:
            if not version.get("served", True):
                continue
            subresources = tuple(sorted((version.get("subresources") or {}).keys()))
            types.append(
                ResourceType(
                    group=spec["group"],
                    version=version["name"],
                    plural=names["plural"],
                    kind=names["kind"],
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    short_names=tuple(names.get("shortNames") or ()),
                    subresources=subresources,
                    categories=tuple(names.get("categories") or ()),
                    custom=True,
                    singular=names.get("singular") or names["kind"].lower(),
                )
            )
        self.remove_crd(crd["metadata"]["name"])
        for rt in types:
            self.types[(rt.group, rt.version, rt.plural)] = rt
        self.crds[crd["metadata"]["name"]] = types
        return types

    def remove_crd(self, name: str) -> list[ResourceType]:
        types = self.crds.pop(name, [])
        for rt in types:
            self.types.pop((rt.group, rt.version, rt.plural), None)
        return types

    # --- discovery documents ----------------------------------------------------------------------

    def _versions_of(self, group: str) -> list[str]:
        versions = {rt.version for rt in self.types.values() if rt.group == group}
        return sorted(versions, key=version_priority)

    def groups(self) -> list[str]:
        """Groups in the order a real server lists them: built-ins first, then the rest by name."""
        builtin_order: list[str] = []
        for rt in BUILTIN_RESOURCES:
            if rt.group and rt.group not in builtin_order:
                builtin_order.append(rt.group)
        present = {rt.group for rt in self.types.values() if rt.group}
        return [g for g in builtin_order if g in present] + sorted(present - set(builtin_order))

    def api_versions(self) -> dict[str, Any]:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}
            ],
        }

    def api_group(self, group: str) -> dict[str, Any] | None:
        versions = self._versions_of(group)
        if not group or not versions:
            return None
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
        }

    def api_group_list(self) -> dict[str, Any]:
        groups = [self.api_group(g) for g in self.groups()]
        for g in groups:
            assert g is not None
            g.pop("kind")
            g.pop("apiVersion")
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def api_resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        types = [rt for rt in self.types.values() if rt.group == group and rt.version == version]
        if not types:
            return None
        resources: list[dict[str, Any]] = []
        for rt in sorted(types, key=lambda rt: rt.plural):
            entry: dict[str, Any] = {
                "name": rt.plural,
                "singularName": rt.singular or rt.kind.lower(),
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": list(rt.verbs),
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if rt.categories:
                entry["categories"] = list(rt.categories)
            resources.append(entry)
            for sub in rt.subresources:
                sub_entry: dict[str, Any] = {
                    "name": f"{rt.plural}/{sub}",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
                if sub == "log":
                    sub_entry["verbs"] = ["get"]
                elif sub == "scale":
                    sub_entry.update(group="autoscaling", version="v1", kind="Scale")
                elif sub == "finalize":
                    sub_entry["verbs"] = ["update"]
                resources.append(sub_entry)
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }


def kinds_in(types: Iterable[ResourceType]) -> set[str]:
    return {rt.kind for rt in types}
