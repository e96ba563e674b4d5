"""The local profile spawner's parts, without a hub: GPUs, datasets, limits, chooser, validation.

The end-to-end behaviour (a real hub, real servers) is in test_local_hub.py and tests/browser/.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from jupyterhub.spawner import SimpleLocalProcessSpawner
from tornado import web

from kubelab.core import config as config_module
from kubelab.core.config import load_config
from kubelab.spawner import local
from kubelab.spawner.local import (
    GpuAllocator,
    LocalGpu,
    LocalProfileSpawner,
    NoGpuFree,
    cgroup_usable,
    detect_gpus,
    parse_nvidia_smi,
    read_only_enforcement,
)
from kubelab.spawner.profiles import validate_user_options

NVIDIA_SMI_L = """\
GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-11111111-2222-3333-4444-555555555555)
  MIG 1g.10gb     Device  0: (UUID: MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee)
GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-66666666-7777-8888-9999-000000000000)
GPU 2: Tesla T4 (UUID: GPU-t4t4t4t4-0000-0000-0000-000000000000)
"""


@dataclass
class FakeGroup:
    name: str


@dataclass
class FakeUser:
    name: str
    groups: list[FakeGroup] = field(default_factory=list)
    url: str = "/user/x/"


def write_config(tmp_path: Path) -> Path:
    shared = tmp_path / "data" / "shared"
    shared.mkdir(parents=True)
    (shared / "a.txt").write_text("a")
    vision = tmp_path / "data" / "vision"
    vision.mkdir()
    path = tmp_path / "kubelab.yaml"
    path.write_text(f"""\
version: 1
groups: {{ml: {{}}, vision: {{}}}}
gpu_types:
  a100: {{display_name: A100}}
  t4: {{display_name: T4}}
profiles:
  - slug: cpu
    display_name: CPU
    default: true
    cpu: {{limit: 2}}
    memory: {{limit: 1Gi}}
    images: [{{slug: py, display_name: Python, image: example/py:1}}]
  - slug: a100
    display_name: A100 box
    memory: {{limit: 8Gi}}
    gpu: {{type: a100, counts: [1, 2]}}
    images: [{{slug: cuda, display_name: CUDA, image: example/cuda:1}}]
  - slug: vision
    display_name: Vision only
    images: [{{slug: py, display_name: Python, image: example/py:1}}]
    groups: [vision]
datasets:
  - name: shared
    source: {{host_path: {{path: {shared}}}}}
    mount_path: /data/shared
    default: true
  - name: vision-data
    source: {{host_path: {{path: {vision}}}}}
    mount_path: /data/vision
    groups: [vision]
  - name: cluster-only
    source: {{pvc: {{claim_name: big}}}}
    mount_path: /data/big
  - name: missing
    source: {{host_path: {{path: {tmp_path / 'nope'}}}}}
    mount_path: /data/missing
teams:
  ml: {{quota: {{gpus: 2}}, user_quota: {{gpus: 1}}}}
""")
    assert load_config(path)
    return path


@pytest.fixture(autouse=True)
def fresh_allocator(monkeypatch: pytest.MonkeyPatch) -> GpuAllocator:
    allocator = GpuAllocator()
    monkeypatch.setattr(LocalProfileSpawner, "allocator", allocator)
    monkeypatch.setattr(LocalProfileSpawner, "_inventory", None)
    return allocator


def make_spawner(tmp_path: Path, user: str = "alice", groups: tuple[str, ...] = ("ml",),
                 **traits: object) -> LocalProfileSpawner:
    config = tmp_path / "kubelab.yaml"
    if not config.exists():
        write_config(tmp_path)
    traits.setdefault("gpu_detect_command", ["kubelab-test-no-such-nvidia-smi", "-L"])
    return LocalProfileSpawner(
        user=FakeUser(user, [FakeGroup(g) for g in groups]),
        kubelab_config=str(config),
        state_dir=str(tmp_path / "state"),
        **traits,
    )


# -- GPUs ------------------------------------------------------------------------------------------


def test_nvidia_smi_output_is_parsed_skipping_mig_lines() -> None:
    gpus = parse_nvidia_smi(NVIDIA_SMI_L)
    assert [g.index for g in gpus] == ["0", "1", "2"]
    assert gpus[0].model == "NVIDIA A100-SXM4-80GB"
    assert gpus[2].device == "GPU-t4t4t4t4-0000-0000-0000-000000000000"
    assert LocalGpu(index="3").device == "3"


def test_detection_runs_the_command_and_explains_when_there_is_no_gpu(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{NVIDIA_SMI_L}EOF\n")
    fake.chmod(0o755)
    assert len(detect_gpus([str(fake), "-L"]).gpus) == 3

    missing = detect_gpus(["kubelab-test-no-such-nvidia-smi", "-L"])
    assert missing.gpus == [] and "no NVIDIA GPU" in missing.note

    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed: driver not loaded' >&2\nexit 9\n")
    broken.chmod(0o755)
    failed = detect_gpus([str(broken)])
    assert failed.gpus == [] and "driver not loaded" in failed.note


def test_the_allocator_never_gives_one_gpu_to_two_servers() -> None:
    gpus = [LocalGpu("0"), LocalGpu("1"), LocalGpu("2")]
    a = GpuAllocator()
    assert a.allocate("alice/", "alice", "ml", gpus, 2) == ("0", "1")
    assert a.allocate("bob/", "bob", None, gpus, 1) == ("2",)
    with pytest.raises(NoGpuFree, match="1 GPU"):
        a.allocate("carol/", "carol", "ml", gpus, 1)
    assert a.usage(team="ml", user="alice") == (2, 2)
    # a restart of the same server gives back its own GPUs first
    assert a.allocate("alice/", "alice", "ml", gpus, 2) == ("0", "1")
    a.release("alice/")
    assert a.allocate("carol/", "carol", "ml", gpus, 2) == ("0", "1")
    with pytest.raises(NoGpuFree, match="held by another server"):
        a.restore("dave/", "dave", None, ["1"])
    held = [d for g in a._grants.values() for d in g.devices]
    assert len(held) == len(set(held))


def test_no_gpu_here_marks_the_gpu_profile_unavailable_and_refuses_it(tmp_path: Path) -> None:
    spawner = make_spawner(tmp_path)
    form = spawner.render_options_form()
    start = form.index('id="kl-profile-a100"')
    card = form[start:form.index("</fieldset>", start)]
    assert "Unavailable" in card and "no NVIDIA GPU" in card
    assert 'id="kl-profile-vision"' not in form
    with pytest.raises(web.HTTPError) as e:
        spawner.check_user_options({"profile": "a100", "gpus": 1})
    assert e.value.status_code == 400 and "no NVIDIA GPU" in e.value.log_message


def test_declared_gpus_are_offered_shared_and_counted_against_quota(tmp_path: Path) -> None:
    alice = make_spawner(tmp_path, gpu_devices=["GPU-a", "GPU-b"])
    assert alice.check_user_options({"profile": "a100", "gpus": 1}).gpus == 1
    # the user quota of the ml team is 1 GPU: 2 is refused whatever is free
    with pytest.raises(web.HTTPError) as e:
        alice.check_user_options({"profile": "a100", "gpus": 2})
    assert e.value.status_code == 400 and "quota" in e.value.log_message

    # bob (no team) takes one; only one stays free
    bob = make_spawner(tmp_path, user="bob", groups=(), gpu_devices=["GPU-a", "GPU-b"])
    LocalProfileSpawner.allocator.allocate(bob.server_key, "bob", None, bob.gpus_of_type("a100"), 1)
    availability = alice.availability()
    assert (availability.gpus["a100"].total, availability.gpus["a100"].free) == (2, 1)
    carol = make_spawner(tmp_path, user="carol", groups=(), gpu_devices=["GPU-a", "GPU-b"])
    with pytest.raises(web.HTTPError) as e:
        carol.check_user_options({"profile": "a100", "gpus": 2})
    assert e.value.status_code == 400
    assert "1 of 2 free" in carol.render_options_form()


def test_gpu_models_map_local_gpus_to_gpu_types(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{NVIDIA_SMI_L}EOF\n")
    fake.chmod(0o755)
    spawner = make_spawner(tmp_path, gpu_detect_command=[str(fake), "-L"],
                           gpu_models={"a100": "A100", "t4": "T4"})
    assert [g.index for g in spawner.gpus_of_type("a100")] == ["0", "1"]
    assert [g.index for g in spawner.gpus_of_type("t4")] == ["2"]
    with pytest.raises(Exception, match="not a regular expression"):
        make_spawner(tmp_path, gpu_models={"a100": "("})


def test_a_gpu_server_sees_only_its_gpus_and_a_cpu_server_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SimpleLocalProcessSpawner, "get_env", lambda self: {})
    spawner = make_spawner(tmp_path, gpu_devices=["GPU-a", "GPU-b"])
    spawner.choice = spawner.check_user_options({"profile": "cpu"})
    assert spawner.get_env()["CUDA_VISIBLE_DEVICES"] == ""
    spawner.choice = spawner.check_user_options({"profile": "a100", "gpus": 1})
    spawner.gpu_devices_held = ["GPU-b"]
    env = spawner.get_env()
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-b" and env["KUBELAB_GPUS"] == "1"


# -- the shared chooser and validation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"profile": "vision"}, "no profile 'vision' is available to you"),
        ({"datasets": ["vision-data"]}, "no dataset 'vision-data' is available to you"),
        ({"datasets": ["cluster-only"]}, "needs a cluster"),
        ({"datasets": ["missing"]}, "is not a directory on this machine"),
        ({"profile": "cpu", "gpus": 1}, "has no GPUs"),
        ({"profile": "cpu", "image--unlisted-choice": "evil/image"}, "does not allow a custom image"),
        ({"cuda": "all"}, "unknown option"),
        ("cpu", "must be an object"),
    ],
)
def test_tampered_options_are_refused_with_400(tmp_path: Path, options: object, message: str) -> None:
    spawner = make_spawner(tmp_path)
    with pytest.raises(web.HTTPError) as e:
        spawner.check_user_options(options)  # type: ignore[arg-type]
    assert e.value.status_code == 400
    assert message in e.value.log_message


def test_the_local_spawner_validates_with_the_shared_code(tmp_path: Path) -> None:
    """Same config, same user, same options: the local spawner's choice is profiles.py's."""
    spawner = make_spawner(tmp_path, groups=("vision",))
    options = {"profile": "vision", "datasets": ["shared", "vision-data"]}
    mine = spawner.check_user_options(options)
    shared = validate_user_options(spawner.kubelab, spawner.user_info(), options,
                                   spawner.availability(), refuse_unavailable=True)
    assert mine == shared
    form = spawner.render_options_form()
    assert 'value="vision"' in form and 'value="vision-data"' in form
    # cluster-only and missing datasets are shown, but disabled with the reason
    assert "needs a cluster" in form and "not a directory on this machine" in form


def test_the_form_says_what_this_machine_does_not_enforce(tmp_path: Path) -> None:
    form = make_spawner(tmp_path).render_options_form()
    notes = form[form.index("kubelab-local-notes"):]
    assert "memory limit 1 GiB per process" in notes
    assert "CPU limit 2 not enforced" in notes
    assert "memory limit 8 GiB not enforced" in notes  # GPU profile: no RLIMIT_AS under CUDA
    assert "dataset <b>shared</b>" in notes


def test_the_spawner_reads_the_config_through_the_shared_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kubelab.core.config.cached_config (tests/test_config_cache.py has the cases): an edit is
    seen, a broken edit keeps the last good config."""
    monkeypatch.setattr(config_module, "RECHECK_SECONDS", 0.0)
    spawner = make_spawner(tmp_path)
    assert len(spawner.kubelab.profiles) == 3
    path = Path(spawner.kubelab_config)
    text = path.read_text()
    path.write_text(text.replace("display_name: CPU\n", "display_name: CPU box\n"))
    os.utime(path, (1, 1))
    assert spawner.kubelab.profiles[0].display_name == "CPU box"
    path.write_text("profiles: nope\n")
    os.utime(path, (2, 2))
    assert spawner.kubelab.profiles[0].display_name == "CPU box"


# -- datasets ----------------------------------------------------------------------------------------


def test_datasets_are_linked_into_the_working_dir_and_old_links_removed(tmp_path: Path) -> None:
    spawner = make_spawner(tmp_path, groups=("vision",))
    home = tmp_path / "home"
    home.mkdir()
    choice = spawner.check_user_options({"profile": "vision", "datasets": ["shared", "vision-data"]})
    linked = spawner._link_datasets(choice, home)
    assert {d.name for d in linked} == {"shared", "vision-data"}
    assert (home / "data" / "shared" / "a.txt").read_text() == "a"
    # next start without vision-data: its link goes, the user's own files stay
    (home / "data" / "mine.txt").write_text("mine")
    choice = spawner.check_user_options({"profile": "vision", "datasets": ["shared"]})
    spawner._link_datasets(choice, home)
    assert not (home / "data" / "vision").exists()
    assert (home / "data" / "mine.txt").exists() and (home / "data" / "shared").is_symlink()


def test_a_dataset_link_never_replaces_a_users_file_or_leaves_the_dataset(tmp_path: Path) -> None:
    spawner = make_spawner(tmp_path)
    home = tmp_path / "home"
    (home / "data" / "shared").mkdir(parents=True)
    choice = spawner.check_user_options({"datasets": ["shared"]})
    with pytest.raises(web.HTTPError) as e:
        spawner._link_datasets(choice, home)
    assert e.value.status_code == 409 and "move it away" in e.value.log_message

    # a symlink inside the dataset pointing out of it cannot be used as a sub path
    (home / "data" / "shared").rmdir()
    dataset = Path(spawner.kubelab.dataset("shared").source.host_path.path)  # type: ignore[union-attr]
    (dataset / "escape").symlink_to(tmp_path)
    choice = spawner.check_user_options({"datasets": [{"name": "shared", "sub_path": "escape"}]})
    with pytest.raises(web.HTTPError) as e:
        spawner._link_datasets(choice, home)
    assert e.value.status_code == 400 and "leaves the dataset" in e.value.log_message


def test_read_only_is_reported_as_enforced_only_when_the_os_enforces_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() == 0:
        assert read_only_enforcement(tmp_path) == local.ReadOnlyCheck(False, "not enforced: root may write there")

    class RO:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(local.os, "statvfs", lambda path: RO())
    assert read_only_enforcement(tmp_path).how == "read-only mount"
    monkeypatch.undo()
    monkeypatch.setattr(local.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(local.os, "access", lambda path, mode: False)
    check = read_only_enforcement(tmp_path)
    assert check.enforced and "permissions" in check.how
    monkeypatch.setattr(local.os, "access", lambda path, mode: True)
    assert not read_only_enforcement(tmp_path).enforced


# -- limits ------------------------------------------------------------------------------------------


def test_limits_use_rlimit_as_for_cpu_profiles_and_say_what_is_not_enforced(tmp_path: Path) -> None:
    spawner = make_spawner(tmp_path)
    cpu = spawner.limit_plan("1Gi", "2", gpu=False)
    assert cpu.use_rlimit_as and cpu.memory_bytes == 1024**3 and cpu.cgroup is None
    assert any("CPU limit 2 not enforced" in n for n in cpu.notes)
    gpu = spawner.limit_plan("8Gi", None, gpu=True)
    assert not gpu.use_rlimit_as and "would break CUDA" in gpu.notes[0]
    spawner.enforce_memory_limit = False
    assert not spawner.limit_plan("1Gi", None, gpu=False).use_rlimit_as


def test_a_delegated_cgroup_gets_one_child_per_server_with_memory_and_cpu_max(tmp_path: Path) -> None:
    parent = tmp_path / "cgroup"
    parent.mkdir()
    assert cgroup_usable(str(parent))[0] is False
    (parent / "cgroup.subtree_control").write_text("cpu io\n")
    usable, why = cgroup_usable(str(parent))
    assert not usable and "memory" in why
    (parent / "cgroup.subtree_control").write_text("cpu io memory pids\n")
    assert cgroup_usable(str(parent)) == (True, "")

    spawner = make_spawner(tmp_path, cgroup_parent=str(parent))
    plan = spawner.limit_plan("1Gi", "1.5", gpu=True)
    assert plan.cgroup == parent and plan.notes == []  # a cgroup enforces both, GPU or not
    path = spawner._make_cgroup(plan)
    assert path == parent / "kubelab-alice"
    assert (path / "memory.max").read_text() == f"{1024**3}\n"
    assert (path / "cpu.max").read_text() == "150000 100000\n"
    spawner._cgroup = path
    # the real cgroupfs empties a cgroup's files itself; here they are plain files
    for f in path.iterdir():
        f.unlink()
    spawner._remove_cgroup()
    assert not path.exists()


def test_the_working_dir_is_per_user_under_the_state_dir(tmp_path: Path) -> None:
    spawner = make_spawner(tmp_path, user="Ann Smith@example.org")
    home = Path(spawner.home_dir)
    assert home.parent == tmp_path / "state" / "users"
    assert "/" not in home.name and " " not in home.name and not home.name.startswith(".")
    assert spawner.cmd[1:] == ["-m", "jupyterhub.singleuser"]


def test_every_setting_is_a_documented_config_traitlet() -> None:
    own = set(LocalProfileSpawner.class_own_traits(config=True))
    assert {"kubelab_config", "state_dir", "gpu_detect_command", "gpu_devices", "gpu_models",
            "gpu_cache_seconds", "enforce_memory_limit", "cgroup_parent", "server_log_dir",
            "home_dir_template"} <= own
    for name in own:
        assert LocalProfileSpawner.class_traits()[name].help.strip(), f"{name} has no help"


def test_state_survives_a_hub_restart(tmp_path: Path) -> None:
    spawner = make_spawner(tmp_path, gpu_devices=["GPU-a", "GPU-b"])
    spawner.gpu_devices_held = ["GPU-a"]
    spawner.pid = os.getpid()
    state = spawner.get_state()
    assert state["gpus"] == ["GPU-a"]
    LocalProfileSpawner.allocator.release(spawner.server_key)
    restored = make_spawner(tmp_path, gpu_devices=["GPU-a", "GPU-b"])
    restored.load_state(json.loads(json.dumps(state)))
    assert restored.gpu_devices_held == ["GPU-a"]
    assert LocalProfileSpawner.allocator.holder("GPU-a") == restored.server_key
    restored.clear_state()
    assert LocalProfileSpawner.allocator.holder("GPU-a") is None


def test_the_state_dir_files_are_private(tmp_path: Path) -> None:
    from kubelab.spawner.up import write_private

    write_private(tmp_path / "s.json", "{}")
    assert stat.S_IMODE((tmp_path / "s.json").stat().st_mode) == 0o600
