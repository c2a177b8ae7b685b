"""Entry point of the packaged desktop app (windowed): `vmctl gui`."""

from vmctl_gui.app import main

raise SystemExit(main())
