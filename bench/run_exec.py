"""Exec benchmark: `vmpod exec C true` in a running container against `podman exec C2 true` (runc).

Both containers run `sleep 3600` from the same busybox tarball (build/busybox.tar). Measured alternately, the
order rotating every round, after unmeasured warm-up rounds:

  A       wall time of `vmpod exec C true`: a fresh CLI process, Python start-up included.
  B       wall time of `podman exec C2 true`: podman (Go), conmon, `runc exec` into the container's namespaces.
  direct  the same exec request sent by this process straight to the supervisor's control socket (no CLI):
          connect → answer (the process runs in the guest) → EXIT frame. Split into `direct_start` and
          `direct_exit`.
  cli     wall time of `vmpod --version`: Python start-up plus the CLI's imports.
  python  wall time of `python -c pass` (the venv's interpreter, site imports included).
  podman  wall time of `podman --version`.

Podman is run as this host needs it (containers.conf in a temp dir via CONTAINERS_CONF: cgroupfs, file events
logger, runc, explicit ulimits) with a temp --root/--runroot/--tmpdir, so nothing global changes; its container
has `--network none`. Every container is removed at the end, also on failure.

Usage: .venv/bin/python bench/run_exec.py [--runs N] [--warmup N] [--root DIR]
Results: a table on stdout and bench/results/exec-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import median

from run_boot import IMAGE, REPO, RESULTS, bench_env, ensure_image, machine, timed, vmpod_cli

from vmpod.container import control
from vmpod.container.state import ContainerStore
from vmpod.guest.codec import decode_fields, decode_header
from vmpod.guest.messages import HEADER_SIZE, Field, Message
from vmpod.paths import StateDir

PODMAN_IMAGE = "busybox-bench"
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
"""


class Podman:
    """Podman confined to a temp directory: its own containers.conf, storage, run and tmp directories."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        conf = directory / "containers.conf"
        conf.write_text(CONTAINERS_CONF)
        self.env = dict(os.environ, CONTAINERS_CONF=str(conf))
        self.argv = ["podman", "--root", str(directory / "root"), "--runroot", str(directory / "runroot")]
        self.argv += ["--tmpdir", str(directory / "tmp")]

    def run(self, *args: str) -> str:
        proc = subprocess.run([*self.argv, *args], env=self.env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"bench: podman {shlex.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc.stdout

    def cleanup(self, name: str) -> None:
        """Removes the container and the whole store; unmounts whatever podman left under the directory."""
        subprocess.run([*self.argv, "rm", "-f", "-t", "0", name], env=self.env, capture_output=True)
        subprocess.run([*self.argv, "system", "reset", "-f"], env=self.env, capture_output=True)
        prefix = str(self.directory) + "/"
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)


def remove_vmpod(names: Sequence[str], env: dict[str, str]) -> None:
    """`vmpod rm -f`, retried: it can report an error while a container is still going away."""
    left = list(names)
    for _ in range(3):
        if not left:
            return
        subprocess.run([*vmpod_cli(), "rm", "-f", *left], env=env, capture_output=True)
        ps = [*vmpod_cli(), "ps", "-a", "--format", "json"]
        listing = subprocess.run(ps, env=env, capture_output=True, text=True).stdout
        existing = {json.loads(line)["name"] for line in listing.splitlines() if line.strip()}
        left = [name for name in left if name in existing]
        if left:
            time.sleep(1)
    if left:
        print(f"bench: warning: could not remove {' '.join(left)}", file=sys.stderr)


def direct_exec(directory: Path) -> tuple[float, float]:
    """`exec true` over the control socket, as the CLI does it; returns (until started, until EXIT) in seconds."""
    start = time.perf_counter()
    with control.connect(directory) as sock, sock.makefile("rb") as reader:
        request: dict[str, object] = {"op": "exec", "args": ["true"], "env": [], "workdir": "", "user": ""}
        request |= {"tty": False, "interactive": False, "detach": False}
        sock.sendall(control.encode(request))
        control.raise_for(control.decode(reader.readline()))
        started = time.perf_counter()
        while True:
            header = decode_header(reader.read(HEADER_SIZE))
            payload = reader.read(header.length)
            if header.type is Message.EXIT:
                fields = decode_fields(payload, frozenset({Field.EXIT_CODE, Field.EXIT_SIGNAL}))
                if fields.u32(Field.EXIT_CODE) or fields.u32(Field.EXIT_SIGNAL):
                    raise SystemExit("bench: `true` did not exit 0 in the container")
                return started - start, time.perf_counter() - start


def wait_running(probe: Callable[[], object], what: str) -> None:
    for _ in range(60):
        try:
            probe()
            return
        except SystemExit:
            time.sleep(0.5)
    raise SystemExit(f"bench: {what} never answered an exec")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20, help="measured rounds (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured rounds first (default 3)")
    parser.add_argument("--root", type=Path, help="vmpod state directory (default $VMPOD_ROOT or /tmp/bench-root)")
    options = parser.parse_args()
    root: Path = options.root or Path(os.environ.get("VMPOD_ROOT", "/tmp/bench-root"))
    env = bench_env(root)
    if shutil.which("podman") is None or shutil.which("runc") is None:
        raise SystemExit("bench: podman and runc are needed (make bench installs them)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the cleanup below runs
    ensure_image(env)
    info = machine()
    name = f"bench-exec-{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix="vmpod-bench-podman-"))
    podman = Podman(tmp)
    try:
        run = [*vmpod_cli(), "run", "-d", "--name", name, IMAGE, "sleep", "3600"]
        subprocess.run(run, env=env, check=True, stdout=subprocess.DEVNULL)
        inspect = subprocess.run([*vmpod_cli(), "inspect", name], env=env, capture_output=True, text=True, check=True)
        directory = ContainerStore(StateDir(root)).directory(json.loads(inspect.stdout)[0]["Id"])
        podman.run("import", "--change", 'CMD ["/bin/sh"]', str(REPO / "build" / "busybox.tar"), PODMAN_IMAGE)
        podman.run("run", "-d", "--network", "none", "--name", name, PODMAN_IMAGE, "sleep", "3600")

        commands: dict[str, list[str]] = {
            "A": [*vmpod_cli(), "exec", name, "true"],
            "B": [*podman.argv, "exec", name, "true"],
            "cli": [*vmpod_cli(), "--version"],
            "python": [sys.executable, "-c", "pass"],
            "podman": ["podman", "--version"],
        }
        for label, cmd in commands.items():
            print(f"{label + ':':<8}{shlex.join(cmd)}")
        print("direct: exec request over the control socket from this process")
        wait_running(lambda: timed(commands["A"], env), "the vmpod container")
        wait_running(lambda: timed(commands["B"], podman.env), "the podman container")

        def measure(label: str) -> float:
            if label == "direct":
                started, total = direct_exec(directory)
                samples["direct_start"].append(started)
                return total
            return timed(commands[label], podman.env if label in ("B", "podman") else env)[0]

        order = ["A", "B", "direct", "cli", "python", "podman"]
        samples: dict[str, list[float]] = {label: [] for label in [*order, "direct_start"]}
        for _ in range(options.warmup):
            for label in order:
                measure(label)
        samples["direct_start"].clear()
        for round_ in range(options.runs):
            shift = round_ % len(order)
            for label in order[shift:] + order[:shift]:
                samples[label].append(measure(label))
            print(f"round {round_ + 1}/{options.runs}: " + "  ".join(f"{k}={samples[k][-1]:.3f}s" for k in order))
    finally:
        remove_vmpod([name], env)
        podman.cleanup(name)
        shutil.rmtree(tmp, ignore_errors=True)

    samples["direct_exit"] = [t - s for t, s in zip(samples["direct"], samples["direct_start"], strict=True)]
    samples["cli_own"] = [a - d for a, d in zip(samples["A"], samples["direct"], strict=True)]
    medians = {label: median(values) for label, values in samples.items()}
    ratio = medians["A"] / medians["B"]

    print()
    print(f"{'measurement':<52} {'median':>8} {'min':>8} {'max':>8}")
    rows: Sequence[tuple[str, str]] = [
        ("A", "A  vmpod exec C true (wall)"),
        ("B", "B  podman exec C2 true (wall, runc)"),
        ("direct", "   exec over the control socket, no CLI"),
        ("direct_start", "     request → process started in the guest"),
        ("direct_exit", "     started → EXIT frame"),
        ("cli_own", "   A − direct (CLI: start-up, imports, lookup, exit)"),
        ("cli", "   vmpod --version (wall)"),
        ("python", "   python -c pass (wall)"),
        ("podman", "   podman --version (wall)"),
    ]
    for key, label in rows:
        values = samples[key]
        print(f"{label:<52} {median(values):>7.3f}s {min(values):>7.3f}s {max(values):>7.3f}s")
    print(f"\nratio median(A)/median(B) = {ratio:.2f}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    podman_version = subprocess.run(["podman", "--version"], capture_output=True, text=True).stdout.strip()
    runc_version = subprocess.run(["runc", "--version"], capture_output=True, text=True).stdout.splitlines()
    result = {
        "timestamp": stamp,
        "runs": options.runs,
        "warmup": options.warmup,
        "root": str(root),
        "machine": {**info, "loadavg_end": os.getloadavg(), "podman": podman_version, "runc": runc_version[:1]},
        "commands": commands,
        "containers_conf": CONTAINERS_CONF,
        "samples_s": samples,
        "medians_s": medians,
        "ratio_A_over_B": ratio,
    }
    path = RESULTS / f"exec-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
