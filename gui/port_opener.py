"""The tray's "Open ports": every TCP port the running containers publish, opened in the
browser once it answers. A click starts a probe in a worker (quickrun's); the browser opens
when the port answers, and a port whose container stops or goes first is said in words in the
error bar. `open_ports` is pure: the container list in, the menu's lines out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmctl_gui.bridge import Bridge
from vmctl_gui.engine import ContainerRow
from vmctl_gui.jobs import Job
from vmctl_gui.quickrun import watch_port


@dataclass(frozen=True)
class OpenPort:
    container: str  # its name
    url: str

    @property
    def label(self) -> str:
        return f"{self.container}: {self.url}"


def open_ports(rows: list[ContainerRow], publish_address: str) -> list[OpenPort]:
    """The running containers' browsable ports, in the list's order."""
    return [
        OpenPort(row.name, port.url(publish_address))
        for row in rows
        if row.state == "running"
        for port in row.links
    ]


class PortOpener:
    """`changed()` is called when the ports or the waits change (the menu redraws)."""

    def __init__(
        self,
        bridge: Bridge,
        probe: Callable[[str], bool],
        open_url: Callable[[str], object],
        changed: Callable[[], None],
    ) -> None:
        self.bridge, self.probe, self.open_url, self.changed = bridge, probe, open_url, changed
        self.ports: list[OpenPort] = []
        self.waiting: dict[str, Job] = {}  # url → its probe

    def follow(self, rows: list[ContainerRow]) -> None:
        """The container list changed: a port gone while waited for is given up, in words."""
        self.ports = open_ports(rows, self.bridge.state.config.publish_address)
        listed = {port.url for port in self.ports}
        for url in [url for url in self.waiting if url not in listed]:
            self.waiting.pop(url).cancel()
            self.bridge.error.emit(f"open {url}", "its container stopped before the port "
                                   "answered: start it again, then open the port")  # fmt: skip
        self.changed()

    def open(self, url: str) -> None:
        """In the browser as soon as it answers (at once if it already does)."""
        if url not in self.waiting:
            self.waiting[url] = watch_port(self.bridge, url, self.probe, self._answered)
            self.changed()

    def _answered(self, url: str) -> None:
        if self.waiting.pop(url, None) is not None:
            self.open_url(url)
            self.changed()

    def line(self, port: OpenPort) -> str:
        waiting = " (waiting for it to answer…)" if port.url in self.waiting else ""
        return port.label + waiting
