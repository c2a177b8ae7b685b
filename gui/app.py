"""The desktop app: wires one VM's bridge to the dashboard window and the tray, and holds what
both share (quick runs, terminals, preferences, quitting).

    vmctl gui [--name NAME] [--minimized] [--start-vm]

The login item runs it with --start-vm: the app comes up (in the tray when so set) and boots
the VM, so `docker` works once the user is logged in.

The engine is injected (`Desktop(engine)`), so tests drive the whole app with a fake one.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QApplication, QMessageBox, QSystemTrayIcon
from vmctl_gui import errors, icons, prefs, terminal
from vmctl_gui.bridge import Bridge
from vmctl_gui.engine import Engine, RunRequest
from vmctl_gui.port_opener import PortOpener
from vmctl_gui.quickrun import QuickRunDialog, RunWindow, port_answers
from vmctl_gui.tray import Tray
from vmctl_gui.vmctl_engine import VmctlEngine, vmctl_command
from vmctl_gui.window import MainWindow

from vmctl import autostart
from vmctl.errors import VmctlError

# Quit's question when the VM runs: stop it too (Yes), leave it running (No), or stay (Cancel).
Ask = Callable[[str, str], QMessageBox.StandardButton]


def open_in_browser(url: str) -> bool:
    """The user's browser, through the desktop (QDesktopServices)."""
    return QDesktopServices.openUrl(QUrl(url))


def ask_user(title: str, text: str) -> QMessageBox.StandardButton:
    buttons = QMessageBox.StandardButton
    return QMessageBox.question(
        None, title, text, buttons.Yes | buttons.No | buttons.Cancel, buttons.Cancel
    )


class Desktop:
    def __init__(
        self,
        engine: Engine,
        *,
        tray: bool | None = None,
        ask: Ask = ask_user,
        open_terminal: Callable[[list[str]], object] = terminal.open_terminal,
        open_url: Callable[[str], object] = open_in_browser,
        probe: Callable[[str], bool] = port_answers,
        poll_ms: int | None = None,
    ) -> None:
        self.bridge = Bridge(engine, **({"poll_ms": poll_ms} if poll_ms else {}))
        self.prefs = prefs.load()
        self.ask = ask
        self._open_terminal = open_terminal
        self.open_url = open_url
        self.probe = probe
        self.run_windows: list[RunWindow] = []
        self.ports = PortOpener(self.bridge, probe, open_url, self._rebuild_tray)
        self.quitting = False
        self.window = MainWindow(self)
        use_tray = QSystemTrayIcon.isSystemTrayAvailable() if tray is None else tray
        self.tray = Tray(self) if use_tray else None
        self.bridge.stateChanged.connect(self._state_changed)
        self.bridge.busyChanged.connect(lambda _b: self._state_changed(self.bridge.state))
        self.bridge.error.connect(self._notify)
        self.bridge.containersChanged.connect(self.ports.follow)

    def begin(self, minimized: bool | None = None, start_vm: bool = False) -> None:
        if self.tray is not None:
            self.tray.show()
        hide = self.prefs.start_minimized if minimized is None else minimized
        if not (hide and self.tray is not None):
            self.show_dashboard()
        if start_vm:
            self.bridge.stateChanged.connect(self._start_once_known)
        self.bridge.begin()

    def _start_once_known(self, state) -> None:
        """--start-vm: boot the VM once its state is known, unless it already runs."""
        if state.state == "unknown":
            return
        self.bridge.stateChanged.disconnect(self._start_once_known)
        if state.state in ("stopped", "not created", "error"):
            self.bridge.start_vm()

    def confirm(self, title: str, text: str) -> bool:
        """A yes-or-no question before something that cannot be undone (a prune)."""
        return self.ask(title, text) == QMessageBox.StandardButton.Yes

    def has_tray(self) -> bool:
        return self.tray is not None

    # ---- shared actions ----

    def show_dashboard(self) -> None:
        self.window.show()
        self.window.raise_()
        self.window.activateWindow()

    def quick_run(self, image: str = "") -> RunWindow | None:
        shared = tuple(share.host for share in self.bridge.state.config.shares())
        dialog = QuickRunDialog(self.window if self.window.isVisible() else None, image, shared)
        if dialog.exec() != QuickRunDialog.DialogCode.Accepted or dialog.request is None:
            return None
        return self.repeat(dialog.request)

    def repeat(self, request: RunRequest) -> RunWindow:
        self.prefs = self.prefs.remember(request)
        self._save_prefs()
        window = RunWindow(self.bridge, request, self.open_url, self.probe)
        self.run_windows.append(window)
        window.destroyed.connect(lambda *_: self.run_windows.remove(window))
        window.show()
        self._rebuild_tray()
        return window

    def open_terminal(self) -> None:
        self._terminal("open a terminal in the VM", self.bridge.engine.ssh_command)

    def open_shell(self, container_id: str) -> None:
        self._terminal(
            "open a shell in the container", lambda: self.bridge.engine.shell_command(container_id)
        )

    def _terminal(self, what: str, command: Callable[[], list[str]]) -> None:
        try:
            self._open_terminal(command())
        except VmctlError as e:
            self.bridge.error.emit(what, errors.describe(e))

    # ---- preferences ----

    def starts_at_login(self) -> bool:
        return autostart.enabled()

    def set_preferences(self, at_login: bool, minimized: bool) -> None:
        self.prefs = prefs.Prefs(minimized, self.prefs.recent_runs)
        self._save_prefs()
        try:
            if at_login and not autostart.enabled():
                name = self.bridge.engine.name
                autostart.enable([*app_command(), "--name", name, "--start-vm"])
            elif not at_login and autostart.enabled():
                autostart.disable()
        except OSError as e:
            self.bridge.error.emit("change the login item", str(e))

    def _save_prefs(self) -> None:
        try:
            prefs.save(self.prefs)
        except OSError as e:
            self.bridge.error.emit("save the app's preferences", str(e))

    # ---- state, errors, quitting ----

    def _state_changed(self, state) -> None:
        if self.tray is not None:
            self.tray.follow(state)

    def _rebuild_tray(self) -> None:
        if self.tray is not None:
            self.tray.menu.rebuild()

    def _notify(self, what: str, message: str) -> None:
        if self.tray is not None and not self.window.isVisible():
            self.tray.showMessage(f"Could not {what}", message, icons.state_icon("error"))

    def quit(self) -> None:
        """Ask whether to stop the VM too; a stop finishes (in its worker) before the app ends."""
        if self.quitting:
            return
        running = self.bridge.state.state in ("running", "starting", "degraded")
        if running:
            answer = self.ask(
                "Quit vmctl",
                f"The VM {self.bridge.engine.name!r} is running. Stop it too?\n"
                "(No leaves it running: docker keeps working without this app.)",
            )
            if answer == QMessageBox.StandardButton.Cancel:
                return
            if answer == QMessageBox.StandardButton.Yes:
                self.quitting = True
                self.window.hide()
                self.bridge.busyChanged.connect(self._quit_when_stopped)
                self.bridge.stop_vm()  # in its worker: the UI stays live until it is done
                return
        self._finish_quit()

    def _quit_when_stopped(self, busy: bool) -> None:
        if not busy:
            self._finish_quit()

    def _finish_quit(self) -> None:
        self.quitting = True
        self.bridge.shutdown()
        for window in list(self.run_windows):
            window.close()
        if self.tray is not None:
            self.tray.hide()
        QApplication.quit()


def app_command() -> list[str]:
    """How the login item starts this app."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [*vmctl_command(), "gui"]


def check_display(environ=os.environ, platform: str = sys.platform) -> None:
    """Say what to do when there is no display, before Qt aborts with its own words."""
    if platform in ("darwin", "win32") or environ.get("QT_QPA_PLATFORM"):
        return
    if not (environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")):
        raise VmctlError(
            "the desktop app needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set: "
            "run it in your desktop session (over SSH: ssh -X), or use the vmctl CLI"
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="vmctl gui", description="vmctl's desktop app")
    parser.add_argument("--name", default="default", help="the VM to show (default: default)")
    parser.add_argument("--minimized", action="store_true", help="start in the tray")
    parser.add_argument("--start-vm", action="store_true", help="boot the VM if it is stopped")
    parser.add_argument(
        "--self-test", action="store_true", help="draw the window once and exit (packaging)"
    )
    args = parser.parse_args(argv)
    check_display()
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("vmctl")
    app.setWindowIcon(icons.app_icon())
    app.setQuitOnLastWindowClosed(False)
    desktop = Desktop(VmctlEngine(args.name))
    if args.self_test:
        return _self_test(app, desktop)
    desktop.begin(minimized=args.minimized or None, start_vm=args.start_vm)
    return app.exec()


def _self_test(app: QApplication, desktop: Desktop) -> int:
    """Prove a build works: Qt's platform plugin loads, the window draws, vmctl answers."""
    desktop.show_dashboard()
    app.processEvents()
    image = desktop.window.grab()
    state = desktop.bridge.engine.state()
    print(f"vmctl desktop self-test: window {image.width()}x{image.height()}, VM {state.state}")
    desktop._finish_quit()
    return 0 if not image.isNull() else 1


if __name__ == "__main__":
    raise SystemExit(main())
