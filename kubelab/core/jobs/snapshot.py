"""Content-addressed snapshots of a job's working directory.

A job runs on a frozen copy of the files the user had when they submitted it, so editing
``train.py`` in the notebook afterwards does not change a running job. Files are stored once, by
the SHA-256 of their content, in a store on the user's volume (``<jobs root>/.snapshots``): their
contents appended to one pack file with an index, git-style (the format, and why a pack:
:mod:`kubelab.core.jobs.pack`); a snapshot is a manifest of (path, digest, size, mode). A resubmit
with unchanged files reads and writes nothing new: a stat cache per working directory, keyed by
size, mtime and inode, says the content is already stored.

A job's workspace is materialised from the store where the job runs (:meth:`Snapshot.materialize`
locally; an init step in the job's pod on Kubernetes), as private copies: the store is only ever
appended to, so later edits to the user's files never change a snapshot.

What is left out: ``.gitignore`` and ``.kubelabignore`` rules (gitignore semantics via
``pathspec``; a ``.kubelabignore`` can re-include with ``!`` what git ignores), version-control
and cache folders (``.git``, ``__pycache__``, ``.ipynb_checkpoints``, ``.venv``), symlinked
folders (often links to datasets, which jobs mount anyway) and the jobs root itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from kubelab.core.jobs import pack
from kubelab.core.jobs.errors import BackendError, InvalidJobSpec, JobError, SnapshotTooLarge

__all__ = ["Snapshot", "SnapshotEntry", "SnapshotStore", "GcReport", "ALWAYS_IGNORED", "format_size"]

#: folders never shipped, whatever the ignore files say
ALWAYS_IGNORED = frozenset({".git", ".hg", ".svn", "__pycache__", ".ipynb_checkpoints", ".venv",
                            ".kubelab", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
IGNORE_FILES = (".gitignore", ".kubelabignore")
#: files up to this size are read whole (most of a code folder); bigger ones are streamed
_SMALL = 4 << 20
_CHUNK = 1 << 20
#: files read and hashed per hand-over to the appending thread
_BATCH = 64


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


class SnapshotEntry(NamedTuple):
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
    #: how many distinct contents and bytes had to be added to the store for this snapshot
    new_files: int = 0
    new_bytes: int = 0
    _index: Mapping[str, tuple[int, int]] | None = field(default=None, repr=False, compare=False)
    #: which index file ``_index`` was read from (a rewritten pack has other offsets)
    _index_identity: tuple[int, int] | None = field(default=None, repr=False, compare=False)
    #: the folder it was taken of (where a damaged content can be read again)
    workdir: Path | None = field(default=None, repr=False, compare=False)

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)

    def materialize(self, dest: Path) -> int:
        """Write the snapshot's files into *dest* (private copies); returns how many. Each
        content is checked against its SHA-256 on the way: one damaged in the pack is stored
        again from the working directory when its file there still has it (and the copy made
        again), else :class:`BackendError` says which file and what to do."""
        entries = [(e.path, e.digest, e.size, 0o755 if e.executable else 0o644)
                   for e in self.entries]
        index, ident = self._index, self._index_identity
        repaired: set[str] = set()
        while True:
            try:
                return pack.materialize(str(self.store), self.id, str(dest), entries=entries,
                                        index=index, index_identity=ident)  # type: ignore[arg-type]
            except pack.Damaged as e:
                if (e.digest is None or e.path is None or e.digest in repaired or self.workdir is None
                        or not SnapshotStore(self.store).restore(e.digest, self.workdir / e.path)):
                    raise BackendError(
                        f"could not make the job's workspace: {e}, in the snapshot store "
                        f"{self.store}. Submit again once {e.path or 'the file'} is back as it was "
                        f"(it is stored anew), or run `%jobs gc` (it drops damaged contents) and "
                        f"submit again") from None
                repaired.add(e.digest)
                index = ident = None  # read the index again: it names the new copy
            except OSError as e:
                raise _store_error(self.store, e) from None


class _Ignore:
    """gitignore-style rules of one folder (its .gitignore then its .kubelabignore)."""

    def __init__(self, prefix: str, spec: Any) -> None:
        self.prefix = prefix  # "" for the root, "sub/dir/" below it
        self.spec = spec
        # Why one combined regex first: most paths match no rule, and one regex search is far
        # cheaper than pathspec's check of every rule (which still decides when one matches).
        parts = [p.regex.pattern for p in spec.patterns
                 if p.include is not None and getattr(p, "regex", None) is not None]
        self.any = (re.compile("|".join(f"(?:{re.sub(r'[(][?]P<[^>]*>', '(?:', s)})"
                                        for s in parts)).match if parts else None)


class SnapshotStore:
    """The pack, manifests and stat caches under *root* (``<jobs root>/.snapshots``)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.pack_dir = self.root / "pack"
        self.manifests = self.root / "manifests"
        self.stat_dir = self.root / "stat"
        self._data_path = self.pack_dir / "data"
        self._index_path = self.pack_dir / "index"
        self._lock = threading.Lock()
        #: what this process knows of the pack index, and up to which byte it has read it
        self._index: dict[str, tuple[int, int]] = {}
        self._index_read = 0
        self._index_identity: tuple[int, int] | None = None

    # -- walking ------------------------------------------------------------------------------

    def _rules(self, folder: str, prefix: str) -> _Ignore | None:
        lines: list[str] = []
        for name in IGNORE_FILES:
            try:
                with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as f:
                    lines += f.read().splitlines()
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
            if rule.any is None:
                continue
            sub = rel[len(rule.prefix):] + ("/" if is_dir else "")
            if rule.any(sub) is None:
                continue
            result = rule.spec.check_file(sub)
            if result.include is not None:
                return bool(result.include)
        return False

    def walk(self, workdir: Path, *,
             exclude: Iterable[Path] = ()) -> list[tuple[str, str, os.stat_result]]:
        """Every file to ship: (relative path, absolute path, stat), in a stable order."""
        excluded = set()
        for p in exclude:
            with contextlib.suppress(OSError):
                st = os.stat(p)
                excluded.add((st.st_dev, st.st_ino))
        out: list[tuple[str, str, os.stat_result]] = []
        isdir = os.path.isdir

        def visit(folder: str, prefix: str, rules: list[_Ignore]) -> None:
            here = self._rules(folder, prefix)
            if here is not None:
                rules = [*rules, here]
            active = [r for r in rules if r.any is not None]
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda d: d.name)
            except (PermissionError, FileNotFoundError, NotADirectoryError):
                return
            for entry in entries:
                name = entry.name
                rel = prefix + name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if name in ALWAYS_IGNORED:
                            continue
                        if excluded and (entry.stat(follow_symlinks=False).st_dev,
                                         entry.inode()) in excluded:
                            continue
                        if active and self._ignored(active, rel, True):
                            continue
                        visit(entry.path, rel + "/", rules)
                        continue
                    if name.endswith((".pyc", ".pyo")):
                        continue
                    if entry.is_symlink() and isdir(entry.path):
                        continue  # a link to a folder, often a dataset: never followed
                    if active and self._ignored(active, rel, False):
                        continue
                    st = entry.stat()  # follows a link to a file
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
        # Why the store's lock for the whole take, not only the appends: garbage collection
        # (another kernel's) must not drop a content this take found in the index and names in
        # its manifest.
        try:
            return self._take(workdir, files, extra)
        except OSError as e:
            raise _store_error(self.root, e) from None

    def _take(self, workdir: Path, files: list[tuple[str, str, os.stat_result]],
              extra: Mapping[str, bytes] | None) -> Snapshot:
        with self._writing():
            index = self._index
            key = hashlib.sha256(str(workdir).encode()).hexdigest()[:24]
            cache_path = self.stat_dir / f"{key}.json"
            cache = _load_json(cache_path)
            cached_files: dict[str, list[Any]] = cache.get("files") or {}
            if not isinstance(cached_files, dict):  # damaged: only a cache, read the files
                cached_files = {}
            rows: list[tuple[str, str, int, int]] = []
            todo: list[tuple[int, str, str]] = []
            fresh: dict[str, list[Any]] = {}
            for rel, path, st in files:
                mode = 0o755 if st.st_mode & 0o111 else 0o644
                hit = cached_files.get(rel)
                # a matching stat signature whose content the pack has: nothing to read
                if (isinstance(hit, list) and len(hit) == 4 and hit[0] == st.st_size and hit[1] == st.st_mtime_ns
                        and hit[2] == st.st_ino and hit[3] in index):
                    rows.append((rel, hit[3], st.st_size, mode))
                    fresh[rel] = hit
                else:
                    todo.append((len(rows), rel, path))
                    rows.append((rel, "", st.st_size, mode))
            new_files = new_bytes = 0
            if todo or extra:
                with self._appending() as append:
                    if todo:
                        # One thread reads and hashes batches ahead while this one appends, in
                        # walk order. Why not more: on a 2-core machine, 2-4 readers of small
                        # files were slower than one (a GIL hand-off per file), 1.2 s against
                        # 0.7 s for 10,000 files of 10 kB.
                        with ThreadPoolExecutor(max_workers=1) as pool:
                            paths = [p for _, _, p in todo]
                            batches = pool.map(_read_batch, [paths[i:i + _BATCH]
                                                             for i in range(0, len(paths), _BATCH)])
                            read = itertools.chain.from_iterable(batches)
                            for (i, rel, path), got in zip(todo, read, strict=True):
                                if got is None:  # big, or vanished or unreadable since the walk
                                    big = _stream_big(path, append)
                                    if big is None:
                                        rows[i] = None  # type: ignore[call-overload]
                                        continue
                                    digest, size, sig, added = big
                                else:
                                    digest, content, sig = got
                                    size = len(content)
                                    added = append.add(digest, content)
                                rows[i] = (rel, digest, size, rows[i][3])
                                fresh[rel] = [*sig, digest]
                                if added:
                                    new_files += 1
                                    new_bytes += size
                    for rel, content in (extra or {}).items():
                        digest = hashlib.sha256(content).hexdigest()
                        if append.add(digest, content):
                            new_files += 1
                            new_bytes += len(content)
                        rows = [r for r in rows if r is not None and r[0] != rel]
                        rows.append((rel, digest, len(content), 0o644))
                rows = [r for r in rows if r is not None]
            rows.sort(key=lambda r: r[0])
            manifest = pack.format_manifest(rows)
            snapshot_id = hashlib.sha256(manifest).hexdigest()[:20]
            manifest_path = self.manifests / snapshot_id
            try:  # in use again: garbage collection spares recent manifests (a submit's)
                same = manifest_path.read_bytes() == manifest  # not, if damaged on disk
                os.utime(manifest_path)
            except FileNotFoundError:
                same = False
            if not same:
                self.manifests.mkdir(parents=True, exist_ok=True)
                _atomic_write(manifest_path, manifest, durable=True)
            if fresh != cached_files:
                self.stat_dir.mkdir(parents=True, exist_ok=True)
                _atomic_write(cache_path, json.dumps(
                    {"workdir": str(workdir), "files": fresh}, separators=(",", ":")).encode())
            entries = tuple(SnapshotEntry(p, d, s, bool(m & 0o111)) for p, d, s, m in rows)
            return Snapshot(snapshot_id, entries, self.root, new_files, new_bytes,
                            dict(self._index), self._index_identity, workdir)

    def load(self, snapshot_id: str) -> Snapshot:
        try:
            data = (self.manifests / snapshot_id).read_bytes()
        except FileNotFoundError:
            raise JobError(f"no snapshot {snapshot_id} in {self.root}") from None
        except OSError as e:
            raise _store_error(self.root, e) from None
        try:
            rows = pack.parse_manifest(data)
        except pack.Damaged as e:
            raise BackendError(f"the snapshot {self.manifests / snapshot_id} is damaged ({e}): "
                               f"submit the job again") from None
        return Snapshot(snapshot_id, tuple(SnapshotEntry(p, d, s, bool(m & 0o111))
                                           for p, d, s, m in rows), self.root)

    def restore(self, digest: str, path: Path) -> bool:
        """Store the content *digest* again, from the file *path*, when the pack's copy is
        damaged; False if *path* no longer has that content. The new index record supersedes
        the old one (the last record of a digest is the one read), and garbage collection
        drops the damaged bytes."""
        try:
            content = path.read_bytes()
        except OSError:
            return False
        if hashlib.sha256(content).hexdigest() != digest:
            return False
        with self._writing(), self._appending() as append:
            append.add(digest, content, force=True)
        return True

    # -- the pack -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the store (this process's threads, and other kernels: the pack's lock), with
        whatever a crash left repaired and the index up to date."""
        with self._lock, pack.locked(str(self.root), exclusive=True):
            self._recover()
            self._refresh_index()
            yield

    def _refresh_index(self) -> None:
        """Read the index records other processes (or threads) appended since the last look;
        all of them again when the index is another file (rewritten by garbage collection)."""
        index_path, data_path = pack.pack_files(str(self.root))
        try:
            limit = os.path.getsize(data_path)
        except FileNotFoundError:
            limit = 0
        ident = pack.identity(index_path)
        size = os.path.getsize(index_path) if ident is not None else 0
        if ident != self._index_identity or size < self._index_read:
            self._index, self._index_read, self._index_identity = {}, 0, ident
        more, self._index_read = pack.read_index(index_path, self._index_read, limit)
        self._index.update(more)

    def _recover(self) -> None:
        """Under the store's lock: finish or drop a pack rewrite a crash interrupted, then cut
        off what a crash left half-written: a torn last index record, records naming bytes the
        data file lacks (records are in offset order: they are at the end), and data past the
        last record (appended, never indexed)."""
        swap = self.pack_dir / pack.SWAP
        new_index, new_data = (Path(str(p) + ".new") for p in (self._index_path, self._data_path))
        if swap.exists():  # the rewrite was complete: finish switching to it
            for new, path in ((new_index, self._index_path), (new_data, self._data_path)):
                if new.exists():
                    os.replace(new, path)
            _fsync_dir(self.pack_dir)
            swap.unlink()
            _fsync_dir(self.pack_dir)
        else:  # a rewrite that never completed: the old pack stands
            for new in (new_index, new_data):
                with contextlib.suppress(FileNotFoundError):
                    new.unlink()
        try:  # lost (deleted): whatever the index names is gone, and is stored again
            data_size = os.path.getsize(self._data_path)
        except FileNotFoundError:
            data_size = 0
        try:
            fd = os.open(self._index_path, os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            size = os.fstat(fd).st_size
            keep = size - size % pack.RECORD.size
            end = 0
            while keep:
                _, offset, length = pack.RECORD.unpack(
                    os.pread(fd, pack.RECORD.size, keep - pack.RECORD.size))
                if offset + length <= data_size:
                    end = offset + length
                    break
                keep -= pack.RECORD.size
            if keep != size:
                os.ftruncate(fd, keep)
                os.fsync(fd)
        finally:
            os.close(fd)
        if data_size > end:
            with open(self._data_path, "r+b") as data:
                data.truncate(end)
                os.fsync(data.fileno())

    @contextlib.contextmanager
    def _appending(self) -> Iterator[_Appender]:
        """Append to the pack (the caller holds :meth:`_writing`): the contents, ``fsync``-ed,
        then their index records, ``fsync``-ed, so the index never names bytes a crash lost."""
        self.pack_dir.mkdir(parents=True, exist_ok=True)
        index_fd = os.open(self._index_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            with open(self._data_path, "ab") as data:
                append = _Appender(data, self._index)
                yield append
                data.flush()
                if append.records:
                    os.fsync(data.fileno())
                    os.write(index_fd, b"".join(append.records))
                    os.fsync(index_fd)
            self._index_read = os.fstat(index_fd).st_size
            self._index_identity = pack.identity(str(self._index_path))
        finally:
            os.close(index_fd)

    # -- garbage collection -------------------------------------------------------------------

    def gc(self, keep: Iterable[str], *, grace: float = 900.0) -> GcReport:
        """Rewrite the pack with only the contents the snapshots *keep* (the ids of those jobs
        that still exist use) name, and remove the other manifests, the stat caches' dead
        entries aside (they are checked against the index). A manifest written or reused in the
        last *grace* seconds is kept too: a submit may be about to make its job. Also removes
        the layout of kubelab before the pack (``objects/``, ``index.json``, ``*.json``
        manifests), which nothing reads any more."""
        keep = set(keep)
        try:
            return self._gc(keep, grace)
        except OSError as e:
            raise _store_error(self.root, e) from None

    def _gc(self, keep: set[str], grace: float) -> GcReport:
        with self._writing():
            now = time.time()
            kept_ids: list[str] = []
            recent = 0
            dropped: list[Path] = []
            legacy = 0
            try:
                listing = sorted(self.manifests.iterdir())
            except FileNotFoundError:
                listing = []
            for path in listing:
                name = path.name
                if name.endswith(".json") or name.startswith(".tmp-"):
                    if name.endswith(".json") or now - path.stat().st_mtime > grace:
                        legacy += path.stat().st_size if name.endswith(".json") else 0
                        dropped.append(path)
                    continue
                if name in keep:
                    kept_ids.append(name)
                elif now - path.stat().st_mtime <= grace:
                    kept_ids.append(name)
                    recent += 1
                else:
                    dropped.append(path)
            needed: set[str] = set()
            for name in list(kept_ids):
                try:
                    needed.update(d for _, d, _, _ in pack.parse_manifest(
                        (self.manifests / name).read_bytes()))
                except pack.Damaged as e:
                    if name in keep:  # which contents the job needs cannot be told
                        raise BackendError(
                            f"the snapshot {self.manifests / name} is damaged ({e}) and a job "
                            f"still uses it: submit that job again with --replace (which "
                            f"writes it anew) or delete it, then run `%jobs gc` again") from None
                    kept_ids.remove(name)  # unusable, and no job's: dropped
                    recent -= 1
                    dropped.append(self.manifests / name)
            old_size = os.path.getsize(self._data_path) if self._data_path.exists() else 0
            blobs = sorted((off, size, digest) for digest, (off, size) in self._index.items()
                           if digest in needed)
            # every kept content is read and checked: a damaged one is dropped, so that the
            # next snapshot that has it stores it anew (rather than reuse the damaged bytes).
            # A rewrite checks each as it copies it; without one they are only read, and a
            # damaged one makes the rewrite that drops it
            stored = len(self._index)  # the rewrite reads the index anew
            damaged: set[str] = set()
            if (len(blobs) != stored or sum(size for _, size, _ in blobs) != old_size
                    or not self._intact(blobs)):
                blobs, damaged = self._rewrite(blobs)
            kept_bytes = sum(size for _, size, _ in blobs)
            dropped_blobs = stored - len(blobs)
            for path in dropped:
                path.unlink()
            legacy += self._remove_legacy()
            if dropped:
                _fsync_dir(self.manifests)
            return GcReport(
                store=self.root, freed_bytes=old_size - kept_bytes + legacy,
                dropped_contents=dropped_blobs,
                dropped_snapshots=len([p for p in dropped if "." not in p.name]),
                kept_bytes=kept_bytes, kept_contents=len(blobs), kept_snapshots=len(kept_ids),
                recent_snapshots=recent, grace=grace, legacy_bytes=legacy,
                damaged_contents=len(damaged))

    def _intact(self, blobs: list[tuple[int, int, str]]) -> bool:
        """Whether the bytes in the pack of each of *blobs* (offset, size, digest) hash to its
        digest."""
        if not blobs:
            return True
        src = os.open(self._data_path, os.O_RDONLY)
        try:
            for offset, size, digest in blobs:
                pack._read_checked(src, offset, size, digest, digest)
        except pack.Damaged:
            return False
        finally:
            os.close(src)
        return True

    def _rewrite(self, blobs: list[tuple[int, int, str]]
                 ) -> tuple[list[tuple[int, int, str]], set[str]]:
        """Write *blobs* (offset, size, digest) into a new pack, each checked against its
        digest as it is copied, and switch to it (the caller holds :meth:`_writing`); see
        :mod:`~kubelab.core.jobs.pack` for the crash-safe switch. Returns the blobs kept and
        the digests of those left out because their bytes were damaged."""
        new_index, new_data = (Path(str(p) + ".new") for p in (self._index_path, self._data_path))
        records = []
        kept: list[tuple[int, int, str]] = []
        damaged: set[str] = set()
        offset = 0
        src = os.open(self._data_path, os.O_RDONLY)
        try:
            with open(new_data, "wb") as out:
                fd = out.fileno()
                for old_offset, size, digest in blobs:
                    try:
                        pack._copy_checked(src, fd, old_offset, size, digest, digest)
                    except pack.Damaged:
                        os.ftruncate(fd, offset)  # what was copied of it goes
                        os.lseek(fd, offset, os.SEEK_SET)
                        damaged.add(digest)
                        continue
                    kept.append((old_offset, size, digest))
                    records.append(pack.RECORD.pack(bytes.fromhex(digest), offset, size))
                    offset += size
                os.fsync(out.fileno())
        finally:
            os.close(src)
        with open(new_index, "wb") as out:
            out.write(b"".join(records))
            out.flush()
            os.fsync(out.fileno())
        _fsync_dir(self.pack_dir)
        (self.pack_dir / pack.SWAP).touch()
        _fsync_dir(self.pack_dir)
        self._recover()  # the switch itself: renames, then the marker goes
        self._index, self._index_read, self._index_identity = {}, 0, None
        self._refresh_index()
        return kept, damaged

    def _remove_legacy(self) -> int:
        """Remove what the store looked like before the pack (a file per content under
        ``objects/``, ``index.json``); the bytes freed."""
        freed = 0
        objects = self.root / "objects"
        if objects.is_dir():
            for folder, _, files in os.walk(objects):
                for f in files:
                    with contextlib.suppress(OSError):
                        freed += os.lstat(os.path.join(folder, f)).st_size
            shutil.rmtree(objects, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            old_index = self.root / "index.json"
            freed += old_index.stat().st_size
            old_index.unlink()
        return freed


@dataclass(frozen=True)
class GcReport:
    """What :meth:`SnapshotStore.gc` freed and kept; ``str()`` says it in one line."""

    store: Path
    freed_bytes: int
    dropped_contents: int
    dropped_snapshots: int
    kept_bytes: int
    kept_contents: int
    kept_snapshots: int
    #: snapshots no job uses that were kept because they are recent (a submit may use them)
    recent_snapshots: int = 0
    grace: float = 0.0
    #: of ``freed_bytes``: the layout before the pack (``objects/``, ``index.json``)
    legacy_bytes: int = 0
    #: contents whose bytes no longer matched their SHA-256, dropped (stored anew when needed)
    damaged_contents: int = 0

    def __str__(self) -> str:
        if self.freed_bytes:
            what = [f"{self.dropped_contents} content(s) of {self.dropped_snapshots} snapshot(s) "
                    f"no job uses"]
            if self.legacy_bytes:
                what.append(f"{format_size(self.legacy_bytes)} in the old objects/ layout")
            head = f"freed {format_size(self.freed_bytes)} ({'; '.join(what)})"
        else:
            head = "nothing to free"
        text = (f"snapshot store {self.store}: {head}; kept {format_size(self.kept_bytes)} "
                f"({self.kept_contents} content(s)) for {self.kept_snapshots} snapshot(s)")
        if self.recent_snapshots:
            text += (f", {self.recent_snapshots} of them unused but newer than "
                     f"{self.grace / 60:g} min (a submit may be using them)")
        if self.damaged_contents:
            text += (f"; dropped {self.damaged_contents} damaged content(s) (their bytes no longer "
                     f"matched their SHA-256): the next submit stores them anew")
        return text


class _Appender:
    """Appends contents to the pack's data file; the index records are written at the end."""

    def __init__(self, data: Any, index: dict[str, tuple[int, int]]) -> None:
        self.data = data
        self.index = index
        self.offset = data.seek(0, os.SEEK_END)
        self.records: list[bytes] = []

    def add(self, digest: str, content: bytes, *, force: bool = False) -> bool:
        if digest in self.index and not force:
            return False
        self.data.write(content)
        self._record(digest, len(content))
        return True

    def _record(self, digest: str, size: int) -> None:
        self.index[digest] = (self.offset, size)
        self.records.append(pack.RECORD.pack(bytes.fromhex(digest), self.offset, size))
        self.offset += size


def _read_batch(paths: list[str]) -> list[tuple[str, bytes, list[int]] | None]:
    return [_read_small(p) for p in paths]


def _read_small(path: str) -> tuple[str, bytes, list[int]] | None:
    """(digest, content, stat signature) of a small file; None for a big or vanished one."""
    try:
        with open(path, "rb") as f:
            content = f.read(_SMALL + 1)
            st = os.fstat(f.fileno())
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        return None
    if len(content) > _SMALL:
        return None
    # the signature after reading: a write during the read changes it, so the next take re-reads
    return hashlib.sha256(content).hexdigest(), content, [st.st_size, st.st_mtime_ns, st.st_ino]


def _stream_big(path: str, append: _Appender) -> tuple[str, int, list[int], bool] | None:
    """Copy a big file onto the end of the pack while hashing it; take it back if the pack had
    that content already. (digest, size, signature, added), or None if it cannot be read."""
    h = hashlib.sha256()
    start = append.offset
    data = append.data
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                data.write(chunk)
            st = os.fstat(f.fileno())
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        data.flush()
        data.truncate(start)
        data.seek(start)
        return None
    size = data.tell() - start
    digest = h.hexdigest()
    if digest in append.index:
        data.flush()
        data.truncate(start)
        data.seek(start)
        return digest, size, [st.st_size, st.st_mtime_ns, st.st_ino], False
    append._record(digest, size)
    return digest, size, [st.st_size, st.st_mtime_ns, st.st_ino], True


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


def _store_error(root: Path, e: OSError) -> BackendError:
    """What to tell the user when the store's layout is broken (a file where a folder should be,
    a folder where a file should be, no permission): the path, and what to do."""
    what = {IsADirectoryError: "a folder where kubelab keeps a file",
            NotADirectoryError: "a file where kubelab keeps a folder",
            FileExistsError: "a file where kubelab keeps a folder"}.get(type(e), e.strerror or str(e))
    where = Path(e.filename or root)
    if isinstance(e, NotADirectoryError):  # the file is the first of its folders that is one
        where = next((p for p in reversed([where, *where.parents])
                      if p.exists() and not p.is_dir()), where)
    return BackendError(
        f"the snapshot store {root} is damaged: {where}: {what}. Move {root} away (`mv {root} "
        f"{root}.damaged`): the next submit starts a new one (running jobs keep their "
        f"workspaces)")


def _load_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _atomic_write(path: Path, content: bytes, *, durable: bool = False) -> None:
    """Write *path* whole or not at all; *durable*: on disk before this returns (``fsync`` of
    the file, then of the folder that names it), so a crash cannot leave it empty."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    """Make the names in folder *path* (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
