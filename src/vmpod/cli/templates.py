"""`vmpod template build|ls|rm`: the saved VMs that containers start from instead of booting."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from typing import Any

from vmpod.cli.sizes import human_size, parse_size
from vmpod.errors import VmpodError
from vmpod.paths import StateDir


def _cmd_build(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.container import template
    from vmpod.container.vm import machine, vm_size
    from vmpod.hypervisor.base import DiskSpec, UserNetwork

    if args.network not in ("default", "none"):
        raise VmpodError(f"invalid --network {args.network!r} for a template", "use default or none")
    vcpus, memory = vm_size(args.cpus, parse_size(args.memory) if args.memory else None)
    spec = replace(
        machine(state, vcpus, memory, args.kernel),
        disks=(DiskSpec(-1, -1),),
        network=UserNetwork() if args.network == "default" else None,
    )
    state.ensure()
    print(template.ensure(state, spec).key[:12])
    return 0


def _rows(state: StateDir) -> list[dict[str, Any]]:
    from vmpod.container import template

    rows = []
    for found in template.listing(state):
        meta = found.meta
        devices = ["nic"] if meta.get("nic") else []
        devices += [f"{len(meta.get('shares', []))} shares"] if meta.get("shares") else []
        rows.append(
            {
                "ID": found.key,
                "CPUs": meta.get("vcpus"),
                "MemoryMiB": meta.get("memory_mib"),
                "Kernel": meta.get("kernel"),
                "Accelerator": meta.get("accel"),
                "Devices": ",".join(devices) or "-",
                "Size": meta.get("size"),
                "Created": meta.get("created"),
                "BuildSeconds": meta.get("build_seconds"),
            }
        )
    return rows


def _cmd_ls(state: StateDir, args: argparse.Namespace) -> int:
    rows = _rows(state)
    if args.quiet:
        for row in rows:
            print(row["ID"][:12])
    elif args.format == "json":
        for row in rows:
            print(json.dumps(row))
    else:
        print(f"{'TEMPLATE ID':<14} {'CPUS':<5} {'MEMORY':<8} {'DEVICES':<16} {'SIZE':<9} {'CREATED':<20} KERNEL")
        for row in rows:
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["Created"] or 0))
            print(
                f"{row['ID'][:12]:<14} {row['CPUs']!s:<5} {str(row['MemoryMiB']) + 'MiB':<8} {row['Devices']:<16} "
                f"{human_size(row['Size'] or 0):<9} {created:<20} {row['Kernel']}"
            )
    return 0


def _cmd_rm(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.container import template

    keys = [t.key for t in template.listing(state)]
    if args.all:
        chosen = keys
    elif not args.templates:
        raise VmpodError("template rm needs a TEMPLATE ID or --all")
    else:
        chosen = []
        for prefix in args.templates:
            matches = [k for k in keys if k.startswith(prefix.lower())] if prefix else []
            if len(matches) != 1:
                problem = "no template" if not matches else "more than one template"
                raise VmpodError(f"{problem} matches {prefix!r}", "see `vmpod template ls`")
            chosen += matches
    for key in chosen:
        template.remove(state, key)
        print(key[:12])
    return 0


def register(sub: Any) -> None:
    """Adds `template` and its verbs to the CLI's subcommands."""
    p = sub.add_parser("template", help="manage the saved VMs containers start from")
    verbs = p.add_subparsers(dest="template_verb", metavar="COMMAND", required=True)

    b = verbs.add_parser("build", help="build a template ahead of its first use; prints its ID")
    b.add_argument("--cpus", type=float, help="virtual CPUs of the VM")
    b.add_argument("-m", "--memory", metavar="SIZE", help="memory for the containers, e.g. 512m")
    b.add_argument("--kernel", metavar="PATH", help="guest kernel (an image, or a stock-kernel directory)")
    b.add_argument("--network", default="default", metavar="NAME", help="default (with a NIC) or none")
    b.set_defaults(handler=_cmd_build)

    ls = verbs.add_parser("ls", aliases=["list"], help="list templates")
    ls.add_argument("-q", "--quiet", action="store_true", help="only IDs")
    ls.add_argument("--format", choices=["table", "json"], default="table")
    ls.set_defaults(handler=_cmd_ls)

    rm = verbs.add_parser("rm", help="remove templates (the next container that needs one rebuilds it)")
    rm.add_argument("-a", "--all", action="store_true", help="remove every template")
    rm.add_argument("templates", nargs="*", metavar="TEMPLATE_ID")
    rm.set_defaults(handler=_cmd_rm)
