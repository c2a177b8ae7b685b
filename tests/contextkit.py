"""Build contexts and raw build requests for the builder's tests, and the checks that a
build left nothing behind (step containers, mounts, workspaces)."""

from __future__ import annotations

import http.client
import io
import socket
import tarfile
from pathlib import Path

from agentserver import until


def ok(result) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def containers(agent) -> list[str]:
    return ok(agent.docker("ps", "-aq")).split()


def assert_nothing_left(agent) -> None:
    """No step container, no mount under the data root, no build workspace."""
    assert containers(agent) == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f"{agent.data_root}/" not in mounts  # (the data root may be a mount itself)
    assert not [p for p in (agent.data_root / "image" / "tmp").iterdir() if "build" in p.name]
    builds = agent.data_root / "builds"
    # The workspace goes on a thread after the answer ends: wait for that removal.
    until(lambda: not builds.exists() or not list(builds.iterdir()), "the build workspace gone")


def post(agent, path: str, body: bytes, headers: dict | None = None) -> tuple[int, bytes]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(agent.socket))
    conn = http.client.HTTPConnection("localhost")
    conn.sock = sock
    conn.request(
        "POST", path, body=body, headers={"Content-Type": "application/x-tar", **(headers or {})}
    )
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def tar_of(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, data in entries:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def entry(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info, data


def start_build(agent, dockerfile: bytes, query: str) -> socket.socket:
    """A build (`POST /build?query`) sent on a raw connection, read until its RUN step
    prints `started`: the caller then leaves, or kills the agent, mid-step."""
    body = tar_of([entry("Dockerfile", dockerfile)])
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(agent.socket))
    head = (
        f"POST /v1.50/build?{query} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/x-tar\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    seen = b""
    while b'"started\\n"' not in seen:  # its output, not the Step line that names it
        chunk = sock.recv(65536)
        assert chunk, seen
        seen += chunk
    return sock
