"""The validation that makes the real API server answer 422 Invalid, for the mistakes that matter.

Not the full OpenAPI schema: names (DNS-1123 / DNS-1035 rules), label keys and values, required
fields that client code tends to forget (a pod's containers and images, a Job's ``restartPolicy``, a
Deployment's selector), resource quantities (extended resources like ``nvidia.com/gpu`` need equal
whole-number requests and limits), and the immutable fields of pods, Jobs and Deployments on update.
A kubelab bug that a cluster would refuse should be refused here too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import ApiError
from .quantity import parse_quantity
from .resources import ResourceType

__all__ = ["validate_create", "validate_update"]

Cause = tuple[str, str, str]  # (field, reason, message)

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

#: (maximum length, pattern, what the message says such a name must be) of a resource's names
_NameRule = tuple[int, re.Pattern[str], str]
#: resources whose names are DNS-1035 labels (start with a letter) or DNS-1123 labels (63
#: characters, no dots)
_NAME_RULES: dict[tuple[str, str], _NameRule] = {
    ("", "services"): (
        63,
        _DNS1035_LABEL,
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
        "an alphabetic character, and end with an alphanumeric character",
    ),
    ("", "namespaces"): (
        63,
        _DNS1123_LABEL,
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
        "and must start and end with an alphanumeric character",
    ),
}
#: the other resources' names: DNS-1123 subdomains
_SUBDOMAIN_RULE: _NameRule = (
    253,
    _DNS1123_SUBDOMAIN,
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character",
)
#: resources whose names are only path segments (RBAC allows colons and capitals)
_PATH_NAMED = {
    ("rbac.authorization.k8s.io", "roles"),
    ("rbac.authorization.k8s.io", "rolebindings"),
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
}


def _name_causes(rt: ResourceType, name: str) -> list[Cause]:
    key = (rt.group, rt.plural)
    if key in _PATH_NAMED:
        bad = name in (".", "..") or "/" in name or "%" in name
        why = "may not contain '/' or '%'"
    else:
        limit, pattern, why = _NAME_RULES.get(key, _SUBDOMAIN_RULE)
        bad = len(name) > limit or not pattern.match(name)
    if not bad:
        return []
    return [("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {why}')]


def _key_causes(field: str, key: str) -> list[Cause]:
    prefix, _, name = key.rpartition("/")
    if (
        (prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)))
        or len(name) > 63
        or not _QUALIFIED_NAME.match(name)
    ):
        return [
            (
                field,
                "FieldValueInvalid",
                f'Invalid value: "{key}": name part must consist of alphanumeric characters, '
                f"'-', '_' or '.', and must start and end with an alphanumeric character",
            )
        ]
    return []


def _metadata_causes(metadata: Mapping[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    for key, value in (metadata.get("labels") or {}).items():
        causes += _key_causes("metadata.labels", key)
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            causes.append(
                (
                    "metadata.labels",
                    "FieldValueInvalid",
                    f'Invalid value: "{value}": a valid label must be an empty string or '
                    f"consist of alphanumeric characters, '-', '_' or '.', and must start "
                    f"and end with an alphanumeric character",
                )
            )
    for key, value in (metadata.get("annotations") or {}).items():
        causes += _key_causes("metadata.annotations", key)
        if not isinstance(value, str):
            causes.append(
                (
                    "metadata.annotations",
                    "FieldValueInvalid",
                    f"Invalid value: {value!r}: annotation values must be strings",
                )
            )
    return causes


def _resources_causes(path: str, resources: Mapping[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    parsed: dict[str, dict[str, Any]] = {"requests": {}, "limits": {}}
    for which, values in (("requests", requests), ("limits", limits)):
        for name, value in values.items():
            try:
                parsed[which][name] = parse_quantity(value)
            except ValueError as exc:
                causes.append(
                    (
                        f"{path}.{which}[{name}]",
                        "FieldValueInvalid",
                        f'Invalid value: "{value}": {exc}',
                    )
                )
    for name, request in parsed["requests"].items():
        limit = parsed["limits"].get(name)
        extended = "/" in name and not name.startswith(("kubernetes.io/", "hugepages-"))
        if extended:
            if request.denominator != 1:
                causes.append(
                    (
                        f"{path}.requests[{name}]",
                        "FieldValueInvalid",
                        f'Invalid value: "{requests[name]}": must be an integer',
                    )
                )
            if limit is None or limit != request:
                causes.append(
                    (
                        f"{path}.requests[{name}]",
                        "FieldValueInvalid",
                        f'Invalid value: "{requests[name]}": must be equal to {name} limit'
                        + (f" of {limits[name]}" if limit is not None else ""),
                    )
                )
        elif limit is not None and request > limit:
            causes.append(
                (
                    f"{path}.requests[{name}]",
                    "FieldValueInvalid",
                    f'Invalid value: "{requests[name]}": must be less than or equal to '
                    f"{name} limit of {limits[name]}",
                )
            )
    return causes


def _pod_spec_causes(path: str, spec: Mapping[str, Any] | None) -> list[Cause]:
    if not spec:
        return [(path, "FieldValueRequired", "Required value")]
    causes: list[Cause] = []
    containers = spec.get("containers") or []
    if not containers:
        causes.append((f"{path}.containers", "FieldValueRequired", "Required value"))
    seen: set[str] = set()
    for which in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(which) or []):
            here = f"{path}.{which}[{index}]"
            name = container.get("name") or ""
            if not name:
                causes.append((f"{here}.name", "FieldValueRequired", "Required value"))
            elif not _DNS1123_LABEL.match(name) or len(name) > 63:
                causes.append(
                    (
                        f"{here}.name",
                        "FieldValueInvalid",
                        f'Invalid value: "{name}": a '
                        f"lowercase RFC 1123 label must consist of lower case alphanumeric "
                        f"characters or '-'",
                    )
                )
            elif name in seen:
                causes.append((f"{here}.name", "FieldValueDuplicate", f'Duplicate value: "{name}"'))
            seen.add(name)
            if not container.get("image"):
                causes.append((f"{here}.image", "FieldValueRequired", "Required value"))
            causes += _resources_causes(f"{here}.resources", container.get("resources") or {})
    policy = spec.get("restartPolicy")
    if policy not in (None, "Always", "OnFailure", "Never"):
        causes.append(
            (
                f"{path}.restartPolicy",
                "FieldValueNotSupported",
                f'Unsupported value: "{policy}": supported values: "Always", "OnFailure", "Never"',
            )
        )
    return causes


def _selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    from .selectors import match_labels, selector_from_object

    requirements = selector_from_object(selector)
    return requirements is not None and match_labels(requirements, labels)


def _event_causes(event: Mapping[str, Any]) -> list[Cause]:
    """An ``events.k8s.io/v1`` Event's required fields (the real ``ValidateEventCreate``)."""
    causes: list[Cause] = []
    for name in ("eventTime", "reportingController", "reportingInstance", "action", "reason"):
        if not event.get(name):
            causes.append((name, "FieldValueRequired", "Required value"))
    if event.get("type") not in ("Normal", "Warning"):
        causes.append(("type", "FieldValueNotSupported",
                       f'Unsupported value: "{event.get("type") or ""}": supported values: '
                       f'"Normal", "Warning"'))
    if len(event.get("note") or "") > 1024:
        causes.append(("note", "FieldValueTooLong", "Too long: may not be more than 1024 bytes"))
    return causes


def _kind_causes(rt: ResourceType, obj: Mapping[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    key = (rt.group, rt.kind)
    if key == ("", "Pod"):
        return _pod_spec_causes("spec", spec)
    if key == ("events.k8s.io", "Event"):
        return _event_causes(obj)
    if key == ("batch", "Job"):
        template = spec.get("template") or {}
        causes = _pod_spec_causes("spec.template.spec", template.get("spec"))
        policy = (template.get("spec") or {}).get("restartPolicy")
        if policy not in ("OnFailure", "Never"):
            causes.append(
                (
                    "spec.template.spec.restartPolicy",
                    "FieldValueNotSupported",
                    f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"',
                )
            )
        if spec.get("completionMode") == "Indexed" and spec.get("completions") is None:
            causes.append(
                (
                    "spec.completions",
                    "FieldValueRequired",
                    "Required value: when completion mode is Indexed",
                )
            )
        for field in ("parallelism", "completions", "backoffLimit"):
            if isinstance(spec.get(field), int) and spec[field] < 0:
                causes.append(
                    (
                        f"spec.{field}",
                        "FieldValueInvalid",
                        f"Invalid value: {spec[field]}: must be greater than or equal to 0",
                    )
                )
        if spec.get("manualSelector") or spec.get("selector") and not spec.get("manualSelector"):
            labels = (template.get("metadata") or {}).get("labels") or {}
            if spec.get("selector") and not _selector_matches(spec["selector"], labels):
                causes.append(
                    (
                        "spec.template.metadata.labels",
                        "FieldValueInvalid",
                        "Invalid value: `selector` does not match template `labels`",
                    )
                )
        return causes
    if key in (
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
    ):
        template = spec.get("template") or {}
        causes = _pod_spec_causes("spec.template.spec", template.get("spec"))
        if not spec.get("selector"):
            causes.append(("spec.selector", "FieldValueRequired", "Required value"))
        elif not _selector_matches(
            spec["selector"], (template.get("metadata") or {}).get("labels") or {}
        ):
            causes.append(
                (
                    "spec.template.metadata.labels",
                    "FieldValueInvalid",
                    "Invalid value: `selector` does not match template `labels`",
                )
            )
        policy = (template.get("spec") or {}).get("restartPolicy", "Always")
        if policy != "Always":
            causes.append(
                (
                    "spec.template.spec.restartPolicy",
                    "FieldValueNotSupported",
                    f'Unsupported value: "{policy}": supported values: "Always"',
                )
            )
        return causes
    if key == ("", "Service"):
        if (
            spec.get("type") != "ExternalName"
            and spec.get("clusterIP") != "None"
            and not spec.get("ports")
        ):
            return [("spec.ports", "FieldValueRequired", "Required value")]
        ports = spec.get("ports") or []
        if len(ports) > 1 and not all(p.get("name") for p in ports):
            return [("spec.ports[0].name", "FieldValueRequired", "Required value")]
        return []
    if key == ("apiextensions.k8s.io", "CustomResourceDefinition"):
        names = spec.get("names") or {}
        expected = f"{names.get('plural')}.{spec.get('group')}"
        if obj["metadata"].get("name") != expected:
            return [
                (
                    "metadata.name",
                    "FieldValueInvalid",
                    f'Invalid value: "{obj["metadata"].get("name")}": '
                    'must be spec.names.plural+"."+spec.group',
                )
            ]
        if not spec.get("versions"):
            return [("spec.versions", "FieldValueRequired", "Required value")]
        return []
    return []


def validate_create(rt: ResourceType, obj: Mapping[str, Any]) -> None:
    name = obj["metadata"].get("name") or ""
    causes = _name_causes(rt, name) + _metadata_causes(obj["metadata"]) + _kind_causes(rt, obj)
    if causes:
        raise ApiError.invalid(rt.kind, name, causes, rt.group)


def _without(spec: Mapping[str, Any], *paths: str) -> Any:
    import copy

    result = copy.deepcopy(dict(spec))
    for path in paths:
        if path == "containers.image":
            for which in ("containers", "initContainers"):
                for container in result.get(which) or []:
                    container.pop("image", None)
        else:
            result.pop(path, None)
    return result


def validate_update(rt: ResourceType, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Create-time rules plus the immutable fields of pods, Jobs, Deployments and Services."""
    validate_create(rt, new)
    name = new["metadata"]["name"]
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    causes: list[Cause] = []
    key = (rt.group, rt.kind)
    if key == ("", "Pod"):
        mutable = (
            "containers.image",
            "activeDeadlineSeconds",
            "tolerations",
            "terminationGracePeriodSeconds",
        )
        if _without(old_spec, *mutable) != _without(new_spec, *mutable):
            causes.append(
                (
                    "spec",
                    "FieldValueForbidden",
                    "Forbidden: pod updates may not change fields other than "
                    "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                    "existing tolerations),`spec.terminationGracePeriodSeconds`",
                )
            )
    elif key == ("batch", "Job"):
        for field in ("selector", "completionMode"):
            if old_spec.get(field) != new_spec.get(field):
                causes.append((f"spec.{field}", "FieldValueInvalid", "field is immutable"))
        if old_spec.get("template") != new_spec.get("template") and not old_spec.get("suspend"):
            causes.append(("spec.template", "FieldValueInvalid", "field is immutable"))
    elif key in (("apps", "Deployment"), ("apps", "ReplicaSet"), ("apps", "StatefulSet")):
        if old_spec.get("selector") != new_spec.get("selector"):
            causes.append(("spec.selector", "FieldValueInvalid", "field is immutable"))
    elif key == ("", "Service"):
        if new_spec.get("clusterIP") not in (None, "", old_spec.get("clusterIP")):
            causes.append(("spec.clusterIP", "FieldValueInvalid", "field is immutable"))
    if causes:
        raise ApiError.invalid(rt.kind, name, causes, rt.group)
