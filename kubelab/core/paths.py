"""Where kubelab's files are: one place for each path rule.

* :func:`data_dir`: the state directory of ``kubelab up`` and the local spawner
  (``$KUBELAB_DATA_DIR``, else ``~/.kubelab``);
* :func:`shipped`: a file shipped in ``hub_config/`` (the example ``kubelab.yaml``, ``local.yaml``,
  the admission policy...), found by path rather than by import: ``hub_config/`` is data, not a
  package;
* :data:`NOTEBOOK_CONFIG_DIR` / :data:`NOTEBOOK_CONFIG_PATH`: where a notebook pod finds the user's
  view of the admin config (the Kubernetes spawner mounts it there; the job API reads it there);
* :func:`nested`: whether two mount paths collide (equal, or one inside the other).
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

__all__ = ["DATA_DIR_ENV", "DEFAULT_DATA_DIR", "NOTEBOOK_CONFIG_DIR", "NOTEBOOK_CONFIG_FILE",
           "NOTEBOOK_CONFIG_PATH", "data_dir", "nested", "shipped"]

DATA_DIR_ENV = "KUBELAB_DATA_DIR"
DEFAULT_DATA_DIR = "~/.kubelab"

#: where the notebook-side settings ConfigMap is mounted (kubelab reserves /etc/kubelab)
NOTEBOOK_CONFIG_DIR = "/etc/kubelab"
NOTEBOOK_CONFIG_FILE = "kubelab.yaml"
NOTEBOOK_CONFIG_PATH = f"{NOTEBOOK_CONFIG_DIR}/{NOTEBOOK_CONFIG_FILE}"

_HUB_CONFIG = Path(__file__).resolve().parent.parent / "hub_config"


def data_dir(given: str | os.PathLike[str] | None = None) -> Path:
    """The state directory: *given*, else ``$KUBELAB_DATA_DIR``, else ``~/.kubelab`` (with ``~``
    expanded, not resolved)."""
    return Path(given or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()


def shipped(name: str) -> Path:
    """``hub_config/NAME`` as installed with kubelab; FileNotFoundError names a broken install."""
    candidate = _HUB_CONFIG / name
    if not candidate.is_file():
        raise FileNotFoundError(f"{candidate} is missing: kubelab is not installed completely")
    return candidate


def nested(a: str, b: str) -> bool:
    """True when POSIX paths *a* and *b* are equal or one contains the other (after normalising)."""
    a, b = posixpath.normpath(a), posixpath.normpath(b)
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")
