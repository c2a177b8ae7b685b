"""A fake engine for the desktop app's unit tests, injected through `Desktop(engine)`.

It behaves like the real one where the GUI can tell: calls block (a start waits for `gate`),
progress arrives while they run, streams block until closed from another thread, and every call
is recorded with the thread it ran on, so tests can assert nothing ran on the UI thread.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time

import docker.errors
import requests
from vmctl_gui.engine import (
    Cancelled,
    ContainerRow,
    DiskUsage,
    Engine,
    HistoryRow,
    ImageRow,
    LayerProgress,
    RunRequest,
    Version,
    VmState,
)
from vmctl_gui.vmctl_engine import VmctlEngine

from vmctl import config as vmconfig

VERSION = Version(
    client={"Version": "0.1.0", "API version": "1.47", "OS/Arch": "darwin/arm64"},
    server={
        "Version": "0.1.0",
        "API version": "1.47",
        "OS/Arch": "linux/amd64",
        "Kernel": "6.1.0-fake",
    },
)


class Stream:
    """Blocks like a socket read until items arrive or `close()` is called (any thread)."""

    def __init__(self, items=()) -> None:
        self.items: queue.Queue = queue.Queue()
        for item in items:
            self.items.put(item)
        self.closed = threading.Event()

    def put(self, item) -> None:
        self.items.put(item)

    def end(self) -> None:
        self.items.put(StopIteration)

    def close(self) -> None:
        self.closed.set()
        self.items.put(StopIteration)

    def __iter__(self):
        while True:
            item = self.items.get()
            if item is StopIteration:
                return
            yield item


class FakeEngine(Engine):
    def __init__(self, name: str = "default", state: str = "stopped") -> None:
        self.name = name
        self._state = VmState(name, state, config=vmconfig.VMConfig(cpus=1, memory_mib=1024))
        self.calls: list[tuple[str, str]] = []  # (method, thread name)
        self.gate = threading.Event()  # a start blocks until the test opens it
        self.gate.set()
        self.fail_stage: str | None = None  # a start fails at this stage
        self.errors: dict[str, Exception] = {}  # call ("state", "remove ID") → raised once
        self.container_rows: list[ContainerRow] = []
        self.image_rows: list[ImageRow] = []
        self.volume_rows: list = []  # VolumeRow
        self.network_rows: list = []  # NetworkRow
        self.event_stream = Stream()
        self.streams: list[Stream] = []
        self.saved: list[vmconfig.VMConfig] = []
        self.graces: list[float] = []  # of each stop
        self.inspected: dict[str, dict] = {}  # container id → docker inspect's JSON
        self.insides: dict[str, dict] = {}  # container id → the vendor endpoint's answer
        self.stats_streams: list[Stream] = []  # each opened stats stream, fed by the test
        self.stats_failures: list[Exception] = []  # raised by the next stats() calls, in order

    def _call(self, method: str) -> None:
        self.calls.append((method, threading.current_thread().name))
        error = self.errors.pop(method, None)
        if error is not None:
            raise error

    # ---- the VM ----

    def state(self) -> VmState:
        self._call("state")
        return self._state

    def start(self, say, cancelled) -> VmState:
        self._call("start")
        for stage in ("hypervisor", "ssh", "cloud-init", "deploy", "engine"):
            self._state = dataclasses.replace(self._state, state="starting", detail=stage)
            say(f"[{stage}]")
            if stage == "ssh":
                while not self.gate.wait(0.01):
                    if cancelled():
                        raise Cancelled
            if stage == self.fail_stage:
                self._state = dataclasses.replace(self._state, state="stopped", detail="")
                return dataclasses.replace(
                    self._state,
                    state="error",
                    detail="the guest's sshd did not answer in 300 s",
                    failed_stage=stage,
                    console="[    1.234] Kernel panic - not syncing: fake",
                )
        self._state = dataclasses.replace(
            self._state, state="running", detail="", accel="tcg", docker_host="unix:///fake"
        )
        return self._state

    def stop(self, say, grace: float = 60) -> VmState:
        self._call("stop")
        self.graces.append(grace)
        say("stopping")
        self._state = dataclasses.replace(self._state, state="stopped", detail="")
        return self._state

    def config(self) -> vmconfig.VMConfig:
        return self._state.config

    def save_config(self, config: vmconfig.VMConfig) -> None:
        self._call("save_config")
        self.saved.append(config)
        self._state = dataclasses.replace(self._state, config=config)

    # ---- the engine ----

    def version(self) -> Version:
        self._call("version")
        return VERSION

    def disk_usage(self) -> DiskUsage:
        self._call("disk_usage")
        return DiskUsage(20 << 30, 1_500_000_000, 12_000_000, 4096)

    def containers(self) -> list[ContainerRow]:
        self._call("containers")
        return list(self.container_rows)

    def container_action(self, container_id: str, action: str) -> None:
        self._call(f"{action} {container_id}")

    def logs(self, container_id: str, follow: bool = True, timestamps: bool = False) -> Stream:
        self._call(f"logs {container_id}{' timestamps' if timestamps else ''}")
        stamp = "2026-12-02T01:00:00.000000000Z " if timestamps else ""
        stream = Stream([f"{stamp}line one\n", f"{stamp}line two\n"])
        self.streams.append(stream)
        return stream

    def inspect_container(self, container_id: str) -> dict:
        self._call(f"inspect {container_id}")
        return self._known(self.inspected, container_id)

    def inside(self, container_id: str) -> dict:
        self._call(f"inside {container_id}")
        return self._known(self.insides, container_id)

    def stats(self, container_id: str) -> Stream:
        self._call(f"stats {container_id}")
        self._known(self.inspected, container_id)
        if self.stats_failures:
            raise self.stats_failures.pop(0)
        stream = Stream()
        self.stats_streams.append(stream)
        return stream

    @staticmethod
    def _known(table: dict[str, dict], container_id: str) -> dict:
        if container_id not in table:
            response = requests.Response()
            response.status_code = 404
            raise docker.errors.NotFound(
                "404 Client Error", response, explanation=f"No such container: {container_id}"
            )
        return table[container_id]

    def images(self) -> list[ImageRow]:
        self._call("images")
        return list(self.image_rows)

    def pull(self, ref: str, progress) -> None:
        self._call(f"pull {ref}")
        progress(LayerProgress("latest", f"Pulling from library/{ref}"))
        for layer in ("aaaaaaaaaaaa", "bbbbbbbbbbbb"):  # docker's short layer ids
            progress(LayerProgress(layer, "Pulling fs layer"))
            for current in (100, 200):
                progress(LayerProgress(layer, "Downloading", current, 200))
                time.sleep(0.01)
            progress(LayerProgress(layer, "Pull complete"))
        self.image_rows.append(ImageRow("sha256:" + "c" * 64, ref, "latest", 4_400_000, 0))

    def volumes(self) -> list:
        self._call("volumes")
        return list(self.volume_rows)

    def networks(self) -> list:
        self._call("networks")
        return list(self.network_rows)

    def remove_volume(self, name: str) -> None:
        self._call(f"remove_volume {name}")

    def history(self, image: str) -> list:
        self._call(f"history {image}")
        while not self.gate.wait(0.01):  # a slow engine: the test holds it here
            pass
        return [HistoryRow("sha256:" + "e" * 64, 0, "/bin/sh -c #(nop) CMD [\"sh\"]", 0),
                HistoryRow("<missing>", 0, "ADD rootfs.tar /", 4_400_000)]  # fmt: skip

    def build(self, request) -> Stream:
        self._call(f"build {request.title}")
        stream = Stream([{"stream": "Step 1/2 : FROM busybox\n"}])
        self.streams.append(stream)
        return stream

    def push(self, ref: str, progress) -> None:
        self._call(f"push {ref}")

    def prune_images(self, every: bool):
        self._call(f"prune_images {every}")

    def remove_image(self, image_id: str) -> None:
        self._call(f"remove_image {image_id}")

    def run(self, request: RunRequest, progress) -> Stream:
        self._call(f"run {request.title}")
        progress(LayerProgress("aaaaaaaaaaaa", "Pull complete"))
        stream = Stream([f"hello from {request.image}\n"])
        self.streams.append(stream)
        return stream

    def events(self) -> Stream:
        self._call("events")
        return self.event_stream

    def ssh_command(self) -> list[str]:
        return ["vmctl", "ssh", "--name", self.name]

    def shell_command(self, container_id: str) -> list[str]:
        return ["docker", "exec", "-it", container_id, "sh"]


class AgentOnHost(VmctlEngine):
    """The VM half is not under test: the engine's state is "running"."""

    def state(self) -> VmState:
        return VmState(self.name, "running", config=self.config(), docker_host=self.docker_host)
