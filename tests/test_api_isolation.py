"""How a container is set apart from the host, with the real docker CLI (and docker-py where
the CLI checks an input itself) against `vmctl-agent serve`: `--init`, `--read-only`,
`--shm-size`, `--ulimit`, `--sysctl`, `--pid`, `--uts`, `--ipc`, `--cgroupns` and `--runtime`,
each checked from inside the container; bad input refused in dockerd's words, with nothing made.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import docker
import pytest
from agentserver import inspect, ok, serving

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-isolation"), registry) as server:
        assert server.docker("pull", "busybox").returncode == 0
        yield server


@pytest.fixture
def api(agent):
    client = docker.APIClient(base_url=agent.url, version="1.47")
    yield client
    client.close()


def run(agent, *args: str) -> str:
    return ok(agent.docker("run", "--rm", *args)).strip()


def refused(agent, api, message: str, **host_config) -> None:
    """A create the engine refuses with a 400 carrying `message`, leaving no container."""
    containers = sorted(os.listdir(agent.data_root / "containers"))
    with pytest.raises(docker.errors.APIError) as error:
        api.create_container("busybox", ["true"], host_config=api.create_host_config(**host_config))
    assert error.value.status_code == 400 and message in error.value.explanation
    assert sorted(os.listdir(agent.data_root / "containers")) == containers
    assert ok(agent.docker("ps", "-aq")) == ""


def test_init_runs_docker_init_as_pid_1_which_forwards_stop(agent):
    cmdline = run(agent, "--init", "busybox", "cat", "/proc/1/cmdline").split("\0")
    assert cmdline[:4] == ["/sbin/docker-init", "--", "cat", "/proc/1/cmdline"]
    ok(agent.docker("run", "-d", "--init", "--name", "tini", "busybox", "sleep", "1000"))
    assert inspect(agent, "tini")["HostConfig"]["Init"] is True
    assert inspect(agent, "tini")["Path"] == "sleep"  # the user's command, as dockerd shows
    ok(agent.docker("stop", "-t", "600", "tini"))  # sleep as PID 1 would ignore SIGTERM
    assert inspect(agent, "tini")["State"]["ExitCode"] == 143  # tini passed it on: no SIGKILL
    ok(agent.docker("rm", "tini"))


def test_read_only_root_keeps_dev_and_tmpfs_writable(agent):
    out = agent.docker("run", "--rm", "--read-only", "busybox", "touch", "/made")
    assert out.returncode == 1 and "Read-only file system" in out.stderr
    script = "touch /dev/shm/a /tmp/b && echo writable"
    assert run(agent, "--read-only", "--tmpfs", "/tmp", "busybox", "sh", "-c", script) == (
        "writable"
    )
    ok(agent.docker("create", "--read-only", "--name", "ro", "busybox"))
    assert inspect(agent, "ro")["HostConfig"]["ReadonlyRootfs"] is True
    ok(agent.docker("rm", "ro"))


def test_shm_size(agent):
    df = run(agent, "--shm-size", "8m", "busybox", "df", "-k", "/dev/shm").splitlines()[-1]
    assert df.split()[1] == "8192"
    default = run(agent, "busybox", "df", "-k", "/dev/shm").splitlines()[-1]
    assert default.split()[1] == "65536"


def test_shm_size_below_zero_is_refused(agent, api):
    refused(agent, api, "SHM size can not be less than 0", shm_size=-1)


def test_ulimits(agent):
    script = "ulimit -n; ulimit -Hn; ulimit -u"
    out = run(
        agent, "--ulimit", "nofile=100:200", "--ulimit", "nproc=77", "busybox", "sh", "-c", script
    )
    assert out.split() == ["100", "200", "77"]
    ok(agent.docker("create", "--ulimit", "nofile=100:200", "--name", "lim", "busybox"))
    assert inspect(agent, "lim")["HostConfig"]["Ulimits"] == [
        {"Name": "nofile", "Hard": 200, "Soft": 100}
    ]
    ok(agent.docker("rm", "lim"))


def test_unknown_or_inverted_ulimits_are_refused(agent, api):
    unknown = docker.types.Ulimit(name="speed", soft=1, hard=2)
    refused(agent, api, "invalid ulimit type: speed", ulimits=[unknown])
    inverted = docker.types.Ulimit(name="nofile", soft=300, hard=200)
    message = "ulimit soft limit must be less than or equal to hard limit: 300 > 200"
    refused(agent, api, message, ulimits=[inverted])


def test_sysctls_of_the_containers_own_namespaces(agent):
    script = "cat /proc/sys/kernel/shmmax /proc/sys/net/ipv4/ip_forward"
    out = run(
        agent, "--sysctl", "kernel.shmmax=123456", "--sysctl", "net.ipv4.ip_forward=1",
        "busybox", "sh", "-c", script,
    )  # fmt: skip
    assert out.split() == ["123456", "1"]
    assert Path("/proc/sys/kernel/shmmax").read_text().strip() != "123456"  # not the host's


def test_sysctls_that_would_change_the_host_are_refused(agent, api):
    message = "sysctl 'vm.swappiness' is not in a separate kernel namespace"
    refused(agent, api, message, sysctls={"vm.swappiness": "1"})
    message = "sysctl 'net.ipv4.ip_forward' is not allowed in the host's network namespace"
    refused(agent, api, message, sysctls={"net.ipv4.ip_forward": "1"}, network_mode="host")
    message = "sysctl 'kernel.shmmax' is not allowed in the host's IPC namespace"
    refused(agent, api, message, sysctls={"kernel.shmmax": "1"}, ipc_mode="host")


def test_host_pid_uts_and_ipc_namespaces(agent):
    host_ns = {kind: os.readlink(f"/proc/self/ns/{kind}") for kind in ("pid", "uts", "ipc")}
    script = "for n in pid uts ipc; do readlink /proc/self/ns/$n; done; hostname"
    private = run(agent, "busybox", "sh", "-c", script).split()
    assert len(private) == 4 and not set(private[:3]) & set(host_ns.values())
    shared = run(
        agent, "--pid", "host", "--uts", "host", "--ipc", "host", "busybox", "sh", "-c", script
    ).split()
    assert shared == [host_ns["pid"], host_ns["uts"], host_ns["ipc"], socket.gethostname()]
    pid1 = run(agent, "--pid", "host", "busybox", "cat", "/proc/1/comm")
    assert pid1 == Path("/proc/1/comm").read_text().strip()
    ok(
        agent.docker(
            "create",
            "--pid",
            "host",
            "--uts",
            "host",
            "--ipc",
            "host",
            "--name",
            "hosts",
            "busybox",
        )
    )
    host = inspect(agent, "hosts")["HostConfig"]
    assert (host["PidMode"], host["UTSMode"], host["IpcMode"]) == ("host", "host", "host")
    ok(agent.docker("rm", "hosts"))


def test_bad_namespace_modes_are_refused(agent, api):
    refused(agent, api, "invalid PID mode: nope", pid_mode="nope")
    refused(agent, api, "invalid IPC mode: nope", ipc_mode="nope")
    refused(agent, api, "invalid cgroup namespace mode: nope", cgroupns="nope")


def test_cgroup_namespace_private_and_host(agent):
    private = run(agent, "--cgroupns", "private", "busybox", "cat", "/proc/self/cgroup")
    assert all(line.endswith(":/") for line in private.splitlines())
    host = run(agent, "--cgroupns", "host", "busybox", "cat", "/proc/self/cgroup")
    assert any("/vmctl/" in line for line in host.splitlines())
    ok(agent.docker("create", "--cgroupns", "private", "--name", "cg", "busybox"))
    assert inspect(agent, "cg")["HostConfig"]["CgroupnsMode"] == "private"
    ok(agent.docker("rm", "cg"))


def test_runtime_runc_is_the_engines_and_others_are_unknown(agent):
    ok(agent.docker("create", "--runtime", "runc", "--name", "rc", "busybox"))
    assert inspect(agent, "rc")["HostConfig"]["Runtime"] == "runc"
    ok(agent.docker("rm", "rc"))
    out = agent.docker("create", "--runtime", "kata", "busybox")
    assert out.returncode != 0 and "unknown or invalid runtime name: kata" in out.stderr
    assert ok(agent.docker("ps", "-aq")) == ""


def capabilities_of(agent, *flags: str) -> tuple[int, int]:
    """(effective, bounding) capability sets of a container's first process."""
    status = run(agent, *flags, "busybox", "cat", "/proc/self/status")
    fields = dict(line.split(":\t") for line in status.splitlines() if ":\t" in line)
    return int(fields["CapEff"], 16), int(fields["CapBnd"], 16)


def _own_bounding_set() -> int:
    """Every capability the engine (root here) may hand on: `ALL` and `--privileged` mean these."""
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("CapBnd:")).split()[1], 16)


ALL_CAPS = _own_bounding_set()
DOCKER_DEFAULT_CAPS = 0xA80425FB  # what dockerd's containers show as CapEff


def test_cap_add_and_cap_drop_are_honoured_including_all(agent):
    assert capabilities_of(agent) == (DOCKER_DEFAULT_CAPS, DOCKER_DEFAULT_CAPS)
    net_admin, chown = 1 << 12, 1 << 0
    added = capabilities_of(agent, "--cap-add", "NET_ADMIN", "--cap-drop", "chown")
    assert added[0] == (DOCKER_DEFAULT_CAPS | net_admin) & ~chown
    assert capabilities_of(agent, "--cap-drop", "ALL") == (0, 0)
    assert capabilities_of(agent, "--cap-add", "ALL") == (ALL_CAPS, ALL_CAPS)
    only = capabilities_of(agent, "--cap-drop", "ALL", "--cap-add", "KILL")
    assert only == (1 << 5, 1 << 5)


def test_privileged_has_every_capability_device_and_unmasked_path(agent):
    assert capabilities_of(agent, "--privileged") == (ALL_CAPS, ALL_CAPS)
    host_node = next(
        name
        for name in sorted(os.listdir("/dev"))
        if name not in ("null", "zero", "full", "random", "urandom", "tty", "console", "ptmx")
        and Path("/dev", name).is_char_device()
    )
    script = f"test -c /dev/{host_node} && grep -E ' /sys | /proc/kcore ' /proc/mounts"
    mounts = run(agent, "--privileged", "busybox", "sh", "-c", script).splitlines()
    assert [line.split()[1] for line in mounts] == ["/sys"]  # /proc/kcore not masked
    assert mounts[0].split()[3].startswith("rw,")
    plain = run(agent, "busybox", "sh", "-c", f"ls /dev/{host_node} || grep ' /sys ' /proc/mounts")
    assert plain.split()[3].startswith("ro,")
    ok(agent.docker("create", "--privileged", "--name", "priv", "busybox"))
    assert inspect(agent, "priv")["HostConfig"]["Privileged"] is True
    ok(agent.docker("rm", "priv"))


def test_device_is_the_hosts_node_at_the_path_asked(agent):
    script = "echo gone > /dev/mynull && stat -c '%t,%T' /dev/mynull"
    assert run(agent, "--device", "/dev/null:/dev/mynull", "busybox", "sh", "-c", script) == "1,3"
    ok(agent.docker("create", "--device", "/dev/zero", "--name", "dev", "busybox"))
    assert inspect(agent, "dev")["HostConfig"]["Devices"] == [
        {"PathOnHost": "/dev/zero", "PathInContainer": "/dev/zero", "CgroupPermissions": "rwm"}
    ]
    ok(agent.docker("rm", "dev"))


def test_a_device_that_does_not_exist_or_is_no_device_is_refused(agent):
    containers = sorted(os.listdir(agent.data_root / "containers"))
    out = agent.docker("run", "--rm", "--device", "/dev/nope", "busybox", "true")
    message = 'error gathering device information while adding custom device "/dev/nope"'
    assert out.returncode != 0 and f"{message}: no such file or directory" in out.stderr
    out = agent.docker("run", "--rm", "--device", "/etc/hostname", "busybox", "true")
    assert "not a device node" in out.stderr
    out = agent.docker("run", "--rm", "--device", "/dev/null:/dev/n:r", "busybox", "true")
    assert "device permissions 'r' are not supported yet: only rwm" in out.stderr
    assert sorted(os.listdir(agent.data_root / "containers")) == containers


def test_ipc_container_joins_a_shareable_donors_namespace_and_shm(agent):
    ok(
        agent.docker(
            "run", "-d", "--ipc", "shareable", "--name", "donor", "busybox", "sleep", "1000"
        )
    )
    ok(agent.docker("exec", "donor", "sh", "-c", "echo shared > /dev/shm/note"))
    donor_ns = ok(agent.docker("exec", "donor", "readlink", "/proc/self/ns/ipc")).strip()
    script = "readlink /proc/self/ns/ipc; cat /dev/shm/note"
    joined = run(agent, "--ipc", "container:donor", "busybox", "sh", "-c", script).split()
    assert joined == [donor_ns, "shared"]
    assert "/dev/shm" not in run(agent, "--ipc", "none", "busybox", "cat", "/proc/mounts")
    shared = agent.data_root / "containers" / inspect(agent, "donor")["Id"] / "shm"
    assert f" {shared} tmpfs " in Path("/proc/self/mounts").read_text()  # on the host: shareable
    ok(agent.docker("rm", "-f", "donor"))
    assert f" {shared} " not in Path("/proc/self/mounts").read_text()  # and gone with it


def test_ipc_container_of_a_private_stopped_or_missing_donor_is_refused(agent):
    ok(agent.docker("run", "-d", "--name", "private", "busybox", "sleep", "1000"))
    out = agent.docker("run", "--rm", "--ipc", "container:private", "busybox", "true")
    assert "non-shareable IPC (hint: use IpcMode:shareable for the donor container)" in out.stderr
    ok(agent.docker("rm", "-f", "private"))
    ok(agent.docker("create", "--ipc", "shareable", "--name", "idle", "busybox"))
    out = agent.docker("run", "--rm", "--ipc", "container:idle", "busybox", "true")
    assert "cannot join IPC of a non running container: " in out.stderr
    out = agent.docker("run", "--rm", "--ipc", "container:nobody-here", "busybox", "true")
    assert "No such container: nobody-here" in out.stderr
    ok(agent.docker("rm", "idle"))
    assert ok(agent.docker("ps", "-aq")) == ""


def test_a_shareable_containers_shm_goes_with_it_even_if_its_shim_was_killed(agent):
    ok(
        agent.docker(
            "run", "-d", "--ipc", "shareable", "--name", "orphan", "busybox", "sleep", "1000"
        )
    )
    directory = agent.data_root / "containers" / inspect(agent, "orphan")["Id"]
    shim = json.loads((directory / "state.json").read_text())["shim_pid"]
    os.kill(shim, signal.SIGKILL)  # its unmount never runs
    assert f" {directory}/shm tmpfs " in Path("/proc/self/mounts").read_text()
    ok(agent.docker("rm", "-f", "orphan"))
    assert f" {directory}/shm " not in Path("/proc/self/mounts").read_text()
    assert not directory.exists()


def test_a_sysctl_the_kernel_lacks_fails_the_start_and_leaves_nothing(agent):
    out = agent.docker("run", "--name", "nokernel", "--sysctl", "net.ipv4.walk_nope=1", "busybox")
    assert out.returncode != 0 and "/proc/sys/net/ipv4/walk_nope" in out.stderr
    container_id = inspect(agent, "nokernel")["Id"]
    assert inspect(agent, "nokernel")["State"]["Running"] is False
    leftovers = list(Path("/sys/fs/cgroup").glob(f"*/vmctl/{container_id}"))
    leftovers += list(Path("/sys/fs/cgroup").glob(f"vmctl/{container_id}"))
    assert leftovers == []
    ok(agent.docker("rm", "nokernel"))


def test_init_without_tini_is_a_clear_refusal():
    from vmctl_agent.runtime.isolation import init_binary
    from vmctl_agent.runtime.spec import InvalidSpec

    assert init_binary() == "/usr/bin/tini-static"  # scripts/install.sh installs Debian's tini
    with pytest.raises(InvalidSpec, match=r"^--init needs docker-init, and this engine has none"):
        init_binary(("/nonexistent/tini-static",))
