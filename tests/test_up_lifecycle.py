"""``kubelab up`` from first start to Ctrl-C and back: state, secrets, and nothing left running."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from kubelab.tests.up_support import UpProcess, port_open


def _kernel(up: UpProcess, user: str) -> None:
    """Start a kernel in *user*'s server: kernels run in sessions of their own, so they are the
    processes most likely to be left behind."""
    token = up.user_token(user)
    import requests

    r = requests.post(f"{up.url}/user/{user}/api/kernels", json={},
                      headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any("ipykernel" in " ".join(p.cmdline()) for p in up.descendants() if _alive(p)):
            break
        time.sleep(0.2)
    up.remember_processes()


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_first_start_ctrl_c_and_restart_reuse_the_state(tmp_path: Path) -> None:
    data = tmp_path / "state"
    up = UpProcess(data).start()
    try:
        out = up.output()
        secrets = up.secrets
        # the banner: where, and how to log in
        assert f"kubelab is up: http://127.0.0.1:{up.port}/" in out
        assert f"admin / {secrets['admin_password']}" in out and secrets["user_password"] in out
        # generated secrets, readable by the owner only; the default config from hub_config/local.yaml
        assert (data / "secrets.json").stat().st_mode & 0o777 == 0o600
        assert (data / "kubelab.yaml").is_file() and "/KUBELAB_DATA_DIR" not in (data / "kubelab.yaml").read_text()
        assert (data / "datasets" / "example" / "iris-sample.csv").is_file()

        # a second kubelab up on the same state directory is refused while this one runs
        second = subprocess.run(
            [sys.executable, "-m", "kubelab.spawner.up", "--data-dir", str(data), "--port", "1"],
            capture_output=True, text=True, timeout=60,
        )
        assert second.returncode == 2 and "already running" in second.stderr, second.stderr

        up.add_user("alice", ("ml",))
        up.spawn("alice", {"profile": "cpu"})
        _kernel(up, "alice")
        kinds = " ".join(" ".join(p.cmdline()) for p in up.descendants())
        for expected in ("jupyterhub", "configurable-http-proxy", "jupyterhub.singleuser", "ipykernel"):
            assert expected in kinds, f"{expected} not running: {kinds}"
        ports = [up.port]
        # Ctrl-C
        assert up.stop(signal.SIGINT) == 0, up.output()
        assert up.leftovers() == [], "processes left after Ctrl-C"
        assert not any(port_open(p) for p in ports)
        assert "kubelab: stopped." in up.output()
    finally:
        up.kill()

    # Starting again reuses the state: the same passwords, the same users.
    again = UpProcess(data, port=up.port).start()
    try:
        assert again.secrets == secrets
        users = {u["name"] for u in again.api("GET", "/users").json()}
        assert "alice" in users
        groups = {g["name"]: g["users"] for g in again.api("GET", "/groups").json()}
        assert groups["ml"] == ["alice"]
        assert "created from" not in again.output()  # the config is the one from the first start
        assert again.stop(signal.SIGTERM) == 0
        assert again.leftovers() == []
    finally:
        again.kill()


def test_when_the_hub_dies_the_supervisor_ends_what_it_left(tmp_path: Path) -> None:
    """The hub killed outright cannot stop its servers or its proxy; kubelab up (their subreaper)
    finds them and ends them, and says the hub failed."""
    up = UpProcess(tmp_path / "state").start()
    try:
        up.add_user("alice")
        up.spawn("alice", {"profile": "cpu"})
        hub = next(p for p in up.descendants() if "jupyterhub -f" in " ".join(p.cmdline()))
        up.remember_processes()
        hub.kill()
        assert up.proc is not None
        up.proc.wait(60)
        assert up.proc.returncode == 1
        assert "exited unexpectedly" in up.output()
        assert up.leftovers() == []
    finally:
        up.kill()


def test_when_kubelab_up_is_killed_the_hub_still_stops_everything(tmp_path: Path) -> None:
    """SIGKILL leaves the supervisor no chance; the hub gets SIGTERM from the kernel
    (PR_SET_PDEATHSIG) and stops its servers and its proxy itself."""
    up = UpProcess(tmp_path / "state").start()
    try:
        up.add_user("alice")
        up.spawn("alice", {"profile": "cpu"})
        up.remember_processes()
        assert up.proc is not None
        up.proc.kill()
        up.proc.wait(10)
        deadline = time.monotonic() + 40
        while up.leftovers() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert up.leftovers() == []
    finally:
        up.kill()
