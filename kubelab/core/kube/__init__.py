"""kubelab's one Kubernetes layer, shared by the hub side, the job backend and (later) serving.

* :mod:`~kubelab.core.kube.retry`: :class:`RetryPolicy`, the one rule for retrying an API call
  (which answers are transient, how long to keep trying, how to back off);
* :mod:`~kubelab.core.kube.cache`: :class:`Reflector`, a list+watch cache of one kind in one
  namespace (or all) with one selector, built on the public ``kubernetes_asyncio`` API, with an
  index hook (the store it writes into);
* :mod:`~kubelab.core.kube.apply`: :func:`create_or_replace`, create an object or bring the
  existing one to what is wanted, with conflict handling.

KubeSpawner's own reflectors (its pods and events) stay KubeSpawner's.
"""

from kubelab.core.kube.apply import Exists, ObjectApi, create_or_replace
from kubelab.core.kube.cache import Reflector, ReflectorError
from kubelab.core.kube.retry import RETRY_STATUSES, RetriesExhausted, RetryPolicy

__all__ = [
    "Exists", "ObjectApi", "RETRY_STATUSES", "Reflector", "ReflectorError", "RetriesExhausted",
    "RetryPolicy", "create_or_replace",
]
