"""The Docker Engine API, served by the agent on a unix socket: the door that the docker CLI,
docker-py, vmctl and the GUI all use. The top room: it may use every room below it (build,
network, volumes, runtime, store) and the shared floor.

    serve.py       `vmctl-agent serve`: the listening sockets, the engine, signals
    server.py      the event loop: reads every connection, answers what needs no waiting
    connection.py  one request answered on a thread: bodies, streams, hijacked connections
    wire.py        HTTP/1.1 request heads from bytes, response heads to bytes
    http.py        requests and responses as handlers see them: versions, errors, bodies
    engine.py      the image store, the runtime and the registry client, together
    routes.py      which path goes to which handler, and which can answer at once
    system.py      /_ping /version /info
    images.py      /images/...
    containers.py  /containers/...
    changes.py     /containers/{id}/pause, unpause, rename, update
    listing.py     /containers/json, from a cache kept while no container changes
    supervision.py each container's end (die), restart policy and probes; what comes back at start
    execs.py       /containers/{id}/exec and /exec/...
    build.py       /build: the classic builder's request and stream
    snapshots.py   /containers/{id}/export, /commit, image import: a container's files
    copies.py      /containers/{id}/archive: docker cp both ways
    distribution.py  /images/{name}/push: docker push
    login.py       /auth: docker login, checked against the registry
    networks.py    /networks/...
    networking.py  a container's network fields: create options, NetworkSettings
    published.py   /vmctl/ports: published ports, carried for the host agent
    volumes.py     /volumes/...: create, list, inspect, remove, prune; df's volumes
    streams.py     Docker's framing of container output (multiplexed stdout/stderr)
"""
