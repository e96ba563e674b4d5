"""Defaults the API server fills in on create and update, per kind.

Only defaults that client code is known to read are filled (a pod's ``restartPolicy`` and
``serviceAccountName``, a Job's ``selector`` and ``backoffLimit``, a Service's ``clusterIP``...),
plus the ones the emulated controllers rely on. Pods copy container ``limits`` into missing
``requests`` as the real defaulting does, which is what makes "limits imply requests" hold for the
scheduler and the quota admission.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from typing import Any

from .meta import rfc3339
from .quantity import parse_quantity
from .resources import ResourceType

__all__ = ["apply_defaults", "default_pod_spec", "pod_qos_class"]

_DEFAULT_TOLERATIONS = [
    {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
    {
        "key": "node.kubernetes.io/unreachable",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
]


def _default_container(container: dict[str, Any]) -> None:
    image = container.get("image") or ""
    if "imagePullPolicy" not in container:
        tag = image.rsplit("/", 1)[-1]
        latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
        container["imagePullPolicy"] = "Always" if latest else "IfNotPresent"
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    resources = container.setdefault("resources", {})
    limits = resources.get("limits") or {}
    if limits:
        requests = resources.setdefault("requests", {})
        for name, value in limits.items():
            requests.setdefault(name, value)
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")


def default_pod_spec(spec: dict[str, Any], *, restart_policy: str = "Always") -> None:
    """Fill a PodSpec in place (used for pods and for the templates of Jobs and Deployments)."""
    spec.setdefault("restartPolicy", restart_policy)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    if spec.get("serviceAccount") and not spec.get("serviceAccountName"):
        spec["serviceAccountName"] = spec["serviceAccount"]
    for container in spec.get("initContainers") or []:
        _default_container(container)
    for container in spec.get("containers") or []:
        _default_container(container)


def pod_qos_class(spec: dict[str, Any]) -> str:
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    requests_any = limits_all = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        if requests or limits:
            requests_any = True
        for name in ("cpu", "memory"):
            if name not in limits or parse_quantity(
                requests.get(name, limits.get(name))
            ) != parse_quantity(limits[name]):
                guaranteed = False
        limits_all = limits_all or bool(limits)
    if not requests_any:
        return "BestEffort"
    return "Guaranteed" if guaranteed and containers else "Burstable"


def _default_pod(obj: dict[str, Any], ctx: DefaultingContext) -> None:
    spec = obj.setdefault("spec", {})
    default_pod_spec(spec)
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    for toleration in _DEFAULT_TOLERATIONS:
        if not any(t.get("key") == toleration["key"] for t in tolerations):
            tolerations.append(dict(toleration))
    status = obj.setdefault("status", {})
    status.setdefault("phase", "Pending")
    status["qosClass"] = pod_qos_class(spec)


def _default_job(obj: dict[str, Any], ctx: DefaultingContext) -> None:
    spec = obj.setdefault("spec", {})
    uid = obj["metadata"]["uid"]
    name = obj["metadata"]["name"]
    if spec.get("parallelism") is None and spec.get("completions") is None:
        spec["parallelism"] = spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    template = spec.setdefault("template", {})
    template_meta = template.setdefault("metadata", {})
    if not spec.get("manualSelector"):
        generated = {
            "batch.kubernetes.io/controller-uid": uid,
            "controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "job-name": name,
        }
        template_meta["labels"] = {**(template_meta.get("labels") or {}), **generated}
        spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    default_pod_spec(template.setdefault("spec", {}), restart_policy="Never")
    obj.setdefault("status", {})


def _default_workload(obj: dict[str, Any], ctx: DefaultingContext) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    if obj["kind"] == "Deployment":
        spec.setdefault(
            "strategy",
            {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            },
        )
        spec.setdefault("progressDeadlineSeconds", 600)
    if obj["kind"] == "StatefulSet":
        spec.setdefault("podManagementPolicy", "OrderedReady")
    default_pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))
    obj.setdefault("status", {})


def _default_service(obj: dict[str, Any], ctx: DefaultingContext) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        if "clusterIP" not in spec or spec["clusterIP"] == "":
            spec["clusterIP"] = ctx.allocate_ip()
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    obj.setdefault("status", {"loadBalancer": {}})


def _default_pvc(obj: dict[str, Any], ctx: DefaultingContext) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("volumeMode", "Filesystem")
    status = obj.setdefault("status", {})
    if not status.get("phase"):
        # No provisioner runs here: claims bind at once, to a volume named after their uid.
        spec.setdefault("volumeName", f"pvc-{obj['metadata']['uid']}")
        status.update(
            phase="Bound",
            accessModes=spec.get("accessModes") or ["ReadWriteOnce"],
            capacity=dict((spec.get("resources") or {}).get("requests") or {}),
        )


def _default_namespace(obj: dict[str, Any], ctx: DefaultingContext) -> None:
    name = obj["metadata"]["name"]
    obj["metadata"]["labels"] = {
        **(obj["metadata"].get("labels") or {}),
        "kubernetes.io/metadata.name": name,
    }
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")


def _default_secret(obj: dict[str, Any], ctx: DefaultingContext) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {}) or {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data


def _default_crd(obj: dict[str, Any], ctx: DefaultingContext) -> None:
    spec = obj.setdefault("spec", {})
    names = spec.setdefault("names", {})
    names.setdefault("singular", names.get("kind", "").lower())
    names.setdefault("listKind", names.get("kind", "") + "List")
    stamp = rfc3339()
    obj["status"] = {
        "acceptedNames": copy.deepcopy(names),
        "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": stamp,
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": stamp,
            },
        ],
    }


def _default_quota(obj: dict[str, Any], ctx: DefaultingContext) -> None:
    status = obj.setdefault("status", {})
    status["hard"] = dict((obj.get("spec") or {}).get("hard") or {})
    status.setdefault("used", {})


def _default_event(obj: dict[str, Any], ctx: DefaultingContext) -> None:
    obj.setdefault("count", 1)
    obj.setdefault("type", "Normal")
    stamp = obj["metadata"]["creationTimestamp"]
    if not obj.get("eventTime"):
        obj.setdefault("firstTimestamp", stamp)
        obj.setdefault("lastTimestamp", stamp)
    obj.setdefault("source", {})
    obj.setdefault("reportingComponent", "")
    obj.setdefault("reportingInstance", "")


def _default_ssar(obj: dict[str, Any], ctx: DefaultingContext) -> None:
    # There is no authorization here: every review says yes.
    obj["status"] = {"allowed": True, "reason": "kubelab test server allows everything"}


class DefaultingContext:
    """What defaulting needs from the store (so this module stays free of state)."""

    def __init__(self, allocate_ip: Callable[[], str]) -> None:
        self.allocate_ip = allocate_ip


_BY_KIND: dict[tuple[str, str], Callable[[dict[str, Any], DefaultingContext], None]] = {
    ("", "Pod"): _default_pod,
    ("batch", "Job"): _default_job,
    ("apps", "Deployment"): _default_workload,
    ("apps", "ReplicaSet"): _default_workload,
    ("apps", "StatefulSet"): _default_workload,
    ("", "Service"): _default_service,
    ("", "PersistentVolumeClaim"): _default_pvc,
    ("", "Namespace"): _default_namespace,
    ("", "Secret"): _default_secret,
    ("", "ResourceQuota"): _default_quota,
    ("", "Event"): _default_event,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _default_crd,
    ("authorization.k8s.io", "SelfSubjectAccessReview"): _default_ssar,
}


def apply_defaults(rt: ResourceType, obj: dict[str, Any], ctx: DefaultingContext) -> None:
    """Fill *obj* (metadata already complete) in place with the defaults of its kind."""
    handler = _BY_KIND.get((rt.group, rt.kind))
    if handler is not None and not rt.custom:
        handler(obj, ctx)
