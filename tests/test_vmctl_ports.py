"""Published ports on the user's machine: the host agent in front of a real engine (in a
network namespace of the test's own) through a real sshd, driven by the docker CLI: the
port is there when `docker run -d` returns, gone when `docker stop` does, TCP and UDP, and a
host port that is taken fails the start in Docker's words."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time

import docker as dockerpy
import pytest
from agentserver import docker_cli
from netkit import http_get, in_netns, netns_agent, ok, port_bound
from sshkit import Sshd, free_port, mux_master

from vmctl import config as vmconfig
from vmctl import errors as vmerrors
from vmctl import paths as vmpaths
from vmctl import portforward, vm

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")
HTTPD = "mkdir -p /www && echo carried > /www/index.html && exec httpd -f -p 80 -h /www"


@pytest.fixture
def rig(tmp_path, monkeypatch, registry):
    monkeypatch.setenv("VMCTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VMCTL_HOSTAGENT_GIVE_UP", "3")
    with netns_agent(tmp_path / "engine", registry) as engine:
        sshd = Sshd(tmp_path / "sshd")
        paths = vmpaths.vm("ports-test")
        paths.root.mkdir(parents=True)
        vmconfig.save(vmconfig.VMConfig(driver="qemu"), paths.config)
        shutil.copy(sshd.endpoint.key, paths.ssh_key)
        paths.host_key_pub.write_text(sshd.endpoint.host_key + "\n")
        runtime = {"ssh_port": sshd.port, "ssh_user": "root", "clock_sync": False,
                   "engine_socket": str(engine.socket)}  # fmt: skip
        paths.runtime.write_text(json.dumps(runtime))
        vm.spawn_hostagent(paths)
        assert vm.ping(vm.docker_host(paths), timeout=10)
        try:
            yield paths, engine
        finally:
            vm.stop_hostagent(paths)
            sshd.stop()


def docker(paths, *args):
    env = {**os.environ, "DOCKER_HOST": f"unix://{paths.docker_sock}"}
    return subprocess.run([docker_cli(), *args], capture_output=True, text=True, env=env,
                          timeout=60)  # fmt: skip


def test_a_published_port_is_on_the_host_when_run_returns(rig):
    paths, engine = rig
    port = free_port()
    ok(docker(paths, "run", "-d", "--name", "site", "-p", f"{port}:80", "busybox", "sh", "-c",
              HTTPD))  # fmt: skip
    assert port_bound(port)  # bound before `docker run -d` returned
    while not (page := http_get(port)):
        time.sleep(0.05)  # until httpd listens in the container
    assert page.endswith(b"carried\n")
    short = ok(docker(paths, "inspect", "-f", "{{.Id}}", "site"))[:12]
    assert vm.published_ports("ports-test") == [f"127.0.0.1:{port}->80/tcp ({short})"]
    address = ok(docker(paths, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", "site"))
    client = dockerpy.APIClient(base_url=engine.url, version="auto")
    rows = client._result(client._get(client._url("/vmctl/ports")), json=True)
    assert [(r["HostPort"], r["Address"], r["PrivatePort"]) for r in rows] == [
        (port, address.strip(), 80)  # where the host agent connects, through the VM's sshd
    ]
    ok(docker(paths, "stop", "-t", "0", "site"))
    assert not port_bound(port)  # released when `docker stop` returned
    ok(docker(paths, "start", "site"))
    assert port_bound(port)
    ok(docker(paths, "rm", "-f", "site"))
    assert not port_bound(port)


def test_a_taken_host_port_fails_the_start(rig):
    paths, _engine = rig
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = docker(paths, "run", "-d", "--name", "late", "-p", f"{port}:80", "busybox",
                     "sleep", "60")  # fmt: skip
        assert run.returncode != 0
        assert f"Bind for 127.0.0.1:{port} failed: port is already allocated" in run.stderr
    assert ok(docker(paths, "inspect", "-f", "{{.State.Running}}", "late")).strip() == "false"
    ok(docker(paths, "rm", "-f", "late"))


def test_udp_is_carried_both_ways(rig):
    paths, _engine = rig
    port = free_port()
    ok(docker(paths, "run", "-d", "--name", "echo", "-p", f"{port}:53/udp", "busybox", "sleep",
              "60"))  # fmt: skip
    pid = int(ok(docker(paths, "inspect", "-f", "{{.State.Pid}}", "echo")))
    server = in_netns(pid, _udp_socket)  # busybox has no UDP server: ours, in the container
    threading.Thread(target=_echo_once, args=(server,), daemon=True).start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(30)
        s.sendto(b"ping\n", ("127.0.0.1", port))
        assert s.recv(100) == b"ping\n"
    ok(docker(paths, "rm", "-f", "echo"))


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 53))
    return sock


def _echo_once(sock: socket.socket) -> None:
    with sock:
        data, peer = sock.recvfrom(100)
        sock.sendto(data, peer)


def test_connections_go_to_the_containers_address_and_through_the_engine_if_refused():
    """The host agent connects through the guest's sshd to the container's address, as `ssh
    -L` does (no Python in the guest on the way); refused there (the container restarted
    elsewhere since the last sync), through the engine's own listener for the port."""
    port = free_port()
    rows = [{"Id": "abc", "Proto": "tcp", "HostIp": "", "HostPort": port, "PrivatePort": 80,
             "Address": "10.9.9.9"}]  # fmt: skip
    direct: list[tuple[str, int]] = []
    refuse = threading.Event()

    def open_tcp(address: str, private_port: int):
        direct.append((address, private_port))
        if refuse.is_set():
            raise vmerrors.VmctlError("the VM refused a connection to 10.9.9.9:80: refused")
        return _served(lambda far: far.sendall(b"straight\n"))

    logged: list[str] = []
    fwd = portforward.PortForwarder(lambda: _engine(rows), "127.0.0.1", logged.append, open_tcp)
    try:
        assert fwd.sync() == {}
        assert _fetch(port) == b"straight\n" and direct == [("10.9.9.9", 80)]
        refuse.set()
        assert _fetch(port) == b"through the engine\n"
        assert any("10.9.9.9:80 refused a connection for port" in line for line in logged)
    finally:
        fwd.close()


def test_a_published_port_goes_through_openssh_and_through_the_engine_if_refused(tmp_path):
    """With OpenSSH's multiplexing master, the forwarder hands it the client (paramiko's
    open_tcp is never asked); an address refused there goes through the engine's own
    listener, not to paramiko again."""
    with contextlib.ExitStack() as stack:
        sshd = Sshd(tmp_path / "sshd")
        stack.callback(sshd.stop)
        master = stack.enter_context(mux_master(sshd, tmp_path))
        with socket.create_server(("127.0.0.1", 0)) as listener:  # serves one client, goes
            served = listener.getsockname()[1]
            threading.Thread(target=_answer_once, args=(listener,), daemon=True).start()
            port = free_port()
            rows = [{"Id": "abc", "Proto": "tcp", "HostIp": "", "HostPort": port,
                     "PrivatePort": served, "Address": "127.0.0.1"}]  # fmt: skip
            asked: list[tuple[str, int]] = []

            def open_tcp(address: str, private_port: int):
                asked.append((address, private_port))
                raise vmerrors.VmctlError("paramiko was asked")

            logged: list[str] = []
            fwd = portforward.PortForwarder(
                lambda: _engine(rows), "127.0.0.1", logged.append, open_tcp, mux=master
            )
            stack.callback(fwd.close)
            assert fwd.sync() == {}
            assert _fetch(port) == b"through OpenSSH\n"
        assert _fetch(port) == b"through the engine\n"
        assert asked == []
        assert any(f"127.0.0.1:{served} refused a connection for port" in x for x in logged)


def _answer_once(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    with conn:
        conn.sendall(b"through OpenSSH\n")


def test_a_client_of_a_published_port_has_nagle_off_as_ssh_l_gives_it():
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.create_connection(listener.getsockname(), timeout=30),
        portforward.accept(listener) as client,
    ):
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def _fetch(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: s.recv(100), b""))


class _Channel:
    """One end of a socket pair, with the calls of an SSH channel the forwarder makes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.recv, self.sendall, self.close = sock.recv, sock.sendall, sock.close

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()


def _served(serve) -> _Channel:
    near, far = socket.socketpair()

    def run() -> None:
        with far:
            serve(far)

    threading.Thread(target=run, daemon=True).start()
    return _Channel(near)


def _engine(rows: list[dict]) -> _Channel:
    """The engine's socket: its published ports, and a connect to one of them."""

    def answer(far: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += far.recv(4096)
        if head.startswith(b"GET /vmctl/ports "):
            body = json.dumps(rows).encode()
            far.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        elif head.startswith(b"POST /vmctl/ports/tcp/"):
            far.sendall(b"HTTP/1.1 101 UPGRADED\r\n\r\nthrough the engine\n")

    return _served(answer)


class _Forwarder:
    """Stands in for the engine side of a PortForwarder: what sync() reports."""

    def __init__(self, failed: dict[str, str]) -> None:
        self.failed, self.syncs, self.logged = failed, 0, []
        self.open_channel = None

    def sync(self) -> dict[str, str]:
        self.syncs += 1
        return self.failed

    def log(self, message: str) -> None:
        self.logged.append(message)


def test_the_start_watch_follows_only_container_changes():
    fwd = _Forwarder({})
    watch = portforward.StartWatch(fwd)
    for request in (b"GET /v1.50/containers/json HTTP/1.1\r\n", b"POST /v1.50/images/x/tag HTTP"):
        watch.request(request)
        assert watch.reply(b"HTTP/1.1 200 OK\r\n\r\n") == b"HTTP/1.1 200 OK\r\n\r\n"
    assert fwd.syncs == 0
    for request in (b"POST /v1.50/containers/abc/start HTTP/1.1\r\n",
                    b"POST /containers/abc/stop?t=0 HTTP/1.1\r\n",
                    b"DELETE /v1.50/containers/abc?force=1 HTTP/1.1\r\n"):  # fmt: skip
        watch.request(request)
        watch.reply(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert fwd.syncs == 3


def test_asking_what_is_published_brings_the_listeners_in_step_first():
    fwd = _Forwarder({"abc": "Bind for 127.0.0.1:80 failed: port is already allocated"})
    watch = portforward.StartWatch(fwd)
    for request in (b"GET /vmctl/ports HTTP/1.1\r\n", b"GET /v1.50/vmctl/ports?x=1 HTTP/1.1\r\n"):
        watch.request(request)
        assert watch.reply(b"HTTP/1.1 200 OK\r\n\r\n[]") == b"HTTP/1.1 200 OK\r\n\r\n[]"
    assert fwd.syncs == 2
    watch.request(b"GET /vmctl/portsx HTTP/1.1\r\n")
    watch.reply(b"HTTP/1.1 200 OK\r\n\r\n")
    assert fwd.syncs == 2


def test_a_new_host_agent_listens_for_running_containers_when_asked(rig):
    """What `vmctl start` does after restarting a killed host agent: it asks what is
    published, and hears it once this machine listens there."""
    paths, engine = rig
    port = free_port()
    vm.stop_hostagent(paths)
    ok(engine.docker("run", "-d", "--name", "before", "-p", f"{port}:80", "busybox", "sleep",
                     "60"))  # fmt: skip
    assert not port_bound(port)
    vm.spawn_hostagent(paths)
    assert vm.published_ports("ports-test", timeout=60)[0].startswith(f"127.0.0.1:{port}->80/tcp")
    assert port_bound(port)
    ok(engine.docker("rm", "-f", "before"))


def test_a_failed_publish_turns_the_start_into_dockers_error():
    fwd = _Forwarder({"abc": "Bind for 127.0.0.1:80 failed: port is already allocated"})
    watch = portforward.StartWatch(fwd)
    watch._full_id = lambda ref: "abc"  # the engine's answer to GET /containers/abc/json
    watch.request(b"POST /v1.50/containers/abc/start HTTP/1.1\r\n")
    reply = watch.reply(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"Bind for 127.0.0.1:80 failed: port is already allocated" in reply


def test_an_explicit_host_address_is_honoured(rig):
    paths, _engine = rig
    port = free_port()
    ok(docker(paths, "run", "-d", "--name", "pinned", "-p", f"127.0.0.2:{port}:80", "busybox",
              "sleep", "60"))  # fmt: skip
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError):
            s.bind(("127.0.0.2", port))  # the host agent listens there
    assert not port_bound(port)  # and not on the default address
    ok(docker(paths, "rm", "-f", "pinned"))


def _until(condition, patience: float = 60) -> bool:
    """Waits for the host agent to act on an engine event (bounded only against a hang)."""
    deadline = time.monotonic() + patience
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_starts_the_host_agent_did_not_carry_are_followed_by_events(rig):
    _paths, engine = rig
    port = free_port()
    # straight to the engine's socket, as a restart policy or a client in the VM would
    ok(engine.docker("run", "-d", "--name", "direct", "-p", f"{port}:80", "busybox", "sleep",
                     "60"))  # fmt: skip
    assert _until(lambda: port_bound(port))
    ok(engine.docker("stop", "-t", "0", "direct"))
    assert _until(lambda: not port_bound(port))
    ok(engine.docker("rm", "direct"))
