"""Networks: the default `bridge` and user-defined bridge networks where the config says
`"bridge": "docker0"` (the VM's does; an agent without it never touches its machine's
network), the built-in `host` and `none`; each one's bridge and the firewall's rules kept
in step with the records.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

from vmctl_agent.errors import AgentError
from vmctl_agent.network import commands, ipam
from vmctl_agent.network.host import Host, NetworkError
from vmctl_agent.network.records import Network, Records
from vmctl_agent.runtime import logs

DEFAULT_BRIDGE = "docker0"
BRIDGES_OFF = (
    'bridge networking is off on this engine ("bridge": "none"): only --network none, host '
    'and container:<name> are available (the VM\'s engine has "bridge": "docker0")'
)
PREDEFINED = ("bridge", "host", "none")


class NetworkNotFound(AgentError):
    """404: `network x not found`."""


class NetworkConflict(AgentError):
    """409: a name taken, or endpoints still active."""


class NetworkForbidden(AgentError):
    """403: what Docker forbids outright (removing a predefined network)."""


class Networks:
    """The networks in `records`, their bridges and rules made by `host`."""

    def __init__(self, root: Path, host: Host | None = None, *, default_bridge: bool = True):
        self.records = Records(root)
        self.host = host or Host()
        self.lock = threading.RLock()
        self.default_bridge = default_bridge
        self.active_on = lambda network_id: []  # set by the endpoints: who is plugged in
        self.forwards = lambda: []  # set by the endpoints: the published ports' DNATs
        self.problem = ""  # why bridges cannot be made here (no iptables), if so

    def check_usable(self) -> None:
        """Bridges may be made here: refused outright where the config says none (an agent
        on a development machine), or with the reason they cannot be (no iptables)."""
        if not self.default_bridge:
            raise NetworkForbidden(BRIDGES_OFF)
        if self.problem:
            raise NetworkError(self.problem)

    # -- start ------------------------------------------------------------------------------

    def restore(self) -> None:
        """The predefined networks recorded, and every bridge and rule made again (after a
        reboot) or checked (after the agent restarted)."""
        with self.lock:
            self._predefine("host", "host")
            self._predefine("none", "null")
            if not self.default_bridge:  # nothing is made in this machine's network
                if (old := self._by_name("bridge")) is not None:
                    self.records.drop_network(old.id)
                return
            self._predefine("bridge", "bridge", ipam.default_bridge(), DEFAULT_BRIDGE)
            for network in self.bridges():
                self._bridge_up(network)
            self.sync_firewall()

    def _predefine(self, name: str, driver: str, subnet=None, bridge: str = "") -> None:
        if self._by_name(name) is None:
            subnets = (subnet,) if subnet else ()
            network = Network(secrets.token_hex(32), name, logs.now(), driver, subnets, bridge)
            self.records.save_network(network)

    # -- finding ----------------------------------------------------------------------------

    def all(self) -> list[Network]:
        return sorted(self.records.networks.values(), key=lambda n: n.created)

    def bridges(self) -> Iterator[Network]:
        return (n for n in self.all() if n.driver == "bridge")

    def find(self, ref: str) -> Network:
        """By full id, name, then unique id prefix, as dockerd looks networks up."""
        nets = self.records.networks
        found = nets.get(ref) or self._by_name(ref)
        if found is None and ref:
            matches = [n for n in list(nets.values()) if n.id.startswith(ref)]
            if len(matches) > 1:
                raise NetworkConflict(f"network {ref} is ambiguous ({len(matches)} matches found)")
            found = matches[0] if matches else None
        if found is None:
            raise NetworkNotFound(f"network {ref} not found")
        return found

    def _by_name(self, name: str) -> Network | None:
        return next((n for n in list(self.records.networks.values()) if n.name == name), None)

    def taken_subnets(self) -> list[ipam.Net]:
        return [s.subnet for n in self.bridges() for s in n.subnets]

    # -- create and remove ------------------------------------------------------------------

    def create(self, name: str, *, ipam_configs=(), internal=False, attachable=False,
               labels=None, options=None, ipam_options=None) -> Network:  # fmt: skip
        """A bridge network; nothing is left behind if any part of it fails."""
        if not name.strip():  # any other name, spaces included, as libnetwork allows
            raise ipam.InvalidNetworkConfig(f"invalid name: {name}")
        self.check_usable()
        with self.lock:
            if name in PREDEFINED or self._by_name(name):
                raise NetworkConflict(f"network with name {name} already exists")
            subnets = self._subnets(ipam_configs)
            network_id = secrets.token_hex(32)
            network = Network(
                network_id, name, logs.now(), "bridge", subnets, f"br-{network_id[:12]}",
                internal, attachable, dict(labels or {}), dict(options or {}), ipam_options,
            )  # fmt: skip
            self.records.save_network(network)
            try:
                self._bridge_up(network)
                self.sync_firewall()
            except BaseException:
                self._undo(network)
                raise
        return network

    def _subnets(self, configs) -> tuple[ipam.Subnet, ...]:
        taken = self.taken_subnets()
        if not configs:
            return (ipam.from_pools([*taken, *ipam.routed(self.host.routes())]),)
        subnets: list[ipam.Subnet] = []
        for config in configs:
            subnets.append(ipam.requested(config, [*taken, *(s.subnet for s in subnets)]))
        return tuple(subnets)

    def _undo(self, network: Network) -> None:
        self.records.drop_network(network.id)
        if self.host.link_exists(network.bridge):
            self.host.ip(commands.bridge_down(network.bridge))
        self.sync_firewall()

    def remove(self, ref: str) -> Network:
        with self.lock:
            network = self.find(ref)
            if network.name in PREDEFINED:
                raise NetworkForbidden(
                    f"{network.name} is a pre-defined network and cannot be removed"
                )
            if self.active_on(network.id):
                raise NetworkConflict(
                    f"error while removing network: network {network.name} id {network.id} "
                    "has active endpoints"
                )
            self._undo(network)
        return network

    # -- the kernel's side ------------------------------------------------------------------

    def _bridge_up(self, network: Network) -> None:
        exists = self.host.link_exists(network.bridge)
        addresses = [f"{s.gateway}/{s.subnet.prefixlen}" for s in network.subnets]
        self.host.ip(commands.bridge_up(network.bridge, addresses, exists))

    def sync_firewall(self) -> None:
        """Every bridge network's rules and published port's DNAT, rewritten at once; nothing
        at all when there is no bridge (an agent told `"bridge": "none"` never touches the
        firewall)."""
        states = [
            commands.BridgeState(n.bridge, tuple(str(s.subnet) for s in n.subnets), n.internal)
            for n in self.bridges()
        ]
        if not states and not self.host.jumps_made:
            return
        if any(not s.internal for s in states):
            self.host.forward()
        self.host.firewall(commands.firewall(states, self.forwards()))
