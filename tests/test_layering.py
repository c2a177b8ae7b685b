"""The rooms of ARCHITECTURE.md, held by import-linter's contracts in pyproject.toml.

The contracts must pass on the tree as it is, and must fail when a room reaches upwards:
a contract that cannot fail holds nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def lint(pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:  # a copy of the engine, found before the installed one
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_every_contract():
    run = lint()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


@pytest.mark.parametrize(
    ("module", "line", "words"),
    [
        (
            "store/content.py",
            "from vmctl_agent.runtime import pids",
            "vmctl_agent.store is not allowed to import vmctl_agent.runtime",
        ),
        (
            "runtime/pids.py",
            "from vmctl_agent.api import http",
            "vmctl_agent.runtime is not allowed to import vmctl_agent.api",
        ),
        (
            "atomic.py",
            "from vmctl_agent import config",
            "is not allowed to import vmctl_agent.config",
        ),
        (
            "store/images.py",
            "import requests",
            "vmctl_agent is not allowed to import requests",
        ),
    ],
)
def test_a_room_reaching_upwards_breaks_a_contract(tmp_path, module, line, words):
    shutil.copytree(
        ROOT / "guest-agent" / "vmctl_agent",
        tmp_path / "vmctl_agent",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    with open(tmp_path / "vmctl_agent" / module, "a") as source:
        source.write(f"\n{line}  # noqa\n")
    run = lint(tmp_path)
    assert run.returncode != 0
    assert words in run.stdout, run.stdout
