"""The engine behind the API: one image store, one runtime, the networks, the volumes, one
registry client."""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from dataclasses import dataclass, field

from vmctl_agent.api.events import EventBus
from vmctl_agent.api.listing import ListCache
from vmctl_agent.config import AgentConfig
from vmctl_agent.errors import AgentError
from vmctl_agent.network.endpoints import Endpoints
from vmctl_agent.network.networks import Networks
from vmctl_agent.runtime.containers import Runtime
from vmctl_agent.runtime.execs import ExecProcess
from vmctl_agent.store.auth import Credentials, docker_config_credentials
from vmctl_agent.store.images import ImageStore
from vmctl_agent.store.manifest import Platform
from vmctl_agent.store.pull import Puller
from vmctl_agent.store.registry import RegistryClient, RegistryConfig
from vmctl_agent.volumes.store import VolumeStore
from vmctl_agent.volumes.usage import Volumes


@dataclass
class ExecRecord:
    """An exec as `docker exec` sees it: created, then started once."""

    id: str
    container_id: str
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    user: str
    working_dir: str
    tty: bool
    attach_stdin: bool
    attach_stdout: bool
    attach_stderr: bool
    detach_keys: str = ""
    process: ExecProcess | None = None
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    done: threading.Event = field(default_factory=threading.Event)


class Engine:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.images = ImageStore(config.data_root / "image")
        self.runtime = Runtime(config.data_root, self.images)
        self.networks = Networks(config.data_root / "network", default_bridge=config.default_bridge)
        self.endpoints = Endpoints(self.networks, self.runtime, config.host_gateway_ip)
        self.network_problem = ""
        volumes = VolumeStore(config.data_root / "volumes")
        self.volumes = Volumes(volumes, self.runtime, config.shared_paths)
        self.execs: dict[str, ExecRecord] = {}
        self.events = EventBus()
        self.container_list = ListCache()
        self.started = time.time()
        self._saved_credentials = docker_config_credentials()

    def restore_networks(self) -> None:
        """Bridges and rules made again from the records (the agent starts, or the VM
        rebooted), and what ended while the agent was away undone. A kernel or a VM that
        cannot make them (no iptables) leaves the engine serving, saying so in `docker info`
        and in each start that needs a bridge."""
        try:
            self.networks.restore()
            self.endpoints.restore()
        except (AgentError, OSError) as e:
            self.network_problem = f"bridge networking is unavailable: {e}"
            self.networks.problem = self.network_problem
            print(f"vmctl-agent: {self.network_problem}", file=sys.stderr)

    def puller(self, auth_header: str = "", platform: Platform | None = None) -> Puller:
        """A puller using X-Registry-Auth when the client sent it, else docker's config; for
        `platform` when one was asked for."""
        return Puller(self.images, self.registry_client(auth_header), platform=platform)

    def registry_client(self, auth_header: str = "") -> RegistryClient:
        """A registry client with X-Registry-Auth's credentials, else docker's config's."""
        credentials = _registry_auth(auth_header)
        lookup = (lambda host: credentials) if credentials else self._saved_credentials
        return RegistryClient(RegistryConfig.of(self.config), credentials=lookup)


def _registry_auth(header: str) -> Credentials | None:
    """X-Registry-Auth: base64url JSON {"username", "password"} as the docker CLI sends it."""
    if not header:
        return None
    try:
        padded = header + "=" * (-len(header) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict) or not data.get("username"):
        return None
    return Credentials(str(data["username"]), str(data.get("password", "")))
