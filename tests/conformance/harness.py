"""Drives one OCI runtime through a lifecycle, as an engine does, and prints what happened as JSON.

Run as its own process (`python -m tests.conformance.harness SCRIPT.json`): it makes itself a child
subreaper (as conmon and containerd's shims are), so the pid a runtime writes to `--pid-file` is
reparented here and its exit status can be collected, whichever runtime it is.

SCRIPT: {"runtime": [ARGV…], "root": DIR, "bundle": DIR, "id": ID, "steps": [[OP, ARG…], …]} with OP one
of create, start, state, kill SIGNAL, delete [--force], wait (the exit status of the pid), sleep S,
exec [FLAG… --] ARG… (in the foreground, as a user runs it), exec-detach ARG… and exec-bg ARG… (as engines run it:
`--process FILE --detach --pid-file F`; -detach then waits for that pid, -bg does not), ps (`--format
json`: how many pids), signal-exec SIG and wait-exec (to the last exec-bg's pid, as containerd's shim
kills an exec'd process, and its exit status). The container's stdout and stderr are files handed to
`create`, as an engine hands it pipes; so are each detached exec's.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PR_SET_CHILD_SUBREAPER = 36
STEP_TIMEOUT_S = 180.0


def _subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_CHILD_SUBREAPER")


_reaped: dict[int, int] = {}  # pid -> exit status of children reaped before anyone asked


def _status(status: int) -> int:
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _wait_for(pid: int, timeout: float) -> int | None:
    """The exit status of pid (reparented to us), as a shell reports it; None on timeout. Every other
    child is reaped meanwhile, as an engine's subreaper does: a pid namespace's init (runc's) does not
    finish exiting while an exec'd process of its namespace is an unreaped zombie of ours."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap_others()
        if pid in _reaped:
            return _reaped[pid]
        try:
            os.waitpid(pid, os.WNOHANG)  # running (a zombie would have been reaped above)
        except ChildProcessError:
            return None  # not ours: its status cannot be known
        time.sleep(0.02)
    return None


def _reap_others() -> None:
    """Orphans the runtimes leave to the subreaper; their statuses are kept for `wait`."""
    while True:
        try:
            got, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if got == 0:
            return
        _reaped[got] = _status(status)


def run(script: dict[str, Any]) -> dict[str, Any]:
    runtime = [*script["runtime"], "--root", script["root"]]
    container_id = script["id"]
    work = Path(tempfile.mkdtemp(prefix="oci-harness-"))
    pid_file, out_path, err_path = work / "pid", work / "stdout", work / "stderr"
    steps: list[dict[str, Any]] = []
    pid = 0
    background: list[tuple[int, int]] = []  # (step index, pid) of exec-bg processes not yet waited for
    for step in script["steps"]:
        op, rest = step[0], [str(a) for a in step[1:]]
        record: dict[str, Any] = {"op": " ".join(step)}
        if op == "sleep":
            time.sleep(float(rest[0]))
            continue
        if op == "wait":
            record["status"] = _wait_for(pid, STEP_TIMEOUT_S) if pid else None
            steps.append(record)
            continue
        if op in ("exec-detach", "exec-bg"):
            record.update(_exec_detached(runtime, script, work, len(steps), rest, wait=op == "exec-detach"))
            if op == "exec-bg" and record.pop("pid", None):
                background.append((len(steps), _exec_pid(work, len(steps))))
            steps.append(record)
            _reap_others()
            continue
        if op == "signal-exec":  # as containerd's shim signals an exec'd process: the pid it was given
            os.kill(background[-1][1], signal.Signals[f"SIG{rest[0]}"])
            steps.append(record)
            continue
        if op == "wait-exec":
            index, exec_pid = background.pop()
            record["status"] = _wait_for(exec_pid, STEP_TIMEOUT_S)
            record["stdout"] = (work / f"exec-{index}.out").read_text(errors="replace")
            steps.append(record)
            continue
        if op == "create":
            argv = [*runtime, "create", "--bundle", script["bundle"], "--pid-file", str(pid_file), container_id]
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=STEP_TIMEOUT_S)
            record["rc"] = done.returncode
            if done.returncode != 0:
                record["stderr"] = err_path.read_text(errors="replace")[-2000:]
            elif pid_file.is_file():
                pid = int(pid_file.read_text())
        else:
            argv = [*runtime, op, *([container_id] if op != "kill" else [container_id, *rest])]
            if op == "delete":
                argv = [*runtime, op, *rest, container_id]
            if op == "exec":  # exec [FLAG… --] ARG…: runc's flags come before the id
                cut = rest.index("--") if "--" in rest else -1
                argv = [*runtime, op, *rest[: max(cut, 0)], container_id, *rest[cut + 1 :]]
            if op == "ps":
                argv = [*runtime, op, "--format", "json", container_id]
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=STEP_TIMEOUT_S)
            record["rc"] = done.returncode
            if op == "state" and done.returncode == 0:
                record["state"] = json.loads(done.stdout)
            if op == "exec":
                record["stdout"] = done.stdout.decode(errors="replace")
            if op == "ps" and done.returncode == 0:
                record["pids"] = len(json.loads(done.stdout))
            if done.returncode != 0:
                record["stderr"] = done.stderr.decode(errors="replace")[-2000:]
        steps.append(record)
        _reap_others()
    return {
        "steps": steps,
        "stdout": out_path.read_text(errors="replace") if out_path.exists() else "",
        "stderr": err_path.read_text(errors="replace") if err_path.exists() else "",
    }


def _exec_pid(work: Path, index: int) -> int:
    return int((work / f"exec-{index}.pid").read_text())


def _exec_detached(
    runtime: list[str], script: dict[str, Any], work: Path, index: int, args: list[str], wait: bool
) -> dict[str, Any]:
    """An exec as conmon and containerd's shim run it: the process from a file, detached, its pid
    written to a file and waited for here (the subreaper)."""
    process = json.loads((Path(script["bundle"]) / "config.json").read_text())["process"]
    process["args"] = args
    process_file, pid_file = work / f"process-{index}.json", work / f"exec-{index}.pid"
    out_path, err_path = work / f"exec-{index}.out", work / f"exec-{index}.err"
    process_file.write_text(json.dumps(process))
    argv = [*runtime, "exec", "--process", str(process_file), "--detach", "--pid-file", str(pid_file), script["id"]]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=STEP_TIMEOUT_S)
    record: dict[str, Any] = {"rc": done.returncode}
    if done.returncode != 0:
        record["stderr"] = err_path.read_text(errors="replace")[-2000:]
    elif not wait:
        record["pid"] = True
    else:
        record["status"] = _wait_for(int(pid_file.read_text()), STEP_TIMEOUT_S)
        record["stdout"] = out_path.read_text(errors="replace")
        record["stderr"] = err_path.read_text(errors="replace")
    return record


def main() -> int:
    _subreaper()
    script = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(run(script)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
