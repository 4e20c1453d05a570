"""Template benchmark: `vmpod run --rm busybox true` restored from a template, against a bare QEMU cold boot.

Measured alternately in one run (the order rotates every round, so background load hits all of them):

  T      wall time of `vmpod run --rm busybox true`: the default, a VM restored from a template (built
         before the first round), a fresh CLI process with Python start-up included.
  B      the bare QEMU cold boot of bench/run_boot.py: the same kernel, machine, accelerator, CPU and
         memory, an initramfs whose /init powers off at once; no devices, no agent, no sandbox.
  cold   `vmpod run --rm --no-template busybox true`: vmpod booting the kernel, for comparison.
  debug  `vmpod --debug run --rm busybox true`, a separate set, for its phases (spawn→restored→started→
         exited→gone); its wall time minus their sum is the CLI's own time.
  cli    `vmpod --version`: Python start-up plus the CLI's imports.

Goal (issue "Fast start"): median(T) / median(B) ≤ 0.25.

Usage: .venv/bin/python bench/run_template.py [--runs N] [--root DIR]
Results: a table on stdout and bench/results/template-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import tempfile
import time
from pathlib import Path
from statistics import median

from run_boot import (
    IMAGE,
    RESULTS,
    alternate,
    bare_argv,
    bench_env,
    build_poweroff_initramfs,
    dry_run_argv,
    ensure_image,
    machine,
    print_table,
    vmpod_cli,
)

REPO = Path(__file__).resolve().parent.parent
GOAL = 0.25
PHASES = ("restored", "started", "exited", "gone")


def restore_phases(stderr: str) -> dict[str, float]:
    match = re.search(r"^vmpod: phases: (.*)$", stderr, re.MULTILINE)
    if not match:
        raise SystemExit(f"bench: no phases line in --debug output:\n{stderr}")
    phases = {name: float(value) for name, value in re.findall(r"(\w+)=([0-9.]+)s", match.group(1))}
    if set(phases) != set(PHASES):
        raise SystemExit(f"bench: the debug run was not restored from a template: phases {sorted(phases)}")
    return phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7, help="measured rounds (default 7)")
    parser.add_argument("--root", type=Path, help="vmpod state directory (default $VMPOD_ROOT or /tmp/bench-root)")
    options = parser.parse_args()
    root: Path = options.root or Path(os.environ.get("VMPOD_ROOT", "/tmp/bench-root"))
    env = bench_env(root)
    ensure_image(env)
    vmpod_argv = dry_run_argv(env)
    info = machine()
    built = subprocess.run([*vmpod_cli(), "template", "build"], env=env, capture_output=True, text=True, check=True)
    template_id = built.stdout.strip()

    with tempfile.TemporaryDirectory(prefix="vmpod-bench-") as tmp:
        commands: dict[str, list[str]] = {
            "T": [*vmpod_cli(), "run", "--rm", IMAGE, "true"],
            "B": bare_argv(vmpod_argv, build_poweroff_initramfs(Path(tmp))),
            "cold": [*vmpod_cli(), "run", "--rm", "--no-template", IMAGE, "true"],
            "debug": [*vmpod_cli(), "--debug", "run", "--rm", IMAGE, "true"],
            "cli": [*vmpod_cli(), "--version"],
        }
        for name, cmd in commands.items():
            print(f"{name + ':':<7}{shlex.join(cmd)}")
        walls, phase_runs = alternate(commands, env, options.runs, restore_phases)

    medians = {name: median(values) for name, values in walls.items()}
    vm_sums = [sum(run.values()) for run in phase_runs]
    cli_own = [wall - vm for wall, vm in zip(walls["debug"], vm_sums, strict=True)]
    ratio = medians["T"] / medians["B"]
    rows: list[tuple[str, list[float]]] = [
        ("T  vmpod run --rm busybox true (template)", walls["T"]),
        ("B  bare QEMU cold boot + poweroff", walls["B"]),
        ("   vmpod run --rm --no-template busybox true", walls["cold"]),
        ("   vmpod --debug run (wall)", walls["debug"]),
        *[(f"   phase {p}", [run[p] for run in phase_runs]) for p in PHASES],
        ("   VM spawn→gone (sum of phases)", vm_sums),
        ("   CLI own time (debug wall − spawn→gone)", cli_own),
        ("   vmpod --version (wall)", walls["cli"]),
    ]
    print_table(rows)
    print(f"\nratio median(T)/median(B) = {ratio:.2f} (goal ≤ {GOAL}: {'met' if ratio <= GOAL else 'missed'})")
    print(f"ratio median(cold)/median(T) = {medians['cold'] / medians['T']:.1f}× faster with the template")

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    snapshot = next((root / "templates").glob(f"{template_id}*/vm.snapshot"), None)
    result = {
        "timestamp": stamp,
        "runs": options.runs,
        "root": str(root),
        "machine": {**info, "loadavg_end": os.getloadavg()},
        "commands": commands,
        "template": template_id,
        "snapshot_bytes": snapshot.stat().st_size if snapshot else None,
        "walls_s": walls,
        "phases_s": phase_runs,
        "medians_s": {
            **{f"wall_{name}": value for name, value in medians.items()},
            **{f"phase_{p}": median(run[p] for run in phase_runs) for p in PHASES},
            "vm_spawn_to_gone": median(vm_sums),
            "cli_own": median(cli_own),
        },
        "ratio_T_over_B": ratio,
        "goal": GOAL,
        "goal_met": ratio <= GOAL,
    }
    path = RESULTS / f"template-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
