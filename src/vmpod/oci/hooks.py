"""OCI hooks, run on the host at the points the runtime spec defines, with the state JSON on stdin.

The programs are the engine's (from `config.json`), started with exactly their `args` and `env`, never
through a shell. prestart then createRuntime (runc's order) run before `create` returns (a failure fails `create`);
poststart after the process started and poststop when `delete` removes the container (failures there
are only logged, as the spec says). The other stages (createContainer, startContainer) run inside the
container's namespaces in runc; there is no host process in the VM to run them in, so they are skipped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess

from vmpod.errors import VmpodError
from vmpod.oci.bundle import Bundle, Hook
from vmpod.oci.state import Record

log = logging.getLogger("vmpod")
DEFAULT_TIMEOUT_S = 60.0


async def run_hook(hook: Hook, state: bytes) -> None:
    # In a worker thread, not as an asyncio subprocess: such a transport can outlive `asyncio.run` and
    # then print "Event loop is closed" on stderr, where engines and runc comparisons see it.
    await asyncio.get_running_loop().run_in_executor(None, _run_hook, hook, state)


def _run_hook(hook: Hook, state: bytes) -> None:
    argv = hook.args or (hook.path,)
    log.debug("+ hook %s %s", hook.path, " ".join(argv[1:]))
    try:
        done = subprocess.run(
            list(argv),
            executable=hook.path,
            input=state,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=dict(e.split("=", 1) for e in hook.env if "=" in e),
            timeout=hook.timeout or DEFAULT_TIMEOUT_S,
            check=False,
        )
    except OSError as e:
        raise VmpodError(f"hook {hook.path}: {e.strerror}", exit_code=1) from None
    except subprocess.TimeoutExpired:  # subprocess.run has killed it
        raise VmpodError(f"hook {hook.path} timed out", exit_code=1) from None
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise VmpodError(f"hook {hook.path} failed: {detail[0]}", exit_code=1)


async def run_stage(bundle: Bundle, stage: str, record: Record, fatal: bool = True, status: str | None = None) -> None:
    """Runs one stage's hooks in order; status overrides the state's (runc says `creating`, with the
    pid, to createRuntime and prestart, and `created` to poststart)."""
    state = record.oci_state()
    if status is not None:
        state = {**state, "status": status, "pid": record.pid}
    state_bytes = json.dumps(state).encode()
    for hook in bundle.hooks.get(stage, ()):
        try:
            await run_hook(hook, state_bytes)
        except VmpodError as e:
            if fatal:
                raise
            log.warning("%s", e)
