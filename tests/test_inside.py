"""runtime/inside.py's pure reading, where this host cannot show it for real: a cgroup v2 tree
(the VM's) as a fake directory, and layer stacks with whiteouts and opaque directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from vmctl_agent.runtime import inside
from vmctl_agent.runtime.cgroups import CgroupsV2

MiB = 1 << 20


def test_v2_limits_are_the_files_values_and_set_where_they_limit(tmp_path: Path):
    (tmp_path / "cgroup.controllers").write_text("cpu io memory pids\n")
    leaf = tmp_path / "vmctl" / "c1"
    leaf.mkdir(parents=True)
    files = {"memory.max": "67108864", "memory.high": "max", "cpu.max": "50000 100000",
             "cpu.weight": "100", "pids.max": "max", "memory.current": str(3 * MiB),
             "memory.stat": "inactive_file 0\n", "cpu.stat": "usage_usec 2500\n",
             "pids.current": "2"}  # fmt: skip
    for name, text in files.items():
        (leaf / name).write_text(text + "\n")
    got = inside.cgroup(CgroupsV2(tmp_path), "c1")
    assert got["Version"] == 2 and got["Paths"] == [str(leaf)]
    assert got["Limits"] == [  # memory.swap.max is absent: no swap accounting, not listed
        {"File": "memory.max", "Value": "67108864", "Set": True},
        {"File": "memory.high", "Value": "max", "Set": False},
        {"File": "cpu.max", "Value": "50000 100000", "Set": True},
        {"File": "cpu.weight", "Value": "100", "Set": False},
        {"File": "pids.max", "Value": "max", "Set": False},
    ]
    assert got["Usage"] == {
        "Memory": {"Current": 3 * MiB, "Limit": 64 * MiB},
        "Cpu": {"UsageNanos": 2_500_000},
        "Pids": {"Current": 2, "Limit": 0},
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts are device nodes: root makes them")
def test_changes_read_whiteouts_and_opaque_directories_in_the_layers(tmp_path: Path):
    base, top, upper = (tmp_path / n for n in ("base", "top", "upper"))
    for d in (base / "etc" / "conf.d", base / "srv", top / "etc" / "conf.d", upper / "etc"):
        d.mkdir(parents=True)
    (base / "etc" / "conf.d" / "old").write_text("")
    (base / "srv" / "gone").write_text("")
    os.mknod(top / "srv", 0o020000, os.makedev(0, 0))  # the top layer deleted /srv
    os.setxattr(top / "etc" / "conf.d", "trusted.overlay.opaque", b"y")  # and emptied conf.d
    (upper / "etc" / "conf.d").mkdir()
    (upper / "etc" / "conf.d" / "old").write_text("back")  # hidden below: added again
    (upper / "srv").mkdir()  # deleted below: added again
    os.mknod(upper / "etc" / "hostname", 0o020000, os.makedev(0, 0))  # never there: deleted
    lower = (str(top), str(base))
    assert inside.changes(upper, lower) == [
        {"Path": "/etc", "Kind": inside.MODIFIED},
        {"Path": "/etc/conf.d", "Kind": inside.MODIFIED},
        {"Path": "/etc/conf.d/old", "Kind": inside.ADDED},
        {"Path": "/etc/hostname", "Kind": inside.DELETED},
        {"Path": "/srv", "Kind": inside.ADDED},
    ]
