"""A checker of the Kubernetes Pod Security Standards ("baseline" and "restricted") for a pod.

``violations(pod, level="restricted")`` returns a list of human-readable problems, each naming
the field (``spec.containers[0].securityContext.allowPrivilegeEscalation: must be false``); an
empty list means the pod would be admitted by a namespace labelled
``pod-security.kubernetes.io/enforce: <level>``.

It follows https://kubernetes.io/docs/concepts/security/pod-security-standards/ (policy version
"latest" as of Kubernetes 1.30). Tests run it on every pod kubelab creates; admins can run it on
a pod manifest too (``kubelab`` pods, or a ``modify_pod_hook``'s output) to see why the API server
would refuse it. The input is the pod as the API sees it (camelCase keys): a dict with ``spec``
(and optionally ``metadata``), or just the spec.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

LEVELS = ("privileged", "baseline", "restricted")

# baseline: capabilities a container may add
_BASELINE_CAPS = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}
_SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
# restricted: the only volume types allowed
_RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
    "secret",
}
_VOLUME_META_KEYS = {"name"}


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for i, c in enumerate(spec.get(kind) or []):
            yield f"spec.{kind}[{i}]", c


def _seccomp_type(sc: Mapping[str, Any] | None) -> str | None:
    if not sc:
        return None
    profile = sc.get("seccompProfile") or {}
    return profile.get("type")


def violations(pod: Mapping[str, Any], level: str = "restricted") -> list[str]:
    """Every way *pod* breaks the Pod Security *level* ("baseline" or "restricted")."""
    if level not in LEVELS:
        raise ValueError(f"unknown Pod Security level {level!r}; one of {', '.join(LEVELS)}")
    if level == "privileged":
        return []
    spec: Mapping[str, Any] = pod.get("spec", pod) if "spec" in pod else pod
    metadata: Mapping[str, Any] = pod.get("metadata") or {}
    out: list[str] = []
    pod_sc: Mapping[str, Any] = spec.get("securityContext") or {}
    containers = list(_containers(spec))

    # ---- baseline
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            out.append(f"spec.{key}: must be unset or false")
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("spec.securityContext.windowsOptions.hostProcess: must be unset or false")
    for i, v in enumerate(spec.get("volumes") or []):
        if v.get("hostPath") is not None:
            out.append(f"spec.volumes[{i}] ({v.get('name')}): hostPath volumes are not allowed")
    for key in [s.get("name") for s in pod_sc.get("sysctls") or []]:
        if key not in _SAFE_SYSCTLS:
            out.append(f"spec.securityContext.sysctls: {key!r} is not a safe sysctl")
    if _seccomp_type(pod_sc) == "Unconfined":
        out.append("spec.securityContext.seccompProfile.type: must not be Unconfined")
    if (pod_sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        out.append("spec.securityContext.appArmorProfile.type: must not be Unconfined")
    out.extend(_selinux("spec.securityContext", pod_sc))
    for key, value in (metadata.get("annotations") or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            out.append(f"metadata.annotations[{key}]: AppArmor profile must be runtime/default or localhost/*")

    for path, c in containers:
        sc: Mapping[str, Any] = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{path}.securityContext.privileged: must be unset or false")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{path}.securityContext.windowsOptions.hostProcess: must be unset or false")
        added = set((sc.get("capabilities") or {}).get("add") or [])
        bad = sorted(added - _BASELINE_CAPS)
        if bad:
            out.append(f"{path}.securityContext.capabilities.add: {', '.join(bad)} not allowed")
        for j, port in enumerate(c.get("ports") or []):
            if port.get("hostPort"):
                out.append(f"{path}.ports[{j}].hostPort: must be unset or 0")
        if sc.get("procMount") not in (None, "Default"):
            out.append(f"{path}.securityContext.procMount: must be Default")
        if _seccomp_type(sc) == "Unconfined":
            out.append(f"{path}.securityContext.seccompProfile.type: must not be Unconfined")
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            out.append(f"{path}.securityContext.appArmorProfile.type: must not be Unconfined")
        out.extend(_selinux(f"{path}.securityContext", sc))

    if level == "baseline":
        return out

    # ---- restricted
    for i, v in enumerate(spec.get("volumes") or []):
        kinds = set(v) - _VOLUME_META_KEYS
        bad = sorted(k for k in kinds if k not in _RESTRICTED_VOLUMES and k != "hostPath")
        if bad:
            out.append(f"spec.volumes[{i}] ({v.get('name')}): volume type {', '.join(bad)} not allowed")
    pod_non_root = pod_sc.get("runAsNonRoot") is True
    if pod_sc.get("runAsNonRoot") is False:
        out.append("spec.securityContext.runAsNonRoot: must not be false")
    if pod_sc.get("runAsUser") == 0:
        out.append("spec.securityContext.runAsUser: must not be 0")
    pod_seccomp = _seccomp_type(pod_sc) in ("RuntimeDefault", "Localhost")
    for path, c in containers:
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{path}.securityContext.allowPrivilegeEscalation: must be false")
        if sc.get("runAsNonRoot") is False or (not pod_non_root and sc.get("runAsNonRoot") is not True):
            out.append(f"{path}.securityContext.runAsNonRoot: must be true (here or in the pod's securityContext)")
        if sc.get("runAsUser") == 0:
            out.append(f"{path}.securityContext.runAsUser: must not be 0")
        seccomp = _seccomp_type(sc)
        if not (seccomp in ("RuntimeDefault", "Localhost") or (seccomp is None and pod_seccomp)):
            out.append(
                f"{path}.securityContext.seccompProfile.type: must be RuntimeDefault or Localhost "
                "(here or in the pod's securityContext)"
            )
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{path}.securityContext.capabilities.drop: must include ALL")
        extra = sorted(set(caps.get("add") or []) - {"NET_BIND_SERVICE"})
        if extra:
            out.append(f"{path}.securityContext.capabilities.add: only NET_BIND_SERVICE may be added, not {', '.join(extra)}")
    return out


def _selinux(path: str, sc: Mapping[str, Any]) -> list[str]:
    opts = sc.get("seLinuxOptions") or {}
    out = []
    if opts.get("type", "") not in _SELINUX_TYPES:
        out.append(f"{path}.seLinuxOptions.type: {opts.get('type')!r} not allowed")
    for key in ("user", "role"):
        if opts.get(key):
            out.append(f"{path}.seLinuxOptions.{key}: must be unset")
    return out


def check(pod: Mapping[str, Any], level: str = "restricted") -> None:
    """Raise :class:`PodSecurityViolation` listing every violation, if any."""
    found = violations(pod, level)
    if found:
        raise PodSecurityViolation(level, found)


class PodSecurityViolation(ValueError):
    def __init__(self, level: str, problems: list[str]):
        self.level = level
        self.problems = problems
        super().__init__(f"pod violates Pod Security {level!r}:\n  " + "\n  ".join(problems))
