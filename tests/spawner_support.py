"""Helpers for the spawner tests: fake JupyterHub users, pointing KubeSpawner's client at the
Kubernetes API test server, and stopping the hub-wide watches between tests."""

from __future__ import annotations

import os
from typing import Any


class FakeGroup:
    def __init__(self, name: str):
        self.name = name


class FakeUser:
    def __init__(self, name: str, groups: list[str]):
        self.name = name
        self.id = abs(hash(name)) % 10_000
        self.url = f"/user/{name}/"
        self.escaped_name = name
        self.groups = [FakeGroup(g) for g in groups]


def point_kubespawner_at(kubeconfig: str) -> None:
    """KubeSpawner loads the default kubeconfig once (lru_cache) from the path kubernetes_asyncio
    read from $KUBECONFIG at import; point both at the test server's."""
    from kubernetes_asyncio.config import kube_config
    from kubespawner import clients

    os.environ["KUBECONFIG"] = kubeconfig
    if kube_config.KUBE_CONFIG_DEFAULT_LOCATION != kubeconfig:
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = kubeconfig
        clients.load_config.cache_clear()


async def cleanup_shared_watches() -> None:
    from kubelab.core.kube import Reflector
    from kubelab.spawner.cluster_state import ClusterState
    from kubelab.spawner.kubernetes import ProfileSpawner
    from kubelab.spawner.provision import Provisioner

    await ClusterState.stop_all()
    await Reflector.stop_all()
    await ProfileSpawner._stop_all_reflectors()
    Provisioner.ensured.clear()
    ProfileSpawner._ensured_shapes.clear()
    ProfileSpawner._claims_seen.clear()


def home_volume(mount_path: str = "/home/jovyan") -> dict[str, Any]:
    """ProfileSpawner traits giving the notebook KubeSpawner's home PVC (``{pvc_name}``) at
    *mount_path*, as hub_config/jupyterhub_config.py does."""
    return {
        "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}],
        "volume_mounts": [{"name": "home", "mountPath": str(mount_path)}],
    }
