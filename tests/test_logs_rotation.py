"""The json-file log's readers against a writer rotating it as fast as it can: a follower
(`docker run`'s attach, `docker logs -f`) and a reader by path see every line once, in
order, whatever rename of the rotation they happen to look in the middle of. (CI once saw
an attach skip a hundred lines: it looked while path.1 was briefly missing.)"""

from __future__ import annotations

import os
import threading

import pytest
from vmctl_agent.runtime import logconfig, logs

LINES = 3000


def write_rotating(path: str, done: threading.Event, max_files: int = 500) -> None:
    writer = logs.LogWriter(path, logconfig.Rotation(max_size=2000, max_files=max_files))
    try:
        for n in range(LINES):
            writer.write("stdout", f"line {n}\n".encode())
    finally:
        writer.close()
        done.set()


def numbers(entries) -> list[int]:
    return [int(e.data.split()[1]) for e in entries]


@pytest.mark.parametrize("attempt", range(5))
def test_a_follower_from_the_first_file_sees_every_line_across_rotations(tmp_path, attempt):
    path = str(tmp_path / "container-json.log")
    open(path, "wb").close()
    first = open(path, "rb")  # noqa: SIM115 (read closes it) as the attach opens it before start
    done = threading.Event()
    writer = threading.Thread(target=write_rotating, args=(path, done))
    writer.start()
    seen = numbers(logs.read(first, follow=True, running=lambda: not done.is_set(), path=path))
    writer.join()
    assert seen == list(range(LINES))


@pytest.mark.parametrize("attempt", range(5))
def test_a_follower_by_path_started_mid_rotation_sees_the_rest_in_order(tmp_path, attempt):
    path = str(tmp_path / "container-json.log")
    done = threading.Event()
    writer = threading.Thread(target=write_rotating, args=(path, done))
    writer.start()
    while not os.path.exists(f"{path}.10"):  # the writer well into its rotations
        pass
    seen = numbers(logs.read(path, follow=True, running=lambda: not done.is_set()))
    writer.join()
    assert seen == list(range(seen[0], LINES))
    assert seen[0] == 0  # max_files is large: nothing was rotated out


def test_a_follower_overtaken_by_max_file_goes_on_from_the_oldest_file_left(tmp_path):
    path = str(tmp_path / "container-json.log")
    open(path, "wb").close()
    first = open(path, "rb")  # noqa: SIM115 (read closes it)
    done = threading.Event()
    write_rotating(path, done, max_files=3)  # all written before the follower reads a line
    seen = numbers(logs.read(first, follow=True, running=lambda: False, path=path))
    assert seen[0] == 0  # what it held open was still readable
    assert seen[-1] == LINES - 1 and seen == sorted(seen)
