"""Who submits a job and from where: the notebook's world, read from its environment.

A notebook server started by kubelab's spawner knows its user, groups, image, datasets and namespace
from environment variables the spawner sets (see docs/jobs.md, "The notebook's world"); a job
inherits them. Outside a spawned server (``kubelab up``, a laptop, the tests) the same variables can
be set by hand, and everything has a sensible default.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kubelab.core.config import ConfigError, KubelabConfig, load_config
from kubelab.core.jobs.errors import BackendError

__all__ = ["JobContext", "DEFAULT_CONFIG_PATH"]

#: where the spawner mounts the admin config into notebook pods
DEFAULT_CONFIG_PATH = "/etc/kubelab/kubelab.yaml"
_SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _dataset_names(value: str | None) -> tuple[str, ...]:
    """``KUBELAB_DATASETS`` as the spawners write it: a JSON list of ``{"name": ...}`` (Kubernetes
    spawner), a JSON object keyed by name (local spawner), or plain comma-separated names."""
    if not value:
        return ()
    try:
        data = json.loads(value)
    except ValueError:
        return _split(value)
    if isinstance(data, dict):
        return tuple(str(k) for k in data)
    if isinstance(data, list):
        return tuple(str(d.get("name")) if isinstance(d, dict) else str(d) for d in data)
    return ()


@dataclass(frozen=True)
class JobContext:
    """The submitting user and notebook, and the admin config that limits them."""

    user: str
    groups: tuple[str, ...] = ()
    #: the admin config; None: no limits but the built-in defaults of ``jobs``
    config: KubelabConfig | None = None
    #: the notebook's image (the default image of a job)
    image: str | None = None
    #: datasets mounted in the notebook (a job may always use those)
    notebook_datasets: tuple[str, ...] = ()
    namespace: str | None = None
    service_account: str | None = None
    #: where per-job directories (workspace snapshot, outputs, logs, metrics) live
    jobs_root: Path = field(default_factory=lambda: Path.home() / "kubelab-jobs")
    #: the home volume's claim, mounted into Kubernetes job pods so they see the jobs root
    home_claim: str | None = None
    #: the notebook profile's GPU type (a key of ``gpu_types``): the GPUs a job asks for
    gpu_type: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> JobContext:
        """Read the context from *environ* (default ``os.environ``).

        Variables: ``JUPYTERHUB_USER`` (else the login name), ``KUBELAB_GROUPS`` (comma separated),
        ``KUBELAB_CONFIG`` (else /etc/kubelab/kubelab.yaml when it exists), ``KUBELAB_IMAGE``
        or ``JUPYTER_IMAGE`` (KubeSpawner sets it), ``KUBELAB_DATASETS`` (JSON or names), ``KUBELAB_NAMESPACE`` (else the pod's own
        namespace), ``KUBELAB_SERVICE_ACCOUNT``, ``KUBELAB_JOBS_ROOT``, ``KUBELAB_HOME_CLAIM``,
        ``KUBELAB_GPU_TYPE``.
        """
        env = os.environ if environ is None else environ
        user = env.get("JUPYTERHUB_USER") or env.get("USER") or _login()
        config_path = env.get("KUBELAB_CONFIG")
        if config_path is None and Path(DEFAULT_CONFIG_PATH).is_file():
            config_path = DEFAULT_CONFIG_PATH
        config = None
        if config_path:
            try:
                config = load_config(config_path)
            except ConfigError as e:
                raise BackendError(
                    f"the kubelab config {config_path} is not valid "
                    f"({len(e.problems)} problem(s); run `kubelab config check {config_path}`)"
                ) from None
        namespace = env.get("KUBELAB_NAMESPACE")
        if namespace is None and Path(_SA_NAMESPACE).is_file():
            namespace = Path(_SA_NAMESPACE).read_text().strip() or None
        root = env.get("KUBELAB_JOBS_ROOT")
        return cls(
            user=user,
            groups=_split(env.get("KUBELAB_GROUPS")),
            config=config,
            image=(env.get("KUBELAB_IMAGE") or env.get("JUPYTER_IMAGE_SPEC")
                   or env.get("JUPYTER_IMAGE") or None),
            notebook_datasets=_dataset_names(env.get("KUBELAB_DATASETS")),
            namespace=namespace,
            service_account=env.get("KUBELAB_SERVICE_ACCOUNT") or None,
            jobs_root=Path(root).expanduser() if root else Path.home() / "kubelab-jobs",
            home_claim=env.get("KUBELAB_HOME_CLAIM") or None,
            gpu_type=env.get("KUBELAB_GPU_TYPE") or None,
        )


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "user"
