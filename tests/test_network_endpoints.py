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
