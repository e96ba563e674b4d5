"""The on-disk format of the snapshot store, and its unpacker (standard library only).

A store (``<jobs root>/.snapshots``) holds every file content any snapshot needed, once:

- ``pack/data``: the contents, appended one after the other (only garbage collection rewrites
  it, below);
- ``pack/index``: one 48-byte record per content: its SHA-256 (32 bytes), its offset in
  ``pack/data`` and its size (little-endian 64-bit each), in the order of their offsets;
  appended *after* the contents are written and ``fsync``-ed, and ``fsync``-ed itself, so a
  record never names bytes that are not there, even after a crash;
- ``pack/lock``: taken exclusively (``flock``) by whoever appends or rewrites, shared by whoever
  unpacks (:func:`locked`);
- ``manifests/<id>``: a snapshot: records ``digest size mode path`` separated by NUL bytes (a
  path may hold any character but NUL), sorted by path; ``<id>`` is the start of its SHA-256.

Crashes: a torn last index record is ignored and cut off by the next writer, as are records
naming bytes past the end of the data (a crash of a machine that had not written them out), and
data past the last record (appended, never indexed). Garbage collection
(``SnapshotStore.gc``) writes the packed contents still needed to ``data.new`` and
``index.new``, ``fsync``-s both, then creates ``pack/swap`` and renames the two over the old
files: while ``swap`` exists, a ``.new`` file that is still there is the current one
(:func:`pack_files`), and the next writer finishes the renames; without ``swap``, ``.new``
files are an unfinished collection's and are removed.

Why one pack file rather than a file per content (git's loose objects): creating 10,000 files
costs more than reading, hashing and appending 100 MB, so a first snapshot of a big folder was
slower than copying it. The price is that the files are materialised where the job runs: by
:func:`materialize`, in the kernel for a local job, or in the job's pod (an init step reading the
store on the shared home volume, writing to the pod's own disk).

This module imports nothing but the standard library: its source is what a job pod runs
(``python -c``), whatever image the job uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import sys
from collections.abc import Iterator

RECORD = struct.Struct("<32sQQ")
#: manifest record separator: the one character no path can contain
SEP = "\0"
#: in ``pack/``: present while a rewritten pack is being switched in
SWAP = "swap"


class Damaged(Exception):
    """The store cannot give what was asked: a content whose bytes are not what its SHA-256
    says (*digest*, the file *path* of the snapshot that holds it), a content the index lacks,
    or a manifest that does not parse. ``str()`` says which, in words."""

    def __init__(self, message: str, *, digest: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.digest = digest
        self.path = path


def pack_files(store: str) -> tuple[str, str]:
    """The paths of the store's current (index, data) files: ``pack/index`` and ``pack/data``,
    or during the switch to a rewritten pack (``pack/swap`` exists) the ``.new`` ones that have
    not been renamed yet."""
    folder = os.path.join(store, "pack")
    index, data = os.path.join(folder, "index"), os.path.join(folder, "data")
    if os.path.exists(os.path.join(folder, SWAP)):
        index, data = (p + ".new" if os.path.exists(p + ".new") else p for p in (index, data))
    return index, data


def identity(path: str) -> tuple[int, int] | None:
    """Which file *path* is (device, inode): a rewritten index is another file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


@contextlib.contextmanager
def locked(store: str, *, exclusive: bool) -> Iterator[None]:
    """Hold the store's lock: exclusive to append or rewrite the pack, shared to read it. A
    reader of a store with no lock file yet (nothing written) or on a filesystem without locks
    goes on unlocked."""
    import fcntl

    path = os.path.join(store, "pack", "lock")
    try:
        if exclusive:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        else:
            fd = os.open(path, os.O_RDONLY)  # the home volume is read-only in a job's pod
    except OSError:
        if exclusive:
            raise
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except OSError:
            if exclusive:
                raise
        yield
    finally:
        os.close(fd)


def read_index(path: str, start: int = 0,
               limit: int | None = None) -> tuple[dict[str, tuple[int, int]], int]:
    """The index records from byte *start* on, as ``{hex digest: (offset, size)}``, and the
    offset after the last whole record. Records naming bytes past *limit* (the data file's size:
    a crash between writing the two files) are left out."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            raw = f.read()
    except FileNotFoundError:
        return {}, start
    whole = len(raw) - len(raw) % RECORD.size  # a torn last record is not read
    out: dict[str, tuple[int, int]] = {}
    for digest, offset, size in RECORD.iter_unpack(raw[:whole]):
        if limit is None or offset + size <= limit:
            out[digest.hex()] = (offset, size)
    return out, start + whole


def parse_manifest(data: bytes) -> list[tuple[str, str, int, int]]:
    """``[(path, digest, size, mode), ...]`` of a manifest's bytes."""
    out = []
    for record in data.decode("utf-8", "surrogateescape").split(SEP):
        if record:
            try:
                digest, size, mode, path = record.split(" ", 3)
                bytes.fromhex(digest)
                item = (path, digest, int(size), int(mode, 8))
            except ValueError:
                raise Damaged(f"a record is not 'digest size mode path': {record[:60]!r}") from None
            parts = path.split("/")
            if len(digest) != 64 or path.startswith("/") or ".." in parts or "" in parts:
                raise Damaged(f"a record names {path[:60]!r}, not a file inside the workspace")
            out.append(item)
    return out


def format_manifest(entries: list[tuple[str, str, int, int]]) -> bytes:
    text = SEP.join(f"{d} {s} {m:o} {p}" for p, d, s, m in entries)
    return text.encode("utf-8", "surrogateescape")


def _copy_checked(src: int, dst: int, offset: int, size: int, digest: str, path: str) -> None:
    """Copy *size* bytes at *offset* of *src* to *dst*, checking they hash to *digest*: a pack
    damaged on disk (a flipped bit, a file overwritten) must not reach a job unnoticed."""
    _read_checked(src, offset, size, digest, path, dst)


def _read_checked(src: int, offset: int, size: int, digest: str, path: str,
                  dst: int | None = None) -> None:
    """Read *size* bytes at *offset* of *src* (writing them to *dst*, if given), raising
    :class:`Damaged` unless they hash to *digest*."""
    h = hashlib.sha256()
    done = 0
    while done < size:
        chunk = os.pread(src, min(size - done, 1 << 20), offset + done)
        if not chunk:
            break
        h.update(chunk)
        if dst is not None:
            os.write(dst, chunk)
        done += len(chunk)
    if done != size or h.hexdigest() != digest:
        raise Damaged(f"the stored content of {path} is damaged (its bytes do not hash to its "
                      f"SHA-256 {digest[:12]}...)", digest=digest, path=path)


def materialize(store: str, snapshot_id: str, dest: str, *,
                entries: list[tuple[str, str, int, int]] | None = None,
                index: dict[str, tuple[int, int]] | None = None,
                index_identity: tuple[int, int] | None = None) -> int:
    """Write snapshot *snapshot_id* of *store* into the folder *dest* (made if missing, and
    expected empty); returns the number of files. Each file is a private copy, so a job may
    change its workspace without touching the store. *index* (with the :func:`identity` of the
    index file it was read from) saves reading the index again, unless the pack was rewritten."""
    with locked(store, exclusive=False):  # no garbage collection meanwhile
        return _materialize(store, snapshot_id, dest, entries, index, index_identity)


def _materialize(store: str, snapshot_id: str, dest: str,
                 entries: list[tuple[str, str, int, int]] | None,
                 index: dict[str, tuple[int, int]] | None,
                 index_identity: tuple[int, int] | None) -> int:
    if entries is None:
        manifest = os.path.join(store, "manifests", snapshot_id)
        with open(manifest, "rb") as f:
            try:
                entries = parse_manifest(f.read())
            except Damaged as e:
                raise Damaged(f"the snapshot {manifest} is damaged: {e}") from None
    index_path, data_path = pack_files(store)
    if index is not None and identity(index_path) != index_identity:
        index = None  # the pack was rewritten since: its offsets are not these
    if index is None:
        try:
            limit = os.path.getsize(data_path)
        except FileNotFoundError:
            limit = 0
        index = read_index(index_path, limit=limit)[0]
    if entries and any(e[1] not in index for e in entries):
        path, digest = next((e[0], e[1]) for e in entries if e[1] not in index)
        raise Damaged(f"the content of {path} (SHA-256 {digest[:12]}...) is not in the store's "
                      f"pack", digest=digest, path=path)
    os.makedirs(dest, exist_ok=True)
    made = {""}
    src = os.open(data_path, os.O_RDONLY)
    try:
        for path, digest, _size, mode in entries:
            parent = path.rpartition("/")[0]
            if parent not in made:
                os.makedirs(os.path.join(dest, parent), exist_ok=True)
                made.add(parent)
            offset, stored = index[digest]
            fd = os.open(os.path.join(dest, path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                         0o755 if mode & 0o111 else 0o644)
            try:
                _copy_checked(src, fd, offset, stored, digest, path)
            finally:
                os.close(fd)
    finally:
        os.close(src)
    return len(entries)


def main(argv: list[str]) -> int:
    """``python pack.py STORE SNAPSHOT_ID DEST``: what a job pod runs before the job."""
    if len(argv) != 3:
        print("usage: pack.py STORE SNAPSHOT_ID DEST", file=sys.stderr)
        return 2
    store, snapshot_id, dest = argv
    if not os.path.isdir(os.path.join(store, "pack")):
        print(f"kubelab: the snapshot store {store} is not mounted in this pod (the job pods mount "
              f"the user's home volume: is KUBELAB_HOME_CLAIM set in the notebook?)",
              file=sys.stderr)
        return 1
    try:
        count = materialize(store, snapshot_id, dest)
    except Damaged as e:
        print(f"kubelab: could not unpack snapshot {snapshot_id} from {store}: {e}. Run "
              f"`%jobs gc` in the notebook (it drops damaged contents from the store), then "
              f"submit the job again (its files are stored anew)", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"kubelab: could not unpack snapshot {snapshot_id} from {store}: {e!r}",
              file=sys.stderr)
        return 1
    print(f"kubelab: workspace {dest}: {count} files of snapshot {snapshot_id}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
