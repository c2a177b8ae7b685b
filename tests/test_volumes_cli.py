"""Volumes, binds and tmpfs through the real docker CLI against `vmctl-agent serve` on this
host (the host stands in for the VM): `-v`, `--mount`, `--tmpfs`, `--volumes-from` and
`docker volume ...`, with Docker's shapes and words, and nothing left behind by a refusal."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import time

import imagekit as ik
import pytest
from agentserver import AgentServer, push_test_images, serving

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")

SEED = b"from the image\n"


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-vol"), registry) as server:
        push_volume_image(registry)
        ok(server.docker("pull", "busybox"))
        ok(server.docker("pull", "withvolume"))
        yield server


def push_volume_image(registry) -> None:
    """`withvolume`: busybox with `VOLUME /data` and files there, owned by nobody."""
    extra = ik.tar_bytes(
        [
            ik.directory("data", mode=0o750, uid=65534, gid=65534),
            ik.file("data/seed", SEED, uid=65534, gid=65534),
            ik.symlink("data/link", "seed"),
        ]
    )
    config = {"Cmd": ["/bin/sh"], "Env": [ik.DEFAULT_PATH], "Volumes": {"/data": {}}}
    busybox = ik.busybox_layer(sorted(ik.busybox_applets() - {"busybox"}))
    image = ik.build_image([busybox, extra], config=config)
    ik.RegistryClient(registry.url).push_image("library/withvolume", "latest", image)


def ok(result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(result, words: str) -> str:
    assert result.returncode != 0, result.stdout
    assert words in result.stderr, result.stderr
    return result.stderr


def mount_count(agent) -> int:
    """This session's mounts on the host (other sessions on a shared machine mount too)."""
    with open("/proc/self/mountinfo") as f:
        return sum(str(agent.workdir.parent) in line for line in f)


def inspect(agent, what: str) -> dict:
    return json.loads(ok(agent.docker("inspect", what)))[0]


def volumes(agent) -> set[str]:
    return set(ok(agent.docker("volume", "ls", "-q")).split())


# -- binds ------------------------------------------------------------------------------------


def test_a_bind_mount_reads_and_writes_the_vms_directory(agent, tmp_path):
    (tmp_path / "in").write_text("from the host\n")
    script = "cat /src/in; echo from the container > /src/out"
    out = ok(agent.docker("run", "--rm", "-v", f"{tmp_path}:/src", "busybox", "sh", "-c", script))
    assert out == "from the host\n"
    assert (tmp_path / "out").read_text() == "from the container\n"
    ro = agent.docker("run", "--rm", "-v", f"{tmp_path}:/src:ro", "busybox", "touch", "/src/x")
    refused(ro, "Read-only file system")
    assert not (tmp_path / "x").exists()


def test_a_file_bind_and_mount_flag_and_inspects_shape(agent, tmp_path):
    (tmp_path / "conf").write_text("key=value\n")
    name = "bind-shapes"
    ok(
        agent.docker(
            "run", "--name", name,
            "--mount", f"type=bind,src={tmp_path / 'conf'},dst=/etc/app.conf,readonly",
            "-v", f"{tmp_path}:/work:rw,z",
            "busybox", "cat", "/etc/app.conf",
        )
    )  # fmt: skip
    info = inspect(agent, name)
    assert info["HostConfig"]["Binds"] == [f"{tmp_path}:/work:rw,z"]
    assert info["HostConfig"]["Mounts"][0]["Type"] == "bind"
    by_place = {m["Destination"]: m for m in info["Mounts"]}
    assert by_place["/etc/app.conf"] == {
        "Type": "bind", "Source": str(tmp_path / "conf"), "Destination": "/etc/app.conf",
        "Mode": "", "RW": False, "Propagation": "rprivate",
    }  # fmt: skip
    assert by_place["/work"]["Mode"] == "rw,z" and by_place["/work"]["RW"] is True
    assert ok(agent.docker("logs", name)) == "key=value\n"
    ok(agent.docker("rm", name))


def test_a_symlink_in_the_image_cannot_aim_a_mount_at_the_host(agent, registry, tmp_path):
    """An image's `/aim -> <a host path>` resolves inside the container: the mount point is
    made in the container's own layer, never on the host."""
    host_target = tmp_path / "host-target"
    host_target.mkdir()
    layer = ik.tar_bytes([ik.symlink("aim", str(host_target))])
    busybox = ik.busybox_layer(sorted(ik.busybox_applets() - {"busybox"}))
    image = ik.build_image([busybox, layer], config={"Env": [ik.DEFAULT_PATH]})
    ik.RegistryClient(registry.url).push_image("library/aiming", "latest", image)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("mounted\n")
    out = agent.docker("run", "--rm", "-v", f"{tmp_path / 'src'}:/aim/sub", "aiming",
                       "cat", "/aim/sub/f")  # fmt: skip
    assert ok(out) == "mounted\n"
    assert list(host_target.iterdir()) == []


# -- named and anonymous volumes ---------------------------------------------------------------


def test_a_named_volume_is_made_on_first_use_and_outlives_its_containers(agent):
    write = "echo kept > /data/f"
    ok(agent.docker("run", "--rm", "-v", "keep:/data", "busybox", "sh", "-c", write))
    assert ok(agent.docker("run", "--rm", "-v", "keep:/data", "busybox", "cat", "/data/f")) == (
        "kept\n"
    )
    info = json.loads(ok(agent.docker("volume", "inspect", "keep")))[0]
    assert info["Driver"] == "local" and info["Scope"] == "local"
    assert info["Mountpoint"] == str(agent.data_root / "volumes" / "keep" / "_data")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["CreatedAt"])
    assert (agent.data_root / "volumes" / "keep" / "_data" / "f").read_text() == "kept\n"
    ok(agent.docker("volume", "rm", "keep"))


def test_an_empty_volume_receives_the_images_content(agent):
    out = ok(agent.docker("run", "--rm", "-v", "seeded:/data", "withvolume", "ls", "-ln", "/data"))
    assert "seed" in out and "link -> seed" in out
    data = agent.data_root / "volumes" / "seeded" / "_data"
    assert (data / "seed").read_bytes() == SEED
    assert (data / "seed").stat().st_uid == 65534 and data.stat().st_uid == 65534
    assert stat.S_IMODE(data.stat().st_mode) == 0o750
    (data / "seed").write_text("changed\n")  # not empty any more: never copied over again
    again = ok(agent.docker("run", "--rm", "-v", "seeded:/data", "withvolume", "cat", "/data/seed"))
    assert again == "changed\n"
    nocopy = agent.docker("run", "--rm", "-v", "bare:/data:nocopy", "withvolume", "ls", "/data")
    assert ok(nocopy) == ""
    ok(agent.docker("volume", "rm", "seeded", "bare"))


def test_the_images_volume_is_anonymous_and_goes_with_rm_dash_v(agent):
    before = volumes(agent)
    ok(agent.docker("run", "--name", "anon", "withvolume", "cat", "/data/seed"))
    (made,) = volumes(agent) - before
    assert re.fullmatch(r"[0-9a-f]{64}", made)
    (mount,) = inspect(agent, "anon")["Mounts"]
    assert mount["Type"] == "volume" and mount["Name"] == made and mount["Destination"] == "/data"
    labels = json.loads(ok(agent.docker("volume", "inspect", made)))[0]["Labels"]
    assert labels == {"com.docker.volume.anonymous": ""}
    ok(agent.docker("rm", "-v", "anon"))
    assert volumes(agent) == before


def test_run_rm_takes_its_anonymous_volumes_and_keeps_named_ones(agent):
    before = volumes(agent)
    ok(agent.docker("run", "--rm", "-v", "/scratch", "-v", "named-kept:/n", "busybox", "true"))
    assert volumes(agent) == before | {"named-kept"}
    ok(agent.docker("volume", "rm", "named-kept"))


def test_volumes_from_shares_another_containers_mounts(agent, tmp_path):
    script = "echo shared > /data/f"
    ok(agent.docker("run", "--name", "source", "-v", "from-me:/data", "-v",
                    f"{tmp_path}:/host", "busybox", "sh", "-c", script))  # fmt: skip
    out = ok(agent.docker("run", "--rm", "--volumes-from", "source", "busybox",
                          "sh", "-c", "cat /data/f; ls -d /host"))  # fmt: skip
    assert out == "shared\n/host\n"
    ro = agent.docker("run", "--rm", "--volumes-from", "source:ro", "busybox", "touch", "/data/g")
    refused(ro, "Read-only file system")
    ok(agent.docker("rm", "source"))
    ok(agent.docker("volume", "rm", "from-me"))


def test_a_volumes_subpath_is_mounted_and_a_symlink_there_refused(agent):
    setup = "mkdir -p /v/dir && echo inside > /v/dir/f && ln -s /etc /v/escape"
    ok(agent.docker("run", "--rm", "-v", "subbed:/v", "busybox", "sh", "-c", setup))
    mount = "type=volume,src=subbed,dst=/m,volume-subpath=dir"
    assert ok(agent.docker("run", "--rm", "--mount", mount, "busybox", "cat", "/m/f")) == (
        "inside\n"
    )
    escape = "type=volume,src=subbed,dst=/m,volume-subpath=escape"
    refused(agent.docker("run", "--rm", "--mount", escape, "busybox", "ls", "/m"),
            "cannot mount volume subpath escape: escape is a symlink")  # fmt: skip
    ok(agent.docker("volume", "rm", "subbed"))


def test_ps_filters_by_volume_name_or_mount_point(agent):
    ok(agent.docker("create", "--name", "with-vol", "-v", "filtered:/data", "busybox"))
    ok(agent.docker("create", "--name", "without", "busybox"))
    by_name = ok(agent.docker("ps", "-a", "--filter", "volume=filtered", "--format", "{{.Names}}"))
    by_place = ok(agent.docker("ps", "-a", "--filter", "volume=/data", "--format", "{{.Names}}"))
    assert by_name.split() == by_place.split() == ["with-vol"]
    assert ok(agent.docker("ps", "-a", "--filter", "name=with-vol", "--format", "{{.Mounts}}")) == (
        "filtered\n"
    )
    ok(agent.docker("rm", "with-vol", "without"))
    ok(agent.docker("volume", "rm", "filtered"))


# -- tmpfs ------------------------------------------------------------------------------------


def test_tmpfs_size_mode_and_a_full_one_harms_nothing_else(agent):
    ok(agent.docker("run", "-d", "--name", "neighbour", "--tmpfs", "/t:size=1m", "busybox",
                    "sleep", "60"))  # fmt: skip
    fill = "dd if=/dev/zero of=/t/big bs=1024 count=2048"
    full = agent.docker("run", "--rm", "--tmpfs", "/t:size=1m", "busybox", "sh", "-c", fill)
    refused(full, "No space left on device")
    fine = ok(agent.docker("exec", "neighbour", "sh", "-c", "echo ok > /t/f && cat /t/f"))
    assert fine == "ok\n"
    script = "stat -c %a /m; grep ' /m ' /proc/mounts"
    out = ok(agent.docker("run", "--rm", "--mount", "type=tmpfs,dst=/m,tmpfs-size=2097152,"
                          "tmpfs-mode=1770", "busybox", "sh", "-c", script))  # fmt: skip
    mode, line = out.splitlines()
    assert mode == "1770" and "size=2048k" in line and "noexec" in line and "nosuid" in line
    assert inspect(agent, "neighbour")["HostConfig"]["Tmpfs"] == {"/t": "size=1m"}
    assert inspect(agent, "neighbour")["Mounts"] == []
    ok(agent.docker("rm", "-f", "neighbour"))


# -- the volumes API --------------------------------------------------------------------------


def test_volume_create_ls_filters_inspect_and_rm(agent):
    ok(agent.docker("volume", "create", "--label", "team=a", "alpha"))
    ok(agent.docker("volume", "create", "beta"))
    generated = ok(agent.docker("volume", "create")).strip()
    assert re.fullmatch(r"[0-9a-f]{64}", generated)
    assert ok(agent.docker("volume", "ls", "-q", "--filter", "label=team=a")).split() == ["alpha"]
    named = ok(agent.docker("volume", "ls", "-q", "--filter", "name=alp")).split()
    assert named == ["alpha"]
    assert "beta" in ok(agent.docker("volume", "ls", "-q", "--filter", "driver=local"))
    ok(agent.docker("create", "--name", "user", "-v", "beta:/b", "busybox"))
    dangling = ok(agent.docker("volume", "ls", "-q", "--filter", "dangling=true")).split()
    assert "alpha" in dangling and "beta" not in dangling
    in_use = ok(agent.docker("volume", "ls", "-q", "--filter", "dangling=false")).split()
    assert in_use == ["beta"]
    user_id = inspect(agent, "user")["Id"]
    refused(agent.docker("volume", "rm", "beta"), f"remove beta: volume is in use - [{user_id}]")
    refused(agent.docker("volume", "rm", "-f", "beta"), "volume is in use")
    refused(agent.docker("volume", "inspect", "nosuch"), "no such volume")
    ok(agent.docker("volume", "rm", "-f", "nosuch"))
    ok(agent.docker("rm", "user"))
    ok(agent.docker("volume", "rm", "alpha", "beta", generated))


def test_prune_takes_anonymous_volumes_unless_all(agent):
    ok(agent.docker("volume", "create", "prune-named"))
    ok(agent.docker("run", "--name", "left", "-v", "/anon", "busybox", "true"))
    anon = inspect(agent, "left")["Mounts"][0]["Name"]
    ok(agent.docker("rm", "left"))  # without -v: its volume stays, dangling
    assert anon in volumes(agent)
    out = ok(agent.docker("volume", "prune", "-f"))
    assert anon in out and "prune-named" not in out
    assert "prune-named" in volumes(agent) and anon not in volumes(agent)
    out = ok(agent.docker("volume", "prune", "-af"))
    assert "prune-named" in out and "prune-named" not in volumes(agent)


def test_system_df_counts_volumes(agent):
    ok(agent.docker("run", "--name", "df", "-v", "counted:/d", "busybox", "sh", "-c",
                    "dd if=/dev/zero of=/d/f bs=1024 count=64"))  # fmt: skip
    out = ok(agent.docker("system", "df", "-v", "--format", "{{json .}}"))
    rows = json.loads(out)["Volumes"]
    (row,) = [r for r in rows if r["Name"] == "counted"]
    assert row["Links"] == "1" and row["Size"] in ("65.54kB", "65.5kB")
    ok(agent.docker("rm", "df"))
    ok(agent.docker("volume", "rm", "counted"))


def test_driver_options_tmpfs_and_bind_devices(agent, tmp_path):
    before = mount_count(agent)
    ok(agent.docker("volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
                    "--opt", "o=size=1m", "small"))  # fmt: skip
    info = json.loads(ok(agent.docker("volume", "inspect", "small")))[0]
    assert info["Options"] == {"device": "tmpfs", "o": "size=1m", "type": "tmpfs"}
    fill = "dd if=/dev/zero of=/s/big bs=1024 count=2048"
    refused(agent.docker("run", "--rm", "-v", "small:/s", "busybox", "sh", "-c", fill),
            "No space left on device")  # fmt: skip
    (tmp_path / "mine").write_text("the user's\n")
    ok(agent.docker("volume", "create", "--opt", "type=none", "--opt", "o=bind",
                    "--opt", f"device={tmp_path}", "bound"))  # fmt: skip
    out = ok(agent.docker("run", "--rm", "-v", "bound:/b", "busybox", "cat", "/b/mine"))
    assert out == "the user's\n"
    ok(agent.docker("volume", "rm", "small", "bound"))
    assert (tmp_path / "mine").read_text() == "the user's\n"  # unmounted, never deleted
    assert mount_count(agent) == before
    bad = agent.docker("volume", "create", "--opt", "foo=bar", "odd")
    refused(bad, 'create odd: invalid option: "foo"')
    refused(agent.docker("volume", "create", "--opt", "type=tmpfs", "odd"),
            'missing required option: "device"')  # fmt: skip
    assert "odd" not in volumes(agent)


# -- bad input: refused in Docker's words, nothing left behind --------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-v", "/tmp:/"], "invalid specification: destination can't be '/'"),
        (["-v", "/tmp:/proc"], "/proc cannot be mounted because it is inside /proc"),
        (["-v", "/tmp:/proc/sys"], "/proc/sys cannot be mounted because it is inside /proc"),
        (["-v", "bad@name:/x"], '"bad@name" includes invalid characters for a local volume'),
        (["-v", "/tmp:/x:rw,ro"], "invalid mode: rw,ro"),
        (["-v", "/no/such/dir:/x"], "bind source path does not exist: /no/such/dir"),
        (["--mount", "type=bind,src=/tmp,dst=/x,bind-propagation=rshared"],
         "propagation rshared is not supported"),
        (["--mount", "type=bind,src=/no/such,dst=/x"],
         'invalid mount config for type "bind": bind source path does not exist: /no/such'),
        (["--mount", "type=volume,dst=/x,readonly"],
         "must not set ReadOnly mode when using anonymous volumes"),
        (["--mount", "type=tmpfs,src=x,dst=/x"], "field Source must not be specified"),
        (["-v", "/tmp:/a", "-v", "/var:/a"], "Duplicate mount point: /a"),
        (["-v", "/tmp:/a", "--mount", "type=volume,dst=/a"], "Duplicate mount point: /a"),
        (["--tmpfs", "/t:bogus=1"], "invalid tmpfs option: 'bogus=1'"),
        (["--volumes-from", "no-such-container"], "No such container: no-such-container"),
        (["--volume-driver", "nfsplugin", "-v", "v:/v"],
         'error looking up volume plugin nfsplugin: plugin "nfsplugin" not found'),
    ],
)  # fmt: skip
def test_bad_mounts_are_refused_and_leave_nothing(agent, args, words):
    before = (mount_count(agent), volumes(agent), ok(agent.docker("ps", "-aq")))
    refused(agent.docker("create", "-v", "/made-then-undone", *args, "busybox"), words)
    assert (mount_count(agent), volumes(agent), ok(agent.docker("ps", "-aq"))) == before


def test_a_create_refused_after_its_volumes_were_made_takes_them_back(agent):
    ok(agent.docker("create", "--name", "taken", "busybox"))
    before = volumes(agent)
    taken = agent.docker("create", "--name", "taken", "-v", "undone:/u", "-v", "/anon", "busybox")
    refused(taken, 'The container name "/taken" is already in use')
    refused(agent.docker("create", "-u", "nosuchuser", "-v", "undone:/u", "busybox"),
            "unable to find user nosuchuser")  # fmt: skip
    assert volumes(agent) == before
    ok(agent.docker("rm", "taken"))


def test_mount_flag_volume_options_make_the_volume(agent):
    spec = ("type=volume,src=optioned,dst=/o,volume-label=made=by-mount,"
            "volume-opt=type=tmpfs,volume-opt=device=tmpfs,volume-opt=o=size=1m")  # fmt: skip
    out = ok(agent.docker("run", "--rm", "--mount", spec, "busybox", "sh", "-c",
                          "grep ' /o ' /proc/mounts"))  # fmt: skip
    assert out.startswith("tmpfs /o tmpfs") and "size=1024k" in out
    info = json.loads(ok(agent.docker("volume", "inspect", "optioned")))[0]
    assert info["Labels"] == {"made": "by-mount"} and info["Options"]["type"] == "tmpfs"
    ok(agent.docker("volume", "rm", "optioned"))
    assert not (agent.data_root / "volumes" / "optioned").exists()


def test_a_relative_bind_source_from_the_api(agent):
    """The CLI makes `./x` absolute; an API client sending it gets dockerd's answer."""
    import http.client
    import socket

    class Unix(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(str(agent.socket))

    body = {"Image": "busybox", "HostConfig": {"Binds": ["./rel:/x"]}}
    conn = Unix("localhost")
    conn.request("POST", "/v1.50/containers/create", json.dumps(body),
                 {"Content-Type": "application/json"})  # fmt: skip
    response = conn.getresponse()
    message = json.loads(response.read())["message"]
    assert response.status == 400
    assert '"./rel" includes invalid characters for a local volume name' in message
    assert "If you intended to pass a host directory, use absolute path" in message


def test_volumes_and_their_use_outlive_an_agent_killed_with_sigkill(tmp_path, registry):
    push_test_images(registry)
    agent = AgentServer(tmp_path, registry)
    try:
        assert agent.docker("volume", "create", "--label", "k=v", "durable").returncode == 0
        made = agent.docker("create", "--name", "holder", "-v", "durable:/d", "busybox")
        assert made.returncode == 0, made.stderr
        before = json.loads(agent.docker("volume", "inspect", "durable").stdout)
        agent.process.send_signal(signal.SIGKILL)
        agent.process.wait(timeout=10)
        agent.socket.unlink()
        agent = AgentServer(tmp_path, registry)
        assert json.loads(agent.docker("volume", "inspect", "durable").stdout) == before
        in_use = agent.docker("volume", "rm", "durable")
        assert "volume is in use" in in_use.stderr
        assert agent.docker("rm", "holder").returncode == 0
        assert agent.docker("volume", "rm", "durable").returncode == 0
    finally:
        agent.stop()


def test_a_rm_containers_volume_goes_even_if_it_ended_while_no_agent_ran(tmp_path, registry):
    """The shim removes a `--rm` container by itself; its anonymous volume is taken by the
    next agent that looks at the volumes."""
    push_test_images(registry)
    agent = AgentServer(tmp_path, registry)
    try:
        wait = "until [ -e /anon/go ]; do sleep 0.05; done"
        container = ok(agent.docker("run", "-d", "--rm", "-v", "/anon", "busybox", "sh", "-c",
                                    wait)).strip()  # fmt: skip
        (data,) = (agent.data_root / "volumes").glob("*/_data")
        agent.process.send_signal(signal.SIGKILL)
        agent.process.wait(timeout=10)
        agent.socket.unlink()
        (data / "go").write_text("")  # the container ends, and its shim removes it
        directory = agent.data_root / "containers" / container
        give_up = time.monotonic() + 120  # only a broken shim gets near this
        while directory.exists() or any((agent.data_root / "containers").glob(".removing-*")):
            assert time.monotonic() < give_up, "the shim never removed its --rm container"
            time.sleep(0.05)  # waits on what the shim does, not on a guess of how long
        agent = AgentServer(tmp_path, registry)
        assert ok(agent.docker("volume", "ls", "-q")) == ""
        assert not data.exists()
    finally:
        agent.stop()


def test_volume_events_through_a_containers_life(agent):
    """create (on first use), mount as it starts, unmount as it ends, destroy on rm."""
    since = str(int(time.time()) - 1)
    ok(agent.docker("run", "--rm", "-v", "evented:/e", "busybox", "true"))
    ok(agent.docker("volume", "rm", "evented"))
    give_up, actions = time.monotonic() + 30, []
    while not {"unmount", "destroy"} <= set(actions):  # unmount: as the end is seen
        assert time.monotonic() < give_up, actions
        out = ok(agent.docker("events", "--since", since, "--until", str(int(time.time()) + 1),
                              "--filter", "type=volume", "--filter", "volume=evented",
                              "--format", "{{.Action}}"))  # fmt: skip
        actions = out.split()
    assert actions[:2] == ["create", "mount"] and sorted(actions[2:]) == ["destroy", "unmount"]
    other = ok(agent.docker("events", "--since", since, "--until", str(int(time.time()) + 1),
                            "--filter", "volume=not-this-one"))  # fmt: skip
    assert other == ""


def test_binds_outside_the_shared_folders_are_denied_as_docker_desktop_does(tmp_path, registry):
    """With the host's shared folders given, a bind elsewhere is refused; nothing is made."""
    push_test_images(registry)
    shared = tmp_path / "home"
    (shared / "project").mkdir(parents=True)
    config = tmp_path / "daemon.json"
    config.write_text(json.dumps({"vmctl-shared-paths": [str(tmp_path / "also")]}))
    agent = AgentServer(tmp_path, registry, "--shared-path", str(shared), "--config", str(config))
    try:
        inside = f"{shared / 'project'}:/src"
        assert ok(agent.docker("run", "--rm", "-v", inside, "busybox", "ls", "/src")) == ""
        outside = agent.docker("run", "--rm", "-v", f"{tmp_path / 'elsewhere'}:/x", "busybox")
        refused(outside, f"mounts denied: the path {tmp_path / 'elsewhere'} is not shared")
        assert not (tmp_path / "elsewhere").exists()
        sibling = agent.docker("create", "--mount", f"type=bind,src={tmp_path}/home2,dst=/x",
                               "busybox")  # fmt: skip
        refused(sibling, "is not shared from the host")
        from_file = agent.docker("create", "-v", f"{tmp_path / 'also'}:/a", "busybox")
        refused(from_file, "bind source path does not exist")  # shared, just missing
        assert ok(agent.docker("ps", "-aq")) == ""
    finally:
        agent.stop()


def test_a_windows_hosts_paths_name_the_folders_the_vm_shares(tmp_path, registry):
    """The docker CLI on Windows sends `-v C:\\Users\\me\\src:/src`: the agent of a Windows
    host reads it as /c/Users/me/src, where the VM shares that folder; the refusals say so."""
    push_test_images(registry)
    config = tmp_path / "daemon.json"
    settings = {"vmctl-host-os": "windows", "vmctl-shared-paths": ["/c/Users/me"]}
    config.write_text(json.dumps(settings))
    agent = AgentServer(tmp_path, registry, "--config", str(config))
    try:
        for flags in (["-v", "C:\\Users\\me\\proj:/src:ro"],
                      ["--mount", "type=bind,src=C:/Users/me/proj,dst=/src"]):  # fmt: skip
            missing = agent.docker("create", *flags, "busybox")
            refused(missing, "bind source path does not exist: /c/Users/me/proj")
        other = agent.docker("create", "-v", "C:\\Users\\other:/x", "busybox")
        refused(other, "mounts denied: the path /c/Users/other is not shared from the host")
        assert ok(agent.docker("ps", "-aq")) == ""
    finally:
        agent.stop()
    assert not os.path.exists("/c"), "nothing was made on the way"
