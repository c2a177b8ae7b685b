"""Container networks: IPAM, the bridge driver (a Linux bridge, a veth pair per container,
NAT and isolation in the firewall), network and endpoint records, and what a container's
/etc/hosts and resolv.conf say. Uses the runtime (it plugs the network namespaces the
runtime makes), the store and the floor; never the API above it.

    ipam.py         Docker's default address pools, subnets and addresses (pure)
    records.py      networks and endpoints on disk, written atomically
    commands.py     the `ip` and firewall commands for a state (pure)
    host.py         runs them: iproute2, iptables-restore, sysctl
    networks.py     Networks: create, remove, connect; the runtime's hook at start and end
    etcfiles.py     /etc/hosts and /etc/resolv.conf as Docker writes them (pure)
"""
