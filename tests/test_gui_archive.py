"""The Files tab's reading of the archive API's tars (gui.archive): a directory's top-level
entries only, reading stopped at the first deeper name, and a single file saved through a
temporary name, nothing left on failure."""

from __future__ import annotations

import base64
import io
import json

import pytest
from imagekit import directory, file, symlink, tar_bytes
from vmctl_gui.archive import (
    ArchiveStream,
    decode_stat,
    directory_request,
    save_member,
    stat_is_dir,
    top_entries,
)


class ShortReads(io.BytesIO):
    """The answer as a socket hands it over: at most a few bytes a read, off tar's blocks."""

    def read(self, size: int | None = -1) -> bytes:
        return super().read(7 if size is None or size < 0 else min(size, 7))


def stream(data: bytes) -> ArchiveStream:
    return ArchiveStream(ShortReads(data), {}, lambda: None)


def test_top_entries_are_the_directorys_children_only():
    tar = tar_bytes([directory(".", mtime=1700000000), file("./hostname", b"box\n"),
                     symlink("./link", "hostname"), directory("./deep"),
                     file("./deep/inner", b"x" * 5000)])  # fmt: skip
    entries = top_entries(stream(tar))
    assert [e.name for e in entries] == ["deep", "hostname", "link"]  # directories first
    deep, hostname, link = entries
    assert deep.is_dir and deep.mode == "drwxr-xr-x"
    assert hostname.size == 4 and hostname.mode == "-rw-r--r--" and hostname.is_file
    assert link.link_target == "hostname" and link.mode.startswith("l")


def test_reading_stops_at_the_first_deeper_name():
    """The engine writes a directory's own entries first: a big subtree is never read."""
    tar = tar_bytes([directory("."), file("./small", b"s"), directory("./big"),
                     file("./big/huge", b"\0" * (8 << 20))])  # fmt: skip
    answer = stream(tar)
    assert [e.name for e in top_entries(answer)] == ["big", "small"]
    assert answer.bytes_read < 64 << 10 < len(tar)


def test_a_directory_is_asked_for_with_a_trailing_dot():
    assert directory_request("/") == "/."
    assert directory_request("/etc") == directory_request("/etc/") == "/etc/."


def test_save_member_writes_the_file_whole_via_a_temporary_name(tmp_path):
    data = bytes(range(256)) * 300
    dest = tmp_path / "saved"
    assert save_member(stream(tar_bytes([file("blob", data)])), dest) == len(data)
    assert dest.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]


def test_save_member_of_a_directory_is_refused_and_leaves_nothing(tmp_path):
    with pytest.raises(IsADirectoryError, match="etc is not a regular file"):
        save_member(stream(tar_bytes([directory("etc")])), tmp_path / "saved")
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_download_leaves_nothing(tmp_path):
    whole = tar_bytes([file("blob", b"y" * 20000)])
    with pytest.raises(Exception):  # noqa: B017 (tarfile's own ReadError or EOFError)
        save_member(stream(whole[:9000]), tmp_path / "saved")
    assert list(tmp_path.iterdir()) == []


def test_the_stat_header_and_gos_directory_bit():
    found = {"name": "etc", "size": 4096, "mode": (1 << 31) | 0o755, "linkTarget": ""}
    header = base64.b64encode(json.dumps(found).encode()).decode()
    assert decode_stat(header) == found and stat_is_dir(found)
    assert ArchiveStream(io.BytesIO(), {"X-Docker-Container-Path-Stat": header}, print).stat
    assert not stat_is_dir({"mode": 0o644})


def test_the_path_bar_names_an_absolute_path():
    from vmctl_gui.files_tab import normal_path

    assert normal_path(" /data/ ") == normal_path("data") == normal_path("//data/x/..") == "/data"
    assert normal_path("") == normal_path("/..") == "/"
