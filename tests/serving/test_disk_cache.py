"""The node's disk tier: a byte budget, LRU, verified reads, crash leftovers removed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mint.serving.disk_cache import DiskCache


def blob(i: int, size: int = 100) -> tuple[str, bytes]:
    data = bytes([i]) * size
    return hashlib.sha256(data).hexdigest(), data


def test_least_recently_used_goes_first_within_the_budget(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, budget_bytes=300)
    for i in range(3):
        cache.put(*blob(i))
    assert cache.get(blob(0)[0]) == blob(0)[1]  # 0 is now the most recent
    cache.put(*blob(3))
    assert cache.get(blob(1)[0]) is None, "1 was the least recently used"
    assert {cache.get(blob(i)[0]) is not None for i in (0, 2, 3)} == {True}
    assert cache.used_bytes == 300 and len(list(tmp_path.glob("*.safetensors"))) == 3


def test_a_corrupt_file_is_a_miss_and_is_dropped(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, budget_bytes=1000)
    sha, data = blob(7)
    cache.put(sha, data)
    (tmp_path / f"{sha}.safetensors").write_bytes(b"tampered")
    assert cache.get(sha) is None
    assert not (tmp_path / f"{sha}.safetensors").exists() and cache.used_bytes == 0


def test_a_restart_keeps_files_within_budget_and_removes_partial_writes(tmp_path: Path) -> None:
    first = DiskCache(tmp_path, budget_bytes=1000)
    for i in range(3):
        first.put(*blob(i))
    (tmp_path / "deadbeef.123.456.tmp").write_bytes(b"half")
    again = DiskCache(tmp_path, budget_bytes=200)
    assert len(again) == 2 and not list(tmp_path.glob("*.tmp"))


def test_names_are_digests_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sha256"):
        DiskCache(tmp_path, 100).get("../../etc/passwd")
