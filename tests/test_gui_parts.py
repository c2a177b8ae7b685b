"""The desktop app's pure parts: quick-run input, terminal command lines per OS, the login item,
preferences, formatting, error words, and the rule that the GUI uses vmctl's public API only."""

from __future__ import annotations

import ast
import plistlib
from pathlib import Path

import docker.errors
import pytest
import requests
from vmctl_gui import errors, fmt, prefs
from vmctl_gui.engine import ContainerRow, PublishedPort, RunRequest
from vmctl_gui.listings import container_row
from vmctl_gui.quickrun import parse_run
from vmctl_gui.terminal import terminal_argv
from vmctl_gui.vmctl_engine import _split_ref

from vmctl import autostart
from vmctl.errors import VmctlError

GUI = Path(__file__).resolve().parents[1] / "gui"
PUBLIC = {"vmctl", "vmctl.vm", "vmctl.config", "vmctl.paths", "vmctl.errors", "vmctl.autostart",
          "vmctl.atomic", "vmctl.cli"}  # fmt: skip


def test_parse_run_accepts_what_docker_run_would():
    request = parse_run(" alpine:3.20 ", "sh -c 'echo a b'", "8080:80, 53:53/udp", "A=1\n\nB=x=y")
    assert request == RunRequest(
        "alpine:3.20", ("sh", "-c", "echo a b"), ("A=1", "B=x=y"), ("8080:80", "53:53/udp")
    )
    assert request.title == "alpine:3.20 sh -c echo a b (ports 8080:80, 53:53/udp)"
    assert request.published == (PublishedPort("", 8080, 80),)  # udp opens in no browser
    assert parse_run("busybox", "", "", "") == RunRequest("busybox")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (("", "", "", ""), "Image: give one image name"),
        (("two words", "", "", ""), "Image: give one image name"),
        (("busybox", "echo 'open", "", ""), "Command: No closing quotation"),
        (("busybox", "", "80", ""), "Ports: '80' is not HOST:CONTAINER"),
        (("busybox", "", "70000:80", ""), "Ports: '70000:80' is not HOST:CONTAINER"),
        (("busybox", "", "", "1A=2"), "Env: '1A=2' is not NAME=value"),
    ],
)
def test_parse_run_says_which_field_is_wrong(fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_run(*fields)


def test_parse_run_takes_a_folder_to_mount_at_the_same_path(tmp_path):
    request = parse_run("busybox", "ls", "8080:80", "", f" {tmp_path}/ ")
    assert request.folders == (str(tmp_path),)
    assert request.title == f"busybox ls (ports 8080:80) (folder {tmp_path})"
    (tmp_path / "file").write_text("x")
    for wrong in ("relative/dir", str(tmp_path / "file"), str(tmp_path / "missing")):
        with pytest.raises(ValueError) as refused:
            parse_run("busybox", "", "", "", wrong)
        assert str(refused.value) == (f"Folder: {wrong!r} is not a folder on this machine (give "
                                      "its full path, or choose it with Browse…)")  # fmt: skip


def test_open_ports_are_the_running_containers_browsable_ports():
    from vmctl_gui.engine import ContainerRow
    from vmctl_gui.port_opener import OpenPort, open_ports

    def row(name, state, *ports):
        return ContainerRow(name, name, "img", "", state, "", 0, "", published=ports)

    rows = [row("web", "running", PublishedPort("0.0.0.0", 8080, 80),
                PublishedPort("::", 8080, 80), PublishedPort("0.0.0.0", 53, 53, "udp")),
            row("old", "exited", PublishedPort("0.0.0.0", 9000, 80)),
            row("lan", "running", PublishedPort("192.168.1.5", 8443, 443))]  # fmt: skip
    assert open_ports(rows, "127.0.0.1") == [
        OpenPort("web", "http://localhost:8080"),
        OpenPort("lan", "http://192.168.1.5:8443"),
    ]
    assert open_ports(rows, "0.0.0.0")[0].label == "web: http://localhost:8080"


def test_terminal_command_for_each_platform():
    cmd = ["vmctl", "ssh", "--name", "dev box"]
    mac = terminal_argv(cmd, platform="darwin")
    assert mac[0] == "osascript"
    assert mac[2] == 'tell application "Terminal" to do script "vmctl ssh --name \'dev box\'"'
    has = {"wt.exe"}.__contains__
    assert terminal_argv(cmd, "win32", lambda p: p if has(p) else None)[:4] == [
        "wt.exe",
        "new-tab",
        "--title",
        "vmctl",
    ]
    assert terminal_argv(cmd, "win32", lambda p: None)[:5] == [
        "cmd.exe",
        "/c",
        "start",
        "vmctl",
        "cmd.exe",
    ]
    only = {"xterm"}.__contains__
    assert terminal_argv(cmd, "linux", lambda p: p if only(p) else None, {}) == [
        "xterm",
        "-e",
        *cmd,
    ]
    assert terminal_argv(cmd, "linux", lambda p: p, {"TERMINAL": "foot"})[:2] == ["foot", "-e"]
    assert terminal_argv(cmd, "linux", lambda p: p, {})[:2] == ["x-terminal-emulator", "-e"]
    with pytest.raises(
        VmctlError, match=r"no terminal emulator was found.*vmctl ssh --name 'dev box'"
    ):
        terminal_argv(cmd, "linux", lambda p: None, {})


def test_login_item_on_linux_and_macos(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    command = ["/opt/vmctl/vmctl", "gui", "--name", "my vm"]
    assert "Exec=/opt/vmctl/vmctl gui --name 'my vm'\n" in autostart.desktop_entry(command)
    plist = plistlib.loads(autostart.launch_agent(command))
    assert plist["ProgramArguments"] == command and plist["RunAtLoad"] is True
    assert autostart.entry_path("darwin", tmp_path) == (
        tmp_path / "Library/LaunchAgents/io.vmctl.desktop.plist"
    )
    assert not autostart.enabled()
    autostart.enable(command)
    entry = tmp_path / "cfg" / "autostart" / "vmctl.desktop"
    assert autostart.enabled() and entry.read_text() == autostart.desktop_entry(command)
    assert [p.name for p in entry.parent.iterdir()] == ["vmctl.desktop"]  # no temp files left
    autostart.disable()
    assert not entry.exists() and not autostart.enabled()
    autostart.disable()  # twice is fine


def test_prefs_remember_the_last_runs_and_survive_a_broken_file(tmp_path, monkeypatch):
    monkeypatch.setenv("VMCTL_HOME", str(tmp_path))
    assert prefs.load() == prefs.Prefs()
    p = prefs.Prefs()
    for n in range(7):
        p = p.remember(RunRequest("busybox", ("echo", str(n))))
    p = p.remember(RunRequest("busybox", ("echo", "3")))
    assert [r.command[1] for r in p.recent_runs] == ["3", "6", "5", "4", "2"]
    prefs.save(p)
    assert prefs.load() == p
    (tmp_path / "desktop.json").write_text('{"recent_runs": [{"no image": 1}]')
    assert prefs.load() == prefs.Prefs()
    assert (tmp_path / "desktop.json.broken").exists()


def test_sizes_and_times_read_like_the_docker_cli():
    assert [fmt.size(n) for n in (0, 999, 4_400_000, 1_230_000_000)] == [
        "0B",
        "999B",
        "4.4MB",
        "1.23GB",
    ]
    assert fmt.ago(1000, now=1000.5) == "Just now"
    assert fmt.ago(1000, now=1030) == "Less than a minute ago"
    assert fmt.ago(1000, now=1000 + 180) == "3 minutes ago"
    assert fmt.ago(0, now=86400 * 2) == "2 days ago"
    assert fmt.short_id("sha256:" + "ab" * 32) == "abababababab"
    assert _split_ref("busybox") == ("busybox", "latest")
    assert _split_ref("localhost:5000/x:1") == ("localhost:5000/x", "1")
    assert _split_ref("localhost:5000/x") == ("localhost:5000/x", "latest")


def test_a_published_port_opens_where_the_host_agent_listens():
    port = PublishedPort("0.0.0.0", 8080, 80)
    assert port.url() == port.url("0.0.0.0") == "http://localhost:8080"
    assert port.url("192.168.1.20") == "http://192.168.1.20:8080"  # --publish-address
    assert PublishedPort("127.0.0.2", 81, 80).url() == "http://127.0.0.2:81"  # -p IP:81:80
    assert PublishedPort("::", 82, 80).url("fd00::5") == "http://[fd00::5]:82"


def test_a_container_row_has_docker_ps_health_and_its_browsable_ports():
    listed = {"Id": "c" * 64, "Names": ["/web"], "State": "running",
              "Status": "Up 3 minutes (health: starting)",
              "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                        {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                        {"IP": "0.0.0.0", "PrivatePort": 53, "PublicPort": 53, "Type": "udp"},
                        {"PrivatePort": 443, "Type": "tcp"}]}  # fmt: skip
    row = container_row(listed)
    assert row.health == "starting"
    assert row.links == (PublishedPort("0.0.0.0", 8080, 80),)  # once; udp is no page
    assert container_row({**listed, "Status": "Up 1 second (unhealthy)"}).health == "unhealthy"
    assert container_row({**listed, "Status": "Exited (0) 1 second ago"}).health == ""
    assert ContainerRow("x", "n", "i", "c", "running", "Up", 0, "").links == ()


def test_errors_are_described_with_what_to_do_next():
    assert "Start the VM" in errors.describe(requests.exceptions.ConnectionError("refused"))
    assert "Start the VM" in errors.describe(FileNotFoundError(2, "No such file"))
    missing = docker.errors.ImageNotFound("404", explanation="No such image: nope:latest")
    assert (
        errors.describe(missing)
        == "No such image: nope:latest. Check the image name, or pull it first."
    )
    assert errors.describe(VmctlError("VM 'x' is not running: vmctl start --name x")) == (
        "VM 'x' is not running: vmctl start --name x"
    )


def test_the_gui_imports_only_vmctls_public_api():
    used = set()
    for path in GUI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vmctl"):
                names = [f"{node.module}.{a.name}" for a in node.names]
                used |= {n for n in names if n in PUBLIC} or {node.module}
            elif isinstance(node, ast.Import):
                used |= {a.name for a in node.names if a.name.startswith("vmctl")}
    used = {u for u in used if not u.startswith("vmctl_gui")}
    assert used <= PUBLIC, sorted(used - PUBLIC)


def test_no_display_is_said_in_words_before_qt_aborts():
    from vmctl_gui.app import check_display

    with pytest.raises(VmctlError, match="needs a display, and neither DISPLAY nor WAYLAND"):
        check_display({}, "linux")
    check_display({"DISPLAY": ":0"}, "linux")
    check_display({"WAYLAND_DISPLAY": "wayland-0"}, "linux")
    check_display({"QT_QPA_PLATFORM": "offscreen"}, "linux")
    check_display({}, "darwin")


def test_open_shell_without_the_docker_cli_says_what_to_install(tmp_path, monkeypatch):
    from vmctl_gui.vmctl_engine import VmctlEngine

    monkeypatch.setenv("PATH", str(tmp_path))  # no docker CLI anywhere
    engine = VmctlEngine("default", docker_host="unix:///nowhere.sock")
    with pytest.raises(VmctlError, match="Open shell needs the docker command-line client"):
        engine.shell_command("abc")
    (tmp_path / "docker").write_text("#!/bin/sh\n")
    (tmp_path / "docker").chmod(0o755)
    assert engine.shell_command("abc") == [
        str(tmp_path / "docker"), "--host", "unix:///nowhere.sock", "exec", "-it", "abc", "sh"
    ]  # fmt: skip


def test_parse_build_names_the_field_that_is_wrong(tmp_path):
    from vmctl_gui.build_view import parse_build
    from vmctl_gui.engine import BuildRequest

    (tmp_path / "Dockerfile").write_text("FROM busybox\n")
    assert parse_build(str(tmp_path), " ", "app:1, app:latest", "A=1\n\nB=x=y") == BuildRequest(
        str(tmp_path), "Dockerfile", ("app:1", "app:latest"), (("A", "1"), ("B", "x=y"))
    )
    for args, message in (
        (("", "", "", ""), "Folder: none given is not a folder"),
        ((str(tmp_path / "no"), "", "", ""), f"Folder: {tmp_path / 'no'} is not a folder"),
        ((str(tmp_path), "Other", "", ""), f"Dockerfile: there is no Other in {tmp_path}"),
        ((str(tmp_path), "", "App:1", ""), "Tags: 'App:1' is not an image name, e.g. myapp"),
        ((str(tmp_path), "", "", "1X=2"), "Build args: '1X=2' is not NAME=value (one a line)"),
    ):
        with pytest.raises(ValueError) as raised:
            parse_build(*args)
        assert str(raised.value).startswith(message)


def test_build_params_send_every_tag_and_the_args_as_the_cli_does():
    from vmctl_gui.building import build_params
    from vmctl_gui.engine import BuildRequest

    params = build_params(BuildRequest("/src", "ci/Dockerfile", ("a:1", "a:2"), (("V", "3"),)))
    assert params == {"dockerfile": "ci/Dockerfile", "rm": "1", "t": ["a:1", "a:2"],
                      "buildargs": '{"V": "3"}'}  # fmt: skip
    assert build_params(BuildRequest("/src")) == {"dockerfile": "Dockerfile", "rm": "1"}


def test_build_log_names_the_step_that_failed():
    from vmctl_gui.building import BuildLog

    log = BuildLog()
    assert log.add({"stream": "Step 1/2 : FROM busybox\n"}) == "Step 1/2 : FROM busybox\n"
    log.add({"stream": " ---> 1234\nStep 2/2 : RUN false\n"})
    assert log.failure == ""
    said = log.add({"errorDetail": {"message": "The command '/bin/sh -c false' returned a "
                    "non-zero code: 1"}, "error": "ignored when errorDetail says it"})  # fmt: skip
    assert said == "ERROR: The command '/bin/sh -c false' returned a non-zero code: 1\n"
    assert log.failure == ("Step 2/2 : RUN false failed: The command '/bin/sh -c false' "
                           "returned a non-zero code: 1")  # fmt: skip
    built = BuildLog()
    built.add({"aux": {"ID": "sha256:" + "f" * 64}})
    assert built.image == "sha256:" + "f" * 64 and built.failure == ""


def test_a_port_answers_only_when_a_server_replies_not_when_a_proxy_accepts():
    """The engine's proxy accepts a published port's connection before anything listens in
    the container, then closes it: that is no answer."""
    import socket
    import threading

    from vmctl_gui.quickrun import port_answers

    def serve(listener: socket.socket, reply: bytes) -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(reply)

    for reply, answered in ((b"", False), (b"HTTP/1.0 200 OK\r\n\r\n", True)):
        with socket.create_server(("127.0.0.1", 0)) as listener:
            thread = threading.Thread(target=serve, args=(listener, reply))
            thread.start()
            port = listener.getsockname()[1]
            assert port_answers(f"http://localhost:{port}", timeout=60) is answered
            thread.join()


def test_the_quick_run_dialog_says_a_folder_the_vm_does_not_share(qtbot, tmp_path):
    from vmctl_gui.quickrun import QuickRunDialog

    (tmp_path / "shared" / "app").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    dialog = QuickRunDialog(shared=(str(tmp_path / "shared"),))
    qtbot.addWidget(dialog)
    dialog.image.setText("busybox")
    dialog.folder.setText(str(tmp_path / "elsewhere"))
    dialog.accept()
    assert dialog.problem.text() == (
        f"Folder: {tmp_path}/elsewhere is not shared with the VM (it shares {tmp_path}/shared): "
        "add it in Settings, Shared folders"
    )
    assert dialog.result() != QuickRunDialog.DialogCode.Accepted
    dialog.folder.setText(str(tmp_path / "shared" / "app"))
    dialog.accept()
    assert dialog.problem.text() == "" and dialog.result() == QuickRunDialog.DialogCode.Accepted
    assert dialog.request.folders == (str(tmp_path / "shared" / "app"),)


def test_a_quick_runs_docker_py_arguments(monkeypatch):
    from vmctl_gui import runspec

    assert runspec.exposed_ports(("8080:80", "53:53/udp")) == [(80, "tcp"), (53, "udp")]
    assert runspec.port_bindings(("8080:80", "53:53/udp")) == {"80": 8080, "53/udp": 53}
    assert runspec.binds(("/home/me/src",)) == ["/home/me/src:/home/me/src"]
    monkeypatch.setattr("sys.platform", "win32")  # the VM sees C:\ as /c
    assert runspec.binds(("C:\\Users\\me\\src",)) == ["/c/Users/me/src:/c/Users/me/src"]
