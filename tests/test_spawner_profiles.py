"""spawner/profiles.py: per-group filtering, the chooser form, form parsing and validation.

Pure tests (no cluster). The config, users and ``TAMPERED`` cases come from
tests/profiles_support.py, shared with the Kubernetes spawner tests, which check the same cases end to end.
"""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubelab.core.config import parse_config
from kubelab.core.text import plural
from kubelab.spawner import profiles as P
from kubelab.tests.profiles_support import ALICE, CONFIG, CONFIG_YAML, NOBODY, TAMPERED, VICTOR


def test_at_least_thirty_tampered_cases() -> None:
    assert len(TAMPERED) >= 30


@pytest.mark.parametrize("name,options", TAMPERED, ids=[n for n, _ in TAMPERED])
def test_tampered_options_are_refused(name: str, options: Any) -> None:
    usage = P.Availability(quota=P.QuotaUsage("ml", 0, 4, 0, 2))
    with pytest.raises(P.InvalidOptions) as e:
        P.validate_user_options(CONFIG, ALICE, options, usage)
    assert str(e.value) and len(str(e.value)) < 400, name


# -- who may use what ---------------------------------------------------------------------------


def test_profiles_and_datasets_follow_groups() -> None:
    assert [p.slug for p in P.allowed_profiles(CONFIG, ALICE)] == ["cpu", "a100"]
    assert [p.slug for p in P.allowed_profiles(CONFIG, VICTOR)] == ["cpu", "t4"]
    assert [p.slug for p in P.allowed_profiles(CONFIG, NOBODY)] == ["cpu"]
    assert [d.name for d in P.allowed_datasets(CONFIG, ALICE)] == ["imagenet", "scratch", "local"]
    assert [d.name for d in P.allowed_datasets(CONFIG, VICTOR)] == ["coco", "scratch"]
    both = P.UserInfo.of("b", ["ml", "vision"])
    assert [p.slug for p in P.allowed_profiles(CONFIG, both)] == ["cpu", "a100", "t4"]


# -- validation: what is accepted -----------------------------------------------------------------


def test_empty_options_give_the_defaults() -> None:
    c = P.validate_user_options(CONFIG, ALICE, {})
    assert (c.profile.slug, c.image_slug, c.gpus) == ("cpu", "scipy", 0)
    assert [m.name for m in c.datasets] == ["imagenet"]  # default: true, granted
    assert c.team and c.team[0] == "ml"
    assert P.validate_user_options(CONFIG, NOBODY, None).datasets == ()


def test_full_choice_and_round_trip() -> None:
    options = {
        "profile": "a100",
        "image--unlisted-choice": "ghcr.io/kubelab/my-env:2024.1",
        "gpus": "2",
        "datasets": ["imagenet", {"name": "scratch", "sub_path": "run-1", "read_only": True,
                                  "mount_path": "/scratch/run-1"}],
    }
    c = P.validate_user_options(CONFIG, ALICE, options)
    assert c.custom_image and c.image == "ghcr.io/kubelab/my-env:2024.1"
    assert c.gpus == 2 and c.gpu_type == "a100" and c.gpu is not None
    scratch = c.datasets[1]
    assert scratch.sub_path == "users/alice/run-1" and scratch.read_only
    assert scratch.mount_path == "/scratch/run-1"
    assert P.validate_user_options(CONFIG, ALICE, c.user_options()) == c
    assert c.kubespawner_user_options() == {
        "profile": "a100", "image--unlisted-choice": "ghcr.io/kubelab/my-env:2024.1", "gpus": "2"}


def test_per_user_sub_path_cannot_reach_another_user() -> None:
    bob = P.validate_user_options(CONFIG, P.UserInfo.of("bob"), {"datasets": ["scratch"]})
    assert bob.datasets[0].sub_path == "users/bob"
    odd = P.validate_user_options(CONFIG, P.UserInfo.of("Bob/../alice"), {"datasets": ["scratch"]})
    assert ".." not in odd.datasets[0].sub_path and odd.datasets[0].sub_path.count("/") == 1


def test_quota_usage_refuses_what_would_exceed_it() -> None:
    busy = P.Availability(quota=P.QuotaUsage("ml", 3, 4, 0, 2))
    P.validate_user_options(CONFIG, ALICE, {"profile": "a100", "gpus": 1}, busy)
    with pytest.raises(P.InvalidOptions, match="team ml uses 3 of 4 GPUs"):
        P.validate_user_options(CONFIG, ALICE, {"profile": "a100", "gpus": 2}, busy)
    mine = P.Availability(quota=P.QuotaUsage("ml", 1, 4, 1, 2))
    with pytest.raises(P.InvalidOptions, match="you use 1 of your 2 GPUs"):
        P.validate_user_options(CONFIG, ALICE, {"profile": "a100", "gpus": 2}, mine)


def test_busy_gpus_are_accepted_unless_refuse_unavailable() -> None:
    none_free = P.Availability(gpus={"a100": P.GpuAvailability(8, 1, 1)})
    options = {"profile": "a100", "gpus": 2}
    assert P.validate_user_options(CONFIG, ALICE, options, none_free).gpus == 2
    with pytest.raises(P.InvalidOptions, match="at most 1 free on one node"):
        P.validate_user_options(CONFIG, ALICE, options, none_free, refuse_unavailable=True)
    local = P.Availability(gpus={"a100": P.GpuAvailability(0, 0, 0, note="this machine has no GPU")})
    with pytest.raises(P.InvalidOptions, match="this machine has no GPU"):
        P.validate_user_options(CONFIG, ALICE, options, local, refuse_unavailable=True)


def test_unusable_datasets_are_refused_and_not_defaulted() -> None:
    av = P.Availability(unusable_datasets={"imagenet": "PVCs cannot be mounted on a local hub"})
    assert P.validate_user_options(CONFIG, ALICE, {}, av).datasets == ()
    with pytest.raises(P.InvalidOptions, match="cannot be mounted here: PVCs"):
        P.validate_user_options(CONFIG, ALICE, {"datasets": ["imagenet"]}, av)


def test_messages_name_the_problem() -> None:
    def msg(options: Any, user: P.UserInfo = ALICE) -> str:
        with pytest.raises(P.InvalidOptions) as e:
            P.validate_user_options(CONFIG, user, options)
        return str(e.value)

    assert "no profile 't4' is available to you (yours: cpu, a100)" in msg({"profile": "t4"})
    assert "must match" in msg({"profile": "a100", "image--unlisted-choice": "evil/x:1"})
    assert "offers 1, 2, 4, 8 GPUs, not 3" in msg({"profile": "a100", "gpus": 3})
    assert "'cpu_limit'" in msg({"cpu_limit": 1})
    assert "over team ml's quota of 4 GPUs" in msg({"profile": "a100", "gpus": 8})
    assert "read-only" in msg({"datasets": [{"name": "imagenet", "read_only": False}]})


# -- form parsing ----------------------------------------------------------------------------------


def test_options_from_form_reads_only_the_chosen_profile() -> None:
    form = {
        "profile": ["a100"],
        "image--cpu": ["torch"],
        "image--a100": [P.CUSTOM_IMAGE_CHOICE],
        "custom-image--a100": ["  ghcr.io/kubelab/x:1 "],
        "gpus--a100": ["2"],
        "gpus--t4": ["1"],
        "dataset": ["imagenet", "scratch"],
    }
    assert P.options_from_form(form) == {
        "profile": "a100",
        "image--unlisted-choice": "ghcr.io/kubelab/x:1",
        "gpus": 2,
        "datasets": ["imagenet", "scratch"],
    }
    assert P.options_from_form({"profile": ["cpu"], "image--cpu": ["torch"]}) == {
        "profile": "cpu", "image": "torch", "datasets": []}
    assert P.options_from_form({}) == {}
    # odd values pass through untouched, for validation to refuse
    assert P.options_from_form({"profile": ["a100"], "gpus--a100": ["9999"]})["gpus"] == "9999"
    # digits only in ASCII: "²" and "٣" are str.isdigit() but not GPU counts
    for odd in ("²", "٣", "１"):
        options = P.options_from_form({"profile": ["a100"], "gpus--a100": [odd]})
        assert options["gpus"] == odd
        with pytest.raises(P.InvalidOptions):
            P.validate_user_options(CONFIG, ALICE, options)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(
    st.sampled_from(["profile", "image--a100", "custom-image--a100", "gpus--a100", "dataset", "x"]),
    st.lists(st.text(max_size=40) | st.sampled_from(["a100", "1", "2", "²", "٣", "imagenet"]), max_size=3),
))
def test_any_form_either_validates_or_is_refused_cleanly(form: dict[str, list[str]]) -> None:
    options = P.options_from_form(form)
    try:
        choice = P.validate_user_options(CONFIG, ALICE, options)
    except P.InvalidOptions:
        return
    assert choice.profile in P.allowed_profiles(CONFIG, ALICE)
    assert "\n" not in choice.image


@settings(max_examples=300, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(list(P.OPTION_KEYS) + ["name", "sub_path", "mount_path", "read_only", "zz"]),
        inner, max_size=4),
    max_leaves=12,
))
def test_arbitrary_json_never_crashes_validation(options: Any) -> None:
    try:
        choice = P.validate_user_options(CONFIG, ALICE, options)
    except P.InvalidOptions:
        return
    for m in choice.datasets:
        assert m.mount_path.startswith("/") and ".." not in m.mount_path.split("/")
        assert m.sub_path is None or (not m.sub_path.startswith("/") and ".." not in m.sub_path.split("/"))


# -- the rendered form ----------------------------------------------------------------------------


def _strip_style(text: str) -> str:
    return re.sub(r"<style>.*?</style>", "", text, flags=re.S)


def test_form_escapes_all_config_text() -> None:
    page = P.render_form(CONFIG, ALICE, P.Availability(gpus={"a100": P.GpuAvailability(8, 3, 2)}))
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>1k</b>" not in page and "&lt;b&gt;1k&lt;/b&gt;" in page
    assert "NVIDIA A100 &lt;80GB&gt; &amp; &#34;friends&#34;" in page
    assert "{{ 7*7 }}" in page  # shown as written, not evaluated
    assert "<script" not in _strip_style(page).lower()  # and no JavaScript of ours


def test_form_shows_only_what_the_user_may_use() -> None:
    page = P.render_form(CONFIG, ALICE)
    assert 'value="a100"' in page and 'value="t4"' not in page
    assert 'value="imagenet"' in page and 'value="coco"' not in page
    victor = P.render_form(CONFIG, VICTOR)
    assert 'value="t4"' in victor and 'name="profile" value="a100"' not in victor


def test_form_shows_availability_quota_and_reasons() -> None:
    av = P.Availability(
        gpus={"a100": P.GpuAvailability(total=8, free=3, largest_free=2)},
        quota=P.QuotaUsage("ml", gpus_used=2, gpus_quota=4, user_gpus_used=0, user_gpus_quota=2),
        unusable_datasets={"local": "hostPath volumes are not allowed under Pod Security 'restricted'"},
    )
    page = html.unescape(P.render_form(CONFIG, ALICE, av))
    assert "A100 <80GB> & \"friends\": 3 of 8 free (at most 2 on one node)" in page
    assert "team ml: 2 of 4 GPUs in use" in page
    assert "you: 0 of 2 GPUs in use" in page
    # 4 and 8 are over the user's quota of 2: disabled, with the reason
    assert re.search(r'value="4" disabled>\s*<span class="kl-count-text">4 × .*?unavailable: over your quota of 2 GPUs', page, re.S)
    assert re.search(r'value="8" disabled>\s*<span class="kl-count-text">8 × .*?unavailable: over team ml\'s quota of 4', page, re.S)
    assert re.search(r'value="local" disabled>.*?unavailable: hostPath volumes', page, re.S)
    assert "read-only" in page and "read-write" in page
    assert "2 GiB /dev/shm" in page


def test_form_marks_gpus_not_free_now() -> None:
    av = P.Availability(gpus={"a100": P.GpuAvailability(total=8, free=0, largest_free=0)})
    page = html.unescape(P.render_form(CONFIG, ALICE, av))
    assert "not free now: all 8 NVIDIA A100" in page
    assert "Unavailable: not free now" in page  # the profile as a whole
    unknown = html.unescape(P.render_form(CONFIG, ALICE, P.NO_AVAILABILITY))
    assert "GPU availability is not known yet" in unknown


def test_form_preselects_previous_valid_options() -> None:
    prev = {"profile": "a100", "image--unlisted-choice": "ghcr.io/kubelab/x:1", "gpus": 2,
            "datasets": ["scratch"]}
    page = P.render_form(CONFIG, ALICE, user_options=prev)
    assert re.search(r'name="profile" value="a100" checked', page)
    assert re.search(r'name="gpus--a100" value="2" checked', page)
    assert 'value="ghcr.io/kubelab/x:1"' in page
    assert re.search(r'value="scratch" checked', page) and not re.search(r'value="imagenet" checked', page)
    # invalid previous options fall back to the defaults
    page = P.render_form(CONFIG, ALICE, user_options={"profile": "t4"})
    assert re.search(r'name="profile" value="cpu" checked', page)


def test_form_posted_back_validates_to_the_defaults() -> None:
    """What a browser without JavaScript sends for the untouched form is a valid choice."""
    page = P.render_form(CONFIG, ALICE)
    form: dict[str, list[str]] = {}
    for m in re.finditer(r'<input type="(radio|checkbox)" name="([^"]+)" value="([^"]+)"([^>]*)>', page):
        if " checked" in m.group(4):
            form.setdefault(m.group(2), []).append(html.unescape(m.group(3)))
    for m in re.finditer(r'<select id="[^"]+" name="([^"]+)">(.*?)</select>', page, re.S):
        chosen = re.search(r'<option value="([^"]+)" selected', m.group(2))
        assert chosen
        form[m.group(1)] = [chosen.group(1)]
    choice = P.validate_user_options(CONFIG, ALICE, P.options_from_form(form))
    assert choice.profile.slug == "cpu" and [m.name for m in choice.datasets] == ["imagenet"]


def test_form_for_a_user_with_no_profile() -> None:
    config = parse_config(CONFIG_YAML.replace("    default: true\n    cpu: {guarantee: 0.5", "    groups: [ml]\n    default: true\n    cpu: {guarantee: 0.5"))
    page = P.render_form(config, NOBODY)
    assert "No profile is available to you" in page
    with pytest.raises(P.InvalidOptions, match="no profile is available"):
        P.validate_user_options(config, NOBODY, {})


# -- KubeSpawner's profile_list ------------------------------------------------------------------


def test_kubespawner_profile_list() -> None:
    pl = P.kubespawner_profile_list(CONFIG, ALICE)
    assert [p["slug"] for p in pl] == ["cpu", "a100"]
    assert pl[0]["default"] and not pl[1]["default"]
    a100 = pl[1]
    o = a100["kubespawner_override"]
    assert o["cpu_guarantee"] == 4.0 and o["mem_limit"] == 16 * 2**30
    assert o["node_selector"] == {"nvidia.com/gpu.product": "A100"}
    assert o["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    gpus = a100["profile_options"]["gpus"]["choices"]
    assert list(gpus) == ["1", "2", "4", "8"] and gpus["1"]["default"]
    assert gpus["2"]["kubespawner_override"]["extra_resource_limits"] == {"nvidia.com/gpu": "2"}
    unlisted = a100["profile_options"]["image"]["unlisted_choice"]
    assert unlisted["enabled"] and unlisted["kubespawner_override"] == {"image": "{value}"}
    assert not pl[0]["profile_options"]["image"]["unlisted_choice"]["enabled"]


def test_counts_are_worded_in_the_right_number() -> None:
    av = P.Availability(
        gpus={"a100": P.GpuAvailability(total=1, free=0, largest_free=0)},
        quota=P.QuotaUsage("ml", gpus_used=0, gpus_quota=1, user_gpus_used=1, user_gpus_quota=1),
    )
    page = html.unescape(P.render_form(CONFIG, ALICE, av))
    assert "team ml: 0 of 1 GPU in use" in page and "you: 1 of 1 GPU in use" in page
    assert not re.search(r"\b1 GPUs\b", page)
    with pytest.raises(P.InvalidOptions, match=r"^1 GPU: you use 1 of your 1 GPU;"):
        P.validate_user_options(CONFIG, ALICE, {"profile": "a100", "gpus": 1}, av)
    assert plural(0, "GPU") == "0 GPUs" and plural(2, "node") == "2 nodes"


def test_no_gpu_of_the_type_at_all_is_said_once_and_plainly() -> None:
    note = "this machine has no NVIDIA GPU (nvidia-smi not found)"
    av = P.Availability(gpus={"a100": P.GpuAvailability(total=0, free=0, largest_free=0, note=note)},
                        source="this machine")
    page = html.unescape(P.render_form(CONFIG, ALICE, av, refuse_unavailable=True))
    assert f"Unavailable: {note}" in page
    assert "not free now" not in page and "0 of 0 free" not in page
    assert f"NVIDIA A100 <80GB> & \"friends\": {note}" in page
    with pytest.raises(P.InvalidOptions, match="no NVIDIA GPU"):
        P.validate_user_options(CONFIG, ALICE, {"profile": "a100"}, av, refuse_unavailable=True)
    cluster = html.unescape(P.render_form(CONFIG, ALICE, P.Availability(
        gpus={"a100": P.GpuAvailability(total=0, free=0, largest_free=0)})))
    assert 'Unavailable: the cluster has no NVIDIA A100 <80GB> & "friends" now' in cluster
