"""The classic builder: a Dockerfile and a context tar become an image, each RUN in a
container on the runtime, each layer stored as pulled layers are. Uses the runtime, the
image store and the shared floor; never the API above it.

    dockerfile.py  the Dockerfile's lines: directives, continuations, heredocs, forms
    words.py       Docker's word rules: quotes, escapes and ${VAR} substitution
    stages.py      instructions grouped into stages, flags checked, --target
    ignore.py      .dockerignore patterns, as Go's filepath.Match and `**`
"""
