"""Pure builders of the Kubernetes objects kubelab creates, as API dicts (camelCase).

Like ``kubespawner/objects.py``: keyword-only functions that return objects and touch no API, so
tests compare the serialized dicts and every caller (the notebook spawner, jobs, serving) builds
the same labels, volumes and security settings. The notebook spawner applies them to KubeSpawner's
pod; jobs and model servers (later issues) put them into their pod templates.

Security choices carry a "why" comment where they are made.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

from kubelab.core.config import Dataset, KubelabConfig, PodSecurity, Quota, VolumeSource
from kubelab.core.paths import NOTEBOOK_CONFIG_FILE
from kubelab.core.quantity import parse_quantity

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "kubelab"
USER_LABEL = "kubelab.dev/user"
TEAM_LABEL = "kubelab.dev/team"
KIND_LABEL = "kubelab.dev/kind"  # notebook, job, serving
#: the exact JupyterHub user name (label values cannot hold every name)
USER_ANNOTATION = "kubelab.dev/username"

SERVICE_ACCOUNT = "kubelab-user"
ROLE = "kubelab-user"
NOTEBOOK_CONFIG_MAP = "kubelab-notebook"
RESOURCE_QUOTA = "kubelab-quota"
LIMIT_RANGE = "kubelab-defaults"
SHM_VOLUME = "kubelab-shm"
DATASET_VOLUME_PREFIX = "kubelab-data-"


# --------------------------------------------------------------------------------------------------
# Names and labels


def _digest(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def safe_label_value(text: str) -> str:
    """*text* as a label value (≤ 63 chars of [A-Za-z0-9._-], alphanumeric at both ends).

    Lossy conversions get a hash suffix, so two different names never share a label value.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", text).strip("-._")
    if safe == text and 0 < len(safe) <= 63:
        return safe
    return f"{safe[:54].rstrip('-._')}-{_digest(text)}".lstrip("-")


def safe_dns_label(text: str) -> str:
    """*text* as a DNS label (≤ 63 chars of [a-z0-9-]), hash-suffixed when lossy."""
    safe = re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")
    if safe == text and 0 < len(safe) <= 63:
        return safe
    return f"{safe[:54].rstrip('-')}-{_digest(text)}".lstrip("-")


def labels(
    *, user: str | None = None, team: str | None = None, kind: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """kubelab's labels: managed-by always, user/team/kind when given (values made label-safe)."""
    out = {MANAGED_BY_LABEL: MANAGED_BY}
    if user is not None:
        out[USER_LABEL] = safe_label_value(user)
    if team is not None:
        out[TEAM_LABEL] = safe_label_value(team)
    if kind is not None:
        out[KIND_LABEL] = kind
    if extra:
        out.update(extra)
    return out


def user_namespace(config: KubelabConfig, *, username: str, groups: Sequence[str]) -> tuple[str, str | None]:
    """The namespace for *username* (from their team's pattern, else ``default_namespace``), and
    the team name or None. Placeholders are expanded with DNS-safe values."""
    found = config.team_for(groups)
    team_name, pattern = (found[0], found[1].namespace) if found else (None, config.default_namespace)
    name = pattern.format(username=safe_dns_label(username), team=safe_dns_label(team_name or "none"))
    if len(name) > 63:
        name = f"{name[:54].rstrip('-')}-{_digest(name)}"
    return name, team_name


class Owner(TypedDict):
    """Whose a namespace's objects are: the ``user`` and ``team`` of their labels."""

    user: str | None
    team: str | None


def namespace_owner(config: KubelabConfig, *, username: str, groups: Sequence[str]) -> Owner:
    """``{"user": ..., "team": ...}`` for the labels of what kubelab keeps in the user's namespace:
    the user is None when the team shares one namespace (no ``{username}`` in its pattern)."""
    found = config.team_for(groups)
    shared = found is not None and "{username}" not in found[1].namespace
    return {"user": None if shared else username, "team": found[0] if found else None}


def _obj(api_version: str, kind: str, name: str, namespace: str | None, lbls: Mapping[str, str],
         annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(lbls)}
    if namespace is not None:
        meta["namespace"] = namespace
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": api_version, "kind": kind, "metadata": meta}


# --------------------------------------------------------------------------------------------------
# Namespace, quota, service account


def make_namespace(
    name: str, *, pod_security: PodSecurity, user: str | None = None, team: str | None = None,
) -> dict[str, Any]:
    """The user's (or team's) namespace, labelled for Pod Security admission.

    Why: the ``pod-security.kubernetes.io/enforce`` label makes the API server itself refuse any
    pod below the configured level in this namespace — including pods the user creates through
    the Role below — so the checks do not rest on kubelab alone.
    """
    lbls = labels(user=user, team=team)
    level = pod_security.level
    lbls.update({
        "pod-security.kubernetes.io/enforce": level,
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": level,
        "pod-security.kubernetes.io/audit": level,
    })
    return _obj("v1", "Namespace", name, None, lbls)


def quota_hard(quota: Quota, *, gpu_resources: Iterable[str]) -> dict[str, str]:
    """``ResourceQuota.spec.hard`` for *quota*.

    GPUs: extended resources are quota'd by request only (``requests.<resource>``). The config's
    ``gpus`` counts all GPU types together, which one ResourceQuota cannot express when types use
    different resource names; each resource gets the whole figure (the spawner checks the sum).
    """
    hard: dict[str, str] = {}
    if quota.gpus is not None:
        for resource in sorted(set(gpu_resources)):
            hard[f"requests.{resource}"] = str(quota.gpus)
    if quota.cpu is not None:
        hard["requests.cpu"] = quota.cpu
        hard["limits.cpu"] = quota.cpu
    if quota.memory is not None:
        hard["requests.memory"] = quota.memory
        hard["limits.memory"] = quota.memory
    if quota.pods is not None:
        hard["pods"] = str(quota.pods)
    return hard


def make_resource_quota(
    quota: Quota, *, namespace: str, gpu_resources: Iterable[str], user: str | None = None,
    team: str | None = None, name: str = RESOURCE_QUOTA,
) -> dict[str, Any] | None:
    """A ResourceQuota from *quota*, or None when it sets nothing."""
    hard = quota_hard(quota, gpu_resources=gpu_resources)
    if not hard:
        return None
    obj = _obj("v1", "ResourceQuota", name, namespace, labels(user=user, team=team))
    obj["spec"] = {"hard": hard}
    return obj


def make_limit_range(
    *, namespace: str, cpu: str = "100m", memory: str = "256Mi", user: str | None = None,
    team: str | None = None,
) -> dict[str, Any]:
    """Default requests/limits for containers that set none.

    Why: once a ResourceQuota limits ``requests.cpu``/``limits.memory``, the API server refuses
    pods that do not set them; this gives such pods (a user's ad-hoc pod) small defaults instead.
    """
    obj = _obj("v1", "LimitRange", LIMIT_RANGE, namespace, labels(user=user, team=team))
    obj["spec"] = {"limits": [{
        "type": "Container",
        "defaultRequest": {"cpu": cpu, "memory": memory},
        "default": {"cpu": cpu, "memory": memory},
    }]}
    return obj


def make_service_account(*, namespace: str, name: str = SERVICE_ACCOUNT, user: str | None = None,
                         team: str | None = None) -> dict[str, Any]:
    obj = _obj("v1", "ServiceAccount", name, namespace, labels(user=user, team=team))
    # Why: the token is mounted only where a pod asks for it (the notebook does: it submits jobs);
    # pods that only serve a model never get API credentials by accident.
    obj["automountServiceAccountToken"] = False
    return obj


#: what a user's notebook may do in its own namespace (and nothing outside it)
ROLE_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["batch"], "resources": ["jobs"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
    {"apiGroups": ["apps"], "resources": ["deployments"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["services"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
    # the job API uses Kubeflow's kinds when the cluster serves them (docs/jobs.md)
    {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
    {"apiGroups": ["kubeflow.org"], "resources": ["pytorchjobs"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
    # Why no "create" on pods: pods come from Jobs and Deployments (whose templates the API
    # server checks against the namespace's Pod Security level); the user may look at and
    # delete them (to restart a stuck worker), not start bare pods.
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get", "list", "watch"]},
    # read-only: the job API checks a submit against the namespace's quota before creating it
    {"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["get", "list", "watch"]},
    # Why no configmaps: the notebook reads its view of the admin config from the mounted file;
    # in a team's shared namespace, API access would let members read each other's views.
]


def make_role(*, namespace: str, name: str = ROLE, extra_rules: Sequence[Mapping[str, Any]] = (),
              user: str | None = None, team: str | None = None) -> dict[str, Any]:
    """The Role of the user's service account: kubelab jobs, deployments, services, pods
    (read/delete), pods/log and events in *namespace* only. No secrets, no RBAC, no namespaces:
    the service account cannot widen its own rights or read other credentials."""
    obj = _obj("rbac.authorization.k8s.io/v1", "Role", name, namespace, labels(user=user, team=team))
    obj["rules"] = [dict(r) for r in (*ROLE_RULES, *extra_rules)]
    return obj


def make_role_binding(*, namespace: str, name: str = ROLE, role: str = ROLE,
                      service_account: str = SERVICE_ACCOUNT, user: str | None = None,
                      team: str | None = None) -> dict[str, Any]:
    obj = _obj("rbac.authorization.k8s.io/v1", "RoleBinding", name, namespace, labels(user=user, team=team))
    obj["roleRef"] = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role}
    obj["subjects"] = [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]
    return obj


# --------------------------------------------------------------------------------------------------
# Pod pieces


def restricted_security_context(pod_security: PodSecurity) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod securityContext, container securityContext) for the configured level.

    ``restricted`` meets the Pod Security "restricted" standard; ``baseline`` and ``privileged``
    keep the same user ids but leave the rest to the admin's decision.
    """
    pod: dict[str, Any] = {
        "runAsUser": pod_security.run_as_user,
        "runAsGroup": pod_security.run_as_group,
        "fsGroup": pod_security.fs_group,
        # Why: only chown volumes whose root has the wrong owner, not every file of a large
        # dataset PVC on every start.
        "fsGroupChangePolicy": "OnRootMismatch",
    }
    container: dict[str, Any] = {"runAsUser": pod_security.run_as_user, "runAsGroup": pod_security.run_as_group}
    if pod_security.level == "restricted":
        # Why: a notebook runs arbitrary user code; running as root, gaining privileges through
        # setuid binaries, keeping Linux capabilities or unconfined syscalls would turn a bug in
        # a container runtime into a node compromise.
        pod["runAsNonRoot"] = True
        pod["seccompProfile"] = {"type": "RuntimeDefault"}
        container.update({
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        })
    return pod, container


def shm_volume(size: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A memory-backed ``/dev/shm`` of *size* (volume, mount).

    Why: the container runtime's default ``/dev/shm`` is 64 MiB; PyTorch's DataLoader workers
    pass batches through it and crash ("bus error") well before a GPU is busy. The size limit
    counts against the pod's memory limit, so it cannot exceed what the profile grants.
    """
    empty_dir: dict[str, Any] = {"medium": "Memory"}
    if size:
        empty_dir["sizeLimit"] = size
    return {"name": SHM_VOLUME, "emptyDir": empty_dir}, {"name": SHM_VOLUME, "mountPath": "/dev/shm"}


def dataset_volume_name(name: str) -> str:
    return DATASET_VOLUME_PREFIX + name


def dataset_volume(
    dataset: Dataset, *, read_only: bool | None = None, mount_path: str | None = None,
    sub_path: str | None = None, username: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(volume, volumeMount) for *dataset*.

    Read-only datasets are read-only twice: on the mount and, where the source supports it, on
    the volume itself (so a second mount of the same volume cannot be writable). ``{username}``
    in a PVC claim name is expanded (per-user claims). *sub_path* defaults to the dataset's.
    """
    ro = dataset.read_only if read_only is None else read_only
    name = dataset_volume_name(dataset.name)
    source = dataset.source if username is None else expand_source(dataset.source, username=username)
    volume: dict[str, Any] = {"name": name}
    if source.pvc is not None:
        volume["persistentVolumeClaim"] = {"claimName": source.pvc.claim_name, "readOnly": ro}
    elif source.nfs is not None:
        volume["nfs"] = {"server": source.nfs.server, "path": source.nfs.path, "readOnly": ro}
    elif source.csi is not None:
        csi: dict[str, Any] = {"driver": source.csi.driver, "readOnly": ro}
        if source.csi.volume_attributes:
            csi["volumeAttributes"] = dict(source.csi.volume_attributes)
        if source.csi.fs_type:
            csi["fsType"] = source.csi.fs_type
        volume["csi"] = csi
    elif source.host_path is not None:
        volume["hostPath"] = {"path": source.host_path.path, "type": "Directory"}
    mount: dict[str, Any] = {"name": name, "mountPath": mount_path or dataset.mount_path, "readOnly": ro}
    path = sub_path if sub_path is not None else dataset.sub_path
    if path:
        mount["subPath"] = path
    return volume, mount


def expand_source(source: VolumeSource, *, username: str) -> VolumeSource:
    """*source* with ``{username}`` in a PVC's claim name expanded (per-user claims), DNS-safe."""
    if source.pvc is None or "{username}" not in source.pvc.claim_name:
        return source
    claim = source.pvc.claim_name.replace("{username}", safe_dns_label(username))
    return source.model_copy(update={"pvc": source.pvc.model_copy(update={"claim_name": claim})})


def safe_path_segment(name: str) -> str:
    """A user name as one path segment: lower-case, [a-z0-9-] only, hash-suffixed when lossy
    (what ``{username}`` becomes in a dataset's ``sub_path``)."""
    safe = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-") or "user"
    if safe != name:
        safe = f"{safe[:48]}-{_digest(name)}"
    return safe


def expand_user_path(text: str, *, username: str) -> str:
    """*text* (a dataset's ``sub_path``) with ``{username}`` expanded (per-user directories)."""
    return text.replace("{username}", safe_path_segment(username))


def dataset_for_user(dataset: Dataset, *, username: str) -> Dataset:
    """*dataset* as *username* mounts it: ``{username}`` expanded in its ``sub_path``
    (:func:`expand_user_path`) and in a PVC's claim name (:func:`expand_source`), as in their
    notebook pod. Expanding twice changes nothing."""
    changes: dict[str, Any] = {}
    source = expand_source(dataset.source, username=username)
    if source is not dataset.source:
        changes["source"] = source
    if dataset.sub_path and "{username}" in dataset.sub_path:
        changes["sub_path"] = expand_user_path(dataset.sub_path, username=username)
    return dataset.model_copy(update=changes) if changes else dataset


def volume_allowed(dataset: Dataset, level: str) -> str | None:
    """Why *dataset* cannot be mounted under Pod Security *level*, or None when it can."""
    kind = dataset.source.kind
    if kind == "host_path" and level != "privileged":
        return f"hostPath volumes are not allowed under Pod Security {level!r}"
    if kind == "nfs" and level == "restricted":
        return "inline NFS volumes are not allowed under Pod Security 'restricted' (use a PVC or CSI)"
    return None


# --------------------------------------------------------------------------------------------------
# What the notebook side may use


def notebook_config_map_name(username: str) -> str:
    """The ConfigMap with *username*'s view of the admin config (one per user: a team's shared
    namespace holds one for each member, since groups, and so granted datasets, differ)."""
    return f"{NOTEBOOK_CONFIG_MAP}-{safe_dns_label(username)}"


def make_notebook_config_map(
    config_yaml: str, *, namespace: str, username: str, team: str | None = None,
) -> dict[str, Any]:
    """The ConfigMap mounted at ``/etc/kubelab`` (:data:`kubelab.core.paths.NOTEBOOK_CONFIG_DIR`) in *username*'s notebook pods:
    ``kubelab.yaml``, the part of the admin config the user may see (their profiles, datasets,
    team, and the job, serving and Pod Security settings), which the notebook side loads for
    its limits (``KUBELAB_CONFIG``)."""
    obj = _obj("v1", "ConfigMap", notebook_config_map_name(username), namespace,
               labels(user=username, team=team))
    obj["data"] = {NOTEBOOK_CONFIG_FILE: config_yaml}
    return obj


def fingerprint(*objects: Any) -> str:
    """A stable digest of objects, to skip re-applying what has not changed."""
    return _digest(json.dumps(objects, sort_keys=True, default=str), 16)


def gpu_count(value: Any) -> int:
    """A GPU quantity from a pod spec ("2", 2, "2000m") as an int; anything odd counts as 0."""
    try:
        return int(parse_quantity(value))
    except Exception:
        return 0
