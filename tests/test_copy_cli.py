"""`docker cp` both ways with the real docker CLI, and docker-py's put_archive and
get_archive, against `vmctl-agent serve`: running and stopped containers, volumes and binds,
dockerd's path-stat header and errors; nothing written outside a container's root, nothing
left behind (mounts, helper processes, spooled uploads)."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import stat
import struct
import subprocess
import tarfile
from pathlib import Path

import docker
import pytest
from agentserver import ok, serving, until
from docker.errors import APIError, NotFound

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-cp"), registry) as server:
        ok(server.docker("pull", "busybox"))
        yield server


@pytest.fixture(scope="module")
def client(agent):
    client = docker.DockerClient(base_url=agent.url, version="auto", timeout=60)
    yield client
    client.close()


def tar_of(*entries: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in entries:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, *, mode: int = 0o644, link: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.mtime = kind, mode, link, 1_700_000_000
    return info


def agent_mounts(agent) -> list[str]:
    """The host's mounts under the agent's data root (a helper's must never be among them)."""
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(agent.data_root) in line]


def helpers_of(agent) -> list[str]:
    """The agent's child processes (with no container running: a docker cp helper would be
    one; it ends with its request)."""
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(agent.process.pid)],
                         capture_output=True, text=True).stdout  # fmt: skip
    return out.splitlines()


def spooled(agent) -> list[str]:
    return sorted(p.name for p in (agent.data_root / "tmp").glob("cp-*"))


def test_cp_both_ways_with_a_stopped_container(agent, tmp_path):
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "a.txt").write_text("alpha\n")
    os.chmod(source / "sub" / "a.txt", 0o640)
    (source / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(source / "run.sh", 0o755)
    os.symlink("sub/a.txt", source / "link")
    ok(agent.docker("create", "--name", "cp-stopped", "busybox", "true"))
    ok(agent.docker("cp", str(source), "cp-stopped:/copied"))
    ok(agent.docker("cp", str(source / "run.sh"), "cp-stopped:/bin/renamed.sh"))
    back = tmp_path / "back"
    ok(agent.docker("cp", "cp-stopped:/copied", str(back)))
    assert (back / "sub" / "a.txt").read_text() == "alpha\n"
    assert stat.S_IMODE((back / "sub" / "a.txt").stat().st_mode) == 0o640
    assert os.readlink(back / "link") == "sub/a.txt"
    ok(agent.docker("cp", "cp-stopped:/bin/renamed.sh", str(tmp_path / "r.sh")))
    assert stat.S_IMODE((tmp_path / "r.sh").stat().st_mode) == 0o755
    ok(agent.docker("start", "-a", "cp-stopped"))  # the container starts over what was copied
    assert agent_mounts(agent) == [] and helpers_of(agent) == [] and spooled(agent) == []
    ok(agent.docker("rm", "cp-stopped"))


def test_cp_into_and_out_of_a_running_container(agent, tmp_path):
    ok(agent.docker("run", "-d", "--name", "cp-running", "busybox", "sleep", "1000"))
    (tmp_path / "f").write_text("into a running one\n")
    ok(agent.docker("cp", str(tmp_path / "f"), "cp-running:/tmp/f"))
    assert ok(agent.docker("exec", "cp-running", "cat", "/tmp/f")) == "into a running one\n"
    ok(agent.docker("exec", "cp-running", "sh", "-c", "mkdir /made && echo x > /made/y"))
    ok(agent.docker("cp", "cp-running:/made/.", str(tmp_path / "made")))
    assert (tmp_path / "made" / "y").read_text() == "x\n"
    ok(agent.docker("cp", "cp-running:/etc/hostname", str(tmp_path / "hostname")))
    hostname = ok(agent.docker("inspect", "-f", "{{.Config.Hostname}}", "cp-running")).strip()
    assert (tmp_path / "hostname").read_text().strip() == hostname  # the running one's own
    listing = subprocess.run(["tar", "-t"], input=_cp_out(agent, "cp-running:/"),
                             capture_output=True).stdout.decode().split()  # fmt: skip
    assert "/tmp/f" in listing and "/proc/" in listing  # /proc itself, not its contents
    assert not [n for n in listing if n.startswith(("/proc/", "/sys/")) and n.count("/") > 2]
    ok(agent.docker("rm", "-f", "cp-running"))
    assert agent_mounts(agent) == [] and helpers_of(agent) == []


def _cp_out(agent, source: str) -> bytes:
    env = {**os.environ, "DOCKER_HOST": agent.url, "DOCKER_CONFIG": str(agent.workdir)}
    result = subprocess.run(["docker", "cp", source, "-"], capture_output=True, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_cp_reaches_volumes_and_binds_as_the_container_sees_them(agent, tmp_path):
    bound = tmp_path / "bound"
    bound.mkdir()
    ok(agent.docker("create", "--name", "cp-vol", "-v", "cpvol:/data", "-v", f"{bound}:/b",
                    "busybox", "sh", "-c", "cat /data/in /b/in"))  # fmt: skip
    (tmp_path / "in").write_text("copied\n")
    ok(agent.docker("cp", str(tmp_path / "in"), "cp-vol:/data/in"))
    ok(agent.docker("cp", str(tmp_path / "in"), "cp-vol:/b/in"))
    assert (bound / "in").read_text() == "copied\n"  # a bind: the host folder itself
    volume = json.loads(ok(agent.docker("volume", "inspect", "cpvol")))[0]["Mountpoint"]
    assert Path(volume, "in").read_text() == "copied\n"
    assert ok(agent.docker("start", "-a", "cp-vol")) == "copied\ncopied\n"
    ok(agent.docker("cp", "cp-vol:/data/in", str(tmp_path / "out")))
    assert (tmp_path / "out").read_text() == "copied\n"
    ok(agent.docker("rm", "-v", "cp-vol"))
    ok(agent.docker("volume", "rm", "cpvol"))
    assert agent_mounts(agent) == [] and helpers_of(agent) == []


def test_cp_errors_in_dockerds_words(agent, tmp_path):
    ok(agent.docker("create", "--name", "cp-err", "busybox", "true"))
    missing = agent.docker("cp", "cp-err:/no/such", str(tmp_path / "x"))
    assert missing.returncode != 0
    assert "Could not find the file /no/such in container cp-err" in missing.stderr
    into_missing = agent.docker("cp", str(tmp_path), "cp-err:/no/such/dir")
    assert into_missing.returncode != 0 and "Could not find the file" in into_missing.stderr
    gone = agent.docker("cp", "no-such-container:/etc", str(tmp_path / "y"))
    assert "No such container: no-such-container" in gone.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    ok(agent.docker("rm", "cp-err"))


def test_cp_follows_a_symlink_with_L_and_keeps_it_without(agent, tmp_path):
    ok(agent.docker("run", "--name", "cp-link", "busybox", "sh", "-c",
                    "echo target > /real; ln -s /real /link"))  # fmt: skip
    ok(agent.docker("cp", "cp-link:/link", str(tmp_path / "kept")))
    assert os.readlink(tmp_path / "kept") == "/real"
    ok(agent.docker("cp", "-L", "cp-link:/link", str(tmp_path / "followed")))
    assert (tmp_path / "followed").read_text() == "target\n"
    ok(agent.docker("rm", "cp-link"))


def test_docker_py_put_and_get_archive_with_the_stat_header(client):
    container = client.containers.create("busybox", "true", name="cp-py")
    data = tar_of((member("dir", tarfile.DIRTYPE, mode=0o750), b""),
                  (member("dir/file", mode=0o600), b"payload"))  # fmt: skip
    assert container.put_archive("/tmp", data) is True
    stream, found = container.get_archive("/tmp/dir/file")
    assert found["name"] == "file" and found["size"] == 7 and found["linkTarget"] == ""
    assert found["mode"] == 0o600 and found["mtime"] == "2023-11-14T22:13:20Z"
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        assert tar.getnames() == ["file"] and tar.extractfile("file").read() == b"payload"
    _, found = container.get_archive("/tmp/dir")
    assert found["mode"] == (1 << 31) | 0o750  # Go's os.ModeDir
    head = client.api.head(client.api._url("/containers/cp-py/archive"), params={"path": "/"})
    assert head.status_code == 200
    assert json.loads(base64.b64decode(head.headers["X-Docker-Container-Path-Stat"]))["name"] == "/"
    with pytest.raises(NotFound, match="Could not find the file /nope in container"):
        container.get_archive("/nope")
    container.remove()


def put(client, name: str, path: str, data: bytes, **params) -> None:
    """PUT /containers/{name}/archive, raising docker-py's APIError on an error answer."""
    url = client.api._url("/containers/{0}/archive", name)
    client.api._raise_for_status(client.api._put(url, params={"path": path, **params}, data=data))


def paths_in(client, name: str, path: str) -> list[str]:
    stream, _ = client.api.get_archive(name, path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        return sorted(tar.getnames())


BAD_ARCHIVES = [
    ("dotdot", [member("ok"), member("../escaped")], '"../escaped" is outside of "/tmp"'),
    ("symlink", [member("ok"), member("up", tarfile.SYMTYPE, link="../../etc")],
     'invalid symlink "/tmp/up" -> "../../etc"'),
    ("hardlink", [member("ok"), member("h", tarfile.LNKTYPE, link="../etc/passwd")],
     'invalid hardlink "/tmp/h" -> "../etc/passwd"'),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "entries", "message"), BAD_ARCHIVES, ids=[c[0] for c in BAD_ARCHIVES]
)
def test_an_archive_leading_out_is_refused_before_anything_is_written(
    client, agent, case, entries, message
):
    container = client.containers.create("busybox", "true", name=f"cp-bad-{case}")
    with pytest.raises(APIError, match=message) as refused:
        put(client, container.name, "/tmp", tar_of(*((e, b"x") for e in entries)))
    assert refused.value.response.status_code == 400
    assert paths_in(client, container.name, "/tmp") == ["tmp"]  # not even "ok"
    assert agent_mounts(agent) == [] and spooled(agent) == []
    container.remove()


def test_a_containers_symlinks_lead_inside_its_root_never_to_the_host(client, tmp_path):
    marker = tmp_path / "host-side"
    marker.mkdir()
    script = f"mkdir -p {marker}; ln -s {marker} /to-host; ln -s / /to-root; ln -s ../../.. /tmp/up"
    container = client.containers.run("busybox", ["sh", "-c", script], name="cp-links", detach=True)
    container.wait()
    put(client, "cp-links", "/to-host", tar_of((member("planted"), b"x")))
    put(client, "cp-links", "/tmp/up", tar_of((member("via-up"), b"x")))
    assert list(marker.iterdir()) == [] and not Path("/via-up").exists()
    assert "host-side/planted" in paths_in(client, "cp-links", str(marker))  # in the root
    assert "via-up" in [p.split("/")[-1] for p in paths_in(client, "cp-links", "/")]
    _, found = client.api.get_archive("cp-links", "/to-root")
    assert found["linkTarget"] == "/"
    container.remove()


def test_put_archive_refusals_and_options(client):
    container = client.containers.create("busybox", "true", name="cp-opts", user="1000:1001")
    with pytest.raises(APIError, match="extraction point is not a directory") as refused:
        put(client, "cp-opts", "/bin/sh", tar_of((member("x"), b"x")))
    assert refused.value.response.status_code == 400
    with pytest.raises(APIError, match="bad parameter: 'path' cannot be empty"):
        put(client, "cp-opts", "", tar_of((member("x"), b"x")))
    with pytest.raises(APIError, match="the archive is not a readable tar") as refused:
        put(client, "cp-opts", "/tmp", b"this is not a tar archive at all" * 40)
    assert refused.value.response.status_code == 400
    swap = tar_of((member("bin"), b"not a directory"))
    with pytest.raises(APIError, match='cannot overwrite directory "/bin" with non-directory'):
        put(client, "cp-opts", "/", swap, noOverwriteDirNonDir="true")
    assert "bin/sh" in paths_in(client, "cp-opts", "/bin")[1:2] or "bin/sh" in paths_in(
        client, "cp-opts", "/bin"
    )
    put(client, "cp-opts", "/tmp", tar_of((member("mine"), b"x")), copyUIDGID="true")
    put(client, "cp-opts", "/tmp", tar_of((member("theirs"), b"x")))
    stream, _ = client.api.get_archive("cp-opts", "/tmp")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        owners = {m.name: (m.uid, m.gid) for m in tar}
    assert owners["tmp/mine"] == (1000, 1001) and owners["tmp/theirs"] == (0, 0)
    container.remove()


def test_a_client_that_leaves_mid_archive_leaves_no_helper_and_no_lock(agent):
    ok(agent.docker("run", "-d", "--name", "cp-leave", "busybox", "sleep", "1000"))
    before = helpers_of(agent)  # its shim, if the agent is its parent
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(agent.socket))
        client.sendall(b"GET /containers/cp-leave/archive?path=/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.recv(12) == b"HTTP/1.1 200"  # the answer has begun; then we leave
    until(lambda: helpers_of(agent) == before, "the helper to be reaped")
    ok(agent.docker("stop", "-t", "0", "cp-leave"))
    ok(agent.docker("start", "cp-leave"))  # the lock was let go
    ok(agent.docker("rm", "-f", "cp-leave"))
    assert agent_mounts(agent) == []


@pytest.mark.parametrize("running", [False, True], ids=["stopped", "running"])
def test_a_read_only_bind_takes_nothing(client, tmp_path, running):
    (tmp_path / "kept").write_text("as it was\n")
    volumes = {str(tmp_path): {"bind": "/ro", "mode": "ro"}}
    container = client.containers.create("busybox", "sleep 1000", volumes=volumes)
    if running:
        container.start()
    with pytest.raises(APIError, match="mounted volume is marked read-only") as refused:
        put(client, container.id, "/ro", tar_of((member("kept"), b"overwritten")))
    assert refused.value.response.status_code == 400
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]
    assert (tmp_path / "kept").read_text() == "as it was\n"
    container.remove(force=True)


def test_file_capabilities_travel_both_ways(client):
    """security.capability, the one xattr dockerd's tars carry: CAP_NET_BIND_SERVICE, v2."""
    cap = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)
    key = "SCHILY.xattr.security.capability"
    info = member("ping-like", mode=0o755)
    info.pax_headers = {key: cap.decode("utf-8", "surrogateescape")}
    container = client.containers.create("busybox", "true", name="cp-caps")
    put(client, "cp-caps", "/bin", tar_of((info, b"#!/bin/sh\n")))
    stream, _ = client.api.get_archive("cp-caps", "/bin/ping-like")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        (back,) = tar.getmembers()
    assert back.pax_headers[key].encode("utf-8", "surrogateescape") == cap
    stream, _ = client.api.get_archive("cp-caps", "/bin/sh")  # none: no header
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        assert key not in tar.getmembers()[0].pax_headers
    container.remove()


def test_cp_archive_mode_gives_the_containers_user_what_is_copied(agent, tmp_path):
    (tmp_path / "f").write_text("owned\n")
    ok(agent.docker("create", "--name", "cp-user", "--user", "1234:5678", "busybox", "true"))
    ok(agent.docker("cp", "-a", str(tmp_path / "f"), "cp-user:/tmp/archived"))
    ok(agent.docker("cp", str(tmp_path / "f"), "cp-user:/tmp/plain"))
    listing = subprocess.run(["tar", "-tvf", "-", "--numeric-owner"], capture_output=True,
                             input=_cp_out(agent, "cp-user:/tmp")).stdout.decode()  # fmt: skip
    owners = {line.split()[-1]: line.split()[1] for line in listing.splitlines()}
    assert owners["tmp/archived"] == "1234/5678" and owners["tmp/plain"] == "0/0"
    ok(agent.docker("rm", "cp-user"))


def test_a_directorys_own_entries_come_before_its_subdirectories_trees(client):
    """The order the GUI's Files tab relies on to stop reading at a directory's top level;
    the members are the ones Go's walk gives (docker cp is unaffected)."""
    container = client.containers.create("busybox", "true", name="cp-order")
    files = [member("tmp/a/deep/x"), member("tmp/a/y"), member("tmp/b"), member("tmp/c/z")]
    put(client, "cp-order", "/", tar_of(*((info, b"data") for info in files)))
    stream, _ = client.api.get_archive("cp-order", "/tmp")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        names = tar.getnames()
    assert names == ["tmp", "tmp/a", "tmp/b", "tmp/c", "tmp/a/deep", "tmp/a/y", "tmp/a/deep/x",
                     "tmp/c/z"]  # fmt: skip
    container.remove()
