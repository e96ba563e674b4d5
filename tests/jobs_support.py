"""Shared helpers of the job tests (tests/test_jobs_*.py, tests/test_magics*.py); their fixtures
are in :mod:`kubelab.tests.jobs_fixtures`, a pytest plugin (tests/conftest.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import textwrap
from pathlib import Path

from kubelab.core.config import KubelabConfig, example_config_path, load_config
from kubelab.core.jobs.context import JobContext
from kubelab.core.jobs.local import LocalBackend

#: a small NumPy training script: linear regression by gradient descent on generated data
TRAIN_NUMPY = textwrap.dedent('''
    import argparse, os, sys
    import numpy as np
    import kubelab

    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.1)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(512, 4))
    true_w = np.array([1.5, -2.0, 0.5, 3.0])
    y = X @ true_w + 0.01 * rng.normal(size=512)
    w = np.zeros(4)
    for epoch in range(a.epochs):
        grad = 2 * X.T @ (X @ w - y) / len(y)
        w -= a.lr * grad
        loss = float(np.mean((X @ w - y) ** 2))
        print(f"epoch {epoch} loss {loss:.5f}", flush=True)
        kubelab.report(epoch=epoch, loss=loss)
    out = os.environ["KUBELAB_OUTPUT_DIR"]
    np.save(os.path.join(out, "weights.npy"), w)
    print("saved", os.path.join(out, "weights.npy"))
''')


def example_config() -> KubelabConfig:
    return load_config(example_config_path())


def make_backend(root: Path, *, groups: tuple[str, ...] = (), config: KubelabConfig | None = None,
                 gpus: str | None = None, image: str | None = None) -> LocalBackend:
    ctx = JobContext(user="alice", groups=groups, config=config, image=image, jobs_root=root)
    environ = {"KUBELAB_LOCAL_GPUS": gpus} if gpus is not None else {"CUDA_VISIBLE_DEVICES": ""}
    return LocalBackend(ctx, environ=environ)


def kill_all(backend: LocalBackend) -> None:
    """End every job a test left running (by its own process group id, nothing else)."""
    for info in backend.list():
        pid = info.extra.get("pid")
        if pid and not info.status.done:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
