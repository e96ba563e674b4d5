"""kubelab.train and the Job handle refuse what they cannot run with one JobError, never a
TypeError or ValueError from deep inside (a wrong type, a NUL byte, a lone surrogate, a file in
the way of the job's folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

import kubelab
from kubelab.core.jobs.backend import check_lines
from kubelab.core.jobs.errors import BackendError, InvalidJobSpec, JobError
from kubelab.core.jobs.local import LocalBackend


def f(a: int) -> None:
    print(a)


@pytest.mark.parametrize(("kw", "words"), [
    (dict(args=5), "args must be a list of strings, like ['--epochs', '10']; got int 5"),
    (dict(args=None), "args must be a list of strings"),
    (dict(args=[1, 2]), "args[0] must be a string, got int 1 (pass str(1))"),
    (dict(args={"a": 1}), "args must be a list of strings"),
    (dict(args=[None]), "args[0] must be a string, got NoneType None"),
    (dict(args=["ok", "a\x00b"]), "args[1] 'a\\x00b' contains a NUL character"),
    (dict(args=["\ud800"]), "args[0] '\\ud800' contains \\ud800, a lone surrogate"),
    (dict(data=5), "data must be a list of strings"),
    (dict(data=None), "data must be a list of strings"),
    (dict(image=5), "invalid image reference 5 (int; give a string)"),
    (dict(env="A=1"), "env must be a dict of names to strings"),
    (dict(env=["A=1"]), "env must be a dict of names to strings"),
    (dict(env=[("A", "1")]), "env must be a dict of names to strings"),
    (dict(env={"A": 1}), "the value of 'A' must be a string, got int 1"),
    (dict(replace="no"), "replace must be True or False, got str 'no'"),
    (dict(workdir=None), "workdir must be a folder path (a string), got NoneType None"),
    (dict(workdir=5), "workdir must be a folder path"),
    (dict(workdir=b"."), "workdir must be a folder path"),
    (dict(workdir="\x00"), "the working directory '\\x00' contains a NUL character"),
    (dict(workdir=""), "the working directory is empty"),
])
def test_wrong_types_and_values_are_refused(local: LocalBackend, kw, words) -> None:
    with pytest.raises(InvalidJobSpec) as e:
        kubelab.train("train.py", **kw)
    assert words in str(e.value)
    assert local.list_jobs() == []


def test_workdir_as_a_path_object(local: LocalBackend, workdir: Path) -> None:
    (workdir / "hi.py").write_text("print('hi')\n")
    job = kubelab.train("hi.py", workdir=workdir)
    job.wait()
    assert "hi" in list(job.logs())


def test_function_kwargs_must_be_a_dict_of_names(local: LocalBackend) -> None:
    for kwargs in ("abc", [1], {1: 2}):
        with pytest.raises(InvalidJobSpec, match="kwargs must be a dict of argument names"):
            kubelab.train(f, kwargs=kwargs)
    with pytest.raises(InvalidJobSpec, match="function arguments must be JSON values"):
        kubelab.train(f, kwargs={"a": object()})


def test_a_lone_surrogate_in_the_code(local: LocalBackend) -> None:
    with pytest.raises(InvalidJobSpec, match=r"the code contains \\udcff \(line 2\), a lone surrogate"):
        kubelab.train(code="x = 1\nprint('\udcff')\n")


def test_wait_timeout_and_logs_rank_are_checked(local: LocalBackend) -> None:
    job = kubelab.train(code="print('done')\n")
    for timeout in ("5", float("nan"), -1, True):
        with pytest.raises(InvalidJobSpec, match="timeout must be a number of seconds, 0 or more"):
            job.wait(timeout=timeout)
        with pytest.raises(InvalidJobSpec, match="timeout must be"):
            local.wait(job.name, timeout)  # what %jobs wait calls
    for rank in ("0", -1, 1.0, None):
        with pytest.raises(InvalidJobSpec, match="rank must be a whole number, 0 or more"):
            job.logs(rank=rank)
    assert job.wait(timeout=float("inf")).ok
    assert list(job.logs(rank=0)) == ["done"]
    # a node that the job does not have (a local job runs on one)
    with pytest.raises(InvalidJobSpec, match=r"runs on 1 node: rank is 0, got 1"):
        job.logs(rank=1)


def test_a_huge_tail_is_the_whole_log(local: LocalBackend) -> None:
    job = kubelab.train(code="print('a')\nprint('b')\n")
    job.wait()
    assert local.tail(job.name, 10**20) == ["a", "b"]
    assert check_lines(2**63) == check_lines(10**30)
    with pytest.raises(InvalidJobSpec, match="number of lines"):
        local.tail(job.name, -1)


def test_a_file_in_the_way_of_the_jobs_folder(local: LocalBackend) -> None:
    (local.ctx.jobs_root / "blocked").mkdir(parents=True)
    (local.ctx.jobs_root / "blocked" / "outputs").write_text("not a folder")
    with pytest.raises(BackendError, match=r"blocked/outputs is in the way of the job's folder: "
                                           r"it is a file"):
        kubelab.train("train.py", name="blocked")
    (local.ctx.jobs_root / "file").write_text("x")
    with pytest.raises(BackendError, match="is in the way"):
        kubelab.train("train.py", name="file")
    assert local.list_jobs() == []


def test_every_refusal_is_a_job_error(local: LocalBackend) -> None:
    """The red-team list: each gives a JobError (was TypeError, ValueError or accepted)."""
    for kw in (dict(args=5), dict(data=None), dict(env="A=1"), dict(replace="no"),
               dict(workdir=None), dict(env={"KUBELAB_USER": "bob"})):
        with pytest.raises(JobError):
            kubelab.train("train.py", **kw)
