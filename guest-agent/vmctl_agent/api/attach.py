"""POST /containers/{id}/attach: a hijacked connection carrying the container's output (from
now on, after all of it logged so far with logs=1) and, when asked, the client's stdin, until
the container ends or the client types the detach keys (then the container runs on).

The output from now on comes from a tap on the container's shim (runtime/taps.py), as dockerd
reads a container's stdio rather than its log: a prompt without a newline shows at once, and
an attach made before the start (as `docker run` and `docker start -a` make it) gets the
run's first bytes."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from vmctl_agent.api import detachkeys, streams
from vmctl_agent.api.http import Response
from vmctl_agent.runtime import logs as logfile
from vmctl_agent.runtime.index import ContainerNotFound

_POLL = 0.05


@dataclass
class _Session:
    id: str
    wanted: set[str]
    tty: bool
    logged: BinaryIO | None  # the log file, for logs=1
    live: socket.socket | BinaryIO | None  # a tap; from an older shim, the log at its end
    found_running: bool  # stdin goes to the run the attach found, else to the next one
    over: threading.Event = field(default_factory=threading.Event)  # detached, or ended


def attach(engine, request, id: str) -> Response:
    """Hijack: output from now on (after what is logged with logs=1), stdin when asked, until
    the container ends or the client types the detach keys (the container keeps running)."""
    runtime = engine.runtime
    container = runtime.get(id)
    keys = detachkeys.parse(request.arg("detachKeys"))
    tty = container.config.create_options.tty
    session = _Session(
        container.id,
        {s for s in ("stdout", "stderr") if request.flag(s)},
        tty,
        runtime.open_log(id) if request.flag("logs") else None,
        _live_output(runtime, id) if request.flag("stream", True) else None,  # before the 101
        container.state.running,
    )
    stdin = request.flag("stdin") and container.config.create_options.open_stdin

    def hijacked(sock: socket.socket) -> None:
        if stdin:
            pump = (runtime, session, sock, detachkeys.Scanner(keys, tty))
            threading.Thread(target=_pump_stdin, args=pump, daemon=True).start()
        with contextlib.suppress(OSError):  # a detach shuts the socket under our writes
            _send_output(runtime, session, sock)
        session.over.set()
        for opened in (session.logged, session.live):
            if opened is not None:
                opened.close()
        _shutdown(sock)

    return Response(content_type=streams.RAW if tty else streams.MULTIPLEXED, hijack=hijacked)


def _live_output(runtime, id: str) -> socket.socket | BinaryIO:
    """A tap on the output from now on; for a running container whose shim serves none
    (started by an older agent), its log file, read from its end."""
    try:
        return runtime.open_output(id)
    except OSError:
        log_file = runtime.open_log(id)
        log_file.seek(0, os.SEEK_END)
        return log_file


def _send_output(runtime, session: _Session, sock: socket.socket) -> None:
    if session.logged is not None:
        _send(session, sock, ((e.stream, e.data) for e in logfile.read(session.logged)))
    if isinstance(session.live, socket.socket):
        _send(session, sock, streams.read_frames(session.live))
    elif session.live is not None:
        _send(session, sock, _followed(runtime, session))


def _send(session: _Session, sock: socket.socket, output: Iterable[tuple[str, bytes]]) -> None:
    for stream, data in output:
        if session.over.is_set():
            return
        if stream in session.wanted:
            sock.sendall(streams.encode(stream, data, tty=session.tty))


def _followed(runtime, session: _Session) -> Iterable[tuple[str, bytes]]:
    """The log of a container whose shim serves no tap, followed until it ends."""
    following = lambda: not session.over.is_set() and _running(runtime, session.id)  # noqa: E731
    log_file = session.live
    entries = logfile.read(
        log_file,
        follow=True,
        running=following,
        offset=log_file.tell(),
        path=str(runtime.get(session.id).directory / "container-json.log"),
    )
    return ((e.stream, e.data) for e in entries)


def _running(runtime, id: str) -> bool:
    try:
        return runtime.get(id).state.running
    except ContainerNotFound:
        return False


def _pump_stdin(runtime, session: _Session, client: socket.socket, scanner) -> None:
    """Client bytes to the container's stdin until the client half-closes, leaves or types
    the detach keys (which end its session: the sockets are shut, the container runs on)."""
    with contextlib.suppress(OSError, ContainerNotFound):
        if _wait_for_run(runtime, session):
            with runtime.attach_stdin(session.id) as target:
                while not scanner.detached and (chunk := client.recv(65536)):
                    target.sendall(scanner.feed(chunk))
    if scanner.detached:
        session.over.set()
        _shutdown(client)
        if isinstance(session.live, socket.socket):
            _shutdown(session.live)  # wakes the output's reader


def _wait_for_run(runtime, session: _Session) -> bool:
    """The run the attach found running, or else the next one (an attach made before
    `docker run`'s or `docker start -ai`'s start); False once that run or the session is over."""
    while not session.over.is_set():
        if runtime.get(session.id).state.running:
            return True
        if session.found_running:
            return False  # the run it found has ended
        time.sleep(_POLL)
    return False


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
