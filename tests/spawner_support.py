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


A100 = {"nvidia.com/gpu.product": "A100"}
GPU_TAINT = ["nvidia.com/gpu=present:NoSchedule"]


def add_claims(cluster: Any, namespace: str, *claims: str, user: str | None = "alice", team: str = "ml") -> None:
    """PersistentVolumeClaims that PVC datasets name, as an admin creates them in a user's (or,
    with ``user=None``, a team's) namespace, creating it as kubelab would when missing."""
    import kubernetes

    from kubelab.core import objects
    from kubelab.core.config import PodSecurity

    with cluster.sync_api_client() as api_client:
        core = kubernetes.client.CoreV1Api(api_client)
        try:
            core.create_namespace(objects.make_namespace(namespace, pod_security=PodSecurity(), user=user, team=team))
        except kubernetes.client.ApiException as e:
            if e.status != 409:
                raise
        for claim in claims:
            core.create_namespaced_persistent_volume_claim(namespace, {
                "metadata": {"name": claim},
                "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "1Gi"}}},
            })


async def start(spawner: Any, options: dict[str, Any]) -> str:
    """What JupyterHub does: user_options, the apply_user_options step, then start()."""
    spawner.user_options = options
    await spawner._run_apply_user_options(options)
    return await spawner.start()


def pod_of(cluster: Any, spawner: Any) -> dict[str, Any]:
    pod = cluster.get_object("pods", spawner.namespace, spawner.pod_name)
    assert pod is not None, f"no pod {spawner.namespace}/{spawner.pod_name}"
    return pod
