"""Minimal Deployment and ReplicaSet controllers (apps/v1).

A Deployment owns one ReplicaSet per pod template (named ``{deployment}-{pod-template-hash}``, with
the ``pod-template-hash`` label), which owns ``replicas`` pods. A new template scales the new
ReplicaSet up and the old ones to zero at once (no surge/unavailability pacing), and the statuses
(``replicas``, ``readyReplicas``, ``availableReplicas``, ``updatedReplicas``,
``observedGeneration``,
``Available``/``Progressing`` conditions, the ``deployment.kubernetes.io/revision`` annotation)
follow the pods. Not emulated: rolling-update pacing, ``minReadySeconds``, ``paused``, rollbacks,
StatefulSets and DaemonSets (stored only).
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from .controller import Controller
from .errors import ApiError
from .meta import controller_of, owner_reference
from .scheduler import is_terminal, set_condition
from .store import DeleteOptions

__all__ = ["ReplicaSetController", "DeploymentController", "template_hash"]

_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(template: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_HASH_ALPHABET[b % len(_HASH_ALPHABET)] for b in digest[:10])


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _owned(objects: list[dict[str, Any]], kind: str) -> dict[str, list[dict[str, Any]]]:
    result: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        owner = controller_of(obj)
        if owner is not None and owner.get("kind") == kind:
            result.setdefault(owner["uid"], []).append(obj)
    return result


class ReplicaSetController(Controller):
    name = "replicaset-controller"
    watches = (("apps", "replicasets"), ("", "pods"), ("", "resourcequotas"))

    def reconcile(self) -> None:
        rs_rt, pods_rt = self.emulator.rt("replicasets", "apps"), self.emulator.rt("pods")
        replica_sets = self.store.list(rs_rt)
        if not replica_sets:
            return
        pods = _owned(self.store.list(pods_rt), "ReplicaSet")
        for rs in replica_sets:
            if rs["metadata"].get("deletionTimestamp"):
                continue
            owned = pods.get(rs["metadata"]["uid"], [])
            active = [
                p
                for p in owned
                if not is_terminal(p) and not p["metadata"].get("deletionTimestamp")
            ]
            want = int((rs.get("spec") or {}).get("replicas", 1))
            for _ in range(want - len(active)):
                pod = self._create_pod(rs)
                if pod is None:
                    break
                active.append(pod)
            if len(active) > want:
                doomed = sorted(
                    active, key=lambda p: (_ready(p), p["metadata"]["creationTimestamp"])
                )
                for pod in doomed[: len(active) - want]:
                    try:
                        self.store.delete(
                            pods_rt,
                            pod["metadata"]["namespace"],
                            pod["metadata"]["name"],
                            DeleteOptions(),
                        )
                    except ApiError:
                        pass
                    active.remove(pod)
            ready = sum(1 for p in active if _ready(p))
            status = {
                "replicas": len(active),
                "fullyLabeledReplicas": len(active),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "observedGeneration": rs["metadata"].get("generation", 1),
            }
            status = {
                k: v for k, v in status.items() if v or k in ("replicas", "observedGeneration")
            }
            if status != rs.get("status"):
                new = copy.deepcopy(rs)
                new["status"] = status
                self.store.write(rs_rt, rs, new)

    def _create_pod(self, rs: dict[str, Any]) -> dict[str, Any] | None:
        template = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
        meta = template.get("metadata") or {}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{rs['metadata']['name']}-",
                "labels": dict(meta.get("labels") or {}),
                "annotations": dict(meta.get("annotations") or {}),
                "ownerReferences": [owner_reference(rs)],
            },
            "spec": template.get("spec") or {},
        }
        return self.create_pod(rs, pod)


class DeploymentController(Controller):
    name = "deployment-controller"
    watches = (("apps", "deployments"), ("apps", "replicasets"))

    def reconcile(self) -> None:
        deploy_rt, rs_rt = (
            self.emulator.rt("deployments", "apps"),
            self.emulator.rt("replicasets", "apps"),
        )
        sets = _owned(self.store.list(rs_rt), "Deployment")
        for deployment in self.store.list(deploy_rt):
            if deployment["metadata"].get("deletionTimestamp"):
                continue
            self._sync(deployment, sets.get(deployment["metadata"]["uid"], []))

    def _sync(self, deployment: dict[str, Any], owned: list[dict[str, Any]]) -> None:
        rs_rt = self.emulator.rt("replicasets", "apps")
        spec = deployment.get("spec") or {}
        template = copy.deepcopy(spec.get("template") or {})
        pod_hash = template_hash(template)
        replicas = int(spec.get("replicas", 1))
        current = next(
            (
                rs
                for rs in owned
                if rs["metadata"].get("labels", {}).get("pod-template-hash") == pod_hash
            ),
            None,
        )
        revisions = [
            int(rs["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision", "0"))
            for rs in owned
        ]
        if current is None:
            template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = (
                pod_hash
            )
            selector = copy.deepcopy(spec.get("selector") or {})
            selector.setdefault("matchLabels", {})["pod-template-hash"] = pod_hash
            rs = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": f"{deployment['metadata']['name']}-{pod_hash}",
                    "labels": {**(template["metadata"].get("labels") or {})},
                    "annotations": {
                        "deployment.kubernetes.io/revision": str(max(revisions, default=0) + 1),
                        "deployment.kubernetes.io/desired-replicas": str(replicas),
                    },
                    "ownerReferences": [owner_reference(deployment)],
                },
                "spec": {"replicas": replicas, "selector": selector, "template": template},
            }
            try:
                current = self.store.create(
                    rs_rt, rs, deployment["metadata"]["namespace"], internal=True
                )
            except ApiError:
                return
            self.emulator.events.record(
                deployment,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled up replica set {current['metadata']['name']} from 0 to {replicas}",
                component="deployment-controller",
            )
            owned = owned + [current]
        for rs in owned:
            want = replicas if rs is current else 0
            if int((rs.get("spec") or {}).get("replicas", 0)) != want:
                new = copy.deepcopy(rs)
                new["spec"]["replicas"] = want
                self.store.write(rs_rt, rs, new)
        total = sum(int((rs.get("status") or {}).get("replicas", 0)) for rs in owned)
        ready = sum(int((rs.get("status") or {}).get("readyReplicas", 0)) for rs in owned)
        updated = int((current.get("status") or {}).get("replicas", 0))
        status = copy.deepcopy(deployment.get("status") or {})
        status.update(
            observedGeneration=deployment["metadata"].get("generation", 1),
            replicas=total,
            updatedReplicas=updated,
            readyReplicas=ready,
            availableReplicas=ready,
        )
        unavailable = max(replicas - ready, 0)
        if unavailable:
            status["unavailableReplicas"] = unavailable
        else:
            status.pop("unavailableReplicas", None)
        for key in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"):
            if not status[key]:
                del status[key]
        available = ready >= replicas
        set_condition(
            status,
            "Available",
            "True" if available else "False",
            "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if available
            else "Deployment does not have minimum availability.",
        )
        done = available and updated == replicas and total == replicas
        set_condition(
            status,
            "Progressing",
            "True",
            "NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
            f'ReplicaSet "{current["metadata"]["name"]}" '
            + ("has successfully progressed." if done else "is progressing."),
        )
        if status != deployment.get("status"):
            annotations = deployment["metadata"].get("annotations") or {}
            new = copy.deepcopy(deployment)
            new["status"] = status
            revision = (
                current["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision")
            )
            if revision and annotations.get("deployment.kubernetes.io/revision") != revision:
                new["metadata"].setdefault("annotations", {})[
                    "deployment.kubernetes.io/revision"
                ] = revision
            self.store.write(self.emulator.rt("deployments", "apps"), deployment, new)
