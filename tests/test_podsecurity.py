"""kubelab.core.podsecurity: the Pod Security Standards checker."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubelab.core.podsecurity import PodSecurityViolation, check, violations


def good_pod() -> dict[str, Any]:
    return {
        "metadata": {"name": "p"},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "notebook", "image": "x",
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                "ports": [{"containerPort": 8888}],
            }],
            "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "c"}},
                        {"name": "shm", "emptyDir": {"medium": "Memory"}}],
        },
    }


def test_a_restricted_pod_passes() -> None:
    assert violations(good_pod()) == []
    assert violations(good_pod()["spec"]) == []  # a bare spec works too
    check(good_pod())


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    pod = good_pod()
    target: Any = pod
    for p in path[:-1]:
        target = target[p]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return pod


_DELETE = object()
C0 = ["spec", "containers", 0]

CASES = [
    ("hostNetwork", ["spec", "hostNetwork"], True, "baseline", "spec.hostNetwork"),
    ("hostPID", ["spec", "hostPID"], True, "baseline", "spec.hostPID"),
    ("hostIPC", ["spec", "hostIPC"], True, "baseline", "spec.hostIPC"),
    ("privileged", [*C0, "securityContext", "privileged"], True, "baseline", "privileged"),
    ("caps add SYS_ADMIN", [*C0, "securityContext", "capabilities", "add"], ["SYS_ADMIN"], "baseline", "SYS_ADMIN"),
    ("hostPath", ["spec", "volumes", 0], {"name": "h", "hostPath": {"path": "/"}}, "baseline", "hostPath"),
    ("hostPort", [*C0, "ports", 0, "hostPort"], 80, "baseline", "hostPort"),
    ("unconfined seccomp", ["spec", "securityContext", "seccompProfile", "type"], "Unconfined", "baseline", "Unconfined"),
    ("procMount", [*C0, "securityContext", "procMount"], "Unmasked", "baseline", "procMount"),
    ("unsafe sysctl", ["spec", "securityContext", "sysctls"], [{"name": "kernel.msgmax", "value": "1"}], "baseline", "kernel.msgmax"),
    ("selinux user", ["spec", "securityContext", "seLinuxOptions"], {"user": "root"}, "baseline", "seLinuxOptions.user"),
    ("nfs volume", ["spec", "volumes", 0], {"name": "n", "nfs": {"server": "s", "path": "/"}}, "restricted", "nfs"),
    ("escalation allowed", [*C0, "securityContext", "allowPrivilegeEscalation"], True, "restricted", "allowPrivilegeEscalation"),
    ("escalation unset", [*C0, "securityContext", "allowPrivilegeEscalation"], _DELETE, "restricted", "allowPrivilegeEscalation"),
    ("runAsNonRoot unset", ["spec", "securityContext", "runAsNonRoot"], _DELETE, "restricted", "runAsNonRoot"),
    ("runAsUser 0", ["spec", "securityContext", "runAsUser"], 0, "restricted", "runAsUser"),
    ("seccomp unset", ["spec", "securityContext", "seccompProfile"], _DELETE, "restricted", "seccompProfile"),
    ("caps not dropped", [*C0, "securityContext", "capabilities"], {}, "restricted", "drop: must include ALL"),
    ("caps add CHOWN", [*C0, "securityContext", "capabilities", "add"], ["CHOWN"], "restricted", "only NET_BIND_SERVICE"),
]


@pytest.mark.parametrize("name,path,value,level,expected", CASES, ids=[c[0] for c in CASES])
def test_each_violation_is_named(name: str, path: list[Any], value: Any, level: str, expected: str) -> None:
    pod = _with(path, value)
    found = violations(pod, "restricted")
    assert any(expected in v for v in found), found
    if level == "baseline":
        assert any(expected in v for v in violations(pod, "baseline"))
    else:
        assert not any(expected in v for v in violations(pod, "baseline"))


def test_container_level_settings_satisfy_restricted() -> None:
    pod = good_pod()
    del pod["spec"]["securityContext"]
    pod["spec"]["containers"][0]["securityContext"].update(
        {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}})
    assert violations(pod) == []
    init = copy.deepcopy(pod["spec"]["containers"][0])
    init["securityContext"] = {}
    pod["spec"]["initContainers"] = [init]
    assert any(v.startswith("spec.initContainers[0]") for v in violations(pod))


def test_check_raises_with_every_problem() -> None:
    pod = _with(["spec", "hostNetwork"], True)
    pod["spec"]["containers"][0]["securityContext"]["privileged"] = True
    with pytest.raises(PodSecurityViolation) as e:
        check(pod)
    assert len(e.value.problems) == 2 and "hostNetwork" in str(e.value)
    assert violations(pod, "privileged") == []
    with pytest.raises(ValueError):
        violations(pod, "strict")
