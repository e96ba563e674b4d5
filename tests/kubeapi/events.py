"""Kubernetes ``Event`` objects written by the emulated controllers.

Repeated events (the same object, reason and message) bump ``count`` and ``lastTimestamp`` instead
of piling up, as the real event recorder does, so a pod that stays unschedulable has one
``FailedScheduling`` event, not one per retry.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ApiError
from .meta import rfc3339
from .resources import ResourceType
from .store import Store

__all__ = ["EventRecorder"]


class EventRecorder:
    def __init__(self, store: Store) -> None:
        self.store = store
        #: (namespace, involved uid, reason, message) -> event name, for deduplication
        self._index: dict[tuple[str, str, str, str], str] = {}

    def reset(self) -> None:
        self._index.clear()

    @property
    def _events(self) -> ResourceType:
        rt = self.store.registry.lookup("", "v1", "events")
        assert rt is not None
        return rt

    def record(
        self,
        obj: dict[str, Any],
        event_type: str,
        reason: str,
        message: str,
        *,
        component: str,
        host: str | None = None,
    ) -> None:
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        if not self.store.namespace_exists(namespace):
            return
        involved = {
            "kind": obj["kind"],
            "namespace": meta.get("namespace", ""),
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": obj["apiVersion"],
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        if not involved["namespace"]:
            involved.pop("namespace")
        key = (namespace, meta["uid"], reason, message)
        existing = self.store.get(self._events, namespace, self._index.get(key, ""))
        if existing is not None:
            new = copy.deepcopy(existing)
            new["count"] = int(existing.get("count") or 1) + 1
            new["lastTimestamp"] = rfc3339()
            self.store.write(self._events, existing, new)
            return
        stamp = rfc3339()
        source = {"component": component}
        if host:
            source["host"] = host
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{self.store.rng.getrandbits(64):016x}",
                "namespace": namespace,
            },
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": event_type,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "eventTime": None,
            "source": source,
            "reportingComponent": component,
            "reportingInstance": host or "",
        }
        try:
            self.store.create(self._events, event, namespace, internal=True)
            self._index[key] = event["metadata"]["name"]
        except ApiError:
            pass  # e.g. the namespace is terminating: the real recorder drops the event too
