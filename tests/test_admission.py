"""The admission policy (hub_config/admission-policy.yaml) and its params (kubelab.core.admission).

The policy's own CEL expressions, read from the shipped YAML, are evaluated here the way the API
server evaluates a ValidatingAdmissionPolicy: match constraints, match conditions, variables,
validations with their messageExpression (and its fallback), ``parameterNotFoundAction: Deny``.
The evaluator is ``cel-expr-python``, Google's C++ CEL (the API server runs cel-go; both implement
the same spec and use RE2 for ``matches``). Expressions are type-checked when compiled, with every
variable declared ``dyn`` as the API server declares ``object``.

What is admitted: the pods kubelab builds (a notebook spawned by ProfileSpawner, the Job a
notebook submits, indexed Jobs, PyTorchJobs). What is refused, each with a message naming it:
every way around the spawner's and the job API's checks that a notebook's service account has.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelab.core import admission, objects
from kubelab.core.config import parse_config
from kubelab.tests.profiles_support import CONFIG_YAML
from kubelab.tests.spawner_support import A100, GPU_TAINT, add_claims, home_volume, pod_of, start

cel = pytest.importorskip("cel_expr_python.cel", reason="cel-expr-python needs Python >= 3.11")

# The example config of the spawner tests, plus an inline CSI dataset, a per-user claim, and
# job/serving image patterns (one an alternation, to check anchoring).
POLICY_CONFIG_YAML = CONFIG_YAML.replace("datasets:\n", """datasets:
  - name: shares
    source: {csi: {driver: nfs.csi.k8s.io, volume_attributes: {server: nfs.example, share: /exports/shares}}}
    read_only: true
    mount_path: /data/shares
    groups: [ml]
  - name: mine
    source: {pvc: {claim_name: "data-{username}"}}
    read_only: false
    mount_path: /data/mine
    groups: [ml]
""", 1) + r"""
jobs:
  images: ['registry\.example/train:[a-z0-9.]+|registry\.example/eval:1']
serving:
  images: ['registry\.example/serve/[^:]+:[0-9]+']
"""
CONFIG = parse_config(POLICY_CONFIG_YAML, "policy-test.yaml")
NS = "kubelab-ml-alice"
KUBELAB_NS = {objects.MANAGED_BY_LABEL: objects.MANAGED_BY}
CUDA = "ghcr.io/kubelab/notebook-cuda:1"


# --------------------------------------------------------------------------------------------------
# The API server's evaluation of a ValidatingAdmissionPolicy


KIND_RESOURCES = {
    "Pod": ("", "pods"), "ReplicationController": ("", "replicationcontrollers"),
    "Job": ("batch", "jobs"), "CronJob": ("batch", "cronjobs"),
    "Deployment": ("apps", "deployments"), "ReplicaSet": ("apps", "replicasets"),
    "StatefulSet": ("apps", "statefulsets"), "DaemonSet": ("apps", "daemonsets"),
    "PyTorchJob": ("kubeflow.org", "pytorchjobs"), "TrainJob": ("trainer.kubeflow.org", "trainjobs"),
}
CEL_VARIABLES = ("object", "oldObject", "request", "params", "namespaceObject", "variables")


@dataclass
class Review:
    """What the API server would answer: whether the policy applied, whether the request may
    go on, the denial messages (as the user reads them) and evaluation errors (which deny too:
    ``failurePolicy: Fail``)."""

    matched: bool
    allowed: bool
    messages: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.messages + self.errors)


class AdmissionPolicy:
    def __init__(self, policy: Mapping[str, Any], binding: Mapping[str, Any]):
        self.policy, self.binding = policy, binding
        self.env = cel.NewEnv(variables={v: cel.Type.DYN for v in CEL_VARIABLES})
        spec = policy["spec"]
        self.conditions = [(c["name"], self.env.compile(c["expression"]))
                           for c in spec.get("matchConditions", [])]
        self.variables = [(v["name"], self.env.compile(v["expression"])) for v in spec["variables"]]
        self.validations = [(v, self.env.compile(v["expression"]), self.env.compile(v["messageExpression"]))
                            for v in spec["validations"]]

    @staticmethod
    def _eval(program: Any, data: Mapping[str, Any]) -> Any:
        result = program.eval(data=data)
        if result.type() == cel.Type.ERROR:
            raise RuntimeError(str(result.value()))
        return result.plain_value()

    def _matches(self, obj: Mapping[str, Any], operation: str, sub_resource: str,
                 namespace_labels: Mapping[str, str]) -> bool:
        if obj["kind"] not in KIND_RESOURCES:
            return False
        group, resource = KIND_RESOURCES[obj["kind"]]
        if sub_resource:
            resource += "/" + sub_resource
        constraints = self.policy["spec"]["matchConstraints"]
        if not any(group in r["apiGroups"] and resource in r["resources"] and operation in r["operations"]
                   for r in constraints["resourceRules"]):
            return False
        wanted = constraints["namespaceSelector"]["matchLabels"]
        return all(namespace_labels.get(k) == v for k, v in wanted.items())

    def review(self, obj: Mapping[str, Any], params: Mapping[str, Any] | None, *,
               namespace_labels: Mapping[str, str] = KUBELAB_NS, operation: str = "CREATE",
               old: Mapping[str, Any] | None = None, sub_resource: str = "") -> Review:
        if not self._matches(obj, operation, sub_resource, namespace_labels):
            return Review(matched=False, allowed=True)
        if params is None:  # parameterNotFoundAction: Deny, then failurePolicy: Fail
            return Review(True, False, errors=["no params: parameterNotFoundAction Deny"])
        group, resource = KIND_RESOURCES[obj["kind"]]
        data: dict[str, Any] = {
            "object": obj, "oldObject": old, "params": params,
            "namespaceObject": {"metadata": {"labels": dict(namespace_labels)}},
            "request": {"operation": operation, "subResource": sub_resource,
                        "namespace": obj["metadata"].get("namespace", NS),
                        "resource": {"group": group, "version": "v1", "resource": resource}},
            "variables": {},
        }
        for name, program in self.conditions:
            try:
                if self._eval(program, data) is not True:
                    return Review(matched=False, allowed=True)
            except RuntimeError as e:
                return Review(True, False, errors=[f"match condition {name}: {e}"])
        failed: dict[str, str] = {}
        for name, program in self.variables:  # the API server evaluates them lazily, once
            try:
                data["variables"][name] = self._eval(program, data)
            except RuntimeError as e:
                failed[name] = str(e)
        review = Review(True, True)
        for v, program, message_program in self.validations:
            broken = [n for n in failed if re.search(rf"\bvariables\.{n}\b", v["expression"])]
            try:
                if broken:
                    raise RuntimeError(f"variable {broken[0]}: {failed[broken[0]]}")
                ok = self._eval(program, data)
            except RuntimeError as e:
                review.allowed = False
                review.errors.append(f"{v['expression']}: {e}")
                continue
            if ok is True:
                continue
            review.allowed = False
            try:
                text = self._eval(message_program, data)
            except RuntimeError:
                text = None
            # as the API server: an empty, blank or multi-line messageExpression result (or an
            # error) gives the static message
            if not isinstance(text, str) or not text.strip() or "\n" in text or "\r" in text:
                text = v["message"]
            review.messages.append(text)
        return review


@pytest.fixture(scope="module")
def policy() -> AdmissionPolicy:
    docs = admission.load_policy()
    assert [d["kind"] for d in docs] == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    return AdmissionPolicy(*docs)


def params_for(user: str = "alice", groups: tuple[str, ...] = ("ml",), *, config: Any = CONFIG,
               home: str | None = None, namespace: str = NS, **kw: Any) -> dict[str, Any]:
    return admission.policy_params(config, username=user, groups=groups,
                                   home_claim=home if home is not None else f"claim-{user}",
                                   namespace=namespace, **kw)


# --------------------------------------------------------------------------------------------------
# Objects


def token_volume(spec: dict[str, Any]) -> dict[str, Any]:
    """*spec* as the API server's ServiceAccount admission plugin leaves it (before validating
    admission) when the pod mounts its token: a projected volume in every container."""
    spec = copy.deepcopy(spec)
    spec.setdefault("volumes", []).append({"name": "kube-api-access-x7k2p", "projected": {
        "defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}})
    for c in spec["containers"] + spec.get("initContainers", []):
        c.setdefault("volumeMounts", []).append({
            "name": "kube-api-access-x7k2p", "readOnly": True,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
    return spec


def pod(spec: Mapping[str, Any], namespace: str = NS) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": namespace}, "spec": copy.deepcopy(dict(spec))}


def workload(kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """*spec* as the pod template of a workload of *kind*."""
    template = {"metadata": {"labels": {"app": "x"}}, "spec": copy.deepcopy(dict(spec))}
    api = {"Job": "batch/v1", "CronJob": "batch/v1", "PyTorchJob": "kubeflow.org/v1",
           "ReplicationController": "v1"}.get(kind, "apps/v1")
    obj: dict[str, Any] = {"apiVersion": api, "kind": kind, "metadata": {"name": "w", "namespace": NS}}
    if kind == "CronJob":
        obj["spec"] = {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}
    elif kind == "PyTorchJob":
        obj["spec"] = {"pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": template},
                                               "Worker": {"replicas": 1, "template": template}}}
    else:
        obj["spec"] = {"selector": {"matchLabels": {"app": "x"}}, "template": template}
    return obj


def job_objects(*, kind: str = "Job", nodes: int = 1, user: str = "alice",
                datasets: tuple[str, ...] = ("imagenet", "scratch", "shares", "mine"),
                image: str = CUDA) -> Any:
    from kubelab.core.jobs import k8s_objects as ko

    return ko.build(
        name="train-1", namespace=NS, user=user, image=image, entry="train.py", args=["--lr", "3"],
        workdir="/home/jovyan/kubelab-jobs/train-1/workspace", gpus=1, nodes=nodes, cpus="2",
        memory="4Gi", env={"KUBELAB_JOB": "train-1"},
        datasets=[d for d in CONFIG.datasets if d.name in datasets], gpu_type=CONFIG.gpu_types["a100"],
        pod_security=CONFIG.pod_security, home_claim=f"claim-{user}", home_mount="/home/jovyan",
        ttl_seconds_after_finished=3600, active_deadline_seconds=None, service_account="kubelab-user",
        submission="s-1", summary={"name": "train-1"}, kind=kind,
        snapshot_store="/home/jovyan/.kubelab/snapshots", snapshot_id="abc123",
        log_dir="/home/jovyan/kubelab-jobs/train-1/logs")


def job_pod_spec(**kw: Any) -> dict[str, Any]:
    """The pod spec of the Job kubelab's job API builds: home, /dev/shm, workspace, every
    dataset alice may mount, the unpacking init container."""
    return copy.deepcopy(job_objects(**kw).main["spec"]["template"]["spec"])


def volume_named(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in spec["volumes"] if v["name"] == name)


def mount_named(spec: dict[str, Any], name: str, container: int = 0) -> dict[str, Any]:
    return next(m for m in spec["containers"][container]["volumeMounts"] if m["name"] == name)


def add_volume(spec: dict[str, Any], volume: dict[str, Any], mount: dict[str, Any] | None = None) -> None:
    spec["volumes"].append(volume)
    spec["containers"][0]["volumeMounts"].append(
        mount or {"name": volume["name"], "mountPath": "/mnt/" + volume["name"]})


# --------------------------------------------------------------------------------------------------
# The shipped YAML


def test_the_policy_file_is_a_valid_validating_admission_policy_and_binding(policy: AdmissionPolicy) -> None:
    vap, binding = policy.policy, policy.binding
    assert vap["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert vap["metadata"]["name"] == binding["spec"]["policyName"] == admission.POLICY_NAME
    spec = vap["spec"]
    assert set(spec) <= {"failurePolicy", "paramKind", "matchConstraints", "matchConditions",
                         "variables", "validations", "auditAnnotations"}
    assert spec["failurePolicy"] == "Fail"
    assert spec["paramKind"] == {"apiVersion": "v1", "kind": "ConfigMap"}
    constraints = spec["matchConstraints"]
    assert set(constraints) == {"namespaceSelector", "resourceRules"}
    # the namespaces kubelab creates, and only those
    made = objects.make_namespace(NS, pod_security=CONFIG.pod_security, user="alice", team="ml")
    selector = constraints["namespaceSelector"]
    assert set(selector) == {"matchLabels"}
    assert selector["matchLabels"].items() <= made["metadata"]["labels"].items()
    rules = {(g, r): rule for rule in constraints["resourceRules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    for needed in [("", "pods"), ("", "pods/ephemeralcontainers"), ("batch", "jobs"),
                   ("apps", "deployments"), ("kubeflow.org", "pytorchjobs")]:
        assert set(rules[needed]["operations"]) == {"CREATE", "UPDATE"}, needed
        assert rules[needed]["apiVersions"]
    # the role's writable workload kinds are all covered (services hold no pod template)
    for rule in objects.ROLE_RULES:
        if "create" in rule["verbs"] and rule["resources"] != ["services"]:
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    assert (g, r) in rules, (g, r)
    names = [v["name"] for v in spec["variables"]]
    assert len(names) == len(set(names))
    for v in spec["validations"]:
        assert set(v) == {"expression", "message", "messageExpression", "reason"}
        assert v["reason"] == "Forbidden"
        # the API server's rule for the static message (and its fallback)
        assert v["message"].strip() and "\n" not in v["message"]
    bspec = binding["spec"]
    assert bspec["validationActions"] == ["Deny"]
    assert bspec["paramRef"] == {"name": admission.POLICY_CONFIG_MAP, "parameterNotFoundAction": "Deny"}
    # no namespace: the params of each request's own namespace
    assert "namespace" not in bspec["paramRef"] and "matchResources" not in bspec


def test_only_the_standard_cel_library_is_used(policy: AdmissionPolicy) -> None:
    """No function of a CEL extension (strings: split, replace, join, substring, ...) nor of the
    API server's own libraries: the expressions then mean the same on every Kubernetes >= 1.30
    and in this evaluator. (Compiling them, in the fixture, type-checks them.)"""
    text = yaml.safe_dump(policy.policy["spec"])
    for name in ("split", "replace", "join", "substring", "indexOf", "lastIndexOf", "lowerAscii",
                 "upperAscii", "trim", "format", "quote", "reverse", "bind", "optMap", "orValue",
                 "isSorted", "sum", "flatten", "url", "ip", "cidr", "quantity", "authorizer"):
        assert not re.search(rf"\b{name}\(", text), name


# --------------------------------------------------------------------------------------------------
# The params


def test_the_params_grant_what_the_users_groups_grant_and_nothing_else() -> None:
    cm = params_for()
    assert (cm["apiVersion"], cm["kind"]) == ("v1", "ConfigMap")
    assert cm["metadata"]["name"] == admission.POLICY_CONFIG_MAP and cm["metadata"]["namespace"] == NS
    assert cm["metadata"]["labels"] == objects.labels(user="alice", team="ml")
    data = cm["data"]
    for key, value in data.items():  # a valid ConfigMap: keys [-._a-zA-Z0-9]{1,253}, string values
        assert re.fullmatch(r"[-._a-zA-Z0-9]{1,253}", key) and isinstance(value, str), key
    assert data["format"] == admission.POLICY_FORMAT
    values = set(data.values())
    # claims: alice's datasets ({username} expanded) and her home
    claims = {v for k, v in data.items() if k.startswith("pvc.")}
    assert claims == {"imagenet", "scratch", "data-alice", "claim-alice"}
    # vision's NFS dataset; the hostPath one (refused under "restricted")
    assert not any("coco" in v or "/srv/local" in v for v in values)
    assert {v for k, v in data.items() if k.startswith("csi.")} == {
        ";nfs.csi.k8s.io;;;2;server=nfs.example;share=/exports/shares;"}

    def grants(claim: str) -> set[str]:
        key = next(k for k, v in data.items() if k.startswith("pvc.") and v == claim)
        return {v for k, v in data.items() if k.startswith(f"grant.{key}.")}

    assert grants("imagenet") == {"ro:"}
    assert grants("scratch") == {"rw:users/alice"}
    assert grants("claim-alice") == grants("data-alice") == {"rw:"}
    assert {v for k, v in data.items() if k.startswith("configMap.")} == {
        "kube-root-ca.crt", "kubelab-notebook-alice"}
    assert not any(k.startswith("secret.") for k in data)
    images = {v for k, v in data.items() if k.startswith("image.")}
    assert images == {
        r"^(?:ghcr\.io/kubelab/notebook:1)$", r"^(?:ghcr\.io/kubelab/notebook-pytorch:1)$",
        r"^(?:ghcr\.io/kubelab/notebook-cuda:1)$",
        r"^(?:^ghcr\.io/kubelab/[a-z0-9-]+:[A-Za-z0-9._-]+$)$",  # a100's custom_image.pattern
        r"^(?:registry\.example/train:[a-z0-9.]+|registry\.example/eval:1)$",
        r"^(?:registry\.example/serve/[^:]+:[0-9]+)$",
    }
    # the same input, the same ConfigMap (the hub rewrites it only when it changes)
    assert params_for() == cm
    # the user's view of the config grants the same
    from kubelab.spawner.profiles import UserInfo, user_config_view

    view = user_config_view(CONFIG, UserInfo.of("alice", ["ml"]))
    assert params_for(config=view)["data"] == data


def test_params_follow_the_pod_security_level_and_the_admins_extras() -> None:
    privileged = CONFIG.pod_security.model_copy(update={"level": "privileged"})
    relaxed = CONFIG.model_copy(update={"pod_security": privileged})
    data = admission.policy_params(relaxed, username="victor", groups=["vision"], home_claim=None,
                                   namespace="kubelab-vision")["data"]
    assert ";nfs.example;/exports/coco;" in data.values()  # vision's inline NFS dataset
    assert not any(k.startswith("pvc.") and v == "imagenet" for k, v in data.items())
    assert ";/srv/local;Directory;" not in data.values()  # ml's hostPath: victor is not in ml
    data = params_for(config=relaxed)["data"]
    assert ";/srv/local;Directory;" in data.values()
    extra = params_for(extra_images=["quay.io/jupyterhub/k8s-network-tools:4.1.0"],
                       extra_volumes=[{"name": "conda", "persistentVolumeClaim": {
                                          "claimName": "conda-envs", "readOnly": True}},
                                      {"name": "certs", "secret": {"secretName": "site-ca"}}])["data"]
    assert r"^(?:quay\.io/jupyterhub/k8s-network-tools:4\.1\.0)$" in extra.values()
    conda = next(k for k, v in extra.items() if k.startswith("pvc.") and v == "conda-envs")
    assert [v for k, v in extra.items() if k.startswith(f"grant.{conda}.")] == ["ro:"]
    assert "site-ca" in {v for k, v in extra.items() if k.startswith("secret.")}


def test_patterns_re2_cannot_compile_never_reach_the_params() -> None:
    """The config refuses them (kubelab.core.config compiles image patterns with RE2), so the
    policy's ``matches`` never meets a pattern the API server's RE2 would reject."""
    from kubelab.core.config import ConfigError

    for pattern in (r"registry\.example/(?!evil)[a-z]+:1", r"(a)\1", r"a\Z", r"a++", r"(?>a)"):
        text = POLICY_CONFIG_YAML.replace(r"'registry\.example/train:[a-z0-9.]+|registry\.example/eval:1'",
                                          f"'{pattern}'")  # YAML single quotes: as written
        assert text != POLICY_CONFIG_YAML
        with pytest.raises(ConfigError, match="not a valid RE2 regular expression"):
            parse_config(text, "x.yaml")


def test_every_pattern_the_params_hold_compiles_as_re2() -> None:
    env = cel.NewEnv(variables={"p": cel.Type.STRING})
    program = env.compile("''.matches(p)")
    for key, value in params_for()["data"].items():
        if key.startswith("image."):
            assert program.eval(data={"p": value}).type() == cel.Type.BOOL, value


def test_sources_the_params_cannot_express_are_never_granted(caplog: pytest.LogCaptureFixture) -> None:
    for volume in [{"csi": {"driver": "d", "volumeAttributes": {"a=b": "c"}}},
                   {"csi": {"driver": "d", "volumeAttributes": {"a": "b;c=d"}}},
                   {"nfs": {"server": "s;x", "path": "/p"}}]:
        with pytest.raises(admission.UngrantableVolume):
            admission.volume_source(volume)
    data = params_for(extra_volumes=[{"name": "odd", "nfs": {"server": "s;x", "path": "/p"}}])["data"]
    assert not any(k.startswith("nfs.") for k in data)
    assert "cannot be granted" in caplog.text


def test_a_csi_attribute_name_with_an_equals_sign_cannot_pose_as_another(policy: AdmissionPolicy) -> None:
    """``opts=a`` = ``b`` would read as ``opts`` = ``a=b`` in the canonical string: refused."""
    granted = {"name": "fast", "csi": {"driver": "d.example", "readOnly": False,
                                       "volumeAttributes": {"opts": "a=b", "pool": "p1"}}}
    params = params_for(extra_volumes=[granted])
    spec = job_pod_spec()
    add_volume(spec, copy.deepcopy(granted))
    assert policy.review(pod(spec), params).allowed
    volume_named(spec, "fast")["csi"]["volumeAttributes"] = {"opts=a": "b", "pool": "p1"}
    review = policy.review(pod(spec), params)
    assert not review.allowed and "volume 'fast': inline CSI volume of driver 'd.example'" in review.text


def test_a_team_namespace_merges_its_members_params() -> None:
    victor = params_for("victor", ("vision",), namespace="kubelab-vision")
    wendy = params_for("wendy", ("vision",), namespace="kubelab-vision")
    assert victor["metadata"]["labels"] == objects.labels(team="vision")  # shared: no user label
    merged = admission.merge_policy_params(victor, wendy)
    assert merged["metadata"] == victor["metadata"]
    assert merged["data"].items() >= victor["data"].items() | wendy["data"].items()
    assert admission.merge_policy_params(wendy, victor)["data"] == merged["data"]


# --------------------------------------------------------------------------------------------------
# What kubelab builds is admitted


@pytest.fixture
def config_path(tmp_path: Path) -> str:
    """The spawner tests' fixture, with this module's config."""
    path = tmp_path / "kubelab.yaml"
    path.write_text(POLICY_CONFIG_YAML)
    return str(path)


async def test_a_spawned_notebook_and_the_job_it_submits_are_admitted(
    kube_cluster: Any, make_spawner: Callable[..., Any],
    policy: AdmissionPolicy, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kubelab.core.jobs.context import JobContext
    from kubelab.core.jobs.kubernetes import KubernetesBackend
    from kubelab.core.jobs.types import JobSpec

    home_mount = tmp_path / "home"
    home_mount.mkdir()
    kube_cluster.add_node("a100-0", gpus=8, labels=A100, taints=GPU_TAINT)
    spawner = make_spawner(**home_volume(str(home_mount)))
    add_claims(kube_cluster, NS, "imagenet", "scratch", "data-alice")
    await start(spawner, {"profile": "a100", "gpus": 1, "datasets": [
        "imagenet", "shares", "mine", {"name": "scratch", "sub_path": "exp", "mount_path": "/scratch/exp"}]})
    notebook = pod_of(kube_cluster, spawner)
    notebook["spec"] = token_volume(notebook["spec"])
    volumes = {v["name"] for v in notebook["spec"]["volumes"]}
    assert {"kubelab-data-imagenet", "kubelab-data-shares", "kubelab-data-mine", "kubelab-data-scratch",
            "home", "kubelab-settings", "kubelab-shm"} <= volumes

    # the params as the hub would write them, from the admin's config or from the user's view
    view_cm = kube_cluster.get_object("configmaps", NS, objects.notebook_config_map_name("alice"))
    view = parse_config(view_cm["data"]["kubelab.yaml"], "view")
    from_admin = params_for(home=spawner.pvc_name)
    from_view = params_for(config=view, home=spawner.pvc_name)
    # and as the hub wrote them into the namespace, before the pod
    written = kube_cluster.get_object("configmaps", NS, admission.POLICY_CONFIG_MAP)
    assert written is not None and written["data"] == from_admin["data"]
    for params in (from_admin, from_view, written):
        review = policy.review(notebook, params)
        assert review.matched and review.allowed, review.text
    # the same pod in a namespace without params, or for another user, is refused
    assert not policy.review(notebook, None).allowed
    bob = policy.review(notebook, params_for("bob", ("ml",), home="claim-bob"))
    assert not bob.allowed
    # the first volume named, the others counted (alice's own claim, her notebook settings)
    assert f"volume 'home': claim '{spawner.pvc_name}' is not a dataset" in bob.text
    assert "(and 2 more)" in bob.text and "at subPath 'users/alice/exp'" in bob.text

    # a job submitted from that notebook, through the job API, as the notebook's kernel would
    container = notebook["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    etc = tmp_path / "etc-kubelab"
    etc.mkdir()
    (etc / "kubelab.yaml").write_text(view_cm["data"]["kubelab.yaml"])
    work = tmp_path / "work"
    work.mkdir()
    (work / "train.py").write_text("print('training')\n")
    monkeypatch.chdir(work)
    ctx = JobContext.from_environ({**env, "KUBELAB_CONFIG": str(etc / "kubelab.yaml"),
                                   "KUBELAB_JOBS_ROOT": str(home_mount / "kubelab-jobs")})
    backend = KubernetesBackend(ctx, kubeconfig=kube_cluster.kubeconfig_path)
    try:
        await asyncio.to_thread(backend.submit, JobSpec(
            script="train.py", name="admitted", gpus=1, data=["imagenet", "scratch", "shares", "mine"]))
    finally:
        backend.close()
    job = kube_cluster.get_object("jobs", NS, "admitted", group="batch")
    assert job is not None
    job_spec = job["spec"]["template"]["spec"]
    assert {"kubelab-data-shares", "kubelab-data-scratch"} <= {v["name"] for v in job_spec["volumes"]}
    for params in (from_admin, from_view, written):
        assert policy.review(job, params).allowed, policy.review(job, params).text
        # and each pod the Job controller creates from it
        assert policy.review(pod(job_spec), params).allowed

    # a notebook with a custom image the profile's pattern allows
    await spawner.stop()
    await start(spawner, {"profile": "a100", "image--unlisted-choice": "ghcr.io/kubelab/my-env:2"})
    custom = pod_of(kube_cluster, spawner)
    assert custom["spec"]["containers"][0]["image"] == "ghcr.io/kubelab/my-env:2"
    assert policy.review(custom, from_admin).allowed, policy.review(custom, from_admin).text


@pytest.mark.parametrize("kind,nodes", [("Job", 1), ("Job", 2), ("PyTorchJob", 1), ("PyTorchJob", 3),
                                        ("TrainJob", 1), ("TrainJob", 2)])
def test_the_job_objects_kubelab_builds_are_admitted(policy: AdmissionPolicy, kind: str, nodes: int) -> None:
    params = params_for()
    built = job_objects(kind=kind, nodes=nodes)
    review = policy.review(built.main, params)
    assert review.matched and review.allowed, review.text
    templates = ([built.main["spec"]["template"]] if kind == "Job"
                 else [r["template"] for r in built.main["spec"]["pytorchReplicaSpecs"].values()]
                 if kind == "PyTorchJob" else [])
    for template in templates:
        assert policy.review(pod(template["spec"]), params).allowed
    if built.service is not None:  # the headless Service of a multi-node Job holds no pod
        assert policy.review(built.service, params).matched is False


def test_a_read_write_dataset_mounted_read_only_is_admitted(policy: AdmissionPolicy) -> None:
    spec = job_pod_spec()
    mount_named(spec, "kubelab-data-scratch")["readOnly"] = True
    volume_named(spec, "kubelab-data-scratch")["persistentVolumeClaim"]["readOnly"] = True
    mount_named(spec, "kubelab-data-scratch")["subPath"] = "users/alice/run-7/data"
    assert policy.review(pod(spec), params_for()).allowed


# --------------------------------------------------------------------------------------------------
# What a notebook's service account could write is refused


def _csi(spec: dict[str, Any]) -> dict[str, Any]:
    return volume_named(spec, "kubelab-data-shares")["csi"]


def _attrs(spec: dict[str, Any]) -> dict[str, Any]:
    return _csi(spec)["volumeAttributes"]


#: (name, change to the job pod spec, what the message must say)
ATTACKS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("claim not granted",
     lambda s: add_volume(s, {"name": "loot", "persistentVolumeClaim": {"claimName": "finance-data"}}),
     "volume 'loot': claim 'finance-data' is not a dataset or home volume granted"),
    ("another user's home claim",
     lambda s: add_volume(s, {"name": "bobs-home", "persistentVolumeClaim": {"claimName": "claim-bob"}}),
     "claim 'claim-bob'"),
    ("another user's per-user claim",
     lambda s: volume_named(s, "kubelab-data-mine")["persistentVolumeClaim"].update(claimName="data-bob"),
     "claim 'data-bob'"),
    ("read-only dataset mounted read-write",
     lambda s: mount_named(s, "kubelab-data-imagenet").update(readOnly=False),
     "mounts volume 'kubelab-data-imagenet' read-write"),
    ("read-only dataset's volume not read-only",
     lambda s: volume_named(s, "kubelab-data-imagenet")["persistentVolumeClaim"].update(readOnly=False),
     "mounts volume 'kubelab-data-imagenet' read-only (the whole volume), beyond what"),
    ("read-only dataset's mount without readOnly",
     lambda s: mount_named(s, "kubelab-data-imagenet").pop("readOnly"),
     "mounts volume 'kubelab-data-imagenet' read-write"),
    ("read-only dataset read-write in a sidecar",
     lambda s: s["containers"].append({"name": "sidecar", "image": CUDA, "volumeMounts": [
         {"name": "kubelab-data-imagenet", "mountPath": "/x"}]}),
     "container 'sidecar' mounts volume 'kubelab-data-imagenet' read-write"),
    ("another user's directory of a shared claim",
     lambda s: mount_named(s, "kubelab-data-scratch").update(subPath="users/bob"),
     "at subPath 'users/bob'"),
    ("a sibling directory sharing the prefix",
     lambda s: mount_named(s, "kubelab-data-scratch").update(subPath="users/alice-evil/x"),
     "at subPath 'users/alice-evil/x'"),
    ("a shared claim mounted whole",
     lambda s: mount_named(s, "kubelab-data-scratch").pop("subPath"),
     "mounts volume 'kubelab-data-scratch' read-write (the whole volume)"),
    ("subPathExpr on a shared claim",
     lambda s: mount_named(s, "kubelab-data-scratch").update(subPathExpr="users/$(OTHER)") or
     mount_named(s, "kubelab-data-scratch").pop("subPath"),
     "with a subPathExpr"),
    ("CSI share changed",
     lambda s: _attrs(s).update(share="/exports/finance"),
     "volume 'kubelab-data-shares': inline CSI volume of driver 'nfs.csi.k8s.io' is not exactly"),
    ("CSI attribute added",
     lambda s: _attrs(s).update(mountOptions="rw"), "inline CSI volume"),
    ("CSI attribute missing",
     lambda s: _attrs(s).pop("share"), "inline CSI volume"),
    ("CSI attribute smuggled behind a ';'",
     lambda s: _attrs(s).update(server="nfs.example;share=/exports/shares"), "inline CSI volume"),
    ("CSI driver changed",
     lambda s: _csi(s).update(driver="smb.csi.k8s.io"), "driver 'smb.csi.k8s.io'"),
    ("CSI secret added",
     lambda s: _csi(s).update(nodePublishSecretRef={"name": "admin-creds"}), "inline CSI volume"),
    ("CSI fsType added",
     lambda s: _csi(s).update(fsType="ext4"), "inline CSI volume"),
    ("read-only CSI dataset writable",
     lambda s: _csi(s).update(readOnly=False) or mount_named(s, "kubelab-data-shares").update(readOnly=False),
     "mounts volume 'kubelab-data-shares' read-write"),
    ("hostPath of the node's root",
     lambda s: add_volume(s, {"name": "root", "hostPath": {"path": "/"}}), "hostPath '/' is not a dataset"),
    ("hostPath of a dataset refused under restricted",
     lambda s: add_volume(s, {"name": "local", "hostPath": {"path": "/srv/local", "type": "Directory"}}),
     "hostPath '/srv/local'"),
    ("inline NFS of another group's dataset",
     lambda s: add_volume(s, {"name": "coco", "nfs": {"server": "nfs.example", "path": "/exports/coco"}}),
     "inline NFS volume nfs.example:/exports/coco is not a dataset"),
    ("generic ephemeral volume (a claim cloned from any PVC)",
     lambda s: add_volume(s, {"name": "clone", "ephemeral": {"volumeClaimTemplate": {"spec": {
         "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
         "dataSource": {"kind": "PersistentVolumeClaim", "name": "claim-bob"}}}}}),
     "volume 'clone': its kind of volume source is not allowed"),
    ("image not allowed",
     lambda s: s["containers"][0].update(image="docker.io/evil/miner:1"),
     "container 'train': image 'docker.io/evil/miner:1' is not allowed"),
    ("image with an allowed one as suffix",
     lambda s: s["containers"][0].update(image="evil.io/ghcr.io/kubelab/notebook-cuda:1"),
     "image 'evil.io/ghcr.io/kubelab/notebook-cuda:1'"),
    ("image with a newline after an allowed one",
     lambda s: s["containers"][0].update(image=CUDA + "\nevil.io/x:1"),
     "container 'train': image with whitespace in its name"),
    ("image with a trailing newline",
     lambda s: s["containers"][0].update(image=CUDA + "\n"), "image with whitespace"),
    ("image with a newline a negated class would match",
     lambda s: s["containers"][0].update(image="registry.example/serve/x\nevil.io/y:1"),
     "container 'train': image with whitespace in its name"),
    ("image with a space a negated class would match",
     lambda s: s["containers"][0].update(image="registry.example/serve/x y:1"), "image with whitespace"),
    ("image through the second branch of an alternation",
     lambda s: s["containers"][0].update(image="evil.io/registry.example/eval:1"),
     "image 'evil.io/registry.example/eval:1'"),
    ("image of a literal with '.' as any character",
     lambda s: s["containers"][0].update(image="ghcrXio/kubelab/notebook-cuda:1"), "ghcrXio"),
    ("init container image",
     lambda s: s["initContainers"][0].update(image="docker.io/evil/miner:1"),
     "container 'workspace': image 'docker.io/evil/miner:1'"),
    ("extra init container",
     lambda s: s["initContainers"].append({"name": "sneaky", "image": "busybox"}),
     "container 'sneaky': image 'busybox'"),
    ("Secret volume",
     lambda s: add_volume(s, {"name": "creds", "secret": {"secretName": "hub-token"}}),
     "volume 'creds': it mounts Secret 'hub-token', which pods may not mount here"),
    ("Secret in a projected volume",
     lambda s: add_volume(s, {"name": "p", "projected": {"sources": [{"secret": {"name": "hub-token"}}]}}),
     "it mounts Secret 'hub-token'"),
    ("another member's notebook settings",
     lambda s: add_volume(s, {"name": "peek", "configMap": {"name": "kubelab-notebook-bob"}}),
     "it mounts ConfigMap 'kubelab-notebook-bob'"),
    ("the policy params themselves",
     lambda s: add_volume(s, {"name": "peek", "configMap": {"name": "kubelab-policy"}}),
     "ConfigMap 'kubelab-policy'"),
    ("a Secret through env",
     lambda s: s["containers"][0]["env"].append(
         {"name": "T", "valueFrom": {"secretKeyRef": {"name": "hub-token", "key": "t"}}}),
     "container 'train' reads Secret 'hub-token' through env or envFrom"),
    ("a ConfigMap through envFrom",
     lambda s: s["containers"][0].update(envFrom=[{"configMapRef": {"name": "kubelab-notebook-bob"}}]),
     "reads ConfigMap 'kubelab-notebook-bob' through env or envFrom"),
    ("raw block device",
     lambda s: s["containers"][0].update(
         volumeDevices=[{"name": "kubelab-data-imagenet", "devicePath": "/dev/xvda"}]),
     "container 'train' uses volumeDevices"),
]


@pytest.mark.parametrize("name,change,message", ATTACKS, ids=[a[0] for a in ATTACKS])
@pytest.mark.parametrize("kind", ["Pod", "Job", "Deployment"])
def test_attacks_are_refused_with_a_message_naming_them(
    policy: AdmissionPolicy, kind: str, name: str, change: Callable[[dict[str, Any]], None], message: str,
) -> None:
    spec = job_pod_spec()
    params = params_for()
    wrap = pod if kind == "Pod" else (lambda s: workload(kind, s))
    assert policy.review(wrap(spec), params).allowed  # the unchanged spec is admitted
    change(spec)
    review = policy.review(wrap(spec), params)
    assert review.matched and not review.allowed
    assert not review.errors, review.errors  # refused by a validation, not by an evaluation error
    assert any(message in m for m in review.messages), review.messages
    assert all(m.startswith("kubelab: ") for m in review.messages)


@pytest.mark.parametrize("kind", ["CronJob", "ReplicaSet", "StatefulSet", "DaemonSet",
                                  "ReplicationController", "PyTorchJob"])
def test_every_workload_kind_is_checked(policy: AdmissionPolicy, kind: str) -> None:
    spec = job_pod_spec()
    params = params_for()
    assert policy.review(workload(kind, spec), params).allowed
    add_volume(spec, {"name": "bobs-home", "persistentVolumeClaim": {"claimName": "claim-bob"}})
    review = policy.review(workload(kind, spec), params)
    assert not review.allowed and "claim 'claim-bob'" in review.text


def test_a_pytorchjobs_worker_template_is_checked_too(policy: AdmissionPolicy) -> None:
    built = job_objects(kind="PyTorchJob", nodes=2)
    worker = built.main["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    worker["containers"][0]["image"] = "docker.io/evil/miner:1"
    review = policy.review(built.main, params_for())
    assert not review.allowed and "'docker.io/evil/miner:1'" in review.text


def test_what_a_trainjob_adds_is_checked(policy: AdmissionPolicy) -> None:
    """The trainer's image and env, the volumes and mounts of its pod overrides (in the older
    ``podSpecOverrides`` and the newer ``podTemplateOverrides`` shape)."""
    params = params_for()
    built = job_objects(kind="TrainJob")
    bad_image = copy.deepcopy(built.main)
    bad_image["spec"]["trainer"]["image"] = "docker.io/evil/miner:1"
    assert "container 'trainer': image 'docker.io/evil/miner:1'" in policy.review(bad_image, params).text
    bad_env = copy.deepcopy(built.main)
    bad_env["spec"]["trainer"]["env"].append(
        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "hub-token", "key": "t"}}})
    assert "container 'trainer' reads Secret 'hub-token'" in policy.review(bad_env, params).text
    override = copy.deepcopy(built.main)
    add_volume(override["spec"]["podSpecOverrides"][0],
               {"name": "bobs", "persistentVolumeClaim": {"claimName": "claim-bob"}})
    assert "claim 'claim-bob'" in policy.review(override, params).text
    writable = copy.deepcopy(built.main)
    for m in writable["spec"]["podSpecOverrides"][0]["containers"][0]["volumeMounts"]:
        if m["name"] == "kubelab-data-imagenet":
            m["readOnly"] = False
    assert ("container 'node' mounts volume 'kubelab-data-imagenet' read-write"
            in policy.review(writable, params).text)
    newer = copy.deepcopy(override)
    newer["spec"]["podTemplateOverrides"] = [{"targetJobs": [{"name": "node"}],
                                              "spec": newer["spec"].pop("podSpecOverrides")[0]}]
    assert "claim 'claim-bob'" in policy.review(newer, params).text


def test_an_ephemeral_container_with_a_bad_image_is_refused(policy: AdmissionPolicy) -> None:
    params = params_for()
    old = pod(job_pod_spec())
    new = copy.deepcopy(old)
    new["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": "docker.io/evil/shell:1"}]
    review = policy.review(new, params, operation="UPDATE", old=old, sub_resource="ephemeralcontainers")
    assert review.matched and not review.allowed
    assert "container 'debugger': image 'docker.io/evil/shell:1'" in review.text
    new["spec"]["ephemeralContainers"][0]["image"] = CUDA
    assert policy.review(new, params, operation="UPDATE", old=old, sub_resource="ephemeralcontainers").allowed
    new["spec"]["ephemeralContainers"][0]["volumeMounts"] = [
        {"name": "kubelab-data-imagenet", "mountPath": "/x"}]
    review = policy.review(new, params, operation="UPDATE", old=old, sub_resource="ephemeralcontainers")
    assert "container 'debugger' mounts volume 'kubelab-data-imagenet' read-write" in review.text


def test_updates_are_checked_only_when_they_change_what_runs(policy: AdmissionPolicy) -> None:
    """A controller's update (a finalizer, a label) goes through even once a grant is gone, so
    pods can still be deleted; a change of image, or of a workload's spec, is checked."""
    granted = params_for()
    revoked = params_for(config=CONFIG.model_copy(update={"datasets": []}))
    old = pod(job_pod_spec())
    relabelled = copy.deepcopy(old)
    relabelled["metadata"]["labels"] = {"x": "y"}
    relabelled["metadata"]["finalizers"] = []
    assert not policy.review(old, revoked).allowed  # as a new pod, it would be refused now
    assert policy.review(relabelled, revoked, operation="UPDATE", old=old).matched is False
    new_image = copy.deepcopy(old)
    new_image["spec"]["containers"][0]["image"] = "docker.io/evil/miner:1"
    review = policy.review(new_image, granted, operation="UPDATE", old=old)
    assert review.matched and "'docker.io/evil/miner:1'" in review.text
    new_init = copy.deepcopy(old)
    new_init["spec"]["initContainers"][0]["image"] = "busybox"
    assert "image 'busybox'" in policy.review(new_init, granted, operation="UPDATE", old=old).text

    deployment = workload("Deployment", job_pod_spec())
    scaled = copy.deepcopy(deployment)
    scaled["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "2"}
    assert policy.review(scaled, revoked, operation="UPDATE", old=deployment).matched is False
    changed = copy.deepcopy(deployment)
    add_volume(changed["spec"]["template"]["spec"], {"name": "h", "hostPath": {"path": "/etc"}})
    review = policy.review(changed, granted, operation="UPDATE", old=deployment)
    assert review.matched and "hostPath '/etc'" in review.text


def test_no_params_no_pods(policy: AdmissionPolicy) -> None:
    review = policy.review(pod(job_pod_spec()), None)
    assert review.matched and not review.allowed


def test_other_namespaces_and_kinds_are_not_the_policys_business(policy: AdmissionPolicy) -> None:
    evil = job_pod_spec()
    add_volume(evil, {"name": "root", "hostPath": {"path": "/"}})
    assert policy.review(pod(evil), None, namespace_labels={"team": "infra"}).matched is False
    assert policy.review(workload("Deployment", evil), None, namespace_labels={}).matched is False


def test_a_message_with_a_line_break_falls_back_to_the_static_message(policy: AdmissionPolicy) -> None:
    """The API server drops a messageExpression result with a line break; the static message of
    the validation is what the user reads then (a subPath may hold a newline)."""
    spec = job_pod_spec()
    mount_named(spec, "kubelab-data-scratch")["subPath"] = "users/bob\nx"
    review = policy.review(pod(spec), params_for())
    mounts = next(v for v in policy.policy["spec"]["validations"] if "badMounts" in v["expression"])
    assert review.messages == [mounts["message"]]


def test_a_team_namespace_is_isolated_only_as_a_whole(policy: AdmissionPolicy) -> None:
    """The documented limit: members of a team's shared namespace share one params ConfigMap,
    so each may mount what any member may (another member's home claim included); users in
    namespaces of their own cannot."""
    shared = "kubelab-vision"
    victor = params_for("victor", ("vision",), namespace=shared)
    merged = admission.merge_policy_params(victor, params_for("wendy", ("vision",), namespace=shared))
    spec = job_pod_spec(user="victor", datasets=())
    spec["containers"][0]["image"] = "ghcr.io/kubelab/notebook-cuda:1"
    assert policy.review(pod(spec, shared), merged).allowed
    volume_named(spec, "kubelab-home")["persistentVolumeClaim"]["claimName"] = "claim-wendy"
    assert policy.review(pod(spec, shared), merged).allowed  # the limit
    assert not policy.review(pod(spec, shared), victor).allowed  # per-user params would refuse it


async def test_the_hub_merges_a_shared_namespaces_params_across_members(
    kube_cluster: Any, make_spawner: Callable[..., Any],
    policy: AdmissionPolicy,
) -> None:
    """Each member's spawn adds their grants to the team namespace's params instead of
    replacing the last member's (whose running pods and jobs would then be refused)."""
    shared = "kubelab-vision"
    add_claims(kube_cluster, shared, "scratch", user=None, team="vision")
    victor = make_spawner("victor", ("vision",), **home_volume())
    wendy = make_spawner("wendy", ("vision",), **home_volume())
    await start(victor, {"profile": "cpu", "datasets": ["scratch"]})
    await start(wendy, {"profile": "cpu", "datasets": []})
    written = kube_cluster.get_object("configmaps", shared, admission.POLICY_CONFIG_MAP)
    assert objects.USER_LABEL not in written["metadata"]["labels"]
    for spawner in (victor, wendy):  # both notebooks are still admitted by what is there now
        notebook = pod_of(kube_cluster, spawner)
        notebook["spec"] = token_volume(notebook["spec"])
        review = policy.review(notebook, written)
        assert review.allowed, review.text
