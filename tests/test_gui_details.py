"""The container details pane with a fake engine (pytest-qt, offscreen): Overview, Logs, Stats,
Inspect and Inside; a container that stops or goes away while its details are open, and a stats
stream the engine drops, said in words. Nothing may run on the UI thread."""

from __future__ import annotations

import copy
import json
import threading

import docker.errors
import pytest
import requests
from guikit import FakeEngine
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QMessageBox
from vmctl_gui import bridge as bridge_module
from vmctl_gui import samples
from vmctl_gui.app import Desktop
from vmctl_gui.charts import LineChart, Series
from vmctl_gui.engine import ContainerRow

WAIT_MS = 5000
ID = "a" * 64
ROW = ContainerRow(ID, "web", "busybox", "httpd -f", "running", "Up 2 minutes", 1, "")
INFO = {
    "Id": ID,
    "Name": "/web",
    "Created": "2026-12-02T01:00:00.000000000Z",
    "Path": "httpd",
    "Args": ["-f", "-v"],
    "Image": "sha256:" + "b" * 64,
    "State": {
        "Status": "running",
        "Running": True,
        "Pid": 4242,
        "ExitCode": 0,
        "StartedAt": "2026-12-02T01:00:01Z",
        "FinishedAt": "0001-01-01T00:00:00Z",
        "Health": {"Status": "healthy"},
    },
    "Config": {
        "Image": "busybox",
        "Env": ["PATH=/bin", "MODE=prod"],
        "WorkingDir": "/srv",
        "User": "",
        "Hostname": "a1b2",
        "Labels": {"tier": "front"},
    },
    "HostConfig": {
        "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
        "NetworkMode": "bridge",
        "Memory": 64 << 20,
        "NanoCpus": 500_000_000,
        "PidsLimit": 50,
    },
    "NetworkSettings": {
        "Ports": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}], "443/tcp": None},
        "Networks": {"bridge": {"IPAddress": "172.17.0.2", "Gateway": "172.17.0.1"}},
    },
    "Mounts": [{"Type": "bind", "Source": "/home/me/site", "Destination": "/srv", "RW": False}],
}
INSIDE = {
    "Id": ID, "Name": "/web", "Agent": {"Pid": 812}, "Running": True, "Pid": 4242,
    "Namespaces": [
        {"Type": "pid", "Id": 4026532301, "AgentId": 4026531836, "Shared": False},
        {"Type": "net", "Id": 4026531840, "AgentId": 4026531840, "Shared": True},
    ],
    "Cgroup": {
        "Version": 2, "Paths": ["/sys/fs/cgroup/vmctl/" + ID],
        "Limits": [{"File": "memory.max", "Value": "67108864", "Set": True},
                   {"File": "cpu.weight", "Value": "100", "Set": False}],
        "Usage": {"Memory": {"Current": 16 << 20, "Limit": 64 << 20},
                  "Cpu": {"UsageNanos": 1_500_000_000}, "Pids": {"Current": 3, "Limit": 0}},
    },
    "RootFS": {
        "Layers": [
            {"Digest": "sha256:" + "1" * 64, "DiffID": "sha256:" + "9" * 64, "Size": 4_400_000,
             "CreatedBy": "ADD rootfs.tar /"},
            {"Digest": "sha256:" + "2" * 64, "DiffID": "sha256:" + "8" * 64, "Size": 1200,
             "CreatedBy": "COPY site /srv"},
        ],
        "Writable": {"Size": 8192, "Changes": [{"Path": "/tmp", "Kind": 0},
                                               {"Path": "/tmp/x", "Kind": 1},
                                               {"Path": "/bin/ls", "Kind": 2}]},
    },
}  # fmt: skip


def stats_message(total: int, system: int, pre_total: int, pre_system: int, blkio=None) -> dict:
    message = {
        "read": "2026-12-02T01:00:02Z",
        "pids_stats": {"current": 3},
        "memory_stats": {"usage": 20 << 20, "limit": 64 << 20, "stats": {"inactive_file": 4 << 20}},
        "cpu_stats": {"cpu_usage": {"total_usage": total}, "system_cpu_usage": system,
                      "online_cpus": 2},
        "precpu_stats": {"cpu_usage": {"total_usage": pre_total}, "system_cpu_usage": pre_system},
    }  # fmt: skip
    if blkio is not None:
        message["blkio_stats"] = {"io_service_bytes_recursive": blkio}
    return message


@pytest.fixture
def engine():
    engine = FakeEngine(state="running")
    engine.container_rows = [ROW]
    engine.inspected[ID] = copy.deepcopy(INFO)
    engine.insides[ID] = copy.deepcopy(INSIDE)
    return engine


@pytest.fixture
def desktop(qtbot, engine, tmp_path, monkeypatch):
    monkeypatch.setenv("VMCTL_HOME", str(tmp_path / "vmctl"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr(bridge_module, "STATS_RETRY_S", 0.01)
    desktop = Desktop(engine, tray=False, poll_ms=100,
                      ask=lambda title, text: QMessageBox.StandardButton.No)  # fmt: skip
    qtbot.addWidget(desktop.window)
    desktop.begin()
    yield desktop
    engine.event_stream.close()
    for stream in engine.stats_streams:
        stream.close()
    desktop.bridge.shutdown()


@pytest.fixture
def details(qtbot, desktop):
    """The pane, showing `web`, its Overview read."""
    view = desktop.window.containers_view
    qtbot.waitUntil(lambda: view.model.rowCount() == 1, timeout=WAIT_MS)
    view.table.selectRow(0)
    pane = view.details
    qtbot.waitUntil(lambda: "Image" in pane.overview.fields, timeout=WAIT_MS)
    return pane


def off_ui_thread(engine: FakeEngine) -> None:
    ui = threading.main_thread().name
    assert all(thread != ui for _call, thread in engine.calls), engine.calls


def test_overview_says_what_inspect_has_in_words(details, engine):
    fields = {label: widget.text() for label, widget in details.overview.fields.items()}
    assert fields["Image"] == "busybox (bbbbbbbbbbbb)"
    assert fields["Command"] == "httpd -f -v"
    assert fields["State"] == "running (healthy), pid 4242, since 2026-12-02T01:00:01Z"
    assert fields["Restart policy"] == "on-failure (at most 3 retries)"
    assert fields["Ports"] == "127.0.0.1:8080 → 80/tcp\n443/tcp"
    assert fields["Mounts"] == "/home/me/site → /srv (bind, read-only)"
    assert fields["Networks"] == "bridge: 172.17.0.2 (gateway 172.17.0.1)"
    assert fields["Limits"] == "memory 67.1MB, 0.5 CPUs, 50 processes"
    assert fields["Environment"] == "PATH=/bin\nMODE=prod"
    assert fields["Labels"] == "tier=front"
    assert details.headline.text() == "web: Up 2 minutes"
    off_ui_thread(engine)


def test_inspect_is_a_tree_whose_json_and_values_copy(details):
    tab = details.inspect
    assert tab.tree.topLevelItemCount() == len(INFO)
    assert json.loads(tab.copy_json()) == INFO
    assert json.loads(QGuiApplication.clipboard().text()) == INFO
    state = next(tab.tree.topLevelItem(i) for i in range(len(INFO))
                 if tab.tree.topLevelItem(i).text(0) == "State")  # fmt: skip
    assert state.text(1) == "{7}" and state.childCount() == 7
    health = next(state.child(i) for i in range(7) if state.child(i).text(0) == "Health")
    tab.tree.setCurrentItem(health)
    assert json.loads(tab.copy_selected()) == {"Status": "healthy"}
    pid = next(state.child(i) for i in range(7) if state.child(i).text(0) == "Pid")
    tab.tree.setCurrentItem(pid)
    assert (pid.text(1), tab.copy_selected(), QGuiApplication.clipboard().text()) == (
        "4242", "4242", "4242")  # fmt: skip


def test_logs_follow_search_and_timestamps(qtbot, details, engine):
    tab = details.logs
    qtbot.waitUntil(lambda: "line two" in tab.text.toPlainText(), timeout=WAIT_MS)
    first = engine.streams[-1]
    tab.search.setText("LINE")
    assert tab.matches.text() == "2 matches"
    assert tab.text.textCursor().selectedText() == "line"
    assert not tab.follow.isChecked()  # a match stays in view
    first.put("a third line\n")  # counted again once the lines stop coming
    qtbot.waitUntil(lambda: tab.matches.text() == "3 matches", timeout=WAIT_MS)
    tab.timestamps.setChecked(True)
    qtbot.waitUntil(lambda: "Z line one" in tab.text.toPlainText(), timeout=WAIT_MS)
    assert first.closed.is_set()  # the old stream was closed, not left running
    assert tab.text.toPlainText().startswith("2026-12-02T01:00:00.000000000Z line one\n")
    assert ("logs " + ID + " timestamps") in [call for call, _thread in engine.calls]
    tab.search.setText("nothing like it")
    assert tab.matches.text() == "0 matches" and not tab.find()
    off_ui_thread(engine)


def test_stats_charts_cpu_memory_against_its_limit_and_block_io(qtbot, details, engine):
    qtbot.waitUntil(lambda: bool(engine.stats_streams), timeout=WAIT_MS)
    tab = details.stats
    stream = engine.stats_streams[0]
    stream.put(stats_message(1_000, 10_000, 0, 0))  # the first: no previous reading, 0%
    blkio = [{"op": "Read", "value": 4096}, {"op": "Write", "value": 1000},
             {"op": "read", "value": 4096}, {"op": "Total", "value": 9192}]  # fmt: skip
    stream.put(stats_message(3_000, 18_000, 1_000, 10_000, blkio))  # 2000/8000 of 2 CPUs
    qtbot.waitUntil(lambda: len(tab.history.samples) == 2, timeout=WAIT_MS)
    assert tab.status.text() == "Live: one sample a second, the last three minutes."
    assert tab.cpu.caption() == "CPU   50.0%"
    assert tab.memory.caption() == "Memory  used 16.8MB  limit 67.1MB"  # usage less the cache
    assert tab.memory.ceiling == 64 << 20
    assert tab.block.caption() == "Block I/O  read 8.19kB  written 1kB"
    assert tab.block.note == ""
    assert tab.pids.text() == "Processes: 3"
    details.tabs.setCurrentWidget(tab)
    tab.grab()  # paints: the charts draw what they hold
    off_ui_thread(engine)


def test_stats_without_block_io_say_so(qtbot, details, engine):
    qtbot.waitUntil(lambda: bool(engine.stats_streams), timeout=WAIT_MS)
    engine.stats_streams[0].put(stats_message(1_000, 10_000, 0, 0))
    qtbot.waitUntil(lambda: details.stats.history.last is not None, timeout=WAIT_MS)
    assert details.stats.block.note == "The engine reports no block I/O for this container."


def test_block_io_accounted_but_idle_is_zero_not_missing():
    message = stats_message(1_000, 10_000, 0, 0, blkio=[])
    assert samples.block_io(message) == (0, 0)
    assert samples.block_io(stats_message(1_000, 10_000, 0, 0)) == (None, None)
    assert samples.sample({"memory_stats": {}, "cpu_stats": {}}) is None  # not running


def test_an_engine_that_restarts_under_the_chart_is_said_and_the_chart_resumes(
    qtbot, details, engine
):
    qtbot.waitUntil(lambda: bool(engine.stats_streams), timeout=WAIT_MS)
    tab = details.stats
    engine.stats_streams[0].put(stats_message(1_000, 10_000, 0, 0))
    qtbot.waitUntil(lambda: tab.history.last is not None, timeout=WAIT_MS)
    gate = threading.Event()
    engine.stats_failures = [requests.exceptions.ConnectionError("refused")]
    engine.errors["inspect " + ID] = requests.exceptions.ConnectionError("refused")
    real_stats = engine.stats
    engine.stats = lambda cid: (gate.wait(), real_stats(cid))[1]  # hold the retry
    engine.stats_streams[0].end()  # the engine went away mid-stream
    qtbot.waitUntil(lambda: "does not answer" in tab.status.text(), timeout=WAIT_MS)
    assert "Stats paused; they resume when the engine answers again." in tab.status.text()
    assert list(tab.history.samples)[-1] is None  # a gap in the chart
    gate.set()
    qtbot.waitUntil(lambda: len(engine.stats_streams) == 2, timeout=WAIT_MS)
    engine.stats_streams[1].put(stats_message(2_000, 20_000, 1_000, 10_000))
    qtbot.waitUntil(lambda: tab.status.text().startswith("Live"), timeout=WAIT_MS)
    assert desktop_error_free(details)


def desktop_error_free(details) -> bool:
    return details.window().errors.isHidden()


def test_a_container_that_exits_while_open_is_said_and_the_pane_keeps_working(
    qtbot, details, engine
):
    qtbot.waitUntil(lambda: bool(engine.stats_streams), timeout=WAIT_MS)
    engine.inspected[ID]["State"].update(Status="exited", Running=False, ExitCode=137, Pid=0)
    engine.insides[ID].update(Running=False, Pid=0, Namespaces=[], Cgroup=None)
    engine.container_rows = [ContainerRow(ID, "web", "busybox", "httpd -f", "exited",
                                          "Exited (137) 1 second ago", 1, "")]  # fmt: skip
    engine.stats_streams[0].end()  # the engine ends the stream as the container stops
    engine.event_stream.put({"Type": "container", "Action": "die", "id": ID})
    pane = details
    qtbot.waitUntil(lambda: "stopped while you were looking" in pane.headline.text(),
                    timeout=WAIT_MS)  # fmt: skip
    assert pane.headline.text() == "web stopped while you were looking: Exited (137) 1 second ago"
    lists = [call for call, _thread in engine.calls].count("containers")
    engine.event_stream.put({"Type": "container", "Action": "create", "id": "other"})
    qtbot.waitUntil(lambda: [c for c, _t in engine.calls].count("containers") > lists,
                    timeout=WAIT_MS)  # fmt: skip
    qtbot.waitUntil(lambda: not pane.bridge.api.busy, timeout=WAIT_MS)  # and delivered
    assert pane.headline.text().startswith("web stopped while you were looking")  # it stays
    qtbot.waitUntil(lambda: "exited with code 137" in pane.overview.fields["State"].text(),
                    timeout=WAIT_MS)  # fmt: skip
    qtbot.waitUntil(lambda: pane.stats.status.text().startswith("The container stopped"),
                    timeout=WAIT_MS)  # fmt: skip
    qtbot.waitUntil(lambda: not pane.inside.facts.get("Running", True), timeout=WAIT_MS)
    assert "not running" in pane.inside.status.text()
    assert pane.tabs.isEnabled() and desktop_error_free(pane)


def test_a_container_removed_while_open_is_said(qtbot, details, engine):
    engine.container_rows = []
    del engine.inspected[ID]
    engine.event_stream.put({"Type": "container", "Action": "destroy", "id": ID})
    qtbot.waitUntil(lambda: "was removed" in details.headline.text(), timeout=WAIT_MS)
    assert details.headline.text() == "web was removed: its details are gone."
    assert not details.tabs.isEnabled()


def test_inside_shows_namespaces_cgroup_and_the_layer_stack(qtbot, details, engine):
    tab = details.inside
    qtbot.waitUntil(lambda: bool(tab.facts), timeout=WAIT_MS)
    rows = [[tab.namespaces.item(r, c).text() for c in range(4)]
            for r in range(tab.namespaces.rowCount())]  # fmt: skip
    assert rows == [
        ["pid (processes)", "4026532301", "4026531836", "its own"],
        ["net (network)", "4026531840", "4026531840", "shared with the VM"],
    ]
    assert tab.cgroup_label.text() == f"cgroup v2: /sys/fs/cgroup/vmctl/{ID}"
    limits = [[tab.limits.item(r, c).text() for c in range(3)] for r in range(2)]
    assert limits == [["memory.max", "67108864", "yes"], ["cpu.weight", "100", "no"]]
    assert tab.memory_bar.text() == "Memory: 16.8MB of 67.1MB"
    assert tab.pids_bar.text() == "Processes: 3 (no limit)"
    assert tab.cpu_label.text() == "CPU time used: 1.50 s"
    stack = [[tab.layers.topLevelItem(i).text(c) for c in range(3)] for i in range(3)]
    assert stack == [
        ["container layer (writable)", "8.19kB", "3 changes"],
        ["image layer 2: 222222222222", "1.2kB", "COPY site /srv"],
        ["image layer 1: 111111111111 (base)", "4.4MB", "ADD rootfs.tar /"],
    ]
    assert tab.stack.band_texts() == ["   ".join(row) for row in stack]  # drawn, top first
    assert not tab.stack.grab().isNull()
    changes = tab.layers.topLevelItem(0)
    assert [changes.child(i).text(0) for i in range(3)] == ["C /tmp", "A /tmp/x", "D /bin/ls"]
    assert tab.status.text() == "pid 4242 in the VM, seen from the engine (pid 812)"
    off_ui_thread(engine)


def test_selecting_nothing_stops_the_streams(qtbot, details, engine):
    qtbot.waitUntil(lambda: bool(engine.stats_streams), timeout=WAIT_MS)
    logs = engine.streams[-1]
    details.show_container(None)
    assert engine.stats_streams[0].closed.is_set() and logs.closed.is_set()
    assert details.headline.text() == "Select a container to see its details."
    assert not details.tabs.isEnabled()


def test_inside_follows_a_new_selection_while_the_last_ones_read_is_slow(qtbot, desktop, engine):
    other = "c" * 64
    engine.container_rows = [
        ROW,
        ContainerRow(other, "db", "busybox", "sh", "running", "Up", 2, ""),
    ]
    engine.inspected[other] = {**copy.deepcopy(INFO), "Id": other, "Name": "/db"}
    engine.insides[other] = {**copy.deepcopy(INSIDE), "Id": other, "Pid": 777}
    gate, real_inside = threading.Event(), engine.inside
    engine.inside = lambda cid: (cid != ID or gate.wait(WAIT_MS / 1000), real_inside(cid))[1]
    view = desktop.window.containers_view
    qtbot.waitUntil(lambda: view.model.rowCount() == 2, timeout=WAIT_MS)
    view.table.selectRow(view.model.row_of(ID))  # its read hangs
    view.table.selectRow(view.model.row_of(other))
    tab = view.details.inside
    qtbot.waitUntil(lambda: tab.facts.get("Id") == other, timeout=WAIT_MS)
    assert tab.status.text().startswith("pid 777 in the VM")
    gate.set()  # the old answer arrives late and is not shown
    qtbot.waitUntil(lambda: not desktop.bridge.api.busy, timeout=WAIT_MS)
    assert tab.facts["Id"] == other


def test_a_chart_scales_to_its_values_and_shows_a_limit_only_when_near_it(qtbot):
    chart = LineChart("Memory", str, window=180)
    qtbot.addWidget(chart)
    chart.show_series([Series("used", "#000", [10.0, None, 20.0])], ceiling=1000.0)
    assert (chart.ceiling_shown, chart.top()) == (False, 25.0)  # far below: the values fill it
    assert chart.caption() == "Memory  used 20.0  limit 1000.0"
    chart.show_series([Series("used", "#000", [10.0, 40.0])], ceiling=50.0)
    assert (chart.ceiling_shown, chart.top()) == (True, 50.0)
    chart.show_series([Series("used", "#000", [])])
    assert (chart.ceiling_shown, chart.top()) == (False, 1.0)
    chart.resize(300, 150)
    assert not chart.grab().isNull()


def test_the_pane_says_when_the_engine_stops_and_reads_again_when_it_is_back(
    qtbot, details, desktop, engine
):
    qtbot.waitUntil(lambda: bool(engine.stats_streams), timeout=WAIT_MS)
    desktop.bridge.stop_vm()
    qtbot.waitUntil(lambda: "engine is not running" in details.headline.text(), timeout=WAIT_MS)
    assert details.headline.text() == (
        "web cannot be seen: the engine is not running. Start it to see it again."
    )
    assert engine.stats_streams[0].closed.is_set() and not details.tabs.isEnabled()
    desktop.bridge.start_vm()
    qtbot.waitUntil(lambda: details.headline.text() == "web: Up 2 minutes", timeout=WAIT_MS)
    assert details.tabs.isEnabled()
    view = desktop.window.containers_view
    assert view.selected() is not None and view.selected().id == ID  # selected again
    qtbot.waitUntil(lambda: len(engine.stats_streams) == 2, timeout=WAIT_MS)  # a new stream
    qtbot.waitUntil(lambda: "line one" in details.logs.text.toPlainText(), timeout=WAIT_MS)


def test_an_engine_without_the_inside_endpoint_says_to_restart_the_vm(qtbot, desktop, engine):
    response = requests.Response()
    response.status_code = 404
    engine.errors["inside " + ID] = docker.errors.NotFound(
        "404 Client Error", response, explanation="page not found"
    )
    view = desktop.window.containers_view
    qtbot.waitUntil(lambda: view.model.rowCount() == 1, timeout=WAIT_MS)
    view.table.selectRow(0)
    tab = view.details.inside
    qtbot.waitUntil(lambda: tab.status.text().startswith("Cannot"), timeout=WAIT_MS)
    assert tab.status.text() == (
        "Cannot look inside: the engine in the VM is older than this app. "
        "Restart the VM to update it."
    )
