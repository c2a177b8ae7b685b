"""The Images tab's history, Build…, push and prune against the real engine (`vmctl-agent
serve` on this host): the history as `docker history` has it, a build with tags, build args
and a .dockerignore streamed into its window, a failing build naming its step, a cancelled
build leaving no step container or process, push in the engine's words, prune after asking."""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from agentserver import ok, serving
from guikit import AgentOnHost
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox
from vmctl_gui import fmt
from vmctl_gui.app import Desktop
from vmctl_gui.build_view import parse_build

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")
WAIT_MS = 120_000
YES, NO = QMessageBox.StandardButton.Yes, QMessageBox.StandardButton.No
DOCKERFILE = """FROM busybox
ARG GREETING=hi
RUN echo "$GREETING" > /greeting
COPY . /ctx/
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-images"), registry) as server:
        ok(server.docker("pull", "busybox"))
        yield server


@pytest.fixture
def desktop(qtbot, server, tmp_path, monkeypatch):
    monkeypatch.setenv("VMCTL_HOME", str(tmp_path / "home"))
    answers = [NO]
    desktop = Desktop(AgentOnHost("gui", docker_host=server.url), tray=False,
                      ask=lambda title, text: answers[-1])  # fmt: skip
    desktop.answers = answers
    qtbot.addWidget(desktop.window)
    desktop.begin()
    qtbot.waitUntil(lambda: desktop.bridge.state.state == "running", timeout=WAIT_MS)
    yield desktop
    desktop.bridge.shutdown()


@pytest.fixture
def context(tmp_path) -> Path:
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "Dockerfile").write_text(DOCKERFILE)
    (folder / "note.txt").write_text("kept\n")
    (folder / "secret.txt").write_text("left out\n")
    (folder / ".dockerignore").write_text("# not sent\nsecret.txt\n")
    (folder / "Dockerfile.fail").write_text("FROM busybox\nRUN echo ok\nRUN exit 3\n")
    (folder / "Dockerfile.slow").write_text("FROM busybox\nRUN echo started; sleep 300\n")
    return folder


def select(qtbot, view, repository: str, tag: str = "latest") -> None:
    def index() -> int:
        rows = view.model.rows
        return next((i for i, r in enumerate(rows) if (r.repository, r.tag) == (repository, tag)),
                    -1)  # fmt: skip

    qtbot.waitUntil(lambda: index() >= 0, timeout=WAIT_MS)
    view.table.selectRow(index())


def test_history_lists_each_step_as_docker_history_does(qtbot, desktop, server):
    view = desktop.window.images_view
    select(qtbot, view, "busybox")
    window = view.history()
    qtbot.waitUntil(lambda: window.model.rowCount() > 0, timeout=WAIT_MS)
    steps = ok(server.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", "busybox"))
    assert [r.created_by for r in window.model.rows] == steps.splitlines()
    sizes = ok(server.docker("history", "--human=false", "--format", "{{.Size}}", "busybox"))
    assert [str(r.size) for r in window.model.rows] == sizes.split()
    total = fmt.size(sum(int(n) for n in sizes.split()))
    assert window.summary.text() == f"1 step, 1 of them with content: {total}."  # imagekit's
    window.close()


def test_build_streams_its_output_with_tags_args_and_dockerignore(qtbot, desktop, server, context):
    request = parse_build(str(context), "", "gui-built:1, gui-built:latest", "GREETING=hello")
    window = desktop.window.images_view.build(request)
    qtbot.waitUntil(lambda: window.ended is not None, timeout=WAIT_MS)
    text = window.output.toPlainText()
    assert window.ended, text
    assert "Step 1/4 : FROM busybox" in text and "Step 4/4 : COPY . /ctx/" in text
    image = ok(server.docker("image", "inspect", "-f", "{{.Id}}", "gui-built:1")).strip()
    assert window.status.text() == f"Built {image[7:19]}."
    assert (
        ok(server.docker("image", "inspect", "-f", "{{.Id}}", "gui-built:latest")).strip() == image
    )
    ran = ok(server.docker("run", "--rm", "gui-built:1", "sh", "-c", "cat /greeting; ls /ctx"))
    assert ran.split() == ["hello", "Dockerfile", "Dockerfile.fail", "Dockerfile.slow",
                           "note.txt"]  # fmt: skip
    assert desktop.window.errors.isHidden(), desktop.window.errors.text.text()


def test_a_failing_build_names_its_step_and_leaves_nothing(qtbot, desktop, server, context):
    before = ok(server.docker("images", "-aq")).split()
    request = parse_build(str(context), "Dockerfile.fail", "gui-failed", "")
    window = desktop.window.images_view.build(request)
    qtbot.waitUntil(lambda: window.ended is not None, timeout=WAIT_MS)
    failure = ("Step 3/3 : RUN exit 3 failed: The command '/bin/sh -c exit 3' returned a "
               "non-zero code: 3")  # fmt: skip
    assert window.status.text() == f"Build failed: {failure}"
    assert desktop.window.errors.text.text() == f"Could not build gui-failed: {failure}"
    assert ok(server.docker("ps", "-aq")) == ""
    assert server.docker("image", "inspect", "gui-failed").returncode == 1
    left = set(ok(server.docker("images", "-aq")).split()) - set(before)
    assert len(left) <= 1  # at most the cached `RUN echo ok` step, as dockerd keeps it


def sleepers(step: str) -> list[int]:
    """Processes running the slow build's step (its shell execs the last command) in the
    step's container, by its cgroup (another suite on the machine may run the same build)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if (
                Path(f"/proc/{pid}/cmdline").read_bytes()
                in (
                    b"sleep\x00300\x00",
                    b"/bin/sh\0-c\0echo started; sleep 300\0",
                )
                and f"/{step}" in Path(f"/proc/{pid}/cgroup").read_text()
            ):
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_cancel_stops_the_build_and_leaves_no_step_behind(qtbot, desktop, server, context):
    request = parse_build(str(context), "Dockerfile.slow", "gui-slow", "")
    window = desktop.window.images_view.build(request)
    qtbot.waitUntil(lambda: "\nstarted\n" in window.output.toPlainText(), timeout=WAIT_MS)
    step = re.search(r"Running in (\w+)", window.output.toPlainText()).group(1)
    assert sleepers(step), window.output.toPlainText()
    qtbot.mouseClick(window.cancel_button, Qt.MouseButton.LeftButton)
    assert window.status.text() == "Build cancelled." and not window.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: sleepers(step) == [], timeout=WAIT_MS)
    qtbot.waitUntil(lambda: ok(server.docker("ps", "-aq")) == "", timeout=WAIT_MS)  # its step
    assert server.docker("image", "inspect", "gui-slow").returncode == 1
    assert desktop.window.errors.isHidden(), desktop.window.errors.text.text()


def test_push_reaches_the_engine_and_says_its_answer(qtbot, desktop, server, registry):
    """The engine's push lands in another branch: until then its 404 is said in words; once
    it has landed, the image must be in the registry."""
    target = f"{registry.url.split('//')[1]}/gui/pushed"
    ok(server.docker("tag", "busybox", f"{target}:1"))
    view = desktop.window.images_view
    select(qtbot, view, target, "1")
    qtbot.mouseClick(view.push_button, Qt.MouseButton.LeftButton)
    assert not view.push_button.isEnabled()
    qtbot.waitUntil(lambda: view.pushing is None, timeout=WAIT_MS)
    errors = desktop.window.errors
    if view.panel.summary.text() == f"Pushed {target}:1":
        assert urllib.request.urlopen(f"{registry.url}/v2/gui/pushed/manifests/1").status == 200
        assert errors.isHidden(), errors.text.text()
    else:
        assert errors.text.text() == (
            f"Could not push {target}:1: the engine answered page not found: it has no push "
            "yet (POST /images/{name}/push)"
        )
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{registry.url}/v2/gui/pushed/manifests/1")
    assert view.push_button.isEnabled()
    ok(server.docker("rmi", f"{target}:1"))


def test_prune_asks_then_removes_the_dangling_images(qtbot, desktop, server, context):
    def dangling() -> list[str]:
        return sorted(ok(server.docker("images", "-q", "-f", "dangling=true")).split())

    before = dangling()
    for content in ("one", "two"):  # the second build leaves the first untagged
        (context / "note.txt").write_text(content)
        ok(server.docker("build", "-q", "-t", "gui-prune", str(context)))
    assert len(set(dangling()) - set(before)) == 1
    view = desktop.window.images_view
    qtbot.waitUntil(lambda: any(r.tag == "<none>" for r in view.model.rows), timeout=WAIT_MS)
    qtbot.mouseClick(view.prune_button, Qt.MouseButton.LeftButton)  # the user says No
    assert len(set(dangling()) - set(before)) == 1
    desktop.answers.append(YES)
    qtbot.mouseClick(view.prune_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.note.text().startswith("Pruned"), timeout=WAIT_MS)
    assert dangling() == []
    assert server.docker("image", "inspect", "gui-prune").returncode == 0  # tagged: kept
    qtbot.waitUntil(lambda: all(r.tag != "<none>" for r in view.model.rows), timeout=WAIT_MS)
    assert desktop.window.errors.isHidden(), desktop.window.errors.text.text()
