"""packaging/vmctl.spec builds, once, on Linux (macOS and Windows use the same spec): both
programs start from the bundle, the desktop app draws its window, and the agent it carries is
the one the sources build, byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vmctl import agentapp

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("pyinstaller")
    pyinstaller = Path(sys.executable).with_name("pyinstaller")
    build = subprocess.run(
        [str(pyinstaller), str(ROOT / "packaging" / "vmctl.spec"), "--noconfirm",
         "--distpath", str(work / "dist"), "--workpath", str(work / "build")],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    return work / "dist" / "vmctl"


def run(program: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VMCTL_HOME": str(home), "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([str(program), *args], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip


def test_the_cli_runs_from_the_bundle(bundle, tmp_path):
    status = run(bundle / "vmctl", "status", "--name", "pkg", home=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "not created" in status.stdout
    bad = run(bundle / "vmctl", "start", "--name", "Bad Name", home=tmp_path)
    assert bad.returncode != 0 and "invalid VM name 'Bad Name'" in bad.stderr


def test_the_desktop_app_draws_its_window_from_the_bundle(bundle, tmp_path):
    result = run(bundle / "vmctl-desktop", "--self-test", "--name", "pkg", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "vmctl desktop self-test: window" in result.stdout
    assert "VM not created" in result.stdout


def test_the_bundle_carries_the_agent_the_sources_build(bundle, tmp_path):
    carried = bundle / "_internal" / agentapp.BUNDLED_NAME
    built = agentapp.build(tmp_path / "agent.pyz")
    assert agentapp.digest(carried) == agentapp.digest(built)
    assert (bundle / "_internal" / "icons" / "vmctl.png").is_file()
