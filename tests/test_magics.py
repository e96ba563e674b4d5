"""%train, %%train and %jobs in a real IPython shell over the local backend."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

import kubelab
from kubelab.core.jobs.local import LocalBackend
from kubelab.core.jobs.types import JobPhase
from kubelab.labextension import display
from kubelab.labextension.controller import JobsController, parse_env
from kubelab.labextension.magics import JobsTable, KubelabCellError, KubelabMagics

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def ip(local: LocalBackend) -> InteractiveShell:
    shell = InteractiveShell.instance()
    shell.register_magics(KubelabMagics(shell, JobsController(local)))
    return shell


def run(ip: InteractiveShell, capsys: pytest.CaptureFixture[str], cell: str) -> tuple[bool, str]:
    result = ip.run_cell(cell)
    out = capsys.readouterr()
    text = ANSI.sub("", out.out + out.err)
    assert "Traceback" not in text, text
    return result.success, text


def test_load_ext_registers_the_magics() -> None:
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "kubelab")
    assert {"train", "jobs"} <= set(shell.magics_manager.magics["line"])
    assert "train" in shell.magics_manager.magics["cell"]


@pytest.mark.parametrize("line", ["%train -h", "%train --help", "%train --gpus 2 -h",
                                  "%%train -h\nprint(1)\n", "%jobs -h", "%jobs logs --help"])
def test_dash_h_prints_the_help(ip, capsys, line) -> None:
    ok, out = run(ip, capsys, line)
    assert ok, out
    magic = KubelabMagics.jobs if line.startswith("%jobs") else KubelabMagics.train
    assert out.strip() == magic.__doc__.strip()
    assert "-h, --help" in out and "unrecognized" not in out


def test_a_scripts_own_dash_h_goes_to_the_script(ip, capsys, workdir: Path) -> None:
    (workdir / "args.py").write_text("import sys\nprint('argv', sys.argv[1:])\n")
    ok, out = run(ip, capsys, "%train --name h1 args.py -h")
    assert ok and "argv ['-h']" in out


def test_help_is_the_docstring() -> None:
    doc = KubelabMagics.train.__doc__
    assert "%%train [options]" in doc and "--gpus" in doc and "--no-follow" in doc
    assert "%jobs logs NAME [--follow]" in KubelabMagics.jobs.__doc__


def test_train_a_script_and_follow_it(ip, capsys) -> None:
    ok, out = run(ip, capsys, "%train --name lin train.py --epochs 3")
    assert ok
    assert "epoch 2 loss" in out and "[metrics] epoch=2" in out
    assert "lin: Succeeded" in out and "outputs in" in out
    ok, out = run(ip, capsys, "%jobs")
    assert re.search(r"lin\s+Succeeded\s+0\s+train.py --epochs 3", out)


def test_cell_code_runs_with_its_args(ip, capsys) -> None:
    ok, out = run(ip, capsys, "%%train --name cell1 --env GREETING=hi -- a b\n"
                              "import os, sys\nprint(os.environ['GREETING'], sys.argv[1:])\n")
    assert ok and "hi ['a', 'b']" in out


def test_a_failed_job_shows_exit_code_not_a_traceback(ip, capsys) -> None:
    ok, out = run(ip, capsys, "%%train --name bad\nprint('last words')\nraise SystemExit(4)\n")
    assert not ok
    assert "kubelab: job bad Failed (exit code 4)" in out
    assert "last words" in out
    ok, out = run(ip, capsys, "%jobs wait bad")
    assert not ok
    assert "job bad Failed (exit code 4); last 1 log lines:\n    last words" in out


@pytest.mark.parametrize(("line", "words"), [
    ("%train --gpus x train.py", "invalid int value: 'x'"),
    ("%train --gpus -1 train.py", "--gpus must be 0 or more"),
    ("%train --nodes 0 train.py", "--nodes must be 1 or more"),
    ("%train --bogus train.py", "unrecognized arguments: --bogus"),
    ('%train "open', "cannot split the line"),
    ("%train", "which script?"),
    ("%%train --name x\n", "the cell body is empty"),
    ("%%train --name x\n   \n", "the cell is empty"),
    ("%train nope.py", "no such script: nope.py"),
    ("%train --data imagenet train.py", "unknown dataset 'imagenet'"),
    ("%train --gpus 1 train.py", "1 GPU asked; this server has none"),
    ("%train --nodes 2 train.py", "--nodes must be 1"),
    ("%train --env NOEQUALS train.py", "--env takes KEY=VALUE"),
    ("%train --name Bad_Name train.py", "invalid job name 'Bad_Name'"),
    ("%train --memory lots train.py", "memory must be a Kubernetes quantity"),
    ("%jobs frobnicate", "unknown %jobs action 'frobnicate'"),
    ("%jobs logs", "%jobs logs needs a job name"),
    ("%jobs cancel ghost", "no job named 'ghost'"),
    ("%jobs wait ghost --timeout 0", "--timeout must be more than 0"),
    ("%jobs logs ghost --tail -3", "--tail must be 0 or more"),
    ("%jobs gc ghost", "%jobs gc takes no job name"),
    ("%jobs list extra", "%jobs list takes nothing more, got 'extra'"),
    # NUL bytes and lone surrogates: one message, not a ValueError from posix_spawn or encode
    ("%train --workdir \x00 train.py", "the working directory '\\x00' contains a NUL character"),
    ("%train --name n1 train.py a\x00b", "args[0] 'a\\x00b' contains a NUL character"),
    ("%%train --name n2 -- a\x00b\nprint(1)\n", "args[0] 'a\\x00b' contains a NUL character"),
    ("%%train --name n3\nprint('\udcff')\n", "the code contains \\udcff (line 1), a lone surrogate"),
    # kubelab's own variables, all of them
    ("%train --env KUBELAB_DATASETS=[] train.py", "'KUBELAB_DATASETS' is set by kubelab in every job"),
    ("%train --env KUBELAB_GROUPS=other train.py", "every KUBELAB_* variable is kubelab's"),
    ("%train --env KUBELAB_CONFIG=/dev/null train.py", "'KUBELAB_CONFIG' is set by kubelab"),
    ("%train --env KUBELAB_USER=bob train.py", "'KUBELAB_USER' is set by kubelab"),
    # a value that starts with '-' is the option's value, not "expected one argument"
    ("%train --memory -1Gi train.py", "memory must be more than zero, got '-1Gi'"),
    ("%train --name -abc train.py", "invalid job name '-abc'"),
    ("%train --name x 'a", "cannot split the line: no closing quotation"),
    # what the user typed is echoed shortened: 57 characters and "..."
    ("%train --name " + "a" * 200 + " train.py", "invalid job name '" + "a" * 56 + "...:"),
    ("%train --env " + "K-" * 50 + "=1 train.py", "invalid environment variable name '" + "K-" * 28 + "..."),
    ("%train --data " + "d" * 100 + " train.py", "unknown dataset '" + "d" * 56 + "...;"),
    ("%jobs cancel " + "g" * 100, "no job named '" + "g" * 56 + "...\n"),
])
def test_bad_input_is_one_short_message(ip, capsys, line, words) -> None:
    ok, out = run(ip, capsys, line)
    assert not ok
    assert words in out
    assert len(out.strip().splitlines()) <= 2, out


def test_huge_env_values_and_args_are_refused_naming_the_biggest(local: LocalBackend) -> None:
    """Over 128 KiB of --env values and arguments: one message naming the biggest, not the OS's
    "Argument list too long". (Called on the magic itself: IPython's $-expansion of a 200,000
    character line in run_cell takes minutes.)"""
    magics = KubelabMagics(InteractiveShell.instance(), JobsController(local))
    with pytest.raises(KubelabCellError, match=r"the biggest is --env BIG \(200,004 bytes\)"):
        magics.train("--env A=1 --env BIG=" + "x" * 200_000 + " train.py")
    with pytest.raises(KubelabCellError, match=r"add up to 139,128 bytes, over the 128 KiB"):
        magics.train("train.py " + " ".join(["y" * 1023] * 136))
    assert local.list_jobs() == []


def test_quotes_group_words_and_are_removed(ip, capsys, workdir: Path) -> None:
    """The line is split like a shell's: quotes group a value with spaces and go (IPython's own
    splitting kept them: the script got '"hello world"', --env 'A=x y' was refused)."""
    (workdir / "args.py").write_text("import os, sys\nprint('argv', sys.argv[1:], os.environ['MSG'])\n")
    (workdir / "my script.py").write_text("print('spaced')\n")
    ok, out = run(ip, capsys, "%train --name 'q1' --env 'MSG=x y' args.py --msg \"hello world\" 'b c' d")
    assert ok and "argv ['--msg', 'hello world', 'b c', 'd'] x y" in out, out
    ok, out = run(ip, capsys, "%train --name q2 'my script.py'")
    assert ok and "spaced" in out, out
    ok, out = run(ip, capsys, "%%train --name q3 --env \"MSG=it's\" -- 'a b' \"\"\nimport os, sys\n"
                              "print('argv', sys.argv[1:], os.environ['MSG'])\n")
    assert ok and "argv ['a b', ''] it's" in out, out
    ok, out = run(ip, capsys, "%jobs logs q3 --tail 99999999999999999999")
    assert ok and "argv ['a b', ''] it's" in out, out


def test_no_follow_returns_the_job_and_jobs_manages_it(ip, capsys, workdir: Path) -> None:
    (workdir / "slow.py").write_text("import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    job = ip.run_line_magic("train", "--no-follow --name slow slow.py")
    out = capsys.readouterr().out
    assert isinstance(job, kubelab.Job) and "submitted slow" in out
    assert "%jobs logs slow --follow" in out
    deadline = time.monotonic() + 10
    while "up" not in list(job.logs()) and time.monotonic() < deadline:
        time.sleep(0.02)
    ok, out = run(ip, capsys, "%jobs logs slow")
    assert ok and out.strip() == "up"
    ok, out = run(ip, capsys, "%jobs cancel slow")
    assert ok and "slow: Cancelled" in out
    ok, out = run(ip, capsys, "%jobs wait slow")
    assert not ok and "job slow Cancelled" in out
    ok, out = run(ip, capsys, "%jobs delete slow")
    assert ok and "deleted slow; its outputs stay in" in out
    ok, out = run(ip, capsys, "%jobs")
    assert "no jobs yet" in out
    # its snapshot is no job's any more, but new: a submit may be using it, so it stays
    ok, out = run(ip, capsys, "%jobs gc")
    assert ok and out.startswith("[kubelab] snapshot store ") and "nothing to free" in out
    assert "1 of them unused but newer than 15 min" in out


def test_replace_needs_a_name_and_reruns(ip, capsys) -> None:
    ok, out = run(ip, capsys, "%train --replace train.py")
    assert not ok and "--replace needs --name" in out
    assert run(ip, capsys, "%train --name r train.py --epochs 1")[0]
    ok, out = run(ip, capsys, "%train --name r train.py --epochs 1")
    assert not ok and "--replace" in out
    ok, out = run(ip, capsys, "%train --name r --replace train.py --epochs 2")
    assert ok and "epoch 1 loss" in out


def test_jobs_logs_tail_and_metrics(ip, capsys) -> None:
    run(ip, capsys, "%train --name m train.py --epochs 4")
    ok, out = run(ip, capsys, "%jobs logs m --tail 2")
    assert out.splitlines()[0] == "epoch 3 loss " + out.splitlines()[0].split()[-1]
    assert out.splitlines()[1].startswith("saved ")
    points = ip.run_line_magic("jobs", "metrics m")
    assert [p["epoch"] for p in points] == [0, 1, 2, 3]


def test_jobs_table_html() -> None:
    table = JobsTable([])
    assert "no jobs yet" in repr(table)
    from kubelab.labextension.controller import Row

    row = Row("<x>", "Failed (exit code 1)", JobPhase.FAILED, "2×2", "cell", "1s ago", "3s", "/o")
    html = JobsTable([row])._repr_html_()
    assert "&lt;x&gt;" in html and "#c62828" in html


def test_parse_env() -> None:
    assert parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}


def test_widget_view_follows_in_the_background(local: LocalBackend, workdir: Path) -> None:
    job = kubelab.train("train.py", args=["--epochs", "5"], name="w")
    view = display.WidgetView(job)
    stop = threading.Event()
    thread = threading.Thread(target=display.follow, args=(job, view), kwargs={"stop": stop})
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    assert "w: Succeeded" in view.header.value
    assert "epoch 4 loss" in view.log.value
    assert "<svg" in view.plot.value and "loss = " in view.plot.value
    assert view.cancel_button.disabled


def test_widget_view_of_a_failure_and_cancel_button(local: LocalBackend, workdir: Path) -> None:
    job = kubelab.train(code="import time\nprint('x', flush=True)\ntime.sleep(60)\n", name="wc")
    view = display.WidgetView(job)
    thread = threading.Thread(target=display.follow, args=(job, view))
    thread.start()
    time.sleep(0.3)
    view._cancel()
    thread.join(30)
    assert "wc: Cancelled" in view.header.value
    assert "Cancelled" in view.note.value


def test_metrics_svg() -> None:
    assert display.metrics_svg([]) == ""
    svg = display.metrics_svg([{"step": i, "loss": 1 / (i + 1), "acc": i / 10, "tag": "a"}
                               for i in range(2000)])
    assert svg.count("<svg") == 2 and "loss = 0.0005" in svg and "step 0…1999" in svg
    one = display.metrics_svg([{"loss": 1.0}])
    assert "report" in one


def test_a_cell_error_renders_without_traceback() -> None:
    e = KubelabCellError("quota exceeded\n  detail")
    assert ANSI.sub("", "\n".join(e._render_traceback_())) == "kubelab: quota exceeded\n  detail"
