"""vmctl's config, CLI and status plumbing that needs no VM (the VM itself: test_vmctl_e2e)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vmctl import boot, cli, locks, stages, vm
from vmctl import config as vmconfig
from vmctl import paths as vmpaths
from vmctl.errors import VmctlError


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("VMCTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    return tmp_path / "home"


def vmctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vmctl.cli", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cpus": 0}, "cpus must be a whole number from 1"),
        ({"memory_mib": 100}, "memory must be a whole number from 512"),
        ({"disk_gib": 1}, "disk must be a whole number from 4"),
        ({"driver": "vbox"}, "unknown driver 'vbox': use one of libvirt, qemu"),
        ({"accel": "fast"}, "unknown accelerator 'fast'"),
        ({"registry_mirrors": ["10.0.2.2:5000"]}, "must start with http:// or https://"),
        ({"insecure_registries": ["http://x:5000"]}, "use HOST:PORT or a CIDR"),
        ({"publish_address": "localhost"}, "publish address 'localhost' is not an IP address"),
    ],
)
def test_bad_settings_are_refused_with_the_rule(changes, message):
    with pytest.raises(VmctlError, match=message):
        vmconfig.VMConfig().replace(**changes)


def test_config_round_trip_and_broken_files(home):
    path = home / "vm.json"
    config = vmconfig.VMConfig(cpus=1, registry_mirrors=("http://10.0.2.2:5000",))
    vmconfig.save(config, path)
    assert vmconfig.load(path) == config
    assert not list(home.glob(".*.tmp"))
    path.write_text("{broken")
    with pytest.raises(VmctlError, match=r"is not valid JSON .*: fix or delete it"):
        vmconfig.load(path)
    path.write_text('{"cpus": 1, "colour": "red"}')
    with pytest.raises(VmctlError, match="unknown keys colour"):
        vmconfig.load(path)


def test_config_command_changes_only_what_is_given(home):
    first = vmctl("config", "--name", "dev", "--memory", "1024", "--registry-mirror", "http://m:1")
    assert first.returncode == 0, first.stderr
    second = vmctl("config", "--name", "dev", "--cpus", "1")
    shown = json.loads(second.stdout)
    assert (shown["cpus"], shown["memory_mib"], shown["registry_mirrors"]) == (
        1,
        1024,
        ["http://m:1"],
    )
    bad = vmctl("config", "--name", "dev", "--memory", "10")
    assert bad.returncode == 1
    assert bad.stderr.startswith("vmctl: memory must be a whole number")
    assert json.loads((home / "dev" / "vm.json").read_text())["memory_mib"] == 1024


def test_shared_folders_are_added_changed_and_removed_one_at_a_time(home, tmp_path):
    code, data = tmp_path / "code", tmp_path / "data"
    added = vmctl("config", "--name", "dev", "--mount", str(code), "--mount", f"{data}:ro")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["mounts"] == [str(code), f"{data}:ro"]
    changed = vmctl("config", "--name", "dev", "--mount", f"{code}:ro", "--unmount", str(data))
    assert json.loads(changed.stdout)["mounts"] == [f"{code}:ro"]
    config = vmconfig.load(home / "dev" / "vm.json")
    assert config.daemon_json()["vmctl-shared-paths"] == [str(code)]
    assert config.daemon_json()["vmctl-host-os"] == "linux"  # C:\\ paths mean nothing here
    shown = json.loads(vmctl("status", "--name", "dev", "--json").stdout)
    assert shown["shares"] == [{"host": str(code), "guest": str(code), "read_only": True}]
    assert shown["share_transport"] == "virtiofs"
    emptied = vmctl("config", "--name", "dev", "--unmount", str(code))
    assert json.loads(emptied.stdout)["mounts"] == []  # the home folder again, by default
    home_folder = os.path.expanduser("~")
    assert vmconfig.load(home / "dev" / "vm.json").daemon_json()["vmctl-shared-paths"] == [
        home_folder
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--unmount", "/srv/none"], "/srv/none is not in the shared folders (they are: none"),
        (["--mount", "rel/dir"], "the folder to share must be an absolute path: 'rel/dir'"),
        (["--share-transport", "nfs"], "invalid choice: 'nfs'"),
        (["--mount", "/proc/version"], "/proc/version cannot be shared: the VM's own /proc is"),
        (["--mount", "/etc/hostname"], "/etc/hostname cannot be shared: the VM's own /etc is"),
        (["--mount", "/bin/sh"], "/bin/sh cannot be shared: the VM's own /bin is there"),
    ],
)
def test_bad_share_settings_are_refused_and_nothing_is_saved(home, flags, message):
    done = vmctl("config", "--name", "dev", *flags)
    assert done.returncode != 0
    assert message in done.stderr
    assert not (home / "dev" / "vm.json").exists()


def test_a_shared_folder_missing_on_the_host_stops_the_start_before_the_hypervisor(home):
    """Checked before anything boots: the hypervisor's own error names neither the setting
    nor the fix."""
    config = vmconfig.VMConfig(mounts=("/no/such/folder",))
    with pytest.raises(VmctlError) as caught:
        boot.existing_shares(config)
    assert str(caught.value) == (
        "the shared folder /no/such/folder does not exist on this machine: create it, or stop "
        "sharing it (vmctl config --unmount /no/such/folder)"
    )


def test_status_of_a_vm_never_created_and_of_a_stopped_one(home):
    assert vmctl("status").stdout.strip() == "default: not created"
    vmconfig.save(vmconfig.VMConfig(driver="qemu"), vmpaths.vm().config)
    shown = json.loads(vmctl("status", "--json").stdout)
    assert (shown["state"], shown["driver"]) == ("stopped", "qemu")


def test_a_start_in_progress_shows_as_starting_and_blocks_a_second_start(home):
    """The start lock is a flock: held while a start runs, released if that process dies."""
    paths = vmpaths.vm()
    vmconfig.save(vmconfig.VMConfig(driver="qemu"), paths.config)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from vmctl import locks, paths, stages\n"
            "with locks.start_lock(paths.vm()):\n"
            "    stages.enter(paths.vm(), 'ssh', print); sys.stdout.flush(); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "[2/5] ssh"
        state = vm.status()
        assert (state.state, state.detail) == ("starting", "ssh")
        with pytest.raises(
            VmctlError, match=r"already being started by another vmctl \(stage: ssh"
        ):
            vm.start()
    finally:
        holder.kill()
        holder.wait()
    assert vm.status().state == "stopped"  # the dead starter left nothing "starting"


def test_a_failed_stage_says_which_and_shows_the_console(home):
    paths = vmpaths.vm()
    paths.root.mkdir(parents=True)
    paths.serial_log.write_bytes(
        b"\x1b[0;32m  OK  \x1b[0m] Reached target\r\nKernel panic - oops\r\n"
    )

    class Dead:
        def is_running(self):
            return False

    def step():
        raise VmctlError("SSH did not answer")

    with pytest.raises(stages.StageFailed) as failure:
        stages.run(paths, Dead(), "ssh", step)
    text = str(failure.value)
    assert text.startswith("VM 'default' failed to start at stage 'ssh': SSH did not answer")
    assert "(the VM's hypervisor is no longer running)" in text
    assert "  OK  ] Reached target\n  Kernel panic - oops" in text
    assert "\x1b" not in text and "vmctl logs --name default" in text


def test_version_table_says_linux_amd64_for_the_server():
    server = {
        "Version": "0.1.0",
        "ApiVersion": "1.47",
        "MinAPIVersion": "1.24",
        "Os": "linux",
        "Arch": "amd64",
        "KernelVersion": "6.1.0-28-cloud-amd64",
        "Platform": {"Name": "vmctl engine"},
    }
    table = cli.format_version(server, context="vmctl")
    assert "Server: vmctl engine" in table
    assert "  OS/Arch:          linux/amd64" in table
    assert " Context:           vmctl" in table


def test_docker_context_points_the_real_docker_cli_at_the_vm(home):
    made = vmctl("docker-context")
    assert (made.returncode, made.stdout.strip()) == (0, "vmctl"), made.stderr
    again = vmctl("docker-context", "--name", "dev", "--use")
    assert again.stdout.strip() == "vmctl-dev"
    inspect = subprocess.run(
        ["docker", "context", "inspect", "vmctl", "--format", "{{.Endpoints.docker.Host}}"],
        capture_output=True,
        text=True,
    )
    assert inspect.stdout.strip() == f"unix://{home / 'default' / 'docker.sock'}"
    current = subprocess.run(["docker", "context", "show"], capture_output=True, text=True)
    assert current.stdout.strip() == "vmctl-dev"
    assert vmctl("docker-context").returncode == 0  # updating an existing one works too


def test_commands_on_a_vm_that_does_not_exist(home):
    for args in (["stop", "--name", "ghost"], ["delete", "--name", "ghost"]):
        done = vmctl(*args)
        assert done.returncode == 1
        assert "there is no VM named 'ghost'" in done.stderr
    ssh = vmctl("ssh", "--name", "ghost", "--", "true")
    assert ssh.returncode == 1 and "is not running: vmctl start --name ghost" in ssh.stderr
    assert "invalid VM name" in vmctl("status", "--name", "Bad_Name").stderr


def test_logs_show_the_console_without_escape_sequences(home):
    paths = vmpaths.vm()
    paths.root.mkdir(parents=True)
    paths.serial_log.write_bytes(b"\x1b[?25lbooting\r\nlogin: \r\n")
    out = vmctl("logs", "--console").stdout
    assert out == "booting\nlogin: \n"
    assert "(no host agent log yet)" in vmctl("logs").stdout


def test_the_start_lock_names_its_holder_and_is_released_after(home):
    paths = vmpaths.vm()
    paths.root.mkdir(parents=True)
    with locks.start_lock(paths):
        assert locks.holder(paths.start_lock) == os.getpid()
    assert locks.holder(paths.start_lock) is None


def test_ssh_commands_keep_their_quoting():
    assert cli.remote_command(["dmesg | tail -3"]) == "dmesg | tail -3"
    assert cli.remote_command(["sh", "-c", "rm big && sync"]) == "sh -c 'rm big && sync'"
