"""What the desktop app asks of the VM and its engine: the seam, and the rows it answers with.

`Engine` is the seam the GUI is built against: the window, the tray and the workers call only
these methods, so tests inject a fake through the constructor (httpx's MockTransport idea) and
the real `VmctlEngine` (gui.vmctl_engine) wraps vmctl's public API plus docker-py on the VM's
forwarded docker.sock: the same door the docker CLI uses.

Every method may block (a VM start takes minutes under emulation): callers run them in a
worker (gui.jobs), never on the UI thread. Long operations take `progress` callbacks and a
`cancelled` check; streams are iterators the caller closes to stop them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from vmctl_gui.archive import ArchiveStream

from vmctl import config as vmconfig

Say = Callable[[str], None]


class Cancelled(Exception):
    """The user cancelled a job; nothing is reported as an error."""


@dataclass(frozen=True)
class VmState:
    """What the Engine view shows: vmctl's derived status, plus the failure of the last start."""

    name: str
    state: str  # not created | stopped | starting | running | degraded | error
    detail: str = ""  # the stage while starting; what does not answer when degraded
    config: vmconfig.VMConfig = field(default_factory=vmconfig.VMConfig)
    accel: str | None = None
    docker_host: str = ""
    failed_stage: str = ""  # set with state "error"
    console: str = ""  # the console tail of a failed start


@dataclass(frozen=True)
class Version:
    """`docker version`'s two halves, side by side."""

    client: dict[str, str]
    server: dict[str, str]


@dataclass(frozen=True)
class DiskUsage:
    capacity: int  # bytes the guest's disk may grow to
    host_bytes: int  # what the disk image takes on the host now
    images_bytes: int  # what the engine's images take in the guest
    containers_bytes: int


LOCAL_ADDRESSES = ("127.0.0.1", "0.0.0.0", "::", "::1", "")


@dataclass(frozen=True)
class PublishedPort:
    """A port the engine publishes (`docker ps`: 0.0.0.0:8080->80/tcp). The host agent
    listens on the same port number on the user's machine, at the VM's publish address
    unless the run named an address of its own."""

    host_ip: str
    host_port: int
    container_port: int
    proto: str = "tcp"

    def url(self, publish_address: str = "127.0.0.1") -> str:
        """Where a browser on the user's machine reaches it: http://localhost:PORT."""
        address = self.host_ip if self.host_ip not in ("", "0.0.0.0", "::") else publish_address
        host = "localhost" if address in LOCAL_ADDRESSES else address
        return f"http://{f'[{host}]' if ':' in host else host}:{self.host_port}"


@dataclass(frozen=True)
class ContainerRow:
    id: str
    name: str
    image: str
    command: str
    state: str  # created | running | exited | ...
    status: str  # Docker's words: "Up 3 minutes", "Exited (0) 2 seconds ago"
    created: int  # unix time
    ports: str
    health: str = ""  # starting | healthy | unhealthy; "" without a healthcheck
    published: tuple[PublishedPort, ...] = ()

    @property
    def links(self) -> tuple[PublishedPort, ...]:
        """The TCP ports a browser can open, each once (docker lists IPv4 and IPv6 apart)."""
        seen: dict[int, PublishedPort] = {}
        for port in self.published:
            if port.proto == "tcp":
                seen.setdefault(port.host_port, port)
        return tuple(seen.values())


@dataclass(frozen=True)
class ImageRow:
    id: str
    repository: str
    tag: str
    size: int
    created: int


@dataclass(frozen=True)
class HistoryRow:
    """A line of `docker history`: the step that made a layer (or changed only the config)."""

    id: str  # the image made at that step, or "<missing>"
    created: int  # unix time
    created_by: str
    size: int
    comment: str = ""


@dataclass(frozen=True)
class BuildRequest:
    """`docker build`'s inputs the app offers: a folder, its Dockerfile, tags, build args."""

    context: str  # the folder sent as the build context
    dockerfile: str = "Dockerfile"  # its path inside the context
    tags: tuple[str, ...] = ()
    args: tuple[tuple[str, str], ...] = ()  # --build-arg NAME=VALUE

    @property
    def title(self) -> str:
        return ", ".join(self.tags) or self.context


@dataclass(frozen=True)
class VolumeRow:
    """A volume as `docker system df -v` sees it: its size, and who mounts it."""

    name: str
    driver: str
    mountpoint: str
    created: str
    size: int  # bytes; -1 when the engine did not measure it
    containers: tuple[str, ...]  # the names of the containers that mount it

    @property
    def anonymous(self) -> bool:
        """Docker names an anonymous volume with 64 hex digits (`docker run -v /data`)."""
        return len(self.name) == 64 and all(c in "0123456789abcdef" for c in self.name)


@dataclass(frozen=True)
class NetworkRow:
    id: str
    name: str
    driver: str
    subnet: str
    gateway: str
    containers: tuple[str, ...]  # "name (address)" of each container attached

    @property
    def builtin(self) -> bool:
        """bridge, host and none come with the engine and cannot be removed."""
        return self.name in ("bridge", "host", "none")


@dataclass(frozen=True)
class Pruned:
    """What a prune removed and the bytes it gave back."""

    removed: tuple[str, ...]
    reclaimed: int


@dataclass(frozen=True)
class LayerProgress:
    """One line of a pull's progress: a layer's id, Docker's status words, and byte counts."""

    layer: str
    status: str
    current: int = 0
    total: int = 0


@dataclass(frozen=True)
class RunRequest:
    image: str
    command: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # KEY=VALUE
    ports: tuple[str, ...] = ()  # HOST:CONTAINER[/proto]
    folders: tuple[str, ...] = ()  # host folders bound at the same path (-v PATH:PATH)

    @property
    def title(self) -> str:
        ports = f" (ports {', '.join(self.ports)})" if self.ports else ""
        folders = f" (folder {', '.join(self.folders)})" if self.folders else ""
        return " ".join((self.image, *self.command)) + ports + folders

    @property
    def published(self) -> tuple[PublishedPort, ...]:
        """The TCP ports it publishes, as the browser will find them."""
        found = []
        for spec in self.ports:
            host, _, inside = spec.partition(":")
            number, _, proto = inside.partition("/")
            if proto in ("", "tcp"):
                found.append(PublishedPort("", int(host), int(number)))
        return tuple(found)


class Engine:
    """The calls the GUI makes. Subclasses: VmctlEngine here, a fake in the tests."""

    name: str

    def state(self) -> VmState:
        raise NotImplementedError

    def start(self, say: Say, cancelled: Callable[[], bool]) -> VmState:
        raise NotImplementedError

    def stop(self, say: Say, grace: float = 60) -> VmState:
        """Shut the guest down, powering it off after `grace` seconds."""
        raise NotImplementedError

    def config(self) -> vmconfig.VMConfig:
        raise NotImplementedError

    def save_config(self, config: vmconfig.VMConfig) -> None:
        raise NotImplementedError

    def version(self) -> Version:
        raise NotImplementedError

    def disk_usage(self) -> DiskUsage:
        raise NotImplementedError

    def containers(self) -> list[ContainerRow]:
        raise NotImplementedError

    def container_action(self, container_id: str, action: str) -> None:
        raise NotImplementedError

    def logs(
        self, container_id: str, follow: bool = True, timestamps: bool = False
    ) -> Iterator[str]:
        raise NotImplementedError

    def inspect_container(self, container_id: str) -> dict:
        """`docker inspect`'s JSON."""
        raise NotImplementedError

    def stats(self, container_id: str) -> Iterator[dict]:
        """The stats stream (one message a second) until the container stops; closable."""
        raise NotImplementedError

    def inside(self, container_id: str) -> dict:
        """The engine's vendor endpoint /vmctl/containers/{id}/inside (README, API notes)."""
        raise NotImplementedError

    def archive(self, container_id: str, path: str) -> ArchiveStream:
        """GET /containers/{id}/archive?path= (`docker cp`'s door) as it streams; closable
        from another thread, which ends the engine's side too."""
        raise NotImplementedError

    def images(self) -> list[ImageRow]:
        raise NotImplementedError

    def history(self, image: str) -> list[HistoryRow]:
        """`docker history`, newest step first."""
        raise NotImplementedError

    def build(self, request: BuildRequest) -> Iterator[dict]:
        """POST /build's JSON messages as they come (closable: closing it cancels the build,
        as the engine stops a build whose client went away)."""
        raise NotImplementedError

    def push(self, ref: str, progress: Callable[[LayerProgress], None]) -> None:
        raise NotImplementedError

    def prune_images(self, every: bool) -> Pruned:
        """Dangling images, or `every` image no container uses (`docker image prune -a`)."""
        raise NotImplementedError

    def volumes(self) -> list[VolumeRow]:
        raise NotImplementedError

    def create_volume(self, name: str) -> str:
        """A local volume (`docker volume create [NAME]`); its name (the engine's if none)."""
        raise NotImplementedError

    def remove_volume(self, name: str) -> None:
        raise NotImplementedError

    def prune_volumes(self, every: bool) -> Pruned:
        """Unused volumes: the anonymous ones, or `every` unused one (`docker volume prune -a`)."""
        raise NotImplementedError

    def networks(self) -> list[NetworkRow]:
        raise NotImplementedError

    def create_network(self, name: str, subnet: str = "") -> str:
        """A bridge network (`docker network create [--subnet CIDR] NAME`); its id."""
        raise NotImplementedError

    def remove_network(self, network_id: str) -> None:
        raise NotImplementedError

    def pull(self, ref: str, progress: Callable[[LayerProgress], None]) -> None:
        raise NotImplementedError

    def remove_image(self, image_id: str) -> None:
        raise NotImplementedError

    def run(self, request: RunRequest, progress: Callable[[LayerProgress], None]) -> Iterator[str]:
        """Pull if needed, run, yield the output; the last item is '[exited with code N]'."""
        raise NotImplementedError

    def events(self) -> Iterator[dict]:
        raise NotImplementedError

    def ssh_command(self) -> list[str]:
        """argv of an interactive shell in the guest (`vmctl ssh`)."""
        raise NotImplementedError

    def shell_command(self, container_id: str) -> list[str]:
        """argv of an interactive shell in a container (`docker exec -it ID sh`)."""
        raise NotImplementedError


ACTIONS = ("start", "stop", "restart", "remove")
