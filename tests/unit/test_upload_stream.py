"""The upload's tar stream of jobs staged from memory: headers written by hand, read back whole by GNU tar and tarfile."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from wfl_async.transport import base
from wfl_async.transport.base import MANIFEST, pack


def members(stream: bytes) -> dict[str, tuple[bytes, tarfile.TarInfo]]:
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        return {m.name: (tar.extractfile(m).read(), m) for m in tar.getmembers()}  # type: ignore[union-attr]


CONTENTS = {f"job_chunk_{i}_{'0' * 40}/task.pkl": os.urandom(i * 97) for i in range(40)}
CONTENTS["n" * 100] = b""  # a name that just fits, an empty file


def test_plain_stream_is_what_tarfile_reads_and_gnu_tar_extracts_and_verifies(tmp_path: Path) -> None:
    stream = pack(tmp_path, [], CONTENTS)
    read = members(stream)
    assert {name: data for name, (data, _) in read.items() if name != MANIFEST} == CONTENTS
    assert all(info.mode == 0o600 and info.uid == 0 and info.isfile() for _, info in read.values())
    assert len(stream) % tarfile.RECORDSIZE == 0
    subprocess.run(["tar", "-C", str(tmp_path), "--no-same-permissions", "-xf", "-"], input=stream, check=True)
    subprocess.run(["sha256sum", "--quiet", "--strict", "-c", MANIFEST], cwd=tmp_path, check=True)
    assert (tmp_path / next(iter(CONTENTS))).read_bytes() == next(iter(CONTENTS.values()))


def test_plain_stream_holds_the_same_files_as_tarfiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = members(pack(tmp_path, [], CONTENTS))
    monkeypatch.setattr(base, "_plain_stream", lambda contents, mtime: None)
    by_tarfile = members(pack(tmp_path, [], CONTENTS))
    assert {n: d for n, (d, _) in plain.items()} == {n: d for n, (d, _) in by_tarfile.items()}


@pytest.mark.parametrize("name", ["x" * 101, "d\u00e9j\u00e0/task.pkl"])
def test_a_name_no_plain_header_holds_goes_through_tarfile(tmp_path: Path, name: str) -> None:
    assert base._plain_stream({name: b"data"}, 0) is None
    read = members(pack(tmp_path, [], {name: b"data", "short": b"x"}))
    assert read[name][0] == b"data" and read["short"][0] == b"x"
