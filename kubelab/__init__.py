"""kubelab: Kubeflow-style training and serving from inside JupyterHub.

``import kubelab`` is the Python API of the notebook side; ``%load_ext kubelab`` loads the magics.
This module is a facade: it imports its parts lazily, so importing it in the hub pulls in nothing
of the notebook side and vice versa.

Training jobs (docs/jobs.md)::

    job = kubelab.train("train.py", args=["--epochs", "10"], gpus=2, data=["imagenet"])
    job.logs(follow=True); job.wait(); job.metrics(); job.cancel()
    kubelab.jobs()                      # your jobs, newest first
    kubelab.report(epoch=3, loss=0.21)  # from training code: a point on the live plot
"""

from __future__ import annotations

import importlib
from typing import Any

from kubelab._version import __version__

# name → module it lives in; loaded on first access (PEP 562)
_LAZY = {
    "train": "kubelab.core.jobs.api",
    "jobs": "kubelab.core.jobs.api",
    "jobs_gc": "kubelab.core.jobs.api",
    "job": "kubelab.core.jobs.api",
    "Job": "kubelab.core.jobs.api",
    "JobSpec": "kubelab.core.jobs.types",
    "JobStatus": "kubelab.core.jobs.types",
    "JobPhase": "kubelab.core.jobs.types",
    "JobError": "kubelab.core.jobs.errors",
    "report": "kubelab.core.jobs.metrics",
}

__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kubelab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


# The facade is a composition root (docs/architecture.md): it reaches the notebook side by name,
# through importlib, so that import-linter does not see every module that imports ``kubelab``
# (the core's config does, for its data files) as importing the notebook side through it.
_MAGICS = "kubelab.labextension.magics"


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext kubelab``: register ``%train``, ``%%train`` and ``%jobs``."""
    importlib.import_module(_MAGICS).load_ipython_extension(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    importlib.import_module(_MAGICS).unload_ipython_extension(ipython)
