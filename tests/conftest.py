"""Shared fixtures: real registries on loopback and a busybox rootfs layer.

Nothing here imports `vmctl_agent`: the kit must stay usable while the agent is half-written.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import dockerpy_suite
import pytest
import uservm
from imagekit import busybox_layer
from registry import Registry

# Tests run console scripts (`vmctl-agent`) from the environment pytest runs in, e.g. .venv/bin.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
# The desktop app's tests draw offscreen: no display is needed, here or in CI.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config):
    """docker-py's suite's count and each of its failures with its reason, when it ran."""
    lines = config.stash.get(dockerpy_suite.SUMMARY, None)
    if lines:
        terminalreporter.section("docker-py's integration suite")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """One anonymous registry for the whole session; use unique repo names per test."""
    with Registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture
def make_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Registry]]:
    """Factory for fresh registries (e.g. `make_registry(auth="token")`), stopped at teardown."""
    started: list[Registry] = []

    def make(auth: str | None = None, **kw: str) -> Registry:
        reg = Registry(tmp_path_factory.mktemp("registry"), auth=auth, **kw)
        started.append(reg)
        return reg

    yield make
    for reg in started:
        reg.stop()


@pytest.fixture(scope="session")
def busybox_tar() -> bytes:
    """An uncompressed busybox rootfs layer (fails clearly if busybox-static is missing)."""
    return busybox_layer()


@pytest.fixture
def vm_tmp_path(request, tmp_path_factory) -> Path:
    """A fresh folder that the shared `user_vm`s have at the same path (tmp_path is not in
    them): for bind mounts of the user's files."""
    root = uservm.shared_root(tmp_path_factory.getbasetemp())
    root.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{request.node.name[:30]}-", dir=root))


@pytest.fixture(scope="session", params=uservm.DRIVERS)
def user_vm(request, registry, tmp_path_factory) -> Iterator[uservm.UserVM]:
    """One VM per driver, started through the CLI, shared by every slow test that only uses it.
    Tests must leave it as they found it: remove their containers, networks and volumes."""
    import vmkit

    driver = request.param
    home = tmp_path_factory.mktemp(f"user-vm-{driver}")
    disk = vmkit.built_image().disk
    # vm_tmp_path's folders are in the VM at the same path (as Docker Desktop shares /tmp on a
    # Mac), and one folder read-only (test_vmctl_shares_vm.py).
    shares = uservm.shared_folders(tmp_path_factory.getbasetemp())
    name = f"shared-{driver}-{os.getpid()}"
    with uservm.started(home, name, driver, disk, registry, *shares) as vm:
        yield vm
