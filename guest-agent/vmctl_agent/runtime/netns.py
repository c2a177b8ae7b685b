"""Network namespaces that outlive no process of theirs: made before a container starts, so
the network room can plug it in before the command runs, and bound on a file (as `ip netns
add` does) until the container ends.

A short-lived thread makes each: unshare(CLONE_NEWNET) moves only the calling thread, which
binds its namespace on the file and ends, so the agent itself never changes namespace.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass

from vmctl_agent import syscalls as sc


@dataclass(frozen=True)
class Joined:
    """A container's network as the network room made it: the namespace to enter, and the
    /etc files that describe it."""

    netns: str
    hosts: str
    resolv_conf: str


def make(path: str) -> None:
    """A new, empty network namespace bound at `path` (a file made for it)."""
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
    failure: list[BaseException] = []
    thread = threading.Thread(target=_bind_new, args=(path, failure))
    thread.start()
    thread.join()
    if failure:
        os.unlink(path)
        raise failure[0]


def _bind_new(path: str, failure: list[BaseException]) -> None:
    try:
        sc.unshare(sc.CLONE_NEWNET)
        sc.mount(f"/proc/self/task/{threading.get_native_id()}/ns/net", path, None, sc.MS_BIND)
    except BaseException as e:
        failure.append(e)


def remove(path: str) -> None:
    """Unbind and delete; the namespace ends with its last process."""
    with contextlib.suppress(OSError):
        sc.umount(path, sc.MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class Networking:
    """What the runtime asks of the network room, for every network but `none` and `host`
    (which the runtime makes itself). This base is the engine without a network room: it
    knows no other network."""

    def created(self, config) -> None:
        """Check a new container's networks and remember its attachments (raise to refuse)."""
        from vmctl_agent.runtime.spec import InvalidSpec

        raise InvalidSpec(f"network {config.network} not found")

    def join(self, config, run: str) -> Joined:
        """Before the start identified by `run`: its namespace, plugged into its networks."""
        raise NotImplementedError

    def leave(self, container_id: str, run: str) -> None:
        """That run ended (or never started): unplug it and give its addresses back."""

    def forget(self, container_id: str) -> None:
        """The container is removed: its attachments too."""
