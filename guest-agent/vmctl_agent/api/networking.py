"""A container's networking in the API: the create request's network fields (NetworkMode,
NetworkingConfig, ExtraHosts, Dns*, MacAddress) read into options, and NetworkSettings as
`docker inspect` shows it."""

from __future__ import annotations

import ipaddress

from vmctl_agent.api.http import ApiError
from vmctl_agent.network import counters, ports
from vmctl_agent.network.records import Attachment

_CONFLICTS = (  # with --network container:<x>, as dockerd words them
    ("Hostname", "hostname"),
    ("Dns", "dns"),
    ("ExtraHosts", "custom host-to-IP mapping"),
    ("MacAddress", "mac-address"),
)


def create_options(engine, body: dict, host: dict) -> dict:
    """CreateOptions' network fields, checked; 400 for what this engine does not honour
    (beyond unsupported.py's table, which create checks first: HostConfig.Links is there)."""
    mode = host.get("NetworkMode") or "default"
    endpoints = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    if not isinstance(endpoints, dict):
        raise ApiError(400, "NetworkingConfig.EndpointsConfig must be an object")
    if mode == "default":  # the CLI names the default network "default" in both places
        usable = engine.config.default_bridge and not engine.network_problem
        mode = "bridge" if usable else "none"  # `docker info` says why it is none
        if "default" in endpoints:
            endpoints = {mode: endpoints["default"], **endpoints}
            del endpoints["default"]
    for settings in endpoints.values():
        check_endpoint(settings or {})
    options = {
        "network": mode,
        "endpoints": {k: dict(v or {}) for k, v in endpoints.items()},
        "mac_address": body.get("MacAddress") or "",
        "extra_hosts": tuple(host.get("ExtraHosts") or ()),
        "dns": tuple(host.get("Dns") or ()),
        "dns_search": tuple(host.get("DnsSearch") or ()),
        "dns_options": tuple(host.get("DnsOptions") or ()),
    }
    _check_mode(mode, body, host, options)
    options |= _ports(engine, body, host, mode)
    return options


def _ports(engine, body: dict, host: dict, mode: str) -> dict:
    """-p and -P: checked (400) whatever the mode; kept only where they are honoured (the
    image is only read for that: --network none and host pay nothing for ports)."""
    bindings = host.get("PortBindings") or {}
    publish_all = bool(host.get("PublishAllPorts"))
    ports.requested(bindings, publish_all, body.get("ExposedPorts") or {})
    if mode in ("host", "none"):  # kept for inspect, as dockerd keeps them
        return {"exposed_ports": tuple(body.get("ExposedPorts") or {})}
    image = engine.images.get(body["Image"]).config.get("config") or {}
    exposed = {**(image.get("ExposedPorts") or {}), **(body.get("ExposedPorts") or {})}
    ports.requested({}, publish_all, exposed)
    return {
        "port_bindings": bindings,
        "publish_all": publish_all,
        "exposed_ports": tuple(sorted(exposed)),
    }


def published(engine, container) -> list[ports.Binding]:
    return engine.endpoints.published(container.id) if container.state.running else []


def list_ports(engine, container) -> list[dict]:
    """`docker ps`'s Ports."""
    exposed = container.config.create_options.exposed_ports
    return ports.list_ports(published(engine, container), exposed)


def interface_stats(engine, container) -> dict:
    """Stats' "networks": each interface's counters, when the container is on a network
    (dockerd leaves the key out for --network none and host)."""
    if not engine.endpoints.of(container.id) or not container.state.pid:
        return {}
    return {"networks": counters.of_process(container.state.pid)}


def on_network(engine, container, ref: str) -> bool:
    """`docker ps --filter network=`: by network name or id."""
    if container.config.network == ref:
        return True
    for network_id in engine.endpoints.of(container.id):
        network = engine.networks.records.networks.get(network_id)
        if network is not None and ref in (network.name, network.id):
            return True
    return False


def list_networks(engine, container) -> dict:
    """`docker ps`'s NetworkSettings.Networks."""
    return settings(engine, container)["Networks"]


def check_endpoint(settings: dict) -> None:
    """An EndpointSettings (create's EndpointsConfig, connect's EndpointConfig): 400 for
    what this engine would not honour."""
    ipam = settings.get("IPAMConfig") or {}
    if ipam.get("IPv6Address"):
        raise ApiError(
            400, "EndpointSettings.IPAMConfig.IPv6Address is not supported by this engine"
        )
    for address in ipam.get("LinkLocalIPs") or ():
        _check_link_local(address)
    for key in settings.get("DriverOpts") or {}:
        if key.startswith("com.docker.network."):  # the bridge driver's own: not honoured here
            raise ApiError(400, f"EndpointSettings.DriverOpts {key} is not supported here")


def _check_link_local(address: str) -> None:
    """dockerd adds each to the interface, with a /16; IPv6 ones wait for IPv6 networks."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise ApiError(400, f"invalid link-local IP address: {address}") from None
    if parsed.version == 6:
        raise ApiError(400, "EndpointSettings.IPAMConfig.LinkLocalIPs: IPv6 addresses are not "
                            "supported by this engine (its networks are IPv4)")  # fmt: skip
    if parsed.is_unspecified:
        raise ApiError(400, f"invalid link-local IP address: {address}")


def ports_warning(mode: str) -> str:
    if mode == "host":
        return "Published ports are discarded when using host network mode"
    if mode == "none":
        return (
            "Published ports are discarded: this engine has no bridge network yet, "
            "so the container runs with --network none"
        )
    return ""


def _check_mode(mode: str, body: dict, host: dict, options: dict) -> None:
    if mode.startswith("container:"):
        given = {**body, **host}
        if any(host.get("PortBindings") or {}) or host.get("PublishAllPorts"):
            raise ApiError(
                400, "conflicting options: port publishing and the container type network mode"
            )
        for field, words in _CONFLICTS:
            if given.get(field):
                raise ApiError(400, f"conflicting options: {words} and the network mode")
        return
    if mode in ("host", "none"):
        unhonoured = [f for f in ("ExtraHosts", "Dns", "DnsSearch", "DnsOptions") if host.get(f)]
        unhonoured += ["MacAddress"] if options["mac_address"] else []
        if unhonoured:
            raise ApiError(
                400,
                f"HostConfig.{unhonoured[0]} is not supported with --network {mode}: "
                "it applies to bridge networks",
            )
    if len(options["endpoints"]) > 1 and mode in ("host", "none"):
        raise ApiError(400, f"container cannot be connected to network {mode} with other networks")
    if mode in ("host", "none"):
        _check_builtin_endpoint(mode, options["endpoints"].get(mode) or {})


_BUILTIN_ENDPOINT = (
    ("IPAMConfig", "user specified IP address is supported on user defined networks only"),
    ("Aliases", "network-scoped alias is supported only for containers in user defined networks"),
    ("MacAddress", "a MAC address is supported on bridge networks only"),
    ("Links", "links are supported on user defined networks only"),
    ("DriverOpts", "endpoint driver options are supported on bridge networks only"),
)


def _check_builtin_endpoint(mode: str, settings: dict) -> None:
    """dockerd's refusals for what only a user network gives, named as the request has it."""
    asked = {**settings, "IPAMConfig": (settings.get("IPAMConfig") or {}).get("IPv4Address")}
    for field, words in _BUILTIN_ENDPOINT:
        if asked.get(field):
            raise ApiError(400, f"NetworkingConfig.EndpointsConfig.{mode}.{field}: {words}")


def settings(engine, container) -> dict:
    """NetworkSettings: each network's endpoint, and the primary one's address on top."""
    atts = engine.endpoints.of(container.id)
    networks = {}
    for network_id, att in atts.items():
        network = engine.networks.records.networks.get(network_id)
        if network is not None:
            networks[network.name] = endpoint_settings(network, att, container)
    if container.config.network in ("host", "none"):
        networks[container.config.network] = _pseudo(engine, container.config.network)
    first = next(iter(networks.values()), {})
    return {
        "Bridge": "",
        "SandboxID": container.id if atts and container.state.running else "",
        "SandboxKey": _sandbox_key(engine, container, atts),
        "Ports": ports.inspect_ports(
            published(engine, container), container.config.create_options.exposed_ports
        ),
        "IPAddress": first.get("IPAddress", ""),
        "IPPrefixLen": first.get("IPPrefixLen", 0),
        "Gateway": first.get("Gateway", ""),
        "MacAddress": first.get("MacAddress", ""),
        "Networks": networks,
    }


def _sandbox_key(engine, container, atts) -> str:
    if atts and container.state.running:
        return str(engine.networks.records.netns_path(container.id))
    return ""


def endpoint_settings(network, att: Attachment, container) -> dict:
    """One network's entry in NetworkSettings.Networks."""
    active = att.active and container.state.running
    subnet = network.subnets[0] if network.subnets else None
    return {
        "IPAMConfig": _ipam_config(att),
        "Links": list(att.links) or None,
        "Aliases": list(att.aliases) or None,
        "MacAddress": att.mac_address if active else att.mac,  # the one asked for, as dockerd
        "DriverOpts": dict(att.driver_opts) or None,
        "NetworkID": network.id,
        "EndpointID": att.endpoint_id if active else "",
        "Gateway": str(subnet.gateway) if active and subnet else "",
        "IPAddress": att.address if active else "",
        "IPPrefixLen": subnet.subnet.prefixlen if active and subnet else 0,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": dns_names(network, att, container) if active else None,
    }


def _ipam_config(att: Attachment) -> dict | None:
    """What was asked for, with dockerd's omitempty."""
    asked = {"IPv4Address": att.ipv4, "LinkLocalIPs": list(att.link_local)}
    return {k: v for k, v in asked.items() if v} or None


def dns_names(network, att: Attachment, container) -> list[str] | None:
    """What the embedded resolver answers for it: name, aliases, short id (not on bridge)."""
    if network.name == "bridge":
        return None
    return [container.name, *att.aliases, container.id[:12]]


def _pseudo(engine, name: str) -> dict:
    network = engine.networks.find(name)
    return {
        "IPAMConfig": None, "Links": None, "Aliases": None, "MacAddress": "",
        "DriverOpts": None, "NetworkID": network.id, "EndpointID": "", "Gateway": "",
        "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0, "DNSNames": None,
    }  # fmt: skip
