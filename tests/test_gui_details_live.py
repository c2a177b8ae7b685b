"""The details pane against the real engine (`vmctl-agent serve` on this host): the Stats tab
fed by the real stats stream, the Inside tab checked against /proc/<pid>/ns and the cgroup
files of the real container, a container stopped while its details are open, and the engine
restarted under an open stats chart."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from agentserver import AgentServer, serving
from guikit import AgentOnHost
from PySide6.QtWidgets import QMessageBox
from test_api_inside import cgroup_dir, ns_id
from vmctl_gui.app import Desktop

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")
WAIT_MS = 60_000


@pytest.fixture
def server(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-details"), registry) as server:
        yield server


@pytest.fixture
def desktop(qtbot, server, tmp_path, monkeypatch):
    monkeypatch.setenv("VMCTL_HOME", str(tmp_path))
    desktop = Desktop(AgentOnHost("gui", docker_host=server.url), tray=False,
                      ask=lambda title, text: QMessageBox.StandardButton.No)  # fmt: skip
    qtbot.addWidget(desktop.window)
    desktop.begin()
    qtbot.waitUntil(lambda: desktop.bridge.state.state == "running", timeout=WAIT_MS)
    yield desktop
    desktop.bridge.shutdown()


def open_details(qtbot, desktop, server, *run_args: str):
    """Run a container, select it in the list, and return the pane and the container's id."""
    ran = server.docker("run", "-d", *run_args)
    assert ran.returncode == 0, ran.stderr
    container = ran.stdout.strip()
    view = desktop.window.containers_view
    qtbot.waitUntil(lambda: view.model.row_of(container) >= 0, timeout=WAIT_MS)
    view.table.selectRow(view.model.row_of(container))
    return view.details, container


def pid_of(server, container: str) -> int:
    return int(server.docker("inspect", "-f", "{{.State.Pid}}", container).stdout)


def test_stats_chart_the_real_stream_with_memory_against_its_limit(qtbot, desktop, server):
    pane, _container = open_details(qtbot, desktop, server, "--memory", "64m", "busybox",
                                   "sh", "-c", "echo ready; sleep 60")  # fmt: skip
    tab = pane.stats
    qtbot.waitUntil(lambda: len([s for s in tab.history.samples if s]) >= 2, timeout=WAIT_MS)
    last = tab.history.last
    assert last.memory_limit == 64 << 20 and 0 < last.memory_used < 64 << 20
    assert last.pids == 1 and last.cpu_percent >= 0
    assert tab.memory.ceiling == 64 << 20
    assert tab.status.text() == "Live: one sample a second, the last three minutes."
    assert "limit 67.1MB" in tab.memory.caption()
    qtbot.waitUntil(lambda: "ready" in pane.logs.text.toPlainText(), timeout=WAIT_MS)
    assert pane.overview.fields["Limits"].text() == "memory 67.1MB"
    assert desktop.window.errors.isHidden(), desktop.window.errors.text.text()


def test_inside_tab_is_what_proc_and_the_cgroup_files_say(qtbot, desktop, server):
    pane, container = open_details(qtbot, desktop, server, "--pids-limit", "40", "busybox",
                                   "sleep", "60")  # fmt: skip
    tab = pane.inside
    qtbot.waitUntil(lambda: bool(tab.facts.get("Namespaces")), timeout=WAIT_MS)
    pid = pid_of(server, container)
    rows = {tab.namespaces.item(r, 0).text().split()[0]: r for r in range(7)}
    for kind, short in (("pid", "pid"), ("mnt", "mount"), ("net", "net"), ("user", "user")):
        r = rows[short]
        assert tab.namespaces.item(r, 1).text() == str(ns_id(pid, kind)), kind
        assert tab.namespaces.item(r, 2).text() == str(ns_id(server.process.pid, kind)), kind
    assert tab.namespaces.item(rows["net"], 3).text() == "its own"
    assert tab.namespaces.item(rows["user"], 3).text() == "shared with the VM"
    limits = {tab.limits.item(r, 0).text(): r for r in range(tab.limits.rowCount())}
    pids_max = (cgroup_dir(pid, "pids") / "pids.max").read_text().strip()
    assert pids_max == "40"
    assert tab.limits.item(limits["pids.max"], 1).text() == pids_max
    assert tab.limits.item(limits["pids.max"], 2).text() == "yes"
    assert tab.pids_bar.text() == "Processes: 1 of 40"
    base = tab.layers.topLevelItem(tab.layers.topLevelItemCount() - 1)
    assert base.text(0).endswith("(base)") and base.text(2) == "imagekit layer 0"


def test_a_container_stopped_while_its_details_are_open(qtbot, desktop, server):
    pane, container = open_details(qtbot, desktop, server, "busybox", "sleep", "60")
    qtbot.waitUntil(lambda: pane.stats.history.last is not None, timeout=WAIT_MS)
    assert server.docker("kill", container).returncode == 0
    qtbot.waitUntil(lambda: "stopped while you were looking" in pane.headline.text(),
                    timeout=WAIT_MS)  # fmt: skip
    qtbot.waitUntil(lambda: pane.stats.status.text().startswith("The container stopped"),
                    timeout=WAIT_MS)  # fmt: skip
    qtbot.waitUntil(lambda: "exited with code 137" in pane.overview.fields["State"].text(),
                    timeout=WAIT_MS)  # fmt: skip
    qtbot.waitUntil(lambda: tab_says_not_running(pane), timeout=WAIT_MS)
    assert server.docker("start", container).returncode == 0
    qtbot.waitUntil(lambda: "started while you were looking" in pane.headline.text(),
                    timeout=WAIT_MS)  # fmt: skip
    qtbot.waitUntil(lambda: pane.stats.status.text().startswith("Live"), timeout=WAIT_MS)
    assert desktop.window.errors.isHidden(), desktop.window.errors.text.text()


def tab_says_not_running(pane) -> bool:
    return pane.inside.facts.get("Running") is False and "not running" in pane.inside.status.text()


def test_an_engine_restarted_under_an_open_stats_chart(qtbot, desktop, server, registry):
    pane, container = open_details(qtbot, desktop, server, "busybox", "sleep", "120")
    tab = pane.stats
    qtbot.waitUntil(lambda: tab.history.last is not None, timeout=WAIT_MS)
    server.process.terminate()  # the engine goes; the container (its shim) stays
    try:
        server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:  # say where it hangs: the agent dumps its stacks
        server.process.send_signal(signal.SIGUSR1)
        time.sleep(2)
        pytest.fail(f"the agent did not stop on SIGTERM:\n{server.log.read_text()[-8000:]}")
    qtbot.waitUntil(lambda: "Stats paused" in tab.status.text(), timeout=WAIT_MS)
    restarted = AgentServer(server.workdir, registry)
    server.process = restarted.process  # so the fixture stops the new one
    seen = len(tab.history.samples)
    qtbot.waitUntil(lambda: tab.status.text().startswith("Live"), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: len(tab.history.samples) > seen + 1, timeout=WAIT_MS)
    assert None in tab.history.samples  # the gap stays in the chart
    assert server.docker("inspect", "-f", "{{.State.Running}}", container).stdout.strip() == "true"
