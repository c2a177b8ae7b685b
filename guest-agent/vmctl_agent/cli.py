"""`vmctl-agent`: the guest agent's command line.

    vmctl-agent serve  --listen unix:///PATH [--listen tcp://127.0.0.1:PORT] --data-root DIR
                       [--config daemon.json] [--registry-mirror URL]...
                       [--insecure-registry HOST:PORT]... [--bridge docker0|none]
    vmctl-agent pull   --data-root DIR [--config daemon.json] [--registry-mirror URL]...
                       [--insecure-registry HOST:PORT]... [--platform os/arch] REF
    vmctl-agent images --data-root DIR [--quiet]
    vmctl-agent inspect --data-root DIR NAME
    vmctl-agent tag    --data-root DIR SOURCE TARGET
    vmctl-agent rmi    --data-root DIR [--force] NAME...

Errors go to stderr as one line, with exit status 1 (2 for usage errors), as docker's do.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from vmctl_agent import __version__, config
from vmctl_agent.errors import AgentError
from vmctl_agent.store import manifest
from vmctl_agent.store import progress as pg
from vmctl_agent.store import reference as refs
from vmctl_agent.store.auth import docker_config_credentials
from vmctl_agent.store.images import ImageStore
from vmctl_agent.store.pull import Puller
from vmctl_agent.store.registry import RegistryClient, RegistryConfig


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except AgentError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vmctl-agent", description="vmctl's container engine")
    parser.add_argument("--version", action="version", version=f"vmctl-agent {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    serve = _command(sub, "serve", "serve the Docker Engine API", _serve)
    serve.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="unix:///PATH",
        help="where to listen (default unix:///run/vmctl-agent.sock)",
    )
    serve.add_argument(
        "--group",
        "-G",
        default=None,
        help="group owning the unix socket (default: docker, when that group exists)",
    )
    serve.add_argument(
        "--bridge",
        "-b",
        default=None,
        choices=["docker0", "none"],
        help="docker0: make the default bridge network (the VM's config asks for it); "
        "none (the default): containers default to --network none",
    )
    serve.add_argument(
        "--shared-path",
        action="append",
        default=[],
        metavar="PATH",
        help="a host folder shared at this path; given, binds elsewhere are refused",
    )
    pull = _command(sub, "pull", "pull an image from a registry", _pull)
    pull.add_argument("--platform", default=None, help="os/arch[/variant] (default: this machine)")
    pull.add_argument("--quiet", "-q", action="store_true", help="print only the image reference")
    pull.add_argument("reference")
    images = _command(sub, "images", "list images", _images)
    images.add_argument("--quiet", "-q", action="store_true", help="only image ids")
    inspect = _command(sub, "inspect", "show an image's details as JSON", _inspect)
    inspect.add_argument("name")
    tag = _command(sub, "tag", "give an image another name", _tag)
    tag.add_argument("source")
    tag.add_argument("target")
    rmi = _command(sub, "rmi", "remove images", _rmi)
    rmi.add_argument("--force", "-f", action="store_true")
    rmi.add_argument("names", nargs="+")
    return parser


def _command(sub, name: str, help: str, func) -> argparse.ArgumentParser:
    cmd = sub.add_parser(name, help=help)
    cmd.set_defaults(func=func)
    cmd.add_argument("--data-root", default=None, help=f"default {config.DEFAULT_DATA_ROOT}")
    cmd.add_argument("--config", default=None, help="dockerd-style daemon.json")
    cmd.add_argument("--registry-mirror", action="append", default=[], metavar="URL")
    cmd.add_argument("--insecure-registry", action="append", default=[], metavar="HOST:PORT")
    return cmd


def _settings(args) -> config.AgentConfig:
    return config.load(
        args.config,
        data_root=args.data_root,
        mirrors=args.registry_mirror,
        insecure=args.insecure_registry,
        group=getattr(args, "group", None),
        bridge=getattr(args, "bridge", None),
        shared=getattr(args, "shared_path", None),
    )


def _store(args) -> ImageStore:
    return ImageStore(_settings(args).data_root / "image")


def _serve(args) -> int:
    # No transparent huge pages for the engine, before the HTTP stack is loaded: the guest's
    # kernel (Debian's: THP always) would back each thread's stack and each arena with 2 MiB
    # pages of which the engine touches a few KiB (59.9 instead of 31.5 MiB with 20 containers
    # on 3 networks, bench/engine_rss.py). Containers get the machine's setting back.
    from vmctl_agent import syscalls  # (ctypes: only the engine needs it)

    syscalls.set_huge_pages(False)
    from vmctl_agent.api import serve  # the HTTP stack is only loaded to serve

    return serve.run(_settings(args), args.listen or ["unix:///run/vmctl-agent.sock"])


def _pull(args) -> int:
    settings = _settings(args)
    store = ImageStore(settings.data_root / "image")
    client = RegistryClient(RegistryConfig.of(settings), credentials=docker_config_credentials())
    platform = manifest.Platform.parse(args.platform) if args.platform else None
    printer = None if args.quiet else ProgressPrinter(sys.stdout)
    Puller(store, client, platform).pull(args.reference, printer)
    print(refs.parse(args.reference))
    return 0


def _images(args) -> int:
    images = sorted(_store(args).list(), key=lambda i: i.record.pulled, reverse=True)
    if args.quiet:
        for image in images:
            print(image.record.short_id)
        return 0
    rows = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")]
    for image in images:
        for repo, tag in _names(image):
            created = _ago(image.config.get("created", ""))
            rows.append((repo, tag, image.record.short_id, created, pg.human(image.record.size)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _names(image) -> list[tuple[str, str]]:
    tags = [refs.parse(t) for t in image.repo_tags]
    return [(t.familiar_name, t.tag or "<none>") for t in tags] or [("<none>", "<none>")]


def _ago(created: str) -> str:
    from datetime import UTC, datetime  # only `images` needs it

    from vmctl_agent.api.ages import human_duration

    try:
        then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return "N/A"
    return human_duration((datetime.now(UTC) - then).total_seconds())[0] + " ago"


def _inspect(args) -> int:
    print(json.dumps([_store(args).get(args.name).inspect()], indent=4))
    return 0


def _tag(args) -> int:
    _store(args).tag(args.source, args.target)
    return 0


def _rmi(args) -> int:
    store, status = _store(args), 0
    for name in args.names:
        try:
            for event in store.remove(name, force=args.force):
                key, value = next(iter(event.items()))
                print(f"{key}: {value}")
        except AgentError as e:
            print(f"Error: {e}", file=sys.stderr)
            status = 1
    return status


class ProgressPrinter:
    """Renders pull progress like the docker CLI: one line per layer, redrawn on a terminal."""

    def __init__(self, out) -> None:
        self._out = out
        self._tty = out.isatty()
        self._lines: list[str] = []

    def __call__(self, msg: dict) -> None:
        layer, status = msg.get("id"), msg["status"]
        if "progressDetail" in msg and not self._tty:
            return
        text = f"{layer}: {status}" if layer else status
        if self._tty and "progress" in msg:
            text += " " + msg["progress"]
        if self._tty and layer in self._lines:
            up = len(self._lines) - self._lines.index(layer)
            self._out.write(f"\x1b[{up}A\r\x1b[2K{text}\x1b[{up}B\r")
        else:
            self._out.write(text + "\n")
            if layer and "Pulling from" not in status:
                self._lines.append(layer)
        self._out.flush()
