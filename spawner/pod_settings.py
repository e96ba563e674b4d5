"""From a validated choice to what the notebook pod gets: one pure function, applied once.

:func:`pod_traits` takes the validated :class:`~kubelab.spawner.profiles.Choice`, the admin config,
the user and the admin's own KubeSpawner settings the spawn starts from (``base``), and returns the
value of every KubeSpawner trait a spawn sets (:data:`POD_TRAITS`): the image, CPU and memory,
the GPU type's node selector, tolerations and extended-resource limits, the volumes and mounts
(``/dev/shm``, datasets, the user's settings ConfigMap), kubelab's labels, the environment the
notebook side reads, the service account and the security settings. It touches no API and no
spawner, so tests compare its result like kubespawner's tests compare ``objects.py``'s; the
spawner sets the traits from it in one step, and puts ``base`` back after the spawn.

The direction is one way: user_options → :func:`~kubelab.spawner.profiles.validate_user_options`
→ Choice → :func:`pod_traits` → KubeSpawner's traits → KubeSpawner's ``get_pod_manifest``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubelab.core import objects
from kubelab.core.config import KubelabConfig
from kubelab.core.paths import NOTEBOOK_CONFIG_DIR
from kubelab.spawner.profiles import Choice, UserInfo, gpu_resource_traits, profile_resource_traits

__all__ = ["POD_TRAITS", "SETTINGS_VOLUME", "literal", "pod_traits"]

#: the KubeSpawner traits a spawn sets (and puts back afterwards)
POD_TRAITS = (
    "image", "cpu_guarantee", "cpu_limit", "mem_guarantee", "mem_limit", "node_selector",
    "tolerations", "extra_resource_limits", "extra_resource_guarantees", "volumes", "volume_mounts",
    "extra_labels", "extra_annotations", "environment", "pod_security_context",
    "container_security_context", "service_account", "automount_service_account_token",
    "allow_privilege_escalation", "uid", "gid", "fs_gid",
)

#: the volume of the user's view of the admin config
SETTINGS_VOLUME = "kubelab-settings"


def literal(value: Any) -> Any:
    """*value* with ``{``/``}`` doubled in every string, so KubeSpawner's ``{username}``
    expansion leaves it as it is."""
    if isinstance(value, str):
        return value.replace("{", "{{").replace("}", "}}")
    if isinstance(value, dict):
        return {k: literal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [literal(v) for v in value]
    return value


def pod_traits(config: KubelabConfig, choice: Choice, user: UserInfo, *, team: str | None,
               base: Mapping[str, Any], base_volumes: Sequence[Mapping[str, Any]],
               base_mounts: Sequence[Mapping[str, Any]], env: Mapping[str, str],
               settings_config_map: str | None, service_account: str | None) -> dict[str, Any]:
    """The value of each of :data:`POD_TRAITS` for this spawn.

    *base*: the admin's values of those traits (``volumes``/``volume_mounts`` as lists in
    *base_volumes*/*base_mounts*: KubeSpawner also takes them as dicts); *env*: what the notebook
    side is told (:class:`~kubelab.core.notebook_env.NotebookEnv`), added to the admin's
    ``environment``; *settings_config_map*: the ConfigMap with the user's view of the config, to
    mount at ``/etc/kubelab`` (None: kubelab does not manage the namespace's objects);
    *service_account*: the account the notebook runs as (with its token mounted: it submits
    jobs), None to keep the admin's. What kubelab adds is made literal for KubeSpawner's
    ``{username}`` expansion; what the admin set is expanded as KubeSpawner always does.
    """
    out: dict[str, Any] = {k: base[k] for k in POD_TRAITS}
    # the profile: image, CPU and memory (a limit the profile does not set stays the admin's)
    out["image"] = choice.image
    out.update(profile_resource_traits(choice.profile))
    if choice.gpu is not None:
        gpu = gpu_resource_traits(choice.gpu, choice.gpus)
        out["node_selector"] = {**(base["node_selector"] or {}), **gpu["node_selector"]}
        out["tolerations"] = gpu["tolerations"]
        for k in ("extra_resource_limits", "extra_resource_guarantees"):
            out[k] = {**(base[k] or {}), **gpu[k]}
    # who it is
    kind_labels = objects.labels(user=user.name, team=team, kind="notebook")
    kind_labels.pop(objects.MANAGED_BY_LABEL)
    out["extra_labels"] = {**base["extra_labels"], **kind_labels}
    out["extra_annotations"] = {**base["extra_annotations"], objects.USER_ANNOTATION: user.name}
    # its data
    volumes: list[Any] = []
    mounts: list[Any] = []
    shm, shm_mount = objects.shm_volume(choice.profile.shm_size)
    volumes.append(shm)
    mounts.append(shm_mount)
    for m in choice.datasets:
        volume, mount = objects.dataset_volume(
            m.dataset, read_only=m.read_only, mount_path=m.mount_path, sub_path=m.sub_path,
            username=user.name,
        )
        volumes.append(volume)
        mounts.append(mount)
    if settings_config_map is not None:
        # the user's view of the admin config (provision.namespace_objects), for the notebook's limits
        volumes.append({"name": SETTINGS_VOLUME, "configMap": {"name": settings_config_map, "optional": True}})
        mounts.append({"name": SETTINGS_VOLUME, "mountPath": NOTEBOOK_CONFIG_DIR, "readOnly": True})
    if service_account is not None:
        out["service_account"] = service_account
        out["automount_service_account_token"] = True  # the notebook submits jobs with its token
    out["volumes"] = [*base_volumes, *(v if v in base_volumes else literal(v) for v in volumes)]
    out["volume_mounts"] = [*base_mounts, *(m if m in base_mounts else literal(m) for m in mounts)]
    admin_env = base["environment"] or {}
    out["environment"] = {**admin_env, **{k: v if k in admin_env else literal(v) for k, v in env.items()}}
    # security
    psc, csc = objects.restricted_security_context(config.pod_security)
    out["uid"] = config.pod_security.run_as_user
    out["gid"] = config.pod_security.run_as_group
    out["fs_gid"] = config.pod_security.fs_group
    if config.pod_security.level == "restricted":
        out["allow_privilege_escalation"] = False
        # kubelab's settings win over anything the admin set in these dicts: relaxing the
        # standard is pod_security.level's job, where it is visible
        out["pod_security_context"] = {**(base["pod_security_context"] or {}), **psc}
        out["container_security_context"] = {**(base["container_security_context"] or {}), **csc}
    else:
        out["pod_security_context"] = {**psc, **(base["pod_security_context"] or {})}
        out["container_security_context"] = {**csc, **(base["container_security_context"] or {})}
    return out
