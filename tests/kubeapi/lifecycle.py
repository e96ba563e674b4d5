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


Key = tuple[tuple[str, str], str, str]  # (group/plural, namespace, name)


class GarbageCollector(Controller):
    """Indexes owners and dependents from store events, so it only ever looks at objects whose
    owners changed."""

    name = "garbage-collector"

    def __init__(self, emulator: Any) -> None:
        super().__init__(emulator)
        self.uids: dict[str, Key] = {}
        self.dependents: dict[str, set[Key]] = {}
        self._check: set[Key] = set()
        self._foreground: set[Key] = set()

    def reset(self) -> None:
        super().reset()
        self.uids.clear()
        self.dependents.clear()
        self._check.clear()
        self._foreground.clear()

    def on_event(self, event: WatchEvent) -> None:
        meta = event.obj["metadata"]
        key: Key = (event.group_resource, event.namespace, meta["name"])
        for ref in ((event.old or {}).get("metadata") or {}).get("ownerReferences") or []:
            self.dependents.get(ref.get("uid", ""), set()).discard(key)
        if event.type == "DELETED":
            self.uids.pop(meta["uid"], None)
            self._check |= self.dependents.pop(meta["uid"], set())
            self._foreground.discard(key)
            owners = [
                self.uids.get(ref.get("uid", "")) for ref in meta.get("ownerReferences") or []
            ]
            if self._check or any(owner in self._foreground for owner in owners):
                self.kick()
            return
        self.uids[meta["uid"]] = key
        refs = meta.get("ownerReferences") or []
        for ref in refs:
            self.dependents.setdefault(ref.get("uid", ""), set()).add(key)
        if refs and any(ref.get("uid") not in self.uids for ref in refs):
            self._check.add(key)  # a dependent whose owner is already gone is collected too
            self.kick()
        if meta.get("deletionTimestamp") and "foregroundDeletion" in (meta.get("finalizers") or []):
            self._foreground.add(key)
            self.kick()
        else:
            self._foreground.discard(key)

    def _get(self, key: Key) -> tuple[Any, dict[str, Any] | None]:
        rt = self.emulator.registry.preferred(*key[0])
        obj = self.store.table(key[0]).get((key[1], key[2])) if rt is not None else None
        return rt, obj

    def reconcile(self) -> None:
        store = self.store
        check, self._check = self._check, set()
        for key in check:
            rt, obj = self._get(key)
            if obj is None or rt is None or obj["metadata"].get("deletionTimestamp"):
                continue
            refs = obj["metadata"].get("ownerReferences") or []
            alive = [ref for ref in refs if ref.get("uid") in self.uids]
            if len(alive) == len(refs):
                continue
            if not alive:
                try:
                    store.delete(
                        rt, key[1] or None, key[2], DeleteOptions(propagation_policy="Background")
                    )
                except ApiError:
                    pass
            else:
                new = copy.deepcopy(obj)
                new["metadata"]["ownerReferences"] = alive
                store.write(rt, obj, new)
        for key in list(self._foreground):
            rt, obj = self._get(key)
            if obj is None or rt is None:
                self._foreground.discard(key)
                continue
            remaining = False
            for dependent_key in list(self.dependents.get(obj["metadata"]["uid"], ())):
                dependent_rt, dependent = self._get(dependent_key)
                if dependent is None or dependent_rt is None:
                    continue
                remaining = True
                if not dependent["metadata"].get("deletionTimestamp"):
                    try:
                        store.delete(
                            dependent_rt,
                            dependent_key[1] or None,
                            dependent_key[2],
                            DeleteOptions(propagation_policy="Foreground"),
                        )
                    except ApiError:
                        pass
            if not remaining:
                new = copy.deepcopy(obj)
                finalizers = [f for f in obj["metadata"]["finalizers"] if f != "foregroundDeletion"]
                if finalizers:
                    new["metadata"]["finalizers"] = finalizers
                else:
                    new["metadata"].pop("finalizers", None)
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
