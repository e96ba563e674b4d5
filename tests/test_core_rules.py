"""The rules kept in one place in the core: access (core/access.py), the GPU quota
(core/quota.py), a job folder's layout (core/jobs/folder.py) and the small text helpers, checked
directly and, where two sides apply one rule, checked to give both sides the same answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubelab.core.access import granted, granted_datasets, granted_profiles
from kubelab.core.jobs.folder import JobFolder
from kubelab.core.paths import nested
from kubelab.core.quota import GpuQuota, QuotaUsage
from kubelab.core.text import gpus_text, json_kind, plural, type_name
from kubelab.spawner import profiles as P
from kubelab.tests.profiles_support import ALICE, CONFIG, NOBODY, VICTOR


def test_granted_is_everybody_without_groups_and_members_only_with() -> None:
    assert granted([], []) and granted([], ["x"])
    assert granted(["ml"], ["vision", "ml"]) and not granted(["ml"], ["vision"]) and not granted(["ml"], [])


@pytest.mark.parametrize("user", [ALICE, VICTOR, NOBODY], ids=lambda u: u.name)
def test_the_form_offers_exactly_what_the_access_rule_grants(user: P.UserInfo) -> None:
    assert P.allowed_profiles(CONFIG, user) == granted_profiles(CONFIG, user.groups)
    assert P.allowed_datasets(CONFIG, user) == granted_datasets(CONFIG, user.groups)
    assert granted_profiles(CONFIG, user.groups) == [
        p for p in CONFIG.profiles if not p.groups or set(p.groups) & user.groups
    ]


def test_quota_of_a_team_and_of_no_team() -> None:
    q = GpuQuota.of(CONFIG, ALICE.groups)
    assert q is not None and q.team == "ml" and (q.team_gpus, q.user_gpus) == (4, 2)
    assert GpuQuota.of(CONFIG, NOBODY.groups) is None


def test_breach_names_the_first_ceiling_passed_and_what_is_left() -> None:
    usage = QuotaUsage("ml", gpus_used=3, gpus_quota=4, user_gpus_used=0, user_gpus_quota=2)
    assert usage.breach(1) is None
    team = usage.breach(2)
    assert team is not None and (team.scope, team.limit, team.used, team.left) == ("team", 4, 3, 1)
    mine = QuotaUsage("ml", 0, 4, 2, 2).breach(1)
    assert mine is not None and (mine.scope, mine.left) == ("user", 0)
    assert QuotaUsage("ml").breach(1000) is None  # no quota: no ceiling
    over = QuotaUsage("ml", 9, 4).breach(0)  # already over (a quota lowered): left is 0, not negative
    assert over is not None and over.left == 0


def test_a_jobs_in_use_gpus_count_for_the_team_and_the_user() -> None:
    q = GpuQuota("ml", team_gpus=4, user_gpus=2)
    assert q.breach(2) is None
    b = q.breach(1, in_use=2)
    assert b is not None and b.scope == "user"
    assert GpuQuota("ml", 2, None).breach(1, in_use=2).scope == "team"  # type: ignore[union-attr]


def test_the_form_and_validation_refuse_the_same_counts_as_the_quota() -> None:
    av = P.Availability(quota=GpuQuota("ml", 4, 2).usage(team_used=3))
    for n in (1, 2):
        breach = av.quota.breach(n)  # type: ignore[union-attr]
        refused = breach is not None
        try:
            P.validate_user_options(CONFIG, ALICE, {"profile": "a100", "gpus": n}, av)
            accepted = True
        except P.InvalidOptions:
            accepted = False
        assert accepted is not refused, n


def test_a_job_folder_has_one_layout(tmp_path: Path) -> None:
    folder = JobFolder(tmp_path / "train-1")
    assert folder.outputs == tmp_path / "train-1" / "outputs"
    assert JobFolder.of_outputs(folder.outputs) == folder
    assert {p.name for p in (folder.workspace, folder.metrics, folder.log, folder.node_logs, folder.record,
                             folder.exit_code, folder.cancelled)} == {
        "workspace", "metrics.jsonl", "logs.txt", "logs", "job.json", "exit_code", "cancelled"}


def test_text_helpers() -> None:
    assert (gpus_text(1), gpus_text(0), gpus_text(3)) == ("1 GPU", "0 GPUs", "3 GPUs")
    assert plural(1, "child", "children") == "1 child" and plural(2, "child", "children") == "2 children"
    assert (type_name(3), type_name([])) == ("int", "list")
    assert (json_kind(True), json_kind(3), json_kind(None), json_kind({})) == ("true/false", "a number", "null", "an object")


@pytest.mark.parametrize("a,b,expected", [
    ("/data", "/data", True), ("/data/x", "/data", True), ("/data", "/data/x/", True),
    ("/data2", "/data", False), ("/data/../etc", "/etc", True), ("/a", "/b", False),
])
def test_nested_paths(a: str, b: str, expected: bool) -> None:
    assert nested(a, b) is expected and nested(b, a) is expected
