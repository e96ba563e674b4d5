"""Schema checks of request bodies: the real Kubernetes OpenAPI schema, and a CRD's own.

Built-in kinds are checked against the schema the ``kubernetes`` client was generated from (its
model classes carry each field's JSON name in ``attribute_map`` and its type in ``openapi_types``;
client 37 is generated from the Kubernetes 1.37 OpenAPI document), so no schema file is shipped
and the schema moves with the client. A custom resource is checked against the
``openAPIV3Schema`` of the CRD version it is written at, as the apiextensions server does
(structural schemas: ``properties``, ``items``, ``additionalProperties``, ``required``, ``enum``,
``x-kubernetes-preserve-unknown-fields``, ``x-kubernetes-int-or-string``,
``x-kubernetes-embedded-resource``).

What a real server does, and so what this does:

- an unknown field is dropped from the object (pruned) and named in a ``Warning: 299 - "unknown
  field \\"spec.foo\\""`` header (``fieldValidation=Warn``, the default), dropped silently
  (``Ignore``), or the request is refused with 400 ``strict decoding error: unknown field
  "spec.foo"`` (``Strict``);
- a built-in kind's wrong type fails JSON decoding: 400 ``ConfigMap in version "v1" cannot be
  handled as a ConfigMap: json: cannot unmarshal number into Go struct field ConfigMap.data of
  type string``;
- a custom resource's wrong type, missing required field or value outside its ``enum`` is 422
  Invalid with one cause per problem (``spec.n: Invalid value: "string": spec.n in body must be
  of type integer: "string"``).

The per-class field tables are computed once (``functools.cache``): a check is one walk over the
body, no schema compilation per request.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import models as _models

from .errors import ApiError
from .resources import ResourceType

__all__ = ["SchemaResult", "FIELD_VALIDATION", "check_builtin", "check_custom", "builtin_model"]

#: the values of the ``fieldValidation`` query parameter
FIELD_VALIDATION = ("Ignore", "Warn", "Strict")

_LIST = re.compile(r"^List\[(.*)\]$")
_DICT = re.compile(r"^Dict\[str, (.*)\]$")
#: fields whose OpenAPI type is ``resource.Quantity``: the client's models type them ``str`` (or
#: maps of ``str``) but Go's decoder takes a JSON number for a Quantity too (``cpu: 2``)
_QUANTITY_MAPS = frozenset({
    "requests", "limits", "allocatedResources", "consumedCapacity", "capacity", "hard", "used",
    "default", "defaultRequest", "max", "min", "maxLimitRequestRatio", "allocatable", "overhead",
    "podFixed",
})
_QUANTITY_FIELDS = frozenset({"sizeLimit", "maximumVolumeSize", "capacity"})
#: a model name's version prefix (V1, V1beta1, CoreV1, EventsV1...): stripped for Go's struct name
_PREFIX = re.compile(r"^(?:[A-Z][a-z]+)?V\d+(?:(?:alpha|beta)\d+)?")


@dataclass
class SchemaResult:
    """What a check found: the fields it dropped (JSON paths) and the type errors."""

    unknown: list[str] = field(default_factory=list)
    #: built-in kinds: (path, Go struct, JSON type found, Go type expected)
    decode_errors: list[tuple[str, str, str, str]] = field(default_factory=list)
    #: custom resources: (path, reason, message) causes of a 422
    causes: list[tuple[str, str, str]] = field(default_factory=list)


def _json_type(value: Any) -> str:
    """The JSON type name Go's decoder reports for *value*."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _go_type(type_name: str) -> str:
    found = _LIST.match(type_name)
    if found:
        return "[]" + _go_type(found.group(1))
    found = _DICT.match(type_name)
    if found:
        return "map[string]" + _go_type(found.group(1))
    simple = {"str": "string", "int": "int32", "float": "float64", "bool": "bool",
              "datetime": "v1.Time", "date": "v1.Time", "quantity": "resource.Quantity", "bytes": "[]uint8", "object": "any"}
    if type_name in simple:
        return simple[type_name]
    return "v1." + _PREFIX.sub("", type_name)


@functools.cache
def _fields(model_name: str) -> dict[str, str] | None:
    """JSON field name -> type name of a model class, or None when there is no such class."""
    model = getattr(_models, model_name, None)
    if model is None or not hasattr(model, "openapi_types"):
        return None
    fields = {}
    for attr, kind in model.openapi_types.items():
        name = model.attribute_map[attr]
        if kind == "str" and name in _QUANTITY_FIELDS:
            kind = "quantity"
        elif kind == "Dict[str, str]" and name in _QUANTITY_MAPS:
            kind = "Dict[str, quantity]"
        fields[name] = kind
    return fields


@functools.cache
def builtin_model(group: str, version: str, kind: str) -> str | None:
    """The client's model class name for a built-in kind (``V1Pod``, ``EventsV1Event``), if any."""
    ver = version[0].upper() + version[1:]
    first = (group.split(".")[0] or "core").capitalize()
    for name in (f"{first}{ver}{kind}", f"{ver}{kind}"):
        if _fields(name) is not None:
            return name
    return None


def _matches(type_name: str, value: Any) -> bool:
    if value is None:
        return True  # null is "not set" for every optional field
    if type_name == "str" or type_name in ("datetime", "date", "bytes"):
        return isinstance(value, str)
    if type_name == "quantity":
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)
    if type_name == "int":
        return isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, float) and value.is_integer())
    if type_name == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_name == "bool":
        return isinstance(value, bool)
    if type_name == "object":
        return True  # int-or-string, quantities, RawExtension, JSON: anything
    if _LIST.match(type_name):
        return isinstance(value, list)
    return isinstance(value, dict)


def _walk_builtin(
    model_name: str, obj: dict[str, Any], path: str, result: SchemaResult, root: bool
) -> None:
    fields = _fields(model_name)
    if fields is None:
        return
    struct = _PREFIX.sub("", model_name)
    for key in list(obj):
        here = f"{path}.{key}" if path else key
        if key not in fields:
            if root and key in ("apiVersion", "kind"):
                continue
            result.unknown.append(here)
            del obj[key]
            continue
        _walk_value(fields[key], obj[key], here, struct, result)


def _walk_value(type_name: str, value: Any, path: str, struct: str, result: SchemaResult) -> None:
    if not _matches(type_name, value):
        result.decode_errors.append((path, struct, _json_type(value), _go_type(type_name)))
        return
    if value is None:
        return
    found = _LIST.match(type_name)
    if found:
        for index, item in enumerate(value):
            _walk_value(found.group(1), item, f"{path}[{index}]", struct, result)
        return
    found = _DICT.match(type_name)
    if found:
        for item in value.values():  # Go's decoder names a map's field, not the key
            _walk_value(found.group(1), item, path, struct, result)
        return
    if isinstance(value, dict) and _fields(type_name) is not None:
        _walk_builtin(type_name, value, path, result, root=False)


def check_builtin(rt: ResourceType, obj: dict[str, Any]) -> SchemaResult:
    """Check (and prune) *obj*, a built-in kind's body, in place."""
    result = SchemaResult()
    model = builtin_model(rt.group, rt.version, rt.kind)
    if model is not None:
        _walk_builtin(model, obj, "", result, root=True)
    return result


# --- custom resources -----------------------------------------------------------------------------

_CR_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}


def _cr_type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "null")


def _walk_custom(
    schema: Mapping[str, Any], value: Any, path: str, result: SchemaResult, *, top: bool = False
) -> None:
    if value is None:
        if not schema.get("nullable") and path:
            result.causes.append((path, "FieldValueTypeInvalid",
                                  f'Invalid value: "null": {path} in body must be of type '
                                  f'{schema.get("type", "object")}: "null"'))
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            result.causes.append((path, "FieldValueTypeInvalid",
                                  f'Invalid value: "{_cr_type_name(value)}": {path} in body must '
                                  f'be of type integer,string: "{_cr_type_name(value)}"'))
        return
    kind = schema.get("type")
    if kind and not _CR_TYPES.get(kind, lambda v: True)(value):
        found = _cr_type_name(value)
        result.causes.append((path, "FieldValueTypeInvalid",
                              f'Invalid value: "{found}": {path} in body must be of type {kind}: '
                              f'"{found}"'))
        return
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in schema["enum"])
        shown = f'"{value}"' if isinstance(value, str) else str(value)
        result.causes.append((path, "FieldValueNotSupported",
                              f"Unsupported value: {shown}: supported values: {supported}"))
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name in schema.get("required") or []:
            if name not in value:
                here = f"{path}.{name}" if path else name
                result.causes.append((here, "FieldValueRequired", "Required value"))
        embedded = schema.get("x-kubernetes-embedded-resource") or top
        extra = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields")
        for key in list(value):
            here = f"{path}.{key}" if path else key
            if key in properties:
                _walk_custom(properties[key], value[key], here, result)
            elif embedded and key in ("apiVersion", "kind", "metadata"):
                continue  # validated as the object's own metadata
            elif isinstance(extra, Mapping):
                _walk_custom(extra, value[key], here, result)
            elif extra is True or preserve:
                continue
            else:
                result.unknown.append(here)
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            _walk_custom(schema["items"], item, f"{path}[{index}]", result)


def check_custom(schema: Mapping[str, Any] | None, obj: dict[str, Any]) -> SchemaResult:
    """Check (and prune) *obj*, a custom resource, against its CRD version's openAPIV3Schema."""
    result = SchemaResult()
    if schema:
        _walk_custom(schema, obj, "", result, top=True)
    return result


def refuse_or_warn(
    rt: ResourceType, name: str, result: SchemaResult, validation: str
) -> list[str]:
    """Raise the error a real server answers for *result*; else the ``Warning`` header values."""
    if result.decode_errors:
        path, struct, found, expected = result.decode_errors[0]
        go_path = re.sub(r"\[\d+\]", "", path)
        raise ApiError.bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: json: cannot '
            f"unmarshal {found} into Go struct field {struct}.{go_path} of type {expected}")
    if result.unknown and validation == "Strict":
        fields = ", ".join(f'unknown field "{path}"' for path in result.unknown)
        raise ApiError.bad_request(f"strict decoding error: {fields}")
    if result.causes:
        raise ApiError.invalid(rt.kind, name, result.causes, rt.group)
    if validation == "Ignore":
        return []
    return [f'299 - "unknown field \\"{path}\\""' for path in result.unknown]
