"""Volumes and a container's mounts: named and anonymous volumes (the `local` driver), binds
of the VM's directories, tmpfs, `--volumes-from`, resolved at create into the runtime's
mounts. Uses the runtime, the image store and the shared floor; never the API above it.

    store.py     volumes on disk: records published whole, swept after a crash
    local.py     the local driver's options (type, o, device): checked and mounted
    specs.py     Binds, Mounts, Tmpfs and Volumes as Docker parses them (pure)
    resolve.py   what a container asked for, turned into the runtime's mounts
    usage.py     Volumes: which containers use which volume; create, remove, prune
"""
