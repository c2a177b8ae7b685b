"""The quick start's main job, until the VM lands: the engine serves the Docker Engine API on a
unix socket right here, and the real docker CLI talks to it.

A real OCI registry on loopback stands in for Docker Hub (registry-mirrors, as a Docker
Desktop user would configure). It holds a small hello-world image built from busybox.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from agentserver import AgentServer, docker_cli, push_test_images  # the test kit's pieces
from registry import Registry


def show(agent: AgentServer, *args: str) -> None:
    print(f"$ docker {' '.join(args)}", flush=True)
    env = {**os.environ, "DOCKER_HOST": agent.url}
    subprocess.run([docker_cli(), *args], env=env, check=True)
    print(flush=True)


def main() -> int:
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    with tempfile.TemporaryDirectory(prefix="vmctl-demo-") as tmp:
        registry = Registry(Path(tmp) / "registry")
        agent = None
        try:
            push_test_images(registry)
            agent = AgentServer(Path(tmp), registry)
            print(f"engine: {agent.url}  (registry mirror {registry.url})\n", flush=True)
            show(agent, "version")
            show(agent, "run", "hello-world")
            show(agent, "run", "--rm", "hello-world")
            show(agent, "images")
        finally:
            if agent is not None:
                agent.stop()
            registry.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
