"""vmctl's public API: create, start, stop, inspect and delete a VM. The CLI and the GUI call this.

Starting goes through named stages, each with a bounded timeout, so a start either finishes or
says which stage failed and shows the tail of the guest's console: never "stuck starting".

    hypervisor   the QEMU process runs (libvirt or bare QEMU)
    ssh          the guest's sshd answers with the pinned host key
    cloud-init   first-boot provisioning finished without errors
    deploy       daemon.json and the agent zipapp are in place (copied only when changed)
    engine       the host agent serves docker.sock and the engine answers /_ping through it

Status is derived each time from the hypervisor, the host agent's pid-file lock and a ping.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from vmctl import boot, console, enginehttp, locks, provision, stages
from vmctl import config as vmconfig
from vmctl import paths as vmpaths
from vmctl.errors import VmctlError
from vmctl.machine import Driver
from vmctl.ssh import Endpoint, Guest, SshUnavailable, pinned_known_hosts, wait_for

Progress = stages.Progress

StageFailed = stages.StageFailed  # what start raises, named where callers look
TIMEOUTS = stages.TIMEOUTS


@dataclass(frozen=True)
class Status:
    name: str
    state: str  # "not created" | "stopped" | "starting" | "running" | "degraded"
    detail: str  # for degraded: what does not answer; for starting: the stage
    config: vmconfig.VMConfig
    accel: str | None
    pid: int | None
    docker_host: str  # unix:///…/docker.sock (tcp://127.0.0.1:PORT where no unix sockets)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "state": self.state,
            "detail": self.detail,
            "driver": self.config.driver,
            "accel": self.accel,
            "cpus": self.config.cpus,
            "memory_mib": self.config.memory_mib,
            "disk_gib": self.config.disk_gib,
            "pid": self.pid,
            "docker_host": self.docker_host,
            "share_transport": self.config.transport(),
            "shares": [
                {"host": s.host, "guest": s.guest, "read_only": s.read_only}
                for s in self.config.shares()
            ],
        }


# ---- drivers ---------------------------------------------------------------------------------


def driver_for(paths: vmpaths.VMPaths, config: vmconfig.VMConfig) -> Driver:
    if config.driver == "libvirt":
        from vmctl.drivers.libvirt import LibvirtDriver

        return LibvirtDriver(domain=paths.domain, uri=config.libvirt_uri, pidfile=paths.qemu_pid)
    from vmctl.drivers.qemu import QemuDriver

    return QemuDriver(paths)


domain_name = vmpaths.domain_name  # the libvirt domain's name, OpenSSH's HostKeyAlias


def hypervisor_running(name: str) -> bool:
    paths = vmpaths.vm(name)
    return driver_for(paths, vmconfig.load(paths.config)).is_running()


# ---- status ----------------------------------------------------------------------------------


def status(name: str = vmpaths.DEFAULT_NAME) -> Status:
    paths = vmpaths.vm(name)
    config = vmconfig.load(paths.config)
    runtime = boot.runtime(paths)

    def make(state: str, detail: str = "", pid: int | None = None) -> Status:
        return Status(name, state, detail, config, runtime.get("accel"), pid, docker_host(paths))

    if not paths.config.exists():
        return make("not created")
    starting = locks.holder(paths.start_lock)
    driver = driver_for(paths, config)
    if not driver.is_running():
        if starting is not None:
            return make("starting", locks.stage_of(paths))
        return make("stopped")
    pid = driver.pid()
    if starting is not None:
        return make("starting", locks.stage_of(paths), pid)
    if locks.holder(paths.hostagent_pid) is None:
        return make("degraded", "the host agent is not running (vmctl start fixes it)", pid)
    if not ping(docker_host(paths), timeout=5):
        return make("degraded", "the engine does not answer through docker.sock", pid)
    return make("running", "", pid)


def docker_host(paths: vmpaths.VMPaths) -> str:
    """The DOCKER_HOST the host agent serves (it writes it down), or where it will."""
    with contextlib.suppress(OSError):
        return paths.docker_host.read_text().strip()
    return f"unix://{paths.docker_sock}"


def ping(url: str, timeout: float = 5) -> bool:
    """GET /_ping at a DOCKER_HOST URL (raw HTTP: status must not wait on a client library)."""
    try:
        with _connect(url, timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
            reply = b""
            while b"\r\n\r\n" not in reply:
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
            return reply.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def published_ports(name: str = vmpaths.DEFAULT_NAME, timeout: float = 5) -> list[str]:
    """The ports the host agent publishes on this machine, as `docker ps` writes them
    (`127.0.0.1:8080->80/tcp`), asked of the engine now."""
    paths = vmpaths.vm(name)
    address = vmconfig.load(paths.config).publish_address
    url = docker_host(paths)
    try:
        body = enginehttp.request(lambda: _connect(url, timeout), "GET", "/vmctl/ports")
    except (OSError, VmctlError):
        return []
    return [_port_text(row, address) for row in json.loads(body)]


def _port_text(row: dict, address: str) -> str:
    host = row["HostIp"] if row["HostIp"] not in ("", "0.0.0.0") else address
    return f"{host}:{row['HostPort']}->{row['PrivatePort']}/{row['Proto']} ({row['Id'][:12]})"


# ---- start -----------------------------------------------------------------------------------


def start(
    name: str = vmpaths.DEFAULT_NAME,
    progress: Progress | None = None,
    **changes,
) -> Status:
    """Create the VM on first use and boot it; flags in `changes` update the stored config.

    Returns once the engine answers on docker.sock; raises StageFailed naming the stage."""
    report = progress or (lambda _msg: None)
    began = time.monotonic()

    def say(message: str) -> None:
        report(f"{time.monotonic() - began:5.1f}s  {message}")

    paths = vmpaths.vm(name)
    paths.root.mkdir(parents=True, exist_ok=True)
    with locks.start_lock(paths):
        config = vmconfig.load(paths.config).replace(**changes)
        vmconfig.save(config, paths.config)
        driver = driver_for(paths, config)
        if driver.is_running():
            say(f"VM {name!r} is already running")
        else:
            stop_hostagent(paths)
            boot.boot(paths, config, driver, paths.domain, say)
        endpoint = _endpoint(paths)
        stages.enter(paths, "ssh", say)
        hint = provision.sshd_started(paths, say)
        guest = stages.run(
            paths, driver, "ssh", lambda: wait_for_ssh(paths, endpoint, driver, hint, say)
        )
        if locks.holder(paths.hostagent_pid) is None:
            spawn_hostagent(paths)  # its SSH connection and clock sync overlap what follows
        with guest:
            stages.enter(paths, "cloud-init", say)
            state = stages.run(
                paths,
                driver,
                "cloud-init",
                lambda: provision.wait_cloud_init(guest, driver, TIMEOUTS["cloud-init"]),
            )
            stages.enter(paths, "deploy", say)
            resize = boot.runtime(paths).get("resize", False)
            stages.run(
                paths, driver, "deploy", lambda: provision.deploy(guest, config, say, state, resize)
            )
        stages.enter(paths, "engine", say)
        stages.run(paths, driver, "engine", lambda: _serve_socket(paths, driver))
        stages.enter(paths, "", say)
    say(f"VM {name!r} is running: DOCKER_HOST={docker_host(paths)}")
    return status(name)


def wait_for_ssh(paths: vmpaths.VMPaths, endpoint: Endpoint, driver: Driver, hint,
                 say: Progress) -> Guest:  # fmt: skip
    """SSH, waiting TIMEOUTS["ssh"] at a time for as long as the guest's console goes on
    (it printed during the last wait: still booting): under emulation on a loaded machine a
    boot can take longer than any fixed wait. A guest that printed nothing for a whole wait
    has hung, and the stage fails."""
    while True:
        printed = _console_size(paths)
        try:
            return wait_for(endpoint, time.monotonic() + TIMEOUTS["ssh"], driver.is_running, hint)
        except SshUnavailable:
            if _console_size(paths) == printed:
                raise
            say("the guest is still booting (its console goes on): waiting on")


def _console_size(paths: vmpaths.VMPaths) -> int:
    try:
        return paths.serial_log.stat().st_size
    except OSError:
        return 0


# ---- the host agent ----------------------------------------------------------------------------


def _serve_socket(paths: vmpaths.VMPaths, driver: Driver) -> None:
    """Start the host agent (if it is not running) and wait for /_ping through docker.sock;
    then ask what is published, which the host agent answers once it listens for all of it
    (a restarted agent, or containers a rebooted VM brought back: their ports work when
    `vmctl start` returns)."""
    if locks.holder(paths.hostagent_pid) is None:
        spawn_hostagent(paths)
    deadline = time.monotonic() + TIMEOUTS["engine"]
    while time.monotonic() < deadline:
        if ping(docker_host(paths), timeout=10):
            published_ports(paths.name, timeout=60)
            return
        if locks.holder(paths.hostagent_pid) is None:
            raise VmctlError("the host agent exited: " + console.tail(paths.hostagent_log, 10))
        if not driver.is_running():
            raise VmctlError("the VM stopped")
        time.sleep(0.5)
    raise VmctlError(
        f"the engine did not answer /_ping within {TIMEOUTS['engine']:.0f} s; its log: "
        "vmctl ssh -- sudo journalctl -u vmctl-agent"
    )


def spawn_hostagent(paths: vmpaths.VMPaths) -> None:
    """Start the host agent; return once it serves, having written where (docker.host)."""
    paths.docker_host.unlink(missing_ok=True)  # a dead agent's: the new one writes its own
    env = dict(os.environ, VMCTL_HOME=str(vmpaths.home()))
    with open(paths.hostagent_log, "ab") as log, open(os.devnull, "rb") as null:
        agent = subprocess.Popen(
            [sys.executable, "-m", "vmctl.hostagent", "--name", paths.name],
            stdin=null,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,  # outlives the `vmctl start` that made it
            close_fds=True,
        )
    deadline = time.monotonic() + 15
    while locks.holder(paths.hostagent_pid) is None or not paths.docker_host.exists():
        if agent.poll() is not None or time.monotonic() > deadline:
            raise VmctlError(
                "the host agent did not start: " + console.tail(paths.hostagent_log, 10)
            )
        time.sleep(0.05)


def stop_hostagent(paths: vmpaths.VMPaths, timeout: float = 10) -> None:
    pid = locks.holder(paths.hostagent_pid)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while locks.holder(paths.hostagent_pid) is not None:
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)


# ---- stop, delete ----------------------------------------------------------------------------


def stop(
    name: str = vmpaths.DEFAULT_NAME, timeout: float = 60, progress: Progress | None = None
) -> Status:
    """Shut the guest down cleanly (ACPI), forcing it off after `timeout` seconds."""
    say = progress or (lambda _msg: None)
    paths = vmpaths.vm(name)
    if not paths.config.exists():
        raise VmctlError(f"there is no VM named {name!r} (vmctl start --name {name} creates it)")
    stop_hostagent(paths)
    driver = driver_for(paths, vmconfig.load(paths.config))
    if driver.is_running():
        say(f"stopping VM {name!r}")
        driver.shutdown(timeout)
    for path in (paths.docker_sock, paths.docker_host):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return status(name)


def delete(name: str = vmpaths.DEFAULT_NAME, progress: Progress | None = None) -> None:
    """Power off, forget the hypervisor's definition, and remove every file of the VM."""
    say = progress or (lambda _msg: None)
    paths = vmpaths.vm(name)
    if not paths.root.exists():
        raise VmctlError(f"there is no VM named {name!r}")
    stop_hostagent(paths)
    if paths.config.exists():
        say(f"deleting VM {name!r}")
        driver_for(paths, vmconfig.load(paths.config)).delete()
    shutil.rmtree(paths.root)


# ---- access ----------------------------------------------------------------------------------


def endpoint(name: str = vmpaths.DEFAULT_NAME) -> Endpoint:
    paths = vmpaths.vm(name)
    if not hypervisor_running(name):
        raise VmctlError(f"VM {name!r} is not running: vmctl start --name {name}")
    return _endpoint(paths)


def _endpoint(paths: vmpaths.VMPaths) -> Endpoint:
    runtime = boot.runtime(paths)
    return Endpoint(
        "127.0.0.1",
        runtime["ssh_port"],
        runtime["ssh_user"],
        paths.ssh_key,
        paths.host_key_pub.read_text().strip(),
    )


def docker_client(name: str = vmpaths.DEFAULT_NAME, timeout: float = 60):
    """docker-py's client on the VM's docker.sock (the one door to the engine)."""
    import docker

    paths = vmpaths.vm(name)
    return docker.DockerClient(base_url=docker_host(paths), timeout=timeout)


def known_hosts(name: str = vmpaths.DEFAULT_NAME) -> Path:
    """A known_hosts file pinning the VM's host key under an alias, for the system `ssh`."""
    paths = vmpaths.vm(name)
    return pinned_known_hosts(_endpoint(paths), paths.known_hosts, paths.domain)


# ---- helpers ---------------------------------------------------------------------------------


def _connect(url: str, timeout: float) -> socket.socket:
    if url.startswith("tcp://"):
        host, _, port = url.removeprefix("tcp://").rpartition(":")
        return socket.create_connection((host, int(port)), timeout=timeout)
    s = socket.socket(socket.AF_UNIX)
    try:
        s.settimeout(timeout)
        s.connect(url.removeprefix("unix://"))
    except OSError:
        s.close()
        raise
    return s
