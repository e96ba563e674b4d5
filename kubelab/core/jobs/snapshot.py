"""Content-addressed snapshots of a job's working directory.

A job runs on a frozen copy of the files the user had when they submitted it, so editing
``train.py`` in the notebook afterwards does not change a running job. Copying the whole directory
each time would make resubmitting slow, so files are stored once, by the SHA-256 of their content,
in a store on the user's volume (``<jobs root>/.snapshots/objects/ab/cdef…``); a snapshot is a
manifest of (path, digest, size) and a job's workspace is hard links to the stored blobs. A
resubmit with unchanged files hashes nothing (a stat cache keyed by size, mtime and inode says the
content is already known) and stores nothing new.

What is left out: ``.gitignore`` and ``.kubelabignore`` rules (gitignore semantics via
``pathspec``; a ``.kubelabignore`` can re-include with ``!`` what git ignores), version-control
and cache folders (``.git``, ``__pycache__``, ``.ipynb_checkpoints``, ``.venv``), symlinked
folders (often links to datasets, which jobs mount anyway) and the jobs root itself.

Why hard links, and read-only blobs: a workspace costs no copy, and a blob is shared by every job
that has that content, so the blobs are made read-only (writes belong in ``$KUBELAB_OUTPUT_DIR``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubelab.core.jobs.errors import InvalidJobSpec, JobError, SnapshotTooLarge

__all__ = ["Snapshot", "SnapshotEntry", "SnapshotStore", "ALWAYS_IGNORED", "format_size"]

#: folders never shipped, whatever the ignore files say
ALWAYS_IGNORED = frozenset({".git", ".hg", ".svn", "__pycache__", ".ipynb_checkpoints", ".venv",
                            ".kubelab", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
IGNORE_FILES = (".gitignore", ".kubelabignore")
_CHUNK = 1 << 20


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


@dataclass(frozen=True)
class SnapshotEntry:
    path: str  #: relative, with "/" separators
    digest: str
    size: int
    executable: bool = False


@dataclass(frozen=True)
class Snapshot:
    """A frozen working directory: its manifest id, entries and what taking it cost."""

    id: str
    entries: tuple[SnapshotEntry, ...]
    store: Path
    #: how many files and bytes had to be added to the store for this snapshot
    new_files: int = 0
    new_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)

    def materialize(self, dest: Path) -> None:
        """Make *dest* a copy of the snapshot: hard links to the blobs (a copy where linking fails)."""
        dest.mkdir(parents=True, exist_ok=True)
        made: set[Path] = {dest}
        objects = self.store / "objects"
        for e in self.entries:
            target = dest / e.path
            parent = target.parent
            if parent not in made:
                parent.mkdir(parents=True, exist_ok=True)
                made.add(parent)
            blob = objects / e.digest[:2] / e.digest[2:]
            if e.executable:
                shutil.copyfile(blob, target)
                os.chmod(target, 0o755)
                continue
            try:
                os.link(blob, target)
            except OSError:
                shutil.copyfile(blob, target)


class _Ignore:
    """gitignore-style rules of one folder (its .gitignore then its .kubelabignore)."""

    def __init__(self, prefix: str, spec: Any) -> None:
        self.prefix = prefix  # "" for the root, "sub/dir/" below it
        self.spec = spec


class SnapshotStore:
    """The blob store and stat cache under *root* (``<jobs root>/.snapshots``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.manifests = self.root / "manifests"
        self._index_path = self.root / "index.json"
        self._lock = threading.Lock()

    # -- walking ------------------------------------------------------------------------------

    def _rules(self, folder: Path, prefix: str) -> _Ignore | None:
        lines: list[str] = []
        for name in IGNORE_FILES:
            try:
                lines += (folder / name).read_text(encoding="utf-8", errors="replace").splitlines()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
                continue
        if not lines:
            return None
        try:
            import pathspec
        except ImportError:  # pragma: no cover - a dependency of kubelab
            raise JobError("kubelab needs the 'pathspec' package to read .gitignore files") from None
        return _Ignore(prefix, pathspec.GitIgnoreSpec.from_lines(lines))

    @staticmethod
    def _ignored(rules: Sequence[_Ignore], rel: str, is_dir: bool) -> bool:
        # The deepest folder whose rules say something decides, as git does.
        for rule in reversed(rules):
            sub = rel[len(rule.prefix):] + ("/" if is_dir else "")
            result = rule.spec.check_file(sub)
            if result.include is not None:
                return bool(result.include)
        return False

    def walk(self, workdir: Path, *, exclude: Iterable[Path] = ()) -> list[tuple[str, str, os.stat_result]]:
        """Every file to ship: (relative path, absolute path, stat), in a stable order."""
        excluded = {os.path.realpath(p) for p in exclude}
        out: list[tuple[str, str, os.stat_result]] = []

        def visit(folder: str, prefix: str, rules: list[_Ignore]) -> None:
            here = self._rules(Path(folder), prefix)
            if here is not None:
                rules = [*rules, here]
            try:
                entries = sorted(os.scandir(folder), key=lambda d: d.name)
            except (PermissionError, FileNotFoundError):
                return
            for entry in entries:
                rel = prefix + entry.name
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                    if is_dir:
                        if entry.name in ALWAYS_IGNORED or os.path.realpath(entry.path) in excluded:
                            continue
                        if rules and self._ignored(rules, rel, True):
                            continue
                        visit(entry.path, rel + "/", rules)
                        continue
                    if entry.is_symlink() and os.path.isdir(entry.path):
                        continue  # a link to a folder, often a dataset: never followed
                    if entry.name.endswith((".pyc", ".pyo")):
                        continue
                    if rules and self._ignored(rules, rel, False):
                        continue
                    st = entry.stat()  # follows a link to a file; cached by scandir
                except (FileNotFoundError, PermissionError):
                    continue  # vanished or unreadable while walking
                if stat.S_ISREG(st.st_mode):
                    out.append((rel, entry.path, st))

        visit(str(workdir), "", [])
        return out

    # -- taking -------------------------------------------------------------------------------

    def take(self, workdir: str | Path, *, max_size: int | None = None,
             extra: Mapping[str, bytes] | None = None,
             exclude: Iterable[Path] = ()) -> Snapshot:
        """Snapshot *workdir* (plus *extra* files given as bytes) into the store.

        Raises :class:`SnapshotTooLarge` when the files to ship add up to more than *max_size*
        bytes, naming the biggest folders and files so the user knows what to ignore.
        """
        workdir = Path(workdir).expanduser()
        if not workdir.is_dir():
            raise InvalidJobSpec(f"working directory {str(workdir)!r} is not a folder")
        workdir = workdir.resolve()
        files = self.walk(workdir, exclude=[self.root, *exclude])
        total = sum(st.st_size for _, _, st in files) + sum(len(b) for b in (extra or {}).values())
        if max_size is not None and total > max_size:
            raise _too_large(workdir, files, total, max_size)
        with self._lock:
            self.objects.mkdir(parents=True, exist_ok=True)
            self.manifests.mkdir(parents=True, exist_ok=True)
            index = self._load_index()
            digests: dict[str, str] = {}
            todo: list[tuple[str, str, list[int]]] = []
            for rel, path, st in files:
                signature = [st.st_size, st.st_mtime_ns, st.st_ino]
                cached = index.get(path)
                # The store only grows (blobs are never removed while the index names them),
                # so a matching stat signature is enough: no blob lookup per file.
                if cached is not None and cached[:3] == signature:
                    digests[rel] = cached[3]
                else:
                    todo.append((rel, path, signature))
            new_files = new_bytes = 0
            if todo:
                # Reading, hashing and storing new files is I/O bound: a few threads overlap it
                # (hashlib and file I/O release the GIL).
                with ThreadPoolExecutor(max_workers=min(8, len(todo))) as pool:
                    results = pool.map(self._add_file_safely, [path for _, path, _ in todo])
                    for (rel, path, signature), result in zip(todo, results):
                        if result is None:
                            continue  # vanished or unreadable since the walk
                        digest, added, size = result
                        index[path] = [*signature, digest]
                        digests[rel] = digest
                        if added:
                            new_files += 1
                            new_bytes += size
            entries = [SnapshotEntry(rel, digests[rel], st.st_size, bool(st.st_mode & 0o111))
                       for rel, _, st in files if rel in digests]
            for rel, content in sorted((extra or {}).items()):
                digest, added = self._add_bytes(content)
                new_files += added
                new_bytes += len(content) if added else 0
                entries = [e for e in entries if e.path != rel]
                entries.append(SnapshotEntry(rel, digest, len(content)))
            entries.sort(key=lambda e: e.path)
            manifest = json.dumps([[e.path, e.digest, e.size, e.executable] for e in entries],
                                  separators=(",", ":")).encode()
            snapshot_id = hashlib.sha256(manifest).hexdigest()[:20]
            manifest_path = self.manifests / f"{snapshot_id}.json"
            if not manifest_path.exists():
                _atomic_write(manifest_path, manifest)
            if new_files or len(index) != self._index_len:
                self._save_index(index)
        return Snapshot(snapshot_id, tuple(entries), self.root, new_files, new_bytes)

    def load(self, snapshot_id: str) -> Snapshot:
        data = json.loads((self.manifests / f"{snapshot_id}.json").read_bytes())
        return Snapshot(snapshot_id, tuple(SnapshotEntry(*row) for row in data), self.root)

    # -- blobs --------------------------------------------------------------------------------

    def _blob(self, digest: str) -> Path:
        return self.objects / digest[:2] / digest[2:]

    def _has(self, digest: str) -> bool:
        return os.path.exists(self._blob(digest))

    def _add_file_safely(self, path: str) -> tuple[str, bool, int] | None:
        try:
            digest, added = self._add_file(path)
        except (FileNotFoundError, PermissionError):
            return None
        return digest, added, os.stat(self._blob(digest)).st_size

    def _add_file(self, path: str | Path) -> tuple[str, bool]:
        """Hash *path*; copy it into the store when its content is new there."""
        h = hashlib.sha256()
        with open(path, "rb") as src:
            first = src.read(_CHUNK)
            if len(first) < _CHUNK:  # small files (most of a code folder): one read, no temp file
                h.update(first)
                digest = h.hexdigest()
                if self._has(digest):
                    return digest, False
                return digest, self._write_blob(digest, first)
        fd, tmp = tempfile.mkstemp(dir=self.objects, prefix=".tmp-")
        try:
            with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    dst.write(chunk)
            return h.hexdigest(), self._commit(tmp, h.hexdigest())
        except BaseException:
            _unlink(tmp)
            raise

    def _add_bytes(self, content: bytes) -> tuple[str, bool]:
        digest = hashlib.sha256(content).hexdigest()
        if self._has(digest):
            return digest, False
        return digest, self._write_blob(digest, content)

    def _write_blob(self, digest: str, content: bytes) -> bool:
        blob = self._blob(digest)
        blob.parent.mkdir(exist_ok=True)
        tmp = f"{blob}.{uuid.uuid4().hex[:8]}.tmp"  # beside the blob: a small shard directory
        with open(tmp, "wb") as f:
            f.write(content)
        os.chmod(tmp, 0o444)  # shared by hard links: nobody should write through one
        try:
            os.link(tmp, blob)  # atomic, and fails if another thread stored it first
        except FileExistsError:
            return False
        finally:
            _unlink(tmp)
        return True

    def _commit(self, tmp: str, digest: str) -> bool:
        blob = self._blob(digest)
        blob.parent.mkdir(exist_ok=True)
        os.chmod(tmp, 0o444)  # shared by hard links: nobody should write through one
        try:
            os.link(tmp, blob)
        except FileExistsError:
            return False
        finally:
            _unlink(tmp)
        return True

    # -- the stat cache -----------------------------------------------------------------------

    _index_len = -1

    def _load_index(self) -> dict[str, list[Any]]:
        try:
            index = json.loads(self._index_path.read_bytes())
        except (FileNotFoundError, ValueError):
            index = {}
        self._index_len = len(index)
        return index

    def _save_index(self, index: dict[str, list[Any]]) -> None:
        _atomic_write(self._index_path, json.dumps(index, separators=(",", ":")).encode())


def _too_large(workdir: Path, files: list[tuple[str, str, os.stat_result]], total: int,
               limit: int) -> SnapshotTooLarge:
    by_top: dict[str, int] = {}
    for rel, _, st in files:
        top = rel.split("/", 1)[0] + ("/" if "/" in rel else "")
        by_top[top] = by_top.get(top, 0) + st.st_size
    largest = sorted(by_top.items(), key=lambda kv: -kv[1])[:3]
    biggest = ", ".join(f"{name} ({format_size(size)})" for name, size in largest)
    return SnapshotTooLarge(
        f"the working directory {workdir} is {format_size(total)}, over the "
        f"{format_size(limit)} snapshot limit; largest: {biggest}. List data and outputs in "
        f".kubelabignore (or .gitignore), or mount them with --data",
        largest=largest,
    )


def _atomic_write(path: Path, content: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
