"""Container verbs beyond `run` (Docker's flags): the lifecycle, logs, exec, inspection, volumes, clean-up."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmpod.cli.sizes import human_size
from vmpod.container.logs import STDERR, Record, lines, read_records, timestamp
from vmpod.container.state import ContainerRecord, ContainerStore, Status
from vmpod.container.volumes import VolumeStore
from vmpod.errors import ExitCode, VmpodError
from vmpod.paths import StateDir

if TYPE_CHECKING:
    from vmpod.container.vm import Prepared


def _each(state: StateDir, names: list[str], action: Any) -> int:
    """Applies action to each container, printing its name as Docker does; 1 if any failed."""
    store = ContainerStore(state)
    failed = 0
    for text in names:
        try:
            action(store.find(text))
            print(text)
        except VmpodError as e:
            print(f"vmpod: error: {e}", file=sys.stderr)
            failed = 1
    return failed


def _status(record: ContainerRecord) -> str:
    if record.status is Status.RUNNING:
        return f"Up {_ago(record.started or record.created).removesuffix(' ago')}"
    if record.status is Status.RESTARTING:
        return f"Restarting ({record.exit_code if record.exit_code is not None else 0})"
    if record.status is Status.EXITED:
        return f"Exited ({record.exit_code if record.exit_code is not None else 'unknown'}) {_ago(record.finished)}"
    return "Created"


def _ago(moment: float) -> str:
    if not moment:
        return ""
    seconds = int(time.time() - moment)
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} seconds ago"


def _cmd_ps(state: StateDir, args: argparse.Namespace) -> int:
    records = [r for r in ContainerStore(state).all() if args.all or r.status is Status.RUNNING]
    if args.quiet:
        for record in records:
            print(record.id[:12])
    elif args.format == "json":
        for record in records:
            print(json.dumps({**record.to_dict(), "State": record.status.value, "Status": _status(record)}))
    else:
        print(f"{'CONTAINER ID':<14} {'IMAGE':<24} {'COMMAND':<24} {'STATUS':<28} {'PORTS':<30} NAMES")
        for r in records:
            command = json.dumps(" ".join(r.command)[:20])
            ports = ", ".join(r.ports) if r.status is Status.RUNNING else ""
            print(f"{r.id[:12]:<14} {r.image:<24} {command:<24} {_status(r):<28} {ports:<30} {r.name}")
    return 0


def _cmd_rm(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.container import detached

    store = ContainerStore(state)

    def remove(record: ContainerRecord) -> None:
        if record.status is Status.RUNNING:
            if not args.force:
                raise VmpodError(f"cannot remove container {record.name}: it is running", "stop it first, or use rm -f")
            detached.stop(state, record, 0)  # a stop, not a kill: no restart policy brings it back
        anonymous = _anonymous_volumes(state, record) if args.volumes else []
        store.remove(record.id)
        for name in anonymous:  # `rm -v`: the container's anonymous volumes go with it, named ones stay
            VolumeStore(state).remove(name)

    return _each(state, args.containers, remove)


def _plan(state: StateDir, record: ContainerRecord) -> Prepared | None:
    """What the container was made of (its plan.json), or None for a container without a readable one."""
    from vmpod.container.vm import Prepared

    try:
        return Prepared.load(ContainerStore(state).directory(record.id))
    except (OSError, ValueError, KeyError):
        return None


def _anonymous_volumes(state: StateDir, record: ContainerRecord) -> list[str]:
    from vmpod.container.volumes import is_anonymous

    plan = _plan(state, record)
    return [m.volume for m in plan.mounts if m.volume and is_anonymous(m.volume)] if plan else []


def _cmd_stop(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.container import detached

    return _each(state, args.containers, lambda r: detached.stop(state, r, args.time))


def _cmd_kill(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.container import detached

    name = args.signal.upper().removeprefix("SIG")
    try:
        signo = int(name) if name.isdigit() else int(signal.Signals[f"SIG{name}"])
    except KeyError:
        raise VmpodError(f"invalid signal: {args.signal}", "use a name like TERM or a number") from None
    return _each(state, args.containers, lambda r: detached.kill(state, r, signo))


def _cmd_wait(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.container import detached

    store = ContainerStore(state)
    for text in args.containers:
        print(detached.wait_until_exited(state, store.find(text).id).exit_code)
    return 0


def _print_log(record: Record, with_time: bool) -> None:
    stream = sys.stderr.buffer if record.stream == STDERR else sys.stdout.buffer
    if with_time:
        stream.write(timestamp(record.time_ns).encode() + b" ")
    stream.write(record.data)
    stream.flush()


def _cmd_logs(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.container import detached

    record = ContainerStore(state).find(args.container)
    path = detached.log_path(state, record)
    if not path.exists():
        raise VmpodError(f"container {args.container} has no logs", "logs are kept unless the container ran with --rm")
    chunks = list(read_records(path))
    offset = chunks[-1][1] if chunks else 0
    shown = lines([r for r, _ in chunks])
    if args.tail != "all":
        count = int(args.tail)
        shown = shown[-count:] if count > 0 else []
    for line in shown:
        _print_log(line, args.timestamps)
    while args.follow:
        # Whether it still runs is read before the log, so output written just before it stopped is shown.
        running = ContainerStore(state).get(record.id).status is Status.RUNNING
        new = list(read_records(path, offset))
        for chunk, _ in new:
            _print_log(chunk, args.timestamps)
        if new:
            offset = new[-1][1]
        elif not running:
            return 0
        else:
            time.sleep(detached.POLL_S)
    return 0


def _cmd_exec(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.container.exec_client import exec_in

    record = ContainerStore(state).find(args.container)
    if record.status is not Status.RUNNING:
        raise VmpodError(f"container {args.container} is not running", "start it first")
    if not args.command:
        raise VmpodError("exec needs a command", "vmpod exec CONTAINER COMMAND [ARG...]")
    request = {
        "op": "exec",
        "args": args.command,
        "env": args.env or [],
        "workdir": args.workdir or "",
        "user": args.user or "",
        "tty": args.tty,
        "interactive": args.interactive,
        "detach": args.detach,
    }
    return exec_in(ContainerStore(state).directory(record.id), request)


def _cmd_inspect(state: StateDir, args: argparse.Namespace) -> int:
    store = ContainerStore(state)
    out: list[dict[str, Any]] = []
    failed = 0
    for text in args.containers:
        try:
            record = store.find(text)
        except VmpodError as e:
            print(f"vmpod: error: {e}", file=sys.stderr)
            failed = 1
            continue
        out.append(_inspect(record))
    print(json.dumps(out, indent=4))
    return failed


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat() if moment else "0001-01-01T00:00:00Z"


def _inspect(record: ContainerRecord) -> dict[str, Any]:
    return {
        "Id": record.id,
        "Name": "/" + record.name,
        "Created": _iso(record.created),
        "Path": record.command[0] if record.command else "",
        "Args": list(record.command[1:]),
        "Image": record.image_id,
        "Config": {"Image": record.image, "Cmd": list(record.command)},
        "RestartCount": record.restart_count,
        "NetworkSettings": {"Ports": list(record.ports)},
        "State": {
            "Status": record.status.value,
            "Running": record.status is Status.RUNNING,
            "Pid": record.pid,
            "ExitCode": record.exit_code if record.exit_code is not None else 0,
            "FinishedAt": _iso(record.finished),
        },
    }


def _follow(state: StateDir, record: ContainerRecord, offset: int) -> int:
    from vmpod.container import detached

    """Prints the container's output from offset on until it stops; returns its exit code (attach)."""
    path = detached.log_path(state, record)
    store = ContainerStore(state)
    while True:
        current = store.get(record.id)
        new = list(read_records(path, offset))
        for chunk, _ in new:
            _print_log(chunk, False)
        if new:
            offset = new[-1][1]
        elif current.status is Status.EXITED:
            return current.exit_code if current.exit_code is not None else ExitCode.ENGINE
        else:
            time.sleep(detached.POLL_S)


def _log_end(state: StateDir, record: ContainerRecord) -> int:
    from vmpod.container import detached

    path = detached.log_path(state, record)
    return path.stat().st_size if path.exists() else 0


def _cmd_start(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.container import detached

    store = ContainerStore(state)
    if args.attach:
        record = store.find(args.containers[0])
        offset = _log_end(state, record)
        detached.start(state, record, args.debug)
        return _follow(state, record, offset)
    return _each(state, args.containers, lambda r: detached.start(state, r, args.debug))


def _cmd_restart(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.container import detached

    def restart(record: ContainerRecord) -> None:
        detached.stop(state, record, args.time)
        detached.start(state, ContainerStore(state).get(record.id), args.debug)

    return _each(state, args.containers, restart)


def _cmd_attach(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.container.exec_client import exec_in
    from vmpod.container.vm import Prepared

    store = ContainerStore(state)
    record = store.find(args.container)
    if record.status is not Status.RUNNING:
        raise VmpodError(f"container {args.container} is not running", "start it first")
    process = Prepared.load(store.directory(record.id)).process
    request = {"op": "attach", "interactive": process.stdin_open and not args.no_stdin, "tty": process.terminal}
    code = exec_in(store.directory(record.id), request)
    _until_stopped(store, record)
    return code


# Longest wait for the supervisor to record that the container stopped (its VM powers off meanwhile).
STOPPED_RECORD_S = 30.0


def _until_stopped(store: ContainerStore, record: ContainerRecord) -> None:
    """As Docker's attach does, return once the container has stopped, so that the next command (`rm`,
    `start`) sees it stopped: the supervisor records the exit after the VM is down. A container that was
    removed meanwhile, or restarted by its policy, has stopped too."""
    from vmpod.container import detached

    deadline = time.monotonic() + STOPPED_RECORD_S
    while time.monotonic() < deadline:
        current = next((r for r in store.all() if r.id == record.id), None)
        if current is None or current.status is not Status.RUNNING or current.started != record.started:
            return
        time.sleep(detached.POLL_S)


def _cmd_top(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.container import control

    store = ContainerStore(state)
    record = store.find(args.container)
    if record.status is not Status.RUNNING:
        raise VmpodError(f"container {args.container} is not running", "start it first")
    reply = control.call(store.directory(record.id), {"op": "top"}, timeout=120)
    rows = [reply["titles"], *reply["processes"]]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("   ".join([*(str(c).ljust(w) for c, w in zip(row, widths, strict=False)), str(row[-1])]))
    return 0


def _vm_usage(pid: int) -> tuple[float, int]:
    """CPU seconds and resident bytes of the hypervisor process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, 0
    ticks = os.sysconf("SC_CLK_TCK")
    rss = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return (int(fields[11]) + int(fields[12])) / ticks, rss


def _stats_sample(state: StateDir, names: list[str], interval: float) -> list[dict[str, Any]]:
    """CPU (over interval) and memory of each running container's hypervisor process."""
    from vmpod.container.vm import Prepared

    store = ContainerStore(state)
    records = [store.find(c) for c in names] if names else store.all()
    running = [r for r in records if r.status is Status.RUNNING and r.vm_pid]
    first = {r.id: (time.monotonic(), _vm_usage(r.vm_pid)) for r in running}
    time.sleep(interval)
    rows = []
    for record in running:
        then, (cpu_then, _) = first[record.id]
        cpu_now, rss = _vm_usage(record.vm_pid)
        limit = Prepared.load(store.directory(record.id)).memory_mib << 20
        rows.append(
            {
                "ID": record.id,
                "Name": record.name,
                "CPUPerc": f"{100 * (cpu_now - cpu_then) / max(time.monotonic() - then, 1e-6):.2f}%",
                "MemUsage": rss,
                "MemLimit": limit,
                "MemPerc": f"{100 * rss / limit:.2f}%",
            }
        )
    return rows


def _cmd_stats(state: StateDir, args: argparse.Namespace) -> int:
    """One sample with --no-stream; otherwise a new table every second until interrupted, as Docker."""
    while True:
        rows = _stats_sample(state, args.containers, 0.5 if args.no_stream else 1.0)
        if args.format == "json":
            for row in rows:
                print(json.dumps(row), flush=True)
        else:
            if not args.no_stream and sys.stdout.isatty():
                print("\033[2J\033[H", end="")  # clear the screen between samples
            print(f"{'CONTAINER ID':<14} {'NAME':<20} {'CPU %':<8} {'MEM USAGE / LIMIT':<24} MEM %")
            for row in rows:
                usage = f"{human_size(row['MemUsage'])} / {human_size(row['MemLimit'])}"
                print(
                    f"{row['ID'][:12]:<14} {row['Name']:<20} {row['CPUPerc'][:-1]:<8} {usage:<24} "
                    f"{row['MemPerc'][:-1]}",
                    flush=True,
                )
        if args.no_stream:
            return 0


def _confirmed(force: bool, what: str) -> bool:
    if force:
        return True
    if not sys.stdin.isatty():
        raise VmpodError(f"this removes {what}", "confirm with -f")
    return input(f"WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ").lower() == "y"


def _prune_containers(state: StateDir) -> list[str]:
    store = ContainerStore(state)
    removed = []
    for record in store.all():
        if record.status in (Status.EXITED, Status.CREATED):
            store.remove(record.id)
            removed.append(record.id)
    return removed


def _cmd_container_prune(state: StateDir, args: argparse.Namespace) -> int:
    if _confirmed(args.force, "all stopped containers"):
        removed = _prune_containers(state)
        print("Deleted Containers:\n" + "".join(f"{r}\n" for r in removed) if removed else "", end="")
    return 0


def _size(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*") if not p.is_symlink())


def _cmd_system_df(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.container import template
    from vmpod.image.store import ImageStore

    records = ContainerStore(state).all()
    images = ImageStore(state)
    image_ids = {images.image(d).id for d in images.names().values()}
    used_images = {r.image_id for r in records}
    volumes = VolumeStore(state)
    in_use = _volumes_in_use(state)
    rows = [
        ("Images", len(image_ids), len(image_ids & used_images), _size(images.root) + _size(state.disks)),
        ("Containers", len(records), sum(r.status is Status.RUNNING for r in records), _size(state.containers)),
        ("Local Volumes", len(volumes.names()), len(in_use), _size(volumes.root)),
        ("VM Templates", len(template.listing(state)), 0, _size(template.templates_dir(state))),
    ]
    print(f"{'TYPE':<16} {'TOTAL':<8} {'ACTIVE':<8} SIZE")
    for kind, total, active, size in rows:
        print(f"{kind:<16} {total:<8} {active:<8} {human_size(size)}")
    return 0


def _cmd_system_prune(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.image.store import ImageStore
    from vmpod.rootfs.disk import remove_base_disk

    if not _confirmed(args.force, "all stopped containers and all unused image data"):
        return 0
    removed = _prune_containers(state)
    images = ImageStore(state)
    deleted = images.collect_garbage()
    live = {images.image(d).id.removeprefix("sha256:") for d in images.names().values()}
    used = {Path(r.disk).parent.name for r in ContainerStore(state).all()}
    for disk in state.disks.glob("*") if state.disks.is_dir() else []:
        if disk.is_dir() and disk.name not in live | used:
            remove_base_disk(state, disk.name)
    print(f"Deleted Containers: {len(removed)}\nDeleted blobs: {len(deleted)}")
    return 0


def _cmd_network(state: StateDir, args: argparse.Namespace) -> int:
    from vmpod.container.bridge import NetworkStore

    networks = NetworkStore(state)
    if args.network_verb == "create":
        networks.create(args.name, args.subnet)
        print(args.name)
    elif args.network_verb == "ls":
        print(f"{'NAME':<20} {'SUBNET':<18} BRIDGE")
        for name in networks.names():
            network = networks.get(name)
            print(f"{name:<20} {network.subnet:<18} {network.bridge}")
    else:
        running = [r for r in ContainerStore(state).all() if r.status is Status.RUNNING]
        bridges = {r.name: plan.bridge for r in running if (plan := _plan(state, r)) is not None}
        failed = 0
        for name in args.names:
            try:
                attached = sorted(c for c, bridge in bridges.items() if bridge == name)
                if attached:
                    raise VmpodError(f"network {name} has active containers: {', '.join(attached)}")
                networks.remove(name)
                print(name)
            except VmpodError as e:
                print(f"vmpod: error: {e}", file=sys.stderr)
                failed = 1
        return failed
    return 0


def _cmd_port(state: StateDir, args: argparse.Namespace) -> int:
    for mapping in ContainerStore(state).find(args.container).ports:
        host, _, container = mapping.partition("->")
        print(f"{container} -> {host}")
    return 0


def _cmd_volume(state: StateDir, args: argparse.Namespace) -> int:
    volumes = VolumeStore(state)
    if args.volume_verb == "create":
        print(volumes.create(args.name))
    elif args.volume_verb == "ls":
        names = volumes.names()
        print(
            "\n".join(names) if args.quiet else "\n".join(["DRIVER    VOLUME NAME", *(f"local     {n}" for n in names)])
        )
    elif args.volume_verb == "inspect":
        print(json.dumps([volumes.inspect(n) for n in args.names], indent=4))
    elif args.volume_verb == "rm":
        in_use = _volumes_in_use(state)
        failed = 0
        for name in args.names:
            try:
                if name in in_use and not args.force:
                    raise VmpodError(f"volume {name} is in use by a container", "remove the container first")
                volumes.remove(name)
                print(name)
            except VmpodError as e:
                print(f"vmpod: error: {e}", file=sys.stderr)
                failed = 1
        return failed
    return 0


def _volumes_in_use(state: StateDir) -> set[str]:
    plans = (_plan(state, record) for record in ContainerStore(state).all())
    return {m.volume for plan in plans if plan is not None for m in plan.mounts if m.volume}


def register(sub: Any) -> None:
    p = sub.add_parser("start", help="start created or stopped containers")
    p.add_argument("-a", "--attach", action="store_true", help="print the output and return the exit code")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=_cmd_start)

    p = sub.add_parser("restart", help="stop and start containers")
    p.add_argument("-t", "--time", type=float, default=10, help="seconds before SIGKILL (default 10)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=_cmd_restart)

    p = sub.add_parser("attach", help="attach to a running container's main process until it stops")
    p.add_argument("--no-stdin", action="store_true", help="do not send our stdin to the container")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(handler=_cmd_attach)

    p = sub.add_parser("top", help="the processes in a container's VM")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(handler=_cmd_top)

    p = sub.add_parser("stats", help="CPU and memory of the containers' VMs")
    p.add_argument("--no-stream", action="store_true", help="one sample, then exit")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("containers", nargs="*", metavar="CONTAINER")
    p.set_defaults(handler=_cmd_stats)

    p = sub.add_parser("container", help="manage containers")
    verbs = p.add_subparsers(dest="container_verb", metavar="COMMAND", required=True)
    v = verbs.add_parser("prune", help="remove all stopped containers")
    v.add_argument("-f", "--force", action="store_true", help="do not ask")
    v.set_defaults(handler=_cmd_container_prune)

    p = sub.add_parser("system", help="disk usage and clean-up")
    verbs = p.add_subparsers(dest="system_verb", metavar="COMMAND", required=True)
    v = verbs.add_parser("df", help="disk space used by images, containers and volumes")
    v.set_defaults(handler=_cmd_system_df)
    v = verbs.add_parser("prune", help="remove stopped containers and unused image data")
    v.add_argument("-f", "--force", action="store_true", help="do not ask")
    v.set_defaults(handler=_cmd_system_prune)

    p = sub.add_parser("port", help="list a container's published ports")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(handler=_cmd_port)

    p = sub.add_parser("network", help="manage bridged networks (root only)")
    verbs = p.add_subparsers(dest="network_verb", metavar="COMMAND", required=True)
    v = verbs.add_parser("create", help="create a network: a Linux bridge with a /24 subnet")
    v.add_argument("--subnet", metavar="A.B.C.0/24", help="the subnet (default: a free 10.89.N.0/24)")
    v.add_argument("name", metavar="NAME")
    v = verbs.add_parser("ls", help="list networks")
    v = verbs.add_parser("rm", help="remove networks")
    v.add_argument("names", nargs="+", metavar="NETWORK")
    p.set_defaults(handler=_cmd_network)

    p = sub.add_parser("volume", help="manage named volumes")
    verbs = p.add_subparsers(dest="volume_verb", metavar="COMMAND", required=True)
    v = verbs.add_parser("create", help="create a volume")
    v.add_argument("name", nargs="?", metavar="NAME")
    v = verbs.add_parser("ls", help="list volumes")
    v.add_argument("-q", "--quiet", action="store_true", help="only names")
    v = verbs.add_parser("inspect", help="show volumes as JSON")
    v.add_argument("names", nargs="+", metavar="VOLUME")
    v = verbs.add_parser("rm", help="remove volumes")
    v.add_argument("-f", "--force", action="store_true", help="remove even if a container uses it")
    v.add_argument("names", nargs="+", metavar="VOLUME")
    p.set_defaults(handler=_cmd_volume)

    p = sub.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true", help="include stopped containers")
    p.add_argument("-q", "--quiet", action="store_true", help="only IDs")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(handler=_cmd_ps)

    p = sub.add_parser("rm", help="remove containers")
    p.add_argument("-f", "--force", action="store_true", help="kill and remove running containers")
    p.add_argument("-v", "--volumes", action="store_true", help="also remove the container's anonymous volumes")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=_cmd_rm)

    p = sub.add_parser("stop", help="stop containers: SIGTERM, then SIGKILL after the grace period")
    p.add_argument("-t", "--time", type=float, default=10, help="seconds before SIGKILL (default 10)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=_cmd_stop)

    p = sub.add_parser("kill", help="send a signal to containers' main process")
    p.add_argument("-s", "--signal", default="KILL", help="signal name or number (default KILL)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=_cmd_kill)

    p = sub.add_parser("wait", help="wait for containers to stop and print their exit codes")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=_cmd_wait)

    p = sub.add_parser("logs", help="show a container's output")
    p.add_argument("-f", "--follow", action="store_true", help="keep following until the container stops")
    p.add_argument("-n", "--tail", default="all", help="number of lines from the end (default all)")
    p.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(handler=_cmd_logs)

    p = sub.add_parser("exec", help="run a command in a running container")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    p.add_argument("-d", "--detach", action="store_true", help="run in the background")
    p.add_argument("-e", "--env", action="append", metavar="KEY=VALUE", help="set an environment variable")
    p.add_argument("-w", "--workdir", metavar="DIR", help="working directory")
    p.add_argument("-u", "--user", metavar="USER[:GROUP]", help="user name or UID, optional group")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    p.set_defaults(handler=_cmd_exec)

    p = sub.add_parser("inspect", help="show containers' details as JSON")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=_cmd_inspect)
