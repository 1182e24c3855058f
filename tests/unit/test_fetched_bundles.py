"""Fetched bundles (issue 16): a fetched batch kept as one file, found again by a later run, checked.

The streams are made by GNU tar from real job directories, as the fetch command makes them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from wfl_async.cli._actions import clean_jobs, remove_jobs
from wfl_async.jobs import layout
from wfl_async.jobs.fetched import BUNDLE_DIR, FetchedStore, _plain_members, save_bundle
from wfl_async.jobs.integrity import marker_seconds, read_verified_result
from wfl_async.jobs.run_record import read_run_record
from wfl_async.jobs.states import JobStatus
from wfl_async.session import session_scope


def _finished(root: Path, job_dir: str, result: bytes, *, mtime: int = 1_700_000_000) -> list[str]:
    d = root / job_dir
    d.mkdir(parents=True)
    (d / layout.RESULT).write_bytes(result)
    (d / layout.STARTED).write_text("node7 w1\n")
    (d / layout.SUCCEEDED).write_text(json.dumps({"size": len(result), "sha256": hashlib.sha256(result).hexdigest(),
                                                  "seconds": 1.5}))
    for name in (layout.STARTED, layout.SUCCEEDED):
        os.utime(d / name, (mtime, mtime + (name == layout.SUCCEEDED)))
    return [f"{job_dir}/{name}" for name in layout.FETCH_ON_FINISH]


def _stream(root: Path, paths: list[str]) -> bytes:
    """What the fetch command sends back (missing files skipped)."""
    return subprocess.run(["tar", "--ignore-failed-read", "--null", "--verbatim-files-from", "-T", "-", "-cf", "-"],
                          cwd=root, input=b"".join(p.encode() + b"\0" for p in paths), capture_output=True,
                          check=True).stdout


def test_a_fetched_batch_is_one_file_and_each_job_reads_its_own_files(tmp_path: Path) -> None:
    remote, local = tmp_path / "remote", tmp_path / "stage"
    names = [f"chunk_{i}-{'k' * 60}{i}" for i in range(30)]  # long names: GNU tar's long-name members
    paths = [p for i, name in enumerate(names) for p in _finished(remote, name, f"result {i}".encode())]
    saved = save_bundle(local, _stream(remote, paths))
    assert sorted(saved) == sorted(names)
    assert [p.name for p in local.iterdir()] == [BUNDLE_DIR] and len(list((local / BUNDLE_DIR).iterdir())) == 1
    files = saved[names[3]]
    assert read_verified_result(files) == b"result 3" and marker_seconds(files) == 1.5
    assert read_run_record(files) == {"started_at": 1_700_000_000, "finished_at": 1_700_000_001,
                                      "worker": "node7/w1"}
    # a later run (a new store) finds every job through the bundle's index; tar reads the bundle
    store = FetchedStore(local)
    for i, name in enumerate(names):
        found = store.files(name)
        assert found is not None and read_verified_result(found) == f"result {i}".encode()
    assert store.files("never-fetched") is None
    listed = subprocess.run(["tar", "-tf", next((local / BUNDLE_DIR).iterdir())], capture_output=True, text=True,
                            check=True).stdout.split()
    assert f"{names[0]}/{layout.RESULT}" in listed


def test_the_newest_copy_wins_and_a_job_directory_of_its_own_wins_over_bundles(tmp_path: Path) -> None:
    local = tmp_path / "stage"
    first, second = tmp_path / "first", tmp_path / "second"
    save_bundle(local, _stream(first, _finished(first, "job-a", b"old")))
    store = FetchedStore(local)
    old = store.files("job-a")
    assert old is not None and read_verified_result(old) == b"old"
    save_bundle(local, _stream(second, _finished(second, "job-a", b"new")))  # fetched again (a resubmitted job)
    new = store.files("job-a")
    assert new is not None and read_verified_result(new) == b"new"
    _finished(local, "job-a", b"own")  # fetched again into its own directory (an integrity mismatch)
    own = store.files("job-a")
    assert own is not None and read_verified_result(own) == b"own"


def test_a_newer_bundle_whose_entry_this_version_cannot_read_hides_the_older_copy(tmp_path: Path) -> None:
    """The store keeps each job's entry packed by its files' places in FETCH_ON_FINISH: an entry naming
    another file (a bundle of another version) is not read, and the job is fetched again rather than
    read from an older copy."""
    local, remote = tmp_path / "stage", tmp_path / "remote"
    save_bundle(local, _stream(remote, _finished(remote, "job-a", b"old")))
    text = json.dumps({"job-a": {"other.txt": [0, 1, 1.0]}}).encode()
    info = tarfile.TarInfo("_wfl_async_index.json")
    info.size = len(text)
    with tarfile.open(local / BUNDLE_DIR / f"{'9' * 20}-newer.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(text))
    assert FetchedStore(local).files("job-a") is None


def test_a_stream_naming_anything_but_a_jobs_own_files_writes_nothing(tmp_path: Path) -> None:
    remote, local = tmp_path / "remote", tmp_path / "stage"
    paths = _finished(remote, "job-a", b"x")
    (remote / "job-a" / "other.txt").write_text("not a job file")
    with pytest.raises(tarfile.FilterError, match="other.txt"):
        save_bundle(local, _stream(remote, [*paths, "job-a/other.txt"]))
    assert not (local / BUNDLE_DIR).exists() or not list((local / BUNDLE_DIR).iterdir())


def test_a_result_cut_short_in_a_bundle_is_refused_by_its_marker(tmp_path: Path) -> None:
    remote, local = tmp_path / "remote", tmp_path / "stage"
    paths = _finished(remote, "job-a", b"the whole result")
    (remote / "job-a" / layout.RESULT).write_bytes(b"the whole")
    files = save_bundle(local, _stream(remote, paths))["job-a"]
    with pytest.raises(Exception, match="is not the result its job wrote"):
        read_verified_result(files)


def test_plain_headers_are_read_as_tarfile_reads_them_and_anything_else_goes_to_tarfile(tmp_path: Path) -> None:
    remote, local = tmp_path / "remote", tmp_path / "stage"
    paths = [p for i in range(3) for p in _finished(remote, f"job-{i}", b"r" * (600 * i))]  # 0, 1 and 2 blocks
    stream = _stream(remote, paths)
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        expected = [(m.name, True, m.offset_data, m.size, m.mtime) for m in tar]
    assert _plain_members(stream) == expected and len(expected) == 9
    # a damaged header: tarfile judges it (and refuses it), nothing is written
    damaged = bytearray(stream)
    damaged[0] ^= 1
    assert _plain_members(bytes(damaged)) is None
    with pytest.raises(tarfile.TarError):
        save_bundle(local, bytes(damaged))
    # a link among plain files: refused by name and kind
    (remote / "job-0" / layout.WORKER_LOG).symlink_to("/etc/passwd")
    with pytest.raises(tarfile.FilterError, match=layout.WORKER_LOG):
        save_bundle(local, _stream(remote, [*paths, f"job-0/{layout.WORKER_LOG}"]))
    assert not (local / BUNDLE_DIR).exists()


async def test_clean_and_rm_remove_a_bundle_once_none_of_its_jobs_keeps_its_local_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "_expyre"
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"systems": {}}))
    monkeypatch.setenv("EXPYRE_ROOT", str(root))
    remote = tmp_path / "remote"
    async with session_scope() as session:
        records = {}
        for name in ("a", "b", "c"):
            claim = await session.db.claim(key=name * 8, name=name, system="local", job_dir=f"job-{name}", owner="me")
            await session.db.update(claim.record.key, status=JobStatus.SUCCEEDED)
            records[name] = await session.db.get(claim.record.key)
        first = save_bundle(session.stage_root, _stream(remote, [*_finished(remote, "job-a", b"1"),
                                                                 *_finished(remote, "job-b", b"2")]))
        second = save_bundle(session.stage_root, _stream(remote, _finished(remote, "job-c", b"3")))
        (path_ab,), (path_c,) = {f._path for f in first.values()}, {f._path for f in second.values()}  # noqa: SLF001
        await clean_jobs(session, [records["a"]], remote=False)
        assert path_ab.exists() and path_c.exists()  # b keeps its local copy: its bundle stays whole
        assert session.fetched.files("job-b") is not None
        await remove_jobs(session, [records["b"], records["c"]], remote=False)
        assert path_ab.exists() and not path_c.exists()  # a is still recorded finished: served from its bundle
        await clean_jobs(session, [records["a"]], remote=False)
        assert not path_ab.exists() and FetchedStore(session.stage_root).files("job-a") is None
