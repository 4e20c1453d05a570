"""`vmpod-runtime`: runc's command line, for engines (Podman, containerd, Docker) that call an OCI runtime.

Each verb is one thin function over `vmpod.oci`. A container is a VM owned by its supervisor
(`vmpod.oci.shim`); the pid the engine is given is that supervisor's, which exits with the container's
exit status. Errors go to stderr as runc writes them (and to `--log`, in `--log-format`), exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vmpod import __version__
from vmpod.container import control, exec_client
from vmpod.container.state import alive
from vmpod.errors import VmpodError
from vmpod.oci import bundle as oci_bundle
from vmpod.oci import execproc, hooks
from vmpod.oci.state import DEFAULT_ROOT, OCI_VERSION, NotFound, Record, Status, Store, timestamp
from vmpod.paths import write_atomically

log = logging.getLogger("vmpod")
KILL_WAIT_S = 10.0
EXEC_FAILED = 255  # runc's exit status when `exec` could not start the process

Handler = Callable[[Store, argparse.Namespace], int]


class Output:
    """Where errors go: the engine's --log file in its format, else stderr."""

    log_file: str = ""
    log_format: str = "text"

    @classmethod
    def error(cls, message: str) -> None:
        now = timestamp()
        if not cls.log_file:  # as runc: with --log, errors go to the log only (engines read it from there)
            print(f'time="{now}" level=error msg={json.dumps(message)}', file=sys.stderr)
        else:
            if cls.log_format == "json":
                line = json.dumps({"level": "error", "msg": message, "time": now})
            else:
                line = f'time="{now}" level=error msg={json.dumps(message)}'
            try:
                with open(cls.log_file, "a", encoding="utf-8") as out:
                    out.write(line + "\n")
            except OSError:
                pass


class _JsonLines(logging.Formatter):
    """`--log-format json`: engines parse every line of the log (containerd reads the last error)."""

    def format(self, record: logging.LogRecord) -> str:
        level = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning"}.get(record.levelno, "error")
        return json.dumps({"level": level, "msg": record.getMessage(), "time": timestamp()})


def parse_signal(value: str) -> int:
    text = value.upper()
    if text.isdigit():
        number = int(text)
        if 0 <= number < signal.NSIG:
            return number
    else:
        name = text if text.startswith("SIG") else f"SIG{text}"
        try:
            return int(signal.Signals[name])
        except KeyError:
            pass
    raise VmpodError(f"unknown signal {value!r}", exit_code=1)


# --- verbs ------------------------------------------------------------------------------------------
def cmd_create(store: Store, args: argparse.Namespace) -> int:
    bundle = oci_bundle.load(Path(args.bundle or "."))
    oci_bundle.layout(bundle)  # refuse what cannot become a VM before anything is written
    missing = oci_bundle.missing_command(bundle)
    if missing:
        raise VmpodError(f"vmpod-runtime create failed: unable to start container process: {missing}", exit_code=1)
    record = Record(
        id=args.container_id,
        bundle=str(bundle.path),
        rootfs=str(bundle.root),
        status=Status.CREATING,
        created=timestamp(),
        annotations=bundle.annotations,
    )
    store.new(record)
    try:
        pid = _start_shim(store, args, bundle.path, bundle.terminal)
    except BaseException:
        store.remove(record.id)
        raise
    if args.pid_file:
        write_atomically(Path(args.pid_file).absolute(), str(pid).encode(), 0o644)
    return 0


def _detach_stdio() -> None:
    """With a terminal the process's stdio is the pty: the engine's pipes must not stay open in a
    process that outlives this command (containerd's shim reads `create`'s output until EOF)."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _start_shim(store: Store, args: argparse.Namespace, bundle: Path, terminal: bool) -> int:
    """Double-forks the supervisor away (the engine's subreaper adopts it) and waits for `created`."""
    argv = [
        sys.executable,
        "-m",
        "vmpod.oci.shim",
        "--root",
        str(store.root),
        "--bundle",
        str(bundle),
        *(["--console-socket", os.path.abspath(args.console_socket)] if args.console_socket else []),
        *(["--debug"] if args.debug else []),
    ]
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child only forks and execs
        try:
            os.close(read_end)
            if os.fork() == 0:
                os.set_inheritable(write_end, True)
                if terminal:
                    _detach_stdio()
                os.execv(sys.executable, [*argv, "--ready-fd", str(write_end), args.container_id])
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end, "rb") as reader:
        line = reader.readline(control.MAX_REQUEST + 1)
    if not line:
        raise VmpodError(
            "the container's supervisor died while creating it",
            f"see {store.directory(args.container_id) / 'shim.log'}",
            exit_code=1,
        )
    reply = control.raise_for(control.decode(line))
    return int(reply["pid"])


def _call(store: Store, record: Record, request: dict[str, Any]) -> dict[str, Any]:
    try:
        return control.call(store.directory(record.id), request)
    except VmpodError as e:
        raise VmpodError(e.message, e.hint, exit_code=1) from None


def cmd_start(store: Store, args: argparse.Namespace) -> int:
    record = store.get(args.container_id)
    status = record.current()
    if status is Status.RUNNING:
        raise VmpodError("cannot start an already running container", exit_code=1)
    if status is Status.STOPPED:
        raise VmpodError("cannot start a container that has stopped", exit_code=1)
    if status is not Status.CREATED:
        raise VmpodError(f"cannot start a container in the {status} state", exit_code=1)
    _call(store, record, {"op": "start"})
    return 0


def cmd_state(store: Store, args: argparse.Namespace) -> int:
    print(json.dumps(store.get(args.container_id).oci_state(), indent=2))
    return 0


def cmd_kill(store: Store, args: argparse.Namespace) -> int:
    signo = parse_signal(args.signal)
    record = store.get(args.container_id)
    if record.current() not in (Status.CREATED, Status.RUNNING):
        raise VmpodError("container not running", exit_code=1)
    # --all: the agent ends every process in the VM with the main one; the signal goes to the main one.
    _call(store, record, {"op": "kill", "signal": signo})
    return 0


def _merge_env(env: list[str], extra: list[str]) -> list[str]:
    keys = {e.split("=", 1)[0] for e in extra}
    return [e for e in env if e.split("=", 1)[0] not in keys] + extra


def _parse_user(value: str) -> tuple[int, int | None]:
    uid, _, gid = value.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise VmpodError(f"invalid --user {value!r}: give UID[:GID] as numbers", exit_code=1)
    return int(uid), int(gid) if gid else None


def exec_process(record: Record, args: argparse.Namespace) -> dict[str, Any]:
    """The process to exec, as runc builds it: `--process FILE`, or the container's own process
    with the command and the flags applied."""
    if args.process:
        try:
            data = json.loads(Path(args.process).read_bytes())
        except (OSError, ValueError) as e:
            raise VmpodError(f"cannot read the process file {args.process}: {e}", exit_code=1) from None
        return oci_bundle.check_process(data, "the exec process")
    if not args.command:
        raise VmpodError("exec needs a command or --process", exit_code=1)
    process = dict(oci_bundle.load(Path(record.bundle)).process)
    process["args"] = list(args.command)
    process["terminal"] = bool(args.tty)
    if args.cwd:
        process["cwd"] = args.cwd
    if args.env:
        process["env"] = _merge_env(list(process.get("env") or []), list(args.env))
    user = dict(process.get("user") or {})
    if args.user:
        uid, gid = _parse_user(args.user)
        user["uid"] = uid
        if gid is not None:
            user["gid"] = gid
    if args.additional_gids:
        user["additionalGids"] = [int(g) for g in args.additional_gids]
    process["user"] = user
    if args.cap:
        caps = dict(process.get("capabilities") or {})
        for name in ("bounding", "effective", "permitted", "ambient"):  # as runc 1.1: not inheritable
            caps[name] = list(caps.get(name) or []) + [c for c in args.cap if c not in (caps.get(name) or [])]
        process["capabilities"] = caps
    if args.no_new_privs:
        process["noNewPrivileges"] = True
    return oci_bundle.check_process(process, "the exec process")


def cmd_exec(store: Store, args: argparse.Namespace) -> int:
    try:
        return _exec(store, args)
    except VmpodError as e:  # as runc: every exec failure is "exec failed: …", status 255
        message = e.message if e.message.startswith("exec failed: ") else f"exec failed: {e.message}"
        raise VmpodError(message, e.hint, exit_code=EXEC_FAILED) from None


def _exec(store: Store, args: argparse.Namespace) -> int:
    record = store.get(args.container_id)
    status = record.current()
    if status is Status.STOPPED:
        raise VmpodError("cannot exec in a stopped container", exit_code=1)
    if status is not Status.RUNNING:
        raise VmpodError(f"cannot exec in a container that is {status}: start it first", exit_code=1)
    process = exec_process(record, args)
    directory = store.directory(record.id)
    if args.detach:
        pid = _detach_exec(directory, process, args.console_socket)
        if args.pid_file:
            write_atomically(Path(args.pid_file).absolute(), str(pid).encode(), 0o644)
        return 0
    if args.pid_file:
        write_atomically(Path(args.pid_file).absolute(), str(os.getpid()).encode(), 0o644)
    try:
        if process.get("terminal") and not args.console_socket:  # runc: the caller's own terminal
            return exec_client.exec_in(directory, {"op": "exec", "process": process, "interactive": True, "tty": True})
        return execproc.run(directory, process, args.console_socket, None)
    except VmpodError as e:
        raise VmpodError(f"unable to start container process: {e.message}") from None


def _detach_exec(directory: Path, process: dict[str, Any], console_socket: str) -> int:
    """Double-forks the exec'd process's host stand-in (execproc) away, so the engine's subreaper
    adopts it, and waits until the process runs; returns the stand-in's pid."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the children only fork, run the relay and exit
        code = 125
        try:
            os.close(read_end)
            if os.fork() == 0:
                os.setsid()
                if process.get("terminal"):
                    _detach_stdio()
                told = False

                def ready(message: dict[str, Any]) -> None:
                    nonlocal told
                    if not told:
                        told = True
                        with contextlib.suppress(OSError):
                            os.write(write_end, control.encode(message))
                            os.close(write_end)

                try:
                    code = execproc.run(directory, process, console_socket, ready)
                except VmpodError as e:
                    ready(control.error_reply(e))
                    code = e.exit_code
                except BaseException as e:
                    ready(control.error_reply(VmpodError(f"the exec relay failed: {e}")))
                ready(control.error_reply(VmpodError("the exec relay ended before the process started")))
        finally:
            os._exit(code)
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end, "rb") as reader:
        line = reader.readline(control.MAX_REQUEST + 1)
    if not line:
        raise VmpodError("the exec relay died before the process started", exit_code=1)
    try:
        reply = control.raise_for(control.decode(line))
    except VmpodError as e:
        raise VmpodError(f"unable to start container process: {e.message}") from None
    return int(reply["pid"])


def cmd_ps(store: Store, args: argparse.Namespace) -> int:
    record = store.get(args.container_id)
    if record.current() is not Status.RUNNING:
        raise VmpodError("container is not running", exit_code=1)
    if args.format == "json":  # host pids: the supervisor (the main process) and each exec's stand-in
        print(json.dumps(_call(store, record, {"op": "ps"})["pids"]))
        return 0
    top = _call(store, record, {"op": "top"})  # the table: the processes in the VM, as `ps` there sees them
    rows = [list(top["titles"]), *top["processes"]]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join([*(str(c).ljust(w) for c, w in zip(row, widths, strict=False)), str(row[-1])]))
    return 0


def _end_supervisor(record: Record) -> None:
    if alive(record.pid, record.pid_start):
        try:
            os.kill(record.pid, signal.SIGKILL)  # QEMU and virtiofsd die with it (PR_SET_PDEATHSIG)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + KILL_WAIT_S
        while alive(record.pid, record.pid_start) and time.monotonic() < deadline:
            time.sleep(0.02)


def cmd_delete(store: Store, args: argparse.Namespace) -> int:
    try:
        record = store.get(args.container_id)
    except NotFound:
        if args.force:
            return 0
        raise
    status = record.current()
    if status is Status.RUNNING and not args.force:
        raise VmpodError(f"cannot delete container {record.id} that is not stopped: running", exit_code=1)
    _end_supervisor(record)
    try:
        bundle = oci_bundle.load(Path(record.bundle))
    except VmpodError:
        bundle = None
    if bundle is not None:
        stopped = Record(**{**record.__dict__, "status": Status.STOPPED})
        asyncio.run(hooks.run_stage(bundle, "poststop", stopped, fatal=False))
    store.remove(record.id)
    return 0


def cmd_list(store: Store, args: argparse.Namespace) -> int:
    records = []
    for container_id in store.ids():
        try:
            records.append(store.get(container_id))
        except VmpodError:
            continue
    if args.quiet:
        for record in records:
            print(record.id)
    elif args.format == "json":
        print(json.dumps([_list_entry(r) for r in records]))
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        for r in records:
            entry = _list_entry(r)
            rows.append((r.id, str(entry["pid"]), entry["status"], r.bundle, r.created, "root"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _list_entry(record: Record) -> dict[str, Any]:
    state = record.oci_state()
    return {
        "ociVersion": OCI_VERSION,
        "id": record.id,
        "pid": state["pid"],
        "status": state["status"],
        "bundle": record.bundle,
        "rootfs": record.rootfs,
        "created": record.created,
        "owner": "root",
    }


def features() -> dict[str, Any]:
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": ["ro", "rw", "bind", "rbind", "nosuid", "nodev", "noexec", "size", "mode"],
        "linux": {
            "namespaces": [],
            "capabilities": [],
            "cgroup": {"v1": False, "v2": False, "systemd": False, "systemdUser": False},
            "seccomp": {"enabled": False},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
        },
        "annotations": {"org.vmpod.isolation": "vm", "org.vmpod.version": __version__},
    }


def cmd_features(store: Store, args: argparse.Namespace) -> int:
    print(json.dumps(features(), indent=2))
    return 0


# --- parsing ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmpod-runtime", description="An OCI runtime that runs each container in a VM"
    )
    parser.add_argument("-v", "--version", action="store_true", help="print the version")
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="state directory")
    parser.add_argument("--log", default="", help="log file (errors, and debug output with --debug)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--systemd-cgroup", action="store_true", help="accepted; the VM has its own cgroups")
    parser.add_argument("--rootless", default="auto", help="accepted and ignored")
    parser.add_argument("--criu", default="", help=argparse.SUPPRESS)
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND")

    def verb(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text)
        sub.set_defaults(handler=handler)
        return sub

    create = verb("create", cmd_create, "create a container (boots its VM; the process waits for start)")
    create.add_argument("-b", "--bundle", default="")
    create.add_argument("--pid-file", default="")
    create.add_argument("--console-socket", default="")
    create.add_argument("--no-pivot", action="store_true", help="accepted; there is no pivot_root")
    create.add_argument("--no-new-keyring", action="store_true", help="accepted")
    create.add_argument("--preserve-fds", type=int, default=0, help="accepted; extra fds are not passed")
    create.add_argument("container_id")
    verb("start", cmd_start, "start the created container's process").add_argument("container_id")
    verb("state", cmd_state, "print the container's state as JSON").add_argument("container_id")
    kill = verb("kill", cmd_kill, "send a signal to the container's process")
    kill.add_argument("-a", "--all", action="store_true")
    kill.add_argument("container_id")
    kill.add_argument("signal", nargs="?", default="SIGTERM")
    delete = verb("delete", cmd_delete, "delete a stopped container")
    delete.add_argument("-f", "--force", action="store_true")
    delete.add_argument("container_id")
    listing = verb("list", cmd_list, "list containers")
    listing.add_argument("-f", "--format", choices=("table", "json"), default="table")
    listing.add_argument("-q", "--quiet", action="store_true")
    verb("features", cmd_features, "print the runtime's features as JSON")
    execute = verb("exec", cmd_exec, "run a further process in the container")
    execute.add_argument("-p", "--process", default="", help="the process as a runtime-spec JSON file")
    execute.add_argument("-t", "--tty", action="store_true")
    execute.add_argument("-d", "--detach", action="store_true")
    execute.add_argument("--pid-file", default="")
    execute.add_argument("--console-socket", default="")
    execute.add_argument("--cwd", default="")
    execute.add_argument("-e", "--env", action="append", default=[])
    execute.add_argument("-u", "--user", default="")
    execute.add_argument("-g", "--additional-gids", action="append", default=[])
    execute.add_argument("-c", "--cap", action="append", default=[])
    execute.add_argument("--no-new-privs", action="store_true")
    execute.add_argument("--preserve-fds", type=int, default=0, help="accepted; extra fds are not passed")
    for ignored in ("--process-label", "--apparmor", "--cgroup"):
        execute.add_argument(ignored, default="", help="accepted and ignored: the VM is the boundary")
    execute.add_argument("--ignore-paused", action="store_true", help="accepted")
    execute.add_argument("container_id")
    execute.add_argument("command", nargs=argparse.REMAINDER)
    ps = verb("ps", cmd_ps, "list the container's processes (json: host pids standing for them)")
    ps.add_argument("-f", "--format", choices=("table", "json"), default="table")
    ps.add_argument("container_id")
    ps.add_argument("ps_args", nargs=argparse.REMAINDER, help="accepted and ignored")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    Output.log_file, Output.log_format = args.log, args.log_format
    if args.version:
        print(f"vmpod-runtime version {__version__}\nspec: {OCI_VERSION}")
        return 0
    if args.verb is None:
        parser.print_usage(sys.stderr)
        return 1
    if args.debug:
        handler: logging.Handler = logging.FileHandler(args.log) if args.log else logging.StreamHandler()
        text = logging.Formatter("%(asctime)s %(message)s")
        handler.setFormatter(_JsonLines() if args.log_format == "json" else text)
        logging.basicConfig(level=logging.DEBUG, handlers=[handler])
        log.debug("vmpod-runtime %s", json.dumps(list(argv if argv is not None else sys.argv[1:])))
    try:
        return int(args.handler(Store(Path(args.root).absolute()), args))
    except VmpodError as e:
        Output.error(str(e))
        # runc's status for every failure (255 for an exec that could not start); the container's
        # own status is the supervisor's.
        return e.exit_code if e.exit_code in (1, EXEC_FAILED) else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
