"""The Settings tab's shared folders: the host folders the VM sees at the same path (what
`docker run -v "$PWD":/src` may bind), added, removed or made read-only through the very code
`vmctl config --mount PATH[:ro]` / `--unmount PATH` runs (`VMConfig.edit_mounts`), so a
folder that cannot be shared is refused in the CLI's words. Edits wait for Save; the VM
takes them when it next starts (the tab says so and offers a restart)."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from vmctl import config as vmconfig
from vmctl.errors import VmctlError

DEFAULTS = "With none listed, your home folder is shared (as Docker Desktop does)."


def defaults_line(config: vmconfig.VMConfig) -> str:
    """What the VM shares while the list is empty, named (a blank list reads as "nothing")."""
    shared = ", ".join(share.host for share in config.shares())
    return f"None listed: {shared} shared by default, as Docker Desktop does."


PATH = Qt.ItemDataRole.UserRole


def ask_folder(parent: QWidget) -> str:
    """The folder dialog; "" when the user cancels."""
    return QFileDialog.getExistingDirectory(parent, "Share a folder with the VM")


def mount_line(mount: str) -> str:
    path, read_only = (mount[:-3], True) if mount.endswith(":ro") else (mount, False)
    return f"{path}  (read-only)" if read_only else path


class SharedFolders(QGroupBox):
    """`config` is the form's config as edited so far; `say` shows a refusal in words."""

    def __init__(self, say: Callable[[str], None], ask: Callable[[QWidget], str] = ask_folder):
        super().__init__("Shared folders")
        self.say, self.ask = say, ask
        self.config = vmconfig.VMConfig()
        self.list = QListWidget()
        self.list.setMaximumHeight(110)
        self.list.currentItemChanged.connect(lambda *_: self._selected())
        self.add_button = QPushButton("Add…", clicked=self.add)
        self.remove_button = QPushButton("Remove", clicked=self.remove, enabled=False)
        self.read_only = QCheckBox("Read-only", enabled=False)
        self.read_only.clicked.connect(self.set_read_only)
        buttons = QHBoxLayout()
        for widget in (self.add_button, self.remove_button, self.read_only):
            buttons.addWidget(widget)
        buttons.addStretch(1)
        self.default_note = QLabel(wordWrap=True, objectName="shares-default")
        column = QVBoxLayout(self)
        column.addWidget(self.list)
        column.addWidget(self.default_note)
        column.addLayout(buttons)

    @property
    def mounts(self) -> tuple[str, ...]:
        return self.config.mounts

    def show_config(self, config: vmconfig.VMConfig) -> None:
        self.config = config
        self.list.clear()
        for mount in config.mounts:
            item = QListWidgetItem(mount_line(mount))
            item.setData(PATH, mount.removesuffix(":ro"))
            self.list.addItem(item)
        self.setToolTip(DEFAULTS)
        self.list.setToolTip(DEFAULTS if not config.mounts else "")
        self.default_note.setText("" if config.mounts else defaults_line(config))
        self.default_note.setVisible(not config.mounts)
        self._selected()

    def add(self) -> None:
        folder = self.ask(self)
        if folder:
            self._edit([folder], [], f"Cannot share {folder}")

    def remove(self) -> None:
        path = self._current()
        if path:
            self._edit([], [path], f"Cannot stop sharing {path}")

    def set_read_only(self, read_only: bool) -> None:
        path = self._current()
        if path:
            self._edit([path + (":ro" if read_only else "")], [], f"Cannot change {path}")

    def _edit(self, add: list[str], remove: list[str], failed: str) -> None:
        chosen = self._current()
        try:
            edited = self.config.edit_mounts(add, remove)
        except VmctlError as e:
            self.say(f"{failed}: {e}.")
            self._selected()  # the check box shows the folder's access as it still is
            return
        added = [m for m in edited.mounts if m not in self.config.mounts]
        self.show_config(edited)
        self._select(added[0].removesuffix(":ro") if added else chosen)
        self.say("" if edited.mounts else DEFAULTS)

    def _select(self, path: str | None) -> None:
        for row in range(self.list.count()):
            if self.list.item(row).data(PATH) == path:
                self.list.setCurrentRow(row)

    def _current(self) -> str | None:
        item = self.list.currentItem()
        return None if item is None else item.data(PATH)

    def _selected(self) -> None:
        path = self._current()
        self.remove_button.setEnabled(path is not None)
        self.read_only.setEnabled(path is not None)
        self.read_only.setChecked(path is not None and f"{path}:ro" in self.config.mounts)
