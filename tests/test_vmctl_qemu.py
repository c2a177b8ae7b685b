"""The direct-QEMU driver and its QMP client, against a real qemu-system-x86_64.

Fast tier: golden command lines, QMP against a machine-less QEMU (starts in milliseconds),
errors raised before QEMU starts. Slow tier: tests/kernelkit.py's kernel and busybox initramfs
booted under TCG; the initramfs prints MARKER, sleeps VMCTL_SLEEP s, then powers off.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import kernelkit
import pytest

from vmctl import cloudinit
from vmctl.drivers.qemu import QUIT_GRACE, QemuDriver, find_qemu, qemu_argv
from vmctl.errors import VmctlError
from vmctl.machine import MachineSpec
from vmctl.paths import VMPaths
from vmctl.qmp import QmpClient, QmpError

GOLDEN = Path(__file__).parent / "golden"
QEMU = "/usr/bin/qemu-system-x86_64"
BOOT_TIMEOUT = 90.0  # TCG reaches PID 1 in ~5 s; leave room for a loaded CI machine

SEED = kernelkit.placeholder_seed("vmctl-test-qemu")


def golden_spec(**changes: object) -> MachineSpec:
    vm = Path("/home/u/.local/share/vmctl/default")
    fields: dict = dict(
        name="vmctl-default",
        cpus=2,
        memory_mib=2048,
        disk=vm / "disk.qcow2",
        seed=vm / "seed.iso",
        serial_log=vm / "serial.log",
        ssh_port=41022,
        accel="tcg",
        kernel=Path("/home/u/.local/share/vmctl/images/debian-12/vmlinuz"),
        initrd=Path("/home/u/.local/share/vmctl/images/debian-12/initrd.img"),
    )
    return MachineSpec(**(fields | changes))


def argv_of(spec: MachineSpec, qmp: str = "unix:/run/vm/qmp.sock") -> str:
    argv = qemu_argv(spec, qemu=QEMU, qmp=qmp, pidfile=Path("/run/vm/qemu.pid"))
    return "\n".join(argv) + "\n"


@pytest.mark.parametrize(
    ("golden", "changes"),
    [
        ("qemu-argv-kernel-tcg.txt", {}),
        ("qemu-argv-firmware-kvm.txt", {"accel": "kvm", "kernel": None, "initrd": None}),
    ],
)
def test_argv_matches_the_golden_file(golden, changes):
    assert argv_of(golden_spec(**changes)) == (GOLDEN / golden).read_text()


def test_argv_doubles_commas_in_paths_and_takes_a_tcp_qmp_address():
    spec = golden_spec(disk=Path("/a,b/disk.qcow2"), serial_log=Path("/a,b/serial.log"))
    argv = argv_of(spec, qmp="tcp:127.0.0.1:4444").splitlines()
    assert any(arg.startswith("file=/a,,b/disk.qcow2,if=none") for arg in argv)
    assert "file,id=serial0,path=/a,,b/serial.log,append=on" in argv
    assert "tcp:127.0.0.1:4444,server=on,wait=off" in argv


def test_an_unknown_accelerator_is_refused():
    with pytest.raises(VmctlError, match="unknown accelerator 'vbox': use one of kvm, hvf"):
        argv_of(golden_spec(accel="vbox"))


def test_missing_qemu_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(VmctlError, match=r"qemu-system-x86_64 not found on PATH: .*apt install"):
        find_qemu()


def test_find_qemu_finds_the_installed_one():
    assert Path(find_qemu()).resolve() == Path(QEMU).resolve()


# ---- QMP, against a QEMU without a machine ------------------------------------------------


@pytest.fixture
def bare_qemu(short_dir: Path) -> Iterator[dict[str, str]]:
    """A machine-less QEMU with QMP on both a unix socket and a loopback TCP port."""
    addresses = {"unix": f"unix:{short_dir}/q.sock", "tcp": f"tcp:127.0.0.1:{free_port()}"}
    argv = [QEMU, "-machine", "none", "-nodefaults", "-display", "none"]
    for address in addresses.values():
        argv += ["-qmp", f"{address},server=on,wait=off"]
    with subprocess.Popen(argv, stderr=subprocess.PIPE) as proc:
        try:
            wait_until(lambda: qmp_answers(addresses["unix"]) or proc.poll() is not None, 10)
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            yield addresses
        finally:
            proc.kill()


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_qmp_executes_and_skips_events(bare_qemu, transport):
    with QmpClient(bare_qemu[transport]) as qmp:
        assert qmp.execute("query-status")["running"] is True
        qmp.execute("stop")  # QEMU sends a STOP event before the reply: it must be skipped
        assert qmp.execute("query-status")["running"] is False
        qmp.execute("cont")
        assert qmp.execute("query-status")["running"] is True


def test_qmp_error_replies_raise_with_qemus_reason(bare_qemu):
    with QmpClient(bare_qemu["unix"]) as qmp:
        with pytest.raises(QmpError, match=r"QEMU refused no-such-thing: .*\(CommandNotFound\)"):
            qmp.execute("no-such-thing")
        with pytest.raises(QmpError, match=r"refused qom-get: Device '/nowhere' not found \("):
            qmp.execute("qom-get", {"path": "/nowhere", "property": "x"})
        assert qmp.execute("query-status")["running"], "the session survives an error reply"


def test_qmp_without_a_listener_says_so(short_dir):
    with pytest.raises(QmpError, match=r"no QEMU listens on unix:.*: is the VM running"):
        QmpClient(f"unix:{short_dir}/absent.sock")
    with pytest.raises(QmpError, match=r"no QEMU listens on tcp:127\.0\.0\.1:\d+"):
        QmpClient(f"tcp:127.0.0.1:{free_port()}")


def test_qmp_times_out_on_a_silent_peer():
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(QmpError, match=r"did not answer on tcp:127\.0\.0\.1:\d+ within 0\.5 s"):
            QmpClient(f"tcp:127.0.0.1:{port}", timeout=0.5)
        assert time.monotonic() - started < 3


@pytest.mark.parametrize("address", ["qmp.sock", "tcp:localhost", "tcp::x", "unix:"])
def test_qmp_rejects_bad_addresses(address):
    with pytest.raises(QmpError, match=r"bad QMP address .*: use unix:PATH or tcp:HOST:PORT"):
        QmpClient(address)


# ---- the driver, booting a real kernel under TCG -------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A fresh directory with a short path: unix socket paths are capped at 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="vq-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def vm(short_dir: Path) -> VMPaths:
    paths = VMPaths(short_dir / "vm")
    paths.root.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(paths.disk), "64M"], check=True)
    cloudinit.write_seed_iso(SEED, paths.seed)
    return paths


@pytest.fixture
def drivers(vm: VMPaths) -> Iterator[Callable[..., QemuDriver]]:
    """QemuDriver factory; every VM it made is deleted at teardown."""
    made: list[QemuDriver] = []

    def make(**kw: object) -> QemuDriver:
        made.append(QemuDriver(vm, qemu=QEMU, **kw))
        return made[-1]

    yield make
    for driver in made:
        driver.delete()


def spec_for(vm: VMPaths, sleep: int = 600, **changes: object) -> MachineSpec:
    fields: dict = dict(
        name=f"vmctl-test-qemu-{uuid.uuid4().hex[:8]}",
        cpus=2,
        memory_mib=256,
        disk=vm.disk,
        seed=vm.seed,
        serial_log=vm.serial_log,
        ssh_port=free_port(),
        accel="tcg",
        kernel=kernelkit.kernel(),
        initrd=kernelkit.initramfs(),
        cmdline=f"console=ttyS0 panic=-1 VMCTL_SLEEP={sleep}",
    )
    return MachineSpec(**(fields | changes))


@pytest.mark.slow
def test_boot_reaches_pid1_then_kill_stops_it(vm, drivers):
    driver, spec = drivers(), spec_for(vm)
    driver.boot(spec)
    wait_for_marker(vm)
    pid = driver.pid()
    assert pid is not None and pid == int(vm.qemu_pid.read_text())
    assert os.getsid(pid) == pid, "QEMU runs in its own session, so it outlives the CLI"
    assert listeners(spec.ssh_port) == {"127.0.0.1"}, "ssh forward only on loopback"
    with QmpClient(f"unix:{vm.qmp_socket}") as qmp:
        assert qmp.execute("query-status")["status"] == "running"
        assert qmp.execute("query-name") == {"name": spec.name}
    with pytest.raises(VmctlError, match=rf"VM {spec.name} already runs \(QEMU pid {pid}\)"):
        driver.boot(spec)
    driver.kill()
    assert not driver.is_running() and driver.pid() is None
    assert not os.path.exists(f"/proc/{pid}")
    driver.kill()  # already stopped: no error


@pytest.mark.slow
def test_a_qemu_killed_behind_the_drivers_back_is_noticed(vm, drivers):
    driver = drivers()
    driver.boot(spec_for(vm))
    first = driver.pid()
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: not driver.is_running(), 2)
    assert vm.qemu_pid.exists(), "SIGKILL leaves the pidfile behind; it is not trusted"
    driver.boot(spec_for(vm))
    assert driver.pid() not in (None, first)
    wait_for_marker(vm)


@pytest.mark.slow
def test_a_fresh_driver_sees_and_stops_a_vm_it_did_not_start(vm, drivers):
    drivers().boot(spec_for(vm))
    other = drivers()  # as a second CLI invocation would: no process handle, only files
    assert other.is_running()
    other.kill()
    assert not other.is_running()


@pytest.mark.slow
def test_shutdown_forces_off_a_guest_that_ignores_acpi(vm, drivers):
    driver = drivers()
    driver.boot(spec_for(vm))
    wait_for_marker(vm)  # busybox init: no ACPI power button handling
    started = time.monotonic()
    driver.shutdown(timeout=2)
    took = time.monotonic() - started
    assert not driver.is_running()
    assert 2 <= took < 2 + QUIT_GRACE + 3


@pytest.mark.slow
def test_a_guest_that_powers_off_ends_its_qemu(vm, drivers):
    driver = drivers()
    driver.boot(spec_for(vm, sleep=0))
    wait_until(lambda: not driver.is_running(), BOOT_TIMEOUT)
    assert kernelkit.MARKER in vm.serial_log.read_text(errors="replace")


@pytest.mark.slow
def test_qmp_over_loopback_tcp_as_on_windows(vm, drivers):
    driver = drivers(transport="tcp")
    driver.boot(spec_for(vm))
    address = driver.qmp_address()
    assert address and address.startswith("tcp:127.0.0.1:")
    assert listeners(int(address.rsplit(":", 1)[1])) == {"127.0.0.1"}
    with QmpClient(address) as qmp:
        assert qmp.execute("query-status")["running"] is True
    driver.delete()
    assert not driver.is_running()
    assert not (vm.root / "qmp.addr").exists() and not vm.qemu_pid.exists()
    assert vm.disk.exists() and vm.seed.exists(), "the disk is the caller's"


def test_a_firmware_boot_command_line_starts(vm, drivers):
    """No kernel: SeaBIOS boots the disk (blank here); QEMU must accept the firmware argv."""
    driver = drivers()
    driver.boot(spec_for(vm, kernel=None, initrd=None))
    assert driver.is_running()
    driver.kill()
    assert not driver.is_running()


@pytest.mark.slow
def test_a_busy_ssh_port_fails_the_boot_with_qemus_reason(vm, drivers):
    driver = drivers()
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(VmctlError) as failed:
            driver.boot(spec_for(vm, ssh_port=port))
    message = str(failed.value)
    assert message.startswith("QEMU exited at start (status 1): ")
    assert f"Could not set up host forwarding rule 'tcp:127.0.0.1:{port}-:22'" in message
    assert str(driver.log) in message
    assert not driver.is_running() and not vm.qemu_pid.exists()


def test_a_missing_kernel_is_named_before_qemu_starts(vm, drivers):
    driver = drivers()
    missing = vm.root / "vmlinuz-gone"
    with pytest.raises(VmctlError, match=rf"its kernel {missing} does not exist; rebuild"):
        driver.boot(spec_for(vm, kernel=missing))
    assert not driver.log.exists(), "no QEMU was started"


def test_a_qemu_that_does_not_come_up_in_time_is_stopped(vm, drivers):
    driver = drivers(start_timeout=0)
    with pytest.raises(VmctlError, match=r"did not report running within 0 s and was stopped"):
        driver.boot(spec_for(vm))
    assert not driver.is_running() and not vm.qemu_pid.exists()


def test_a_qemu_binary_that_cannot_run_is_named(vm, short_dir):
    driver = QemuDriver(vm, qemu=str(short_dir / "qemu-gone"))
    with pytest.raises(VmctlError, match=r"cannot start .*/qemu-gone: .*; reinstall QEMU"):
        driver.boot(spec_for(vm))


def test_a_stale_pidfile_naming_a_live_stranger_is_not_trusted(vm, drivers):
    driver = drivers()
    vm.qemu_pid.write_text(f"{os.getpid()}\n")  # e.g. after a host crash, pid recycled
    assert driver.pid() is None and not driver.is_running()
    driver.kill()  # must not signal the stranger (this test process)
    driver.shutdown(timeout=1)
    driver.delete()
    assert not vm.qemu_pid.exists()


@pytest.mark.parametrize("content", ["", "garbage", "-1"])
def test_a_damaged_pidfile_means_stopped(vm, drivers, content):
    vm.qemu_pid.write_text(content)
    assert drivers().pid() is None


# ---- helpers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {condition}")
        time.sleep(0.05)


def wait_for_marker(vm: VMPaths) -> None:
    kernelkit.wait_for_marker(vm.serial_log)


def qmp_answers(address: str) -> bool:
    try:
        QmpClient(address, timeout=1).close()
    except QmpError:
        return False
    return True


def listeners(port: int) -> set[str]:
    """Local addresses listening on TCP `port`, from /proc/net/tcp{,6} (Linux)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(_ip(address))
    return found


def _ip(hex_address: str) -> str:
    if len(hex_address) == 8:  # IPv4, little-endian
        return socket.inet_ntop(socket.AF_INET, bytes.fromhex(hex_address)[::-1])
    words = [bytes.fromhex(hex_address[i : i + 8])[::-1] for i in range(0, 32, 8)]
    return socket.inet_ntop(socket.AF_INET6, b"".join(words))
