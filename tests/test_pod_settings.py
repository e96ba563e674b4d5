"""spawner/pod_settings.pod_traits: the pure step from a validated choice to every KubeSpawner
trait a spawn sets, compared whole as kubespawner's tests compare ``objects.py``'s output."""

from __future__ import annotations

from typing import Any

import pytest

from kubelab.core.config import parse_config
from kubelab.spawner import pod_settings as S
from kubelab.spawner import profiles as P
from kubelab.tests.profiles_support import ALICE, CONFIG, CONFIG_YAML

RESTRICTED_POD = {
    "fsGroup": 100, "fsGroupChangePolicy": "OnRootMismatch", "runAsGroup": 100, "runAsNonRoot": True,
    "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsGroup": 100,
    "runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"},
}


def base(**admin: Any) -> dict[str, Any]:
    """KubeSpawner's defaults for the traits a spawn sets, with the admin's *admin* on top."""
    out: dict[str, Any] = {k: None for k in S.POD_TRAITS}
    out.update(extra_labels={}, extra_annotations={}, environment={}, node_selector={},
               extra_resource_limits={}, extra_resource_guarantees={})
    out.update(admin)
    return out


def traits(options: dict[str, Any], *, config: Any = CONFIG, admin: dict[str, Any] | None = None,
           base_volumes: list[Any] | None = None, base_mounts: list[Any] | None = None,
           env: dict[str, str] | None = None, settings: str | None = "kubelab-notebook-alice",
           service_account: str | None = "kubelab-user") -> dict[str, Any]:
    choice = P.validate_user_options(config, ALICE, options, P.Availability())
    return S.pod_traits(config, choice, ALICE, team="ml", base=base(**(admin or {})),
                        base_volumes=base_volumes or [], base_mounts=base_mounts or [],
                        env=env or {}, settings_config_map=settings, service_account=service_account)


def test_a_gpu_profile_with_a_dataset_gives_exactly_these_traits() -> None:
    assert traits({"profile": "a100", "gpus": 2, "datasets": ["imagenet"]}, env={"KUBELAB_X": "{y}"}) == {
        "image": "ghcr.io/kubelab/notebook-cuda:1",
        "cpu_guarantee": 4.0, "cpu_limit": 8.0, "mem_guarantee": 8 * 2**30, "mem_limit": 16 * 2**30,
        "node_selector": {"nvidia.com/gpu.product": "A100"},
        "tolerations": [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}],
        "extra_resource_limits": {"nvidia.com/gpu": "2"},
        "extra_resource_guarantees": {"nvidia.com/gpu": "2"},
        "volumes": [
            {"emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}, "name": "kubelab-shm"},
            {"name": "kubelab-data-imagenet", "persistentVolumeClaim": {"claimName": "imagenet", "readOnly": True}},
            {"configMap": {"name": "kubelab-notebook-alice", "optional": True}, "name": "kubelab-settings"},
        ],
        "volume_mounts": [
            {"mountPath": "/dev/shm", "name": "kubelab-shm"},
            {"mountPath": "/data/imagenet", "name": "kubelab-data-imagenet", "readOnly": True},
            {"mountPath": "/etc/kubelab", "name": "kubelab-settings", "readOnly": True},
        ],
        "extra_labels": {"kubelab.dev/kind": "notebook", "kubelab.dev/team": "ml", "kubelab.dev/user": "alice"},
        "extra_annotations": {"kubelab.dev/username": "alice"},
        # what kubelab adds is literal for KubeSpawner's {username} expansion
        "environment": {"KUBELAB_X": "{{y}}"},
        "pod_security_context": RESTRICTED_POD,
        "container_security_context": RESTRICTED_CONTAINER,
        "service_account": "kubelab-user", "automount_service_account_token": True,
        "allow_privilege_escalation": False, "uid": 1000, "gid": 100, "fs_gid": 100,
    }


def test_a_cpu_profile_sets_no_gpu_traits_and_keeps_the_admins() -> None:
    out = traits({"profile": "cpu"}, admin={"node_selector": {"pool": "cpu"}, "tolerations": [{"key": "a"}],
                                            "extra_resource_limits": {"example.com/fpga": "1"}})
    assert out["node_selector"] == {"pool": "cpu"}
    assert out["tolerations"] == [{"key": "a"}]
    assert out["extra_resource_limits"] == {"example.com/fpga": "1"}
    assert not any("nvidia" in str(v) for v in out["volumes"])


def test_the_admins_volumes_env_and_labels_come_first_and_stay_expandable() -> None:
    admin_volume = {"name": "team-{username}", "emptyDir": {}}
    admin_mount = {"name": "team-{username}", "mountPath": "/team"}
    out = traits({"profile": "cpu"}, base_volumes=[admin_volume], base_mounts=[admin_mount],
                 admin={"environment": {"ADMIN": "{username}"}, "extra_labels": {"cost": "x"}},
                 env={"KUBELAB_NOTEBOOK": "1"})
    assert out["volumes"][0] == admin_volume and out["volume_mounts"][0] == admin_mount
    assert out["environment"] == {"ADMIN": "{username}", "KUBELAB_NOTEBOOK": "1"}
    assert out["extra_labels"]["cost"] == "x" and out["extra_labels"]["kubelab.dev/user"] == "alice"


def test_restricted_security_wins_over_the_admins_contexts() -> None:
    out = traits({"profile": "cpu"}, admin={"container_security_context": {"privileged": True, "runAsUser": 0}})
    assert out["container_security_context"] == {"privileged": True, **RESTRICTED_CONTAINER}
    assert out["allow_privilege_escalation"] is False


def test_a_relaxed_level_lets_the_admins_contexts_win() -> None:
    assert "pod_security:" not in CONFIG_YAML
    relaxed = parse_config(CONFIG_YAML + "\npod_security:\n  level: baseline\n", "relaxed.yaml")
    out = traits({"profile": "cpu"}, config=relaxed, admin={"container_security_context": {"runAsUser": 0}})
    assert out["container_security_context"]["runAsUser"] == 0
    assert out["allow_privilege_escalation"] is None  # the admin's (KubeSpawner's default)


def test_without_managed_objects_nothing_is_mounted_and_the_account_is_the_admins() -> None:
    out = traits({"profile": "cpu"}, settings=None, service_account=None, admin={"service_account": "admin-sa"})
    assert all(v["name"] != S.SETTINGS_VOLUME for v in out["volumes"])
    assert out["service_account"] == "admin-sa" and out["automount_service_account_token"] is None


@pytest.mark.parametrize("value,expected", [
    ("{username}", "{{username}}"), ({"a": ["{x}"]}, {"a": ["{{x}}"]}), (3, 3), (None, None),
])
def test_literal(value: Any, expected: Any) -> None:
    assert S.literal(value) == expected


def test_pod_traits_does_not_change_its_inputs() -> None:
    admin = base(node_selector={"pool": "gpu"})
    snapshot = {k: (dict(v) if isinstance(v, dict) else v) for k, v in admin.items()}
    choice = P.validate_user_options(CONFIG, ALICE, {"profile": "a100", "gpus": 1}, P.Availability())
    S.pod_traits(CONFIG, choice, ALICE, team="ml", base=admin, base_volumes=[], base_mounts=[], env={},
                 settings_config_map=None, service_account=None)
    assert admin == snapshot
