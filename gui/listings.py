"""The engine's JSON as the GUI's rows: pure functions over what docker-py returns, so each
is tested on Docker's own shapes without an engine."""

from __future__ import annotations

import re

from vmctl_gui.engine import ContainerRow, HistoryRow, NetworkRow, Pruned, PublishedPort, VolumeRow


def container_row(c: dict) -> ContainerRow:
    """A row of `GET /containers/json`, with its health and the ports it publishes."""
    names = c.get("Names") or [""]
    return ContainerRow(
        id=c["Id"],
        name=names[0].lstrip("/"),
        image=c.get("Image", ""),
        command=c.get("Command", ""),
        state=c.get("State", ""),
        status=c.get("Status", ""),
        created=c.get("Created", 0),
        ports=", ".join(_port_text(p) for p in c.get("Ports") or []),
        health=_health(c.get("Status", "")),
        published=tuple(
            PublishedPort(p.get("IP", ""), p["PublicPort"], p["PrivatePort"], p.get("Type", "tcp"))
            for p in c.get("Ports") or []
            if p.get("PublicPort")
        ),
    )


_HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")


def _health(status: str) -> str:
    """The health `docker ps` writes into Status: "Up 3 minutes (healthy)"."""
    found = _HEALTH.search(status)
    return found.group(1).removeprefix("health: ") if found else ""


def _port_text(port: dict) -> str:
    inside = f"{port.get('PrivatePort')}/{port.get('Type', 'tcp')}"
    if port.get("PublicPort"):
        return f"{port.get('IP', '0.0.0.0')}:{port['PublicPort']}->{inside}"
    return inside


def history_row(row: dict) -> HistoryRow:
    """A row of `GET /images/{name}/history`."""
    return HistoryRow(row.get("Id") or "<missing>", row.get("Created") or 0,
                      row.get("CreatedBy") or "", row.get("Size") or 0,
                      row.get("Comment") or "")  # fmt: skip


def volume_rows(df_volumes: list[dict], containers: list[dict]) -> list[VolumeRow]:
    """`GET /system/df`'s volumes (with UsageData.Size) and who mounts each, from
    `GET /containers/json?all=1`'s Mounts."""
    users: dict[str, list[str]] = {}
    for c in containers:
        name = (c.get("Names") or ["/"])[0].lstrip("/")
        for mount in c.get("Mounts") or []:
            if mount.get("Type") == "volume" and mount.get("Name"):
                users.setdefault(mount["Name"], []).append(name)
    return [_volume_row(v, users.get(v["Name"], [])) for v in df_volumes]


def _volume_row(volume: dict, users: list[str]) -> VolumeRow:
    size = (volume.get("UsageData") or {}).get("Size", -1)
    return VolumeRow(volume["Name"], volume.get("Driver", "local"), volume.get("Mountpoint", ""),
                     volume.get("CreatedAt", ""), size, tuple(sorted(users)))  # fmt: skip


def network_row(network: dict) -> NetworkRow:
    """`GET /networks/{id}`'s JSON (its Containers filled only there, not in the list)."""
    config = ((network.get("IPAM") or {}).get("Config") or [{}])[0]
    attached = (network.get("Containers") or {}).values()
    return NetworkRow(
        network["Id"],
        network["Name"],
        network.get("Driver", ""),
        config.get("Subnet", ""),
        config.get("Gateway", ""),
        tuple(sorted(f"{c['Name']} ({c.get('IPv4Address') or 'no address'})" for c in attached)),
    )


def pruned(answer: dict, key: str) -> Pruned:
    """A prune's answer (`VolumesDeleted`, `ImagesDeleted`...) and its SpaceReclaimed."""
    removed = answer.get(key) or []
    names = [r if isinstance(r, str) else next(iter(r.values()), "") for r in removed]
    return Pruned(tuple(names), answer.get("SpaceReclaimed") or 0)
