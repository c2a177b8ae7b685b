"""The real docker CLI against `vmctl-agent serve`: a user should not notice the difference."""

from __future__ import annotations

import concurrent.futures
import grp
import http.client
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import time

import imagekit as ik
import pytest
from agentserver import PATIENCE, AgentServer, push_test_images, serving
from fakeserver import FakeServer, proxy_to

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent"), registry) as server:
        yield server


def ok(result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_seed_story_word_for_word(agent):
    version = ok(agent.docker("version"))
    server = version[version.index("Server:") :]
    assert "OS/Arch:          linux/amd64" in server and "API version:      1.50" in server
    first = agent.docker("run", "hello-world")
    assert first.returncode == 0, first.stderr
    assert "Unable to find image 'hello-world:latest' locally" in first.stderr
    assert "Pull complete" in first.stderr
    assert "Status: Downloaded newer image for hello-world:latest" in first.stderr
    assert "Hello from Docker!" in first.stdout
    second = agent.docker("run", "hello-world")
    assert "Hello from Docker!" in second.stdout
    assert "Unable to find image" not in second.stderr and "Pulling" not in second.stderr


def test_the_socket_is_0660_and_owned_by_root(agent):
    info = agent.socket.stat()
    assert stat.S_IMODE(info.st_mode) == 0o660 and info.st_uid == 0


def test_info_and_images(agent):
    ok(agent.docker("pull", "busybox"))
    info = json.loads(ok(agent.docker("info", "--format", "{{json .}}")))
    assert info["OSType"] == "linux" and info["Driver"] == "overlay2"
    assert info["CgroupVersion"] in ("1", "2") and info["NCPU"] >= 1
    images = ok(agent.docker("images", "--format", "{{.Repository}}:{{.Tag}}")).split()
    assert "busybox:latest" in images


def test_run_with_flags(agent):
    out = ok(
        agent.docker(
            "run",
            "--rm",
            "-e",
            "A=1",
            "-w",
            "/srv",
            "-u",
            "nobody",
            "--memory",
            "64m",
            "--pids-limit",
            "50",
            "--name",
            "flags",
            "busybox",
            "sh",
            "-c",
            "echo $A; pwd; id -u",
        )
    )
    assert out.split()[:3] == ["1", "/srv", "65534"]
    assert "flags" not in ok(agent.docker("ps", "-a", "--format", "{{.Names}}"))


def test_published_ports_are_not_silently_dropped(agent):
    run = agent.docker("run", "--rm", "-p", "8080:80", "busybox", "true")
    assert run.returncode == 0, run.stderr
    assert (
        "WARNING: Published ports are discarded: this engine has no bridge network yet, "
        "so the container runs with --network none"
    ) in run.stderr
    plain = agent.docker("run", "--rm", "busybox", "true")
    assert "WARNING" not in plain.stderr


def test_exit_codes_and_errors(agent):
    assert agent.docker("run", "--rm", "busybox", "sh", "-c", "exit 3").returncode == 3
    missing = agent.docker("run", "--rm", "busybox", "nosuchcommand")
    assert missing.returncode == 127
    assert 'exec: "nosuchcommand": executable file not found in $PATH' in missing.stderr
    oom = agent.docker(
        "run",
        "--name",
        "hog",
        "--memory",
        "32m",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=100M",
        "count=1",
    )
    assert oom.returncode == 137
    state = json.loads(ok(agent.docker("inspect", "hog")))[0]["State"]
    assert state["OOMKilled"] is True and state["ExitCode"] == 137
    ok(agent.docker("rm", "hog"))
    # Streamed endpoints must refuse before their 200: a hung CLI is the worst answer.
    stats = agent.docker("stats", "--no-stream", "nosuch", timeout=20)
    assert stats.returncode == 1 and "No such container: nosuch" in stats.stderr


def test_detached_container_lifecycle(agent):
    cid = ok(
        agent.docker(
            "run", "-d", "--name", "sleeper", "busybox", "sh", "-c", "echo started; exec sleep 300"
        )
    ).strip()
    assert len(cid) == 64
    listed = ok(agent.docker("ps", "--format", "{{.ID}} {{.Names}} {{.Status}}"))
    assert f"{cid[:12]} sleeper Up" in listed
    assert ok(agent.docker("logs", "sleeper")) == "started\n"
    assert ok(agent.docker("exec", "sleeper", "hostname")).strip() == cid[:12]
    assert agent.docker("exec", "sleeper", "sh", "-c", "exit 7").returncode == 7
    assert "sleep 300" in ok(agent.docker("top", "sleeper"))
    stats = ok(agent.docker("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", "sleeper"))
    assert stats.split() == ["sleeper", "1"]
    refused = agent.docker("rm", "sleeper")
    assert refused.returncode != 0
    assert "You cannot remove a running container" in refused.stderr
    ok(agent.docker("stop", "-t", "1", "sleeper"))
    status = ok(agent.docker("ps", "-a", "--filter", "name=sleeper", "--format", "{{.Status}}"))
    assert status.startswith("Exited (137)")
    ok(agent.docker("rm", "sleeper"))


def test_kill_and_force_remove(agent):
    ok(agent.docker("run", "-d", "--name", "victim", "busybox", "sleep", "300"))
    ok(agent.docker("kill", "victim"))
    assert "Exited (137)" in ok(
        agent.docker("ps", "-a", "--format", "{{.Status}}", "--filter", "name=victim")
    )
    ok(agent.docker("start", "victim"))
    ok(agent.docker("rm", "-f", "victim"))
    assert "victim" not in ok(agent.docker("ps", "-a", "--format", "{{.Names}}"))


def test_stdin_and_follow(agent):
    out = ok(
        agent.docker(
            "run",
            "-i",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "cat; echo done",
            input="line one\nline two\n",
        )
    )
    assert out == "line one\nline two\ndone\n"
    ok(
        agent.docker(
            "run",
            "-d",
            "--name",
            "counter",
            "busybox",
            "sh",
            "-c",
            "for i in 1 2 3; do echo $i; sleep 0.2; done",
        )
    )
    assert ok(agent.docker("logs", "-f", "counter")) == "1\n2\n3\n"
    assert ok(agent.docker("logs", "--tail", "1", "counter")) == "3\n"
    ok(agent.docker("rm", "counter"))


def test_rmi(agent):
    ok(agent.docker("tag", "busybox", "mine:1"))
    assert "Untagged: mine:1" in ok(agent.docker("rmi", "mine:1"))
    missing = agent.docker("rmi", "nosuchimage")
    assert "No such image: nosuchimage" in missing.stderr


def raw(agent, method: str, path: str, body: bytes | None = None) -> tuple[int, dict, bytes]:
    """One request over the unix socket, without any client library in between."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(agent.socket))
    conn = http.client.HTTPConnection("localhost")
    conn.sock = sock
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), data


def raw_huge(agent) -> tuple[int, dict, bytes]:
    """A request that claims a 1 GB body: refused before a byte of it is read."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(agent.socket))
    sock.sendall(
        b"POST /containers/create HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{"
    )
    response = http.client.HTTPResponse(sock)
    response.begin()
    data = response.read()
    sock.close()
    return response.status, dict(response.getheaders()), data


def test_api_versions_like_dockerd(agent):
    status, headers, body = raw(agent, "HEAD", "/_ping")
    assert status == 200 and headers["Api-Version"] == "1.50" and headers["Ostype"] == "linux"
    status, _, body = raw(agent, "GET", "/v1.99/version")
    assert status == 400
    assert json.loads(body)["message"] == (
        "client version 1.99 is too new. Maximum supported API version is 1.50"
    )
    status, _, body = raw(agent, "GET", "/v1.12/version")
    assert status == 400 and "is too old. Minimum supported API version is 1.24" in str(body)
    status, _, _ = raw(agent, "GET", "/v1.41/version")
    assert status == 200


def test_malformed_requests_get_a_400_and_the_agent_lives(agent):
    status, headers, body = raw(agent, "POST", "/containers/create", b"{not json")
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["message"].startswith("invalid JSON")
    status, _, body = raw(agent, "POST", "/containers/create", b'{"Image": "busybox", "Cmd": 5}')
    assert status == 400
    status, _, _ = raw(agent, "GET", "/no/such/endpoint")
    assert status == 404
    bad_types = b'{"Image": "busybox", "HostConfig": {"Memory": "lots"}}'
    status, _, body = raw(agent, "POST", "/containers/create", bad_types)
    assert status == 400 and "invalid container configuration" in json.loads(body)["message"]
    status, _, body = raw_huge(agent)
    assert status == 400 and "too large" in json.loads(body)["message"]
    assert ok(agent.docker("version", "--format", "{{.Server.Os}}")).strip() == "linux"


def test_events_follow_a_container_through_its_life(agent):
    since = str(int(time.time()) - 1)
    ok(agent.docker("run", "--rm", "--name", "eventful", "busybox", "true"))
    deadline = time.monotonic() + PATIENCE
    actions: list[str] = []
    while "destroy" not in actions and time.monotonic() < deadline:
        until = str(int(time.time()) + 1)
        out = ok(
            agent.docker(
                "events",
                "--since",
                since,
                "--until",
                until,
                "--filter",
                "type=container",
                "--format",
                "{{.Action}} {{.Actor.Attributes.name}}",
            )
        )
        actions = [line.split()[0] for line in out.splitlines() if line.endswith(" eventful")]
    assert actions[:2] == ["create", "start"]
    assert "die" in actions and actions[-1] == "destroy"


def test_system_df_and_prune(agent):
    ok(agent.docker("run", "--name", "leftover", "busybox", "true"))
    df = ok(agent.docker("system", "df", "--format", "{{.Type}} {{.TotalCount}}"))
    assert "Containers" in df and "Images" in df
    pruned = ok(agent.docker("container", "prune", "-f"))
    assert "Deleted Containers" in pruned
    assert "leftover" not in ok(agent.docker("ps", "-a", "--format", "{{.Names}}"))


def test_a_terminal_run_and_exec(agent, tmp_path):
    """`docker run -it` and `docker exec -it` under a real pseudo-terminal (script(1))."""
    script = shutil.which("script")
    assert script, "util-linux's script is missing"
    env = {**os.environ, "DOCKER_HOST": agent.url}

    def under_terminal(cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [script, "-qec", cmd, "/dev/null"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            input="",
        )

    out = under_terminal("docker run -it --rm busybox sh -c 'tty; echo size $(stty size)'")
    assert "/dev/pts/0" in out.stdout, out.stdout + out.stderr
    ok(agent.docker("run", "-d", "--name", "shell", "busybox", "sleep", "60"))
    out = under_terminal("docker exec -it shell sh -c 'tty; exit 4'")
    assert "/dev/pts/" in out.stdout and out.returncode == 4, out.stdout + out.stderr
    ok(agent.docker("rm", "-f", "shell"))


def test_fifty_docker_runs_at_once(agent):
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        results = list(
            pool.map(
                lambda i: agent.docker("run", "--rm", "busybox", "echo", str(i), timeout=120),
                range(50),
            )
        )
    assert [r.returncode for r in results] == [0] * 50
    assert sorted(int(r.stdout) for r in results) == list(range(50))


def test_a_thousand_concurrent_list_requests(agent):
    def one(_: int) -> int:
        return raw(agent, "GET", "/containers/json?all=1")[0]

    with concurrent.futures.ThreadPoolExecutor(100) as pool:
        statuses = list(pool.map(one, range(1000)))
    assert statuses == [200] * 1000


def test_the_list_shows_each_change_at_once_though_it_is_cached(agent):
    """GET /containers/json is answered from a cache: whatever the CLI just did shows in the
    very next list, asked on the same keep-alive connection."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(agent.socket))
    conn = http.client.HTTPConnection("localhost")
    conn.sock = sock

    def states() -> dict[str, str]:
        conn.request("GET", "/v1.41/containers/json?all=1")
        rows = json.loads(conn.getresponse().read())
        return {row["Names"][0]: f"{row['State']} {row['Status']}" for row in rows}

    assert "/cached" not in states()
    ok(agent.docker("create", "--name", "cached", "busybox", "sleep", "60"))
    assert states()["/cached"] == "created Created"
    ok(agent.docker("start", "cached"))
    assert states()["/cached"].startswith("running Up ")
    ok(agent.docker("stop", "-t", "0", "cached"))
    assert states()["/cached"].startswith("exited Exited (137) ")
    ok(agent.docker("rm", "cached"))
    assert "/cached" not in states()
    ok(agent.docker("run", "--rm", "--name", "brief", "busybox", "true"))
    assert "/brief" not in states()
    ok(agent.docker("run", "-d", "--name", "ender", "busybox", "sh", "-c", "exit 3"))
    deadline = time.monotonic() + PATIENCE  # it ends on its own: nobody asks the engine
    while not states()["/ender"].startswith("exited") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert states()["/ender"].startswith("exited Exited (3) ")
    ok(agent.docker("rm", "ender"))
    conn.close()


def test_a_client_that_leaves_mid_attach_or_mid_pull(agent):
    ok(
        agent.docker(
            "run",
            "-d",
            "--name",
            "talker",
            "busybox",
            "sh",
            "-c",
            "while true; do echo tick; sleep 0.05; done",
        )
    )
    follower = subprocess.Popen(
        ["docker", "logs", "-f", "talker"],
        env={**os.environ, "DOCKER_HOST": agent.url},
        stdout=subprocess.PIPE,
    )
    follower.stdout.readline()
    follower.kill()
    follower.wait()
    attach = subprocess.Popen(
        ["docker", "attach", "talker"],
        env={**os.environ, "DOCKER_HOST": agent.url},
        stdout=subprocess.PIPE,
    )
    attach.stdout.readline()
    attach.kill()
    attach.wait()
    assert ok(agent.docker("ps", "--format", "{{.Names}}")).split() == ["talker"]
    ok(agent.docker("rm", "-f", "talker"))
    assert ok(agent.docker("version", "--format", "{{.Server.Os}}")).strip() == "linux"


def test_save_and_load_round_trip(agent, tmp_path):
    ok(agent.docker("pull", "busybox"))
    image_id = ok(agent.docker("inspect", "-f", "{{.Id}}", "busybox")).strip()
    ok(agent.docker("tag", "busybox", "carried:1"))
    archive = tmp_path / "images.tar"
    ok(agent.docker("save", "-o", str(archive), "carried:1"))
    ok(agent.docker("rmi", "carried:1"))
    assert "Loaded image: carried:1" in ok(agent.docker("load", "-i", str(archive)))
    assert ok(agent.docker("inspect", "-f", "{{.Id}}", "carried:1")).strip() == image_id
    assert ok(agent.docker("run", "--rm", "carried:1", "echo", "loaded")) == "loaded\n"
    ok(agent.docker("rmi", "carried:1"))


def test_load_refuses_what_is_not_an_image(agent, tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    result = agent.docker("load", "-i", str(junk))
    assert result.returncode != 0 and "not an image archive" in result.stderr
    layer = ik.tar_bytes([ik.file("x", b"real")])
    image = ik.build_image([layer], diff_ids=[ik.sha256_digest(b"lie")])
    lying = tmp_path / "lying.tar"
    with tarfile.open(lying, "w") as tar:
        for name, data in (
            ("config.json", image.config.data),
            ("layer/layer.tar", layer),
            (
                "manifest.json",
                json.dumps(
                    [
                        {
                            "Config": "config.json",
                            "RepoTags": ["liar:1"],
                            "Layers": ["layer/layer.tar"],
                        }
                    ]
                ).encode(),
            ),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    result = agent.docker("load", "-i", str(lying))
    assert result.returncode != 0 and "does not match the image config" in result.stderr
    assert "liar" not in ok(agent.docker("images", "--format", "{{.Repository}}"))


def test_a_client_that_leaves_mid_pull(tmp_path, registry):
    """The pull finishes (or fails) on its own; the store stays consistent; the next pull works."""
    image = ik.build_image([ik.busybox_layer(), ik.random_layer(3 << 20, seed=21)])
    ik.RegistryClient(registry.url).push_image("library/slowpoke", "latest", image)
    with FakeServer(proxy_to(registry.url, bytes_per_second=1 << 20)) as slow:
        server = AgentServer(tmp_path, slow)
        try:
            env = {**os.environ, "DOCKER_HOST": server.url}
            puller = subprocess.Popen(
                ["docker", "pull", "slowpoke"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            puller.stdout.readline()
            time.sleep(0.5)
            puller.kill()
            puller.wait()
            assert ok(server.docker("version", "--format", "{{.Server.Os}}")).strip() == "linux"
            ok(server.docker("pull", "slowpoke", timeout=120))
            assert ok(server.docker("run", "--rm", "slowpoke", "true")) == ""
            leftovers = list((server.data_root / "image" / "tmp").iterdir())
            assert leftovers == []
        finally:
            server.stop()


def test_the_socket_goes_to_the_named_group_like_dockerds_dash_g(tmp_path):
    """The VM's login user reaches the engine through the socket's group (0660), not as root."""
    sock = tmp_path / "g.sock"
    cmd = ["vmctl-agent", "serve", "--listen", f"unix://{sock}", "--data-root", str(tmp_path)]
    agent = subprocess.Popen([*cmd, "--group", "daemon"], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + PATIENCE
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        info = sock.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o660, grp.getgrnam("daemon").gr_gid)
    finally:
        agent.terminate()
        agent.wait(PATIENCE)

    missing = subprocess.run([*cmd, "--group", "no-such-group"], capture_output=True, text=True)
    assert missing.returncode != 0
    assert "group 'no-such-group' does not exist" in missing.stderr
    assert not sock.exists()


def test_pulled_images_are_durable_when_the_pull_returns(tmp_path, registry):
    """A VM killed right after `docker pull` answered (host crash, force quit) must keep the
    image: the engine syncs it before it reports the pull done. (The VM test kills QEMU.)"""
    push_test_images(registry)
    agent = AgentServer(tmp_path, registry)
    try:
        ok(agent.docker("pull", "hello-world"))
        records = list((agent.data_root / "image" / "images").glob("*.json"))
        assert records
        assert [json.loads(p.read_text()).get("boot_id") for p in records] == [""]
    finally:
        agent.stop()
