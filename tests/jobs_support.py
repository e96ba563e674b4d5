"""Shared helpers of the job tests (tests/test_jobs_*.py, tests/test_magics*.py); their fixtures
are in :mod:`kubelab.tests.jobs_fixtures`, a pytest plugin (tests/conftest.py)."""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from kubelab.core.config import KubelabConfig, example_config_path, load_config
from kubelab.core.jobs.api import set_backend
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
    for info in backend.list_jobs():
        pid = info.extra.get("pid")
        if pid and not info.status.done:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll *predicate* until it returns something true, and return that; fail after *timeout*
    seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def delete_running(backend: LocalBackend) -> None:
    """Delete every job a test left running: the job's process group and its descendants' own
    (torchrun's workers each lead a session of their own, which :func:`kill_all` misses)."""
    for info in backend.list_jobs():
        if not info.status.done:
            backend.delete(info.name)


@contextlib.contextmanager
def as_backend(backend: LocalBackend,
               end: Callable[[LocalBackend], None] = kill_all) -> Iterator[LocalBackend]:
    """*backend* as this process's backend for the block; then the old one back, and *end*
    (:func:`kill_all` by default) for the jobs left running."""
    old = set_backend(backend)
    try:
        yield backend
    finally:
        set_backend(old)
        end(backend)


def trainer_runtime_pod() -> dict[str, Any]:
    """The pod spec of kubelab's ClusterTrainingRuntime (hub_config/trainer-runtime.yaml), the
    ``node`` job's; also checks the runtime is the kind and shape Trainer reads."""
    import yaml

    path = Path(__file__).resolve().parent.parent / "hub_config" / "trainer-runtime.yaml"
    runtime = yaml.safe_load(path.read_text())
    assert (runtime["apiVersion"], runtime["kind"]) == ("trainer.kubeflow.org/v1alpha1", "ClusterTrainingRuntime")
    assert runtime["metadata"]["name"] == "kubelab-torch"
    assert "torch" in runtime["spec"]["mlPolicy"]
    (node,) = [j for j in runtime["spec"]["template"]["spec"]["replicatedJobs"] if j["name"] == "node"]
    return copy.deepcopy(node["template"]["spec"]["template"]["spec"])


def trainjob_pod(trainjob: dict[str, Any], runtime_pod: dict[str, Any] | None = None) -> dict[str, Any]:
    """The pod spec Kubeflow Trainer (v2, ``trainer.kubeflow.org/v1alpha1``) makes for a node of
    *trainjob*: the runtime's pod template (default: the stock ``torch-distributed`` runtime's,
    one container ``node`` and nothing else), the trainer's image, command, env and resources on
    container ``node``, then each ``podSpecOverrides`` entry that targets ``node``, in order —
    every field kubelab writes there applied as is. What Pod Security checks is this pod."""
    spec = trainjob["spec"]
    pod = copy.deepcopy(runtime_pod or {"containers": [{"name": "node"}]})
    node = next(c for c in pod["containers"] if c["name"] == "node")
    trainer = spec.get("trainer") or {}
    node.update({k: v for k, v in (("image", trainer.get("image")),
                                   ("command", trainer.get("command")),
                                   ("resources", trainer.get("resourcesPerNode"))) if v})
    node["env"] = [*node.get("env", []), *trainer.get("env", [])]
    for override in spec.get("podSpecOverrides") or []:
        if {"name": "node"} not in override.get("targetJobs", []):
            continue
        for key, value in override.items():
            if key == "targetJobs":
                continue
            if key == "containers":
                for patch in value:
                    target = next(c for c in pod["containers"] if c["name"] == patch["name"])
                    target.update({k: v for k, v in patch.items() if k != "name"})
            elif key == "volumes":
                pod["volumes"] = [*pod.get("volumes", []), *value]
            else:
                pod[key] = value
    return pod
