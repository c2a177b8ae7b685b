"""The system tray: an icon whose colour follows the VM's state, and the quick menu.

The menu is a plain QMenu built from the desktop's state, so it is tested (and screenshotted)
where no tray exists; the QSystemTrayIcon only shows it.
"""

from __future__ import annotations

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QSystemTrayIcon
from vmctl_gui import icons
from vmctl_gui.engine import VmState
from vmctl_gui.engine_view import STATE_WORDS


class TrayMenu(QMenu):
    def __init__(self, desktop) -> None:
        super().__init__()
        self.desktop = desktop
        self.header = QAction(self, enabled=False)
        self.toggle = QAction(self, triggered=self._toggle)
        self.quick_run = QAction("Quick run…", self, triggered=lambda: desktop.quick_run())
        self.terminal = QAction("Open terminal", self, triggered=desktop.open_terminal)
        self.dashboard = QAction("Open dashboard", self, triggered=desktop.show_dashboard)
        self.quit = QAction("Quit", self, triggered=desktop.quit)
        self.ports_menu = QMenu("Open ports", self)  # the running containers' published ports
        self.recent: list[QAction] = []
        self.rebuild()

    def rebuild(self) -> None:
        """Called when the state or the recent runs change."""
        state: VmState = self.desktop.bridge.state
        for action in self.actions():  # not clear(): it would delete the lasting actions too
            self.removeAction(action)
            if action.isSeparator() or action in self.recent:
                action.deleteLater()
        words = STATE_WORDS.get(state.state, state.state)
        self.header.setText(f"vmctl {state.name}: {words}")
        self.addAction(self.header)
        self.addSeparator()
        running = state.state in ("running", "starting", "degraded")
        self.toggle.setText("Stop the VM" if running else "Start the VM")
        self.toggle.setEnabled(not (self.desktop.bridge.busy and not running))
        self.addAction(self.toggle)
        self.addAction(self.quick_run)
        self.recent = []
        for request in self.desktop.prefs.recent_runs:
            action = QAction(f"Run again: {request.title}", self)
            action.triggered.connect(lambda _=False, r=request: self.desktop.repeat(r))
            self.recent.append(action)
            self.addAction(action)
        self.terminal.setEnabled(state.state in ("running", "degraded"))
        self.addSeparator()
        self._fill_ports()
        self.addMenu(self.ports_menu)
        self.addAction(self.terminal)
        self.addAction(self.dashboard)
        self.addSeparator()
        self.addAction(self.quit)

    def _fill_ports(self) -> None:
        """One line per port; a click opens it in the browser once it answers."""
        opener = self.desktop.ports
        self.ports_menu.clear()
        for port in opener.ports:
            action = self.ports_menu.addAction(opener.line(port))
            action.triggered.connect(lambda _=False, url=port.url: opener.open(url))
        self.ports_menu.setEnabled(bool(opener.ports))
        none = " (none published)" if not opener.ports else ""
        self.ports_menu.setTitle(f"Open ports{none}")

    def _toggle(self) -> None:
        if self.desktop.bridge.state.state in ("running", "starting", "degraded"):
            self.desktop.bridge.stop_vm()
        else:
            self.desktop.bridge.start_vm()

    def actions_text(self) -> list[str]:
        return [a.text() for a in self.actions() if not a.isSeparator()]


class Tray(QSystemTrayIcon):
    def __init__(self, desktop) -> None:
        super().__init__(icons.state_icon("stopped"))
        self.menu = TrayMenu(desktop)
        self.setContextMenu(self.menu)
        self.activated.connect(self._activated)
        self.desktop = desktop
        self.look = ""
        self.follow(desktop.bridge.state)

    def follow(self, state: VmState) -> None:
        look = icons.look(state.state)
        if look != self.look:
            self.look = look
            self.setIcon(icons.state_icon(look))
        self.setToolTip(f"vmctl {state.name}: {STATE_WORDS.get(state.state, state.state)}")
        self.menu.rebuild()

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            self.desktop.show_dashboard()
