"""zerokv.io: the one atomic write and the one hashing file wrapper."""

from __future__ import annotations

import hashlib
import io

import pytest

from zerokv.io import TEMP_SUFFIX, HashingFile, atomic_write, atomic_write_bytes


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic_write_bytes(path, b"one")
    with atomic_write(path, "w", newline="") as f:
        f.write("two\n")
        f.seek(0)
        f.write("TWO")  # rewritten inside the block, as a checkpoint fills its header in last
    assert path.read_text() == "TWO\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp(tmp_path):
    path = tmp_path / "a.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_write(path) as f:
        f.write(b"half of the new")
        assert any(p.name.endswith(TEMP_SUFFIX) for p in tmp_path.iterdir())
        raise RuntimeError("disk on fire")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_atomic_write_refuses_other_modes(tmp_path):
    with pytest.raises(ValueError, match=r"mode='a'; must be 'wb' or 'w'"), atomic_write(tmp_path / "x", "a"):
        pass


def test_hashing_file_hashes_and_counts_both_ways():
    sink = io.BytesIO()
    writer = HashingFile(sink)
    writer.write(b"abc")
    writer.write(memoryview(b"defg"))
    assert writer.size == 7 and writer.digest.hexdigest() == hashlib.sha256(b"abcdefg").hexdigest()
    reader = HashingFile(io.BytesIO(sink.getvalue()), hashlib.md5())
    buffer = bytearray(4)
    assert reader.read(3) == b"abc" and reader.readinto(buffer) == 4 and bytes(buffer) == b"defg"
    assert reader.size == 7 and reader.digest.hexdigest() == hashlib.md5(b"abcdefg").hexdigest()
