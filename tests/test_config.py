"""The admin config: the shipped example is valid, and every broken file is refused with the key
path (and line) of each problem, never a traceback."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelab.core.config import (
    ConfigError,
    KubelabConfig,
    example_config_path,
    key_path,
    load_config,
    parse_config,
)

REPO = Path(__file__).resolve().parent.parent

BASE: dict[str, Any] = {
    "version": 1,
    "groups": {"ml": {"description": "ML"}, "vision": {}},
    "gpu_types": {
        "a100": {
            "display_name": "A100",
            "node_selector": {"gpu": "a100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "max_per_node": 8,
        }
    },
    "profiles": [
        {
            "slug": "cpu",
            "display_name": "CPU",
            "cpu": {"guarantee": 0.5, "limit": 2},
            "memory": {"guarantee": "1Gi", "limit": "4Gi"},
            "images": [{"slug": "py", "display_name": "Python", "image": "example.org/nb:1"}],
        },
        {
            "slug": "gpu",
            "display_name": "GPU",
            "gpu": {"type": "a100", "counts": [1, 2, 4]},
            "images": [{"slug": "torch", "display_name": "Torch", "image": "example.org/torch:1"}],
            "custom_image": {"allowed": True, "pattern": r"^example\.org/[a-z]+:[0-9]+$"},
            "groups": ["ml"],
        },
    ],
    "datasets": [
        {
            "name": "imagenet",
            "source": {"pvc": {"claim_name": "imagenet"}},
            "mount_path": "/data/imagenet",
            "groups": ["ml"],
        },
        {
            "name": "coco",
            "source": {"csi": {"driver": "nfs.csi.k8s.io", "volume_attributes": {"share": "/coco"}}},
            "mount_path": "/data/coco",
        },
    ],
    "teams": {"ml": {"namespace": "ml-{username}", "quota": {"gpus": 4, "cpu": 32, "memory": "128Gi"}}},
}


def _dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def _broken(mutate: Callable[[dict[str, Any]], None]) -> str:
    data = copy.deepcopy(BASE)
    mutate(data)
    return _dump(data)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting ``a.b[0].c`` to *value*."""

    def mutate(data: dict[str, Any]) -> None:
        parts: list[str | int] = []
        for chunk in path.split("."):
            name, *indexes = chunk.split("[")
            if name:
                parts.append(name)
            parts.extend(int(i.rstrip("]")) for i in indexes)
        target: Any = data
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = value

    return mutate


def _append(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for part in path.split("."):
            target = target[int(part) if part.isdigit() else part]
        target.append(copy.deepcopy(value))

    return mutate


def test_base_fixture_is_valid() -> None:
    config = parse_config(_dump(BASE))
    assert [p.slug for p in config.profiles] == ["cpu", "gpu"]
    assert config.profiles[1].gpu is not None and config.profiles[1].gpu.default_count == 1


def test_shipped_example_is_valid() -> None:
    config = load_config(example_config_path())
    assert config.profile("a100") is not None
    assert config.team_for(["nobody", "vision"])[0] == "vision"  # type: ignore[index]
    assert all(p.images for p in config.profiles)


def test_shipped_local_config_is_valid_when_present() -> None:
    local = REPO / "hub_config" / "local.yaml"
    if not local.exists():
        pytest.skip("hub_config/local.yaml arrives with `kubelab up`")
    load_config(local)


# (id, mutation, expected key path, a fragment of the expected message)
BROKEN: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("unknown-top-level-key", _set("profile", []), "profile", "unknown key"),
    ("unknown-nested-key", _set("gpu_types.a100.resourse", "x"), "gpu_types.a100.resourse", "unknown key"),
    ("wrong-type-gpu-count", _set("profiles[1].gpu.counts", ["two"]), "profiles[1].gpu.counts[0]", "integer"),
    ("bool-is-not-a-count", _set("teams.ml.quota.gpus", True), "teams.ml.quota.gpus", "integer"),
    ("gpu-count-zero", _set("profiles[1].gpu.counts", [0, 1]), "profiles[1].gpu.counts", "1 or more"),
    ("gpu-count-twice", _set("profiles[1].gpu.counts", [1, 1]), "profiles[1].gpu.counts", "twice"),
    ("gpu-count-over-node", _set("profiles[1].gpu.counts", [1, 16]), "profiles[1].gpu.counts", "at most 8"),
    ("gpu-default-not-offered", _set("profiles[1].gpu.default", 3), "profiles[1].gpu", "not one of the counts"),
    ("gpu-type-undefined", _set("profiles[1].gpu.type", "v100"), "profiles[1].gpu.type", "'v100' is not defined"),
    ("group-undefined-profile", _set("profiles[1].groups", ["ml", "nlp"]), "profiles[1].groups[1]", "'nlp' is not declared"),
    ("group-undefined-dataset", _set("datasets[0].groups", ["robots"]), "datasets[0].groups[0]", "'robots' is not declared"),
    ("team-not-a-group", _set("teams.nlp", {}), "teams.nlp", "not a group declared"),
    ("bad-regex", _set("profiles[1].custom_image.pattern", "([a-z"), "profiles[1].custom_image.pattern", "not a valid RE2 regular expression"),
    ("bad-job-image-regex", _set("jobs", {"images": ["*torch"]}), "jobs.images", "not a valid RE2 regular expression"),
    ("custom-image-without-pattern", _set("profiles[1].custom_image", {"allowed": True}), "profiles[1].custom_image", "need a pattern"),
    ("duplicate-profile-slug", _set("profiles[1].slug", "cpu"), "profiles[1].slug", "duplicate profile slug 'cpu'"),
    ("duplicate-dataset-name", _set("datasets[1].name", "imagenet"), "datasets[1].name", "duplicate dataset name"),
    ("duplicate-image-slug", _append("profiles.0.images", {"slug": "py", "display_name": "P2", "image": "x:1"}), "profiles[0].images[1].slug", "duplicate image slug"),
    ("slug-not-dns", _set("profiles[0].slug", "Big_CPU"), "profiles[0].slug", "lowercase name"),
    ("mount-path-clash", _set("datasets[1].mount_path", "/data/imagenet/coco"), "datasets[1].mount_path", "clashes with datasets[0]"),
    ("mount-path-same", _set("datasets[1].mount_path", "/data/imagenet"), "datasets[1].mount_path", "clashes"),
    ("mount-path-home", _set("datasets[1].mount_path", "/home/jovyan/coco"), "datasets[1].mount_path", "home volume"),
    ("mount-path-relative", _set("datasets[0].mount_path", "data"), "datasets[0].mount_path", "absolute"),
    ("mount-path-escape", _set("datasets[0].mount_path", "/data/../etc"), "datasets[0].mount_path", "'..'"),
    ("mount-path-reserved", _set("datasets[0].mount_path", "/dev/shm/x"), "datasets[0].mount_path", "reserves"),
    ("sub-path-absolute", _set("datasets[0].sub_path", "/etc"), "datasets[0].sub_path", "relative path"),
    ("sub-path-escape", _set("datasets[0].sub_path", "a/../../b"), "datasets[0].sub_path", "relative path"),
    ("two-volume-sources", _set("datasets[0].source.nfs", {"server": "s", "path": "/p"}), "datasets[0].source", "exactly one"),
    ("no-volume-source", _set("datasets[0].source", {}), "datasets[0].source", "exactly one"),
    ("guarantee-over-limit", _set("profiles[0].cpu", {"guarantee": 4, "limit": 2}), "profiles[0].cpu", "more than limit"),
    ("bad-quantity", _set("profiles[0].memory.limit", "lots"), "profiles[0].memory.limit", "not a quantity"),
    ("negative-quantity", _set("profiles[0].memory.limit", "-1Gi"), "profiles[0].memory.limit", "more than zero"),
    ("huge-quantity", _set("profiles[0].memory.limit", "1e999"), "profiles[0].memory.limit", "too large"),
    ("huge-gpu-count", _set("profiles[1].gpu.counts", [1, 10**20]), "profiles[1].gpu.counts", "at most 64"),
    ("host-path-climbs", _set("datasets[0].source", {"host_path": {"path": "/data/../../etc"}}),
     "datasets[0].source.host_path.path", "without '..'"),
    ("python-only-regex", _set("jobs", {"images": [r"(?P<x>ghcr)\.io/.+\Z"]}), "jobs.images",
     "not a valid RE2 regular expression"),
    ("backreference-regex", _set("jobs", {"images": [r"(a)\1"]}), "jobs.images", "not a valid RE2"),
    ("infinite-quantity", _set("profiles[0].cpu.limit", float("inf")), "profiles[0].cpu.limit", "not a finite quantity"),
    ("no-images", _set("profiles[0].images", []), "profiles[0].images", "at least 1"),
    ("image-with-space", _set("profiles[0].images[0].image", "nb 1"), "profiles[0].images[0].image", "image reference"),
    ("two-default-images", _set("profiles[0].images", [
        {"slug": "a", "display_name": "A", "image": "a:1", "default": True},
        {"slug": "b", "display_name": "B", "image": "b:1", "default": True}]), "profiles[0].images", "more than one"),
    ("two-default-profiles", lambda d: [p.update(default=True) for p in d["profiles"]], "profiles", "more than one profile"),
    ("namespace-placeholder", _set("teams.ml.namespace", "ml-{user}"), "teams.ml.namespace", "{user}"),
    ("namespace-invalid", _set("teams.ml.namespace", "ML_{username}"), "teams.ml.namespace", "valid namespace"),
    ("user-quota-over-team", _set("teams.ml.user_quota", {"gpus": 8}), "teams.ml.user_quota.gpus", "more than the team"),
    ("unusable-gpu-profile", _set("teams.ml.quota.gpus", 0), "profiles[1].gpu.counts", "nobody could start it"),
    ("bad-gpu-resource", _set("gpu_types.a100.resource", "gpu"), "gpu_types.a100.resource", "extended resource"),
    ("bad-toleration-operator", _set("gpu_types.a100.tolerations[0].operator", "Maybe"), "gpu_types.a100.tolerations[0].operator", "Exists"),
    ("no-profiles", _set("profiles", []), "profiles", "at least 1"),
    ("wrong-version", _set("version", 2), "version", "1"),
    ("pod-security-level", _set("pod_security", {"level": "lax"}), "pod_security.level", "restricted"),
    ("run-as-root", _set("pod_security", {"run_as_user": 0}), "pod_security.run_as_user", "greater than or equal to 1"),
]


@pytest.mark.parametrize(("mutate", "path", "fragment"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_config_names_the_key_path(mutate: Callable[[dict[str, Any]], None], path: str, fragment: str) -> None:
    text = _broken(mutate)
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="kubelab.yaml")
    problems = info.value.problems
    matching = [p for p in problems if p.path == path]
    assert matching, f"no problem at {path}; got {[(p.path, p.message) for p in problems]}"
    assert any(fragment in p.message for p in matching), [p.message for p in matching]
    # Every problem carries a line in the file, and the formatted report names the file.
    assert all(p.line is not None and p.line >= 1 for p in problems)
    assert "kubelab.yaml:" in info.value.format()


def test_broken_configs_are_many() -> None:
    assert len(BROKEN) >= 20


def test_every_problem_is_reported_at_once() -> None:
    data = copy.deepcopy(BASE)
    data["profiles"][0]["memory"]["limit"] = "lots"
    data["datasets"][0]["mount_path"] = "relative"
    data["gpu_types"]["a100"]["colour"] = "green"
    with pytest.raises(ConfigError) as info:
        parse_config(_dump(data))
    assert {p.path for p in info.value.problems} == {
        "profiles[0].memory.limit",
        "datasets[0].mount_path",
        "gpu_types.a100.colour",
    }


def test_line_numbers_point_at_the_key() -> None:
    text = _dump(BASE).replace("max_per_node: 8", "max_per_node: eight")
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    (problem,) = info.value.problems
    assert problem.path == "gpu_types.a100.max_per_node"
    assert text.splitlines()[problem.line - 1].strip().startswith("max_per_node")  # type: ignore[operator]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("profiles: [\n", "not valid YAML"),
        ("a: 1\na: 2\n", "duplicate key 'a'"),
        ("", "empty"),
        ("- just\n- a list\n", "must be a mapping"),
        ("profiles: !!python/object:os.system {}\n", "not valid YAML"),
        ("? [1, 2]\n: 3\n", "a list used as a key"),
        ("{a: 1}: x\n", "a dict used as a key"),
        ("[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
        ("a:\n" + "".join("  " * i + "b:\n" for i in range(1, 3000)), "nested too deeply"),
        ("jobs: {max_nodes: " + "1" * 5000 + "}\n", "more than 4,300 digits"),
    ],
    ids=["unclosed", "duplicate", "empty", "list", "python-tag", "list-key", "dict-key", "deep-flow", "deep-block",
         "huge-int"],
)
def test_unreadable_files(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="x.yaml")
    assert fragment in info.value.format()


def test_duplicate_key_deep_in_the_file_names_its_line() -> None:
    text = _dump(BASE) + "groups: {}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert "duplicate key 'groups'" in info.value.problems[0].message
    assert info.value.problems[0].line == len(text.splitlines())


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


def test_key_path_formatting() -> None:
    assert key_path(("profiles", 2, "gpu", "counts")) == "profiles[2].gpu.counts"
    assert key_path(()) == ""


def test_custom_image_matches_in_full_only() -> None:
    config = parse_config(_dump(BASE))
    custom = config.profiles[1].custom_image
    assert custom.matches("example.org/abc:12")
    assert not custom.matches("example.org/abc:12-evil")  # a prefix match is not enough
    assert not custom.matches("evil.org/example.org/abc:12")
    assert not custom.matches("example.org/abc:12\n")  # `$` would match before a newline
    assert not config.profiles[0].custom_image.matches("example.org/abc:12")  # not allowed


def test_team_lookup_follows_file_order() -> None:
    data = copy.deepcopy(BASE)
    data["teams"]["vision"] = {"namespace": "vision"}
    config = parse_config(_dump(data))
    assert config.team_for(["vision", "ml"])[0] == "ml"  # type: ignore[index]
    assert config.team_for(["other"]) is None


def test_json_schema_is_exported() -> None:
    schema = KubelabConfig.model_json_schema()
    assert "profiles" in schema["properties"]
    assert schema["additionalProperties"] is False


# -- the CLI ------------------------------------------------------------------------------------


def _kubelab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubelab", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_config_check_ok() -> None:
    result = _kubelab("config", "check", str(REPO / "hub_config" / "kubelab.yaml"))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "3 profiles" in result.stdout


def test_cli_config_check_broken_prints_every_problem_without_traceback(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["profiles"][1]["gpu"]["type"] = "v100"
    data["datasets"][1]["mount_path"] = "/data/imagenet"
    bad = tmp_path / "bad.yaml"
    bad.write_text(_dump(data))
    result = _kubelab("config", "check", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{bad}:" in result.stderr
    assert "profiles[1].gpu.type" in result.stderr and "datasets[1].mount_path" in result.stderr
    assert "2 problems" in result.stderr


def test_cli_config_check_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("profiles: []\n")
    result = _kubelab("config", "check", "--json", str(bad))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["problems"][0]["path"] == "profiles"


def test_cli_version() -> None:
    import kubelab

    result = _kubelab("version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"kubelab {kubelab.__version__}"


def test_cli_config_example_round_trips(tmp_path: Path) -> None:
    result = _kubelab("config", "example")
    assert result.returncode == 0
    copy_path = tmp_path / "kubelab.yaml"
    copy_path.write_text(result.stdout)
    load_config(copy_path)


def test_cli_bad_usage_is_a_usage_message() -> None:
    result = _kubelab("config", "frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr and "Traceback" not in result.stderr


def _field_names(model: type, seen: set[type] | None = None) -> set[str]:
    """Every key name the schema accepts, recursively."""
    import typing

    from pydantic import BaseModel

    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    names: set[str] = set()
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        names.add(name)
        stack = [field.annotation]
        while stack:
            tp = stack.pop()
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                names |= _field_names(tp, seen)
            stack.extend(typing.get_args(tp))
    return names


def test_docs_document_every_key() -> None:
    import re

    text = (REPO / "docs" / "config.md").read_text()
    missing = sorted(
        n for n in _field_names(KubelabConfig) if not re.search(rf"`[^`]*\b{re.escape(n)}\b[^`]*`", text)
    )
    assert not missing, f"docs/config.md does not document: {missing}"


def test_nfs_under_restricted_is_a_warning_not_an_error(tmp_path: Path) -> None:
    from kubelab.core.config import config_warnings

    data = copy.deepcopy(BASE)
    data["datasets"][1]["source"] = {"nfs": {"server": "s", "path": "/p"}}
    config = parse_config(_dump(data))
    assert [key_path(p) for p, _ in config_warnings(config)] == ["datasets[1].source.nfs"]
    data["pod_security"] = {"level": "baseline"}
    assert config_warnings(parse_config(_dump(data))) == []

    path = tmp_path / "k.yaml"
    path.write_text(_dump({**data, "pod_security": {"level": "restricted"}}))
    result = _kubelab("config", "check", str(path))
    assert result.returncode == 0
    assert "warning: datasets[1].source.nfs: inline NFS volumes are forbidden" in result.stdout
