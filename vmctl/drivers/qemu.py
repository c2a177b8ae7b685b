"""The direct-QEMU driver: one detached qemu-system-x86_64 per VM, controlled over QMP.

It is the Windows default (libvirt has no Windows accelerator) and works anywhere QEMU does.
Everything about a running VM is derived each time from files in its directory:

    qemu.pid    written by QEMU and *locked* by it for as long as it runs: the lock holder is
                the live QEMU, so a stale file after a host crash or a recycled pid is never
                trusted (POSIX). On Windows the VM's QMP answering stands in for the lock.
    qmp.sock    QMP on a unix socket (POSIX); on Windows a loopback TCP port named in qmp.addr
    qemu.log    QEMU's own stderr of the latest boot (its first line is the command line)

Build, then run: `qemu_argv` is a pure function (golden-file tested); `QemuDriver` runs it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vmctl import accel, atomic
from vmctl.drivers import virtiofs
from vmctl.errors import VmctlError
from vmctl.machine import Driver, MachineSpec, free_port
from vmctl.paths import VMPaths
from vmctl.qmp import QmpClient, QmpError

BINARY = "qemu-system-x86_64"
# Measured under TCG (Debian 12 kernel to the initramfs, 6 runs each): q35 ~4.9 s, pc ~5.4 s.
MACHINE = "q35"
QMP_TIMEOUT = 3.0  # one QMP exchange; QEMU answers in milliseconds even under TCG
QUIT_GRACE = 5.0  # after QMP quit, before SIGKILL
_INSTALL = {
    "linux": "install it with your package manager: `apt install qemu-system-x86` "
    "(Debian, Ubuntu) or `dnf install qemu-system-x86` (Fedora)",
    "darwin": "install it with Homebrew: `brew install qemu`",
    "win32": "install it with `winget install SoftwareFreedomConservancy.QEMU` "
    "or from https://qemu.weilnetz.de/w64/",
}


def find_qemu() -> str:
    """qemu-system-x86_64: on PATH, else where the platform's installers put it."""
    found = shutil.which(BINARY)
    if found:
        return found
    for candidate in _usual_places():
        if candidate.is_file():
            return str(candidate)
    advice = _INSTALL.get(sys.platform, "install QEMU")
    raise VmctlError(f"{BINARY} not found on PATH: {advice}")


def _usual_places() -> list[Path]:
    if sys.platform == "darwin":  # Homebrew on Apple silicon, then on Intel
        return [Path("/opt/homebrew/bin", BINARY), Path("/usr/local/bin", BINARY)]
    if sys.platform == "win32":
        program_files = os.environ.get("PROGRAMFILES", r"C:\Program Files")
        return [Path(program_files, "qemu", f"{BINARY}.exe")]
    return []


def qemu_argv(spec: MachineSpec, *, qemu: str, qmp: str, pidfile: Path) -> list[str]:
    """The full QEMU command line for `spec`; `qmp` is `unix:PATH` or `tcp:HOST:PORT`."""
    return [
        qemu,
        *("-name", _opt(spec.name)),
        *("-machine", MACHINE),
        *accel.qemu_args(spec.accel),
        *("-smp", str(spec.cpus), "-m", f"{spec.memory_mib}M"),
        *("-nodefaults", "-no-user-config", "-display", "none"),
        *_boot_args(spec),
        *_disk_args(spec),
        *_share_args(spec, pidfile.parent),
        *("-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22"),
        *("-device", "virtio-net-pci,netdev=net0"),
        *("-device", "virtio-rng-pci"),
        *("-device", "virtio-balloon-pci,free-page-reporting=on"),
        *("-chardev", f"file,id=serial0,path={_opt(spec.serial_log)},append=on"),
        *("-serial", "chardev:serial0"),
        *("-qmp", f"{_opt(qmp)},server=on,wait=off"),
        *("-pidfile", str(pidfile)),
    ]


def _opt(value: object) -> str:
    """A value inside a QEMU `key=value,...` option: a literal comma is written twice."""
    return str(value).replace(",", ",,")


def _boot_args(spec: MachineSpec) -> list[str]:
    if spec.kernel is None:  # firmware (SeaBIOS) boots the disk: bootindex below
        return []
    initrd = ["-initrd", str(spec.initrd)] if spec.initrd else []
    return ["-kernel", str(spec.kernel), *initrd, "-append", spec.cmdline]


def _disk_args(spec: MachineSpec) -> list[str]:
    """The disk first (the guest's vda: root=/dev/vda), then the seed (vdb, label cidata)."""
    # -kernel takes boot index 0 itself (its option ROM); firmware boots the disk.
    boot_from = "" if spec.kernel else ",bootindex=0"
    return [
        "-drive",
        f"file={_opt(spec.disk)},if=none,id=disk0,format=qcow2,discard=unmap,detect-zeroes=unmap",
        *("-device", f"virtio-blk-pci,drive=disk0{boot_from}"),
        *("-drive", f"file={_opt(spec.seed)},if=none,id=seed0,format=raw,readonly=on"),
        *("-device", "virtio-blk-pci,drive=seed0"),
    ]


def _share_args(spec: MachineSpec, vm_dir: Path) -> list[str]:
    """The shares' devices: 9p (security_model=none: files the guest makes belong to the user
    running QEMU), or virtiofs through a virtiofsd per share listening in the VM's folder
    (`virtiofsd_argv`; its memory must be shared with them); sftp needs none."""
    if not spec.shares or spec.share_transport == "sftp":
        return []
    if spec.share_transport == "virtiofs":
        return virtiofs.qemu_args(spec, vm_dir)
    if spec.share_transport != "9p":
        raise VmctlError(f"unknown share transport {spec.share_transport!r}")
    args = []
    for share in spec.shares:
        readonly = ",readonly=on" if share.read_only else ""
        options = f"local,path={_opt(share.host)},mount_tag={share.tag},security_model=none"
        args += ["-virtfs", f"{options},id={share.tag}{readonly}"]
    return args


class QemuDriver(Driver):
    """One VM's qemu-system process: its files live in the VM's directory."""

    name = "qemu"

    def __init__(
        self,
        vm: VMPaths,
        *,
        qemu: str | None = None,
        transport: str | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        """`transport` is how QMP is reached: "unix" (POSIX default) or "tcp" (Windows)."""
        self.vm = vm
        self._qemu = qemu
        self.transport = transport or ("tcp" if sys.platform == "win32" else "unix")
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._servers: list[subprocess.Popen[bytes]] = []  # virtiofsd, until reaped

    @property
    def log(self) -> Path:
        return self.vm.root / "qemu.log"

    @property
    def _qmp_addr_file(self) -> Path:
        return self.vm.root / "qmp.addr"

    def qmp_address(self) -> str | None:
        """Where this VM's QMP listens (None: never booted over TCP)."""
        if self.transport == "unix":
            return f"unix:{self.vm.qmp_socket}"
        with contextlib.suppress(FileNotFoundError):
            return self._qmp_addr_file.read_text().strip() or None
        return None

    def boot(self, spec: MachineSpec) -> None:
        """Start QEMU detached (it outlives this process); return once QMP says running."""
        running = self.pid()
        if running is not None:
            raise VmctlError(
                f"VM {spec.name} already runs (QEMU pid {running}): stop it first (`vmctl stop`)"
            )
        _check_inputs(spec)
        self._reap()
        self._remove_runtime_files()
        qmp = self._new_qmp_address()
        argv = qemu_argv(spec, qemu=self._qemu or find_qemu(), qmp=qmp, pidfile=self.vm.qemu_pid)
        spec.serial_log.parent.mkdir(parents=True, exist_ok=True)
        self._servers = virtiofs.start(spec, self.vm.root, self.start_timeout, _detached())
        try:
            self._start_qemu(argv, qmp)
        except BaseException:
            virtiofs.stop(self._servers)  # QEMU never connected: they would wait for ever
            self._servers = []
            raise

    def _start_qemu(self, argv: list[str], qmp: str) -> None:
        with open(self.log, "wb") as log:
            log.write(f"# {shlex.join(argv)}\n".encode())
            log.flush()
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    **_detached(),
                )
            except OSError as exc:
                raise VmctlError(f"cannot start {argv[0]}: {exc}; reinstall QEMU") from exc
        self._wait_started(self._proc, qmp)

    def _wait_started(self, proc: subprocess.Popen[bytes], qmp: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._remove_runtime_files()
                raise VmctlError(
                    f"QEMU exited at start (status {proc.returncode}): {self._stderr_tail()} "
                    f"(QEMU's log: {self.log})"
                )
            with contextlib.suppress(QmpError), QmpClient(qmp, timeout=QMP_TIMEOUT) as client:
                if client.execute("query-status").get("status") == "running":
                    return
            time.sleep(0.05)
        proc.kill()
        self._reap()
        self._remove_runtime_files()
        raise VmctlError(
            f"QEMU did not report running within {self.start_timeout:.0f} s and was stopped: "
            f"see {self.log}"
        )

    def _stderr_tail(self, lines: int = 12) -> str:
        with contextlib.suppress(OSError):
            text = self.log.read_text(errors="replace").splitlines()
            tail = [line for line in text if not line.startswith("# ")][-lines:]
            return " / ".join(tail) or "(no message)"
        return "(no log)"

    def _new_qmp_address(self) -> str:
        if self.transport == "unix":
            return f"unix:{self.vm.qmp_socket}"
        address = f"tcp:127.0.0.1:{free_port()}"
        atomic.write_text(self._qmp_addr_file, address)
        return address

    def is_running(self) -> bool:
        return self.pid() is not None

    def pid(self) -> int | None:
        """QEMU's pid from its pidfile, only when that process is this VM's live QEMU."""
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None  # reaped
        try:
            pid = int(self.vm.qemu_pid.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._is_our_qemu(pid) else None

    def _is_our_qemu(self, pid: int) -> bool:
        if sys.platform == "win32":  # no POSIX locks: this VM's QMP answering vouches for it
            return self._qmp_answers()
        return _lock_holder(self.vm.qemu_pid) == pid

    def _qmp_answers(self) -> bool:
        try:
            self._qmp("query-status")
        except QmpError:
            return False
        return True

    def _qmp(self, command: str) -> Any:
        address = self.qmp_address()
        if address is None:
            raise QmpError(f"VM {self.vm.name} has no QMP address: it was never booted")
        with QmpClient(address, timeout=QMP_TIMEOUT) as client:
            return client.execute(command)

    def shutdown(self, timeout: float) -> None:
        """ACPI power button; power off after `timeout` s if the guest ignored it."""
        if self.pid() is None:
            self._reap()
            return
        with contextlib.suppress(QmpError):
            self._qmp("system_powerdown")
        if not self._wait_stopped(timeout):
            self.kill()

    def kill(self) -> None:
        """QMP quit; SIGKILL when QEMU does not answer or does not exit. No-op when stopped."""
        if self.pid() is None:
            self._reap()
            return
        with contextlib.suppress(QmpError):
            self._qmp("quit")
        if self._wait_stopped(QUIT_GRACE):
            return
        pid = self.pid()  # checked again right before the signal: never kill a stranger
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
        if not self._wait_stopped(QUIT_GRACE):
            raise VmctlError(f"QEMU (pid {pid}) of VM {self.vm.name} survived SIGKILL")

    def delete(self) -> None:
        """Power off and remove the runtime files (pidfile, QMP socket); never the disk."""
        self.kill()
        self._remove_runtime_files()

    def _wait_stopped(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.pid() is not None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        self._reap()
        return True

    def _reap(self) -> None:
        """Wait for our own child once it stopped, so a long-lived process keeps no zombie.

        QEMU drops its pidfile early on its way out and may take a moment more to exit."""
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(QUIT_GRACE)
            self._proc = None
        for proc in self._servers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(QUIT_GRACE)
        self._servers = []

    def _remove_runtime_files(self) -> None:
        for stale in (self.vm.qemu_pid, self.vm.qmp_socket, self._qmp_addr_file):
            stale.unlink(missing_ok=True)


def _check_inputs(spec: MachineSpec) -> None:
    """Missing files, named before QEMU starts (its own message names only the path)."""
    files = {"disk": spec.disk, "seed ISO": spec.seed, "kernel": spec.kernel, "initrd": spec.initrd}
    for label, path in files.items():
        if path is not None and not Path(path).is_file():
            raise VmctlError(
                f"cannot boot {spec.name}: its {label} {path} does not exist; rebuild the base "
                "image (`vmctl image build`) or recreate the VM (`vmctl delete`, `vmctl start`)"
            )


def _detached() -> dict[str, Any]:
    """QEMU must outlive the CLI that starts it and miss its Ctrl-C: its own session."""
    if sys.platform == "win32":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS
        return {"creationflags": flags}
    return {"start_new_session": True}


def _lock_holder(path: Path) -> int | None:
    """The pid holding a POSIX lock on `path`: QEMU locks its pidfile for as long as it runs."""
    import fcntl  # POSIX only

    # struct flock differs: Linux (type, whence, start, len, pid); BSD/macOS (start, len, pid,
    # type, whence).
    linux = sys.platform.startswith("linux")
    layout = "hhqqi" if linux else "qqihh"
    fields = (fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0) if linux else (0, 0, 0, fcntl.F_WRLCK, 0)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(layout, *fields))
    finally:
        os.close(fd)
    values = struct.unpack(layout, answer)
    kind, pid = (values[0], values[4]) if linux else (values[3], values[2])
    return None if kind == fcntl.F_UNLCK else pid
