"""``kubelab up``'s checks and state handling, without starting a hub."""

from __future__ import annotations

import argparse
import json
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from traitlets.config import Config

from kubelab.core.config import load_config
from kubelab.spawner import up
from kubelab.spawner.up import (
    STATE_PLACEHOLDER,
    UpError,
    add_up_parser,
    check_listen_address,
    configure_hub,
    ensure_default_config,
    is_loopback,
    load_or_create_secrets,
    main_up,
)


@pytest.mark.parametrize("ip", ["0.0.0.0", "::", "192.0.2.10", "10.1.2.3", ""])
def test_a_non_loopback_ip_is_refused_without_insecure(ip: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "state"
    assert main_up(["--ip", ip, "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert "refusing to listen on" in err and "not a loopback address" in err
    assert "--insecure" in err and "ssh -L" in err
    assert not data.exists(), "nothing is created before the address is accepted"


@pytest.mark.parametrize(("args", "message"), [
    (["--ip", "999.1.1.1"], "not an IP address or a host name"),
    (["--ip", "999.1.1.1", "--insecure"], "not an IP address or a host name"),
    (["--ip", "no such host.invalid"], "not an IP address or a host name"),
    (["--ip", "a" * 70 + ".com", "--insecure"], "not an IP address or a host name"),  # too long for IDNA
    (["--data-dir", ""], "--data-dir is empty"),
])
def test_bad_addresses_and_dirs_are_named(args: list[str], message: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert main_up([*args] if "--data-dir" in args else [*args, "--data-dir", str(home)]) == 2
    assert message in capsys.readouterr().err
    assert not home.exists()


def test_the_refusal_from_the_command_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kubelab.spawner.up", "--ip", "0.0.0.0", "--data-dir", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("kubelab up: refusing to listen on 0.0.0.0")


@pytest.mark.parametrize("ip", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_addresses_are_accepted(ip: str) -> None:
    assert is_loopback(ip)
    check_listen_address(ip, insecure=False)


def test_insecure_accepts_any_address() -> None:
    check_listen_address("0.0.0.0", insecure=True)
    assert not is_loopback("0.0.0.0")


def test_up_plugs_into_the_kubelab_command() -> None:
    parser = argparse.ArgumentParser(prog="kubelab")
    add_up_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["up", "--port", "9000", "--data-dir", "/tmp/x", "--insecure", "--ip", "0.0.0.0"])
    assert args.func is up.run_up
    assert (args.port, args.data_dir, args.insecure, args.ip, args.config) == (9000, "/tmp/x", True, "0.0.0.0", None)


def test_secrets_are_generated_once_private_and_reused(tmp_path: Path) -> None:
    first, created = load_or_create_secrets(tmp_path)
    assert created and len(first.admin_password) >= 32 and len(first.user_password) >= 8
    path = tmp_path / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created = load_or_create_secrets(tmp_path)
    assert again == first and not created
    path.chmod(0o644)  # made readable by someone else: put back to owner-only
    load_or_create_secrets(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("{")
    with pytest.raises(UpError, match="damaged"):
        load_or_create_secrets(tmp_path)


def test_the_default_config_is_copied_into_the_state_dir_with_its_example_dataset(tmp_path: Path) -> None:
    shipped = up.local_config_template()
    assert STATE_PLACEHOLDER in shipped.read_text()
    load_config(shipped)  # the shipped file passes `kubelab config check` as it is
    path, created = ensure_default_config(tmp_path)
    assert created and path == tmp_path / "kubelab.yaml"
    config = load_config(path)
    example = config.dataset("example")
    assert example is not None and example.read_only
    assert example.source.host_path is not None
    assert Path(example.source.host_path.path) == tmp_path / "datasets" / "example"
    assert (tmp_path / "datasets" / "example" / "iris-sample.csv").is_file()
    assert {p.slug for p in config.profiles} == {"cpu", "gpu"} and "ml" in config.teams
    # an edited copy is kept
    path.write_text(path.read_text() + "\n# mine\n")
    assert ensure_default_config(tmp_path) == (path, False)
    assert path.read_text().endswith("# mine\n")


def test_a_broken_config_stops_kubelab_up_before_the_hub_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nprofiles:\n  - slug: Not A Slug\n    images: []\n")
    assert main_up(["--config", str(bad), "--data-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "fix them and start again" in err and "profiles[0].slug" in err and str(bad) in err
    assert not (tmp_path / "s" / "jupyterhub.sqlite").exists()


def test_a_port_in_use_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main_up(["--port", str(port), "--data-dir", str(tmp_path / "s")]) == 2
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err


def test_a_second_supervisor_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    options = up.UpOptions(state_dir=tmp_path, config_path=None, ip="127.0.0.1", port=1)
    (tmp_path / "run").mkdir()
    first = up.Supervisor(options)
    first._lock()
    try:
        with pytest.raises(UpError, match="already running"):
            up.Supervisor(options)._lock()
    finally:
        assert first._lock_file is not None
        first._lock_file.close()
    up.Supervisor(options)._lock()  # free again once the first is gone


def test_the_hub_config_logs_in_with_passwords_and_uses_the_local_spawner(tmp_path: Path) -> None:
    load_or_create_secrets(tmp_path)
    config_path, _ = ensure_default_config(tmp_path)
    secrets = json.loads((tmp_path / "secrets.json").read_text())
    c = Config()
    configure_hub(c, {
        "state_dir": str(tmp_path), "config_path": str(config_path), "ip": "127.0.0.1", "port": 8000,
        "hub_port": 18081, "proxy_api_port": 18001, "proxy_command": up.proxy_command(),
        "admin_user": "admin",
    })
    assert c.JupyterHub.authenticator_class == "shared-password"
    assert c.SharedPasswordAuthenticator.admin_users == {"admin"}
    assert c.SharedPasswordAuthenticator.admin_password == secrets["admin_password"]
    assert c.Authenticator.allow_all is False  # only users the admin adds may log in
    assert c.JupyterHub.spawner_class == "kubelab.spawner.local.LocalProfileSpawner"
    assert c.LocalProfileSpawner.kubelab_config == str(config_path)
    assert (c.JupyterHub.ip, c.JupyterHub.hub_ip) == ("127.0.0.1", "127.0.0.1")
    assert c.JupyterHub.load_groups == {"ml": {}}
    assert c.JupyterHub.db_url.endswith(str(tmp_path / "jupyterhub.sqlite"))
    assert "--no-x-forward" in c.ConfigurableHTTPProxy.command


def test_the_spawner_entry_point_class_is_importable_by_name() -> None:
    from jupyterhub.spawner import SimpleLocalProcessSpawner

    from kubelab.spawner.local import LocalProfileSpawner

    assert issubclass(LocalProfileSpawner, SimpleLocalProcessSpawner)
