"""`vmpod`: the Docker-like command line. Parses flags, calls the library, prints; nothing else."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmpod import __version__
from vmpod.cli import containers as container_commands
from vmpod.cli import images as image_commands
from vmpod.cli import templates as template_commands
from vmpod.cli.sizes import human_size, parse_size
from vmpod.errors import ExitCode, VmpodError
from vmpod.image.reference import Reference
from vmpod.image.store import ImageStore
from vmpod.paths import StateDir, kernel_cache

# Each verb imports what it needs when it runs: every CLI call pays for its imports at start-up.
if TYPE_CHECKING:
    from vmpod.container.vm import RunOptions

Handler = Callable[[StateDir, argparse.Namespace], int]


def _cmd_import(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.image.importer import import_tarball

    state.ensure()
    image = import_tarball(ImageStore(state), args.file, args.reference, args.change or [])
    print(image.id)
    return 0


def _image_rows(store: ImageStore) -> list[dict[str, Any]]:
    rows = []
    for name, digest in sorted(store.names().items()):
        ref = Reference.parse(name)
        if ref.digest:
            continue  # a repository digest (name@sha256:…), not a tag
        image = store.image(digest)
        size = sum(store.blob_path(d).stat().st_size for d in image.layers)
        rows.append(
            {
                "Repository": ref.familiar_name,
                "Tag": ref.tag or "<none>",
                "ID": image.id,
                "Created": image.config.get("created", ""),
                "Size": size,
            }
        )
    return rows


def _cmd_images(state: StateDir, args: argparse.Namespace) -> int:
    rows = _image_rows(ImageStore(state))
    if args.quiet:
        for image_id in dict.fromkeys(r["ID"] for r in rows):
            print(image_id.removeprefix("sha256:")[:12])
    elif args.format == "json":
        for row in rows:
            print(json.dumps(row))
    else:
        print(f"{'REPOSITORY':<30} {'TAG':<12} {'IMAGE ID':<14} {'CREATED':<22} SIZE")
        for row in rows:
            short = row["ID"].removeprefix("sha256:")[:12]
            print(
                f"{row['Repository']:<30} {row['Tag']:<12} {short:<14} {row['Created'][:19]:<22} "
                f"{human_size(row['Size'])}"
            )
    return 0


def _run_options(args: argparse.Namespace) -> RunOptions:
    from vmpod.container.spec import ProcessRequest
    from vmpod.container.vm import RunOptions

    return RunOptions(
        image=args.image,
        process=ProcessRequest(
            command=tuple(args.command),
            entrypoint=args.entrypoint,
            env=tuple(args.env or ()),
            env_files=tuple(args.env_file or ()),
            workdir=args.workdir or "",
            user=args.user or "",
            hostname=args.hostname or "",
            tty=args.tty,
        ),
        interactive=args.interactive,
        remove=args.rm,
        detach=getattr(args, "detach", True),
        name=args.name or "",
        cpus=args.cpus,
        memory_bytes=parse_size(args.memory) if args.memory else None,
        kernel=args.kernel,
        dry_run=getattr(args, "dry_run", False),
        network=args.network,
        publish=tuple(args.publish or ()),
        publish_all=args.publish_all,
        add_hosts=tuple(args.add_host or ()),
        dns=tuple(args.dns or ()),
        volumes=tuple(args.volume or ()),
        mounts=tuple(args.mount or ()),
        tmpfs=tuple(args.tmpfs or ()),
        read_only=args.read_only,
        restart=args.restart,
        template=not args.no_template,
    )


def _cmd_run(state: StateDir, args: argparse.Namespace) -> int:
    image_commands.pull_if_missing(state, args.image)
    options = _run_options(args)
    if options.detach and not options.dry_run:
        from vmpod.container.detached import start_detached

        print(start_detached(state, options, debug=args.debug).id)
        return 0
    from vmpod.container.runner import run_container

    if options.restart != "no":
        raise VmpodError("--restart needs -d", "a restart policy is kept by the container's supervisor")
    return run_container(state, options)


def _cmd_create(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.container.detached import create

    image_commands.pull_if_missing(state, args.image)
    print(create(state, _run_options(args)).id)
    return 0


def _cmd_info(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.container.vm import agent_binary
    from vmpod.hypervisor import accel, select
    from vmpod.kernel import find_kernel

    choice = accel.choose()
    info: dict[str, Any] = {
        "Version": __version__,
        "Driver": select.choose().value,
        "Drivers": {name: why or "available" for name, why in select.availability().items()},
        "Accelerator": choice.accel.value,
        "AcceleratorReason": choice.reason,
        "StateDir": str(state.root),
        "KernelCache": str(kernel_cache()),
    }
    try:
        kernel = find_kernel(args.kernel)
        info["Kernel"] = f"{kernel.path} ({kernel.kind})"
    except VmpodError as e:
        info["Kernel"] = f"none: {e}"
    try:
        agent = agent_binary()
        info["Agent"] = f"{agent} ({_agent_version(agent)})"
    except VmpodError as e:
        info["Agent"] = f"none: {e}"
    if args.format == "json":
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}: {v}" for k, v in value.items())
            print(f"{key}: {value}")
    return 0


def _agent_version(agent: Path) -> str:
    from vmpod.run import run

    done = run([str(agent), "--version"], check=False)
    return done.stdout.strip() or "unknown version"


def _container_flags(p: argparse.ArgumentParser) -> None:
    """The flags `run` and `create` share."""
    # -h is --hostname here, as in Docker; --help stays.
    p.add_argument("--help", action="help", help="show this help")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    p.add_argument("-e", "--env", action="append", metavar="KEY=VALUE", help="set an environment variable")
    p.add_argument("--env-file", action="append", metavar="FILE", help="read environment variables from FILE")
    p.add_argument("-w", "--workdir", metavar="DIR", help="working directory in the container")
    p.add_argument("-u", "--user", metavar="USER[:GROUP]", help="user name or UID, optional group")
    p.add_argument("--entrypoint", metavar="CMD", help="override the image's entrypoint")
    p.add_argument("-h", "--hostname", metavar="NAME", help="container host name")
    p.add_argument("--name", help="container name")
    p.add_argument("--cpus", type=float, help="virtual CPUs of the VM")
    p.add_argument("-m", "--memory", metavar="SIZE", help="memory for the container, e.g. 512m")
    p.add_argument("--kernel", metavar="PATH", help="guest kernel to boot (an image, or a stock-kernel directory)")
    p.add_argument("-p", "--publish", action="append", metavar="[IP:]HOST:CONTAINER[/PROTO]", help="publish a port")
    p.add_argument("-P", "--publish-all", action="store_true", help="publish every exposed port on a free port")
    p.add_argument("--network", "--net", default="default", metavar="NAME", help="default, or none")
    p.add_argument("--add-host", action="append", metavar="NAME:IP", help="add a line to /etc/hosts")
    p.add_argument("--dns", action="append", metavar="IP", help="a DNS server for /etc/resolv.conf")
    p.add_argument("-v", "--volume", action="append", metavar="SRC:DST[:ro]", help="a host directory or volume")
    p.add_argument("--mount", action="append", metavar="type=…,source=…,target=…", help="a mount, Docker's syntax")
    p.add_argument("--tmpfs", action="append", metavar="PATH[:OPTIONS]", help="a tmpfs mount")
    p.add_argument("--read-only", action="store_true", help="mount the container's root read-only")
    p.add_argument("--restart", default="no", metavar="POLICY", help="no, on-failure[:N], always, unless-stopped")
    p.add_argument("--no-template", action="store_true", help="boot the VM's kernel instead of restoring a template")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vmpod", description="Run containers, each in its own VM.")
    parser.add_argument("--root", help="state directory (default $VMPOD_ROOT or /var/lib/vmpod)")
    parser.add_argument("--debug", action="store_true", help="show commands and tracebacks")
    parser.add_argument(
        "--driver", choices=["qemu", "xen"], help="hypervisor (default $VMPOD_DRIVER, xen in a Xen dom0, else qemu)"
    )
    parser.add_argument("--version", action="version", version=f"vmpod {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)

    p = sub.add_parser("import", help="create an image from a root-filesystem tarball")
    p.add_argument("file", metavar="TARBALL", help="tarball path, or - for stdin")
    p.add_argument("reference", metavar="NAME[:TAG]")
    p.add_argument("-c", "--change", action="append", help="apply a Dockerfile instruction (CMD, ENV, …)")
    p.set_defaults(handler=_cmd_import)

    p = sub.add_parser("images", help="list images")
    p.add_argument("-q", "--quiet", action="store_true", help="only IDs")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(handler=_cmd_images)

    p = sub.add_parser("run", help="run a command in a new container, in its own VM", add_help=False)
    _container_flags(p)
    p.add_argument("-d", "--detach", action="store_true", help="run in the background and print the container ID")
    p.add_argument("--dry-run", action="store_true", help="print the hypervisor command line, run nothing")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    p.set_defaults(handler=_cmd_run)

    p = sub.add_parser("create", help="create a container without starting it", add_help=False)
    _container_flags(p)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    p.set_defaults(handler=_cmd_create)

    image_commands.register(sub)

    container_commands.register(sub)

    template_commands.register(sub)

    p = sub.add_parser("info", help="show drivers, accelerator, kernel, agent and state directory")
    p.add_argument("--kernel", metavar="PATH", help="guest kernel to report on")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(handler=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    # argparse's own usage errors exit 2; Docker's CLI uses 125 for them.
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return 0 if e.code == 0 else ExitCode.ENGINE
    logging.basicConfig(format="vmpod: %(message)s", level=logging.DEBUG if args.debug else logging.WARNING)
    logging.getLogger("qemu").setLevel(logging.WARNING)  # qemu.qmp's own debug lines drown ours
    state = StateDir.resolve(args.root)
    if args.driver:
        os.environ["VMPOD_DRIVER"] = args.driver  # read where the driver is chosen, and by supervisors
    handler: Handler = args.handler
    try:
        return handler(state, args)
    except VmpodError as e:
        if args.debug:
            logging.exception("failed")
        print(f"vmpod: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return ExitCode.SIGNAL_BASE + 2
