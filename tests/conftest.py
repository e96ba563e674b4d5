"""Shared pytest setup for kubelab's tests.

The Kubernetes API test server (``kube_cluster``, ``kube_api``, ``kube_sync_api``,
``kube_namespace`` fixtures) comes from ``kubelab.tests.kubeapi.pytest_plugin``; see docs/testing.md.
The job tests' fixtures (``workdir``, ``local``) come from ``kubelab.tests.jobs_fixtures``, the
Kubernetes spawner tests' (``config_path``, ``make_spawner``) from ``kubelab.tests.spawner_fixtures``.
"""

from __future__ import annotations

import os
import sys

# As if the environment were activated (scripts/test does it too): what the tests start by name
# (configurable-http-proxy, jupyterhub-singleuser, torchrun) is the one beside this Python, also
# when pytest runs as `.venv/bin/python -m pytest` without activating the venv.
_BIN = os.path.dirname(sys.executable)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")

pytest_plugins = [
    "kubelab.tests.kubeapi.pytest_plugin",
    "kubelab.tests.jobs_fixtures",
    "kubelab.tests.spawner_fixtures",
]
