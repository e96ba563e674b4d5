"""A real, in-process JupyterHub (jupyterhub's own test ``MockHub``) with the ``kubelab`` spawner
against the Kubernetes API test server: log in, read the chooser, POST it, get a running server
URL; tampered form and REST requests get 400 and create no pod."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import requests

from kubelab.tests.profiles_support import CONFIG_YAML
from kubelab.tests.spawner_support import (
    A100,
    GPU_TAINT,
    add_claims,
    cleanup_shared_watches,
    point_kubespawner_at,
)


async def _tiny_http_server() -> tuple[asyncio.AbstractServer, int]:
    """Stands in for the notebook server at the pod's IP: the hub only checks it answers."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest_asyncio.fixture
async def hub(kube_cluster: Any, tmp_path: Path) -> AsyncIterator[Any]:
    pytest.importorskip("jupyterhub.tests.mocking")
    from jupyterhub import orm, roles
    from jupyterhub.tests.mocking import MockHub

    kube_cluster.require_emulator()
    point_kubespawner_at(str(kube_cluster.kubeconfig_path))
    config_path = tmp_path / "kubelab.yaml"
    config_path.write_text(CONFIG_YAML)
    notebook, port = await _tiny_http_server()

    from traitlets.config import Config

    c = Config()
    c.JupyterHub.spawner_class = "kubelab"  # the entry point
    c.JupyterHub.cookie_secret_file = str(tmp_path / "cookie_secret")  # not in the checkout
    c.ProfileSpawner.kubelab_config = str(config_path)
    c.ProfileSpawner.port = port
    c.ProfileSpawner.storage_pvc_ensure = False
    c.ProfileSpawner.start_timeout = 30
    c.ProfileSpawner.http_timeout = 10
    c.ProfileSpawner.k8s_api_request_timeout = 5
    c.ProfileSpawner.k8s_api_request_retry_timeout = 10
    app = MockHub(config=c)
    await app.initialize([])
    await app.start()
    for name, groups in (("alice", ["ml"]), ("victor", ["vision"])):
        user = orm.User(name=name)
        app.db.add(user)
        for g in groups:
            group = orm.Group.find(app.db, g) or orm.Group(name=g)
            app.db.add(group)
            group.users.append(user)
        app.db.commit()
        roles.assign_default_roles(app.db, entity=user)
    app.db.commit()
    try:
        yield app
    finally:
        for user in list(app.users.values()):
            for spawner in list(user.spawners.values()):
                if spawner.active:
                    try:
                        await asyncio.wait_for(user.stop(spawner.name), 10)
                    except Exception:
                        pass
        notebook.close()
        await cleanup_shared_watches()
        app.log.handlers = []
        MockHub.clear_instance()
        # JupyterHub's stop() cancels every other task of the loop on its way out
        stopping = asyncio.ensure_future(app.stop())
        try:
            await asyncio.shield(stopping)
        except (Exception, asyncio.CancelledError):
            pass


class Browser:
    """A requests session logged into the hub (run in a thread: the hub shares our loop)."""

    def __init__(self, app: Any, name: str):
        self.app = app
        self.base = app.hub.url  # the hub itself: http://127.0.0.1:PORT/<base>/hub/
        self.session = requests.Session()
        self.name = name

    async def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        xsrf = self.session.cookies.get("_xsrf")
        if xsrf:
            headers["X-XSRFToken"] = xsrf
        url = self.base + path
        return await asyncio.to_thread(self.session.request, method, url, headers=headers, timeout=30, **kwargs)

    async def login(self) -> None:
        r = await self.call("GET", "login")
        assert r.status_code == 200
        r = await self.call("POST", "login", data={"username": self.name, "password": self.name,
                                                    "_xsrf": self.session.cookies.get("_xsrf")})
        assert r.status_code == 200, r.text[:500]
        assert self.session.cookies.get("jupyterhub-hub-login") or r.history


async def test_form_post_to_running_server(hub: Any, kube_cluster: Any) -> None:
    kube_cluster.add_node("a100-0", gpus=8, labels=A100, taints=GPU_TAINT)
    add_claims(kube_cluster, "kubelab-ml-alice", "imagenet", "scratch")
    alice = Browser(hub, "alice")
    await alice.login()
    page = await alice.call("GET", "spawn")
    assert page.status_code == 200
    assert 'name="profile" value="a100"' in page.text and 'value="t4"' not in page.text
    assert "8 of 8 free" in page.text
    assert "team ml: 0 of 4 GPUs in use" in page.text

    form = {"profile": "a100", "image--a100": "cuda", "gpus--a100": "1", "dataset": ["imagenet", "scratch"],
            "_xsrf": alice.session.cookies.get("_xsrf")}
    r = await alice.call("POST", "spawn", data=form, allow_redirects=False)
    assert r.status_code == 302, r.text[:1000]
    deadline = time.monotonic() + 30
    while True:
        info = (await alice.call("GET", "api/users/alice")).json()
        server = info.get("servers", {}).get("")
        if server and server.get("ready"):
            break
        assert time.monotonic() < deadline, info
        await asyncio.sleep(0.2)
    assert server["url"].endswith("/user/alice/")
    spawner = hub.users["alice"].spawner
    assert spawner.server.url.startswith("http://127.0.0.1:")  # the pod's IP and port
    assert server["user_options"] == {"profile": "a100", "image": "cuda", "gpus": 1,
                                      "datasets": ["imagenet", "scratch"]}
    pod = kube_cluster.get_object("pods", "kubelab-ml-alice", spawner.pod_name)
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    from kubelab.core.podsecurity import violations

    assert violations(pod) == []
    # the running server URL answers through the hub's proxy route
    routes = await hub.proxy.get_all_routes()
    assert any(r.endswith("/user/alice/") for r in routes)


async def test_tampered_form_and_rest_requests_get_400(hub: Any, kube_cluster: Any) -> None:
    alice = Browser(hub, "alice")
    await alice.login()
    mark = kube_cluster.requests.mark()
    xsrf = alice.session.cookies.get("_xsrf")
    # another group's profile through the form
    r = await alice.call("POST", "spawn", data={"profile": "t4", "_xsrf": xsrf}, allow_redirects=False)
    assert r.status_code == 400, r.status_code
    assert "no profile" in r.text and "t4" in r.text
    # a dataset not granted, and an unknown key, through the REST API
    for body in ({"profile": "cpu", "datasets": ["coco"]}, {"profile": "cpu", "privileged": True},
                 {"profile": "a100", "image--unlisted-choice": "ghcr.io/kubelab/x:1\nevil"}):
        r = await alice.call("POST", "api/users/alice/server", json=body)
        assert r.status_code == 400, (body, r.status_code, r.text[:300])
        assert "Invalid server options" in r.json()["message"]
    writes = [str(x) for x in kube_cluster.requests.since(mark)
              if x.verb in ("create", "update", "patch")]
    assert writes == []
    assert kube_cluster.list_objects("pods", None) == []
    assert re.search(r"kubelab", str(hub.users["alice"].spawner.__class__))
