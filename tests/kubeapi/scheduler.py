"""The scheduler: binds pending pods to nodes that have room, or says why none has.

Filters, in the real scheduler's order, stopping at the first that fails for a node: node
unschedulable, untolerated ``NoSchedule``/``NoExecute`` taints, ``nodeSelector`` and required node
affinity, then resources (pod count, cpu, memory, and extended resources such as
``nvidia.com/gpu``; requests come from defaulting, where limits imply requests). A pod no node fits
gets ``PodScheduled=False`` (reason ``Unschedulable``) and a ``FailedScheduling`` warning worded as
the real one (``0/3 nodes are available: 1 Insufficient cpu, 2 Insufficient nvidia.com/gpu.``).
Every change to pods or nodes re-runs the pass, so adding a GPU node or deleting a pod lets waiting
pods in. Not emulated: preemption, scoring plugins beyond "least allocated", pod (anti-)affinity and
topology spread constraints.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from .controller import Controller
from .meta import rfc3339
from .quantity import parse_quantity
from .selectors import match_labels, requirements_from_expressions
from .store import WatchEvent

__all__ = ["Scheduler", "pod_requests", "pod_limits", "is_terminal", "set_condition"]


def _container_values(pod: Mapping[str, Any], which: str) -> dict[str, Fraction]:
    spec = pod.get("spec") or {}
    total: dict[str, Fraction] = {}
    for container in spec.get("containers") or []:
        for name, value in ((container.get("resources") or {}).get(which) or {}).items():
            total[name] = total.get(name, Fraction(0)) + parse_quantity(value)
    for container in spec.get("initContainers") or []:
        for name, value in ((container.get("resources") or {}).get(which) or {}).items():
            total[name] = max(total.get(name, Fraction(0)), parse_quantity(value))
    for name, value in (spec.get("overhead") or {}).items():
        total[name] = total.get(name, Fraction(0)) + parse_quantity(value)
    return total


_REQUESTS_CACHE: dict[str, dict[str, Fraction]] = {}


def pod_requests(pod: Mapping[str, Any]) -> dict[str, Fraction]:
    """Effective requests of a pod: max(sum of containers, largest init container) + overhead.

    Cached by uid: a pod's resources cannot change after creation (in-place resize is not
    emulated), and the scheduler and quota ask often.
    """
    uid = (pod.get("metadata") or {}).get("uid")
    if uid is None:
        return _container_values(pod, "requests")
    cached = _REQUESTS_CACHE.get(uid)
    if cached is None:
        if len(_REQUESTS_CACHE) > 100_000:
            _REQUESTS_CACHE.clear()
        cached = _REQUESTS_CACHE[uid] = _container_values(pod, "requests")
    return cached


def pod_limits(pod: Mapping[str, Any]) -> dict[str, Fraction]:
    return _container_values(pod, "limits")


def is_terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def set_condition(
    status: dict[str, Any],
    condition_type: str,
    value: str,
    reason: str | None = None,
    message: str | None = None,
) -> None:
    """Set a condition, keeping lastTransitionTime when the status does not change."""
    conditions = status.setdefault("conditions", [])
    for condition in conditions:
        if condition["type"] == condition_type:
            if condition.get("status") != value:
                condition["lastTransitionTime"] = rfc3339()
            condition["status"] = value
            for key, text in (("reason", reason), ("message", message)):
                if text is None:
                    condition.pop(key, None)
                else:
                    condition[key] = text
            return
    condition: dict[str, Any] = {
        "type": condition_type,
        "status": value,
        "lastProbeTime": None,
        "lastTransitionTime": rfc3339(),
    }
    if reason is not None:
        condition["reason"] = reason
    if message is not None:
        condition["message"] = message
    conditions.append(condition)


def _tolerates(tolerations: list[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for toleration in tolerations:
        if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
            continue
        operator = toleration.get("operator", "Equal")
        key = toleration.get("key")
        if operator == "Exists":
            if not key or key == taint.get("key"):
                return True
        elif key == taint.get("key") and (toleration.get("value") or "") == (
            taint.get("value") or ""
        ):
            return True
    return False


def _node_selector_term_matches(term: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    requirements = requirements_from_expressions(term.get("matchExpressions"))
    if not match_labels(requirements, labels):
        return False
    for expression in term.get("matchFields") or []:
        if expression.get("key") == "metadata.name":
            name = node["metadata"]["name"]
            inside = name in (expression.get("values") or [])
            if (expression["operator"] == "In") != inside:
                return False
    return bool(term.get("matchExpressions") or term.get("matchFields"))


def _affinity_matches(pod: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if terms and not any(_node_selector_term_matches(term, node) for term in terms):
        return False
    return True


class Scheduler(Controller):
    """Keeps per-node usage and the pending pods up to date from store events (so a pass costs
    what is pending, not what exists), and places pending pods on each pass."""

    name = "scheduler"
    watches = (("", "pods"), ("", "nodes"))

    def __init__(self, emulator: Any) -> None:
        super().__init__(emulator)
        #: node name -> resource -> requested by the non-terminal pods bound to it
        self.usage: dict[str, dict[str, Fraction]] = {}
        #: pod uid -> (node, requests incl. "pods": 1) it contributes to ``usage``
        self._contributions: dict[str, tuple[str, dict[str, Fraction]]] = {}
        #: pod uid -> (namespace, name) of pods waiting for a node
        self.pending: dict[str, tuple[str, str]] = {}

    def reset(self) -> None:
        super().reset()
        self.usage.clear()
        self._contributions.clear()
        self.pending.clear()

    def on_event(self, event: WatchEvent) -> None:
        if event.group_resource == ("", "nodes"):
            if self.pending:
                self.kick()
            return
        if event.group_resource != ("", "pods"):
            return
        pod = event.obj
        uid = pod["metadata"]["uid"]
        previous = self._contributions.pop(uid, None)
        if previous is not None:
            node_usage = self.usage.setdefault(previous[0], {})
            for resource, value in previous[1].items():
                node_usage[resource] = node_usage.get(resource, Fraction(0)) - value
        spec = pod.get("spec") or {}
        alive = event.type != "DELETED"
        if alive and spec.get("nodeName") and not is_terminal(pod):
            requests = {**pod_requests(pod), "pods": Fraction(1)}
            node_usage = self.usage.setdefault(spec["nodeName"], {})
            for resource, value in requests.items():
                node_usage[resource] = node_usage.get(resource, Fraction(0)) + value
            self._contributions[uid] = (spec["nodeName"], requests)
        waiting = (
            alive
            and not spec.get("nodeName")
            and spec.get("schedulerName", "default-scheduler") == "default-scheduler"
            and not pod["metadata"].get("deletionTimestamp")
            and (pod.get("status") or {}).get("phase") == "Pending"
        )
        if waiting:
            if uid not in self.pending:
                self.pending[uid] = (pod["metadata"]["namespace"], pod["metadata"]["name"])
                self.kick()
        else:
            self.pending.pop(uid, None)
            if previous is not None and self.pending:
                self.kick()  # resources were freed (or moved): waiting pods may fit now

    def reconcile(self) -> None:
        if not self.pending:
            return
        pods_rt = self.emulator.rt("pods")
        nodes = self.store.list(self.emulator.rt("nodes"))
        pending = []
        for namespace, name in list(self.pending.values()):
            pod = self.store.get(pods_rt, namespace, name)
            if pod is not None:
                pending.append(pod)
        pending.sort(
            key=lambda p: (
                -int((p.get("spec") or {}).get("priority") or 0),
                int(p["metadata"]["resourceVersion"]),
            )
        )
        for pod in pending:
            node, message = self._place(pod, nodes, self.usage)
            if node is not None:
                self._bind(pod, node)  # its event updates self.usage before the next pod
            else:
                self._unschedulable(pod, message)

    def _place(
        self, pod: dict[str, Any], nodes: list[dict[str, Any]], used: dict[str, dict[str, Fraction]]
    ) -> tuple[dict[str, Any] | None, str]:
        reasons: Counter[str] = Counter()
        feasible: list[tuple[Fraction, str, dict[str, Any]]] = []
        requests = pod_requests(pod)
        tolerations = (pod.get("spec") or {}).get("tolerations") or []
        for node in nodes:
            spec = node.get("spec") or {}
            if spec.get("unschedulable") and not _tolerates(
                tolerations, {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
            ):
                reasons["node(s) were unschedulable"] += 1
                continue
            untolerated = [
                t
                for t in spec.get("taints") or []
                if t.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(tolerations, t)
            ]
            if untolerated:
                taint = untolerated[0]
                reasons[
                    f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
                ] += 1
                continue
            if not _affinity_matches(pod, node):
                reasons["node(s) didn't match Pod's node affinity/selector"] += 1
                continue
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            usage = used.get(node["metadata"]["name"], {})
            short = []
            if usage.get("pods", 0) + 1 > parse_quantity(allocatable.get("pods", "110")):
                short.append("Too many pods")
            for name, value in sorted(requests.items()):
                if value <= 0:
                    continue
                free = parse_quantity(allocatable.get(name, "0")) - usage.get(name, Fraction(0))
                if value > free:
                    short.append(f"Insufficient {name}")
            if short:
                for reason in short:
                    reasons[reason] += 1
                continue
            cpu = parse_quantity(allocatable.get("cpu", "1")) or Fraction(1)
            score = (usage.get("cpu", Fraction(0)) + requests.get("cpu", Fraction(0))) / cpu
            feasible.append((score, node["metadata"]["name"], node))
        if feasible:
            feasible.sort(key=lambda item: (item[0], item[1]))
            return feasible[0][2], ""
        if not nodes:
            return None, "no nodes available to schedule pods"
        parts = sorted(f"{count} {reason}" for reason, count in reasons.items())
        return None, f"0/{len(nodes)} nodes are available: {', '.join(parts)}."

    def _bind(self, pod: dict[str, Any], node: dict[str, Any]) -> None:
        new = copy.deepcopy(pod)
        node_name = node["metadata"]["name"]
        new["spec"]["nodeName"] = node_name
        set_condition(new.setdefault("status", {}), "PodScheduled", "True")
        stored = self.store.write(self.emulator.rt("pods"), pod, new)
        meta = pod["metadata"]
        self.emulator.events.record(
            stored,
            "Normal",
            "Scheduled",
            f"Successfully assigned {meta['namespace']}/{meta['name']} to {node_name}",
            component="default-scheduler",
        )

    def _unschedulable(self, pod: dict[str, Any], message: str) -> None:
        status = pod.get("status") or {}
        for condition in status.get("conditions") or []:
            if (
                condition["type"] == "PodScheduled"
                and condition.get("message") == message
                and condition.get("status") == "False"
            ):
                return  # already said; do not write (or spam events) again
        new = copy.deepcopy(pod)
        set_condition(
            new.setdefault("status", {}), "PodScheduled", "False", "Unschedulable", message
        )
        stored = self.store.write(self.emulator.rt("pods"), pod, new)
        self.emulator.events.record(
            stored, "Warning", "FailedScheduling", message, component="default-scheduler"
        )
