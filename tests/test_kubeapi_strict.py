"""The Kubernetes API test server refuses what a real API server refuses (issue 11, items 9-12).

One class per difference that was found: each shows the refusal (status code, reason, message as
the real apiserver words it) and that nothing was saved. Bodies go over raw HTTP where a client
library would not send them (a number in a ConfigMap's data, an unknown field).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import kubernetes
import pytest


def _http(
    cluster, method: str, path: str, body: Any = None, content_type: str = "application/json"
) -> tuple[int, dict[str, Any], list[str]]:
    """One request: (status, JSON body, Warning header values)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{cluster.host}{path}", data=data, method=method,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers.get_all(
                "Warning") or []
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers.get_all("Warning") or []


def _cm(name: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, **extra}


def _pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}],
                     "restartPolicy": "Never"}}


# --- item 9 ---------------------------------------------------------------------------------------


class TestDeleteCollectionWithoutNamespace:
    def test_is_405_and_deletes_nothing(self, kube_cluster, kube_namespace):
        _http(kube_cluster, "POST", f"/api/v1/namespaces/{kube_namespace}/configmaps", _cm("a"))
        status, body, _ = _http(kube_cluster, "DELETE", "/api/v1/configmaps")
        assert (status, body["reason"]) == (405, "MethodNotAllowed")
        status, _, _ = _http(kube_cluster, "GET", f"/api/v1/namespaces/{kube_namespace}/configmaps/a")
        assert status == 200


class TestUnsupportedDryRun:
    def test_create_with_a_bad_dry_run_is_422_and_saves_nothing(self, kube_cluster, kube_namespace):
        path = f"/api/v1/namespaces/{kube_namespace}/configmaps"
        status, body, _ = _http(kube_cluster, "POST", path + "?dryRun=Yes", _cm("a"))
        assert (status, body["reason"]) == (422, "Invalid")
        assert body["message"] == ('CreateOptions.meta.k8s.io "" is invalid: dryRun: Unsupported '
                                   'value: []string{"Yes"}: supported values: "All"')
        assert _http(kube_cluster, "GET", path + "/a")[0] == 404
        # dryRun=All: validated, answered, not saved
        assert _http(kube_cluster, "POST", path + "?dryRun=All", _cm("a"))[0] == 201
        assert _http(kube_cluster, "GET", path + "/a")[0] == 404

    def test_patch_and_delete_check_it_too(self, kube_cluster, kube_namespace):
        path = f"/api/v1/namespaces/{kube_namespace}/configmaps"
        _http(kube_cluster, "POST", path, _cm("a", data={"k": "1"}))
        status, body, _ = _http(kube_cluster, "PATCH", path + "/a?dryRun=x", {"data": {"k": "2"}},
                                "application/merge-patch+json")
        assert status == 422 and body["message"].startswith('PatchOptions.meta.k8s.io "" is invalid')
        status, body, _ = _http(kube_cluster, "DELETE", path + "/a", {"dryRun": ["Nope"]})
        assert status == 422 and body["message"].startswith('DeleteOptions.meta.k8s.io "" is invalid')
        assert _http(kube_cluster, "GET", path + "/a")[1]["data"] == {"k": "1"}


class TestResourceVersionOnCreate:
    def test_is_refused(self, kube_cluster, kube_namespace, kube_sync_api):
        core = kubernetes.client.CoreV1Api(kube_sync_api)
        body = _cm("a")
        body["metadata"]["resourceVersion"] = "5"
        with pytest.raises(kubernetes.client.ApiException) as refused:
            core.create_namespaced_config_map(kube_namespace, body)
        assert refused.value.status == 500
        assert "resourceVersion should not be set on objects to be created" in refused.value.body
        with pytest.raises(kubernetes.client.ApiException) as missing:
            core.read_namespaced_config_map("a", kube_namespace)
        assert missing.value.status == 404


class TestFinalizerAddedWhileDeleting:
    def test_is_422_and_removing_one_still_works(self, kube_namespace, kube_sync_api):
        core = kubernetes.client.CoreV1Api(kube_sync_api)
        core.create_namespaced_config_map(
            kube_namespace, {"metadata": {"name": "a", "finalizers": ["example.com/keep"]}})
        core.delete_namespaced_config_map("a", kube_namespace)
        with pytest.raises(kubernetes.client.ApiException) as refused:
            core.patch_namespaced_config_map(
                "a", kube_namespace,
                {"metadata": {"finalizers": ["example.com/keep", "example.com/more"]}})
        assert refused.value.status == 422
        body = json.loads(refused.value.body)
        assert body["details"]["causes"][0]["field"] == "metadata.finalizers"
        assert ("Forbidden: no new finalizers can be added if the object is being deleted, found "
                'new finalizers []string{"example.com/more"}') in body["message"]
        core.patch_namespaced_config_map("a", kube_namespace, {"metadata": {"finalizers": None}})
        with pytest.raises(kubernetes.client.ApiException) as gone:
            core.read_namespaced_config_map("a", kube_namespace)
        assert gone.value.status == 404


class TestInvalidListOptions:
    @pytest.mark.parametrize(
        ("query", "why"),
        [
            ("resourceVersionMatch=NotOlderThan",
             "resourceVersionMatch is forbidden unless resourceVersion is provided"),
            ("resourceVersionMatch=Exact&resourceVersion=0",
             'resourceVersionMatch "exact" is forbidden for resourceVersion "0"'),
            ("resourceVersionMatch=Sometimes&resourceVersion=1",
             'Unsupported value: "Sometimes": supported values: "Exact", "NotOlderThan", ""'),
            ("sendInitialEvents=true", "sendInitialEvents is forbidden for list"),
            ("watch=1&resourceVersionMatch=NotOlderThan",
             "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"),
            ("watch=1&sendInitialEvents=true",
             "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"),
        ],
    )
    def test_are_422(self, kube_cluster, kube_namespace, query, why):
        status, body, _ = _http(
            kube_cluster, "GET", f"/api/v1/namespaces/{kube_namespace}/configmaps?{query}")
        assert (status, body["reason"]) == (422, "Invalid")
        assert body["message"].startswith('ListOptions.meta.k8s.io "" is invalid: ')
        assert why in body["message"]

    def test_valid_ones_are_served(self, kube_cluster, kube_namespace):
        base = f"/api/v1/namespaces/{kube_namespace}/configmaps"
        assert _http(kube_cluster, "GET", base + "?resourceVersion=0&resourceVersionMatch="
                                                 "NotOlderThan")[0] == 200


class TestNoGenerationWhereNoneIsSet:
    def test_pods_storageclasses_get_none_deployments_do(self, kube_cluster, kube_namespace):
        kube_cluster.require_emulator("the server version decides pod generations (1.33+)")
        _, pod, _ = _http(kube_cluster, "POST", f"/api/v1/namespaces/{kube_namespace}/pods",
                          _pod("p"))
        assert "generation" not in pod["metadata"]
        _, sc, _ = _http(kube_cluster, "POST", "/apis/storage.k8s.io/v1/storageclasses",
                         {"metadata": {"name": f"sc-{kube_namespace}"}, "provisioner": "x"})
        try:
            assert "generation" not in sc["metadata"]
        finally:
            _http(kube_cluster, "DELETE", f"/apis/storage.k8s.io/v1/storageclasses/sc-{kube_namespace}")
        _, cj, _ = _http(kube_cluster, "POST", f"/apis/batch/v1/namespaces/{kube_namespace}/cronjobs",
                         {"metadata": {"name": "c"}, "spec": {"schedule": "* * * * *",
                          "jobTemplate": {"spec": {"template": {"spec": {
                              "containers": [{"name": "m", "image": "x"}],
                              "restartPolicy": "Never"}}}}}})
        assert cj["metadata"]["generation"] == 1


class TestPropagationPolicy:
    def test_a_bad_value_is_422_before_the_404(self, kube_cluster, kube_namespace):
        status, body, _ = _http(
            kube_cluster, "DELETE",
            f"/api/v1/namespaces/{kube_namespace}/configmaps/missing?propagationPolicy=Sideways")
        assert (status, body["reason"]) == (422, "Invalid")
        assert body["message"] == (
            'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: '
            '"Sideways": supported values: "Foreground", "Background", "Orphan", "nil"')


# --- item 10 --------------------------------------------------------------------------------------


class TestUnknownFields:
    def test_are_dropped_with_a_warning(self, kube_cluster, kube_namespace):
        path = f"/api/v1/namespaces/{kube_namespace}/configmaps"
        status, body, warnings = _http(kube_cluster, "POST", path,
                                       _cm("a", data={"k": "v"}, spex={"x": 1}))
        assert status == 201
        assert warnings == ['299 - "unknown field \\"spex\\""']
        assert "spex" not in body
        assert "spex" not in _http(kube_cluster, "GET", path + "/a")[1]

    def test_nested_paths_are_named(self, kube_cluster, kube_namespace):
        pod = _pod("p")
        pod["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
        status, body, warnings = _http(
            kube_cluster, "POST", f"/api/v1/namespaces/{kube_namespace}/pods", pod)
        assert status == 201
        assert warnings == ['299 - "unknown field \\"spec.containers[0].imagePullPolicyy\\""']
        assert "imagePullPolicyy" not in body["spec"]["containers"][0]

    def test_strict_refuses_and_ignore_is_silent(self, kube_cluster, kube_namespace):
        path = f"/api/v1/namespaces/{kube_namespace}/configmaps"
        status, body, _ = _http(kube_cluster, "POST", path + "?fieldValidation=Strict",
                                _cm("a", spex=1))
        assert (status, body["reason"]) == (400, "BadRequest")
        assert body["message"] == 'strict decoding error: unknown field "spex"'
        assert _http(kube_cluster, "GET", path + "/a")[0] == 404
        status, _, warnings = _http(kube_cluster, "POST", path + "?fieldValidation=Ignore",
                                    _cm("a", spex=1))
        assert (status, warnings) == (201, [])
        status, body, _ = _http(kube_cluster, "POST", path + "?fieldValidation=Loose", _cm("b"))
        assert status == 422 and "fieldValidation: Unsupported value" in body["message"]

    def test_a_patch_adding_one_is_pruned_too(self, kube_cluster, kube_namespace):
        path = f"/api/v1/namespaces/{kube_namespace}/configmaps"
        _http(kube_cluster, "POST", path, _cm("a"))
        status, body, warnings = _http(kube_cluster, "PATCH", path + "/a", {"extra": True},
                                       "application/merge-patch+json")
        assert status == 200 and "extra" not in body and len(warnings) == 1


class TestWrongTypes:
    def test_a_number_in_a_configmaps_data_is_400(self, kube_cluster, kube_namespace):
        path = f"/api/v1/namespaces/{kube_namespace}/configmaps"
        status, body, _ = _http(kube_cluster, "POST", path, _cm("a", data={"n": 1}))
        assert (status, body["reason"]) == (400, "BadRequest")
        assert body["message"] == (
            'ConfigMap in version "v1" cannot be handled as a ConfigMap: json: cannot unmarshal '
            "number into Go struct field ConfigMap.data of type string")
        assert _http(kube_cluster, "GET", path + "/a")[0] == 404

    def test_quantities_take_numbers_as_go_does(self, kube_cluster, kube_namespace):
        pod = _pod("p")
        pod["spec"]["containers"][0]["resources"] = {"limits": {"cpu": 1, "memory": "1Gi"}}
        status, _, _ = _http(kube_cluster, "POST", f"/api/v1/namespaces/{kube_namespace}/pods", pod)
        assert status == 201

    def test_a_string_where_a_list_goes_is_400(self, kube_cluster, kube_namespace):
        pod = _pod("p")
        pod["spec"]["containers"][0]["args"] = "--flag"
        status, body, _ = _http(kube_cluster, "POST", f"/api/v1/namespaces/{kube_namespace}/pods", pod)
        assert status == 400
        assert ("cannot unmarshal string into Go struct field Container.spec.containers.args of "
                "type []string") in body["message"]


_TRAINJOB_SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["numNodes"],
            "properties": {
                "numNodes": {"type": "integer"},
                "mode": {"type": "string", "enum": ["fast", "slow"]},
                "port": {"x-kubernetes-int-or-string": True,
                         "anyOf": [{"type": "integer"}, {"type": "string"}]},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}


class TestCustomResourceSchema:
    @pytest.fixture
    def path(self, kube_cluster, kube_namespace):
        kube_cluster.require_emulator("registers a CRD with its own schema")
        kube_cluster.register_crd("schema.kubelab.test", "v1", "trials", "Trial",
                                  schema=_TRAINJOB_SCHEMA)
        return f"/apis/schema.kubelab.test/v1/namespaces/{kube_namespace}/trials"

    @staticmethod
    def _trial(name: str, **spec: Any) -> dict[str, Any]:
        return {"apiVersion": "schema.kubelab.test/v1", "kind": "Trial",
                "metadata": {"name": name}, "spec": spec}

    def test_unknown_fields_are_pruned_preserved_ones_kept(self, kube_cluster, path):
        status, body, warnings = _http(kube_cluster, "POST", path, self._trial(
            "a", numNodes=2, nodes=3, extra={"any": {"thing": 1}}, port="http"))
        assert status == 201
        assert warnings == ['299 - "unknown field \\"spec.nodes\\""']
        assert body["spec"] == {"numNodes": 2, "extra": {"any": {"thing": 1}}, "port": "http"}
        status, body, _ = _http(kube_cluster, "POST", path + "?fieldValidation=Strict",
                                self._trial("b", numNodes=2, nodes=3))
        assert (status, body["message"]) == (400, 'strict decoding error: unknown field "spec.nodes"')

    def test_wrong_types_missing_and_unsupported_values_are_422(self, kube_cluster, path):
        status, body, _ = _http(kube_cluster, "POST", path, self._trial(
            "a", numNodes="two", mode="medium", labels={"a": 1}))
        assert (status, body["reason"]) == (422, "Invalid")
        causes = {c["field"]: c["message"] for c in body["details"]["causes"]}
        assert causes == {
            "spec.numNodes": 'Invalid value: "string": spec.numNodes in body must be of type '
                             'integer: "string"',
            "spec.mode": 'Unsupported value: "medium": supported values: "fast", "slow"',
            "spec.labels.a": 'Invalid value: "integer": spec.labels.a in body must be of type '
                             'string: "integer"',
        }
        assert body["message"].startswith('Trial.schema.kubelab.test "a" is invalid: [')
        status, body, _ = _http(kube_cluster, "POST", path, self._trial("a"))
        assert status == 422 and body["details"]["causes"] == [
            {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.numNodes"}]
        assert _http(kube_cluster, "GET", path + "/a")[0] == 404

    def test_a_patch_is_checked_as_well(self, kube_cluster, path):
        _http(kube_cluster, "POST", path, self._trial("a", numNodes=1))
        status, _, _ = _http(kube_cluster, "PATCH", path + "/a", {"spec": {"numNodes": "x"}},
                             "application/merge-patch+json")
        assert status == 422
        assert _http(kube_cluster, "GET", path + "/a")[1]["spec"] == {"numNodes": 1}


# --- item 11 --------------------------------------------------------------------------------------


class TestServerSideApply:
    def test_is_refused_with_415(self, kube_cluster, kube_namespace):
        kube_cluster.require_emulator("a real cluster implements server-side apply")
        path = f"/api/v1/namespaces/{kube_namespace}/configmaps/a?fieldManager=me"
        status, body, _ = _http(kube_cluster, "PATCH", path, _cm("a"), "application/apply-patch+yaml")
        assert (status, body["reason"]) == (415, "UnsupportedMediaType")
        assert "does not implement server-side apply" in body["message"]
        assert _http(kube_cluster, "GET", path.split("?")[0])[0] == 404


# --- item 12 --------------------------------------------------------------------------------------


class TestEventsV1:
    def test_create_list_and_required_fields(self, kube_cluster, kube_namespace):
        path = f"/apis/events.k8s.io/v1/namespaces/{kube_namespace}/events"
        event = {"metadata": {"name": "e"}, "eventTime": "2026-01-01T00:00:00.000000Z",
                 "reportingController": "kubelab.io/jobs", "reportingInstance": "hub",
                 "action": "Submit", "reason": "Submitted", "type": "Normal", "note": "hi",
                 "regarding": {"kind": "Job", "name": "j", "namespace": kube_namespace}}
        status, body, _ = _http(kube_cluster, "POST", path, event)
        assert status == 201 and body["apiVersion"] == "events.k8s.io/v1"
        assert [e["note"] for e in _http(kube_cluster, "GET", path)[1]["items"]] == ["hi"]
        status, body, _ = _http(kube_cluster, "POST", path, {"metadata": {"name": "f"},
                                                             "type": "Odd"})
        assert status == 422
        fields = {c["field"] for c in body["details"]["causes"]}
        assert {"eventTime", "reportingController", "action", "reason", "type"} <= fields


class TestPodEviction:
    def test_evicts_unless_a_budget_forbids(self, kube_cluster, kube_namespace, kube_sync_api):
        kube_cluster.require_emulator("a running pod needs the emulated kubelet")
        import time

        core = kubernetes.client.CoreV1Api(kube_sync_api)
        core.create_namespaced_pod(kube_namespace, _pod("p"))
        deadline = time.monotonic() + 10
        while core.read_namespaced_pod("p", kube_namespace).status.phase != "Running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        policy = kubernetes.client.PolicyV1Api(kube_sync_api)
        policy.create_namespaced_pod_disruption_budget(kube_namespace, {
            "metadata": {"name": "keep"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}}})
        eviction = {"apiVersion": "policy/v1", "kind": "Eviction",
                    "metadata": {"name": "p", "namespace": kube_namespace}}
        with pytest.raises(kubernetes.client.ApiException) as refused:
            core.create_namespaced_pod_eviction("p", kube_namespace, eviction)
        assert refused.value.status == 429
        body = json.loads(refused.value.body)
        assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
        assert body["details"]["causes"][0]["reason"] == "DisruptionBudget"
        policy.delete_namespaced_pod_disruption_budget("keep", kube_namespace)
        core.create_namespaced_pod_eviction("p", kube_namespace, eviction)
        try:  # terminating, or (the emulated kubelet is quick) gone already
            assert core.read_namespaced_pod("p", kube_namespace).metadata.deletion_timestamp
        except kubernetes.client.ApiException as gone:
            assert gone.status == 404
        with pytest.raises(kubernetes.client.ApiException) as missing:
            core.create_namespaced_pod_eviction("nope", kube_namespace, {
                **eviction, "metadata": {"name": "nope"}})
        assert missing.value.status == 404
