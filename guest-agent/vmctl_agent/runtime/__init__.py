"""The container runtime: make, run, supervise and remove containers from the store's
images (namespaces, an overlay root, cgroups, capabilities, a shim per container). Uses the
image store and the shared floor; never the API above it.

    containers.py     Runtime: create, start, wait, signals, remove, exec, output
    index.py          finding containers and deriving their status from their records
    changes.py        pause, unpause, rename, update: a container changed in place
    containerconfig.py  what a container is made of, decided once at create
    records.py        a container's records on disk
    spec.py           the create options and the process spec, checked
    restarts.py       restart policies, their back-off, the pending restarts
    healthcheck.py    healthchecks: the check, and the health its results add up to
    probes.py         one healthcheck probe, run as an exec in the container
    shim.py           the supervisor of one container: output, exit, ctl.sock
    process.py        the container's first process: the ordered recipe to exec
    rootfs.py         the overlay root, /proc /sys /dev, pivot_root
    execs.py          `docker exec`: a process joining a running container
    containercopy.py  `docker cp`: a path's stat, a path as a tar, a tar unpacked at a path
    rootview.py       a helper process standing in a container's root (running or not)
    pathcopy.py pathextract.py  docker cp's reading and writing, inside that root
    netns.py          network namespaces made before a start; the network room's hooks
    control.py        ctl.sock: stdin, terminal resizes, output taps
    taps.py           output taps: the live output, from the shim to attached clients
    cgroups.py        limits and stats, cgroup v1 and v2 (cgroupfs.py: the files)
    capabilities.py   Docker's default capability set
    isolation.py      namespaces (--pid, --uts, --ipc, --cgroupns) and --init, checked
    ulimits.py sysctls.py  --ulimit and --sysctl: checked, then set inside
    logs.py           json-file logs
    pids.py endings.py  processes by pid and start time; whose shim has ended
    exitwatch.py      one thread waiting for every running container's shim to end
    timers.py         one thread for calls due later: healthcheck probes, restart back-offs
    naming.py         Docker's generated names
"""
