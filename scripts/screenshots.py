#!/usr/bin/env python3
"""Render the desktop app's views and its tray menu to PNG, for the README (as root, Linux).

Real widgets on a real X server (Debian's Xvfb, with `trayer` as the tray host) showing a real
engine: `vmctl-agent serve` on this host with a loopback registry as its mirror (the tests'
kit), a pull, a quick run and a running container, so every number on screen is measured.

    python scripts/screenshots.py [--out docs/screenshots] [--docker-host unix:///…/docker.sock]
                                  [--vm-image PATH]

With --vm-image, the Engine tab is shot from a real VM booted from that image by clicking
Start (a few minutes under TCG); the VM is stopped and deleted afterwards.

Needs: apt-get install xvfb trayer libxcb-cursor0 (Qt's xcb plugin refuses to start without it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
DISPLAY = ":97"
SIZE = (1100, 680)
WAIT_S = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--docker-host", help="an engine already running (default: start one)")
    parser.add_argument("--vm-image", help="boot a VM from this disk image for the Engine tab")
    args = parser.parse_args()
    for tool in ("Xvfb", "trayer"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install xvfb trayer libxcb-cursor0")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vmctl-shots-") as tmp, x_server():
        os.environ["VMCTL_HOME"] = str(Path(tmp) / "home")
        from PySide6.QtWidgets import QApplication
        from vmctl_gui import icons

        app = QApplication([sys.argv[0]])
        app.setWindowIcon(icons.app_icon())
        if args.vm_image:
            shoot_vm(app, args.vm_image, args.out)
        if args.docker_host:
            return shoot(app, args.docker_host, args.out, engine_tab=not args.vm_image)
        from agentserver import AgentServer, push_test_images
        from registry import Registry

        registry = Registry(Path(tmp) / "registry")
        try:
            push_test_images(registry)
            (Path(tmp) / "agent").mkdir()
            server = AgentServer(Path(tmp) / "agent", registry)
            try:
                site = "mkdir /www; echo hi > /www/index.html; rm /bin/ls; exec httpd -fh /www"
                server.docker("run", "-d", "--name", "web", "--memory", "64m", "--pids-limit",
                              "100", "-v", "site:/www", "--health-cmd", "true", "--health-interval",
                              "1s", "busybox", "sh", "-c", site)  # fmt: skip
                server.docker("volume", "create", "cache")
                server.docker("run", "--name", "once", "busybox", "echo", "hello")
                return shoot(app, server.url, args.out, engine_tab=not args.vm_image)
            finally:
                server.stop()
        finally:
            registry.stop()


class x_server:
    """Xvfb plus a tray host, for the life of the `with`."""

    def __enter__(self) -> None:
        self.xvfb = subprocess.Popen(
            ["Xvfb", DISPLAY, "-screen", "0", "1280x800x24", "-nolisten", "tcp"]
        )
        os.environ.update(DISPLAY=DISPLAY, QT_QPA_PLATFORM="xcb")
        time.sleep(1.0)  # Xvfb has no readiness signal; a second is ample
        self.trayer = subprocess.Popen(
            ["trayer", "--edge", "top", "--align", "right", "--widthtype", "request",
             "--height", "28", "--tint", "0xdddddd", "--transparent", "true", "--alpha", "0"]
        )  # fmt: skip
        time.sleep(0.5)

    def __exit__(self, *exc) -> None:
        for process in (self.trayer, self.xvfb):
            process.terminate()
            process.wait(timeout=10)


def settle(app, check, what: str, limit: float = WAIT_S) -> None:
    """Run the event loop until `check()`; then a little more, so the last paint lands."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.02)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.01)


def save(widget, out: Path, name: str) -> None:
    path = out / f"{name}.png"
    widget.grab().save(str(path))
    print(path, flush=True)


def shoot_vm(app, image: str, out: Path) -> None:
    """The Engine tab of a real VM, started with the Start button, then stopped and deleted."""
    from PySide6.QtWidgets import QMessageBox
    from vmctl_gui.app import Desktop
    from vmctl_gui.vmctl_engine import VmctlEngine

    from vmctl import config as vmconfig
    from vmctl import paths as vmpaths
    from vmctl import vm

    paths = vmpaths.vm("default")
    paths.root.mkdir(parents=True)
    vmconfig.save(vmconfig.VMConfig(cpus=2, memory_mib=1024, image=image), paths.config)
    desktop = Desktop(
        VmctlEngine("default"), tray=False, ask=lambda *_: QMessageBox.StandardButton.Yes
    )
    desktop.window.resize(*SIZE)
    desktop.begin(minimized=False)
    view = desktop.window.engine_view
    settle(app, lambda: desktop.bridge.state.state == "stopped", "the VM's state")
    view.start_button.click()
    settle(app, lambda: desktop.bridge.state.state in ("running", "error"), "the start", 900)
    settle(app, lambda: view.version_grid.count() > 0 and view.disk.rowCount() > 0, "details")
    save(desktop.window, out, "engine")
    desktop.quit()  # asks; the answer stops the VM
    settle(app, lambda: not desktop.bridge.busy, "the stop", 180)
    vm.delete("default")


def shoot_details(app, window, out: Path) -> None:
    """The details pane of the running `web` container: its Stats after a few samples, its
    Inside view, and its files."""
    view = window.containers_view
    view.table.selectRow(next(i for i, r in enumerate(view.model.rows) if r.name == "web"))
    details = view.details
    settle(app, lambda: "Image" in details.overview.fields, "the overview")
    save(window, out, "details-overview")
    details.tabs.setCurrentWidget(details.stats)
    settle(app, lambda: len([s for s in details.stats.history.samples if s]) >= 5, "stats")
    save(window, out, "details-stats")
    details.tabs.setCurrentWidget(details.inside)
    settle(app, lambda: bool(details.inside.facts.get("Namespaces")), "the Inside view")
    save(window, out, "details-inside")
    bar = details.inside.scroll.verticalScrollBar()
    bar.setValue(bar.maximum())
    settle(app, lambda: True, "the scroll")
    save(window, out, "details-layers")
    details.tabs.setCurrentWidget(details.files)
    details.files.open_path("/")
    settle(app, lambda: details.files.tree.topLevelItemCount() > 0, "the Files tab")
    save(window, out, "details-files")


def shoot_images(app, window, out: Path, parse_build) -> None:
    """A build of a small folder streamed into its window, then the history it made."""
    view = window.images_view
    folder = Path(tempfile.mkdtemp(prefix="vmctl-build-"))
    (folder / "index.html").write_text("<h1>hello</h1>\n")
    (folder / "Dockerfile").write_text(
        'FROM busybox\nARG GREETING=hi\nRUN echo "$GREETING" > /greeting\n'
        'COPY index.html /www/\nCMD ["httpd", "-fh", "/www"]\n'
    )
    build = view.build(parse_build(str(folder), "", "site:1", "GREETING=hello"))
    settle(app, lambda: build.ended is not None, "the build")
    save(build, out, "build")
    build.close()
    shutil.rmtree(folder)
    settle(app, lambda: any(r.repository == "site" for r in view.model.rows), "the built image")
    view.table.selectRow(next(i for i, r in enumerate(view.model.rows) if r.repository == "site"))
    history = view.history()
    history.resize(SIZE[0], 320)
    settle(app, lambda: history.model.rowCount() > 0, "the history")
    save(history, out, "image-history")
    history.close()


def shoot(app, docker_host: str, out: Path, engine_tab: bool = True) -> int:
    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtGui import QPainter, QPixmap
    from PySide6.QtWidgets import QMessageBox
    from vmctl_gui import icons
    from vmctl_gui.app import Desktop
    from vmctl_gui.build_view import parse_build
    from vmctl_gui.engine import RunRequest, VmState
    from vmctl_gui.vmctl_engine import VmctlEngine

    class AgentOnHost(VmctlEngine):
        def state(self) -> VmState:
            return VmState(self.name, "running", config=self.config(), accel="tcg",
                           docker_host=self.docker_host)  # fmt: skip

    desktop = Desktop(
        AgentOnHost("default", docker_host=docker_host),
        tray=True,
        ask=lambda *_: QMessageBox.StandardButton.No,
    )
    window = desktop.window
    window.resize(*SIZE)
    desktop.begin(minimized=False)

    if engine_tab:
        settle(app, lambda: window.engine_view.version_grid.count() > 0, "docker version")
        settle(app, lambda: window.engine_view.disk.rowCount() > 0, "disk usage")
        window.tabs.setCurrentIndex(0)
        save(window, out, "engine")
    window.tabs.setCurrentIndex(1)
    settle(app, lambda: window.containers_view.model.rowCount() >= 2, "the container list")
    window.containers_view.table.selectRow(0)
    save(window, out, "containers")
    shoot_details(app, window, out)
    window.tabs.setCurrentWidget(window.images_view)
    window.images_view.ref.setText("hello-world")
    window.images_view.pull()
    settle(app, lambda: "Pulled" in window.images_view.panel.summary.text(), "the pull")
    save(window, out, "images")
    shoot_images(app, window, out, parse_build)
    window.tabs.setCurrentWidget(window.volumes_view)
    settle(app, lambda: window.volumes_view.model.rowCount() >= 2, "the volumes")
    save(window, out, "volumes")
    window.tabs.setCurrentWidget(window.networks_view)
    settle(app, lambda: window.networks_view.model.rowCount() >= 2, "the networks")
    save(window, out, "networks")
    window.tabs.setCurrentWidget(window.settings_view)
    save(window, out, "settings")
    run = desktop.repeat(RunRequest("busybox", ("sh", "-c", "uname -a; echo; cat /etc/hostname")))
    settle(app, lambda: run.finished, "the quick run")
    save(run, out, "quick-run")
    menu = desktop.tray.menu
    menu.rebuild()
    menu.popup(window.geometry().topRight())
    settle(app, menu.isVisible, "the tray menu")
    save(menu, out, "tray-menu")
    strip = QPixmap(4 * 40, 32)  # the tray icon's four looks, left to right
    strip.fill(Qt.GlobalColor.transparent)
    painter = QPainter(strip)
    for i, look in enumerate(("stopped", "starting", "running", "error")):
        painter.drawPixmap(i * 40, 0, icons.state_icon(look).pixmap(32, 32))
    painter.end()
    strip.save(str(out / "tray-icons.png"))
    print(out / "tray-icons.png")
    QTimer.singleShot(0, desktop._finish_quit)
    app.exec()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
