"""The Kubernetes API test server: one pod's create → Running round trip, seen on an open watch.

Subject: with a watch on pods already open, create a pod and wait until the watch delivers the event
in which it is Running. On the emulator that is one POST, then three store writes (create, the
scheduler's binding, the kubelet's Running status) plus four Event objects, each write fanned out to
the watch as a JSON line. Two variants:

* ``kubeapi: pod create+watch Running (kubernetes_asyncio)`` — the client kubelab and KubeSpawner
  use, with its model (de)serialization, so the figure is what a test pays per pod;
* ``kubeapi: pod create+watch Running (raw aiohttp)`` — the same HTTP traffic from bare aiohttp, so
  the figure is the server's own cost.

Baseline (the same for both): the transport floor. A trivial aiohttp server, running in its own
thread and event loop exactly like the emulator, accepts a JSON POST of the same pod and writes it
as one JSON line to every open streamed GET; the client (bare aiohttp, a persistent streamed GET
read by a background task, as a watch is) waits for that line. It does the work any HTTP-plus-
streaming fake would have to do — two loopback hops, JSON encode/decode, a cross-thread handoff —
and nothing Kubernetes-specific, so the ratio says how much the emulation (and, in the first
variant, the client library) adds per pod. Pods are not deleted between rounds (deleting would add a
second round trip to the subject only); the emulator's node has room for all of them.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import aiohttp
import aiohttp.web
from harness import Benchmark
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import watch as awatch

from kubelab.tests.kubeapi import KubeCluster

NAMESPACE = "bench"
LABELS = {"bench": "kubeapi"}


def _pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(LABELS)},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "busybox:1.36",
                    "command": ["sleep", "3600"],
                    "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}},
                }
            ],
        },
    }


class _TrivialServer:
    """The baseline's server: POST stores nothing, echoes the body as a line to open streams."""

    def __init__(self) -> None:
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: set[asyncio.Queue[bytes]] = set()
        self._ready = threading.Event()
        self._runner: aiohttp.web.AppRunner | None = None

    async def _post(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        body = await request.json()
        line = json.dumps({"type": "ADDED", "object": body}).encode() + b"\n"
        for queue in self._streams:
            queue.put_nowait(line)
        return aiohttp.web.json_response(body, status=201)

    async def _watch(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._streams.add(queue)
        try:
            while True:
                await response.write(await queue.get())
        finally:
            self._streams.discard(queue)

    def start(self) -> None:
        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = aiohttp.web.Application()
            app.router.add_post("/objects", self._post)
            app.router.add_get("/watch", self._watch)
            self._runner = aiohttp.web.AppRunner(app, access_log=None, handler_cancellation=True)
            loop.run_until_complete(self._runner.setup())
            site = aiohttp.web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        threading.Thread(target=main, name="bench-trivial-server", daemon=True).start()
        self._ready.wait()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)


class _Context:
    """What setup builds (a plain class: run.py loads this module outside sys.modules, where
    dataclasses cannot resolve string annotations)."""

    def __init__(self, cluster: KubeCluster, trivial: _TrivialServer) -> None:
        self.cluster = cluster
        self.trivial = trivial
        self.api: aclient.ApiClient | None = None
        self.session: aiohttp.ClientSession | None = None
        #: pod name -> future resolved when a watch reports it (Running; ADDED for the baseline)
        self.waiters: dict[str, asyncio.Future[None]] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.counter = 0
        self.requests_before = 0

    def next_name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    def wait_for(self, name: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters[name] = future
        return future

    def resolve(self, name: str) -> None:
        future = self.waiters.pop(name, None)
        if future is not None and not future.done():
            future.set_result(None)

    def bench_extra(self) -> dict[str, Any]:
        made = self.cluster.requests.since(self.requests_before)
        creates = sum(1 for r in made if r.verb == "create")
        return {
            "emulator HTTP requests per subject round trip": (
                f"{len(made) / max(creates, 1):.2f} (one POST; the watch stays open)"
            )
        }


async def _kubernetes_asyncio_watch(ctx: _Context) -> None:
    core = aclient.CoreV1Api(ctx.api)
    async with awatch.Watch().stream(
        core.list_namespaced_pod, NAMESPACE, label_selector="bench=kubeapi"
    ) as stream:
        async for event in stream:
            obj = event["raw_object"]
            if (obj.get("status") or {}).get("phase") == "Running":
                ctx.resolve("k8s:" + obj["metadata"]["name"])


async def _raw_watch(ctx: _Context, url: str, prefix: str, running_only: bool) -> None:
    assert ctx.session is not None
    async with ctx.session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as response:
        while True:
            line = await response.content.readline()
            if not line:
                return
            obj = json.loads(line)["object"]
            if not running_only or (obj.get("status") or {}).get("phase") == "Running":
                ctx.resolve(prefix + obj["metadata"]["name"])


async def _setup(client_watch: bool) -> _Context:
    """A fresh emulator and trivial server, with only the watches this benchmark reads open (a
    second watch would tax the subject with work for another benchmark)."""
    cluster = await asyncio.to_thread(lambda: KubeCluster().start())
    await asyncio.to_thread(
        cluster.add_node, "bench-node", cpu="1000", memory="1000Gi", pods=100000
    )
    trivial = _TrivialServer()
    trivial.start()
    ctx = _Context(cluster, trivial)
    ctx.api = cluster.async_api_client()
    ctx.session = aiohttp.ClientSession()
    await aclient.CoreV1Api(ctx.api).create_namespace({"metadata": {"name": NAMESPACE}})
    if client_watch:
        ctx.tasks.append(asyncio.create_task(_kubernetes_asyncio_watch(ctx)))
    else:
        url = (
            f"{cluster.host}/api/v1/namespaces/{NAMESPACE}/pods"
            "?watch=true&labelSelector=bench%3Dkubeapi"
        )
        ctx.tasks.append(asyncio.create_task(_raw_watch(ctx, url, "raw:", running_only=True)))
    ctx.tasks.append(
        asyncio.create_task(
            _raw_watch(ctx, f"http://127.0.0.1:{trivial.port}/watch", "base:", running_only=False)
        )
    )
    subject = subject_client if client_watch else subject_raw
    for _ in range(3):  # all streams open and warm before timing anything
        await asyncio.gather(subject(ctx), baseline(ctx))
    ctx.requests_before = cluster.requests.mark()
    return ctx


async def setup_client() -> _Context:
    return await _setup(client_watch=True)


async def setup_raw() -> _Context:
    return await _setup(client_watch=False)


async def teardown(ctx: _Context) -> None:
    for task in ctx.tasks:
        task.cancel()
    await asyncio.gather(*ctx.tasks, return_exceptions=True)
    if ctx.session is not None:
        await ctx.session.close()
    if ctx.api is not None:
        await ctx.api.close()
    ctx.trivial.stop()
    await asyncio.to_thread(ctx.cluster.stop)


async def _post_and_see(ctx: _Context, kind: str, url: str) -> None:
    """POST a new pod (named *kind*-N) to *url* with aiohttp and wait for its stream to show it
    (as *kind*:name)."""
    assert ctx.session is not None
    name = ctx.next_name(kind)
    seen = ctx.wait_for(f"{kind}:{name}")
    async with ctx.session.post(url, json=_pod(name)) as r:
        await r.json()
    await asyncio.wait_for(seen, 10)


async def baseline(ctx: _Context) -> None:
    await _post_and_see(ctx, "base", f"http://127.0.0.1:{ctx.trivial.port}/objects")


async def subject_client(ctx: _Context) -> None:
    name = ctx.next_name("client")
    seen = ctx.wait_for("k8s:" + name)
    await aclient.CoreV1Api(ctx.api).create_namespaced_pod(NAMESPACE, _pod(name))
    await asyncio.wait_for(seen, 10)


async def subject_raw(ctx: _Context) -> None:
    await _post_and_see(ctx, "raw", f"{ctx.cluster.host}/api/v1/namespaces/{NAMESPACE}/pods")


BASELINE_LABEL = "bare aiohttp JSON POST + line on an open stream, trivial server in its own thread"

BENCHMARKS = [
    Benchmark(
        name="kubeapi: pod create+watch Running (kubernetes_asyncio)",
        baseline=baseline,
        subject=subject_client,
        baseline_label=BASELINE_LABEL,
        setup=setup_client,
        teardown=teardown,
        repeat=60,
        warmup=5,
    ),
    Benchmark(
        name="kubeapi: pod create+watch Running (raw aiohttp)",
        baseline=baseline,
        subject=subject_raw,
        baseline_label=BASELINE_LABEL,
        setup=setup_raw,
        teardown=teardown,
        repeat=60,
        warmup=5,
    ),
]
