"""The local twin of kubelab's profile spawner: ``c.JupyterHub.spawner_class = "kubelab-local"``.

Each user's server is a local ``jupyterhub-singleuser`` (jupyter-server with JupyterLab) process,
started by JupyterHub's :class:`~jupyterhub.spawner.SimpleLocalProcessSpawner` machinery, in a
per-user working directory under the state directory. What a user may choose -- the chooser page,
the per-group filtering, the server-side validation of ``user_options`` -- is
:mod:`kubelab.spawner.profiles`, the same code the Kubernetes spawner uses; this module only
supplies what *this machine* can give (:class:`~kubelab.spawner.profiles.Availability`) and turns a
validated :class:`~kubelab.spawner.profiles.Choice` into a process:

GPUs
    Detected with ``nvidia-smi -L`` (or declared with ``gpu_devices``). A server gets the GPUs it
    chose through ``CUDA_VISIBLE_DEVICES`` (UUIDs when known, so the numbering cannot differ from
    CUDA's); a CPU server gets ``CUDA_VISIBLE_DEVICES=""``. One process-wide allocator hands each
    GPU to at most one running server, and forgets it when the server stops. With no GPU the GPU
    profiles are shown unavailable, with the reason, and refused (HTTP 400).
Datasets
    A dataset with a ``host_path`` source is linked (a symlink) into the working directory at its
    mount path without the leading ``/`` (``/data/example`` → ``~/data/example``), and listed in
    ``$KUBELAB_DATASETS`` (the Kubernetes spawner's JSON list, plus each link and its target).
    Read-only is *reported, not invented*: kubelab checks whether the kernel
    enforces it (a read-only mount) or file permissions do, and the chooser says which -- or that
    it is not enforced, which is the case for any directory the hub's own user may write, since all
    local servers run as that user. PVC/NFS/CSI datasets need a cluster and are shown unavailable.
CPU and memory
    Memory limit: ``RLIMIT_AS`` (per process: the server and each kernel separately) for CPU
    profiles; not for GPU profiles, because CUDA reserves far more address space than it uses.
    With ``cgroup_parent`` (a delegated cgroup v2 directory) each server gets its own cgroup with
    ``memory.max`` and ``cpu.max`` covering the whole server with its kernels. What is not
    enforced is said in the chooser. The rules are :mod:`kubelab.core.limits`, which local jobs
    follow too.

docs/local.md explains the choices; every setting below is a traitlet whose ``help`` is its doc.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jupyterhub.spawner import SimpleLocalProcessSpawner
from tornado import web
from traitlets import Bool, Dict, Float, List, Unicode, default, validate

from kubelab.core.config import ConfigError, KubelabConfig
from kubelab.core.limits import LimitPlan, cgroup_usable, make_cgroup, plan_limits, remove_cgroup
from kubelab.core.notebook_env import NotebookDataset, NotebookEnv
from kubelab.core.paths import data_dir
from kubelab.core.quota import GpuQuota
from kubelab.spawner.base import KubelabSpawnerMixin, default_config_path
from kubelab.spawner.local_datasets import (
    LinkedDataset,
    ReadOnlyCheck,
    link_datasets,
    read_only_enforcement,
)
from kubelab.spawner.local_gpus import (
    GpuAllocator,
    GpuInventory,
    LocalGpu,
    NoGpuFree,
    detect_gpus,
    parse_nvidia_smi,
)
from kubelab.spawner.profiles import (
    Availability,
    Choice,
    GpuAvailability,
    InvalidOptions,
    UserInfo,
    allowed_datasets,
    allowed_profiles,
    options_from_form,
    render_form,
    validate_user_options,
)

__all__ = [
    "GpuAllocator", "LocalGpu", "LocalProfileSpawner", "NoGpuFree", "ReadOnlyCheck", "cgroup_usable", "detect_gpus",
    "parse_nvidia_smi", "read_only_enforcement",
]

SOURCE = "this machine"
#: a Jupyter config directory whose labconfig/page_config.json disables JupyterLab's
#: "announcements" plugin (the news prompt, news and update checks from the internet)
LAB_CONFIG_DIR = Path(__file__).parent / "jupyter_config"


# --------------------------------------------------------------------------------------------------
# The spawner


def safe_dir_name(name: str) -> str:
    """A JupyterHub user name as one directory name (no '/', no leading '.')."""
    from jupyterhub.slugs import safe_slug

    return safe_slug(name)


class LocalProfileSpawner(KubelabSpawnerMixin, SimpleLocalProcessSpawner):
    """kubelab's profile chooser, with each server a local process (see the module docstring)."""

    kubelab_config = Unicode(
        config=True,
        help="""The kubelab admin config (kubelab.yaml) the chooser is built from.

        Default: $KUBELAB_CONFIG, else DATA_DIR/kubelab.yaml when it exists, else kubelab's
        hub_config/local.yaml. The file is re-read when it changes; an edit that does not
        validate is logged and the last good version stays in use. `kubelab config check FILE`
        checks it.
        """,
    )

    @default("kubelab_config")
    def _kubelab_config_default(self) -> str:
        return default_config_path(local=True)

    state_dir = Unicode(
        config=True,
        help="""kubelab's state directory: users' working directories (users/NAME), server logs
        (logs/servers). Default: $KUBELAB_DATA_DIR, else ~/.kubelab. `kubelab up --data-dir` sets it.
        """,
    )

    @default("state_dir")
    def _state_dir_default(self) -> str:
        return str(data_dir())

    home_dir_template = Unicode(
        "{state_dir}/users/{username}",
        config=True,
        help="""Each user's working directory: the server's $HOME and root directory. All of a
        user's servers share it, as on Kubernetes they share the home volume.
        {state_dir} is `state_dir`; {username} is the user name made safe for a directory name.
        """,
    )

    @default("home_dir")
    def _default_home_dir(self) -> str:
        return self.home_dir_template.format(
            state_dir=self.state_dir, username=safe_dir_name(self.user.name)
        )

    server_log_dir = Unicode(
        config=True,
        help="""Where each server's output goes (NAME.log, or NAME--SERVER.log for a named
        server), appended across starts. Empty: the hub's own output. Default: STATE_DIR/logs/servers.
        """,
    )

    @default("server_log_dir")
    def _server_log_dir_default(self) -> str:
        return str(Path(self.state_dir) / "logs" / "servers")

    gpu_detect_command = List(
        Unicode(),
        default_value=["nvidia-smi", "-L"],
        config=True,
        help="""The command that lists this machine's GPUs, in `nvidia-smi -L` format
        ("GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-...)"). Empty: no detection (no GPUs unless
        `gpu_devices` declares them). Ignored when `gpu_devices` is set.
        """,
    )

    gpu_devices = List(
        Unicode(),
        default_value=None,
        allow_none=True,
        config=True,
        help="""Declare the GPUs instead of detecting them: CUDA device indexes or GPU UUIDs,
        e.g. ["0", "1"] to give kubelab only the first two GPUs of the machine. None (default):
        detect with `gpu_detect_command`.
        """,
    )

    gpu_models = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        config=True,
        help="""Which local GPUs count as which GPU type of the admin config: GPU type slug →
        regular expression searched in the model name `nvidia-smi -L` prints. Example:
        {"a100": "A100", "t4": "T4"}. A GPU type not listed here may use every GPU of the machine
        (the usual case: one workstation, one kind of GPU).
        """,
    )

    gpu_cache_seconds = Float(
        30.0,
        config=True,
        help="""How long a GPU detection is reused (for the chooser and for starts), in seconds.""",
    )

    enforce_memory_limit = Bool(
        True,
        config=True,
        help="""Apply a CPU profile's memory limit as RLIMIT_AS (address space) on the server and
        each kernel it starts (each process separately, not their sum). Never applied to GPU
        profiles: CUDA reserves far more address space than memory it uses and fails under such
        a limit. With `cgroup_parent` the cgroup's memory.max is used instead.
        """,
    )

    cgroup_parent = Unicode(
        "",
        config=True,
        help="""A cgroup v2 directory the hub may create child cgroups in, with the memory and cpu
        controllers in its cgroup.subtree_control, e.g. one created by root with
        `mkdir /sys/fs/cgroup/kubelab && echo '+memory +cpu' > /sys/fs/cgroup/kubelab/cgroup.subtree_control
        && chown -R HUBUSER /sys/fs/cgroup/kubelab`, or a systemd delegated unit's directory.
        Each server then runs in its own child cgroup with memory.max and cpu.max from its
        profile's limits, covering the server and all its kernels, and everything in it is ended
        when the server stops. Empty (default): no cgroups.
        """,
    )

    jupyterlab_news = Bool(
        False,
        config=True,
        help="""Let JupyterLab ask each user whether to fetch official Jupyter news (and then
        fetch it, and check for JupyterLab updates, from the internet). Off by default: the
        prompt is noise on a workstation, and a local server should not phone out unasked.
        Off disables JupyterLab's announcements plugin for kubelab's servers: a config
        directory of kubelab's (spawner/jupyter_config, only labconfig/page_config.json in it)
        goes first on the server's JUPYTER_CONFIG_PATH.
        """,
    )

    @default("cmd")
    def _cmd_default(self) -> list[str]:
        # The hub's own Python: `jupyterhub-singleuser` on $PATH may be another environment's (or
        # missing when kubelab runs from a virtualenv that is not activated).
        return [sys.executable, "-m", "jupyterhub.singleuser"]

    @default("options_form")
    def _options_form_default(self) -> Any:
        return lambda spawner: spawner.render_options_form()

    @default("options_from_form")
    def _options_from_form_default(self) -> Any:
        return options_from_form

    @validate("gpu_models")
    def _validate_gpu_models(self, proposal: Any) -> dict[str, str]:
        for slug, pattern in proposal.value.items():
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"gpu_models[{slug!r}]: {pattern!r} is not a regular expression: {e}") from None
        return dict(proposal.value)

    # traits of JupyterHub's spawner this class assigns (annotations for the type checker only)
    popen_kwargs: dict[str, Any]

    # one inventory and one allocator for the whole hub process
    allocator: GpuAllocator = GpuAllocator()
    _inventory: tuple[float, tuple[Any, ...], GpuInventory] | None = None

    # per-instance state (class-level defaults: JupyterHub may call clear_state early)
    choice: Choice | None = None
    gpu_devices_held: list[str] = []
    _events: list[dict[str, Any]] = []
    _datasets: list[LinkedDataset] = []
    _cgroup: Path | None = None
    _log_file: Any = None
    _plan: LimitPlan | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.choice = None
        self.gpu_devices_held = []
        self._events = []
        self._datasets = []

    # -- what the user is and may use --------------------------------------------------------

    @property
    def server_key(self) -> str:
        return f"{self.user.name}/{self.name}"

    def inventory(self) -> GpuInventory:
        """This machine's GPUs (cached for `gpu_cache_seconds`)."""
        if self.gpu_devices is not None:
            return GpuInventory([LocalGpu(index=d, uuid=d if d.startswith(("GPU-", "MIG-")) else "")
                                 for d in self.gpu_devices],
                                "" if self.gpu_devices else "no GPU is declared (gpu_devices is empty)")
        key = tuple(self.gpu_detect_command)
        cached = LocalProfileSpawner._inventory
        now = time.monotonic()
        if cached and cached[1] == key and now - cached[0] < self.gpu_cache_seconds:
            return cached[2]
        found = detect_gpus(list(self.gpu_detect_command))
        LocalProfileSpawner._inventory = (now, key, found)
        return found

    def gpus_of_type(self, gpu_type: str, inventory: GpuInventory | None = None) -> list[LocalGpu]:
        inventory = inventory or self.inventory()
        pattern = self.gpu_models.get(gpu_type)
        if pattern is None:
            return list(inventory.gpus)
        return [g for g in inventory.gpus if re.search(pattern, g.model)]

    def availability(self) -> Availability:
        """What this machine can give now, for the chooser and for validation."""
        config = self.kubelab
        user = self.user_info()
        inventory = self.inventory()
        gpus: dict[str, GpuAvailability] = {}
        for slug in config.gpu_types:
            mine = self.gpus_of_type(slug, inventory)
            # a restart of this very server may reuse what it holds
            free = [g for g in mine if self.allocator.holder(g.device) in (None, self.server_key)]
            note = inventory.note
            if inventory.gpus and not mine:
                note = f"none of this machine's GPUs is a {slug} (see gpu_models)"
            gpus[slug] = GpuAvailability(
                total=len(mine), free=len(free), largest_free=len(free), note=note
            )
        usage = None
        quota = GpuQuota.of(config, user.groups)
        if quota is not None:
            team_used, user_used = self.allocator.usage(team=quota.team, user=user.name)
            own = len(self.gpu_devices_held)  # a restart of this server frees its own GPUs first
            usage = quota.usage(team_used=max(team_used - own, 0), user_used=max(user_used - own, 0))
        unusable: dict[str, str] = {}
        for d in allowed_datasets(config, user):
            if d.source.host_path is None:
                unusable[d.name] = f"a {d.source.kind.replace('_', ' ')} volume needs a cluster"
            elif not Path(d.source.host_path.path).is_dir():
                unusable[d.name] = f"{d.source.host_path.path} is not a directory on this machine"
        return Availability(gpus=gpus, quota=usage, unusable_datasets=unusable, source=SOURCE)

    # -- the chooser and validation ----------------------------------------------------------

    def render_options_form(self) -> str:
        config = self.kubelab
        user = self.user_info()
        form = render_form(
            config, user, self.availability(), user_options=self.user_options or None,
            refuse_unavailable=True,
        )
        return form + self._local_notes_html(config, user)

    def _local_notes_html(self, config: KubelabConfig, user: UserInfo) -> str:
        """What this machine does and does not enforce, under the shared chooser."""
        e = html.escape
        items = []
        for p in allowed_profiles(config, user):
            plan = self.limit_plan(p.memory.limit, p.cpu.limit, gpu=p.gpu is not None, dry_run=True)
            if plan.notes:
                items.append(f"<li><b>{e(p.display_name)}</b>: {e('; '.join(plan.notes))}</li>")
        for d in allowed_datasets(config, user):
            if d.source.host_path is None or not d.read_only:
                continue
            path = Path(d.source.host_path.path)
            if path.is_dir():
                check = read_only_enforcement(path)
                text = ("read-only, enforced by " + check.how) if check.enforced else ("read-only " + check.how)
                items.append(f"<li>dataset <b>{e(d.name)}</b>: {e(text)}</li>")
        items.append(
            "<li>images: servers run in kubelab's own Python environment on this machine; "
            "the image choice is passed on as $KUBELAB_IMAGE for jobs</li>"
        )
        items.append("<li>/dev/shm: the machine's own, not sized per server</li>")
        return (
            '<div class="kubelab-local-notes" style="font-size:.9rem;color:#555;margin:.5rem 0">'
            "<p style=\"margin:0\">On this machine (kubelab up, no cluster):</p>"
            f"<ul style=\"margin:0;padding-left:1.2rem\">{''.join(items)}</ul></div>"
        )

    def check_user_options(self, user_options: dict[str, Any]) -> Choice:
        """Validate untrusted *user_options* (form or REST API); HTTP 400 with the reason."""
        try:
            choice = validate_user_options(
                self.kubelab, self.user_info(), user_options, self.availability(),
                refuse_unavailable=True,
            )
        except InvalidOptions as e:
            raise self.refuse(e) from None
        except ConfigError as e:
            raise self.broken_config(e) from None
        self.choice = choice
        return choice

    async def validate_options(self, user_options: Any) -> Choice:
        """JupyterHub's apply_user_options step (:class:`~kubelab.spawner.base.KubelabSpawnerMixin`)."""
        return self.check_user_options(user_options or {})

    # -- limits --------------------------------------------------------------------------------

    def limit_plan(
        self, memory_limit: str | None, cpu_limit: str | None, *, gpu: bool, dry_run: bool = False
    ) -> LimitPlan:
        """How a profile's limits apply to a server here: the rules jobs follow too
        (:func:`kubelab.core.limits.plan_limits`), with this spawner's cgroup and settings."""
        usable, why = cgroup_usable(self.cgroup_parent)
        return plan_limits(
            memory_limit, cpu_limit, gpu=gpu, scope="server",
            enforce_memory=self.enforce_memory_limit,
            cgroup=Path(self.cgroup_parent) if usable else None, no_cgroup_reason=why,
        )

    def _make_cgroup(self, plan: LimitPlan) -> Path | None:
        name = "kubelab-" + safe_dir_name(self.user.name) + (f"--{safe_dir_name(self.name)}" if self.name else "")
        return make_cgroup(plan, name)

    def _remove_cgroup(self) -> None:
        path, self._cgroup = self._cgroup, None
        if path is not None and not remove_cgroup(path):
            self.log.warning("Could not remove cgroup %s", path)

    def make_preexec_fn(self, name: str) -> Any:
        home = self.home_dir
        memory = self._plan.rlimit_as if self._plan else None
        procs = str(self._cgroup / "cgroup.procs") if self._cgroup else None

        def preexec() -> None:  # pragma: no cover - runs in the child between fork and exec
            if procs:
                with open(procs, "w") as f:
                    f.write(str(os.getpid()))
            if memory:
                resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            os.chdir(home)

        return preexec

    # -- starting and stopping -----------------------------------------------------------------

    def _event(self, message: str, progress: int | None = None) -> None:
        event: dict[str, Any] = {"message": message}
        if progress is not None:
            event["progress"] = progress
        self._events.append(event)
        self.log.info("%s: %s", self._log_name, message)

    async def progress(self) -> Any:
        sent = 0
        while True:
            while sent < len(self._events):
                yield self._events[sent]
                sent += 1
            if not self._spawn_pending and sent >= len(self._events):
                return
            await asyncio.sleep(0.2)

    def get_args(self) -> list[str]:
        args = super().get_args()
        if os.geteuid() == 0 and "--allow-root" not in args:
            # kubelab up run as root (a container, a CI machine): jupyter-server refuses root
            # unless told; the servers run as the hub's user either way.
            args.append("--allow-root")
        return args

    def notebook_env(self) -> NotebookEnv:
        """What this server is told about itself (docs/notebook-env.md)."""
        choice = self.choice
        user = self.user_info()
        return NotebookEnv(
            backend="local", user=user.name, groups=tuple(sorted(user.groups)),
            team=choice.team[0] if choice and choice.team else None,
            profile=choice.profile.slug if choice else None,
            image=choice.image if choice else None,
            gpu_type=choice.gpu_type if choice else None,
            gpus=choice.gpus if choice else 0,
            # no GPU unless chosen: a CPU server must not see (and grab) GPUs given to others
            cuda_devices=tuple(self.gpu_devices_held),
            # the Kubernetes spawner's entries, plus where each dataset is on this machine: the
            # link in the working dir (path) and the directory it points to (target)
            datasets=tuple(
                NotebookDataset.of(
                    d.mount.dataset, mount_path=d.mount_path, read_only=d.read_only,
                    sub_path=d.mount.sub_path, path=str(d.link), target=str(d.target),
                    read_only_enforced=bool(d.enforcement and d.enforcement.enforced),
                )
                for d in self._datasets
            ),
            home_mount=self.home_dir,
            config_path=self.kubelab_config,
            data_dir=self.state_dir,
        )

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        env.update(self.notebook_env().to_env())
        if not self.jupyterlab_news:
            # JupyterLab's "announcements" plugin asks every new user whether to fetch Jupyter
            # news (and then fetches news and update checks from the internet): not for a server
            # kubelab up starts. A config directory of kubelab's, first on the server's config
            # path, disables the plugin as `jupyter labextension disable` would, for kubelab's
            # servers only (labconfig/page_config.json; nothing else is in it).
            path = [str(LAB_CONFIG_DIR), *filter(None, env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep))]
            env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(dict.fromkeys(path))
        return env

    def _link_datasets(self, choice: Choice, home: Path) -> list[LinkedDataset]:
        return link_datasets(choice, home)

    async def start(self) -> Any:
        self._events = []
        # Validated again here, not only in the apply_user_options step (which gives the early
        # HTTP 400): start() may be called without it, and a server must never start unchecked.
        choice = self.check_user_options(self.user_options or {})
        self._event(f"Profile {choice.profile.display_name}", 10)

        home = Path(self.home_dir)
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._datasets = self._link_datasets(choice, home)
        for d in self._datasets:
            mode = "read-write"
            if d.read_only and d.enforcement is not None:
                mode = "read-only (" + (f"enforced by {d.enforcement.how}" if d.enforcement.enforced
                                        else d.enforcement.how) + ")"
            self._event(f"Dataset {d.name} at ~/{d.link.relative_to(home)}: {mode}", 20)

        self.release_gpus()
        if choice.gpus:
            candidates = self.gpus_of_type(choice.gpu_type or "")
            team = choice.team[0] if choice.team else None
            try:
                devices = self.allocator.allocate(self.server_key, self.user.name, team, candidates, choice.gpus)
            except NoGpuFree as e:
                raise web.HTTPError(409, f"cannot start: {e}") from None
            self.gpu_devices_held = list(devices)
            self._event(f"GPUs {', '.join(devices)} assigned (CUDA_VISIBLE_DEVICES)", 30)

        self._plan = plan = self.limit_plan(
            choice.profile.memory.limit, choice.profile.cpu.limit, gpu=choice.gpus > 0
        )
        try:
            self._cgroup = self._make_cgroup(plan)
        except OSError as e:
            self.release_gpus()
            raise web.HTTPError(500, f"cannot create the server's cgroup: {e}") from None
        if self._cgroup is not None:
            self._event(f"Limits: cgroup {self._cgroup}", 35)
        for note in plan.notes:
            self._event(f"Limits: {note}", 35)

        # profile limits also go to the server's environment (MEM_LIMIT, CPU_LIMIT)
        self.mem_limit = plan.memory_bytes
        self.cpu_limit = plan.cpu_limit

        if self.server_log_dir:
            log_dir = Path(self.server_log_dir)
            log_dir.mkdir(parents=True, exist_ok=True)
            name = safe_dir_name(self.user.name) + (f"--{safe_dir_name(self.name)}" if self.name else "")
            self._log_file = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed on stop
            self.popen_kwargs = {**self.popen_kwargs, "stdout": self._log_file,
                                 "stderr": subprocess.STDOUT, "stdin": subprocess.DEVNULL}
        try:
            result = await super().start()
        except BaseException:
            self.release_gpus()
            self._remove_cgroup()
            self._close_log()
            raise
        self._event(f"jupyter-server started (pid {self.pid}); waiting for it to answer", 50)
        return result

    def _close_log(self) -> None:
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None

    async def stop(self, now: bool = False) -> None:
        import psutil

        tree: list[Any] = []
        if self.pid:
            with contextlib.suppress(psutil.Error):
                tree = psutil.Process(self.pid).children(recursive=True)
        await super().stop(now=now)
        # Kernels run in sessions of their own; one the server did not stop must not outlive it.
        alive = [p for p in tree if p.is_running()]
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        if alive:
            _, still = await asyncio.to_thread(psutil.wait_procs, alive, 3)
            for p in still:
                with contextlib.suppress(psutil.Error):
                    p.kill()
        self.release_gpus()
        self._remove_cgroup()
        self._close_log()

    def release_gpus(self) -> None:
        self.allocator.release(self.server_key)
        self.gpu_devices_held = []

    # -- state across hub restarts -----------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self.gpu_devices_held:
            state["gpus"] = list(self.gpu_devices_held)
            if self.choice and self.choice.team:
                state["team"] = self.choice.team[0]
        if self._cgroup is not None:
            state["cgroup"] = str(self._cgroup)
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        gpus = state.get("gpus") or []
        if gpus and self.pid:
            try:
                self.allocator.restore(self.server_key, self.user.name, state.get("team"), list(gpus))
                self.gpu_devices_held = list(gpus)
            except NoGpuFree as e:
                self.log.error("%s: %s", self._log_name, e)
        if state.get("cgroup"):
            self._cgroup = Path(state["cgroup"])

    def clear_state(self) -> None:
        super().clear_state()
        self.release_gpus()
        self._remove_cgroup()
        self._close_log()
