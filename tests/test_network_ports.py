"""Published ports in the engine (the agent in a network namespace the test made), with the
docker CLI, docker-py and docker compose: -p and -P, TCP and UDP, `docker port`, the PORTS
column and NetworkSettings.Ports, a taken port, bad ports, and a compose project."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import docker
import pytest
from netkit import (
    HTTPD,
    clear,
    fetch_when_served,
    http_get,
    in_netns,
    install_compose,
    netns_agent,
    ok,
    outside,
    port_bound,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with netns_agent(tmp_path_factory.mktemp("portagent"), registry) as server:
        yield server


@pytest.fixture
def clean(agent):
    yield agent
    clear(agent)


def test_published_tcp_port_is_bound_when_run_returns(clean):
    agent = clean
    ok(agent.docker("run", "-d", "--name", "site", "-p", "8080:80", "busybox", "sh", "-c", HTTPD))
    assert in_netns(agent.pid, port_bound, 8080)
    assert fetch_when_served(agent, 8080).endswith(b"hello\n")
    assert ok(agent.docker("port", "site")).strip() == "80/tcp -> 0.0.0.0:8080"
    assert ok(agent.docker("ps", "--format", "{{.Ports}}")).strip() == "0.0.0.0:8080->80/tcp"
    taken = agent.docker("run", "-d", "--name", "late", "-p", "8080:80", "busybox", "true")
    assert "Bind for 0.0.0.0:8080 failed: port is already allocated" in taken.stderr
    assert len(agent.veths_settled(1)) == 1  # the failed start left nothing plugged
    ok(agent.docker("stop", "-t", "0", "site"))
    assert not in_netns(agent.pid, port_bound, 8080)  # released at once
    assert ok(agent.docker("port", "site")) == ""


PEER = (  # a page that says who connected: the DNAT keeps the client's address
    "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho\\necho $REMOTE_ADDR\\n' "
    "> /www/cgi-bin/peer && chmod +x /www/cgi-bin/peer && exec httpd -f -p 80 -h /www"
)


def test_from_outside_the_vm_a_published_port_is_a_dnat_to_the_container(clean):
    """What QEMU's host forwards bring in at the VM's address goes straight to the container
    (the client's own address is what it sees); from inside the VM, the engine's listener
    carries it (the bridge's gateway is what it sees). Both stop with the container."""
    agent = clean
    with outside(agent) as (machine, vm_address):
        ok(agent.docker("run", "-d", "--name", "peer", "-p", "8080:80", "busybox", "sh", "-c",
                        PEER))  # fmt: skip
        assert any("DNAT --to-destination 172.17.0.2:80" in r for r in agent.rules())
        assert fetch_when_served(agent, 8080)  # httpd has started
        page = in_netns(machine, http_get, 8080, vm_address, "/cgi-bin/peer")
        assert page.split()[-1] == b"[::ffff:10.99.0.2]"  # httpd's REMOTE_ADDR
        page = in_netns(agent.pid, http_get, 8080, "127.0.0.1", "/cgi-bin/peer")
        assert page.split()[-1] == b"[::ffff:172.17.0.1]"
        ok(agent.docker("rm", "-f", "peer"))
        assert not any("DNAT" in r for r in agent.rules())
        with pytest.raises(OSError):  # refused: nothing forwards or listens there now
            in_netns(machine, http_get, 8080, vm_address)


def test_publish_all_exposed_ports_on_free_host_ports(clean):
    agent = clean
    ok(agent.docker("run", "-d", "--name", "anyport", "-P", "--expose", "80", "busybox", "sh",
                    "-c", HTTPD))  # fmt: skip
    line = ok(agent.docker("port", "anyport", "80/tcp")).strip()
    host_port = int(line.rsplit(":", 1)[1])
    assert host_port > 1024
    assert fetch_when_served(agent, host_port).endswith(b"hello\n")
    fmt = "{{json .NetworkSettings.Ports}}"
    ports = json.loads(ok(agent.docker("inspect", "-f", fmt, "anyport")))
    assert ports == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(host_port)}]}


def test_published_udp_port_carries_datagrams_both_ways(clean):
    agent = clean
    ok(agent.docker("run", "-d", "--name", "echo", "-p", "127.0.0.1:5353:53/udp", "busybox",
                    "sleep", "60"))  # fmt: skip
    assert ok(agent.docker("port", "echo")).strip() == "53/udp -> 127.0.0.1:5353"
    # busybox has no UDP server: the echo server's socket is made in the container's namespace
    pid = int(ok(agent.docker("inspect", "-f", "{{.State.Pid}}", "echo")))
    server = in_netns(pid, _udp_socket, 53)
    threading.Thread(target=_echo_once, args=(server,), daemon=True).start()
    assert in_netns(agent.pid, _udp_echo, 5353) == b"ping\n"


def _udp_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    return sock


def _echo_once(sock: socket.socket) -> None:
    with sock:
        data, peer = sock.recvfrom(100)
        sock.sendto(data, peer)


def _udp_echo(port: int) -> bytes:
    """Until the container's server answers (it starts after `run -d` returns)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        while True:
            s.sendto(b"ping\n", ("127.0.0.1", port))
            try:
                return s.recv(100)
            except TimeoutError:
                continue


def test_bad_ports_are_refused(clean):
    agent = clean
    client = docker.DockerClient(base_url=agent.url)
    for ports, message in (({"80/tcp": 70000}, "invalid hostPort: 70000"),
                           ({"80/sctp": 80}, "invalid proto: sctp")):  # fmt: skip
        with pytest.raises(docker.errors.APIError) as e:
            client.containers.create("busybox", "true", ports=ports)
        assert e.value.status_code == 400 and message in str(e.value)
    conflict = agent.docker("run", "--rm", "--network", "container:nobody", "-p", "80:80",
                            "busybox", "true")  # fmt: skip
    assert "conflicting options: port publishing and the container type network mode" in (
        conflict.stderr
    )
    assert ok(agent.docker("ps", "-aq")) == ""


COMPOSE = """
services:
  web:
    image: busybox
    command: sh -c "mkdir -p /www && echo from-web > /www/index.html && exec httpd -f -p 80 -h /www"
    ports: ["8090:80"]
  client:
    image: busybox
    command: sleep 300
"""


def test_a_compose_project_finds_its_services_by_name(clean, tmp_path):
    agent = clean
    install_compose(agent.workdir)
    (tmp_path / "compose.yaml").write_text(COMPOSE)
    project = ("compose", "--project-directory", str(tmp_path), "-p", "shop")
    ok(agent.docker(*project, "up", "-d"))
    net = json.loads(ok(agent.docker("network", "inspect", "shop_default")))[0]
    assert sorted(c["Name"] for c in net["Containers"].values()) == ["shop-client-1", "shop-web-1"]
    while True:  # until httpd listens (it starts after `up -d` returns)
        got = agent.docker(*project, "exec", "client", "wget", "-qO-", "http://web/index.html")
        if got.returncode == 0:
            break
        assert "bad address" not in got.stderr, got.stderr  # the name must resolve at once
        time.sleep(0.1)
    assert got.stdout == "from-web\n"
    assert fetch_when_served(agent, 8090).endswith(b"from-web\n")
    # `compose down` and `rm` also ask GET /volumes, which is the volumes room's to answer
    ok(agent.docker("rm", "-f", "shop-web-1", "shop-client-1"))
    ok(agent.docker("network", "rm", "shop_default"))
