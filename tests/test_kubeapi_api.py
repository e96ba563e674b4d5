"""The API semantics of the Kubernetes test server, through the real client libraries.

Every test here works in its own namespace and uses only the API, so it also runs against a real
cluster (``KUBELAB_TEST_KUBECONFIG``) except where it calls ``require_emulator()``.
"""

from __future__ import annotations

import asyncio

import kubernetes
import pytest
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import watch as awatch


def _configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": data}


def _pod(name: str, labels: dict[str, str] | None = None, **container: object) -> dict:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "containers": [{"name": "main", "image": "busybox:1.36", **container}],
            "restartPolicy": "Never",
        },
    }


# --- CRUD, PUT conflicts and patches with the synchronous client ----------------------------------


def test_crud_put_conflict_and_patches_with_sync_client(kube_namespace, kube_sync_api):
    core = kubernetes.client.CoreV1Api(kube_sync_api)
    ns = kube_namespace

    created = core.create_namespaced_config_map(ns, _configmap("settings", {"app": "x"}, a="1"))
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert created.metadata.namespace == ns
    first_rv = int(created.metadata.resource_version)

    with pytest.raises(kubernetes.client.ApiException) as exists:
        core.create_namespaced_config_map(ns, _configmap("settings"))
    assert exists.value.status == 409 and '"AlreadyExists"' in exists.value.body

    # PUT with the current resourceVersion succeeds and moves it forward.
    created.data["b"] = "2"
    updated = core.replace_namespaced_config_map("settings", ns, created)
    assert updated.data == {"a": "1", "b": "2"}
    assert int(updated.metadata.resource_version) > first_rv

    # PUT with the stale resourceVersion is a 409 Conflict, as optimistic concurrency demands.
    created.data["c"] = "3"
    with pytest.raises(kubernetes.client.ApiException) as conflict:
        core.replace_namespaced_config_map("settings", ns, created)
    assert conflict.value.status == 409
    assert '"reason":"Conflict"' in conflict.value.body.replace(" ", "")
    assert "the object has been modified" in conflict.value.body

    # A dict body goes as a strategic merge patch: keys merge, null deletes.
    patched = core.patch_namespaced_config_map("settings", ns, {"data": {"a": None, "d": "4"}})
    assert patched.data == {"b": "2", "d": "4"}
    # A list body goes as a JSON patch.
    patched = core.patch_namespaced_config_map(
        "settings",
        ns,
        [
            {"op": "replace", "path": "/data/b", "value": "20"},
            {"op": "add", "path": "/metadata/labels/tier", "value": "web"},
        ],
    )
    assert patched.data == {"b": "20", "d": "4"}
    assert patched.metadata.labels == {"app": "x", "tier": "web"}
    # A patch naming a stale resourceVersion conflicts too.
    with pytest.raises(kubernetes.client.ApiException) as stale:
        core.patch_namespaced_config_map(
            "settings", ns, {"metadata": {"resourceVersion": str(first_rv)}}
        )
    assert stale.value.status == 409

    listed = core.list_namespaced_config_map(ns, label_selector="app=x")
    assert [c.metadata.name for c in listed.items] == ["settings"]
    assert int(listed.metadata.resource_version) >= int(patched.metadata.resource_version)

    core.delete_namespaced_config_map("settings", ns)
    with pytest.raises(kubernetes.client.ApiException) as gone:
        core.read_namespaced_config_map("settings", ns)
    assert gone.value.status == 404
    assert (
        'configmaps \\"settings\\" not found' in gone.value.body
        or 'configmaps "settings" not found' in gone.value.body
    )


def test_metadata_generate_name_generation_and_validation(kube_namespace, kube_sync_api):
    core = kubernetes.client.CoreV1Api(kube_sync_api)
    apps = kubernetes.client.AppsV1Api(kube_sync_api)
    ns = kube_namespace

    generated = core.create_namespaced_secret(
        ns, {"metadata": {"generateName": "token-"}, "stringData": {"k": "v"}}
    )
    assert generated.metadata.name.startswith("token-") and len(generated.metadata.name) == 11
    assert generated.data == {"k": "dg=="}  # stringData is encoded into data, as a real server does
    assert generated.type == "Opaque"

    with pytest.raises(kubernetes.client.ApiException) as nameless:
        core.create_namespaced_config_map(ns, {"metadata": {}})
    assert nameless.value.status == 422
    assert "name or generateName is required" in nameless.value.body

    with pytest.raises(kubernetes.client.ApiException) as bad_name:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "Not_A_Name"}})
    assert bad_name.value.status == 422

    with pytest.raises(kubernetes.client.ApiException) as no_ns:
        core.create_namespaced_config_map(f"{ns}-missing", _configmap("x"))
    assert no_ns.value.status == 404 and "namespaces" in no_ns.value.body

    deployment = {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1"}]},
            },
        },
    }
    stored = apps.create_namespaced_deployment(ns, deployment)
    assert stored.metadata.generation == 1
    relabelled = apps.patch_namespaced_deployment("web", ns, {"metadata": {"labels": {"x": "y"}}})
    assert relabelled.metadata.generation == 1  # metadata changes leave the generation alone
    scaled = apps.patch_namespaced_deployment("web", ns, {"spec": {"replicas": 0, "paused": True}})
    assert scaled.metadata.generation == 2


def test_status_subresource_is_separate(kube_namespace, kube_sync_api):
    batch = kubernetes.client.BatchV1Api(kube_sync_api)
    ns = kube_namespace
    job = {
        "metadata": {"name": "held"},
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox:1.36"}],
                }
            },
        },
    }
    batch.create_namespaced_job(ns, job)
    # Writing status through the main resource is ignored... (read first: the Job controller may
    # have written the status since, so the created object's resourceVersion can be stale)
    current = batch.read_namespaced_job("held", ns)
    current.status = kubernetes.client.V1JobStatus(succeeded=5)
    replaced = batch.replace_namespaced_job("held", ns, current)
    assert replaced.status.succeeded is None
    # ...and through /status it is the only thing that changes.
    patched = batch.patch_namespaced_job_status(
        "held", ns, {"status": {"succeeded": 5}, "spec": {"parallelism": 7}}
    )
    assert patched.status.succeeded == 5
    assert patched.spec.parallelism == 1


# --- selectors and watches with kubernetes_asyncio ------------------------------------------------


async def test_label_and_field_selectors_with_async_client(kube_namespace, kube_api):
    core = aclient.CoreV1Api(kube_api)
    ns = kube_namespace
    for name, labels in (
        ("a", {"app": "web", "tier": "front"}),
        ("b", {"app": "web"}),
        ("c", {"app": "db", "tier": "back"}),
        ("d", {}),
    ):
        await core.create_namespaced_config_map(ns, _configmap(name, labels))

    async def names(**kwargs: str) -> list[str]:
        listed = await core.list_namespaced_config_map(ns, **kwargs)
        return sorted(
            c.metadata.name for c in listed.items if c.metadata.name != "kube-root-ca.crt"
        )

    assert await names(label_selector="app=web") == ["a", "b"]
    assert await names(label_selector="app==web") == ["a", "b"]
    assert await names(label_selector="app!=web") == ["c", "d"]
    assert await names(label_selector="app in (web, db)") == ["a", "b", "c"]
    assert await names(label_selector="app notin (web)") == ["c", "d"]
    assert await names(label_selector="tier") == ["a", "c"]
    assert await names(label_selector="!tier") == ["b", "d"]
    assert await names(label_selector="app=web,tier=front") == ["a"]
    assert await names(field_selector="metadata.name=c") == ["c"]
    assert await names(field_selector="metadata.name!=c", label_selector="app") == ["a", "b"]
    with pytest.raises(aclient.ApiException) as unsupported:
        await core.list_namespaced_config_map(ns, field_selector="data.x=1")
    assert unsupported.value.status == 400


async def _watched(
    core: aclient.CoreV1Api, ns: str, resource_version: str, count: int = 0, **query: str
) -> list[tuple[str, str, str]]:
    """``(type, name, resourceVersion)`` of what a watch of *ns*'s ConfigMaps from
    *resource_version* (``timeoutSeconds=1``) delivers: its first *count* events, or all of them
    until the server ends it."""
    seen = []
    async with awatch.Watch().stream(
        core.list_namespaced_config_map,
        ns,
        resource_version=resource_version,
        timeout_seconds=1,
        **query,
    ) as stream:
        async for event in stream:
            metadata = event["object"].metadata
            seen.append((event["type"], metadata.name, metadata.resource_version))
            if len(seen) == count:
                break
    return seen


async def test_watch_resumes_from_resource_version_and_ends_at_timeout(
    kube_cluster, kube_namespace, kube_api
):
    core = aclient.CoreV1Api(kube_api)
    ns = kube_namespace
    start_rv = (await core.list_namespaced_config_map(ns)).metadata.resource_version
    await core.create_namespaced_config_map(ns, _configmap("one", {"watched": "yes"}))
    await core.create_namespaced_config_map(ns, _configmap("ignored", {"watched": "no"}))
    await core.patch_namespaced_config_map("one", ns, {"data": {"k": "v"}})

    loop = asyncio.get_running_loop()
    started = loop.time()
    seen = await _watched(core, ns, start_rv, label_selector="watched=yes")
    # The stream ended by itself (timeoutSeconds), after replaying only the matching events.
    assert [(t, n) for t, n, _ in seen] == [("ADDED", "one"), ("MODIFIED", "one")]
    assert loop.time() - started < 10

    # Resuming from the last seen resourceVersion delivers what happened since, and nothing before.
    last_rv = seen[-1][2]
    await core.create_namespaced_config_map(ns, _configmap("two", {"watched": "yes"}))
    # An object that stops matching the selector leaves the watch as DELETED.
    await core.patch_namespaced_config_map("one", ns, {"metadata": {"labels": {"watched": "no"}}})
    resumed = await _watched(core, ns, last_rv, 2, label_selector="watched=yes")
    assert [(t, n) for t, n, _ in resumed] == [("ADDED", "two"), ("DELETED", "one")]

    # A resourceVersion older than the watch history is 410 Gone.
    kube_cluster.require_emulator("compaction is not under test control on a real cluster")
    kube_cluster.compact()
    with pytest.raises(aclient.ApiException) as gone:
        await _watched(core, ns, last_rv)
    assert gone.value.status == 410


async def test_watch_without_resource_version_lists_then_follows(
    kube_cluster, kube_namespace, kube_api
):
    kube_cluster.require_emulator("bookmark timing is configured in the emulator")
    kube_cluster.settings.bookmark_interval = 0.05
    core = aclient.CoreV1Api(kube_api)
    ns = kube_namespace
    await core.create_namespaced_config_map(ns, _configmap("before", {"w": "1"}))
    events = []
    watch = awatch.Watch()
    async with watch.stream(
        core.list_namespaced_config_map,
        ns,
        label_selector="w=1",
        allow_watch_bookmarks=True,
        timeout_seconds=5,
    ) as stream:
        async for event in stream:
            events.append(event["type"])
            if event["type"] == "ADDED" and event["object"].metadata.name == "before":
                await core.create_namespaced_config_map(ns, _configmap("after", {"w": "1"}))
            if "BOOKMARK" in events and events.count("ADDED") == 2:
                break
    assert events[0] == "ADDED" and events.count("ADDED") == 2
    assert "BOOKMARK" in events
    assert int(watch.resource_version) > 0


# --- discovery and custom resources ---------------------------------------------------------------


async def test_discovery_reflects_registered_crds(kube_cluster, kube_namespace, kube_api):
    kube_cluster.require_emulator("registering CRDs changes the whole cluster")
    apis = aclient.ApisApi(kube_api)
    groups = {g.name for g in (await apis.get_api_versions()).groups}
    assert {"apps", "batch", "rbac.authorization.k8s.io"} <= groups
    assert "trainer.kubeflow.org" not in groups

    kube_cluster.register_crd("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob")
    kube_cluster.register_crd(
        "serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService"
    )
    groups = {g.name: g for g in (await apis.get_api_versions()).groups}
    assert groups["trainer.kubeflow.org"].preferred_version.version == "v1alpha1"
    assert "serving.kserve.io" in groups
    resources = await aclient.CustomObjectsApi(kube_api).get_api_resources(
        "trainer.kubeflow.org", "v1alpha1"
    )
    assert [r.name for r in resources.resources] == ["trainjobs", "trainjobs/status"]
    assert resources.resources[0].kind == "TrainJob" and resources.resources[0].namespaced

    custom = aclient.CustomObjectsApi(kube_api)
    body = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "resnet", "labels": {"user": "alice"}},
        "spec": {"numNodes": 2},
    }
    created = await custom.create_namespaced_custom_object(
        "trainer.kubeflow.org", "v1alpha1", kube_namespace, "trainjobs", body
    )
    assert created["metadata"]["uid"] and created["metadata"]["generation"] == 1
    listed = await custom.list_namespaced_custom_object(
        "trainer.kubeflow.org", "v1alpha1", kube_namespace, "trainjobs", label_selector="user=alice"
    )
    assert [i["metadata"]["name"] for i in listed["items"]] == ["resnet"]
    # kubernetes_asyncio sends a dict body to the custom-objects PATCH as a JSON patch unless told
    # otherwise; a real server answers 400, and so does this one.
    with pytest.raises(aclient.ApiException) as wrong_type:
        await custom.patch_namespaced_custom_object(
            "trainer.kubeflow.org",
            "v1alpha1",
            kube_namespace,
            "trainjobs",
            "resnet",
            {"spec": {"numNodes": 4}},
        )
    assert wrong_type.value.status == 400
    assert "cannot unmarshal object into Go value of type jsonpatch.Patch" in wrong_type.value.body
    patched = await custom.patch_namespaced_custom_object(
        "trainer.kubeflow.org",
        "v1alpha1",
        kube_namespace,
        "trainjobs",
        "resnet",
        {"spec": {"numNodes": 4}},
        _content_type="application/merge-patch+json",
    )
    assert patched["spec"]["numNodes"] == 4 and patched["metadata"]["generation"] == 2

    # Unregistered API groups are not served.
    with pytest.raises(aclient.ApiException) as missing:
        await custom.list_namespaced_custom_object(
            "kubeflow.org", "v1", kube_namespace, "pytorchjobs"
        )
    assert missing.value.status == 404

    # Deleting the CRD takes its group out of discovery.
    ext = aclient.ApiextensionsV1Api(kube_api)
    await ext.delete_custom_resource_definition("trainjobs.trainer.kubeflow.org")
    groups = {g.name for g in (await apis.get_api_versions()).groups}
    assert "trainer.kubeflow.org" not in groups and "serving.kserve.io" in groups


# --- namespaces -----------------------------------------------------------------------------------


async def test_deleting_a_namespace_deletes_its_contents(kube_cluster, kube_api):
    core = aclient.CoreV1Api(kube_api)
    await core.create_namespace({"metadata": {"name": "doomed"}})
    await core.create_namespaced_config_map("doomed", _configmap("cm"))
    await core.create_namespaced_pod("doomed", _pod("worker"))
    response = await core.delete_namespace("doomed", _preload_content=False)
    assert (await response.json())["status"]["phase"] == "Terminating"
    with pytest.raises(aclient.ApiException) as refused:
        await core.create_namespaced_config_map("doomed", _configmap("late"))
    assert refused.value.status in (403, 404)
    for _ in range(500):
        try:
            await core.read_namespace("doomed")
        except aclient.ApiException as exc:
            assert exc.status == 404
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the namespace was not deleted")
    assert (
        await core.list_pod_for_all_namespaces(field_selector="metadata.namespace=doomed")
    ).items == []
