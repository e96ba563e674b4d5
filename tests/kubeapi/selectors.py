"""Label and field selectors, as the API server parses and applies them.

``labelSelector`` supports the whole string grammar (``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``,
``a notin (x)``, ``a``, ``!a``, ``a>1``, ``a<1``); ``fieldSelector`` supports ``=``, ``==``, ``!=``
on
the fields the real API indexes for each resource. An unknown field is refused with 400, as the real
server does, so a test cannot pass here with a selector that a cluster rejects.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ApiError

__all__ = [
    "LabelRequirement",
    "parse_label_selector",
    "match_labels",
    "selector_from_object",
    "requirements_from_expressions",
    "FieldRequirement",
    "parse_field_selector",
    "match_fields",
    "FIELD_GETTERS",
]


@dataclass(frozen=True)
class LabelRequirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator in ("=", "in"):
            return present and value in self.values
        if self.operator in ("!=", "notin"):
            return not present or value not in self.values
        if self.operator in ("gt", "lt"):
            try:
                number, bound = int(value or ""), int(self.values[0])
            except ValueError:
                return False
            return number > bound if self.operator == "gt" else number < bound
        raise AssertionError(self.operator)


_TOKEN = re.compile(r"\s*(\(|\)|,|!=|==|=|!|>|<|[^\s(),!=<>]+)")


def parse_label_selector(text: str | None) -> list[LabelRequirement]:
    """Parse a ``labelSelector`` query string; 400 on a syntax error, like the real server."""
    if not text or not text.strip():
        return []
    tokens = _TOKEN.findall(text)
    if "".join(tokens) != re.sub(r"\s+", "", text):
        raise ApiError.bad_request(f"unable to parse requirement: {text!r}")
    position = 0

    def take() -> str:
        nonlocal position
        if position >= len(tokens):
            raise ApiError.bad_request(f"unable to parse requirement: unexpected end in {text!r}")
        position += 1
        return tokens[position - 1]

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    requirements: list[LabelRequirement] = []
    while True:
        token = take()
        if token == "!":
            requirements.append(LabelRequirement(take(), "!"))
        else:
            key = token
            nxt = peek()
            if nxt in (None, ","):
                requirements.append(LabelRequirement(key, "exists"))
            elif nxt in ("=", "==", "!="):
                take()
                value = peek()
                if value in (None, ","):
                    value = ""
                else:
                    value = take()
                requirements.append(LabelRequirement(key, "!=" if nxt == "!=" else "=", (value,)))
            elif nxt in (">", "<"):
                take()
                requirements.append(LabelRequirement(key, "gt" if nxt == ">" else "lt", (take(),)))
            elif nxt in ("in", "notin"):
                take()
                if take() != "(":
                    raise ApiError.bad_request(
                        f"unable to parse requirement: expected '(' in {text!r}"
                    )
                values: list[str] = []
                while True:
                    item = take()
                    if item == ")":
                        break
                    if item == ",":
                        continue
                    values.append(item)
                requirements.append(LabelRequirement(key, nxt, tuple(values)))
            else:
                raise ApiError.bad_request(f"unable to parse requirement: {text!r}")
        sep = peek()
        if sep is None:
            return requirements
        if take() != ",":
            raise ApiError.bad_request(f"unable to parse requirement: {text!r}")


def match_labels(requirements: list[LabelRequirement], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(requirement.matches(labels) for requirement in requirements)


def selector_from_object(selector: Mapping[str, Any] | None) -> list[LabelRequirement] | None:
    """Convert a ``LabelSelector`` object (``matchLabels`` + ``matchExpressions``).

    Returns ``None`` for a missing selector (matches nothing, as for a Deployment) and ``[]`` for
    an empty one (matches everything).
    """
    if selector is None:
        return None
    requirements = [
        LabelRequirement(k, "=", (v,)) for k, v in (selector.get("matchLabels") or {}).items()
    ]
    return requirements + requirements_from_expressions(selector.get("matchExpressions"))


#: the operators of ``matchExpressions`` -> those of LabelRequirement
_EXPRESSION_OPERATORS = {
    "In": "in",
    "NotIn": "notin",
    "Exists": "exists",
    "DoesNotExist": "!",
    "Gt": "gt",
    "Lt": "lt",
}


def requirements_from_expressions(
    expressions: list[Mapping[str, Any]] | None,
) -> list[LabelRequirement]:
    """``matchExpressions`` (of a label selector or a node selector term) as requirements."""
    return [
        LabelRequirement(
            expression["key"],
            _EXPRESSION_OPERATORS[expression["operator"]],
            tuple(expression.get("values") or ()),
        )
        for expression in expressions or []
    ]


# --- field selectors ------------------------------------------------------------------------------


def _path(*keys: str) -> Callable[[Mapping[str, Any]], str]:
    def get(obj: Mapping[str, Any]) -> str:
        value: Any = obj
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return get


_COMMON = {
    "metadata.name": _path("metadata", "name"),
    "metadata.namespace": _path("metadata", "namespace"),
}

#: The fields each resource (by plural) can be selected on, as in the real API server.
FIELD_GETTERS: dict[str, dict[str, Callable[[Mapping[str, Any]], str]]] = {
    "pods": {
        "spec.nodeName": _path("spec", "nodeName"),
        "spec.restartPolicy": _path("spec", "restartPolicy"),
        "spec.schedulerName": _path("spec", "schedulerName"),
        "spec.serviceAccountName": _path("spec", "serviceAccountName"),
        "spec.hostNetwork": lambda o: (
            "true" if (o.get("spec") or {}).get("hostNetwork") else "false"
        ),
        "status.phase": _path("status", "phase"),
        "status.podIP": _path("status", "podIP"),
        "status.nominatedNodeName": _path("status", "nominatedNodeName"),
    },
    "events": {
        **{
            f"involvedObject.{k}": _path("involvedObject", k)
            for k in (
                "kind",
                "namespace",
                "name",
                "uid",
                "apiVersion",
                "resourceVersion",
                "fieldPath",
            )
        },
        "reason": _path("reason"),
        "reportingComponent": _path("reportingComponent"),
        "source": _path("source", "component"),
        "type": _path("type"),
    },
    "secrets": {"type": _path("type")},
    "namespaces": {"status.phase": _path("status", "phase")},
    "nodes": {
        "spec.unschedulable": lambda o: (
            "true" if (o.get("spec") or {}).get("unschedulable") else "false"
        )
    },
    "jobs": {"status.successful": _path("status", "succeeded")},
    "replicasets": {"status.replicas": _path("status", "replicas")},
}


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    negate: bool
    value: str
    getter: Callable[[Mapping[str, Any]], str]

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return (self.getter(obj) == self.value) != self.negate


def parse_field_selector(text: str | None, plural: str) -> list[FieldRequirement]:
    if not text or not text.strip():
        return []
    getters = {**_COMMON, **FIELD_GETTERS.get(plural, {})}
    requirements = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        match = re.match(r"^([^=!]+?)\s*(==|=|!=)\s*(.*)$", part)
        if not match:
            raise ApiError.bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        field, operator, value = match.groups()
        if field not in getters:
            raise ApiError.bad_request(f"field label not supported: {field}")
        requirements.append(FieldRequirement(field, operator == "!=", value, getters[field]))
    return requirements


def match_fields(requirements: list[FieldRequirement], obj: Mapping[str, Any]) -> bool:
    return all(requirement.matches(obj) for requirement in requirements)
