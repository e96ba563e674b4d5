"""The contract between the hub side and the notebook side: what a spawner tells a notebook server.

Both spawners (``kubelab.spawner.kubernetes.ProfileSpawner`` and the local twin
``kubelab.spawner.local.LocalProfileSpawner``) describe the server they start with one
:class:`NotebookEnv` and put ``NotebookEnv.to_env()`` into the server's environment; the notebook
side (``kubelab.core.jobs.context``, and anything else that wants to know where it runs) reads it
back with :meth:`NotebookEnv.from_env`. Neither side writes or parses a ``KUBELAB_*`` variable by
hand, so the two cannot drift apart again.

What does not fit in environment variables -- the admin config with its limits -- travels as a
file: ``config_path`` names it (on Kubernetes the spawner writes the part of ``kubelab.yaml`` the
user may see into a ConfigMap mounted at ``/etc/kubelab/``; locally it is the admin's own file).

Versioning: ``KUBELAB_ENV_VERSION`` (:data:`ENV_VERSION`). Fields may be *added* within a version
(an older reader ignores variables it does not know, a newer reader sees them absent and uses the
default); changing what an existing variable means or how it is written bumps the version, and
:meth:`NotebookEnv.from_env` refuses a version newer than it knows rather than misread it (a
notebook image older than the hub). A missing version is read as 1: environments set by hand.

docs/notebook-env.md lists every variable and why it is there. This module is pure: no I/O, no
imports beyond the config schema.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from kubelab.core.config import Dataset, KubelabConfig

__all__ = [
    "ENV_VERSION",
    "NotebookDataset",
    "NotebookEnv",
    "NotebookEnvError",
    "with_notebook_mounts",
]

#: the version of the variables this module writes (and the newest it reads)
ENV_VERSION = 1

Backend = Literal["kubernetes", "local"]
BACKENDS: tuple[str, ...] = ("kubernetes", "local")

#: the variables :meth:`NotebookEnv.to_env` may write (and nothing else)
VARIABLES = (
    "KUBELAB_ENV_VERSION", "KUBELAB_BACKEND", "KUBELAB_USER", "KUBELAB_GROUPS", "KUBELAB_TEAM",
    "KUBELAB_NAMESPACE", "KUBELAB_SERVICE_ACCOUNT", "KUBELAB_PROFILE", "KUBELAB_IMAGE",
    "KUBELAB_GPU_TYPE", "KUBELAB_GPUS", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER",
    "KUBELAB_DATASETS", "KUBELAB_HOME_CLAIM", "KUBELAB_HOME_MOUNT", "KUBELAB_CONFIG",
    "KUBELAB_DATA_DIR", "KUBELAB_JOBS_ROOT",
)


class NotebookEnvError(ValueError):
    """The environment cannot be read as a notebook's world; ``str()`` says why, for the user."""


@dataclass(frozen=True)
class NotebookDataset:
    """One dataset mounted in the notebook, as the notebook has it.

    ``source`` is the admin config's volume source (``{"pvc": {"claim_name": "imagenet-alice"}}``,
    ``{"host_path": {...}}``, ...) with ``{username}`` already expanded, and ``sub_path`` the path
    inside that volume (the dataset's own and the user's joined), so a job mounts exactly the same
    data at the same place even when the notebook's choice differs from the config's default.
    """

    name: str
    #: "" when unknown (a hand-set list of names)
    mount_path: str = ""
    #: None when unknown: the config's mode applies
    read_only: bool | None = None
    sub_path: str | None = None
    source: Mapping[str, Any] | None = None
    #: local backend: where the notebook sees the data (the link in its working directory)
    path: str | None = None
    #: local backend: the directory that link points to
    target: str | None = None
    #: local backend: whether the OS (not only good manners) keeps a read-only dataset read-only
    read_only_enforced: bool | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        for f in ("mount_path", "read_only", "sub_path", "source", "path", "target", "read_only_enforced"):
            value = getattr(self, f)
            if value is not None and value != "":
                out[f] = dict(value) if f == "source" else value
        return out

    @classmethod
    def from_json(cls, data: Any) -> NotebookDataset:
        """One entry of ``KUBELAB_DATASETS``: an object with at least ``name``, or a bare name."""
        if isinstance(data, str):
            return cls(name=data)
        if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
            raise NotebookEnvError(f"KUBELAB_DATASETS: an entry is not a dataset: {str(data)[:80]}")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}  # keys of newer writers: ignored
        source = values.get("source")
        if source is not None and not isinstance(source, Mapping):
            values["source"] = None  # an older local spawner wrote the link target here
        return cls(**values)

    @classmethod
    def of(cls, dataset: Dataset, **changes: Any) -> NotebookDataset:
        """The entry for *dataset* as the config declares it, with *changes* (the user's choice)."""
        base = cls(
            name=dataset.name, mount_path=dataset.mount_path, read_only=dataset.read_only,
            sub_path=dataset.sub_path,
            source=dataset.source.model_dump(mode="json", exclude_none=True),
        )
        return replace(base, **changes)

    def to_dataset(self, declared: Dataset | None = None) -> Dataset | None:
        """The admin config's :class:`Dataset` as mounted here: *declared* (the config's entry)
        with this mount path, sub path and mode, or built from ``source`` alone; None when
        neither is known."""
        if declared is None:
            if not self.source or not self.mount_path:
                return None
            try:  # validated: the environment is the user's to change
                return Dataset.model_validate({
                    "name": self.name, "source": dict(self.source), "mount_path": self.mount_path,
                    "read_only": self.read_only is not False, "sub_path": self.sub_path,
                })
            except ValueError:
                return None
        # a job may make a dataset read-only as the notebook did, never writable against the config
        changes: dict[str, Any] = {"read_only": bool(self.read_only) or declared.read_only}
        if self.mount_path:
            changes["mount_path"] = self.mount_path
        if self.mount_path or self.sub_path is not None:
            changes["sub_path"] = self.sub_path
        return declared.model_copy(update=changes)


@dataclass(frozen=True)
class NotebookEnv:
    """Everything a spawner tells the notebook side about the server it started.

    Each field is one environment variable (docs/notebook-env.md says why each is there);
    None / empty means "not set" and the reader falls back to its own default.
    """

    #: which job backend the server's jobs use: ``kubernetes`` (a pod) or ``local`` (kubelab up)
    backend: Backend | None = None
    #: the JupyterHub user (JupyterHub also sets ``JUPYTERHUB_USER``; kept here so the contract
    #: is complete on its own)
    user: str | None = None
    #: the user's JupyterHub groups: they grant datasets and decide the team and its quota
    groups: tuple[str, ...] = ()
    #: the user's team (a group under ``teams``), or None
    team: str | None = None
    #: the namespace the notebook runs in; jobs and model servers go there too
    namespace: str | None = None
    #: the ServiceAccount the notebook runs as; job pods run as it too (without a token)
    service_account: str | None = None
    #: the profile slug the user chose
    profile: str | None = None
    #: the image the notebook runs: a job's default image
    image: str | None = None
    #: the profile's GPU type (a key of ``gpu_types``): the GPUs a job asks for
    gpu_type: str | None = None
    #: how many GPUs the notebook has
    gpus: int = 0
    #: local backend: the GPUs the server may use (``CUDA_VISIBLE_DEVICES``); () is "none", None
    #: is "not set by kubelab" (on Kubernetes the device plugin decides)
    cuda_devices: tuple[str, ...] | None = None
    #: the datasets mounted in the notebook, with where and how (:class:`NotebookDataset`)
    datasets: tuple[NotebookDataset, ...] = ()
    #: the home volume's PersistentVolumeClaim: job pods mount it to see their workspace snapshot
    #: and write outputs the notebook reads
    home_claim: str | None = None
    #: where the home volume is mounted in the notebook (and so in job pods)
    home_mount: str | None = None
    #: the admin config (its limits) as the notebook may read it
    config_path: str | None = None
    #: local backend: kubelab's state directory (``kubelab up --data-dir``)
    data_dir: str | None = None
    #: where per-job directories go; None: ``~/kubelab-jobs``
    jobs_root: str | None = None
    version: int = ENV_VERSION

    def __post_init__(self) -> None:
        if self.backend is not None and self.backend not in BACKENDS:
            raise NotebookEnvError(f"KUBELAB_BACKEND must be one of {', '.join(BACKENDS)}, got {self.backend!r}")

    # -- writing --------------------------------------------------------------------------------

    def to_env(self) -> dict[str, str]:
        """The environment variables (only those that are set; all names in :data:`VARIABLES`)."""
        env: dict[str, str] = {"KUBELAB_ENV_VERSION": str(self.version)}
        plain = {
            "KUBELAB_BACKEND": self.backend, "KUBELAB_USER": self.user, "KUBELAB_TEAM": self.team,
            "KUBELAB_NAMESPACE": self.namespace, "KUBELAB_SERVICE_ACCOUNT": self.service_account,
            "KUBELAB_PROFILE": self.profile, "KUBELAB_IMAGE": self.image,
            "KUBELAB_GPU_TYPE": self.gpu_type, "KUBELAB_HOME_CLAIM": self.home_claim,
            "KUBELAB_HOME_MOUNT": self.home_mount, "KUBELAB_CONFIG": self.config_path,
            "KUBELAB_DATA_DIR": self.data_dir, "KUBELAB_JOBS_ROOT": self.jobs_root,
        }
        env.update({k: v for k, v in plain.items() if v})
        if self.groups:
            # JSON, not commas: a JupyterHub group name may contain a comma
            env["KUBELAB_GROUPS"] = json.dumps(list(self.groups))
        env["KUBELAB_GPUS"] = str(self.gpus)
        if self.cuda_devices is not None:
            # "" hides every GPU: a CPU server must not grab GPUs given to another server
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.cuda_devices)
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # indexes mean what nvidia-smi says they mean
        env["KUBELAB_DATASETS"] = json.dumps([d.to_json() for d in self.datasets], separators=(",", ":"))
        return env

    # -- reading --------------------------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> NotebookEnv:
        """Read the variables from *environ*; tolerant of hand-set values (groups as
        ``a, b``; datasets as names, a JSON list, or the JSON object an older local spawner
        wrote). Raises :class:`NotebookEnvError` for a version newer than :data:`ENV_VERSION`
        or a value that cannot be read."""
        env = environ
        raw_version = (env.get("KUBELAB_ENV_VERSION") or "").strip()
        try:
            version = int(raw_version) if raw_version else 1
        except ValueError:
            raise NotebookEnvError(f"KUBELAB_ENV_VERSION must be a number, got {raw_version!r}") from None
        if version > ENV_VERSION:
            raise NotebookEnvError(
                f"this server was started by a newer kubelab (environment version {version}); the "
                f"kubelab in this image reads version {ENV_VERSION}: update the notebook image"
            )
        backend = (env.get("KUBELAB_BACKEND") or "").strip().lower() or None
        gpus_text = (env.get("KUBELAB_GPUS") or "").strip()
        try:
            gpus = int(gpus_text) if gpus_text else 0
        except ValueError:
            raise NotebookEnvError(f"KUBELAB_GPUS must be a whole number, got {gpus_text!r}") from None
        cuda = env.get("CUDA_VISIBLE_DEVICES")
        return cls(
            backend=backend,  # type: ignore[arg-type]  # checked in __post_init__
            user=_get(env, "KUBELAB_USER") or _get(env, "JUPYTERHUB_USER"),
            groups=_names(env.get("KUBELAB_GROUPS"), "KUBELAB_GROUPS"),
            team=_get(env, "KUBELAB_TEAM"),
            namespace=_get(env, "KUBELAB_NAMESPACE"),
            service_account=_get(env, "KUBELAB_SERVICE_ACCOUNT"),
            profile=_get(env, "KUBELAB_PROFILE"),
            # KubeSpawner sets JUPYTER_IMAGE(_SPEC) in every pod: the notebook's image even
            # when the spawner is not kubelab's
            image=_get(env, "KUBELAB_IMAGE") or _get(env, "JUPYTER_IMAGE_SPEC") or _get(env, "JUPYTER_IMAGE"),
            gpu_type=_get(env, "KUBELAB_GPU_TYPE"),
            gpus=gpus,
            cuda_devices=None if cuda is None else tuple(d.strip() for d in cuda.split(",") if d.strip()),
            datasets=_datasets(env.get("KUBELAB_DATASETS")),
            home_claim=_get(env, "KUBELAB_HOME_CLAIM"),
            home_mount=_get(env, "KUBELAB_HOME_MOUNT"),
            config_path=_get(env, "KUBELAB_CONFIG"),
            data_dir=_get(env, "KUBELAB_DATA_DIR"),
            jobs_root=_get(env, "KUBELAB_JOBS_ROOT"),
            version=version,
        )

    @property
    def dataset_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.datasets)

    def dataset(self, name: str) -> NotebookDataset | None:
        return next((d for d in self.datasets if d.name == name), None)


def _get(env: Mapping[str, str], key: str) -> str | None:
    value = env.get(key)
    return value.strip() or None if value is not None else None


def _names(value: str | None, key: str) -> tuple[str, ...]:
    """A JSON list of names, or comma-separated names (set by hand)."""
    text = (value or "").strip()
    if not text:
        return ()
    if text.startswith("["):
        try:
            data = json.loads(text)
        except ValueError:
            raise NotebookEnvError(f"{key} is not a JSON list: {text[:80]}") from None
        return tuple(str(v) for v in data if str(v))
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _datasets(value: str | None) -> tuple[NotebookDataset, ...]:
    text = (value or "").strip()
    if not text:
        return ()
    if not text.startswith(("[", "{")):
        return tuple(NotebookDataset(name=n) for n in _names(text, "KUBELAB_DATASETS"))
    try:
        data = json.loads(text)
    except ValueError:
        raise NotebookEnvError(f"KUBELAB_DATASETS is not valid JSON: {text[:80]}") from None
    if isinstance(data, Mapping):  # {name: {...}}: what the local spawner wrote before version 1
        return tuple(
            NotebookDataset.from_json({**(v if isinstance(v, Mapping) else {}), "name": str(k)})
            for k, v in data.items()
        )
    if not isinstance(data, list):
        raise NotebookEnvError("KUBELAB_DATASETS must be a JSON list of datasets")
    return tuple(NotebookDataset.from_json(d) for d in data)


def with_notebook_mounts(config: KubelabConfig, env: NotebookEnv) -> KubelabConfig:
    """*config* as the notebook sees it: each dataset the notebook mounts where and as the
    notebook mounts it (its mount path, sub path and mode; on the local backend its mount path
    is the link in the working directory, where the data really is), datasets the notebook has
    but the config does not know added from their ``source``, and the home volume at the
    notebook's mount path. A job given this config mounts what the notebook has, where it has it.
    """
    declared = {d.name: d for d in config.datasets}
    mounted: dict[str, Dataset] = {}
    for nd in env.datasets:
        if env.backend == "local" and nd.path:
            nd = replace(nd, mount_path=nd.path)
        dataset = nd.to_dataset(declared.get(nd.name))
        if dataset is not None:
            mounted[nd.name] = dataset
    changes: dict[str, Any] = {}
    if mounted:
        datasets: Sequence[Dataset] = [mounted.pop(d.name, d) for d in config.datasets]
        changes["datasets"] = [*datasets, *mounted.values()]
    if env.home_mount and config.home.mount_path != env.home_mount:
        changes["home"] = config.home.model_copy(update={"mount_path": env.home_mount})
    return config.model_copy(update=changes) if changes else config

