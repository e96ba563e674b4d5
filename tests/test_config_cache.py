"""kubelab.core.config.ConfigWatcher / cached_config: the one "re-read kubelab.yaml when it
changes, keep the last good one on a broken edit" both spawners use."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from kubelab.core import config as C
from kubelab.tests.profiles_support import CONFIG_YAML

NFS_DATASET = """
  - name: nfs-data
    source: {nfs: {server: nfs.example, path: /x}}
    mount_path: /data/nfs
"""


def write(path: Path, text: str, mtime: int) -> None:
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def test_an_edit_is_read_and_a_broken_edit_keeps_the_last_good_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "kubelab.yaml"
    write(path, CONFIG_YAML, 1)
    watcher = C.ConfigWatcher(path, recheck_seconds=0)
    first = watcher.get()
    assert first.profiles[0].slug == "cpu"
    assert watcher.get() is first  # unchanged file: not parsed again
    write(path, CONFIG_YAML.replace("slug: cpu", "slug: cpu-box"), 2)
    second = watcher.get()
    assert second.profiles[0].slug == "cpu-box"
    caplog.set_level(logging.INFO, logger="kubelab.config")
    write(path, "profiles: nope\n", 3)
    assert watcher.get() is second
    assert watcher.get() is second
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors  # once per change, not once per call
    assert "Keeping the previous kubelab config" in errors[0].getMessage()
    assert "profiles" in errors[0].getMessage()
    write(path, CONFIG_YAML, 4)  # fixed again
    assert watcher.get().profiles[0].slug == "cpu"


def test_a_file_never_valid_raises(tmp_path: Path) -> None:
    path = tmp_path / "kubelab.yaml"
    write(path, "profiles: []\n", 1)
    with pytest.raises(C.ConfigError):
        C.ConfigWatcher(path).get()
    with pytest.raises(C.ConfigError, match="no such file"):
        C.ConfigWatcher(tmp_path / "missing.yaml").get()


def test_the_file_is_stat_at_most_once_per_recheck_interval(tmp_path: Path) -> None:
    path = tmp_path / "kubelab.yaml"
    write(path, CONFIG_YAML, 1)
    watcher = C.ConfigWatcher(path, recheck_seconds=3600)
    first = watcher.get()
    write(path, CONFIG_YAML.replace("slug: cpu", "slug: cpu-box"), 2)
    assert watcher.get() is first  # within the interval: the cached one, no stat
    watcher.recheck_seconds = 0
    assert watcher.get().profiles[0].slug == "cpu-box"


def test_warnings_are_logged_once_per_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "kubelab.yaml"
    with_nfs = CONFIG_YAML.replace("datasets:\n", "datasets:" + NFS_DATASET, 1)
    write(path, with_nfs, 1)
    caplog.set_level(logging.WARNING, logger="kubelab.config")
    watcher = C.ConfigWatcher(path, recheck_seconds=0)
    for _ in range(3):
        watcher.get()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # CONFIG_YAML's coco is inline NFS too: one warning per such dataset, for this one load
    assert len(warnings) == 2, warnings
    assert all("inline NFS" in w and "datasets[" in w for w in warnings)
    write(path, with_nfs + "\n", 2)  # a new load warns again
    watcher.get()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 4


def test_messages_go_to_the_log_given(tmp_path: Path) -> None:
    class Log:
        def __init__(self) -> None:
            self.lines: list[tuple[str, str]] = []

        def warning(self, msg: str, *args: object) -> None:
            self.lines.append(("warning", msg % args))

        def error(self, msg: str, *args: object) -> None:
            self.lines.append(("error", msg % args))

    path = tmp_path / "kubelab.yaml"
    write(path, CONFIG_YAML, 1)
    log = Log()
    watcher = C.ConfigWatcher(path, recheck_seconds=0)
    watcher.get(log)
    write(path, "{", 2)
    watcher.get(log)
    assert [kind for kind, _ in log.lines] == ["warning", "error"]


def test_cached_config_shares_one_watcher_per_path(tmp_path: Path) -> None:
    path = tmp_path / "kubelab.yaml"
    write(path, CONFIG_YAML, 1)
    assert C.cached_config(path) is C.cached_config(str(path))
    C.forget_cached_configs()
    assert C.cached_config(path) == C.cached_config(path)
