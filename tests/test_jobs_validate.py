"""A submission checked against the admin config: one clear message per refusal."""

from __future__ import annotations

import pytest

from kubelab.core.jobs.context import JobContext
from kubelab.core.jobs.errors import (
    DatasetNotAllowed,
    ImageNotAllowed,
    InvalidJobSpec,
    NotAllowed,
    QuotaExceeded,
)
from kubelab.core.jobs.types import JobSpec, make_job_name
from kubelab.core.jobs.validate import validate
from kubelab.tests.jobs_support import example_config

CONFIG = example_config()
NOTEBOOK = "ghcr.io/kubelab/notebook-gpu:0.1.0"


def ctx(*groups: str, gpu_type: str | None = "a100", datasets: tuple[str, ...] = ()) -> JobContext:
    return JobContext(user="alice", groups=groups, config=CONFIG, image=NOTEBOOK,
                      gpu_type=gpu_type, notebook_datasets=datasets)


def spec(**kw) -> JobSpec:
    return JobSpec(script="train.py", **kw)


def test_a_valid_job_resolves_image_and_datasets() -> None:
    r = validate(spec(gpus=2, data=["imagenet", "scratch"]), ctx("ml"))
    assert r.image == NOTEBOOK
    assert [d.mount_path for d in r.datasets] == ["/data/imagenet", "/scratch"]
    assert r.jobs.ttl_seconds_after_finished == 604800


@pytest.mark.parametrize(("kw", "groups", "error", "words"), [
    (dict(data=["coco"]), ("ml",), DatasetNotAllowed, "dataset 'coco' is for group(s) vision"),
    (dict(data=["nope"]), ("ml",), DatasetNotAllowed, "unknown dataset 'nope'; available: imagenet, scratch"),
    (dict(gpus=8, nodes=3), ("ml",), QuotaExceeded, "8 GPUs × 3 nodes = 24 asked, a job may use at most 16"),
    (dict(nodes=5), ("ml",), QuotaExceeded, "5 nodes asked, a job may use at most 4"),
    (dict(gpus=9), ("ml",), QuotaExceeded, "9 GPUs per node asked, a NVIDIA A100 80GB node has 8"),
    (dict(gpus=4, nodes=3), ("ml",), QuotaExceeded, "over the per-user GPU quota of 8 for team 'ml'"),
    (dict(gpus=5), ("vision",), QuotaExceeded, "over the team GPU quota of 4 for team 'vision'"),
    (dict(image="docker.io/evil:latest"), ("ml",), ImageNotAllowed, "image 'docker.io/evil:latest' is not allowed"),
])
def test_refusals_name_the_limit(kw, groups, error, words) -> None:
    with pytest.raises(error) as e:
        validate(spec(**kw), ctx(*groups))
    assert words in str(e.value)
    assert isinstance(e.value, NotAllowed)
    assert "\n" not in str(e.value)


def test_gpus_in_use_count_against_the_quota() -> None:
    validate(spec(gpus=4), ctx("ml"), gpus_in_use=4)
    with pytest.raises(QuotaExceeded, match="5 in use by your running jobs"):
        validate(spec(gpus=4), ctx("ml"), gpus_in_use=5)


def test_images_matching_the_admin_patterns_are_allowed() -> None:
    assert validate(spec(image="ghcr.io/kubelab/notebook:1.2"), ctx("ml")).image == "ghcr.io/kubelab/notebook:1.2"
    assert validate(spec(image=NOTEBOOK), ctx("ml")).image == NOTEBOOK  # its own image, always


def test_a_dataset_mounted_in_the_notebook_is_always_allowed() -> None:
    validate(spec(data=["coco"]), ctx("ml", datasets=("coco",)))


def test_without_a_config_only_the_defaults_apply() -> None:
    plain = JobContext(user="bob")
    validate(spec(gpus=8), plain)
    with pytest.raises(QuotaExceeded):
        validate(spec(gpus=9), plain)
    with pytest.raises(DatasetNotAllowed, match="no datasets are configured"):
        validate(spec(data=["imagenet"]), plain)
    with pytest.raises(ImageNotAllowed, match="only the notebook's own image"):
        validate(spec(image="python:3.12"), plain)


@pytest.mark.parametrize(("kw", "words"), [
    (dict(script=None), "exactly one"),
    (dict(source="print(1)"), "exactly one"),
    (dict(name="Bad"), "invalid job name"),
    (dict(name="a" * 41), "at most 40"),
    (dict(gpus=-1), "gpus must be 0 or more"),
    (dict(nodes=0), "nodes must be 1 or more"),
    (dict(gpus=True), "whole number"),
    (dict(cpus="lots"), "cpus must be a Kubernetes quantity"),
    (dict(memory="0"), "more than zero"),
    (dict(env={"A-B": "1"}), "invalid environment variable name"),
    (dict(env={"CUDA_VISIBLE_DEVICES": "0"}), "set by kubelab"),
    (dict(image="a b"), "invalid image"),
])
def test_malformed_specs(kw, words) -> None:
    base = dict(script="train.py")
    base.update(kw)
    with pytest.raises(InvalidJobSpec, match=words):
        JobSpec(**base)


def test_generated_names_are_valid() -> None:
    for stem in ("train", "My Script.v2", "123", "", None, "_" * 80, "ünïcode"):
        name = make_job_name(stem)
        JobSpec(script="x.py", name=name)
    assert make_job_name("train").startswith("train-")


def test_context_from_the_spawners_environment(tmp_path) -> None:
    from kubelab.core.config import example_config_path

    env = {"JUPYTERHUB_USER": "alice", "KUBELAB_GROUPS": "ml, vision", "KUBELAB_IMAGE": "img:1",
           "KUBELAB_CONFIG": str(example_config_path()), "KUBELAB_NAMESPACE": "ns",
           "KUBELAB_DATASETS": '[{"name": "imagenet", "mount_path": "/data/imagenet"}]',
           "KUBELAB_JOBS_ROOT": str(tmp_path), "KUBELAB_GPU_TYPE": "a100"}
    ctx = JobContext.from_environ(env)
    assert (ctx.user, ctx.groups, ctx.image, ctx.namespace) == ("alice", ("ml", "vision"), "img:1", "ns")
    assert ctx.notebook_datasets == ("imagenet",) and ctx.jobs_root == tmp_path
    assert ctx.config is not None and ctx.gpu_type == "a100"
    local = JobContext.from_environ({**env, "KUBELAB_DATASETS": '{"coco": {"path": "/x"}}'})
    assert local.notebook_datasets == ("coco",)
    assert JobContext.from_environ({**env, "KUBELAB_DATASETS": "a,b"}).notebook_datasets == ("a", "b")
    bad = tmp_path / "bad.yaml"
    bad.write_text("profiles: 3\n")
    from kubelab.core.jobs.errors import BackendError

    with pytest.raises(BackendError, match="kubelab config check"):
        JobContext.from_environ({**env, "KUBELAB_CONFIG": str(bad)})


@pytest.mark.parametrize("key", ["KUBELAB_DATASETS", "KUBELAB_USER", "KUBELAB_GROUPS",
                                 "KUBELAB_CONFIG", "KUBELAB_ANYTHING", "CUDA_VISIBLE_DEVICES"])
def test_kubelabs_own_variables_cannot_be_replaced(key: str) -> None:
    """Every KUBELAB_* name is kubelab's (docs/jobs.md), not only those it sets in every job."""
    with pytest.raises(InvalidJobSpec, match=f"'{key}' is set by kubelab in every job"):
        spec(env={key: "x"})
    assert spec(env={"KUBELABX": "1", "MY_KUBELAB_Y": "2"}).env["KUBELABX"] == "1"
