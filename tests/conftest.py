"""Shared pytest setup for kubelab's tests.

The Kubernetes API test server (``kube_cluster``, ``kube_api``, ``kube_sync_api``,
``kube_namespace`` fixtures) comes from ``kubelab.tests.kubeapi.pytest_plugin``; see docs/testing.md.
The job tests' fixtures (``workdir``, ``local``) come from ``kubelab.tests.jobs_fixtures``, the
Kubernetes spawner tests' (``config_path``, ``make_spawner``) from ``kubelab.tests.spawner_fixtures``.
"""

from __future__ import annotations

pytest_plugins = [
    "kubelab.tests.kubeapi.pytest_plugin",
    "kubelab.tests.jobs_fixtures",
    "kubelab.tests.spawner_fixtures",
]
