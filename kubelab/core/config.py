"""The admin configuration, ``kubelab.yaml``: its schema, its loader and its error messages.

One declarative file says which notebook profiles exist (CPU, memory, GPU type and counts, images),
which datasets users may mount, which JupyterHub groups form teams (with their namespace and quota),
and the limits for jobs and serving. The hub validates it at start and refuses to start on a bad
file; ``kubelab config check FILE`` runs the same validation for an admin.

The schema is pydantic models with ``extra="forbid"`` (a misspelled key is an error, not silently
ignored) and strict types (YAML's ``yes`` is not a GPU count). Checks that span sections (a profile
naming an undefined GPU type or group, two datasets mounted at the same path) run after the
structure is valid, and name the key path of what is wrong. Every problem is reported, with the
file and line, never as a traceback: see :class:`ConfigError`.

docs/config.md documents every key with an example.

Why one file of about 900 lines: the schema is read as one document (every model next to the keys
it checks, as docs/config.md lists them) and :class:`ConfigError`'s messages, the loader's line
numbers and the cross-section checks all walk that one schema; split, each part would import all
the others. Rules that other modules apply to a loaded config live outside it (``access.py``,
``quota.py``, ``admission.py``).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import reprlib
import string
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from kubelab.core.paths import nested
from kubelab.core.quantity import QuantityError, parse_quantity

# --------------------------------------------------------------------------------------------------
# Field types


def _quantity(value: Any) -> str:
    """Accept a Kubernetes quantity (number or string), keep it as the admin wrote it."""
    try:
        parse_quantity(value)
    except QuantityError as e:
        raise PydanticCustomError("quantity", str(e)) from None
    if isinstance(value, Decimal):
        return str(value)
    return str(value) if not isinstance(value, str) else value.strip()


def _positive_quantity(value: Any) -> str:
    text = _quantity(value)
    if parse_quantity(text) <= 0:
        raise PydanticCustomError("quantity", "must be more than zero, got {value}", {"value": text})
    return text


#: A Kubernetes quantity such as ``2``, ``"500m"`` or ``"8Gi"``, more than zero.
Quantity = Annotated[str, BeforeValidator(_positive_quantity)]

_SLUG = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
#: A lowercase DNS-label-like name, used in URLs, labels and Kubernetes object names.
def _check_slug(value: str) -> str:
    if not _SLUG.fullmatch(value) or len(value) > 63:
        raise PydanticCustomError(
            "slug",
            "must be a lowercase name of letters, digits and '-' (at most 63, like 'gpu-a100'), "
            "got '{value}'",
            {"value": value},
        )
    return value


Slug = Annotated[StrictStr, AfterValidator(_check_slug)]

# Placeholders a namespace pattern may use; they are expanded with Kubernetes-safe values.
NAMESPACE_FIELDS = ("username", "team")

# Where kubelab mounts its own things in a notebook or job pod; datasets may not go there.
RESERVED_MOUNT_PATHS = ("/dev/shm", "/opt/kubelab", "/etc/kubelab", "/tmp")


#: the most GPUs a profile may offer one server (one pod, on one node)
MAX_GPU_COUNT = 64


def _check_mount_path(value: str) -> str:
    if not value.startswith("/"):
        raise PydanticCustomError("mount_path", "must be an absolute path, got '{value}'", {"value": value})
    parts = value.split("/")
    if ".." in parts or "." in parts or "\n" in value or "//" in value:
        raise PydanticCustomError(
            "mount_path", "must be a plain absolute path without '.', '..' or '//', got '{value}'",
            {"value": value},
        )
    if value != "/" and value.endswith("/"):
        value = value.rstrip("/")
    if value == "/":
        raise PydanticCustomError("mount_path", "cannot be the root directory '/'")
    for reserved in RESERVED_MOUNT_PATHS:
        if nested(value, reserved):
            raise PydanticCustomError(
                "mount_path", "'{value}' overlaps '{reserved}', which kubelab reserves",
                {"value": value, "reserved": reserved},
            )
    return value


def _check_sub_path(value: str) -> str:
    if value.startswith("/") or ".." in value.split("/") or "\n" in value:
        raise PydanticCustomError(
            "sub_path", "must be a relative path inside the volume (no leading '/', no '..'), got '{value}'",
            {"value": value},
        )
    return value


@functools.lru_cache(maxsize=256)
def _re2(pattern: str) -> Any:
    """*pattern* compiled with RE2 (google-re2), quietly (RE2 logs parse errors otherwise)."""
    import re2

    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


def pattern_fullmatch(pattern: str, text: str) -> bool:
    """Whether *pattern* (an image pattern from the config) matches all of *text*.

    Why RE2 and not Python's ``re``: the patterns are matched against what users type (a custom
    image in the spawn form, a job's ``--image``), in the hub's single thread, and a pattern like
    ``(\\w+)*x`` backtracks for ever in ``re``; RE2 runs in linear time. And the admission policy
    (``hub_config/admission-policy.yaml``) matches the same patterns with the API server's RE2, so
    the hub, the job API and the API server agree on what a pattern allows."""
    return _re2(pattern).fullmatch(text) is not None


def _check_pattern(value: str) -> str:
    import re2

    try:
        _re2(value)
    except re2.error as e:
        error = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise PydanticCustomError(
            "regex",
            "is not a valid RE2 regular expression ({error}): '{value}' (patterns are matched with "
            "RE2, as the API server does: no backreferences, lookaround or \\Z; write \\z)",
            {"error": error, "value": value},
        ) from None
    return value


def _check_namespace_pattern(value: str) -> str:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
    except ValueError as e:
        raise PydanticCustomError(
            "namespace", "is not a valid pattern: {error}", {"error": str(e)}
        ) from None
    unknown = sorted(fields - set(NAMESPACE_FIELDS))
    if unknown:
        raise PydanticCustomError(
            "namespace", "uses unknown placeholder(s) {unknown}; allowed: {allowed}",
            {"unknown": ", ".join("{" + u + "}" for u in unknown),
             "allowed": ", ".join("{" + f + "}" for f in NAMESPACE_FIELDS)},
        )
    sample = value.format(username="u", team="t")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", sample) or len(sample) > 63:
        raise PydanticCustomError(
            "namespace",
            "must give a valid namespace name (lowercase letters, digits, '-'), got '{value}'",
            {"value": value},
        )
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --------------------------------------------------------------------------------------------------
# Sections


class Toleration(_Model):
    """A Kubernetes toleration, as in a pod spec."""

    key: StrictStr | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: StrictStr | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: StrictInt | None = None


class GpuType(_Model):
    """A kind of GPU the cluster has, and how pods reach the nodes that have it."""

    display_name: StrictStr
    #: the extended resource the device plugin advertises
    resource: StrictStr = "nvidia.com/gpu"
    node_selector: dict[StrictStr, StrictStr] = {}
    tolerations: list[Toleration] = []
    #: how many of these one node has at most; profile counts above it could never be scheduled
    max_per_node: StrictInt | None = Field(default=None, gt=0)

    @field_validator("resource")
    @classmethod
    def _resource_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-a-zA-Z0-9_.]+", value):
            raise PydanticCustomError(
                "resource",
                "must be an extended resource name like 'nvidia.com/gpu', got '{value}'",
                {"value": value},
            )
        return value


class Resources(_Model):
    """A guarantee (the request) and a limit for one resource."""

    guarantee: Quantity | None = None
    limit: Quantity | None = None

    @model_validator(mode="after")
    def _guarantee_within_limit(self) -> Resources:
        if self.guarantee is not None and self.limit is not None:
            if parse_quantity(self.guarantee) > parse_quantity(self.limit):
                raise PydanticCustomError(
                    "resources", "guarantee {guarantee} is more than limit {limit}",
                    {"guarantee": self.guarantee, "limit": self.limit},
                )
        return self


class ProfileGpu(_Model):
    """The GPUs a profile offers: one type, and the counts a user may pick."""

    type: Slug
    counts: list[StrictInt] = Field(min_length=1)
    default: StrictInt | None = None

    @field_validator("counts")
    @classmethod
    def _counts(cls, value: list[int]) -> list[int]:
        bad = [c for c in value if c < 1]
        if bad:
            raise PydanticCustomError(
                "gpu_counts", "GPU counts must be 1 or more (a CPU profile has no gpu section), got {bad}",
                {"bad": bad},
            )
        huge = [c for c in value if c > MAX_GPU_COUNT]
        if huge:
            raise PydanticCustomError(
                "gpu_counts", "GPU counts must be at most {most} (GPUs of one pod, on one node), got {bad}",
                {"most": MAX_GPU_COUNT, "bad": huge},
            )
        if len(set(value)) != len(value):
            raise PydanticCustomError("gpu_counts", "lists a count twice: {value}", {"value": value})
        return sorted(value)

    @model_validator(mode="after")
    def _default_offered(self) -> ProfileGpu:
        if self.default is not None and self.default not in self.counts:
            raise PydanticCustomError(
                "gpu_default", "default {default} is not one of the counts {counts}",
                {"default": self.default, "counts": self.counts},
            )
        return self

    @property
    def default_count(self) -> int:
        return self.default if self.default is not None else self.counts[0]


class ImageChoice(_Model):
    """One image a profile offers."""

    slug: Slug
    display_name: StrictStr
    image: StrictStr
    default: StrictBool = False

    @field_validator("image")
    @classmethod
    def _image_reference(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise PydanticCustomError(
                "image", "must be an image reference like 'registry/name:tag', got '{value}'",
                {"value": value},
            )
        return value


class CustomImage(_Model):
    """Whether users may type their own image, and the pattern it must match in full."""

    allowed: StrictBool = False
    #: matched against the whole image name (``re.fullmatch``); a newline never matches
    pattern: StrictStr | None = None

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        return None if value is None else _check_pattern(value)

    @model_validator(mode="after")
    def _pattern_when_allowed(self) -> CustomImage:
        if self.allowed and not self.pattern:
            raise PydanticCustomError(
                "custom_image",
                "allowed custom images need a pattern (for example '^registry.example.org/.+$')",
            )
        return self

    def matches(self, image: str) -> bool:
        """Whether *image* is an allowed custom image: allowed, no whitespace, full match."""
        if not self.allowed or not self.pattern or not image or any(c.isspace() for c in image):
            return False
        return pattern_fullmatch(self.pattern, image)


class Profile(_Model):
    """A notebook server size and environment a user can choose in the spawn form."""

    slug: Slug
    display_name: StrictStr = Field(min_length=1)
    description: StrictStr = ""
    default: StrictBool = False
    cpu: Resources = Resources()
    memory: Resources = Resources()
    gpu: ProfileGpu | None = None
    images: list[ImageChoice] = Field(min_length=1)
    custom_image: CustomImage = CustomImage()
    #: size of the memory-backed ``/dev/shm`` (PyTorch data loaders need more than the default 64M)
    shm_size: Quantity | None = "1Gi"
    #: JupyterHub groups whose members may use this profile; empty means everybody
    groups: list[StrictStr] = []

    @field_validator("images")
    @classmethod
    def _one_default_image(cls, value: list[ImageChoice]) -> list[ImageChoice]:
        if sum(1 for i in value if i.default) > 1:
            raise PydanticCustomError("images", "more than one image is marked default")
        return value

    @property
    def default_image(self) -> ImageChoice:
        return next((i for i in self.images if i.default), self.images[0])


class PvcSource(_Model):
    claim_name: StrictStr = Field(min_length=1)


class NfsSource(_Model):
    server: StrictStr = Field(min_length=1)
    path: StrictStr = Field(pattern=r"^/")


class CsiSource(_Model):
    driver: StrictStr = Field(min_length=1)
    volume_attributes: dict[StrictStr, StrictStr] = {}
    fs_type: StrictStr | None = None


class HostPathSource(_Model):
    """A directory on the machine: for ``kubelab up`` (local). Kubernetes refuses it under the
    restricted and baseline Pod Security standards, so the Kubernetes spawner only mounts it when
    ``pod_security.level`` is ``privileged``."""

    path: StrictStr = Field(pattern=r"^/")

    @field_validator("path")
    @classmethod
    def _plain(cls, value: str) -> str:
        # the path is shown to users as the dataset's source: it must say where the data is
        if ".." in value.split("/") or "\n" in value or "\0" in value:
            raise PydanticCustomError(
                "host_path", "must be an absolute path without '..', got '{value}'", {"value": value})
        return value


class VolumeSource(_Model):
    """Exactly one of ``pvc``, ``nfs``, ``csi``, ``host_path``."""

    pvc: PvcSource | None = None
    nfs: NfsSource | None = None
    csi: CsiSource | None = None
    host_path: HostPathSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> VolumeSource:
        given = [k for k in ("pvc", "nfs", "csi", "host_path") if getattr(self, k) is not None]
        if len(given) != 1:
            raise PydanticCustomError(
                "volume_source",
                "needs exactly one of pvc, nfs, csi, host_path; got {given}",
                {"given": ", ".join(given) or "none"},
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("pvc", "nfs", "csi", "host_path") if getattr(self, k) is not None)


class Dataset(_Model):
    """Data users may mount into their notebooks and jobs."""

    name: Slug
    description: StrictStr = ""
    source: VolumeSource
    read_only: StrictBool = True
    mount_path: StrictStr
    sub_path: StrictStr | None = None
    #: mounted unless the user unticks it
    default: StrictBool = False
    groups: list[StrictStr] = []

    _mount = field_validator("mount_path")(classmethod(lambda cls, v: _check_mount_path(v)))
    _sub = field_validator("sub_path")(
        classmethod(lambda cls, v: None if v is None else _check_sub_path(v))
    )


class Quota(_Model):
    """Resource ceilings. ``gpus`` counts every GPU type together."""

    gpus: StrictInt | None = Field(default=None, ge=0)
    cpu: Quantity | None = None
    memory: Quantity | None = None
    pods: StrictInt | None = Field(default=None, ge=1)


class Team(_Model):
    """A JupyterHub group whose members share a GPU quota, and where their pods live."""

    #: namespace for each member, with ``{username}`` and ``{team}`` placeholders; without
    #: ``{username}`` the whole team shares one namespace
    namespace: StrictStr = "kubelab-{team}-{username}"
    #: the whole team's ceiling, summed over its members' notebooks and jobs
    quota: Quota = Quota()
    #: each member's ceiling, written into their namespace's ResourceQuota
    user_quota: Quota | None = None

    _namespace = field_validator("namespace")(
        classmethod(lambda cls, v: _check_namespace_pattern(v))
    )


class Group(_Model):
    description: StrictStr = ""


class Home(_Model):
    """Each user's persistent home volume (KubeSpawner's PVC)."""

    enabled: StrictBool = True
    size: Quantity = "10Gi"
    storage_class: StrictStr | None = None
    mount_path: StrictStr = "/home/jovyan"

    _mount = field_validator("mount_path")(classmethod(lambda cls, v: _check_mount_path(v)))


class Jobs(_Model):
    """Limits and defaults for training jobs submitted from notebooks."""

    #: finished jobs are deleted from the cluster after this long (their outputs stay)
    ttl_seconds_after_finished: StrictInt = Field(default=7 * 24 * 3600, ge=0)
    max_gpus_per_job: StrictInt = Field(default=8, ge=0)
    max_nodes: StrictInt = Field(default=4, ge=1)
    #: images jobs may use, as patterns matched in full; empty: only the notebook's own image
    images: list[StrictStr] = []
    #: largest working-directory snapshot a job may ship
    max_snapshot_size: Quantity = "200Mi"
    active_deadline_seconds: StrictInt | None = Field(default=None, ge=1)
    #: the Kubeflow Trainer ClusterTrainingRuntime TrainJobs run on (hub_config/trainer-runtime.yaml)
    trainer_runtime: StrictStr = Field(default="kubelab-torch", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

    _patterns = field_validator("images")(
        classmethod(lambda cls, v: [_check_pattern(p) for p in v])
    )


class Serving(_Model):
    """Limits and defaults for model servers deployed from notebooks."""

    max_replicas: StrictInt = Field(default=4, ge=1)
    max_gpus_per_replica: StrictInt = Field(default=1, ge=0)
    images: list[StrictStr] = []
    #: idle endpoints are scaled to zero after this long; 0 keeps them up
    idle_timeout_seconds: StrictInt = Field(default=0, ge=0)

    _patterns = field_validator("images")(
        classmethod(lambda cls, v: [_check_pattern(p) for p in v])
    )


class PodSecurity(_Model):
    """How the pods kubelab creates run. ``restricted`` meets the Pod Security "restricted"
    standard (non-root, no privilege escalation, all capabilities dropped, RuntimeDefault
    seccomp); relaxing it is an explicit admin decision."""

    level: Literal["restricted", "baseline", "privileged"] = "restricted"
    run_as_user: StrictInt = Field(default=1000, ge=1)
    run_as_group: StrictInt = Field(default=100, ge=0)
    fs_group: StrictInt = Field(default=100, ge=0)


class KubelabConfig(_Model):
    """The whole ``kubelab.yaml``."""

    #: the file format version; only 1 exists
    version: Literal[1] = 1
    groups: dict[StrictStr, Group] = {}
    gpu_types: dict[Slug, GpuType] = {}
    profiles: list[Profile] = Field(min_length=1)
    datasets: list[Dataset] = []
    teams: dict[StrictStr, Team] = {}
    #: namespace for users in no team
    default_namespace: StrictStr = "kubelab-{username}"
    home: Home = Home()
    jobs: Jobs = Jobs()
    serving: Serving = Serving()
    pod_security: PodSecurity = PodSecurity()

    _namespace = field_validator("default_namespace")(
        classmethod(lambda cls, v: _check_namespace_pattern(v))
    )

    @model_validator(mode="after")
    def _cross_references(self) -> KubelabConfig:
        problems = list(_cross_check(self))
        if problems:
            raise PydanticCustomError(
                "kubelab_cross_check",
                "{summary}",
                {"summary": "; ".join(f"{'.'.join(map(str, p))}: {m}" for p, m in problems),
                 "problems": problems},
            )
        return self

    # -- queries used by the spawners and the job API ----------------------------------------

    def profile(self, slug: str) -> Profile | None:
        return next((p for p in self.profiles if p.slug == slug), None)

    def dataset(self, name: str) -> Dataset | None:
        return next((d for d in self.datasets if d.name == name), None)

    def team_for(self, groups: Sequence[str]) -> tuple[str, Team] | None:
        """The first team, in file order, whose group the user is in."""
        member = set(groups)
        return next(((name, t) for name, t in self.teams.items() if name in member), None)


def _cross_check(config: KubelabConfig) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Checks that span sections: each yields (key path, message)."""
    declared = set(config.groups)

    def _groups(path: tuple[str | int, ...], groups: list[str]) -> Iterator[tuple[tuple[str | int, ...], str]]:
        for i, g in enumerate(groups):
            if g not in declared:
                yield (*path, i), f"group {g!r} is not declared under 'groups' (declared: {', '.join(sorted(declared)) or 'none'})"

    seen: dict[str, int] = {}
    defaults = 0
    for i, p in enumerate(config.profiles):
        if p.slug in seen:
            yield ("profiles", i, "slug"), f"duplicate profile slug {p.slug!r} (also profiles[{seen[p.slug]}])"
        seen.setdefault(p.slug, i)
        defaults += p.default
        yield from _groups(("profiles", i, "groups"), p.groups)
        image_slugs: dict[str, int] = {}
        for j, image in enumerate(p.images):
            if image.slug in image_slugs:
                yield ("profiles", i, "images", j, "slug"), f"duplicate image slug {image.slug!r} in this profile"
            image_slugs.setdefault(image.slug, j)
        if p.gpu is not None:
            gpu_type = config.gpu_types.get(p.gpu.type)
            if gpu_type is None:
                yield ("profiles", i, "gpu", "type"), (
                    f"GPU type {p.gpu.type!r} is not defined under 'gpu_types' "
                    f"(defined: {', '.join(sorted(config.gpu_types)) or 'none'})"
                )
            elif gpu_type.max_per_node is not None:
                over = [c for c in p.gpu.counts if c > gpu_type.max_per_node]
                if over:
                    yield ("profiles", i, "gpu", "counts"), (
                        f"count(s) {over} not allowed: a {p.gpu.type} node has at most "
                        f"{gpu_type.max_per_node} GPUs, so such a pod could never be scheduled"
                    )
    if defaults > 1:
        yield ("profiles",), "more than one profile is marked default"

    names: dict[str, int] = {}
    for i, d in enumerate(config.datasets):
        if d.name in names:
            yield ("datasets", i, "name"), f"duplicate dataset name {d.name!r} (also datasets[{names[d.name]}])"
        names.setdefault(d.name, i)
        yield from _groups(("datasets", i, "groups"), d.groups)
        if config.home.enabled and nested(d.mount_path, config.home.mount_path):
            yield ("datasets", i, "mount_path"), (
                f"{d.mount_path!r} overlaps the home volume at {config.home.mount_path!r}"
            )
        for j, other in enumerate(config.datasets[:i]):
            if nested(d.mount_path, other.mount_path):
                yield ("datasets", i, "mount_path"), (
                    f"{d.mount_path!r} clashes with datasets[{j}] ({other.name!r}) mounted at "
                    f"{other.mount_path!r}"
                )
                break

    for name, team in config.teams.items():
        if name not in config.groups:
            yield ("teams", name), (
                f"team {name!r} is not a group declared under 'groups' "
                f"(declared: {', '.join(sorted(config.groups)) or 'none'})"
            )
        if team.user_quota and team.quota.gpus is not None and team.user_quota.gpus is not None:
            if team.user_quota.gpus > team.quota.gpus:
                yield ("teams", name, "user_quota", "gpus"), (
                    f"{team.user_quota.gpus} is more than the team's own quota of {team.quota.gpus}"
                )

    # Profiles whose GPUs nobody in their groups could ever get.
    for i, p in enumerate(config.profiles):
        if p.gpu is None or not p.groups:
            continue
        quotas = [config.teams[g].quota.gpus for g in p.groups if g in config.teams]
        if quotas and all(q is not None for q in quotas):
            smallest = min(p.gpu.counts)
            if all(q < smallest for q in quotas if q is not None):
                yield ("profiles", i, "gpu", "counts"), (
                    f"every team allowed this profile has a GPU quota below its smallest count "
                    f"{smallest}, so nobody could start it"
                )


def config_warnings(config: KubelabConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """Things that are valid but probably not what the admin meant: (key path, message) each.

    ``kubelab config check`` prints them and the hub logs them at start; neither refuses the file.
    """
    found: list[tuple[tuple[str | int, ...], str]] = []
    for i, d in enumerate(config.datasets):
        if d.source.nfs is not None and config.pod_security.level == "restricted":
            found.append((("datasets", i, "source", "nfs"), (
                "inline NFS volumes are forbidden by the restricted Pod Security standard "
                "(pod_security.level), so on Kubernetes nobody can mount this dataset (the chooser "
                "shows it disabled); use csi with the NFS CSI driver (nfs.csi.k8s.io), a PVC bound "
                "to an NFS PersistentVolume, or pod_security.level: baseline"
            )))
    return found


# --------------------------------------------------------------------------------------------------
# Loading and errors


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file."""

    path: str  # e.g. "profiles[2].gpu.counts"
    message: str
    line: int | None = None

    def format(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: {self.path or '(top level)'}: {self.message}"


class ConfigError(Exception):
    """A config file that cannot be used, with every problem found in it."""

    def __init__(self, source: str, problems: Sequence[Problem]):
        self.source = source
        self.problems = list(problems)
        super().__init__(self.format())

    def format(self) -> str:
        count = len(self.problems)
        head = f"{self.source}: {count} problem{'s' if count != 1 else ''} in the kubelab config"
        return "\n".join([head, *("  " + p.format(self.source) for p in self.problems)])


def key_path(loc: Sequence[str | int]) -> str:
    """("profiles", 2, "gpu", "counts") → "profiles[2].gpu.counts"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _Loader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys (plain PyYAML keeps the last one silently)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            # a complex key (``? [1, 2]``, ``{a: 1}: x``): no config key is one
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark,
                f"found a {type(key).__name__} used as a key; keys are plain names",
                key_node.start_mark,
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark,
                f"found duplicate key {key!r} (first at line {seen[key].start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_of(node: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """The 1-based line of the deepest node along *loc* in the YAML node tree."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            if nxt is None:
                nxt_key = next((k for k, v in node.value if getattr(k, "value", None) == str(part)), None)
                return nxt_key.start_mark.line + 1 if nxt_key is not None else line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


_brief = reprlib.Repr()
_brief.maxlevel, _brief.maxstring, _brief.maxother = 3, 120, 120


def _problems_from(error: ValidationError) -> list[tuple[tuple[str | int, ...], str]]:
    found: list[tuple[tuple[str | int, ...], str]] = []
    for e in error.errors(include_url=False):
        loc = tuple(e["loc"])
        ctx = e.get("ctx") or {}
        if e["type"] == "kubelab_cross_check":
            found.extend((tuple(p), m) for p, m in ctx["problems"])
            continue
        # pydantic names the branch of a union or a function validator in the loc; drop those
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
        message = e["msg"]
        if e["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; docs/config.md lists every key)"
        elif e["type"] == "missing":
            message = "is required"
        elif e["type"].endswith("_type") or e["type"] in ("model_type", "dict_type", "list_type"):
            # reprlib: a billion-laughs file's value must not be written out whole first
            message = f"{message}, got {type(e['input']).__name__} {_brief.repr(e['input'])}"[:200]
        found.append((loc, message))
    # One problem per key path and message, in file order of appearance.
    unique: dict[tuple[tuple[str | int, ...], str], None] = dict.fromkeys(found)
    return list(unique)


def parse_config(text: str, source: str = "<config>") -> KubelabConfig:
    """Validate *text* (YAML) and return the config, or raise :class:`ConfigError`."""
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except RecursionError:
        raise ConfigError(source, [Problem("", "not valid YAML: nested too deeply", None)]) from None
    except ValueError:  # PyYAML's int() of a number with more than 4,300 digits
        raise ConfigError(source, [Problem("", "a number in the file has more than 4,300 digits", None)]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e)
        context = getattr(e, "context", None)
        message = f"not valid YAML: {problem}" + (f" ({context})" if context else "")
        raise ConfigError(source, [Problem("", message, line)]) from None
    if data is None:
        raise ConfigError(source, [Problem("", "the file is empty; it needs at least 'profiles'", 1)])
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem("", f"the top level must be a mapping of keys, got {type(data).__name__}", 1)])
    try:
        return KubelabConfig.model_validate(data)
    except RecursionError:
        raise ConfigError(source, [Problem("", "values are nested too deeply", None)]) from None
    except ValidationError as e:
        problems = [Problem(key_path(loc), msg, _line_of(node, loc)) for loc, msg in _problems_from(e)]
        raise ConfigError(source, problems) from None


def load_config(path: str | Path) -> KubelabConfig:
    """Read and validate the config file at *path*, or raise :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [Problem("", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), [Problem("", f"cannot be read: {e}")]) from None
    return parse_config(text, source=str(path))


def dump_config(config: KubelabConfig) -> str:
    """*config* as YAML that :func:`parse_config` reads back to an equal config (keys that are
    unset are left out). For configs a program writes, e.g. the user's view of ``kubelab.yaml``
    the Kubernetes spawner puts into the notebook's ConfigMap."""
    data = config.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def example_config_path() -> Path:
    """The example config shipped with kubelab (``hub_config/kubelab.yaml``)."""
    from kubelab.core.paths import shipped

    return shipped("kubelab.yaml")


# --------------------------------------------------------------------------------------------------
# A config file that is re-read when it changes


#: how often (seconds) a :class:`ConfigWatcher` stats its file at most: a spawn reads the config a
#: dozen times, and an admin's edit may take a second to show
RECHECK_SECONDS = 1.0

_log = logging.getLogger("kubelab.config")


class ConfigWatcher:
    """The config file at *path*, re-read when its modification time or size changes.

    For a long-running process (the hub) whose admin edits ``kubelab.yaml`` in place: an edit that
    validates is used from the next call on (within ``recheck_seconds``); an edit that does not is
    logged once, with every problem, and the last valid version stays in use -- a typo must not
    break spawning for everybody mid-day. A file that was never valid raises :class:`ConfigError`
    (the hub refuses to start on it). The warnings of :func:`config_warnings` are logged once per
    load. Thread-safe.
    """

    def __init__(self, path: str | Path, *, recheck_seconds: float | None = None) -> None:
        self.path = str(path)
        self.recheck_seconds = RECHECK_SECONDS if recheck_seconds is None else recheck_seconds
        self._lock = threading.Lock()
        self._config: KubelabConfig | None = None
        self._key: tuple[int, int] | None = None
        self._checked = float("-inf")

    def _stat(self) -> tuple[int, int]:
        try:
            st = os.stat(self.path)
        except OSError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_size)

    def get(self, log: Any = None) -> KubelabConfig:
        """The current config (see the class docstring); *log* is a :class:`logging.Logger`-like
        object for the messages (default: the ``kubelab.config`` logger)."""
        log = log if log is not None else _log
        now = time.monotonic()
        config = self._config
        if config is not None and now - self._checked < self.recheck_seconds:
            return config
        with self._lock:
            key = self._stat()
            self._checked = now
            if self._config is not None and key == self._key:
                return self._config
            try:
                config = load_config(self.path)
            except ConfigError as e:
                if self._config is None:
                    raise
                self._key = key  # do not re-read (and re-log) until the file changes again
                log.error("Keeping the previous kubelab config: %s", e.format())
                return self._config
            for loc, message in config_warnings(config):
                log.warning("kubelab config %s: warning: %s: %s", self.path, key_path(loc), message)
            self._config, self._key = config, key
            return config


_watchers: dict[str, ConfigWatcher] = {}
_watchers_lock = threading.Lock()


def cached_config(path: str | Path, log: Any = None) -> KubelabConfig:
    """The config at *path* through the process's one :class:`ConfigWatcher` for that path."""
    key = str(path)
    watcher = _watchers.get(key)
    if watcher is None:
        with _watchers_lock:
            watcher = _watchers.setdefault(key, ConfigWatcher(key))
    return watcher.get(log)


def forget_cached_configs() -> None:
    """Drop every cached config (tests; a process that re-reads everything)."""
    with _watchers_lock:
        _watchers.clear()
