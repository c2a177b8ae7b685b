"""The same Dockerfiles and contexts built by our classic builder and by Debian's dockerd
(20.10, on a private socket, no bridge, no iptables): the images must agree in config,
history and every layer's entries (names, types, modes, owners, link targets, sizes, bytes).

Where they differ by design it is normalised here, and only there: content hashes in COPY and
ADD history lines (dockerd hashes tar headers), and the newer dockerd wording we follow
(`--chown=X ` with its space, HEALTHCHECK with StartInterval). Heredocs and `--chmod`, which
dockerd 20.10's classic builder lacks, are covered in test_build_cli.py."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from agentserver import serving

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the engines need root (CI is root)"),
]

CORPUS = {
    "everything": (
        "ARG BASE=busybox\n"
        "FROM ${BASE} AS build\n"
        "ARG WHO\n"
        'RUN mkdir /out && echo "made by ${WHO:-nobody}" > /out/result && chmod 600 /out/result'
        " && ln -s result /out/link\n"
        "FROM busybox\n"
        'LABEL org.example.name="my app" version=1\n'
        "EXPOSE 8080 9000-9001/udp\n"
        'ENV A=1 B="two words"\n'
        "WORKDIR app\n"
        "COPY --from=build --chown=1000:2000 /out/ ./\n"
        "COPY src/ /opt/src/\n"
        "COPY src/main.sh src/sub/y /opt/flat/\n"
        "ADD archive.tar /unpacked/\n"
        "USER 1000:1000\n"
        "VOLUME /data\n"
        "STOPSIGNAL SIGINT\n"
        "HEALTHCHECK --interval=5s --retries=2 CMD echo ok\n"
        'ENTRYPOINT ["sh", "-c"]\n'
        'CMD ["ls -ln"]\n'
    ),
    "whiteouts": (
        "FROM busybox\n"
        "RUN rm -rf /var && mkdir /var && echo fresh > /var/only\n"
        "RUN rm /bin/vi && mkdir -p /srv/x && touch /srv/x/y && ln /srv/x/y /srv/x/hard\n"
        "RUN rm -rf /srv/x\n"
    ),
    "copy rules": (
        "FROM busybox\n"
        "WORKDIR /w\n"
        "COPY src/main.sh renamed\n"
        "COPY src/main.sh src/sub/ ./many/\n"
        "COPY src/m*.sh /globbed/\n"
        "COPY src /as-dir\n"
        "COPY src/sub /etc/\n"
        "ENV WHERE=/var/lib\n"
        "COPY src/sub/y $WHERE/y\n"
        "ARG OWNER=5:6\n"
        "COPY --chown=$OWNER src/main.sh /owned\n"
    ),
    "config": (
        "FROM busybox\n"
        "ENV PATH=/opt/bin:$PATH HOME=/root\n"
        "ARG V=1\n"
        "ENV FROM_ARG=$V\n"
        "MAINTAINER someone <s@example.com>\n"
        'SHELL ["/bin/sh", "-ec"]\n'
        "RUN echo $V > /v\n"
        "ONBUILD RUN echo child\n"
        "USER nobody\n"
        "ENTRYPOINT echo entry\n"
    ),
    "args and env": (
        "ARG TOP=top-default\n"
        "FROM busybox\n"
        "ARG TOP\n"
        "ARG WHO=${TOP}-stage\n"
        "ENV GREETING=hello WHO_ENV=${WHO:-none} EMPTY=${NOTSET:+set}\n"
        "ENV OLD_STYLE keeps spaces\n"
        'RUN echo "$GREETING $WHO $TOP" > /out && env | sort | grep -v HOSTNAME > /env\n'
        "USER nobody\n"
        "RUN id > /tmp/id\n"
    ),
    "links and ignore": (
        "FROM busybox\n"
        "COPY . /ctx/\n"
        "COPY --from=busybox /bin/busybox /copied/\n"
        "ADD archive.tar /etc/\n"
        "RUN ln -s /ctx/src /src-link && mkdir /d && ln /copied/busybox /d/hard\n"
    ),
}
IGNORE = "ignored*\n**/sub\n!src/sub/y\n"


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent"), registry) as server:
        yield server


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory, registry, agent):
    """Debian's dockerd on a private socket, with busybox from the same registry."""
    binary = shutil.which("dockerd")
    assert binary, "dockerd is missing: apt-get install docker.io"
    d = tmp_path_factory.mktemp("dockerd")
    sock = f"unix://{d / 'docker.sock'}"
    argv = [
        binary, "--data-root", str(d / "data"), "--exec-root", str(d / "exec"), "-H", sock,
        "--pidfile", str(d / "docker.pid"), "--insecure-registry=127.0.0.0/8",
        "--iptables=false", "--ip-forward=false", "--bridge=none",
    ]  # fmt: skip
    with open(d / "dockerd.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(sock, proc, d / "dockerd.log")
        host = registry.url.removeprefix("http://")
        _docker(sock, "pull", f"{host}/library/busybox:latest")
        _docker(sock, "tag", f"{host}/library/busybox:latest", "busybox:latest")
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert str(d) not in Path("/proc/self/mountinfo").read_text()


def _wait_ready(sock: str, proc: subprocess.Popen, log: Path) -> None:
    while subprocess.run(["docker", "-H", sock, "version"], capture_output=True).returncode:
        assert proc.poll() is None, log.read_text()
        time.sleep(0.2)


def _docker(sock: str, *args: str, **kw) -> str:
    result = subprocess.run(
        ["docker", "-H", sock, *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "DOCKER_BUILDKIT": "0"}, **kw,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def context(tmp_path: Path, dockerfile: str) -> Path:
    (tmp_path / "src/sub").mkdir(parents=True)
    (tmp_path / "Dockerfile").write_text(dockerfile)
    (tmp_path / "src/main.sh").write_text("code\n")
    (tmp_path / "src/main.sh").chmod(0o755)
    (tmp_path / "src/sub/y").write_text("x\n")
    (tmp_path / ".dockerignore").write_text(IGNORE)
    (tmp_path / "ignored.txt").write_text("left out\n")
    os.symlink("src/main.sh", tmp_path / "link-in-context")
    with tarfile.open(tmp_path / "archive.tar", "w") as tar:
        info = tarfile.TarInfo("inner/tool")
        info.size, info.mode, info.uid, info.gid, info.mtime = 4, 0o4755, 7, 8, 1_600_000_000
        tar.addfile(info, io.BytesIO(b"tool"))
    return tmp_path


def image(sock: str, name: str) -> tuple[dict, list[dict]]:
    """The config and each layer's entries: name -> (type, mode, uid, gid, link, sha256)."""
    data = subprocess.run(["docker", "-H", sock, "save", name], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(data.stdout)) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))[0]
        config = json.load(outer.extractfile(manifest["Config"]))
        layers = [_entries(outer.extractfile(name)) for name in manifest["Layers"]]
    return config, layers


def _entries(layer) -> dict:
    with tarfile.open(fileobj=layer) as tar:
        return {m.name.rstrip("/"): _entry(tar, m) for m in tar.getmembers()}


def _entry(tar: tarfile.TarFile, m: tarfile.TarInfo) -> tuple:
    content = hashlib.sha256(tar.extractfile(m).read()).hexdigest() if m.isreg() else ""
    return m.type, m.mode, m.uid, m.gid, m.linkname, content


def history(config: dict) -> list[tuple[str, bool]]:
    lines = []
    for entry in config["history"]:
        text = re.sub(r"(file|dir|multi):[0-9a-f]{64}", r"\1:HASH", entry["created_by"])
        text = re.sub(r"--chown=(\S+?) ?(file|dir|multi):", r"--chown=\1 \2:", text)
        text = re.sub(r'(HEALTHCHECK &\{\[.*\] "[^"]*" "[^"]*" "[^"]*")( "[^"]*")?', r"\1", text)
        lines.append((text, bool(entry.get("empty_layer"))))
    return lines


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_our_images_are_dockerds(agent, dockerd, tmp_path, name):
    ctx = context(tmp_path, CORPUS[name])
    tag = "corpus-" + name.replace(" ", "-")
    _docker(dockerd, "build", "--build-arg", "WHO=me", "-t", tag, str(ctx))
    _docker(agent.url, "build", "--build-arg", "WHO=me", "-t", tag, str(ctx))
    theirs, their_layers = image(dockerd, tag)
    ours, our_layers = image(agent.url, tag)
    their_config, our_config = dict(theirs["config"]), dict(ours["config"])
    their_config.pop("Image"), our_config.pop("Image")
    assert our_config == their_config
    assert ours.get("author") == theirs.get("author")
    assert history(ours) == history(theirs)
    assert len(our_layers) == len(their_layers)
    for mine, reference in zip(our_layers, their_layers, strict=True):
        assert mine == reference
