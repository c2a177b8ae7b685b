"""The Settings tab: the VM's config (vm.json, validated by vmctl.config): resources, driver,
image, registry mirrors, where published ports listen and the shared folders (gui.shares_box);
and the app's own preferences (start at login, start minimised to the tray). The VM takes a
change when it next starts: saved while it runs, the tab says which settings wait for a
restart and offers one."""

from __future__ import annotations

import dataclasses

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from vmctl_gui.bridge import Bridge
from vmctl_gui.shares_box import SharedFolders

from vmctl import config as vmconfig
from vmctl.errors import VmctlError

LABELS = {
    "cpus": "CPUs", "memory_mib": "memory", "disk_gib": "disk size", "driver": "driver",
    "libvirt_uri": "libvirt URI", "image": "base image", "registry_mirrors": "registry mirrors",
    "publish_address": "the published-ports address", "mounts": "shared folders",
}  # fmt: skip


def restart_needed(before: vmconfig.VMConfig, after: vmconfig.VMConfig) -> list[str]:
    """The settings that changed, in words: each waits for the VM's next start."""
    return [
        LABELS.get(f.name, f.name)
        for f in dataclasses.fields(after)
        if getattr(before, f.name) != getattr(after, f.name)
    ]


def listed(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


class SettingsView(QWidget):
    def __init__(self, bridge: Bridge, desktop) -> None:
        super().__init__()
        self.bridge = bridge
        self.desktop = desktop  # owns the app's preferences and the login item
        self.driver = QComboBox()
        self.driver.addItems(vmconfig.DRIVERS)
        self.uri = QLineEdit(placeholderText="default: qemu:///system as root, else session")
        self.image = QLineEdit(placeholderText="default: Debian 12 genericcloud (downloaded)")
        self.cpus = QSpinBox(minimum=1, maximum=256)
        self.memory = QSpinBox(minimum=512, maximum=1 << 20, singleStep=512, suffix=" MiB")
        self.disk = QSpinBox(minimum=4, maximum=1 << 16, suffix=" GiB")
        self.mirrors = QPlainTextEdit(placeholderText="one URL a line, e.g. http://10.0.2.2:5000")
        self.mirrors.setMaximumHeight(70)
        self.publish = QLineEdit(placeholderText="127.0.0.1 (this computer only); 0.0.0.0: all")
        self.at_login = QCheckBox("Start the app and the VM when I log in")
        self.minimized = QCheckBox("Start minimised to the tray")
        self.note = QLabel(wordWrap=True, objectName="note")
        self.shares = SharedFolders(self.note.setText)
        self.save_button = QPushButton("Save", clicked=self.save)
        self.revert_button = QPushButton("Revert", clicked=self.load)
        self.restart_button = QPushButton("Restart the VM now", clicked=self.restart)
        self.restart_button.hide()
        self._layout()
        self.load()

    def _layout(self) -> None:
        vm_form = QFormLayout()
        vm_form.addRow("Driver", self.driver)
        vm_form.addRow("libvirt URI", self.uri)
        vm_form.addRow("Base image", self.image)
        vm_form.addRow("CPUs", self.cpus)
        vm_form.addRow("Memory", self.memory)
        vm_form.addRow("Disk", self.disk)
        vm_form.addRow("Registry mirrors", self.mirrors)
        vm_form.addRow("Published ports listen on", self.publish)
        vm_box = QGroupBox("Virtual machine")
        vm_box.setLayout(vm_form)
        app_box = QGroupBox("This app")
        app_column = QVBoxLayout(app_box)
        app_column.addWidget(self.at_login)
        app_column.addWidget(self.minimized)
        buttons = QHBoxLayout()
        buttons.addWidget(self.note, 1)
        buttons.addWidget(self.restart_button)
        buttons.addWidget(self.revert_button)
        buttons.addWidget(self.save_button)
        column = QVBoxLayout(self)
        column.addWidget(vm_box)
        column.addWidget(self.shares)
        column.addWidget(app_box)
        column.addLayout(buttons)
        column.addStretch(1)

    def load(self) -> None:
        try:
            c = self.bridge.engine.config()
        except VmctlError as e:
            self.note.setText(str(e))
            return
        self.driver.setCurrentText(c.driver)
        self.uri.setText(c.libvirt_uri or "")
        self.image.setText(c.image or "")
        self.cpus.setValue(c.cpus)
        self.memory.setValue(c.memory_mib)
        self.disk.setValue(c.disk_gib)
        self.mirrors.setPlainText("\n".join(c.registry_mirrors))
        self.publish.setText(c.publish_address)
        self.shares.show_config(c)
        self.at_login.setChecked(self.desktop.starts_at_login())
        self.minimized.setChecked(self.desktop.prefs.start_minimized)
        self.note.setText("")

    def edited(self) -> vmconfig.VMConfig:
        """The form as a config; raises VmctlError with vmctl's own words when it is invalid."""
        mirrors = [line.strip() for line in self.mirrors.toPlainText().splitlines()]
        return dataclasses.replace(  # what the form does not show is kept as it is
            self.bridge.engine.config(),
            cpus=self.cpus.value(),
            memory_mib=self.memory.value(),
            disk_gib=self.disk.value(),
            driver=self.driver.currentText(),
            libvirt_uri=self.uri.text().strip() or None,
            image=self.image.text().strip() or None,
            registry_mirrors=tuple(m for m in mirrors if m),
            publish_address=self.publish.text().strip() or "127.0.0.1",
            mounts=self.shares.mounts,
        )

    def save(self) -> None:
        try:
            before, config = self.bridge.engine.config(), self.edited()
        except VmctlError as e:
            self.note.setText(f"Not saved: {e}")
            return
        self.desktop.set_preferences(self.at_login.isChecked(), self.minimized.isChecked())
        self.note.setText("Saving…")
        changed = restart_needed(before, config)
        self.bridge.save_config(config, on_saved=lambda: self._saved(changed))

    def _saved(self, changed: list[str]) -> None:
        running = self.bridge.state.state in ("running", "starting", "degraded")
        if not (running and changed):
            self.note.setText("Saved.")
            return
        self.note.setText(f"Saved. The VM takes the new {listed(changed)} when it restarts.")
        self.restart_button.show()

    def restart(self) -> None:
        self.restart_button.hide()
        self.note.setText("Restarting the VM: the Engine tab shows its progress.")
        self.bridge.restart_vm()
