"""End to end: ``kubelab up`` with the local profile spawner, over HTTP like a browser or a script.

One hub for the module (starting one takes seconds): users alice (group ml), bob (no group) and vera
(group vision), with the admin config of :func:`write_config`: a CPU profile for all, a GPU profile
(this machine has no GPU), a profile and a dataset only for the vision group.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from kubelab.tests.up_support import UpProcess, write_config, xsrf_of


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    base = tmp_path_factory.mktemp("localhub")
    config = write_config(base / "kubelab.yaml", base / "datasets")
    up = UpProcess(base / "state", config=config).start()
    try:
        up.add_user("alice", ("ml",))
        up.add_user("bob")
        up.add_user("vera", ("vision",))
        yield up
    finally:
        code = up.stop()
        left = up.leftovers()
        if left:
            up.kill()
        assert not left, f"left running after Ctrl-C: {left}"
        assert code == 0, up.output()


@pytest.fixture(scope="module")
def alice_server(hub: UpProcess) -> dict:
    return hub.spawn("alice", {"profile": "cpu", "datasets": ["shared"]})


def _server_info(hub: UpProcess, user: str) -> dict:
    """The running jupyter-server's own runtime file: its pid, port and token."""
    runtime = hub.data_dir / "users" / user / ".local" / "share" / "jupyter" / "runtime"
    files = sorted(runtime.glob("jpserver-*.json"), key=lambda p: p.stat().st_mtime)
    assert files, f"no jupyter-server runtime file in {runtime}"
    return json.loads(files[-1].read_text())


def _spawn_page(hub: UpProcess, session: requests.Session) -> str:
    r = session.get(f"{hub.url}/hub/spawn", timeout=30)
    assert r.status_code == 200, r.status_code
    return r.text


def test_chooser_shows_the_users_profiles_and_marks_the_gpu_profile_unavailable(hub: UpProcess) -> None:
    page = _spawn_page(hub, hub.login("bob"))
    assert 'name="profile" value="cpu"' in page
    assert 'name="profile" value="gpu"' in page
    assert 'value="vision-cpu"' not in page, "a profile of another group is shown"
    assert 'value="vision-data"' not in page, "a dataset of another group is shown"
    gpu_card = page[page.index('id="kl-profile-gpu"'):]
    gpu_card = gpu_card[: gpu_card.index("</fieldset>")]
    assert "Unavailable: this machine has no NVIDIA GPU" in gpu_card
    assert "not free now" not in gpu_card  # no GPU at all is not a matter of waiting
    # what this machine does not enforce is said
    assert "On this machine" in page and "CPU limit 1 not enforced" in page

    vera = _spawn_page(hub, hub.login("vera"))
    assert 'value="vision-cpu"' in vera and 'value="vision-data"' in vera


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"profile": "vision-cpu"}, "no profile 'vision-cpu' is available to you"),
        ({"profile": "cpu", "dataset": "vision-data"}, "no dataset 'vision-data' is available to you"),
        ({"profile": "cpu", "dataset": "../../etc"}, "no dataset '../../etc' is available to you"),
        ({"profile": "gpu", "gpus--gpu": "1"}, "no NVIDIA GPU"),
        ({"profile": "cpu", "image--cpu": "../evil"}, "offers no image"),
    ],
)
def test_a_tampered_form_is_refused_with_400(hub: UpProcess, form: dict, message: str) -> None:
    session = hub.login("alice")
    xsrf = xsrf_of(_spawn_page(hub, session))
    r = session.post(f"{hub.url}/hub/spawn/alice", data={**form, "_xsrf": xsrf}, timeout=30,
                     allow_redirects=False)
    assert r.status_code == 400, (r.status_code, r.text[-2000:])
    assert message in html.unescape(r.text)
    servers = hub.api("GET", "/users/alice").json()["servers"]
    assert not servers or "" not in servers or servers[""].get("ready"), "a refused spawn started a server"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"profile": "vision-cpu"}, "no profile 'vision-cpu' is available to you"),
        ({"datasets": ["vision-data"]}, "no dataset 'vision-data' is available to you"),
        ({"datasets": [{"name": "shared", "sub_path": "../../.."}]}, "may not contain"),
        ({"datasets": [{"name": "shared", "read_only": False}]}, "is read-only"),
        ({"profile": "gpu"}, "no NVIDIA GPU"),
        ({"gpu": 1}, "unknown option"),
    ],
)
def test_tampered_rest_api_options_are_refused_with_400(hub: UpProcess, options: dict, message: str) -> None:
    token = hub.user_token("bob")
    r = hub.api("POST", "/users/bob/server", token=token, json=options)
    assert r.status_code == 400, (r.status_code, r.text)
    assert message in r.json()["message"]
    assert "" not in hub.api("GET", "/users/bob").json()["servers"]


def test_a_second_user_cannot_reach_the_first_users_server(hub: UpProcess, alice_server: dict) -> None:
    alice_token, bob_token = hub.user_token("alice"), hub.user_token("bob")
    status = f"{hub.url}/user/alice/api/status"
    assert requests.get(status, headers={"Authorization": f"token {alice_token}"}, timeout=30).status_code == 200
    # through the proxy, with bob's token
    r = requests.get(status, headers={"Authorization": f"token {bob_token}"}, timeout=30)
    assert r.status_code == 403, r.status_code
    # bob logged in, in a browser: the hub's OAuth refuses to hand bob a login to alice's server
    r = hub.login("bob").get(f"{hub.url}/user/alice/lab", timeout=30)
    assert r.status_code == 403 or "/user/alice/" not in r.url, (r.status_code, r.url)
    # straight to the server's own port, around the proxy
    info = _server_info(hub, "alice")
    direct = f"http://127.0.0.1:{info['port']}/user/alice/api/status"
    assert requests.get(direct, headers={"Authorization": f"token {bob_token}"}, timeout=30).status_code == 403
    assert requests.get(direct, timeout=30, allow_redirects=False).status_code in (302, 403)
    assert requests.get(direct, headers={"Authorization": f"token {alice_token}"}, timeout=30).status_code == 200


def test_the_server_runs_in_its_working_dir_with_datasets_no_gpu_and_a_memory_limit(
    hub: UpProcess, alice_server: dict
) -> None:
    info = _server_info(hub, "alice")
    proc = psutil.Process(info["pid"])
    home = hub.data_dir / "users" / "alice"
    assert Path(proc.cwd()) == home
    env = proc.environ()
    assert env["HOME"] == str(home)
    assert env["CUDA_VISIBLE_DEVICES"] == ""  # a CPU server sees no GPU
    assert env["KUBELAB_PROFILE"] == "cpu" and env["KUBELAB_BACKEND"] == "local"
    datasets = json.loads(env["KUBELAB_DATASETS"])
    assert [d["name"] for d in datasets] == ["shared"]
    assert datasets[0]["read_only"] is True and datasets[0]["mount_path"] == "/data/shared"
    assert datasets[0]["path"] == str(home / "data" / "shared")
    # the contract (kubelab.core.notebook_env) carries what local jobs need: groups, team, config
    from kubelab.core.jobs.context import JobContext

    assert json.loads(env["KUBELAB_GROUPS"]) == ["ml"] and env["KUBELAB_TEAM"] == "ml"
    ctx = JobContext.from_environ(env)
    assert ctx.groups == ("ml",) and ctx.config is not None and ctx.notebook is not None
    assert ctx.config.dataset("shared").mount_path == str(home / "data" / "shared")  # where it is here
    link = home / "data" / "shared"
    assert link.is_symlink() and (link / "hello.txt").read_text() == "hello\n"
    four_gib = 4 * 1024**3
    assert proc.rlimit(psutil.RLIMIT_AS) == (four_gib, four_gib)
    assert (hub.data_dir / "logs" / "servers" / "alice.log").stat().st_size > 0


def test_jupyterlab_does_not_ask_about_news(hub: UpProcess, alice_server: dict) -> None:
    token = hub.user_token("alice")
    r = requests.get(f"{hub.url}/user/alice/lab", headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 200, r.status_code
    config = re.search(r'id="jupyter-config-data"[^>]*>(.*?)</script>', r.text, re.S)
    assert config, "no page config in the lab page"
    # the plugin that asks "Would you like to get notified about official Jupyter news?" is off
    assert "@jupyterlab/apputils-extension:announcements" in json.loads(config.group(1))["disabledExtensions"]


def test_a_new_users_kernel_has_the_notebook_environment(hub: UpProcess) -> None:
    """The `datascience` extra (the notebook images' environment, installed by `kubelab up`):
    a first cell of NumPy, pandas, scikit-learn and matplotlib runs in a new user's kernel."""
    from kubelab.tests.kernel_support import run_in_kernel

    hub.add_user("nora")
    hub.spawn("nora", {"profile": "cpu"})
    out = run_in_kernel(f"{hub.url}/user/nora/", hub.user_token("nora"), """
import io
import numpy as np, pandas as pd, sklearn, matplotlib
import matplotlib.pyplot as plt
from sklearn.linear_model import LinearRegression
frame = pd.DataFrame({"x": np.arange(10.0)}).assign(y=lambda d: 3 * d.x + 1)
model = LinearRegression().fit(frame[["x"]], frame.y)
fig, ax = plt.subplots()
ax.plot(frame.x, frame.y)
png = io.BytesIO()
fig.savefig(png, format="png")
print(round(float(model.coef_[0]), 6), round(float(model.intercept_), 6), png.getvalue()[:4] == b"\\x89PNG")
""", timeout=120)
    assert out.split() == ["3.0", "1.0", "True"], out
    hub.api("DELETE", "/users/nora/server")
