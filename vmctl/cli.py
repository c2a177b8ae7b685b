"""The `vmctl` command: a thin layer over `vmctl.vm`, which the GUI uses too.

vmctl start|stop|status|delete|ssh|version|logs|image|docker-context|config|gui [--name NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from vmctl import __version__, console, shares, vm
from vmctl import config as vmconfig
from vmctl import paths as vmpaths
from vmctl.errors import VmctlError


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except VmctlError as e:
        print(f"vmctl: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmctl", description="Run a Linux VM whose engine speaks the Docker Engine API."
    )
    parser.add_argument("--version", action="version", version=f"vmctl {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    start = _command(sub, "start", "create the VM on first use and boot it", _start)
    _config_flags(start)
    stop = _command(sub, "stop", "shut the VM down", _stop)
    stop.add_argument("--timeout", type=float, default=60, help="seconds before forcing it off")
    status = _command(sub, "status", "say whether the VM runs and the engine answers", _status)
    status.add_argument("--json", action="store_true")
    _command(sub, "delete", "stop the VM and remove everything it has", _delete)
    ssh = _command(sub, "ssh", "a shell, or a command, in the VM", _ssh)
    ssh.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    _command(sub, "version", "Client and Server versions, as `docker version`", _version)
    logs = _command(sub, "logs", "the VM's console and the host agent's log", _logs)
    logs.add_argument("--tail", "-n", type=int, default=50, help="lines of each (0: all)")
    logs.add_argument("--console", action="store_true", help="only the serial console")
    logs.add_argument("--hostagent", action="store_true", help="only the host agent's log")
    image = sub.add_parser("image", help="the VM's base images")
    image_sub = image.add_subparsers(required=True, metavar="ACTION")
    build = image_sub.add_parser("build", help="build the offline base image (Linux)")
    build.set_defaults(func=_image_build)
    listing = image_sub.add_parser("ls", help="list the cached base images")
    listing.set_defaults(func=_image_ls)
    context = _command(sub, "docker-context", "create/update a docker context for the VM", _ctx)
    context.add_argument("--use", action="store_true", help="also make it the current context")
    config = _command(sub, "config", "show or change the VM's settings (next start)", _config)
    _config_flags(config)
    gui = _command(sub, "gui", "the desktop app", _gui)
    gui.add_argument("--minimized", action="store_true", help="start in the tray")
    gui.add_argument("--start-vm", action="store_true", help="boot the VM if it is stopped")
    return parser


def _command(sub, name: str, help: str, func) -> argparse.ArgumentParser:
    cmd = sub.add_parser(name, help=help, description=help)
    cmd.set_defaults(func=func)
    cmd.add_argument("--name", default=vmpaths.DEFAULT_NAME, help="the VM (default: default)")
    return cmd


def _config_flags(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--cpus", type=int)
    cmd.add_argument("--memory", type=int, metavar="MIB")
    cmd.add_argument("--disk", type=int, metavar="GIB", help="grows only")
    cmd.add_argument("--driver", choices=vmconfig.DRIVERS)
    cmd.add_argument("--libvirt-uri", metavar="URI", help="e.g. qemu:///session, qemu+ssh://…")
    cmd.add_argument("--accel", choices=vmconfig.ACCELS)
    cmd.add_argument("--image", metavar="PATH|URL", help="base image (default: Debian 12)")
    cmd.add_argument("--registry-mirror", action="append", metavar="URL")
    cmd.add_argument("--insecure-registry", action="append", metavar="HOST:PORT")
    cmd.add_argument(
        "--publish-address", metavar="ADDR", help="where published ports listen (127.0.0.1)"
    )
    cmd.add_argument(
        "--mount", action="append", default=[], metavar="PATH[:ro]",
        help="share a host folder at the same path in the VM (default: your home folder)",
    )  # fmt: skip
    cmd.add_argument(
        "--unmount", action="append", default=[], metavar="PATH", help="stop sharing a folder"
    )
    cmd.add_argument("--share-transport", choices=shares.TRANSPORTS)


def _changes(args) -> dict:
    """The flags given, as VMConfig fields (None: not given)."""
    mounts = None
    if args.mount or args.unmount:
        current = vmconfig.load(vmpaths.vm(args.name).config)
        mounts = current.edit_mounts(args.mount, args.unmount).mounts
    return {
        "cpus": args.cpus,
        "memory_mib": args.memory,
        "disk_gib": args.disk,
        "driver": args.driver,
        "libvirt_uri": args.libvirt_uri,
        "accel": args.accel,
        "image": args.image,
        "registry_mirrors": args.registry_mirror,
        "insecure_registries": args.insecure_registry,
        "publish_address": args.publish_address,
        "mounts": mounts,
        "share_transport": args.share_transport,
    }


def _start(args) -> int:
    began = time.monotonic()
    state = vm.start(args.name, progress=say, **_changes(args))
    say(f"ready in {time.monotonic() - began:.0f} s ({state.accel})")
    print(f"DOCKER_HOST={state.docker_host}")
    return 0


def _stop(args) -> int:
    state = vm.stop(args.name, timeout=args.timeout, progress=say)
    print(state.state)
    return 0


def _status(args) -> int:
    state = vm.status(args.name)
    if args.json:
        print(json.dumps(state.to_json(), indent=1))
    else:
        line = f"{state.name}: {state.state}"
        if state.detail:
            line += f" ({state.detail})"
        print(line)
        if state.state in ("running", "degraded", "starting"):
            c = state.config
            print(f"  driver {c.driver} ({state.accel}), {c.cpus} CPUs, {c.memory_mib} MiB")
            print(f"  DOCKER_HOST={state.docker_host}")
            for share in c.shares():
                mode = " (read-only)" if share.read_only else ""
                print(f"  shared {share.host} at {share.guest} over {c.transport()}{mode}")
        if state.state == "running":
            for port in vm.published_ports(args.name):
                print(f"  published {port}")
    return 0


def _delete(args) -> int:
    vm.delete(args.name, progress=say)
    return 0


def _ssh(args) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    endpoint = vm.endpoint(args.name)
    system_ssh = shutil.which("ssh")
    from vmctl import ssh

    if system_ssh:
        argv = [
            system_ssh,
            "-o", "LogLevel=ERROR",
            *(["-t"] if not command and sys.stdin.isatty() else []),
            *ssh.openssh_options(endpoint, vm.known_hosts(args.name), vm.domain_name(args.name)),
            *(["--", remote_command(command)] if command else []),
        ]  # fmt: skip
        if sys.platform == "win32":
            return subprocess.call(argv)
        os.execv(system_ssh, argv)
    with ssh.Guest(endpoint) as guest:
        if not command:
            return ssh.interactive(guest)
        result = guest.run(remote_command(command), check=False, timeout=24 * 3600)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        return result.status


def remote_command(argv: list[str]) -> str:
    """One argument is a shell command line (`vmctl ssh -- "dmesg | tail"`); several are a
    command and its arguments, each kept whole (`vmctl ssh -- sh -c "a && b"`), where plain ssh
    would join them with spaces and lose the quoting."""
    return argv[0] if len(argv) == 1 else shlex.join(argv)


def _version(args) -> int:
    import docker

    client = vm.docker_client(args.name, timeout=30)
    try:
        server = client.version()
    except docker.errors.DockerException as e:
        raise VmctlError(
            f"the engine of VM {args.name!r} does not answer ({e}): is it running? "
            f"vmctl status --name {args.name}"
        ) from None
    print(format_version(server, context=context_name(args.name)))
    return 0


def format_version(server: dict, context: str) -> str:
    """`docker version`'s layout: what the user compares with Docker Desktop's."""
    import docker

    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    rows = [
        "Client: vmctl",
        f" Version:           {__version__}",
        f" API version:       {server.get('ApiVersion', '?')}",
        f" Python version:    {platform.python_version()}",
        f" docker-py:         {docker.__version__}",
        f" OS/Arch:           {platform.system().lower()}/{arch}",
        f" Context:           {context}",
        "",
        f"Server: {server.get('Platform', {}).get('Name', 'vmctl-agent')}",
        " Engine:",
        f"  Version:          {server.get('Version', '?')}",
        f"  API version:      {server.get('ApiVersion', '?')} "
        f"(minimum version {server.get('MinAPIVersion', '?')})",
        f"  Runtime:          {server.get('GoVersion', 'n/a')}",
        f"  Git commit:       {server.get('GitCommit', 'n/a')}",
        f"  Built:            {server.get('BuildTime', 'n/a')}",
        f"  OS/Arch:          {server.get('Os', '?')}/{server.get('Arch', '?')}",
        f"  Kernel Version:   {server.get('KernelVersion', '?')}",
    ]
    return "\n".join(rows)


def _logs(args) -> int:
    paths = vmpaths.vm(args.name)
    both = not (args.console or args.hostagent)
    for wanted, title, path in (
        (args.console or both, "console", paths.serial_log),
        (args.hostagent or both, "host agent", paths.hostagent_log),
    ):
        if not wanted:
            continue
        if both:
            print(f"==> {title} ({path}) <==")
        if not path.exists():
            print(f"(no {title} log yet)")
            continue
        text = path.read_bytes().decode(errors="replace").splitlines()
        for line in text[-args.tail :] if args.tail else text:
            print(console.printable(line.rstrip("\r")))
    return 0


def _image_build(args) -> int:
    from vmctl import image

    built = image.build(progress=say)
    print(built.disk)
    return 0


def _image_ls(args) -> int:
    root = vmpaths.images_dir()
    for path in sorted(root.glob("**/*.qcow2")) if root.exists() else []:
        print(f"{path}  {path.stat().st_size / 2**20:.0f} MiB")
    return 0


def context_name(name: str) -> str:
    """`vmctl` for the default VM, `vmctl-NAME` for others (as colima names its contexts)."""
    return "vmctl" if name == vmpaths.DEFAULT_NAME else f"vmctl-{name}"


def _ctx(args) -> int:
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        raise VmctlError("the docker CLI is not installed: install it, then run this again")
    paths = vmpaths.vm(args.name)
    name = context_name(args.name)
    endpoint = f"host={vm.docker_host(paths)}"
    exists = subprocess.run([docker_cli, "context", "inspect", name], capture_output=True)
    verb = "update" if exists.returncode == 0 else "create"
    desc = f"vmctl VM {args.name!r} (linux/amd64 engine in a VM)"
    done = subprocess.run(
        [docker_cli, "context", verb, name, "--description", desc, "--docker", endpoint],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise VmctlError(f"docker context {verb} {name} failed: {done.stderr.strip()}")
    if args.use:
        subprocess.run([docker_cli, "context", "use", name], check=True, capture_output=True)
    print(name)
    return 0


def _config(args) -> int:
    paths = vmpaths.vm(args.name)
    changes = _changes(args)
    config = vmconfig.load(paths.config)
    if any(v is not None for v in changes.values()):
        config = config.replace(**changes)
        vmconfig.save(config, paths.config)
        if vm.hypervisor_running(args.name):
            say(
                f"saved: `vmctl start --name {args.name}` applies registry settings to the "
                "running VM; CPUs, memory, disk and shared folders apply after `vmctl stop`"
            )
    print(json.dumps(config.to_json(), indent=1))
    return 0


def _gui(args) -> int:
    flags = ["--name", args.name]
    flags += ["--minimized"] * args.minimized + ["--start-vm"] * args.start_vm
    if getattr(sys, "frozen", False):  # the packaged app: the desktop program is beside us
        suffix = ".exe" if sys.platform == "win32" else ""
        desktop = Path(sys.executable).with_name(f"vmctl-desktop{suffix}")
        subprocess.Popen([str(desktop), *flags], start_new_session=True)
        return 0
    try:
        from vmctl_gui import app
    except ImportError as e:
        raise VmctlError(f"the desktop app needs PySide6 ({e}): pip install 'vmctl[gui]'") from None
    return app.main(flags)


if __name__ == "__main__":
    raise SystemExit(main())
