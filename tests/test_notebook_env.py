"""kubelab.core.notebook_env: the one contract between the spawners and the notebook side.

Round trips, what hand-set and older environments still read as, the version rule, the user's
view of the config that travels with it, and that both spawners produce it (no hand-written
``KUBELAB_*`` dicts). The end-to-end test over the Kubernetes API test server is
tests/test_spawner_kubernetes.py::test_the_notebooks_environment_gives_its_jobs_the_same_world.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubelab.core.config import dump_config, parse_config
from kubelab.core.notebook_env import (
    ENV_VERSION,
    VARIABLES,
    NotebookDataset,
    NotebookEnv,
    NotebookEnvError,
    with_notebook_mounts,
)
from kubelab.spawner import profiles as P
from kubelab.tests.profiles_support import ALICE, CONFIG, NOBODY, VICTOR

FULL = NotebookEnv(
    backend="kubernetes", user="alice@example.org", groups=("ml", "a,b"), team="ml",
    namespace="kubelab-ml-alice", service_account="kubelab-user", profile="a100",
    image="ghcr.io/kubelab/notebook-cuda:1", gpu_type="a100", gpus=2,
    datasets=(
        NotebookDataset.of(CONFIG.dataset("imagenet")),  # type: ignore[arg-type]
        NotebookDataset.of(CONFIG.dataset("scratch"), mount_path="/scratch/exp",  # type: ignore[arg-type]
                           sub_path="users/alice/exp", read_only=True),
    ),
    home_claim="claim-alice", home_mount="/home/jovyan", config_path="/etc/kubelab/kubelab.yaml",
    jobs_root="/home/jovyan/kubelab-jobs",
)


def test_round_trip() -> None:
    env = FULL.to_env()
    assert set(env) <= set(VARIABLES)
    assert all(isinstance(v, str) for v in env.values())
    assert NotebookEnv.from_env(env) == FULL
    local = NotebookEnv(backend="local", user="bob", cuda_devices=(), data_dir="/srv/kubelab",
                        datasets=(NotebookDataset("example", "/data/example", True, path="/h/data/example",
                                                  target="/srv/d", read_only_enforced=False),))
    assert NotebookEnv.from_env(local.to_env()) == local
    assert local.to_env()["CUDA_VISIBLE_DEVICES"] == ""  # a CPU server sees no GPU
    assert "CUDA_VISIBLE_DEVICES" not in FULL.to_env()  # on Kubernetes the device plugin decides


@settings(max_examples=200, deadline=None)
@given(
    groups=st.lists(st.text(min_size=1, max_size=12).filter(lambda s: s.strip() == s), max_size=4),
    user=st.text(min_size=1, max_size=20).filter(lambda s: s.strip() == s),
    gpus=st.integers(min_value=0, max_value=64),
    devices=st.none() | st.lists(st.from_regex(r"GPU-[0-9a-f]{4}|[0-9]", fullmatch=True), max_size=3),
)
def test_round_trip_any_names(groups: list[str], user: str, gpus: int, devices: list[str] | None) -> None:
    nb = NotebookEnv(backend="local", user=user, groups=tuple(groups), gpus=gpus,
                     cuda_devices=None if devices is None else tuple(devices))
    assert NotebookEnv.from_env(nb.to_env()) == nb


def test_hand_set_and_older_environments_still_read() -> None:
    nb = NotebookEnv.from_env({
        "JUPYTERHUB_USER": "alice", "KUBELAB_GROUPS": "ml, vision", "JUPYTER_IMAGE": "img:1",
        "KUBELAB_DATASETS": "imagenet,coco",
    })
    assert (nb.user, nb.groups, nb.image, nb.version) == ("alice", ("ml", "vision"), "img:1", 1)
    assert nb.dataset_names == ("imagenet", "coco") and nb.datasets[0].mount_path == ""
    # the local spawner's old shape: an object keyed by name, "source" the link's target
    old_local = NotebookEnv.from_env({"KUBELAB_DATASETS": '{"coco": {"path": "/x", "source": "/srv/coco"}}'})
    assert old_local.datasets == (NotebookDataset("coco", path="/x"),)
    # the Kubernetes spawner's old shape
    old_k8s = NotebookEnv.from_env({"KUBELAB_DATASETS": '[{"name": "imagenet", "mount_path": "/data/imagenet", "read_only": true}]'})
    assert old_k8s.datasets == (NotebookDataset("imagenet", "/data/imagenet", True),)
    # a newer writer's extra keys are ignored
    newer = NotebookEnv.from_env({"KUBELAB_DATASETS": '[{"name": "x", "future": 1}]'})
    assert newer.dataset_names == ("x",)
    assert NotebookEnv.from_env({}) == NotebookEnv()


@pytest.mark.parametrize(("env", "message"), [
    ({"KUBELAB_ENV_VERSION": str(ENV_VERSION + 1)}, "newer kubelab"),
    ({"KUBELAB_ENV_VERSION": "one"}, "must be a number"),
    ({"KUBELAB_GPUS": "two"}, "whole number"),
    ({"KUBELAB_BACKEND": "slurm"}, "must be one of"),
    ({"KUBELAB_DATASETS": "[{"}, "not valid JSON"),
    ({"KUBELAB_DATASETS": "[3]"}, "not a dataset"),
    ({"KUBELAB_GROUPS": "[1,"}, "not a JSON list"),
])
def test_what_cannot_be_read_says_why(env: dict[str, str], message: str) -> None:
    with pytest.raises(NotebookEnvError, match=message):
        NotebookEnv.from_env(env)


def test_the_config_as_the_notebook_mounts_it() -> None:
    config = with_notebook_mounts(CONFIG, FULL)
    scratch = config.dataset("scratch")
    assert scratch is not None
    assert (scratch.mount_path, scratch.sub_path, scratch.read_only) == ("/scratch/exp", "users/alice/exp", True)
    assert config.dataset("imagenet") == CONFIG.dataset("imagenet")
    assert config.home == CONFIG.home
    # never writable when the config says read-only, whatever the environment claims
    forged = NotebookEnv(datasets=(NotebookDataset("imagenet", "/data/imagenet", read_only=False),))
    assert with_notebook_mounts(CONFIG, forged).dataset("imagenet").read_only is True  # type: ignore[union-attr]
    # a dataset the notebook has but the config does not: from its source, validated
    extra = NotebookEnv(datasets=(
        NotebookDataset("extra", "/data/extra", True, source={"pvc": {"claim_name": "x"}}),
        NotebookDataset("bad", "/etc/kubelab/x", True, source={"pvc": {"claim_name": "x"}}),
        NotebookDataset("unknown"),
    ), home_mount="/home/user")
    seen = with_notebook_mounts(CONFIG, extra)
    assert seen.dataset("extra") is not None and seen.dataset("extra").source.pvc.claim_name == "x"  # type: ignore[union-attr]
    assert seen.dataset("bad") is None and seen.dataset("unknown") is None
    assert seen.home.mount_path == "/home/user"
    # local: where the data really is on this machine, the link
    local = NotebookEnv(backend="local", datasets=(NotebookDataset("imagenet", "/data/imagenet", path="/h/data/imagenet"),))
    assert with_notebook_mounts(CONFIG, local).dataset("imagenet").mount_path == "/h/data/imagenet"  # type: ignore[union-attr]


def test_the_users_view_of_the_config() -> None:
    view = P.user_config_view(CONFIG, ALICE, unusable_datasets=["local"])
    assert view is not None
    assert parse_config(dump_config(view)) == view  # loads where the notebook reads it
    assert [p.slug for p in view.profiles] == ["cpu", "a100"]
    assert list(view.gpu_types) == ["a100"] and list(view.teams) == ["ml"]
    assert [d.name for d in view.datasets] == ["imagenet", "scratch"]
    assert view.dataset("scratch").sub_path == "users/alice"  # type: ignore[union-attr]
    assert (view.jobs, view.serving, view.pod_security, view.home) == (
        CONFIG.jobs, CONFIG.serving, CONFIG.pod_security, CONFIG.home)
    victor = P.user_config_view(CONFIG, VICTOR)
    assert victor is not None and "imagenet" not in dump_config(victor) and "kubelab-ml" not in dump_config(victor)
    nobody = P.user_config_view(CONFIG, NOBODY)
    assert nobody is not None and nobody.teams == {} and [p.slug for p in nobody.profiles] == ["cpu"]
    per_user = parse_config(dump_config(CONFIG).replace("claim_name: imagenet", "claim_name: imagenet-{username}"))
    claim = P.user_config_view(per_user, ALICE).dataset("imagenet").source.pvc.claim_name  # type: ignore[union-attr]
    assert claim == "imagenet-alice"


def test_both_spawners_write_the_environment_only_through_the_contract() -> None:
    """No hand-written KUBELAB_* variables in the spawners: the contract writes them all."""
    spawner_dir = Path(P.__file__).parent
    for name in ("kubernetes.py", "local.py"):
        text = (spawner_dir / name).read_text()
        written = re.findall(r'env\[\s*"(KUBELAB_[A-Z_]+|CUDA_[A-Z_]+)"\s*\]\s*=', text)
        assert written == [], (name, written)
        assert "NotebookEnv(" in text, name


def test_every_field_is_documented() -> None:
    doc = (Path(P.__file__).resolve().parents[1] / "docs" / "notebook-env.md").read_text()
    for f in dataclasses.fields(NotebookEnv):
        assert f"`{f.name}`" in doc, f.name
    for var in VARIABLES:
        assert f"`{var}`" in doc, var


def test_json_shape_of_datasets_is_stable() -> None:
    entry = json.loads(FULL.to_env()["KUBELAB_DATASETS"])[1]
    assert entry == {"name": "scratch", "mount_path": "/scratch/exp", "read_only": True,
                     "sub_path": "users/alice/exp", "source": {"pvc": {"claim_name": "scratch"}}}
