"""Containers that outlive the command: `run -d` starts a supervisor; the other verbs talk to it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from vmpod.container import control
from vmpod.container.logs import LOG_NAME
from vmpod.container.state import ContainerRecord, ContainerStore, Status
from vmpod.container.vm import RunOptions, create_container_disk, prepare
from vmpod.errors import VmpodError
from vmpod.paths import StateDir

log = logging.getLogger("vmpod")
POLL_S = 0.1


def create(state: StateDir, options: RunOptions) -> ContainerRecord:
    """`vmpod create`: the container's record, disk and plan, ready to start."""
    prepared = prepare(state, options)
    containers = ContainerStore(state)
    directory = create_container_disk(containers, prepared)
    prepared.save(directory)
    containers.save(prepared.record)
    return prepared.record


def start(state: StateDir, record: ContainerRecord, debug: bool = False) -> ContainerRecord:
    """Hands the container to a new supervisor, and returns once it runs (or failed to start)."""
    if record.status in (Status.RUNNING, Status.RESTARTING):
        return record
    containers = ContainerStore(state)
    directory = containers.directory(record.id)
    read_end, write_end = os.pipe()
    argv = [
        sys.executable,
        "-m",
        "vmpod.container.supervisor",
        "--root",
        str(state.root),
        "--ready-fd",
        str(write_end),
        *(["--debug"] if debug else []),
        record.id,
    ]
    log.debug("+ %s", " ".join(argv))
    try:
        subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(write_end,),
            start_new_session=True,
            env={**os.environ},
        )
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        line = reader.readline(control.MAX_REQUEST + 1)
    if not line:
        raise VmpodError("the container's supervisor died while starting", f"see {directory / 'supervisor.log'}")
    control.raise_for(control.decode(line))
    return containers.get(record.id)


def start_detached(state: StateDir, options: RunOptions, debug: bool = False) -> ContainerRecord:
    """`vmpod run -d`: create, then start."""
    return start(state, create(state, options), debug)


def stop(state: StateDir, record: ContainerRecord, timeout: float) -> None:
    if record.status not in (Status.RUNNING, Status.RESTARTING):
        return
    directory = ContainerStore(state).directory(record.id)
    try:
        control.call(directory, {"op": "stop", "timeout": timeout})
    except VmpodError:
        # The supervisor may end (the container stopped) before its answer is written; only a
        # container still running means the stop failed.
        if ContainerStore(state).get(record.id).status is Status.RUNNING:
            raise
    wait_until_exited(state, record.id)


def kill(state: StateDir, record: ContainerRecord, signo: int) -> None:
    if record.status is not Status.RUNNING:
        raise VmpodError(f"container {record.name} is not running")
    control.call(ContainerStore(state).directory(record.id), {"op": "kill", "signal": signo})


def wait_until_exited(state: StateDir, container_id: str) -> ContainerRecord:
    containers = ContainerStore(state)
    while True:
        record = containers.get(container_id)
        if record.status is Status.EXITED:
            return record
        time.sleep(POLL_S)


def log_path(state: StateDir, record: ContainerRecord) -> Path:
    return ContainerStore(state).directory(record.id) / LOG_NAME
