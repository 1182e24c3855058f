"""Unpacking a fetched tar stream: each file complete under its name with its mode and time, hostile names refused whole."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from wfl_async.transport.base import _unpack


def stream(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, content in members:
            info.size = len(content) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(content) if info.isfile() else None)
    return buffer.getvalue()


def member(name: str, *, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, mtime: int = 1_700_000_000,
           link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, mtime, link
    return info


def test_files_land_complete_with_owner_only_modes_and_their_times(tmp_path: Path) -> None:
    data = stream((member("job_1", kind=tarfile.DIRTYPE, mode=0o755), b""), (member("job_1/result.pkl", mode=0o644), b"x" * 70_000),
                  (member("job_1/run.sh", mode=0o755, mtime=1_600_000_000), b"#!/bin/sh\n"),
                  (member("job_2/deep/er/marker"), b"{}"))
    (tmp_path / "job_1").mkdir()
    (tmp_path / "job_1" / "result.pkl").write_bytes(b"an older copy")  # replaced whole
    _unpack(data, tmp_path)
    assert (tmp_path / "job_1" / "result.pkl").read_bytes() == b"x" * 70_000
    assert (tmp_path / "job_2" / "deep" / "er" / "marker").read_bytes() == b"{}"
    assert os.stat(tmp_path / "job_1" / "result.pkl").st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "job_1" / "run.sh").st_mode & 0o777 == 0o700
    assert os.stat(tmp_path / "job_1" / "run.sh").st_mtime == 1_600_000_000  # a marker's time is when it ran
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deep", "er", "job_1", "job_2", "marker", "result.pkl",
                                                            "run.sh"]  # no temporary file left


@pytest.mark.parametrize("hostile", [
    member("/etc/evil"),
    member("job_1/../../evil"),
    member("job_1/dev", kind=tarfile.CHRTYPE),
    member("job_1/fifo", kind=tarfile.FIFOTYPE),
])
def test_a_hostile_name_refuses_the_whole_stream_before_anything_is_written(tmp_path: Path,
                                                                            hostile: tarfile.TarInfo) -> None:
    root = tmp_path / "root"
    data = stream((member("job_1/result.pkl"), b"ok"), (hostile, b"bad"))
    with pytest.raises(tarfile.FilterError, match="refusing to unpack"):
        _unpack(data, root)
    assert not (root / "job_1" / "result.pkl").exists()
    assert not (tmp_path / "evil").exists()


def test_a_link_pointing_outside_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with pytest.raises(tarfile.FilterError):
        _unpack(stream((member("job_1/out", kind=tarfile.SYMTYPE, link="../../outside"), b"")), root)
    assert not (root / "job_1" / "out").is_symlink()


def test_a_link_inside_the_root_is_kept(tmp_path: Path) -> None:
    _unpack(stream((member("job_1/result.pkl"), b"ok"),
                   (member("job_1/latest", kind=tarfile.SYMTYPE, link="result.pkl"), b"")), tmp_path)
    assert (tmp_path / "job_1" / "latest").read_bytes() == b"ok"
    assert [p.name for p in tmp_path.iterdir()] == ["job_1"]
