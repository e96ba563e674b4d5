"""Controllers of object lifecycles: garbage collection, namespaces, CRDs, service accounts.

* Garbage collector: when an owner is gone, dependents whose ownerReferences now point only at
  missing owners are deleted (background propagation); ``foregroundDeletion`` owners wait for their
  dependents, then go; ``orphan`` is handled in the store at delete time.
* Namespace controller: a deleted namespace is ``Terminating``; its contents are deleted (pods
  terminate gracefully), then the namespace goes. Creating in it meanwhile is 403 Forbidden.
* New namespaces get their ``default`` ServiceAccount and ``kube-root-ca.crt`` ConfigMap at once
  (a real cluster adds them a moment later; pods naming a missing service account are refused).
* CRDs: creating one serves its resources immediately (discovery included); deleting one deletes
  its objects.
"""

from __future__ import annotations

import copy
from typing import Any

from .controller import Controller
from .errors import ApiError
from .store import Admission, DeleteOptions, WatchEvent

__all__ = ["GarbageCollector", "NamespaceController", "CrdController", "service_account_admission"]


class GarbageCollector(Controller):
    name = "garbage-collector"

    def __init__(self, emulator: Any) -> None:
        super().__init__(emulator)
        self._gone: set[str] = set()

    def reset(self) -> None:
        super().reset()
        self._gone.clear()

    def on_event(self, event: WatchEvent) -> None:
        meta = event.obj["metadata"]
        if event.type == "DELETED":
            self._gone.add(meta["uid"])
            self.kick()
        elif meta.get("deletionTimestamp") and "foregroundDeletion" in (
            meta.get("finalizers") or []
        ):
            self.kick()
        elif event.type == "ADDED" and meta.get("ownerReferences"):
            self.kick()  # a dependent created after its owner went away is collected too

    def reconcile(self) -> None:
        store = self.store
        uids = {obj["metadata"]["uid"] for _, obj in store.iter_all()}
        # Dependents of owners that are gone.
        for group_resource, obj in list(store.iter_all()):
            refs = obj["metadata"].get("ownerReferences") or []
            if not refs or obj["metadata"].get("deletionTimestamp"):
                continue
            missing = [ref for ref in refs if ref.get("uid") not in uids]
            if not missing:
                continue
            rt = self.emulator.registry.preferred(*group_resource)
            if rt is None:
                continue
            if len(missing) == len(refs):
                try:
                    store.delete(
                        rt,
                        obj["metadata"].get("namespace"),
                        obj["metadata"]["name"],
                        DeleteOptions(propagation_policy="Background"),
                    )
                except ApiError:
                    pass
            else:
                new = copy.deepcopy(obj)
                new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") in uids]
                store.write(rt, obj, new)
        self._gone.clear()
        # Owners being deleted in the foreground.
        for group_resource, obj in list(store.iter_all()):
            meta = obj["metadata"]
            if not meta.get("deletionTimestamp") or "foregroundDeletion" not in (
                meta.get("finalizers") or []
            ):
                continue
            dependents = store.dependents_of(meta["uid"])
            for rt, dependent in dependents:
                if not dependent["metadata"].get("deletionTimestamp"):
                    try:
                        store.delete(
                            rt,
                            dependent["metadata"].get("namespace"),
                            dependent["metadata"]["name"],
                            DeleteOptions(propagation_policy="Foreground"),
                        )
                    except ApiError:
                        pass
            if not store.dependents_of(meta["uid"]):
                rt = self.emulator.registry.preferred(*group_resource)
                if rt is not None:
                    new = copy.deepcopy(obj)
                    new["metadata"]["finalizers"] = [
                        f for f in meta["finalizers"] if f != "foregroundDeletion"
                    ]
                    if not new["metadata"]["finalizers"]:
                        del new["metadata"]["finalizers"]
                    new["metadata"]["deletionGracePeriodSeconds"] = 0
                    store.write(rt, obj, new)


class NamespaceController(Controller):
    name = "namespace-controller"

    def on_event(self, event: WatchEvent) -> None:
        if event.group_resource == ("", "namespaces"):
            if event.type == "ADDED":
                self._populate(event.obj)
            self.kick()
        elif event.namespace and event.type == "DELETED":
            self.kick()

    def _populate(self, namespace: dict[str, Any]) -> None:
        """What the service account and root-CA publishers add to every new namespace."""
        name = namespace["metadata"]["name"]
        emulator = self.emulator
        for rt, obj in (
            (emulator.rt("serviceaccounts"), {"metadata": {"name": "default"}}),
            (
                emulator.rt("configmaps"),
                {
                    "metadata": {
                        "name": "kube-root-ca.crt",
                        "annotations": {
                            "kubernetes.io/description": "Contains a CA bundle that "
                            "can be used to verify the kube-apiserver when using "
                            "internal endpoints such as the internal service IP or "
                            "kubernetes.default.svc."
                        },
                    },
                    "data": {
                        "ca.crt": "-----BEGIN CERTIFICATE-----\nkubelab-test\n"
                        "-----END CERTIFICATE-----\n"
                    },
                },
            ),
        ):
            if self.store.get(rt, name, obj["metadata"]["name"]) is None:
                self.store.create(rt, obj, name, internal=True)

    def reconcile(self) -> None:
        store = self.store
        ns_rt = self.emulator.rt("namespaces")
        for namespace in store.list(ns_rt):
            if (namespace.get("status") or {}).get("phase") != "Terminating":
                continue
            name = namespace["metadata"]["name"]
            remaining = 0
            for group_resource, obj in list(store.iter_all()):
                if obj["metadata"].get("namespace") != name:
                    continue
                remaining += 1
                if obj["metadata"].get("deletionTimestamp"):
                    continue
                rt = self.emulator.registry.preferred(*group_resource)
                if rt is None:
                    continue
                try:
                    store.delete(
                        rt,
                        name,
                        obj["metadata"]["name"],
                        DeleteOptions(propagation_policy="Background"),
                    )
                except ApiError:
                    pass
            if remaining == 0 or not any(
                obj["metadata"].get("namespace") == name for _, obj in store.iter_all()
            ):
                store.remove_now(ns_rt, namespace)


class CrdController(Controller):
    """Serves a CRD's resources as soon as it is stored; deletes its objects when it goes."""

    name = "crd-controller"

    def __init__(self, emulator: Any) -> None:
        super().__init__(emulator)
        self._orphaned: set[tuple[str, str]] = set()

    def on_event(self, event: WatchEvent) -> None:
        if event.group_resource != ("apiextensions.k8s.io", "customresourcedefinitions"):
            return
        registry = self.emulator.registry
        if event.type == "DELETED":
            for rt in registry.remove_crd(event.obj["metadata"]["name"]):
                self._orphaned.add(rt.group_resource)
            self.kick()
        else:
            registry.add_crd(event.obj)

    def reconcile(self) -> None:
        for group_resource in list(self._orphaned):
            self._orphaned.discard(group_resource)
            if self.emulator.registry.preferred(*group_resource) is not None:
                continue  # registered again meanwhile
            table = self.store.objects.get(group_resource) or {}
            for obj in list(table.values()):
                self.store.table(group_resource).pop(
                    (obj["metadata"].get("namespace", ""), obj["metadata"]["name"]), None
                )


def service_account_admission(emulator: Any) -> Any:
    """The ServiceAccount admission plugin: a pod must name an existing service account."""

    def admit(request: Admission) -> None:
        if request.operation != "CREATE" or request.rt.group_resource != ("", "pods"):
            return
        namespace = request.obj["metadata"]["namespace"]
        account = (request.obj.get("spec") or {}).get("serviceAccountName") or "default"
        if emulator.store.get(emulator.rt("serviceaccounts"), namespace, account) is None:
            raise ApiError.forbidden(
                "pods",
                request.obj["metadata"]["name"],
                f"error looking up service account {namespace}/{account}: "
                f'serviceaccount "{account}" not found',
            )

    return admit
