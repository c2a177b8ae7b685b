"""Reverse SFTP: a host folder in the VM over the VM's own SSH connection, for hosts whose
QEMU has neither virtiofs nor 9p (as Lima's reverse-sshfs does it). The guest's `sshfs -o
slave` speaks SFTP on its stdin and stdout, which an SSH exec channel carries to this side,
where vmctl's SFTP server (sftpserver.py) answers from the folder, as the user running vmctl.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable

import paramiko

from vmctl import sftpserver
from vmctl.edits import OwnWrites
from vmctl.shares import Share

RETRY = 10.0  # s between mounts of one share whose sshfs ended


def mount_command(share: Share) -> str:
    """sshfs in the foreground (the channel lives as long as the mount), readable by every
    user in the guest, the engine's containers included."""
    options = "slave,allow_other" + (",ro" if share.read_only else "")
    mkdir = shlex.join(["sudo", "-n", "mkdir", "-p", share.guest])
    mount = shlex.join(["sudo", "-n", "sshfs", "-f", "-o", options, f":{share.host}", share.guest])
    return f"{mkdir} && exec {mount}"


def serve(
    transport: paramiko.Transport, share: Share, own: OwnWrites, log: Callable[[str], None]
) -> threading.Thread:
    """Mount `share` in the guest and answer its SFTP requests until sshfs exits; then `log`
    is told what sshfs said (a missing sshfs, a busy mount point...)."""
    channel = transport.open_session()
    channel.exec_command(mount_command(share))
    server = sftpserver.Server(sftpserver.Folder(share.host, share.read_only, own))
    answering = threading.Thread(target=_answer, args=(server, channel, log), daemon=True)
    answering.start()
    threading.Thread(target=_report, args=(answering, channel, share, log), daemon=True).start()
    return answering


def _answer(server: sftpserver.Server, channel, log: Callable[[str], None]) -> None:
    """Until the stream ends, or breaks the protocol: then the channel is closed, and the
    guest's sshfs ends with it (to be mounted again)."""
    try:
        server.serve(channel.recv, channel.sendall)
    except (sftpserver.BadMessage, OSError) as e:
        log(f"the sftp share of {server.folder.root} stopped: {e}")
    finally:
        channel.close()


def _report(server: threading.Thread, channel, share: Share, log: Callable[[str], None]) -> None:
    said = b""
    while chunk := channel.recv_stderr(4096):
        said += chunk
    server.join()
    words = said.decode(errors="replace").strip() or "(nothing)"
    log(f"the sftp share of {share.host} ended (status {channel.recv_exit_status()}): {words}")


class Mounts:
    """The shares, kept mounted over whichever SSH connection is current: one whose sshfs
    ended (a guest not ready for it yet, a reboot, a dropped connection) is mounted again at
    the next `ensure`. What sshfs said is logged when it changes, not at every retry."""

    def __init__(
        self, shares: tuple[Share, ...], log: Callable[[str], None], own: OwnWrites
    ) -> None:
        self.shares = shares
        self.log = log
        self.own = own
        self.serving: dict[str, threading.Thread] = {}
        self.said: dict[str, str] = {}
        self.tried: dict[str, float] = {}  # monotonic time of each share's last mount
        self.lock = threading.Lock()

    def ensure(self, transport: paramiko.Transport) -> None:
        """Mount what is not mounted, each at most once per RETRY s (every try costs an
        emulated guest a second of sudo and sshfs)."""
        with self.lock:
            for share in self.shares:
                running = self.serving.get(share.tag)
                if running is not None and running.is_alive():
                    continue
                if time.monotonic() < self.tried.get(share.tag, -RETRY) + RETRY:
                    continue
                self.tried[share.tag] = time.monotonic()
                self.serving[share.tag] = serve(transport, share, self.own, self._once(share))

    def _once(self, share: Share) -> Callable[[str], None]:
        def say(message: str) -> None:
            if self.said.get(share.tag) != message:
                self.said[share.tag] = message
                self.log(message)

        return say
