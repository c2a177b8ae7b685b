"""Volume records through crashes: a create killed at any point leaves a whole volume or
none, and the next agent sweeps what the dead one left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from vmctl_agent.errors import InvalidMount, VolumeNotFound
from vmctl_agent.volumes.store import VolumeStore

_DIE_AFTER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from vmctl_agent import atomic
    from vmctl_agent.volumes.store import VolumeStore

    store = VolumeStore(Path(sys.argv[1]))
    step = getattr(atomic, sys.argv[2])

    def dying(*args, **kwargs):
        step(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(atomic, sys.argv[2], dying)
    with store.locked():
        store.create("half", labels={"a": "b"})
    """
)


def create_and_die_after(root, step: str) -> None:
    """A process creating volume `half` that is SIGKILLed right after `atomic.<step>`."""
    child = subprocess.run([sys.executable, "-c", _DIE_AFTER, str(root), step])
    assert child.returncode == -signal.SIGKILL


def test_killed_before_the_rename_no_volume_and_nothing_left(tmp_path):
    create_and_die_after(tmp_path, "write_new_json")
    assert any(p.name.startswith(".new-half") for p in tmp_path.iterdir())  # as the crash left
    store = VolumeStore(tmp_path)  # the next agent
    with pytest.raises(VolumeNotFound, match="get half: no such volume"):
        store.get("half")
    assert store.list() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]


def test_killed_after_the_rename_the_volume_is_whole(tmp_path):
    create_and_die_after(tmp_path, "fsync_dir")
    volume = VolumeStore(tmp_path).get("half")
    assert volume.labels == {"a": "b"} and os.path.isdir(volume.mountpoint)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "half"]


def test_a_bad_name_writes_nothing(tmp_path):
    store = VolumeStore(tmp_path)
    with store.locked(), pytest.raises(InvalidMount, match="includes invalid characters"):
        store.create("../escape")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]
    assert not (tmp_path.parent / "escape").exists()
