"""Runs what commands.py builds: iproute2 and iptables as child processes, the forwarding
sysctl as a file. Everything acts on the agent's own network namespace (the VM's, or in
tests one the test made), and the containers' namespaces by path.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading

from vmctl_agent import syscalls as sc
from vmctl_agent.errors import AgentError
from vmctl_agent.network import commands, netlink

_FORWARDING = "/proc/sys/net/ipv4/ip_forward"


class NetworkError(AgentError):
    """The kernel refused a bridge, veth, address or rule (500, with iproute2's words)."""


class Host:
    """The executors; `jumps_made` remembers that the built-in chains jump into ours."""

    def __init__(self) -> None:
        self.jumps_made = False

    def ip(self, batch: str) -> None:
        _run(["ip", "-batch", "-"], batch)

    def plug_outside(self, plug: commands.Plug) -> None:
        """The veth pair, its peer made in the container's namespace, our end in the bridge
        and up: two rtnetlink requests from the agent's own namespace."""
        fd = os.open(plug.netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with _rtnetlink() as nl:
                _ask(nl, netlink.add_veth(plug.veth, plug.interface, plug.mac, fd, 1))
                veth, bridge = socket.if_nametoindex(plug.veth), socket.if_nametoindex(plug.bridge)
                _ask(nl, netlink.enslave_up(veth, bridge, 2))
        except OSError as e:
            if self.link_exists(plug.veth):
                self.ip(commands.unplug(plug.veth))
            raise NetworkError(
                f"cannot make the veth pair {plug.veth}: {e.strerror or e}"
            ) from None
        finally:
            os.close(fd)

    def configure_inside(self, netns: str, plug: commands.Plug, first: bool) -> None:
        """The container's end of `plug`, in the namespace bound at `netns`: loopback up (for
        the first), the address, the link up, the default route. Over rtnetlink, from a
        thread that enters the namespace and ends: no process is started."""
        failure: list[BaseException] = []
        thread = threading.Thread(target=_inside, args=(netns, plug, first, failure))
        thread.start()
        thread.join()
        if failure:
            raise NetworkError(f"cannot configure {plug.interface}: {failure[0]}")

    def link_exists(self, name: str) -> bool:
        try:
            socket.if_nametoindex(name)
        except OSError:
            return False
        return True

    def firewall(self, rules: str) -> None:
        """Replace our chains' rules; the first time, hook them into the built-in chains."""
        _run(["iptables-restore", "-w", "--noflush"], rules)
        if not self.jumps_made:
            for jump in commands.JUMPS:
                if subprocess.run(commands.jump_check(*jump), capture_output=True).returncode:
                    _run(commands.jump_insert(*jump))
            self.jumps_made = True

    def routes(self) -> str:
        """/proc/net/route as this namespace sees it."""
        with open("/proc/self/net/route") as f:
            return f.read()

    def forward(self) -> None:
        """Routing between the bridges and the VM's own interface (Docker turns it on too)."""
        with open(_FORWARDING, "r+") as f:
            if f.read().strip() != "1":
                f.seek(0)
                f.write("1\n")


def _run(argv: list[str], batch: str | None = None) -> None:
    try:
        done = subprocess.run(argv, input=batch, capture_output=True, text=True)
    except FileNotFoundError:
        raise NetworkError(
            f"{argv[0]} is not installed: bridge networking needs iproute2 and iptables"
        ) from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        raise NetworkError(f"{' '.join(argv[:3])} failed: {detail}")


def _inside(netns: str, plug: commands.Plug, first: bool, failure: list) -> None:
    try:
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            sc.setns(fd, sc.CLONE_NEWNET)
        finally:
            os.close(fd)
        with _rtnetlink() as nl:
            for seq, message in enumerate(_inside_messages(plug, first), start=1):
                _ask(nl, message(seq))
    except BaseException as e:
        failure.append(e)


def _rtnetlink() -> socket.socket:
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    nl.bind((0, 0))
    return nl


def _ask(nl: socket.socket, message: bytes) -> None:
    """Send one request and raise the errno its ack carries."""
    nl.send(message)
    error = netlink.error_of(nl.recv(65536))
    if error:
        raise OSError(error, os.strerror(error))


def _inside_messages(plug: commands.Plug, first: bool) -> list:
    index = socket.if_nametoindex(plug.interface)
    messages = [lambda seq: netlink.link_up(socket.if_nametoindex("lo"), seq)] if first else []
    messages += [
        lambda seq, address=address: netlink.add_address(index, address, seq)
        for address in (plug.address, *plug.link_local)
    ]
    messages.append(lambda seq: netlink.link_up(index, seq))
    if plug.gateway:
        messages.append(lambda seq: netlink.default_route(index, plug.gateway, seq))
    return messages
