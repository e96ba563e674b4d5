"""Workspace snapshots: content addressing, ignore rules, the size limit."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest

from kubelab.core.jobs.errors import BackendError, InvalidJobSpec, SnapshotTooLarge
from kubelab.core.jobs.snapshot import SnapshotStore


def tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def paths(snapshot) -> list[str]:
    return [e.path for e in snapshot.entries]


def test_snapshot_materializes_the_same_files(tmp_path: Path) -> None:
    work = tree(tmp_path / "w", {"train.py": "print(1)", "pkg/model.py": "X = 1", "data.csv": "a,b"})
    os.chmod(work / "train.py", 0o755)
    store = SnapshotStore(tmp_path / "store")
    snap = store.take(work)
    assert paths(snap) == ["data.csv", "pkg/model.py", "train.py"]
    assert snap.new_files == 3 and snap.total_bytes == len("print(1)") + len("X = 1") + 3
    dest = tmp_path / "ws"
    snap.materialize(dest)
    assert (dest / "pkg/model.py").read_text() == "X = 1"
    assert os.access(dest / "train.py", os.X_OK)
    assert store.load(snap.id).entries == snap.entries


def test_unchanged_resubmit_stores_nothing_new(tmp_path: Path) -> None:
    work = tree(tmp_path / "w", {f"m{i}.py": f"# {i}" for i in range(50)})
    store = SnapshotStore(tmp_path / "store")
    first = store.take(work)
    again = store.take(work)
    assert first.id == again.id
    assert (again.new_files, again.new_bytes) == (0, 0)
    (work / "m3.py").write_text("# changed")
    third = store.take(work)
    assert third.id != first.id and third.new_files == 1
    # content addressed: a copy of a known file is nothing new either
    (work / "copy.py").write_text("# 7")
    assert store.take(work).new_files == 0


def test_identical_content_is_stored_once(tmp_path: Path) -> None:
    work = tree(tmp_path / "w", {"a.txt": "same", "b/c.txt": "same"})
    snap = SnapshotStore(tmp_path / "store").take(work)
    assert snap.new_files == 1
    assert len({e.digest for e in snap.entries}) == 1


def test_gitignore_and_kubelabignore(tmp_path: Path) -> None:
    work = tree(tmp_path / "w", {
        ".gitignore": "*.log\ndata/\n!keep.log\n",
        ".kubelabignore": "checkpoints/\n!data/\n",
        "train.py": "", "run.log": "", "keep.log": "", "data/x.csv": "", "checkpoints/c.pt": "",
        "sub/.gitignore": "local.txt\n", "sub/local.txt": "", "sub/mod.py": "",
        ".git/HEAD": "", "__pycache__/m.pyc": "", ".ipynb_checkpoints/n.ipynb": "", "m.pyc": "",
    })
    snap = SnapshotStore(tmp_path / "store").take(work)
    assert paths(snap) == [".gitignore", ".kubelabignore", "data/x.csv", "keep.log",
                           "sub/.gitignore", "sub/mod.py", "train.py"]


def test_symlinked_folders_and_excluded_paths_are_left_out(tmp_path: Path) -> None:
    outside = tree(tmp_path / "big", {"huge.bin": b"x" * 1000})
    work = tree(tmp_path / "w", {"train.py": "", "kubelab-jobs/j/outputs/o.txt": "o"})
    (work / "data").symlink_to(outside)
    (work / "link.py").symlink_to(work / "train.py")
    snap = SnapshotStore(tmp_path / "store").take(work, exclude=[work / "kubelab-jobs"])
    assert paths(snap) == ["link.py", "train.py"]


def test_size_limit_names_the_biggest_folders(tmp_path: Path) -> None:
    work = tree(tmp_path / "w", {"train.py": "x", "data/a.bin": b"0" * 6000,
                                 "data/b.bin": b"0" * 5000, "notes.txt": b"1" * 100})
    with pytest.raises(SnapshotTooLarge) as e:
        SnapshotStore(tmp_path / "store").take(work, max_size=10_000)
    message = str(e.value)
    assert "over the 9.8 KiB snapshot limit" in message
    assert "data/ (10.7 KiB)" in message and ".kubelabignore" in message
    assert e.value.largest[0] == ("data/", 11000)
    (work / ".kubelabignore").write_text("data/\n")
    assert paths(SnapshotStore(tmp_path / "store").take(work, max_size=10_000)) == [
        ".kubelabignore", "notes.txt", "train.py"]


def test_extra_files_and_missing_workdir(tmp_path: Path) -> None:
    work = tree(tmp_path / "w", {"train.py": "old"})
    store = SnapshotStore(tmp_path / "store")
    snap = store.take(work, extra={"_cell.py": b"print('cell')", "train.py": b"new"})
    dest = tmp_path / "ws"
    snap.materialize(dest)
    assert (dest / "_cell.py").read_text() == "print('cell')"
    assert (dest / "train.py").read_text() == "new"
    with pytest.raises(InvalidJobSpec, match="not a folder"):
        store.take(tmp_path / "nope")


def test_later_edits_never_change_a_snapshot(tmp_path: Path) -> None:
    work = tree(tmp_path / "w", {"a.py": "v1", "b.py": "b"})
    store = SnapshotStore(tmp_path / "store")
    snap = store.take(work)
    (work / "a.py").write_text("v2")  # in place, same inode
    (work / "b.py").unlink()
    dest = tmp_path / "ws"
    store.load(snap.id).materialize(dest)
    assert (dest / "a.py").read_text() == "v1" and (dest / "b.py").read_text() == "b"
    # the workspace is a private copy: a job writing there touches neither store nor user
    (dest / "a.py").write_text("job")
    again = tmp_path / "ws2"
    snap.materialize(again)
    assert (again / "a.py").read_text() == "v1"


def test_one_pack_file_and_no_file_per_content(tmp_path: Path) -> None:
    work = tree(tmp_path / "w", {f"d{i % 3}/f{i}.txt": f"content {i}" for i in range(30)})
    store = SnapshotStore(tmp_path / "store")
    store.take(work)
    files = sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_file())
    assert [f for f in files if f.startswith("pack/")] == ["pack/data", "pack/index", "pack/lock"]
    assert len([f for f in files if f.startswith("manifests/")]) == 1
    size = (store.root / "pack/data").stat().st_size
    assert size == sum(len(f"content {i}") for i in range(30))
    # an unchanged resubmit, from another store object (another kernel), appends nothing
    SnapshotStore(store.root).take(work)
    assert (store.root / "pack/data").stat().st_size == size


def test_unchanged_files_are_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubelab.core.jobs import snapshot

    work = tree(tmp_path / "w", {"a.py": "a", "b.py": "b"})
    store = SnapshotStore(tmp_path / "store")
    first = store.take(work)
    read: list[str] = []
    real = snapshot._read_small
    monkeypatch.setattr(snapshot, "_read_small", lambda p: read.append(p) or real(p))
    assert SnapshotStore(store.root).take(work).id == first.id
    assert read == []
    (work / "b.py").write_text("bb")
    store.take(work)
    assert [Path(p).name for p in read] == ["b.py"]


def test_big_files_are_streamed_and_deduplicated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubelab.core.jobs import snapshot

    monkeypatch.setattr(snapshot, "_SMALL", 100)
    big = os.urandom(5000)
    work = tree(tmp_path / "w", {"big.bin": big, "copy.bin": big, "small.txt": "s"})
    store = SnapshotStore(tmp_path / "store")
    snap = store.take(work)
    assert snap.new_files == 2 and snap.new_bytes == 5001
    assert (store.root / "pack/data").stat().st_size == 5001
    dest = tmp_path / "ws"
    snap.materialize(dest)
    assert (dest / "copy.bin").read_bytes() == big and (dest / "small.txt").read_text() == "s"


def test_a_torn_index_record_is_dropped(tmp_path: Path) -> None:
    work = tree(tmp_path / "w", {"a.py": "a"})
    store = SnapshotStore(tmp_path / "store")
    store.take(work)
    with open(store.root / "pack/index", "ab") as f:
        f.write(b"\x01" * 20)  # a crash in the middle of a record
    (work / "b.py").write_text("b")
    snap = SnapshotStore(store.root).take(work)
    assert (store.root / "pack/index").stat().st_size % 48 == 0
    dest = tmp_path / "ws"
    SnapshotStore(store.root).load(snap.id).materialize(dest)
    assert sorted(p.name for p in dest.iterdir()) == ["a.py", "b.py"]


def test_the_pod_unpacker_is_self_contained(tmp_path: Path) -> None:
    """What a Kubernetes job pod runs: the module's source with ``python -I -c``, no kubelab."""
    import inspect
    import subprocess
    import sys

    from kubelab.core.jobs import pack

    work = tree(tmp_path / "w", {"train.py": "print(1)", "pkg/m.py": "X = 1"})
    os.chmod(work / "train.py", 0o755)
    snap = SnapshotStore(tmp_path / "store").take(work)
    dest = tmp_path / "pod-ws"
    code = inspect.getsource(pack)
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(snap.store), snap.id,
                           str(dest)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (dest / "pkg/m.py").read_text() == "X = 1" and os.access(dest / "train.py", os.X_OK)
    missing = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(tmp_path / "nope"),
                              snap.id, str(dest)], capture_output=True, text=True)
    assert missing.returncode == 1 and "not mounted in this pod" in missing.stderr


# -- crashes and garbage collection ----------------------------------------------------------


def pack_size(store: SnapshotStore) -> tuple[int, int]:
    """(bytes of pack/data, records in pack/index)"""
    return ((store.root / "pack/data").stat().st_size,
            (store.root / "pack/index").stat().st_size // 48)


def unpack_as_a_pod_does(store_root: Path, snapshot_id: str, dest: Path):
    import inspect
    import subprocess
    import sys

    from kubelab.core.jobs import pack

    return subprocess.run([sys.executable, "-I", "-S", "-c", inspect.getsource(pack),
                           str(store_root), snapshot_id, str(dest)], capture_output=True, text=True)


def test_the_pack_is_fsynced_before_its_index_and_the_index_before_the_manifest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tree(tmp_path / "w", {"a.py": "a", "b.py": "b"})
    store = SnapshotStore(tmp_path / "store")
    events: list[str] = []
    real_fsync, real_write = os.fsync, os.write

    def name(fd: int) -> str:
        return os.readlink(f"/proc/self/fd/{fd}").replace(str(store.root) + "/", "")

    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync " + name(fd)), real_fsync(fd))[1])
    monkeypatch.setattr(os, "write", lambda fd, b: (events.append("write " + name(fd)), real_write(fd, b))[1])
    snap = store.take(work)
    data, index = events.index("fsync pack/data"), events.index("write pack/index")
    assert data < index < events.index("fsync pack/index")
    manifest = next(i for i, e in enumerate(events) if e.startswith("fsync manifests/.tmp-"))
    assert events.index("fsync pack/index") < manifest and events[-1] == "fsync manifests"
    assert (store.root / "manifests" / snap.id).exists()
    events.clear()
    store.take(work)  # nothing new: nothing to write, nothing to sync
    assert events == []


def test_a_pack_that_lost_its_last_bytes_in_a_crash_is_repaired(tmp_path: Path) -> None:
    """A machine crash can lose data the index names (written, not yet on disk, on a system
    that reorders): the records past the data's end are cut off and the contents appended again."""
    work = tree(tmp_path / "w", {"a.py": "aaaa", "b.py": "bbbb", "c.py": "cccc"})
    store = SnapshotStore(tmp_path / "store")
    store.take(work)
    with open(store.root / "pack/data", "r+b") as f:
        f.truncate(6)  # a.py whole, b.py half, c.py gone
    with open(store.root / "pack/index", "ab") as f:
        f.write(b"\x02" * 30)  # and a torn record on top
    fresh = SnapshotStore(store.root)  # another kernel, after the crash
    (work / "d.py").write_text("dddd")
    snap = fresh.take(work)
    assert snap.new_files == 3  # b, c again (their records named missing bytes), and d
    assert pack_size(fresh) == (16, 4)  # no garbage left behind: a.py and the three again
    dest = tmp_path / "ws"
    SnapshotStore(store.root).load(snap.id).materialize(dest)
    assert {p.name: p.read_text() for p in dest.iterdir()} == {
        "a.py": "aaaa", "b.py": "bbbb", "c.py": "cccc", "d.py": "dddd"}


def test_data_appended_but_never_indexed_is_cut_off(tmp_path: Path) -> None:
    work = tree(tmp_path / "w", {"a.py": "aaaa"})
    store = SnapshotStore(tmp_path / "store")
    store.take(work)
    with open(store.root / "pack/data", "ab") as f:
        f.write(b"half of a content whose index record never came")
    (work / "b.py").write_text("bb")
    snap = SnapshotStore(store.root).take(work)
    assert pack_size(store) == (6, 2)
    dest = tmp_path / "ws"
    assert unpack_as_a_pod_does(store.root, snap.id, dest).returncode == 0
    assert (dest / "b.py").read_text() == "bb"


def test_gc_keeps_what_existing_jobs_use_and_drops_the_rest(tmp_path: Path) -> None:
    shared, only_a, only_b = "shared = 1\n", "a" * 100, os.urandom(5000)
    wa = tree(tmp_path / "a", {"common.py": shared, "a.py": only_a})
    wb = tree(tmp_path / "b", {"common.py": shared, "b.bin": only_b})
    store = SnapshotStore(tmp_path / "store")
    a, b = store.take(wa), store.take(wb)
    other = SnapshotStore(store.root)  # another kernel, which read the index before the gc
    assert other.take(wb).new_files == 0
    assert pack_size(store) == (len(shared) + 100 + 5000, 3)
    report = store.gc({a.id}, grace=0)  # b's job is gone
    assert pack_size(store) == (len(shared) + 100, 2)
    assert (report.freed_bytes, report.dropped_contents, report.dropped_snapshots) == (5000, 1, 1)
    assert (report.kept_bytes, report.kept_contents, report.kept_snapshots) == (len(shared) + 100, 2, 1)
    assert str(report) == (f"snapshot store {store.root}: freed 4.9 KiB (1 content(s) of 1 "
                           f"snapshot(s) no job uses); kept 111 B (2 content(s)) for 1 snapshot(s)")
    assert sorted(p.name for p in (store.root / "manifests").iterdir()) == [a.id]
    assert sorted(p.name for p in (store.root / "pack").iterdir()) == ["data", "index", "lock"]
    from kubelab.core.jobs.errors import JobError

    with pytest.raises(JobError, match=f"no snapshot {b.id}"):
        store.load(b.id)
    # the kept snapshot still unpacks: from the Snapshot taken before the rewrite (whose offsets
    # are stale), in another kernel, and as a pod does
    for i, snap in enumerate([a, SnapshotStore(store.root).load(a.id)]):
        snap.materialize(tmp_path / f"ws{i}")
        assert (tmp_path / f"ws{i}/a.py").read_text() == only_a
        assert (tmp_path / f"ws{i}/common.py").read_text() == shared
    assert unpack_as_a_pod_does(store.root, a.id, tmp_path / "pod").returncode == 0
    assert (tmp_path / "pod/a.py").read_text() == only_a
    # a pod of the collected snapshot says why, in one line
    gone = unpack_as_a_pod_does(store.root, b.id, tmp_path / "pod-b")
    assert gone.returncode == 1 and "Traceback" not in gone.stderr, gone.stderr
    # what was dropped is appended again when needed (another kernel's in-memory index, read
    # before the rewrite, is re-read: it must not think b.bin is still there)
    again = other.take(wb)
    assert (again.id, again.new_files, again.new_bytes) == (b.id, 1, 5000)
    again.materialize(tmp_path / "wsb")
    assert (tmp_path / "wsb/b.bin").read_bytes() == only_b
    assert str(store.gc({a.id, b.id}, grace=0)).startswith(
        f"snapshot store {store.root}: nothing to free; kept")


def test_gc_spares_recent_snapshots_a_submit_may_be_using(tmp_path: Path) -> None:
    work = tree(tmp_path / "w", {"a.py": "a"})
    store = SnapshotStore(tmp_path / "store")
    snap = store.take(work)
    report = store.gc(set(), grace=900)
    assert (report.freed_bytes, report.recent_snapshots, report.kept_snapshots) == (0, 1, 1)
    assert "1 of them unused but newer than 15 min" in str(report)
    old = 10_000
    os.utime(store.root / "manifests" / snap.id, (time.time() - old, time.time() - old))
    store.take(work)  # reusing a snapshot makes it recent again
    assert store.gc(set(), grace=900).recent_snapshots == 1
    assert store.gc(set(), grace=0).dropped_snapshots == 1
    assert pack_size(store) == (0, 0)


def test_gc_removes_the_layout_from_before_the_pack(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "store")
    store.take(tree(tmp_path / "w", {"a.py": "a"}))
    legacy = tree(store.root, {"objects/ab/cdef0123": b"x" * 1000, "objects/cd/ef": b"y" * 24,
                               "index.json": "{}", "manifests/0123abcd.json": "[]"})
    report = store.gc(set(), grace=3600)
    assert report.legacy_bytes == 1000 + 24 + 2 + 2 and report.freed_bytes == report.legacy_bytes
    assert "in the old objects/ layout" in str(report)
    assert not (legacy / "objects").exists() and not (legacy / "index.json").exists()
    assert [p.name for p in (store.root / "manifests").iterdir()] != [] and not any(
        p.suffix == ".json" for p in (store.root / "manifests").iterdir())


@pytest.mark.parametrize("state", ["written", "committed", "index renamed", "both renamed"])
def test_a_gc_interrupted_by_a_crash_leaves_a_whole_pack(tmp_path: Path, state: str) -> None:
    """Each moment of the switch to a rewritten pack: readers (a pod's unpacker) see one whole
    pack, old or new, and the next writer finishes or drops the switch."""
    import shutil

    wa, wb = tree(tmp_path / "a", {"a.py": "a" * 10}), tree(tmp_path / "b", {"b.py": "b" * 20})
    store = SnapshotStore(tmp_path / "store")
    a = store.take(wa)
    store.take(wb)
    # the rewritten pack of a gc keeping a, made on a copy of the store
    copy = tmp_path / "copy"
    shutil.copytree(store.root, copy)
    SnapshotStore(copy).gc({a.id}, grace=0)
    pack_dir = store.root / "pack"
    for name in ("index", "data"):
        shutil.copy(copy / "pack" / name, pack_dir / f"{name}.new")
    if state != "written":
        (pack_dir / "swap").touch()
    if state in ("index renamed", "both renamed"):
        os.replace(pack_dir / "index.new", pack_dir / "index")
    if state == "both renamed":
        os.replace(pack_dir / "data.new", pack_dir / "data")
    assert unpack_as_a_pod_does(store.root, a.id, tmp_path / "pod").returncode == 0
    assert (tmp_path / "pod/a.py").read_text() == "a" * 10
    fresh = SnapshotStore(store.root)
    fresh.take(wa)  # the next writer
    assert sorted(p.name for p in pack_dir.iterdir()) == ["data", "index", "lock"]
    assert pack_size(fresh) == ((10, 1) if state != "written" else (30, 2))
    fresh.load(a.id).materialize(tmp_path / "ws")
    assert (tmp_path / "ws/a.py").read_text() == "a" * 10


def test_a_damaged_content_is_caught_on_unpack_and_restored_from_the_workdir(tmp_path: Path) -> None:
    """A flipped byte in the pack never reaches a workspace: unpacking checks each content's
    SHA-256; in the kernel it is stored again from the file, and gc drops the damaged bytes."""
    work = tree(tmp_path / "w", {"a.txt": "hello " * 100, "b.txt": "other"})
    store = SnapshotStore(tmp_path / "store")
    snap = store.take(work)
    data = store.pack_dir / "data"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF
    data.write_bytes(bytes(raw))
    # the pod's unpacker refuses, naming the file and what to do
    result = unpack_as_a_pod_does(store.root, snap.id, tmp_path / "pod")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "a.txt" in result.stderr and "damaged" in result.stderr and "%jobs gc" in result.stderr
    # a resubmit unpacks whole files: the damaged content was stored anew from a.txt
    again = SnapshotStore(tmp_path / "store").take(work)
    again.materialize(tmp_path / "ws")
    assert (tmp_path / "ws" / "a.txt").read_text() == "hello " * 100
    assert unpack_as_a_pod_does(store.root, again.id, tmp_path / "pod2").returncode == 0
    report = store.gc({again.id})
    assert (tmp_path / "pod2" / "a.txt").read_text() == "hello " * 100
    assert report.kept_contents == 2 and report.freed_bytes == 600


def test_a_damaged_content_whose_file_changed_is_one_message_and_gc_drops_it(tmp_path: Path) -> None:
    work = tree(tmp_path / "w", {"a.txt": "hello " * 100})
    store = SnapshotStore(tmp_path / "store")
    snap = store.take(work)
    data = store.pack_dir / "data"
    data.write_bytes(b"x" * data.stat().st_size)
    (work / "a.txt").write_text("changed")
    with pytest.raises(BackendError, match=r"a\.txt .*damaged.*%jobs gc"):
        snap.materialize(tmp_path / "ws")
    report = store.gc({snap.id})
    assert report.damaged_contents == 1 and "damaged" in str(report)
    # the dedup no longer trusts it: the same content again is stored anew and unpacks
    (work / "a.txt").write_text("hello " * 100)
    again = store.take(work)
    assert again.new_files == 1
    again.materialize(tmp_path / "ws2")
    assert (tmp_path / "ws2" / "a.txt").read_text() == "hello " * 100


def test_gc_that_rewrites_leaves_out_a_damaged_content_and_keeps_the_next(tmp_path: Path) -> None:
    """A rewrite the gc needs anyway (a content no job uses) checks each kept content as it
    copies it: a damaged one is left out, and the one after it still lands where its record says."""
    work = tree(tmp_path / "w", {"a.txt": "a" * 300, "b.txt": "b" * 200})
    store = SnapshotStore(tmp_path / "store")
    snap = store.take(work)
    tree(tmp_path / "gone", {"c.txt": "c" * 100})
    store.take(tmp_path / "gone")
    offset, size = store._index[hashlib.sha256(b"a" * 300).hexdigest()]
    with open(store.pack_dir / "data", "r+b") as f:
        f.seek(offset)
        f.write(b"x" * size)
    report = store.gc({snap.id}, grace=0)
    assert (report.damaged_contents, report.dropped_contents, report.kept_contents) == (1, 2, 1)
    assert pack_size(store) == (200, 1)
    (work / "a.txt").unlink()
    again = store.take(work)
    assert again.new_files == 0  # b.txt's bytes are the pack's, checked as they are unpacked
    again.materialize(tmp_path / "ws")
    assert (tmp_path / "ws" / "b.txt").read_text() == "b" * 200


def test_lost_pack_data_is_stored_again(tmp_path: Path) -> None:
    work = tree(tmp_path / "w", {"a.txt": "hello"})
    store = SnapshotStore(tmp_path / "store")  # one that read the index before the loss
    store.take(work)
    (tmp_path / "store" / "pack" / "data").unlink()
    snap = store.take(work)
    assert snap.new_files == 1
    snap.materialize(tmp_path / "ws")
    assert (tmp_path / "ws" / "a.txt").read_text() == "hello"
    store.gc({snap.id})


@pytest.mark.parametrize("damage", ["pack-file", "lock-dir", "index-dir", "store-file"])
def test_a_broken_store_layout_is_one_message_naming_the_path(tmp_path: Path, damage: str) -> None:
    work = tree(tmp_path / "w", {"a.txt": "hello"})
    root = tmp_path / "store"
    SnapshotStore(root).take(work)
    bad = {"pack-file": root / "pack", "lock-dir": root / "pack" / "lock",
           "index-dir": root / "pack" / "index", "store-file": root}[damage]
    shutil.rmtree(bad) if bad.is_dir() else bad.unlink()
    bad.mkdir() if damage.endswith("dir") else bad.write_text("x")
    for attempt in (lambda: SnapshotStore(root).take(work), lambda: SnapshotStore(root).gc(set())):
        with pytest.raises(BackendError) as e:
            attempt()
        assert f"{bad}:" in str(e.value) and "mv " in str(e.value)


def test_gc_with_a_damaged_snapshot(tmp_path: Path) -> None:
    work = tree(tmp_path / "w", {"a.txt": "hello"})
    store = SnapshotStore(tmp_path / "store")
    snap = store.take(work)
    manifest = store.manifests / snap.id
    manifest.write_bytes(b"\xff\xfe garbage \0 x")
    with pytest.raises(BackendError, match=rf"{snap.id} is damaged .*--replace"):
        store.gc({snap.id})
    assert store.gc(set(), grace=0).dropped_snapshots == 1  # no job's: dropped
    # a resubmit writes a damaged manifest anew (the pod reads the file)
    snap = store.take(work)
    manifest.write_bytes(b"junk")
    store.take(work)
    assert store.load(snap.id).entries == snap.entries


def test_a_manifest_path_outside_the_workspace_is_refused(tmp_path: Path) -> None:
    work = tree(tmp_path / "w", {"a.txt": "hello"})
    store = SnapshotStore(tmp_path / "store")
    snap = store.take(work)
    manifest = store.manifests / snap.id
    manifest.write_bytes(manifest.read_bytes().replace(b"a.txt", b"../../escape.txt"))
    result = unpack_as_a_pod_does(store.root, snap.id, tmp_path / "pod" / "ws")
    assert result.returncode == 1 and "not a file inside the workspace" in result.stderr
    assert not (tmp_path / "escape.txt").exists()
