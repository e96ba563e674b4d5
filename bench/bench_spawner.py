"""Benchmarks of the Kubernetes profile spawner (issue 3).

``form render``: kubelab's chooser for a user of team ml, with 1,000 GPU nodes and 20,000 pods in
the shared cache, against KubeSpawner rendering its own form for the same profiles (a callable
``profile_list``, so it renders per request too). Target: p95 ≤ 20 ms and zero API requests per
render (printed as extra figures; the ratio has no target).

``spawn``: the hub-side cost of a spawn (options form POST data → pod created) against the
Kubernetes API test server, kubelab's ``ProfileSpawner`` against plain ``KubeSpawner`` with an
equivalent static profile. Target: ratio ≤ 1.10 on the median.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Benchmark  # noqa: E402

N_NODES = 1000
N_PODS = 20000


def _kubeconfig(host: str) -> str:
    """A kubeconfig for KubeSpawner's client set-up (it loads one even when unused)."""
    text = f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{host}"}}}}]
users: [{{name: u, user: {{token: bench}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
"""
    fd, path = tempfile.mkstemp(suffix=".kubeconfig")
    os.write(fd, text.encode())
    os.close(fd)
    os.environ["KUBECONFIG"] = path
    # kubernetes_asyncio reads $KUBECONFIG once, at import
    from kubernetes_asyncio.config import kube_config

    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = path
    return path


class _User:
    def __init__(self, name: str, groups: list[str]):
        self.name = name
        self.id = 1
        self.url = f"/user/{name}/"
        self.groups = [type("G", (), {"name": g})() for g in groups]
        self.escaped_name = name


class _NoApi:
    """Stands in for every API client during the form benchmark: counts any use."""

    calls = 0

    def __getattr__(self, name: str) -> Any:
        _NoApi.calls += 1
        raise AssertionError(f"the form render used the Kubernetes API ({name})")


class FormContext:
    def __init__(self) -> None:
        self.subject_times: list[float] = []

    def bench_extra(self) -> dict[str, Any]:
        t = sorted(self.subject_times)
        p95 = t[min(len(t) - 1, round(0.95 * (len(t) - 1)))] * 1000
        return {
            "cache": f"{N_NODES} GPU nodes, {N_PODS} pods",
            "kubelab render p95": f"{p95:.2f} ms (target ≤ 20 ms){'  OK' if p95 <= 20 else '  OVER TARGET'}",
            "API requests during renders": f"{_NoApi.calls} (target 0)",
        }


async def _form_setup() -> FormContext:
    from kubespawner import KubeSpawner

    from kubelab.core.config import example_config_path, load_config
    from kubelab.spawner import profiles
    from kubelab.spawner.cluster_state import ClusterState, _NodeIndex, _PodIndex
    from kubelab.spawner.kubernetes import ProfileSpawner

    _kubeconfig("http://127.0.0.1:9")
    config_path = str(example_config_path())
    config = load_config(config_path)
    rng = random.Random(3)
    products = {"a100": "NVIDIA-A100-SXM4-80GB", "t4": "Tesla-T4"}
    nodes = _NodeIndex()
    for i in range(N_NODES):
        kind = "a100" if i % 3 else "t4"
        gpus = 8 if kind == "a100" else 4
        nodes[f"/gpu-{i}"] = {
            "metadata": {"name": f"gpu-{i}", "namespace": "",
                         "labels": {"nvidia.com/gpu.product": products[kind], "kubernetes.io/hostname": f"gpu-{i}"}},
            "spec": {},
            "status": {"allocatable": {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": str(gpus)},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }
    pods = _PodIndex()
    for i in range(N_PODS):
        node = rng.randrange(N_NODES)
        gpus = rng.choice([0, 0, 0, 1, 1, 2])
        team = rng.choice(["ml", "vision", None])
        labels = {"kubelab.dev/team": team, "kubelab.dev/user": f"u{i % 300}"} if team else {}
        resources = {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {"requests": {"cpu": "1"}}
        pods[f"ns-{i % 400}/p-{i}"] = {
            "metadata": {"name": f"p-{i}", "namespace": f"ns-{i % 400}", "labels": labels},
            "spec": {"nodeName": f"gpu-{node}", "containers": [{"name": "c", "resources": resources}]},
            "status": {"phase": "Running"},
        }

    class _Reflector:
        def __init__(self, store: Any):
            self.store = store
            self.ready = True

    state = ClusterState(_Reflector(nodes), _Reflector(pods))
    ClusterState._instances[asyncio.get_running_loop()] = state

    user = _User("alice", ["ml"])
    subject = ProfileSpawner(_mock=True, user=user, kubelab_config=config_path)
    subject.api = _NoApi()  # type: ignore[assignment]
    static = profiles.kubespawner_profile_list(config, profiles.UserInfo.of("alice", ["ml"]))
    baseline = KubeSpawner(_mock=True, user=user, profile_list=lambda spawner: static)
    baseline.api = _NoApi()  # type: ignore[assignment]
    ctx = FormContext()
    ctx.subject, ctx.baseline = subject, baseline  # type: ignore[attr-defined]
    ctx.pods = pods  # type: ignore[attr-defined]
    ctx.rng = rng  # type: ignore[attr-defined]
    return ctx


async def _form_baseline(ctx: FormContext) -> None:
    html = await ctx.baseline.get_options_form()  # type: ignore[attr-defined]
    assert "profile" in html


async def _form_subject(ctx: FormContext) -> None:
    # a pod changes between renders, as in a busy cluster: the figures are recomputed each time
    i = ctx.rng.randrange(N_PODS)  # type: ignore[attr-defined]
    key = f"ns-{i % 400}/p-{i}"
    ctx.pods.pop(key, None)  # type: ignore[attr-defined]
    ctx.pods[key] = {  # type: ignore[attr-defined]
        "metadata": {"name": f"p-{i}", "namespace": f"ns-{i % 400}", "labels": {"kubelab.dev/team": "ml"}},
        "spec": {"nodeName": f"gpu-{i % N_NODES}",
                 "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
        "status": {"phase": "Running"},
    }
    start = time.perf_counter()
    html = await ctx.subject.get_options_form()  # type: ignore[attr-defined]
    ctx.subject_times.append(time.perf_counter() - start)
    assert "free" in html and "team ml" in html, html[:2000]


async def _form_teardown(ctx: FormContext) -> None:
    from kubelab.spawner.cluster_state import ClusterState

    ClusterState._instances.pop(asyncio.get_running_loop(), None)


class _Created(Exception):
    """Raised right after the pod create request returns: the end of the measured spawn."""


class SpawnContext:
    def __init__(self) -> None:
        self.counter = 0

    def bench_extra(self) -> dict[str, Any]:
        return {"measured": "options_from_form → validation → load_user_options → pod create request returned"}


async def _spawn_setup() -> SpawnContext:
    from kubespawner import KubeSpawner

    from kubelab.spawner import profiles
    from kubelab.spawner.kubernetes import ProfileSpawner
    from kubelab.tests.kubeapi.cluster import KubeCluster

    cluster = KubeCluster(tempfile.mkdtemp(prefix="bench-kubeapi-")).start()
    cluster.add_node("a100-0", gpus=8, labels={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
                     taints=["nvidia.com/gpu=present:NoSchedule"], pods=10_000)
    _kubeconfig_path(str(cluster.kubeconfig_path))
    # the example config, with quotas high enough for the pods the benchmark leaves behind
    import yaml

    from kubelab.core.config import example_config_path

    data = yaml.safe_load(example_config_path().read_text())
    data["teams"]["ml"]["quota"] = {"gpus": 100_000}
    data["teams"]["ml"]["user_quota"] = {"gpus": 100_000}
    config_file = Path(tempfile.mkdtemp(prefix="bench-kubelab-")) / "kubelab.yaml"
    config_file.write_text(yaml.safe_dump(data))
    config_path = str(config_file)
    user = _User("alice", ["ml"])
    form = {"profile": ["a100"], "image--a100": ["pytorch"], "gpus--a100": ["1"], "dataset": ["imagenet"]}
    common = dict(_mock=True, user=user, storage_pvc_ensure=False, events_enabled=True,
                  k8s_api_request_timeout=10, start_timeout=30)

    class Measured(ProfileSpawner):
        async def _make_create_pod_request(self, pod: Any, request_timeout: Any) -> Any:
            await super()._make_create_pod_request(pod, request_timeout)
            raise _Created()

    class MeasuredPlain(KubeSpawner):
        async def _make_create_pod_request(self, pod: Any, request_timeout: Any) -> Any:
            await super()._make_create_pod_request(pod, request_timeout)
            raise _Created()

    # the imagenet dataset's claim, which the admin creates in the user's namespace
    import kubernetes

    from kubelab.core import objects
    from kubelab.core.config import load_config

    namespace, team = objects.user_namespace(load_config(config_path), username=user.name, groups=["ml"])
    with cluster.sync_api_client() as api_client:
        core = kubernetes.client.CoreV1Api(api_client)
        core.create_namespace(objects.make_namespace(
            namespace, pod_security=load_config(config_path).pod_security, user=user.name, team=team))
        core.create_namespaced_persistent_volume_claim(namespace, {
            "metadata": {"name": "imagenet"},
            "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "1Gi"}}}})

    # the equivalent static profile: what kubelab's spawner ends up with, as a KubeSpawner profile
    probe = ProfileSpawner(kubelab_config=config_path, **common)
    probe.user_options = profiles.options_from_form(form)
    await probe._run_apply_user_options(probe.user_options)
    await probe.load_user_options()
    keys = ("image", "cpu_guarantee", "cpu_limit", "mem_guarantee", "mem_limit", "node_selector",
            "tolerations", "extra_resource_limits", "extra_resource_guarantees", "volumes",
            "volume_mounts", "extra_labels", "extra_annotations", "environment",
            "pod_security_context", "container_security_context", "service_account",
            "automount_service_account_token", "allow_privilege_escalation", "uid", "gid", "fs_gid")
    override = {k: getattr(probe, k) for k in keys}
    static = [{"slug": "a100", "display_name": "A100", "default": True, "kubespawner_override": override}]
    namespace = probe.namespace

    ctx = SpawnContext()
    ctx.cluster = cluster  # type: ignore[attr-defined]

    def make_subject() -> Any:
        s = Measured(kubelab_config=config_path, **common)
        return s

    def make_baseline() -> Any:
        return MeasuredPlain(profile_list=static, enable_user_namespaces=False, namespace=namespace, **common)

    ctx.make_subject, ctx.make_baseline = make_subject, make_baseline  # type: ignore[attr-defined]
    ctx.form = form  # type: ignore[attr-defined]
    await _spawn_once(ctx, make_subject(), ours=True)  # creates the namespace both use
    return ctx


async def _spawn_once(ctx: SpawnContext, spawner: Any, ours: bool) -> None:
    ctx.counter += 1
    spawner.pod_name = f"jupyter-bench-{ctx.counter}"
    spawner.api_token = "token"
    options = spawner.run_options_from_form(ctx.form)  # type: ignore[attr-defined]
    spawner.user_options = options
    if ours:
        await spawner._run_apply_user_options(options)
    try:
        await spawner.start()
    except _Created:
        return
    raise AssertionError("the pod was not created")


async def _spawn_baseline(ctx: SpawnContext) -> None:
    await _spawn_once(ctx, ctx.make_baseline(), ours=False)  # type: ignore[attr-defined]


async def _spawn_subject(ctx: SpawnContext) -> None:
    await _spawn_once(ctx, ctx.make_subject(), ours=True)  # type: ignore[attr-defined]


async def _spawn_teardown(ctx: SpawnContext) -> None:
    from kubespawner import KubeSpawner

    from kubelab.spawner.cluster_state import ClusterState

    await ClusterState.stop_all()
    await KubeSpawner._stop_all_reflectors()
    ctx.cluster.stop()  # type: ignore[attr-defined]


def _kubeconfig_path(path: str) -> None:
    from kubernetes_asyncio.config import kube_config
    from kubespawner import clients

    os.environ["KUBECONFIG"] = path
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = path
    clients.load_config.cache_clear()


BENCHMARKS = [
    Benchmark(
        name="spawner: hub-side spawn cost (form → pod created) against the API test server",
        baseline=_spawn_baseline,
        subject=_spawn_subject,
        baseline_label="plain KubeSpawner, equivalent static profile",
        target=1.10,
        repeat=40,
        warmup=5,
        setup=_spawn_setup,
        teardown=_spawn_teardown,
    ),
    Benchmark(
        name="spawner: chooser form render, 1,000 GPU nodes + 20,000 pods in the cache",
        baseline=_form_baseline,
        subject=_form_subject,
        baseline_label="KubeSpawner's own form for the same profiles",
        target=None,
        repeat=200,
        warmup=5,
        setup=_form_setup,
        teardown=_form_teardown,
    ),
]

