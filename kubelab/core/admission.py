"""The API server's own check of what runs in kubelab's namespaces.

A notebook's service account may create Jobs and Deployments in its namespace (the job API and
``%serve`` need that), so from a notebook terminal a user could write any pod template: mount a
claim or an inline CSI volume that is not theirs, mount a read-only dataset writable, run any
image. The spawner's and the job API's checks cannot stop that: they are not on that path. Pod
Security "restricted" allows PVC and CSI volumes. So the API server itself checks every pod and
pod template created in a kubelab namespace, with a ValidatingAdmissionPolicy that ships as
``hub_config/admission-policy.yaml`` (an admin applies it once, Kubernetes >= 1.30) and reads,
per namespace, what is allowed there from a ConfigMap the hub writes: :func:`policy_params`.

The ConfigMap (``kubelab-policy``, data only, all strings) is built so that CEL can check it with
string equality, ``startsWith``, ``contains`` and ``matches``, never by splitting:

``format``
    ``"1"``.
``pvc.<h>``
    a claim name the namespace's pods may mount (a granted PVC dataset, ``{username}`` expanded;
    the user's home claim).
``csi.<h>``
    an inline CSI volume, canonical: ``;<driver>;<fsType>;<nodePublishSecretRef name>;<number of
    volume attributes>;`` then ``<key>=<value>;`` per attribute, sorted. A pod's CSI volume
    matches when it starts with the pod's own head (same driver, fsType, secret and attribute
    *count*) and contains ``;<key>=<value>;`` for each of the pod's attributes: with no ``;`` in
    any field and no ``=`` in keys (the policy refuses pods that have them), that is exact
    equality of the attribute sets, whatever order the API server keeps a map in.
``nfs.<h>``, ``hostPath.<h>``
    ``;<server>;<path>;`` and ``;<path>;<type>;``: only a granted dataset's (Pod Security
    "restricted" refuses both kinds anyway; under "baseline" or "privileged" this is the check).
``grant.<kind>.<h>.<g>``
    how the volume of ``<kind>.<h>`` may be mounted: ``rw:<sub path>`` or ``ro:<sub path>``
    (the sub path empty: the whole volume; else only at or below it). ``ro`` needs ``readOnly``
    on the mount and, where the source has the field, on the volume. A volume may have several
    (two datasets on one claim).
``image.<h>``
    an RE2 pattern an image must match in full, anchored here (``^(?:...)$``): each granted
    profile's images (literal, escaped), its ``custom_image.pattern``, ``jobs.images``,
    ``serving.images``. Images with whitespace are refused whatever the patterns say.
``configMap.<h>``, ``secret.<h>``
    names of ConfigMaps / Secrets pods may mount or read through ``env``: ``kube-root-ca.crt``
    (the API server's service-account token volume) and the user's own notebook ConfigMap.

``<h>`` is a digest of the value, so the same grant always has the same key and two users'
params merge as a plain union (:func:`merge_policy_params`, for a team's shared namespace).

docs/security.md says what this does and does not protect against.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kubelab.core import objects
from kubelab.core.access import granted
from kubelab.core.config import KubelabConfig
from kubelab.core.paths import shipped

__all__ = [
    "POLICY_CONFIG_MAP", "POLICY_NAME", "POLICY_FORMAT", "policy_path", "load_policy",
    "policy_params", "merge_policy_params", "volume_source", "anchored", "literal_pattern",
    "UngrantableVolume",
]

_log = logging.getLogger("kubelab.admission")

#: the params ConfigMap in each kubelab namespace (the binding's ``paramRef.name``)
POLICY_CONFIG_MAP = "kubelab-policy"
#: the ValidatingAdmissionPolicy and its binding in hub_config/admission-policy.yaml
POLICY_NAME = "kubelab-workloads"
#: ``data.format`` of the params: bumped when a key changes meaning
POLICY_FORMAT = "1"
#: the ConfigMap every pod with a service-account token mounts (the API server injects it)
ROOT_CA_CONFIG_MAP = "kube-root-ca.crt"


class UngrantableVolume(ValueError):
    """A volume whose source the params cannot express (a ``;`` in a field, ``=`` in an
    attribute key): such a volume is never granted, so the policy refuses pods that mount it."""


# --------------------------------------------------------------------------------------------------
# The policy file


def policy_path() -> Path:
    """``hub_config/admission-policy.yaml``, the ValidatingAdmissionPolicy and its binding."""
    return shipped("admission-policy.yaml")


def load_policy() -> list[dict[str, Any]]:
    """The objects of :func:`policy_path` (the policy, then its binding), as API dicts."""
    with policy_path().open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


# --------------------------------------------------------------------------------------------------
# Canonical strings the policy compares


def _digest(text: str, n: int = 12) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _field(value: Any, what: str) -> str:
    text = "" if value is None else str(value)
    if ";" in text:
        raise UngrantableVolume(f"{what} {text!r} contains ';'")
    return text


def volume_source(volume: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, canonical value) of a pod volume's data source, as the policy compares it, or None
    for a volume that is not data (emptyDir, configMap, ...). Raises :class:`UngrantableVolume`
    for a source the params cannot express."""
    if (pvc := volume.get("persistentVolumeClaim")) is not None:
        return "pvc", _field(pvc["claimName"], "claim name")
    if (nfs := volume.get("nfs")) is not None:
        return "nfs", f";{_field(nfs['server'], 'NFS server')};{_field(nfs['path'], 'NFS path')};"
    if (host := volume.get("hostPath")) is not None:
        path, kind = _field(host["path"], "hostPath"), _field(host.get("type"), "hostPath type")
        return "hostPath", f";{path};{kind};"
    if (csi := volume.get("csi")) is not None:
        secret = (csi.get("nodePublishSecretRef") or {}).get("name")
        attrs = dict(csi.get("volumeAttributes") or {})
        head = (f";{_field(csi['driver'], 'CSI driver')};{_field(csi.get('fsType'), 'CSI fsType')};"
                f"{_field(secret, 'CSI secret')};{len(attrs)};")
        body = ""
        for key in sorted(attrs):
            if "=" in key or ";" in key:
                raise UngrantableVolume(f"CSI volume attribute name {key!r} contains '=' or ';'")
            body += f"{key}={_field(attrs[key], f'CSI volume attribute {key!r}')};"
        if "=" in head:
            raise UngrantableVolume(f"CSI driver or fsType in {head!r} contains '='")
        return "csi", head + body
    return None


def _refs(volume: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The ConfigMaps and Secrets a pod volume refers to, as (kind, name)."""
    out: list[tuple[str, str]] = []
    if (cm := volume.get("configMap")) is not None:
        out.append(("configMap", cm.get("name", "")))
    if (secret := volume.get("secret")) is not None:
        out.append(("secret", secret.get("secretName", "")))
    for source in (volume.get("projected") or {}).get("sources") or []:
        if (cm := source.get("configMap")) is not None:
            out.append(("configMap", cm.get("name", "")))
        if (secret := source.get("secret")) is not None:
            out.append(("secret", secret.get("name", "")))
    return out


def anchored(pattern: str) -> str:
    """*pattern* matched in full (Python's ``re.fullmatch``) as an RE2 pattern for CEL's
    ``matches``, which searches: the group keeps an alternation (``a|b``) inside the anchors,
    and RE2's ``$`` is the end of the text (no newline before it, unlike Python's)."""
    return f"^(?:{pattern})$"


_RE2_META = re.compile(r"([\\.+*?()|\[\]{}^$])")


def literal_pattern(text: str) -> str:
    """An RE2 pattern matching exactly *text* (an image reference)."""
    return anchored(_RE2_META.sub(r"\\\1", text))


# --------------------------------------------------------------------------------------------------
# The params


class _Params:
    def __init__(self) -> None:
        self.data: dict[str, str] = {"format": POLICY_FORMAT}

    def volume(self, volume: Mapping[str, Any], *, mode: str, sub_path: str = "",
               what: str) -> None:
        try:
            source = volume_source(volume)
        except UngrantableVolume as e:
            _log.warning("kubelab admission policy: %s cannot be granted: %s; pods that mount "
                         "it will be refused", what, e)
            return
        for kind, name in _refs(volume):
            self.ref(kind, name)
        if source is None:
            return
        kind, value = source
        key = f"{kind}.{_digest(value)}"
        self.data[key] = value
        grant = f"{mode}:{sub_path.rstrip('/')}"
        self.data[f"grant.{key}.{_digest(grant, 8)}"] = grant

    def ref(self, kind: str, name: str) -> None:
        self.data[f"{kind}.{_digest(name)}"] = name

    def image(self, pattern: str) -> None:
        """Allow images *pattern* matches in full (an RE2 pattern: the config refuses others)."""
        value = anchored(pattern)
        self.data[f"image.{_digest(value)}"] = value

    def literal_image(self, image: str) -> None:
        """Allow exactly *image*."""
        value = literal_pattern(image)
        self.data[f"image.{_digest(value)}"] = value


def policy_params(
    config: KubelabConfig, *, username: str, groups: Sequence[str],
    home_claim: str | Iterable[str] | None, namespace: str,
    extra_images: Iterable[str] = (), extra_volumes: Iterable[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The ``kubelab-policy`` ConfigMap for *username*'s namespace: what the admission policy
    lets pods there mount and run (the module docstring has the format).

    *config* is the admin's config or the user's view of it (``user_config_view``): the
    profiles and datasets *groups* grant are used either way, datasets with ``{username}``
    expanded, minus those the namespace's Pod Security level refuses. *home_claim* is the home
    PVC's name (or several: named servers), None without one. *extra_images* are exact image
    references and *extra_volumes* pod volumes (as in a pod spec) that the admin's KubeSpawner
    settings add to notebook pods (an init container's image, a shared volume): kubelab.yaml
    does not know them. A data volume among them is granted whole, read-only when the volume
    says ``readOnly``."""
    params = _Params()
    level = config.pod_security.level
    for d in config.datasets:
        if not granted(d.groups, groups) or objects.volume_allowed(d, level) is not None:
            continue
        volume, mount = objects.dataset_volume(objects.dataset_for_user(d, username=username))
        params.volume(volume, mode="ro" if d.read_only else "rw",
                      sub_path=mount.get("subPath", ""), what=f"dataset {d.name!r}")
    claims = [home_claim] if isinstance(home_claim, str) else list(home_claim or ())
    for claim in claims:
        params.volume({"persistentVolumeClaim": {"claimName": claim}}, mode="rw",
                      what=f"home claim {claim!r}")
    for extra in extra_volumes:
        ro = any(bool(source.get("readOnly")) for source in extra.values()
                 if isinstance(source, Mapping))
        params.volume(extra, mode="ro" if ro else "rw", what=f"volume {extra.get('name')!r}")
    params.ref("configMap", ROOT_CA_CONFIG_MAP)
    params.ref("configMap", objects.notebook_config_map_name(username))

    for p in config.profiles:
        if not granted(p.groups, groups):
            continue
        for choice in p.images:
            params.literal_image(choice.image)
        if p.custom_image.allowed and p.custom_image.pattern:
            params.image(p.custom_image.pattern)
    for pattern in config.jobs.images:
        params.image(pattern)
    for pattern in config.serving.images:
        params.image(pattern)
    for image in extra_images:
        params.literal_image(image)

    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": POLICY_CONFIG_MAP, "namespace": namespace,
            "labels": objects.labels(**objects.namespace_owner(config, username=username, groups=groups)),
        },
        "data": dict(sorted(params.data.items())),
    }


def merge_policy_params(first: Mapping[str, Any], *others: Mapping[str, Any]) -> dict[str, Any]:
    """One params ConfigMap allowing what any of *first* and *others* allows (the members of a
    team's shared namespace): *first*'s metadata, the union of the data."""
    data = dict(first.get("data") or {})
    for other in others:
        data.update(other.get("data") or {})
    merged = {k: v for k, v in first.items() if k != "data"}
    merged["data"] = dict(sorted(data.items()))
    return merged
