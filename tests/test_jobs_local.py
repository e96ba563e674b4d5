"""The local backend runs real processes: a NumPy training run, failures, cancel, restarts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

import kubelab
from kubelab.core.jobs import metrics as metrics_module
from kubelab.core.jobs.api import Job, jobs_gc
from kubelab.core.jobs.errors import (
    BackendError,
    InvalidJobSpec,
    JobExists,
    JobFailed,
    JobNotFound,
    QuotaExceeded,
    WaitTimeout,
)
from kubelab.core.jobs.local import LocalBackend, visible_gpus
from kubelab.core.jobs.types import JobPhase, JobSpec
from kubelab.tests.jobs_support import kill_all, make_backend, wait_for

SLEEPER = "import time, sys\nprint('started', flush=True)\ntime.sleep(60)\n"


def test_a_numpy_training_run_to_completion(local: LocalBackend, workdir: Path) -> None:
    job = kubelab.train("train.py", args=["--epochs", "30", "--lr", "0.1"], name="linreg")
    assert job.name == "linreg"
    lines = list(job.logs(follow=True))
    assert lines[0].startswith("epoch 0 loss")
    assert lines[-1].startswith("saved ")
    status = job.wait(timeout=30)
    assert status.phase is JobPhase.SUCCEEDED and status.exit_code == 0
    points = job.metrics()
    assert [p["epoch"] for p in points] == list(range(30))
    assert points[-1]["loss"] < points[0]["loss"] / 100
    weights = np.load(Path(job.output_dir) / "weights.npy")
    np.testing.assert_allclose(weights, [1.5, -2.0, 0.5, 3.0], atol=0.05)
    # the job ran on a snapshot: its workspace is not the notebook's folder
    assert Path(job.output_dir).parent.name == "linreg"
    assert [j.name for j in kubelab.jobs()] == ["linreg"]


def test_the_job_gets_its_environment(local: LocalBackend, workdir: Path) -> None:
    (workdir / "env.py").write_text(
        "import os\nfor k in ('KUBELAB_JOB_NAME', 'MY_VAR', 'CUDA_VISIBLE_DEVICES', "
        "'KUBELAB_OUTPUT_DIR'):\n    print(k, '=', os.environ.get(k))\nprint('cwd', os.getcwd())\n")
    job = kubelab.train("env.py", env={"MY_VAR": "a=b"}, name="envjob")
    job.wait(timeout=30)
    out = dict(line.split(" = ") for line in job.logs() if " = " in line)
    assert out["KUBELAB_JOB_NAME"] == "envjob" and out["MY_VAR"] == "a=b"
    assert out["CUDA_VISIBLE_DEVICES"] == ""
    assert out["KUBELAB_OUTPUT_DIR"] == job.output_dir
    assert any(line == f"cwd {Path(job.output_dir).parent / 'workspace'}" for line in job.logs())


def test_kubelab_datasets_in_a_job_reads_as_in_the_notebook(tmp_path: Path, workdir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """KUBELAB_DATASETS in a job is the notebook's shape (NotebookEnv): a dataset the notebook
    has keeps the notebook's entry (its link here), another is the config's, as a list."""
    from kubelab.core.config import example_config_path
    from kubelab.core.jobs.context import JobContext
    from kubelab.core.notebook_env import NotebookDataset, NotebookEnv

    link = workdir / "data" / "imagenet"
    mine = NotebookDataset(name="imagenet", mount_path="/data/imagenet", read_only=True,
                           source={"pvc": {"claim_name": "imagenet"}}, path=str(link),
                           target=str(tmp_path / "imagenet"), read_only_enforced=False)
    notebook = NotebookEnv(backend="local", user="alice", groups=("ml",), datasets=(mine,),
                           config_path=str(example_config_path()),
                           jobs_root=str(tmp_path / "jobs"))
    ctx = JobContext.from_environ(notebook.to_env())
    backend = LocalBackend(ctx, environ={"CUDA_VISIBLE_DEVICES": ""})
    monkeypatch.chdir(workdir)
    code = ("import os\nfor k in ('KUBELAB_DATASETS', 'KUBELAB_DATA_IMAGENET', 'KUBELAB_DATA_SCRATCH'):"
            "\n    print(os.environ[k])\n")
    try:
        job = Job("data", backend, info=backend.submit(JobSpec(source=code, name="data",
                                                               data=["imagenet", "scratch"])))
        job.wait(timeout=30)
        raw, imagenet_path, scratch_path = list(job.logs())
    finally:
        kill_all(backend)
    # what a notebook's code does with it, in the job
    seen = NotebookEnv.from_env({"KUBELAB_DATASETS": raw})
    assert seen.dataset("imagenet") == mine
    scratch = seen.dataset("scratch")
    assert scratch is not None and (scratch.mount_path, scratch.read_only) == ("/scratch", False)
    assert scratch.source == ctx.config.dataset("scratch").source.model_dump(mode="json", exclude_none=True)
    assert raw.startswith("[{")  # a JSON list, as the spawners write it (not "imagenet,scratch")
    assert (imagenet_path, scratch_path) == (str(link), "/scratch")


def test_failure_has_exit_code_and_last_lines(local: LocalBackend) -> None:
    job = kubelab.train(code="print('about to fail')\nraise SystemExit(7)\n", name="boom")
    with pytest.raises(JobFailed) as e:
        job.wait(timeout=30)
    assert e.value.exit_code == 7
    assert e.value.last_lines == ["about to fail"]
    assert "Failed (exit code 7)" in str(e.value)
    assert job.wait(timeout=1, check=False).exit_code == 7


def test_a_jobs_folder_with_spaces_and_quotes_in_its_path(tmp_path: Path, workdir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    backend = make_backend(tmp_path / "my jobs" / "it's here")
    monkeypatch.chdir(workdir)
    try:
        backend.submit(JobSpec(source="print('ran')\nraise SystemExit(3)\n", name="spaced"))
        info = backend.wait("spaced", 30)
        assert info.status.exit_code == 3  # the wrapper wrote it where the backend reads it
        assert backend.tail("spaced", 1) == ["ran"]
    finally:
        kill_all(backend)


def test_a_traceback_is_in_the_last_lines(local: LocalBackend) -> None:
    job = kubelab.train(code="import missing_module_xyz\n")
    info = local.wait(job.name, 30)
    assert info.status.exit_code == 1
    assert local.tail(job.name, 1) == ["ModuleNotFoundError: No module named 'missing_module_xyz'"]


def test_cancel_kills_the_whole_process_group(local: LocalBackend, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    code = (f"import subprocess, sys, time\n"
            f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
            f"print('child', p.pid, flush=True)\ntime.sleep(60)\n")
    job = kubelab.train(code=code, name="tree")
    wait_for(pidfile.exists)
    wait_for(lambda: pidfile.read_text().strip() != "")
    child = int(pidfile.read_text())
    assert job.status.phase is JobPhase.RUNNING
    status = job.cancel()
    assert status.phase is JobPhase.CANCELLED
    wait_for(lambda: not _running(child))
    assert job.status.phase is JobPhase.CANCELLED
    assert job.wait(timeout=1, check=False).phase is JobPhase.CANCELLED


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_a_restarted_kernel_sees_the_same_jobs(local: LocalBackend, workdir: Path,
                                               tmp_path: Path) -> None:
    (workdir / "sleeper.py").write_text(SLEEPER)
    done = kubelab.train("train.py", args=["--epochs", "2"], name="done")
    done.wait(timeout=30)
    running = kubelab.train("sleeper.py", name="sleeper")
    wait_for(lambda: "started" in list(running.logs()))
    # a new kernel: a new backend over the same jobs root, with no memory of the processes
    fresh = make_backend(tmp_path / "jobs")
    seen = {i.name: i.status.phase for i in fresh.list_jobs()}
    assert seen == {"done": JobPhase.SUCCEEDED, "sleeper": JobPhase.RUNNING}
    assert Job("done", fresh).metrics()[-1]["epoch"] == 1
    assert fresh.cancel("sleeper").status.phase is JobPhase.CANCELLED
    assert local.get("sleeper").status.phase is JobPhase.CANCELLED


def test_follow_streams_a_running_job(local: LocalBackend) -> None:
    job = kubelab.train(code="import time\nfor i in range(5):\n    print(i, flush=True)\n"
                             "    time.sleep(0.05)\n")
    assert list(job.logs(follow=True)) == ["0", "1", "2", "3", "4"]


def test_many_log_lines_arrive_in_order(local: LocalBackend) -> None:
    job = kubelab.train(code="import sys\nsys.stdout.write(''.join(f'line {i}\\n' for i in range(100000)))\n")
    stream = local.open_logs(job.name, follow=True)
    count, batches = 0, 0
    while (batch := stream.read(timeout=10)) is not None:
        for line in batch:
            assert line == f"line {count}"
            count += 1
        batches += bool(batch)
    assert count == 100_000
    assert batches < 1000  # batched, not a wake-up per line


def test_names_and_refusals(local: LocalBackend) -> None:
    kubelab.train("train.py", args=["--epochs", "1"], name="taken").wait(30)
    with pytest.raises(JobExists, match="`%jobs delete taken`"):
        kubelab.train("train.py", name="taken")
    with pytest.raises(InvalidJobSpec, match="--nodes must be 1"):
        kubelab.train("train.py", nodes=2)
    with pytest.raises(QuotaExceeded, match="this server has none"):
        kubelab.train("train.py", gpus=1)
    with pytest.raises(InvalidJobSpec, match="no such script: nope.py"):
        kubelab.train("nope.py")
    with pytest.raises(InvalidJobSpec, match="outside the working directory"):
        kubelab.train(sys.executable)
    with pytest.raises(JobNotFound, match="your jobs: taken"):
        kubelab.job("other")
    with pytest.raises(JobNotFound):
        kubelab.job("../../etc")


def test_delete_keeps_outputs_and_frees_the_name(local: LocalBackend) -> None:
    job = kubelab.train("train.py", args=["--epochs", "1"], name="again")
    job.wait(30)
    out = Path(job.output_dir)
    job.delete()
    assert (out / "weights.npy").exists()
    assert kubelab.jobs() == []
    assert kubelab.train("train.py", args=["--epochs", "1"], name="again").wait(30).ok


def test_replace_reruns_under_the_same_name(local: LocalBackend, workdir: Path) -> None:
    (workdir / "slow.py").write_text("import time\nprint('old', flush=True)\ntime.sleep(60)\n")
    old = kubelab.train("slow.py", name="rerun")
    wait_for(lambda: "old" in list(old.logs()))
    old_pid = old.info.extra["pid"]
    # refused before anything is touched: the running job goes on
    with pytest.raises(InvalidJobSpec):
        kubelab.train("nope.py", name="rerun", replace=True)
    assert old.status.phase is JobPhase.RUNNING
    new = kubelab.train("train.py", args=["--epochs", "1"], name="rerun", replace=True)
    assert new.info.extra["pid"] != old_pid
    assert new.wait(30).ok and "old" not in list(new.logs())
    assert [j.name for j in kubelab.jobs()] == ["rerun"]
    assert (Path(new.output_dir) / "weights.npy").exists()


def test_cpu_and_memory_limits_as_far_as_the_os_allows(local: LocalBackend) -> None:
    code = ("import os\nprint('cpus', sorted(os.sched_getaffinity(0)), flush=True)\n"
            "try:\n    b = bytearray(400 * 2**20)\nexcept MemoryError:\n    print('no memory')\n"
            "    raise SystemExit(3)\nprint('allocated')\n")
    before = os.sched_getaffinity(0)
    job = kubelab.train(code=code, memory="200Mi", cpus="1")
    assert os.sched_getaffinity(0) == before  # the kernel's own affinity is back
    status = job.wait(30, check=False)
    lines = list(job.logs())
    assert status.exit_code == 3 and "no memory" in lines, lines
    assert "memory 200Mi per process (address space, RLIMIT_AS)" in job.info.extra["limits"]
    if len(os.sched_getaffinity(0)) > 1:
        assert lines[0] in (f"cpus [{c}]" for c in os.sched_getaffinity(0))
    # without limits, the same code allocates
    assert kubelab.train(code=code).wait(30).ok


def test_servers_and_jobs_share_one_limit_plan(tmp_path: Path) -> None:
    """kubelab.core.limits decides for the local spawner and the local backend alike: the same
    memory rule (RLIMIT_AS, never for GPU work); jobs are pinned to free CPUs first."""
    from kubelab.core.limits import plan_limits

    for gpu in (False, True):
        server = plan_limits("1Gi", "2", gpu=gpu, scope="server", no_cgroup_reason="no cgroup_parent")
        job = plan_limits("1Gi", "2", gpu=gpu, scope="job")
        assert server.rlimit_as == job.rlimit_as == (None if gpu else 1024**3)
        assert job.rlimit_as_kib == (None if gpu else 1024**2)
        assert server.cpuset is None and "CPU limit 2 not enforced (no cgroup_parent" in server.notes[-1]
    assert "memory 1Gi not enforced (an address-space limit breaks CUDA)" in job.notes
    # a cgroup enforces both: nothing pinned, nothing unsaid
    cgroup = plan_limits("1Gi", "2", gpu=True, scope="server", cgroup=tmp_path)
    assert (cgroup.cgroup, cgroup.rlimit_as, cgroup.notes) == (tmp_path, None, [])
    assert not plan_limits("1Gi", None, gpu=False, scope="server", enforce_memory=False).rlimit_as
    allowed = sorted(os.sched_getaffinity(0))
    one = plan_limits(None, "500m", gpu=False, scope="job", busy_cpus={allowed[0]})
    if len(allowed) > 1:  # ceil(0.5) = 1 CPU, one another job does not hold
        assert one.cpuset == {allowed[1]} and f"pinned to CPU(s) {allowed[1]}" in one.notes[0]
        everything = plan_limits(None, str(len(allowed)), gpu=False, scope="job")
        assert everything.cpuset is None and "not limited" in everything.notes[0]
    else:
        assert one.cpuset is None and "this machine's 1 CPU(s), not limited" in one.notes[0]


def test_jobs_gc_frees_the_snapshots_of_deleted_jobs(local: LocalBackend, workdir: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "big.bin").write_bytes(os.urandom(20_000))
    gone = kubelab.train(code="print('gone')", name="gone")
    (workdir / "big.bin").unlink()
    kept = kubelab.train(code="print('kept')", name="kept")
    gone.wait(30)
    kept.wait(30)
    gone.delete()
    capsys.readouterr()
    report = jobs_gc(grace=0)
    assert capsys.readouterr().out == f"[kubelab] {report}\n"
    assert report.freed_bytes >= 20_000 and report.kept_snapshots == 1
    # the kept job's snapshot unpacks whole; the deleted one's is gone
    snap = local.store.load(kept.info.snapshot)
    snap.materialize(workdir.parent / "again")
    assert (workdir.parent / "again" / "_kubelab_cell.py").read_text() == "print('kept')"
    assert not (workdir.parent / "again" / "big.bin").exists()
    assert sorted(p.name for p in local.store.manifests.iterdir()) == [kept.info.snapshot]
    for grace in (-1, None, "5", float("nan"), True):
        with pytest.raises(InvalidJobSpec, match="grace must be a number of seconds, 0 or more, got"):
            jobs_gc(grace=grace)


def test_wait_timeout(local: LocalBackend, workdir: Path) -> None:
    (workdir / "sleeper.py").write_text(SLEEPER)
    job = kubelab.train("sleeper.py")
    with pytest.raises(WaitTimeout, match="still Running after 0.2 s"):
        job.wait(timeout=0.2)
    job.cancel()


FAKE_TORCHRUN = """
import os, sys
print("torchrun", " ".join(sys.argv[1:]), "CUDA", os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
import time; time.sleep(60)
"""


def test_gpus_are_shared_out_between_running_jobs(tmp_path: Path, workdir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    (workdir / "gpu.py").write_text(
        "import os, time\nprint(os.environ['CUDA_VISIBLE_DEVICES'], flush=True)\ntime.sleep(60)\n")
    fake = tmp_path / "torchrun.py"
    fake.write_text(FAKE_TORCHRUN)
    backend = make_backend(tmp_path / "jobs", gpus="0,1,2")
    backend.torchrun = [sys.executable, str(fake)]
    try:
        a = backend.submit(JobSpec(script="gpu.py", gpus=1, name="a"))
        b = backend.submit(JobSpec(script="gpu.py", gpus=1, name="b"))
        assert a.extra["devices"] == ["0"] and b.extra["devices"] == ["1"]
        wait_for(lambda: backend.tail("b", 1) == ["1"])
        with pytest.raises(QuotaExceeded, match="1 of this server's 3 are free"):
            backend.submit(JobSpec(script="gpu.py", gpus=2, name="c"))
        backend.cancel("a")
        c = backend.submit(JobSpec(script="gpu.py", gpus=2, name="c", args=["--lr", "1"]))
        assert c.extra["devices"] == ["0", "2"]
        wait_for(lambda: backend.tail("c", 1) == [
            "torchrun --standalone --nnodes=1 --nproc-per-node=2 gpu.py --lr 1 CUDA 0,2"])
        backend.torchrun = None
        with pytest.raises(BackendError, match="torchrun, which needs PyTorch"):
            backend.check_spec(JobSpec(script="x.py", gpus=2))
    finally:
        kill_all(backend)


def test_visible_gpus() -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,2"}) == ["0", "2"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert visible_gpus({"KUBELAB_LOCAL_GPUS": "GPU-a,GPU-b", "CUDA_VISIBLE_DEVICES": "0"}) == ["GPU-a", "GPU-b"]


def test_a_function_as_the_job(local: LocalBackend) -> None:
    job = kubelab.train(_train_fn, kwargs={"n": 3})
    assert job.name.startswith("train-fn-")
    job.wait(30)
    assert list(job.logs()) == ["n = 3"]
    with pytest.raises(InvalidJobSpec, match="defined with 'def'"):
        kubelab.train(lambda: None)


def _train_fn(n: int) -> None:
    print("n =", n)


def test_report_outside_a_job_and_by_rank(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBELAB_METRICS_FILE", raising=False)
    before = len(metrics_module.history())
    kubelab.report(epoch=1, loss=np.float32(0.5))
    assert metrics_module.history()[before:][0]["loss"] == pytest.approx(0.5)
    path = tmp_path / "m.jsonl"
    monkeypatch.setenv("KUBELAB_METRICS_FILE", str(path))
    monkeypatch.setenv("RANK", "1")
    kubelab.report(loss=1.0)  # not rank 0: dropped
    kubelab.report(loss=2.0, all_ranks=True)
    monkeypatch.setenv("RANK", "0")
    kubelab.report(step=5, acc=0.9, nan=float("nan"))
    points, offset = metrics_module.read_metrics(path)
    assert [(p.get("loss"), p.get("rank"), p.get("step")) for p in points] == [(2.0, 1, None), (None, None, 5)]
    assert points[1]["nan"] == "nan" and offset == path.stat().st_size
    with pytest.raises(TypeError, match="not a number"):
        kubelab.report(loss=object())
    with pytest.raises(TypeError, match="at least one metric"):
        kubelab.report()


def test_import_kubelab_stays_light() -> None:
    import subprocess

    code = ("import sys, kubelab; kubelab.report(x=1); "
            "heavy = [m for m in ('pydantic', 'kubernetes_asyncio', 'IPython', 'ipywidgets', "
            "'kubelab.core.jobs.api') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "KUBELAB_METRICS_FILE": ""}, check=True)
    assert out.stdout.strip() == "[]"


_DAMAGE = {
    "a list": lambda rec: [1, 2],
    "no name": lambda rec: {k: v for k, v in rec.items() if k != "name"},
    "no created": lambda rec: {k: v for k, v in rec.items() if k != "created"},
    "created not ISO": lambda rec: {**rec, "created": "yesterday"},
    "created a number": lambda rec: {**rec, "created": 5},
    "args a number": lambda rec: {**rec, "args": 5},
    "pid a string": lambda rec: {**rec, "pid": "x"},
    "another name": lambda rec: {**rec, "name": "other"},
}


@pytest.mark.parametrize("damage", [*_DAMAGE, "not JSON", "a folder"])
def test_a_damaged_job_record_hides_nothing_else(local: LocalBackend, damage: str) -> None:
    """One job.json that cannot be read (or fails the record's schema) is listed as broken;
    the other jobs, gc and new submits work; commands on it say which file and what to do,
    and `%jobs delete` removes it."""
    import json

    kubelab.train(code="print('good')", name="good").wait(timeout=30)
    kubelab.train(code="print('bad')", name="bad").wait(timeout=30)
    path = local.root / "bad" / "job.json"
    if damage == "not JSON":
        path.write_text("{not json")
    elif damage == "a folder":
        path.unlink()
        path.mkdir()
    else:
        path.write_text(json.dumps(_DAMAGE[damage](json.loads(path.read_text()))))
    listed = {j.name: j for j in kubelab.jobs()}
    assert set(listed) == {"good", "bad"}
    assert listed["good"].status.ok
    assert str(path) in listed["bad"].status.message
    assert "%jobs delete bad" in listed["bad"].status.message
    assert list(kubelab.job("good").logs()) == ["good"]
    with pytest.raises(JobNotFound, match="your jobs: "):
        kubelab.job("nosuch")
    for action in (lambda: list(kubelab.job("bad").logs()), lambda: kubelab.job("bad").cancel()):
        with pytest.raises(BackendError, match=f"{path} cannot be read .*%jobs delete bad"):
            action()
    jobs_gc(quiet=True)
    with pytest.raises(JobExists):
        kubelab.train(code="print(1)", name="bad")
    kubelab.train(code="print('other')", name="other").wait(timeout=30)
    kubelab.job("bad").delete()
    assert not path.exists() and (local.root / "bad" / "outputs").is_dir()
    assert (local.root / "other" / "job.json").exists()  # "another name" deleted only bad
    assert kubelab.train(code="print('again')", name="bad").wait(timeout=30).ok


def test_replace_removes_a_damaged_job(local: LocalBackend) -> None:
    kubelab.train(code="print(1)", name="bad").wait(timeout=30)
    (local.root / "bad" / "job.json").write_text("[1, 2]")
    job = kubelab.train(code="print(2)", name="bad", replace=True)
    job.wait(timeout=30)
    assert list(job.logs()) == ["2"]


def test_a_log_that_is_a_folder(local: LocalBackend) -> None:
    kubelab.train(code="print(1)", name="bad").wait(timeout=30)
    log = local.root / "bad" / "logs.txt"
    log.unlink()
    log.mkdir()
    for follow in (False, True):
        with pytest.raises(BackendError, match=f"log of job 'bad', {log}, cannot be read"):
            list(kubelab.job("bad").logs(follow=follow))
    kubelab.job("bad").delete()
    assert not log.exists()
    assert kubelab.train(code="print(3)", name="bad").wait(timeout=30).ok
