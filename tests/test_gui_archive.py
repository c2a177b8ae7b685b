"""The Files tab's reading of the archive API's tars (gui.archive): a directory's top-level
entries only, and a single file saved through a temporary name, nothing left on failure."""

from __future__ import annotations

import base64
import json

import pytest
from imagekit import directory, file, symlink, tar_bytes
from vmctl_gui.archive import decode_stat, save_member, stat_is_dir, top_entries


def chunks(data: bytes, size: int = 7):
    """The tar as a stream hands it over: in small pieces, not on tar block boundaries."""
    return (data[i : i + size] for i in range(0, len(data), size))


def test_top_entries_are_the_directorys_children_only():
    tar = tar_bytes([directory("etc", mtime=1700000000), file("etc/hostname", b"box\n"),
                     directory("etc/deep"), file("etc/deep/inner", b"x" * 5000),
                     symlink("etc/link", "hostname")])  # fmt: skip
    entries = top_entries(chunks(tar))
    assert [e.name for e in entries] == ["deep", "hostname", "link"]  # directories first
    deep, hostname, link = entries
    assert deep.is_dir and deep.mode == "drwxr-xr-x"
    assert hostname.size == 4 and hostname.mode == "-rw-r--r--" and hostname.is_file
    assert link.link_target == "hostname" and link.mode.startswith("l")


def test_save_member_writes_the_file_whole_via_a_temporary_name(tmp_path):
    data = bytes(range(256)) * 300
    dest = tmp_path / "saved"
    assert save_member(chunks(tar_bytes([file("blob", data)]), 4096), dest) == len(data)
    assert dest.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]


def test_save_member_of_a_directory_is_refused_and_leaves_nothing(tmp_path):
    with pytest.raises(IsADirectoryError, match="etc is not a regular file"):
        save_member(chunks(tar_bytes([directory("etc")])), tmp_path / "saved")
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_download_leaves_nothing(tmp_path):
    whole = tar_bytes([file("blob", b"y" * 20000)])
    with pytest.raises(Exception):  # noqa: B017 (tarfile's own ReadError or EOFError)
        save_member(chunks(whole[:9000]), tmp_path / "saved")
    assert list(tmp_path.iterdir()) == []


def test_the_stat_header_and_gos_directory_bit():
    found = {"name": "etc", "size": 4096, "mode": (1 << 31) | 0o755, "linkTarget": ""}
    header = base64.b64encode(json.dumps(found).encode()).decode()
    assert decode_stat(header) == found and stat_is_dir(found)
    assert not stat_is_dir({"mode": 0o644})
