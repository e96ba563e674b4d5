"""The HTTP face of the emulator: a kmock handler that speaks the Kubernetes REST API.

We build on kmock's ``KubernetesScaffold`` for what it does well — ``kmock.Request`` records, the
reaction DSL (``cluster.kmock[...] << response`` still overrides any answer) and ``Status`` error
rendering — and replace ``KubernetesEmulator``'s request handling: its path parser cannot read
``/api/v1/namespaces``, and its storage (merge-only updates keyed by name, no resourceVersion, no
selectors, watches without resumption) is the part this package exists to do properly. See
docs/testing.md for the full reasoning.

Request flow: record → fault rules → user kmock reactions → the emulator's handlers. Every answer is
JSON except pod logs; every refusal is a ``Status``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import apps as kmock_apps  # RawHandler._handle: the reaction DSL dispatcher

from .errors import ApiError, status_body
from .faults import WatchDrop
from .requestlog import RecordedRequest
from .resources import ResourceType
from .routing import Route, parse_route
from .schema import FIELD_VALIDATION
from .selectors import match_fields, match_labels, parse_field_selector, parse_label_selector
from .store import DeleteOptions

if TYPE_CHECKING:
    from .emulator import Emulator

__all__ = ["KubeApiHandler"]

log = logging.getLogger(__name__)

_JSON = "application/json"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _json_response(
    obj: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> aiohttp.web.Response:
    return aiohttp.web.Response(
        body=_dumps(obj), status=status, content_type=_JSON, headers=dict(headers or {})
    )


def _error_response(error: ApiError) -> aiohttp.web.Response:
    return _json_response(error.body(), error.status, getattr(error, "headers", None))


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)  # type: ignore[arg-type]
    except ValueError:
        raise ApiError.bad_request(f"invalid value for {name}: {value!r}") from None


#: the options kind a write's query parameters are validated as (for the 422's message)
_OPTIONS_KIND = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions",
                 "DELETE": "DeleteOptions"}


def _not_supported(value: Any, supported: list[str]) -> str:
    shown = f'"{value}"' if isinstance(value, str) else (
        "[]string{" + ", ".join(f'"{v}"' for v in value) + "}")
    return f"Unsupported value: {shown}: supported values: " + ", ".join(
        f'"{v}"' for v in supported)


def _options_invalid(kind: str, causes: list[tuple[str, str, str]]) -> ApiError:
    return ApiError.invalid(kind, "", causes, "meta.k8s.io")


def _write_options(raw: aiohttp.web.BaseRequest) -> bool:
    """Validate a write's ``dryRun`` and ``fieldValidation`` (422 as from the real handlers'
    ``ValidateCreateOptions`` and siblings); True for a dry run."""
    dry_run = raw.query.getall("dryRun", [])
    causes = []
    if any(value != "All" for value in dry_run):
        causes.append(("dryRun", "FieldValueNotSupported", _not_supported(dry_run, ["All"])))
    directive = raw.query.get("fieldValidation")
    if directive and directive not in FIELD_VALIDATION and raw.method != "DELETE":
        causes.append(("fieldValidation", "FieldValueNotSupported",
                       _not_supported(directive, list(FIELD_VALIDATION))))
    if causes:
        raise _options_invalid(_OPTIONS_KIND.get(raw.method, "CreateOptions"), causes)
    return bool(dry_run)


def _list_options(query: Mapping[str, str], watch: bool) -> None:
    """Validate ``resourceVersionMatch`` and ``sendInitialEvents`` as the real server's
    ``ValidateListOptions`` does (422 ListOptions)."""
    match = query.get("resourceVersionMatch") or ""
    rv = query.get("resourceVersion") or ""
    initial = "sendInitialEvents" in query
    causes: list[tuple[str, str, str]] = []

    def forbidden(path: str, why: str) -> None:
        causes.append((path, "FieldValueForbidden", f"Forbidden: {why}"))

    if watch:
        if initial and match != "NotOlderThan":
            forbidden("resourceVersionMatch",
                      "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan")
        if match:
            if not initial:
                forbidden("resourceVersionMatch",
                          "resourceVersionMatch is forbidden for watch unless sendInitialEvents "
                          "is provided")
            if match != "NotOlderThan":
                causes.append(("resourceVersionMatch", "FieldValueNotSupported",
                               _not_supported(match, ["NotOlderThan"])))
            if query.get("continue"):
                forbidden("resourceVersionMatch",
                          "resourceVersionMatch is forbidden when continue is provided")
    else:
        if match:
            if not rv:
                forbidden("resourceVersionMatch",
                          "resourceVersionMatch is forbidden unless resourceVersion is provided")
            if query.get("continue"):
                forbidden("resourceVersionMatch",
                          "resourceVersionMatch is forbidden when continue is provided")
            if match not in ("Exact", "NotOlderThan"):
                causes.append(("resourceVersionMatch", "FieldValueNotSupported",
                               _not_supported(match, ["Exact", "NotOlderThan", ""])))
            if match == "Exact" and rv == "0":
                forbidden("resourceVersionMatch",
                          'resourceVersionMatch "exact" is forbidden for resourceVersion "0"')
        if initial:
            forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list")
    if causes:
        raise _options_invalid("ListOptions", causes)


@attrs.define(kw_only=True)
class KubeApiHandler(kmock.KubernetesScaffold):
    """An aiohttp low-level handler serving one :class:`Emulator`."""

    emulator: Emulator = attrs.field(default=None, repr=False)
    #: tracebacks of unexpected exceptions in the handlers (bugs of the emulator): the pytest
    #: plugin fails the test that caused them
    crashes: list[str] = attrs.field(factory=list)
    #: open watch responses, closed by reset()
    streams: set[aiohttp.web.StreamResponse] = attrs.field(factory=set)

    def __attrs_post_init__(self) -> None:
        # Deliberately not calling the scaffold's: its fallback reactions (a catch-all 404 and a
        # discovery built from reactions) would answer before our handlers. Root's own fields are
        # initialised by the attrs __init__, which is all the reaction DSL needs.
        pass

    # --- entry point ------------------------------------------------------------------------------

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw.read()
        query = dict(raw.query)
        route = parse_route(raw.path, query)
        record = RecordedRequest(
            method=raw.method,
            path=raw.path,
            query=query,
            verb=self._verb(raw.method, route, query),
            watch=route.watch,
            group=route.group,
            version=route.version,
            resource=route.plural,
            namespace=route.namespace,
            name=route.name,
            subresource=route.subresource,
            user_agent=raw.headers.get("User-Agent", ""),
        )
        self.emulator.requests.append(record)
        try:
            delay, failing, drop = self.emulator.faults.pick(raw.method, raw.path, route.watch)
            if delay:
                await asyncio.sleep(delay)
            if failing is not None:
                record.fault = str(failing)
                raise failing.error()
            if self._payloads:
                response = await self._react(raw, body, route, query)
                if response is not None:
                    record.status = response.status
                    return response
            store = self.emulator.store
            store.warnings = []
            store.field_validation = query.get("fieldValidation") or "Warn"
            response = await self._dispatch(raw, body, route, query, drop)
            if not response.prepared:
                for warning in store.warnings:
                    response.headers.add("Warning", warning)
        except ApiError as error:
            response = _error_response(error)
        except kmock.KubernetesError as error:  # raised by a user's kmock reaction
            response = _json_response(
                status_body(error.status, error.reason or "", error.message or "", error.details),
                error.status,
            )
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as error:
            self.crashes.append(f"{raw.method} {raw.path_qs}\n{traceback.format_exc()}")
            log.exception("kubeapi test server crashed on %s %s", raw.method, raw.path_qs)
            response = _json_response(
                status_body(500, "InternalError", f"kubeapi test server bug: {error!r}"), 500
            )
        record.status = response.status
        return response

    async def _react(
        self, raw: aiohttp.web.BaseRequest, body: bytes, route: Route, query: dict[str, str]
    ) -> aiohttp.web.StreamResponse | None:
        """Give the test's kmock reactions the first say; None if none of them answers."""
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        action = {
            "list": kmock.action.LIST,
            "watch": kmock.action.WATCH,
            "get": kmock.action.FETCH,
            "create": kmock.action.CREATE,
            "patch": kmock.action.UPDATE,
            "update": kmock.action.UPDATE,
            "delete": kmock.action.DELETE,
        }.get(self._verb(raw.method, route, query))
        request = kmock.Request(
            id=len(self._requests),
            raw_request=raw,
            url=raw.url,
            method=raw.method,
            params=query,
            headers=dict(raw.headers),
            cookies=dict(raw.cookies),
            body=body,
            text=body.decode(errors="replace"),
            data=data,
            action=action,
            resource=kmock.resource(route.group, route.version, route.plural)
            if route.kind == "resource"
            else None,
            namespace=route.namespace,
            name=route.name,
            subresource=route.subresource,
        )
        self._requests.append(request)
        try:
            return await kmock_apps.RawHandler._handle(self, request)
        except NotImplementedError:
            return None

    @staticmethod
    def _verb(method: str, route: Route, query: Mapping[str, str]) -> str:
        if route.kind in ("discovery", "version", "health"):
            return "discovery"
        if route.kind != "resource":
            return "other"
        if route.subresource == "log":
            return "log"
        if method == "GET":
            if route.watch:
                return "watch"
            return "get" if route.name else "list"
        return {
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if route.name else "deletecollection",
        }.get(method, "other")

    # --- routing ----------------------------------------------------------------------------------

    async def _dispatch(
        self,
        raw: aiohttp.web.BaseRequest,
        body: bytes,
        route: Route,
        query: dict[str, str],
        drop: WatchDrop | None,
    ) -> aiohttp.web.StreamResponse:
        registry = self.emulator.registry
        if route.kind == "version":
            major, minor = self.emulator.settings.server_version
            return _json_response(
                {
                    "major": major,
                    "minor": minor,
                    "gitVersion": f"v{major}.{minor}.0-kubelab-test",
                    "gitCommit": "0" * 40,
                    "gitTreeState": "clean",
                    "buildDate": "2024-08-13T00:00:00Z",
                    "goVersion": "go1.22.5",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                }
            )
        if route.kind == "health":
            return aiohttp.web.Response(text="ok")
        if route.kind == "discovery":
            if raw.method != "GET":
                raise ApiError.method_not_allowed()
            if route.group is None:
                if raw.path.rstrip("/") == "":
                    return _json_response(
                        {
                            "paths": sorted(
                                [
                                    "/api",
                                    "/api/v1",
                                    "/apis",
                                    "/version",
                                    "/healthz",
                                    "/livez",
                                    "/readyz",
                                ]
                                + [f"/apis/{g}" for g in registry.groups()]
                            )
                        }
                    )
                return _json_response(registry.api_group_list())
            if route.group == "" and route.version is None:
                return _json_response(registry.api_versions())
            if route.version is None:
                doc = registry.api_group(route.group)
            else:
                doc = registry.api_resource_list(route.group, route.version)
            if doc is None:
                raise ApiError.no_route()
            return _json_response(doc)
        if route.kind != "resource":
            raise ApiError.no_route()
        rt = registry.lookup(route.group or "", route.version or "", route.plural or "")
        if rt is None:
            raise ApiError.no_route()
        if route.namespace is not None and not rt.namespaced:
            raise ApiError.no_route()
        if route.subresource and route.subresource not in rt.subresources:
            raise ApiError.no_route()
        if rt.namespaced and route.name is not None and route.namespace is None:
            raise ApiError.no_route()
        method = raw.method
        if route.subresource == "eviction" and method != "POST":
            raise ApiError.method_not_allowed()
        if route.subresource == "log":
            if method != "GET":
                raise ApiError.method_not_allowed()
            return await self._serve_log(raw, rt, route, query)
        if route.name is None:
            if method == "GET":
                _list_options(query, route.watch)
                if route.watch:
                    return await self._serve_watch(raw, rt, route, query, drop)
                return self._serve_list(rt, route, query)
            if rt.namespaced and route.namespace is None and method in ("POST", "DELETE"):
                # a namespaced resource's cluster-wide URL serves list and watch only
                raise ApiError.method_not_allowed()
            if method == "POST":
                dry_run = _write_options(raw)
                obj = self.emulator.store.create(
                    rt, self._body(raw, body), route.namespace, dry_run=dry_run
                )
                return _json_response(self._present(rt, obj), 201)
            if method == "DELETE":
                return self._serve_delete_collection(raw, rt, route, query, body)
            raise ApiError.method_not_allowed()
        if route.watch:
            # A watch on one object: the deprecated /watch/ path or ?watch=1 on an object URL.
            named = Route(
                route.kind,
                route.group,
                route.version,
                route.plural,
                route.namespace,
                None,
                None,
                True,
            )
            query = {
                **query,
                "fieldSelector": ",".join(
                    filter(None, [query.get("fieldSelector"), f"metadata.name={route.name}"])
                ),
            }
            return await self._serve_watch(raw, rt, named, query, drop)
        store = self.emulator.store
        if method == "POST" and route.subresource == "eviction":
            _write_options(raw)
            return self._serve_eviction(raw, rt, route, body)
        dry_run = _write_options(raw) if method != "GET" else False
        if method == "GET":
            obj = store.require(rt, route.namespace, route.name)
            if route.subresource == "scale":
                return _json_response(self._scale(rt, obj))
            return _json_response(self._present(rt, obj))
        if method == "PUT":
            obj = store.update(
                rt,
                route.namespace,
                route.name,
                self._body(raw, body),
                subresource=route.subresource,
                dry_run=dry_run,
            )
            return _json_response(
                self._scale(rt, obj) if route.subresource == "scale" else self._present(rt, obj)
            )
        if method == "PATCH":
            obj = store.patch(
                rt,
                route.namespace,
                route.name,
                raw.headers.get("Content-Type", ""),
                self._body(raw, body),
                subresource=route.subresource,
                dry_run=dry_run,
            )
            return _json_response(
                self._scale(rt, obj) if route.subresource == "scale" else self._present(rt, obj)
            )
        if method == "DELETE":
            if route.subresource:
                raise ApiError.method_not_allowed()
            options = self._delete_options(raw, body, query)
            obj, gone = store.delete(rt, route.namespace, route.name, options)
            headers = {}
            if rt.group_resource == ("batch", "jobs") and options.propagation_policy is None:
                headers["Warning"] = (
                    '299 - "child pods are preserved by default when jobs are '
                    "deleted; set propagationPolicy=Background to remove them or "
                    'set propagationPolicy=Orphan to suppress this warning"'
                )
            if gone and not store.returns_deleted_object(rt):
                return _json_response(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {
                            "name": route.name,
                            "group": rt.group,
                            "kind": rt.plural,
                            "uid": obj["metadata"]["uid"],
                        },
                    },
                    headers=headers,
                )
            return _json_response(self._present(rt, obj), 200, headers)
        raise ApiError.method_not_allowed()

    # --- bodies and presentation ------------------------------------------------------------------

    @staticmethod
    def _body(raw: aiohttp.web.BaseRequest, body: bytes) -> Any:
        content_type = raw.headers.get("Content-Type", _JSON).split(";")[0].strip().lower()
        if "protobuf" in content_type:
            raise ApiError.unsupported_media_type(content_type, [_JSON, "application/yaml"])
        if not body:
            raise ApiError.bad_request("the body of the request is empty")
        try:
            if "yaml" in content_type:
                return yaml.safe_load(body)
            return json.loads(body)
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError.bad_request(
                f"the body of the request cannot be decoded: {exc}"
            ) from None

    @staticmethod
    def _present(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as served at *rt*'s version (CRD versions share storage, like the "None"
        conversion strategy)."""
        if obj.get("apiVersion") != rt.api_version:
            return {**obj, "apiVersion": rt.api_version}
        return obj

    @staticmethod
    def _scale(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        selector = (obj.get("spec") or {}).get("selector") or {}
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": ",".join(
                    f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()
                ),
            },
        }

    def _delete_options(
        self, raw: aiohttp.web.BaseRequest, body: bytes, query: Mapping[str, str]
    ) -> DeleteOptions:
        data: dict[str, Any] = {}
        if body:
            try:
                data = json.loads(body) or {}
            except ValueError:
                raise ApiError.bad_request("the body of the request cannot be decoded") from None
        grace = _int_param(query, "gracePeriodSeconds")
        if grace is None and data.get("gracePeriodSeconds") is not None:
            grace = int(data["gracePeriodSeconds"])
        policy = query.get("propagationPolicy") or data.get("propagationPolicy")
        orphan = query.get("orphanDependents", data.get("orphanDependents"))
        body_dry_run = data.get("dryRun") or []
        causes: list[tuple[str, str, str]] = []
        if policy is not None and orphan is not None:
            causes.append(("propagationPolicy", "FieldValueInvalid",
                           f'Invalid value: "{policy}": orphanDependents and deletionPropagation '
                           "cannot be both set"))
        if policy is not None and policy not in ("Foreground", "Background", "Orphan"):
            causes.append(("propagationPolicy", "FieldValueNotSupported", _not_supported(
                policy, ["Foreground", "Background", "Orphan", "nil"])))
        if not isinstance(body_dry_run, list) or any(v != "All" for v in body_dry_run):
            causes.append(("dryRun", "FieldValueNotSupported",
                           _not_supported(body_dry_run if isinstance(body_dry_run, list)
                                          else [str(body_dry_run)], ["All"])))
        if causes:
            # checked before the object is looked up, as the real DELETE handler does
            raise _options_invalid("DeleteOptions", causes)
        if policy is None and orphan is not None:
            policy = "Orphan" if str(orphan).lower() == "true" else "Background"
        preconditions = data.get("preconditions") or {}
        dry_run = "All" in raw.query.getall("dryRun", []) or "All" in body_dry_run
        return DeleteOptions(
            grace, policy, preconditions.get("uid"), preconditions.get("resourceVersion"), dry_run
        )

    # --- eviction ---------------------------------------------------------------------------------

    def _serve_eviction(
        self, raw: aiohttp.web.BaseRequest, rt: ResourceType, route: Route, body: bytes
    ) -> aiohttp.web.Response:
        """``POST pods/NAME/eviction``: delete the pod unless a PodDisruptionBudget forbids it
        (429, as the real eviction REST does); pods not running are evicted regardless."""
        assert route.name is not None
        eviction = self._body(raw, body)
        if not isinstance(eviction, dict) or eviction.get("kind", "Eviction") != "Eviction":
            raise ApiError.bad_request("the body of an eviction must be a policy/v1 Eviction")
        name = (eviction.get("metadata") or {}).get("name")
        if name and name != route.name:
            raise ApiError.bad_request("name in URL does not match name in Eviction object")
        store = self.emulator.store
        pod = store.require(rt, route.namespace, route.name)
        status = pod.get("status") or {}
        ignore_budget = status.get("phase") in ("Succeeded", "Failed", "Pending") or bool(
            pod["metadata"].get("deletionTimestamp")
        )
        if not ignore_budget:
            self._check_disruption_budget(pod)
        data = eviction.get("deleteOptions") or {}
        options = DeleteOptions(
            data.get("gracePeriodSeconds"),
            data.get("propagationPolicy"),
            (data.get("preconditions") or {}).get("uid"),
            (data.get("preconditions") or {}).get("resourceVersion"),
            "All" in (data.get("dryRun") or []) or "All" in raw.query.getall("dryRun", []),
        )
        store.delete(rt, route.namespace, route.name, options)
        return _json_response(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
             "code": 201},
            201,
        )

    def _check_disruption_budget(self, pod: dict[str, Any]) -> None:
        from .selectors import selector_from_object

        store = self.emulator.store
        namespace = pod["metadata"]["namespace"]
        labels = pod["metadata"].get("labels") or {}
        pdb_rt = self.emulator.registry.lookup("policy", "v1", "poddisruptionbudgets")
        pod_rt = self.emulator.registry.lookup("", "v1", "pods")
        assert pdb_rt is not None and pod_rt is not None
        budgets = []
        for pdb in store.list(pdb_rt, namespace):
            selector = selector_from_object((pdb.get("spec") or {}).get("selector"))
            if selector is not None and match_labels(selector, labels):
                budgets.append((pdb, selector))
        if not budgets:
            return
        if len(budgets) > 1:
            raise ApiError(500, "InternalError", "This pod has more than one "
                           "PodDisruptionBudget, which the eviction subresource does not "
                           "support.", {})
        pdb, selector = budgets[0]
        pods = [p for p in store.list(pod_rt, namespace)
                if match_labels(selector, p["metadata"].get("labels") or {})
                and not p["metadata"].get("deletionTimestamp")]
        healthy = sum(
            1 for p in pods
            if (p.get("status") or {}).get("phase") == "Running"
            and any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (p.get("status") or {}).get("conditions") or [])
        )
        expected = len(pods)
        spec = pdb.get("spec") or {}

        def count(value: Any) -> int:
            if isinstance(value, str) and value.endswith("%"):
                return -(-int(value[:-1]) * expected // 100)  # rounded up
            return int(value)

        if spec.get("maxUnavailable") is not None:
            desired = max(expected - count(spec["maxUnavailable"]), 0)
        else:
            desired = count(spec.get("minAvailable", 1))
        if healthy - desired <= 0:
            raise ApiError(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
                {"causes": [{"reason": "DisruptionBudget",
                             "message": f"The disruption budget {pdb['metadata']['name']} needs "
                                        f"{desired} healthy pods and has {healthy} currently"}]},
            )

    # --- list -------------------------------------------------------------------------------------

    def _selected(
        self, rt: ResourceType, route: Route, query: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"), rt.plural)
        return [
            obj
            for obj in self.emulator.store.list(rt, route.namespace)
            if match_labels(labels, obj["metadata"].get("labels")) and match_fields(fields, obj)
        ]

    def _serve_list(
        self, rt: ResourceType, route: Route, query: Mapping[str, str]
    ) -> aiohttp.web.Response:
        items = self._selected(rt, route, query)
        limit = _int_param(query, "limit")
        meta: dict[str, Any] = {"resourceVersion": str(self.emulator.store.rv)}
        token = query.get("continue")
        if token:
            try:
                start = json.loads(base64.urlsafe_b64decode(token.encode()))
            except ValueError:
                raise ApiError.bad_request("continue key is not valid") from None
            if int(start.get("rv", 0)) < self.emulator.store.compacted_rv:
                raise ApiError(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to "
                    "display a consistent list result. You can start a new list "
                    "without the continue parameter.",
                    {},
                )
            after = tuple(start["key"])
            items = [
                o
                for o in items
                if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > after
            ]
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(
                _dumps(
                    {"rv": self.emulator.store.rv, "key": [last.get("namespace", ""), last["name"]]}
                )
            ).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        if rt.custom:
            items = [self._present(rt, obj) for obj in items]
        else:  # built-in lists carry no kind/apiVersion on their items, as on a real server
            items = [
                {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")} for obj in items
            ]
        return _json_response(
            {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version,
                "metadata": meta,
                "items": items,
            }
        )

    def _serve_delete_collection(
        self,
        raw: aiohttp.web.BaseRequest,
        rt: ResourceType,
        route: Route,
        query: Mapping[str, str],
        body: bytes,
    ) -> aiohttp.web.Response:
        if "deletecollection" not in rt.verbs:
            raise ApiError.method_not_allowed()
        _write_options(raw)
        _list_options(query, False)
        options = self._delete_options(raw, body, query)
        deleted = []
        for obj in self._selected(rt, route, query):
            with contextlib.suppress(ApiError):
                deleted.append(
                    self.emulator.store.delete(
                        rt, obj["metadata"].get("namespace"), obj["metadata"]["name"], options
                    )[0]
                )
        return _json_response(
            {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(self.emulator.store.rv)},
                "items": deleted,
            }
        )

    # --- watch ------------------------------------------------------------------------------------

    async def _serve_watch(
        self,
        raw: aiohttp.web.BaseRequest,
        rt: ResourceType,
        route: Route,
        query: Mapping[str, str],
        drop: WatchDrop | None,
    ) -> aiohttp.web.StreamResponse:
        store = self.emulator.store
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"), rt.plural)
        timeout = _int_param(query, "timeoutSeconds")
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("true", "1")
        initial_end = query.get("sendInitialEvents", "").lower() in ("true", "1")
        rv_text = query.get("resourceVersion") or ""
        since = (
            None if rv_text in ("", "0") or initial_end else _int_param(query, "resourceVersion")
        )
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": _JSON})
        response.enable_chunked_encoding()
        try:
            watcher, initial = store.open_watch(rt, route.namespace, labels, fields, since)
        except ApiError as gone:
            # A too-old resourceVersion is a 200 response carrying one ERROR event, as from a real
            # server's watch cache.
            await response.prepare(raw)
            await response.write(_dumps({"type": "ERROR", "object": gone.body()}) + b"\n")
            await response.write_eof()
            return response
        self.streams.add(response)
        await response.prepare(raw)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + timeout if timeout else None
        drop_at = started + drop.after_seconds if drop and drop.after_seconds is not None else None
        sent = 0

        async def send(event_type: str, obj: dict[str, Any]) -> bool:
            """Write one event; False when a scripted drop ends the stream here."""
            nonlocal sent
            if drop is not None and drop.after_events is not None and sent >= drop.after_events:
                return False
            await response.write(
                _dumps({"type": event_type, "object": self._present(rt, obj)}) + b"\n"
            )
            sent += 1
            return True

        def bookmark(annotations: dict[str, str] | None = None) -> dict[str, Any]:
            meta: dict[str, Any] = {"resourceVersion": str(store.rv)}
            if annotations:
                meta["annotations"] = annotations
            return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}

        try:
            dropped = False
            for event_type, obj, _ in initial:
                if not await send(event_type, obj):
                    dropped = True
                    break
            if not dropped and initial_end and bookmarks:
                await response.write(
                    _dumps(
                        {
                            "type": "BOOKMARK",
                            "object": bookmark({"k8s.io/initial-events-end": "true"}),
                        }
                    )
                    + b"\n"
                )
            while not dropped:
                now = loop.time()
                waits = [
                    self.emulator.settings.bookmark_interval if bookmarks else None,
                    deadline - now if deadline is not None else None,
                    drop_at - now if drop_at is not None else None,
                ]
                wait = min((w for w in waits if w is not None), default=None)
                try:
                    item = (
                        await asyncio.wait_for(watcher.queue.get(), max(wait, 0))
                        if wait is not None
                        else await watcher.queue.get()
                    )
                except asyncio.TimeoutError:
                    now = loop.time()
                    if deadline is not None and now >= deadline:
                        break  # timeoutSeconds: a clean end of the stream
                    if drop_at is not None and now >= drop_at:
                        dropped = True
                        break
                    if bookmarks and watcher.queue.empty():
                        await response.write(
                            _dumps({"type": "BOOKMARK", "object": bookmark()}) + b"\n"
                        )
                    continue
                if item is None:  # the server is resetting: end the stream
                    break
                if not await send(item[0], item[1]):
                    dropped = True
            if dropped and drop is not None:
                await self._break_stream(raw, response, drop, rt)
                return response
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        finally:
            store.watchers.discard(watcher)
            self.streams.discard(response)
        return response

    async def _break_stream(
        self,
        raw: aiohttp.web.BaseRequest,
        response: aiohttp.web.StreamResponse,
        drop: WatchDrop,
        rt: ResourceType,
    ) -> None:
        if drop.mode == "gone":
            store = self.emulator.store
            error = ApiError.gone(max(store.compacted_rv, 1), store.compacted_rv + 1)
            await response.write(_dumps({"type": "ERROR", "object": error.body()}) + b"\n")
            await response.write_eof()
        elif drop.mode == "eof":
            await response.write_eof()
        else:
            # Close the TCP connection without the final chunk: the client sees a broken payload,
            # like a watch cut by a load balancer or an API server restart.
            transport = raw.transport
            if transport is not None:
                transport.abort()

    # --- pod logs ---------------------------------------------------------------------------------

    async def _serve_log(
        self, raw: aiohttp.web.BaseRequest, rt: ResourceType, route: Route, query: Mapping[str, str]
    ) -> aiohttp.web.StreamResponse:
        assert route.name is not None
        pod = self.emulator.store.require(rt, route.namespace, route.name)
        kubelet = self.emulator.kubelet
        container = kubelet.log_container(pod, query.get("container"))
        previous = query.get("previous", "").lower() in ("true", "1")
        buffer = kubelet.log_buffer(pod, container, previous=previous)
        tail = _int_param(query, "tailLines")
        limit_bytes = _int_param(query, "limitBytes")
        since_seconds = _int_param(query, "sinceSeconds")
        timestamps = query.get("timestamps", "").lower() in ("true", "1")
        follow = query.get("follow", "").lower() in ("true", "1")
        lines = buffer.lines[-tail:] if tail is not None and tail >= 0 else list(buffer.lines)
        if tail == 0:
            lines = []
        if since_seconds is not None:
            cutoff = time.time() - since_seconds
            lines = [line for line in lines if line[0] >= cutoff]

        def render(line: tuple[float, str]) -> bytes:
            text = line[1] + "\n"
            if timestamps:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(line[0]))
                text = f"{stamp}.{int(line[0] % 1 * 1e9):09d}Z {text}"
            return text.encode()

        if not follow:
            data = b"".join(render(line) for line in lines)
            if limit_bytes is not None:
                data = data[:limit_bytes]
            return aiohttp.web.Response(body=data, content_type="text/plain")
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(raw)
        self.streams.add(response)
        written = 0
        try:
            position = len(buffer.lines)
            for line in lines:
                chunk = render(line)
                await response.write(chunk)
                written += len(chunk)
            while not buffer.closed and not kubelet.resetting:
                if limit_bytes is not None and written >= limit_bytes:
                    break
                await buffer.wait()
                for line in buffer.lines[position:]:
                    chunk = render(line)
                    await response.write(chunk)
                    written += len(chunk)
                position = len(buffer.lines)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self.streams.discard(response)
        return response
