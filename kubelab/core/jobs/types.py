"""The typed values the job API takes and gives back.

:class:`JobSpec` is what a user asks for (the magics and :func:`kubelab.train` build one);
:class:`JobStatus` and :class:`JobInfo` are what a backend reports. They are plain frozen
dataclasses so that both backends, the magics and the tests compare and print them the same way.
"""

from __future__ import annotations

import enum
import os
import re
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from kubelab.core.jobs.errors import InvalidJobSpec
from kubelab.core.text import shorten, type_name

__all__ = ["JobInfo", "JobPhase", "JobSpec", "JobStatus", "make_job_name", "check_job_name"]

#: Job names become Kubernetes object names, label values and directory names. 40 characters
#: leaves room for the suffixes Kubernetes adds to pod names of an indexed Job ("-3-x7k2p").
MAX_NAME = 40
_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: variables kubelab sets in every job; a user's ``--env`` may not replace them
RESERVED_ENV = frozenset({
    "KUBELAB_JOB_NAME", "KUBELAB_OUTPUT_DIR", "KUBELAB_METRICS_FILE", "CUDA_VISIBLE_DEVICES",
    "MASTER_ADDR", "MASTER_PORT", "NNODES", "NODE_RANK", "NPROC_PER_NODE", "WORLD_SIZE", "RANK",
    "LOCAL_RANK", "PYTHONUNBUFFERED",
})
#: every variable whose name starts so is kubelab's (KUBELAB_DATASETS, KUBELAB_USER, ...): a job
#: gets the notebook's, and a user's ``--env`` may not replace them
RESERVED_ENV_PREFIX = "KUBELAB_"
#: what the script's arguments and the ``--env`` values may add up to, in bytes (UTF-8): the
#: kernel refuses a command line plus environment much over 2 MiB ("Argument list too long") and
#: a single string over 128 KiB; a Kubernetes object is limited to about 1 MiB
MAX_ARGS_ENV_BYTES = 128 * 1024


def env_reserved(key: str) -> bool:
    """Whether *key* is a variable kubelab sets itself, which a job's env may not replace."""
    return key in RESERVED_ENV or key.startswith(RESERVED_ENV_PREFIX)


def _not_unicode(text: str) -> str | None:
    """The first character of *text* that UTF-8 cannot encode (a lone surrogate), shown as an
    escape (with its line, for several lines), or None when there is none."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        where = f" (line {text.count(chr(10), 0, e.start) + 1})" if "\n" in text else ""
        return repr(text[e.start])[1:-1] + where
    return None


def _is_os_path(path: str) -> bool:
    """Whether the OS can take *path* (no NUL; encodable, undecodable bytes' escapes included)."""
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        return False
    return "\x00" not in path


def _check_text(what: str, value: object) -> None:
    """Refuse *value* unless it is a string the OS and JSON take: no NUL, no lone surrogate."""
    if not isinstance(value, str):
        suggestion = f" (pass str({value!r}))" if isinstance(value, (int, float)) else ""
        raise InvalidJobSpec(f"{what} must be a string, got {type_name(value)} "
                             f"{shorten(value)}{suggestion}")
    if "\x00" in value:
        raise InvalidJobSpec(f"{what} {shorten(value)} contains a NUL character")
    bad = _not_unicode(value)
    if bad:
        raise InvalidJobSpec(f"{what} {shorten(value)} contains {bad}, a lone surrogate that is "
                             f"not valid text")


def _strings(label: str, value: object, hint: str) -> tuple[str, ...]:
    """*value* as a tuple of strings, or InvalidJobSpec naming what is wrong."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise InvalidJobSpec(f"{label} must be a list of strings, like {hint}; "
                             f"got {type_name(value)} {shorten(value)}")
    for i, item in enumerate(value):
        _check_text(f"{label}[{i}]", item)
    return tuple(value)


def check_job_name(name: str) -> str:
    """Return *name* if it is a valid job name, else raise :class:`InvalidJobSpec`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise InvalidJobSpec(
            f"invalid job name {shorten(name)}: use lowercase letters, digits and '-', starting with a "
            f"letter, at most {MAX_NAME} characters (like 'resnet-lr3')"
        )
    return name


def make_job_name(stem: str | None = None) -> str:
    """A fresh name: the *stem* (a script or function name) made name-safe, plus 5 random chars."""
    base = re.sub(r"[^a-z0-9]+", "-", (stem or "job").lower()).strip("-")
    if not base or not base[0].isalpha():
        base = "job-" + base if base else "job"
    base = base[: MAX_NAME - 6].rstrip("-")
    alphabet = string.ascii_lowercase + string.digits
    return f"{base}-{''.join(secrets.choice(alphabet) for _ in range(5))}"


class JobPhase(str, enum.Enum):
    """Where a job is in its life. ``str`` so it prints and serializes as its value."""

    PENDING = "Pending"  #: accepted, not running yet (scheduling, pulling the image, queued)
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def done(self) -> bool:
        return self in (JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.CANCELLED)

    def __str__(self) -> str:  # "Running", not "JobPhase.RUNNING"
        return self.value


@dataclass(frozen=True)
class JobSpec:
    """What to run and with what. Build one with :func:`kubelab.train` or ``%train``.

    Exactly one of *script* (a file in *workdir*) or *source* (Python code, e.g. a cell) is the
    entry point; *args* go to it as ``sys.argv[1:]``. *gpus* is per node: ``gpus=2, nodes=2`` is
    four GPUs and four ``torchrun`` workers.
    """

    script: str | None = None
    source: str | None = None
    args: Sequence[str] = ()
    name: str | None = None
    gpus: int = 0
    nodes: int = 1
    #: CPU cores per node, a Kubernetes quantity ("4", "500m"); None: the backend's default
    cpus: str | None = None
    #: memory per node, a Kubernetes quantity ("16Gi"); None: the backend's default
    memory: str | None = None
    #: None: the notebook's own image
    image: str | None = None
    #: dataset names from the admin config, mounted where the notebook has them
    data: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    #: the directory whose snapshot the job runs in
    workdir: str = "."
    #: re-run under *name* even if a job of that name exists: it is stopped and removed first
    #: (once the new one has passed validation and its snapshot is taken); its outputs stay
    replace: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", _strings("args", self.args, "['--epochs', '10']"))
        object.__setattr__(self, "data", _strings("data", self.data, "['imagenet']"))
        if not isinstance(self.env, Mapping):
            raise InvalidJobSpec(f"env must be a dict of names to strings, like {{'SEED': '1'}}; "
                                 f"got {type_name(self.env)} {shorten(self.env)}")
        object.__setattr__(self, "env", dict(self.env))
        if isinstance(self.workdir, os.PathLike):
            object.__setattr__(self, "workdir", os.fspath(self.workdir))
        self.check()

    def check(self) -> None:
        """Refuse a malformed spec (the admin config's limits are checked by the validator)."""
        if (self.script is None) == (self.source is None):
            raise InvalidJobSpec("give exactly one of a script file or code to run")
        if self.script is not None:
            if not isinstance(self.script, str) or not self.script.strip():
                raise InvalidJobSpec("the script path is empty")
            if "\x00" in self.script:
                raise InvalidJobSpec(f"the script path {shorten(self.script)} contains a NUL character")
        if self.source is not None and not isinstance(self.source, str):
            raise InvalidJobSpec("the code to run must be a string")
        if self.source is not None and not self.source.strip():
            raise InvalidJobSpec("the cell is empty: there is no code to run")
        if self.source is not None:
            bad = _not_unicode(self.source)
            if bad:
                raise InvalidJobSpec(f"the code contains {bad}, a lone surrogate that is not valid "
                                     f"text and cannot be saved as UTF-8: write it as an escape "
                                     f"inside a string, or remove it")
        if self.name is not None:
            check_job_name(self.name)
        for label, value, least in (("gpus", self.gpus, 0), ("nodes", self.nodes, 1)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidJobSpec(f"{label} must be a whole number, got {shorten(value)}")
            if value < least:
                raise InvalidJobSpec(f"{label} must be {least} or more, got {value}")
        from kubelab.core.quantity import QuantityError, parse_quantity

        for label, quantity in (("cpus", self.cpus), ("memory", self.memory)):
            if quantity is None:
                continue
            try:
                amount = parse_quantity(quantity)
            except QuantityError:
                raise InvalidJobSpec(
                    f"{label} must be a Kubernetes quantity like "
                    f"{'4 or 500m' if label == 'cpus' else '16Gi or 512Mi'}, got {shorten(quantity)}"
                ) from None
            if amount <= 0:
                raise InvalidJobSpec(f"{label} must be more than zero, got {shorten(quantity)}")
        if self.image is not None and (not isinstance(self.image, str) or not self.image
                                       or any(c.isspace() for c in self.image)):
            raise InvalidJobSpec(f"invalid image reference {shorten(self.image)}"
                                 + ("" if isinstance(self.image, str) else
                                    f" ({type_name(self.image)}; give a string)"))
        for d in self.data:
            if not isinstance(d, str) or not d:
                raise InvalidJobSpec(f"invalid dataset name {shorten(d)}")
        for key, env_value in self.env.items():
            if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
                raise InvalidJobSpec(
                    f"invalid environment variable name {shorten(key)} (letters, digits, '_')"
                )
            if env_reserved(key):
                raise InvalidJobSpec(
                    f"{shorten(key)} is set by kubelab in every job and cannot be changed "
                    f"(every {RESERVED_ENV_PREFIX}* variable is kubelab's)")
            _check_text(f"the value of {shorten(key)}", env_value)
        if not isinstance(self.workdir, str):
            raise InvalidJobSpec(f"workdir must be a folder path (a string), got "
                                 f"{type_name(self.workdir)} {shorten(self.workdir)}")
        if not self.workdir.strip():
            raise InvalidJobSpec("the working directory is empty (give a folder, like '.')")
        for label, path in (("the working directory", self.workdir), ("the script path", self.script)):
            if path is not None and not _is_os_path(path):
                raise InvalidJobSpec(f"{label} {shorten(path)} contains a NUL character or text "
                                     f"that is not a valid file name")
        if not isinstance(self.replace, bool):
            raise InvalidJobSpec(f"replace must be True or False, got {type_name(self.replace)} "
                                 f"{shorten(self.replace)}")
        sizes = [(f"argument {shorten(a)}", len(a.encode("utf-8", "surrogatepass"))) for a in self.args]
        sizes += [(f"--env {k}", len(k) + 1 + len(v.encode("utf-8", "surrogatepass")))
                  for k, v in self.env.items()]
        total = sum(size for _, size in sizes)
        if total > MAX_ARGS_ENV_BYTES:
            what, size = max(sizes, key=lambda item: item[1])
            raise InvalidJobSpec(
                f"the script's arguments and --env values add up to {total:,} bytes, over the "
                f"{MAX_ARGS_ENV_BYTES // 1024} KiB a job may be given; the biggest is {what} "
                f"({size:,} bytes): put large values in a file in the working directory")

    @property
    def entry_name(self) -> str:
        """A human label for the entry point: the script's file name, or "cell"."""
        return PurePosixPath(self.script).name if self.script else "cell"

    @property
    def total_gpus(self) -> int:
        return self.gpus * self.nodes


@dataclass(frozen=True)
class JobStatus:
    """A job's state as the backend last saw it."""

    phase: JobPhase
    #: the main process's exit code once it ended (the first failing worker's, for several)
    exit_code: int | None = None
    #: why, in words, when there is something to say ("Insufficient nvidia.com/gpu", "OOMKilled")
    message: str = ""
    created: datetime | None = None
    started: datetime | None = None
    finished: datetime | None = None

    @property
    def done(self) -> bool:
        return self.phase.done

    @property
    def ok(self) -> bool:
        return self.phase is JobPhase.SUCCEEDED

    def describe(self) -> str:
        text = str(self.phase)
        if self.phase is JobPhase.FAILED and self.exit_code is not None:
            text += f" (exit code {self.exit_code})"
        if self.message:
            text += f": {self.message}"
        return text


@dataclass(frozen=True)
class JobInfo:
    """One job as a backend knows it: what was asked, where its files are, and its status."""

    name: str
    backend: str
    status: JobStatus
    #: the entry point, "train.py" or "cell"
    entry: str = ""
    args: Sequence[str] = ()
    gpus: int = 0
    nodes: int = 1
    image: str | None = None
    data: Sequence[str] = ()
    #: where the job's outputs go (``$KUBELAB_OUTPUT_DIR`` inside the job), as the notebook sees it
    output_dir: str | None = None
    snapshot: str | None = None
    #: backend details worth showing (namespace, Kubernetes kind, process id, ...)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish (or to now, while running)."""
        s = self.status
        if s.started is None:
            return None
        end = s.finished or datetime.now(tz=s.started.tzinfo)
        return max(0.0, (end - s.started).total_seconds())
