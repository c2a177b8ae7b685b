"""Entry point of the packaged `vmctl` command (console): the same CLI as `pip install`'s."""

from vmctl.cli import main

raise SystemExit(main())
