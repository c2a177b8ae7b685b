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

from vmctl_agent.api import streams
from vmctl_agent.api.engine import ExecRecord
from vmctl_agent.api.http import ApiError, Response, empty, json_response
from vmctl_agent.errors import AgentError


class ExecNotFound(AgentError):
    pass


def create(engine, request, id: str) -> Response:
    container = engine.runtime.get(id)
    if not container.state.running:
        raise ApiError(409, f"Container {container.id} is not running")
    if container.paused:
        message = f"Container {container.id} is paused, unpause the container before exec"
        raise ApiError(409, message)
    body = request.json()
    cmd = body.get("Cmd") or []
    if not cmd or not all(isinstance(c, str) for c in cmd):
        raise ApiError(400, "No exec command specified")
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
    )
    engine.execs[record.id] = record
    return json_response({"Id": record.id}, 201)


def _record(engine, id: str) -> ExecRecord:
    record = engine.execs.get(id)
    if record is None:
        raise ExecNotFound(f"No such exec instance: {id}")
    return record


def start(engine, request, id: str) -> Response:
    record = _record(engine, id)
    if record.process is not None:
        raise ApiError(409, f"Exec {id} has already started")
    body = request.json()
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
    if body.get("Detach"):
        threading.Thread(target=_finish, args=(record,), daemon=True).start()
        return empty(200)
    kind = streams.RAW if record.tty else streams.MULTIPLEXED
    return Response(content_type=kind, hijack=lambda sock: _session(record, sock))


def _session(record: ExecRecord, sock: socket.socket) -> None:
    process = record.process
    if process.stdin is not None:
        threading.Thread(target=_pump, args=(sock, process.stdin, record), daemon=True).start()
    readers = [(process.stdout, "stdout")]
    if process.stderr is not None:
        readers.append((process.stderr, "stderr"))
    threads = [
        threading.Thread(target=_copy, args=(fd, name, sock, record)) for fd, name in readers
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _finish(record)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _copy(fd: int, stream: str, sock: socket.socket, record: ExecRecord) -> None:
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
                sock.sendall(streams.encode(stream, data, tty=record.tty))


def _pump(sock: socket.socket, target: int, record: ExecRecord) -> None:
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            os.write(target, chunk)
        if not record.tty:
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
            "DetachKeys": "",
            "Pid": r.pid,
        }
    )


def resize(engine, request, id: str) -> Response:
    record = _record(engine, id)
    if record.process is None or not record.tty:
        raise ApiError(409, "exec is not running with a terminal")
    size = struct.pack("HHHH", request.int_arg("h", 24), request.int_arg("w", 80), 0, 0)
    fcntl.ioctl(record.process.stdout, termios.TIOCSWINSZ, size)
    return empty(200)
