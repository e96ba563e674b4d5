"""Run code in a kernel of a running Jupyter server, as JupyterLab does: the REST API starts the
kernel, the kernel protocol over the server's websocket (``/api/kernels/{id}/channels``) runs it.

Shared by the image tests (a server from the wheel in a fresh virtual environment) and the
``kubelab up`` tests (a user's server behind the hub's proxy).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone
from typing import Any

import aiohttp


class KernelError(AssertionError):
    """The code raised in the kernel; ``str()`` is the kernel's traceback, without colours."""


def run_in_kernel(server_url: str, token: str, code: str, *, timeout: float = 60) -> str:
    """Start a kernel in the server at *server_url* (its base URL, ending in ``/``), run *code*
    in it, shut it down, and return what the code printed (stdout and stderr streams)."""
    return asyncio.run(asyncio.wait_for(_run(server_url, token, code), timeout))


def _message(code: str, session: str) -> dict[str, Any]:
    return {
        "header": {
            "msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "username": "test",
            "session": session, "version": "5.3",
            "date": datetime.now(timezone.utc).isoformat(),
        },
        "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }


async def _run(server_url: str, token: str, code: str) -> str:
    headers = {"Authorization": f"token {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{server_url}api/kernels", json={}) as r:
            assert r.status == 201, f"{r.status} {await r.text()}"
            kernel = await r.json()
        try:
            ws_url = f"{server_url}api/kernels/{kernel['id']}/channels"
            ws_url = "ws" + ws_url[len("http"):]
            async with http.ws_connect(ws_url, max_msg_size=0) as ws:
                request = _message(code, uuid.uuid4().hex)
                await ws.send_json(request)
                return await _collect(ws, request["header"]["msg_id"])
        finally:
            async with http.delete(f"{server_url}api/kernels/{kernel['id']}"):
                pass


async def _collect(ws: aiohttp.ClientWebSocketResponse, msg_id: str) -> str:
    out: list[str] = []
    error: str | None = None
    async for frame in ws:
        if frame.type != aiohttp.WSMsgType.TEXT:
            continue
        msg = frame.json()
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            error = "\n".join(content.get("traceback") or [f"{content['ename']}: {content['evalue']}"])
        elif kind == "status" and content.get("execution_state") == "idle":
            break
    if error is not None:
        import re

        raise KernelError(re.sub(r"\x1b\[[0-9;]*m", "", error))
    return "".join(out)
