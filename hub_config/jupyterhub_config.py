"""JupyterHub configuration for kubelab on Kubernetes (the ``kubelab`` profile spawner).

Use it as is (``jupyterhub -f jupyterhub_config.py``) or copy the lines you need; for Zero to
JupyterHub, hub_config/z2jh-values.yaml carries the same settings. docs/spawner.md explains each.

Environment:
  KUBELAB_CONFIG   the admin config (default /usr/local/etc/kubelab/kubelab.yaml)
"""

import os
import sys

from kubelab.core.config import ConfigError, cached_config

if "get_config" not in globals():  # imported, not loaded by JupyterHub: configure nothing
    raise ImportError("jupyterhub_config.py is a file for `jupyterhub -f`, not a module to import")
c = get_config()  # type: ignore[name-defined]  # noqa: F821 - JupyterHub provides it

KUBELAB_CONFIG = os.environ.get("KUBELAB_CONFIG", "/usr/local/etc/kubelab/kubelab.yaml")

# A bad kubelab.yaml stops the hub here, with every problem, its file, line and key path, instead
# of failing at the first spawn. Read through the process's shared watcher, which the spawner uses
# too: its warnings are logged once, and an edit is picked up without a restart.
try:
    kubelab_config = cached_config(KUBELAB_CONFIG)
except ConfigError as e:
    sys.exit(e.format())

c.JupyterHub.spawner_class = "kubelab"
c.ProfileSpawner.kubelab_config = KUBELAB_CONFIG

# Create the groups the config refers to, so that admins can add members from the admin page
# (existing members are kept). Skipped when the authenticator manages groups itself.
if not c.Authenticator.get("manage_groups", False):  # (getattr would make a lazy value)
    c.JupyterHub.load_groups = {name: {} for name in kubelab_config.groups}

# A GPU pod no node can take fails after this many seconds (not the whole start_timeout).
c.ProfileSpawner.gpu_unschedulable_timeout = 60
# Pulling a multi-GB CUDA image on a fresh GPU node takes a while.
c.ProfileSpawner.start_timeout = 600
# The user's home volume (KubeSpawner's PVC), sized from the config.
c.ProfileSpawner.storage_pvc_ensure = kubelab_config.home.enabled
c.ProfileSpawner.storage_capacity = kubelab_config.home.size
if kubelab_config.home.storage_class:
    c.ProfileSpawner.storage_class = kubelab_config.home.storage_class
if kubelab_config.home.enabled:
    c.ProfileSpawner.volumes = [
        {"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}},
    ]
    c.ProfileSpawner.volume_mounts = [
        {"name": "home", "mountPath": kubelab_config.home.mount_path},
    ]
