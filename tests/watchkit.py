"""A real inotify watcher for tests (tests/tools/inotifywatch.c, built static with the host's
gcc, since Debian's busybox-static has no inotifyd), and an image carrying it beside busybox."""

from __future__ import annotations

import queue
import subprocess
import threading
from pathlib import Path

import imagekit as ik

SOURCE = Path(__file__).parent / "tools" / "inotifywatch.c"


def build(dest: Path) -> Path:
    """The watcher, static (it runs in a busybox container too); gcc's error if it fails."""
    done = subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(dest), str(SOURCE)], capture_output=True, text=True
    )
    assert done.returncode == 0, f"gcc: {done.stderr}"
    return dest


def push_image(registry, binary: Path, repo: str = "library/inotify") -> None:
    """busybox with the watcher at /bin/inotifywatch, as docker.io's `inotify` on the mirror."""
    layer = ik.tar_bytes([ik.file("bin/inotifywatch", binary.read_bytes(), mode=0o755)])
    image = ik.build_image([ik.busybox_layer(), layer], config={"Cmd": ["/bin/sh"]})
    ik.RegistryClient(registry.url).push_image(repo, "latest", image)


class Lines:
    """A process's output lines, read by a thread (select on a buffered pipe misses lines
    already buffered)."""

    def __init__(self, stream) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self.queue.put(line.rstrip("\n"))

    def next(self, timeout: float = 120) -> str:
        """The next line; `timeout` only bounds a failure (a loaded host is slow)."""
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the watcher printed nothing within {timeout:.0f} s") from None
