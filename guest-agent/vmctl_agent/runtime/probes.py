"""Running a healthcheck's probe: an exec in the container, its output (both streams, the
first 4 KiB) and exit code, killed at its timeout, as dockerd's probes are."""

from __future__ import annotations

import os
import selectors
import time

from vmctl_agent.errors import AgentError
from vmctl_agent.runtime import logs
from vmctl_agent.runtime.healthcheck import MAX_OUTPUT, Healthcheck, timeout_text

_READ = 4096


def probe(runtime, container_id: str, check: Healthcheck) -> dict:
    """One result of State.Health.Log: Start, End, ExitCode (-1: it could not run or timed
    out) and Output."""
    start = logs.now()
    try:
        process = runtime.exec(container_id, check.command)
    except AgentError as e:
        return _result(start, -1, str(e))
    try:
        output, finished = _collect(process, time.monotonic() + check.timeout)
        if not finished:
            process.kill()
            process.wait()
            return _result(
                start, -1, f"Health check exceeded timeout ({timeout_text(check.timeout)})"
            )
        return _result(start, process.wait(), output.decode("utf-8", "replace"))
    finally:
        process.close()


def _collect(process, deadline: float) -> tuple[bytes, bool]:
    """Output until both streams end (True) or the deadline passes (False)."""
    sel = selectors.DefaultSelector()
    for fd in (process.stdout, process.stderr):
        if fd is not None:
            sel.register(fd, selectors.EVENT_READ)
    output = b""
    while sel.get_map():
        remaining = deadline - time.monotonic()
        ready = sel.select(remaining) if remaining > 0 else []
        if not ready:
            return output[:MAX_OUTPUT], False
        for key, _ in ready:
            chunk = _read(key.fd)
            if not chunk:
                sel.unregister(key.fd)
            output += chunk if len(output) < MAX_OUTPUT else b""
    return output[:MAX_OUTPUT], True


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, _READ)
    except OSError:
        return b""


def _result(start: str, exit_code: int, output: str) -> dict:
    return {"Start": start, "End": logs.now(), "ExitCode": exit_code, "Output": output}
