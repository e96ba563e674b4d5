"""ProfileSpawner against the Kubernetes API test server (``kube_cluster``).

The spawner is driven directly (the real-hub path is tests/test_spawner_hub.py): validation with
400 and nothing created, the form from the cache with no API request, the pod and namespace
objects, the restricted Pod Security standard on every pod, the fast GPU failure and its clean-up.
"""

from __future__ import annotations

import asyncio
import copy
import html
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tornado import web

from kubelab.core.podsecurity import violations
from kubelab.tests.profiles_support import TAMPERED
from kubelab.tests.spawner_support import A100, GPU_TAINT, add_claims, home_volume, pod_of, start

WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


def writes_since(cluster: Any, mark: int) -> list[Any]:
    return [r for r in cluster.requests.since(mark) if r.verb in WRITE_VERBS]


# -- validation: 400 and nothing created ----------------------------------------------------------


@pytest.mark.parametrize("name,options", TAMPERED, ids=[n for n, _ in TAMPERED])
async def test_tampered_options_get_400_and_create_nothing(
    kube_cluster: Any, make_spawner: Callable[..., Any], name: str, options: Any
) -> None:
    kube_cluster.add_node("a100-0", gpus=8, labels=A100, taints=GPU_TAINT)
    spawner = make_spawner()
    mark = kube_cluster.requests.mark()
    with pytest.raises(web.HTTPError) as e:
        await spawner._run_apply_user_options(options)
    assert e.value.status_code == 400
    assert "Invalid server options" in str(getattr(e.value, "message", "") or e.value.log_message)
    # and start() (JupyterHub < 5.3 has no apply step) refuses too, before creating anything
    spawner.user_options = options if isinstance(options, dict) else {"profile": options}
    with pytest.raises(web.HTTPError):
        await spawner.start()
    assert writes_since(kube_cluster, mark) == []
    assert kube_cluster.list_objects("pods", None) == []


async def test_quota_in_use_is_refused(kube_cluster: Any, make_spawner: Callable[..., Any]) -> None:
    kube_cluster.add_node("a100-0", gpus=8, labels=A100, taints=GPU_TAINT)
    bob = make_spawner("bob", ("ml",))
    await start(bob, {"profile": "a100", "gpus": 2, "datasets": []})
    alice = make_spawner("alice", ("ml",))
    # ml's quota is 4 GPUs: bob holds 2, so alice gets 2 at most; her own quota is 2
    await alice._run_apply_user_options({"profile": "a100", "gpus": 2})
    form = html.unescape(await alice.get_options_form())
    assert "team ml: 2 of 4 GPUs in use" in form
    await start(make_spawner("carol", ("ml",)), {"profile": "a100", "gpus": 1, "datasets": []})
    await asyncio.sleep(0.3)  # the watch delivers carol's pod
    with pytest.raises(web.HTTPError, match="team ml uses 3 of 4 GPUs") as e:
        await alice._run_apply_user_options({"profile": "a100", "gpus": 2})
    assert e.value.status_code == 400


async def test_concurrent_spawns_cannot_overrun_the_team_quota(
    kube_cluster: Any, make_spawner: Callable[..., Any]
) -> None:
    """Each user has a namespace of their own, so no ResourceQuota spans the team: the hub holds
    a spawn's GPUs from its quota check until the cache sees its pod."""
    kube_cluster.add_node("a100-0", gpus=8, labels=A100, taints=GPU_TAINT)
    await start(make_spawner("bob", ("ml",)), {"profile": "a100", "gpus": 2, "datasets": []})
    await asyncio.sleep(0.3)  # the watch delivers bob's pod: 2 of ml's 4 GPUs in use
    alice, carol = make_spawner("alice", ("ml",)), make_spawner("carol", ("ml",))
    options = {"profile": "a100", "gpus": 2, "datasets": []}
    for s in (alice, carol):  # both fit when the form is posted
        await s._run_apply_user_options(options)
        s.user_options = options
    results = await asyncio.gather(alice.start(), carol.start(), return_exceptions=True)
    refused = [r for r in results if isinstance(r, web.HTTPError)]
    assert len(refused) == 1, results
    assert refused[0].status_code == 400 and "team ml uses 4 of 4 GPUs" in str(refused[0])
    pods = [p for p in kube_cluster.list_objects("pods", None)
            if p["metadata"]["labels"].get("kubelab.dev/team") == "ml"]
    assert sum(int(p["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) for p in pods) == 4


async def test_missing_dataset_claim_is_refused_before_anything_is_created(
    kube_cluster: Any, make_spawner: Callable[..., Any]
) -> None:
    spawner = make_spawner()
    mark = kube_cluster.requests.mark()
    with pytest.raises(web.HTTPError) as e:
        await start(spawner, {"profile": "cpu", "datasets": ["imagenet"]})
    assert e.value.status_code == 400
    message = str(getattr(e.value, "message", e.value))
    assert "Dataset 'imagenet' cannot be mounted" in message
    assert "PersistentVolumeClaim 'imagenet' does not exist in namespace 'kubelab-ml-alice'" in message
    assert writes_since(kube_cluster, mark) == []
    # once the admin creates it, the same options start (and the claim is not looked up again)
    add_claims(kube_cluster, "kubelab-ml-alice", "imagenet")
    await start(spawner, {"profile": "cpu", "datasets": ["imagenet"]})
    assert pod_of(kube_cluster, spawner)["metadata"]["labels"]["kubelab.dev/user"] == "alice"


# -- the form: from the cache, no API request ----------------------------------------------------


async def test_form_shows_availability_without_api_requests(
    kube_cluster: Any, make_spawner: Callable[..., Any]
) -> None:
    for i in range(3):
        kube_cluster.add_node(f"a100-{i}", gpus=8, labels=A100, taints=GPU_TAINT)
    kube_cluster.add_node("t4-0", gpus=4, labels={"nvidia.com/gpu.product": "T4"})
    spawner = make_spawner()
    await start(make_spawner("bob", ("ml",)), {"profile": "a100", "gpus": 2, "datasets": []})
    first = html.unescape(await spawner.get_options_form())  # starts the shared watches
    await asyncio.sleep(0.2)
    mark = kube_cluster.requests.mark()
    for _ in range(5):
        form = html.unescape(await spawner.get_options_form())
    assert [str(r) for r in kube_cluster.requests.since(mark) if not r.watch] == []
    assert 'NVIDIA A100 <80GB> & "friends": 22 of 24 free' in form, first
    assert "team ml: 2 of 4 GPUs in use" in form
    assert 'name="profile" value="t4"' not in form  # vision's profile
    # a new node shows up through the watch, not a new list
    kube_cluster.add_node("a100-3", gpus=8, labels=A100, taints=GPU_TAINT)
    deadline = time.monotonic() + 5
    while "30 of 32 free" not in html.unescape(await spawner.get_options_form()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert [r.verb for r in kube_cluster.requests.since(mark) if not r.watch] == []


# -- the pod and the namespace ---------------------------------------------------------------------


async def test_gpu_pod_with_datasets(kube_cluster: Any, make_spawner: Callable[..., Any]) -> None:
    kube_cluster.add_node("a100-0", gpus=8, labels=A100, taints=GPU_TAINT)
    add_claims(kube_cluster, "kubelab-ml-alice", "imagenet", "scratch")
    spawner = make_spawner()
    url = await start(spawner, {
        "profile": "a100", "gpus": 2,
        "datasets": ["imagenet", {"name": "scratch", "sub_path": "exp", "mount_path": "/scratch/exp"}],
    })
    assert url.startswith("http://")
    assert spawner.namespace == "kubelab-ml-alice"
    pod = pod_of(kube_cluster, spawner)
    spec = pod["spec"]
    c = spec["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert c["image"] == "ghcr.io/kubelab/notebook-cuda:1"
    assert spec["nodeSelector"] == A100
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["nodeName"] == "a100-0"
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert volumes["kubelab-shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert mounts["kubelab-shm"]["mountPath"] == "/dev/shm"
    assert volumes["kubelab-data-imagenet"]["persistentVolumeClaim"] == {"claimName": "imagenet", "readOnly": True}
    assert mounts["kubelab-data-imagenet"]["readOnly"] is True
    assert mounts["kubelab-data-scratch"] == {"name": "kubelab-data-scratch", "mountPath": "/scratch/exp",
                                              "readOnly": False, "subPath": "users/alice/exp"}
    labels = pod["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "kubelab"
    assert (labels["kubelab.dev/user"], labels["kubelab.dev/team"], labels["kubelab.dev/kind"]) == ("alice", "ml", "notebook")
    assert spec["serviceAccountName"] == "kubelab-user"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KUBELAB_GPUS"] == "2" and env["KUBELAB_NAMESPACE"] == "kubelab-ml-alice"
    assert violations(pod, "restricted") == []

    ns = kube_cluster.get_object("namespaces", None, "kubelab-ml-alice")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    quota = kube_cluster.get_object("resourcequotas", "kubelab-ml-alice", "kubelab-quota")
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "2"  # alice's user_quota
    assert kube_cluster.get_object("serviceaccounts", "kubelab-ml-alice", "kubelab-user")
    role = kube_cluster.get_object("roles", "kubelab-ml-alice", "kubelab-user", group="rbac.authorization.k8s.io")
    assert {tuple(r["resources"]) for r in role["rules"]} >= {("jobs",), ("deployments",), ("pods/log",)}
    assert kube_cluster.get_object("rolebindings", "kubelab-ml-alice", "kubelab-user", group="rbac.authorization.k8s.io")
    cm = kube_cluster.get_object("configmaps", "kubelab-ml-alice", "kubelab-notebook-alice")
    assert "max_gpus_per_job" in cm["data"]["kubelab.yaml"]

    # the second spawn re-writes nothing in the namespace
    await spawner.stop()
    mark = kube_cluster.requests.mark()
    await start(spawner, {"profile": "cpu"})
    writes = {(r.verb, r.resource) for r in writes_since(kube_cluster, mark)}
    assert writes == {("create", "pods")}, writes
    cpu_pod = pod_of(kube_cluster, spawner)
    assert "nvidia.com/gpu" not in str(cpu_pod["spec"]["containers"][0]["resources"])
    assert violations(cpu_pod, "restricted") == []


async def test_the_notebooks_environment_gives_its_jobs_the_same_world(
    kube_cluster: Any, make_spawner: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end over the contract (kubelab.core.notebook_env): a notebook pod spawned by
    ProfileSpawner, its env and its mounted config fed to the job side's JobContext, give a job
    the notebook's namespace, service account, datasets (same volumes, sub paths and mount
    paths), admin limits and home claim."""
    from kubelab.core.jobs.context import JobContext
    from kubelab.core.jobs.errors import DatasetNotAllowed, QuotaExceeded
    from kubelab.core.jobs.kubernetes import KubernetesBackend
    from kubelab.core.jobs.types import JobSpec
    from kubelab.core.notebook_env import NotebookEnv

    home_mount = tmp_path / "home"
    home_mount.mkdir()
    kube_cluster.add_node("a100-0", gpus=8, labels=A100, taints=GPU_TAINT)
    # the home volume where this test's kernel can write, as the pod would at /home/jovyan
    spawner = make_spawner(**home_volume(str(home_mount)))
    add_claims(kube_cluster, "kubelab-ml-alice", "imagenet", "scratch")
    await start(spawner, {"profile": "a100", "gpus": 1, "datasets": [
        "imagenet", {"name": "scratch", "sub_path": "exp", "mount_path": "/scratch/exp"}]})
    pod = pod_of(kube_cluster, spawner)
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}

    # what the spawner said, read back through the contract
    nb = NotebookEnv.from_env(env)
    assert (nb.backend, nb.user, nb.groups, nb.team) == ("kubernetes", "alice", ("ml",), "ml")
    assert (nb.namespace, nb.service_account) == ("kubelab-ml-alice", "kubelab-user")
    assert (nb.profile, nb.gpu_type, nb.gpus, nb.image) == ("a100", "a100", 1, "ghcr.io/kubelab/notebook-cuda:1")
    assert (nb.home_claim, nb.home_mount) == (spawner.pvc_name, str(home_mount))
    assert nb.config_path == "/etc/kubelab/kubelab.yaml"
    scratch = nb.dataset("scratch")
    assert scratch is not None and (scratch.mount_path, scratch.sub_path) == ("/scratch/exp", "users/alice/exp")
    assert scratch.source == {"pvc": {"claim_name": "scratch"}} and scratch.read_only is False

    # the config: the user's view, from the ConfigMap mounted at /etc/kubelab
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["kubelab-settings"]["mountPath"] == "/etc/kubelab"
    cm_name = volumes["kubelab-settings"]["configMap"]["name"]
    cm = kube_cluster.get_object("configmaps", "kubelab-ml-alice", cm_name)
    etc = tmp_path / "etc-kubelab"
    etc.mkdir()
    for key, text in cm["data"].items():
        (etc / key).write_text(text)
    assert "coco" not in cm["data"]["kubelab.yaml"]  # vision's dataset stays on the hub
    assert "kubelab-vision" not in cm["data"]["kubelab.yaml"]  # and vision's team

    # the notebook's kernel: the pod's env, with the config where the pod has it mounted
    work = tmp_path / "work"
    work.mkdir()
    (work / "train.py").write_text("print('training')\n")
    monkeypatch.chdir(work)
    kernel_env = {**env, "KUBELAB_CONFIG": str(etc / "kubelab.yaml"),
                  "KUBELAB_JOBS_ROOT": str(home_mount / "kubelab-jobs")}
    ctx = JobContext.from_environ(kernel_env)
    assert (ctx.user, ctx.groups, ctx.namespace) == ("alice", ("ml",), "kubelab-ml-alice")
    assert (ctx.service_account, ctx.home_claim, ctx.gpu_type) == ("kubelab-user", spawner.pvc_name, "a100")
    assert ctx.config is not None and ctx.config.teams["ml"].user_quota.gpus == 2

    backend = KubernetesBackend(ctx, kubeconfig=kube_cluster.kubeconfig_path)
    try:
        # the admin's limits: alice's own GPU quota is 2, and vision's dataset is not hers
        with pytest.raises(QuotaExceeded, match="per-user GPU quota of 2"):
            await asyncio.to_thread(backend.submit, JobSpec(script="train.py", name="big", gpus=3))
        # the namespace's ResourceQuota (alice's 2 GPUs), of which her notebook holds 1
        with pytest.raises(QuotaExceeded, match=r"asks for 2 GPUs but your namespace's quota "
                                                r"\(kubelab-quota\) has 1 of 2 left \(1 in use: "
                                                r"your notebook holds 1\)"):
            await asyncio.to_thread(backend.submit, JobSpec(script="train.py", name="two", gpus=2))
        with pytest.raises(DatasetNotAllowed, match="coco"):
            await asyncio.to_thread(backend.submit, JobSpec(script="train.py", name="cv", data=["coco"]))
        await asyncio.to_thread(backend.submit, JobSpec(
            script="train.py", name="same-world", gpus=1, data=["imagenet", "scratch"]))
    finally:
        backend.close()
    job = kube_cluster.get_object("jobs", "kubelab-ml-alice", "same-world", group="batch")
    assert job is not None, "the job went to the notebook's namespace"
    job_pod = job["spec"]["template"]["spec"]
    assert job_pod["serviceAccountName"] == "kubelab-user"
    assert job_pod["nodeSelector"] == A100
    job_volumes = {v["name"]: v for v in job_pod["volumes"]}
    job_mounts = {m["name"]: m for m in job_pod["containers"][0]["volumeMounts"]}
    # the same volumes as the notebook's, at the same paths, with the same sub paths and modes
    for name in ("kubelab-data-imagenet", "kubelab-data-scratch"):
        assert job_volumes[name] == volumes[name], name
        assert job_mounts[name] == mounts[name], name
    home = next(v for v in job_pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == spawner.pvc_name)
    assert next(m for m in job_pod["containers"][0]["volumeMounts"] if m["name"] == home["name"])["mountPath"] == str(home_mount)
    assert violations({"spec": job_pod}, "restricted") == []


async def test_shared_team_namespace(kube_cluster: Any, make_spawner: Callable[..., Any]) -> None:
    spawner = make_spawner("victor", ("vision",))
    add_claims(kube_cluster, "kubelab-vision", "scratch", user=None, team="vision")
    await start(spawner, {"profile": "cpu", "datasets": ["scratch"]})
    assert spawner.namespace == "kubelab-vision"
    pod = pod_of(kube_cluster, spawner)
    assert violations(pod, "restricted") == []
    quota = kube_cluster.get_object("resourcequotas", "kubelab-vision", "kubelab-quota")
    assert quota["spec"]["hard"] == {"requests.nvidia.com/gpu": "2"}  # the team's quota, shared
    assert kube_cluster.get_object("limitranges", "kubelab-vision", "kubelab-defaults")


# -- the fast GPU failure --------------------------------------------------------------------------


async def test_unschedulable_gpu_spawn_fails_fast_and_cleans_up(
    kube_cluster: Any, make_spawner: Callable[..., Any]
) -> None:
    kube_cluster.add_node("a100-0", gpus=1, labels=A100, taints=GPU_TAINT)
    spawner = make_spawner(gpu_unschedulable_timeout=0.5)
    before = {k: copy.deepcopy(getattr(spawner, k)) for k in ("extra_resource_limits", "node_selector", "tolerations",
                                                "image", "volumes", "cpu_limit")}
    started = time.monotonic()
    with pytest.raises(web.HTTPError) as e:
        await start(spawner, {"profile": "a100", "gpus": 2, "datasets": []})
    took = time.monotonic() - started
    message = str(getattr(e.value, "message", e.value))
    assert e.value.status_code == 503
    assert took < 10, took
    assert "2 × NVIDIA A100 <80GB>" in message
    assert "1 of 1 free, at most 1 on one node" in message
    assert "ask for 1 GPU" in message and "try again later" in message
    assert "Insufficient nvidia.com/gpu" in message
    # the pending pod is gone
    deadline = time.monotonic() + 5
    while kube_cluster.get_object("pods", spawner.namespace, spawner.pod_name) is not None:
        assert time.monotonic() < deadline, "the unschedulable pod was not deleted"
        await asyncio.sleep(0.05)
    # nothing of the GPU spawn is left on the spawner
    after = {k: getattr(spawner, k) for k in before}
    assert after == before
    # nor on the team's quota: the failed spawn's 2 GPUs are no longer reserved (the cache
    # sees the pod's deletion on its watch a moment after the API server has done it)
    deadline = time.monotonic() + 5
    usage = (await spawner.availability()).quota
    while usage is not None and usage.gpus_used and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        usage = (await spawner.availability()).quota
    assert usage is not None and (usage.gpus_used, usage.user_gpus_used) == (0, 0)
    # and the next spawn on the same spawner is a clean CPU server
    add_claims(kube_cluster, spawner.namespace, "imagenet", "scratch")
    await start(spawner, {"profile": "cpu"})
    pod = pod_of(kube_cluster, spawner)
    assert "nvidia.com/gpu" not in str(pod["spec"]["containers"][0]["resources"])
    assert not pod["spec"].get("nodeSelector")
    assert violations(pod, "restricted") == []


async def test_gpu_spawn_waits_while_schedulable_later(kube_cluster: Any, make_spawner: Callable[..., Any]) -> None:
    """A pod that becomes schedulable before the timeout is not failed."""
    spawner = make_spawner(gpu_unschedulable_timeout=3)
    task = asyncio.ensure_future(start(spawner, {"profile": "a100", "gpus": 1, "datasets": []}))
    await asyncio.sleep(0.5)
    assert not task.done()
    kube_cluster.add_node("a100-0", gpus=8, labels=A100, taints=GPU_TAINT)
    url = await asyncio.wait_for(task, 10)
    assert url and pod_of(kube_cluster, spawner)["spec"]["nodeName"] == "a100-0"


# -- permissions: what the hub needs, what it grants ---------------------------------------------


def _hub_rules() -> list[dict[str, Any]]:
    import yaml

    path = Path(__file__).resolve().parent.parent / "hub_config" / "hub-rbac.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    return role["rules"]


def _allowed(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules)


def test_the_hub_holds_everything_the_users_role_grants() -> None:
    """Kubernetes refuses to let the hub create a Role granting more than the hub holds."""
    from kubelab.core.objects import ROLE_RULES

    rules = _hub_rules()
    missing = [(g, res, v) for r in ROLE_RULES for g in r["apiGroups"] for res in r["resources"]
               for v in r["verbs"] if not _allowed(rules, g, res, v)]
    assert missing == []


async def test_every_request_the_hub_makes_is_allowed_by_hub_rbac(
    kube_cluster: Any, make_spawner: Callable[..., Any]
) -> None:
    kube_cluster.add_node("a100-0", gpus=8, labels=A100, taints=GPU_TAINT)
    add_claims(kube_cluster, "kubelab-ml-alice", "imagenet", "scratch")
    mark = kube_cluster.requests.mark()
    spawner = make_spawner(storage_pvc_ensure=True)
    await spawner.get_options_form()
    await start(spawner, {"profile": "a100", "gpus": 1, "datasets": ["imagenet", "scratch"]})
    assert await spawner.poll() is None
    await spawner.stop()
    rules = _hub_rules()
    seen = [r for r in kube_cluster.requests.since(mark) if r.resource]
    resources = {r.resource for r in seen}
    assert {"pods", "nodes", "namespaces", "roles", "persistentvolumeclaims"} <= resources, resources
    refused = sorted({
        f"{r.verb} {r.group or 'core'}/{r.resource}{'/' + r.subresource if r.subresource else ''}"
        for r in seen
        if not _allowed(rules, r.group or "", r.resource + (f"/{r.subresource}" if r.subresource else ""),
                        "watch" if r.watch else r.verb)
    })
    assert refused == []


async def test_a_pod_below_the_level_is_refused_before_it_is_sent(
    kube_cluster: Any, make_spawner: Callable[..., Any]
) -> None:
    """E.g. Zero to JupyterHub's cloud-metadata init container (privileged, root, NET_ADMIN)."""
    spawner = make_spawner(init_containers=[{
        "name": "block-cloud-metadata", "image": "quay.io/jupyterhub/k8s-network-tools:4.1.0",
        "command": ["iptables", "-A", "OUTPUT", "-d", "169.254.169.254", "-j", "DROP"],
        "securityContext": {"privileged": True, "runAsUser": 0, "capabilities": {"add": ["NET_ADMIN"]}},
    }])
    with pytest.raises(web.HTTPError) as e:
        await start(spawner, {"profile": "cpu", "datasets": []})
    message = str(getattr(e.value, "message", e.value))
    assert e.value.status_code == 500
    assert "'restricted' Pod Security" in message and "spec.initContainers[0]" in message
    assert "privileged" in message
    assert kube_cluster.list_objects("pods", None) == []


# -- an API server that fails -----------------------------------------------------------------------


async def test_transient_api_errors_while_setting_up_the_namespace_are_retried(
    kube_cluster: Any, make_spawner: Callable[..., Any]
) -> None:
    kube_cluster.faults.fail(500, times=2, method="POST", path=r"/roles$")
    kube_cluster.faults.fail(429, times=1, method="POST", path=r"/resourcequotas$", retry_after=0)
    spawner = make_spawner()
    await start(spawner, {"profile": "cpu", "datasets": []})
    assert kube_cluster.get_object("roles", "kubelab-ml-alice", "kubelab-user", group="rbac.authorization.k8s.io")
    assert pod_of(kube_cluster, spawner)["metadata"]["labels"]["kubelab.dev/user"] == "alice"


async def test_an_api_server_that_keeps_failing_gives_a_clear_message(
    kube_cluster: Any, make_spawner: Callable[..., Any]
) -> None:
    kube_cluster.faults.fail(503, method="POST", path=r"/roles$")
    spawner = make_spawner(k8s_api_request_retry_timeout=1)
    with pytest.raises(web.HTTPError) as e:
        await start(spawner, {"profile": "cpu", "datasets": []})
    message = str(getattr(e.value, "message", e.value))
    assert e.value.status_code == 503
    assert "the Kubernetes API answered 503" in message
    assert "the Role 'kubelab-user' in namespace 'kubelab-ml-alice'" in message
    assert "Traceback" not in message
    assert kube_cluster.list_objects("pods", None) == []
    # and once the API is back, the same spawner starts
    kube_cluster.faults.clear()
    await start(spawner, {"profile": "cpu", "datasets": []})
    assert pod_of(kube_cluster, spawner)


async def test_a_refusal_names_the_object_and_the_hubs_permissions(
    kube_cluster: Any, make_spawner: Callable[..., Any]
) -> None:
    kube_cluster.faults.fail(403, method="POST", path=r"/rolebindings$")
    spawner = make_spawner()
    with pytest.raises(web.HTTPError) as e:
        await start(spawner, {"profile": "cpu", "datasets": []})
    message = str(getattr(e.value, "message", e.value))
    assert e.value.status_code == 500
    assert "refused the RoleBinding 'kubelab-user'" in message and "hub-rbac.yaml" in message
    assert kube_cluster.list_objects("pods", None) == []
