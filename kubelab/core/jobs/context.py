"""Who submits a job and from where: the notebook's world, read from its environment.

A notebook server started by kubelab's spawner knows its user, groups, image, datasets, namespace
and admin config from the environment the spawner sets: the contract
:class:`kubelab.core.notebook_env.NotebookEnv` (docs/notebook-env.md), which this module reads and
nothing else. A job inherits it. Outside a spawned server (a laptop, the tests) the same variables
can be set by hand, and everything has a sensible default.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kubelab.core.config import ConfigError, KubelabConfig, load_config
from kubelab.core.jobs.errors import BackendError
from kubelab.core.notebook_env import NotebookEnv, NotebookEnvError, with_notebook_mounts
from kubelab.core.paths import NOTEBOOK_CONFIG_PATH

__all__ = ["JobContext", "DEFAULT_CONFIG_PATH"]

#: where the spawner mounts the admin config into notebook pods
DEFAULT_CONFIG_PATH = NOTEBOOK_CONFIG_PATH
_SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


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
    #: everything the spawner said (None: built by hand, not from an environment)
    notebook: NotebookEnv | None = None
    #: the user's team (whose quota the job counts against); None: the config's pick for
    #: *groups* (:attr:`team_name`)
    team: str | None = None

    @property
    def team_name(self) -> str | None:
        """The team jobs are labelled with: the spawner's word (``KUBELAB_TEAM``), else the
        first team of the config whose group the user is in, as the spawner picks it."""
        if self.team:
            return self.team
        found = self.config.team_for(self.groups) if self.config is not None else None
        return found[0] if found else None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> JobContext:
        """Read the context from *environ* (default ``os.environ``) through
        :meth:`NotebookEnv.from_env <kubelab.core.notebook_env.NotebookEnv.from_env>`.

        Defaults for what is not set: the user is the login name; the config is
        /etc/kubelab/kubelab.yaml when it exists (where the Kubernetes spawner mounts the user's
        view of it), else none; the namespace is the pod's own; the jobs root is
        ``~/kubelab-jobs``. The config is the notebook's: each dataset the notebook mounts is
        where and as the notebook mounts it, and the home volume at the notebook's home
        (:func:`~kubelab.core.notebook_env.with_notebook_mounts`), so a job mounts the same data.
        """
        env = os.environ if environ is None else environ
        try:
            nb = NotebookEnv.from_env(env)
        except NotebookEnvError as e:
            raise BackendError(f"this notebook's kubelab settings cannot be read: {e}") from None
        config_path = nb.config_path
        if config_path is None and Path(DEFAULT_CONFIG_PATH).is_file():
            config_path = DEFAULT_CONFIG_PATH
        config = None
        if config_path:
            try:
                config = with_notebook_mounts(load_config(config_path), nb)
            except ConfigError as e:
                raise BackendError(
                    f"the kubelab config {config_path} is not valid "
                    f"({len(e.problems)} problem(s); run `kubelab config check {config_path}`)"
                ) from None
        namespace = nb.namespace
        if namespace is None and Path(_SA_NAMESPACE).is_file():
            namespace = Path(_SA_NAMESPACE).read_text().strip() or None
        return cls(
            user=nb.user or env.get("USER") or _login(),
            groups=nb.groups,
            config=config,
            image=nb.image,
            notebook_datasets=nb.dataset_names,
            namespace=namespace,
            service_account=nb.service_account,
            jobs_root=Path(nb.jobs_root).expanduser() if nb.jobs_root else Path.home() / "kubelab-jobs",
            home_claim=nb.home_claim,
            gpu_type=nb.gpu_type,
            notebook=nb,
            team=nb.team,
        )


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "user"
