"""Containers on networks: the runtime's hooks (a network namespace plugged before each
start, unplugged at its end), and `docker network connect` / `disconnect`.

A container's attachments are recorded at create (and by connect), so they outlive its
stops; while it runs each one is an endpoint: a veth pair (`ethN` inside), an address from
the network's IPAM, a MAC made from it, the default route through the first network that
has a way out.
"""

from __future__ import annotations

import secrets
import sys
from dataclasses import replace

from vmctl_agent.errors import AgentError
from vmctl_agent.network import commands, dns, etcfiles, ipam, ports
from vmctl_agent.network.networks import NetworkForbidden, Networks
from vmctl_agent.network.proxy import Proxy
from vmctl_agent.network.records import Attachment, Network
from vmctl_agent.runtime import netns
from vmctl_agent.runtime.index import ContainerConflict, ContainerNotFound
from vmctl_agent.runtime.netns import Joined
from vmctl_agent.runtime.spec import InvalidSpec

DESKTOP_HOST = "host.docker.internal"


class Endpoints(netns.Networking):
    def __init__(self, networks: Networks, runtime, host_gateway: str = "") -> None:
        self.networks = networks
        self.records = networks.records
        self.host = networks.host
        self.runtime = runtime
        self.host_gateway = host_gateway or str(ipam.default_bridge().gateway)
        # Docker Desktop's name for the user's machine, when the VM says where that is
        self.desktop_hosts = [(DESKTOP_HOST, host_gateway)] if host_gateway else []
        self.names: dict[str, str] = {}  # container id → name, for the resolver
        self.resolver = dns.Resolver(self.lookup, etcfiles.upstream_servers)
        self.proxy = Proxy()
        networks.active_on = self.active_on
        networks.forwards = self.forwards
        runtime.networking = self

    # -- what is where ----------------------------------------------------------------------

    def of(self, container_id: str) -> dict[str, Attachment]:
        return dict(self.records.endpoints.get(container_id) or {})

    def active_on(self, network_id: str) -> list[str]:
        return list(self.on(network_id))

    def on(self, network_id: str) -> dict[str, Attachment]:
        """Containers with an active endpoint on the network: id → endpoint. (A copy of the
        records is walked: other threads start and stop containers meanwhile.)"""
        every = list(self.records.endpoints.items())
        return {cid: atts[network_id] for cid, atts in every
                if network_id in atts and atts[network_id].active}  # fmt: skip

    def _taken(self, network: Network) -> set[ipam.Addr]:
        return {ipam.Addr(a.address) for a in self.on(network.id).values()}

    # -- create -----------------------------------------------------------------------------

    def created(self, config) -> None:
        """The network named by --network (and any in EndpointsConfig), checked and recorded."""
        mode = config.network
        if mode.startswith("container:"):
            self._networked_container(mode.partition(":")[2])
            return
        self.networks.check_usable()
        options = config.create_options
        self._hosts(config, {})  # --add-host checked now, not at the first start
        wanted = {mode: options.endpoints.get(mode) or {}}
        wanted |= {k: v for k, v in options.endpoints.items() if k != mode}
        with self.networks.lock:
            atts = {}
            for ref, settings in wanted.items():
                network = self.networks.find(ref)
                atts[network.id] = _attachment(network, settings or {}, options.mac_address)
            self.records.save_endpoints(config.id, atts)

    def _networked_container(self, ref: str):
        try:
            return self.runtime.get(ref)
        except ContainerNotFound:
            raise ContainerNotFound(f"No such container: {ref}") from None

    # -- start and end ----------------------------------------------------------------------

    def join(self, config, run: str) -> Joined:
        if config.network.startswith("container:"):
            return self._share(config.network.partition(":")[2])
        self.networks.check_usable()
        path = str(self.records.netns_path(config.id))
        with self.networks.lock:
            netns.remove(path)  # a namespace a crash left bound
            netns.make(path)
            try:
                atts = self._plug_all(config.id, path, run)
                self.names[config.id] = config.name
                self._serve_dns(config.id, atts)
                self._publish(config.id, atts, _requested_ports(config))
                return Joined(path, self._hosts(config, atts), self._resolv(config, atts))
            except BaseException:
                self._undo_join(config.id, path)
                raise

    def _undo_join(self, container_id: str, path: str) -> None:
        """Whatever part of a join was made, unmade: nothing is left plugged or bound."""
        self._unpublish(container_id)
        self.resolver.stop(container_id)
        self._end_all(container_id, None)
        netns.remove(path)

    def _publish(self, container_id: str, atts: dict[str, Attachment], wanted) -> None:
        """Published ports, carried to the container's address on its first network."""
        target = _first_address(atts)
        if not wanted or not target:
            return
        bound = self.proxy.publish(container_id, target, wanted)
        self.records.save_ports(container_id, [b.to_json() for b in bound])
        self.networks.sync_firewall()

    def _unpublish(self, container_id: str) -> None:
        """Its listeners closed and its DNAT gone (the firewall is only rewritten when it had
        published ports: a container without any stops without an iptables-restore)."""
        self.proxy.unpublish(container_id)
        had = self.records.ports.get(container_id)
        self.records.save_ports(container_id, [])
        if had:
            self.networks.sync_firewall()

    def forwards(self) -> list[commands.Forward]:
        """Every published port's DNAT, to the address its container has now."""
        return [
            commands.Forward(b.proto, b.host_port, address, b.port)
            for container_id in list(self.records.ports)
            if (address := self.address(container_id))
            for b in self.published(container_id)
        ]

    def published(self, container_id: str) -> list[ports.Binding]:
        return [ports.Binding(**b) for b in self.records.ports.get(container_id, [])]

    def address(self, container_id: str) -> str:
        """Where its published ports are carried to ("": nowhere, not running)."""
        return _first_address(self.of(container_id))

    def _serve_dns(self, container_id: str, atts: dict[str, Attachment]) -> None:
        """The embedded resolver, for a container on a user-defined network."""
        if any(a.active and self._user_defined(n) for n, a in atts.items()):
            self.resolver.serve(container_id, str(self.records.netns_path(container_id)))

    def _user_defined(self, network_id: str) -> bool:
        network = self.records.networks.get(network_id)
        return network is not None and network.name != "bridge"

    def _plug_all(self, container_id: str, path: str, run: str) -> dict[str, Attachment]:
        atts = self.of(container_id)
        routed = False
        for index, (network_id, att) in enumerate(list(atts.items())):
            network = self.networks.find(network_id)
            gateway = not routed and not network.internal
            atts[network_id] = self._plug(network, att, path, f"eth{index}", gateway, run)
            routed = routed or gateway
            self.records.save_endpoints(container_id, atts)
        return atts

    def _plug(self, network: Network, att: Attachment, path: str, interface: str,
              route: bool, run: str) -> Attachment:  # fmt: skip
        subnet = network.subnets[0]
        address = ipam.address(subnet, self._taken(network), att.ipv4)
        mac = att.mac or _mac(address)
        veth = "veth" + secrets.token_hex(4)[:7]
        gateway = str(subnet.gateway) if route else ""
        plug = commands.Plug(path, veth, network.bridge, interface,
                             f"{address}/{subnet.subnet.prefixlen}", mac, gateway,
                             tuple(f"{a}/16" for a in att.link_local))  # fmt: skip
        self.host.plug_outside(plug)
        try:
            self.host.configure_inside(path, plug, first=interface == "eth0")
        except BaseException:
            self.host.ip(commands.unplug(veth))
            raise
        return replace(att, endpoint_id=secrets.token_hex(32), address=str(address),
                       mac_address=mac, veth=veth, run=run)  # fmt: skip

    def leave(self, container_id: str, run: str | None) -> None:
        """End the endpoints of run `run` (None: whatever run) and unbind the namespace
        (bound while the container ran, even once disconnected from every network).

        The veths are not deleted one by one (the kernel takes ~50 ms a veth to unregister
        one, which a `docker run --rm` would wait for): once nothing holds the namespace
        (the container is dead, its resolver sockets closed, the file unbound) the kernel
        destroys it with its veths, on its own time."""
        with self.networks.lock:
            atts = self.of(container_id)
            if any(a.active and run is not None and a.run != run for a in atts.values()):
                return  # a later run's endpoints: the namespace is that run's
            self.resolver.stop(container_id)
            self._unpublish(container_id)
            self._end_all(container_id, run)
            netns.remove(str(self.records.netns_path(container_id)))

    def _end_all(self, container_id: str, run: str | None) -> None:
        atts = self.of(container_id)
        for network_id, att in atts.items():
            if att.active and (run is None or att.run == run):
                atts[network_id] = att.ended()
        self.records.save_endpoints(container_id, atts)

    def forget(self, container_id: str) -> None:
        with self.networks.lock:
            self.leave(container_id, None)
            self.records.save_endpoints(container_id, {})

    def restore(self) -> None:
        """After a restart: endpoints of containers no longer running are undone."""
        for container_id in list(self.records.endpoints):
            try:
                running = self.runtime.get(container_id).state.running
            except ContainerNotFound:
                self.forget(container_id)
                continue
            if not running:
                self.leave(container_id, None)
                continue
            try:
                self._rejoin(container_id)
            except (AgentError, OSError) as e:  # a port taken meanwhile: say so, serve on
                print(f"vmctl-agent: container {container_id[:12]}: {e}", file=sys.stderr)

    def _rejoin(self, container_id: str) -> None:
        """A container that kept running while the agent was away: its resolver socket and
        its listeners died with the old agent; made again, on the same host ports."""
        self.names[container_id] = self.runtime.get(container_id).name
        atts = self.of(container_id)
        self._serve_dns(container_id, atts)
        bound = self.published(container_id)
        self.records.save_ports(container_id, [])
        self._publish(container_id, atts, bound)

    # -- connect and disconnect -------------------------------------------------------------

    def connect(self, container, network: Network, settings: dict) -> None:
        """Record the attachment; plug it in now if the container runs."""
        mode = container.config.network
        if mode in ("host", "none") or mode.startswith("container:"):
            raise NetworkForbidden(
                f"container cannot be connected to network {network.name}: it runs with "
                f"--network {mode.partition(':')[0]}"
            )
        with self.networks.lock:
            atts = self.of(container.id)
            if network.id in atts:
                raise NetworkForbidden(
                    f"endpoint with name {container.name} already exists in network {network.name}"
                )
            att = _attachment(network, settings, "")
            if container.state.running:
                path = str(self.records.netns_path(container.id))
                interface = f"eth{_next_interface(atts)}"
                run = _run_of(atts)  # "": disconnected from all, this one gets the route
                route = not run and not network.internal
                run = run or container.state.started_at
                att = self._plug(network, att, path, interface, route, run)
            self.records.save_endpoints(container.id, {**atts, network.id: att})
            if att.active and container.id not in self.resolver.serving():
                self._serve_dns(container.id, self.of(container.id))
            if self.records.ports.get(container.id):  # its first address may be another now
                self.networks.sync_firewall()

    def disconnect(self, container, network: Network) -> None:
        with self.networks.lock:
            atts = self.of(container.id)
            att = atts.pop(network.id, None)
            if att is None:
                raise NetworkForbidden(
                    f"container {container.id} is not connected to network {network.name}"
                )
            if att.active and self.host.link_exists(att.veth):
                self.host.ip(commands.unplug(att.veth))
            self.records.save_endpoints(container.id, atts)  # its namespace stays while it runs
            if self.records.ports.get(container.id):
                self.networks.sync_firewall()

    # -- names ------------------------------------------------------------------------------

    def lookup(self, asker: str, name: str) -> list[str] | None:
        """Addresses of `name` on the asker's user-defined networks; None if it is none of
        their containers (the resolver forwards it)."""
        own = self.of(asker)
        mine = {n for n, a in own.items() if a.active and self._user_defined(n)}
        found = []
        for container_id, atts in list(self.records.endpoints.items()):
            for network_id in mine & atts.keys():
                att, wanted = atts[network_id], _linked(own[network_id], name)
                if att.active and wanted in self._names_of(container_id, att):
                    found.append(att.address)
        if not found and name == DESKTOP_HOST and self.desktop_hosts:
            return [self.desktop_hosts[0][1]]
        return found or None

    def _names_of(self, container_id: str, att: Attachment) -> set[str]:
        names = {self.names.get(container_id, ""), container_id[:12], *att.aliases}
        return {n.lower() for n in names if n}

    # -- /etc files -------------------------------------------------------------------------

    def _hosts(self, config, atts: dict[str, Attachment]) -> str:
        options = config.create_options
        try:
            extra = etcfiles.extra_hosts(options.extra_hosts, self.host_gateway)
        except ValueError as e:
            raise InvalidSpec(str(e)) from None
        extra = [*self.desktop_hosts, *extra]
        first = next(iter(atts.values()), None)
        return etcfiles.hosts(config.hostname, first.address if first else "", extra)

    def _resolv(self, config, atts: dict[str, Attachment]) -> str:
        options = config.create_options
        embedded = any(self.networks.find(n).name != "bridge" for n in atts)
        dns = etcfiles.DnsSettings(options.dns, options.dns_search, options.dns_options)
        return etcfiles.resolv(embedded and not options.dns, dns)

    def _share(self, ref: str) -> Joined:
        """--network container:<ref>: its namespace and its /etc files."""
        other = self._networked_container(ref)
        if not other.state.running:
            raise ContainerConflict(f"cannot join network of a non running container: {other.id}")
        path = self.records.netns_path(other.id)
        if not self.of(other.id):
            path = f"/proc/{other.state.pid}/ns/net"
        hosts = etcfiles.hosts(other.config.hostname, "", [])
        atts = self.of(other.id)
        if atts:
            hosts = self._hosts(other.config, atts)
        return Joined(str(path), hosts, self._resolv(other.config, atts))


def _requested_ports(config) -> list[ports.Binding]:
    options = config.create_options
    return ports.requested(options.port_bindings, options.publish_all, options.exposed_ports)


def _attachment(network: Network, settings: dict, mac: str) -> Attachment:
    if network.driver != "bridge":
        raise NetworkForbidden(
            f"container cannot be connected to network {network.name} with other networks"
        )
    ipv4 = ((settings.get("IPAMConfig") or {}).get("IPv4Address")) or ""
    if ipv4 and network.name == "bridge":
        raise InvalidSpec("user specified IP address is supported on user defined networks only")
    if ipv4:
        ipam.address(network.subnets[0], set(), ipv4)  # in the subnet: refused now, not at start
    aliases = tuple(settings.get("Aliases") or ())
    if aliases and network.name == "bridge":
        raise InvalidSpec(
            "network-scoped alias is supported only for containers in user defined networks"
        )
    link_local = tuple((settings.get("IPAMConfig") or {}).get("LinkLocalIPs") or ())
    opts = dict(settings.get("DriverOpts") or {})
    return Attachment(network.id, aliases, ipv4, settings.get("MacAddress") or mac, link_local,
                      opts, _links(network, settings))  # fmt: skip


def _links(network: Network, settings: dict) -> tuple[str, ...]:
    """EndpointSettings.Links as dockerd keeps them ("name:alias"); on a user-defined
    network the embedded resolver answers each alias (the default bridge has no resolver:
    its legacy links are HostConfig.Links, refused until they exist)."""
    links = tuple(settings.get("Links") or ())
    if links and network.name == "bridge":
        raise InvalidSpec("links in EndpointSettings are supported only on user-defined networks")
    out = []
    for link in links:
        name, _, alias = link.partition(":")
        if not name or alias.count(":"):
            raise InvalidSpec(f"invalid link: {link}")
        out.append(f"{name}:{alias or name}")
    return tuple(out)


def _linked(att: Attachment, name: str) -> str:
    """The container `name` stands for on this network: a link's target, or itself."""
    for link in att.links:
        target, _, alias = link.partition(":")
        if alias.lower() == name:
            return target.lower()
    return name


def _next_interface(atts: dict[str, Attachment]) -> int:
    return len([a for a in atts.values() if a.active])


def _run_of(atts: dict[str, Attachment]) -> str:
    return next((a.run for a in atts.values() if a.active), "")


def _mac(address: ipam.Addr) -> str:
    """02:42 and the IPv4 address, as dockerd made them (unique on the network)."""
    return "02:42:" + ":".join(f"{b:02x}" for b in address.packed)


def _first_address(atts: dict[str, Attachment]) -> str:
    return next((a.address for a in atts.values() if a.active), "")
