"""GET /vmctl/containers/{id}/inside (the app's Inside view) and GET /containers/{id}/changes
(`docker diff`) against `vmctl-agent serve` on this host, checked against what the kernel says:
/proc/<pid>/ns/*, /proc/<pid>/cgroup and the cgroup files themselves."""

from __future__ import annotations

import os
from pathlib import Path

import docker
import imagekit as ik
import pytest
from agentserver import serving

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")

KINDS = ("pid", "mnt", "uts", "ipc", "net", "cgroup", "user")
STACKED = "library/stacked"
DOOMED = "library/doomed"  # removed with rmi -f under its container
BARE = "library/bare"  # no /proc, /dev or /sys: the runtime makes them to mount on


@pytest.fixture(scope="module")
def server(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-inside"), registry) as server:
        client = ik.RegistryClient(registry.url)
        client.push_image(STACKED, "latest", stacked_image())
        bare = ik.tar_bytes([ik.whiteout("proc"), ik.whiteout("dev"), ik.whiteout("sys")])
        client.push_image(BARE, "latest", ik.build_image([ik.busybox_layer(), bare]))
        client.push_image(DOOMED, "latest", ik.build_image([ik.busybox_layer()]))
        yield server


@pytest.fixture(scope="module")
def api(server):
    return docker.APIClient(base_url=server.url, version="auto", timeout=60)


def stacked_image() -> ik.Image:
    """Two layers, the second adding a file and deleting one of the first's, with a history
    that has an empty_layer line between them (as a builder's ENV makes)."""
    top = ik.tar_bytes([ik.directory("srv"), ik.file("srv/app.txt", b"app\n"),
                        ik.whiteout("etc/group")])  # fmt: skip
    history = [
        {"created": "2024-01-01T00:00:00Z", "created_by": "ADD busybox / # buildkit"},
        {"created": "2024-01-02T00:00:00Z", "created_by": "ENV A=1", "empty_layer": True},
        {"created": "2024-01-03T00:00:00Z", "created_by": "COPY app.txt /srv/", "comment": "c"},
    ]
    return ik.build_image([ik.busybox_layer(), top], config={"Cmd": ["sh"]}, history=history)


def inside(api, container_id: str) -> dict:
    return api._result(api._get(api._url("/vmctl/containers/{0}/inside", container_id)), True)


def run(server, *args: str) -> str:
    ran = server.docker("run", "-d", *args)
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.strip()


def pid_of(server, container_id: str) -> int:
    return int(server.docker("inspect", "-f", "{{.State.Pid}}", container_id).stdout)


def ns_id(pid: int | str, kind: str) -> int:
    link = os.readlink(f"/proc/{pid}/ns/{kind}")
    return int(link.split("[")[1].rstrip("]"))


def cgroup_dir(pid: int, controller: str) -> Path:
    """Where the kernel says `pid` is, for `controller` (v1) or in the unified tree (v2)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _number, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return Path("/sys/fs/cgroup", controller) / path.lstrip("/")
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    assert v2.is_file() and v2.read_text().strip(), "no cgroup for " + controller
    return Path("/sys/fs/cgroup") / line.split("::", 1)[1].lstrip("/")


def test_namespaces_are_the_processes_own_beside_the_agents(server, api):
    container = run(server, "busybox", "sleep", "60")
    pid = pid_of(server, container)
    got = inside(api, container)
    assert (got["Running"], got["Pid"], got["Agent"]["Pid"]) == (True, pid, server.process.pid)
    by_kind = {ns["Type"]: ns for ns in got["Namespaces"]}
    assert list(by_kind) == list(KINDS)
    for kind, ns in by_kind.items():
        assert ns["Id"] == ns_id(pid, kind), kind
        assert ns["AgentId"] == ns_id(server.process.pid, kind), kind
        assert ns["Shared"] == (ns["Id"] == ns["AgentId"])
    for kind in ("pid", "mnt", "uts", "ipc", "net"):
        assert not by_kind[kind]["Shared"], kind
    assert by_kind["user"]["Shared"]  # no user namespace: root in the container is root
    server.docker("rm", "-f", container)


def test_host_network_shows_the_net_namespace_shared(server, api):
    container = run(server, "--network", "host", "busybox", "sleep", "60")
    by_kind = {ns["Type"]: ns for ns in inside(api, container)["Namespaces"]}
    assert by_kind["net"]["Shared"] and by_kind["net"]["Id"] == ns_id("self", "net")
    assert not by_kind["uts"]["Shared"]
    server.docker("rm", "-f", container)


def test_cgroup_limits_and_usage_are_the_cgroup_files(server, api):
    container = run(server, "--memory", "64m", "--pids-limit", "50", "--cpus", "0.5",
                    "busybox", "sleep", "60")  # fmt: skip
    pid = pid_of(server, container)
    cgroup = inside(api, container)["Cgroup"]
    limits = {limit["File"]: limit for limit in cgroup["Limits"]}
    memory = cgroup_dir(pid, "memory")
    assert str(memory) in cgroup["Paths"]
    for file, limit in limits.items():
        controller = file.split(".")[0]
        on_disk = (cgroup_dir(pid, controller) / file).read_text().strip()
        assert limit["Value"] == on_disk, file
    if cgroup["Version"] == 1:
        assert limits["memory.limit_in_bytes"] == {
            "File": "memory.limit_in_bytes", "Value": str(64 << 20), "Set": True}  # fmt: skip
        assert (limits["cpu.cfs_quota_us"]["Value"], limits["cpu.cfs_quota_us"]["Set"]) == (
            "50000", True)  # fmt: skip
        assert not limits["memory.soft_limit_in_bytes"]["Set"]
        assert not limits["cpu.shares"]["Set"]
    else:
        assert limits["memory.max"]["Value"] == str(64 << 20) and limits["memory.max"]["Set"]
        assert limits["cpu.max"]["Value"] == "50000 100000" and limits["cpu.max"]["Set"]
    assert limits["pids.max"] == {"File": "pids.max", "Value": "50", "Set": True}
    usage = cgroup["Usage"]
    assert usage["Memory"]["Limit"] == 64 << 20 and usage["Memory"]["Current"] > 0
    pids = (cgroup_dir(pid, "pids") / "pids.current").read_text().strip()
    assert usage["Pids"] == {"Current": int(pids), "Limit": 50}
    assert usage["Cpu"]["UsageNanos"] > 0
    server.docker("rm", "-f", container)


def test_unlimited_container_shows_no_limit_set(server, api):
    container = run(server, "busybox", "sleep", "60")
    cgroup = inside(api, container)["Cgroup"]
    assert [limit["File"] for limit in cgroup["Limits"] if limit["Set"]] == []
    assert cgroup["Usage"]["Pids"]["Limit"] == 0
    server.docker("rm", "-f", container)


def test_root_filesystem_is_the_images_layers_with_their_history_then_the_writable_one(server, api):
    assert server.docker("pull", "stacked").returncode == 0
    container = run(server, "stacked", "sleep", "60")
    image = api.inspect_image("stacked")
    got = inside(api, container)["RootFS"]
    layers = got["Layers"]
    assert [layer["DiffID"] for layer in layers] == image["RootFS"]["Layers"]  # base first
    assert [layer["CreatedBy"] for layer in layers] == [
        "ADD busybox / # buildkit",
        "COPY app.txt /srv/",
    ]
    assert layers[1]["Comment"] == "c" and layers[1]["Created"] == "2024-01-03T00:00:00Z"
    assert all(layer["Digest"].startswith("sha256:") and layer["Size"] > 0 for layer in layers)
    assert sum(layer["Size"] for layer in layers) == image["Size"]
    assert layers[0]["Size"] > 1_000_000 > layers[1]["Size"]  # busybox, then one small file
    assert got["Writable"]["Changes"] == []
    server.docker("rm", "-f", container)


def test_writable_layer_lists_the_changes_as_docker_diff_does(server, api):
    container = run(server, "stacked", "sh", "-c",
                    "mkdir /tmp/new && echo x > /tmp/new/f && rm /bin/ls && echo y >> /srv/app.txt"
                    " && echo g > /etc/group && touch /done && sleep 60")  # fmt: skip
    wait_for_file(server, container, "/done")
    writable = inside(api, container)["RootFS"]["Writable"]
    expected = [
        ("/bin", 0), ("/bin/ls", 2), ("/done", 1), ("/etc", 0), ("/etc/group", 1),
        ("/srv", 0), ("/srv/app.txt", 0),
        ("/tmp", 0), ("/tmp/new", 1), ("/tmp/new/f", 1),
    ]  # fmt: skip
    assert [(c["Path"], c["Kind"]) for c in writable["Changes"]] == expected
    assert writable["Size"] > 0 and writable["Path"].endswith(f"{container}/upper")
    diff = server.docker("diff", container)
    assert diff.returncode == 0, diff.stderr
    assert diff.stdout.splitlines() == [f"{'CAD'[kind]} {path}" for path, kind in expected]
    server.docker("rm", "-f", container)


def wait_for_file(server, container: str, path: str) -> None:
    """The container's own command makes `path` last; exec waits for it, no clock involved."""
    ran = server.docker(
        "exec", container, "sh", "-c", f"while [ ! -e {path} ]; do sleep 0.05; done"
    )
    assert ran.returncode == 0, ran.stderr


def test_a_stopped_container_has_no_namespaces_or_cgroup_but_keeps_its_layers(server, api):
    container = run(server, "busybox", "sh", "-c", "echo kept > /kept")
    assert server.docker("wait", container).stdout.strip() == "0"
    got = inside(api, container)
    assert (got["Running"], got["Pid"], got["Namespaces"], got["Cgroup"]) == (False, 0, [], None)
    assert [(c["Path"], c["Kind"]) for c in got["RootFS"]["Writable"]["Changes"]] == [("/kept", 1)]
    assert len(got["RootFS"]["Layers"]) == 1
    server.docker("rm", container)


def test_an_unknown_container_is_a_404_in_dockers_words(api):
    with pytest.raises(docker.errors.NotFound) as missing:
        inside(api, "no-such-container")
    assert missing.value.explanation == "No such container: no-such-container"
    with pytest.raises(docker.errors.NotFound, match="No such container: nope"):
        api.diff("nope")


def test_the_directories_the_runtime_mounts_on_are_not_changes(server, api):
    """An image without /proc, /dev and /sys gets them made in its container's layer to mount
    on (dockerd's init layer has them): `docker diff` shows only what the command did."""
    assert server.docker("pull", "bare").returncode == 0
    container = run(server, "bare", "sh", "-c", "ls /proc/self > /dev/null && touch /made")
    assert server.docker("wait", container).stdout.strip() == "0"
    upper = Path(inside(api, container)["RootFS"]["Writable"]["Path"])
    assert {p.name for p in upper.iterdir()} == {"proc", "dev", "sys", "made"}
    assert server.docker("diff", container).stdout.splitlines() == ["A /made"]
    server.docker("rm", container)


def test_layers_of_an_image_removed_under_its_container_still_show(server, api):
    assert server.docker("pull", "doomed").returncode == 0
    image = api.inspect_image("doomed")
    container = run(server, "doomed", "true")
    assert server.docker("wait", container).stdout.strip() == "0"
    assert server.docker("rmi", "-f", "doomed").returncode == 0
    layers = inside(api, container)["RootFS"]["Layers"]
    assert [layer["DiffID"] for layer in layers] == image["RootFS"]["Layers"]
    assert [(layer["Digest"], layer["CreatedBy"]) for layer in layers] == [("", "")]
    server.docker("rm", container)
