"""Runs in the nested dom0 (scripts/xen/payload.sh puts it there): the user-level checks of
tests/integration/test_run.py and test_lifecycle.py, against the Xen driver, through the real CLI.

Each check prints one `VMPOD-XEN CHECK {json}` line on the console (name, ok, detail, seconds);
tests/xen/test_xen.py asserts on them. The standard library and vmpod only: dom0 has Debian's python3
and vmpod (the echo diagnostics write their domain's config with vmpod's own).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import tarfile
import termios
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from vmpod.hypervisor.xen import Domain, XenDisk, XenMode, domain_config
from vmpod.hypervisor.xenguard import connect_channel

ROOT = Path(os.environ.get("VMPOD_ROOT", "/var/lib/vmpod"))
TARBALL = "/opt/vmpod/busybox.tar"
NONE = ("--network", "none")  # xl has no user-mode network
CHECK_TIMEOUT_S = int(os.environ.get("VMPOD_XEN_CHECK_TIMEOUT", "420"))
XEN_LOGS = Path("/var/log/xen")
# Every domain's logs, kept by hard links (a domain's cleanup unlinks them; a link keeps every byte
# written after it): on the initramfs's root as /var/log/xen is, outside what leftovers() looks at.
KEPT = Path("/var/log/kept")
# The harness's log disk (-device virtio-blk-pci): KEPT goes there as a tar after each check.
LOG_DISK = Path("/dev/vda")
GUEST_KERNEL = "/opt/vmpod/kernels/minimal-xen/bzImage"
GUEST_MODE = os.environ.get("VMPOD_XEN_MODE", "pvh")  # what vmpod boots its guests as (dom0-init.sh)
CHECKS: list[tuple[str, Callable[[], None]]] = []
DIAGNOSTICS: set[str] = set()  # run only when named (VMPOD_XEN_CHECKS), never by default


def regular_checks() -> list[str]:
    """What a run does when no check is named: every check but the diagnostics."""
    return [name for name, _ in CHECKS if name not in DIAGNOSTICS]


def check(fn: Callable[[], None]) -> Callable[[], None]:
    CHECKS.append((fn.__name__, fn))
    return fn


def vmpod(
    *args: str, input: bytes | None = None, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "vmpod.cli", *args],
        env={**os.environ, **(env or {})},
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def popen(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "vmpod.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def ok(done: subprocess.CompletedProcess[bytes], what: str) -> subprocess.CompletedProcess[bytes]:
    assert done.returncode == 0, f"{what}: exit {done.returncode}: {done.stderr.decode(errors='replace')[-600:]}"
    return done


def domains() -> list[str]:
    out = subprocess.run(["xl", "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines()[1:] if line.split()]


def leftovers() -> list[str]:
    found = [str(p.relative_to(ROOT)) for d in ("containers", "tmp", "xen") for p in (ROOT / d).glob("*")]
    found += [str(p) for p in Path("/var/log/xen").rglob("*vmpod-*")]
    return found


def processes() -> str:
    """vmpod's and Xen's processes, for a failure's message."""
    out = subprocess.run(["ps", "-eo", "pid,ppid,sid,etime,args"], capture_output=True, text=True).stdout
    return "\n".join(line[:160] for line in out.splitlines() if re.search(r"vmpod|xl |xenguard|qemu", line))


def wait_clean(timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while (domains() != ["Domain-0"] or leftovers()) and time.monotonic() < deadline:
        time.sleep(1)
    assert domains() == ["Domain-0"], f"domains left: {domains()}\n{processes()}"
    assert leftovers() == [], f"files left: {leftovers()}"


def wait_for_log(name: str, text: bytes, timeout: float = 300) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        out = vmpod("logs", name).stdout
        if text in out or time.monotonic() > deadline:
            return out
        time.sleep(1)


@check
def info_selects_xen() -> None:
    out = ok(vmpod("info"), "info").stdout.decode()
    assert "Driver: xen" in out, out
    assert "xen: available" in out, out


@check
def import_image() -> None:
    ok(vmpod("import", "--change", 'CMD ["/bin/sh"]', TARBALL, "busybox"), "import")


@check
def stdout_stderr_and_exit_code() -> None:
    done = vmpod("run", "--rm", *NONE, "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (done.returncode, done.stdout) == (3, b"out\n"), (done.returncode, done.stdout, done.stderr[-600:])
    assert done.stderr.endswith(b"err\n"), done.stderr[-600:]


@check
def runs_in_its_own_kernel() -> None:
    done = ok(vmpod("--driver", "xen", "run", "--rm", *NONE, "busybox", "uname", "-r"), "run")
    assert done.stdout.strip() and done.stdout.strip() != os.uname().release.encode(), done.stdout


@check
def pv_mode_runs() -> None:
    """PVH is the default; VMPOD_XEN_MODE=pv boots the same kernel paravirtualised."""
    done = vmpod("run", "--rm", *NONE, "busybox", "sh", "-c", "echo pv; exit 9", env={"VMPOD_XEN_MODE": "pv"})
    assert (done.returncode, done.stdout) == (9, b"pv\n"), (done.returncode, done.stdout, done.stderr[-600:])


@check
def image_config_env_workdir_user() -> None:
    changes = ["ENV GREETING=hello FROM_IMAGE=1", "WORKDIR /home/user", "USER user"]
    changes += ['ENTRYPOINT ["/bin/sh", "-c"]', 'CMD ["echo default"]']
    ok(vmpod("import", *[a for c in changes for a in ("--change", c)], TARBALL, "configured:v1"), "import")
    Path("/tmp/env").write_text("FROM_FILE=yes\n# ignored\n")
    script = 'echo "$GREETING $FROM_IMAGE $FROM_CLI $FROM_FILE $HOME"; pwd; id'
    flags = ("-e", "FROM_CLI=cli", "--env-file", "/tmp/env")
    done = ok(vmpod("run", "--rm", *NONE, *flags, "configured:v1", script), "run")
    assert done.stdout.decode().splitlines() == [
        "hello 1 cli yes /home/user",
        "/home/user",
        "uid=1000(user) gid=1000(user) groups=10(wheel),29(audio)",
    ], done.stdout
    assert vmpod("run", "--rm", *NONE, "configured:v1").stdout == b"default\n"


@check
def user_group_workdir_hostname_flags() -> None:
    args = ("-u", "1000:29", "-w", "/new/dir", "-h", "box")
    done = vmpod("run", "--rm", *NONE, *args, "busybox", "sh", "-c", "id -u; id -g; pwd; hostname; echo $HOSTNAME")
    assert done.stdout.decode().split() == ["1000", "29", "/new/dir", "box", "box"], done.stderr[-600:]


@check
def docker_exit_codes() -> None:
    cases = [
        (["no-such-command"], 127, b"not found"),
        (["/etc"], 126, b"permission denied"),
        (["sh", "-c", "kill -9 $$"], 137, b""),
        (["sh", "-c", "kill -TERM $$"], 143, b""),
    ]
    for command, code, message in cases:
        done = vmpod("run", "--rm", *NONE, "busybox", *command)
        assert done.returncode == code and message in done.stderr, (command, done.returncode, done.stderr[-400:])


@check
def engine_errors_are_125() -> None:
    done = vmpod("run", "--rm", *NONE, "nosuchimage")
    assert done.returncode == 125 and b"no such image" in done.stderr, done.stderr
    done = vmpod("run", "--rm", *NONE, "-u", "ghost", "busybox", "true")
    assert done.returncode == 125 and b"unable to find user ghost" in done.stderr, done.stderr


@check
def stdin_is_streamed_and_eof_delivered() -> None:
    data = os.urandom(1 << 20)
    done = ok(vmpod("run", "--rm", *NONE, "-i", "busybox", "sh", "-c", "md5sum; echo done", input=data), "run -i")
    assert done.stdout.decode().split()[0] == hashlib.md5(data).hexdigest(), done.stdout
    assert done.stdout.endswith(b"done\n")
    assert vmpod("run", "--rm", *NONE, "busybox", "wc", "-c", input=b"ignored").stdout.strip() == b"0"


@check
def binary_output_arrives_intact() -> None:
    script = "head -c 8388608 /dev/urandom | tee /tmp/data | md5sum >&2; cat /tmp/data"
    done = ok(vmpod("run", "--rm", *NONE, "busybox", "sh", "-c", script), "run")
    assert len(done.stdout) == 8 << 20, len(done.stdout)
    assert hashlib.md5(done.stdout).hexdigest() == done.stderr.decode().split()[-2]


@check
def signals_reach_the_container() -> None:
    script = 'trap "echo caught; exit 42" TERM; echo ready; while :; do sleep 0.1; done'
    proc = popen("run", "--rm", *NONE, "busybox", "sh", "-c", script)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert (proc.returncode, out) == (42, b"caught\n"), (proc.returncode, out, err[-400:])


@check
def tty_size_and_exit_code() -> None:
    """As tests/integration/test_tty.py: a pseudo-terminal in the guest, the user's size, the exit code."""
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        script = "tty; stty size; exit 4"
        args = ["run", "--rm", "-it", *NONE, "busybox", "sh", "-c", script]
        os.execv(sys.executable, [sys.executable, "-m", "vmpod.cli", *args])
    seen = b""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not chunk:
            break
        seen += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 4, (status, seen[-500:])
    assert b"/dev/pts/0" in seen and b"30 100" in seen, seen[-500:]


@check
def killed_run_leaves_nothing_behind() -> None:
    proc = popen("run", "--rm", *NONE, "busybox", "sh", "-c", "echo ready; sleep 600")
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    assert len(domains()) == 2, domains()
    proc.kill()
    proc.wait()
    wait_clean()


@check
def kept_container_until_rm() -> None:
    assert vmpod("run", "--name", "kept", *NONE, "busybox", "sh", "-c", "echo data > /file; exit 7").returncode == 7
    listing = ok(vmpod("ps", "-a"), "ps").stdout.decode()
    assert "kept" in listing and "Exited (7)" in listing, listing
    vmpod("run", "--name", "talker", *NONE, "busybox", "sh", "-c", "echo out; echo err >&2")
    logs = ok(vmpod("logs", "talker"), "logs")
    assert (logs.stdout, logs.stderr) == (b"out\n", b"err\n"), (logs.stdout, logs.stderr)
    ok(vmpod("rm", "talker"), "rm")
    ok(vmpod("rm", "kept"), "rm")
    assert "kept" not in ok(vmpod("ps", "-a"), "ps").stdout.decode()


@check
def detached_logs_exec_stop_rm() -> None:
    ticker = "echo started >&2; i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.5; done"
    done = ok(vmpod("run", "-d", "--name", "ticker", *NONE, "busybox", "sh", "-c", ticker), "run -d")
    assert re.fullmatch(rb"[0-9a-f]{64}\n", done.stdout), done.stdout
    assert "ticker" in ok(vmpod("ps"), "ps").stdout.decode()
    assert b"tick 3" in wait_for_log("ticker", b"tick 3")
    assert ok(vmpod("logs", "ticker"), "logs").stderr.startswith(b"started\n")
    done = vmpod("exec", "-e", "X=from-exec", "-w", "/tmp", "ticker", "sh", "-c", 'echo "$X $(pwd)"; exit 6')
    assert (done.returncode, done.stdout) == (6, b"from-exec /tmp\n"), (done.returncode, done.stdout, done.stderr)
    assert ok(vmpod("exec", "-u", "user", "ticker", "id", "-u"), "exec -u").stdout == b"1000\n"
    data = os.urandom(300_000)
    done = vmpod("exec", "-i", "ticker", "md5sum", input=data)
    assert done.stdout[:32] == hashlib.md5(data).hexdigest().encode(), (done.returncode, done.stdout, done.stderr)
    assert vmpod("exec", "ticker", "no-such-command").returncode == 127
    refused = vmpod("rm", "ticker")
    assert refused.returncode == 1 and b"running" in refused.stderr, refused.stderr
    ok(vmpod("stop", "-t", "5", "ticker"), "stop")
    assert re.search(r"Exited \(143\).*ticker", ok(vmpod("ps", "-a"), "ps").stdout.decode())
    assert vmpod("exec", "ticker", "true").returncode == 125
    assert ok(vmpod("wait", "ticker"), "wait").stdout == b"143\n"
    ok(vmpod("rm", "ticker"), "rm")
    assert "ticker" not in ok(vmpod("ps", "-a"), "ps").stdout.decode()


@check
def stop_kills_what_ignores_sigterm() -> None:
    script = 'trap "" TERM; trap "echo got-usr1" USR1; echo ready; while :; do sleep 0.2; done'
    ok(vmpod("run", "-d", "--name", "stubborn", *NONE, "busybox", "sh", "-c", script), "run -d")
    assert b"ready" in wait_for_log("stubborn", b"ready")
    ok(vmpod("kill", "-s", "USR1", "stubborn"), "kill")
    assert b"got-usr1" in wait_for_log("stubborn", b"got-usr1")
    started = time.monotonic()
    ok(vmpod("stop", "-t", "1", "stubborn"), "stop")
    assert time.monotonic() - started >= 1
    assert ok(vmpod("wait", "stubborn"), "wait").stdout == b"137\n"
    ok(vmpod("rm", "stubborn"), "rm")


@check
def rm_force_and_killed_supervisor() -> None:
    ok(vmpod("run", "-d", "--name", "forced", *NONE, "busybox", "sleep", "600"), "run -d")
    ok(vmpod("rm", "-f", "forced"), "rm -f")
    assert len(domains()) == 1, f"rm -f left {domains()}\n{processes()}"
    assert "forced" not in ok(vmpod("ps", "-a"), "ps").stdout.decode()
    ok(vmpod("run", "-d", "--name", "orphan", *NONE, "busybox", "sleep", "600"), "run -d")
    info = json.loads(ok(vmpod("inspect", "orphan"), "inspect").stdout)
    os.kill(int(info[0]["State"]["Pid"]), signal.SIGKILL)
    deadline = time.monotonic() + 180
    while len(domains()) > 1 and time.monotonic() < deadline:
        time.sleep(1)
    assert domains() == ["Domain-0"], f"{domains()}\n{processes()}"
    assert re.search(r"Exited .*orphan", ok(vmpod("ps", "-a"), "ps").stdout.decode())
    ok(vmpod("rm", "orphan"), "rm")


@check
def nothing_left_behind() -> None:
    wait_clean()


# --- diagnostics: run only when named in VMPOD_XEN_CHECKS; they measure the nested machine itself ----

SOAK_ROUNDS = 10
SOAK_BYTES = 1 << 20


def diagnostic(fn: Callable[[], None]) -> Callable[[], None]:
    DIAGNOSTICS.add(fn.__name__)
    return check(fn)


def _differences(sent: bytes, got: bytes) -> str:
    """Where got differs from sent, as offset+length runs (at most 6) and the first changed bytes."""
    if len(got) != len(sent):
        return f"{len(got)} of {len(sent)} bytes came back"
    changed = [i for i in range(len(sent)) if sent[i] != got[i]]
    runs: list[list[int]] = []
    for i in changed:
        if runs and i == runs[-1][0] + runs[-1][1]:
            runs[-1][1] += 1
        else:
            runs.append([i, 1])
    first = changed[0]
    return f"changed {[f'{o:#x}+{n}' for o, n in runs[:6]]}, first bytes {got[first : first + 32].hex()}"


def _soak(send: Callable[[bytes], bytes | str], what: str) -> None:
    """SOAK_ROUNDS transfers of SOAK_BYTES random bytes through send, which returns what came back
    (or why nothing did)."""
    bad = []
    for i in range(SOAK_ROUNDS):
        data = os.urandom(SOAK_BYTES)
        got = send(data)
        if got != data:
            bad.append(f"#{i}: {got if isinstance(got, str) else _differences(data, got)}")
    print(f"VMPOD-XEN INFO {what}: {len(bad)} of {SOAK_ROUNDS} transfers wrong {bad}", flush=True)
    assert not bad, f"{len(bad)} of {SOAK_ROUNDS} transfers wrong: {bad}"


@diagnostic
def stdin_soak() -> None:
    """1 MiB through `exec -i … cat` and back, ten times, in one container (VMPOD_XEN_MODE's mode)."""
    ok(vmpod("run", "-d", "--name", "soak", *NONE, "busybox", "sleep", "3000"), "run -d")

    def send(data: bytes) -> bytes | str:
        done = vmpod("exec", "-i", "soak", "cat", input=data)
        if done.returncode != 0:
            return f"exit {done.returncode} after {len(done.stdout)} bytes: {done.stderr[-300:]!r}"
        return done.stdout

    try:
        _soak(send, f"stdin soak ({GUEST_MODE})")
    finally:
        vmpod("rm", "-f", "soak")


@diagnostic
def dom0_pipe_soak() -> None:
    """The same soak through `cat | cat | cat` in dom0 alone: no guest, no vmpod, no Xen device."""

    def send(data: bytes) -> bytes | str:
        done = subprocess.run(["sh", "-c", "cat | cat | cat"], input=data, capture_output=True, check=False)
        return done.stdout if done.returncode == 0 else f"exit {done.returncode}: {done.stderr[-300:]!r}"

    _soak(send, "dom0 pipe soak")


def newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive (what the kernel unpacks as an initramfs) of (name, mode, data)."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        raw = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0]
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + raw
        out += bytes(-len(out) % 4)
        out += data
        out += bytes(-len(out) % 4)
    return bytes(out)


# The echo domain's /init: each console channel that exists (the agent's finds its own by name, a
# test needs no agent) copied back to itself, raw, through one open file.
ECHO_INIT = b"""#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t proc proc /proc
if [ -b /dev/xvda ]; then  # disk traffic meanwhile: 16 MiB written, the whole disk read, uncached
    (while :; do
        /bin/busybox dd if=/dev/urandom of=/dev/xvda bs=64k count=256 2>/dev/null
        /bin/busybox sync
        echo 3 >/proc/sys/vm/drop_caches
        /bin/busybox dd if=/dev/xvda of=/dev/null bs=64k 2>/dev/null
    done) &
fi
for i in 1 2 3; do
    (exec 3<>/dev/hvc$i && /bin/busybox stty raw -echo <&3 && exec /bin/busybox cat <&3 >&3) &
done
echo vmpod-echo-ready
exec /bin/busybox sleep 100000
"""


@diagnostic
def channel_echo_without_vmpod() -> None:
    """The same soak through a Xen console channel with no vmpod on either side: a domain whose init
    echoes the channel back, driven by dom0 over the channel's socket."""
    _echo_soak(disk=False)


@diagnostic
def channel_echo_with_disk_io() -> None:
    """As channel_echo_without_vmpod, while the domain reads and writes a qcow2 disk through qdisk (the
    device model that also serves the channel), as a container's root disk is."""
    _echo_soak(disk=True)


def _echo_soak(disk: bool) -> None:
    work = Path("/tmp/echo")
    work.mkdir(exist_ok=True)
    with tarfile.open(TARBALL) as image:
        busybox = image.extractfile("./bin/busybox")
        assert busybox is not None
        entries = [(d, 0o40755, b"") for d in ("dev", "sys", "proc", "bin")]
        entries += [("init", 0o100755, ECHO_INIT), ("bin/busybox", 0o100755, busybox.read())]
    (work / "initrd").write_bytes(newc(entries))
    path = work / "channel.sock"
    disks: tuple[XenDisk, ...] = ()
    if disk:
        qcow2 = work / "disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow2), "64M"], check=True)
        disks = (XenDisk(str(qcow2)),)
    # vmpod's own domain config (its dummy channel first, tsc_mode), with this domain's init and channel.
    domain = Domain(
        name="echo",
        vcpus=1,
        memory_mib=256,
        kernel=GUEST_KERNEL,
        ramdisk=str(work / "initrd"),
        cmdline=("console=hvc0",),
        channel_path=str(path),
        disks=disks,
        mode=XenMode(GUEST_MODE),
    )
    (work / "echo.cfg").write_text(domain_config(domain))
    ok_xl = subprocess.run(["xl", "create", str(work / "echo.cfg")], capture_output=True, timeout=300)
    assert ok_xl.returncode == 0, ok_xl.stderr[-500:]
    try:
        channel = connect_channel(str(path), time.monotonic() + 120)
        channel.settimeout(120)
        deadline = time.monotonic() + 120
        while b"vmpod-echo-ready" not in Path("/var/log/xen/console/guest-echo.log").read_bytes():
            assert time.monotonic() < deadline, "the echo domain's init never got ready"
            time.sleep(1)
        time.sleep(2)  # its channel is raw a moment after it says so

        def send(data: bytes) -> bytes | str:
            writer = threading.Thread(target=channel.sendall, args=(data,), daemon=True)
            writer.start()
            got = bytearray()
            with contextlib.suppress(TimeoutError):
                while len(got) < len(data) and (chunk := channel.recv(1 << 16)):
                    got += chunk
            writer.join(10)
            return bytes(got)

        _soak(send, f"channel echo without vmpod ({GUEST_MODE}{', disk traffic' if disk else ''})")
    finally:
        subprocess.run(["xl", "destroy", "echo"], capture_output=True, timeout=120, check=False)


class LogKeeper(threading.Thread):
    """Links each new guest console, device model and xl log, and each container's supervisor.log, into
    KEPT/<check>/ (polled: dom0 has no inotify tool, and Python's standard library has no inotify)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.check = "setup"
        self.kept: set[int] = set()

    def run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.sweep()
            time.sleep(0.2)

    def sweep(self) -> None:
        xen = [*XEN_LOGS.glob("console/guest-*.log"), *XEN_LOGS.glob("qemu-dm-*"), *XEN_LOGS.glob("xl-*")]
        logs = [(p, p.name) for p in xen] + [
            (p, f"supervisor-{p.parent.name[:12]}.log") for p in ROOT.glob("containers/*/supervisor.log")
        ]
        for path, name in logs:
            with contextlib.suppress(OSError):  # gone already, or linked since the glob
                inode = path.stat().st_ino
                if inode not in self.kept:
                    (KEPT / self.check).mkdir(parents=True, exist_ok=True)
                    os.link(path, KEPT / self.check / name)
                    self.kept.add(inode)  # a kept inode is never reused: the link holds it

    def save(self) -> None:
        """Writes KEPT, with dom0's kernel log (its segfault lines), as one tar over the log disk (the
        harness unpacks it into build/xen/)."""
        (KEPT / "dom0").mkdir(parents=True, exist_ok=True)
        with (KEPT / "dom0" / "dmesg.log").open("wb") as out:
            subprocess.run(["dmesg"], stdout=out, check=False)
        if LOG_DISK.is_block_device():
            subprocess.run(["tar", "-cf", str(LOG_DISK), "-C", str(KEPT.parent), KEPT.name], check=False)
            subprocess.run(["sync"], check=False)


KEEPER = LogKeeper()


class CheckTimeout(Exception):
    pass


def _timed_out(signo: int, frame: object) -> None:
    raise CheckTimeout(f"the check ran past {CHECK_TIMEOUT_S} s")


def _diagnose() -> str:
    """What a failed check leaves to look at: the domains, the processes, its guests' consoles' ends."""
    KEEPER.sweep()
    parts = [f"domains: {domains()}", processes()]
    for log in sorted((KEPT / KEEPER.check).glob("guest-*.log")):
        parts.append(f"{log.name}: {log.read_bytes()[-600:].decode(errors='replace')}")
    return "\n".join(parts)


def _reset() -> None:
    """After a failure, the next check starts clean: no container, no domain, no stray CLI."""
    subprocess.run(["pkill", "-KILL", "-f", "vmpod.cli"], check=False)
    names = vmpod("ps", "-aq", timeout=120).stdout.decode().split()
    if names:
        vmpod("rm", "-f", *names, timeout=300)
    try:
        wait_clean(120)
    except AssertionError as e:
        print(f"VMPOD-XEN WARN not clean after a failed check: {e}", flush=True)


def main() -> int:
    failed = 0
    wanted = set(sys.argv[1:]) or set(regular_checks())
    signal.signal(signal.SIGALRM, _timed_out)
    KEEPER.start()
    for name, fn in CHECKS:
        if name not in wanted:
            continue
        KEEPER.check = name
        started = time.monotonic()
        signal.alarm(CHECK_TIMEOUT_S)  # a hung guest must not hold the whole run (nested TCG hangs)
        try:
            fn()
            signal.alarm(0)
            result = {"name": name, "ok": True, "detail": ""}
        except Exception as e:
            signal.alarm(0)
            failed += 1
            detail = "".join(traceback.format_exception_only(e)).strip()
            frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == __file__]
            if frames:  # a bare assert says nothing: name its line
                detail += f" (line {frames[-1].lineno}: {frames[-1].line})"
            result = {"name": name, "ok": False, "detail": detail[-1500:]}
            with contextlib.suppress(Exception):
                print("VMPOD-XEN DIAG " + json.dumps({"name": name, "diag": _diagnose()[-4000:]}), flush=True)
            with contextlib.suppress(Exception):
                _reset()
        result["seconds"] = round(time.monotonic() - started, 1)
        KEEPER.sweep()
        KEEPER.save()
        print("VMPOD-XEN CHECK " + json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
