"""What dockerd does with the rarer endpoint and network fields, with the real docker CLI and
docker-py, the agent in a network namespace the test made: stats' per-interface counters,
a MAC address asked for at connect, names with spaces, endpoint driver options, IPAM's
auxiliary addresses and link-local addresses; and bad values refused with nothing left."""

from __future__ import annotations

import os

import docker
import pytest
from netkit import clear, netns_agent, ok

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with netns_agent(tmp_path_factory.mktemp("endpoints"), registry) as server:
        yield server


@pytest.fixture
def client(agent):
    """docker-py on the agent; each test ends with nothing of its own left."""
    yield docker.APIClient(base_url=agent.url)
    clear(agent)


def test_stats_count_each_interfaces_traffic(agent, client):
    ok(agent.docker("network", "create", "counted"))
    ok(agent.docker("run", "-d", "--name", "talker", "busybox", "sleep", "600"))
    ok(agent.docker("network", "connect", "counted", "talker"))
    ok(agent.docker("exec", "talker", "ping", "-c", "3", "172.17.0.1"))
    networks = client.stats("talker", stream=False)["networks"]
    assert sorted(networks) == ["eth0", "eth1"]
    assert networks["eth0"]["tx_packets"] >= 3 and networks["eth0"]["rx_bytes"] >= 3 * 84
    kinds = ("bytes", "packets", "errors", "dropped")
    assert set(networks["eth1"]) == {f"{d}_{k}" for d in ("rx", "tx") for k in kinds}
    net_io = ok(agent.docker("stats", "--no-stream", "--format", "{{.NetIO}}", "talker"))
    assert net_io.strip() != "0B / 0B"
    ok(agent.docker("run", "-d", "--name", "alone", "--network", "none", "busybox", "sleep", "60"))
    assert "networks" not in client.stats("alone", stream=False)  # as dockerd: no interface


def _endpoint(client, container: str, network: str) -> dict:
    return client.inspect_container(container)["NetworkSettings"]["Networks"][network]


def test_a_mac_address_asked_for_at_connect_shows_before_and_after_the_start(agent, client):
    ok(agent.docker("network", "create", "macs"))
    ok(agent.docker("create", "--name", "later", "busybox", "sleep", "600"))
    client.connect_container_to_network("later", "macs", mac_address="02:42:ac:11:00:99")
    assert _endpoint(client, "later", "macs")["MacAddress"] == "02:42:ac:11:00:99"
    ok(agent.docker("start", "later"))
    assert "link/ether 02:42:ac:11:00:99" in ok(agent.docker("exec", "later", "ip", "link"))
    assert _endpoint(client, "later", "macs")["MacAddress"] == "02:42:ac:11:00:99"


def test_link_local_addresses_are_added_to_the_interface(agent, client):
    ok(agent.docker("run", "-d", "--name", "local", "--link-local-ip", "169.254.8.8", "busybox",
                    "sleep", "600"))  # fmt: skip
    assert "inet 169.254.8.8/16" in ok(agent.docker("exec", "local", "ip", "-4", "addr"))
    assert _endpoint(client, "local", "bridge")["IPAMConfig"] == {"LinkLocalIPs": ["169.254.8.8"]}
    ok(agent.docker("network", "create", "more"))
    ok(agent.docker("network", "connect", "--link-local-ip", "169.254.9.9", "more", "local"))
    assert "inet 169.254.9.9/16" in ok(agent.docker("exec", "local", "ip", "-4", "addr", "show",
                                                    "eth1"))  # fmt: skip
    ok(agent.docker("restart", "-t", "0", "local"))  # made again at each start
    assert "inet 169.254.8.8/16" in ok(agent.docker("exec", "local", "ip", "-4", "addr"))


def test_bad_link_local_addresses_are_refused_and_nothing_is_made(agent, client):
    for bad, words in (("nope", "invalid link-local IP address: nope"),
                       ("0.0.0.0", "invalid link-local IP address: 0.0.0.0"),
                       ("fe80::1", "IPv6 addresses are not supported by this engine")):  # fmt: skip
        run = agent.docker("run", "-d", "--name", "bad", "--link-local-ip", bad, "busybox", "true")
        assert run.returncode != 0 and words in run.stderr, run.stderr
        assert agent.docker("inspect", "bad").returncode != 0  # no container was recorded
    assert agent.veths_settled(0) == []


def test_endpoint_driver_options_are_kept_and_shown(agent, client):
    config = client.create_networking_config(
        {"bridge": client.create_endpoint_config(driver_opt={"com.example.setting": "on"})}
    )
    made = client.create_container("busybox", ["sleep", "600"], networking_config=config)
    client.start(made["Id"])
    assert _endpoint(client, made["Id"], "bridge")["DriverOpts"] == {"com.example.setting": "on"}
    ok(agent.docker("network", "create", "opts"))
    connect = agent.docker("network", "connect", "--driver-opt",
                           "com.docker.network.endpoint.sysctls=net.ipv4.conf.IFNAME.log_martians=1",
                           "opts", made["Id"])  # fmt: skip
    assert connect.returncode != 0
    assert "DriverOpts com.docker.network.endpoint.sysctls is not supported here" in connect.stderr
    assert list(client.inspect_container(made["Id"])["NetworkSettings"]["Networks"]) == ["bridge"]


def test_auxiliary_addresses_are_shown_and_kept_from_containers(agent, client):
    ok(agent.docker("network", "create", "--subnet", "10.33.0.0/24", "--aux-address",
                    "printer=10.33.0.2", "--aux-address", "nas=10.33.0.3", "office"))  # fmt: skip
    assert client.inspect_network("office")["IPAM"]["Options"] == {}  # as the CLI sent them
    config = client.inspect_network("office")["IPAM"]["Config"]
    aux = {"nas": "10.33.0.3", "printer": "10.33.0.2"}
    assert config == [{"Subnet": "10.33.0.0/24", "Gateway": "10.33.0.1", "AuxiliaryAddresses": aux}]
    ok(agent.docker("run", "-d", "--name", "desk", "--network", "office", "busybox", "sleep", "60"))
    fmt = "{{.NetworkSettings.Networks.office.IPAddress}}"
    assert ok(agent.docker("inspect", "-f", fmt, "desk")).strip() == "10.33.0.4"
    taken = agent.docker("run", "--name", "thief", "--network", "office", "--ip", "10.33.0.2",
                         "busybox", "true")  # fmt: skip
    assert taken.returncode != 0 and "Address already in use: 10.33.0.2" in taken.stderr
    assert agent.docker("inspect", "thief").returncode != 0  # refused at create: nothing made
    pool = docker.types.IPAMPool(subnet="10.34.0.0/24", aux_addresses={"far": "10.35.0.9"})
    with pytest.raises(docker.errors.APIError) as bad:  # the CLI checks this one itself
        client.create_network("elsewhere", ipam=docker.types.IPAMConfig(pool_configs=[pool]))
    assert bad.value.status_code == 400
    words = "auxiliary address: (far:10.35.0.9) must belong to the master pool: 10.34.0.0/24"
    assert words in bad.value.explanation
    assert agent.docker("network", "inspect", "elsewhere").returncode != 0
    assert [b for b in agent.links("bridge") if b != "docker0"] == [
        "br-" + client.inspect_network("office")["Id"][:12]
    ]


def test_network_names_may_have_spaces_as_dockerd_allows(agent, client):
    made = client.create_network("team 01")
    ok(agent.docker("run", "-d", "--name", "spaced", "--network", "team 01", "busybox", "sleep",
                    "60"))  # fmt: skip
    assert client.inspect_network("team 01")["Id"] == made["Id"]
    assert client.inspect_network("team 01")["IPAM"]["Options"] is None  # docker-py sent none
    listed = ok(agent.docker("network", "ls", "--filter", "name=team 01", "--format", "{{.Name}}"))
    assert listed == "team 01\n"
    blank = agent.docker("network", "create", " ")
    assert blank.returncode != 0 and "invalid name:" in blank.stderr
    ok(agent.docker("rm", "-f", "spaced"))
    client.remove_network("team 01")


def test_endpoint_links_answer_their_alias_to_the_linking_container_only(agent, client):
    ok(agent.docker("network", "create", "linked"))
    config = client.create_networking_config(
        {"linked": client.create_endpoint_config(links=[("upstream", "bar")])}
    )
    host = client.create_host_config(network_mode="linked")
    made = client.create_container("busybox", ["sleep", "600"], networking_config=config,
                                   host_config=host)  # fmt: skip
    client.start(made["Id"])
    assert _endpoint(client, made["Id"], "linked")["Links"] == ["upstream:bar"]
    ok(agent.docker("run", "-d", "--name", "upstream", "--network", "linked", "busybox", "sleep",
                    "600"))  # fmt: skip
    upstream = _endpoint(client, "upstream", "linked")["IPAddress"]
    assert f"Address: {upstream}" in ok(agent.docker("exec", made["Id"], "nslookup", "BAR"))
    other = agent.docker("run", "--rm", "--network", "linked", "busybox", "nslookup", "bar")
    assert other.returncode != 0 and upstream not in other.stdout  # the link is that one's own
    on_bridge = client.create_networking_config(
        {"bridge": client.create_endpoint_config(links=[("upstream", "bar")])}
    )
    with pytest.raises(docker.errors.APIError) as refused:
        client.create_container("busybox", "true", networking_config=on_bridge, name="legacy")
    assert "links in EndpointSettings are supported only on user-defined networks" in (
        refused.value.explanation
    )
    assert agent.docker("inspect", "legacy").returncode != 0
