"""The quick start's demo: a loopback registry, a hello-world image, two pulls, a listing."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import imagekit as ik  # the test kit builds images without a docker daemon
from registry import Registry

HELLO = "echo 'Hello from Docker!'; echo 'This message shows that your installation works.'"


def agent(*args: str) -> None:
    cmd = [str(Path(sys.executable).parent / "vmctl-agent"), *args]
    print("$ vmctl-agent", " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def main() -> int:
    with (
        tempfile.TemporaryDirectory(prefix="vmctl-demo-") as tmp,
        Registry(Path(tmp) / "registry") as registry,
    ):
        image = ik.build_image([ik.busybox_layer()], config={"Cmd": ["/bin/sh", "-c", HELLO]})
        ik.RegistryClient(registry.url).push_image("library/hello-world", "latest", image)
        print(f"registry on {registry.url} holds library/hello-world:latest\n")
        root = str(Path(tmp) / "data")
        mirror = ["--data-root", root, "--registry-mirror", registry.url]
        agent("pull", *mirror, "hello-world")
        print()
        agent("pull", *mirror, "hello-world")
        print()
        agent("images", "--data-root", root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
