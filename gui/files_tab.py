"""The Files tab: the selected container's filesystem through the archive API (`docker cp`'s
door, gui.archive), one directory per request: a path bar, a tree whose folders expand as they
are opened (name, size, mode, modified, symlink target), and a file downloaded through a save
dialog. A symlink opens where it points (the engine follows it), as the tree's new top.

Nothing is read until the tab is shown. Reads run in workers and are cancelled (their answer
closed, so the engine stops writing) when the container or the top changes. A container that
exits keeps its files (browsed as it left them); a failure is said in the error bar and on
the tab, and the tree keeps working."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)
from vmctl_gui import errors, fmt
from vmctl_gui.archive import FileEntry, Listing, directory_request, save_member, top_entries
from vmctl_gui.bridge import Bridge
from vmctl_gui.jobs import Job

COLUMNS = ["Name", "Size", "Mode", "Modified", "Link target"]
EXITED = "The container is not running: its files are shown as it left them."
GONE = "The container was removed: its files are gone."
READING = "Reading…"
ENTRY = Qt.ItemDataRole.UserRole  # an item's (path, FileEntry)


def ask_save_path(parent: QWidget, name: str) -> str:
    """The save dialog; "" when the user cancels."""
    return QFileDialog.getSaveFileName(parent, "Download file", name)[0]


def entry_row(entry: FileEntry) -> list[str]:
    size = "" if entry.is_dir else fmt.size(entry.size)
    target = f"→ {entry.link_target}" if entry.link_target else ""
    return [entry.name, size, entry.mode, entry.when, target]


def normal_path(text: str) -> str:
    """What the path bar names, as an absolute path without `..` or a trailing slash."""
    return posixpath.normpath("/" + text.strip().lstrip("/"))  # normpath keeps a leading //


def read_listing(engine, container_id: str, path: str, job: Job) -> Listing:
    """In a worker: the directory's top level, its answer closed as soon as that is read."""
    stream = engine.archive(container_id, directory_request(path))
    job.on_cancel(stream.close)
    try:
        return Listing(path, top_entries(stream), stream.bytes_read)
    finally:
        stream.close()


def download(engine, container_id: str, path: str, dest: Path, job: Job) -> int:
    stream = engine.archive(container_id, path)
    job.on_cancel(stream.close)
    try:
        return save_member(stream, dest)
    finally:
        stream.close()


def in_words(path: str, error: BaseException) -> str:
    """The engine's words name the `PATH/.` we asked for: said about the path instead."""
    status = getattr(error, "status_code", None)
    if status == 404 and "No such container" not in str(error):
        return f"{path} is not in the container (any more): it was removed or renamed."
    if status == 400 and "not a directory" in str(error):
        return f"{path} is not a folder (a symlink to a file?): only a folder opens."
    return errors.describe(error)


class FilesTab(QWidget):
    def __init__(self, bridge: Bridge, ask_save: Callable[[QWidget, str], str] = ask_save_path):
        super().__init__()
        self.bridge = bridge
        self.ask_save = ask_save
        self.container_id = ""
        self.running = True
        self.top = "/"  # the directory at the tree's top level
        self.shown_path = ""  # the top the tree shows ("" while none is)
        self.last_listing: Listing | None = None
        self.jobs: list[Job] = []
        self.path_bar = QLineEdit("/", returnPressed=lambda: self.open_path(self.path_bar.text()))
        self.up_button = QPushButton("Up", clicked=self.up)
        self.refresh_button = QPushButton("Refresh", clicked=self.refresh)
        self.download_button = QPushButton("Download…", clicked=self.download, enabled=False)
        self.tree = QTreeWidget(columnCount=len(COLUMNS))
        self.tree.setHeaderLabels(COLUMNS)
        self.tree.itemExpanded.connect(self._expanded)
        self.tree.itemActivated.connect(self._activated)
        self.tree.itemSelectionChanged.connect(self._selected)
        self.status = QLabel(wordWrap=True, objectName="files-status")
        self._layout()

    def _layout(self) -> None:
        bar = QHBoxLayout()
        for widget in (self.up_button, self.path_bar, self.refresh_button, self.download_button):
            bar.addWidget(widget, 1 if widget is self.path_bar else 0)
        column = QVBoxLayout(self)
        column.addLayout(bar)
        column.addWidget(self.status)
        column.addWidget(self.tree, 1)

    # ---- what the details pane tells it ----

    def show_container(self, container_id: str, running: bool) -> None:
        if container_id != self.container_id:
            self.container_id, self.top = container_id, "/"
        self.running = running
        self._clear()
        if self.isVisible():
            self.refresh()

    def gone(self, words: str = GONE) -> None:
        """The container left the list (removed, or the engine stopped)."""
        self._clear()
        self.status.setText(words)

    def stop(self) -> None:
        self._clear()
        self.container_id = ""

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self.container_id and not self.shown_path and not self.jobs:
            self.refresh()

    # ---- browsing ----

    def open_path(self, text: str) -> None:
        self.top = normal_path(text)
        self.refresh()

    def up(self) -> None:
        self.open_path(posixpath.dirname(self.top))

    def refresh(self) -> None:
        if not self.container_id:
            return
        self._clear()
        self.path_bar.setText(self.top)
        self.status.setText(f"Reading {self.top}…")
        self._read(self.top, self._show_top, self._top_failed)

    def _read(self, path: str, on_done, on_error) -> None:
        engine, container = self.bridge.engine, self.container_id
        self._submit(f"list {path}", lambda job: read_listing(engine, container, path, job),
                     on_done, on_error)  # fmt: skip

    def _submit(self, label: str, work, on_done, on_error, lasting: bool = False) -> None:
        """In a worker; forgotten when its outcome comes. A read cancelled by `_clear` reports
        nothing (its answer is closed, and the engine stops writing); a `lasting` one (a
        download the user asked for) goes on whatever the tab shows meanwhile."""

        def done(value: object) -> None:
            self._forget(job)
            on_done(value)

        def failed(error: BaseException) -> None:
            self._forget(job)
            on_error(error)

        job = Job(work, label=label, on_done=done, on_error=failed)
        if not lasting:
            self.jobs.append(job)
        self.bridge.api.submit(job)

    def _forget(self, job: Job) -> None:
        if job in self.jobs:
            self.jobs.remove(job)

    def _show_top(self, listing: Listing) -> None:
        self.shown_path, self.last_listing = listing.path, listing
        self._fill(self.tree.invisibleRootItem(), listing)
        for c in range(len(COLUMNS)):
            self.tree.resizeColumnToContents(c)
        count = f"{len(listing.entries)} entr{'y' if len(listing.entries) == 1 else 'ies'}"
        self.status.setText(count if self.running else f"{count}. {EXITED}")

    def _top_failed(self, error: BaseException) -> None:
        words = in_words(self.top, error)
        self.status.setText(f"Cannot read {self.top}: {words}")
        self.bridge.error.emit(f"list {self.top} in the container", words)

    def _fill(self, parent: QTreeWidgetItem, listing: Listing) -> None:
        parent.takeChildren()
        for entry in listing.entries:
            item = QTreeWidgetItem(entry_row(entry))
            item.setData(0, ENTRY, (posixpath.join(listing.path, entry.name), entry))
            if entry.is_dir:
                item.addChild(QTreeWidgetItem([READING]))  # expandable; read when opened
            parent.addChild(item)

    def _expanded(self, item: QTreeWidgetItem) -> None:
        path, _entry = item.data(0, ENTRY)
        placeholder = item.childCount() == 1 and item.child(0).data(0, ENTRY) is None
        if placeholder and f"list {path}" not in (job.label for job in self.jobs):
            item.child(0).setText(0, READING)
            self._read(path, lambda listing: self._fill(item, listing),
                       lambda error: self._folder_failed(item, path, error))  # fmt: skip

    def _folder_failed(self, item: QTreeWidgetItem, path: str, error: BaseException) -> None:
        words = in_words(path, error)
        item.child(0).setText(0, f"Cannot read it: {words}")
        item.setExpanded(False)  # opening it again tries again
        self.bridge.error.emit(f"list {path} in the container", words)

    def _activated(self, item: QTreeWidgetItem, _column: int = 0) -> None:
        found = item.data(0, ENTRY)
        if found is None:
            return
        path, entry = found
        if entry.link_target:
            self.open_path(path)
        elif entry.is_file:
            self.download()

    # ---- download ----

    def download(self) -> None:
        found = self._current()
        if found is None or not found[1].is_file or not self.container_id:
            return
        source, entry = found
        dest = self.ask_save(self, entry.name)
        if not dest:
            return
        engine, container = self.bridge.engine, self.container_id
        self.status.setText(f"Downloading {source}…")
        self._submit(f"download {source}",
                     lambda job: download(engine, container, source, Path(dest), job),
                     lambda size: self.status.setText(
                         f"Saved {source} ({fmt.size(size)}) to {dest}"),
                     lambda error: self._download_failed(source, error),
                     lasting=True)  # fmt: skip

    def _download_failed(self, source: str, error: BaseException) -> None:
        words = in_words(source, error)
        self.status.setText(f"Cannot download {source}: {words}")
        self.bridge.error.emit(f"download {source}", words)

    def _current(self) -> tuple[str, FileEntry] | None:
        item = self.tree.currentItem()
        return None if item is None else item.data(0, ENTRY)

    def _selected(self) -> None:
        found = self._current()
        self.download_button.setEnabled(found is not None and found[1].is_file)

    def _clear(self) -> None:
        for job in list(self.jobs):
            job.cancel()
        self.jobs = []
        self.shown_path, self.last_listing = "", None
        self.tree.clear()
        self.download_button.setEnabled(False)
        self.status.setText("")
