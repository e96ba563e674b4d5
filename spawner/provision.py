"""The user's namespace and what kubelab keeps in it, written by the hub before each spawn.

:func:`namespace_objects` says what the namespace holds (pure: config and user in, API dicts out):
the ResourceQuota (the team's ``user_quota``, or ``quota`` for a shared team namespace) and a
LimitRange, the ``kubelab-user`` ServiceAccount with its Role and RoleBinding, the notebook
ConfigMap (the user's view of the admin config) and the admission policy's params
(``kubelab-policy``). :class:`Provisioner` writes them through the core Kubernetes layer
(:func:`~kubelab.core.kube.apply.create_or_replace` under a
:class:`~kubelab.core.kube.retry.RetryPolicy`), once per hub process per content: a spawn whose
objects are unchanged costs no request.

Errors are spawn errors: a transient API failure that outlasts the policy is a 503 naming the
object, a refusal (403, 422...) a 500 naming it (for 403, the hub's RBAC file too).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from kubernetes_asyncio.client.exceptions import ApiException
from tornado import web

from kubelab.core import admission, objects
from kubelab.core.config import KubelabConfig, dump_config
from kubelab.core.kube import Exists, ObjectApi, RetriesExhausted, RetryPolicy, create_or_replace
from kubelab.spawner import profiles
from kubelab.spawner.base import spawn_error
from kubelab.spawner.profiles import UserInfo

__all__ = ["Provisioner", "namespace_objects"]

#: kind → the method suffix of its typed API (``create_namespaced_<suffix>``...)
_METHODS = {"ResourceQuota": "resource_quota", "LimitRange": "limit_range",
            "ServiceAccount": "service_account", "ConfigMap": "config_map",
            "Role": "role", "RoleBinding": "role_binding"}


def namespace_objects(config: KubelabConfig, user: UserInfo, *, namespace: str,
                      service_account: str, unusable_datasets: Mapping[str, str],
                      policy_params: Any) -> list[dict[str, Any]]:
    """What kubelab keeps in the user's namespace (besides the namespace itself).

    *policy_params(config)* builds the ``kubelab-policy`` ConfigMap from the user's view of the
    config (it needs the spawner's own settings: home claims, the admin's extra volumes)."""
    groups = sorted(user.groups)
    found = config.team_for(groups)
    who = objects.namespace_owner(config, username=user.name, groups=groups)
    team, owner = who["team"], who["user"]
    out: list[dict[str, Any]] = []
    if found is not None and team is not None:
        shared = owner is None
        quota = found[1].quota if shared or found[1].user_quota is None else found[1].user_quota
        rq = objects.make_resource_quota(
            quota, namespace=namespace, gpu_resources=[g.resource for g in config.gpu_types.values()],
            team=team, user=owner)
        if rq is not None:
            out.append(rq)
            out.append(objects.make_limit_range(namespace=namespace, team=team, user=owner))
    out.append(objects.make_service_account(namespace=namespace, name=service_account, team=team, user=owner))
    out.append(objects.make_role(namespace=namespace, team=team, user=owner))
    out.append(objects.make_role_binding(namespace=namespace, service_account=service_account,
                                         team=team, user=owner))
    view = profiles.user_config_view(config, user, unusable_datasets=dict(unusable_datasets))
    if view is not None:
        out.append(objects.make_notebook_config_map(
            dump_config(view), namespace=namespace, username=user.name, team=team))
    out.append(policy_params(view or config))  # the view: already filtered
    return out


def _shared_policy(obj: dict[str, Any]) -> bool:
    """A team's shared namespace's ``kubelab-policy``: every member's grants, merged."""
    meta = obj["metadata"]
    return (obj["kind"] == "ConfigMap" and meta["name"] == admission.POLICY_CONFIG_MAP
            and objects.USER_LABEL not in (meta.get("labels") or {}))


class Provisioner:
    """Writes a namespace's objects for one spawner: *core* and *rbac* are its
    ``CoreV1Api``/``RbacAuthorizationV1Api``, *policy* the retry policy of every call."""

    #: (API server/namespace, kind/name) → fingerprint of what this process last wrote
    ensured: ClassVar[dict[tuple[str, str], str]] = {}

    def __init__(self, core: Any, rbac: Any, *, policy: RetryPolicy, log: logging.Logger | Any,
                 log_name: str) -> None:
        self.core = core
        self.rbac = rbac
        self.policy = policy
        self.log = log
        self.log_name = log_name
        self.host = core.api_client.configuration.host

    def key(self, obj: Mapping[str, Any]) -> tuple[str, str]:
        meta = obj["metadata"]
        # the API server too: one hub process talks to one cluster, tests to many
        return (f"{self.host}/{meta.get('namespace', '')}", f"{obj['kind']}/{meta['name']}")

    async def ensure(self, wanted: list[dict[str, Any]]) -> None:
        """Write each of *wanted* that this process has not written with this content."""
        for obj in wanted:
            key, digest = self.key(obj), objects.fingerprint(obj)
            if self.ensured.get(key) != digest:
                await self.apply(obj)
                self.ensured[key] = digest

    @classmethod
    def forget(cls, host_namespace_suffix: str) -> None:
        """Make the next spawn re-write the objects of namespaces whose key ends so."""
        for key in [k for k in cls.ensured if k[0].endswith(host_namespace_suffix)]:
            cls.ensured.pop(key, None)

    def _object_api(self, obj: dict[str, Any]) -> ObjectApi:
        kind, meta = obj["kind"], obj["metadata"]
        if kind == "Namespace":
            return ObjectApi(create=self.core.create_namespace)
        ns, name = meta["namespace"], meta["name"]
        api = self.rbac if kind in ("Role", "RoleBinding") else self.core
        method = _METHODS[kind]
        create, replace = getattr(api, f"create_namespaced_{method}"), getattr(api, f"replace_namespaced_{method}")
        read = getattr(api, f"read_namespaced_{method}")

        async def read_dict() -> dict[str, Any]:
            found = await read(name, ns)
            return dict(api.api_client.sanitize_for_serialization(found))

        return ObjectApi(create=lambda body: create(ns, body), read=read_dict,
                         replace=lambda body: replace(name, ns, body))

    async def apply(self, obj: dict[str, Any]) -> None:
        """Create *obj*, or replace it when it exists (so quota or role changes take effect);
        a namespace and a ServiceAccount that exist are kept (their labels and secrets are the
        admin's and the token controller's after creation)."""
        kind, meta = obj["kind"], obj["metadata"]
        ns, name = meta.get("namespace"), meta["name"]
        what = f"the {kind} {name!r}" + (f" in namespace {ns!r}" if ns else "")
        exists: Any = Exists.REPLACE
        if kind in ("Namespace", "ServiceAccount"):
            exists = Exists.KEEP
        elif _shared_policy(obj):
            def exists(existing: dict[str, Any]) -> dict[str, Any]:
                return admission.merge_policy_params(obj, {"data": dict(existing.get("data") or {})})

        def on_retry(problem: str, delay: float) -> None:
            self.log.warning("Retrying %s for %s in %.1f s: %s", what, self.log_name, delay, problem)

        try:
            await create_or_replace(obj, self._object_api(obj), policy=self.policy, exists=exists,
                                    on_retry=on_retry)
        except RetriesExhausted as e:
            self.log.error("Giving up on %s for %s: %s", what, self.log_name, e.problem)
            deadline = f"{self.policy.deadline:g} s" if self.policy.deadline is not None else "a while"
            raise spawn_error(
                f"Could not set up your server: {e.problem} when writing {what}, for {deadline}. "
                "Try again in a minute; if it keeps happening, tell your hub admin.",
                reason="kubernetes-api", status=503) from None
        except ApiException as e:
            raise self.failure(what, e) from None

    def failure(self, what: str, e: ApiException) -> web.HTTPError:
        """An API refusal that retrying cannot fix, as a message for the user and the admin."""
        self.log.error("Could not write %s for %s: %s %s", what, self.log_name, e.status, e.reason)
        hint: str
        if e.status == 403:
            hint = ("the hub's service account may not do this: give it the ClusterRole in "
                    "hub_config/hub-rbac.yaml (docs/spawner.md, Hub permissions)")
        else:
            try:
                hint = str(json.loads(e.body or "{}").get("message") or e.reason)
            except (ValueError, AttributeError):
                hint = str(e.reason)
        return spawn_error(
            f"Could not set up your server: the Kubernetes API refused {what} ({e.status}: {hint}). "
            "Please tell your hub admin.", reason="kubernetes-api", status=500)
