"""vmctl: the host side. It boots the Linux VM, deploys the guest agent, and forwards its socket.

It never imports Qt: everything the GUI can do, the `vmctl` CLI can do.
"""

__version__ = "0.1.0"
