"""A real `vmctl-agent serve` for API tests: its own data root, a registry mirror serving the
test images as docker.io names, and the docker CLI pointed at it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import imagekit as ik
from runtimekit import busybox_image

HELLO = (
    "echo; echo 'Hello from Docker!'; "
    "echo 'This message shows that your installation appears to be working correctly.'"
)


def docker_cli() -> str:
    path = shutil.which("docker")
    if path is None:
        raise RuntimeError("the docker CLI is missing: apt-get install docker.io (or docker-cli)")
    return path


def push_test_images(registry) -> None:
    """`hello-world` and `busybox`, as the mirror will serve them for docker.io."""
    client = ik.RegistryClient(registry.url)
    hello = ik.build_image([ik.busybox_layer()], config={"Cmd": ["/bin/sh", "-c", HELLO]})
    client.push_image("library/hello-world", "latest", hello)
    client.push_image("library/busybox", "latest", busybox_image())


@contextlib.contextmanager
def serving(workdir: Path, registry) -> Iterator[AgentServer]:
    """The test images pushed to `registry`, and an agent using it as its mirror until the
    block ends (its containers removed, the agent stopped)."""
    push_test_images(registry)
    server = AgentServer(workdir, registry)
    try:
        yield server
    finally:
        server.stop()


class AgentServer:
    """In the host's network namespace the agent must make no bridge (the network rule for
    these machines): it runs with `--bridge none` (its default too). `prefix` runs it under
    another command (netkit's namespaces), where `bridge=True` (`--bridge docker0`) is
    allowed. `extra`: more `vmctl-agent serve` flags."""

    def __init__(
        self,
        workdir: Path,
        registry,
        *extra: str,
        bridge: bool = False,
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.workdir = workdir
        self.socket = workdir / "docker.sock"
        self.data_root = workdir / "data"
        self.log = workdir / "agent.log"
        cmd = [
            *prefix,
            "vmctl-agent",
            "serve",
            "--listen",
            f"unix://{self.socket}",
            "--data-root",
            str(self.data_root),
            "--registry-mirror",
            registry.url,
            *extra,
            "--bridge",
            "docker0" if bridge else "none",
        ]
        self.cmd = cmd
        self._launch()

    def _launch(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _wait_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not self.socket.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the agent did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def docker(self, *args: str, input: str | None = None, timeout: float = 60):
        env = {**os.environ, "DOCKER_HOST": self.url, "DOCKER_CONFIG": str(self.workdir)}
        return subprocess.run(
            [docker_cli(), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            env=env,
        )

    def stop(self) -> None:
        for container in self.docker("ps", "-aq").stdout.split():
            self.docker("rm", "-f", container)
        self.process.terminate()
        try:
            self.process.wait(timeout=PATIENCE)  # a hang's bound: a loaded machine takes its time
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGUSR1)  # its threads' stacks, into its log
            time.sleep(1)
            self.process.kill()
            self.process.wait()
            tail = self.log.read_text(errors="replace")[-6000:]
            said = f"the agent did not exit on SIGTERM; its log ends:\n{tail}"
            raise AssertionError(said) from None


PATIENCE = 120.0  # seconds: what a loaded 2-core machine may take; the waits end sooner


def ok(result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def inspect(agent: AgentServer, name: str) -> dict:
    return json.loads(ok(agent.docker("inspect", name)))[0]


def until(check, what: str, patience: float = PATIENCE):
    """Poll `check` until it returns something true; fail naming `what` after `patience`."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"still waiting for {what}")


def events(agent: AgentServer, name: str, since: float) -> list[dict]:
    """`docker events` of container `name` from `since` until now, as JSON objects."""
    out = agent.docker(
        "events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}",
        "--filter", f"container={name}", "--format", "{{json .}}",
    )  # fmt: skip
    return [json.loads(line) for line in ok(out).splitlines()]
