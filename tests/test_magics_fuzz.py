"""Fuzz the magic argument parsers: thousands of lines, never a traceback.

Whatever a user types after ``%train`` or ``%jobs``, the result is either a parsed request or one
of the two errors IPython shows as a short message (``UsageError``, :class:`KubelabCellError`).
The magics run over a controller that records instead of submitting, so the whole path from the
line to the controller call is exercised, not only argparse.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from kubelab.core.jobs.errors import JobError, JobNotFound
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
    assert args.action in ("list", "logs", "cancel", "wait", "delete", "metrics")
    _call(MAGICS.jobs, line)
