"""The job tests' fixtures, as a pytest plugin (registered in tests/conftest.py), so that test
modules use them by name without importing them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kubelab.core.jobs.local import LocalBackend
from kubelab.tests.jobs_support import TRAIN_NUMPY, as_backend, make_backend


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    (d / "train.py").write_text(TRAIN_NUMPY)
    return d


@pytest.fixture
def local(tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalBackend]:
    """A local backend over a fresh jobs root, made this process's backend; cwd is *workdir*."""
    backend = make_backend(tmp_path / "jobs")
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("KUBELAB_DISPLAY", "text")
    with as_backend(backend):
        yield backend
