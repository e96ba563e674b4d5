"""The PATCH formats the API server accepts: JSON merge patch, strategic merge patch, JSON patch.

Strategic merge patch is approximated: the real server reads ``x-kubernetes-patch-merge-key`` from
the Go types; here a table of the well-known list fields (``containers`` by ``name``, ``env`` by
``name``, ``volumeMounts`` by ``mountPath``...) stands in for it. ``$patch: delete|replace``,
``$deleteFromPrimitiveList/`` and ``$setElementOrder/`` directives are understood; ``$retainKeys``
is not. Lists not in the table are replaced, which is what the real server does for them too.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch  # a dependency of kmock

from .errors import ApiError

__all__ = ["merge_patch", "strategic_merge_patch", "json_patch", "MERGE_KEYS"]

#: list fields merged by a key in strategic merge patch (field name -> merge key)
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "taints": "key",
    "addresses": "type",
    "resourceClaims": "name",
    "ports": "containerPort",  # "port" for Service ports, decided per item below
}
#: primitive lists whose strategy is "merge" (union) rather than replace
MERGE_PRIMITIVE_LISTS = {"finalizers"}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch, approximated (see the module docstring)."""
    return _smp_value(target, patch, field="")


def _smp_value(target: Any, patch: Any, field: str) -> Any:
    if isinstance(patch, dict):
        directive = patch.get("$patch")
        if directive == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        if directive == "delete":
            return None
        result = copy.deepcopy(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if key.startswith("$setElementOrder/") or key == "$retainKeys":
                continue
            if key.startswith("$deleteFromPrimitiveList/"):
                name = key.split("/", 1)[1]
                result[name] = [v for v in result.get(name) or [] if v not in value]
                continue
            if value is None:
                result.pop(key, None)
                continue
            merged = _smp_value(result.get(key), value, key)
            if merged is None and isinstance(value, dict) and value.get("$patch") == "delete":
                result.pop(key, None)
            else:
                result[key] = merged
        return result
    if isinstance(patch, list):
        return _smp_list(target if isinstance(target, list) else [], patch, field)
    return copy.deepcopy(patch)


def _smp_list(target: list[Any], patch: list[Any], field: str) -> list[Any]:
    if field in MERGE_PRIMITIVE_LISTS and all(not isinstance(v, (dict, list)) for v in patch):
        return list(target) + [v for v in patch if v not in target]
    if field not in MERGE_KEYS or not all(isinstance(item, dict) for item in patch):
        return copy.deepcopy(
            [item for item in patch if not (isinstance(item, dict) and "$patch" in item)]
        )
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return copy.deepcopy([item for item in patch if "$patch" not in item])
    result = copy.deepcopy(target)
    for item in patch:
        key = MERGE_KEYS[field]
        if field == "ports" and "containerPort" not in item and "port" in item:
            key = "port"
        if key not in item:
            result.append(copy.deepcopy(item))
            continue
        index = next(
            (
                i
                for i, old in enumerate(result)
                if isinstance(old, dict) and old.get(key) == item[key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(_smp_value({}, item, ""))
        else:
            result[index] = _smp_value(result[index], item, "")
    return result


def json_patch(target: dict[str, Any], operations: Any) -> dict[str, Any]:
    """RFC 6902 JSON patch; a failing ``test`` or a bad path is a 422, as on a real server."""
    if not isinstance(operations, list):
        raise ApiError.bad_request(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
        )
    try:
        result = jsonpatch.apply_patch(target, operations, in_place=False)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise ApiError(
            422,
            "Invalid",
            f"the server rejected our request due to an error in our request: {exc}",
            {},
        ) from None
    except (
        jsonpatch.JsonPatchException,
        jsonpatch.JsonPointerException,
        KeyError,
        IndexError,
    ) as exc:
        raise ApiError(
            422,
            "Invalid",
            f"the server rejected our request due to an error in our request: {exc}",
            {},
        ) from None
    if not isinstance(result, dict):
        raise ApiError.bad_request("the patch must leave an object")
    return result
