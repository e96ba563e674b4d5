"""The profile chooser, shared by both spawners (``kubelab`` on Kubernetes, ``kubelab-local``).

Everything here is pure: no Kubernetes API, no JupyterHub, no I/O. A spawner supplies three things
and gets back HTML, a typed choice, or KubeSpawner's ``profile_list``:

* the admin config (:class:`kubelab.core.config.KubelabConfig`),
* who is asking (:class:`UserInfo`: name and JupyterHub groups),
* what can be had right now (:class:`Availability`: free GPUs per GPU type, the team's and the
  user's GPU usage, datasets this backend cannot mount). The Kubernetes spawner computes it from
  its shared watch cache of nodes and pods; the local twin from ``nvidia-smi``. Either way it is
  plain data, computed before the call, so rendering and validating never touch the network.

Stable API (the local twin and later issues import these; change them only with a note in
docs/spawner.md):

``allowed_profiles(config, user)``, ``allowed_datasets(config, user)``
    The profiles / datasets the user's groups grant, in file order. Everything else here is built
    on these two: a profile or dataset not granted is neither shown nor accepted.
``render_form(config, user, availability, *, user_options=None, refuse_unavailable=False)``
    The chooser's HTML (a fragment for JupyterHub's ``spawn.html``). Every text from the config is
    escaped. Works without JavaScript (all choices are plain radio buttons, selects, checkboxes)
    and on a phone-width screen. ``user_options`` (e.g. the previous spawn's) pre-selects choices
    when they are still valid.
``options_from_form(formdata)``
    The POSTed form (JupyterHub's ``{name: [values]}``) → ``user_options`` in the canonical shape
    below. Never raises for odd input: validation is the one place that refuses.
``validate_user_options(config, user, user_options, availability=None, *, refuse_unavailable=False)``
    Untrusted ``user_options`` (form or REST API) → :class:`Choice`, or :class:`InvalidOptions`
    whose ``str()`` is the message for the user (the spawners turn it into HTTP 400).
``kubespawner_profile_list(config, user, *, dataset_volumes=True)``
    KubeSpawner's ``profile_list`` for this user (only what the user may use), with
    ``kubespawner_override`` for resources, GPU node selector/tolerations and ``profile_options``
    for image and GPU count (with ``unlisted_choice`` for custom images).
``UserInfo``, ``GpuAvailability``, ``QuotaUsage``, ``Availability``, ``Choice``, ``DatasetMount``,
``InvalidOptions``.

``user_options`` shape (what the form produces and the REST API accepts)::

    {"profile": "a100",                       # profile slug; absent: the default profile
     "image": "pytorch",                       # image slug of that profile; absent: its default
     "image--unlisted-choice": "ghcr.io/...",  # instead of "image": a custom image (if allowed)
     "gpus": 2,                                # int (or a string of digits); absent: the default
     "datasets": ["imagenet",                  # absent: the datasets marked default
                  {"name": "scratch", "sub_path": "alice/run1", "read_only": true,
                   "mount_path": "/scratch/run1"}]}

Any other key is refused: ``user_options`` arrive unchecked through JupyterHub's REST API, and a
silently ignored key (a misspelt ``gpu``) would start something the user did not ask for.

Why one file of about 900 lines: the form shows exactly what validation accepts, and both are
built from the same per-count states (``_count_states``) and dataset checks; kept side by side so
a change to one is seen against the other. The access rule and the quota arithmetic they apply
are the core's (``kubelab.core.access``, ``kubelab.core.quota``); what the pod gets from a choice
is ``pod_settings.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from kubelab.core import objects
from kubelab.core.access import granted_datasets, granted_profiles
from kubelab.core.config import (
    RESERVED_MOUNT_PATHS,
    Dataset,
    GpuType,
    KubelabConfig,
    Profile,
    Team,
)
from kubelab.core.paths import nested
from kubelab.core.quantity import format_bytes, format_cpu, parse_quantity
from kubelab.core.quota import GpuQuota, QuotaUsage
from kubelab.core.text import gpus_text, json_kind, shorten

__all__ = [
    "Availability",
    "Choice",
    "DatasetMount",
    "GpuAvailability",
    "InvalidOptions",
    "QuotaUsage",
    "UserInfo",
    "allowed_datasets",
    "allowed_profiles",
    "kubespawner_profile_list",
    "options_from_form",
    "render_form",
    "user_config_view",
    "validate_user_options",
]

#: the user_options keys this module understands; anything else is refused
OPTION_KEYS = ("profile", "image", "image--unlisted-choice", "gpus", "datasets")
CUSTOM_IMAGE_KEY = "image--unlisted-choice"
#: the value of the image radio/select that means "use the text field"
CUSTOM_IMAGE_CHOICE = "--custom--"
_DATASET_ENTRY_KEYS = ("name", "sub_path", "read_only", "mount_path")
#: user-chosen sub paths and mount paths: plain path segments only
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._@+-]{1,128}")
_MAX_TEXT = 512


# --------------------------------------------------------------------------------------------------
# Plain data in and out


class InvalidOptions(ValueError):
    """``user_options`` that cannot be used. ``str(e)`` is the message shown to the user.

    ``key`` names the offending option (``"gpus"``, ``"datasets[1].sub_path"``) when there is one.
    """

    def __init__(self, message: str, *, key: str | None = None):
        super().__init__(message)
        self.message = message
        self.key = key


@dataclass(frozen=True)
class UserInfo:
    """Who is spawning: the JupyterHub user name and group names."""

    name: str
    groups: frozenset[str] = frozenset()

    @classmethod
    def of(cls, name: str, groups: Iterable[str] = ()) -> UserInfo:
        return cls(name=name, groups=frozenset(groups))


@dataclass(frozen=True)
class GpuAvailability:
    """GPUs of one type, right now.

    ``largest_free`` is the most free GPUs on any single node: one pod cannot span nodes, so a
    request for 4 GPUs needs a node with 4 free even when 8 are free in total.
    """

    total: int
    free: int
    largest_free: int
    #: a sentence from the backend shown beside the figures ("this machine has no NVIDIA GPU")
    note: str = ""

    def fits(self, count: int) -> bool:
        return self.largest_free >= count


@dataclass(frozen=True)
class Availability:
    """What can be had right now, as the backend sees it.

    ``gpus`` maps a GPU type slug to its :class:`GpuAvailability`; a type missing from the
    mapping is shown as "availability unknown" and never marked unavailable. ``known=False``
    (the cache is not synced yet) shows no figures at all. ``unusable_datasets`` maps a dataset
    name to why this backend cannot mount it (e.g. hostPath under the restricted Pod Security
    level, or a PVC on the local hub).
    """

    gpus: Mapping[str, GpuAvailability] = field(default_factory=dict)
    quota: QuotaUsage | None = None
    unusable_datasets: Mapping[str, str] = field(default_factory=dict)
    known: bool = True
    #: where the figures come from, shown in the form ("cluster", "this machine")
    source: str = "cluster"

    def gpu(self, gpu_type: str) -> GpuAvailability | None:
        return self.gpus.get(gpu_type) if self.known else None


NO_AVAILABILITY = Availability(known=False)


@dataclass(frozen=True)
class DatasetMount:
    """One dataset the user chose, with the (validated) sub path, mode and mount path."""

    dataset: Dataset
    #: the path inside the volume: the dataset's own ``sub_path`` joined with the user's, or None
    sub_path: str | None
    read_only: bool
    mount_path: str
    #: the part of ``sub_path`` the user chose (relative to the dataset's own), or None
    user_sub_path: str | None = None

    @property
    def name(self) -> str:
        return self.dataset.name


@dataclass(frozen=True)
class Choice:
    """Validated ``user_options``: what to start."""

    profile: Profile
    #: the image reference to run
    image: str
    #: the chosen image's slug, or None for a custom image
    image_slug: str | None
    gpu_type: str | None
    gpu: GpuType | None
    gpus: int
    datasets: tuple[DatasetMount, ...]
    #: the user's team (its name and config), or None
    team: tuple[str, Team] | None

    @property
    def custom_image(self) -> bool:
        return self.image_slug is None

    def user_options(self) -> dict[str, Any]:
        """The canonical ``user_options`` for this choice (validates to the same choice)."""
        out: dict[str, Any] = {"profile": self.profile.slug}
        if self.image_slug is None:
            out[CUSTOM_IMAGE_KEY] = self.image
        else:
            out["image"] = self.image_slug
        if self.gpu is not None:
            out["gpus"] = self.gpus
        datasets: list[Any] = []
        for m in self.datasets:
            extra: dict[str, Any] = {}
            if m.user_sub_path is not None:
                extra["sub_path"] = m.user_sub_path
            if m.read_only != m.dataset.read_only:
                extra["read_only"] = m.read_only
            if m.mount_path != m.dataset.mount_path:
                extra["mount_path"] = m.mount_path
            datasets.append({"name": m.name, **extra} if extra else m.name)
        out["datasets"] = datasets
        return out

    def kubespawner_user_options(self) -> dict[str, Any]:
        """The same choice in KubeSpawner's ``profile_options`` format (option values are the
        choice keys of :func:`kubespawner_profile_list`, so strings)."""
        out: dict[str, Any] = {"profile": self.profile.slug}
        if self.image_slug is None:
            out[CUSTOM_IMAGE_KEY] = self.image
        else:
            out["image"] = self.image_slug
        if self.gpu is not None:
            out["gpus"] = str(self.gpus)
        return out


# --------------------------------------------------------------------------------------------------
# Who may use what


def allowed_profiles(config: KubelabConfig, user: UserInfo) -> list[Profile]:
    """The profiles the user's groups grant (a profile with no ``groups`` is for everybody)."""
    return granted_profiles(config, user.groups)


def allowed_datasets(config: KubelabConfig, user: UserInfo) -> list[Dataset]:
    """The datasets the user's groups grant (a dataset with no ``groups`` is for everybody)."""
    return granted_datasets(config, user.groups)


def default_profile(profiles: Sequence[Profile]) -> Profile | None:
    return next((p for p in profiles if p.default), profiles[0] if profiles else None)


def expand_user_path(text: str, user: UserInfo) -> str:
    """Expand ``{username}`` in a dataset's ``sub_path`` (per-user directories), as jobs do."""
    return objects.expand_user_path(text, username=user.name)


# --------------------------------------------------------------------------------------------------
# GPU counts: what is offered, what is refused, what is only "not free now"


@dataclass(frozen=True)
class _CountState:
    count: int
    #: refused by validation (over a quota): the form shows it disabled
    refused: str | None = None
    #: not free now (validation accepts it unless refuse_unavailable): the form marks it
    busy: str | None = None
    #: ``busy`` because there is no GPU of this type at all (not "in use"): the form says so once,
    #: for the whole profile, instead of "not free now" beside each count
    absent: bool = False


def _count_states(
    config: KubelabConfig, user: UserInfo, profile: Profile, availability: Availability
) -> list[_CountState]:
    if profile.gpu is None:
        return []
    gpu_type = config.gpu_types.get(profile.gpu.type)
    name = gpu_type.display_name if gpu_type else profile.gpu.type
    quota = GpuQuota.of(config, user.groups)
    usage = availability.quota if availability.known else None
    gpus = availability.gpu(profile.gpu.type)
    states: list[_CountState] = []
    for n in profile.gpu.counts:
        refused = busy = None
        ceiling = quota.breach(n) if quota is not None else None  # more than the quota itself
        now = usage.breach(n) if usage is not None and ceiling is None else None  # with what is in use
        if quota is not None and ceiling is not None:
            refused = (f"over team {quota.team}'s quota of {gpus_text(ceiling.limit)}" if ceiling.scope == "team"
                       else f"over your quota of {gpus_text(ceiling.limit)}")
        elif usage is not None and now is not None:
            refused = (f"team {usage.team} uses {now.used} of {gpus_text(now.limit)}; {now.left} left"
                       if now.scope == "team"
                       else f"you use {now.used} of your {gpus_text(now.limit)}; {now.left} left")
        absent = False
        if refused is None and gpus is not None and not gpus.fits(n):
            if gpus.total == 0:
                absent = True
                busy = gpus.note or f"the {availability.source} has no {name} now"
            elif gpus.free == 0:
                busy = f"all {gpus.total} {name} are in use" if gpus.total > 1 else f"the one {name} is in use"
            else:
                busy = f"at most {gpus.largest_free} free on one node ({gpus.free} of {gpus.total} free)"
        states.append(_CountState(n, refused, busy, absent))
    return states


# --------------------------------------------------------------------------------------------------
# Validation


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise InvalidOptions(f"option '{key}' must be text, got {json_kind(value)}", key=key)
    if len(value) > _MAX_TEXT:
        raise InvalidOptions(f"option '{key}' is too long", key=key)
    if "\x00" in value:
        raise InvalidOptions(f"option '{key}' contains a NUL character", key=key)
    return value


def _show(value: str) -> str:
    """A user-supplied value quoted for an error message (shortened, control characters shown)."""
    return shorten(value)


def _relative_path(value: Any, key: str) -> str:
    text = _text(value, key)
    parts = text.split("/")
    if text.startswith("/") or not text:
        raise InvalidOptions(f"{key} must be a relative path inside the dataset, got {_show(text)}", key=key)
    if any(p in ("..", ".") for p in parts):
        raise InvalidOptions(f"{key} may not contain '.' or '..' (it must stay inside the dataset), got {_show(text)}", key=key)
    if not all(_PATH_SEGMENT.fullmatch(p) for p in parts):
        raise InvalidOptions(
            f"{key} may use only letters, digits and . _ @ + - between single '/', got {_show(text)}",
            key=key,
        )
    return text


def _mount_path(value: Any, key: str) -> str:
    text = _text(value, key)
    if not text.startswith("/"):
        raise InvalidOptions(f"{key} must be an absolute path, got {_show(text)}", key=key)
    parts = text.rstrip("/").split("/")[1:]
    if not parts or any(p in ("..", ".") for p in parts):
        raise InvalidOptions(f"{key} may not contain '.' or '..' or be '/', got {_show(text)}", key=key)
    if not all(_PATH_SEGMENT.fullmatch(p) for p in parts):
        raise InvalidOptions(
            f"{key} may use only letters, digits and . _ @ + - between single '/', got {_show(text)}",
            key=key,
        )
    return "/" + "/".join(parts)


def _gpu_count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidOptions(f"option 'gpus' must be a whole number, got {json_kind(value)}", key="gpus")
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9]{1,3}", value):
            raise InvalidOptions(f"option 'gpus' must be a whole number, got {_show(value)}", key="gpus")
        return int(value)
    return value


def validate_user_options(
    config: KubelabConfig,
    user: UserInfo,
    user_options: Any,
    availability: Availability | None = None,
    *,
    refuse_unavailable: bool = False,
) -> Choice:
    """Check untrusted *user_options* and return the :class:`Choice`, or raise
    :class:`InvalidOptions` with a message for the user.

    Refused: anything but a dict; unknown keys; wrong types; a profile that does not exist or the
    user's groups do not grant (one message for both, so names of other groups' profiles do not
    leak); an image not offered by the profile; a custom image when the profile allows none, or
    not matching its pattern in full, or with whitespace/newline; a GPU count the profile does
    not offer, or GPUs on a CPU profile; a count over the team's or the user's GPU quota (static,
    and with *availability*'s current usage); a dataset not granted or that this backend cannot
    mount; a dataset sub path that is absolute or has ``..``; a mount path that is relative, has
    ``..``, or overlaps home, kubelab's own paths or another chosen dataset; making a read-only
    dataset writable. With ``refuse_unavailable`` also a GPU count no node (or machine) can give now.
    """
    availability = availability or NO_AVAILABILITY
    if user_options is None:
        user_options = {}
    if not isinstance(user_options, Mapping):
        raise InvalidOptions(f"server options must be an object, got {json_kind(user_options)}")
    unknown = sorted(str(k) for k in user_options if k not in OPTION_KEYS)
    if unknown:
        raise InvalidOptions(
            f"unknown option(s) {', '.join(map(_show, unknown))}; allowed: {', '.join(OPTION_KEYS)}",
            key=unknown[0],
        )

    # -- profile
    profiles = allowed_profiles(config, user)
    if "profile" in user_options:
        slug = _text(user_options["profile"], "profile")
        profile = next((p for p in profiles if p.slug == slug), None)
        if profile is None:
            offered = ", ".join(p.slug for p in profiles) or "none"
            raise InvalidOptions(
                f"no profile {_show(slug)} is available to you (yours: {offered})", key="profile"
            )
    else:
        found = default_profile(profiles)
        if found is None:
            raise InvalidOptions("no profile is available to you; ask your hub admin to add you to a group")
        profile = found

    # -- image
    if "image" in user_options and CUSTOM_IMAGE_KEY in user_options:
        raise InvalidOptions(f"give either 'image' or '{CUSTOM_IMAGE_KEY}', not both", key="image")
    image_slug: str | None
    if CUSTOM_IMAGE_KEY in user_options:
        image = _text(user_options[CUSTOM_IMAGE_KEY], CUSTOM_IMAGE_KEY)
        if not profile.custom_image.allowed:
            raise InvalidOptions(
                f"profile {profile.slug!r} does not allow a custom image; choose one of "
                f"{', '.join(i.slug for i in profile.images)}",
                key=CUSTOM_IMAGE_KEY,
            )
        if not profile.custom_image.matches(image):
            raise InvalidOptions(
                f"custom image {_show(image)} is not allowed: it must match "
                f"{profile.custom_image.pattern} in full, without spaces or newlines",
                key=CUSTOM_IMAGE_KEY,
            )
        image_slug = None
    elif "image" in user_options:
        wanted = _text(user_options["image"], "image")
        chosen = next((i for i in profile.images if i.slug == wanted), None)
        if chosen is None:
            raise InvalidOptions(
                f"profile {profile.slug!r} offers no image {_show(wanted)} "
                f"(offered: {', '.join(i.slug for i in profile.images)})",
                key="image",
            )
        image, image_slug = chosen.image, chosen.slug
    else:
        image, image_slug = profile.default_image.image, profile.default_image.slug

    # -- GPUs
    gpu_type = gpu = None
    gpus = 0
    if profile.gpu is None:
        if "gpus" in user_options and _gpu_count(user_options["gpus"]) != 0:
            raise InvalidOptions(f"profile {profile.slug!r} has no GPUs", key="gpus")
    else:
        gpu_type, gpu = profile.gpu.type, config.gpu_types.get(profile.gpu.type)
        gpus = _gpu_count(user_options["gpus"]) if "gpus" in user_options else profile.gpu.default_count
        if gpus not in profile.gpu.counts:
            raise InvalidOptions(
                f"profile {profile.slug!r} offers {', '.join(map(str, profile.gpu.counts))} "
                f"GPU{'s' if profile.gpu.counts != [1] else ''}, not {gpus}",
                key="gpus",
            )
        state = next(s for s in _count_states(config, user, profile, availability) if s.count == gpus)
        if state.refused:
            raise InvalidOptions(f"{gpus_text(gpus)}: {state.refused}", key="gpus")
        if refuse_unavailable and state.busy:
            raise InvalidOptions(f"{gpus_text(gpus)}: {state.busy}", key="gpus")

    # -- datasets
    granted = {d.name: d for d in allowed_datasets(config, user)}
    if "datasets" in user_options:
        entries = user_options["datasets"]
        if not isinstance(entries, list):
            raise InvalidOptions(
                f"option 'datasets' must be a list of dataset names, got {json_kind(entries)}",
                key="datasets",
            )
        if len(entries) > max(len(config.datasets), 1) * 4:
            raise InvalidOptions("option 'datasets' lists too many entries", key="datasets")
    else:
        entries = [d.name for d in granted.values() if d.default and d.name not in availability.unusable_datasets]
    mounts: list[DatasetMount] = []
    taken = [config.home.mount_path] if config.home.enabled else []
    for i, entry in enumerate(entries):
        mounts_key = f"datasets[{i}]"
        if isinstance(entry, Mapping):
            extra = sorted(str(k) for k in entry if k not in _DATASET_ENTRY_KEYS)
            if extra:
                raise InvalidOptions(
                    f"{mounts_key} has unknown key(s) {', '.join(map(_show, extra))}; allowed: "
                    f"{', '.join(_DATASET_ENTRY_KEYS)}",
                    key=mounts_key,
                )
            if "name" not in entry:
                raise InvalidOptions(f"{mounts_key} needs a 'name'", key=mounts_key)
            name = _text(entry["name"], f"{mounts_key}.name")
        else:
            name = _text(entry, mounts_key)
            entry = {}
        dataset = granted.get(name)
        if dataset is None:
            raise InvalidOptions(
                f"no dataset {_show(name)} is available to you (yours: {', '.join(granted) or 'none'})",
                key=mounts_key,
            )
        if name in availability.unusable_datasets:
            raise InvalidOptions(
                f"dataset {name!r} cannot be mounted here: {availability.unusable_datasets[name]}",
                key=mounts_key,
            )
        if any(m.name == name and m.mount_path == dataset.mount_path for m in mounts) and "mount_path" not in entry:
            raise InvalidOptions(f"dataset {name!r} is listed twice", key=mounts_key)
        own = expand_user_path(dataset.sub_path, user) if dataset.sub_path else None
        sub_path, rel = own, None
        if "sub_path" in entry:
            rel = _relative_path(entry["sub_path"], f"{mounts_key}.sub_path")
            sub_path = f"{own}/{rel}" if own else rel
        read_only = dataset.read_only
        if "read_only" in entry:
            if not isinstance(entry["read_only"], bool):
                raise InvalidOptions(
                    f"{mounts_key}.read_only must be true or false, got {json_kind(entry['read_only'])}",
                    key=f"{mounts_key}.read_only",
                )
            if dataset.read_only and not entry["read_only"]:
                raise InvalidOptions(f"dataset {name!r} is read-only", key=f"{mounts_key}.read_only")
            read_only = entry["read_only"]
        mount_path = dataset.mount_path
        if "mount_path" in entry:
            mount_path = _mount_path(entry["mount_path"], f"{mounts_key}.mount_path")
        for reserved in (*RESERVED_MOUNT_PATHS, *taken):
            if nested(mount_path, reserved):
                raise InvalidOptions(
                    f"{mounts_key}: mount path {mount_path!r} overlaps {reserved!r}",
                    key=f"{mounts_key}.mount_path",
                )
        taken.append(mount_path)
        mounts.append(DatasetMount(dataset, sub_path, read_only, mount_path, rel))

    return Choice(
        profile=profile,
        image=image,
        image_slug=image_slug,
        gpu_type=gpu_type,
        gpu=gpu,
        gpus=gpus,
        datasets=tuple(mounts),
        team=config.team_for(sorted(user.groups)),
    )


# --------------------------------------------------------------------------------------------------
# The form: parsing


def options_from_form(formdata: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """JupyterHub's form data (``{name: [value, ...]}``) → ``user_options``.

    Only the selected profile's fields are read (the form carries every profile's fields, so it
    works without JavaScript). Values are passed on as given; :func:`validate_user_options`
    decides. Field names: ``profile``; ``image--<slug>``, ``custom-image--<slug>``,
    ``gpus--<slug>`` per profile; ``dataset`` (checkboxes, one value per ticked dataset).
    """

    def first(key: str) -> Any:
        values = formdata.get(key) or [None]
        return values[0]

    out: dict[str, Any] = {}
    profile = first("profile")
    if profile is None:
        return out
    out["profile"] = profile
    if isinstance(profile, str):
        image = first(f"image--{profile}")
        if image == CUSTOM_IMAGE_CHOICE:
            out[CUSTOM_IMAGE_KEY] = (first(f"custom-image--{profile}") or "").strip()
        elif image is not None:
            out["image"] = image
        gpus = first(f"gpus--{profile}")
        if gpus is not None:
            out["gpus"] = int(gpus) if isinstance(gpus, str) and gpus.isascii() and gpus.isdigit() and len(gpus) < 4 else gpus
    out["datasets"] = list(formdata.get("dataset") or [])
    return out


# --------------------------------------------------------------------------------------------------
# The form: rendering


def _resource_text(profile: Profile) -> str:
    def cpu(r: Any) -> str:
        if r.limit and r.guarantee and r.limit != r.guarantee:
            return f"{format_cpu(parse_quantity(r.guarantee))}–{format_cpu(parse_quantity(r.limit))} CPU"
        value = r.limit or r.guarantee
        return f"{format_cpu(parse_quantity(value))} CPU" if value else ""

    def mem(r: Any) -> str:
        if r.limit and r.guarantee and r.limit != r.guarantee:
            return f"{format_bytes(parse_quantity(r.guarantee))}–{format_bytes(parse_quantity(r.limit))} memory"
        value = r.limit or r.guarantee
        return f"{format_bytes(parse_quantity(value))} memory" if value else ""

    parts = [cpu(profile.cpu), mem(profile.memory)]
    return " · ".join(p for p in parts if p)


@lru_cache(maxsize=1)
def _template() -> Any:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("chooser.html")


def form_context(
    config: KubelabConfig,
    user: UserInfo,
    availability: Availability | None = None,
    *,
    user_options: Any = None,
    refuse_unavailable: bool = False,
) -> dict[str, Any]:
    """The data :func:`render_form` gives the template (also handy for a custom template)."""
    availability = availability or NO_AVAILABILITY
    profiles = allowed_profiles(config, user)
    datasets = allowed_datasets(config, user)
    selected: Choice | None = None
    if user_options:
        try:
            selected = validate_user_options(config, user, user_options, availability)
        except InvalidOptions:
            selected = None
    chosen_profile = selected.profile if selected else default_profile(profiles)
    chosen_datasets = (
        {m.name for m in selected.datasets} if selected else {d.name for d in datasets if d.default}
    )

    gpu_lines = []
    shown_types: list[str] = []
    for p in profiles:
        if p.gpu is not None and p.gpu.type not in shown_types:
            shown_types.append(p.gpu.type)
    for slug in shown_types:
        gpu_type = config.gpu_types.get(slug)
        name = gpu_type.display_name if gpu_type else slug
        a = availability.gpu(slug)
        if a is None:
            text = f"{name}: availability unknown"
        elif a.total == 0:
            # nothing to count: "0 of 0 free" reads like a busy cluster, not a missing GPU
            text = f"{name}: {a.note or f'none in the {availability.source} now'}"
        else:
            text = f"{name}: {a.free} of {a.total} free"
            if a.free and a.largest_free < a.free:
                text += f" (at most {a.largest_free} on one node)"
            if a.note:
                text += f" — {a.note}"
        gpu_lines.append({"slug": slug, "text": text, "none_free": a is not None and a.free == 0})

    quota_lines = []
    quota = GpuQuota.of(config, user.groups)
    usage = availability.quota if availability.known else None
    if quota is not None:
        if usage is not None and usage.gpus_quota is not None:
            quota_lines.append(f"team {quota.team}: {usage.gpus_used} of {gpus_text(usage.gpus_quota)} in use")
        elif quota.team_gpus is not None:
            quota_lines.append(f"team {quota.team}: quota of {gpus_text(quota.team_gpus)}")
        if usage is not None and usage.user_gpus_quota is not None:
            quota_lines.append(f"you: {usage.user_gpus_used} of {gpus_text(usage.user_gpus_quota)} in use")
        elif quota.user_gpus is not None:
            quota_lines.append(f"you: quota of {gpus_text(quota.user_gpus)}")

    cards = []
    for p in profiles:
        states = _count_states(config, user, p, availability)
        default_count = p.gpu.default_count if p.gpu else 0
        chosen_count = selected.gpus if selected and selected.profile is p else default_count
        if states and all(s.refused for s in states):
            unavailable = "; ".join(dict.fromkeys(s.refused for s in states if s.refused))
        elif states and all(s.refused or s.absent for s in states):
            # no such GPU at all: say so plainly, it is not a matter of waiting
            unavailable = next(s.busy for s in states if s.absent) or ""
        elif states and all(s.refused or s.busy for s in states):
            unavailable = "not free now: " + next(s.busy for s in states if s.busy)
        else:
            unavailable = ""
        # pre-select the chosen count, else the default, else the first one that is not refused
        if any(s.count == chosen_count and s.refused for s in states):
            chosen_count = next((s.count for s in states if not s.refused), chosen_count)
        gpu_type = config.gpu_types.get(p.gpu.type) if p.gpu else None
        is_custom = bool(selected and selected.profile is p and selected.custom_image)
        cards.append({
            "profile": p,
            "resources": _resource_text(p),
            "shm": format_bytes(parse_quantity(p.shm_size)) if p.shm_size else "",
            "gpu_name": gpu_type.display_name if gpu_type else (p.gpu.type if p.gpu else ""),
            "counts": states,
            "chosen_count": chosen_count,
            "chosen_image": (
                CUSTOM_IMAGE_CHOICE if is_custom
                else (selected.image_slug if selected and selected.profile is p else p.default_image.slug)
            ),
            "custom_value": selected.image if is_custom and selected else "",
            "unavailable": unavailable,
            "checked": p is chosen_profile,
        })

    dataset_rows = []
    for d in datasets:
        reason = availability.unusable_datasets.get(d.name, "")
        dataset_rows.append({
            "dataset": d,
            "checked": d.name in chosen_datasets and not reason,
            "reason": reason,
            "source": d.source.kind.replace("_", " "),
        })
    return {
        "cards": cards,
        "datasets": dataset_rows,
        "gpu_lines": gpu_lines,
        "quota_lines": quota_lines,
        "known": availability.known,
        "source": availability.source,
        "custom_choice": CUSTOM_IMAGE_CHOICE,
        "refuse_unavailable": refuse_unavailable,
        "user": user,
    }


def render_form(
    config: KubelabConfig,
    user: UserInfo,
    availability: Availability | None = None,
    *,
    user_options: Any = None,
    refuse_unavailable: bool = False,
) -> str:
    """The chooser as an HTML fragment for JupyterHub's spawn page (see the module docstring)."""
    context = form_context(
        config, user, availability, user_options=user_options, refuse_unavailable=refuse_unavailable
    )
    return _template().render(**context)


# --------------------------------------------------------------------------------------------------
# The notebook side's view of the config


def user_config_view(
    config: KubelabConfig, user: UserInfo, *, unusable_datasets: Iterable[str] = ()
) -> KubelabConfig | None:
    """The part of the admin config *user* may see, as a config of its own: their profiles and
    the GPU types those use, the datasets their groups grant that this backend can mount (with
    ``{username}`` expanded in sub paths and claim names, as in their notebook), their team
    only, and the ``home``, ``jobs``, ``serving`` and ``pod_security`` sections whole. The
    notebook side loads it for its limits; other groups' profiles, datasets, claim names and
    teams stay on the hub. None when the user has no profile (they cannot start a server).
    """
    profiles = allowed_profiles(config, user)
    if not profiles:
        return None
    skip = set(unusable_datasets)
    datasets = []
    for d in allowed_datasets(config, user):
        if d.name in skip:
            continue
        datasets.append(objects.dataset_for_user(d, username=user.name))
    team = config.team_for(sorted(user.groups))
    gpu_types = {p.gpu.type for p in profiles if p.gpu}
    referenced = (set(user.groups) | {g for p in profiles for g in p.groups}
                  | {g for d in datasets for g in d.groups})
    if team:
        referenced.add(team[0])
    data = config.model_dump(mode="json", exclude_none=True)
    data.update(
        groups={k: v for k, v in data["groups"].items() if k in referenced},
        gpu_types={k: v for k, v in data["gpu_types"].items() if k in gpu_types},
        profiles=[p.model_dump(mode="json", exclude_none=True) for p in profiles],
        datasets=[d.model_dump(mode="json", exclude_none=True) for d in datasets],
        teams={team[0]: team[1].model_dump(mode="json", exclude_none=True)} if team else {},
    )
    # validated again: the view must load where it is read (kubelab.core.config.load_config)
    return KubelabConfig.model_validate(data)


# --------------------------------------------------------------------------------------------------
# KubeSpawner's profile_list


def _bytes(quantity: str) -> int:
    return int(parse_quantity(quantity))


def _cpu(quantity: str) -> float:
    return float(parse_quantity(quantity))


def profile_resource_traits(p: Profile) -> dict[str, Any]:
    """KubeSpawner's CPU/memory traits for profile *p* (only those the profile sets)."""
    out: dict[str, Any] = {}
    if p.cpu.guarantee:
        out["cpu_guarantee"] = _cpu(p.cpu.guarantee)
    if p.cpu.limit:
        out["cpu_limit"] = _cpu(p.cpu.limit)
    if p.memory.guarantee:
        out["mem_guarantee"] = _bytes(p.memory.guarantee)
    if p.memory.limit:
        out["mem_limit"] = _bytes(p.memory.limit)
    return out


def gpu_resource_traits(gpu_type: GpuType, count: int) -> dict[str, Any]:
    """KubeSpawner's traits for *count* GPUs of *gpu_type*: node selector, tolerations and the
    extended resource's limit and guarantee (equal: extended resources cannot be overcommitted)."""
    return {
        "node_selector": dict(gpu_type.node_selector),
        "tolerations": [toleration_dict(t) for t in gpu_type.tolerations],
        "extra_resource_limits": {gpu_type.resource: str(count)},
        "extra_resource_guarantees": {gpu_type.resource: str(count)},
    }


def toleration_dict(t: Any) -> dict[str, Any]:
    """A config toleration as a Kubernetes toleration (camelCase, no None values)."""
    out = {"key": t.key, "operator": t.operator, "value": t.value, "effect": t.effect,
           "tolerationSeconds": t.toleration_seconds}
    return {k: v for k, v in out.items() if v is not None}


def kubespawner_profile_list(config: KubelabConfig, user: UserInfo) -> list[dict[str, Any]]:
    """KubeSpawner's ``profile_list`` for *user*: only the profiles their groups grant.

    Each profile's ``kubespawner_override`` sets CPU/memory guarantee and limit, the default
    image, and for GPU profiles the GPU type's node selector and tolerations; its
    ``profile_options`` offer ``image`` (with ``unlisted_choice`` when custom images are allowed,
    carrying the anchored pattern) and ``gpus`` (each count sets ``extra_resource_limits`` and
    ``extra_resource_guarantees`` for the GPU type's resource). Datasets, ``/dev/shm``, labels
    and security are not expressed here: the Kubernetes spawner adds them to the pod manifest.
    """
    out: list[dict[str, Any]] = []
    profiles = allowed_profiles(config, user)
    default = default_profile(profiles)
    for p in profiles:
        override: dict[str, Any] = {"image": p.default_image.image, **profile_resource_traits(p)}
        options: dict[str, Any] = {
            "image": {
                "display_name": "Image",
                "choices": {
                    i.slug: {
                        "display_name": i.display_name,
                        "default": i is p.default_image,
                        "kubespawner_override": {"image": i.image},
                    }
                    for i in p.images
                },
                "unlisted_choice": {
                    "enabled": p.custom_image.allowed,
                    "display_name": "Custom image",
                    "validation_regex": p.custom_image.pattern or "",
                    "kubespawner_override": {"image": "{value}"},
                },
            }
        }
        if p.gpu is not None:
            gpu_type = config.gpu_types[p.gpu.type]
            placement = gpu_resource_traits(gpu_type, 0)
            override["node_selector"] = placement["node_selector"]
            override["tolerations"] = placement["tolerations"]
            options["gpus"] = {
                "display_name": "GPUs",
                "choices": {
                    str(n): {
                        "display_name": f"{n} × {gpu_type.display_name}",
                        "default": n == p.gpu.default_count,
                        "kubespawner_override": {
                            k: v for k, v in gpu_resource_traits(gpu_type, n).items()
                            if k.startswith("extra_resource_")},
                    }
                    for n in p.gpu.counts
                },
            }
        out.append({
            "slug": p.slug,
            "display_name": p.display_name,
            "description": p.description,
            "default": p is default,
            "kubespawner_override": override,
            "profile_options": options,
        })
    return out
