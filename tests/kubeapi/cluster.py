"""The object tests hold: an emulated cluster in a thread, or a real one from a kubeconfig.

Both classes have the same surface — ``host``, ``kubeconfig_path``, ``async_api_client()``,
``sync_api_client()``, ``register_crd()``, ``reset()``, ``is_emulated`` — so a test written against
the fixture runs unchanged on a real cluster. The emulator-only powers (``add_node``,
``finish_pod``, ``faults``, ``requests``, ``settings``...) skip the test on a real cluster.

The emulator runs on its own event loop in a daemon thread so that the synchronous ``kubernetes``
client (which blocks), ``kubernetes_asyncio`` clients on the test's loop, and an in-process
JupyterHub on yet another loop can all talk to it. Methods here are thread-safe: they hop onto the
server loop and wait for the answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import os
import pathlib
import tempfile
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import kubernetes
import kubernetes_asyncio
import yaml

from .emulator import Emulator, crd_manifest
from .faults import Faults
from .requestlog import RequestLog
from .settings import EmulatorSettings

__all__ = ["KubeCluster", "RealCluster", "EmulatorOnly", "load_configurations"]

T = TypeVar("T")


class EmulatorOnly(Exception):
    """Raised by a real cluster for emulator-only powers; the pytest plugin turns it into a skip."""


def load_configurations(
    kubeconfig: str | os.PathLike[str],
) -> tuple[kubernetes.client.Configuration, kubernetes_asyncio.client.Configuration]:
    """Both clients' configurations from one kubeconfig (the async loader runs in a helper thread,
    as KubeSpawner does it, so this works with or without a running loop)."""
    sync_config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(kubeconfig), client_configuration=sync_config, persist_config=False
    )
    async_config = kubernetes_asyncio.client.Configuration()

    def load() -> None:
        asyncio.run(
            kubernetes_asyncio.config.load_kube_config(
                config_file=str(kubeconfig), client_configuration=async_config, persist_config=False
            )
        )

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(load).result()
    return sync_config, async_config


class _ClientsMixin:
    _sync_config: kubernetes.client.Configuration
    _async_config: kubernetes_asyncio.client.Configuration

    def async_api_client(self) -> kubernetes_asyncio.client.ApiClient:
        """A new ``kubernetes_asyncio`` ApiClient (create it inside the loop that will use it;
        ``async with`` closes it)."""
        return kubernetes_asyncio.client.ApiClient(configuration=copy.deepcopy(self._async_config))

    def sync_api_client(self) -> kubernetes.client.ApiClient:
        """A new synchronous ``kubernetes`` ApiClient."""
        return kubernetes.client.ApiClient(configuration=copy.deepcopy(self._sync_config))

    @property
    def host(self) -> str:
        return str(self._sync_config.host)


class KubeCluster(_ClientsMixin):
    """Emulated cluster: ``start()`` it once (the session fixture does), ``reset()`` per test."""

    is_emulated = True

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        settings: EmulatorSettings | None = None,
    ) -> None:
        self._workdir = pathlib.Path(workdir or tempfile.mkdtemp(prefix="kubeapi-"))
        self._emulator = Emulator(settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.kubeconfig_path = self._workdir / "kubeconfig"

    # --- thread and loop --------------------------------------------------------------------------

    def start(self) -> KubeCluster:
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._emulator.start())
            except BaseException as exc:  # pragma: no cover - reported to the starting thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._emulator.stop())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name="kubeapi-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        self._write_kubeconfig()
        self._sync_config, self._async_config = load_configurations(self.kubeconfig_path)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop = self._thread = None

    def _write_kubeconfig(self) -> None:
        server = f"http://127.0.0.1:{self._emulator.port}"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "kubeapi",
            "clusters": [{"name": "kubeapi", "cluster": {"server": server}}],
            "users": [{"name": "kubeapi", "user": {"token": "kubeapi-test-token"}}],
            "contexts": [
                {
                    "name": "kubeapi",
                    "context": {"cluster": "kubeapi", "user": "kubeapi", "namespace": "default"},
                }
            ],
        }
        self.kubeconfig_path.write_text(yaml.safe_dump(config))

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the server loop and wait for its result."""
        assert self._loop is not None, "the cluster is not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call *fn* on the server loop (the store is not thread-safe) and return its result."""

        async def wrapper() -> T:
            return fn(*args, **kwargs)

        return self.run(wrapper())

    @property
    def emulator(self) -> Emulator:
        """The loop-bound internals; touch only through :meth:`call`/:meth:`run`."""
        return self._emulator

    # --- the test-facing API ----------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._emulator.faults

    @property
    def requests(self) -> RequestLog:
        return self._emulator.requests

    @property
    def settings(self) -> EmulatorSettings:
        return self._emulator.settings

    @property
    def kmock(self) -> Any:
        """kmock's handler: ``cluster.kmock['get /api/v1/namespaces/x/pods'] << 503`` answers
        matching requests with a scripted response before the emulator sees them."""
        return self._emulator.handler

    @property
    def crashes(self) -> list[str]:
        """Tracebacks of bugs in the emulator during the current test."""
        return list(self._emulator.handler.crashes)

    def require_emulator(self, why: str = "") -> None:
        """Nothing to do: this is the emulator (see :meth:`RealCluster.require_emulator`)."""

    def reset(self) -> None:
        self.run(self._emulator.reset())

    def add_node(
        self,
        name: str,
        *,
        cpu: str = "8",
        memory: str = "32Gi",
        gpus: int = 0,
        gpu_resource: str = "nvidia.com/gpu",
        labels: dict[str, str] | None = None,
        taints: list[str | dict[str, Any]] | None = None,
        pods: int = 110,
    ) -> dict[str, Any]:
        """Add a schedulable node; ``taints`` like ``"nvidia.com/gpu=present:NoSchedule"``."""
        return self.call(
            self._emulator.add_node,
            name,
            cpu=cpu,
            memory=memory,
            gpus=gpus,
            gpu_resource=gpu_resource,
            labels=labels,
            taints=taints,
            pods=pods,
        )

    def remove_node(self, name: str) -> None:
        """Delete a node; its pods are deleted (pod garbage collection)."""
        self.call(self._emulator.remove_node, name)

    def register_crd(
        self,
        group: str,
        version: str,
        plural: str,
        kind: str,
        *,
        namespaced: bool = True,
        versions: list[str] | None = None,
        status_subresource: bool = True,
        schema: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a CustomResourceDefinition, served (and discoverable) at once; its versions'
        ``openAPIV3Schema`` is *schema* (default: any fields). ``versions`` lists all served
        versions when there are several."""
        return self.call(
            self._emulator.register_crd,
            group,
            version,
            plural,
            kind,
            namespaced=namespaced,
            versions=versions,
            status_subresource=status_subresource,
            schema=schema,
        )

    def finish_pod(
        self,
        namespace: str,
        name: str,
        exit_code: int = 0,
        logs: str | None = None,
        *,
        container: str | None = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """End a pod's containers (waiting for them to run first): ``Succeeded`` or ``Failed``, or
        a restart under ``restartPolicy: Always``/``OnFailure``."""
        return self.run(
            self._emulator.finish_pod(
                namespace,
                name,
                exit_code=exit_code,
                logs=logs,
                container=container,
                timeout=timeout,
            ),
            timeout=timeout + 5,
        )

    def append_logs(
        self, namespace: str, name: str, text: str, *, container: str | None = None
    ) -> None:
        """Write to a running container's log (followers see it at once)."""
        self.call(self._emulator.append_logs, namespace, name, text, container)

    def compact(self) -> None:
        """Drop the watch history: resuming from any earlier resourceVersion gets 410 Gone."""
        self.call(self._emulator.store.compact)

    def get_object(
        self, plural: str, namespace: str | None, name: str, *, group: str = ""
    ) -> dict[str, Any] | None:
        """Peek at the store without an API request (not counted in ``requests``)."""

        def peek() -> dict[str, Any] | None:
            rt = self._emulator.registry.preferred(group, plural)
            obj = None if rt is None else self._emulator.store.get(rt, namespace, name)
            return copy.deepcopy(obj)

        return self.call(peek)

    def list_objects(
        self, plural: str, namespace: str | None = None, *, group: str = ""
    ) -> list[dict[str, Any]]:
        """Peek at all objects of a resource without an API request."""

        def peek() -> list[dict[str, Any]]:
            rt = self._emulator.registry.preferred(group, plural)
            return [] if rt is None else copy.deepcopy(self._emulator.store.list(rt, namespace))

        return self.call(peek)


class RealCluster(_ClientsMixin):
    """The same surface over the cluster of a kubeconfig (``KUBELAB_TEST_KUBECONFIG``)."""

    is_emulated = False

    def __init__(self, kubeconfig_path: str | os.PathLike[str]) -> None:
        self.kubeconfig_path = pathlib.Path(kubeconfig_path)
        self._sync_config, self._async_config = load_configurations(self.kubeconfig_path)

    def start(self) -> RealCluster:
        return self

    def stop(self) -> None:
        pass

    def reset(self) -> None:
        """Nothing to reset: tests isolate themselves in fresh namespaces."""

    @property
    def crashes(self) -> list[str]:
        return []

    def require_emulator(self, why: str = "") -> None:
        raise EmulatorOnly(why or "needs the emulated cluster (KUBELAB_TEST_KUBECONFIG is set)")

    def _emulator_only(self, what: str) -> Any:
        raise EmulatorOnly(f"{what} needs the emulated cluster (KUBELAB_TEST_KUBECONFIG is set)")

    @property
    def faults(self) -> Faults:
        return self._emulator_only("fault injection")

    @property
    def requests(self) -> RequestLog:
        return self._emulator_only("the request log")

    @property
    def settings(self) -> EmulatorSettings:
        return self._emulator_only("emulator settings")

    def add_node(self, name: str, **kwargs: Any) -> dict[str, Any]:
        return self._emulator_only("add_node")

    def remove_node(self, name: str) -> None:
        self._emulator_only("remove_node")

    def finish_pod(
        self, namespace: str, name: str, exit_code: int = 0, logs: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        return self._emulator_only("finish_pod")

    def append_logs(self, namespace: str, name: str, text: str, **kwargs: Any) -> None:
        self._emulator_only("append_logs")

    def compact(self) -> None:
        self._emulator_only("compact")

    def register_crd(
        self, group: str, version: str, plural: str, kind: str, **kwargs: Any
    ) -> dict[str, Any]:
        """On a real cluster the CRD must be installed already (tests do not install cluster-wide
        definitions); otherwise the test is skipped."""
        api = kubernetes.client.ApiextensionsV1Api(self.sync_api_client())
        name = f"{plural}.{group}"
        try:
            crd = api.read_custom_resource_definition(name)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                raise EmulatorOnly(f"CRD {name} is not installed in the cluster") from None
            raise
        served = {v.name for v in crd.spec.versions if v.served}
        if version not in served:
            raise EmulatorOnly(f"CRD {name} does not serve {version}")
        return crd_manifest(group, version, plural, kind)
