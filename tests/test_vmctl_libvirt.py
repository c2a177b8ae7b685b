"""The libvirt driver: its domain XML (golden files, checked against libvirt's own schema), its
lifecycle against libvirt's test:///default driver, reconnecting to a restarted libvirtd, and
(slow) real boots of a kernel and busybox initramfs under TCG on qemu:///system."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import kernelkit
import libvirt
import pytest
import vmkit

from vmctl import cloudinit
from vmctl.drivers.domainxml import domain_xml
from vmctl.drivers.libvirt import LibvirtDriver, default_uri
from vmctl.errors import VmctlError
from vmctl.machine import MachineSpec

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden"
PREFIX = "vmctl-test-libvirt-"
USER = (1000, 1000)  # a fixed owner, so golden files do not depend on who runs the tests

GOLDEN_DOMAINS = ["domain-kernel-tcg-system.xml", "domain-firmware-kvm-session.xml"]
MakeDriver = Callable[..., LibvirtDriver]


def spec_in(directory: Path, name: str, **changes: object) -> MachineSpec:
    fields: dict = {
        "name": name,
        "cpus": 2,
        "memory_mib": 1024,
        "disk": directory / "disk.qcow2",
        "seed": directory / "seed.iso",
        "serial_log": directory / "serial.log",
        "ssh_port": 2222,
        "accel": "tcg",
    }
    return MachineSpec(**{**fields, **changes})


@pytest.fixture
def drivers() -> Iterator[MakeDriver]:
    """Drivers for domains named vmctl-test-libvirt-*, deleted at teardown even on failure."""
    made: list[LibvirtDriver] = []

    def make(uri: str, purpose: str, pidfile: Path | None = None) -> LibvirtDriver:
        driver = LibvirtDriver(uri, pidfile, domain=f"{PREFIX}{purpose}-{os.getpid()}")
        made.append(driver)
        return driver

    yield make
    for driver in made:
        driver.delete()
        if driver.uri == "qemu:///system":  # libvirtd keeps QEMU's log after the domain
            Path(f"/var/log/libvirt/qemu/{driver.domain}.log").unlink(missing_ok=True)


# ---- the domain XML -----------------------------------------------------------------------

KERNEL_SPEC = spec_in(
    Path("/home/user/.local/share/vmctl/default"),
    "vmctl-default",
    kernel=Path("/home/user/.local/share/vmctl/images/vmlinuz"),
    initrd=Path("/home/user/.local/share/vmctl/images/initrd.img"),
)
FIRMWARE_SPEC = spec_in(Path("/home/user/vmctl/dev"), "vmctl-dev", accel="kvm", ssh_port=2345)


def test_direct_kernel_boot_under_tcg_on_the_system_daemon_matches_the_golden_file():
    pidfile = Path("/home/user/.local/share/vmctl/default/qemu.pid")
    xml = domain_xml(KERNEL_SPEC, uri="qemu:///system", pidfile=pidfile, owner=USER)
    assert xml == (GOLDEN / "domain-kernel-tcg-system.xml").read_text()


def test_firmware_boot_under_kvm_on_a_session_daemon_matches_the_golden_file():
    xml = domain_xml(FIRMWARE_SPEC, uri="qemu:///session", pidfile=None, owner=USER)
    assert xml == (GOLDEN / "domain-firmware-kvm-session.xml").read_text()


@pytest.mark.parametrize("name", GOLDEN_DOMAINS)
def test_golden_domains_are_valid_for_libvirts_schema(name):
    """libvirt checks a definition against its own RelaxNG schema (domain.rng) on request."""
    validate = libvirt.VIR_DOMAIN_DEFINE_VALIDATE
    xml = (GOLDEN / name).read_text()
    conn = libvirt.open("test:///default")
    try:
        conn.defineXMLFlags(xml, validate).undefine()
        with pytest.raises(libvirt.libvirtError, match="failed to validate against schema"):
            conn.defineXMLFlags(xml.replace("<acpi />", "<acpy />"), validate)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("uri", "owner", "labelled"),
    [
        ("qemu:///system", USER, True),
        ("qemu:///session", (0, 0), True),  # root's session is served by the system daemon
        ("qemu:///session", USER, False),
        ("qemu+ssh://host.example/system", USER, False),  # the caller's uid means nothing there
    ],
)
def test_qemu_runs_as_the_caller_only_under_a_privileged_local_daemon(uri, owner, labelled):
    xml = domain_xml(FIRMWARE_SPEC, uri=uri, pidfile=None, owner=owner)
    assert ("<seclabel" in xml) is labelled
    assert (f"<label>+{owner[0]}:+{owner[1]}</label>" in xml) is labelled


@pytest.mark.parametrize(
    ("accel", "domain_type", "cpu"),
    [
        ("kvm", "kvm", "host-passthrough"),
        ("hvf", "hvf", "host-passthrough"),
        ("tcg", "qemu", "maximum"),
    ],
)
def test_domain_type_and_cpu_follow_the_accelerator(accel, domain_type, cpu):
    """TCG's CPU lacks the features it emulates slowly (the qemu driver's -cpu: golden argv)."""
    spec = spec_in(Path("/x"), "vmctl-x", accel=accel)
    root = ET.fromstring(domain_xml(spec, uri="qemu:///session", pidfile=None))
    assert root.get("type") == domain_type
    assert root.find("cpu").get("mode") == cpu
    disabled = {f.get("name") for f in root.iterfind("cpu/feature[@policy='disable']")}
    assert disabled == ({"erms", "fsrm"} if accel == "tcg" else set())


def test_whpx_is_refused_with_advice():
    spec = spec_in(Path("/x"), "vmctl-x", accel="whpx")
    with pytest.raises(
        VmctlError, match=r"libvirt cannot use the 'whpx' accelerator.*--driver qemu"
    ):
        domain_xml(spec, uri="qemu:///system", pidfile=None)


def test_default_uri_is_the_system_daemon_for_root_only():
    assert default_uri() == ("qemu:///system" if os.geteuid() == 0 else "qemu:///session")


# ---- lifecycle against libvirt's test driver ----------------------------------------------


def test_lifecycle_on_the_test_driver(drivers, tmp_path):
    driver = drivers("test:///default", "life")
    spec = spec_in(tmp_path, driver.domain)
    assert not driver.is_running()
    driver.boot(spec)
    assert driver.is_running()
    assert driver.pid() is None, "no pid file: there is no QEMU behind the test driver"
    driver.shutdown(timeout=5)
    assert not driver.is_running()
    driver.shutdown(timeout=5)  # a no-op when off
    driver.boot(spec)  # defined afresh over the old definition
    assert driver.is_running()
    driver.kill()
    driver.kill()
    assert not driver.is_running()
    driver.delete()
    driver.delete()
    assert not driver.is_running()
    assert (tmp_path / "serial.log").exists(), "created by us before libvirt opens it"


def test_boot_adopts_the_specs_name(drivers, tmp_path):
    driver = drivers("test:///default", "old-name")
    spec = spec_in(tmp_path, f"{PREFIX}new-name-{os.getpid()}")
    driver.boot(spec)
    try:
        assert driver.domain == spec.name and driver.is_running()
    finally:
        driver.delete()


def test_booting_a_running_vm_says_stop_it_first(drivers, tmp_path):
    driver = drivers("test:///default", "twice")
    spec = spec_in(tmp_path, driver.domain)
    driver.boot(spec)
    with pytest.raises(VmctlError, match=r"already running: stop it first \(vmctl stop\)"):
        driver.boot(spec)
    assert driver.is_running()


def test_an_unknown_uri_says_which_uris_work():
    driver = LibvirtDriver("bogus:///x", domain=f"{PREFIX}bogus")
    with pytest.raises(
        VmctlError, match=r"libvirt cannot open 'bogus:///x': .* qemu:///system, qemu:///session"
    ):
        driver.is_running()


def test_an_unreachable_libvirtd_says_start_libvirtd():
    driver = LibvirtDriver("qemu+unix:///system?socket=/nonexistent", domain=f"{PREFIX}gone")
    with pytest.raises(
        VmctlError,
        match=r"cannot reach libvirtd at qemu\+unix:///system\?socket=/nonexistent: Failed to "
        r"connect socket to '/nonexistent'.*Start libvirtd: `sudo systemctl start libvirtd`",
    ):
        driver.kill()


def test_a_socket_we_may_not_open_says_join_the_libvirt_group(tmp_path):
    """As root without CAP_DAC_OVERRIDE (or as any user), a socket of nobody's is off limits."""
    sock_path = tmp_path / "libvirt-sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.listen()
    if os.geteuid() == 0:
        os.chown(sock_path, 65534, 65534)
    sock_path.chmod(0o600)
    code = (
        "from vmctl.drivers.libvirt import LibvirtDriver\n"
        f"LibvirtDriver('qemu+unix:///system?socket={sock_path}', domain='x').is_running()\n"
    )
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    run = subprocess.run([*drop, sys.executable, "-c", code], capture_output=True, text=True)
    server.close()
    assert run.returncode == 1
    assert "VmctlError: permission denied opening libvirt at qemu+unix:///system" in run.stderr
    assert "sudo usermod -aG libvirt $USER" in run.stderr
    assert "libvirt:" not in run.stderr, "libvirt's own stderr report is silenced"


def test_a_dead_qemu_reads_as_stopped_before_libvirt_knows(drivers, tmp_path):
    """libvirt's test driver never learns of deaths: what libvirtd shows for seconds after
    QEMU was killed. The pid file the QEMU wrote, naming no QEMU any more, says stopped."""
    pidfile = tmp_path / "qemu.pid"
    driver = drivers("test:///default", "died", pidfile=pidfile)
    spec = spec_in(tmp_path, driver.domain)
    pidfile.write_text(f"{os.getpid()}\n")  # a last boot's, left behind
    driver.boot(spec)
    assert not pidfile.exists(), "boot removes the last QEMU's pid file"
    assert driver.is_running(), "no pid file yet: libvirt's answer stands"
    sleeper = subprocess.Popen(["sleep", "30"])
    sleeper.kill()
    sleeper.wait()
    pidfile.write_text(f"{sleeper.pid}\n")
    assert not driver.is_running(), "the pid QEMU wrote is gone: stopped"
    pidfile.write_text("")
    assert driver.is_running(), "a pid file being written says nothing yet"


def test_pid_trusts_no_stale_or_foreign_pid_file(tmp_path):
    pidfile = tmp_path / "qemu.pid"
    driver = LibvirtDriver("test:///default", pidfile, domain=f"{PREFIX}pid")
    assert driver.pid() is None, "no pid file"
    pidfile.write_text("not a pid\n")
    assert driver.pid() is None
    pidfile.write_text(f"{os.getpid()}\n")
    assert driver.pid() is None, "a live process, but not QEMU"
    sleeper = subprocess.Popen(["sleep", "30"])
    sleeper.kill()
    sleeper.wait()
    pidfile.write_text(f"{sleeper.pid}\n")
    assert driver.pid() is None, "no such process"
    remote = LibvirtDriver("qemu+ssh://host.example/system", pidfile, domain="x")
    assert remote.pid() is None, "a remote QEMU's pid is not ours"


# ---- a libvirtd that restarts under a long-lived driver -----------------------------------


class PrivateLibvirtd:
    """An unprivileged libvirtd of our own (as nobody when we are root), so restarting it
    disturbs no one else's VMs."""

    def __init__(self) -> None:
        if shutil.which("libvirtd") is None:
            pytest.fail("libvirtd is missing: run `bash scripts/install.sh`")
        self.root = Path(tempfile.mkdtemp(prefix="vmctl-libvirtd-"))
        self.as_nobody = os.geteuid() == 0
        if self.as_nobody:
            os.chown(self.root, 65534, 65534)
        self.socket = self.root / "run" / "libvirt" / "libvirt-sock"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {"HOME": str(self.root), "PATH": os.environ["PATH"]}
        for var, sub in (("RUNTIME", "run"), ("CONFIG", "config"), ("CACHE", "cache")):
            env[f"XDG_{var}_DIR" if var == "RUNTIME" else f"XDG_{var}_HOME"] = f"{self.root}/{sub}"
        drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        argv = [*drop, "libvirtd"] if self.as_nobody else ["libvirtd"]
        self.process = subprocess.Popen(argv, env=env, cwd=self.root, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120  # a hang's bound, not a start's: it waits on accept
        while not self._accepts():  # the socket file exists from bind(), before listen()
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail(f"a private libvirtd did not start (exit {self.process.poll()})")
            time.sleep(0.05)

    def _accepts(self) -> bool:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
            return True

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
        self.socket.unlink(missing_ok=True)


@pytest.fixture
def private_libvirtd() -> Iterator[PrivateLibvirtd]:
    daemon = PrivateLibvirtd()
    daemon.start()
    yield daemon
    daemon.stop()
    shutil.rmtree(daemon.root, ignore_errors=True)


def test_a_driver_survives_a_libvirtd_restart(private_libvirtd, tmp_path):
    uri = f"test+unix:///default?socket={private_libvirtd.socket}"
    driver = LibvirtDriver(uri, domain=f"{PREFIX}restart")
    driver.boot(spec_in(tmp_path, driver.domain))
    assert driver.is_running()
    private_libvirtd.stop()
    with pytest.raises(VmctlError, match=r"cannot reach libvirtd at test\+unix"):
        driver.is_running()
    private_libvirtd.start()
    assert not driver.is_running(), "reconnected (the test driver's state died with it)"
    driver.boot(spec_in(tmp_path, driver.domain))
    assert driver.is_running()
    private_libvirtd.stop()
    private_libvirtd.start()
    assert not driver.is_running(), "a connection that died between calls is reopened"


# ---- real guests on qemu:///system (slow) -------------------------------------------------

SEED = kernelkit.placeholder_seed("vmctl-test-libvirt")
STAY_UP = "console=ttyS0 VMCTL_SLEEP=60"  # the initramfs's /init sleeps, ignoring ACPI


@pytest.fixture(scope="session")
def system_uri() -> str:
    """qemu:///system, with libvirtd started by scripts/services.sh if it is not running."""
    if os.geteuid() != 0:
        pytest.fail("the qemu:///system tests need root: scripts/services.sh starts libvirtd")
    script = ROOT / "scripts" / "services.sh"
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        pytest.fail(f"{script} could not start libvirtd:\n{run.stdout}{run.stderr}")
    return "qemu:///system"


@pytest.fixture
def vm_dir(tmp_path: Path) -> Path:
    """A 0700 directory like pytest's own, with a real qcow2 overlay and seed ISO."""
    directory = tmp_path / "vm"
    directory.mkdir(mode=0o700)
    base, disk = directory / "base.qcow2", directory / "disk.qcow2"
    qemu_img = ["qemu-img", "create", "-q", "-f", "qcow2"]
    subprocess.run([*qemu_img, str(base), "1G"], check=True)
    subprocess.run([*qemu_img, "-F", "qcow2", "-b", str(base), str(disk)], check=True)
    cloudinit.write_seed_iso(SEED, directory / "seed.iso")
    return directory


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def kernel_spec(vm_dir: Path, driver: LibvirtDriver, cmdline: str, **changes) -> MachineSpec:
    kit = {"kernel": kernelkit.kernel(), "initrd": kernelkit.initramfs(), "cmdline": cmdline}
    fields = {"cpus": 1, "memory_mib": 256, "ssh_port": free_port(), **kit, **changes}
    return spec_in(vm_dir, driver.domain, **fields)


def listening_addresses(port: int) -> set[str]:
    """Addresses with a TCP socket listening on `port`, from /proc/net/tcp{,6}."""
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, local_port = local.split(":")
            if state == "0A" and int(local_port, 16) == port:
                raw = bytes.fromhex(address)
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(socket.inet_ntop(family, words))
    return found


def is_qemu(pid: int) -> bool:
    return "qemu-system" in os.readlink(f"/proc/{pid}/exe")


@pytest.mark.slow
def test_a_real_guest_boots_under_tcg_and_is_killed(drivers, system_uri, vm_dir):
    driver = drivers(system_uri, "boot", pidfile=vm_dir / "qemu.pid")
    spec = kernel_spec(vm_dir, driver, STAY_UP)
    owners = {path: path.stat().st_uid for path in (spec.disk, spec.seed)}
    driver.boot(spec)
    assert driver.is_running()
    kernelkit.wait_for_marker(spec.serial_log)
    pid = driver.pid()
    assert pid is not None and is_qemu(pid)
    assert listening_addresses(spec.ssh_port) == {"127.0.0.1"}, "ssh forward on loopback only"
    assert spec.serial_log.stat().st_uid == os.getuid()
    assert {path: path.stat().st_uid for path in owners} == owners, "no file was relabelled"
    driver.kill()
    assert not driver.is_running()
    assert driver.pid() is None
    assert listening_addresses(spec.ssh_port) == set()


@pytest.mark.slow
def test_shutdown_powers_off_a_guest_that_ignores_acpi(drivers, system_uri, vm_dir):
    driver = drivers(system_uri, "shutdown", pidfile=vm_dir / "qemu.pid")
    driver.boot(kernel_spec(vm_dir, driver, STAY_UP))
    kernelkit.wait_for_marker(vm_dir / "serial.log")
    started = time.monotonic()
    driver.shutdown(timeout=3)
    waited = time.monotonic() - started
    assert 3 <= waited < 15, f"shutdown took {waited:.1f}s"
    assert not driver.is_running() and driver.pid() is None


@pytest.mark.slow
def test_a_qemu_killed_behind_libvirts_back_is_seen_stopped(drivers, system_uri, vm_dir):
    driver = drivers(system_uri, "sigkill", pidfile=vm_dir / "qemu.pid")
    spec = kernel_spec(vm_dir, driver, STAY_UP)
    driver.boot(spec)
    pid = driver.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    vmkit.wait_until_gone(pid)  # what the kill takes; libvirtd may take seconds more to notice
    assert not driver.is_running(), "stopped from the moment QEMU is gone"
    assert driver.pid() is None, "the stale pid file is not trusted"
    driver.boot(spec)  # and it boots again, whether or not libvirtd has noticed yet
    assert driver.is_running() and driver.pid() not in (None, pid)


@pytest.mark.slow
def test_a_taken_ssh_port_is_named_in_the_error(drivers, system_uri, vm_dir):
    driver = drivers(system_uri, "port", pidfile=vm_dir / "qemu.pid")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        spec = kernel_spec(vm_dir, driver, STAY_UP, ssh_port=port)
        with pytest.raises(
            VmctlError, match=rf"QEMU failed to start .*port {port} on 127.0.0.1 is taken"
        ):
            driver.boot(spec)
    assert not driver.is_running()


@pytest.mark.slow
def test_a_missing_kernel_is_named_in_the_error(drivers, system_uri, vm_dir):
    driver = drivers(system_uri, "nokernel", pidfile=vm_dir / "qemu.pid")
    spec = kernel_spec(vm_dir, driver, STAY_UP, kernel=vm_dir / "no-such-vmlinuz")
    with pytest.raises(VmctlError, match=r"QEMU failed to start .*no-such-vmlinuz"):
        driver.boot(spec)


@pytest.mark.slow
def test_services_sh_is_idempotent(system_uri):
    def daemons() -> str:
        return subprocess.run(["pgrep", "-x", "libvirtd|virtlogd"], capture_output=True).stdout

    before = daemons()
    run = subprocess.run(["bash", str(ROOT / "scripts" / "services.sh")], capture_output=True)
    assert run.returncode == 0, run.stderr
    assert daemons() == before and len(before.split()) == 2, "nothing started twice"
