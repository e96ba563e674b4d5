"""What both profile spawners share: the admin config, the user, refusing options, the env.

:class:`KubelabSpawnerMixin` goes before the JupyterHub spawner class it extends
(``class ProfileSpawner(KubelabSpawnerMixin, KubeSpawner)``, ``class
LocalProfileSpawner(KubelabSpawnerMixin, SimpleLocalProcessSpawner)``). It holds:

* the config: :attr:`kubelab` (the file named by the ``kubelab_config`` trait each spawner
  declares with its own default, re-read when it changes);
* the user: :meth:`user_info` (name and JupyterHub groups, what the access rules take);
* validation: :meth:`_run_apply_user_options`, the step JupyterHub runs before anything is
  created, calls the spawner's :meth:`validate_options` and then the admin's own
  ``apply_user_options`` hook, if any. Why JupyterHub's (private) step and not the public
  ``apply_user_options`` trait: an admin who sets that trait would replace kubelab's checks, and
  options a user may not choose must be refused whatever else is configured. A refusal is
  :func:`spawn_error` (HTTP 400 with the message, logged as one warning line, no traceback);
* :func:`default_config_path`: where each spawner's ``kubelab_config`` points by default.
"""

from __future__ import annotations

import os
from typing import Any

from tornado import web

from kubelab.core.config import ConfigError, KubelabConfig, cached_config
from kubelab.core.paths import data_dir, shipped
from kubelab.spawner.profiles import Choice, InvalidOptions, UserInfo

try:  # JupyterHub ≥ 6: a policy failure, logged without a traceback
    from jupyterhub.spawner import SpawnException as _SpawnException
except ImportError:  # pragma: no cover - JupyterHub 5
    _SpawnException = None

__all__ = ["KubelabSpawnerMixin", "default_config_path", "spawn_error"]


def spawn_error(message: str, *, reason: str, status: int = 400) -> web.HTTPError:
    """An HTTP error whose message JupyterHub shows the user as is."""
    if _SpawnException is not None:
        return _SpawnException(message, reason=reason, status_code=status)
    error = web.HTTPError(status, "%s", message)  # pragma: no cover
    error.jupyterhub_message = message  # type: ignore[attr-defined]  # pragma: no cover
    return error  # pragma: no cover


def default_config_path(*, local: bool) -> str:
    """The admin config a spawner reads when ``kubelab_config`` is not set: ``$KUBELAB_CONFIG``;
    else, on one machine (*local*), DATA_DIR/kubelab.yaml when it exists, then kubelab's
    ``hub_config/local.yaml``; on Kubernetes, the example ``hub_config/kubelab.yaml``."""
    env = os.environ.get("KUBELAB_CONFIG")
    if env:
        return env
    if local:
        mine = data_dir() / "kubelab.yaml"
        if mine.exists():
            return str(mine)
    try:
        return str(shipped("local.yaml" if local else "kubelab.yaml"))
    except FileNotFoundError:
        return ""


class KubelabSpawnerMixin:
    """See the module docstring. The spawner class declares the ``kubelab_config`` trait."""

    kubelab_config: str
    user: Any
    log: Any
    _log_name: str

    @property
    def kubelab(self) -> KubelabConfig:
        """The admin config (re-read when the file changes; the last good one is kept)."""
        if not self.kubelab_config:
            raise spawn_error(
                f"kubelab: no admin config (set {type(self).__name__}.kubelab_config); tell your "
                "hub admin", reason="kubelab-config", status=500)
        return cached_config(self.kubelab_config, self.log)

    def user_info(self) -> UserInfo:
        """The user as the access rules see them: name and JupyterHub group names."""
        groups = [getattr(g, "name", g) for g in (getattr(self.user, "groups", None) or [])]
        return UserInfo.of(self.user.name, groups)

    def refuse(self, error: InvalidOptions) -> web.HTTPError:
        """The one way a spawner refuses options: HTTP 400 with the message, one warning line."""
        self.log.warning("Refused server options for %s: %s", self._log_name, error)
        return spawn_error(f"Invalid server options: {error}", reason="invalid-options")

    def broken_config(self, error: ConfigError) -> web.HTTPError:
        self.log.error("kubelab config: %s", error)
        return spawn_error("the hub's kubelab config is broken; tell your hub admin",
                           reason="kubelab-config", status=500)

    async def validate_options(self, user_options: Any) -> Choice:  # pragma: no cover - abstract
        raise NotImplementedError

    async def _run_apply_user_options(self, user_options: Any) -> None:
        # JupyterHub runs this in User.spawn before start(): the earliest point with the final
        # user_options; an HTTPError raised here is answered with its status (400).
        await self.validate_options(user_options)
        if getattr(self, "apply_user_options", None):  # an admin's own hook runs after kubelab's
            await super()._run_apply_user_options(user_options)  # type: ignore[misc]
