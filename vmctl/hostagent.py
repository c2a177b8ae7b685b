"""The host agent: one background process per running VM.

It holds the SSH connection to the guest (reconnecting after a VM restart or a host sleep),
serves `$VMCTL_HOME/<name>/docker.sock` (0600) by forwarding each connection to the engine's
unix socket in the guest over its own SSH channel, puts the guest's clock right after the host
resumes (a suspended VM's clock stops; the top complaint after "stuck starting"), and logs what
it does. It exits when the VM's hypervisor is gone, removing the socket, so a stale docker.sock
never outlives the VM.

Liveness is the pid file's flock: held while this process lives, released by the kernel when
it dies however it dies, so `vmctl status` never trusts a stale pid.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paramiko

from vmctl import atomic, edits, locks, sftpshare, sshmux
from vmctl import config as vmconfig
from vmctl import paths as vmpaths
from vmctl.errors import VmctlError
from vmctl.portforward import PortForwarder, StartWatch
from vmctl.ssh import Endpoint, Guest, openssh_options, pinned_known_hosts

CLOCK_CHECK = 5.0  # s between looks for a host suspend
CLOCK_JUMP = 2.0  # a wall-clock jump against the monotonic clock bigger than this is a sleep
EDITS_DONE = 120.0  # s the guest may take over one batch of edits before its channel is renewed
RETRY = 3.0  # s between SSH tries: each one forks and re-execs sshd in a booting guest
# s without SSH while the hypervisor is gone: the VM is stopped, exit
GIVE_UP = float(os.environ.get("VMCTL_HOSTAGENT_GIVE_UP", "15"))


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}", file=sys.stderr, flush=True)


class Connection:
    """The one SSH connection, made again whenever it drops."""

    def __init__(self, endpoint: Endpoint, on_connect: Callable[[Guest], None]) -> None:
        self.endpoint = endpoint
        self.on_connect = on_connect
        self.guest: Guest | None = None
        self.lock = threading.Lock()
        self.down_since: float | None = None

    def get(self, wait: float = 30) -> Guest:
        deadline = time.monotonic() + wait
        while True:
            with self.lock:
                if self.guest is not None and self.guest.alive:
                    return self.guest
                if self.guest is not None:
                    log("SSH connection lost; reconnecting")
                    self.guest.close()
                    self.guest = None
                try:
                    self.guest = Guest(self.endpoint, timeout=5)
                except VmctlError as e:
                    self.down_since = self.down_since or time.monotonic()
                    if time.monotonic() >= deadline:
                        raise VmctlError(f"the VM does not answer SSH: {e}") from None
                else:
                    self.down_since = None
                    log(
                        f"connected to {self.endpoint.user}@{self.endpoint.host}:"
                        f"{self.endpoint.port}"
                    )
                    with contextlib.suppress(VmctlError, paramiko.SSHException, OSError):
                        self.on_connect(self.guest)
                    return self.guest
            time.sleep(RETRY)


def sync_clock(guest: Guest) -> None:
    """Set the guest's clock to the host's (UTC, to the millisecond)."""
    now = f"@{time.time():.3f}"
    guest.run(["sudo", "-n", "date", "-u", "-s", now], timeout=30)


def pump(source, sink, half_close: Callable[[], None], look=None) -> None:
    """Copy until EOF, then half-close the other side (hijacked docker streams need it).
    `look` sees (and may replace) each chunk on its way."""
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(look(data) if look else data)
    except (OSError, EOFError, paramiko.SSHException):
        pass
    finally:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            half_close()


def forward(
    client: socket.socket, connection: Connection, remote: str, ports: PortForwarder
) -> None:
    """One docker.sock connection carried to the engine; a container start it carries gets
    its published ports bound before the client hears the answer."""
    watch = StartWatch(ports)
    with client:
        try:
            channel = connection.get().open_unix_socket(remote)
        except (VmctlError, paramiko.SSHException, OSError) as e:
            log(f"cannot reach the engine: {e}")
            return
        with channel:
            upstream = threading.Thread(
                target=pump,
                args=(client, channel, channel.shutdown_write, _seen(watch)),
                daemon=True,
            )
            upstream.start()
            pump(channel, client, lambda: client.shutdown(socket.SHUT_WR), watch.reply)
            upstream.join()


def _seen(watch: StartWatch) -> Callable[[bytes], bytes]:
    def look(data: bytes) -> bytes:
        watch.request(data)
        return data

    return look


def listen_tcp() -> socket.socket:
    """Where there are no unix sockets for docker (Windows): a loopback port, never more."""
    server = socket.socket(socket.AF_INET)
    server.bind(("127.0.0.1", 0))
    server.listen(socket.SOMAXCONN)
    return server


def listen(path: Path) -> socket.socket:
    """docker.sock, 0600 from birth (umask), replacing a stale one nobody answers on."""
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
        else:
            raise VmctlError(f"{path} is already served by another process")
        finally:
            probe.close()
    server = socket.socket(socket.AF_UNIX)
    old = os.umask(0o177)
    try:
        server.bind(str(path))
    finally:
        os.umask(old)
    server.listen(socket.SOMAXCONN)
    return server


def on_connect(guest: Guest, clock: bool, shares: sftpshare.Mounts) -> None:
    shares.ensure(guest.client.get_transport())  # the deploy stage waits for these mounts
    if clock:
        sync_clock(guest)


def carry_edits(connection: Connection, folders: list[str], own: edits.OwnWrites) -> None:
    """Host edits in the shared folders, raised again in the guest (edits.py), so that
    watchers in containers wake; a batch at a time, each once the guest has done the last,
    over one exec channel, opened again when it drops. What the VM wrote itself through
    `own`'s share is not an edit of the host's."""
    watcher = edits.watcher(folders)
    heard = edits.Heard()

    def listen() -> None:
        for batch in watcher.batches():
            heard.add([edit for edit in batch if not own.echo(edit)])

    threading.Thread(target=listen, daemon=True).start()
    channel = None
    while True:
        if channel is None or channel.closed:  # ready before the first edit, not after it
            channel = None
            with contextlib.suppress(VmctlError, paramiko.SSHException, OSError):
                channel = _edits_channel(connection)
        carried = edits.coalesced(heard.take(timeout=None if channel else RETRY))
        if not carried:
            continue
        try:
            if channel is None or channel.closed:  # gone while waiting (a VM restart)
                channel = _edits_channel(connection)
            channel.sendall(b"".join(map(edits.to_line, carried)) + b"\n")
            if not channel.recv(1):  # its answer: done
                raise EOFError(f"the guest's script ended: {channel.recv_stderr(4096)!r}")
        except (VmctlError, paramiko.SSHException, OSError, EOFError) as e:
            log(f"{len(carried)} edits ({carried[0].path}...) were not carried to the VM: {e}")
            if channel is not None:
                channel.close()
            channel = None


def _edits_channel(connection: Connection) -> paramiko.Channel:
    """The guest's script, started: sudo and python3 take an emulated guest seconds (3.7 s
    for the first edit after a start, when the channel was opened by it)."""
    channel = connection.get(wait=1).client.get_transport().open_session()
    channel.exec_command(edits.guest_command())
    channel.settimeout(EDITS_DONE)
    return channel


def watch_clock(connection: Connection, stop: threading.Event) -> None:
    """A host sleep shows as the wall clock jumping ahead of the monotonic one (neither macOS'
    nor Linux's monotonic clock counts suspended time)."""
    offset = time.time() - time.monotonic()
    while not stop.wait(CLOCK_CHECK):
        now = time.time() - time.monotonic()
        if abs(now - offset) > CLOCK_JUMP:
            log(f"host clock jumped {now - offset:+.1f} s (resumed from sleep?): syncing the VM")
            try:
                sync_clock(connection.get())
            except (VmctlError, paramiko.SSHException, OSError) as e:
                log(f"clock sync failed: {e}")
        offset = now


def run(name: str, hypervisor_running: Callable[[], bool]) -> int:
    vm = vmpaths.vm(name)
    pidfile = locks.hold(vm.hostagent_pid)  # held for our whole life, released at death
    if pidfile is None:
        log("another host agent already serves this VM")
        return 1

    runtime = json.loads(vm.runtime.read_text())
    endpoint = Endpoint(
        "127.0.0.1",
        runtime["ssh_port"],
        runtime["ssh_user"],
        vm.ssh_key,
        vm.host_key_pub.read_text().strip(),
    )
    clock = runtime.get("clock_sync", True)
    config = vmconfig.load(vm.config)
    # reverse SFTP: the guest's sshfs mounts read this side's folders (sftpshare.py)
    own = edits.OwnWrites()
    shares = sftpshare.Mounts(config.shares() if config.transport() == "sftp" else (), log, own)
    connection = Connection(endpoint, lambda guest: on_connect(guest, clock, shares))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if runtime.get("docker_listen", "unix") == "tcp":
        server = listen_tcp()
        url = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    else:
        server = listen(vm.docker_sock)
        url = f"unix://{vm.docker_sock}"
    atomic.write_text(vm.docker_host, url + "\n")
    log(f"serving {url} -> {runtime['engine_socket']} in the VM")
    engine_socket = runtime["engine_socket"]

    def open_tcp(address: str, port: int):
        return connection.get().open_tcp(address, port)

    # In a VM the guest's sshd shares the engine's network: it reaches the containers.
    direct = runtime.get("sshd_reaches_containers", False)
    mux = None
    if direct and sshmux.possible():  # OpenSSH carries published ports: less CPU than paramiko
        known_hosts = pinned_known_hosts(endpoint, vm.known_hosts, vm.domain)
        mux = sshmux.Master(openssh_options(endpoint, known_hosts, vm.domain), vm.root, log)
    ports = PortForwarder(
        lambda: connection.get().open_unix_socket(engine_socket),
        config.publish_address,
        log,
        open_tcp=open_tcp if direct else None,
        mux=mux,
    )
    threading.Thread(target=ports.follow, args=(stop,), daemon=True).start()

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except OSError:
                return
            threading.Thread(
                target=forward, args=(client, connection, engine_socket, ports), daemon=True
            ).start()

    threading.Thread(target=accept, daemon=True).start()
    if clock:
        threading.Thread(target=watch_clock, args=(connection, stop), daemon=True).start()
    folders = [share.host for share in config.shares() if not share.read_only]
    if folders and sys.platform.startswith("linux"):  # [fa]notify; FSEvents on macOS: not yet
        threading.Thread(target=carry_edits, args=(connection, folders, own), daemon=True).start()
    with contextlib.suppress(VmctlError):
        connection.get(wait=5)
    if mux is not None:
        mux.start()
    while not stop.wait(2):
        with connection.lock:
            guest = connection.guest
        if guest is None or not guest.alive:
            with contextlib.suppress(VmctlError):
                connection.get(wait=1)
        elif shares.shares:
            with contextlib.suppress(paramiko.SSHException, OSError):
                shares.ensure(guest.client.get_transport())
        down = connection.down_since
        if down is not None and time.monotonic() - down > GIVE_UP and _gone(hypervisor_running):
            log("the VM's hypervisor is gone: stopping")
            break
    server.close()
    ports.close()
    if mux is not None:
        mux.stop()
    for path in (vm.docker_host, vm.docker_sock):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    log("stopped")
    return 0


def _gone(hypervisor_running: Callable[[], bool]) -> bool:
    """Only a hypervisor that says so stops us: one we cannot ask (libvirtd restarting) may
    still run the VM."""
    try:
        return not hypervisor_running()
    except VmctlError as e:
        log(f"cannot ask the hypervisor ({e}); staying")
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vmctl-hostagent")
    parser.add_argument("--name", default=vmpaths.DEFAULT_NAME)
    args = parser.parse_args(argv)
    from vmctl import vm  # the drivers are only needed to tell whether the VM still runs

    return run(args.name, lambda: vm.hypervisor_running(args.name))


if __name__ == "__main__":
    raise SystemExit(main())
