"""An in-process Kubernetes API server for tests: the real client libraries, no cluster.

``kubernetes_asyncio`` (inside KubeSpawner and kubelab) and ``kubernetes`` talk HTTP to an emulator
built on kmock that keeps objects like an API server (resourceVersions, selectors, watches, patches,
``Status`` errors, namespaces, garbage collection, quotas) and runs what a cluster adds as asyncio
tasks beside it (a scheduler, a kubelet, the Job, ReplicaSet and Deployment controllers). Tests
script faults and count requests. With ``KUBELAB_TEST_KUBECONFIG`` set, the same fixtures point at a
real cluster instead. docs/testing.md tells the whole story.
"""

from .cluster import EmulatorOnly, KubeCluster, RealCluster
from .errors import ApiError
from .faults import FaultRule, Faults
from .kubelet import ANNOTATION_PREFIX
from .polling import wait_for
from .requestlog import RecordedRequest, RequestLog
from .settings import EmulatorSettings

__all__ = [
    "ANNOTATION_PREFIX",
    "ApiError",
    "EmulatorOnly",
    "EmulatorSettings",
    "FaultRule",
    "Faults",
    "KubeCluster",
    "RealCluster",
    "RecordedRequest",
    "RequestLog",
    "wait_for",
]
