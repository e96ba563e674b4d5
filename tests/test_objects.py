"""kubelab.core.objects: pure builders, compared as serialized dicts."""

from __future__ import annotations

import json

from kubelab.core import objects as O
from kubelab.core.config import PodSecurity, Quota, dump_config, parse_config
from kubelab.core.podsecurity import violations
from kubelab.tests.profiles_support import CONFIG


def test_label_values_are_safe_and_distinct() -> None:
    assert O.safe_label_value("alice") == "alice"
    odd = O.safe_label_value("alice@example.org")
    assert odd.startswith("alice-example.org-") and len(odd) <= 63
    assert O.safe_label_value("a" * 100) != O.safe_label_value("a" * 101)
    assert len(O.safe_label_value("x" * 200)) <= 63
    assert O.safe_dns_label("Alice") != O.safe_dns_label("alice")
    assert O.labels(user="bob", team="ml", kind="notebook") == {
        "app.kubernetes.io/managed-by": "kubelab", "kubelab.dev/user": "bob",
        "kubelab.dev/team": "ml", "kubelab.dev/kind": "notebook"}


def test_user_namespace_follows_the_team() -> None:
    assert O.user_namespace(CONFIG, username="alice", groups=["ml"]) == ("kubelab-ml-alice", "ml")
    assert O.user_namespace(CONFIG, username="victor", groups=["vision"]) == ("kubelab-vision", "vision")
    assert O.user_namespace(CONFIG, username="Eve.X", groups=[])[0].startswith("kubelab-eve-x-")
    assert O.user_namespace(CONFIG, username="Eve.X", groups=[])[1] is None
    long_name, _ = O.user_namespace(CONFIG, username="u" * 80, groups=["ml"])
    assert len(long_name) <= 63


def test_namespace_enforces_pod_security() -> None:
    ns = O.make_namespace("kubelab-ml-alice", pod_security=PodSecurity(), user="alice", team="ml")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert ns["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubelab"
    assert "namespace" not in ns["metadata"]


def test_resource_quota_and_limit_range() -> None:
    rq = O.make_resource_quota(Quota(gpus=4, cpu="64", memory="256Gi", pods=20), namespace="n",
                               gpu_resources=["nvidia.com/gpu", "nvidia.com/gpu"], team="ml")
    assert rq == {
        "apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "kubelab-quota", "namespace": "n",
                     "labels": {"app.kubernetes.io/managed-by": "kubelab", "kubelab.dev/team": "ml"}},
        "spec": {"hard": {"requests.nvidia.com/gpu": "4", "requests.cpu": "64", "limits.cpu": "64",
                          "requests.memory": "256Gi", "limits.memory": "256Gi", "pods": "20"}},
    }
    assert O.make_resource_quota(Quota(), namespace="n", gpu_resources=[]) is None
    lr = O.make_limit_range(namespace="n")
    assert lr["spec"]["limits"][0]["defaultRequest"] == {"cpu": "100m", "memory": "256Mi"}


def test_role_is_limited_to_its_namespace_and_kinds() -> None:
    role = O.make_role(namespace="n")
    assert role["kind"] == "Role" and role["metadata"]["namespace"] == "n"
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == {("batch", "jobs"), ("apps", "deployments"), ("", "services"), ("", "pods"),
                       ("", "pods/log"), ("", "events"), ("events.k8s.io", "events"),
                       ("trainer.kubeflow.org", "trainjobs"), ("kubeflow.org", "pytorchjobs"),
                       ("", "resourcequotas")}
    quotas = next(r for r in role["rules"] if r["resources"] == ["resourcequotas"])
    assert quotas["verbs"] == ["get", "list", "watch"]  # read-only: a user cannot raise their quota
    pods = next(r for r in role["rules"] if r["resources"] == ["pods"])
    assert "create" not in pods["verbs"]
    # no configmaps: the notebook's config view is a mounted file, not readable by teammates
    assert not any("secrets" in r["resources"] or "*" in r["verbs"] for r in role["rules"])
    rb = O.make_role_binding(namespace="n")
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "kubelab-user", "namespace": "n"}]
    assert rb["roleRef"]["name"] == "kubelab-user"
    assert O.make_service_account(namespace="n")["automountServiceAccountToken"] is False


def test_dataset_volumes() -> None:
    imagenet, coco, scratch, local = CONFIG.datasets
    v, m = O.dataset_volume(imagenet)
    assert v == {"name": "kubelab-data-imagenet", "persistentVolumeClaim": {"claimName": "imagenet", "readOnly": True}}
    assert m == {"name": "kubelab-data-imagenet", "mountPath": "/data/imagenet", "readOnly": True}
    v, m = O.dataset_volume(coco)
    assert v["nfs"] == {"server": "nfs.example", "path": "/exports/coco", "readOnly": True}
    v, m = O.dataset_volume(scratch, sub_path="users/alice/x", mount_path="/scratch/x", read_only=True)
    assert v["persistentVolumeClaim"]["readOnly"] is True
    assert m == {"name": "kubelab-data-scratch", "mountPath": "/scratch/x", "readOnly": True, "subPath": "users/alice/x"}
    v, _ = O.dataset_volume(scratch)
    assert v["persistentVolumeClaim"]["readOnly"] is False
    assert O.volume_allowed(local, "restricted") and O.volume_allowed(local, "baseline")
    assert O.volume_allowed(local, "privileged") is None
    assert O.volume_allowed(coco, "restricted") and O.volume_allowed(coco, "baseline") is None
    assert O.volume_allowed(imagenet, "restricted") is None


def test_security_context_and_shm_make_a_restricted_pod() -> None:
    psc, csc = O.restricted_security_context(PodSecurity())
    shm, shm_mount = O.shm_volume("2Gi")
    assert shm == {"name": "kubelab-shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}
    assert shm_mount == {"name": "kubelab-shm", "mountPath": "/dev/shm"}
    v, m = O.dataset_volume(CONFIG.datasets[0])
    pod = {"spec": {"securityContext": psc, "volumes": [shm, v],
                    "containers": [{"name": "c", "securityContext": csc, "volumeMounts": [shm_mount, m]}]}}
    assert violations(pod) == []
    psc, csc = O.restricted_security_context(PodSecurity(level="baseline"))
    assert violations({"spec": {"securityContext": psc, "containers": [{"name": "c", "securityContext": csc}]}}, "baseline") == []


def test_notebook_config_map_is_per_user() -> None:
    text = dump_config(CONFIG)
    cm = O.make_notebook_config_map(text, namespace="kubelab-vision", username="Victor@x", team="vision")
    assert cm["metadata"]["name"] == "kubelab-notebook-" + O.safe_dns_label("Victor@x")
    assert cm["metadata"]["name"] != O.make_notebook_config_map(
        text, namespace="kubelab-vision", username="vera", team="vision")["metadata"]["name"]
    assert cm["metadata"]["labels"]["kubelab.dev/team"] == "vision"
    assert parse_config(cm["data"]["kubelab.yaml"]) == CONFIG
    assert O.fingerprint(cm) == O.fingerprint(json.loads(json.dumps(cm)))
    assert O.gpu_count("2") == 2 and O.gpu_count("x") == 0
