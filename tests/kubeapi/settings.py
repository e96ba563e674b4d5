"""Knobs of the emulated cluster, as one documented dataclass (``kube_cluster.settings``).

Defaults favour fast tests: pods start and terminate at once, watch bookmarks come every second.
A test changes a field for its own duration; ``reset()`` between tests restores the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["EmulatorSettings"]


@dataclass
class EmulatorSettings:
    #: the ``status.podIP`` of running pods (a test can reach a local server there), unless the pod
    #: has the annotation ``kubeapi.kubelab.test/pod-ip``
    pod_ip: str = "127.0.0.1"
    #: seconds between a pod being scheduled and its containers running
    pod_start_delay: float = 0.0
    #: seconds a gracefully deleted pod takes to go away (capped by its grace period)
    pod_termination_delay: float = 0.0
    #: seconds before the kubelet restarts a container that exited (restartPolicy Always/OnFailure)
    restart_delay: float = 0.05
    #: how many watch events are kept for resuming a watch; older resourceVersions get 410 Gone
    watch_history: int = 10_000
    #: seconds between BOOKMARK events on watches that ask for them
    bookmark_interval: float = 1.0
    #: the ``/version`` the server reports
    server_version: tuple[str, str] = ("1", "31")
    #: nodes (name → kwargs of ``add_node``) that exist after every ``reset()``
    default_nodes: dict[str, dict[str, object]] = field(
        default_factory=lambda: {"kubeapi-node-0": {"cpu": "8", "memory": "32Gi"}}
    )
