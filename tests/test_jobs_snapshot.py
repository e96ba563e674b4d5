"""Workspace snapshots: content addressing, ignore rules, the size limit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kubelab.core.jobs.errors import InvalidJobSpec, SnapshotTooLarge
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
