"""`fieldmark export` (and `train`, `explain`) into a folder it cannot write, and onto a file system that fills
up: exit status 2, one line naming the folder and the cause, and nothing half-written left behind (no temporary
file, no torn crop, no torn CSV; every crop on disk is complete and recorded, so running the command again
resumes; a run folder keeps its last complete epoch, and --resume finishes it).

Real conditions where this machine allows them (a read-only tmpfs, and a 256 KiB tmpfs, mounted as root), and,
always, the same failures injected into the writes (PermissionError from mkdir/open; ENOSPC half-way through a
write), so that the behaviour is checked on every machine.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from engine.export.files import STATE
from engine.data.imageio import read_image

from engine import runs

from ..conftest import make_class_folders
from .conftest import TINY, run_cli


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A tmpfs mounted at ``path`` (skips the test when this machine does not allow mounting)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN) and mount(8); the injected variant still runs")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({done.stderr.strip()}); the injected variant still runs")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def export(run: Path, data: Path, out: Path, crop: int = 64):
    return run_cli("export", run, data, "--out", out, "--split", "all", "--crop-size", str(crop), "--batch-size", "8")


def assert_clean_failure(result, out: Path, cause: str) -> None:
    """Exit 2 with one line naming the folder and the cause; on disk only whole files."""
    lines = result.err_lines()
    assert result.code == 2, (result.code, result.err)
    assert len(lines) == 1 and lines[0].startswith("fieldmark: error:"), lines
    assert str(out) in lines[0] and cause in lines[0], lines[0]
    assert_no_partial_files(out)


def assert_no_partial_files(out: Path) -> None:
    if not out.exists():
        return
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    records = []
    done = out / STATE / "done.jsonl"
    if done.exists():
        records = [json.loads(line) for line in done.read_text(encoding="utf-8").splitlines()]  # no torn line
    named = {part["crop"] for rec in records for part in rec["parts"]}
    crops = {p.relative_to(out).as_posix() for p in out.rglob("*.jpg")}
    assert crops == named, (crops ^ named)  # no crop without its record, no record without its crop
    for c in crops:
        read_image(out / c)  # complete JPEGs (a torn one fails with "truncated")
    csv_file = out / "parts.csv"
    if csv_file.exists():  # only ever written whole, at the end
        rows = csv_file.read_text(encoding="utf-8").splitlines()
        assert len(rows) == 1 + len(named)


# ------------------------------------------------------------------------------------------ real file systems
def test_read_only_mount(corpus, corpus_run, tmp_path):
    run, _ = corpus_run
    with tmpfs(tmp_path / "ro", "size=1m,ro") as ro:
        for out in (ro, ro / "parts"):  # the (empty) mount itself, and a new folder inside it
            assert_clean_failure(export(run, corpus.root, out), out, "Read-only file system")


def test_nearly_full_file_system_then_resume(corpus, corpus_run, tmp_path):
    run, _ = corpus_run
    with tmpfs(tmp_path / "small", "size=256k") as small:
        out = small / "parts"
        assert_clean_failure(export(run, corpus.root, out, crop=256), out, "No space left on device")
        subprocess.run(["mount", "-o", "remount,size=16m", str(small)], check=True)  # free space, run again
        again = export(run, corpus.root, out, crop=256)
        assert again.code == 0, again.err
        assert_no_partial_files(out)
        assert "were already done" in again.out


# ------------------------------------------------------------------------------------ injected failures
def _under(path: str | os.PathLike | int, root: Path) -> bool:
    if isinstance(path, int):
        try:
            path = os.readlink(f"/proc/self/fd/{path}")
        except OSError:
            return False
    return os.path.abspath(os.fsdecode(path)).startswith(str(root))


def test_permission_denied_injected(corpus, corpus_run, tmp_path, monkeypatch):
    """What a read-only folder does to a normal user (root ignores modes): mkdir and open fail with EACCES."""
    run, _ = corpus_run
    out = tmp_path / "locked"
    real_mkdir, real_open = os.mkdir, os.open

    def mkdir(path, *a, **kw):
        if _under(path, out):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_mkdir(path, *a, **kw)

    def open_(path, flags, *a, **kw):
        if _under(path, out) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)
    assert_clean_failure(export(run, corpus.root, out), out, "Permission denied")
    assert not out.exists()
    real_mkdir(out)  # an existing, empty folder the export cannot write into
    assert_clean_failure(export(run, corpus.root, out), out, "Permission denied")
    assert not any(out.iterdir())


class _FillingUp:
    """A file object that accepts ``budget`` more bytes on the file system, writes part of the next write, then
    fails with ENOSPC, as a disk that fills up in the middle of a file does."""

    def __init__(self, fh, state: dict, path: str):
        self._fh, self._state, self._path = fh, state, path

    def write(self, data):
        left = self._state["budget"]
        if len(data) > left:
            self._fh.write(data[: max(0, left)])
            self._fh.flush()
            self._state["budget"] = 0
            raise OSError(errno.ENOSPC, "No space left on device", self._path)
        self._state["budget"] = left - len(data)
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


@pytest.mark.parametrize("where", ["crops", "csv"])
def test_disk_full_injected_then_resume(where, corpus, corpus_run, tmp_path, monkeypatch):
    """ENOSPC in the middle of a crop (after some batches were done), or in the middle of parts.csv."""
    run, _ = corpus_run
    out = tmp_path / "parts"
    state = {"budget": 1000}
    real_fdopen = os.fdopen
    records = out / STATE / "done.jsonl"

    def fdopen(fd, *a, **kw):
        fh = real_fdopen(fd, *a, **kw)
        if not _under(fd, out):
            return fh
        target = os.readlink(f"/proc/self/fd/{fd}")
        if where == "csv" and ".parts.csv." not in target:
            return fh
        if where == "crops" and not (records.exists() and records.stat().st_size):
            return fh  # the disk fills up once the first batch is recorded
        return _FillingUp(fh, state, target)

    monkeypatch.setattr(os, "fdopen", fdopen)
    assert_clean_failure(export(run, corpus.root, out), out, "No space left on device")
    assert (out / STATE / "done.jsonl").stat().st_size > 0  # it failed after some batches were done
    if where == "csv":
        assert not (out / "parts.csv").exists()
    monkeypatch.setattr(os, "fdopen", real_fdopen)  # space is free again: the same command finishes the job
    again = export(run, corpus.root, out)
    assert again.code == 0, again.err
    assert_no_partial_files(out)


# ---------------------------------------------------------------------------------------- train and explain
def assert_one_line(result, *needles: str) -> None:
    """Exit 2 and one error line, the last (training prints its progress before it)."""
    lines = result.err_lines()
    errors = [line for line in lines if line.startswith("fieldmark")]
    assert result.code == 2, (result.code, result.err)
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("fieldmark: error:"), lines
    assert all(n in errors[0] for n in needles), errors[0]


def test_train_and_explain_into_a_read_only_mount(corpus, corpus_run, tmp_path):
    run, _ = corpus_run
    data = make_class_folders(tmp_path / "data", classes=2, per_class=3, size=(36, 36))
    with tmpfs(tmp_path / "ro", "size=1m,ro") as ro:
        assert_one_line(run_cli("train", data, "--out", ro / "run", "--epochs", "1", *TINY),
                        str(ro / "run"), "Read-only file system")
        assert_one_line(run_cli("explain", run, corpus.root / "alpha" / "alpha_0.jpg", "--out", ro / "maps"),
                        str(ro / "maps"), "Read-only file system")


def _fail_writes_under(monkeypatch, root: Path, after: int) -> None:
    """Every atomic write below ``root`` after the first ``after`` ones fails half-way with ENOSPC."""
    real_fdopen = os.fdopen
    state = {"files": 0, "budget": 0}

    def fdopen(fd, *a, **kw):
        fh = real_fdopen(fd, *a, **kw)
        if not _under(fd, root):
            return fh
        state["files"] += 1
        if state["files"] <= after:
            return fh
        state["budget"] = 10
        return _FillingUp(fh, state, os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fdopen", fdopen)


def test_train_disk_full_at_a_save_then_resume(tmp_path, monkeypatch):
    data = make_class_folders(tmp_path / "data", classes=2, per_class=4, size=(36, 36))
    run = tmp_path / "run"
    argv = ["train", data, "--out", run, "--epochs", "3", *TINY]
    with monkeypatch.context() as m:
        _fail_writes_under(m, run, after=6)  # epoch 1's five files (split.json first), epoch 2's resume.pt
        assert_one_line(run_cli(*argv), "cannot save epoch 2", str(run), "No space left on device", "--resume")
    assert not list(run.glob(".*.tmp"))
    assert runs.read_meta(run)["epoch"] == 1 and runs.load_run(run)
    done = run_cli(*argv, "--resume")
    assert done.code == 0, done.err
    assert [h["epoch"] for h in runs.read_history(run)] == [1, 2, 3]


def test_explain_disk_full_injected(corpus, corpus_run, tmp_path, monkeypatch):
    run, _ = corpus_run
    out = tmp_path / "maps"
    _fail_writes_under(monkeypatch, out, after=4)
    images = [corpus.root / "alpha" / f"alpha_{i}.jpg" for i in range(3)]
    assert_one_line(run_cli("explain", run, *images, "--out", out), str(out), "No space left on device")
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    for npy in out.glob("*.npy"):
        assert npy.stat().st_size > 128
