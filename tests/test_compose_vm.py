"""docker compose v2 in a real VM, as a Docker Desktop user runs it: composekit's four-service
project built by compose itself (the classic builder, `FROM busybox` pulled through the VM's
mirror), `up -d --wait` on healthchecks, service DNS in the VM, the web's port published on
this machine's 127.0.0.1 by the host agent, named volumes across `down`, and `down -v`
leaving nothing. On conftest's shared `user_vm`, left as it was found."""

from __future__ import annotations

import pytest
from composekit import Shop, http_get, walk_through
from netkit import install_compose
from sshkit import free_port
from uservm import ok

pytestmark = pytest.mark.slow


@pytest.fixture
def user(user_vm, tmp_path, monkeypatch):
    """The user's docker CLI with the compose plugin, building with the classic builder."""
    config = tmp_path / "docker-config"
    install_compose(config)
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.setenv("DOCKER_BUILDKIT", "0")
    had_busybox = bool(ok(user_vm.docker("images", "-q", "busybox")).strip())
    yield user_vm
    if not had_busybox:
        user_vm.docker("rmi", "busybox")


def test_a_four_service_project_in_the_vm_through_a_users_session(user, vm_tmp_path):
    def docker(*args: str):  # a step under emulation, on a loaded machine, takes its time
        return user.docker(*args, timeout=1800)

    shop = Shop(docker, vm_tmp_path / "shop", "shop", free_port(), http_get)
    try:
        walk_through(shop)
    finally:
        user.docker(*shop.project(), "down", "-v", "-t", "0")
        shop.remove_images()
    assert ok(user.docker("images", "-q", "--filter", "reference=shop-*")) == ""
    assert ok(user.docker("ps", "-aq")) == ""
