"""URL parsing for the Kubernetes REST paths.

kmock's own parser (``kmock._internal.parsing.parse_path``) raises on ``/api/v1/namespaces`` and
reads ``/api/v1/namespaces/NAME`` as "everything in namespace NAME", so the server parses paths
itself and hands kmock a :class:`kmock.Request` built from this parse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Route", "parse_route"]


@dataclass(frozen=True)
class Route:
    kind: str  # "resource", "discovery", "version", "health", "unknown"
    group: str | None = None
    version: str | None = None
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    watch: bool = False


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def parse_route(path: str, query: Mapping[str, str]) -> Route:
    parts = [p for p in path.split("/") if p]
    watch = _truthy(query.get("watch"))
    if not parts:
        return Route("discovery")
    if parts == ["version"]:
        return Route("version")
    if parts[0] in ("healthz", "livez", "readyz"):
        return Route("health")
    if parts[0] == "api":
        if len(parts) == 1:
            return Route("discovery", group="")
        group, version, rest = "", parts[1], parts[2:]
    elif parts[0] == "apis":
        if len(parts) == 1:
            return Route("discovery")
        if len(parts) == 2:
            return Route("discovery", group=parts[1])
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return Route("unknown")
    if not rest:
        return Route("discovery", group=group, version=version)
    if rest[0] == "watch":  # the deprecated /watch/ paths
        watch, rest = True, rest[1:]
        if not rest:
            return Route("unknown")
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    subresource = "/".join(rest[2:]) or None
    return Route("resource", group, version, plural, namespace, name, subresource, watch)
