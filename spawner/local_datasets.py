"""Datasets on one machine: linked into the user's working directory, read-only checked.

A dataset with a ``host_path`` source is linked (a symlink) into the working directory at its
mount path without the leading ``/`` (``/data/example`` → ``~/data/example``). Read-only is
*reported, not invented*: :func:`read_only_enforcement` says whether the kernel (a read-only
mount) or file permissions keep a dataset read-only, or that nothing does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tornado import web

from kubelab.spawner.profiles import Choice, DatasetMount

__all__ = ["LinkedDataset", "ReadOnlyCheck", "link_datasets", "read_only_enforcement"]


@dataclass(frozen=True)
class ReadOnlyCheck:
    """Whether the OS, rather than good manners, keeps a dataset read-only."""

    enforced: bool
    how: str


def read_only_enforcement(path: Path) -> ReadOnlyCheck:
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return ReadOnlyCheck(True, "read-only mount")
    except OSError:
        pass
    if os.geteuid() != 0 and not os.access(path, os.W_OK):
        return ReadOnlyCheck(
            True, "file permissions (its top directory is not writable by the servers' user)"
        )
    who = "root" if os.geteuid() == 0 else "the user the servers run as"
    return ReadOnlyCheck(False, f"not enforced: {who} may write there")


@dataclass(frozen=True)
class LinkedDataset:
    mount: DatasetMount
    link: Path
    target: Path
    enforcement: ReadOnlyCheck | None

    @property
    def name(self) -> str:
        return self.mount.name

    @property
    def mount_path(self) -> str:
        return self.mount.mount_path

    @property
    def read_only(self) -> bool:
        return self.mount.read_only


def link_datasets(choice: Choice, home: Path) -> list[LinkedDataset]:
    """Symlink *choice*'s datasets into *home* (see the module docstring); the links of the
    last start that are no longer wanted go first. HTTP 400/409 naming the dataset."""
    manifest = home / ".kubelab" / "datasets.json"
    try:
        previous = json.loads(manifest.read_text())
    except (OSError, ValueError):
        previous = []
    for link in previous:  # links from the last start that are no longer wanted
        p = Path(link)
        if p.is_symlink() and home in p.parents:
            p.unlink()
    linked: list[LinkedDataset] = []
    for m in choice.datasets:
        source = m.dataset.source.host_path
        assert source is not None  # validation refuses other kinds here
        root = Path(source.path).resolve()
        target = (root / m.sub_path).resolve() if m.sub_path else root
        if target != root and root not in target.parents:
            # a symlink inside the dataset pointing out of it
            raise web.HTTPError(400, f"dataset {m.name!r}: sub path leaves the dataset")
        if not target.is_dir():
            raise web.HTTPError(400, f"dataset {m.name!r}: {target} is not a directory on this machine")
        link = home / m.mount_path.lstrip("/")
        if link.is_symlink():
            link.unlink()
        elif link.exists():
            raise web.HTTPError(
                409, f"dataset {m.name!r}: {link} exists in your working directory and is not a "
                "kubelab dataset link; move it away and start again",
            )
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target, target_is_directory=True)
        check = read_only_enforcement(target) if m.read_only else None
        linked.append(LinkedDataset(m, link, target, check))
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps([str(d.link) for d in linked]))
    return linked
