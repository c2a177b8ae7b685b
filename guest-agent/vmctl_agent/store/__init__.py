"""The image store: pull images from registries (and push them back), verify every byte,
keep their layers unpacked and shared, and export or load them as archives. Uses only the
shared floor (`atomic`, `errors`, `config`, `syscalls`); it knows nothing of containers.

    reference.py   image references, normalised as Docker does
    manifest.py    manifests, indexes and platforms
    registry.py    the distribution API: endpoints, mirrors, insecure registries
    auth.py        credentials and bearer tokens
    transport.py   HTTP(S) connections to registries
    blobstream.py  one pass over a blob: hash, gunzip, hash again
    content.py     the content-addressed blobs and unpacked layers on disk
    layers.py      tar layers into directories, whiteouts included, nothing escaping
    images.py      the image records: tags, digests, who uses them
    pull.py        a pull, layers in parallel, resumable
    push.py        a push: blobs checked, mounted or uploaded, then the manifest
    archive.py     `docker save` and `docker load`
    progress.py    a pull's progress, as the Engine API streams it
"""
