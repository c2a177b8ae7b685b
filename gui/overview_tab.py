"""The Overview tab: what `docker inspect` says about a container, in the words of `docker ps`
and `docker run`'s flags, one line per field; and the Inspect tab: the whole JSON as a tree,
with copy."""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)
from vmctl_gui import fmt
from vmctl_gui.engine import PublishedPort

NONE = "—"


def overview(info: dict) -> list[tuple[str, str]]:
    """(label, text) for each field worth a line, from `docker inspect`'s JSON."""
    config, host = info.get("Config") or {}, info.get("HostConfig") or {}
    return [
        ("Name", str(info.get("Name", "")).lstrip("/")),
        ("ID", fmt.short_id(info.get("Id", ""))),
        ("Image", f"{config.get('Image', '')} ({fmt.short_id(info.get('Image', ''))})"),
        ("Command", " ".join([info.get("Path", ""), *(info.get("Args") or [])]).strip() or NONE),
        ("Created", info.get("Created", "") or NONE),
        ("State", state_text(info.get("State") or {})),
        ("Restart policy", restart_text(host.get("RestartPolicy") or {})),
        ("Ports", ports_text((info.get("NetworkSettings") or {}).get("Ports"))),
        ("Mounts", mounts_text(info.get("Mounts"))),
        ("Networks", networks_text(info.get("NetworkSettings") or {}, host)),
        ("Limits", limits_text(host)),
        ("Environment", "\n".join(config.get("Env") or []) or NONE),
        ("Working directory", config.get("WorkingDir") or "/"),
        ("User", config.get("User") or "root (default)"),
        ("Hostname", config.get("Hostname") or NONE),
        ("Labels", "\n".join(f"{k}={v}" for k, v in (config.get("Labels") or {}).items()) or NONE),
    ]


def state_text(state: dict) -> str:
    status = state.get("Status", "")
    health = (state.get("Health") or {}).get("Status")
    if state.get("Running"):
        text = f"{status} ({health})" if health else status
        return f"{text}, pid {state.get('Pid')}, since {state.get('StartedAt', '')}"
    if status == "exited":
        oom = ", killed for lack of memory" if state.get("OOMKilled") else ""
        return f"{status} with code {state.get('ExitCode')}{oom} at {state.get('FinishedAt', '')}"
    return status


def restart_text(policy: dict) -> str:
    name = policy.get("Name") or "no"
    retries = policy.get("MaximumRetryCount") or 0
    return f"{name} (at most {retries} retries)" if name == "on-failure" and retries else name


def ports_text(ports: dict | None) -> str:
    lines = []
    for inside, bindings in (ports or {}).items():
        for b in bindings or [None]:
            lines.append(f"{b['HostIp'] or '0.0.0.0'}:{b['HostPort']} → {inside}" if b else inside)
    return "\n".join(lines) or NONE


def port_links(ports: dict | None) -> list[PublishedPort]:
    """The published TCP ports of `docker inspect`'s NetworkSettings.Ports, each once."""
    found: dict[int, PublishedPort] = {}
    for inside, bindings in (ports or {}).items():
        number, _, proto = inside.partition("/")
        for b in bindings or []:
            if proto in ("tcp", "") and b.get("HostPort"):
                port = PublishedPort(b.get("HostIp", ""), int(b["HostPort"]), int(number))
                found.setdefault(port.host_port, port)
    return list(found.values())


def mounts_text(mounts: list | None) -> str:
    lines = [
        f"{m.get('Source') or m.get('Name', '')} → {m.get('Destination', '')}"
        f" ({m.get('Type', 'bind')}{'' if m.get('RW', True) else ', read-only'})"
        for m in mounts or []
    ]
    return "\n".join(lines) or NONE


def networks_text(settings: dict, host: dict) -> str:
    lines = [
        f"{name}: {n.get('IPAddress') or 'no address'}"
        + (f" (gateway {n['Gateway']})" if n.get("Gateway") else "")
        for name, n in (settings.get("Networks") or {}).items()
    ]
    return "\n".join(lines) or f"{host.get('NetworkMode') or 'default'} (no addresses)"


def limits_text(host: dict) -> str:
    parts = []
    if host.get("Memory"):
        parts.append(f"memory {fmt.size(host['Memory'])}")
    if host.get("NanoCpus"):
        parts.append(f"{host['NanoCpus'] / 1e9:g} CPUs")
    if (host.get("PidsLimit") or 0) > 0:
        parts.append(f"{host['PidsLimit']} processes")
    return ", ".join(parts) or "none"


class OverviewTab(QScrollArea):
    """`open_url` opens a link (the browser); `publish_address` says where the host agent
    listens for published ports (the VM's config)."""

    def __init__(self, open_url: Callable[[str], object], publish_address: Callable[[], str]):
        super().__init__(widgetResizable=True)
        self.body = QWidget()
        self.form = QFormLayout(self.body)
        self.setWidget(self.body)
        self.fields: dict[str, QLabel] = {}
        self.open_url = open_url
        self.publish_address = publish_address
        self.links = QLabel(objectName="links")

    def show_info(self, info: dict) -> None:
        while self.form.rowCount():
            self.form.removeRow(0)
        self.fields = {}
        for label, text in overview(info):
            value = QLabel(text, wordWrap=True, objectName=label)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.fields[label] = value
            self.form.addRow(f"{label}:", value)
        self._show_links(port_links((info.get("NetworkSettings") or {}).get("Ports")))

    def _show_links(self, ports: list[PublishedPort]) -> None:
        """Below the ports: each published TCP port as a link that opens in the browser."""
        self.links = QLabel(objectName="links", wordWrap=True)
        self.links.linkActivated.connect(self.open_url)
        urls = [p.url(self.publish_address()) for p in ports]
        self.links.setText(" ".join(f"<a href='{escape(u)}'>{escape(u)}</a>" for u in urls))
        if urls:
            below_ports = list(self.fields).index("Ports") + 1
            self.form.insertRow(below_ports, "Open in browser:", self.links)


class InspectTab(QWidget):
    """The JSON as a tree; copy the whole of it, or the value of the selected node."""

    def __init__(self) -> None:
        super().__init__()
        self.info: dict = {}
        self.tree = QTreeWidget(columnCount=2)
        self.tree.setHeaderLabels(["Key", "Value"])
        self.copy_all = QPushButton("Copy JSON", clicked=self.copy_json)
        self.copy_value = QPushButton("Copy value", clicked=self.copy_selected)
        buttons = QHBoxLayout()
        buttons.addWidget(self.copy_all)
        buttons.addWidget(self.copy_value)
        buttons.addStretch(1)
        column = QVBoxLayout(self)
        column.addLayout(buttons)
        column.addWidget(self.tree)

    def show_info(self, info: dict) -> None:
        self.info = info
        self.tree.clear()
        for key, value in info.items():
            self.tree.addTopLevelItem(node(key, value))
        self.tree.resizeColumnToContents(0)

    def copy_json(self) -> str:
        text = json.dumps(self.info, indent=2)
        QGuiApplication.clipboard().setText(text)
        return text

    def copy_selected(self) -> str:
        items = self.tree.selectedItems()
        if not items:
            return ""
        text = items[0].data(1, Qt.ItemDataRole.UserRole)  # the value as JSON
        QGuiApplication.clipboard().setText(text)
        return text


def node(key: str, value) -> QTreeWidgetItem:
    """A tree item for `value`: containers open into children, leaves show their JSON."""
    shown = value if isinstance(value, str) else json.dumps(value)
    if isinstance(value, dict):
        shown = f"{{{len(value)}}}"
    elif isinstance(value, list):
        shown = f"[{len(value)}]"
    item = QTreeWidgetItem([str(key), shown])
    item.setData(
        1,
        Qt.ItemDataRole.UserRole,
        value if isinstance(value, str) else json.dumps(value, indent=2),
    )
    if isinstance(value, dict | list):
        children = value.items() if isinstance(value, dict) else enumerate(value)
        for child_key, child in children:
            item.addChild(node(str(child_key), child))
    return item
