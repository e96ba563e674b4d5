"""Fuzz the magic argument parsers: thousands of lines, never a traceback.

Whatever a user types after ``%train`` or ``%jobs``, the result is either a parsed request or one
of the two errors IPython shows as a short message (``UsageError``, :class:`KubelabCellError`).
The magics run over a controller that records instead of submitting, so the whole path from the
line to the controller call is exercised, not only argparse; and, fewer lines, over the real
controller and a real local backend (so the backend's own checks — quantities, limits, names,
the snapshot — are fuzzed too: ``--cpus 1e999`` was an OverflowError there), cleaning up every
job it submits. The line is split as a POSIX shell splits it: whatever ``shlex.join`` quotes comes
back as the same words (IPython's own splitting kept the quotes in them).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from kubelab.core.jobs.errors import JobError, JobNotFound
from kubelab.core.jobs.local import LocalBackend
from kubelab.core.jobs.types import JobSpec
from kubelab.labextension.controller import JobsController, parse_env
from kubelab.labextension.magics import KubelabCellError, KubelabMagics, parse_jobs, parse_train

TOKENS = st.sampled_from([
    "--name", "-n", "--gpus", "-g", "--nodes", "--cpus", "--memory", "--image", "--data", "-d",
    "--env", "-e", "--workdir", "-C", "--no-follow", "--", "-", "--follow", "-f", "--tail",
    "--timeout", "train.py", "logs", "cancel", "wait", "delete", "metrics", "list", "resnet-lr3",
    "2", "0", "-1", "1e3", "8Gi", "500m", "K=V", "=", "A=", "imagenet", "'", '"', "\\", "$x",
    "--gpus=2", "-g2", "--name=x", "%", "NaN", "inf", "ünï", "\t", "a b", "--help", "-h",
])
LINES = st.one_of(
    st.lists(TOKENS, max_size=12).map(" ".join),
    st.text(max_size=60),
    st.lists(st.one_of(TOKENS, st.text(max_size=8)), max_size=10).map(" ".join),
)
OK_ERRORS = (UsageError, KubelabCellError)


class RecordingController(JobsController):
    """Validates what it is given as the real one would, then records it instead of running."""

    def __init__(self) -> None:
        super().__init__(backend=None)
        self.calls: list[dict[str, Any]] = []

    def submit(self, **kw: Any) -> Any:
        JobSpec(script=kw["script"], source=kw["code"], args=kw["args"], name=kw["name"],
                gpus=kw["gpus"], nodes=kw["nodes"], cpus=kw["cpus"], memory=kw["memory"],
                image=kw["image"], data=kw["data"], env=parse_env(kw["env"]),
                workdir=kw["workdir"])
        self.calls.append(kw)
        raise JobError("recorded")

    def job(self, name: str | None) -> Any:
        raise JobNotFound(f"no job named {name!r}")

    def rows(self) -> list[Any]:
        return []


SHELL = InteractiveShell.instance()
MAGICS = KubelabMagics(SHELL, RecordingController())


def _call(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except OK_ERRORS:
        pass


@settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
@given(line=LINES, cell=st.one_of(st.none(), st.text(max_size=30)))
def test_train_never_raises_a_traceback(line: str, cell: str | None) -> None:
    try:
        parsed = parse_train(line, cell)
    except UsageError:
        return
    assert isinstance(parsed["gpus"], int) and parsed["gpus"] >= 0
    assert isinstance(parsed["args"], list)
    _call(MAGICS.train, line, cell)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(line=LINES)
def test_jobs_never_raises_a_traceback(line: str) -> None:
    try:
        args = parse_jobs(line)
    except UsageError:
        return
    assert args.action in ("list", "logs", "cancel", "wait", "delete", "metrics", "gc")
    _call(MAGICS.jobs, line)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(args=st.lists(st.text(max_size=12), max_size=6), value=st.text(max_size=12),
       cell=st.booleans())
def test_quoted_words_arrive_as_typed(args: list[str], value: str, cell: bool) -> None:
    """The script's (or the cell's) arguments and an --env value, quoted as a shell would,
    reach the job exactly: quotes group and are removed, whatever the words hold."""
    options = ["--env", shlex.quote("K=" + value), "--name", "'q'"]
    if cell:
        parsed = parse_train(" ".join([*options, "--", *map(shlex.quote, args)]), "print(1)\n")
        assert parsed["script"] is None
    else:
        parsed = parse_train(" ".join([*options, shlex.quote("my train.py"), *map(shlex.quote, args)]))
        assert parsed["script"] == "my train.py"
    assert parsed["args"] == args
    assert parsed["env"] == ["K=" + value] and parsed["name"] == "q"


# -- through the real controller and a real local backend ------------------------------------------

#: values that reach the backend's own checks (quantities, names, datasets, env), not argparse's
BACKEND_TOKENS = st.sampled_from([
    "--cpus 1e999", "--cpus 1e18", "--cpus 0", "--cpus -1", "--cpus 0.001m", "--cpus 99999999999",
    "--memory 1e999", "--memory 9Ei", "--memory 1", "--memory 0.5", "--memory NaN", "--gpus 1",
    "--gpus 99999999999999999999", "--nodes 2", "--data imagenet", "--data " + "d" * 80,
    "--env A=1", "--env PATH=/x", "--env KUBELAB_JOB_NAME=x", "--env 1A=x", "--env " + "K" * 80 + "=1",
    "--name fz", "--name " + "n" * 80, "--image x", "--image ' '", "--workdir /nonexistent",
    "--workdir .", "--replace", "-e", "-C", "-h",
])
#: options, then what to run: mostly the script that is there, so that most lines reach the backend
BACKEND_LINES = st.builds(
    lambda options, script: " ".join([*options, "--no-follow", script]),
    st.lists(BACKEND_TOKENS, max_size=4),
    st.sampled_from(["train.py", "train.py", "train.py", "train.py --epochs 1 -h", "missing.py",
                     "../up.py", "-- train.py"]))


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubelabMagics, LocalBackend]]:
    """Magics over the real controller and a local backend in a fresh jobs root; the jobs run a
    script that exits at once."""
    from kubelab.tests.jobs_support import kill_all, make_backend

    root = tmp_path_factory.mktemp("fuzz")
    work = root / "work"
    work.mkdir()
    (work / "train.py").write_text("pass\n")
    backend = make_backend(root / "jobs")
    old = os.getcwd()
    os.chdir(work)
    try:
        yield KubelabMagics(SHELL, JobsController(backend)), backend
    finally:
        os.chdir(old)
        kill_all(backend)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(line=BACKEND_LINES, cell=st.one_of(st.none(), st.just("print(1)\n")))
def test_train_through_the_real_backend_never_raises_a_traceback(real, line: str,
                                                                  cell: str | None) -> None:
    magics, backend = real
    try:
        job = magics.train(line, cell)
    except OK_ERRORS as e:
        # one short line (a UsageError's, or the cell's red one), never a traceback
        text = str(e) if not isinstance(e, KubelabCellError) else "\n".join(e._render_traceback_())
        assert "Traceback" not in text and len(text.splitlines()) == 1, text
        assert len(text) < 400, text
        job = None
    else:
        if job is not None:  # submitted (help prints and returns None)
            assert job.name in {i.name for i in backend.list_jobs()}
    for info in backend.list_jobs():  # clean up what it submitted
        backend.cancel(info.name)
        backend.delete(info.name)
    assert backend.list_jobs() == []
