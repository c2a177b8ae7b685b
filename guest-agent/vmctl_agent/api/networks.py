"""/networks: create, list (with filters), inspect, remove, connect, disconnect and prune,
with dockerd's shapes, status codes and words."""

from __future__ import annotations

from vmctl_agent.api import labelfilter, networking
from vmctl_agent.api.http import ApiError, Response, empty, json_response, parse_filters
from vmctl_agent.network.networks import PREDEFINED
from vmctl_agent.network.records import Network
from vmctl_agent.runtime.index import ContainerNotFound

_CREATE_FIELDS = {
    "Name", "CheckDuplicate", "Driver", "Internal", "Attachable", "Ingress", "IPAM",
    "EnableIPv6", "EnableIPv4", "Options", "Labels", "Scope", "ConfigOnly", "ConfigFrom",
}  # fmt: skip
_FILTERS = {"name", "id", "label", "driver", "type", "dangling", "scope"}


def create(engine, request) -> Response:
    body = request.json()
    _refuse_unhonoured(body)
    network = engine.networks.create(
        body.get("Name") or "",
        ipam_configs=_ipam_configs(body.get("IPAM") or {}),
        internal=bool(body.get("Internal")),
        attachable=bool(body.get("Attachable")),
        labels=body.get("Labels") or {},
        ipam_options=(body.get("IPAM") or {}).get("Options"),
    )
    engine.events.publish("network", "create", network.id, name=network.name, type="bridge")
    return json_response({"Id": network.id, "Warning": ""}, 201)


def _refuse_unhonoured(body: dict) -> None:
    unknown = sorted(set(body) - _CREATE_FIELDS)
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]} in the network configuration")
    if not body.get("Name"):
        raise ApiError(400, "network name is required")
    if body.get("Driver") not in (None, "", "bridge"):
        raise ApiError(404, f'plugin "{body["Driver"]}" not found')
    if body.get("EnableIPv6"):
        raise ApiError(400, "EnableIPv6 is not supported yet: this engine's networks are IPv4")
    if body.get("EnableIPv4") is False:
        raise ApiError(400, "EnableIPv4=false is not supported: networks have IPv4")
    for field in ("Ingress", "ConfigOnly"):
        if body.get(field):
            raise ApiError(400, f"{field} is not supported: it belongs to swarm networks")
    if (body.get("ConfigFrom") or {}).get("Network"):
        raise ApiError(400, "ConfigFrom is not supported")
    if body.get("Options"):
        raise ApiError(400, f"network option {sorted(body['Options'])[0]} is not supported")
    if body.get("Scope") not in (None, "", "local"):
        raise ApiError(400, f"scope {body['Scope']} is not supported: networks are local")


def _ipam_configs(ipam: dict) -> list[dict]:
    if ipam.get("Driver") not in (None, "", "default"):
        raise ApiError(404, f'plugin "{ipam["Driver"]}" not found')
    if ipam.get("Options"):
        raise ApiError(400, "IPAM options are not supported")
    return ipam.get("Config") or []


def list_(engine, request) -> Response:
    filters = parse_filters(request.arg("filters", ""))
    for key in filters:
        if key not in _FILTERS:
            raise ApiError(400, f"invalid filter '{key}'")
    found = [n for n in engine.networks.all() if _matches(engine, n, filters)]
    return json_response([shape(engine, n, containers=False) for n in found])


def _matches(engine, network: Network, filters: dict[str, list[str]]) -> bool:
    checks = {
        "name": lambda v: v in network.name,
        "id": lambda v: network.id.startswith(v),
        "driver": lambda v: v == _driver(network),
        "scope": lambda v: v == "local",
        "type": lambda v: _type(v) == (network.name in PREDEFINED),
        "dangling": lambda v: _dangling(v) == _unused(engine, network),
    }
    if not labelfilter.matches(network.labels, filters.get("label", [])):
        return False
    return all(any(checks[k](v) for v in vs) for k, vs in filters.items() if k != "label")


def _type(value: str) -> bool:
    if value not in ("custom", "builtin"):
        raise ApiError(400, f"invalid filter: 'type'='{value}'")
    return value == "builtin"


def _dangling(value: str) -> bool:
    if value not in ("true", "false", "1", "0"):
        raise ApiError(400, f"invalid filter 'dangling={value}'")
    return value in ("true", "1")


def _unused(engine, network: Network) -> bool:
    """No active endpoint (a running container), as dockerd's prune and `dangling` count."""
    return network.name not in PREDEFINED and not engine.endpoints.active_on(network.id)


def _driver(network: Network) -> str:
    return network.driver


def inspect(engine, request, id: str) -> Response:
    return json_response(shape(engine, engine.networks.find(id), containers=True))


def shape(engine, network: Network, *, containers: bool) -> dict:
    """A network as dockerd shows it; inspect adds its containers."""
    return {
        "Name": network.name,
        "Id": network.id,
        "Created": network.created,
        "Scope": "local",
        "Driver": network.driver,
        "EnableIPv4": True,
        "EnableIPv6": False,
        "IPAM": {
            "Driver": "default",
            "Options": network.ipam_options,
            "Config": [s.to_json() for s in network.subnets],
        },
        "Internal": network.internal,
        "Attachable": network.attachable,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": _containers(engine, network) if containers else {},
        "Options": _options(network),
        "Labels": dict(network.labels),
    }


def _options(network: Network) -> dict:
    if network.name != "bridge":
        return dict(network.options)
    return {
        "com.docker.network.bridge.default_bridge": "true",
        "com.docker.network.bridge.enable_icc": "true",
        "com.docker.network.bridge.enable_ip_masquerade": "true",
        "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
        "com.docker.network.bridge.name": network.bridge,
        "com.docker.network.driver.mtu": "1500",
    }


def _containers(engine, network: Network) -> dict:
    out = {}
    prefix = network.subnets[0].subnet.prefixlen if network.subnets else 0
    for container_id, att in engine.endpoints.on(network.id).items():
        try:
            name = engine.runtime.get(container_id).name
        except ContainerNotFound:
            continue
        out[container_id] = {
            "Name": name,
            "EndpointID": att.endpoint_id,
            "MacAddress": att.mac_address,
            "IPv4Address": f"{att.address}/{prefix}",
            "IPv6Address": "",
        }
    return out


def remove(engine, request, id: str) -> Response:
    network = engine.networks.remove(id)
    engine.events.publish("network", "destroy", network.id, name=network.name, type="bridge")
    return empty(204)


def connect(engine, request, id: str) -> Response:
    body = request.json()
    network = engine.networks.find(id)
    container = engine.runtime.get(body.get("Container") or "")
    settings = body.get("EndpointConfig") or {}
    networking.check_endpoint(settings)
    engine.endpoints.connect(container, network, settings)
    engine.runtime.changed()
    _event(engine, "connect", network, container.id)
    return empty(200)


def disconnect(engine, request, id: str) -> Response:
    body = request.json()
    network = engine.networks.find(id)
    container = engine.runtime.get(body.get("Container") or "")
    engine.endpoints.disconnect(container, network)
    engine.runtime.changed()
    _event(engine, "disconnect", network, container.id)
    return empty(200)


def _event(engine, action: str, network: Network, container_id: str) -> None:
    engine.events.publish(
        "network", action, network.id, name=network.name, type="bridge", container=container_id
    )


def prune(engine, request) -> Response:
    filters = parse_filters(request.arg("filters", ""))
    for key in filters:
        if key not in ("label", "until"):
            raise ApiError(400, f"invalid filter '{key}'")
    if "until" in filters:
        raise ApiError(400, "the until filter is not supported for networks yet")
    deleted = []
    for network in engine.networks.all():
        labels_ok = labelfilter.matches(network.labels, filters.get("label", []))
        if labels_ok and _unused(engine, network):
            remove(engine, request, network.id)
            deleted.append(network.name)
    return json_response({"NetworksDeleted": deleted})
