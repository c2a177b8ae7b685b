"""`VmctlEngine`, the real engine behind the GUI's seam (gui.engine): vmctl's public API for
the VM (`vmctl.vm`, `vmctl.config`), docker-py on the VM's forwarded docker.sock for the rest,
the same door the docker CLI uses."""

from __future__ import annotations

import contextlib
import platform
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from vmctl_gui import building, listings, runspec
from vmctl_gui.archive import ArchiveStream
from vmctl_gui.engine import (
    ACTIONS,
    BuildRequest,
    Cancelled,
    ContainerRow,
    DiskUsage,
    Engine,
    HistoryRow,
    ImageRow,
    LayerProgress,
    NetworkRow,
    Pruned,
    RunRequest,
    Say,
    Version,
    VmState,
    VolumeRow,
)
from vmctl_gui.streams import JsonStream, LineStream

import vmctl
from vmctl import config as vmconfig
from vmctl import paths as vmpaths
from vmctl import vm
from vmctl.errors import VmctlError

_CLIENT_LOCK = threading.Lock()


class VmctlEngine(Engine):
    """The real engine: vmctl for the VM, docker-py on its docker.sock for the rest.

    `docker_host` overrides where the engine is (tests point it at an agent on the host)."""

    def __init__(self, name: str = vmpaths.DEFAULT_NAME, docker_host: str | None = None) -> None:
        self.name = name
        self._docker_host = docker_host
        self._client = None

    # ---- the VM ----

    def state(self) -> VmState:
        status = vm.status(self.name)
        return VmState(
            self.name,
            status.state,
            status.detail,
            status.config,
            status.accel,
            self.docker_host,
        )

    def start(self, say: Say, cancelled: Callable[[], bool]) -> VmState:
        def report(message: str) -> None:
            if cancelled():
                raise Cancelled
            say(message)

        try:
            vm.start(self.name, progress=report)
        except vm.StageFailed as e:
            return VmState(
                self.name,
                "error",
                e.reason,
                self.config(),
                failed_stage=e.stage,
                console=e.console,
            )
        return self.state()

    def stop(self, say: Say, grace: float = 60) -> VmState:
        vm.stop(self.name, timeout=grace, progress=say)
        self._client = None
        return self.state()

    def config(self) -> vmconfig.VMConfig:
        return vmconfig.load(vmpaths.vm(self.name).config)

    def save_config(self, config: vmconfig.VMConfig) -> None:
        vmconfig.save(config, vmpaths.vm(self.name).config)

    @property
    def docker_host(self) -> str:
        return self._docker_host or vm.docker_host(vmpaths.vm(self.name))

    # ---- the engine, through docker-py ----

    @property
    def client(self):
        """Made once, under a lock: workers ask for it at once when the engine comes up, and
        docker-py imported by two threads at the same time fails half-initialised."""
        with _CLIENT_LOCK:
            if self._client is None:
                import docker
                import docker.types.daemon

                self._client = docker.DockerClient(base_url=self.docker_host, timeout=60)
            return self._client

    def version(self) -> Version:
        server = self.client.version()
        engine = next(
            (c for c in server.get("Components", []) if c.get("Name") == "Engine"), server
        )
        import docker

        return Version(
            client={
                "Version": vmctl.__version__,
                "API version": self.client.api.api_version,
                "docker-py": docker.__version__,
                "OS/Arch": client_platform(),
            },
            server={
                "Version": engine.get("Version", server.get("Version", "")),
                "API version": server.get("ApiVersion", ""),
                "Kernel": server.get("KernelVersion", ""),
                "OS/Arch": f"{server.get('Os', '')}/{server.get('Arch', '')}",
            },
        )

    def disk_usage(self) -> DiskUsage:
        df = self.client.df()
        disk = vmpaths.vm(self.name).disk
        try:
            st = disk.stat()
            host = getattr(st, "st_blocks", 0) * 512 or st.st_size
        except FileNotFoundError:
            host = 0
        return DiskUsage(
            capacity=self.config().disk_gib << 30,
            host_bytes=host,
            images_bytes=sum(i.get("Size", 0) for i in df.get("Images") or []),
            containers_bytes=sum(c.get("SizeRw", 0) or 0 for c in df.get("Containers") or []),
        )

    def containers(self) -> list[ContainerRow]:
        return [listings.container_row(c) for c in self.client.api.containers(all=True)]

    def container_action(self, container_id: str, action: str) -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown container action {action!r}")
        api = self.client.api
        if action == "remove":
            api.remove_container(container_id, force=True)
        else:
            getattr(api, f"{action}")(container_id)

    def logs(self, container_id: str, follow: bool = True, timestamps: bool = False) -> LineStream:
        api = self.client.api
        return LineStream(api.logs(container_id, stream=True, follow=follow, timestamps=timestamps))

    def inspect_container(self, container_id: str) -> dict:
        return self.client.api.inspect_container(container_id)

    def stats(self, container_id: str) -> JsonStream:
        """Through docker-py's own stream type: its `stats()` gives a generator that another
        thread cannot close while it blocks in a read."""
        api = self.client.api
        from docker.types.daemon import CancellableStream

        url = api._url("/containers/{0}/stats", container_id)
        response = api._get(url, params={"stream": True}, stream=True)
        api._raise_for_status(response)
        return JsonStream(CancellableStream(api._stream_helper(response, decode=True), response))

    def inside(self, container_id: str) -> dict:
        api = self.client.api
        return api._result(api._get(api._url("/vmctl/containers/{0}/inside", container_id)), True)

    def archive(self, container_id: str, path: str) -> ArchiveStream:
        """Read as the answer's raw stream: docker-py's get_archive gives a generator that
        another thread cannot close while it blocks in a read."""
        api = self.client.api
        from docker.types.daemon import CancellableStream

        url = api._url("/containers/{0}/archive", container_id)
        response = api._get(url, params={"path": path}, stream=True)
        api._raise_for_status(response)
        closer = CancellableStream(iter(()), response)
        return ArchiveStream(response.raw, response.headers, closer.close)

    def images(self) -> list[ImageRow]:
        rows = []
        for image in self.client.api.images():
            tags = image.get("RepoTags") or ["<none>:<none>"]
            for tag in tags:
                repository, _, name = tag.rpartition(":")
                rows.append(
                    ImageRow(
                        image["Id"],
                        repository,
                        name,
                        image.get("Size", 0),
                        image.get("Created", 0),
                    )
                )
        return rows

    def history(self, image: str) -> list[HistoryRow]:
        return [listings.history_row(r) for r in self.client.api.history(image)]

    def build(self, request: BuildRequest) -> JsonStream:
        """docker-py's own stream type, so another thread can close it mid-read (cancel)."""
        api = self.client.api
        from docker.types.daemon import CancellableStream

        with building.build_context(request) as context:
            response = api._post(api._url("/build"), data=context, stream=True,
                                 params=building.build_params(request),
                                 headers={"Content-Type": "application/tar"})  # fmt: skip
        api._raise_for_status(response)
        return JsonStream(CancellableStream(api._stream_helper(response, decode=True), response))

    def push(self, ref: str, progress: Callable[[LayerProgress], None]) -> None:
        import docker

        repository, tag = _split_ref(ref)
        try:
            _follow_progress(self.client.api.push(repository, tag, stream=True, decode=True),
                             progress)  # fmt: skip
        except docker.errors.NotFound as e:
            if "page not found" not in str(e.explanation):
                raise
            raise VmctlError(f"the engine answered {e.explanation}: it has no push yet "
                             "(POST /images/{name}/push)") from None  # fmt: skip

    def prune_images(self, every: bool) -> Pruned:
        answer = self.client.api.prune_images({"dangling": not every})
        return listings.pruned(answer, "ImagesDeleted")

    def volumes(self) -> list[VolumeRow]:
        api = self.client.api
        return listings.volume_rows(api.df().get("Volumes") or [], api.containers(all=True))

    def create_volume(self, name: str) -> str:
        return self.client.api.create_volume(name or None)["Name"]

    def remove_volume(self, name: str) -> None:
        self.client.api.remove_volume(name)

    def prune_volumes(self, every: bool) -> Pruned:
        answer = self.client.api.prune_volumes({"all": "true"} if every else None)
        return listings.pruned(answer, "VolumesDeleted")

    def networks(self) -> list[NetworkRow]:
        """Each listed network, inspected; one removed between the two calls is left out."""
        import docker

        api, rows = self.client.api, []
        for listed in api.networks():
            with contextlib.suppress(docker.errors.NotFound):
                rows.append(listings.network_row(api.inspect_network(listed["Id"])))
        return rows

    def create_network(self, name: str, subnet: str = "") -> str:
        types = docker_types()
        ipam = types.IPAMConfig(pool_configs=[types.IPAMPool(subnet=subnet)]) if subnet else None
        return self.client.api.create_network(name, driver="bridge", ipam=ipam)["Id"]

    def remove_network(self, network_id: str) -> None:
        self.client.api.remove_network(network_id)

    def pull(self, ref: str, progress: Callable[[LayerProgress], None]) -> None:
        repository, tag = _split_ref(ref)
        _follow_progress(self.client.api.pull(repository, tag, stream=True, decode=True), progress)

    def remove_image(self, image_id: str) -> None:
        self.client.api.remove_image(image_id)

    def run(self, request: RunRequest, progress: Callable[[LayerProgress], None]) -> LineStream:
        import docker

        try:
            self.client.api.inspect_image(request.image)
        except docker.errors.ImageNotFound:
            self.pull(request.image, progress)
        api = self.client.api
        container = api.create_container(
            request.image,
            command=list(request.command) or None,
            environment=list(request.env),
            ports=runspec.exposed_ports(request.ports) or None,
            host_config=api.create_host_config(
                port_bindings=runspec.port_bindings(request.ports),
                binds=runspec.binds(request.folders),
            ),
        )
        warnings = [f"WARNING: {w}\n" for w in container.get("Warnings") or []]
        return self._follow(container["Id"], warnings)

    def _follow(self, container_id: str, warnings: list[str]) -> LineStream:
        api = self.client.api

        def remove() -> None:
            api.remove_container(container_id, force=True)

        try:
            api.start(container_id)
            logs = api.logs(container_id, stream=True, follow=True)
        except BaseException:
            remove()
            raise
        tail = lambda: f"[exited with code {api.wait(container_id)['StatusCode']}]\n"  # noqa: E731
        return LineStream(logs, tail=tail, cleanup=remove, first=warnings)

    def events(self) -> Iterator[dict]:
        return self.client.api.events(decode=True)

    def ssh_command(self) -> list[str]:
        return [*vmctl_command(), "ssh", "--name", self.name]

    def shell_command(self, container_id: str) -> list[str]:
        docker_cli = _which("docker")
        if docker_cli is None:
            raise VmctlError(
                "Open shell needs the docker command-line client: install it (on macOS: brew "
                "install docker; on Windows: the Docker CLI), then try again"
            )
        return [docker_cli, "--host", self.docker_host, "exec", "-it", container_id, "sh"]


# ---- helpers ---------------------------------------------------------------------------------


GO_OS = {"darwin": "darwin", "win32": "windows", "linux": "linux"}
GO_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def client_platform() -> str:
    """This host as Go names it, like the docker CLI's OS/Arch: darwin/arm64, windows/amd64."""
    machine = platform.machine().lower()
    return f"{GO_OS.get(sys.platform, sys.platform)}/{GO_ARCH.get(machine, machine)}"


def vmctl_command() -> list[str]:
    """How to run the `vmctl` CLI from a terminal: the packaged app ships it beside itself."""
    if getattr(sys, "frozen", False):
        suffix = ".exe" if sys.platform == "win32" else ""
        return [str(Path(sys.executable).with_name(f"vmctl{suffix}"))]
    return [sys.executable, "-m", "vmctl.cli"]


def _follow_progress(messages: Iterator[dict], progress: Callable[[LayerProgress], None]) -> None:
    """A pull's or a push's JSON progress; an error in the stream is raised in its words."""
    for message in messages:
        if "error" in message:
            raise VmctlError(message["error"])
        detail = message.get("progressDetail") or {}
        progress(LayerProgress(message.get("id", ""), message.get("status", ""),
                               detail.get("current", 0), detail.get("total", 0)))  # fmt: skip


def docker_types():
    """docker-py's request types, imported when first used (docker-py loads slowly)."""
    import docker.types

    return docker.types


def _which(program: str) -> str | None:
    import shutil

    return shutil.which(program)


def _split_ref(ref: str) -> tuple[str, str]:
    """docker-py wants repository and tag apart; a digest stays in the repository."""
    if "@" in ref:
        return ref, ""
    name, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return ref, "latest"
