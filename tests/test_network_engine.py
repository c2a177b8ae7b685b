"""Container networking in the engine, with the real docker CLI and docker-py, the agent in
a network namespace the test made: the default bridge, user-defined networks, isolation,
--internal, DNS by name, surviving the agent's SIGKILL, and nothing left behind."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time

import docker
import pytest
from agentserver import serving
from netkit import HTTPD, clear, fetch_when_served, in_netns, netns_agent, ok

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with netns_agent(tmp_path_factory.mktemp("netagent"), registry) as server:
        yield server


@pytest.fixture
def clean(agent):
    """Each test ends with no container, no user network and nothing of theirs left."""
    yield agent
    clear(agent)


def test_default_bridge_gives_an_address_a_route_and_hosts(clean):
    agent = clean
    out = ok(agent.docker("run", "--rm", "--hostname", "web", "busybox", "sh", "-c",
                          "ip -4 -o addr show eth0; ip route; cat /etc/hosts"))  # fmt: skip
    assert "inet 172.17.0.2/16" in out
    assert "default via 172.17.0.1 dev eth0" in out
    assert out.rstrip().endswith("172.17.0.2\tweb")
    assert agent.links("bridge") == ["docker0"]
    # the VM's end of a connection to a container acknowledges at once (no 40 ms stall)
    route = agent.inside("ip", "-4", "route", "show", "dev", "docker0")
    assert route.startswith("172.17.0.0/16 proto kernel scope link src 172.17.0.1 ")
    assert route.rstrip().endswith(" quickack 1") and len(route.splitlines()) == 1


def _ip(agent, container: str, network: str) -> str:
    fmt = '{{(index .NetworkSettings.Networks "' + network + '").IPAddress}}'
    return ok(agent.docker("inspect", "-f", fmt, container)).strip()


def test_user_networks_connect_within_and_isolate_between(clean):
    agent = clean
    ok(agent.docker("network", "create", "front"))
    ok(agent.docker("network", "create", "back"))
    for name, net in (("web1", "front"), ("web2", "front"), ("db1", "back")):
        ok(agent.docker("run", "-d", "--name", name, "--network", net, "busybox", "sleep", "60"))
    web1, db1 = _ip(agent, "web1", "front"), _ip(agent, "db1", "back")
    assert web1 == "172.18.0.2" and db1 == "172.19.0.2"
    ok(agent.docker("exec", "web2", "ping", "-c1", "-W5", web1))
    assert agent.docker("exec", "db1", "ping", "-c1", "-W1", web1).returncode != 0
    inspect = json.loads(ok(agent.docker("network", "inspect", "front")))[0]
    names = sorted(c["Name"] for c in inspect["Containers"].values())
    assert names == ["web1", "web2"]
    listed = ok(agent.docker("ps", "--filter", "network=front", "--format", "{{.Names}}"))
    assert sorted(listed.split()) == ["web1", "web2"]
    assert ok(agent.docker("ps", "--filter", "network=back", "--format", "{{.Networks}}")) == (
        "back\n"
    )
    assert inspect["IPAM"]["Config"] == [{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}]
    assert len(agent.links("veth")) == 3


def test_internal_network_has_no_way_out(clean):
    agent = clean
    ok(agent.docker("network", "create", "--internal", "sealed"))
    out = ok(agent.docker("run", "--rm", "--network", "sealed", "busybox", "ip", "route"))
    assert "default" not in out and "172.18.0.0/16 dev eth0" in out
    rules = agent.rules()
    assert any(r.endswith("! -o br-" + rules[0].split("br-")[1][:12] + " -j DROP") for r in rules)
    assert not any("172.18.0.0/16" in r and "MASQUERADE" in r for r in agent.rules())


def test_removing_a_network_in_use_is_refused(clean):
    agent = clean
    ok(agent.docker("network", "create", "busy"))
    ok(agent.docker("run", "-d", "--name", "holder", "--network", "busy", "busybox", "sleep", "60"))
    rm = agent.docker("network", "rm", "busy")
    assert rm.returncode == 1
    assert "error while removing network: network busy id" in rm.stderr
    assert "has active endpoints" in rm.stderr
    ok(agent.docker("rm", "-f", "holder"))
    ok(agent.docker("network", "rm", "busy"))
    assert agent.links("bridge") == ["docker0"]


def test_bad_networks_are_refused_in_dockers_words(clean):
    agent = clean
    cases = [
        (["--subnet", "10.9.0.0/33", "n1"], "invalid subnet 10.9.0.0/33: invalid CIDR address"),
        (["--subnet", "172.17.3.0/24", "n2"], "Pool overlaps with other one on this address space"),
        (["--ipv6", "n4"], "EnableIPv6 is not supported yet"),
        (["-d", "overlay", "n5"], 'plugin "overlay" not found'),
        (["-o", "com.docker.network.bridge.name=x", "n6"], "network option"),
    ]  # fmt: skip
    for args, message in cases:
        result = agent.docker("network", "create", *args)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
    client = docker.DockerClient(base_url=agent.url)
    ipam = docker.types.IPAMConfig(
        pool_configs=[docker.types.IPAMPool(subnet="10.9.0.0/24", gateway="10.8.0.1")]
    )
    with pytest.raises(docker.errors.APIError) as e:
        client.networks.create("n3", ipam=ipam)
    assert e.value.status_code == 400
    assert "invalid gateway 10.8.0.1: it should be within subnet 10.9.0.0/24" in str(e.value)
    names = ok(agent.docker("network", "ls", "--format", "{{.Name}}")).split()
    assert sorted(names) == ["bridge", "host", "none"]
    ok(agent.docker("network", "create", "taken"))
    again = agent.docker("network", "create", "taken")
    assert "network with name taken already exists" in again.stderr
    missing = agent.docker("run", "--rm", "--pull", "never", "--network", "nope", "busybox", "true")
    assert "network nope not found" in missing.stderr
    assert ok(agent.docker("ps", "-aq")) == ""
    config = client.api.create_networking_config(
        {"bridge": client.api.create_endpoint_config(aliases=["x"])}
    )
    with pytest.raises(docker.errors.APIError) as e:
        client.api.create_container("busybox", "true", networking_config=config)
    assert e.value.status_code == 400
    assert "network-scoped alias is supported only for containers in user defined" in str(e.value)
    v6 = client.api.create_networking_config(
        {"taken": client.api.create_endpoint_config(ipv6_address="fd00::5")}
    )
    with pytest.raises(docker.errors.APIError) as e:
        client.api.create_container("busybox", "true", networking_config=v6)
    assert "EndpointSettings.IPAMConfig.IPv6Address is not supported" in str(e.value)
    rm = agent.docker("network", "rm", "bridge")
    assert "bridge is a pre-defined network and cannot be removed" in rm.stderr


def test_static_address_mac_hosts_and_dns(clean):
    agent = clean
    ok(agent.docker("network", "create", "--subnet", "10.77.0.0/24", "fixed"))
    out = ok(agent.docker(
        "run", "--rm", "--network", "fixed", "--ip", "10.77.0.50", "--mac-address",
        "02:00:00:00:00:42", "--add-host", "gw:host-gateway", "--add-host", "db:10.1.2.3",
        "--dns", "9.9.9.9", "--dns-search", "corp.example", "--hostname", "box",
        "busybox", "sh", "-c", "ip -o addr show eth0; ip link show eth0; cat /etc/hosts "
        "/etc/resolv.conf",
    ))  # fmt: skip
    assert "inet 10.77.0.50/24" in out and "02:00:00:00:00:42" in out
    assert "10.0.2.2\thost.docker.internal\n10.0.2.2\tgw\n10.1.2.3\tdb\n10.77.0.50\tbox\n" in out
    assert "nameserver 9.9.9.9\nsearch corp.example\n" in out
    bad = agent.docker("run", "--rm", "--network", "fixed", "--ip", "10.78.0.5", "busybox", "true")
    assert "no configured subnet or ip-range contain the IP address 10.78.0.5" in bad.stderr
    ok(
        agent.docker("rm", "-f", *agent.docker("ps", "-aq").stdout.split())
        if agent.docker("ps", "-aq").stdout.split()
        else agent.docker("ps")
    )


def test_user_network_resolv_conf_points_at_the_embedded_resolver(clean):
    agent = clean
    ok(agent.docker("network", "create", "named"))
    out = ok(
        agent.docker("run", "--rm", "--network", "named", "busybox", "cat", "/etc/resolv.conf")
    )
    assert out.startswith("nameserver 127.0.0.11\n") and "options ndots:0" in out


def test_connect_and_disconnect_a_running_container(clean):
    agent = clean
    ok(agent.docker("network", "create", "extra"))
    ok(agent.docker("run", "-d", "--name", "roamer", "busybox", "sleep", "60"))
    ok(agent.docker("network", "connect", "--alias", "wanderer", "extra", "roamer"))
    out = ok(agent.docker("exec", "roamer", "ip", "-o", "-4", "addr"))
    assert "eth0" in out and "inet 172.18.0.2/16" in out
    again = agent.docker("network", "connect", "extra", "roamer")
    assert "endpoint with name roamer already exists in network extra" in again.stderr
    fmt = "{{json .NetworkSettings.Networks.extra.Aliases}}"
    assert json.loads(ok(agent.docker("inspect", "-f", fmt, "roamer"))) == ["wanderer"]
    ok(agent.docker("network", "disconnect", "extra", "roamer"))
    assert "172.18.0.2" not in ok(agent.docker("exec", "roamer", "ip", "-o", "-4", "addr"))
    assert len(agent.links("veth")) == 1


def test_a_container_disconnected_from_its_last_network_connects_again(clean):
    """Its namespace stays while it runs (as dockerd's sandbox), and goes when it ends."""
    agent = clean
    ok(agent.docker("network", "create", "--subnet", "10.78.0.0/24", "solo"))
    ok(agent.docker("run", "-d", "--name", "loner", "--network", "solo", "busybox", "sleep", "60"))
    ok(agent.docker("network", "disconnect", "solo", "loner"))
    assert "10.78.0." not in ok(agent.docker("exec", "loner", "ip", "-o", "-4", "addr"))
    ok(agent.docker("network", "connect", "--ip", "10.78.0.24", "solo", "loner"))
    out = ok(agent.docker("exec", "loner", "sh", "-c", "ip -o -4 addr; ip route"))
    assert "inet 10.78.0.24/24" in out and "default via 10.78.0.1" in out
    ok(agent.docker("kill", "loner"))
    assert agent.veths_settled(0) == [] and agent.netns_mounts() == []


def test_sharing_another_containers_network(clean):
    agent = clean
    ok(agent.docker("run", "-d", "--name", "owner", "busybox", "sleep", "60"))
    out = ok(agent.docker("run", "--rm", "--network", "container:owner", "busybox",
                          "ip", "-o", "-4", "addr", "show", "eth0"))  # fmt: skip
    assert "172.17.0.2/16" in out
    ok(agent.docker("create", "--name", "sleeper", "busybox", "true"))
    ok(agent.docker("create", "--name", "joiner", "--network", "container:sleeper", "busybox",
                    "true"))  # fmt: skip
    start = agent.docker("start", "joiner")
    assert "cannot join network of a non running container" in start.stderr
    conflict = agent.docker("run", "--rm", "--network", "container:owner", "--hostname", "x",
                            "busybox", "true")  # fmt: skip
    assert "conflicting options: hostname and the network mode" in conflict.stderr


def test_host_and_none_networks(clean):
    agent = clean
    none = ok(agent.docker("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link"))
    assert "eth0" not in none and "lo" in none
    host = ok(agent.docker("run", "--rm", "--network", "host", "busybox", "ip", "-o", "link"))
    assert "docker0" in host
    assert agent.links("veth") == []


def test_networks_and_endpoints_survive_the_agent_being_killed(clean):
    agent = clean
    ok(agent.docker("network", "create", "durable"))
    ok(agent.docker("run", "-d", "--name", "stays", "--network", "durable", "-p", "8095:80",
                    "busybox", "sh", "-c", HTTPD))  # fmt: skip
    ok(agent.docker("run", "-d", "--name", "ends", "--network", "durable", "busybox", "sleep",
                    "600"))  # fmt: skip
    pid = int(ok(agent.docker("inspect", "-f", "{{.State.Pid}}", "ends")))
    agent.kill_and_restart_with(lambda: _kill_and_wait(pid))  # "ends" ends while it is down
    names = ok(agent.docker("network", "ls", "--format", "{{.Name}}")).split()
    assert "durable" in names
    inspect = json.loads(ok(agent.docker("network", "inspect", "durable")))[0]
    assert [c["Name"] for c in inspect["Containers"].values()] == ["stays"]
    assert len(agent.veths_settled(1)) == 1
    out = ok(agent.docker("run", "--rm", "--network", "durable", "busybox", "sh", "-c",
                          "ip -o -4 addr show eth0; ping -c1 -W5 stays"))  # fmt: skip
    assert "inet 172.18.0.3/16" in out  # the address "ends" had is free again
    assert "64 bytes from 172.18.0.2" in out  # its name still answers (a new resolver socket)
    assert fetch_when_served(agent, 8095).endswith(b"hello\n")  # its port, bound again
    assert ok(agent.docker("port", "stays")).strip() == "80/tcp -> 0.0.0.0:8095"


def _kill_and_wait(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    while os.path.exists(f"/proc/{pid}"):  # until its shim has reaped it
        time.sleep(0.01)


def test_names_resolve_on_user_networks_only_within_the_network(clean):
    agent = clean
    ok(agent.docker("network", "create", "app"))
    ok(agent.docker("network", "create", "other"))
    ok(agent.docker("run", "-d", "--name", "api1", "--network", "app", "--network-alias",
                    "backend", "busybox", "sleep", "60"))  # fmt: skip
    ok(agent.docker("run", "-d", "--name", "stranger", "--network", "other", "busybox", "sleep",
                    "60"))  # fmt: skip
    short = ok(agent.docker("inspect", "-f", "{{.Id}}", "api1"))[:12]
    desktop = ok(agent.docker("run", "--rm", "--network", "app", "busybox", "nslookup",
                              "host.docker.internal"))  # fmt: skip
    assert "Address: 10.0.2.2" in desktop  # the user's machine, as on Docker Desktop
    for name in ("api1", "backend", short, "API1"):
        out = ok(agent.docker("run", "--rm", "--network", "app", "busybox", "nslookup", name))
        assert "Address: 172.18.0.2" in out, (name, out)
    ok(agent.docker("run", "--rm", "--network", "app", "busybox", "ping", "-c1", "-W5", "backend"))
    hidden = agent.docker("run", "--rm", "--network", "app", "busybox", "nslookup", "stranger")
    assert hidden.returncode != 0 and "172.19.0.2" not in hidden.stdout
    fmt = "{{json .NetworkSettings.Networks.app.DNSNames}}"
    assert json.loads(ok(agent.docker("inspect", "-f", fmt, "api1"))) == ["api1", "backend", short]
    ok(agent.docker("run", "-d", "--name", "asker", "--network", "app", "busybox", "sleep", "60"))
    pid = int(ok(agent.docker("inspect", "-f", "{{.State.Pid}}", "asker")))
    reply = in_netns(pid, _dns_over_tcp, "backend")  # what a client retries a truncated answer with
    assert reply[6:8] == b"\x00\x01" and reply.endswith(bytes([172, 18, 0, 2]))


def _dns_over_tcp(name: str) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    query = b"\x00\x07\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\x00\x00\x01\x00\x01"
    with socket.create_connection(("127.0.0.11", 53), timeout=30) as s:
        s.sendall(struct.pack("!H", len(query)) + query)
        size = struct.unpack("!H", s.recv(2, socket.MSG_WAITALL))[0]
        return s.recv(size, socket.MSG_WAITALL)


def test_the_default_bridge_has_no_name_resolution(clean):
    agent = clean
    ok(agent.docker("run", "-d", "--name", "plain", "busybox", "sleep", "60"))
    out = ok(agent.docker("run", "--rm", "busybox", "cat", "/etc/resolv.conf"))
    assert "127.0.0.11" not in out


def test_an_exhausted_network_refuses_the_next_container(clean):
    agent = clean
    ok(agent.docker("network", "create", "--subnet", "10.66.0.0/30", "tiny"))  # one address
    ok(agent.docker("run", "-d", "--name", "first", "--network", "tiny", "busybox", "sleep", "60"))
    second = agent.docker("run", "-d", "--name", "second", "--network", "tiny", "busybox", "true")
    assert "no available IPv4 addresses on this network's address pools" in second.stderr
    assert len(agent.veths_settled(1)) == 1 and len(agent.netns_mounts()) == 1
    state = ok(agent.docker("inspect", "-f", "{{.State.Status}} {{.State.Error}}", "second"))
    assert state.startswith("created no available IPv4 addresses")


def test_docker_py_networks_api(clean):
    agent = clean
    client = docker.DockerClient(base_url=agent.url)
    net = client.networks.create("pynet", labels={"team": "a"}, internal=False)
    client.networks.create("idle", labels={"team": "b"})
    box = client.containers.run("busybox", "sleep 60", detach=True, name="pybox")
    net.connect(box, aliases=["pyalias"], ipv4_address="")
    net.reload()
    assert [c.name for c in net.containers] == ["pybox"]
    attrs = client.api.inspect_network(net.id)
    assert attrs["Containers"][box.id]["IPv4Address"] == "172.18.0.2/16"
    assert [n.name for n in client.networks.list(filters={"label": "team=a"})] == ["pynet"]
    assert [n.name for n in client.networks.list(filters={"dangling": True})] == ["idle"]
    builtin = {n.name for n in client.networks.list(filters={"type": "builtin"})}
    assert builtin == {"bridge", "host", "none"}
    with pytest.raises(docker.errors.APIError) as e:
        net.remove()
    assert e.value.status_code == 409
    with pytest.raises(docker.errors.NotFound):
        client.networks.get("nosuchnet")
    net.disconnect(box)
    assert sorted(client.networks.prune()["NetworksDeleted"]) == ["idle", "pynet"]
    assert {n.name for n in client.networks.list()} == {"bridge", "host", "none"}
    box.remove(force=True)


def test_concurrent_starts_get_distinct_addresses(clean):
    agent = clean
    ok(agent.docker("network", "create", "crowd"))

    def start(n: int) -> str:
        name = f"crowd{n}"
        ok(agent.docker("run", "-d", "--name", name, "--network", "crowd", "busybox", "sleep",
                        "60"))  # fmt: skip
        return _ip(agent, name, "crowd")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        addresses = list(pool.map(start, range(8)))
    assert len(set(addresses)) == 8
    assert sorted(addresses) == sorted(f"172.18.0.{n}" for n in range(2, 10))
    assert len(agent.links("veth")) == 8


def test_without_iptables_the_engine_serves_and_says_why_bridges_fail(tmp_path, registry):
    """A VM image without iptables: `docker run` still works (as --network none, as with
    "bridge": "none"), and whatever needs a bridge says why it cannot have one."""
    tools = tmp_path / "bin"  # ip, nsenter and the agent, but no iptables
    tools.mkdir()
    for tool in ("ip", "nsenter", "vmctl-agent"):
        (tools / tool).symlink_to(shutil.which(tool))
    with netns_agent(tmp_path / "agent", registry, path=str(tools)) as agent:
        info = json.loads(ok(agent.docker("info", "--format", "{{json .Warnings}}")))
        assert any("bridge networking is unavailable: iptables" in w for w in info)
        run = agent.docker("run", "--rm", "--network", "bridge", "busybox", "true")
        assert "bridge networking is unavailable: iptables" in run.stderr
        plain = ok(agent.docker("run", "--rm", "busybox", "ip", "-o", "link"))  # as --network none
        assert "eth0" not in plain
        created = agent.docker("network", "create", "nope")
        assert "bridge networking is unavailable" in created.stderr
        assert agent.links("veth") == [] and agent.netns_mounts() == []


def test_networks_are_made_again_after_a_reboot(clean):
    agent = clean
    ok(agent.docker("network", "create", "--internal", "kept"))
    ok(agent.docker("run", "-d", "--name", "again", "--network", "kept", "busybox", "sleep",
                    "600"))  # fmt: skip
    bridge = "br-" + ok(agent.docker("network", "inspect", "-f", "{{.Id}}", "kept"))[:12]
    agent.reboot()  # every bridge, veth, rule and netns mount gone with the namespaces
    assert sorted(agent.links("bridge")) == sorted(["docker0", bridge])
    assert any(f"! -i {bridge} -o {bridge} -j DROP" in r for r in agent.rules())
    assert any("172.17.0.0/16" in r and "MASQUERADE" in r for r in agent.rules())
    assert agent.netns_mounts() == [] and agent.leftovers()["netns files"] == []
    status = ok(agent.docker("inspect", "-f", "{{.State.Status}}", "again")).strip()
    assert status == "exited"
    ok(agent.docker("start", "again"))
    assert _ip(agent, "again", "kept") == "172.18.0.2"


def test_an_engine_without_bridge_docker0_never_touches_its_machines_network(tmp_path, registry):
    """`vmctl-agent serve` straight on a machine (its default "bridge": "none"): no bridge,
    veth or rule is made in the machine's own namespace, whatever a client asks."""
    before = _host_network()
    with serving(tmp_path, registry) as agent:  # in this machine's own namespaces
        created = agent.docker("network", "create", "mine")
        assert created.returncode != 0 and "bridge networking is off on this engine" in (
            created.stderr
        )
        run = agent.docker("run", "--rm", "--network", "bridge", "busybox", "true")
        assert 'bridge networking is off on this engine ("bridge": "none")' in run.stderr
        plain = ok(agent.docker("run", "--rm", "busybox", "ip", "-o", "link"))
        assert "eth0" not in plain  # --network none
        names = ok(agent.docker("network", "ls", "--format", "{{.Name}}")).split()
        assert sorted(names) == ["host", "none"]
    assert _host_network() == before


def _host_network() -> tuple[str, str]:
    """Links and our chains as this machine's own namespace has them (read only)."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    rules = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True).stdout
    nat = subprocess.run(["iptables", "-w", "-t", "nat", "-S"], capture_output=True, text=True)
    names = sorted(line.split(":")[1].strip() for line in links.splitlines())
    ours = [r for r in (rules + nat.stdout).splitlines() if "VMCTL" in r]
    return " ".join(names), "\n".join(ours)
