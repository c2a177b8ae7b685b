"""The dashboard window: one error bar on top (the one place errors appear), then the tabs."""

from __future__ import annotations

import time

from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from vmctl_gui import icons
from vmctl_gui.containers_view import ContainersView
from vmctl_gui.engine_view import EngineView
from vmctl_gui.images_view import ImagesView
from vmctl_gui.networks_view import NetworksView
from vmctl_gui.settings_view import SettingsView
from vmctl_gui.volumes_view import VolumesView

ERRORS_KEPT = 50


class ErrorBar(QFrame):
    """The latest error in words that say what to do next; earlier ones in its tooltip."""

    def __init__(self) -> None:
        super().__init__(objectName="errors")
        self.setStyleSheet(
            "#errors { background: #fbeaea; border: 1px solid #e3a5a0; border-radius: 4px; }"
        )
        self.text = QLabel(wordWrap=True)
        self.dismiss = QPushButton("Dismiss", clicked=self.hide)
        row = QHBoxLayout(self)
        row.addWidget(self.text, 1)
        row.addWidget(self.dismiss)
        self.history: list[str] = []
        self.hide()

    def report(self, what: str, message: str) -> None:
        line = f"Could not {what}: {message}"
        self.history = [f"{time.strftime('%H:%M:%S')}  {line}", *self.history][:ERRORS_KEPT]
        self.text.setText(line)
        self.setToolTip("\n".join(self.history))
        self.show()


class MainWindow(QMainWindow):
    def __init__(self, desktop) -> None:
        super().__init__()
        self.desktop = desktop
        bridge = desktop.bridge
        self.setWindowTitle(f"vmctl: {bridge.engine.name}")
        self.setWindowIcon(icons.app_icon())
        self.errors = ErrorBar()
        self.engine_view = EngineView(bridge)
        self.containers_view = ContainersView(bridge, desktop.open_shell, desktop.open_url)
        self.images_view = ImagesView(
            bridge, lambda image: desktop.quick_run(image), desktop.confirm
        )
        self.volumes_view = VolumesView(bridge, desktop.confirm)
        self.networks_view = NetworksView(bridge)
        self.settings_view = SettingsView(bridge, desktop)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.engine_view, "Engine")
        self.tabs.addTab(self.containers_view, "Containers")
        self.tabs.addTab(self.images_view, "Images")
        self.tabs.addTab(self.volumes_view, "Volumes")
        self.tabs.addTab(self.networks_view, "Networks")
        self.tabs.addTab(self.settings_view, "Settings")
        body = QWidget()
        column = QVBoxLayout(body)
        column.addWidget(self.errors)
        column.addWidget(self.tabs, 1)
        self.setCentralWidget(body)
        self.resize(980, 640)
        bridge.error.connect(self.errors.report)

    def closeEvent(self, event) -> None:
        """With a tray, closing the window keeps the app (and the VM) in the tray."""
        if self.desktop.has_tray():
            event.ignore()
            self.hide()
        else:
            event.accept()
            self.desktop.quit()
