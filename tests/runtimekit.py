"""Helpers for runtime tests: a busybox image in a store, a Runtime whose cgroups live under a
parent of their own (so leftovers can be counted), and `run` as `docker run` would."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import imagekit as ik
from agentkit import pull
from vmctl_agent.runtime import cgroups
from vmctl_agent.runtime.containers import Runtime
from vmctl_agent.runtime.index import Container
from vmctl_agent.runtime.spec import CreateOptions
from vmctl_agent.store.images import ImageStore


@dataclass
class Ran:
    container: Container
    stdout: str
    stderr: str

    @property
    def exit_code(self) -> int:
        return self.container.state.exit_code


def busybox_image() -> ik.Image:
    """Every applet this busybox has: tests use grep, seq, mknod, tty and friends."""
    layer = ik.busybox_layer(sorted(ik.busybox_applets() - {"busybox"}))
    return ik.build_image([layer], config={"Cmd": ["/bin/sh"], "Env": [ik.DEFAULT_PATH]})


def make_runtime(root: Path, registry, image_ref: str) -> Runtime:
    store = ImageStore(root / "image")
    pull(store, image_ref)
    parent = f"vmctl-test-{uuid.uuid4().hex[:8]}"
    return Runtime(root, store, cgroups.detect(parent=parent))


def run(rt: Runtime, image: str, *cmd: str, timeout: float = 30, **options) -> Ran:
    """Create, start, wait, read the logs; the container is left for the caller to inspect."""
    container = rt.create(CreateOptions(image=image, cmd=tuple(cmd) or None, **options))
    rt.start(container.id)
    container = rt.wait(container.id, timeout=timeout)
    out = b"".join(e.data for e in rt.logs(container.id) if e.stream == "stdout")
    err = b"".join(e.data for e in rt.logs(container.id) if e.stream == "stderr")
    return Ran(container, out.decode(), err.decode())


def leftovers(rt: Runtime, container_id: str) -> dict[str, list]:
    """What a removed container must not leave: mounts, cgroup dirs, processes, state."""
    with open("/proc/self/mountinfo") as f:
        mounts = [line for line in f if container_id in line]
    groups = [str(p) for p in rt.cgroups.path(container_id) if p.exists()]
    procs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if container_id[:12].encode() in f.read():
                    procs.append(int(pid))
        except OSError:
            continue
    state = [str(p) for p in rt.root.glob(f"*{container_id}*")]
    return {"mounts": mounts, "cgroups": groups, "processes": procs, "state": state}


NOTHING = {"mounts": [], "cgroups": [], "processes": [], "state": []}
