"""The Containers tab's ports, health and Overview against the real engine: the agent in a
network namespace this test made (bridges and published ports are allowed only there), the
app on the host reading it through its socket as the host agent's docker.sock would be read.

A click on a published port opens http://localhost:PORT through the app's browser seam; that
the port answers is checked where the engine publishes it (the agent's namespace: the quick
run's probe runs there), since carrying it to the user's machine is the host agent's part
(test_vmctl_ports)."""

from __future__ import annotations

import json
import os

import pytest
from guikit import AgentOnHost
from netkit import HTTPD, clear, fetch_when_served, in_netns, netns_agent, ok
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox
from vmctl_gui import prefs
from vmctl_gui.app import Desktop
from vmctl_gui.containers_view import PORTS_COLUMN
from vmctl_gui.engine import RunRequest
from vmctl_gui.quickrun import port_answers
from vmctl_gui.tray import TrayMenu

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with netns_agent(tmp_path_factory.mktemp("gui-ports"), registry) as server:
        yield server


@pytest.fixture
def opened():
    return []


@pytest.fixture
def desktop(qtbot, agent, tmp_path, monkeypatch, opened):
    monkeypatch.setenv("VMCTL_HOME", str(tmp_path))
    desktop = Desktop(AgentOnHost("gui", docker_host=agent.url), tray=False,
                      ask=lambda title, text: QMessageBox.StandardButton.No,
                      open_url=opened.append,
                      probe=lambda url: in_netns(agent.pid, port_answers, url))  # fmt: skip
    qtbot.addWidget(desktop.window)
    desktop.begin()
    qtbot.waitUntil(lambda: desktop.bridge.state.state == "running", timeout=WAIT_MS)
    yield desktop
    desktop.bridge.shutdown()
    clear(agent)
    agent.docker("volume", "prune", "-af")


def cell(view, row: int, column: int) -> str:
    return view.model.data(view.model.index(row, column))


def test_a_published_port_opens_in_the_browser_and_health_shows_beside_the_state(
    qtbot, desktop, agent, opened
):
    ok(agent.docker("run", "-d", "--name", "site", "-p", "8080:80", "--health-cmd", "true",
                    "--health-interval", "1s", "--restart", "on-failure:2", "-v", "pages:/www",
                    "busybox", "sh", "-c", HTTPD))  # fmt: skip
    view = desktop.window.containers_view
    qtbot.waitUntil(lambda: [(r.name, r.health) for r in view.model.rows] == [("site", "healthy")],
                    timeout=WAIT_MS)  # fmt: skip
    assert cell(view, 0, PORTS_COLUMN) == "0.0.0.0:8080->80/tcp"
    assert cell(view, 0, PORTS_COLUMN - 2) == "healthy"
    assert cell(view, 0, PORTS_COLUMN - 3).endswith("(healthy)")
    spot = view.table.visualRect(view.model.index(0, PORTS_COLUMN)).center()
    qtbot.mouseClick(view.table.viewport(), Qt.MouseButton.LeftButton, pos=spot)
    assert opened == ["http://localhost:8080"]
    assert fetch_when_served(agent, 8080).endswith(b"hello\n")  # the port the link names
    assert desktop.window.errors.isHidden(), desktop.window.errors.text.text()


def test_overview_shows_ports_mounts_networks_with_addresses_and_restart_policy(
    qtbot, desktop, agent, opened
):
    ok(agent.docker("run", "-d", "--name", "web", "-p", "127.0.0.1:8081:80", "-p", "8082:80",
                    "--restart", "on-failure:2", "-v", "pages:/www", "busybox", "sh", "-c",
                    HTTPD))  # fmt: skip
    info = json.loads(ok(agent.docker("inspect", "web")))[0]
    address = info["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    view = desktop.window.containers_view
    qtbot.waitUntil(lambda: view.model.row_of(info["Id"]) >= 0, timeout=WAIT_MS)
    view.table.selectRow(view.model.row_of(info["Id"]))
    overview = view.details.overview
    qtbot.waitUntil(lambda: "Ports" in overview.fields, timeout=WAIT_MS)
    fields = {label: widget.text() for label, widget in overview.fields.items()}
    assert fields["Ports"] == "127.0.0.1:8081 → 80/tcp\n0.0.0.0:8082 → 80/tcp"
    assert fields["Networks"] == f"bridge: {address} (gateway 172.17.0.1)"
    assert fields["Mounts"].startswith(f"{agent.data_root}/volumes/pages/_data → /www (volume")
    assert fields["Restart policy"] == "on-failure (at most 2 retries)"
    links = overview.links.text()
    assert "href='http://localhost:8081'" in links and "href='http://localhost:8082'" in links
    overview.links.linkActivated.emit("http://localhost:8082")
    assert opened == ["http://localhost:8082"]
    menu = view.open_ports(view.model.rows[view.model.row_of(info["Id"])])
    assert [a.text() for a in menu.actions()] == ["http://localhost:8081", "http://localhost:8082"]
    menu.actions()[0].trigger()
    assert opened[-1] == "http://localhost:8081"
    menu.close()


def network_names(agent) -> list[str]:
    return sorted(ok(agent.docker("network", "ls", "--format", "{{.Name}}")).split())


def test_networks_list_create_and_remove(qtbot, desktop, agent):
    view = desktop.window.networks_view
    qtbot.waitUntil(lambda: view.model.rowCount() == 3, timeout=WAIT_MS)
    assert [r.name for r in view.model.rows] == ["bridge", "host", "none"]
    view.table.selectRow(0)
    assert not view.remove_button.isEnabled()  # the engine's own
    view.name.setText("appnet")
    view.subnet.setText("not-a-subnet")
    qtbot.mouseClick(view.create_button, Qt.MouseButton.LeftButton)
    errors = desktop.window.errors
    qtbot.waitUntil(lambda: not errors.isHidden(), timeout=WAIT_MS)
    assert errors.text.text() == (
        "Could not create the network appnet: invalid network config:\n"
        "invalid subnet not-a-subnet: invalid CIDR address: not-a-subnet"
    )
    assert network_names(agent) == ["bridge", "host", "none"]  # nothing half-made
    view.subnet.setText("172.30.0.0/16")
    qtbot.mouseClick(view.create_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.model.rowCount() == 4, timeout=WAIT_MS)
    made = view.model.rows[-1]
    assert (made.name, made.subnet, made.gateway) == ("appnet", "172.30.0.0/16", "172.30.0.1")
    ok(agent.docker("run", "-d", "--name", "member", "--network", "appnet", "busybox", "sleep",
                    "60"))  # fmt: skip
    qtbot.waitUntil(lambda: view.model.rows[-1].containers == ("member (172.30.0.2/16)",),
                    timeout=WAIT_MS)  # fmt: skip
    view.table.selectRow(3)
    qtbot.mouseClick(view.remove_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "remove the network appnet" in errors.text.text(), timeout=WAIT_MS)
    assert "has active endpoints" in errors.text.text()
    assert "appnet" in network_names(agent)
    ok(agent.docker("rm", "-f", "member"))
    qtbot.waitUntil(lambda: view.model.rows[-1].containers == (), timeout=WAIT_MS)
    view.table.selectRow(3)
    qtbot.mouseClick(view.remove_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.model.rowCount() == 3, timeout=WAIT_MS)
    assert view.note.text() == "Removed network appnet."
    assert network_names(agent) == ["bridge", "host", "none"]


def test_quick_run_offers_its_port_in_the_browser_once_it_answers(qtbot, desktop, agent, opened):
    held = f"while [ ! -e /tmp/go ]; do sleep 0.1; done; {HTTPD}"  # serves once told to
    request = RunRequest("busybox", ("sh", "-c", held), ports=("8080:80", "5353:53/udp"))
    window = desktop.repeat(request)
    assert list(window.links) == ["http://localhost:8080"]  # udp opens in no browser
    button = window.links["http://localhost:8080"]
    qtbot.waitUntil(lambda: ok(agent.docker("ps", "-q")) != "" or window.finished, timeout=WAIT_MS)
    assert not window.finished, window.toPlainText() + desktop.window.errors.text.text()
    assert button.text() == "Waiting for http://localhost:8080 to answer…"
    assert not button.isEnabled()
    ok(agent.docker("exec", ok(agent.docker("ps", "-q")).strip(), "touch", "/tmp/go"))
    qtbot.waitUntil(button.isEnabled, timeout=WAIT_MS)
    assert button.text() == "Open http://localhost:8080 in the browser"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert opened == ["http://localhost:8080"]
    window.close()
    qtbot.waitUntil(lambda: ok(agent.docker("ps", "-aq")) == "", timeout=WAIT_MS)
    assert prefs.load().recent_runs == (request,)  # the ports kept with the run
    title = "busybox sh -c " + held + " (ports 8080:80, 5353:53/udp)"
    assert f"Run again: {title}" in TrayMenu(desktop).actions_text()
    assert desktop.window.errors.isHidden(), desktop.window.errors.text.text()


def test_quick_run_mounts_a_folder_at_the_same_path_and_the_run_keeps_it(
    qtbot, desktop, agent, tmp_path
):
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "index.html").write_text("from the host\n")
    request = RunRequest("busybox", ("sh", "-c", f"cat {folder}/index.html; touch {folder}/made"),
                         ports=("8080:80",), folders=(str(folder),))  # fmt: skip
    window = desktop.repeat(request)
    qtbot.waitUntil(lambda: window.finished, timeout=WAIT_MS)
    assert "from the host\n" in window.toPlainText(), window.toPlainText()
    assert (folder / "made").exists()  # the same folder, not a copy
    assert prefs.load().recent_runs == (request,)  # its ports and folder kept with it
    title = f"busybox sh -c cat {folder}/index.html; touch {folder}/made (ports 8080:80) " \
            f"(folder {folder})"  # fmt: skip
    assert f"Run again: {title}" in TrayMenu(desktop).actions_text()
    assert desktop.window.errors.isHidden(), desktop.window.errors.text.text()


def port_lines(menu) -> list[str]:
    menu.rebuild()
    return sorted(action.text() for action in menu.ports_menu.actions())


def test_the_trays_open_ports_open_a_port_once_it_answers(qtbot, desktop, agent, opened):
    held = f"while [ ! -e /tmp/go ]; do sleep 0.1; done; {HTTPD}"  # serves once told to
    ok(agent.docker("run", "-d", "--name", "late", "-p", "8080:80", "busybox", "sh", "-c", held))
    ok(agent.docker("run", "-d", "--name", "never", "-p", "8081:80", "busybox", "sleep", "600"))
    menu = TrayMenu(desktop)
    qtbot.waitUntil(lambda: len(desktop.ports.ports) == 2, timeout=WAIT_MS)
    assert port_lines(menu) == ["late: http://localhost:8080", "never: http://localhost:8081"]
    assert menu.ports_menu.isEnabled() and menu.ports_menu.title() == "Open ports"
    for action in menu.ports_menu.actions():
        action.trigger()
    assert port_lines(menu) == [
        "late: http://localhost:8080 (waiting for it to answer…)",
        "never: http://localhost:8081 (waiting for it to answer…)",
    ]
    assert opened == []
    ok(agent.docker("exec", "late", "touch", "/tmp/go"))
    qtbot.waitUntil(lambda: opened == ["http://localhost:8080"], timeout=WAIT_MS)
    assert fetch_when_served(agent, 8080).endswith(b"hello\n")  # the port the browser opened
    ok(agent.docker("rm", "-f", "never"))
    bar = desktop.window.errors
    qtbot.waitUntil(lambda: bar.isVisible(), timeout=WAIT_MS)
    assert bar.text.text() == (
        "Could not open http://localhost:8081: its container stopped before the port answered: "
        "start it again, then open the port"
    )
    assert desktop.ports.waiting == {} and port_lines(menu) == ["late: http://localhost:8080"]
    assert opened == ["http://localhost:8080"]


def test_a_network_removed_between_the_list_and_its_inspect_is_left_out(desktop, agent):
    """The Networks tab lists, then inspects each: a network removed in between (as the
    user's own `docker network rm`, or compose's `down`) is not an error, just gone."""
    ok(agent.docker("network", "create", "fleeting"))
    engine = desktop.bridge.engine
    api = engine.client.api
    listed = api.networks

    def listed_then_removed(*args, **kwargs):
        found = listed(*args, **kwargs)
        ok(agent.docker("network", "rm", "fleeting"))
        return found

    api.networks = listed_then_removed
    try:
        names = [row.name for row in engine.networks()]
    finally:
        api.networks = listed
    assert sorted(names) == ["bridge", "host", "none"]
    assert network_names(agent) == ["bridge", "host", "none"]
