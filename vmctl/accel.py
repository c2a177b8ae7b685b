"""Which accelerator QEMU uses on this host: probed, never assumed.

A present /dev/kvm proves little. Under nested virtualisation KVM can be offered and still fail:
QEMU aborts at start with `-cpu host`, or a guest kernel hangs forever right after "Probing EDD"
(both on our CI machines). A product that trusts /dev/kvm hangs there; one that probes falls
back to TCG and works. So each hardware accelerator is tried with a short direct-kernel boot of
the kernel the VM will run: no root fs, `panic=-1 -no-reboot`, console on a pipe. It passes when
the kernel gets through all of its init to the "cannot mount root" panic within PROBE_TIMEOUT
(TCG, i.e. software, needs about 4 s for that here; a working KVM well under 1 s: a hardware
accelerator slower than TCG is no use anyway). TCG is the fallback and is not probed.

The verdict is cached per (QEMU binary, kernel, host OS release) so the probe runs once.
Without a kernel (a firmware-boot image) nothing is probed: a firmware-only test would pass
here (the BIOS runs fine under the broken KVM; the hang comes later, in the kernel), so it
proves nothing. Then a verdict cached for this QEMU and host from any kernel is reused, else
TCG: slow, but it never hangs. `VMCTL_ACCEL=kvm|hvf|whpx|tcg` forces a choice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from vmctl import atomic
from vmctl.errors import VmctlError

log = logging.getLogger(__name__)

FALLBACK = "tcg"
# CPU features TCG emulates slower than what the guest kernel uses without them. With ERMS or
# FSRM the kernel copies memory with `rep movsb`, which QEMU 7.2's TCG runs an iteration (a
# byte) at a time; without them it uses `rep movsq`. In the guest, 256 MiB written to tmpfs
# took 3.35 s with them and 1.41 s without; read back, 1.07 s and 0.39 s. Every copy between
# a process and the kernel pays it: files, pipes, sockets, shared folders.
TCG_SLOW_FEATURES = ("erms", "fsrm")
_TCG_CPU = "max," + ",".join(f"{feature}=off" for feature in TCG_SLOW_FEATURES)
# -cpu host passes the host CPU through (what makes hardware acceleration fast); TCG emulates
# the richest CPU it can, less the slow features. WHPX loses MSIs with the in-hypervisor
# irqchip on x86.
_ARGS = {
    "kvm": ["-accel", "kvm", "-cpu", "host"],
    "hvf": ["-accel", "hvf", "-cpu", "host"],
    "whpx": ["-accel", "whpx,kernel-irqchip=off", "-cpu", "host"],
    "tcg": ["-accel", "tcg,thread=multi", "-cpu", _TCG_CPU],
}
KNOWN = tuple(_ARGS)
PREFERENCE = {
    "linux": ("kvm", "tcg"),
    "darwin": ("hvf", "tcg"),
    "win32": ("whpx", "tcg"),
}
PROBE_TIMEOUT = 5.0
PROBE_PASSED = b"Kernel panic - not syncing"  # the kernel ran all of its init, found no root


def qemu_args(accel: str) -> list[str]:
    """QEMU's -accel and -cpu arguments for `accel` (shared by the probe and the driver)."""
    if accel not in _ARGS:
        raise VmctlError(f"unknown accelerator {accel!r}: use one of {', '.join(KNOWN)}")
    return list(_ARGS[accel])


def available(qemu: str) -> list[str]:
    """The accelerators this QEMU binary was built with (`-accel help`), known ones only."""
    try:
        done = subprocess.run(
            [qemu, "-accel", "help"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VmctlError(f"cannot run {qemu} -accel help: {exc}") from exc
    if done.returncode != 0:
        raise VmctlError(f"{qemu} -accel help failed: {done.stderr.strip()[-500:]}")
    words = [line.strip() for line in done.stdout.splitlines()[1:]]
    return [word for word in words if word in KNOWN]


def probe_argv(qemu: str, accel: str, kernel: Path) -> list[str]:
    """A boot that ends by itself: the kernel panics without a root fs and QEMU exits."""
    return [
        qemu,
        *("-machine", "q35"),  # the machine drivers.qemu boots
        *qemu_args(accel),
        *("-smp", "1", "-m", "256M"),
        *("-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"),
        *("-serial", "stdio", "-kernel", str(kernel)),
        *("-append", "console=ttyS0 panic=-1 quiet"),
    ]


def probe(qemu: str, accel: str, kernel: Path, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when `kernel` boots to its no-root panic under `accel` within `timeout` s."""
    started = time.monotonic()
    proc = subprocess.Popen(
        probe_argv(qemu, accel, kernel),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = _Output(proc.stdout)
    try:
        passed = output.wait_for(PROBE_PASSED, started + timeout)
    finally:
        proc.kill()
        proc.wait()
        output.close()
    seconds = time.monotonic() - started
    log.info("probe %s: %s in %.2f s; console tail %r", accel, passed, seconds, output.tail())
    return passed


class _Output:
    """Collects a pipe on a thread (portable: select() does not take pipes on Windows)."""

    def __init__(self, pipe: IO[bytes] | None) -> None:
        if pipe is None:
            raise VmctlError("internal error: the probe's QEMU has no output pipe")
        self._pipe = pipe
        self._data = bytearray()
        self._eof = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while chunk := self._pipe.read1(4096):  # type: ignore[attr-defined]
            self._data += chunk
        self._eof.set()

    def wait_for(self, needle: bytes, deadline: float) -> bool:
        while needle not in self._data:
            if self._eof.is_set() or time.monotonic() >= deadline:
                return needle in self._data
            self._eof.wait(0.05)
        return True

    def tail(self) -> str:
        return bytes(self._data[-300:]).decode(errors="replace")

    def close(self) -> None:
        self._thread.join(5)
        self._pipe.close()


def choose(
    qemu: str,
    kernel: Path | None,
    cache: Path,
    *,
    progress: Callable[[str], None] | None = None,
) -> str:
    """The accelerator to boot `kernel` with: VMCTL_ACCEL, else a cached or fresh probe."""
    forced = os.environ.get("VMCTL_ACCEL")
    if forced:
        return _forced(qemu, forced)
    host = _host_id(qemu)
    entries = _load(cache)
    if kernel is None:
        return _without_kernel(entries, host)
    key = f"{host} kernel={_kernel_id(kernel)}"
    cached = entries.get(key)
    if isinstance(cached, dict) and cached.get("accel") in KNOWN:
        return cached["accel"]
    verdict = _probe_in_order(qemu, kernel, progress or (lambda _message: None))
    _store(cache, {**entries, key: {**verdict, "host": host, "probed_at": time.time()}})
    return verdict["accel"]


def _forced(qemu: str, accel: str) -> str:
    if accel not in KNOWN:
        raise VmctlError(
            f"VMCTL_ACCEL={accel!r} is not an accelerator vmctl knows: use one of "
            f"{', '.join(KNOWN)}, or unset it to let vmctl probe"
        )
    offered = available(qemu)
    if accel not in offered:
        raise VmctlError(
            f"VMCTL_ACCEL={accel} but {qemu} offers only {', '.join(offered) or 'none'}: "
            "pick one of those, or unset it to let vmctl probe"
        )
    return accel


def _without_kernel(entries: dict[str, Any], host: str) -> str:
    """Nothing to probe with: reuse what a kernel probe on this host found, else TCG."""
    known = [
        entry
        for entry in entries.values()
        if isinstance(entry, dict) and entry.get("host") == host and entry.get("accel") in KNOWN
    ]
    if not known:
        log.info("no kernel to probe with and no earlier verdict: using %s", FALLBACK)
        return FALLBACK
    return max(known, key=lambda entry: entry.get("probed_at", 0))["accel"]


def _probe_in_order(qemu: str, kernel: Path, say: Callable[[str], None]) -> dict[str, Any]:
    offered = available(qemu)
    candidates = [a for a in PREFERENCE.get(sys.platform, (FALLBACK,)) if a in offered]
    probes: dict[str, Any] = {}
    for accel in candidates:
        if accel == FALLBACK:
            return {"accel": accel, "probes": probes}
        say(f"checking that {accel} can boot the guest kernel (once per host and kernel)")
        started = time.monotonic()
        passed = probe(qemu, accel, kernel)
        probes[accel] = {"passed": passed, "seconds": round(time.monotonic() - started, 2)}
        if passed:
            return {"accel": accel, "probes": probes}
        say(f"{accel} is present but cannot boot the guest kernel here: trying the next")
    raise VmctlError(
        f"no accelerator of {qemu} boots {kernel} (probed: {probes or 'none'}; offered: "
        f"{', '.join(offered) or 'none'}): install a QEMU with TCG, or set VMCTL_ACCEL"
    )


def _host_id(qemu: str) -> str:
    """This QEMU build (its file: no need to run it) on this host OS release."""
    binary = Path(shutil.which(qemu) or qemu).resolve()
    try:
        info = binary.stat()
    except OSError as exc:
        raise VmctlError(f"QEMU {qemu} not found ({exc}): install QEMU") from exc
    uname = platform.uname()
    return f"qemu={binary}:{info.st_size}:{info.st_mtime_ns} host={uname.system} {uname.release}"


def _kernel_id(kernel: Path) -> str:
    try:
        digest = hashlib.sha256(kernel.read_bytes()).hexdigest()[:32]
    except OSError as exc:
        raise VmctlError(f"cannot read the guest kernel {kernel}: {exc.strerror}") from exc
    return f"sha256:{digest}"


def _load(cache: Path) -> dict[str, Any]:
    """The cached verdicts; a missing or damaged cache is an empty one (probing redoes it)."""
    try:
        entries = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _store(cache: Path, entries: dict[str, Any]) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(cache, json.dumps(entries, indent=1, sort_keys=True))
