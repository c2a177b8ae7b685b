"""Runs what commands.py builds: iproute2 and iptables as child processes, the forwarding
sysctl as a file. Everything acts on the agent's own network namespace (the VM's, or in
tests one the test made), and the containers' namespaces by path.
"""

from __future__ import annotations

import socket
import subprocess

from vmctl_agent.errors import AgentError
from vmctl_agent.network import commands

_FORWARDING = "/proc/sys/net/ipv4/ip_forward"


class NetworkError(AgentError):
    """The kernel refused a bridge, veth, address or rule (500, with iproute2's words)."""


class Host:
    """The executors; `jumps_made` remembers that the built-in chains jump into ours."""

    def __init__(self) -> None:
        self.jumps_made = False

    def ip(self, batch: str) -> None:
        _run(["ip", "-batch", "-"], batch)

    def ip_in(self, netns: str, batch: str) -> None:
        """In the namespace bound at `netns`."""
        _run(["nsenter", f"--net={netns}", "ip", "-batch", "-"], batch)

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
