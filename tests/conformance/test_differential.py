"""Differential conformance: the same bundles, run by runc and by vmpod-runtime, compared.

Each case changes `runc spec`'s default bundle in one way and drives both runtimes through the same
lifecycle (tests/conformance/harness.py, a subreaper as engines are). What is compared is what a user
can observe: the process's output and exit status, the state documents, which commands fail. A case
either agrees, or differs in the one way docs/conformance.md explains (a VM has its own kernel).
The agreement count must not fall below FLOOR; raise FLOOR when a difference is fixed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.conftest import (
    NETNS_PATH,
    PEER_URL,
    REPO,
    need,
    prepared_network,
    runtime_binary,
    shim_processes,
    unpack_rootfs,
)

pytestmark = pytest.mark.integration

FLOOR = 28
RUN = f"{os.getpid()}-{int(time.time())}"
Result = dict[str, Any]
LIFECYCLE = [["create"], ["start"], ["wait"], ["delete"]]


def _output(result: Result) -> Any:
    waited = [s.get("status") for s in result["steps"] if s["op"] == "wait"]
    return result["stdout"], result["stderr"], waited


def _codes(result: Result) -> Any:
    return [(s["op"], s.get("rc") == 0) for s in result["steps"] if "rc" in s] + [_output(result)[2]]


def _states(result: Result) -> Any:
    out = []
    for step in result["steps"]:
        if "state" in step:
            state = step["state"]
            out.append((state["status"], state["pid"] > 0, state["id"].startswith("case-"), Path(state["bundle"]).name))
        elif "rc" in step:
            out.append((step["op"], step["rc"] == 0))
        else:
            out.append((step["op"], step.get("status")))
    return out


def _execs(result: Result) -> Any:
    """What exec and ps showed: each step's status, output and pid count, then the main process's."""
    steps = [
        (s["op"].split()[0], s.get("rc"), s.get("stdout"), s.get("status"), s.get("pids"))
        + ((s.get("stderr"),) if s["op"].startswith("exec-detach") else ())  # the process's own stderr
        for s in result["steps"]
        if "rc" in s or "status" in s
    ]
    return [*steps, _output(result)]


# A host hook (createRuntime, prestart, poststart, poststop) that appends its stage, the state's status
# and whether it has a pid to hooks.log in the bundle (named by the state on stdin).
_HOOK = (
    'read -r s || true; b=$(printf %s "$s" | sed -n \'s/.*"bundle": *"\\([^"]*\\)".*/\\1/p\'); '
    'st=$(printf %s "$s" | sed -n \'s/.*"status": *"\\([a-z]*\\)".*/\\1/p\'); '
    'p=$(printf %s "$s" | sed -n \'s/.*"pid": *\\([0-9]*\\).*/\\1/p\'); '
    'echo "$0 $st pid=$([ "${p:-0}" -gt 0 ] && echo yes || echo no)" >> "$b/hooks.log"'
)
HOOKS = {
    stage: [{"path": "/bin/sh", "args": ["sh", "-c", _HOOK, stage]}]
    for stage in ("createRuntime", "prestart", "poststart", "poststop")
}
CAPS_USER = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"]


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    args: list[str]
    config: dict[str, Any] = field(default_factory=dict)
    process: dict[str, Any] = field(default_factory=dict)
    steps: list[list[str]] = field(default_factory=lambda: LIFECYCLE)
    observe: Callable[[Result], Any] = _output
    bind: bool = False  # a host directory at /data, with a file in it
    netns: bool = False  # joins the test's prepared network namespace (NETNS_PATH)
    hooks_log: bool = False  # compare the bundle's hooks.log too
    differs: str = ""  # why the runtimes must differ here (docs/conformance.md); empty: they must agree


CASES = [
    Case(
        "args-env-cwd",
        "process.args, env and cwd",
        ["sh", "-c", 'echo "$GREETING|$TWO|$(pwd)"; echo "$#" "$0"'],
        process={"env": ["PATH=/bin:/usr/bin", "GREETING=hi", "TWO=two words"], "cwd": "/tmp"},
    ),
    Case("exit-code", "the process's exit status", ["sh", "-c", "exit 42"]),
    Case(
        "user",
        "process.user uid, gid, additionalGids",
        ["sh", "-c", "id -u; id -g; id -G"],
        process={"user": {"uid": 1000, "gid": 1000, "additionalGids": [10, 20]}},
    ),
    Case("hostname", "hostname", ["hostname"], config={"hostname": "oci-case"}),
    Case(
        "readonly-root",
        "root.readonly true",
        ["sh", "-c", "touch /probe 2>/dev/null && echo writable || echo read-only"],
        config={"root": {"path": "rootfs", "readonly": True}},
    ),
    Case(
        "writable-root",
        "root.readonly false",
        ["sh", "-c", "echo data > /probe && cat /probe"],
        config={"root": {"path": "rootfs", "readonly": False}},
    ),
    Case(
        "tmpfs-mount",
        "a tmpfs mount with size",
        ["sh", "-c", "grep ' /scratch ' /proc/mounts | cut -d' ' -f3; echo x > /scratch/f && cat /scratch/f"],
        config={"mounts+": [{"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}]},
    ),
    Case(
        "bind-mount",
        "a bind mount of a host directory, read and written",
        ["sh", "-c", "cat /data/hello; echo back > /data/out"],
        bind=True,
    ),
    Case(
        "kill-sigterm",
        "kill SIGTERM reaches a handler",
        ["sh", "-c", "trap 'echo got TERM; exit 9' TERM; echo up; while :; do sleep 0.1; done"],
        steps=[["create"], ["start"], ["sleep", "1"], ["kill", "TERM"], ["wait"], ["delete"]],
    ),
    Case(
        "kill-sigkill",
        "kill KILL ends the process: status 137",
        ["sleep", "100"],
        steps=[["create"], ["start"], ["sleep", "0.5"], ["kill", "KILL"], ["wait"], ["delete"]],
    ),
    Case(
        "state-lifecycle",
        "state through create, start, stopped",
        ["sh", "-c", "sleep 1"],
        steps=[["create"], ["state"], ["start"], ["state"], ["wait"], ["state"], ["delete"], ["state"]],
        observe=_states,
    ),
    Case(
        "start-before-create",
        "start of a container that does not exist fails",
        ["true"],
        steps=[["start"], ["state"], ["delete"]],
        observe=_codes,
    ),
    Case(
        "delete-running",
        "delete of a running container fails; after it stops, delete succeeds",
        ["sleep", "100"],
        steps=[["create"], ["start"], ["delete"], ["kill", "KILL"], ["wait"], ["delete"]],
        observe=_codes,
    ),
    Case(
        "start-twice",
        "start of a running container fails",
        ["sleep", "2"],
        steps=[["create"], ["start"], ["start"], ["wait"], ["delete"]],
        observe=_codes,
    ),
    Case(
        "rlimits",
        "process.rlimits: soft and hard limits",
        ["sh", "-c", "ulimit -n; ulimit -Hn; ulimit -c; ulimit -Hc"],
        process={
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "soft": 1000, "hard": 2048},
                {"type": "RLIMIT_CORE", "soft": 0, "hard": 4096},
            ]
        },
    ),
    Case(
        "no-new-privileges",
        "process.noNewPrivileges true",
        ["grep", "NoNewPrivs", "/proc/self/status"],
        process={"noNewPrivileges": True},
    ),
    Case(
        "new-privileges",
        "process.noNewPrivileges false",
        ["grep", "NoNewPrivs", "/proc/self/status"],
        process={"noNewPrivileges": False},
    ),
    Case(
        "capabilities-default",
        "runc spec's capabilities (root): every set",
        ["grep", "^Cap", "/proc/self/status"],
    ),
    Case(
        "capabilities-user",
        "capabilities of a non-root user, inheritable and ambient included",
        ["grep", "^Cap", "/proc/self/status"],
        process={
            "user": {"uid": 1000, "gid": 1000},
            "capabilities": {
                name: CAPS_USER for name in ("bounding", "effective", "inheritable", "permitted", "ambient")
            },
        },
    ),
    Case(
        "exec",
        "exec in the foreground: output, status, the container's hostname, limits and capabilities",
        ["sleep", "100"],
        config={"hostname": "oci-exec"},
        process={"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1000, "hard": 2048}]},
        steps=[
            ["create"],
            ["start"],
            [
                "exec",
                "sh",
                "-c",
                "echo $(hostname) $(id -u) $(ulimit -n); grep -E 'CapEff|NoNewPrivs' /proc/self/status; exit 3",
            ],
            ["exec", "no-such-command"],
            ["kill", "KILL"],
            ["wait"],
            ["delete"],
        ],
        observe=_execs,
    ),
    Case(
        "exec-flags",
        "exec --cwd, --env, --user, --additional-gids, --cap, --no-new-privs over the container's process",
        ["sleep", "100"],
        process={"env": ["PATH=/bin", "X=0"]},
        steps=[
            ["create"],
            ["start"],
            [
                "exec",
                *["--cwd", "/tmp", "-e", "X=1", "-u", "1000:1000", "-g", "10"],
                *["--cap", "CAP_NET_RAW", "--no-new-privs"],
                "--",
                *["sh", "-c", "echo $X $(pwd) $(id -u) $(id -G); grep -E '^Cap(Eff|Amb)|NoNewPrivs' /proc/self/status"],
            ],
            ["kill", "KILL"],
            ["wait"],
            ["delete"],
        ],
        observe=_execs,
    ),
    Case(
        "exec-detached",
        "exec as engines run it (--process, --detach, --pid-file): output, stderr, status through the pid",
        ["sleep", "100"],
        steps=[
            ["create"],
            ["start"],
            ["exec-detach", "sh", "-c", "echo out; echo err >&2; exit 7"],
            ["exec-detach", "sh", "-c", "kill -TERM $$; sleep 5"],
            ["kill", "KILL"],
            ["wait"],
            ["delete"],
        ],
        observe=_execs,
    ),
    Case(
        "exec-signals",
        "signals sent to an exec's pid reach the process (TERM to a handler; KILL ends it), then ps",
        ["sleep", "100"],
        steps=[
            ["create"],
            ["start"],
            ["exec-bg", "sh", "-c", "trap 'echo got TERM; exit 5' TERM; echo up; while :; do sleep 0.1; done"],
            ["sleep", "1"],
            ["signal-exec", "TERM"],
            ["wait-exec"],
            ["exec-bg", "sleep", "100"],
            ["sleep", "0.5"],
            ["signal-exec", "KILL"],
            ["wait-exec"],
            ["sleep", "0.5"],
            ["ps"],
            ["kill", "KILL"],
            ["wait"],
            ["delete"],
        ],
        observe=_execs,
    ),
    Case(
        "exec-stopped",
        "exec in a stopped container fails (255)",
        ["true"],
        steps=[["create"], ["start"], ["wait"], ["exec", "true"], ["delete"]],
        observe=_execs,
    ),
    Case(
        "ps",
        "ps --format json lists the main process and a running exec",
        ["sleep", "100"],
        steps=[
            ["create"],
            ["start"],
            ["ps"],
            ["exec-bg", "sleep", "100"],
            ["ps"],
            ["kill", "KILL"],
            ["wait"],
            ["delete"],
        ],
        observe=_execs,
    ),
    Case(
        "hooks",
        "createRuntime, prestart, poststart, poststop hooks run on the host with the state",
        ["true"],
        config={"hooks": HOOKS},
        hooks_log=True,
    ),
    Case(
        "network-new",
        "a network namespace without a path: a new, empty one (no address, no route)",
        ["sh", "-c", "ip -4 route; ip -4 addr | grep -c 'scope global'; echo end"],
    ),
    Case(
        "network-join",
        "the engine's network namespace (a path): its address and route, a peer reached through it",
        ["sh", "-c", f"wget -q -O- {PEER_URL}; ip -4 route; ip -4 addr | grep -c 10.77.0.2/24"],
        netns=True,
    ),
    Case(
        "kernel",
        "uname -r",
        ["uname", "-r"],
        differs="the container runs on the VM's own kernel, not the host's",
    ),
]


def _bundle(case: Case, directory: Path) -> Path:
    directory.mkdir(parents=True)
    unpack_rootfs(directory / "rootfs")
    subprocess.run([need("runc", "runc"), "spec"], cwd=directory, check=True)
    config = json.loads((directory / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = case.args
    config["process"].update(case.process)
    for key, value in case.config.items():
        if key.endswith("+"):
            config[key[:-1]] = config.get(key[:-1], []) + value
        else:
            config[key] = value
    if case.netns:
        namespaces = config["linux"]["namespaces"]
        config["linux"]["namespaces"] = [n for n in namespaces if n["type"] != "network"]
        config["linux"]["namespaces"].append({"type": "network", "path": NETNS_PATH})
    if case.bind:
        data = directory / "data"
        data.mkdir()
        (data / "hello").write_text("from the host\n")
        config["mounts"].append(
            {"destination": "/data", "type": "bind", "source": str(data), "options": ["rbind", "rw"]}
        )
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    return directory


def _drive(runtime: list[str], root: Path, case: Case, work: Path) -> Result:
    bundle = _bundle(case, work / "bundle")
    container_id = f"case-{case.name}-{RUN}"  # unique: runc's cgroup is named after the id
    script = {"runtime": runtime, "root": str(root), "bundle": str(bundle), "id": container_id}
    script["steps"] = case.steps
    (work / "script.json").write_text(json.dumps(script))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.conformance.harness", str(work / "script.json")],
            capture_output=True,
            cwd=REPO,
            timeout=600,
        )
    finally:  # whatever happened, nothing keeps running
        subprocess.run([*runtime, "--root", str(root), "delete", "--force", container_id], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    result: Result = json.loads(done.stdout)
    if case.bind:
        out = bundle / "data" / "out"
        result["host_file"] = out.read_text() if out.exists() else None
    if case.hooks_log:
        log = bundle / "hooks.log"
        result["host_file"] = log.read_text() if log.exists() else None
    return result


def _run_all(base: Path) -> dict[str, tuple[Result, Result]]:
    runc = need("runc", "runc")
    vmpod = str(runtime_binary())
    runc_root, vmpod_root = base / "runc-root", base / "vmpod-root"
    runc_results = {c.name: _drive([runc], runc_root, c, base / "runc" / c.name) for c in CASES}
    with ThreadPoolExecutor(max_workers=2) as pool:  # VMs boot in seconds under TCG: two at a time
        futures = {c.name: pool.submit(_drive, [vmpod], vmpod_root, c, base / "vmpod" / c.name) for c in CASES}
        vmpod_results = {name: future.result() for name, future in futures.items()}
    assert shim_processes(vmpod_root) == []
    out = {case.name: (runc_results[case.name], vmpod_results[case.name]) for case in CASES}
    (base / "results.json").write_text(json.dumps(out, indent=1))
    return out


def _agrees(case: Case, pair: tuple[Result, Result]) -> bool:
    runc, vmpod = pair
    return bool(case.observe(runc) == case.observe(vmpod) and runc.get("host_file") == vmpod.get("host_file"))


def test_differential_against_runc(tmp_path: Path) -> None:
    """One test, so that parallel workers never run the suite twice (runc's cgroups are per id)."""
    with prepared_network(tmp_path / "www"):
        results = _run_all(tmp_path)
    problems = []
    for case in CASES:
        runc, vmpod = results[case.name]
        agrees = _agrees(case, results[case.name])
        if case.differs and agrees:
            problems.append(f"{case.name} now agrees: drop its `differs`, raise FLOOR")
        elif case.differs and not vmpod["steps"][-2].get("status") == runc["steps"][-2].get("status") == 0:
            problems.append(f"{case.name}: {case.observe(runc)!r} (runc) vs {case.observe(vmpod)!r}")
        elif not case.differs and not agrees:
            problems.append(f"{case.name}: {case.observe(runc)!r} (runc) vs {case.observe(vmpod)!r} (vmpod)")
    agreed = sum(_agrees(case, results[case.name]) for case in CASES)
    assert agreed >= FLOOR, f"{agreed} of {len(CASES)} cases agree with runc; the floor is {FLOOR}: {problems}"
    assert problems == []
