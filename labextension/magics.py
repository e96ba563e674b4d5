"""``%train``, ``%%train`` and ``%jobs``: training jobs from notebook cells.

A thin layer: :mod:`IPython.core.magic_arguments` parses the line, :class:`JobsController` does
the work, :mod:`.display` shows it. Every expected failure (bad arguments, an unknown dataset,
GPUs over the quota, a failed job) is one short message in the cell, never a traceback: parse
errors are IPython ``UsageError``s, the rest :class:`KubelabCellError`, which renders as its
message alone (IPython's ``_render_traceback_`` hook) and still marks the cell as failed, so "Run
all" stops there.
"""

from __future__ import annotations

import argparse
import html
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from kubelab.core.jobs.api import Job
from kubelab.core.jobs.errors import JobError
from kubelab.core.text import shorten
from kubelab.labextension import display as _display
from kubelab.labextension.controller import JobsController, Row, failure_text

__all__ = ["KubelabMagics", "KubelabCellError", "HelpRequested", "load_ipython_extension",
           "unload_ipython_extension", "parse_train", "parse_jobs"]

#: lines printed by ``%jobs logs`` without --tail before it cuts (the whole log is on disk)
MAX_PRINTED = 10_000
JOBS_ACTIONS = ("list", "logs", "cancel", "wait", "delete", "metrics", "gc")
#: the %jobs actions that take no job name
NAMELESS = ("list", "gc")


class KubelabCellError(Exception):
    """An expected failure, shown in the cell as its message only (no traceback)."""

    def _render_traceback_(self) -> list[str]:
        red, reset = "\x1b[31m", "\x1b[0m"
        lines = str(self).splitlines() or [""]
        return [f"{red}kubelab: {lines[0]}{reset}", *lines[1:]]


class HelpRequested(UsageError):
    """``-h``/``--help`` among a magic's options: the magic prints its help (the docstring, as
    ``%train?`` shows it) instead of running. A UsageError, so that a caller of the parsers that
    does not handle it still gets the parsers' one kind of refusal."""

    def __init__(self, magic: Any) -> None:
        super().__init__(f"see {magic.__name__}? for the options")
        self.text = magic.__doc__ or ""


def split_line(line: str) -> list[str]:
    """The words of a magic's line, split as a POSIX shell does: quotes group words and are
    removed (``--msg "hello world"`` is two words, the second ``hello world``), a backslash
    escapes the next character. (IPython's own ``parse_argstring`` splits with ``posix=False``,
    which keeps the quotes in the words.) An unclosed quote is a UsageError."""
    try:
        return shlex.split(line, comments=False, posix=True)
    except ValueError as e:  # "No closing quotation", "No escaped character"
        raise UsageError(f"cannot split the line: {str(e).lower()} (close every quote: a value with spaces "
                         f"goes in quotes, like --msg 'hello world')") from None


def _dash_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """*argv* with ``--memory -1Gi`` written ``--memory=-1Gi``: a value that starts with '-'
    after an option that takes one is that option's value (argparse takes it for an option and
    says "expected one argument"), unless it is an option itself. Only the options before the
    script (or ``--``) are looked at in ``%train``: what follows is the script's own."""
    remainder = any(action.nargs == argparse.REMAINDER for action in parser._actions)
    takes_value = {opt: action for action in parser._actions for opt in action.option_strings
                   if action.nargs is None and action.const is None}
    known = [opt for action in parser._actions for opt in action.option_strings]

    def is_option(word: str) -> bool:
        name = word.split("=", 1)[0]
        return name in known or (name.startswith("--") and any(o.startswith(name) for o in known))

    def value_option(word: str) -> str | None:
        if word in takes_value:
            return word
        if word.startswith("--"):
            matches = {takes_value[o].dest for o in takes_value if o.startswith(word)}
            matches_all = [o for o in known if o.startswith(word)]
            if len(matches) == 1 and all(o in takes_value for o in matches_all):
                return word
        return None

    out: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--" or (remainder and (not word.startswith("-") or word == "-")):
            out.extend(argv[i:])
            break
        if value_option(word) and i + 1 < len(argv):
            value = argv[i + 1]
            if value.startswith("-") and value != "--" and not is_option(value):
                out.append(f"{word}={value}")
            else:
                out.extend([word, value])
            i += 2
            continue
        out.append(word)
        i += 1
    return out


def _parse(magic: Any, line: str) -> argparse.Namespace:
    """The line split like a shell and parsed by the magic's argparse parser, with every
    failure turned into a short UsageError."""
    try:
        args = magic.parser.parse_args(_dash_values(magic.parser, split_line(line)))
        if getattr(args, "help", False):
            raise HelpRequested(magic)
        return args
    except UsageError:
        raise
    except SystemExit:  # argparse's own exit (help, version): never let it end the kernel
        raise UsageError(f"see {magic.__name__}? for the options") from None
    except ValueError as e:  # not expected from argparse; one line all the same
        raise UsageError(f"cannot parse the line: {e}") from None


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except JobError as e:
        raise KubelabCellError(str(e)) from None


def parse_train(line: str, cell: str | None = None) -> dict[str, Any]:
    """The keyword arguments of :meth:`JobsController.submit` for a ``%train`` line (or cell),
    plus ``follow``; raises UsageError for anything malformed."""
    args = _parse(KubelabMagics.train, line)
    command = list(args.command or [])
    if command and command[0] == "--":
        command.pop(0)
    if cell is not None:
        if not cell.strip():
            raise UsageError("the cell is empty: put the training code below %%train")
        script, script_args, code = None, command, cell
    else:
        if not command:
            raise UsageError("which script? %train [options] script.py [args], or %%train "
                             "[options] with the code in the cell (see %train?)")
        script, script_args, code = command[0], command[1:], None
    for label, value, least in (("--gpus", args.gpus, 0), ("--nodes", args.nodes, 1)):
        if value < least:
            raise UsageError(f"{label} must be {least} or more, got {value}")
    return dict(code=code, script=script, args=script_args, name=args.name, gpus=args.gpus,
                nodes=args.nodes, cpus=args.cpus, memory=args.memory, image=args.image,
                data=args.data or [], env=args.env or [], workdir=args.workdir,
                replace=args.replace, follow=not args.no_follow)


def parse_jobs(line: str) -> argparse.Namespace:
    args = _parse(KubelabMagics.jobs, line)
    if args.action not in JOBS_ACTIONS:
        raise UsageError(f"unknown %jobs action {shorten(args.action)}; use one of "
                         f"{', '.join(JOBS_ACTIONS)} (see %jobs?)")
    if args.action not in NAMELESS and not args.name:
        raise UsageError(f"%jobs {args.action} needs a job name (see %jobs for yours)")
    if args.action == "gc" and args.name:
        raise UsageError("%jobs gc takes no job name: it frees the snapshots of every job that "
                         "is gone (see %jobs?)")
    if args.action == "list" and args.name:
        raise UsageError(f"%jobs list takes nothing more, got {shorten(args.name)}: it lists "
                         f"all your jobs (see %jobs?)")
    if args.tail is not None and args.tail < 0:
        raise UsageError(f"--tail must be 0 or more, got {args.tail}")
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError(f"--timeout must be more than 0 seconds, got {args.timeout}")
    return args


class JobsTable:
    """The ``%jobs`` table: HTML in a notebook, aligned text elsewhere."""

    def __init__(self, rows: Sequence[Row]) -> None:
        self.rows = list(rows)

    _HEAD = ("NAME", "STATUS", "GPUS", "RUN", "CREATED", "DURATION", "OUTPUTS")

    def _cells(self, r: Row) -> tuple[str, ...]:
        return (r.name, r.status, r.gpus, r.entry, r.created, r.duration, r.output_dir)

    def __repr__(self) -> str:
        if not self.rows:
            return "no jobs yet: submit one with %%train or %train script.py"
        table = [self._HEAD, *(self._cells(r) for r in self.rows)]
        widths = [max(len(row[i]) for row in table) for i in range(len(self._HEAD))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table)

    def _repr_html_(self) -> str:
        if not self.rows:
            return f"<i>{html.escape(repr(self))}</i>"
        color = _display._COLORS
        head = "".join(f"<th style='text-align:left'>{h}</th>" for h in self._HEAD)
        body = ""
        for r in self.rows:
            cells = list(map(html.escape, self._cells(r)))
            cells[1] = f"<span style='color:{color.get(r.phase, '#333')}'>{cells[1]}</span>"
            cells[-1] = f"<code>{cells[-1]}</code>"
            body += "<tr>" + "".join(f"<td style='text-align:left'>{c}</td>" for c in cells) + "</tr>"
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@magics_class
class KubelabMagics(Magics):
    """kubelab's magics; ``%load_ext kubelab`` registers them."""

    def __init__(self, shell: Any = None, controller: JobsController | None = None) -> None:
        super().__init__(shell)
        self.controller = controller or JobsController()
        #: the live views started from this kernel (their threads follow jobs in the background)
        self.views: list[Any] = []

    # -- %train / %%train -----------------------------------------------------------------------

    @magic_arguments()
    @argument("-h", "--help", action="store_true", help="show this help (like %%train?)")
    @argument("--name", "-n", help="the job's name (lowercase, digits, '-'); default: the script "
              "or 'cell' plus a random suffix")
    @argument("--gpus", "-g", type=int, default=0, help="GPUs per node (default 0); more than "
              "one runs torchrun with one worker per GPU")
    @argument("--nodes", type=int, default=1, help="nodes (pods) to spread the job over, for "
              "distributed PyTorch with torchrun (Kubernetes only; default 1)")
    @argument("--cpus", help="CPU cores per node, like 4 or 500m")
    @argument("--memory", help="memory per node, like 16Gi")
    @argument("--image", help="container image (default: this notebook's own)")
    @argument("--data", "-d", action="append", metavar="NAME", help="mount this dataset (from "
              "the admin config) where the notebook has it; repeat for several")
    @argument("--env", "-e", action="append", metavar="K=V", help="set an environment variable "
              "in the job; repeat for several")
    @argument("--workdir", "-C", default=".", help="the folder whose snapshot the job runs in "
              "(default: the notebook's current folder)")
    @argument("--replace", action="store_true", help="re-run under --name even if a job of "
              "that name exists: it is stopped and removed first (its outputs stay)")
    @argument("--no-follow", action="store_true", help="submit and return at once; follow "
              "later with %%jobs logs NAME --follow")
    @argument("command", nargs=argparse.REMAINDER, help="%%%%train: arguments for the cell's code "
              "(sys.argv[1:]); %%train: the script and its arguments")
    @line_cell_magic
    def train(self, line: str, cell: str | None = None) -> Job | None:
        """Run training code as a job: on GPUs, on several nodes, against the datasets.

        %%train [options] [-- args]   runs the code of the cell
        %train [options] script.py [args]   runs a script of the working directory

        The job runs on a snapshot of the working directory (files ignored by .gitignore or
        .kubelabignore are left out), with this notebook's image and dataset mounts unless told
        otherwise. Its log, status and metrics (kubelab.report(epoch=3, loss=0.21) in the
        training code) show live below the cell; the cell returns at once, so the kernel stays
        free: `%jobs wait NAME` blocks until the job ends. Outputs go to $KUBELAB_OUTPUT_DIR,
        whose path is shown.

        Examples::

            %%train --gpus 2 --data imagenet --name resnet-lr3
            import torch ...

            %train --gpus 8 --nodes 2 train.py --epochs 10 --lr 3e-4
            %train --no-follow --env WANDB_MODE=offline train.py
            %%train --name resnet-lr3 --replace     # edit the cell, run it again

        The line is split like a shell's: quotes group a value with spaces and are removed::

            %train --env 'MSG=hello world' train.py --title "run 3"
        """
        try:
            options = parse_train(line, cell)
        except HelpRequested as help:
            print(help.text)
            return None
        follow = options.pop("follow")
        job: Job = _run(self.controller.submit, **options)
        if not follow:
            info = job._info
            where = f"; outputs in {info.output_dir}" if info and info.output_dir else ""
            print(f"[kubelab] submitted {job.name} ({info.status.phase if info else '?'}){where}. "
                  f"Follow it with: %jobs logs {job.name} --follow")
            return job
        self._follow(job)
        return None

    def _follow(self, job: Job) -> None:
        if _display.want_widgets():
            self.views.append(_display.start_widget(job))
            return
        try:
            state = _run(_display.follow, job, _display.TextView(sys.stdout))
        except KeyboardInterrupt:
            info = _run(lambda: job.info)
            print(f"\n[kubelab] detached from {job.name} (still {info.status.phase}): "
                  f"`%jobs logs {job.name} --follow` to reattach, `%jobs cancel {job.name}` to stop")
            return
        status = state.info.status
        if status.done and not status.ok:
            code = f"exit code {status.exit_code}" if status.exit_code is not None else "no exit code"
            raise KubelabCellError(f"job {job.name} {status.phase} ({code})"
                                   + (f": {status.message}" if status.message else ""))

    # -- %jobs ----------------------------------------------------------------------------------

    @magic_arguments()
    @argument("-h", "--help", action="store_true", help="show this help (like %%jobs?)")
    @argument("action", nargs="?", default="list", help="list (default), logs, cancel, wait, "
              "delete, metrics or gc")
    @argument("name", nargs="?", help="the job's name")
    @argument("--follow", "-f", action="store_true", help="logs: keep following until the job ends")
    @argument("--tail", type=int, help="logs: only the last N lines")
    @argument("--timeout", type=float, help="wait: give up after this many seconds")
    @line_magic
    def jobs(self, line: str) -> Any:
        """Your training jobs.

        %jobs                     the table of your jobs, newest first
        %jobs logs NAME [--follow] [--tail N]   the job's log (follow: live, until it ends)
        %jobs wait NAME [--timeout S]           block until it ends; a failure shows its exit
                                                code and last log lines
        %jobs cancel NAME         stop it (outputs and logs stay)
        %jobs delete NAME         stop it and remove it (its output directory stays)
        %jobs metrics NAME        what it reported with kubelab.report(...)
        %jobs gc                  free the workspace snapshots of jobs that are gone (the
                                  snapshot store only grows until then); prints what it freed
        """
        try:
            args = parse_jobs(line)
        except HelpRequested as help:
            print(help.text)
            return None
        c = self.controller
        if args.action == "list":
            from IPython.display import display

            display(JobsTable(_run(c.rows)))
            return None
        if args.action == "logs":
            job = _run(c.job, args.name)
            if args.follow:
                self._follow(job)
                return None
            lines = _run(c.tail, job.name, args.tail if args.tail is not None else MAX_PRINTED + 1)
            if args.tail is None and len(lines) > MAX_PRINTED:
                lines = lines[-MAX_PRINTED:]
                print(f"[kubelab] … earlier lines cut; the whole log: "
                      f"{(job._info.extra.get('log') if job._info else None) or '%jobs logs ' + job.name + ' --tail N'}")
            if lines:
                sys.stdout.write("\n".join(lines) + "\n")
            else:
                print(f"[kubelab] {job.name} has logged nothing yet")
            return None
        if args.action == "cancel":
            info = _run(c.cancel, args.name)
            print(f"[kubelab] {info.name}: {info.status.describe()}")
            return None
        if args.action == "delete":
            info = _run(c.delete, args.name)
            kept = f"; its outputs stay in {info.output_dir}" if info.output_dir else ""
            print(f"[kubelab] deleted {info.name}{kept}")
            return None
        if args.action == "wait":
            try:
                info, last = _run(c.wait, args.name, args.timeout)
            except KeyboardInterrupt:
                print(f"[kubelab] stopped waiting; {args.name} goes on")
                return None
            if not info.status.ok:
                raise KubelabCellError(failure_text(info, last))
            print(f"[kubelab] {info.name}: {info.status.describe()}"
                  + (f"; outputs in {info.output_dir}" if info.output_dir else ""))
            return None
        if args.action == "gc":
            print(f"[kubelab] {_run(c.gc)}")
            return None
        if args.action == "metrics":
            points = _run(c.metrics, args.name)
            if not points:
                print(f"[kubelab] {args.name} has reported no metrics "
                      f"(call kubelab.report(loss=...) in the training code)")
                return None
            return points
        raise AssertionError(args.action)  # pragma: no cover - parse_jobs checked it


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(KubelabMagics(ipython))


def unload_ipython_extension(ipython: Any) -> None:  # IPython cannot unregister magics cleanly
    pass
