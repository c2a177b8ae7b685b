"""Images from files: the classic builder (a Dockerfile and a context tar become an image,
each RUN in a container on the runtime, each layer stored as pulled layers are), and a
container's files as changes, a tar or a new image (diff, export, commit, import). Uses the
runtime, the image store and the shared floor; never the API above it.

    dockerfile.py  the Dockerfile's lines: directives, continuations, heredocs, forms
    words.py       Docker's word rules: quotes, escapes and ${VAR} substitution
    stages.py      instructions grouped into stages, flags checked, --target
    ignore.py      .dockerignore patterns, as Go's filepath.Match and `**`
    context.py     the context tar streamed, spooled and indexed; the Dockerfile; .dockerignore
    contexttree.py the context's index: what unpacking it would make, read from the spool
    trees.py       what COPY reads sources from (disk or context); the cache's content hash
    workspace.py   a build's own directory, and the sweep of those a killed agent left
    dispatch.py    what each instruction does to the stage's image config
    builder.py     a build: stages, steps, the cache, the stream the CLI reads
    steps.py       RUN in a container; COPY, ADD, WORKDIR through the mounted image
    copystep.py    COPY and ADD as steps: their plan, fetched sources, history text
    copier.py      COPY and ADD's rules: globs, directories, owners, modes, archives
    overlay.py     an image mounted in a thread's own mount namespace; scoped paths
    layertar.py    a directory of changes as an OCI layer, stored as pulled layers are
    commit.py      a step's image: config, history, record, and the build cache
    export.py      a container's whole filesystem as one streamed tar
"""
