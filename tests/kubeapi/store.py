"""The object store: what etcd plus the generic registry code of the API server do.

One global ``resourceVersion`` counter orders every write; each write records a watch event in a
bounded history so that watches resume from a ``resourceVersion`` (or get 410 Gone once it has been
compacted). The store owns the generic semantics every resource shares — server-side metadata,
optimistic concurrency, status subresources, finalizers, graceful deletion, propagation policies,
namespace lifecycle — and calls admission plugins and listeners (the emulated controllers) that add
the rest. Everything here runs on the server's event loop thread; nothing is thread-safe.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .defaulting import DefaultingContext, apply_defaults
from .errors import ApiError
from .meta import name_suffix, new_uid, now, rfc3339
from .patching import json_patch, merge_patch, strategic_merge_patch
from .resources import Registry, ResourceType
from .schema import check_builtin, check_custom, refuse_or_warn
from .selectors import FieldRequirement, LabelRequirement, match_fields, match_labels
from .settings import EmulatorSettings
from .validation import validate_create, validate_update

__all__ = ["Store", "WatchEvent", "Watcher", "DeleteOptions", "Admission"]

GroupResource = tuple[str, str]
ObjectKey = tuple[str, str]  # (namespace or "", name)

#: resources without metadata.generation (as on a real server)
_NO_GENERATION = {
    ("", p)
    for p in (
        "configmaps",
        "secrets",
        "events",
        "serviceaccounts",
        "namespaces",
        "endpoints",
        "services",
        "persistentvolumeclaims",
        "persistentvolumes",
        "nodes",
        "resourcequotas",
        "limitranges",
    )
} | {
    ("storage.k8s.io", "storageclasses"),
    ("scheduling.k8s.io", "priorityclasses"),
    ("events.k8s.io", "events"),
}
#: the first Kubernetes minor version that sets metadata.generation on pods (KEP-5067)
_POD_GENERATION_SINCE = 33
#: resources whose DELETE answers with the object rather than a Status (ReturnDeletedObject)
_RETURNS_DELETED = {
    ("", "pods"),
    ("", "services"),
    ("", "namespaces"),
    ("", "persistentvolumes"),
    ("", "nodes"),
}
#: namespaces that always exist
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass(frozen=True)
class WatchEvent:
    """One committed change; ``obj`` and ``old`` are snapshots that are never mutated."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    group_resource: GroupResource
    namespace: str
    obj: dict[str, Any]
    old: dict[str, Any] | None


@dataclass
class DeleteOptions:
    grace_period_seconds: int | None = None
    propagation_policy: str | None = None
    precondition_uid: str | None = None
    precondition_rv: str | None = None
    dry_run: bool = False


@dataclass
class Admission:
    """What an admission plugin sees: the operation and the object as it would be stored."""

    operation: str  # CREATE, UPDATE, DELETE
    rt: ResourceType
    obj: dict[str, Any]
    old: dict[str, Any] | None
    #: True when a controller of the emulator makes the change (not an API client)
    internal: bool = False


class Watcher:
    """A live watch: filters committed events and queues them for one HTTP stream."""

    def __init__(
        self,
        group_resource: GroupResource,
        namespace: str | None,
        labels: list[LabelRequirement],
        fields: list[FieldRequirement],
    ) -> None:
        self.group_resource = group_resource
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.queue: asyncio.Queue[tuple[str, dict[str, Any], int] | None] = asyncio.Queue()

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace", "") != self.namespace:
            return False
        return match_labels(self.labels, meta.get("labels")) and match_fields(self.fields, obj)

    def translate(self, event: WatchEvent) -> tuple[str, dict[str, Any]] | None:
        """What this watcher sends for *event*: an object that starts (stops) matching a selector
        arrives as ADDED (DELETED), as from a real server's watch cache."""
        if event.group_resource != self.group_resource:
            return None
        if event.type == "DELETED":
            return ("DELETED", event.obj) if self.matches(event.obj) else None
        now_matches = self.matches(event.obj)
        was_matching = event.type == "MODIFIED" and self.matches(event.old)
        if now_matches and was_matching:
            return ("MODIFIED", event.obj)
        if now_matches:
            return ("ADDED", event.obj)
        if was_matching:
            return ("DELETED", event.obj)
        return None

    def push(self, event: WatchEvent) -> None:
        translated = self.translate(event)
        if translated is not None:
            self.queue.put_nowait((translated[0], translated[1], event.rv))

    def close(self) -> None:
        self.queue.put_nowait(None)


@dataclass
class Store:
    registry: Registry
    settings: EmulatorSettings
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    #: group/plural -> (namespace, name) -> object
    objects: dict[GroupResource, dict[ObjectKey, dict[str, Any]]] = field(default_factory=dict)
    rv: int = 0
    #: events with rv <= this are no longer in the history (410 Gone for watches from there)
    compacted_rv: int = 0
    history: deque[WatchEvent] = field(default_factory=deque)
    watchers: set[Watcher] = field(default_factory=set)
    listeners: list[Callable[[WatchEvent], None]] = field(default_factory=list)
    admission: list[Callable[[Admission], None]] = field(default_factory=list)
    _next_ip: int = 10
    #: the request being served: its ``fieldValidation`` (Ignore, Warn, Strict) and the
    #: ``Warning`` header values it has earned (the server resets both per request)
    field_validation: str = "Warn"
    warnings: list[str] = field(default_factory=list)

    # --- reading ----------------------------------------------------------------------------------

    def table(self, rt: ResourceType | GroupResource) -> dict[ObjectKey, dict[str, Any]]:
        key = rt.group_resource if isinstance(rt, ResourceType) else rt
        return self.objects.setdefault(key, {})

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.table(rt).get((namespace or "", name))

    def require(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.get(rt, namespace, name)
        if obj is None:
            raise ApiError.not_found(rt.plural, name, rt.group)
        return obj

    def list(self, rt: ResourceType, namespace: str | None = None) -> list[dict[str, Any]]:
        """Objects in key order (namespace, name), as etcd returns them."""
        table = self.table(rt)
        keys = sorted(k for k in table if namespace is None or k[0] == namespace)
        return [table[k] for k in keys]

    def iter_all(self) -> Iterator[tuple[GroupResource, dict[str, Any]]]:
        for group_resource, table in list(self.objects.items()):
            for obj in list(table.values()):
                yield group_resource, obj

    def namespace_exists(self, name: str) -> bool:
        return ("", name) in self.table(("", "namespaces"))

    def open_watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: list[LabelRequirement],
        fields: list[FieldRequirement],
        since: int | None,
    ) -> tuple[Watcher, list[tuple[str, dict[str, Any], int]]]:
        """Register a watcher and return the events it must send first.

        Without a resourceVersion (or with "0") those are synthetic ADDED events for the current
        state; with one, the recorded events after it, or 410 Gone if history no longer reaches it.
        """
        watcher = Watcher(rt.group_resource, namespace, labels, fields)
        if since is None:
            initial = [
                ("ADDED", obj, int(obj["metadata"]["resourceVersion"]))
                for obj in self.list(rt, namespace)
                if watcher.matches(obj)
            ]
        else:
            if since < self.compacted_rv:
                raise ApiError.gone(since, self.compacted_rv + 1)
            initial = []
            for event in self.history:
                if event.rv > since:
                    translated = watcher.translate(event)
                    if translated is not None:
                        initial.append((translated[0], translated[1], event.rv))
        self.watchers.add(watcher)
        return watcher, initial

    # --- committing -------------------------------------------------------------------------------

    def _commit(
        self, rt: ResourceType, event_type: str, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> dict[str, Any]:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if event_type == "DELETED":
            self.table(rt).pop(key, None)
        else:
            self.table(rt)[key] = obj
        event = WatchEvent(self.rv, event_type, rt.group_resource, key[0], obj, old)
        self.history.append(event)
        while len(self.history) > self.settings.watch_history:
            self.compacted_rv = self.history.popleft().rv
        for watcher in list(self.watchers):
            watcher.push(event)
        for listener in list(self.listeners):
            listener(event)
        return obj

    def compact(self) -> None:
        """Forget the watch history, as etcd compaction does: older resourceVersions get 410."""
        self.history.clear()
        self.compacted_rv = self.rv

    # --- create -----------------------------------------------------------------------------------

    def create(
        self,
        rt: ResourceType,
        body: Any,
        namespace: str | None,
        *,
        dry_run: bool = False,
        internal: bool = False,
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body of the request must be a JSON object")
        obj = copy.deepcopy(body)
        self._check_type_meta(rt, obj)
        if not internal:
            self._check_schema(rt, obj, (obj.get("metadata") or {}).get("name") or "")
        meta = obj.get("metadata")
        meta = obj["metadata"] = dict(meta) if isinstance(meta, dict) else {}
        if meta.get("resourceVersion") and not internal:
            # etcd3 storage's ErrResourceVersionSetOnCreate, which no layer above turns into a
            # Status: the generic 500 of an error that is not one
            raise ApiError(500, "Unknown", "resourceVersion should not be set on objects to be "
                           "created", {})
        if rt.namespaced:
            body_ns = meta.get("namespace")
            if namespace is None:
                raise ApiError.no_route()
            if body_ns and body_ns != namespace:
                raise ApiError.bad_request(
                    "the namespace of the provided object does not match "
                    "the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + name_suffix(self.rng)
            else:
                raise ApiError.invalid(
                    rt.kind,
                    "",
                    [
                        (
                            "metadata.name",
                            "FieldValueRequired",
                            "Required value: name or generateName is required",
                        )
                    ],
                    rt.group,
                )
        name = meta["name"]
        if rt.namespaced:
            self._check_namespace_open(rt, namespace or "", name)
        for system_field in (
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ):
            meta.pop(system_field, None)
        if rt.has_status and not internal and rt.group_resource != ("", "nodes"):
            obj.pop("status", None)  # status is the controllers' to write, as on a real server
        meta["uid"] = new_uid()
        meta["creationTimestamp"] = rfc3339()
        if self._has_generation(rt):
            meta["generation"] = 1
        apply_defaults(rt, obj, DefaultingContext(self._allocate_ip))
        validate_create(rt, obj)
        if self.get(rt, meta.get("namespace"), name) is not None:
            raise ApiError.already_exists(rt.plural, name, rt.group)
        for plugin in self.admission:
            plugin(Admission("CREATE", rt, obj, None, internal))
        if dry_run:
            return obj
        return self._commit(rt, "ADDED", obj, None)

    def _has_generation(self, rt: ResourceType) -> bool:
        if rt.group_resource == ("", "pods"):
            return int(self.settings.server_version[1]) >= _POD_GENERATION_SINCE
        return rt.group_resource not in _NO_GENERATION and not rt.group.startswith("rbac.")

    def crd_schema(self, rt: ResourceType) -> dict[str, Any] | None:
        """The openAPIV3Schema of the CRD version *rt* serves (None: none, or not custom)."""
        if not rt.custom:
            return None
        crd = self.table(("apiextensions.k8s.io", "customresourcedefinitions")).get(
            ("", f"{rt.plural}.{rt.group}")
        )
        for version in ((crd or {}).get("spec") or {}).get("versions") or []:
            if version.get("name") == rt.version:
                return (version.get("schema") or {}).get("openAPIV3Schema")
        return None

    def _check_schema(self, rt: ResourceType, obj: dict[str, Any], name: str) -> None:
        """Prune and type-check a client's body against its schema (see :mod:`.schema`)."""
        if rt.custom:
            result = check_custom(self.crd_schema(rt), obj)
        else:
            result = check_builtin(rt, obj)
        self.warnings += refuse_or_warn(rt, name, result, self.field_validation)

    def _check_type_meta(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if kind and kind != rt.kind:
            raise ApiError.bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
            )
        if api_version and api_version.rpartition("/")[0] != rt.group:
            raise ApiError.bad_request(
                f"the API version in the data ({api_version}) does not "
                f"match the expected API version ({rt.api_version})"
            )
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind

    def _check_namespace_open(self, rt: ResourceType, namespace: str, name: str) -> None:
        ns = self.get(self.registry.lookup("", "v1", "namespaces"), None, namespace)  # type: ignore[arg-type]
        if ns is None:
            raise ApiError.not_found("namespaces", namespace)
        if (ns.get("status") or {}).get("phase") == "Terminating":
            raise ApiError.forbidden(
                rt.plural,
                name,
                f"unable to create new content in namespace "
                f"{namespace} because it is being terminated",
                rt.group,
            )

    def _allocate_ip(self) -> str:
        self._next_ip += 1
        return f"10.96.{self._next_ip // 250}.{self._next_ip % 250 + 1}"

    # --- update -----------------------------------------------------------------------------------

    def update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        require_rv: bool | None = None,
    ) -> dict[str, Any]:
        """PUT: replace the object (or only its status through ``/status``)."""
        old = self.require(rt, namespace, name)
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body of the request must be a JSON object")
        meta = body.get("metadata") or {}
        if meta.get("name") and meta["name"] != name:
            raise ApiError.bad_request(
                f"the name of the object ({meta['name']}) does not match "
                f"the name on the URL ({name})"
            )
        if rt.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise ApiError.bad_request(
                "the namespace of the provided object does not match the "
                "namespace sent on the request"
            )
        sent_rv = meta.get("resourceVersion")
        if sent_rv:
            if str(sent_rv) != old["metadata"]["resourceVersion"]:
                raise ApiError.conflict(rt.plural, name, rt.group)
        elif require_rv if require_rv is not None else rt.custom:
            raise ApiError.invalid(
                rt.kind,
                name,
                [
                    (
                        "metadata.resourceVersion",
                        "FieldValueInvalid",
                        "Invalid value: 0x0: must be specified for an update",
                    )
                ],
                rt.group,
            )
        new = copy.deepcopy(body)
        self._check_type_meta(rt, new)
        if subresource == "status":
            status = new.get("status")
            new = copy.deepcopy(old)
            new["status"] = status if status is not None else {}
        elif subresource == "scale":
            new = copy.deepcopy(old)
            new.setdefault("spec", {})["replicas"] = int(
                (body.get("spec") or {}).get("replicas", 0)
            )
        elif rt.has_status:
            _keep_status(old, new)
        return self._replace(rt, old, new, dry_run=dry_run)

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        content_type: str,
        patch: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """PATCH as JSON patch, merge patch or (built-in kinds) strategic merge patch;
        server-side apply is refused with 415 (not emulated: see docs/testing.md)."""
        kind = content_type.split(";")[0].strip().lower()
        accepted = [
            "application/json-patch+json",
            "application/merge-patch+json",
        ]
        if not rt.custom:
            accepted.insert(2, "application/strategic-merge-patch+json")
        if kind == "application/apply-patch+yaml":
            # kubelab does not use server-side apply; field ownership (managedFields, conflicts
            # between managers, removal of fields an applier drops) is not emulated, and a merge
            # patch in its place would let code pass here that fails on a cluster
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the kubeapi test server does not implement server-side apply "
                "(application/apply-patch+yaml): see docs/testing.md; accepted media types "
                f"include: {', '.join(accepted)}",
                {},
            )
        if kind not in accepted:
            raise ApiError.unsupported_media_type(kind, accepted)
        old = self.require(rt, namespace, name)
        if kind == "application/json-patch+json":
            patched = json_patch(old, patch)
        elif not isinstance(patch, dict):
            raise ApiError.bad_request("the body of a merge patch must be a JSON object")
        elif kind == "application/strategic-merge-patch+json":
            patched = strategic_merge_patch(old, patch)
        else:
            patched = merge_patch(old, patch)
        if not isinstance(patched.get("metadata"), dict):
            raise ApiError.bad_request("metadata must be an object")
        sent_rv = patched["metadata"].get("resourceVersion")
        if sent_rv is not None and str(sent_rv) != old["metadata"]["resourceVersion"]:
            raise ApiError.conflict(rt.plural, name, rt.group)
        self._check_type_meta(rt, patched)
        if subresource == "status":
            new = copy.deepcopy(old)
            new["status"] = patched.get("status") or {}
        elif subresource == "scale":
            new = copy.deepcopy(old)
            replicas = (patched.get("spec") or {}).get("replicas")
            new.setdefault("spec", {})["replicas"] = replicas
        else:
            new = patched
            if rt.has_status:
                _keep_status(old, new)
        return self._replace(rt, old, new, dry_run=dry_run)

    def _replace(
        self,
        rt: ResourceType,
        old: dict[str, Any],
        new: dict[str, Any],
        *,
        dry_run: bool = False,
        internal: bool = False,
    ) -> dict[str, Any]:
        """Store *new* in place of *old*, keeping system metadata; the common end of PUT, PATCH and
        controller writes."""
        meta = new.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError.bad_request("metadata must be an object")
        old_meta = old["metadata"]
        if not internal:
            self._check_schema(rt, new, old_meta["name"])
            meta = new.setdefault("metadata", {})
            added = sorted(set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or []))
            if old_meta.get("deletionTimestamp") and added:
                raise ApiError.invalid(
                    rt.kind,
                    old_meta["name"],
                    [
                        (
                            "metadata.finalizers",
                            "FieldValueForbidden",
                            "Forbidden: no new finalizers can be added if the object is being "
                            "deleted, found new finalizers []string{"
                            + ", ".join(f'"{f}"' for f in added)
                            + "}",
                        )
                    ],
                    rt.group,
                )
        for system_field in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "generateName",
        ):
            if system_field in old_meta:
                meta[system_field] = old_meta[system_field]
            else:
                meta.pop(system_field, None)
        meta.pop("resourceVersion", None)
        if rt.group_resource == ("", "services"):
            spec = new.setdefault("spec", {})
            for ip_field in ("clusterIP", "clusterIPs"):
                if not spec.get(ip_field) and ip_field in (old.get("spec") or {}):
                    spec[ip_field] = old["spec"][ip_field]
        if rt.group_resource == ("", "namespaces"):
            # A namespace's phase and finalizers belong to the namespace controller.
            new["status"] = copy.deepcopy(old.get("status") or {})
            new.setdefault("spec", {})["finalizers"] = (old.get("spec") or {}).get("finalizers", [])
        apply_defaults(rt, new, DefaultingContext(self._allocate_ip))
        if not internal:
            validate_update(rt, old, new)
        if "generation" in old_meta and _spec_changed(old, new):
            meta["generation"] = old_meta["generation"] + 1
        if _same(old, new):
            return old  # a no-op write changes nothing, not even the resourceVersion
        for plugin in self.admission:
            plugin(Admission("UPDATE", rt, new, old, internal))
        if dry_run:
            return new
        if (
            meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and not meta.get("deletionGracePeriodSeconds")
            and rt.group_resource != ("", "namespaces")
        ):
            self._commit(rt, "MODIFIED", new, old)
            return self._remove(rt, new)
        return self._commit(rt, "MODIFIED", new, old)

    def write(self, rt: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """A controller's write (status, binding, finalizers): no validation, same bookkeeping."""
        current = self.get(rt, old["metadata"].get("namespace"), old["metadata"]["name"])
        if current is None:
            return old
        return self._replace(rt, current, new, internal=True)

    # --- delete -----------------------------------------------------------------------------------

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        options: DeleteOptions | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """DELETE; returns the object and whether it is gone (False: deletion is pending)."""
        options = options or DeleteOptions()
        obj = self.require(rt, namespace, name)
        meta = obj["metadata"]
        if options.precondition_uid and options.precondition_uid != meta["uid"]:
            raise ApiError.conflict(
                rt.plural,
                name,
                rt.group,
                f"Precondition failed: UID in precondition: "
                f"{options.precondition_uid}, UID in object meta: {meta['uid']}",
            )
        if options.precondition_rv and options.precondition_rv != meta["resourceVersion"]:
            raise ApiError.conflict(
                rt.plural,
                name,
                rt.group,
                f"Precondition failed: ResourceVersion in precondition: "
                f"{options.precondition_rv}, ResourceVersion in object meta: "
                f"{meta['resourceVersion']}",
            )
        for plugin in self.admission:
            plugin(Admission("DELETE", rt, obj, obj))
        if options.dry_run:
            return obj, False
        if rt.group_resource == ("", "namespaces"):
            return self._terminate_namespace(rt, obj), False
        policy = options.propagation_policy or self._default_propagation(rt)
        already_deleting = bool(meta.get("deletionTimestamp"))
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Orphan":
            self.orphan_dependents(meta["uid"])
        elif (
            policy == "Foreground"
            and self.dependents_of(meta["uid"])
            and "foregroundDeletion" not in finalizers
        ):
            finalizers.append("foregroundDeletion")
        grace = self._grace_period(rt, obj, options)
        if already_deleting:
            # A second DELETE can only shorten the grace period (kubelet's final grace-0 delete).
            if grace == 0 and meta.get("deletionGracePeriodSeconds"):
                if not finalizers:
                    return self._remove(rt, obj), True
                new = copy.deepcopy(obj)
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                return self._commit(rt, "MODIFIED", new, obj), False
            return obj, False
        if finalizers or grace:
            new = copy.deepcopy(obj)
            new["metadata"]["deletionTimestamp"] = rfc3339(
                now() + datetime.timedelta(seconds=grace)
            )
            new["metadata"]["deletionGracePeriodSeconds"] = grace
            if finalizers:
                new["metadata"]["finalizers"] = finalizers
            return self._commit(rt, "MODIFIED", new, obj), False
        return self._remove(rt, obj), True

    def returns_deleted_object(self, rt: ResourceType) -> bool:
        return rt.custom or rt.group_resource in _RETURNS_DELETED

    def _default_propagation(self, rt: ResourceType) -> str:
        # batch/v1 Jobs orphan their pods unless told otherwise: a real and surprising default.
        return "Orphan" if rt.group_resource == ("batch", "jobs") else "Background"

    def _grace_period(self, rt: ResourceType, obj: dict[str, Any], options: DeleteOptions) -> int:
        """Pods bound to a node and still running terminate gracefully; nothing else does."""
        if rt.group_resource != ("", "pods"):
            return 0
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
            return 0
        if options.grace_period_seconds is not None:
            return max(0, int(options.grace_period_seconds))
        return int(spec.get("terminationGracePeriodSeconds", 30))

    def _remove(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """The object leaves storage: a DELETED event with a new resourceVersion."""
        final = copy.deepcopy(obj)
        return self._commit(rt, "DELETED", final, obj)

    def remove_now(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        """A controller's final removal (kubelet after termination, GC after finalizers)."""
        current = self.get(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if current is not None and current["metadata"]["uid"] == obj["metadata"]["uid"]:
            self._remove(rt, current)

    def _terminate_namespace(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        if (obj.get("status") or {}).get("phase") == "Terminating":
            return obj
        new = copy.deepcopy(obj)
        new["metadata"]["deletionTimestamp"] = rfc3339()
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        new["status"] = {"phase": "Terminating"}
        return self._commit(rt, "MODIFIED", new, obj)

    # --- owners and dependents --------------------------------------------------------------------

    def dependents_of(self, uid: str) -> list[tuple[ResourceType, dict[str, Any]]]:
        found = []
        for group_resource, obj in self.iter_all():
            refs = obj["metadata"].get("ownerReferences") or []
            if any(ref.get("uid") == uid for ref in refs):
                rt = self.registry.preferred(*group_resource)
                if rt is not None:
                    found.append((rt, obj))
        return found

    def orphan_dependents(self, uid: str) -> None:
        for rt, dependent in self.dependents_of(uid):
            new = copy.deepcopy(dependent)
            new["metadata"]["ownerReferences"] = [
                ref for ref in new["metadata"]["ownerReferences"] if ref.get("uid") != uid
            ]
            if not new["metadata"]["ownerReferences"]:
                del new["metadata"]["ownerReferences"]
            self.write(rt, dependent, new)

    def uid_exists(self, uid: str) -> bool:
        return any(obj["metadata"]["uid"] == uid for _, obj in self.iter_all())


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {
        k: v
        for k, v in obj.get("metadata", {}).items()
        if k not in ("resourceVersion", "managedFields")
    }
    return {**obj, "metadata": meta}


def _same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return _strip(old) == _strip(new)


def _spec_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    def body(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if k not in ("metadata", "status")}

    return body(old) != body(new)


def _keep_status(old: dict[str, Any], new: dict[str, Any]) -> None:
    """A write to the main resource of a kind with a status subresource leaves the status as it
    was (*new*'s is replaced by *old*'s)."""
    if "status" in old:
        new["status"] = copy.deepcopy(old["status"])
    else:
        new.pop("status", None)
