"""The shared node/pod cache behind GPU availability (spawner/cluster_state.py), without a cluster:
the indexes the reflectors write into, and the figures computed from them."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kubelab.spawner.cluster_state import ClusterState, _NodeIndex, _PodIndex
from kubelab.spawner.profiles import UserInfo
from kubelab.tests.profiles_support import CONFIG


def node(name: str, product: str | None, gpus: int, *, ready: bool = True, cordoned: bool = False) -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name}
    if product:
        labels["nvidia.com/gpu.product"] = product
    alloc = {"cpu": "64", "memory": "512Gi"}
    if gpus:
        alloc["nvidia.com/gpu"] = str(gpus)
    return {
        "metadata": {"name": name, "namespace": "", "labels": labels},
        "spec": {"unschedulable": True} if cordoned else {},
        "status": {"allocatable": alloc, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def pod(name: str, node_name: str | None, gpus: int, *, phase: str = "Running", team: str | None = None,
        user: str | None = None, ns: str = "default") -> dict[str, Any]:
    labels = {}
    if team:
        labels["kubelab.dev/team"] = team
    if user:
        labels["kubelab.dev/user"] = user
    resources = {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {"requests": {"cpu": "1"}}
    spec: dict[str, Any] = {"containers": [{"name": "c", "resources": resources}]}
    if node_name:
        spec["nodeName"] = node_name
    return {"metadata": {"name": name, "namespace": ns, "labels": labels}, "spec": spec, "status": {"phase": phase}}


class _Reflector:
    def __init__(self, store: Any):
        self.store = store
        self.ready = True


def state(nodes: _NodeIndex, pods: _PodIndex) -> ClusterState:
    return ClusterState(_Reflector(nodes), _Reflector(pods))  # type: ignore[arg-type]


def test_gpu_availability_per_type() -> None:
    nodes = _NodeIndex({
        "/a1": node("a1", "A100", 8), "/a2": node("a2", "A100", 8),
        "/a3": node("a3", "A100", 8, cordoned=True), "/t1": node("t1", "T4", 4),
        "/cpu": node("cpu", None, 0),
    })
    pods = _PodIndex({
        "ns/p1": pod("p1", "a1", 8), "ns/p2": pod("p2", "a2", 3, team="ml", user="alice"),
        "ns/p3": pod("p3", "a2", 1, phase="Succeeded", team="ml"),
        "ns/p4": pod("p4", None, 2, phase="Pending", team="ml"),
        "ns/p5": pod("p5", "t1", 0),
    })
    s = state(nodes, pods)
    a = s.gpu_availability(CONFIG)
    assert (a["a100"].total, a["a100"].free, a["a100"].largest_free) == (24, 5, 5)
    assert (a["t4"].total, a["t4"].free) == (4, 4)
    usage = s.quota_usage(CONFIG, UserInfo.of("alice", ["ml"]))
    assert usage is not None
    # pending pods hold quota (they will get GPUs), succeeded pods do not
    assert (usage.gpus_used, usage.gpus_quota, usage.user_gpus_used, usage.user_gpus_quota) == (5, 4, 3, 2)
    assert s.quota_usage(CONFIG, UserInfo.of("nobody")) is None
    # memoized until something changes
    assert s.gpu_availability(CONFIG) is a
    pods.pop("ns/p1")
    assert s.gpu_availability(CONFIG)["a100"].free == 13
    nodes["/a3"] = node("a3", "A100", 8)
    assert s.gpu_availability(CONFIG)["a100"].free == 21


def test_store_keeps_only_slim_records() -> None:
    pods = _PodIndex()
    pods["ns/p"] = pod("p", "a1", 2)
    pods["ns/q"] = pod("q", "a1", 0)
    assert pods["ns/q"] is None and pods["ns/p"].requests == (("nvidia.com/gpu", 2),)
    # updates replace the old contribution; deletes remove it; unknown keys pop quietly
    pods["ns/p"] = pod("p", "a1", 1)
    assert pods.node_used == {"a1": {"nvidia.com/gpu": 1}}
    assert pods.pop("ns/p") is not None and pods.node_used == {}
    assert pods.pop("ns/missing", None) is None


_pods = st.lists(
    st.tuples(st.integers(0, 30), st.sampled_from([None, "a1", "a2"]), st.integers(0, 4),
              st.sampled_from(["Running", "Pending", "Succeeded"]), st.sampled_from([None, "ml", "vision"]),
              st.booleans()),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(_pods)
def test_incremental_sums_equal_a_fresh_count(ops: list[Any]) -> None:
    pods = _PodIndex()
    live: dict[str, dict[str, Any]] = {}
    for i, node_name, gpus, phase, team, delete in ops:
        key = f"ns/p{i}"
        if delete:
            pods.pop(key, None)
            live.pop(key, None)
        else:
            pods[key] = live[key] = pod(f"p{i}", node_name, gpus, phase=phase, team=team)
    fresh = _PodIndex(live)
    assert pods.node_used == fresh.node_used
    assert pods.team_used == fresh.team_used
    assert {k: v for k, v in pods.unbound.items() if v} == {k: v for k, v in fresh.unbound.items() if v}


def test_a_relist_clears_the_index_and_its_figures() -> None:
    # the core Reflector relists into the same store: clear(), then the new objects
    pods = _PodIndex({"ns/p": pod("p", "a1", 2, team="ml")})
    version = pods.version
    pods.clear()
    assert pods.node_used == {} and pods.team_used == {} and pods.version > version
    pods["ns/q"] = pod("q", "a2", 1, team="ml")
    assert pods.node_used == {"a2": {"nvidia.com/gpu": 1}} and pods.team_used == {"ml": {"nvidia.com/gpu": 1}}
