"""hub_config/jupyterhub_config.py, loaded as JupyterHub loads it (``get_config`` in scope)."""

from __future__ import annotations

import logging
import runpy
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config

from kubelab.core.config import cached_config, example_config_path, forget_cached_configs

HUB_CONFIG = Path(__file__).resolve().parent.parent / "hub_config" / "jupyterhub_config.py"


@pytest.fixture(autouse=True)
def _fresh_watchers() -> Any:
    forget_cached_configs()
    yield
    forget_cached_configs()


def load(monkeypatch: pytest.MonkeyPatch, kubelab_yaml: Path, c: Config | None = None) -> Config:
    monkeypatch.setenv("KUBELAB_CONFIG", str(kubelab_yaml))
    c = Config() if c is None else c
    runpy.run_path(str(HUB_CONFIG), init_globals={"get_config": lambda: c})
    return c


def test_the_example_gives_the_kubelab_spawner(monkeypatch: pytest.MonkeyPatch) -> None:
    c = load(monkeypatch, example_config_path())
    assert c.JupyterHub.spawner_class == "kubelab"
    assert c.ProfileSpawner.kubelab_config == str(example_config_path())
    assert {"ml", "vision"} <= set(c.JupyterHub.load_groups)
    assert c.ProfileSpawner.volume_mounts[0]["mountPath"] == "/home/jovyan"


def test_groups_are_left_to_an_authenticator_that_manages_them(monkeypatch: pytest.MonkeyPatch) -> None:
    given = Config()
    given.Authenticator.manage_groups = True
    c = load(monkeypatch, example_config_path(), given)
    assert "load_groups" not in c.JupyterHub


def test_a_broken_config_stops_the_hub_with_every_problem(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bad = tmp_path / "kubelab.yaml"
    bad.write_text(example_config_path().read_text().replace("counts: [1, 2, 4, 8]", "counts: [1, two]", 1)
                   + "\nsurprise: 1\n")
    with pytest.raises(SystemExit) as e:
        load(monkeypatch, bad)
    message = str(e.value.code)
    assert "surprise" in message and "counts[1]" in message and str(bad) in message
    assert "Traceback" not in message


def test_warnings_are_logged_once_for_the_hub_and_its_spawners(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = example_config_path().read_text()
    inline_nfs = "csi: {driver: nfs.csi.k8s.io, volume_attributes: {server: nfs.example.internal, share: /exports/coco}}"
    assert inline_nfs in text
    warned = tmp_path / "kubelab.yaml"
    warned.write_text(text.replace(inline_nfs, "nfs: {server: nfs.example.internal, path: /exports/coco}"))
    with caplog.at_level(logging.WARNING):
        load(monkeypatch, warned)
        cached_config(str(warned))  # what each spawner does on its first form
        cached_config(str(warned))
    nfs = [r for r in caplog.records if "inline NFS" in r.getMessage()]
    assert len(nfs) == 1, [r.getMessage() for r in caplog.records]


def test_zero_to_jupyterhub_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Helm values: kubelab's spawner, the hub's config snippet working as the chart runs it,
    and no chart default that the restricted Pod Security level would refuse."""
    import yaml

    values = yaml.safe_load((HUB_CONFIG.parent / "z2jh-values.yaml").read_text())
    assert values["hub"]["config"]["JupyterHub"]["spawner_class"] == "kubelab"
    assert values["singleuser"]["cloudMetadata"]["blockWithIptables"] is False
    assert values["hub"]["networkPolicy"]["interNamespaceAccessLabels"] == "accept"
    config = cached_config(str(example_config_path()))
    security = config.pod_security
    assert (values["singleuser"]["uid"], values["singleuser"]["fsGid"]) == (security.run_as_user, security.fs_group)
    snippet = values["hub"]["extraConfig"]["00-kubelab"]
    path = values["hub"]["extraFiles"]["kubelab"]["mountPath"]
    assert path in snippet
    c = Config()
    exec(snippet.replace(path, str(example_config_path())), {"c": c})  # as the chart's config does
    assert set(c.JupyterHub.load_groups) == set(config.groups)
