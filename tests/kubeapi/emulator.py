"""The emulated cluster, assembled: store, HTTP handler and controllers on one event loop.

:class:`Emulator` is loop-bound and knows nothing of threads; :class:`kubelab.tests.kubeapi.cluster.
KubeCluster` runs it in a thread of its own and offers the thread-safe API tests use.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import aiohttp.web

from .controller import Controller
from .errors import ApiError
from .events import EventRecorder
from .faults import Faults
from .jobs import JobController
from .kubelet import Kubelet
from .lifecycle import (
    CrdController,
    GarbageCollector,
    NamespaceController,
    service_account_admission,
)
from .quota import QuotaController
from .requestlog import RequestLog
from .resources import BUILTIN_RESOURCES, Registry, ResourceType
from .scheduler import Scheduler
from .server import KubeApiHandler
from .settings import EmulatorSettings
from .store import SYSTEM_NAMESPACES, Store
from .workloads import DeploymentController, ReplicaSetController

__all__ = ["Emulator", "node_manifest", "crd_manifest"]


def _taint(spec: str | dict[str, Any]) -> dict[str, Any]:
    """``"key=value:NoSchedule"`` or ``"key:NoSchedule"`` or a taint dict."""
    if isinstance(spec, dict):
        return dict(spec)
    key_value, _, effect = spec.rpartition(":")
    key, _, value = key_value.partition("=")
    taint = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def node_manifest(
    name: str,
    *,
    cpu: str = "8",
    memory: str = "32Gi",
    gpus: int = 0,
    gpu_resource: str = "nvidia.com/gpu",
    labels: dict[str, str] | None = None,
    taints: list[str | dict[str, Any]] | None = None,
    pods: int = 110,
    address: str = "10.0.0.1",
) -> dict[str, Any]:
    capacity = {
        "cpu": str(cpu),
        "memory": str(memory),
        "pods": str(pods),
        "ephemeral-storage": "100Gi",
    }
    if gpus:
        capacity[gpu_resource] = str(gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                **(labels or {}),
            },
        },
        "spec": {"taints": [_taint(t) for t in taints or []]} if taints else {},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": address},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.31.0",
                "kubeProxyVersion": "v1.31.0",
                "containerRuntimeVersion": "containerd://1.7.20",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "osImage": "kubelab test node",
                "kernelVersion": "6.1.0",
                "machineID": name,
                "systemUUID": name,
                "bootID": name,
            },
        },
    }


def crd_manifest(
    group: str,
    version: str,
    plural: str,
    kind: str,
    *,
    namespaced: bool = True,
    versions: list[str] | None = None,
    status_subresource: bool = True,
    short_names: list[str] | None = None,
    singular: str | None = None,
    schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A CRD whose versions have *schema* as their ``openAPIV3Schema``; by default one that
    accepts any fields (``x-kubernetes-preserve-unknown-fields``)."""
    names = versions or [version]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced" if namespaced else "Cluster",
            "names": {
                "plural": plural,
                "singular": singular or kind.lower(),
                "kind": kind,
                "listKind": f"{kind}List",
                "shortNames": list(short_names or []),
            },
            "versions": [
                {
                    "name": name,
                    "served": True,
                    "storage": name == version,
                    "schema": {
                        "openAPIV3Schema": schema
                        or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                    "subresources": {"status": {}} if status_subresource else {},
                }
                for name in names
            ],
        },
    }


class Emulator:
    def __init__(self, settings: EmulatorSettings | None = None) -> None:
        self.settings = settings or EmulatorSettings()
        self.registry = Registry.with_builtins()
        self.store = Store(self.registry, self.settings)
        self.faults = Faults()
        self.requests = RequestLog()
        self.events = EventRecorder(self.store)
        self.handler = KubeApiHandler(emulator=self)
        self._builtin = {(rt.group, rt.plural): rt for rt in BUILTIN_RESOURCES}
        self.crds = CrdController(self)
        self.namespaces = NamespaceController(self)
        self.gc = GarbageCollector(self)
        self.scheduler = Scheduler(self)
        self.kubelet = Kubelet(self)
        self.jobs = JobController(self)
        self.quota = QuotaController(self)
        self.replicasets = ReplicaSetController(self)
        self.deployments = DeploymentController(self)
        self.controllers: list[Controller] = [
            self.crds,
            self.namespaces,
            self.gc,
            self.scheduler,
            self.kubelet,
            self.jobs,
            self.quota,
            self.replicasets,
            self.deployments,
        ]
        self.store.admission = [self.quota.admit, service_account_admission(self)]
        self._server: asyncio.AbstractServer | None = None
        self._web_server: aiohttp.web.Server | None = None
        self.port = 0
        self._node_count = 0

    def rt(self, plural: str, group: str = "") -> ResourceType:
        """A built-in resource type by plural (and group)."""
        return self._builtin[(group, plural)]

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        await self.handler.__aenter__()  # kmock's live-stream feeder, for users' kmock reactions
        self._web_server = aiohttp.web.Server(self.handler, handler_cancellation=True)
        self._server = await asyncio.get_running_loop().create_server(self._web_server, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        for controller in self.controllers:
            controller.start()
        self.bootstrap()
        await self.settle()

    async def stop(self) -> None:
        self._end_streams()
        for controller in self.controllers:
            await controller.stop()
        if self._server is not None:
            self._server.close()
            if self._web_server is not None:
                await self._web_server.shutdown(1.0)
            await self._server.wait_closed()
        await self.handler.__aexit__(None, None, None)

    def bootstrap(self) -> None:
        """What exists in a fresh cluster: system namespaces and the default nodes."""
        for name in SYSTEM_NAMESPACES:
            if not self.store.namespace_exists(name):
                self.store.create(
                    self.rt("namespaces"), {"metadata": {"name": name}}, None, internal=True
                )
        for name, kwargs in self.settings.default_nodes.items():
            self.add_node(name, **kwargs)

    async def settle(self, rounds: int = 50) -> None:
        """Let the controllers react to what just happened (a few loop iterations)."""
        for _ in range(rounds):
            await asyncio.sleep(0)
            if not any(c._wake.is_set() for c in self.controllers):
                await asyncio.sleep(0)
                if not any(c._wake.is_set() for c in self.controllers):
                    return

    def _end_streams(self) -> None:
        for watcher in list(self.store.watchers):
            watcher.close()
        self.store.watchers.clear()

    async def reset(self) -> None:
        """Back to a fresh cluster; the resourceVersion counter keeps counting (old watches that
        reconnect get 410 Gone and relist, as after an etcd compaction)."""
        self._end_streams()
        for controller in self.controllers:
            controller.reset()
        self.events.reset()
        self.store.objects.clear()
        self.store.compact()
        self.store.rng.seed(0)
        self.registry.types = Registry.with_builtins().types
        self.registry.crds.clear()
        self.faults.clear()
        self.requests.clear()
        self.handler._payloads.clear()
        self.handler._requests.clear()
        self.handler.crashes.clear()
        defaults = EmulatorSettings()
        for field in dataclasses.fields(EmulatorSettings):
            setattr(self.settings, field.name, getattr(defaults, field.name))
        self._node_count = 0
        await asyncio.sleep(0)
        self.bootstrap()
        await self.settle()

    # --- what tests do ----------------------------------------------------------------------------

    def add_node(self, name: str, **kwargs: Any) -> dict[str, Any]:
        """Create a node: *kwargs* are :func:`node_manifest`'s; each node gets the next address."""
        self._node_count += 1
        manifest = node_manifest(name, address=f"10.0.0.{self._node_count}", **kwargs)
        return self.store.create(self.rt("nodes"), manifest, None, internal=True)

    def remove_node(self, name: str) -> None:
        self.store.delete(self.rt("nodes"), None, name)

    def register_crd(
        self, group: str, version: str, plural: str, kind: str, **kwargs: Any
    ) -> dict[str, Any]:
        manifest = crd_manifest(group, version, plural, kind, **kwargs)
        rt = self.rt("customresourcedefinitions", "apiextensions.k8s.io")
        existing = self.store.get(rt, None, manifest["metadata"]["name"])
        if existing is not None:
            return existing
        return self.store.create(rt, manifest, None, internal=True)

    async def finish_pod(
        self,
        namespace: str,
        name: str,
        *,
        exit_code: int = 0,
        logs: str | None = None,
        container: str | None = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """End a pod's containers, waiting (up to *timeout*) for them to be running first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            pod = self.store.get(self.rt("pods"), namespace, name)
            if pod is None:
                raise ApiError.not_found("pods", name)
            running = (pod.get("status") or {}).get("phase") == "Running" and any(
                "running" in (s.get("state") or {})
                for s in (pod.get("status") or {}).get("containerStatuses") or []
            )
            if running:
                return self.kubelet.finish(pod, exit_code=exit_code, logs=logs, container=container)
            if loop.time() > deadline:
                raise TimeoutError(
                    f"pod {namespace}/{name} did not run within {timeout}s "
                    f"(phase {(pod.get('status') or {}).get('phase')})"
                )
            await asyncio.sleep(0.01)

    def append_logs(
        self, namespace: str, name: str, text: str, container: str | None = None
    ) -> None:
        pod = self.store.require(self.rt("pods"), namespace, name)
        chosen = self.kubelet.log_container(pod, container)
        self.kubelet.log_buffer(pod, chosen, previous=False).write(text)
