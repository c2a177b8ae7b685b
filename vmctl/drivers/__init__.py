"""Hypervisor drivers behind `vmctl.machine.Driver`: libvirt (Linux and macOS) and a bare
qemu-system controlled over QMP (Windows, and anywhere)."""
