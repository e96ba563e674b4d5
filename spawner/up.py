"""``kubelab up``: the whole suite on one machine, no cluster.

``kubelab up`` starts a real JupyterHub (and its proxy) bound to 127.0.0.1, with kubelab's local
profile spawner (:mod:`kubelab.spawner.local`), and keeps everything it needs in one state
directory (``~/.kubelab`` or ``--data-dir``)::

    state dir/
      kubelab.yaml              the admin config (copied from hub_config/local.yaml on first start)
      secrets.json              generated passwords and API token, mode 0600
      jupyterhub_config.py      written on every start; ``jupyterhub -f`` runs the same hub by hand
      jupyterhub_config.local.py  optional: your own extra JupyterHub config, loaded last
      jupyterhub.sqlite         users, groups, servers: starting again reuses them
      users/NAME/               each user's working directory (the server's home and root dir)
      datasets/example/         the example dataset of the default config
      logs/hub.log              the hub's and the proxy's log (the previous run's in hub.log.1)
      logs/servers/NAME.log     each user server's log
      run/                      pid files and the lock that stops two ``kubelab up`` sharing a state

Process model (why it is built this way): ``kubelab up`` is a small supervisor. It runs the hub as
a child process; the hub starts the proxy and the user servers in sessions of their own (JupyterHub
does that so that a terminal's Ctrl-C does not hit them directly). On Ctrl-C the supervisor asks
the hub to stop (SIGTERM: the hub stops every user server, then the proxy), waits, and then sweeps:
on Linux the supervisor is a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``), so anything the
hub started and left behind -- a server, a kernel, the proxy -- is re-parented to the supervisor
instead of to init, and the supervisor finds and ends it. If the supervisor itself is killed, the
hub gets SIGTERM (``PR_SET_PDEATHSIG``) and cleans up its own children. docs/local.md has more.

The proxy is the Python implementation of configurable-http-proxy (PyPI ``configurable-http-proxy``),
a dependency of ``kubelab[local]`` (in ``kubelab[all]``), so that ``kubelab up`` works on a machine without Node.js; see
docs/local.md for why, and for how to use the Node.js proxy instead.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import fcntl
import importlib.util
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from kubelab.core import paths
from kubelab.core.config import ConfigError, KubelabConfig, load_config

DEFAULT_PORT = 8000
DEFAULT_IP = "127.0.0.1"
ADMIN_USER = "admin"
#: the JupyterHub service whose API token ``secrets.json`` holds (for scripts and tests)
API_SERVICE = "kubelab-up"
#: in ``hub_config/local.yaml``, host paths under this prefix are rewritten to the state directory
STATE_PLACEHOLDER = "/KUBELAB_DATA_DIR"
#: how long the hub may take to come up, and to stop (it stops user servers first)
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


class UpError(Exception):
    """An expected failure of ``kubelab up``: printed as a short message, exit status 2."""


# --------------------------------------------------------------------------------------------------
# Command line


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="PATH",
        help="the admin config (kubelab.yaml); default: DATA_DIR/kubelab.yaml, created from "
        "kubelab's hub_config/local.yaml on first start",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, metavar="N",
        help=f"port of the hub's public address (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--ip", default=DEFAULT_IP, metavar="ADDR",
        help=f"address to listen on (default {DEFAULT_IP}); a non-loopback address needs --insecure",
    )
    parser.add_argument(
        "--data-dir", metavar="DIR",
        help="state directory: users, servers, passwords, logs (default $KUBELAB_DATA_DIR or ~/.kubelab)",
    )
    parser.add_argument(
        "--insecure", action="store_true",
        help="allow a non-loopback --ip: the hub then serves plain HTTP with password logins to the "
        "network",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true",
        help="show the hub's log in the terminal as well as in DATA_DIR/logs/hub.log",
    )


def add_up_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``up`` to the ``kubelab`` command's subparsers; it runs :func:`run_up`."""
    parser = subparsers.add_parser(
        "up",
        help="run JupyterHub with kubelab on this machine (no cluster)",
        description="Start JupyterHub, its proxy and kubelab's local profile spawner on this "
        "machine. Ctrl-C stops everything it started.",
    )
    _add_arguments(parser)
    parser.set_defaults(func=run_up)
    return parser


def main_up(argv: Sequence[str] | None = None) -> int:
    """``kubelab up`` as a standalone program (``python -m kubelab.spawner.up``)."""
    parser = argparse.ArgumentParser(prog="kubelab up", description=add_up_parser.__doc__)
    _add_arguments(parser)
    return run_up(parser.parse_args(argv))


def run_up(args: argparse.Namespace) -> int:
    try:
        options = UpOptions.from_args(args)
        return Supervisor(options).run()
    except UpError as e:
        print(f"kubelab up: {e}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------------------------------
# Options, checks and the state directory


@dataclass
class UpOptions:
    state_dir: Path
    config_path: Path | None
    ip: str
    port: int
    insecure: bool = False
    verbose: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> UpOptions:
        if args.data_dir is not None and not args.data_dir.strip():
            raise UpError("--data-dir is empty; give a directory (the default is ~/.kubelab)")
        state_dir = paths.data_dir(args.data_dir)
        if not 0 < args.port < 65536:
            raise UpError(f"--port {args.port} is not a port number (1-65535)")
        check_listen_address(args.ip, insecure=args.insecure)
        return cls(
            state_dir=state_dir.resolve(),
            config_path=Path(args.config).expanduser().resolve() if args.config else None,
            ip=args.ip,
            port=args.port,
            insecure=args.insecure,
            verbose=args.verbose,
        )


def _addresses(host: str) -> set[str] | None:
    """The IP addresses *host* (an address or a name) stands for; None when it is neither an
    address nor a name this machine resolves."""
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    if not host:
        return set()
    try:
        return {str(info[4][0]).split("%")[0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):  # UnicodeError: a label too long for IDNA
        return None


def _loopback(addresses: set[str] | None) -> bool:
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses or ())


def is_loopback(host: str) -> bool:
    """Whether *host* (an address or a name) means only this machine."""
    return _loopback(_addresses(host))


def check_listen_address(ip: str, *, insecure: bool) -> None:
    """Refuse a non-loopback address unless *insecure*: that hub is reachable from the network."""
    addresses = _addresses(ip)
    if addresses is None:
        raise UpError(f"--ip {ip!r} is not an IP address or a host name this machine can resolve")
    if _loopback(addresses) or insecure:
        return
    shown = ip or "all addresses"
    raise UpError(
        f"refusing to listen on {shown}: it is not a loopback address, so anyone who can reach "
        "this machine could try to log in, over plain HTTP.\n"
        f"  Keep the default (--ip {DEFAULT_IP}) and reach it through an SSH tunnel "
        f"(ssh -L {DEFAULT_PORT}:127.0.0.1:{DEFAULT_PORT} this-host), or put an HTTPS proxy in front, "
        "or pass --insecure if you accept that risk."
    )


@dataclass
class Secrets:
    admin_password: str
    user_password: str
    api_token: str

    @classmethod
    def generate(cls) -> Secrets:
        # JupyterHub's SharedPasswordAuthenticator wants >= 32 characters for the admin password
        # and >= 8 for users; the user password is meant to be typed and passed on, so shorter.
        return cls(
            admin_password=secrets.token_urlsafe(32),
            user_password=secrets.token_urlsafe(12),
            api_token=secrets.token_hex(32),
        )


def write_private(path: Path, text: str) -> None:
    """Write *text* to *path* readable by the owner only (0600), never briefly wider."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def load_or_create_secrets(state_dir: Path) -> tuple[Secrets, bool]:
    """The state dir's secrets, generated on first start. Returns (secrets, created)."""
    path = state_dir / "secrets.json"
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            os.chmod(path, 0o600)
            print(f"kubelab up: {path} was readable by others (mode {mode:o}); set it to 0600",
                  file=sys.stderr)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Secrets(**{k: data[k] for k in ("admin_password", "user_password", "api_token")}), False
        except (ValueError, KeyError, TypeError) as e:
            raise UpError(
                f"{path} is damaged ({e}); move it away and start again to generate new passwords"
            ) from None
    created = Secrets.generate()
    write_private(path, json.dumps(asdict(created), indent=2) + "\n")
    return created, True


def local_config_template() -> Path:
    """``hub_config/local.yaml`` as installed with kubelab."""
    try:
        return paths.shipped("local.yaml")
    except FileNotFoundError as e:
        raise UpError(str(e)) from None


def ensure_default_config(state_dir: Path) -> tuple[Path, bool]:
    """DATA_DIR/kubelab.yaml, created from hub_config/local.yaml on first start.

    Host paths in the template start with ``/KUBELAB_DATA_DIR``; they are rewritten to the state
    directory, and the example dataset's directory is created with a small sample file, so that
    the default config works as shipped on any machine.
    """
    path = state_dir / "kubelab.yaml"
    if path.exists():
        return path, False
    text = local_config_template().read_text(encoding="utf-8")
    text = text.replace(STATE_PLACEHOLDER, str(state_dir))
    path.write_text(text, encoding="utf-8")
    example = state_dir / "datasets" / "example"
    if not example.exists():
        example.mkdir(parents=True)
        (example / "README.txt").write_text(
            "An example dataset for kubelab up: a small table of iris flowers.\n"
            "It is declared in kubelab.yaml (datasets) and appears read-only in users' servers.\n",
            encoding="utf-8",
        )
        (example / "iris-sample.csv").write_text(
            "sepal_length,sepal_width,petal_length,petal_width,species\n"
            "5.1,3.5,1.4,0.2,setosa\n4.9,3.0,1.4,0.2,setosa\n"
            "7.0,3.2,4.7,1.4,versicolor\n6.4,3.2,4.5,1.5,versicolor\n"
            "6.3,3.3,6.0,2.5,virginica\n5.8,2.7,5.1,1.9,virginica\n",
            encoding="utf-8",
        )
    return path, True


def _port_free(ip: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def internal_ports(state_dir: Path, public_port: int) -> dict[str, int]:
    """The hub's and the proxy API's ports on 127.0.0.1: chosen once, kept in the state dir.

    Kept, because user servers that survive a hub restart know the hub by this address.
    """
    path = state_dir / "run" / "ports.json"
    try:
        ports = {k: int(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        ports = {}
    for name in ("hub_port", "proxy_api_port"):
        port = ports.get(name)
        if not port or port == public_port or not _port_free("127.0.0.1", port):
            port = _free_port()
            while port == public_port or port in ports.values():
                port = _free_port()
            ports[name] = port
    path.write_text(json.dumps(ports) + "\n")
    return ports


# --------------------------------------------------------------------------------------------------
# The hub's configuration (runs inside the hub process, from the generated jupyterhub_config.py)

_HUB_CONFIG = '''\
# Written by `kubelab up` on every start; do not edit (your changes would be lost).
# Put your own JupyterHub settings in jupyterhub_config.local.py beside this file.
# To run this hub by hand:  jupyterhub -f {config_file}
import os
from kubelab.spawner.up import configure_hub

c = get_config()  # noqa: F821
configure_hub(c, {settings!r})
_local = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jupyterhub_config.local.py")
if os.path.exists(_local):
    load_subconfig(_local)  # noqa: F821
'''

#: starts the Python configurable-http-proxy; JupyterHub appends --ip, --port, --api-ip ...
_PROXY_LAUNCH = (
    "import sys; sys.argv[0] = 'configurable-http-proxy'; "
    "from configurable_http_proxy.cli import main; main()"
)


#: what ``kubelab up`` needs beyond the core: module → what it is for
NEEDED = {
    "jupyterhub": "the hub",
    "configurable_http_proxy": "the proxy (Python configurable-http-proxy)",
    "jupyter_server": "the users' servers",
    "jupyterlab": "JupyterLab",
    "psutil": "stopping everything it started",
}


def check_installed() -> None:
    missing = [f"{name} ({why})" for name, why in NEEDED.items()
               if importlib.util.find_spec(name) is None]
    if missing:
        raise UpError(
            "missing: " + ", ".join(missing) + ". Install them with: pip install 'kubelab[all]'"
        )


def proxy_command() -> list[str]:
    if importlib.util.find_spec("configurable_http_proxy") is None:
        raise UpError(
            "the proxy is not installed: pip install 'kubelab[all]' (it brings the Python "
            "configurable-http-proxy)"
        )
    # --no-x-forward: configurable-http-proxy 0.4.0 builds malformed X-Forwarded-* headers
    # (",127.0.0.1", port 80 whatever the real port); locally the hub needs none of them.
    return [sys.executable, "-c", _PROXY_LAUNCH, "--no-x-forward"]


def configure_hub(c: Any, settings: dict[str, Any]) -> None:
    """Fill the JupyterHub config *c* for ``kubelab up`` from *settings* (see ``Supervisor``)."""
    state = Path(settings["state_dir"])
    data = json.loads((state / "secrets.json").read_text(encoding="utf-8"))
    config = load_config(settings["config_path"])

    c.JupyterHub.ip = settings["ip"]
    c.JupyterHub.port = settings["port"]
    c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.hub_port = settings["hub_port"]
    c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(state / "run" / "hub.pid")
    c.JupyterHub.cleanup_servers = True
    c.JupyterHub.cleanup_proxy = True

    c.ConfigurableHTTPProxy.command = settings["proxy_command"]
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings['proxy_api_port']}"
    c.ConfigurableHTTPProxy.pid_file = str(state / "run" / "proxy.pid")

    # Logins: one admin with its own password; users the admin adds on the admin page log in
    # with the user password. Nobody else: no sign-up, no open DummyAuthenticator.
    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.admin_users = {settings["admin_user"]}
    c.SharedPasswordAuthenticator.admin_password = data["admin_password"]
    c.SharedPasswordAuthenticator.user_password = data["user_password"]
    c.Authenticator.allow_all = False
    c.Authenticator.allow_existing_users = True

    # The groups the admin config names exist in the hub, so the admin page can fill them.
    c.JupyterHub.load_groups = {name: {} for name in config.groups}

    # A token for scripts (and kubelab's own tests), kept in secrets.json beside the passwords.
    c.JupyterHub.services = [{"name": API_SERVICE, "api_token": data["api_token"]}]
    c.JupyterHub.load_roles = [{
        "name": API_SERVICE,
        "description": "kubelab up's API token (DATA_DIR/secrets.json)",
        "scopes": ["admin:users", "admin:servers", "admin:groups", "tokens", "list:users"],
        "services": [API_SERVICE],
    }]

    c.JupyterHub.spawner_class = "kubelab.spawner.local.LocalProfileSpawner"
    c.LocalProfileSpawner.kubelab_config = str(settings["config_path"])
    c.LocalProfileSpawner.state_dir = str(state)
    c.Spawner.default_url = "/lab"
    c.Spawner.start_timeout = 120
    c.Spawner.http_timeout = 60
    # Stopping a server: SIGINT, then SIGTERM, then SIGKILL; Ctrl-C should not take minutes.
    c.LocalProcessSpawner.interrupt_timeout = 5
    c.LocalProcessSpawner.term_timeout = 5


# --------------------------------------------------------------------------------------------------
# The supervisor


def _prctl(option: int, arg: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, arg, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _hub_preexec() -> None:  # pragma: no cover - runs in the child between fork and exec
    # If the supervisor dies without stopping the hub (SIGKILL), the hub gets SIGTERM and cleans up.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    """Runs the hub, prints how to reach it, and on Ctrl-C stops everything it started."""

    def __init__(self, options: UpOptions):
        self.options = options
        self.state = options.state_dir
        self.hub: subprocess.Popen[bytes] | None = None
        self._stop_requested = threading.Event()
        self._force = threading.Event()
        self._log_thread: threading.Thread | None = None
        self._lock_file: IO[str] | None = None
        self.subreaper = False

    # -- preparation -------------------------------------------------------------------------

    def prepare(self) -> dict[str, Any]:
        """Create or reuse the state dir; return the settings the hub is configured from."""
        o = self.options
        check_installed()
        try:
            self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
            for sub in ("run", "logs", "logs/servers", "users"):
                (self.state / sub).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UpError(f"cannot create the state directory {self.state}: {e.strerror}") from None
        self._lock()

        if o.config_path is not None:
            config_path, created = o.config_path, False
        else:
            config_path, created = ensure_default_config(self.state)
        try:
            config = load_config(config_path)
        except ConfigError as e:
            raise UpError(f"the admin config has problems; fix them and start again.\n{e.format()}") from None
        self._warn_about(config)
        self.config_path, self.config_created = config_path, created

        self.secrets, self.secrets_created = load_or_create_secrets(self.state)
        if not _port_free(o.ip, o.port):
            raise UpError(
                f"port {o.port} on {o.ip} is in use (another kubelab up or JupyterHub?); "
                "choose another with --port"
            )
        ports = internal_ports(self.state, o.port)
        settings = {
            "state_dir": str(self.state),
            "config_path": str(config_path),
            "ip": o.ip,
            "port": o.port,
            "hub_port": ports["hub_port"],
            "proxy_api_port": ports["proxy_api_port"],
            "proxy_command": proxy_command(),
            "admin_user": ADMIN_USER,
        }
        hub_config = self.state / "jupyterhub_config.py"
        write_private(hub_config, _HUB_CONFIG.format(config_file=hub_config, settings=settings))
        return settings

    def _lock(self) -> None:
        path = self.state / "run" / "up.lock"
        f = open(path, "a+")  # noqa: SIM115 - held for the supervisor's lifetime
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.seek(0)
            other = f.read().strip() or "another process"
            f.close()
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise UpError(
                    f"kubelab up is already running with this state directory ({self.state}, "
                    f"pid {other}); stop it first, or use another --data-dir"
                ) from None
            raise
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lock_file = f

    def _warn_about(self, config: KubelabConfig) -> None:
        for d in config.datasets:
            if d.source.host_path is not None and not Path(d.source.host_path.path).exists():
                print(f"kubelab up: dataset {d.name!r}: {d.source.host_path.path} does not exist; "
                      "it is shown as unavailable", file=sys.stderr)
            elif d.source.host_path is None:
                print(f"kubelab up: dataset {d.name!r} has a {d.source.kind} source, which needs a "
                      "cluster; it is shown as unavailable", file=sys.stderr)

    # -- running -----------------------------------------------------------------------------

    def run(self) -> int:
        settings = self.prepare()
        self.subreaper = _prctl(_PR_SET_CHILD_SUBREAPER, 1)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._start_hub()
            url = self.public_url(settings)
            print(f"kubelab: starting JupyterHub at {url} (state in {self.state}) ...", flush=True)
            if not self._wait_ready(settings):
                return self._shutdown(failed=True)
            self._banner(url)
            while not self._stop_requested.is_set():
                if self.hub is not None and self.hub.poll() is not None:
                    print(f"kubelab: the hub exited unexpectedly (status {self.hub.returncode})",
                          file=sys.stderr)
                    self._print_log_tail()
                    return self._shutdown(failed=True)
                self._stop_requested.wait(0.5)
            return self._shutdown()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if self._lock_file is not None:
                self._lock_file.close()

    def public_url(self, settings: dict[str, Any]) -> str:
        ip = settings["ip"]
        if ip in ("", "0.0.0.0", "::"):
            host = socket.gethostname()
        elif ":" in ip:
            host = f"[{ip}]"
        else:
            host = ip
        return f"http://{host}:{settings['port']}/"

    def _connect_url(self, settings: dict[str, Any]) -> str:
        ip = settings["ip"]
        host = "127.0.0.1" if ip in ("", "0.0.0.0") else ("[::1]" if ip == "::" else ip)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{settings['port']}"

    def _start_hub(self) -> None:
        logs = self.state / "logs"
        log_path = logs / "hub.log"
        if log_path.exists():
            os.replace(log_path, logs / "hub.log.1")
        env = dict(os.environ)
        # The proxy's token: new on every start; the hub hands it to the proxy it starts.
        env["CONFIGPROXY_AUTH_TOKEN"] = secrets.token_hex(32)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.hub = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(self.state / "jupyterhub_config.py")],
            cwd=self.state,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # its own session: the terminal's Ctrl-C reaches only the supervisor, which then
            # stops the hub in order
            start_new_session=True,
            preexec_fn=_hub_preexec,
        )
        assert self.hub.stdout is not None
        self._log_thread = threading.Thread(
            target=self._pump_log, args=(self.hub.stdout, log_path), daemon=True
        )
        self._log_thread.start()

    def _pump_log(self, stream: IO[bytes], path: Path) -> None:
        with open(path, "ab") as log:
            for line in iter(stream.readline, b""):
                log.write(line)
                log.flush()
                if self.options.verbose:
                    with contextlib.suppress(OSError):
                        sys.stderr.buffer.write(line)
                        sys.stderr.buffer.flush()

    def _wait_ready(self, settings: dict[str, Any]) -> bool:
        url = self._connect_url(settings) + "/hub/api/"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._stop_requested.is_set():
                return False
            assert self.hub is not None
            if self.hub.poll() is not None:
                print(f"kubelab: the hub failed to start (status {self.hub.returncode})", file=sys.stderr)
                self._print_log_tail()
                return False
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError, ValueError):
                pass
            self._stop_requested.wait(0.25)
        print(f"kubelab: the hub did not answer at {url} within {START_TIMEOUT:.0f} s", file=sys.stderr)
        self._print_log_tail()
        return False

    def _banner(self, url: str) -> None:
        s = self.secrets
        lines = [
            "",
            f"kubelab is up: {url}",
            f"  admin login:    {ADMIN_USER} / {s.admin_password}",
            f"  add users at {url}hub/admin (and put them in groups there);",
            f"  they log in with their name and the user password: {s.user_password}",
            f"  config:  {self.config_path}"
            + ("  (created from hub_config/local.yaml)" if self.config_created else ""),
            f"  state:   {self.state}  (passwords in secrets.json, logs in logs/)",
        ]
        if not self.options.verbose:
            lines.append(f"  hub log: {self.state / 'logs' / 'hub.log'}  (or run with --verbose)")
        if self.options.insecure and not is_loopback(self.options.ip):
            lines.append("  WARNING: listening beyond this machine over plain HTTP (--insecure)")
        lines += ["Press Ctrl-C to stop kubelab and every server it started.", ""]
        print("\n".join(lines), flush=True)

    def _print_log_tail(self, count: int = 30) -> None:
        if self._log_thread is not None:
            self._log_thread.join(timeout=2)
        path = self.state / "logs" / "hub.log"
        try:
            tail = path.read_text(encoding="utf-8", errors="replace").splitlines()[-count:]
        except OSError:
            return
        print(f"--- last lines of {path} ---", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_requested.is_set():
            self._force.set()
            with contextlib.suppress(OSError):
                sys.stderr.write("\nkubelab: stopping now (killing what is left)\n")
        else:
            self._stop_requested.set()
            with contextlib.suppress(OSError):
                sys.stderr.write(
                    "\nkubelab: stopping user servers, the proxy and the hub ... "
                    "(Ctrl-C again to kill them now)\n"
                )

    # -- stopping ----------------------------------------------------------------------------

    def _descendants(self) -> list[Any]:
        import psutil

        try:
            return psutil.Process(os.getpid()).children(recursive=True)
        except psutil.Error:
            return []

    def _shutdown(self, failed: bool = False) -> int:
        """Stop the hub (which stops servers and proxy), then end whatever is left."""
        import psutil

        # Everything the hub started, as seen now: a backstop for when the hub cannot clean up.
        known = {p.pid: p for p in self._descendants()}
        hub = self.hub
        if hub is not None and hub.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                hub.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while hub.poll() is None and time.monotonic() < deadline and not self._force.is_set():
                time.sleep(0.1)
        # With the subreaper flag, orphans of the hub are now our children; without it, only the
        # processes listed before the hub stopped can be found.
        for p in self._descendants():
            known.setdefault(p.pid, p)
        alive = [p for p in known.values() if _running(p)]
        if alive:
            names = ", ".join(sorted({_name(p) for p in alive}))
            print(f"kubelab: ending {len(alive)} leftover process(es): {names}", file=sys.stderr)
            for p in alive:
                with contextlib.suppress(psutil.Error):
                    p.terminate()
            _, still = psutil.wait_procs(alive, timeout=0 if self._force.is_set() else 5)
            for p in still:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            psutil.wait_procs(still, timeout=5)
        if hub is not None and hub.poll() is None:
            hub.kill()
            hub.wait(5)
        _reap_zombies()
        if self._log_thread is not None:
            self._log_thread.join(timeout=2)
        print("kubelab: stopped after a failure." if failed else "kubelab: stopped.", flush=True)
        return 1 if failed else 0


def _running(p: Any) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _name(p: Any) -> str:
    import psutil

    try:
        cmdline = p.cmdline()
    except psutil.Error:
        return "?"
    text = " ".join(cmdline)
    for known, shown in (("singleuser", "user server"), ("configurable-http-proxy", "proxy"),
                         ("ipykernel", "kernel"), ("jupyterhub", "hub")):
        if known in text:
            return shown
    return os.path.basename(cmdline[0]) if cmdline else "?"


def _reap_zombies() -> None:
    """Collect the exit status of re-parented children (we are their subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_up())
