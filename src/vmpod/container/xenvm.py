"""A container's VM under Xen (hypervisor/xen.py): the launch branch `vm.launch` takes for `--driver xen`.

The owner spawns the guard (which owns the domain) as it would spawn QEMU, then waits for the guard to
hand over the socket connected to the domain's channel. No templates: a domain boots cold.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import tempfile
from contextlib import ExitStack, suppress
from dataclasses import replace

from vmpod.container.vm import SHUTDOWN_GRACE_S, Phases, Prepared, RunningVm, vm_spec
from vmpod.errors import VmpodError
from vmpod.hypervisor import xen
from vmpod.hypervisor.base import DiskSpec
from vmpod.paths import StateDir
from vmpod.run import spawn

# Destroying a domain under nested TCG takes seconds: the guard gets this long after SIGTERM.
DESTROY_TIMEOUT_S = 120.0


def launch(stack: ExitStack, state: StateDir, prepared: Prepared, disk: DiskSpec, quiet: bool = False) -> RunningVm:
    why = xen.XenDriver().available()
    if why is not None:
        raise VmpodError(f"the Xen driver cannot run here: {why}", "use --driver qemu")
    if prepared.bridge:
        raise VmpodError("bridged networks are not supported with the Xen driver yet", "use --network none")
    console = stack.enter_context(tempfile.TemporaryFile(prefix="vmpod-console-"))  # noqa: SIM115
    phases = Phases()
    stack.callback(phases.report)
    host_end, guest_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    stack.callback(host_end.close)
    with guest_end:
        spec = vm_spec(state, prepared, guest_end.fileno(), disk, quiet=True)  # no KVM/TCG warning: Xen runs it
        plan = xen.XenDriver(state.root / "xen", xen.mode()).plan(spec)
        guard = spawn(plan.argv, pass_fds=plan.pass_fds, stdout=console.fileno())
        stack.callback(_reap, guard, phases)
    vm = RunningVm(guard, host_end, console, phases, replace(prepared.process, root_device=xen.ROOT_DEVICE))
    try:
        channel = xen.receive_channel(host_end)
    except VmpodError as e:
        raise VmpodError(str(e), vm.console_hint()) from None
    stack.callback(channel.close)
    phases.mark("created")
    return replace(vm, channel=channel)


def _reap(guard: subprocess.Popen[bytes], phases: Phases) -> None:
    """Lets a guest that powered itself off go; otherwise the guard destroys the domain (SIGTERM)."""
    with suppress(subprocess.TimeoutExpired):
        guard.wait(SHUTDOWN_GRACE_S if "shutdown" in phases.marks else 0)
    if guard.poll() is None:
        guard.send_signal(signal.SIGTERM)
        try:
            guard.wait(DESTROY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            guard.kill()  # its watchdog still destroys the domain
            guard.wait()
    phases.mark("gone")
