"""Real distributed PyTorch through the local backend: ``torchrun`` with two workers (gloo, on the
CPU) in a server the local spawner gave two GPUs; failing ranks and what a failure shows; cancel.

The GPUs are faked as the local spawner gives them to a server (its environment:
``CUDA_VISIBLE_DEVICES``, ``KUBELAB_GPUS``); the jobs never touch CUDA. Skipped without PyTorch
(the ``test`` extra installs the CPU build where it lies on disk; docs/dependencies.md).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

import kubelab
from kubelab.core.jobs import local as local_module
from kubelab.core.jobs.api import Job
from kubelab.core.jobs.context import JobContext
from kubelab.core.jobs.errors import JobFailed
from kubelab.core.jobs.local import LocalBackend
from kubelab.core.jobs.torchrun import torchrun_failure
from kubelab.core.jobs.types import JobPhase
from kubelab.core.notebook_env import NotebookEnv
from kubelab.labextension.controller import JobsController
from kubelab.labextension.magics import KubelabMagics
from kubelab.tests.jobs_support import as_backend, delete_running, wait_for

torch = pytest.importorskip("torch")

#: what the local spawner gave the server: two GPUs, by UUID as `nvidia-smi -L` lists them
SERVER_GPUS = ("GPU-a", "GPU-b")
#: every job: one thread per worker (two workers on a 2-core machine)
JOB_ENV = {"OMP_NUM_THREADS": "1"}

#: linear regression with DistributedDataParallel, each rank on its own shard of the data
TRAIN_DDP = textwrap.dedent('''
    import argparse, os, sys
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    import kubelab

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, required=True)
    steps = parser.parse_args().steps
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank == 0:
        print("argv", sys.argv, "file", __file__, "path", sys.path[0], "name", __name__)
    print(f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']} (local rank "
          f"{os.environ['LOCAL_RANK']}, dist rank {rank} of {world}) "
          f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}", flush=True)
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(4, 1))
    shard = torch.Generator().manual_seed(100 + rank)
    X = torch.randn(256, 4, generator=shard)
    y = X @ torch.tensor([[1.5], [-2.0], [0.5], [3.0]]) + 0.01 * torch.randn(256, 1, generator=shard)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(X), y)
        loss.backward()  # DDP averages the gradients over the ranks here
        opt.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        kubelab.report(step=step, loss=float(mean) / world)  # written by rank 0 only
        print(f"rank {rank} step {step} loss", loss.item())  # both ranks at once, after the reduce
    for i in range(100):  # both ranks print at the same moment
        dist.barrier()
        print(f"rank {rank} says {i}")
    weights = model.module.weight.detach().flatten().tolist()
    print(f"rank {rank} weights {weights}", flush=True)
    if rank == 0:
        path = os.path.join(os.environ["KUBELAB_OUTPUT_DIR"], "model.pt")
        torch.save(model.module.state_dict(), path)
        print("saved", path, flush=True)
    dist.destroy_process_group()
''')

#: rank 1 fails ($FAIL says how); rank 0 waits to be stopped (by torchrun, once rank 1 failed)
FAIL_RANK_1 = textwrap.dedent('''
    import os, signal, time
    how = os.environ["FAIL"]
    if how == "import" and os.environ["RANK"] == "1":
        import missing_module_xyz  # before the process group is up: no [rank1] prefix
    import torch.distributed as dist

    dist.init_process_group("gloo")
    print(f"rank {dist.get_rank()} started", flush=True)
    if dist.get_rank() == 1:
        if how == "raise":
            raise RuntimeError("rank 1 broke on purpose")
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
    time.sleep(60)
''')

#: every rank says who it is; rank 1 does not stop when asked
IGNORE_SIGTERM = textwrap.dedent('''
    import os, signal, time
    import torch.distributed as dist

    dist.init_process_group("gloo")
    if dist.get_rank() == 1:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"rank {dist.get_rank()} pid {os.getpid()}", flush=True)
    time.sleep(120)
''')


@pytest.fixture
def gpu_server(tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalBackend]:
    """The local backend of a kernel in a server the local spawner gave two GPUs: the kernel's
    environment is the spawner's (``NotebookEnv``); nothing else says what GPUs there are."""
    server = NotebookEnv(backend="local", user="alice", gpus=len(SERVER_GPUS),
                         cuda_devices=SERVER_GPUS, jobs_root=str(tmp_path / "jobs"))
    for key, value in server.to_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("KUBELAB_DISPLAY", "text")
    with as_backend(LocalBackend(JobContext.from_environ()), end=delete_running) as backend:
        yield backend


def test_a_ddp_training_run_on_two_workers(gpu_server: LocalBackend, workdir: Path) -> None:
    assert gpu_server.gpus == list(SERVER_GPUS)
    (workdir / "ddp.py").write_text(TRAIN_DDP)
    job = kubelab.train("ddp.py", args=["--steps", "40"], gpus=2, env=JOB_ENV, name="ddp")
    status = job.wait(timeout=60, check=False)
    lines = list(job.logs())
    assert status.phase is JobPhase.SUCCEEDED and status.exit_code == 0, lines
    assert job.info.extra["devices"] == list(SERVER_GPUS)
    assert job.info.extra["command"][-6:] == ["--standalone", "--nnodes=1", "--nproc-per-node=2",
                                               "ddp.py", "--steps", "40"]
    # the script runs as `python ddp.py --steps 40` would run it, in the job's workspace
    workspace = Path(job.output_dir).parent / "workspace"
    assert f"argv ['ddp.py', '--steps', '40'] file {workspace / 'ddp.py'} path {workspace} " \
           f"name __main__" in lines
    # both workers, as torchrun numbered them, each seeing the server's two GPUs
    for rank in (0, 1):
        assert (f"rank {rank} of 2 (local rank {rank}, dist rank {rank} of 2) "
                f"CUDA_VISIBLE_DEVICES={','.join(SERVER_GPUS)}") in lines, lines
    # every line whole, though both ranks print each step at the same moment
    steps = [line for line in lines if " step " in line]
    assert len(steps) == 80, lines
    for rank in (0, 1):
        assert [int(line.split()[3]) for line in steps if line.startswith(f"rank {rank} step ")] == \
            list(range(40)), lines
    assert all(re.fullmatch(r"rank [01] step \d+ loss [-+.e\d]+", line) for line in steps), steps
    for rank in (0, 1):
        assert [line for line in lines if line.startswith(f"rank {rank} says ")] == [
            f"rank {rank} says {i}" for i in range(100)], lines
    assert "" not in lines
    # DDP kept the replicas equal: both ranks end with the same weights
    weights = dict(line.split(" weights ") for line in lines if " weights " in line)
    assert set(weights) == {"rank 0", "rank 1"} and weights["rank 0"] == weights["rank 1"]
    # one point per step (rank 0's; rank 1's calls wrote nothing), the loss going down
    points = job.metrics()
    assert [p["step"] for p in points] == list(range(40))
    losses = [p["loss"] for p in points]
    assert losses[-1] < losses[0] / 100
    assert all(b < a for a, b in pairwise(losses))
    # rank 0's output, in the job's output directory: the regression learned from both shards
    saved = Path(job.output_dir) / "model.pt"
    assert f"saved {saved}" in lines
    state = torch.load(saved)
    torch.testing.assert_close(state["weight"], torch.tensor([[1.5, -2.0, 0.5, 3.0]]),
                               atol=0.05, rtol=0)


def test_a_rank_that_raises_fails_the_job_and_the_failure_shows_its_error(
    gpu_server: LocalBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    job = kubelab.train(code=FAIL_RANK_1, gpus=2, env={**JOB_ENV, "FAIL": "raise"}, name="ddp-fail")
    with pytest.raises(JobFailed) as failed:
        job.wait(timeout=60)
    assert failed.value.exit_code == 1  # torchrun's, for a failed worker
    lines = list(job.logs())
    assert {"rank 0 started", "rank 1 started"} <= set(lines)
    # torchrun's report is in the log; after it, which rank failed first and its error
    assert any("ChildFailedError" in line for line in lines)
    summary = lines[lines.index("kubelab: torchrun: rank 1 failed first (exit code 1); its error:"):]
    assert summary[1] == "[rank1]: Traceback (most recent call last):"
    assert re.fullmatch(r'\[rank1\]:   File ".*/workspace/_kubelab_cell.py", line 12, in <module>',
                        summary[2])  # the script's frame first, as under `python script`
    assert summary[-1] == "[rank1]: RuntimeError: rank 1 broke on purpose"
    assert failed.value.last_lines[-len(summary):] == summary
    # what `%jobs wait` shows in a notebook: the exit code and the last 20 lines, the error in them
    shell = InteractiveShell.instance()
    shell.register_magics(KubelabMagics(shell, JobsController(gpu_server)))
    capsys.readouterr()
    assert not shell.run_cell("%jobs wait ddp-fail").success
    out = re.sub(r"\x1b\[[0-9;]*m", "", "".join(capsys.readouterr()))
    assert "job ddp-fail Failed (exit code 1); last 20 log lines:" in out
    assert "\n    [rank1]: RuntimeError: rank 1 broke on purpose" in out


@pytest.mark.parametrize(("how", "last"), [
    ("kill", ["kubelab: torchrun: rank 1 failed first (killed by SIGKILL); no traceback from it "
              "(torchrun's report is above)"]),
    ("import", ["kubelab: torchrun: rank 1 failed first (exit code 1); its error:",
                "Traceback (most recent call last):",
                "ModuleNotFoundError: No module named 'missing_module_xyz'"]),
])
def test_a_rank_killed_or_failing_before_the_process_group(gpu_server: LocalBackend, how: str,
                                                           last: list[str]) -> None:
    job = kubelab.train(code=FAIL_RANK_1, gpus=2, env={**JOB_ENV, "FAIL": how}, name=f"ddp-{how}")
    status = job.wait(timeout=60, check=False)
    assert status.phase is JobPhase.FAILED and status.exit_code == 1
    tail = gpu_server.tail(job.name, 20)
    assert last[0] in tail, tail
    assert [line for line in tail[tail.index(last[0]):] if line in last] == last, tail
    assert tail[-1] == last[-1]


def test_cancel_stops_torchrun_and_a_worker_that_ignores_sigterm(
    gpu_server: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchrun starts its workers in sessions of their own, outside the job's process group:
    the SIGKILL after the grace period must reach them as well."""
    monkeypatch.setattr(local_module, "CANCEL_GRACE", 1.0)
    job = kubelab.train(code=IGNORE_SIGTERM, gpus=2, env=JOB_ENV, name="ddp-stuck")
    wait_for(lambda: len(_pids(job)) == 2, timeout=30)
    pids = _pids(job)
    assert job.status.phase is JobPhase.RUNNING
    assert all(local_module._proc_start(pid) is not None for pid in pids.values())
    assert job.cancel().phase is JobPhase.CANCELLED
    # gone, or a zombie: no start time (the backend's own test)
    wait_for(lambda: all(local_module._proc_start(pid) is None for pid in pids.values()), timeout=10)
    # a cancel is not a failure: no summary
    assert not any(line.startswith("kubelab: torchrun:") for line in job.logs())


def _pids(job: Job) -> dict[int, int]:
    found = (re.fullmatch(r"rank (\d) pid (\d+)", line) for line in job.logs())
    return {int(m[1]): int(m[2]) for m in found if m}


def test_the_failure_summary_keeps_the_end_of_a_long_traceback() -> None:
    frames = [f'[rank3]:   File "x.py", line {i}, in f{i}' for i in range(30)]
    log = ["[rank0]: Traceback (most recent call last):", "[rank0]: ValueError: not me",
           "[rank3]: Traceback (most recent call last):", *frames, "[rank3]: KeyError: 'lr'",
           "W1127 09:28:24.422000 24425 torch/distributed/elastic/multiprocessing/api.py:1028] "
           "Sending process 1 closing signal SIGTERM",
           "Traceback (most recent call last):", '  File "run.py", line 1',
           "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
           "Failures:", "[1]:", "  rank      : 0 (local_rank: 0)", "  exitcode  : 1 (pid: 7)",
           "Root Cause (first observed failure):", "[0]:", "  rank      : 3 (local_rank: 3)",
           "  exitcode  : 1 (pid: 9)", "=" * 60]
    assert torchrun_failure(log, max_lines=5) == [
        "kubelab: torchrun: rank 3 failed first (exit code 1); its error:",
        "[rank3]: Traceback (most recent call last):", "[rank3]:   ...", frames[-2], frames[-1],
        "[rank3]: KeyError: 'lr'"]
    # a log without torchrun's report (the job failed some other way): nothing to add
    assert torchrun_failure(log[:-10]) == []
    assert torchrun_failure(["Traceback (most recent call last):", "ValueError: x"]) == []
