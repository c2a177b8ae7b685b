"""A helper process standing in a container's root, for work that must see the container's
files as the container does (`docker cp`): symlinks resolve inside its root, and its volumes
and binds are where the container has them, so nothing the work does reaches the host's files.

    running:     the helper joins the container's mount namespace (setns puts it at its root)
    not running: the helper unshares a mount namespace of its own and builds the root as a
                 start does (the overlay, then volumes and binds; no /proc /dev /sys, as in
                 dockerd's view of a stopped container), all of which dies with the helper

The helper is forked. Before it enters the root it empties `sys.path`: from then on an import
could only find the container's files, so none may happen (what the work needs is imported
here first). It reports one JSON answer on a socket (`say`) and exits; a second socket
carries what it sends back (a tar). The container's lock is held meanwhile, so no start
mounts the same upper directory while the helper has it mounted.
"""

from __future__ import annotations

import bz2  # noqa: F401  (imported before the helper enters a root: see above)
import contextlib
import encodings.latin_1
import encodings.utf_8  # noqa: F401
import gzip  # noqa: F401
import json
import lzma  # noqa: F401
import os
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from vmctl_agent import syscalls as sc
from vmctl_agent.errors import AgentError
from vmctl_agent.runtime import mounts as user_mounts
from vmctl_agent.runtime import pids, rootfs
from vmctl_agent.runtime.index import Container

Work = Callable[[socket.socket, Callable[[dict], None]], dict | None]


class RootViewError(AgentError):
    """The helper failed inside the container's root: `kind` says whose fault it was."""

    def __init__(self, message: str, kind: str = "failed") -> None:
        super().__init__(message)
        self.kind = kind  # "missing" (a path), "invalid" (the request), "failed" (ours)


@dataclass
class Helper:
    """A helper at work: its answer socket, our end of its data socket, its pid."""

    pid: int
    answers: socket.socket
    data: socket.socket

    def answer(self) -> dict:
        """The helper's one answer (its error raised as RootViewError)."""
        raw = _read_all(self.answers)
        answer = json.loads(raw) if raw else {"error": "the helper ended without an answer"}
        if "error" in answer:
            raise RootViewError(answer["error"], answer.get("kind", "failed"))
        return answer

    def finish(self) -> None:
        """Close our ends and reap the helper (which ends once its sockets are closed)."""
        self.answers.close()
        self.data.close()
        os.waitpid(self.pid, 0)


@contextlib.contextmanager
def entered(runtime, container: Container, work: Work) -> Iterator[Helper]:
    """A helper running `work(data, say)` in `container`'s root (`data`: a socket to us).
    Reaped when the block ends."""
    with runtime.locked(container):
        container = runtime.get(container.id)  # its state now that nobody can start it
        enter, held_fd = _entry(runtime, container)
        try:
            helper = _spawn(enter, work)
        finally:
            if held_fd >= 0:
                os.close(held_fd)
        try:
            yield helper
        finally:
            helper.finish()


def _entry(runtime, container: Container) -> tuple[Callable[[], None], int]:
    """How the helper gets into this container's root, decided before the fork (and the
    namespace's fd, which we close once the helper has its copy)."""
    state = container.state
    if state.running:
        fd = os.open(f"/proc/{state.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        if pids.same_process(state.pid, state.start_time):
            return (lambda: sc.setns(fd, sc.CLONE_NEWNS)), fd
        os.close(fd)  # it ended as we looked: build its root as for a stopped one
    plan = container.config.launch(container.directory, runtime.cgroups.version).plan
    return (lambda: build_root(plan)), -1


def build_root(plan: rootfs.RootfsPlan) -> None:
    """A stopped container's root, as a start makes it, in a mount namespace of our own."""
    held = tuple(m for m in plan.mounts if m.type != "tmpfs")  # a tmpfs would be empty
    plan = replace(plan, mounts=held)
    sc.unshare(sc.CLONE_NEWNS)
    rootfs.make_private(user_mounts.root_propagation(held))
    rootfs.mount_overlay(plan)
    sources = user_mounts.open_sources(held)
    host = rootfs.pivot(plan.merged)
    try:
        user_mounts.mount_all(held, sources, proc="proc")  # the old root's /proc
    finally:
        rootfs.drop_old_root(host)


def _spawn(enter: Callable[[], None], work: Work) -> Helper:
    """Sockets, not pipes: the helper's shutdown ends each stream for us even if another
    thread's fork holds a copy of its end meanwhile."""
    answers, answer_end = socket.socketpair()
    data, data_end = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        answers.close()
        data.close()
        _helper(enter, work, answer_end, data_end)
    answer_end.close()
    data_end.close()
    return Helper(pid, answers, data)


def _helper(enter: Callable[[], None], work: Work, answers: socket.socket, data) -> None:
    said = []

    def say(answer: dict) -> None:
        said.append(answer)
        answers.sendall(json.dumps(answer).encode())
        answers.shutdown(socket.SHUT_WR)

    try:
        sys.path.clear()
        sys.path_importer_cache.clear()
        enter()
        answer = work(data, say) or {}
    except RootViewError as e:
        answer = {"error": str(e), "kind": e.kind}
    except BaseException as e:  # reported; then the helper ends
        answer = {"error": str(e) or type(e).__name__, "kind": "failed"}
    try:
        if not said:
            say(answer)
        data.shutdown(socket.SHUT_RDWR)
    finally:
        os._exit(0)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)
