"""ResourceQuota: admission that refuses what would exceed ``spec.hard``, and ``status.used``.

Tracked: ``pods``, ``count/<resource>[.<group>]`` and the legacy object counts (``services``,
``secrets``, ``configmaps``, ``persistentvolumeclaims``...), ``requests.cpu``/``cpu``,
``requests.memory``/``memory``, ``limits.cpu``, ``limits.memory``, ``requests.<extended>`` such as
``requests.nvidia.com/gpu``, ``requests.storage``. Pods in a terminal phase do not count. Refusals
read like the real ones::

    pods "x" is forbidden: exceeded quota: team, requested: requests.nvidia.com/gpu=2,
    used: requests.nvidia.com/gpu=3, limited: requests.nvidia.com/gpu=4
    pods "x" is forbidden: failed quota: team: must specify limits.cpu for: notebook

Not emulated: quota scopes and scope selectors, LimitRange defaults (LimitRanges are stored only).
"""

from __future__ import annotations

import copy
from fractions import Fraction
from typing import Any

from .controller import Controller
from .errors import ApiError
from .quantity import format_quantity, parse_quantity
from .resources import ResourceType
from .scheduler import is_terminal, pod_limits, pod_requests
from .store import Admission, WatchEvent

__all__ = ["QuotaController", "usage_of"]

_LEGACY_COUNTS = {
    ("", "pods"): "pods",
    ("", "services"): "services",
    ("", "secrets"): "secrets",
    ("", "configmaps"): "configmaps",
    ("", "persistentvolumeclaims"): "persistentvolumeclaims",
    ("", "resourcequotas"): "resourcequotas",
    ("", "replicationcontrollers"): "replicationcontrollers",
}
_MUST_SPECIFY = {
    "requests.cpu": ("requests", "cpu"),
    "cpu": ("requests", "cpu"),
    "requests.memory": ("requests", "memory"),
    "memory": ("requests", "memory"),
    "limits.cpu": ("limits", "cpu"),
    "limits.memory": ("limits", "memory"),
}


def usage_of(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Fraction]:
    """What one object adds to a namespace's quota usage."""
    usage: dict[str, Fraction] = {}
    group, plural = rt.group_resource
    if group_resource_is_pod := (group, plural) == ("", "pods"):
        if is_terminal(obj):
            return {}
    usage[f"count/{plural}" + (f".{group}" if group else "")] = Fraction(1)
    if (group, plural) in _LEGACY_COUNTS:
        usage[_LEGACY_COUNTS[(group, plural)]] = Fraction(1)
    if group_resource_is_pod:
        for name, value in pod_requests(obj).items():
            usage[f"requests.{name}"] = value
            if name in ("cpu", "memory", "ephemeral-storage"):
                usage[name] = value
        for name, value in pod_limits(obj).items():
            usage[f"limits.{name}"] = value
    elif (group, plural) == ("", "persistentvolumeclaims"):
        storage = (((obj.get("spec") or {}).get("resources") or {}).get("requests") or {}).get(
            "storage"
        )
        usage["requests.storage"] = parse_quantity(storage)
    elif (group, plural) == ("", "services"):
        service_type = (obj.get("spec") or {}).get("type")
        if service_type == "LoadBalancer":
            usage["services.loadbalancers"] = Fraction(1)
        if service_type in ("LoadBalancer", "NodePort"):
            usage["services.nodeports"] = Fraction(len((obj.get("spec") or {}).get("ports") or []))
    return usage


def _listing(values: dict[str, Fraction], keys: list[str]) -> str:
    """``requests.cpu=1500m,requests.memory=1Gi``, as in the real refusal message."""
    return ",".join(f"{key}={format_quantity(values.get(key, Fraction(0)), key)}" for key in keys)


class QuotaController(Controller):
    name = "resourcequota-controller"

    def on_event(self, event: WatchEvent) -> None:
        if event.namespace and self.store.list(self.emulator.rt("resourcequotas"), event.namespace):
            self.kick()

    def namespace_usage(self, namespace: str) -> dict[str, Fraction]:
        total: dict[str, Fraction] = {}
        for group_resource, table in list(self.store.objects.items()):
            rt = self.emulator.registry.preferred(*group_resource)
            if rt is None or not rt.namespaced:
                continue
            for (ns, _), obj in table.items():
                if ns != namespace:
                    continue
                for key, value in usage_of(rt, obj).items():
                    total[key] = total.get(key, Fraction(0)) + value
        return total

    def reconcile(self) -> None:
        quota_rt = self.emulator.rt("resourcequotas")
        usage_cache: dict[str, dict[str, Fraction]] = {}
        for quota in self.store.list(quota_rt):
            namespace = quota["metadata"]["namespace"]
            if namespace not in usage_cache:
                usage_cache[namespace] = self.namespace_usage(namespace)
            usage = usage_cache[namespace]
            hard = (quota.get("spec") or {}).get("hard") or {}
            used = {key: format_quantity(usage.get(key, Fraction(0)), key) for key in hard}
            status = {"hard": dict(hard), "used": used}
            if status != quota.get("status"):
                new = copy.deepcopy(quota)
                new["status"] = status
                self.store.write(quota_rt, quota, new)

    def admit(self, request: Admission) -> None:
        """The admission plugin: refuse a create that would exceed a quota of its namespace."""
        if request.operation != "CREATE" or not request.rt.namespaced:
            return
        namespace = request.obj["metadata"].get("namespace")
        quotas = self.store.list(self.emulator.rt("resourcequotas"), namespace)
        if not quotas:
            return
        name = request.obj["metadata"]["name"]
        rt = request.rt
        delta = usage_of(rt, request.obj)
        usage: dict[str, Fraction] | None = None
        for quota in sorted(quotas, key=lambda q: q["metadata"]["name"]):
            hard = {
                key: parse_quantity(value)
                for key, value in ((quota.get("spec") or {}).get("hard") or {}).items()
            }
            if rt.group_resource == ("", "pods"):
                missing = self._unspecified(request.obj, hard)
                if missing:
                    raise ApiError.forbidden(
                        rt.plural,
                        name,
                        f"failed quota: {quota['metadata']['name']}: must specify {missing}",
                        rt.group,
                    )
            if usage is None:
                usage = self.namespace_usage(namespace)
            exceeded = sorted(
                key
                for key in hard
                if delta.get(key, Fraction(0)) > 0
                and usage.get(key, Fraction(0)) + delta[key] > hard[key]
            )
            if exceeded:
                raise ApiError.forbidden(
                    rt.plural,
                    name,
                    f"exceeded quota: {quota['metadata']['name']}, "
                    f"requested: {_listing(delta, exceeded)}, used: {_listing(usage, exceeded)}, "
                    f"limited: {_listing(hard, exceeded)}",
                    rt.group,
                )

    @staticmethod
    def _unspecified(pod: dict[str, Any], hard: dict[str, Fraction]) -> str:
        problems: list[str] = []
        containers = (pod.get("spec") or {}).get("containers") or []
        for key in sorted(hard):
            if key not in _MUST_SPECIFY:
                continue
            which, resource = _MUST_SPECIFY[key]
            lacking = [
                c["name"]
                for c in containers
                if resource not in ((c.get("resources") or {}).get(which) or {})
            ]
            if lacking:
                problems.append(f"{key} for: {','.join(lacking)}")
        return "; ".join(problems)
