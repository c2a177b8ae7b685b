"""Container networks: IPAM, the bridge driver (a Linux bridge, a veth pair per container,
NAT and isolation in the firewall), network and endpoint records, and what a container's
/etc/hosts and resolv.conf say. Uses the runtime (it plugs the network namespaces the
runtime makes), the store and the floor; never the API above it.

    ipam.py         Docker's default address pools, subnets and addresses (pure)
    records.py      networks and endpoints on disk, written atomically
    commands.py     the `ip` batches for bridges and the firewall's rules (pure)
    netlink.py      rtnetlink messages for each container's veth pair and address (pure)
    host.py         runs them: rtnetlink, iproute2, iptables-restore, sysctl
    networks.py     Networks: the predefined ones, create, find, remove; bridges and rules
    endpoints.py    containers on networks: the runtime's hooks at start and end, connect
    etcfiles.py     /etc/hosts and /etc/resolv.conf as Docker writes them (pure)
    dns.py          the embedded resolver at 127.0.0.11 (dnswire.py: DNS messages, pure)
    ports.py        published ports asked for and shown (pure); proxy.py binds and carries
    counters.py     each interface's traffic counters, for stats
"""
