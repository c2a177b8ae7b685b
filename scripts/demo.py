"""The quick start's main job: boot the default VM and show the docker CLI talking to its engine.

1. `vmctl image build`: the guest image, made offline with mmdebstrap (cached after the first
   time; these machines cannot download Debian's cloud image).
2. A real OCI registry on this host's loopback stands in for Docker Hub, as a registry mirror
   (what a Docker Desktop user configures), holding a small hello-world image built from
   busybox. The guest reaches it at 10.0.2.2, QEMU's address for the host.
3. `vmctl start`: boots the VM, provisions it, deploys the engine, forwards docker.sock.
4. `vmctl version`: the docker-version-style summary, Server `linux/amd64`.
5. `docker run hello-world` twice through the `vmctl` docker context: the first pulls.

The VM keeps running afterwards (`vmctl stop` stops it); the demo's mirror is dropped from
its configuration, since the registry goes away with the demo.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from agentserver import push_test_images  # the test kit's image builder
from registry import Registry

BIN = Path(sys.executable).parent


def step(*argv: str) -> None:
    print(f"$ {' '.join(argv)}", flush=True)
    subprocess.run(argv, check=True)
    print(flush=True)


def main() -> int:
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    from vmctl import config as vmconfig
    from vmctl import image
    from vmctl import paths as vmpaths

    print("$ vmctl image build", flush=True)
    built = image.build(progress=lambda message: print(f"  {message}", flush=True))
    print(f"{built.disk}\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="vmctl-demo-") as tmp:
        registry = Registry(Path(tmp) / "registry")
        try:
            push_test_images(registry)
            mirror = f"10.0.2.2:{registry.port}"
            step(
                "vmctl", "start", "--image", str(built.disk),
                "--registry-mirror", f"http://{mirror}", "--insecure-registry", mirror,
            )  # fmt: skip
            step("vmctl", "version")
            step("vmctl", "docker-context")
            docker = shutil.which("docker") or "docker"
            step(docker, "--context", "vmctl", "run", "hello-world")
            step(docker, "--context", "vmctl", "run", "--rm", "hello-world")
        finally:
            registry.stop()
            paths = vmpaths.vm()
            if paths.config.exists():
                config = vmconfig.load(paths.config)
                keep = config.replace(registry_mirrors=(), insecure_registries=())
                vmconfig.save(keep, paths.config)
    print("The VM keeps running: `docker --context vmctl ps`, `vmctl ssh`, `vmctl stop`.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
