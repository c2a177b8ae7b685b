"""Changes to a container in place: pause and unpause (the cgroup freezer, v1 and v2), rename,
and update of a running container's limits and restart policy. Paused is never stored: it is
read from the freezer each time. A rename or update rewrites config.json whole (atomically and
durably), after the change is made; an update that the kernel refuses changes nothing.
"""

from __future__ import annotations

import dataclasses

from vmctl_agent import atomic
from vmctl_agent.errors import AgentError, CgroupError
from vmctl_agent.runtime import cgroupfs, records
from vmctl_agent.runtime.containerconfig import ContainerConfig
from vmctl_agent.runtime.index import Container, ContainerConflict, ContainerIndex
from vmctl_agent.runtime.restarts import RestartPolicy
from vmctl_agent.runtime.spec import InvalidSpec


class NotPaused(AgentError):
    """dockerd answers this one with a 500, in these words."""


@dataclasses.dataclass(frozen=True)
class Update:
    """What `docker update` may change; None leaves a field as it is."""

    memory: int | None = None
    nano_cpus: int | None = None
    cpu_shares: int | None = None
    pids_limit: int | None = None
    restart_policy: RestartPolicy | None = None


class ContainerChanges(ContainerIndex):
    """The runtime's verbs that change a container without starting or stopping it."""

    def pause(self, ref: str) -> Container:
        container = self.get(ref)
        self._check_running(container)
        if container.paused:
            raise ContainerConflict(f"Container {container.id} is already paused")
        self.cgroups.freeze(container.id)
        self.changed()
        return container

    def unpause(self, ref: str) -> Container:
        container = self.get(ref)
        if not container.paused:
            raise NotPaused(f"Container {container.id} is not paused")
        self.cgroups.thaw(container.id)
        self.changed()
        return container

    def _check_running(self, container: Container) -> None:
        if container.restarting:
            raise ContainerConflict(
                f"Container {container.id} is restarting, wait until the container is running"
            )
        if not container.state.running:
            raise ContainerConflict(f"Container {container.id} is not running")

    def rename(self, ref: str, wanted: str) -> str:
        """The container's old name; dockerd's checks (a taken name: 409, as at create)."""
        container = self.get(ref)
        if not wanted:
            raise InvalidSpec("Neither old nor new names may be empty")
        if wanted.lstrip("/") == container.name:
            raise InvalidSpec("Renaming a container with the same name as its current name")
        with atomic.locked(self.root / ".lock"):  # as create: one name, one container
            name = self._new_name(wanted)
            self._rewrite(container, name=name)
        return container.name

    def update(self, ref: str, change: Update) -> Container:
        """New limits, applied to the running container's cgroup first: if the kernel refuses
        them, nothing changes (they are applied again as they were)."""
        container = self.get(ref)
        _check_policy(container, change.restart_policy)
        limits = _new_limits(container.config.cgroup_limits, change)
        limits.check(cgroupfs.host_cpus())
        with self._locked(container):
            container = self._load(container.directory)
            if container.state.running:
                self._apply_limits(container, limits)
            options = _options(container.config.options, change)
            self._rewrite(container, limits=dataclasses.asdict(limits), options=options)
        return self.get(container.id)

    def _apply_limits(self, container: Container, limits: cgroupfs.Limits) -> None:
        try:
            self.cgroups.create(container.id, limits)
        except CgroupError as e:
            self.cgroups.create(container.id, container.config.cgroup_limits)
            raise InvalidSpec(f"Cannot update container {container.id}: {e}") from None

    def _rewrite(self, container: Container, **fields) -> None:
        data = {**records.read_config(container.directory), **fields}
        atomic.write_json(container.directory / "config.json", data)
        self._configs[container.id] = ContainerConfig.from_json(data)
        self.changed()


def _check_policy(container: Container, policy: RestartPolicy | None) -> None:
    if policy is None:
        return
    policy.check()
    if container.config.create_options.auto_remove and policy.name != "no":
        raise InvalidSpec(
            "Restart policy cannot be updated because AutoRemove is enabled for the container"
        )


def _new_limits(old: cgroupfs.Limits, change: Update) -> cgroupfs.Limits:
    pids = change.pids_limit
    return dataclasses.replace(
        old,
        memory=old.memory if change.memory is None else change.memory or None,
        cpus=old.cpus if change.nano_cpus is None else (change.nano_cpus / 1e9 or None),
        cpu_shares=old.cpu_shares if change.cpu_shares is None else change.cpu_shares or None,
        pids=old.pids if pids is None else (pids if pids > 0 else None),
    )


def _options(options: dict, change: Update) -> dict:
    """The create options as inspect shows them, with the update's values."""
    updated = dict(options)
    for key in ("memory", "nano_cpus", "pids_limit"):
        if getattr(change, key) is not None:
            updated[key] = getattr(change, key)
    if change.restart_policy is not None:
        updated["restart_policy"] = change.restart_policy.name
        updated["restart_retries"] = change.restart_policy.maximum_retry_count
    return updated
