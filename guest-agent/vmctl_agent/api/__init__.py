"""The Docker Engine API, served by the agent on a unix socket: the door that the docker CLI,
docker-py, vmctl and the GUI all use.

    http.py        HTTP/1.1 plumbing: versions, errors, streams, hijacked connections
    engine.py      the image store, the runtime and the registry client, together
    routes.py      which path goes to which handler
    system.py      /_ping /version /info
    images.py      /images/...
    containers.py  /containers/...
    execs.py       /containers/{id}/exec and /exec/...
    streams.py     Docker's framing of container output (multiplexed stdout/stderr)
"""
