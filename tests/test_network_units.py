"""The network room's pure parts: IPAM, the commands for bridges, veths and rules, and the
/etc files, as Docker makes them."""

from __future__ import annotations

import ipaddress
import re

import pytest
from vmctl_agent.network import commands, counters, dnswire, etcfiles, ipam, netlink

Net = ipaddress.IPv4Network


def test_pools_skip_the_default_bridge_and_what_is_taken():
    assert ipam.from_pools([]).subnet == Net("172.18.0.0/16")
    first = ipam.from_pools([Net("172.17.0.0/16"), Net("172.18.0.0/16")])
    assert (str(first.subnet), str(first.gateway)) == ("172.19.0.0/16", "172.19.0.1")
    taken = [Net(f"172.{n}.0.0/16") for n in range(17, 32)]
    assert ipam.from_pools(taken).subnet == Net("192.168.0.0/20")


def test_an_exhausted_pool_says_so():
    everything = [Net("172.16.0.0/12"), Net("192.168.0.0/16")]
    with pytest.raises(ipam.PoolExhausted, match="could not find an available, non-overlapping"):
        ipam.from_pools(everything)


def test_requested_subnets_are_checked_in_dockers_words():
    got = ipam.requested({"Subnet": "10.5.0.0/24", "IPRange": "10.5.0.128/25"}, [])
    assert (str(got.gateway), str(got.ip_range)) == ("10.5.0.1", "10.5.0.128/25")
    cases = {
        "invalid subnet 10.5.0.0/33: invalid CIDR address: 10.5.0.0/33": {"Subnet": "10.5.0.0/33"},
        "invalid subnet 10.5.0.1/24: it should be 10.5.0.0/24": {"Subnet": "10.5.0.1/24"},
        "invalid gateway 10.6.0.1: it should be within subnet 10.5.0.0/24": {
            "Subnet": "10.5.0.0/24",
            "Gateway": "10.6.0.1",
        },
        "invalid ip-range 10.6.0.0/25: it should be within subnet 10.5.0.0/24": {
            "Subnet": "10.5.0.0/24",
            "IPRange": "10.6.0.0/25",
        },
    }
    for message, config in cases.items():
        with pytest.raises(ipam.InvalidNetworkConfig) as e:
            ipam.requested(config, [])
        assert message in str(e.value)
    with pytest.raises(ipam.PoolOverlap, match="Pool overlaps with other one"):
        ipam.requested({"Subnet": "172.17.5.0/24"}, [Net("172.17.0.0/16")])


def test_addresses_follow_the_gateway_and_skip_the_taken():
    subnet = ipam.Subnet(Net("10.5.0.0/29"), ipaddress.IPv4Address("10.5.0.1"))
    taken = {ipaddress.IPv4Address("10.5.0.2")}
    assert str(ipam.address(subnet, taken)) == "10.5.0.3"
    assert str(ipam.address(subnet, taken, "10.5.0.6")) == "10.5.0.6"
    with pytest.raises(ipam.PoolExhausted, match=re.escape("Address already in use: 10.5.0.2")):
        ipam.address(subnet, taken, "10.5.0.2")
    with pytest.raises(ipam.InvalidNetworkConfig, match="no configured subnet or ip-range"):
        ipam.address(subnet, taken, "10.9.0.2")
    full = {ipaddress.IPv4Address(f"10.5.0.{n}") for n in range(2, 7)}
    with pytest.raises(ipam.PoolExhausted, match="no available IPv4 addresses"):
        ipam.address(subnet, full)


def test_bridge_and_veth_batches():
    assert commands.bridge_up("br-1", ["10.5.0.1/24"], exists=False) == (
        "link add name br-1 type bridge\naddr replace 10.5.0.1/24 dev br-1\nlink set br-1 up\n"
        "route replace 10.5.0.0/24 dev br-1 proto kernel scope link src 10.5.0.1 quickack 1\n"
    )
    assert commands.bridge_up("br-1", ["10.5.0.1/24"], exists=True).startswith("addr replace")


def test_netlink_messages_for_the_containers_end():
    up = netlink.link_up(7, seq=3)
    assert up == bytes.fromhex(
        "20000000" "1000" "0500" "03000000" "00000000"  # nlmsghdr: RTM_NEWLINK, REQUEST|ACK
        "00" "00" "0000" "07000000" "01000000" "01000000"  # ifinfomsg: index 7, IFF_UP
    )  # fmt: skip
    addr = netlink.add_address(7, "10.5.0.2/24", seq=4)
    assert addr[4:6] == b"\x14\x00" and addr[16:24] == bytes([2, 24, 0, 0, 7, 0, 0, 0])
    assert addr.endswith(bytes.fromhex("080002000a050002080001000a050002"))
    route = netlink.default_route(7, "10.5.0.1", seq=5)
    assert route.endswith(bytes.fromhex("080005000a0500010800040007000000"))
    veth = netlink.add_veth("veth1234567", "eth0", "02:42:0a:05:00:02", 9, seq=1)
    assert veth[4:8] == b"\x10\x00\x05\x06"  # RTM_NEWLINK, REQUEST|ACK|EXCL|CREATE
    for part in (
        b"veth1234567\0",
        b"veth\0",
        b"eth0\0",
        bytes.fromhex("02420a050002"),
        bytes.fromhex("08001c0009000000"),
    ):  # fmt: skip  (the last: IFLA_NET_NS_FD 9)
        assert part in veth
    assert netlink.enslave_up(7, 3, seq=2).endswith(bytes.fromhex("08000a0003000000"))
    ack = bytes.fromhex("24000000020000000500000000000000") + (-17).to_bytes(
        4, "little", signed=True
    )
    assert netlink.error_of(ack) == 17  # EEXIST


def test_firewall_isolates_networks_and_keeps_internal_ones_in():
    rules = commands.firewall(
        [commands.BridgeState("docker0", ("172.17.0.0/16",)),
         commands.BridgeState("br-2", ("172.18.0.0/16",), internal=True)]
    )  # fmt: skip
    assert rules == (
        "*filter\n:VMCTL-FORWARD - [0:0]\n"
        "-A VMCTL-FORWARD -i docker0 -o br-2 -j DROP\n"
        "-A VMCTL-FORWARD -i br-2 -o docker0 -j DROP\n"
        "-A VMCTL-FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
        "-A VMCTL-FORWARD -i docker0 -j ACCEPT\n"
        "-A VMCTL-FORWARD -i br-2 ! -o br-2 -j DROP\n"
        "-A VMCTL-FORWARD ! -i br-2 -o br-2 -j DROP\n"
        "COMMIT\n"
        "*nat\n:VMCTL-POSTROUTING - [0:0]\n:VMCTL-PREROUTING - [0:0]\n"
        "-A VMCTL-POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\n"
        "COMMIT\n"
    )
    assert commands.firewall([]) == (
        "*filter\n:VMCTL-FORWARD - [0:0]\nCOMMIT\n"
        "*nat\n:VMCTL-POSTROUTING - [0:0]\n:VMCTL-PREROUTING - [0:0]\nCOMMIT\n"
    )


def test_published_ports_are_a_dnat_from_outside_the_bridges():
    rules = commands.firewall(
        [commands.BridgeState("docker0", ("172.17.0.0/16",))],
        [commands.Forward("tcp", 8080, "172.17.0.2", 80),
         commands.Forward("udp", 5353, "172.17.0.3", 53)],
    )  # fmt: skip
    assert "-A VMCTL-FORWARD -m conntrack --ctstate DNAT -j ACCEPT\n" in rules
    assert rules.endswith(
        "-A VMCTL-PREROUTING -i docker0 -j RETURN\n"
        "-A VMCTL-PREROUTING -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 8080 "
        "-j DNAT --to-destination 172.17.0.2:80\n"
        "-A VMCTL-PREROUTING -p udp -m addrtype --dst-type LOCAL -m udp --dport 5353 "
        "-j DNAT --to-destination 172.17.0.3:53\n"
        "COMMIT\n"
    )


def test_hosts_end_with_extra_hosts_then_the_container():
    extra = etcfiles.extra_hosts(["db:10.0.0.5", "host.docker.internal:host-gateway"], "172.17.0.1")
    text = etcfiles.hosts("web", "172.18.0.2", extra)
    assert text.startswith("127.0.0.1\tlocalhost\n")
    assert text.endswith("10.0.0.5\tdb\n172.17.0.1\thost.docker.internal\n172.18.0.2\tweb\n")
    with pytest.raises(ValueError, match="invalid IP address in add-host"):
        etcfiles.extra_hosts(["nohost"], "172.17.0.1")


def test_resolv_conf_embedded_and_overrides():
    embedded = etcfiles.resolv(True, etcfiles.DnsSettings())
    assert embedded.startswith("nameserver 127.0.0.11\n") and "ndots:0" in embedded
    given = etcfiles.resolv(False, etcfiles.DnsSettings(("9.9.9.9",), ("corp",), ("rotate",)))
    assert given == "nameserver 9.9.9.9\nsearch corp\noptions rotate\n"


def _query(name: str, qtype: int = 1) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return (
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
        + labels
        + b"\x00"
        + bytes([0, qtype, 0, 1])
    )


def test_dns_queries_are_read_and_answered():
    query = dnswire.parse_query(_query("Web.Example"))
    assert (query.id, query.name, query.qtype) == (0x1234, "web.example", 1)
    reply = dnswire.answer(query, ["172.18.0.2"])
    assert reply[:4] == b"\x12\x34\x85\x80"  # QR AA RD RA, NOERROR
    assert reply[6:8] == b"\x00\x01"  # one answer
    assert reply.endswith(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x02\x58\x00\x04\xac\x12\x00\x02")
    aaaa = dnswire.answer(dnswire.parse_query(_query("web", qtype=28)), ["172.18.0.2"])
    assert aaaa[6:8] == b"\x00\x00"  # a known name without IPv6: no records, no error
    assert dnswire.failure(_query("x"), dnswire.SERVFAIL)[3] & 0x0F == dnswire.SERVFAIL
    with pytest.raises(dnswire.BadMessage):
        dnswire.parse_query(b"\x00\x01")


def test_the_vm_dns_a_bridged_container_gets(tmp_path):
    stub, upstream = tmp_path / "resolv.conf", tmp_path / "upstream.conf"
    stub.write_text("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n")
    upstream.write_text("nameserver 10.0.2.3\nsearch lan\n")
    got = etcfiles.vm_dns(str(stub), str(upstream))
    assert got == etcfiles.DnsSettings(("10.0.2.3",), ("lan",), ("edns0", "trust-ad"))
    upstream.unlink()
    assert etcfiles.vm_dns(str(stub), str(upstream)).servers == ("8.8.8.8", "8.8.4.4")
    stub.write_text("nameserver 127.0.0.1\nnameserver 192.0.2.53\n")
    assert etcfiles.vm_dns(str(stub), str(upstream)).servers == ("192.0.2.53",)


def test_pools_avoid_what_the_vm_already_routes():
    table = (
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"  # default: ignored
        "eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"  # 10.0.0.0/24
        "eth1\t000012AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"  # 172.18.0.0/16
    )
    routes = ipam.routed(table)
    assert routes == [Net("10.0.0.0/24"), Net("172.18.0.0/16")]
    assert ipam.from_pools(routes).subnet == Net("172.19.0.0/16")


def test_the_default_bridge_is_made_only_where_the_config_asks(tmp_path):
    from vmctl_agent import config
    from vmctl_agent.errors import AgentError

    assert not config.load(None).default_bridge  # straight on a machine: never its network
    daemon = tmp_path / "daemon.json"
    daemon.write_text('{"bridge": "docker0", "host-gateway-ip": "10.0.2.2"}')
    loaded = config.load(str(daemon))
    assert loaded.default_bridge and loaded.host_gateway_ip == "10.0.2.2"
    assert not config.load(str(daemon), bridge="none").default_bridge  # the flag wins
    with pytest.raises(AgentError, match="bridge 'br7' is not supported: \"docker0\""):
        config.load(None, bridge="br7")


def test_interface_counters_as_docker_stats_shows_them():
    table = (
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets "
        "errs drop fifo colls carrier compressed\n"
        "    lo:     140       2    0    0    0     0          0         0      140       2"
        "    0    0    0     0       0          0\n"
        "  eth0:    1006      11    1    2    0     0          0         0      574       7"
        "    3    4    0     0       0          0\n"
    )
    assert counters.parse(table) == {
        "eth0": {"rx_bytes": 1006, "rx_packets": 11, "rx_errors": 1, "rx_dropped": 2,
                 "tx_bytes": 574, "tx_packets": 7, "tx_errors": 3, "tx_dropped": 4},
    }  # fmt: skip
    assert counters.of_process(2**22 + 1) == {}  # no such process


def test_auxiliary_addresses_are_in_the_subnet_and_never_handed_out():
    config = {"Subnet": "10.9.0.0/29", "AuxiliaryAddresses": {"b": "10.9.0.3", "a": "10.9.0.2"}}
    subnet = ipam.requested(config, [])
    assert subnet.to_json()["AuxiliaryAddresses"] == {"a": "10.9.0.2", "b": "10.9.0.3"}
    assert ipam.Subnet.from_json(subnet.to_json()) == subnet
    assert str(ipam.address(subnet, set())) == "10.9.0.4"
    with pytest.raises(ipam.PoolExhausted, match=re.escape("Address already in use: 10.9.0.2")):
        ipam.address(subnet, set(), "10.9.0.2")
    outside = {"Subnet": "10.9.0.0/29", "AuxiliaryAddresses": {"far": "10.9.1.1"}}
    words = "auxiliary address: (far:10.9.1.1) must belong to the master pool: 10.9.0.0/29"
    with pytest.raises(ipam.InvalidNetworkConfig, match=re.escape(words)):
        ipam.requested(outside, [])
    with pytest.raises(ipam.InvalidNetworkConfig, match="invalid auxiliary address x: nope"):
        ipam.requested({"Subnet": "10.9.0.0/29", "AuxiliaryAddresses": {"x": "nope"}}, [])
