"""Provisioning over SSH: what the guest has (one command), waiting for cloud-init's first
boot, and putting the engine and its daemon.json in place only when they differ.

Each SSH command costs an emulated guest about a second (sshd's session set-up, sudo), so
these ask and act in as few commands as they can.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from vmctl import agentapp, cloudinit, shares
from vmctl import config as vmconfig
from vmctl import paths as vmpaths
from vmctl.errors import VmctlError
from vmctl.machine import Driver
from vmctl.ssh import Guest

# cloud-init provisions the first boot only: then vmctl disables it, since under emulation its
# four stages cost the guest a minute or two on every boot, for nothing it still has to do.
CLOUD_INIT_DISABLED = "/etc/cloud/cloud-init.disabled"


@dataclass(frozen=True)
class GuestState:
    """What start needs to know of the guest, asked in one SSH command (each costs the
    emulated guest about a second)."""

    cloud_init: str  # "disabled", result.json's text, or "" while it runs
    digests: dict[str, str]  # path -> sha256 of the deployed agent and daemon.json
    engine_active: bool


# How long one look may take at least. Under emulation on a loaded host a single command
# can take tens of seconds while cloud-init keeps the guest busy: waiting for cloud-init, a
# look may take all that is left of the stage's time.
LOOK_TIMEOUT = 30.0


def look(guest: Guest, timeout: float = LOOK_TIMEOUT) -> GuestState:
    files = f"{cloudinit.AGENT_PATH} {cloudinit.DAEMON_JSON}"
    out = guest.run(
        f"if [ -e {CLOUD_INIT_DISABLED} ]; then echo disabled; "
        "else tr -d '\\n' < /run/cloud-init/result.json 2>/dev/null; echo; fi; "
        f"sudo -n sha256sum {files} 2>/dev/null; systemctl is-active vmctl-agent.service",
        check=False,
        timeout=timeout,
    ).stdout.splitlines()
    digests = {}
    for line in out[1:-1]:
        fields = line.split()
        if len(fields) == 2:
            digests[fields[1]] = fields[0]
    return GuestState(out[0].strip() if out else "", digests, out[-1:] == ["active"])


_SSHD_STARTED = re.compile(rb"Started .{0,40}ssh\.service")


def sshd_started(
    paths: vmpaths.VMPaths, say: Callable[[str], None] = lambda _msg: None
) -> Callable[[], bool]:
    """Whether this boot's console says sshd started (systemd prints it on ttyS0); `say` is
    told once, so a slow ssh stage shows whether the guest or its answer took the time."""
    seen = False

    def hint() -> bool:
        nonlocal seen
        if not seen and _console_says_sshd_started(paths):
            seen = True
            say("the VM's console says sshd started")
        return seen

    return hint


def _console_says_sshd_started(paths: vmpaths.VMPaths) -> bool:
    try:
        with open(paths.serial_log, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 256 * 1024))
            return _SSHD_STARTED.search(f.read()) is not None
    except OSError:
        return False


def wait_cloud_init(guest: Guest, driver: Driver, timeout: float) -> GuestState:
    """cloud-init writes result.json when its last stage ends (errors included). Each look
    may take what is left of the stage: a guest just booted, on a loaded machine, under
    emulation, can take most of a minute to answer one command (its engine and restarted
    containers starting beside it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = look(guest, max(LOOK_TIMEOUT, deadline - time.monotonic()))
        if state.cloud_init == "disabled":
            return state
        if state.cloud_init:
            errors = json.loads(state.cloud_init).get("v1", {}).get("errors", [])
            if errors:
                raise VmctlError(
                    "cloud-init reported errors: "
                    + "; ".join(map(str, errors))[-600:]
                    + " (details: vmctl ssh -- sudo cat /var/log/cloud-init.log)"
                )
            guest.run(["sudo", "-n", "touch", CLOUD_INIT_DISABLED])
            return state
        if not driver.is_running():
            raise VmctlError("the VM stopped during cloud-init")
        time.sleep(1)
    raise VmctlError(f"cloud-init did not finish within {timeout:.0f} s")


def deploy(
    guest: Guest,
    config: vmconfig.VMConfig,
    say: Callable[[str], None],
    state: GuestState,
    resize: bool = False,
) -> None:
    """Mount the shared folders, put daemon.json and the agent in place when they differ,
    and (re)start the engine: one command, which on the everyday start (all in place, the
    engine running) only checks the shares are mounted."""
    local = agentapp.for_deploy(vmpaths.home() / "agent" / agentapp.BUNDLED_NAME)
    daemon_json = (json.dumps(config.daemon_json(), indent=1) + "\n").encode()
    script = []
    if state.digests.get(cloudinit.AGENT_PATH) != agentapp.digest(local).split(":", 1)[1]:
        say("deploying the engine (vmctl-agent)")
        guest.put(local.read_bytes(), "/tmp/vmctl-agent.pyz", mode=0o755)
        script.append(f"install -D -m 0755 /tmp/vmctl-agent.pyz {cloudinit.AGENT_PATH}")
        script.append("rm -f /tmp/vmctl-agent.pyz")
    if state.digests.get(cloudinit.DAEMON_JSON) != hashlib.sha256(daemon_json).hexdigest():
        guest.put(daemon_json, "/tmp/vmctl-daemon.json")
        script.append(f"install -D -m 0644 /tmp/vmctl-daemon.json {cloudinit.DAEMON_JSON}")
        script.append("rm -f /tmp/vmctl-daemon.json")
    if resize:
        script.append("resize2fs /dev/vda >/dev/null 2>&1 || true")  # after `--disk` grew it
    if script:
        script.append("systemctl enable --quiet vmctl-agent.service fstrim.timer")
        script.append("systemctl restart vmctl-agent.service")
    elif not state.engine_active:
        script.append("systemctl start vmctl-agent.service")
    # the shares first: the engine must never bind an empty folder where the user's belongs
    script = shares.guest_script(config.shares(), config.transport()) + script
    guest.run(["sudo", "-n", "sh", "-ec", "; ".join(script)], timeout=120)
