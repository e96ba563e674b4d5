"""Helpers for the tests that run ``kubelab up`` for real (no tests in this module).

:class:`UpProcess` starts ``python -m kubelab.spawner.up`` (what ``kubelab up`` runs) in a temporary
state directory on a free port, waits for its banner, and offers the hub's REST API with the API
token ``kubelab up`` keeps in ``secrets.json``, logins with a browser-like session, and a check
that nothing it started is left after it stops.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import requests

#: how long ``kubelab up`` may take to print its banner, and a server to become ready
UP_TIMEOUT = 90.0
SPAWN_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UpProcess:
    """One ``kubelab up`` run in the background."""

    def __init__(self, data_dir: Path, *, config: Path | None = None, port: int | None = None,
                 extra_args: tuple[str, ...] = ()):
        self.data_dir = Path(data_dir)
        self.config = config
        self.port = port or free_port()
        self.extra_args = extra_args
        self.proc: subprocess.Popen[str] | None = None
        self.output_path = self.data_dir.parent / f"{self.data_dir.name}-up-{self.port}.out"
        self.seen: set[int] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> UpProcess:
        args = [sys.executable, "-m", "kubelab.spawner.up", "--data-dir", str(self.data_dir),
                "--port", str(self.port), *self.extra_args]
        if self.config is not None:
            args += ["--config", str(self.config)]
        self._out = open(self.output_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=subprocess.STDOUT, text=True,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + UP_TIMEOUT
        while time.monotonic() < deadline:
            if "kubelab is up:" in self.output():
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.kill()
        raise AssertionError(f"kubelab up did not come up:\n{self.output()}\n{self.hub_log()}")

    def output(self) -> str:
        try:
            return self.output_path.read_text()
        except OSError:
            return ""

    def hub_log(self) -> str:
        try:
            return (self.data_dir / "logs" / "hub.log").read_text()[-6000:]
        except OSError:
            return ""

    @property
    def secrets(self) -> dict[str, str]:
        return json.loads((self.data_dir / "secrets.json").read_text())

    # -- REST API --------------------------------------------------------------------------

    def api(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"token {token or self.secrets['api_token']}"}
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=30, **kwargs)

    def add_user(self, name: str, groups: tuple[str, ...] = ()) -> None:
        r = self.api("POST", f"/users/{name}")
        assert r.status_code in (201, 409), r.text
        for g in groups:
            r = self.api("POST", f"/groups/{g}/users", json={"users": [name]})
            assert r.status_code == 200, r.text

    def user_token(self, name: str) -> str:
        r = self.api("POST", f"/users/{name}/tokens", json={"note": "test", "expires_in": 3600})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def spawn(self, name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Start *name*'s server with *options* and wait until it is ready; return its model."""
        r = self.api("POST", f"/users/{name}/server", json=options or {})
        assert r.status_code in (201, 202), f"{r.status_code} {r.text}"
        started = time.monotonic()
        while time.monotonic() < started + SPAWN_TIMEOUT:
            server = self.api("GET", f"/users/{name}").json()["servers"].get("", {})
            if server.get("ready"):
                self.remember_processes()
                return dict(server)
            if not server.get("pending") and time.monotonic() > started + 3:
                break  # the spawn failed
            time.sleep(0.2)
        raise AssertionError(f"{name}'s server did not start:\n{self.hub_log()}")

    def login(self, name: str, password: str | None = None) -> requests.Session:
        """A browser-like session logged in as *name* (cookies and the XSRF token)."""
        session = requests.Session()
        page = session.get(f"{self.url}/hub/login", timeout=30)
        password = password or (self.secrets["admin_password"] if name == "admin" else self.secrets["user_password"])
        r = session.post(
            f"{self.url}/hub/login",
            data={"username": name, "password": password, "_xsrf": xsrf_of(page.text)},
            allow_redirects=False, timeout=30,
        )
        assert r.status_code == 302, f"login as {name} failed: {r.status_code}"
        return session

    # -- processes -------------------------------------------------------------------------

    def descendants(self) -> list[psutil.Process]:
        assert self.proc is not None
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []

    def remember_processes(self) -> None:
        self.seen.update(p.pid for p in self.descendants())

    def leftovers(self) -> list[str]:
        """Processes this run started that still exist (zombies do not count)."""
        left = []
        for pid in sorted(self.seen):
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{pid} {' '.join(p.cmdline())[:120]}")
            except psutil.Error:
                continue
        return left

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        assert self.proc is not None
        self.remember_processes()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"kubelab up did not stop within {timeout} s:\n{self.output()}") from None
        self._out.close()
        return int(self.proc.returncode)

    def kill(self) -> None:
        """Last resort for a failed test: end this run's processes by pid."""
        if self.proc is None:
            return
        procs = self.descendants()
        for p in [*procs, psutil.Process(self.proc.pid)] if self.proc.poll() is None else procs:
            try:
                p.kill()
            except psutil.Error:
                pass
        for pid in self.seen:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


def xsrf_of(page: str) -> str:
    m = re.search(r'(?:name="_xsrf"\s+value="|[?&]_xsrf=)([^"&]+)', page)
    assert m, "no _xsrf field in the page"
    return m.group(1)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def write_config(path: Path, dataset_dir: Path) -> Path:
    """An admin config with group-restricted profiles and datasets, for the access tests."""
    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / "shared").mkdir(exist_ok=True)
    (dataset_dir / "shared" / "hello.txt").write_text("hello\n")
    (dataset_dir / "vision").mkdir(exist_ok=True)
    path.write_text(f"""\
version: 1
groups:
  ml: {{description: ML}}
  vision: {{description: Vision}}
gpu_types:
  gpu: {{display_name: NVIDIA GPU}}
profiles:
  - slug: cpu
    display_name: CPU
    default: true
    cpu: {{limit: 1}}
    memory: {{limit: 4Gi}}
    images: [{{slug: default, display_name: Python, image: example/notebook:1}}]
  - slug: gpu
    display_name: GPU
    gpu: {{type: gpu, counts: [1]}}
    images: [{{slug: cuda, display_name: CUDA, image: example/cuda:1}}]
  - slug: vision-cpu
    display_name: Vision CPU
    images: [{{slug: default, display_name: Python, image: example/notebook:1}}]
    groups: [vision]
datasets:
  - name: shared
    source: {{host_path: {{path: {dataset_dir / 'shared'}}}}}
    mount_path: /data/shared
    default: true
  - name: vision-data
    source: {{host_path: {{path: {dataset_dir / 'vision'}}}}}
    mount_path: /data/vision
    groups: [vision]
teams:
  ml: {{quota: {{gpus: 1}}}}
""")
    return path


def env_without_kubelab() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KUBELAB_")}
