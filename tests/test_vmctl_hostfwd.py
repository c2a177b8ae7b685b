"""Published ports as QEMU's own forwards, over a real QEMU's monitor (QMP, the qemu driver's;
paused before its first instruction: the forwards live in QEMU's user network, no guest is
needed to make, list and remove them). The way through the guest is tested in a real VM
(test_vm_network.py); the engine's DNAT in test_network_ports.py."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from netkit import port_bound
from sshkit import free_port

from vmctl import paths as vmpaths
from vmctl import portforward
from vmctl.drivers.qemu import NETDEV, QemuDriver
from vmctl.errors import VmctlError
from vmctl.hostfwd import ForwardError, HostForwards

PATIENCE = 60.0  # bounds a wait for QEMU's QMP socket


@pytest.fixture
def qemu(monkeypatch):
    """A QEMU with a user network (its SSH forward, as a VM's) and QMP, through the qemu
    driver; its home is short, for the unix socket's path."""
    home = Path(tempfile.mkdtemp(prefix="hostfwd-"))
    monkeypatch.setenv("VMCTL_HOME", str(home))
    paths = vmpaths.vm("fwd")
    paths.root.mkdir(parents=True)
    ssh = free_port()
    qemu = subprocess.Popen([
        "qemu-system-x86_64", "-S", "-nodefaults", "-display", "none", "-machine", "q35",
        "-accel", "tcg", "-netdev", f"user,id={NETDEV},hostfwd=tcp:127.0.0.1:{ssh}-:22",
        "-device", f"virtio-net-pci,netdev={NETDEV}",
        "-qmp", f"unix:{paths.qmp_socket},server=on,wait=off",
    ])  # fmt: skip
    try:
        deadline = time.monotonic() + PATIENCE
        while not paths.qmp_socket.exists():
            assert qemu.poll() is None and time.monotonic() < deadline, "QEMU did not start"
            time.sleep(0.02)
        driver = QemuDriver(paths)
        yield driver, HostForwards(driver.monitor, driver.netdev, keep={("tcp", ssh, "127.0.0.1")})
    finally:
        qemu.kill()
        qemu.wait()
        shutil.rmtree(home)


def _engine_rows(rows: list[dict]):
    """The engine's socket, as far as sync() asks it: its published ports."""

    def open_channel():
        near, far = socket.socketpair()

        def answer() -> None:
            with far:
                while b"\r\n\r\n" not in far.recv(4096):
                    pass
                body = json.dumps(rows).encode()
                far.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

        threading.Thread(target=answer, daemon=True).start()
        return near

    return open_channel


def _row(port: int, proto: str = "tcp", vm_port: int | None = None, owner: str = "abc") -> dict:
    row = {"Id": owner, "Proto": proto, "HostIp": "", "HostPort": port, "PrivatePort": 80,
           "Address": "172.17.0.2"}  # fmt: skip
    if vm_port is not None:
        row["VmPort"] = vm_port
    return row


def test_qemu_listens_for_published_ports_and_lets_them_go_when_they_end(qemu):
    driver, forwards = qemu
    tcp, udp = free_port(), free_port()
    rows = [_row(tcp, vm_port=tcp), _row(udp, "udp", vm_port=udp)]
    logged: list[str] = []
    fwd = portforward.PortForwarder(_engine_rows(rows), "127.0.0.1", logged.append,
                                    forwards=forwards)  # fmt: skip
    assert fwd.sync() == {}
    assert forwards.listed() == {("tcp", tcp, "127.0.0.1"): tcp, ("udp", udp, "127.0.0.1"): udp}
    assert port_bound(tcp)  # QEMU listens there, not this process
    assert fwd.published() == sorted(forwards.listed()) and not fwd._listeners
    rows.clear()
    assert fwd.sync() == {}
    assert forwards.listed() == {} and not port_bound(tcp) and fwd.published() == []
    assert "TCP[HOST_FORWARD]" in driver.monitor("info usernet")  # the SSH port's, kept


def test_a_taken_host_port_is_dockers_error(qemu):
    _, forwards = qemu
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        fwd = portforward.PortForwarder(_engine_rows([_row(port, vm_port=port)]), "127.0.0.1",
                                        lambda _: None, forwards=forwards)  # fmt: skip
        assert fwd.sync() == {"abc": f"Bind for 127.0.0.1:{port} failed: port is already allocated"}
        assert forwards.listed() == {} and fwd.published() == []
    with pytest.raises(ForwardError, match="Could not set up host forwarding rule"):
        forwards.add(("tcp", port, "10.255.255.1"), port)  # not an address of this machine
    rows = _engine_rows([_row(port, vm_port=port)])
    elsewhere = portforward.PortForwarder(rows, "10.255.255.1", print, forwards=forwards)
    assert elsewhere.sync() == {
        "abc": f"Error starting userland proxy: listen tcp4 10.255.255.1:{port}: bind: "
        "cannot assign requested address"
    }


def test_a_restarted_host_agent_takes_up_what_qemu_forwards(qemu):
    """The forwards outlive the host agent (the ports keep working meanwhile); the next one
    neither fails on them nor leaves one whose container has gone."""
    _, forwards = qemu
    kept, gone = free_port(), free_port()
    rows = [_row(kept, vm_port=kept), _row(gone, vm_port=gone, owner="def")]
    first = portforward.PortForwarder(_engine_rows(rows), "127.0.0.1", lambda _: None,
                                      forwards=forwards)  # fmt: skip
    assert first.sync() == {}
    first.close()
    assert port_bound(kept) and port_bound(gone)
    del rows[1]
    second = portforward.PortForwarder(_engine_rows(rows), "127.0.0.1", lambda _: None,
                                       forwards=forwards)  # fmt: skip
    assert second.sync() == {}
    assert forwards.listed() == {("tcp", kept, "127.0.0.1"): kept}
    assert second.published() == [("tcp", kept, "127.0.0.1")] and not port_bound(gone)


def test_every_address_is_listed_as_asked(qemu):
    _, forwards = qemu
    port = free_port()
    forwards.add(("tcp", port, "0.0.0.0"), 8080)  # QEMU says `*`
    assert forwards.listed() == {("tcp", port, "0.0.0.0"): 8080}
    forwards.remove(("tcp", port, "0.0.0.0"))
    forwards.remove(("tcp", port, "0.0.0.0"))  # already gone: fine
    assert forwards.listed() == {}


def test_without_a_monitor_or_a_dnat_this_process_listens():
    """A monitor that fails (libvirtd restarting), or an engine without the DNAT (no
    VmPort): the host agent listens and carries, as before QEMU's forwards."""

    def no_monitor(command: str) -> str:
        raise VmctlError("libvirt could not ask the monitor of vmctl-x: connection lost")

    dead = HostForwards(no_monitor, NETDEV, keep=set())
    with_dnat, without = free_port(), free_port()
    rows = [_row(with_dnat, vm_port=with_dnat), _row(without, owner="old")]
    logged: list[str] = []
    fwd = portforward.PortForwarder(_engine_rows(rows), "127.0.0.1", logged.append,
                                    forwards=dead)  # fmt: skip
    try:
        assert fwd.sync() == {}
        assert set(fwd._listeners) == {
            ("tcp", with_dnat, "127.0.0.1"),
            ("tcp", without, "127.0.0.1"),
        }
        assert sum("QEMU's monitor does not answer" in line for line in logged) == 1
    finally:
        fwd.close()
    assert not port_bound(with_dnat)  # released by close()
