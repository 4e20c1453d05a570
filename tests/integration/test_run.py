"""`vmpod run` as a user sees it: real VMs, the busybox image, the CLI."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Vmpod, leftovers, qemu_processes

pytestmark = pytest.mark.integration


def test_stdout_stderr_and_exit_code_stay_apart(vmpod: Vmpod) -> None:
    done = vmpod("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (done.returncode, done.stdout, done.stderr.replace(b"", b""))[0:2] == (3, b"out\n")
    assert done.stderr.endswith(b"err\n")


def test_runs_in_its_own_kernel(vmpod: Vmpod) -> None:
    done = vmpod("run", "--rm", "busybox", "uname", "-r", check=True)
    assert done.stdout.strip() != os.uname().release.encode()


def test_image_config_env_workdir_user(vmpod: Vmpod, tmp_path: Path) -> None:
    tarball = Path(__file__).resolve().parents[2] / "build" / "busybox.tar"
    vmpod(
        "import",
        "--change",
        "ENV GREETING=hello FROM_IMAGE=1",
        "--change",
        "WORKDIR /home/user",
        "--change",
        "USER user",
        "--change",
        'ENTRYPOINT ["/bin/sh", "-c"]',
        "--change",
        'CMD ["echo default"]',
        str(tarball),
        "configured:v1",
        check=True,
    )
    env_file = tmp_path / "env"
    env_file.write_text("FROM_FILE=yes\n# ignored\n")
    script = 'echo "$GREETING $FROM_IMAGE $FROM_CLI $FROM_FILE $HOME"; pwd; id'
    done = vmpod("run", "--rm", "-e", "FROM_CLI=cli", "--env-file", str(env_file), "configured:v1", script)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0] == "hello 1 cli yes /home/user"
    assert lines[1] == "/home/user"
    assert lines[2] == "uid=1000(user) gid=1000(user) groups=10(wheel),29(audio)"
    assert vmpod("run", "--rm", "configured:v1").stdout == b"default\n"


def test_user_group_workdir_hostname_flags(vmpod: Vmpod) -> None:
    done = vmpod(
        "run",
        "--rm",
        "-u",
        "1000:29",
        "-w",
        "/new/dir",
        "-h",
        "box",
        "busybox",
        "sh",
        "-c",
        "id -u; id -g; pwd; hostname; echo $HOSTNAME",
    )
    assert done.stdout.decode().split() == ["1000", "29", "/new/dir", "box", "box"], done.stderr


def test_entrypoint_flag_replaces_image_entrypoint(vmpod: Vmpod) -> None:
    done = vmpod("run", "--rm", "--entrypoint", "echo", "busybox", "a", "b")
    assert done.stdout == b"a b\n"


@pytest.mark.parametrize(
    ("command", "code", "message"),
    [
        (["no-such-command"], 127, b"not found"),
        (["/etc"], 126, b"permission denied"),
        (["sh", "-c", "kill -9 $$"], 137, b""),
        (["sh", "-c", "kill -TERM $$"], 143, b""),
    ],
)
def test_docker_exit_codes(vmpod: Vmpod, command: list[str], code: int, message: bytes) -> None:
    done = vmpod("run", "--rm", "busybox", *command)
    assert done.returncode == code, done.stderr
    assert message in done.stderr


def test_engine_errors_are_125_with_a_message(vmpod: Vmpod) -> None:
    done = vmpod("run", "--rm", "nosuchimage")
    assert done.returncode == 125
    assert b"no such image" in done.stderr
    done = vmpod("run", "--rm", "-u", "ghost", "busybox", "true")
    assert done.returncode == 125
    assert b"unable to find user ghost" in done.stderr


def test_stdin_is_streamed_and_eof_delivered(vmpod: Vmpod) -> None:
    data = os.urandom(3 << 20)
    done = vmpod("run", "--rm", "-i", "busybox", "sh", "-c", "md5sum; echo done", input=data)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split()[0] == hashlib.md5(data).hexdigest()
    assert done.stdout.endswith(b"done\n")


def test_without_i_stdin_is_empty(vmpod: Vmpod) -> None:
    done = vmpod("run", "--rm", "busybox", "wc", "-c", input=b"ignored")
    assert done.stdout.strip() == b"0"


def test_50_mb_of_binary_output_arrives_intact(vmpod: Vmpod) -> None:
    done = vmpod(
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "head -c 52428800 /dev/urandom | tee /tmp/data | md5sum >&2; cat /tmp/data",
    )
    assert done.returncode == 0
    assert len(done.stdout) == 52428800
    assert hashlib.md5(done.stdout).hexdigest() == done.stderr.decode().split()[-2]


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT])
def test_signals_reach_the_container(vmpod: Vmpod, signo: signal.Signals) -> None:
    script = f'trap "echo caught; exit 42" {signo.name.removeprefix("SIG")}; echo ready; while :; do sleep 0.1; done'
    proc = vmpod.popen(
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        script,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signo)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (42, b"caught\n"), err


def test_killed_run_leaves_nothing_behind(vmpod: Vmpod) -> None:
    proc = vmpod.popen(
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo ready; sleep 600",
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    assert qemu_processes(vmpod.root)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while qemu_processes(vmpod.root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert qemu_processes(vmpod.root) == []
    assert leftovers(vmpod.root) == []


def test_without_rm_the_container_is_kept_until_rm(vmpod: Vmpod) -> None:
    done = vmpod("run", "--name", "kept", "busybox", "sh", "-c", "echo data > /file; exit 7")
    assert done.returncode == 7
    listing = vmpod("ps", "-a", check=True).stdout.decode()
    assert "kept" in listing and "Exited (7)" in listing
    done = vmpod("run", "--name", "talker", "busybox", "sh", "-c", "echo out; echo err >&2")
    logs = vmpod("logs", "talker", check=True)
    assert (logs.stdout, logs.stderr) == (b"out\n", b"err\n")
    vmpod("rm", "talker", check=True)
    vmpod("rm", "kept", check=True)
    assert "kept" not in vmpod("ps", "-a", check=True).stdout.decode()


def test_dry_run_prints_the_hypervisor_command(vmpod: Vmpod) -> None:
    done = vmpod("run", "--dry-run", "--rm", "busybox", "true", check=True)
    assert done.stdout.startswith(b"qemu-system-x86_64 ")
    assert b"-sandbox on" in done.stdout
    assert leftovers(vmpod.root) == []


def test_twenty_runs_leave_nothing_behind(vmpod: Vmpod) -> None:
    fds_before = len(os.listdir("/proc/self/fd"))
    for index in range(20):
        done = vmpod("run", "--rm", "busybox", "echo", str(index))
        assert (done.returncode, done.stdout) == (0, f"{index}\n".encode()), done.stderr
    assert qemu_processes(vmpod.root) == []
    assert leftovers(vmpod.root) == []
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_debian_stock_kernel_with_modules(vmpod: Vmpod) -> None:
    """The kernel `make demo` uses on a fresh machine: the agent loads its virtio modules first."""
    cache = Path(os.environ.get("VMPOD_KERNEL_CACHE", "/var/cache/vmpod/kernels"))
    stock = sorted(cache.glob("stock-*/vmlinuz"))
    assert stock, f"no stock kernel in {cache}: run `make stock-kernel`"
    done = vmpod("run", "--rm", "--kernel", str(stock[-1].parent), "busybox", "sh", "-c", "uname -r; echo ok")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split() == [stock[-1].parent.name.removeprefix("stock-"), "ok"]
