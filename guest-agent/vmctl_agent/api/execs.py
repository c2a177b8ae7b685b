"""/containers/{id}/exec and /exec/{id}: `docker exec`, started over a hijacked connection."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
import struct
import termios
import threading

from vmctl_agent.api import detachkeys, inspection, streams
from vmctl_agent.api.engine import ExecRecord
from vmctl_agent.api.http import ApiError, Response, empty, json_response
from vmctl_agent.errors import AgentError
from vmctl_agent.runtime.shim import StartError


class ExecNotFound(AgentError):
    pass


def create(engine, request, id: str) -> Response:
    container = engine.runtime.get(id)
    if not container.state.running:
        raise ApiError(409, f"Container {container.id} is not running")
    body = request.json()
    cmd = body.get("Cmd") or []
    cmd = [cmd] if isinstance(cmd, str) else cmd  # a string is one argument, as in dockerd
    if not cmd or not all(isinstance(c, str) for c in cmd):
        raise ApiError(400, "No exec command specified")
    if body.get("Privileged"):
        raise ApiError(400, "Privileged is not supported by this engine yet (privileged exec)")
    keys = body.get("DetachKeys") or body.get("detachKeys") or ""  # (docker-py's spelling)
    detachkeys.parse(keys)
    record = ExecRecord(
        id=secrets.token_hex(32),
        container_id=container.id,
        cmd=tuple(cmd),
        env=tuple(body.get("Env") or ()),
        user=body.get("User") or "",
        working_dir=body.get("WorkingDir") or "",
        tty=bool(body.get("Tty")),
        attach_stdin=bool(body.get("AttachStdin")),
        attach_stdout=bool(body.get("AttachStdout", True)),
        attach_stderr=bool(body.get("AttachStderr", True)),
        detach_keys=keys,
    )
    engine.execs[record.id] = record
    return json_response({"Id": record.id}, 201)


def _record(engine, id: str) -> ExecRecord:
    record = engine.execs.get(id)
    if record is None:
        raise ExecNotFound(f"No such exec instance: {id}")
    return record


def start(engine, request, id: str) -> Response:
    """Framed as the start body's Tty says (as dockerd does; the process's terminal is the
    create's). A command that cannot start still starts the exec: its error is the output and
    its exit code (127 not found, 126 not executable) is on the exec's inspect."""
    record = _record(engine, id)
    if record.process is not None or record.done.is_set():
        raise ApiError(409, f"Exec {id} has already started")
    body = request.json()
    keys = detachkeys.parse(request.arg("detachKeys") or record.detach_keys)
    try:
        _launch(engine, record)
    except StartError as e:
        return _failed(record, e, body)
    if body.get("Detach"):
        threading.Thread(target=_finish, args=(record,), daemon=True).start()
        return empty(200)
    framing = (bool(body.get("Tty")), detachkeys.Scanner(keys, record.tty))
    kind = streams.RAW if framing[0] else streams.MULTIPLEXED
    return Response(content_type=kind, hijack=lambda sock: _session(record, sock, framing))


def _launch(engine, record: ExecRecord) -> None:
    record.process = engine.runtime.exec(
        record.container_id,
        record.cmd,
        env=record.env,
        user=record.user,
        working_dir=record.working_dir,
        tty=record.tty,
        open_stdin=record.attach_stdin,
    )
    record.running, record.pid = True, record.process.helper_pid


def _failed(record: ExecRecord, error: StartError, body: dict) -> Response:
    message = f"OCI runtime exec failed: exec failed: unable to start container process: {error}"
    record.exit_code, record.running = error.exit_code, False
    record.done.set()
    if body.get("Detach"):
        raise ApiError(500, message + ": unknown")
    text = (message + ": unknown\r\n").encode()
    tty = bool(body.get("Tty"))

    def session(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.sendall(streams.encode("stdout", text, tty=tty))
            sock.shutdown(socket.SHUT_RDWR)

    return Response(content_type=streams.RAW if tty else streams.MULTIPLEXED, hijack=session)


def _session(record: ExecRecord, sock: socket.socket, framing) -> None:
    tty, scanner = framing
    process = record.process
    if process.stdin is not None:
        pump = (sock, process.stdin, record, scanner)
        threading.Thread(target=_pump, args=pump, daemon=True).start()
    readers = [(process.stdout, "stdout")]
    if process.stderr is not None:
        readers.append((process.stderr, "stderr"))
    threads = [
        threading.Thread(target=_copy, args=(fd, name, sock, record, tty)) for fd, name in readers
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _finish(record)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _copy(fd: int, stream: str, sock: socket.socket, record: ExecRecord, tty: bool) -> None:
    wanted = record.attach_stdout if stream == "stdout" else record.attach_stderr
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            return  # a terminal whose last holder is gone
        if not data:
            return
        if wanted:
            with contextlib.suppress(OSError):
                sock.sendall(streams.encode(stream, data, tty=tty))


def _pump(sock: socket.socket, target: int, record: ExecRecord, scanner) -> None:
    """Client bytes to the process's stdin; the detach keys end the client's session (the
    socket is shut: the output copies drain into nothing) and leave the process running."""
    with contextlib.suppress(OSError):
        while not scanner.detached and (chunk := sock.recv(65536)):
            os.write(target, scanner.feed(chunk))
        if scanner.detached:
            sock.shutdown(socket.SHUT_RDWR)
        elif not record.tty:
            os.close(target)


def _finish(record: ExecRecord) -> None:
    if record.done.is_set():
        return
    if record.process is not None:
        if not record.attach_stdout:
            _drain(record.process.stdout)
        record.exit_code = record.process.wait()
        record.process.close()
    record.running = False
    record.done.set()


def _drain(fd: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 65536):
            pass


def inspect(engine, request, id: str) -> Response:
    r = _record(engine, id)
    return json_response(
        inspection.complete(
            {
                "ID": r.id,
                "Running": r.running,
                "ExitCode": r.exit_code,
                "ProcessConfig": {
                    "tty": r.tty,
                    "entrypoint": r.cmd[0],
                    "arguments": list(r.cmd[1:]),
                    "user": r.user,
                },
                "OpenStdin": r.attach_stdin,
                "OpenStderr": r.attach_stderr,
                "OpenStdout": r.attach_stdout,
                "CanRemove": False,
                "ContainerID": r.container_id,
                "DetachKeys": r.detach_keys,
                "Pid": r.pid,
            },
            inspection.EXEC,
        )
    )


def resize(engine, request, id: str) -> Response:
    record = _record(engine, id)
    if record.process is None or not record.tty:
        raise ApiError(409, "exec is not running with a terminal")
    size = struct.pack("HHHH", request.int_arg("h", 24), request.int_arg("w", 80), 0, 0)
    fcntl.ioctl(record.process.stdout, termios.TIOCSWINSZ, size)
    return empty(200)
