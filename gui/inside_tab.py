"""The Inside tab: what `docker run` made of the container, from the engine's vendor endpoint
(/vmctl/containers/{id}/inside): its namespaces beside the VM's own (so a shared one shows),
its cgroup with every limit and live usage against it, and its root filesystem as the stack
of the image's layers, base at the bottom, with the container's writable layer on top."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)
from vmctl_gui import errors, fmt
from vmctl_gui.bridge import Bridge
from vmctl_gui.layer_stack import LayerStack

REFRESH_MS = 3000  # live usage is read again this often while the tab is shown
CHANGE_LETTERS = "CAD"  # docker diff's: Kind 0 changed, 1 added, 2 deleted
NAMESPACE_NAMES = {
    "pid": "pid (processes)", "mnt": "mount (filesystems)", "uts": "uts (hostname)",
    "ipc": "ipc (shared memory)", "net": "net (network)", "cgroup": "cgroup", "user": "user (ids)",
}  # fmt: skip


def namespace_rows(namespaces: list[dict]) -> list[tuple[str, str, str, str]]:
    return [
        (
            NAMESPACE_NAMES.get(ns["Type"], ns["Type"]),
            str(ns["Id"]),
            str(ns["AgentId"]),
            "shared with the VM" if ns["Shared"] else "its own",
        )
        for ns in namespaces
    ]


def layer_rows(rootfs: dict) -> list[tuple[str, str, str]]:
    """Top first, as a stack reads: the writable layer, then the image's layers down to the
    base; (layer, size, what made it)."""
    writable = rootfs.get("Writable") or {}
    count = len(writable.get("Changes") or [])
    rows = [("container layer (writable)", fmt.size(writable.get("Size", 0)), f"{count} changes")]
    layers = rootfs.get("Layers") or []
    for depth, layer in reversed(list(enumerate(layers))):
        name = f"{fmt.short_id(layer.get('Digest') or layer.get('DiffID') or '')}"
        where = " (base)" if depth == 0 else ""
        rows.append((f"image layer {depth + 1}: {name}{where}", fmt.size(layer.get("Size", 0)),
                     layer.get("CreatedBy") or "(no history)"))  # fmt: skip
    return rows


class InsideTab(QWidget):
    def __init__(self, bridge: Bridge) -> None:
        super().__init__()
        self.bridge = bridge
        self.container_id = ""
        self.facts: dict = {}
        self._reading = ""  # the container whose facts are being read
        self.status = QLabel(wordWrap=True, objectName="inside-status")
        self.refresh_button = QPushButton("Refresh", clicked=self.refresh)
        self.namespaces = _table(["Namespace", "Container's id", "VM's id", ""])
        self.cgroup_label = QLabel(wordWrap=True, objectName="cgroup")
        self.limits = _table(["File", "Value", "Limit set"])
        self.memory_bar = QProgressBar(format="%v")
        self.pids_bar = QProgressBar(format="%v")
        self.cpu_label = QLabel()
        self.stack = LayerStack()
        self.layers = QTreeWidget(columnCount=3)
        self.layers.setHeaderLabels(["Layer", "Size", "Made by"])
        self._layout()
        self.timer = QTimer(self, interval=REFRESH_MS, timeout=self._tick)

    def _layout(self) -> None:
        """One scrolling column: tables as tall as their rows, so every limit shows."""
        top = QHBoxLayout()
        top.addWidget(self.status, 1)
        top.addWidget(self.refresh_button)
        cgroup = QVBoxLayout()
        for widget in (self.cgroup_label, self.limits, self.memory_bar, self.pids_bar,
                       self.cpu_label):  # fmt: skip
            cgroup.addWidget(widget)
        cgroup.addStretch(1)
        row = QHBoxLayout()
        row.addWidget(_box("Namespaces", self.namespaces), 1)
        row.addWidget(_box("cgroup", cgroup), 1)
        body = QWidget()
        sections = QVBoxLayout(body)
        sections.addLayout(row)
        layers = QVBoxLayout()
        layers.addWidget(self.stack)
        layers.addWidget(self.layers)
        sections.addWidget(_box("Root filesystem: the layers, top to base", layers))
        sections.addStretch(1)
        column = QVBoxLayout(self)
        column.addLayout(top)
        self.scroll = QScrollArea(widgetResizable=True, widget=body)
        column.addWidget(self.scroll, 1)

    def show_container(self, container_id: str) -> None:
        if container_id != self.container_id:
            self.facts = {}
        self.container_id = container_id
        self.refresh()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def refresh(self) -> None:
        """Read the facts again, unless a read of this container's is under way (a read of
        the container selected before does not hold this one up)."""
        if self.container_id and self._reading != self.container_id:
            self._reading = self.container_id
            self.bridge.inside(self.container_id, self.show_facts, self._failed)

    def _tick(self) -> None:
        if self.isVisible() and self.facts.get("Running", True):
            self.refresh()

    def _failed(self, error: BaseException) -> None:
        self._reading = ""
        self.status.setText(f"Cannot look inside: {_words(error)}")

    def show_facts(self, facts: dict) -> None:
        if facts.get("Id") == self._reading:
            self._reading = ""
        if facts.get("Id") != self.container_id:
            return  # an answer about the container selected before
        self.facts = facts
        running = facts.get("Running")
        self.status.setText(
            f"pid {facts['Pid']} in the VM, seen from the engine (pid {facts['Agent']['Pid']})"
            if running
            else "The container is not running: no processes, so no namespaces or cgroup."
        )
        _fill(self.namespaces, namespace_rows(facts.get("Namespaces") or []))
        self._show_cgroup(facts.get("Cgroup"))
        self._show_layers(facts.get("RootFS") or {})

    def _show_cgroup(self, cgroup: dict | None) -> None:
        if cgroup is None:
            self.cgroup_label.setText("No cgroup: the container is not running.")
            _fill(self.limits, [])
            return
        paths = cgroup["Paths"]
        more = f" (and {len(paths) - 1} more hierarchies)" if len(paths) > 1 else ""
        self.cgroup_label.setText(f"cgroup v{cgroup['Version']}: {paths[0]}{more}")
        self.cgroup_label.setToolTip("\n".join(paths))
        _fill(self.limits, [(lim["File"], lim["Value"], "yes" if lim["Set"] else "no")
                            for lim in cgroup["Limits"]])  # fmt: skip
        usage = cgroup["Usage"]
        _bar(
            self.memory_bar,
            "Memory",
            usage["Memory"]["Current"],
            usage["Memory"]["Limit"],
            fmt.size,
        )
        _bar(self.pids_bar, "Processes", usage["Pids"]["Current"], usage["Pids"]["Limit"], str)
        self.cpu_label.setText(f"CPU time used: {usage['Cpu']['UsageNanos'] / 1e9:.2f} s")

    def _show_layers(self, rootfs: dict) -> None:
        self.layers.clear()
        changes = (rootfs.get("Writable") or {}).get("Changes") or []
        rows = layer_rows(rootfs)
        self.stack.show_rows(rows)
        for i, row in enumerate(rows):
            item = QTreeWidgetItem(list(row))
            if i == 0:
                for change in changes:
                    item.addChild(
                        QTreeWidgetItem([f"{CHANGE_LETTERS[change['Kind']]} {change['Path']}"])
                    )
            self.layers.addTopLevelItem(item)
        self.layers.expandAll()
        self.layers.resizeColumnToContents(0)
        rows = self.layers.topLevelItemCount() + len(changes)
        line = self.layers.fontMetrics().height() + 4
        self.layers.setFixedHeight(self.layers.header().sizeHint().height() + rows * line + 8)


def _words(error: BaseException) -> str:
    """An engine older than this app answers the vendor endpoint with dockerd's 404 for an
    unknown path; the VM's next start deploys the engine that has it."""
    if getattr(error, "explanation", None) == "page not found":
        return "the engine in the VM is older than this app. Restart the VM to update it."
    return errors.describe(error)


def _table(headers: list[str]) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.verticalHeader().hide()
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    table.horizontalHeader().setStretchLastSection(True)
    table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    return table


def _fill(table: QTableWidget, rows: list[tuple[str, ...]]) -> None:
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            table.setItem(r, c, QTableWidgetItem(text))
    table.resizeColumnsToContents()
    table.resizeRowsToContents()
    height = table.horizontalHeader().sizeHint().height() + 2 * table.frameWidth()
    table.setFixedHeight(height + sum(table.rowHeight(r) for r in range(len(rows))))


def _bar(bar: QProgressBar, what: str, current: int, limit: int, show) -> None:
    """Usage against the limit; without a limit the bar is full-width text, not a ratio."""
    if limit:
        bar.setRange(0, 1000)
        bar.setValue(min(1000, round(current * 1000 / limit)))
        bar.setFormat(f"{what}: {show(current)} of {show(limit)}")
    else:
        bar.setRange(0, 1)
        bar.setValue(0)
        bar.setFormat(f"{what}: {show(current)} (no limit)")


def _box(title: str, content) -> QGroupBox:
    box = QGroupBox(title)
    if isinstance(content, QWidget):
        layout = QVBoxLayout(box)
        layout.addWidget(content)
        layout.addStretch(1)  # a table as tall as its rows sits at the top
    else:
        box.setLayout(content)
    return box
