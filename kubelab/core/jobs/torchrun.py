"""What both backends add to a ``torchrun`` job (standard library only).

Two things torchrun does that a job makes up for, on either backend:

- It runs its workers with ``python -u``, which writes the text of a ``print()`` and its newline
  separately, so two ranks printing at once glue their lines together (``rank 0 step 3rank 1 step
  3``, then empty lines). The job's ``PYTHON_EXEC`` (the interpreter torchrun starts workers with)
  is a launcher (:func:`launcher_text`) that runs the script as ``python script`` would, but with
  stdout and stderr line-buffered (:data:`WORKER_BOOT`): a line reaches the log in one write (text
  without a newline waits for one, or for a flush).
- When a worker fails, torchrun ends the log with its own report (its traceback and a box, some
  40 lines), which pushes the worker's error out of the last lines a failure shows. After a failed
  torchrun (not a cancel) the job's shell appends a short summary: which rank failed first, how,
  and the end of that rank's traceback (:func:`torchrun_failure`).

Where the job runs, this module's own source is run with ``python -I -c`` (any image with a Python
runs it, kubelab installed or not): ``launcher PATH`` writes the launcher for the interpreter that
runs it, ``summary LOG [OFFSET]`` prints the summary of the log from byte *OFFSET* on (the run's
own lines; at most its last MiB). The local backend writes the launcher itself and runs
``summary``; a Kubernetes pod's shell does both (:mod:`kubelab.core.jobs.k8s_objects`). The source
is also a Kubernetes command argument, where a dollar sign before a parenthesis is a variable
reference and two dollar signs are one: neither is in it.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import signal
import sys
from collections.abc import Sequence

#: what torchrun's workers run (the launcher runs ``python -c`` this with the script and its
#: arguments): the script in ``__main__`` with the ``__file__``, ``sys.argv``, ``sys.path[0]`` and
#: tracebacks of ``python script``, and stdout and stderr line-buffered rather than torchrun's
#: unbuffered ``-u`` (a line in one write)
WORKER_BOOT = """\
import os as _os, sys as _sys
for _f in (_sys.stdout, _sys.stderr):
    _f.reconfigure(line_buffering=True, write_through=False)
_sys.argv.pop(0)
__file__ = _os.path.abspath(_sys.argv[0])
_sys.path[0] = _os.path.dirname(__file__)
with open(__file__, "rb") as _f:
    _code = compile(_f.read(), __file__, "exec")
def _excepthook(kind, value, tb, _show=_sys.excepthook):
    if tb is not None and tb.tb_frame.f_code.co_filename == "<string>":
        tb = tb.tb_next  # this launcher's frame: the traceback is the script's alone
        value = value.with_traceback(tb)  # what Python prints
    _show(kind, value, tb)
_sys.excepthook = _excepthook
del _os, _sys, _f, _excepthook
exec(_code)
"""
#: lines of the failing rank's traceback in the summary after a failed torchrun
SUMMARY_LINES = 12
#: the summary reads at most this much of the end of the log
SUMMARY_READ = 1 << 20


def launcher_text(python: str) -> str:
    """The ``PYTHON_EXEC`` script: torchrun runs ``PYTHON_EXEC -u script args``; this runs
    :data:`WORKER_BOOT` with *python* instead (``-u`` dropped)."""
    return (f'#!/bin/sh\n[ "$1" = -u ] && shift\n'
            f'exec {shlex.quote(python)} -c {shlex.quote(WORKER_BOOT)} "$@"\n')


def write_launcher(path: str, python: str) -> None:
    """Write :func:`launcher_text` for *python* to *path*, executable."""
    with open(path, "w") as f:
        f.write(launcher_text(python))
    os.chmod(path, 0o755)


def torchrun_failure(lines: Sequence[str], max_lines: int = SUMMARY_LINES) -> list[str]:
    """What to append to the log of a failed torchrun job: which rank failed first, how, and the
    end of its traceback (at most *max_lines* of it); nothing when the log has no torchrun report.

    torchrun's report (the traceback of its ``ChildFailedError`` and a box naming every failed
    rank, the first under "Root Cause") ends the log and is longer than the lines a failure
    shows. The failing rank's own traceback is above it: each line prefixed ``[rankN]: `` by
    PyTorch once the process group is up; before that (say an import error), unprefixed.
    """
    end = max((i for i, line in enumerate(lines) if "ChildFailedError" in line), default=-1)
    if end < 0:
        return []
    rank = code = None
    root = next((i for i in range(end, len(lines)) if lines[i].startswith("Root Cause")), None)
    for line in lines[root:] if root is not None else ():
        found = re.match(r"\s*(rank|exitcode)\s*:\s*(-?\d+)", line)
        if found and found.group(1) == "rank" and rank is None:
            rank = int(found.group(2))
        elif found and found.group(1) == "exitcode" and code is None:
            code = int(found.group(2))
    if rank is None or code is None:
        return []
    start = max((i for i in range(end) if lines[i] == "Traceback (most recent call last):"),
                default=end)
    # the workers' output: above torchrun's traceback, without torchrun's own log records
    record = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ")
    output = [line for line in lines[:start] if not record.match(line)]
    prefix = f"[rank{rank}]: "
    mine = [line for line in output if line.startswith(prefix)]
    heads = [i for i, line in enumerate(mine) if line == prefix + "Traceback (most recent call last):"]
    if heads:
        error = mine[heads[-1]:]
    else:  # failed before the process group was up: an unprefixed traceback, if any
        heads = [i for i, line in enumerate(output) if line == "Traceback (most recent call last):"]
        error = output[heads[-1]:] if heads else []
    if len(error) > max_lines:
        ellipsis = error[0].replace("Traceback (most recent call last):", "  ...")
        error = [error[0], ellipsis, *error[len(error) - max_lines + 2:]]
    if code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = f"exit code {code}"
    head = f"kubelab: torchrun: rank {rank} failed first ({how})"
    if not error:
        return [head + "; no traceback from it (torchrun's report is above)"]
    return [head + "; its error:", *error]


def log_summary(path: str, offset: int = 0) -> list[str]:
    """:func:`torchrun_failure` of the log at *path* from byte *offset* on (its last MiB)."""
    with open(path, "rb") as f:
        f.seek(max(offset, f.seek(0, os.SEEK_END) - SUMMARY_READ, 0))
        text = f.read().decode("utf-8", "replace")
    return torchrun_failure(text.splitlines())


@functools.cache
def helper_source() -> str:
    """This module's source: what a job runs with ``python -I -c`` (``launcher``, ``summary``)."""
    import inspect

    return inspect.getsource(sys.modules[__name__])


def main(argv: Sequence[str]) -> int:
    if len(argv) == 2 and argv[0] == "launcher":
        write_launcher(argv[1], sys.executable)
        return 0
    if len(argv) in (2, 3) and argv[0] == "summary":
        offset = int(argv[2]) if len(argv) == 3 and argv[2].strip() else 0
        for line in log_summary(argv[1], offset):
            print(line)
        return 0
    print("usage: torchrun.py launcher PATH | summary LOG [OFFSET]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
