"""The libvirt driver: one persistent libvirt domain per VM, on Linux and macOS.

`LibvirtDriver` defines, starts, asks and stops the domain `domainxml` builds. A pid file is
only trusted after /proc (or ps) shows that pid is a QEMU started with that file. No event
loop: each call asks libvirt afresh, and a connection that died (libvirtd restarted) is
reopened once, so a long-lived GUI survives a daemon restart.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import libvirt

from vmctl.drivers.domainxml import domain_xml, is_local, privileged
from vmctl.errors import VmctlError
from vmctl.machine import Driver, MachineSpec

_T = TypeVar("_T")


def default_uri() -> str:
    """The system daemon for root (it runs as root anyway), the user's session otherwise."""
    return "qemu:///system" if os.geteuid() == 0 else "qemu:///session"


# ---- errors ------------------------------------------------------------------------------


def _ignore_libvirt_errors(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; ours say it better."""


def _connection_lost(err: libvirt.libvirtError) -> bool:
    return err.get_error_domain() == libvirt.VIR_FROM_RPC or err.get_error_code() in (
        libvirt.VIR_ERR_INVALID_CONN,
        libvirt.VIR_ERR_NO_CONNECT,
    )


_AUTH_ERRORS = (
    libvirt.VIR_ERR_AUTH_FAILED,
    libvirt.VIR_ERR_AUTH_CANCELLED,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE,
)


def _open_error(uri: str, err: libvirt.libvirtError) -> VmctlError:
    message = str(err)
    if "Permission denied" in message or err.get_error_code() in _AUTH_ERRORS:
        return VmctlError(
            f"permission denied opening libvirt at {uri}: {message}. Add yourself to the "
            "libvirt group (sudo usermod -aG libvirt $USER, then log in again) or use "
            "qemu:///session"
        )
    if err.get_error_domain() == libvirt.VIR_FROM_RPC:
        return VmctlError(
            f"cannot reach libvirtd at {uri}: {message}. Start libvirtd: "
            "`sudo systemctl start libvirtd`, or `sudo bash scripts/services.sh` where there "
            "is no systemd"
        )
    return VmctlError(
        f"libvirt cannot open {uri!r}: {message}. Use a libvirt URI such as qemu:///system, "
        "qemu:///session or qemu+ssh://HOST/system"
    )


def _start_error(spec: MachineSpec, err: libvirt.libvirtError) -> VmctlError:
    """What QEMU said (without libvirt's wrapping and timestamps), and what to do about it."""
    message = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z ", "", str(err))
    message = message.replace("internal error: qemu unexpectedly closed the monitor: ", "")
    if "host forwarding" in message:
        hint = (
            f"port {spec.ssh_port} on 127.0.0.1 is taken: stop what listens there or pick another"
        )
    elif "No such file" in message or "Cannot access" in message:
        hint = "a file the VM needs is missing: recreate the VM (vmctl delete, vmctl start)"
    else:
        hint = (
            f"QEMU's log: /var/log/libvirt/qemu/{spec.name}.log (qemu:///system) or "
            f"~/.cache/libvirt/qemu/log/{spec.name}.log (qemu:///session)"
        )
    return VmctlError(f"QEMU failed to start {spec.name}: {message.strip()} ({hint})")


# ---- the driver --------------------------------------------------------------------------


class LibvirtDriver(Driver):
    """One VM as a persistent libvirt domain named `domain` (boot() adopts `spec.name`).

    A connection is opened on first use and reopened when it died (libvirtd restarted).
    """

    name = "libvirt"

    def __init__(self, uri: str | None = None, pidfile: Path | None = None, *, domain: str) -> None:
        self.uri = uri or default_uri()
        self.pidfile = pidfile if is_local(self.uri) else None  # a remote pid is not ours
        self.domain = domain
        self._conn: libvirt.virConnect | None = None

    def boot(self, spec: MachineSpec) -> None:
        """Define the domain `spec.name` afresh and start it; return once QEMU runs."""
        xml = domain_xml(spec, uri=self.uri, pidfile=self.pidfile)
        self.domain = spec.name
        if self.is_running():
            raise VmctlError(f"{spec.name} is already running: stop it first (vmctl stop)")
        self.delete()  # libvirt refuses a second definition under a known name (new uuid)
        if is_local(self.uri):
            spec.serial_log.touch()  # created by us, so ours even where libvirtd opens it
        if self.pidfile is not None:
            self.pidfile.unlink(missing_ok=True)  # the last QEMU's: dead, see _qemu_died
        dom = self._call("define", lambda conn: conn.defineXML(xml))
        try:
            dom.create()
        except libvirt.libvirtError as err:
            raise _start_error(spec, err) from None

    def is_running(self) -> bool:
        """libvirt's answer, unless QEMU is known to have died: libvirtd learns that a killed
        QEMU is gone only once its event loop has handled the monitor's hang-up, seconds later
        on a loaded host, while the VM stopped the moment QEMU did."""
        active = self._on_domain("ask about", lambda dom: bool(dom.isActive()), absent=False)
        return active and not self._qemu_died()

    def pid(self) -> int | None:
        """QEMU's pid from its pid file, trusted only if that process is QEMU with that file."""
        pid = self._recorded_pid()
        return pid if pid is not None and self._is_our_qemu(pid) else None

    def _recorded_pid(self) -> int | None:
        if self.pidfile is None:
            return None
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None  # none yet (boot removes the last one), or being written

    def _is_our_qemu(self, pid: int) -> bool:
        argv = _argv(pid)
        return bool(argv) and "qemu" in Path(argv[0]).name and str(self.pidfile) in argv

    def _qemu_died(self) -> bool:
        """This boot's QEMU wrote its pid file and that pid is no QEMU of ours any more."""
        pid = self._recorded_pid()
        return pid is not None and not self._is_our_qemu(pid)

    def shutdown(self, timeout: float) -> None:
        """ACPI power button, then power off. A Debian guest honours the button through
        systemd-logind, which needs dbus: an image without dbus ignores it (measured)."""
        if not self._on_domain("shut down", _press_power_button, absent=False):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                return
            time.sleep(0.2)
        self.kill()

    def kill(self) -> None:
        self._on_domain("power off", _destroy, absent=None)

    def delete(self) -> None:
        """Undefine, and drop the per-domain log libvirt keeps after it (delete leaves nothing)."""
        self._on_domain("delete", _undefine, absent=None)
        if privileged(self.uri, os.geteuid()):
            Path(f"/var/log/libvirt/qemu/{self.domain}.log").unlink(missing_ok=True)
        elif is_local(self.uri):
            log = Path.home() / ".cache" / "libvirt" / "qemu" / "log" / f"{self.domain}.log"
            log.unlink(missing_ok=True)

    # -- connection ---------------------------------------------------------------------

    def _on_domain(self, action: str, op: Callable[[libvirt.virDomain], _T], absent: _T) -> _T:
        """`op(domain)`, or `absent` when libvirt knows no domain of that name."""

        def lookup_then_op(conn: libvirt.virConnect) -> _T:
            try:
                dom = conn.lookupByName(self.domain)
            except libvirt.libvirtError as err:
                if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return absent
                raise
            return op(dom)

        return self._call(action, lookup_then_op)

    def _call(self, action: str, op: Callable[[libvirt.virConnect], _T]) -> _T:
        """Run `op` on a live connection; reopen once if libvirtd went away meanwhile."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                return op(conn)
            except libvirt.libvirtError as err:
                if attempt == 2 or not _connection_lost(err):
                    raise VmctlError(
                        f"libvirt could not {action} {self.domain} at {self.uri}: {err}"
                    ) from None
                self._conn = None
        raise AssertionError("unreachable")

    def _connection(self) -> libvirt.virConnect:
        conn = self._conn
        if conn is not None and _alive(conn):
            return conn
        libvirt.registerErrorHandler(_ignore_libvirt_errors, None)
        try:
            self._conn = libvirt.open(self.uri)
        except libvirt.libvirtError as err:
            raise _open_error(self.uri, err) from None
        return self._conn


def _press_power_button(dom: libvirt.virDomain) -> bool:
    """ACPI power button (libvirt's default with no guest agent defined); False if the
    domain was not running."""
    if not dom.isActive():
        return False
    try:
        dom.shutdown()
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:  # stopped meanwhile
            return False
        raise
    return True


def _destroy(dom: libvirt.virDomain) -> None:
    if not dom.isActive():
        return
    try:
        dom.destroy()
    except libvirt.libvirtError as err:
        if err.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:  # stopped meanwhile
            raise


def _undefine(dom: libvirt.virDomain) -> None:
    _destroy(dom)
    try:
        dom.undefine()  # no NVRAM to keep or drop: firmware is BIOS
    except libvirt.libvirtError as err:
        if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:  # gone meanwhile
            raise


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return conn.isAlive() == 1
    except libvirt.libvirtError:
        return False


def _argv(pid: int) -> list[str]:
    """A process's command line, or [] if there is no such process."""
    if not Path("/proc/self").exists():  # macOS: ask ps (its output is split on spaces)
        out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True)
        return out.stdout.decode(errors="replace").split()
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []
