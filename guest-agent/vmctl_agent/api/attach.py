"""POST /containers/{id}/attach: a hijacked connection carrying the container's output (from
now on, or all of it with logs=1) and, when asked, the client's stdin, until the container
ends or the client types the detach keys (then the container runs on)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

from vmctl_agent.api import detachkeys, streams
from vmctl_agent.api.http import Response
from vmctl_agent.runtime import logs as logfile
from vmctl_agent.runtime.index import ContainerNotFound

_POLL = 0.05


def attach(engine, request, id: str) -> Response:
    """Hijack: output from now on (or all of it with logs=1), stdin when asked, until the
    container ends or the client types the detach keys (the container keeps running)."""
    container = engine.runtime.get(id)
    keys = detachkeys.parse(request.arg("detachKeys"))
    tty = container.config.create_options.tty
    wanted = {s for s in ("stdout", "stderr") if request.flag(s)}
    log_file = engine.runtime.open_log(id)
    if not request.flag("logs"):
        log_file.seek(0, os.SEEK_END)  # only what comes from now on
    stdin = request.flag("stdin") and container.config.create_options.open_stdin
    detached = threading.Event()

    def session(sock: socket.socket) -> None:
        if stdin:
            pump = (engine, id, sock, detachkeys.Scanner(keys, tty), detached)
            threading.Thread(target=_pump_stdin, args=pump, daemon=True).start()
        follow = request.flag("stream", True)
        with contextlib.suppress(OSError):  # a detach shuts the socket under our writes
            _stream_output(engine, id, sock, (wanted, tty, follow), log_file, detached)
        log_file.close()
        _shutdown(sock)

    return Response(content_type=streams.RAW if tty else streams.MULTIPLEXED, hijack=session)


def _stream_output(engine, id: str, sock, how, log_file, detached: threading.Event) -> None:
    """stream=1: until the container ends or the client detaches; stream=0: what is logged
    already (all of it with logs=1, else nothing)."""
    runtime, (wanted, tty, follow) = engine.runtime, how
    if follow and not _wait_started(runtime, id, detached):
        return
    offset = log_file.tell()
    following = lambda: not detached.is_set() and _running(runtime, id)  # noqa: E731
    path = _log_path(runtime, id)  # followed through rotations (--log-opt max-size)
    entries = logfile.read(log_file, follow=follow, running=following, offset=offset, path=path)
    for entry in entries:
        if detached.is_set():
            return
        if entry.stream in wanted:
            sock.sendall(streams.encode(entry.stream, entry.data, tty=tty))


def _wait_started(runtime, id: str, detached: threading.Event | None = None) -> bool:
    """Attached before start (as `docker run` does): wait for the start; False if the client
    detached first."""
    while detached is None or not detached.is_set():
        try:
            if runtime.get(id).state.status != "created":
                return True
        except ContainerNotFound:
            return True  # started, ran and was auto-removed already: its output is in our file
        time.sleep(_POLL)
    return False


def _log_path(runtime, id: str) -> str | None:
    try:
        return str(runtime.get(id).directory / "container-json.log")
    except ContainerNotFound:
        return None  # auto-removed already: the file we hold is all there is


def _running(runtime, id: str) -> bool:
    try:
        return runtime.get(id).state.running
    except ContainerNotFound:
        return False


def _pump_stdin(engine, id: str, client: socket.socket, scanner, detached) -> None:
    """Client bytes to the container's stdin until the client half-closes, leaves or types
    the detach keys (which end its session: the socket is shut, the container runs on)."""
    with contextlib.suppress(OSError, ContainerNotFound):
        _wait_started(engine.runtime, id)
        with engine.runtime.attach_stdin(id) as target:
            while not scanner.detached and (chunk := client.recv(65536)):
                target.sendall(scanner.feed(chunk))
    if scanner.detached:
        detached.set()
        _shutdown(client)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
