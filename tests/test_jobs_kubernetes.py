"""The Kubernetes backend against the in-process Kubernetes API test server."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubelab.core import objects, podsecurity
from kubelab.core.jobs import InvalidJobSpec, torchrun
from kubelab.core.jobs import k8s_objects as ko
from kubelab.core.jobs.context import JobContext
from kubelab.core.jobs.errors import BackendError, JobExists, JobFailed, JobNotFound, QuotaExceeded
from kubelab.core.jobs.kubernetes import KubernetesBackend
from kubelab.core.jobs.types import JobPhase, JobSpec
from kubelab.core.notebook_env import NotebookDataset, NotebookEnv, with_notebook_mounts
from kubelab.tests.jobs_support import example_config, trainer_runtime_pod, trainjob_pod, wait_for

IMAGE = "ghcr.io/kubelab/notebook-gpu:0.1.0"
A100 = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
CONFIG = example_config()


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    (d / "train.py").write_text("print('training')\n")
    monkeypatch.chdir(d)
    return d


def make(cluster, namespace: str, root: Path, *, jobs_root: Path | None = None,
         notebook: NotebookEnv | None = None, home_claim: str | None = "claim-alice",
         **kw) -> KubernetesBackend:
    import kubernetes

    with cluster.sync_api_client() as api:  # the spawner makes it with the namespace
        try:
            kubernetes.client.CoreV1Api(api).create_namespaced_service_account(
                namespace, {"metadata": {"name": "kubelab-user"}})
        except kubernetes.client.ApiException as e:
            if e.status != 409:
                raise
    # the home volume is mounted where the notebook has it, and the jobs folder is on it
    config = CONFIG.model_copy(update={"home": CONFIG.home.model_copy(
        update={"mount_path": str(root)})})
    if notebook is not None:  # what JobContext.from_environ does with the notebook's mounts
        config = with_notebook_mounts(config, notebook)
    ctx = JobContext(user="alice@example.org", groups=("ml",), config=config, image=IMAGE,
                     namespace=namespace, jobs_root=jobs_root or root / "kubelab-jobs", gpu_type="a100",
                     home_claim=home_claim, service_account="kubelab-user",
                     notebook=notebook)
    return KubernetesBackend(ctx, kubeconfig=cluster.kubeconfig_path, **kw)


@pytest.fixture
def k8s(kube_cluster, kube_namespace, tmp_path: Path, work: Path) -> Iterator[KubernetesBackend]:
    kube_cluster.require_emulator()
    kube_cluster.add_node("cpu-1", cpu="16", memory="64Gi")
    backend = make(kube_cluster, kube_namespace, tmp_path)
    yield backend
    backend.close()


def pods_of(cluster, namespace: str, job: str) -> list[dict]:
    return [p for p in cluster.list_objects("pods", namespace)
            if p["metadata"].get("labels", {}).get("kubelab.dev/job") == job]


def running_pods(cluster, namespace: str, job: str, count: int = 1) -> list[dict]:
    return wait_for(lambda: (lambda ps: ps if len(ps) >= count and all(
        p.get("status", {}).get("phase") == "Running" for p in ps) else None)(
        pods_of(cluster, namespace, job)), what=f"{count} running pod(s) of {job}")


def test_a_single_node_job(k8s: KubernetesBackend, kube_cluster, kube_namespace: str) -> None:
    info = k8s.submit(JobSpec(script="train.py", args=["--lr", "0.1"], name="one", cpus="2",
                              memory="8Gi", data=["imagenet"], env={"SEED": "1"}))
    assert info.status.phase in (JobPhase.PENDING, JobPhase.RUNNING)
    job = kube_cluster.get_object("jobs", kube_namespace, "one", group="batch")
    meta, spec = job["metadata"], job["spec"]
    assert meta["labels"][objects.KIND_LABEL] == "job"
    assert meta["labels"]["kubelab.dev/job"] == "one"
    assert meta["labels"][objects.USER_LABEL] == objects.safe_label_value("alice@example.org")
    # the team, as on the notebook's pod: the hub's team usage counts the job's pods
    assert meta["labels"][objects.TEAM_LABEL] == "ml"
    assert spec["template"]["metadata"]["labels"][objects.TEAM_LABEL] == "ml"
    assert spec["ttlSecondsAfterFinished"] == 604800 and spec["backoffLimit"] == 0
    pod = spec["template"]["spec"]
    assert podsecurity.violations({"spec": pod}) == []
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    assert container["command"][:2] == ["sh", "-c"]  # the runner keeping a copy of the log
    assert container["command"][4:] == ["python", "-u", "train.py", "--lr", "0.1"]
    (init,) = pod["initContainers"]  # unpacks the snapshot from the home volume
    assert init["command"][-2:] == [k8s.last_snapshot.id, container["workingDir"]]
    assert init["resources"] == container["resources"] and init["image"] == IMAGE
    assert container["image"] == IMAGE
    assert container["workingDir"] == str(Path(info.output_dir).parent / "workspace")
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "8Gi"},
                                      "limits": {"cpu": "2", "memory": "8Gi"}}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SEED"] == "1" and env["KUBELAB_JOB_NAME"] == "one"
    assert env["KUBELAB_DATA_IMAGENET"] == "/data/imagenet"
    # KUBELAB_DATASETS in the notebook's shape (NotebookEnv), as the spawners write it
    assert json.loads(env["KUBELAB_DATASETS"]) == [{
        "name": "imagenet", "mount_path": "/data/imagenet", "read_only": True,
        "source": {"pvc": {"claim_name": "imagenet"}}}]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    home = str(Path(info.output_dir).parents[2])
    workspace = str(Path(info.output_dir).parent / "workspace")
    assert {home, workspace, "/data/imagenet", "/dev/shm"} <= mounts
    assert pod["serviceAccountName"] == "kubelab-user"
    assert "nodeSelector" not in pod  # no GPUs: any node

    (pod_obj,) = running_pods(kube_cluster, kube_namespace, "one")
    wait_for(lambda: k8s.get("one").status.phase is JobPhase.RUNNING, what="Running")
    kube_cluster.append_logs(kube_namespace, pod_obj["metadata"]["name"], "epoch 1\n")
    stream = k8s.open_logs("one", follow=True)
    assert stream.read(timeout=10) == ["epoch 1"]
    kube_cluster.finish_pod(kube_namespace, pod_obj["metadata"]["name"], 0, logs="done\n")
    rest = []
    while (batch := stream.read(timeout=10)) is not None:
        rest += batch
    assert rest == ["done"]
    info = k8s.wait("one", timeout=10)
    assert info.status.phase is JobPhase.SUCCEEDED and info.status.exit_code == 0
    for timeout in ("5", float("nan"), -1, True):  # Job.wait leaves this check to the backend
        with pytest.raises(InvalidJobSpec, match="timeout must be a number of seconds, 0 or more"):
            k8s.wait("one", timeout)
    assert info.image == IMAGE and info.data == ("imagenet",)


def test_a_jobs_folder_off_the_home_volume_is_refused(kube_cluster, kube_namespace: str,
                                                     tmp_path: Path, work: Path) -> None:
    """Job pods mount the home volume: a jobs folder elsewhere is one they cannot see."""
    home, elsewhere = tmp_path / "home", tmp_path / "scratch" / "jobs"
    backend = make(kube_cluster, kube_namespace, home, jobs_root=elsewhere)
    try:
        with pytest.raises(BackendError) as e:
            backend.submit(JobSpec(script="train.py", name="lost"))
        message = str(e.value)
        assert f"the jobs folder {elsewhere} is not on your home volume (mounted at {home})" in message
        assert f"set KUBELAB_JOBS_ROOT to a folder under {home}" in message
        # refused before anything was made: no Kubernetes object, no snapshot, no job folder
        assert kube_cluster.list_objects("jobs", kube_namespace, group="batch") == []
        assert not elsewhere.exists()
        # under the home mount (here: the default layout), the same submit goes through
        ok = make(kube_cluster, kube_namespace, home)
        try:
            assert ok.submit(JobSpec(script="train.py", name="found")).name == "found"
        finally:
            ok.close()
    finally:
        backend.close()


def test_a_dataset_the_notebook_mounts_is_described_as_the_notebook_has_it(
        kube_cluster, kube_namespace: str, tmp_path: Path, work: Path) -> None:
    source = CONFIG.dataset("scratch").source.model_dump(mode="json", exclude_none=True)
    mine = NotebookDataset(name="scratch", mount_path="/scratch/exp", read_only=False,
                           sub_path="users/alice/exp", source=source)
    backend = make(kube_cluster, kube_namespace, tmp_path,
                   notebook=NotebookEnv(backend="kubernetes", datasets=(mine,)))
    try:
        backend.submit(JobSpec(script="train.py", name="scratchy", data=["scratch"]))
    finally:
        backend.close()
    job = kube_cluster.get_object("jobs", kube_namespace, "scratchy", group="batch")
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    # the entry a notebook's code reads in the notebook, and the mount it describes
    assert NotebookEnv.from_env(env).datasets == (mine,)
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "kubelab-data-scratch"]
    assert (mount["mountPath"], mount["subPath"], mount["readOnly"]) == (
        "/scratch/exp", "users/alice/exp", False)
    assert env["KUBELAB_DATA_SCRATCH"] == "/scratch/exp"


def test_failure_shows_exit_code_and_last_lines(k8s: KubernetesBackend, kube_cluster,
                                                kube_namespace: str) -> None:
    k8s.submit(JobSpec(source="raise SystemExit(3)", name="bad"))
    (pod,) = running_pods(kube_cluster, kube_namespace, "bad")
    kube_cluster.finish_pod(kube_namespace, pod["metadata"]["name"], 3,
                            logs="loading\nTraceback: boom\n")
    with pytest.raises(JobFailed) as e:
        k8s.wait("bad", timeout=10, check=True)
    assert e.value.exit_code == 3
    assert e.value.last_lines == ["loading", "Traceback: boom"]
    assert "Failed (exit code 3)" in str(e.value)


def test_multi_node_indexed_job_and_headless_service(kube_cluster, kube_namespace: str,
                                                     tmp_path: Path, work: Path) -> None:
    kube_cluster.require_emulator()
    for i in range(2):
        kube_cluster.add_node(f"gpu-{i}", gpus=4, labels=A100,
                              taints=["nvidia.com/gpu=present:NoSchedule"])
    backend = make(kube_cluster, kube_namespace, tmp_path)
    try:
        backend.submit(JobSpec(script="train.py", args=["--epochs", "3"], name="dist",
                               gpus=4, nodes=2))
        job = kube_cluster.get_object("jobs", kube_namespace, "dist", group="batch")
        spec = job["spec"]
        assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
        pod = spec["template"]["spec"]
        assert pod["subdomain"] == "dist"
        assert pod["nodeSelector"] == A100
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                       "effect": "NoSchedule"}]
        container = pod["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
        # torchrun's runner, kubelab.core.jobs.torchrun's source (the helper), then the command
        assert container["command"][:5] == ["sh", "-c", ko.TORCHRUN_RUNNER, "kubelab-job",
                                            torchrun.helper_source()]
        assert container["command"][5:] == [
            "torchrun", "--nnodes=$(NNODES)", "--nproc-per-node=4", "--node-rank=$(NODE_RANK)",
            "--master-addr=$(MASTER_ADDR)", "--master-port=$(MASTER_PORT)", "train.py",
            "--epochs", "3"]
        env = {e["name"]: e for e in container["env"]}
        assert env["NNODES"]["value"] == "2"
        assert env["MASTER_ADDR"]["value"] == f"dist-0.dist.{kube_namespace}.svc"
        assert env["MASTER_PORT"]["value"] == "29500"
        assert env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == (
            "metadata.annotations['batch.kubernetes.io/job-completion-index']")
        assert podsecurity.violations({"spec": pod}) == []
        assert pod["automountServiceAccountToken"] is False
        service = kube_cluster.get_object("services", kube_namespace, "dist")
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["publishNotReadyAddresses"] is True
        assert service["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
        pods = running_pods(kube_cluster, kube_namespace, "dist", 2)
        indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                         for p in pods)
        assert indexes == ["0", "1"]
        assert {p["spec"]["hostname"] for p in pods} == {"dist-0", "dist-1"}
        selector = service["spec"]["selector"]
        assert all(selector.items() <= p["metadata"]["labels"].items() for p in pods)
        wait_for(lambda: backend.get("dist").status.phase is JobPhase.RUNNING, what="Running")
        rank1 = next(p for p in pods if p["spec"]["hostname"] == "dist-1")
        kube_cluster.finish_pod(kube_namespace, rank1["metadata"]["name"], 0, logs="rank 1 done\n")
        assert list(backend.open_logs("dist", rank=1)) == ["rank 1 done"]
        for p in pods:
            if p is not rank1:
                kube_cluster.finish_pod(kube_namespace, p["metadata"]["name"], 0)
        assert backend.wait("dist", timeout=10).status.ok
    finally:
        backend.close()


def test_pending_on_insufficient_gpus(k8s: KubernetesBackend, kube_cluster,
                                      kube_namespace: str) -> None:
    kube_cluster.add_node("gpu-small", gpus=1, labels=A100,
                          taints=["nvidia.com/gpu=present:NoSchedule"])
    k8s.submit(JobSpec(script="train.py", name="wants-gpu", gpus=2))
    status = wait_for(lambda: (lambda s: s if "nvidia.com/gpu" in s.message else None)(
        k8s.get("wants-gpu").status), what="an Insufficient GPU message")
    assert status.phase is JobPhase.PENDING
    assert "Insufficient nvidia.com/gpu" in status.message


def test_cancel(k8s: KubernetesBackend, kube_cluster, kube_namespace: str) -> None:
    k8s.submit(JobSpec(script="train.py", name="stopme"))
    running_pods(kube_cluster, kube_namespace, "stopme")
    assert k8s.cancel("stopme").status.phase is JobPhase.CANCELLED
    info = wait_for(lambda: (lambda i: i if i.status.finished and "stopping" not in i.status.message
                             else None)(k8s.get("stopme")), what="the Job to end")
    assert info.status.phase is JobPhase.CANCELLED
    wait_for(lambda: all(p.get("status", {}).get("phase") != "Running"
                         for p in pods_of(kube_cluster, kube_namespace, "stopme")),
             what="the pod to stop")
    k8s.delete("stopme")
    with pytest.raises(JobNotFound):
        k8s.get("stopme")
    wait_for(lambda: kube_cluster.get_object("jobs", kube_namespace, "stopme", group="batch") is None,
             what="the Job to go")


def test_replace_waits_for_the_old_job_to_go(k8s: KubernetesBackend, kube_cluster,
                                            kube_namespace: str) -> None:
    k8s.submit(JobSpec(script="train.py", name="rerun", args=["--lr", "1"]))
    (old,) = running_pods(kube_cluster, kube_namespace, "rerun")
    k8s.submit(JobSpec(script="train.py", name="rerun", args=["--lr", "2"], replace=True))
    job = kube_cluster.get_object("jobs", kube_namespace, "rerun", group="batch")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "2"
    (new,) = running_pods(kube_cluster, kube_namespace, "rerun")
    assert new["metadata"]["name"] != old["metadata"]["name"]
    assert [i.name for i in k8s.list_jobs()] == ["rerun"]


def test_resubmit_ships_nothing_new_and_names_are_unique(k8s: KubernetesBackend) -> None:
    k8s.submit(JobSpec(script="train.py", name="first"))
    assert k8s.last_snapshot.new_files == 1
    k8s.submit(JobSpec(script="train.py", name="second"))
    assert (k8s.last_snapshot.new_files, k8s.last_snapshot.new_bytes) == (0, 0)
    with pytest.raises(JobExists):
        k8s.submit(JobSpec(script="train.py", name="first"))


def test_a_restarted_kernel_loses_nothing(k8s: KubernetesBackend, kube_cluster,
                                          kube_namespace: str, tmp_path: Path) -> None:
    k8s.submit(JobSpec(script="train.py", args=["--x"], name="keep", gpus=0))
    (pod,) = running_pods(kube_cluster, kube_namespace, "keep")
    out = Path(k8s.get("keep").output_dir)
    (out.parent / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.5}) + "\n")
    k8s.close()
    fresh = make(kube_cluster, kube_namespace, tmp_path)
    try:
        info = wait_for(lambda: fresh.get("keep") if fresh.get("keep").status.phase is JobPhase.RUNNING
                        else None, what="Running")
        assert (info.entry, info.args, info.output_dir) == ("train.py", ("--x",), str(out))
        assert fresh.metrics("keep") == [{"step": 1, "loss": 0.5}]
        kube_cluster.finish_pod(kube_namespace, pod["metadata"]["name"], 0, logs="bye\n")
        assert fresh.wait("keep", timeout=10).status.ok
        assert list(fresh.open_logs("keep")) == ["bye"]
    finally:
        fresh.close()


def test_faults_500s_and_dropped_watches_make_no_duplicates(kube_cluster, kube_namespace: str,
                                                            tmp_path: Path, work: Path) -> None:
    kube_cluster.require_emulator()
    kube_cluster.add_node("cpu-1", cpu="64", memory="256Gi")
    kube_cluster.faults.reseed(5)
    kube_cluster.faults.fail(500, rate=0.4, method="POST")
    kube_cluster.faults.fail(500, rate=0.3, method="GET")
    kube_cluster.faults.drop_watch(after_events=2)
    backend = make(kube_cluster, kube_namespace, tmp_path, retries=12, retry_delay=0.01)
    try:
        for i in range(6):
            backend.submit(JobSpec(script="train.py", name=f"j{i}"))
        jobs = kube_cluster.list_objects("jobs", kube_namespace, group="batch")
        assert sorted(j["metadata"]["name"] for j in jobs) == [f"j{i}" for i in range(6)]
        for i in range(6):
            (pod,) = running_pods(kube_cluster, kube_namespace, f"j{i}")
            kube_cluster.finish_pod(kube_namespace, pod["metadata"]["name"], i % 2)
        wait_for(lambda: all(backend.get(f"j{i}").status.done for i in range(6)), timeout=20,
                 what="every job to end despite the faults")
        assert [backend.get(f"j{i}").status.phase for i in range(6)] == [
            JobPhase.SUCCEEDED, JobPhase.FAILED] * 3
        assert len(backend.list_jobs()) == 6
    finally:
        kube_cluster.faults.clear()
        backend.close()


def test_a_409_from_our_own_lost_create_is_not_a_second_job(k8s: KubernetesBackend, kube_cluster,
                                                            kube_namespace: str) -> None:
    """The first create went through but its answer was lost: the retry meets 409 and finds our
    submission id on the object."""
    from kubelab.core.jobs import k8s_objects as ko

    calls = []
    k8s._ensure()
    real = k8s.custom.create_namespaced_custom_object

    async def lossy(*args, **kw):
        created = await real(*args, **kw)
        calls.append(created)
        if len(calls) == 1:
            from kubernetes_asyncio.client.exceptions import ApiException

            raise ApiException(status=503, reason="lost answer")
        return created

    k8s.custom.create_namespaced_custom_object = lossy
    info = k8s.submit(JobSpec(script="train.py", name="once"))
    assert info.name == "once" and len(calls) == 1
    jobs = kube_cluster.list_objects("jobs", kube_namespace, group="batch")
    assert [j["metadata"]["name"] for j in jobs] == ["once"]
    assert ko.SUBMISSION_ANNOTATION in jobs[0]["metadata"]["annotations"]


def test_watching_many_jobs_costs_no_requests(k8s: KubernetesBackend, kube_cluster,
                                              kube_namespace: str) -> None:
    for i in range(20):
        k8s.submit(JobSpec(script="train.py", name=f"w{i}"))
    wait_for(lambda: all(i.status.phase is JobPhase.RUNNING for i in k8s.list_jobs()), timeout=20,
             what="20 running jobs")
    mark = kube_cluster.requests.mark()
    deadline = time.monotonic() + 2.0
    reads = 0
    while time.monotonic() < deadline:
        for info in k8s.list_jobs():
            k8s.get(info.name)
            reads += 1
        time.sleep(0.05)
    assert reads > 200
    assert kube_cluster.requests.since(mark) == []


def test_trainjob_when_its_crd_is_served(kube_cluster, kube_namespace: str, tmp_path: Path,
                                         work: Path, kube_sync_api) -> None:
    kube_cluster.require_emulator()
    kube_cluster.register_crd("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob")
    backend = make(kube_cluster, kube_namespace, tmp_path)
    try:
        backend.submit(JobSpec(script="train.py", args=["--lr", "1"], name="tj", gpus=2, nodes=2))
        assert backend.job_kind == "TrainJob"
        obj = kube_cluster.get_object("trainjobs", kube_namespace, "tj", group="trainer.kubeflow.org")
        spec = obj["spec"]
        assert spec["runtimeRef"] == {"name": "kubelab-torch"}  # jobs.trainer_runtime's default
        assert spec["trainer"]["numNodes"] == 2 and spec["trainer"]["numProcPerNode"] == 2
        assert spec["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "2"
        assert spec["trainer"]["command"][-3:] == ["train.py", "--lr", "1"]
        assert obj["metadata"]["labels"]["kubelab.dev/job"] == "tj"
        assert spec["labels"][objects.TEAM_LABEL] == "ml"  # on the JobSet's Jobs and pods
        # the pod Trainer makes from the stock runtime and these overrides meets "restricted";
        # the runtime's pod alone (no overrides) does not: the overrides are what makes it so
        pod = trainjob_pod(obj)
        assert podsecurity.violations({"spec": pod}) == []
        assert pod["automountServiceAccountToken"] is False
        assert podsecurity.violations({"spec": trainjob_pod(
            {**obj, "spec": {**spec, "podSpecOverrides": []}})}) != []
        # kubelab's runtime (hub_config/trainer-runtime.yaml), whose pod template is what a
        # Trainer that prunes the overrides' security fields uses: "restricted" on its own
        runtime_pod = trainer_runtime_pod()
        assert podsecurity.violations({"spec": runtime_pod}) == []
        for overrides in (spec["podSpecOverrides"], []):
            effective = trainjob_pod({**obj, "spec": {**spec, "podSpecOverrides": overrides}}, runtime_pod)
            assert podsecurity.violations({"spec": effective}) == []
            assert effective["automountServiceAccountToken"] is False
        assert kube_cluster.list_objects("jobs", kube_namespace, group="batch") == []
        assert backend.get("tj").status.phase is JobPhase.PENDING
        import kubernetes

        kubernetes.client.CustomObjectsApi(kube_sync_api).patch_namespaced_custom_object_status(
            "trainer.kubeflow.org", "v1alpha1", kube_namespace, "trainjobs", "tj",
            {"status": {"conditions": [{"type": "Complete", "status": "True",
                                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
        assert backend.wait("tj", timeout=10).status.ok
        backend.cancel("tj")  # a finished job: nothing to do
    finally:
        backend.close()


def test_pytorchjob_when_only_kubeflow_training_operator_is_served(
        kube_cluster, kube_namespace: str, tmp_path: Path, work: Path) -> None:
    kube_cluster.require_emulator()
    kube_cluster.register_crd("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob")
    backend = make(kube_cluster, kube_namespace, tmp_path)
    try:
        backend.submit(JobSpec(script="train.py", name="ptj", gpus=2, nodes=3))
        assert backend.job_kind == "PyTorchJob"
        obj = kube_cluster.get_object("pytorchjobs", kube_namespace, "ptj", group="kubeflow.org")
        replicas = obj["spec"]["pytorchReplicaSpecs"]
        assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 2
        container = replicas["Worker"]["template"]["spec"]["containers"][0]
        assert container["name"] == "pytorch"
        assert container["command"][5:] == ["torchrun", "--nproc-per-node=2", "train.py"]
        assert obj["spec"]["runPolicy"]["ttlSecondsAfterFinished"] == 604800
        for replica in ("Master", "Worker"):
            pod = replicas[replica]["template"]["spec"]
            assert podsecurity.violations({"spec": pod}) == []
            assert pod["automountServiceAccountToken"] is False
        assert backend.cancel("ptj").status.phase is JobPhase.CANCELLED
        obj = kube_cluster.get_object("pytorchjobs", kube_namespace, "ptj", group="kubeflow.org")
        assert obj["spec"]["runPolicy"]["suspend"] is True
    finally:
        backend.close()


def test_the_magics_over_the_kubernetes_backend(k8s: KubernetesBackend, kube_cluster,
                                                kube_namespace: str, capsys) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    from kubelab.labextension.controller import JobsController
    from kubelab.labextension.magics import KubelabMagics

    shell = InteractiveShell.instance()
    magics = KubelabMagics(shell, JobsController(k8s))
    job = magics.train("--no-follow --name magic --gpus 0 train.py --epochs 2")
    assert job.name == "magic"
    (pod,) = running_pods(kube_cluster, kube_namespace, "magic")
    kube_cluster.finish_pod(kube_namespace, pod["metadata"]["name"], 2, logs="oops\n")
    capsys.readouterr()
    from kubelab.labextension.magics import KubelabCellError

    with pytest.raises(KubelabCellError, match=r"(?s)Failed \(exit code 2\).*oops"):
        magics.jobs("wait magic")
    magics.jobs("")
    assert "magic" in capsys.readouterr().out


def test_the_pod_runner_keeps_the_log_and_the_exit_code(tmp_path: Path) -> None:
    """The shell a job container runs (k8s_objects.RUNNER), run here with /bin/sh."""
    import signal
    import subprocess
    import sys

    from kubelab.core.jobs import k8s_objects as ko

    script = ko.RUNNER.replace("/dev/shm", str(tmp_path))
    env = {"PATH": "/usr/bin:/bin", "KUBELAB_LOG_DIR": str(tmp_path / "logs"), "NODE_RANK": "1"}
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    done = subprocess.run(["sh", "-c", script, "kubelab-job", sys.executable, "-c", code],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 3
    assert sorted(done.stdout.split()) == ["err", "out"]  # the pod log: both streams
    assert sorted((tmp_path / "logs/rank-1.txt").read_text().split()) == ["err", "out"]
    assert not (tmp_path / ".kubelab-log").exists()
    # SIGTERM to the shell (PID 1 in the pod) reaches the job, whose code is the pod's
    # the handler writes with os.write: the signal may come while print('ready') is still
    # returning, and print inside print is a RuntimeError (reentrant call), exit code 1
    slow = ("import os, signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: (os.write(1, b'stopping\\n'), sys.exit(7)))\n"
            "print('ready', flush=True)\ntime.sleep(30)\n")
    proc = subprocess.Popen(["sh", "-c", script, "kubelab-job", sys.executable, "-c", slow],
                            env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 7
    assert (tmp_path / "logs/rank-1.txt").read_text().endswith("ready\nstopping\n")


def test_the_trainjob_command_unpacks_then_runs(tmp_path: Path, work: Path) -> None:
    """A TrainJob cannot have an init container: its shell unpacks the workspace first."""
    import subprocess
    import sys

    from kubelab.core.jobs import k8s_objects as ko
    from kubelab.core.jobs.snapshot import SnapshotStore

    snap = SnapshotStore(tmp_path / "store").take(work)
    ws = tmp_path / "ws"
    built = ko.build(
        name="tj", namespace="ns", user="alice", image=IMAGE, entry="train.py", args=["a"],
        workdir=str(ws), gpus=0, nodes=1, cpus=None, memory=None, env={}, datasets=[],
        gpu_type=None, pod_security=CONFIG.pod_security, home_claim=None, home_mount="/home",
        ttl_seconds_after_finished=None, active_deadline_seconds=None, service_account=None,
        submission="x", summary={}, kind="TrainJob", snapshot_store=str(snap.store),
        snapshot_id=snap.id)
    command = built.main["spec"]["trainer"]["command"]
    command[2] = command[2].replace("/dev/shm", str(tmp_path))  # the pod's own /dev/shm
    # `torchrun` stands in for itself: a script printing where it runs and its arguments
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "torchrun").write_text('#!/bin/sh\necho "$PWD" "$@"\n')
    (bin_dir / "torchrun").chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    done = subprocess.run(command, env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(ws), "train.py", "a"]
    assert (ws / "train.py").read_text() == "print('training')\n"


def _cut_streams(cluster) -> int:
    """Break every open streaming response of the test server (log follows and watches) the way
    a load balancer or an API server restart does: the TCP connection, without a last chunk."""

    def cut() -> int:
        count = 0
        for response in list(cluster.emulator.handler.streams):
            request = getattr(response, "_req", None)
            transport = request.transport if request is not None else None
            if transport is not None:
                transport.abort()
                count += 1
        return count

    return cluster.call(cut)


def test_a_dropped_log_follow_resumes_without_repeats_or_losses(
        k8s: KubernetesBackend, kube_cluster, kube_namespace: str) -> None:
    k8s.submit(JobSpec(script="train.py", name="resume"))
    (pod,) = running_pods(kube_cluster, kube_namespace, "resume")
    pod_name = pod["metadata"]["name"]
    wait_for(lambda: k8s.get("resume").status.phase is JobPhase.RUNNING, what="Running")
    # many lines within the same instants: resuming must count, not only compare times
    kube_cluster.append_logs(kube_namespace, pod_name, "".join(f"a{i}\n" for i in range(300)))
    stream = k8s.open_logs("resume", follow=True)
    got: list[str] = []

    def read_until(count: int) -> None:
        deadline = time.monotonic() + 10
        while len(got) < count and time.monotonic() < deadline:
            batch = stream.read(timeout=1)
            assert batch is not None, f"the log ended after {len(got)} lines: {got[-3:]}"
            got.extend(batch)
        assert len(got) == count, f"{len(got)} lines, not {count}: {got[-3:]}"

    read_until(300)
    for round_ in range(3):
        assert _cut_streams(kube_cluster) >= 1
        kube_cluster.append_logs(kube_namespace, pod_name,
                                 "".join(f"b{round_}-{i}\n" for i in range(100)))
        read_until(300 + 100 * (round_ + 1))
    kube_cluster.finish_pod(kube_namespace, pod_name, 0, logs="last\n")
    while (batch := stream.read(timeout=10)) is not None:
        got += batch
    want = [f"a{i}" for i in range(300)] + [
        f"b{r}-{i}" for r in range(3) for i in range(100)] + ["last"]
    assert got == want


def test_logs_outlive_the_pod(k8s: KubernetesBackend, kube_cluster, kube_namespace: str,
                              kube_sync_api) -> None:
    """After the Job's TTL (or a lost node) the pod log is gone; the runner's copy on the home
    volume is what `Job.logs()` shows then."""
    import kubernetes

    info = k8s.submit(JobSpec(script="train.py", name="gone"))
    (pod,) = running_pods(kube_cluster, kube_namespace, "gone")
    kube_cluster.finish_pod(kube_namespace, pod["metadata"]["name"], 1, logs="boom\n")
    k8s.wait("gone", timeout=10)
    copy = Path(info.output_dir).parent / "logs" / "rank-0.txt"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text("epoch 1\nboom\n")  # what the runner (k8s_objects.RUNNER) wrote
    kubernetes.client.CoreV1Api(kube_sync_api).delete_namespaced_pod(
        pod["metadata"]["name"], kube_namespace, grace_period_seconds=0)
    wait_for(lambda: not k8s._job_pods("gone"), what="the pod gone from the cache")
    assert list(k8s.open_logs("gone")) == ["epoch 1", "boom"]
    assert k8s.tail("gone", 1) == ["boom"]


def test_username_in_a_datasets_sub_path_and_claim_is_expanded_as_in_the_notebook() -> None:
    """A job built from the admin's full config (not the user's view, where it is expanded
    already) mounts the per-user directory and claim the notebook pod mounts."""
    from kubelab.core.config import Dataset
    from kubelab.core.jobs import k8s_objects as ko
    from kubelab.spawner.profiles import UserInfo, expand_user_path

    user = "Alice@Example.org"
    homes = Dataset.model_validate({
        "name": "homes", "source": {"pvc": {"claim_name": "data-{username}"}},
        "mount_path": "/data/mine", "sub_path": "users/{username}/runs", "read_only": False})
    plain = Dataset.model_validate({
        "name": "plain", "source": {"pvc": {"claim_name": "plain"}}, "mount_path": "/data/plain",
        "sub_path": "shared"})
    built = ko.build(
        name="j", namespace="ns", user=user, image=IMAGE, entry="train.py", args=[],
        workdir="/home/w", gpus=0, nodes=1, cpus=None, memory=None, env={},
        datasets=[homes, plain], gpu_type=None, pod_security=CONFIG.pod_security,
        home_claim=None, home_mount="/home", ttl_seconds_after_finished=None,
        active_deadline_seconds=None, service_account=None, submission="x", summary={})
    pod = built.main["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    sub_path = mounts["kubelab-data-homes"]["subPath"]
    assert "{" not in sub_path and sub_path.startswith("users/alice-example-org-")
    # exactly what the notebook's pod gets (spawner.profiles expands the notebook's sub paths)
    assert sub_path == expand_user_path("users/{username}/runs", UserInfo.of(user))
    assert volumes["kubelab-data-homes"]["persistentVolumeClaim"]["claimName"] == (
        "data-" + objects.safe_dns_label(user))
    assert mounts["kubelab-data-plain"]["subPath"] == "shared"  # nothing to expand: unchanged
    # the user's view of the config has it expanded already: expanding again changes nothing
    once = objects.dataset_for_user(homes, username=user)
    assert objects.dataset_for_user(once, username=user) == once


def test_after_gc_a_pending_job_still_unpacks(k8s: KubernetesBackend, kube_cluster,
                                              kube_namespace: str, work: Path, tmp_path: Path) -> None:
    """Garbage collection keeps what the cluster's jobs need: the init container of a job that
    has not started yet unpacks its workspace from the rewritten pack."""
    import subprocess

    (work / "old.bin").write_bytes(b"o" * 10_000)
    k8s.submit(JobSpec(script="train.py", name="old"))
    (work / "old.bin").unlink()
    (work / "model.py").write_text("W = 2\n")
    k8s.submit(JobSpec(script="train.py", name="waiting"))
    k8s.delete("old")
    wait_for(lambda: [i.name for i in k8s.list_jobs()] == ["waiting"], what="the old job gone")
    report = k8s.gc(grace=0)
    assert report.freed_bytes == 10_000 and report.kept_snapshots == 1
    job = kube_cluster.get_object("jobs", kube_namespace, "waiting", group="batch")
    (init,) = job["spec"]["template"]["spec"]["initContainers"]
    command = [sys.executable if c == "python" else c for c in init["command"]]
    command[-1] = str(tmp_path / "pod-workspace")  # the emptyDir
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "pod-workspace").iterdir()) == ["model.py", "train.py"]


def _quota(kube_sync_api, namespace: str, hard: dict[str, str], name: str = "kubelab-quota") -> None:
    import kubernetes

    kubernetes.client.CoreV1Api(kube_sync_api).create_namespaced_resource_quota(
        namespace, {"metadata": {"name": name}, "spec": {"hard": hard}})


def _quota_seen(backend: KubernetesBackend, key: str, used: str) -> None:
    """Wait until the backend's watch cache has the quota controller's count of *key*."""
    backend._ensure()
    wait_for(lambda: any((q.get("status") or {}).get("used", {}).get(key) == used
                         for q in backend._quotas.values()), what=f"{key} used {used} in the cache")


def test_a_job_over_the_namespaces_quota_is_refused_naming_what_holds_it(
        kube_cluster, kube_namespace: str, tmp_path: Path, work: Path, kube_sync_api) -> None:
    kube_cluster.require_emulator()
    kube_cluster.add_node("gpu-1", cpu="64", memory="256Gi", gpus=8)
    import kubernetes

    _quota(kube_sync_api, kube_namespace, {"requests.nvidia.com/gpu": "2", "requests.cpu": "8"})
    # the user's notebook, holding both GPUs of the quota
    kubernetes.client.CoreV1Api(kube_sync_api).create_namespaced_pod(kube_namespace, {
        "metadata": {"name": "jupyter-alice", "labels": objects.labels(user="alice", kind="notebook")},
        "spec": {"containers": [{"name": "notebook", "image": IMAGE, "resources": {
            "requests": {"cpu": "2"}, "limits": {"cpu": "2", "nvidia.com/gpu": "2"}}}]}})
    backend = make(kube_cluster, kube_namespace, tmp_path,
                   notebook=NotebookEnv(backend="kubernetes", gpus=2))
    try:
        _quota_seen(backend, "requests.nvidia.com/gpu", "2")
        with pytest.raises(QuotaExceeded) as e:
            backend.submit(JobSpec(script="train.py", name="greedy", gpus=1))
        assert str(e.value).startswith(
            "this job asks for 1 GPU but your namespace's quota (kubelab-quota) has 0 of 2 left "
            "(2 in use: your notebook holds 2)")
        with pytest.raises(QuotaExceeded, match=r"asks for 8 CPUs but your namespace's quota "
                                                r"\(kubelab-quota\) has 6 of 8 left \(2 in use: "
                                                r"other pods in namespace .* hold 2\)"):
            backend.submit(JobSpec(script="train.py", name="wide", cpus="4", nodes=2))
        # refused before anything was made
        assert kube_cluster.list_objects("jobs", kube_namespace, group="batch") == []
        assert not (tmp_path / "kubelab-jobs" / "greedy").exists()
        # what fits goes through, and then counts as the user's jobs'
        backend.submit(JobSpec(script="train.py", name="small", cpus="3"))
        running_pods(kube_cluster, kube_namespace, "small")
        _quota_seen(backend, "requests.cpu", "5")
        with pytest.raises(QuotaExceeded, match=r"has 3 of 8 left \(5 in use: your jobs hold 3 "
                                                r"\(small\); other pods .* hold 2\)"):
            backend.submit(JobSpec(script="train.py", name="more", cpus="4"))
        # --replace frees what the old job holds
        assert backend.submit(JobSpec(script="train.py", name="small", cpus="6",
                                      replace=True)).name == "small"
    finally:
        backend.close()


def test_a_job_whose_pods_cannot_be_created_says_why(k8s: KubernetesBackend, kube_cluster,
                                                     kube_namespace: str, kube_sync_api) -> None:
    """Past the submit's own check (here: a quota on the number of pods, which it does not
    check), the Job controller's FailedCreate is the job's status, not a silent wait."""
    _quota(kube_sync_api, kube_namespace, {"pods": "0"})
    k8s.submit(JobSpec(script="train.py", name="stuck"))
    status = wait_for(lambda: (lambda s: s if "cannot be created" in s.message else None)(
        k8s.get("stuck").status), what="the FailedCreate reason in the status")
    assert status.phase is JobPhase.PENDING
    assert status.message.startswith("its pods cannot be created: pods ")
    assert "exceeded quota: kubelab-quota" in status.message and "limited: pods=0" in status.message
    # a job without such trouble still waits in the scheduler's words
    import kubernetes

    kubernetes.client.CoreV1Api(kube_sync_api).delete_namespaced_resource_quota(
        "kubelab-quota", kube_namespace, _preload_content=False)
    k8s.submit(JobSpec(script="train.py", name="fine"))
    running_pods(kube_cluster, kube_namespace, "fine")
    assert "cannot be created" not in k8s.get("fine").status.message


def test_no_home_claim_is_refused_before_anything_is_made(kube_cluster, kube_namespace: str,
                                                          tmp_path: Path, work: Path) -> None:
    backend = make(kube_cluster, kube_namespace, tmp_path, home_claim=None)
    try:
        with pytest.raises(BackendError, match=r"no home volume claim is known "
                                               r"\(KUBELAB_HOME_CLAIM is not set\)"):
            backend.submit(JobSpec(script="train.py", name="blind"))
        assert kube_cluster.list_objects("jobs", kube_namespace, group="batch") == []
        assert not (tmp_path / "kubelab-jobs").exists()
    finally:
        backend.close()


def test_kubelab_kubeconfig_chooses_kubernetes(kube_cluster, kube_namespace: str, tmp_path: Path,
                                               work: Path) -> None:
    from kubelab.core.jobs.api import _choose_kind, make_backend
    from kubelab.core.jobs.local import LocalBackend

    home = tmp_path / "home"
    base = {"KUBELAB_USER": "alice", "KUBELAB_IMAGE": IMAGE, "KUBELAB_HOME_CLAIM": "claim-alice",
            "KUBELAB_HOME_MOUNT": str(home), "KUBELAB_JOBS_ROOT": str(home / "kubelab-jobs"),
            # what `kubelab up` sets in its servers: the kubeconfig, named, wins over it
            "KUBELAB_BACKEND": "local"}
    # a plain $KUBECONFIG does not send a laptop's jobs to a cluster
    assert _choose_kind({**base, "KUBECONFIG": str(kube_cluster.kubeconfig_path)}) == "local"
    local = make_backend({**base, "KUBECONFIG": str(kube_cluster.kubeconfig_path)})
    assert isinstance(local, LocalBackend)
    backend = make_backend({**base, "KUBELAB_KUBECONFIG": str(kube_cluster.kubeconfig_path),
                            "KUBELAB_NAMESPACE": kube_namespace})
    try:
        assert isinstance(backend, KubernetesBackend)
        assert backend.submit(JobSpec(script="train.py", name="remote")).name == "remote"
        assert kube_cluster.get_object("jobs", kube_namespace, "remote", group="batch")
    finally:
        backend.close()
    # without KUBELAB_NAMESPACE: the kubeconfig context's namespace
    other = make_backend({**base, "KUBELAB_KUBECONFIG": str(kube_cluster.kubeconfig_path)})
    try:
        other.list_jobs()
        assert other.namespace == "default"
    finally:
        other.close()
    with pytest.raises(BackendError, match="KUBELAB_KUBECONFIG names '/no/such/file', which is "
                                           "not a file"):
        make_backend({**base, "KUBELAB_KUBECONFIG": "/no/such/file"})


def _as_kubernetes_expands(arg: str, env: dict[str, str]) -> str:
    """A command argument as the kubelet passes it: ``$(NAME)`` of a defined variable replaced
    by its value, ``$$`` by ``$``, anything else as it is."""
    import re

    return re.sub(r"\$\$|\$\((\w+)\)",
                  lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), arg)


@pytest.mark.parametrize("shebang", ["direct", "env python3", "sh wrapper, only python"])
def test_torchruns_workers_get_the_launcher_for_torchruns_own_python(
        tmp_path: Path, shebang: str) -> None:
    """The pod's shell writes torchrun's PYTHON_EXEC for the interpreter torchrun runs with (its
    ``#!`` line; else python3, else python on PATH). `torchrun` stands in for itself: a Python
    script that starts one worker as torchrun does, ``$PYTHON_EXEC -u script args``."""
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    name = "python" if "only python" in shebang else "python3"
    (bin_dir / name).symlink_to(sys.executable)
    first = {"direct": f"#!{bin_dir / name}\n", "env python3": "#!/usr/bin/env python3\n",
             "sh wrapper, only python": "#!/bin/sh\n'''exec' python \"$0\" \"$@\"\n'''\n"}[shebang]
    (bin_dir / "torchrun").write_text(
        first + "import os, sys\nos.execv(os.environ['PYTHON_EXEC'], "
                "[os.environ['PYTHON_EXEC'], '-u', *sys.argv[1:]])\n")
    (bin_dir / "torchrun").chmod(0o755)
    (tmp_path / "show.py").write_text(
        "import sys\nprint(sys.executable, sys.argv, __name__, sys.stdout.line_buffering, "
        "sys.stderr.line_buffering)\n")
    command = ko.pod_shell(["torchrun", "show.py", "a b"], tee=False)
    assert command[:5] == ["sh", "-c", ko.TORCHRUN_EXEC, "kubelab-job", torchrun.helper_source()]
    command[2] = command[2].replace("/dev/shm", str(tmp_path))
    # no other program: what the shell needs of PATH is python (and env for `#!/usr/bin/env`)
    path = f"{bin_dir}:/usr/bin" if shebang == "env python3" else str(bin_dir)
    done = subprocess.run(["/bin/sh", *command[1:]], env={"PATH": path}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{bin_dir / name} ['show.py', 'a b'] __main__ True True\n"
    launcher = (tmp_path / ".kubelab-python").read_text()
    assert launcher == torchrun.launcher_text(str(bin_dir / name))
    # a PYTHON_EXEC of the user's own is kept
    done = subprocess.run(["/bin/sh", *command[1:]], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": path, "PYTHON_EXEC": str(bin_dir / name)}, timeout=30)
    assert done.stdout.split()[-2:] == ["False", "False"], done.stderr  # python -u show.py


def test_the_pod_commands_survive_kubernetes_expansion() -> None:
    """Kubernetes expands ``$(NAME)`` and ``$$`` in a command: the runners and the sources a pod
    runs have neither."""
    for text in (ko.RUNNER, ko.TORCHRUN_RUNNER, ko.TORCHRUN_EXEC, torchrun.helper_source(),
                 *ko.unpack_command("s", "i", "w")):
        assert "$(" not in text and "$$" not in text


#: each rank prints 100 lines at the same moment as the others; with $FAIL, rank 1 raises
#: and the others wait to be stopped
POD_DDP = '''\
import os, sys, time
import torch.distributed as dist

dist.init_process_group("gloo")
rank = dist.get_rank()
for i in range(100):
    dist.barrier()
    print(f"rank {rank} says {i}")
if os.environ.get("FAIL"):
    if rank == 1:
        raise RuntimeError("rank 1 broke on purpose")
    time.sleep(60)
dist.barrier()
print(f"rank {rank} done", flush=True)
dist.destroy_process_group()
'''


def _run_indexed_job_pods(tmp_path: Path, env: dict[str, str]):
    """The two pods of a 2-node indexed Job (2 workers each) run here as their containers run:
    the container's command after Kubernetes' expansion, its env, its working directory; pod
    DNS (rank 0's address) is 127.0.0.1 and each pod has its own /dev/shm."""
    import socket
    import subprocess

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "ddp.py").write_text(POD_DDP)
    built = ko.build(
        name="dist", namespace="ns", user="alice", image=IMAGE, entry="ddp.py", args=["x"],
        workdir=str(ws), gpus=2, nodes=2, cpus=None, memory=None, env=env, datasets=[],
        gpu_type=None, pod_security=CONFIG.pod_security, home_claim=None, home_mount="/home",
        ttl_seconds_after_finished=None, active_deadline_seconds=None, service_account=None,
        submission="x", summary={}, log_dir=str(tmp_path / "logs"))
    (container,) = built.main["spec"]["template"]["spec"]["containers"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for index in range(2):
        pod_env = {e["name"]: e.get("value", str(index)) for e in container["env"]}
        pod_env.update(PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin",
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        command = [_as_kubernetes_expands(arg, pod_env) for arg in container["command"]]
        shm = tmp_path / f"shm-{index}"
        shm.mkdir()
        command[2] = command[2].replace("/dev/shm", str(shm))
        procs.append(subprocess.Popen(command, env=pod_env, cwd=container["workingDir"],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, start_new_session=True))
    return container, procs


def _torchruns_python() -> str:
    """The ``sys.executable`` of the Python torchrun's shebang names (what the pod's shell
    resolves), checked to be this test's environment (it may be spelt ``python3``, not
    ``python``, so it is not always ``sys.executable``)."""
    import shutil
    import subprocess

    found = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert found, "torchrun is not beside this Python"
    line = Path(found).open().readline().strip()
    assert line.startswith("#!"), line
    shebang = line[2:].split()
    python = shutil.which(shebang[-1]) if shebang[0].endswith("/env") else shebang[0]
    assert python
    code = "import sys; print(sys.executable); print(sys.prefix)"
    executable, prefix = subprocess.check_output([python, "-I", "-c", code], text=True).split("\n")[:2]
    assert prefix == sys.prefix, (python, prefix, sys.prefix)
    return executable


def _stop(procs) -> None:
    import os
    import signal

    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def test_an_indexed_jobs_pods_run_torchrun_with_whole_lines(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    container, procs = _run_indexed_job_pods(tmp_path, {"OMP_NUM_THREADS": "1"})
    try:
        outs = [proc.communicate(timeout=120)[0] for proc in procs]
    finally:
        _stop(procs)
    assert container["command"][5:8] == ["torchrun", "--nnodes=$(NNODES)", "--nproc-per-node=2"]
    assert [proc.returncode for proc in procs] == [0, 0], outs
    for node, out in enumerate(outs):
        lines = out.splitlines()
        # the pod's log (its output) and the copy on the volume: the same lines
        assert (tmp_path / f"logs/rank-{node}.txt").read_text() == out
        # every line whole, though both of the pod's workers print each at the same moment
        for rank in (2 * node, 2 * node + 1):
            assert [line for line in lines if line.startswith(f"rank {rank} says ")] == [
                f"rank {rank} says {i}" for i in range(100)], out
            assert f"rank {rank} done" in lines
        # no line holds two workers' text (PyTorch's own warnings, e.g. a c10d connection retry
        # while the rendezvous comes up, may appear between them: they are not ours to check)
        assert all(re.fullmatch(r"rank \d says \d+", line) for line in lines if " says " in line), out
        assert not any(line.startswith("kubelab:") for line in lines), out
        # the workers ran under the launcher the pod's shell wrote into its /dev/shm, for the
        # Python torchrun's shebang names (bin/python3 in a `python3 -m venv` venv, bin/python in
        # others): this environment's
        launcher = (tmp_path / f"shm-{node}/.kubelab-python").read_text()
        assert launcher == torchrun.launcher_text(_torchruns_python())


def test_a_failed_torchrun_in_a_pod_ends_its_log_with_the_failing_ranks_error(
        tmp_path: Path) -> None:
    """Node 0's rank 1 raises: node 0's torchrun fails, and the pod's log ends with the summary;
    node 1 is then stopped (SIGTERM, as the Job controller stops a failed Job's pods): no
    summary there."""
    import signal

    pytest.importorskip("torch")
    _, procs = _run_indexed_job_pods(tmp_path, {"OMP_NUM_THREADS": "1", "FAIL": "1"})
    try:
        out = procs[0].communicate(timeout=120)[0]
        assert procs[0].returncode == 1, out
        procs[1].send_signal(signal.SIGTERM)
        other = procs[1].communicate(timeout=60)[0]
    finally:
        _stop(procs)
    lines = out.splitlines()
    assert any("ChildFailedError" in line for line in lines)
    head = "kubelab: torchrun: rank 1 failed first (exit code 1); its error:"
    summary = lines[lines.index(head):]
    assert summary[1] == "[rank1]: Traceback (most recent call last):"
    assert re.fullmatch(r'\[rank1\]:   File ".*/ws/ddp.py", line 11, in <module>', summary[2])
    assert summary[-1] == "[rank1]: RuntimeError: rank 1 broke on purpose"
    # the copy on the volume ends the same way: what Job.logs() reads once the pod is gone
    assert (tmp_path / "logs/rank-0.txt").read_text().splitlines()[-len(summary):] == summary
    assert "rank 2 says 99" in other.splitlines()
    assert not any(line.startswith("kubelab:") for line in other.splitlines()), other
