"""`docker build` (the classic builder, DOCKER_BUILDKIT=0) with the real docker CLI against
`vmctl-agent serve`; the images it makes are inspected layer by layer."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from agentserver import serving
from contextkit import assert_nothing_left, containers, entry, ok, post, start_build, tar_of

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent"), registry) as server:
        yield server


def build(agent, context: Path, *args: str, input: str | None = None):
    env = {**os.environ, "DOCKER_HOST": agent.url, "DOCKER_CONFIG": str(agent.workdir)}
    env["DOCKER_BUILDKIT"] = "0"
    return subprocess.run(
        ["docker", "build", *args, str(context) if input is None else "-"],
        capture_output=True, text=True, env=env, input=input, timeout=300,
    )  # fmt: skip


def project(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def inspect(agent, name: str) -> dict:
    return json.loads(ok(agent.docker("image", "inspect", name)))[0]


def saved(agent, name: str) -> tarfile.TarFile:
    data = subprocess.run(
        ["docker", "save", name],
        capture_output=True, env={**os.environ, "DOCKER_HOST": agent.url}, check=True,
    ).stdout  # fmt: skip
    return tarfile.open(fileobj=io.BytesIO(data))


def layer_files(agent, name: str) -> list[dict[str, tarfile.TarInfo]]:
    """Each layer of the image as `docker save` gives it: name -> tar entry."""
    layers = []
    with saved(agent, name) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))[0]
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
                layers.append({m.name.rstrip("/"): m for m in inner.getmembers()})
    return layers


def image_config(agent, name: str) -> dict:
    """The image's config blob as `docker save` writes it (history, container_config...)."""
    with saved(agent, name) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))[0]
        return json.load(outer.extractfile(manifest["Config"]))


def test_a_build_runs_copies_and_tags(agent, tmp_path):
    ctx = project(
        tmp_path,
        {
            "Dockerfile": (
                "FROM busybox\n"
                "ENV GREETING=hello\n"
                "COPY app.txt /app/\n"
                "RUN echo $GREETING > /app/out && rm /bin/true\n"
                'CMD ["cat", "/app/out"]\n'
            ),
            "app.txt": "the app\n",
        },
    )
    result = build(agent, ctx, "-t", "built:one", "-t", "built:two")
    out = ok(result)
    assert "Step 1/5 : FROM busybox" in out and "Step 4/5 : RUN echo $GREETING" in out
    assert " ---> Running in " in out and "Successfully built " in out
    assert "Successfully tagged built:one" in out and "Successfully tagged built:two" in out
    assert ok(agent.docker("run", "--rm", "built:one")) == "hello\n"
    image = inspect(agent, "built:two")
    assert image["Config"]["Cmd"] == ["cat", "/app/out"]
    assert "GREETING=hello" in image["Config"]["Env"]
    layers = layer_files(agent, "built:one")
    copy_layer, run_layer = layers[-2], layers[-1]
    assert set(copy_layer) == {"app", "app/app.txt"}
    assert copy_layer["app/app.txt"].uid == 0 and copy_layer["app/app.txt"].mode == 0o100644
    assert "app/out" in run_layer and "bin/.wh.true" in run_layer
    assert not any(n.startswith(("proc", "sys", "dev")) for n in run_layer)
    assert containers(agent) == []


def test_the_history_and_config_are_dockerds(agent, tmp_path):
    ctx = project(
        tmp_path, {"Dockerfile": "FROM busybox\nENV A=1\nCOPY f /f\nRUN true\n", "f": "x"}
    )
    ok(build(agent, ctx, "-t", "hist"))
    config = image_config(agent, "hist")
    base = len(image_config(agent, "busybox")["history"])
    history = config["history"][base:]
    assert history[0]["created_by"] == "/bin/sh -c #(nop)  ENV A=1"
    assert history[0]["empty_layer"] is True
    assert history[1]["created_by"].startswith("/bin/sh -c #(nop) COPY file:")
    assert history[1]["created_by"].endswith(" in /f ") and "empty_layer" not in history[1]
    assert history[2] == {"created": history[2]["created"], "created_by": "/bin/sh -c true",
                          "empty_layer": True}  # fmt: skip
    assert (
        len(config["rootfs"]["diff_ids"]) == len(inspect(agent, "busybox")["RootFS"]["Layers"]) + 1
    )
    assert config["container_config"]["Cmd"] == ["/bin/sh", "-c", "true"]
    info = inspect(agent, "hist")
    assert info["Parent"].startswith("sha256:")
    assert info["ContainerConfig"]["Cmd"] == ["/bin/sh", "-c", "true"]


def test_an_unchanged_rebuild_is_all_cache_and_an_edit_reruns_from_its_copy(agent, tmp_path):
    ctx = project(
        tmp_path,
        {
            "Dockerfile": (
                "FROM busybox\nRUN echo one > /one\nCOPY a /a\nRUN cat /a > /b\nCOPY b /b2\n"
            ),
            "a": "a1",
            "b": "b1",
        },
    )
    first = ok(build(agent, ctx, "-t", "cached"))
    again = ok(build(agent, ctx, "-t", "cached"))
    assert again.count(" ---> Using cache") == 4 and "Running in" not in again
    assert first.splitlines()[-2] == again.splitlines()[-2]  # the same image
    (ctx / "a").write_text("a2")
    edited = ok(build(agent, ctx, "-t", "cached"))
    steps = edited.split("Step ")[1:]
    assert " ---> Using cache" in steps[1] and "Using cache" not in steps[2]
    assert "Running in" in steps[3] and "Using cache" not in steps[4]
    assert ok(agent.docker("run", "--rm", "cached", "cat", "/b")) == "a2"
    nocache = ok(build(agent, ctx, "--no-cache", "-t", "cached"))
    assert "Using cache" not in nocache
    assert_nothing_left(agent)


def test_multi_stage_target_build_args_file_and_iidfile(agent, tmp_path):
    ctx = project(
        tmp_path,
        {
            "docker/Build.dockerfile": (
                "ARG BASE=busybox\n"
                "FROM $BASE AS builder\n"
                "ARG WHO\n"
                "RUN mkdir /out && echo ${WHO:-nobody} > /out/who\n"
                "FROM busybox AS broken\n"
                "RUN exit 7\n"
                "FROM --platform=$BUILDPLATFORM busybox AS final\n"
                "COPY --from=builder /out/who /who\n"
                "FROM final AS last\n"
                "RUN exit 9\n"
            ),
        },
    )
    iid = tmp_path / "iid"
    args = ("-f", str(ctx / "docker/Build.dockerfile"), "--target", "final")
    out = ok(build(agent, ctx, *args, "--build-arg", "WHO=me", "--iidfile", str(iid), "-t", "ms"))
    assert "exit 7" not in out and "exit 9" not in out  # stages the target does not need
    assert iid.read_text() == inspect(agent, "ms")["Id"]
    assert ok(agent.docker("run", "--rm", "ms", "cat", "/who")) == "me\n"
    missing = build(agent, ctx, *args[:2], "--target", "nope")
    assert missing.returncode != 0 and "failed to reach build target nope" in missing.stderr


def test_context_from_stdin_and_quiet(agent, tmp_path):
    result = build(agent, tmp_path, "-q", "-t", "stdin", input="FROM busybox\nRUN echo hi > /hi\n")
    image_id = ok(result).strip()
    assert image_id == inspect(agent, "stdin")["Id"] and "Step" not in result.stdout
    assert ok(agent.docker("run", "--rm", "stdin", "cat", "/hi")) == "hi\n"


def test_a_dockerfile_from_stdin_with_a_context_directory(agent, tmp_path):
    ctx = project(tmp_path, {"f.txt": "in the context\n", ".dockerignore": "secret\n"})
    env = {**os.environ, "DOCKER_HOST": agent.url, "DOCKER_BUILDKIT": "0"}
    result = subprocess.run(
        ["docker", "build", "-f", "-", "-t", "dash-f", str(ctx)],
        input="FROM busybox\nCOPY f.txt /f\n", capture_output=True, text=True, env=env,
    )  # fmt: skip
    ok(result)
    assert ok(agent.docker("run", "--rm", "dash-f", "cat", "/f")) == "in the context\n"


def test_from_scratch(agent, tmp_path):
    ctx = project(tmp_path, {"Dockerfile": "FROM scratch\nCOPY f /f\nENV A=1\n", "f": "only"})
    ok(build(agent, ctx, "-t", "scratchy"))
    (layer,) = layer_files(agent, "scratchy")
    assert set(layer) == {"f"} and layer["f"].size == 4
    config = inspect(agent, "scratchy")["Config"]
    assert config["Env"] == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "A=1",
    ]


def test_a_failing_run_leaves_no_container_and_tags_nothing(agent, tmp_path):
    ctx = project(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo start; exit 3\n"})
    result = build(agent, ctx, "-t", "fails")
    assert result.returncode == 3
    assert (
        "The command '/bin/sh -c echo start; exit 3' returned a non-zero code: 3" in result.stderr
    )
    assert "start" in result.stdout
    assert agent.docker("image", "inspect", "fails").returncode != 0
    assert_nothing_left(agent)


@pytest.mark.parametrize(
    ("dockerfile", "files", "message"),
    [
        ("FROM busybox\nFOO bar\n", {},
         "dockerfile parse error on line 2: unknown instruction: FOO"),
        ("FROM busybox\nRUN --mount=type=cache,target=/c true\n", {},
         "the --mount option requires BuildKit"),
        ("FROM busybox\nCOPY missing /x\n", {},
         "COPY failed: file not found in build context or excluded by .dockerignore: stat missing"),
        ("FROM busybox\nCOPY ../x /x\n", {}, "forbidden path outside the build context: ../x"),
        ("FROM busybox\nCOPY a b /dst\n", {"a": "", "b": ""},
         "the destination must be a directory and end with a /"),
        ("FROM busybox\nCOPY --chown=nobody:nogroupatall a /a\n", {"a": ""},
         "can't find gid for group nogroupatall"),
        ("FROM --platform=linux/arm64 busybox\n", {}, "it builds linux/amd64"),
        ("", {}, "the Dockerfile cannot be empty"),
        ("FROM scratch\n", {}, "No image was generated. Is your Dockerfile empty?"),
        ("FROM scratch\nRUN true\n", {}, "the image has no files yet"),
    ],
)  # fmt: skip
def test_mistakes_get_dockerds_messages(agent, tmp_path, dockerfile, files, message):
    ctx = project(tmp_path, {"Dockerfile": dockerfile, **files})
    result = build(agent, ctx, "-t", "mistake")
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert agent.docker("image", "inspect", "mistake").returncode != 0
    assert_nothing_left(agent)


def test_dockerignore_and_owners_modes_in_layers(agent, tmp_path):
    ctx = project(
        tmp_path,
        {
            "Dockerfile": (
                "FROM busybox\n"
                "COPY --chown=1:2 --chmod=640 . /ctx/\n"
                "ADD archive.tar.gz /unpacked/\n"
            ),
            ".dockerignore": "*.log\n!keep.log\nsecret/\n**/tmp\n",
            "a.log": "", "keep.log": "kept", "secret/key": "k", "sub/tmp": "t", "sub/ok": "ok",
        },
    )  # fmt: skip
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as tar:
        info = tarfile.TarInfo("inner/tool")
        info.size, info.mode, info.uid, info.gid = 4, 0o4755, 7, 8
        tar.addfile(info, io.BytesIO(b"tool"))
    (ctx / "archive.tar.gz").write_bytes(payload.getvalue())
    ok(build(agent, ctx, "-t", "owners"))
    copy_layer, add_layer = layer_files(agent, "owners")[-2:]
    names = set(copy_layer)
    assert {"ctx/keep.log", "ctx/sub/ok", "ctx/Dockerfile"} <= names
    assert not names & {"ctx/a.log", "ctx/secret", "ctx/secret/key", "ctx/sub/tmp"}
    kept = copy_layer["ctx/keep.log"]
    assert (kept.uid, kept.gid, kept.mode) == (1, 2, 0o100640)  # type bits, as Go writes
    assert (copy_layer["ctx"].uid, copy_layer["ctx"].mode) == (1, 0o40640)
    tool = add_layer["unpacked/inner/tool"]
    assert (tool.uid, tool.gid, tool.mode) == (7, 8, 0o104755)


def test_add_unpacks_a_plain_tar_as_it_does_a_compressed_one(agent, tmp_path):
    """An uncompressed archive is read straight from the context (its file closed once: a
    second close once failed the build with EBADF)."""
    ctx = project(tmp_path, {"Dockerfile": "FROM busybox\nADD plain.tar /unpacked/\n"})
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w") as tar:
        info = tarfile.TarInfo("inner/note")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"plain"))
    (ctx / "plain.tar").write_bytes(payload.getvalue())
    ok(build(agent, ctx, "-t", "plain-add"))
    assert "unpacked/inner/note" in layer_files(agent, "plain-add")[-1]
    ok(agent.docker("rmi", "plain-add"))


def test_a_hostile_context_cannot_write_outside_the_build(agent, tmp_path):
    outside = tmp_path / "outside"
    cases = [
        [entry("../../escape", b"x")],
        [entry("link", kind=tarfile.SYMTYPE, link=str(outside)), entry("link/file", b"x")],
        [entry("hard", kind=tarfile.LNKTYPE, link="/etc/passwd")],
    ]
    for entries in cases:
        outside.mkdir(exist_ok=True)
        body = tar_of([entry("Dockerfile", b"FROM busybox\n"), *entries])
        status, data = post(agent, "/v1.50/build?t=hostile", body)
        assert status in (200, 400)
        if status == 200:  # `..` is taken relative to the context's root, as Docker does
            assert b"errorDetail" not in data
        assert list(outside.iterdir()) == []
    assert not (agent.data_root.parent / "escape").exists()
    assert_nothing_left(agent)


def test_compressed_contexts_and_refused_options(agent):
    body = tar_of([entry("Dockerfile", b"FROM busybox\nRUN echo zipped\n")])
    import bz2
    import gzip
    import lzma

    for compress in (gzip.compress, bz2.compress, lzma.compress):
        status, data = post(agent, "/build?t=zipped", compress(body))
        assert status == 200 and b"Successfully tagged zipped:latest" in data, data
    status, data = post(agent, "/build?cgroupparent=elsewhere", body)
    assert status == 400 and b"cgroupparent" in data
    status, data = post(agent, "/build?platform=linux/arm64", body)
    assert status == 400 and b"linux/amd64" in data
    status, data = post(agent, "/build?t=Not/Lower", body)
    assert status == 400 and b"invalid reference format" in data
    status, data = post(agent, "/build", b"not a tar at all" * 100)
    assert status == 400 and b"tar" in data
    assert_nothing_left(agent)


def test_docker_py_builds_too(agent, tmp_path):
    docker = pytest.importorskip("docker")
    ctx = project(tmp_path, {"Dockerfile": "FROM busybox\nARG X\nRUN echo $X > /x\n"})
    client = docker.DockerClient(base_url=agent.url)
    image, logs = client.images.build(path=str(ctx), tag="py:built", buildargs={"X": "py"}, rm=True)
    assert "py:built" in image.tags
    assert any("Successfully built" in chunk.get("stream", "") for chunk in logs)
    assert client.containers.run("py:built", "cat /x", remove=True) == b"py\n"
    bad = io.BytesIO(b"FROM busybox\nRUN false\n")
    with pytest.raises(docker.errors.BuildError, match="returned a non-zero code: 1"):
        client.images.build(fileobj=bad, tag="py:bad", forcerm=True)
    assert_nothing_left(agent)
    bad.seek(0)  # docker-py's default is rm=False: the step's container stays, as dockerd has it
    with pytest.raises(docker.errors.BuildError):
        client.images.build(fileobj=bad, tag="py:bad")
    (kept,) = client.containers.list(all=True)
    assert kept.attrs["Config"]["Cmd"] == ["/bin/sh", "-c", "false"]
    kept.remove()
    client.close()
    assert_nothing_left(agent)


def test_a_client_that_leaves_stops_the_running_step(agent):
    sock = start_build(agent, b"FROM busybox\nRUN echo started; sleep 1000\n", "t=left&rm=0")
    assert len(containers(agent)) == 1
    sock.close()
    deadline = time.monotonic() + 120  # the step notices within a log poll; a loaded machine
    while containers(agent) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert_nothing_left(agent)
    assert agent.docker("image", "inspect", "left").returncode != 0


def test_intermediate_images_rmi_prune_and_the_build_cache(agent, tmp_path):
    ctx = project(tmp_path, {"Dockerfile": "FROM busybox\nENV A=1\nRUN echo x > /x\nENV B=2\n"})
    image_id = ok(build(agent, ctx, "-q", "--pull", "-t", "chain")).strip()
    shown = ok(agent.docker("images", "-q", "--no-trunc"))
    everything = ok(agent.docker("images", "-a", "-q", "--no-trunc"))
    parent = inspect(agent, "chain")["Parent"]
    assert parent in everything and parent not in shown  # intermediate: only with -a
    refused = agent.docker("rmi", parent)
    assert "image has dependent child images" in refused.stderr
    df = json.loads(ok(agent.docker("system", "df", "--format", "{{json .}}")).splitlines()[-1])
    assert df["Type"] == "Build Cache" and int(df["TotalCount"]) >= 3
    ok(agent.docker("builder", "prune", "-f"))
    df = json.loads(ok(agent.docker("system", "df", "--format", "{{json .}}")).splitlines()[-1])
    assert int(df["TotalCount"]) == 0
    assert "Using cache" not in ok(build(agent, ctx, "-t", "chain"))
    new_parent = inspect(agent, "chain")["Parent"]
    assert image_id in ok(agent.docker("images", "-q", "--no-trunc"))  # dangling now
    removed = ok(agent.docker("rmi", "chain"))
    assert removed.count("Deleted:") == 3  # the image and its two untagged parents
    assert new_parent not in ok(agent.docker("images", "-a", "-q", "--no-trunc"))
    pruned = ok(agent.docker("image", "prune", "-f"))
    assert image_id in pruned and parent in pruned  # the dangling one, with its parents
    assert parent not in ok(agent.docker("images", "-a", "-q", "--no-trunc"))


def test_instructions_as_dockerd_writes_them(agent, tmp_path):
    ctx = project(
        tmp_path,
        {
            "Dockerfile": (
                "FROM busybox AS base\n"
                "ONBUILD RUN echo triggered > /onbuild\n"
                "FROM base\n"
                'SHELL ["/bin/sh", "-ec"]\n'
                "RUN <<EOF\n"
                "echo one > /doc\n"
                "echo two >> /doc\n"
                "EOF\n"
                "RUN <<EOF\n"
                "#!/bin/sh -e\n"
                'echo "via $0" > /interpreted\n'
                "EOF\n"
                "COPY <<EOT /etc/greeting\n"
                "hello ${NAME:-world}\n"
                "EOT\n"
                "ENV NAME=x PATH=/opt/bin:$PATH\n"
                "MAINTAINER someone\n"
                "USER nobody\n"
                "WORKDIR /srv/app\n"
                "ENTRYPOINT echo entry\n"
            ),
        },
    )
    ok(build(agent, ctx, "-t", "instr", "--label", "from.cli=yes"))
    image = inspect(agent, "instr")
    config = image["Config"]
    assert config["Shell"] == ["/bin/sh", "-ec"] and config["User"] == "nobody"
    assert config["Entrypoint"] == ["/bin/sh", "-ec", "echo entry"] and config["Cmd"] is None
    assert config["WorkingDir"] == "/srv/app" and image["Author"] == "someone"
    assert config["Labels"] == {"from.cli": "yes"} and not config.get("OnBuild")
    assert (
        "PATH=/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        in config["Env"]
    )
    run = ["run", "--rm", "--entrypoint", "cat", "instr"]
    assert ok(agent.docker(*run, "/interpreted")) == "via /dev/fd/3\n"  # its #! line ran it
    assert ok(agent.docker(*run, "/onbuild", "/doc", "/etc/greeting")) == (
        "triggered\none\ntwo\nhello world\n"
    )
    layers = layer_files(agent, "instr")
    workdir_layer = layers[-1]
    assert workdir_layer["srv/app"].uid == 0 and workdir_layer["srv/app"].mode == 0o40755


def test_builds_at_once_share_the_store(agent, tmp_path):
    ctx = project(tmp_path, {"Dockerfile": "FROM busybox\nCOPY f /f\nRUN cat /f > /g\n", "f": "x"})
    env = {**os.environ, "DOCKER_HOST": agent.url, "DOCKER_BUILDKIT": "0"}
    argv = ["docker", "build", "--no-cache", "-t"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": env}
    procs = [subprocess.Popen([*argv, f"together:{n}", str(ctx)], **pipes) for n in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    for n in range(3):
        assert ok(agent.docker("run", "--rm", f"together:{n}", "cat", "/g")) == "x"
    assert_nothing_left(agent)


def test_rmi_and_prune_do_not_wait_for_a_running_build(agent, tmp_path):
    """A long RUN holds no lock: other images come and go, and the build's own images stay."""
    ok(agent.docker("pull", "busybox"))
    ok(agent.docker("tag", "busybox", "spare:1"))
    body = tar_of([entry("Dockerfile", b"FROM busybox\nENV A=1\nRUN echo started; sleep 30\n")])
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(agent.socket))
    head = (
        "POST /v1.50/build?t=slow HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/x-tar\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    seen = b""
    while b'"started\\n"' not in seen:
        chunk = sock.recv(65536)
        assert chunk, seen
        seen += chunk
    try:
        ok(agent.docker("rmi", "spare:1", timeout=20))  # would wait 30 s for the build
        ok(agent.docker("image", "prune", "-f", timeout=20))
        left = ok(agent.docker("images", "-a", "-q", "--no-trunc"))
        _base, env_step = re.findall(r" ---> ([0-9a-f]{12})\\n", seen.decode())[:2]
        assert f"sha256:{env_step}" in left  # the ENV step's image, dangling yet: pinned
    finally:
        sock.close()
    deadline = time.monotonic() + 120
    while containers(agent) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert_nothing_left(agent)
