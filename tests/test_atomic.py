"""The agent's small-file writes: whole files under their final name, never half of one."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from vmctl_agent import atomic


def test_write_bytes_replaces_with_the_mode_asked_and_leaves_no_temp_file(tmp_path: Path):
    target = tmp_path / "state.json"
    target.write_text("old")
    old_umask = os.umask(0o077)
    try:
        atomic.write_bytes(target, b"new", mode=0o644, durable=False)
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o644, "exact, whatever the umask"
    assert os.listdir(tmp_path) == ["state.json"]


def test_a_temp_file_a_crash_left_behind_is_reused(tmp_path: Path):
    target = tmp_path / "exit.json"
    leftover = tmp_path / f".exit.json.{os.getpid()}-{threading.get_ident()}"
    leftover.write_text("a longer torn write from a killed writer")
    atomic.write_json(target, {"exit_code": 3})
    assert atomic.read_json(target) == {"exit_code": 3}
    assert os.listdir(tmp_path) == ["exit.json"]


def test_concurrent_writers_never_show_half_a_file(tmp_path: Path):
    target = tmp_path / "state.json"
    payloads = [bytes([65 + i]) * 50_000 for i in range(4)]
    seen: list[bytes] = []

    def write(data: bytes) -> None:
        for _ in range(20):
            atomic.write_bytes(target, data, durable=False)

    def read() -> None:
        for _ in range(200):
            if target.exists():
                seen.append(target.read_bytes())

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    threads.append(threading.Thread(target=read))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen and all(s in payloads for s in seen)
    assert os.listdir(tmp_path) == ["state.json"]
