#!/usr/bin/env python3
"""Drives build/vmpod-agent in host test mode (--channel-fd) over a socketpair.

A throwaway check, to be turned into pytest tests: run `python3 agent/tests/host_mode_check.py`.
It only starts commands on this machine as the current user; the agent does no PID-1 work here.
"""
import contextlib
import errno
import hashlib
import os
import select
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
AGENT = os.path.join(HERE, "..", "build", "vmpod-agent")
sys.path.insert(0, os.path.join(HERE, "..", "..", "src"))
from vmpod.guest.messages import MAX_DATA, STREAM_WINDOW, Field as F, Message as M  # noqa: E402


def field(tag, value):
    if isinstance(value, int):
        value = struct.pack(">I", value)
    elif isinstance(value, str):
        value = value.encode()
    return struct.pack(">HI", tag, len(value)) + value


def frame(typ, ident, payload=b"", reserved=0):
    return struct.pack(">IHHI", len(payload), typ, reserved, ident) + payload


def decode_fields(p):
    out, off = {}, 0
    while off < len(p):
        tag, n = struct.unpack_from(">HI", p, off)
        v = p[off + 6:off + 6 + n]
        off += 6 + n
        out.setdefault(F(tag).name, []).append(v)
    return out


class Agent:
    def __init__(self):
        self.host, guest = socket.socketpair()
        self.proc = subprocess.Popen([AGENT, "--channel-fd", str(guest.fileno())],
                                     pass_fds=[guest.fileno()])
        guest.close()
        self.buf = b""
        self.out = {}  # (STDOUT or STDERR, process handle) -> bytes
        self.stdout = self.output(M.STDOUT, 1)
        self.stderr = self.output(M.STDERR, 1)
        self.exits = []  # process handles in the order their EXIT arrived
        self.exit_fields = {}  # handle -> fields of an EXIT not yet waited for
        self.ack_output = True

    def output(self, typ, handle):
        return self.out.setdefault((typ, handle), bytearray())

    def send(self, typ, ident, *fields, raw=None):
        self.host.sendall(frame(typ, ident, raw if raw is not None else b"".join(fields)))

    def recv(self, timeout=10):
        """Next non-stream frame; stream frames are collected (and acked) on the way."""
        deadline = time.time() + timeout
        while True:
            if len(self.buf) >= 12:
                n, typ, res, ident = struct.unpack_from(">IHHI", self.buf)
                assert res == 0 and n <= 1 << 20
                if len(self.buf) >= 12 + n:
                    p, self.buf = self.buf[12:12 + n], self.buf[12 + n:]
                    typ = M(typ)
                    if typ in (M.STDOUT, M.STDERR):
                        assert n <= MAX_DATA
                        self.output(typ, ident).extend(p)
                        if self.ack_output:
                            self.send(M.OUTPUT_ACK, ident, field(F.COUNT, n))
                        continue
                    return typ, ident, decode_fields(p)
            left = deadline - time.time()
            if left <= 0 or not select.select([self.host], [], [], left)[0]:
                raise TimeoutError("no frame from the agent")
            data = self.host.recv(1 << 20)
            if not data:
                raise EOFError("agent closed the channel")
            self.buf += data

    @staticmethod
    def process_fields(args, terminal=0, stdin_open=0, env=("PATH=/usr/bin:/bin",), cwd="/tmp"):
        fields = [field(F.ARG, a) for a in args] + [field(F.ENV, e) for e in env]
        fields += [field(F.CWD, cwd), field(F.UID, os.getuid()), field(F.GID, os.getgid()),
                   field(F.TERMINAL, terminal), field(F.STDIN_OPEN, stdin_open)]
        if terminal:
            fields += [field(F.ROWS, 24), field(F.COLS, 80)]
        return fields

    def start(self, args, *extra, **kw):
        fields = [field(F.ROOT_DEVICE, ""), field(F.ROOT_FSTYPE, ""), *extra]
        self.send(M.START, 7, *fields, *self.process_fields(args, **kw))
        return self.recv()

    def exec(self, handle, args, *extra, req=8, **kw):
        self.send(M.EXEC, req, field(F.PROCESS, handle), *self.process_fields(args, **kw), *extra)
        return self.recv()

    def wait_exit(self, handle=1):
        """The EXIT of handle; EXITs of other handles on the way are kept for later."""
        while handle not in self.exit_fields:
            typ, ident, f = self.recv(60)
            assert typ in (M.EXIT, M.STDIN_ACK), (typ, f)
            if typ == M.EXIT:
                assert ident not in self.exit_fields, ident
                self.exits.append(ident)
                self.exit_fields[ident] = f
        return self.exit_fields.pop(handle)

    def wait_output(self, handle, needle):
        while needle not in self.output(M.STDOUT, handle):
            with contextlib.suppress(TimeoutError):
                assert self.recv(0.2)[0] == M.STDIN_ACK

    def kill_main(self):
        self.send(M.SIGNAL, 12, field(F.PROCESS, 1), field(F.SIGNO, 9))
        assert self.recv()[:2] == (M.OK, 12)
        assert u32(self.wait_exit(), "EXIT_SIGNAL") == 9

    def close(self):
        self.send(M.SHUTDOWN, 99)
        typ, ident, _ = self.recv()
        assert (typ, ident) == (M.OK, 99), typ
        assert self.proc.wait(5) == 0
        self.host.close()


def u32(f, name):
    return struct.unpack(">I", f[name][0])[0]


def check(name, fn):
    a = Agent()
    try:
        typ, ident, f = a.recv()
        assert typ == M.READY and ident == 0 and u32(f, "PROTO_VERSION") == 1, (typ, f)
        fn(a)
        a.close()
        print(f"ok   {name}")
    except Exception:
        a.proc.kill()
        print(f"FAIL {name}")
        raise


def t_basic(a):
    typ, _, f = a.start(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
    assert typ == M.OK and u32(f, "PID") > 1, (typ, f)
    f = a.wait_exit()
    assert u32(f, "EXIT_CODE") == 3, f
    assert bytes(a.stdout) == b"out\n" and bytes(a.stderr) == b"err\n", (a.stdout, a.stderr)


def t_stdin(a):
    typ, _, _ = a.start(["cat"], stdin_open=1)
    assert typ == M.OK
    data = os.urandom(3 * STREAM_WINDOW + 123)
    sent = acked = 0
    while sent < len(data) or acked < len(data):
        if sent < len(data) and sent - acked + MAX_DATA <= STREAM_WINDOW:
            chunk = data[sent:sent + MAX_DATA]
            a.send(M.STDIN, 1, raw=chunk)
            sent += len(chunk)
            continue
        typ, ident, f = a.recv()
        assert typ == M.STDIN_ACK and ident == 1, typ
        acked += u32(f, "COUNT")
    a.send(M.STDIN_CLOSE, 1)
    f = a.wait_exit()
    assert u32(f, "EXIT_CODE") == 0 and bytes(a.stdout) == data


def t_big_output(a):
    n = 52428800
    typ, _, _ = a.start(["/bin/sh", "-c", f"head -c {n} /dev/urandom | tee /dev/stderr | sha256sum >&2"])
    assert typ == M.OK
    f = a.wait_exit()
    assert u32(f, "EXIT_CODE") == 0
    digest = a.stderr[n:].split()[0].decode()
    assert len(a.stderr) > n and hashlib.sha256(a.stderr[:n]).hexdigest() == digest


def t_big_stdout(a):
    n = 52428800
    typ, _, _ = a.start(["head", "-c", str(n), "/dev/zero"])
    assert typ == M.OK
    f = a.wait_exit()
    assert u32(f, "EXIT_CODE") == 0 and len(a.stdout) == n and not any(a.stdout)


def t_credit(a):
    """Without acks the agent stops at one window, and goes on once acked."""
    a.ack_output = False
    a.start(["head", "-c", str(3 * STREAM_WINDOW), "/dev/zero"])
    try:
        a.recv(1)
        raise AssertionError("unexpected frame")
    except TimeoutError:
        pass
    assert len(a.stdout) == STREAM_WINDOW, len(a.stdout)
    a.ack_output = True
    a.send(M.OUTPUT_ACK, 1, field(F.COUNT, STREAM_WINDOW))
    a.wait_exit()
    assert len(a.stdout) == 3 * STREAM_WINDOW


def t_missing(a):
    typ, ident, f = a.start(["no-such-command-xyz"])
    assert typ == M.ERROR and ident == 7 and u32(f, "ERRNO") == errno.ENOENT, (typ, f)
    assert b"executable file not found in $PATH" in f["MESSAGE"][0], f
    typ, _, f = a.start(["/bin/true"])
    assert typ == M.ERROR and u32(f, "ERRNO") == errno.EBUSY, f  # one START per agent


def t_not_executable(a):
    typ, _, f = a.start(["/etc"])
    assert typ == M.ERROR and u32(f, "ERRNO") == errno.EACCES, f
    assert f["MESSAGE"][0] == b'exec: "/etc": permission denied', f


def t_bad_cwd(a):
    typ, _, f = a.start(["/bin/true"], cwd="/no/such/dir")
    assert typ == M.ERROR and u32(f, "ERRNO") == errno.ENOENT, f


def t_signal_and_resize(a):
    typ, _, _ = a.start(["/bin/sh", "-c", "trap 'stty size; exit 5' WINCH; echo ready; while :; do sleep 0.05; done"],
                        terminal=1)
    assert typ == M.OK
    while b"ready" not in a.stdout:
        try:
            a.recv(0.2)
        except TimeoutError:
            pass
    a.send(M.RESIZE, 11, field(F.PROCESS, 1), field(F.ROWS, 33), field(F.COLS, 77))
    typ, ident, _ = a.recv()
    assert (typ, ident) == (M.OK, 11)
    f = a.wait_exit()
    assert u32(f, "EXIT_CODE") == 5 and b"33 77" in a.stdout, (f, a.stdout)
    a.send(M.SIGNAL, 12, field(F.PROCESS, 1), field(F.SIGNO, 15))
    typ, ident, f = a.recv()
    assert typ == M.ERROR and u32(f, "ERRNO") == errno.ESRCH


def t_signal(a):
    a.start(["sleep", "30"])
    a.send(M.SIGNAL, 12, field(F.PROCESS, 1), field(F.SIGNO, 9))
    typ, ident, _ = a.recv()
    assert (typ, ident) == (M.OK, 12)
    f = a.wait_exit()
    assert u32(f, "EXIT_SIGNAL") == 9, f


def t_tty_stdin(a):
    typ, _, _ = a.start(["cat"], terminal=1, stdin_open=1)
    assert typ == M.OK
    a.send(M.STDIN, 1, raw=b"hello\n")
    a.send(M.STDIN_CLOSE, 1)
    f = a.wait_exit()
    assert u32(f, "EXIT_CODE") == 0 and a.stdout.count(b"hello") == 2, a.stdout  # echo + cat


def t_kills_group(a):
    """When the main process exits, its background children are killed, so EOF arrives."""
    typ, _, _ = a.start(["/bin/sh", "-c", "sleep 30 & echo bg"])
    f = a.wait_exit()
    assert u32(f, "EXIT_CODE") == 0 and a.stdout == b"bg\n"


def t_malformed(a):
    a.send(M.SIGNAL, 5, field(F.PROCESS, 1))  # missing SIGNO
    typ, ident, f = a.recv()
    assert typ == M.ERROR and ident == 5 and u32(f, "ERRNO") == errno.EPROTO, f
    a.send(M.SIGNAL, 6, field(F.PROCESS, 1), field(F.SIGNO, 9), field(F.SIGNO, 9))
    assert a.recv()[0] == M.ERROR
    a.send(M.SIGNAL, 7, field(F.PROCESS, 1), field(F.PID, 9), field(F.SIGNO, 9))
    assert a.recv()[0] == M.ERROR
    a.send(M.RESIZE, 8, field(F.PROCESS, 1), field(F.ROWS, 1), raw=field(F.PROCESS, 1)[:-1])
    assert a.recv()[0] == M.ERROR
    a.send(M.START, 9, raw=field(F.ARG, "a\0b"))
    assert a.recv()[0] == M.ERROR
    a.send(4242, 10)  # unknown type: answered, frame dropped, stream still in sync
    typ, ident, f = a.recv()
    assert typ == M.ERROR and ident == 10
    a.send(M.OK, 11)  # an agent->host type
    assert a.recv()[:2] == (M.ERROR, 11)


def t_bad_header(a):
    a.host.sendall(frame(M.SHUTDOWN, 3, reserved=1))
    typ, ident, f = a.recv()
    assert typ == M.ERROR and ident == 3 and u32(f, "ERRNO") == errno.EPROTO
    assert a.proc.wait(5) == 1  # stream sync lost: the agent ends (as PID 1: powers off)
    a.close = lambda: None


def t_too_long(a):
    a.host.sendall(struct.pack(">IHHI", (1 << 20) + 1, M.STDIN, 0, 1))
    typ, ident, f = a.recv()
    assert typ == M.ERROR and u32(f, "ERRNO") == errno.EPROTO
    assert a.proc.wait(5) == 1
    a.close = lambda: None


def t_exec(a):
    a.start(["sleep", "30"])
    typ, ident, f = a.exec(2, ["/bin/sh", "-c", "echo e; echo f >&2; exit 5"])
    assert (typ, ident) == (M.OK, 8) and u32(f, "PID") > 1, (typ, f)
    assert u32(a.wait_exit(2), "EXIT_CODE") == 5
    assert a.output(M.STDOUT, 2) == b"e\n" and a.output(M.STDERR, 2) == b"f\n", a.out
    assert not a.stdout and not a.stderr
    typ, _, f = a.exec(2, ["/bin/true"])  # the handle was forgotten: it can be used again
    assert typ == M.OK, f
    assert u32(a.wait_exit(2), "EXIT_CODE") == 0
    a.kill_main()  # still alive after its exec'd processes ended
    assert a.exits == [2, 2, 1], a.exits


def t_exec_env_cwd(a):
    a.start(["sleep", "30"])
    a.exec(3, ["/bin/sh", "-c", "echo $FOO; pwd; cat"], env=("FOO=bar", "PATH=/bin"), cwd="/usr")
    assert u32(a.wait_exit(3), "EXIT_CODE") == 0
    assert a.output(M.STDOUT, 3) == b"bar\n/usr\n", a.out  # stdin was /dev/null
    a.kill_main()


def t_exec_stdin(a):
    a.start(["sleep", "30"])
    typ, _, f = a.exec(2, ["cat"], stdin_open=1)
    assert typ == M.OK, f
    data = os.urandom(2 * STREAM_WINDOW + 77)
    sent = acked = 0
    while sent < len(data) or acked < len(data):
        if sent < len(data) and sent - acked + MAX_DATA <= STREAM_WINDOW:
            chunk = data[sent:sent + MAX_DATA]
            a.send(M.STDIN, 2, raw=chunk)
            sent += len(chunk)
            continue
        typ, ident, f = a.recv()
        assert typ == M.STDIN_ACK and ident == 2, (typ, ident)
        acked += u32(f, "COUNT")
    a.send(M.STDIN_CLOSE, 2)
    assert u32(a.wait_exit(2), "EXIT_CODE") == 0
    assert a.output(M.STDOUT, 2) == data
    a.kill_main()


def t_exec_terminal(a):
    a.start(["sleep", "30"])
    typ, _, f = a.exec(2, ["/bin/sh", "-c", "stty size; read x; echo got $x; stty size"],
                       terminal=1, stdin_open=1)
    assert typ == M.OK, f
    a.wait_output(2, b"24 80")
    a.send(M.RESIZE, 11, field(F.PROCESS, 2), field(F.ROWS, 33), field(F.COLS, 77))
    assert a.recv()[:2] == (M.OK, 11)
    a.send(M.RESIZE, 13, field(F.PROCESS, 1), field(F.ROWS, 33), field(F.COLS, 77))
    typ, ident, f = a.recv()
    assert (typ, ident) == (M.ERROR, 13) and u32(f, "ERRNO") == errno.ENOTTY  # main: pipes
    a.send(M.STDIN, 2, raw=b"hi\n")
    assert u32(a.wait_exit(2), "EXIT_CODE") == 0
    out = a.output(M.STDOUT, 2)
    assert b"got hi" in out and out.rstrip().endswith(b"33 77") and not a.output(M.STDERR, 2), out
    a.kill_main()


def t_exec_output(a):
    """Two exec'd processes stream at once, each within its own window."""
    n = 4 << 20
    a.start(["sleep", "30"])
    for h in (2, 3):
        assert a.exec(h, ["head", "-c", str(n), "/dev/zero"])[0] == M.OK
    a.wait_exit(2), a.wait_exit(3)
    assert len(a.output(M.STDOUT, 2)) == n and len(a.output(M.STDOUT, 3)) == n
    a.kill_main()


def t_exec_signal(a):
    a.start(["sleep", "30"])
    a.exec(4, ["sleep", "30"])
    a.send(M.SIGNAL, 12, field(F.PROCESS, 4), field(F.SIGNO, 15))
    assert a.recv()[:2] == (M.OK, 12)
    assert u32(a.wait_exit(4), "EXIT_SIGNAL") == 15
    a.send(M.SIGNAL, 14, field(F.PROCESS, 4), field(F.SIGNO, 15))
    typ, _, f = a.recv()
    assert typ == M.ERROR and u32(f, "ERRNO") == errno.ESRCH, f
    a.kill_main()


def t_exec_missing(a):
    a.start(["sleep", "30"])
    typ, ident, f = a.exec(2, ["no-such-command-xyz"])
    assert (typ, ident) == (M.ERROR, 8) and u32(f, "ERRNO") == errno.ENOENT, (typ, f)
    assert f["MESSAGE"][0] == b'exec: "no-such-command-xyz": executable file not found in $PATH'
    typ, _, f = a.exec(2, ["/bin/true"], cwd="/no/such/dir")
    assert typ == M.ERROR and u32(f, "ERRNO") == errno.ENOENT, f
    assert a.exec(2, ["/bin/true"])[0] == M.OK  # failed EXECs took no handle
    a.wait_exit(2)
    a.kill_main()


def t_exec_errors(a):
    typ, ident, f = a.exec(2, ["/bin/true"])
    assert (typ, ident) == (M.ERROR, 8) and u32(f, "ERRNO") == errno.EINVAL, f  # before START
    a.start(["sleep", "30"])
    for h in (0, 1):
        typ, _, f = a.exec(h, ["/bin/true"])
        assert typ == M.ERROR and u32(f, "ERRNO") == errno.EINVAL, (h, f)
    assert a.exec(2, ["sleep", "30"])[0] == M.OK
    typ, _, f = a.exec(2, ["/bin/true"])
    assert typ == M.ERROR and u32(f, "ERRNO") == errno.EEXIST, f
    for extra in (field(F.ROOT_DEVICE, ""), field(F.HOSTNAME, "h"), field(F.PROCESS, 3),
                  field(F.SIGNO, 1)):
        typ, _, f = a.exec(3, ["/bin/true"], extra)
        assert typ == M.ERROR and u32(f, "ERRNO") == errno.EPROTO, f
    a.send(M.EXEC, 9, *Agent.process_fields(["/bin/true"]))  # no PROCESS
    typ, ident, f = a.recv()
    assert (typ, ident) == (M.ERROR, 9) and u32(f, "ERRNO") == errno.EPROTO, f
    a.kill_main()
    assert a.exits == [2, 1], a.exits
    typ, _, f = a.exec(3, ["/bin/true"])
    assert typ == M.ERROR and u32(f, "ERRNO") == errno.ESRCH, f  # the container has ended


def t_exec_main_exits(a):
    """The main process's end kills the exec'd ones; their EXITs come before the main one's."""
    a.start(["cat"], stdin_open=1)
    assert a.exec(2, ["sleep", "30"])[0] == M.OK
    assert a.exec(3, ["/bin/sh", "-c", "echo x; sleep 30"], terminal=1)[0] == M.OK
    assert a.exec(4, ["/bin/sh", "-c", "sleep 30 & echo bg; wait"])[0] == M.OK
    a.wait_output(3, b"x"), a.wait_output(4, b"bg")
    a.send(M.STDIN_CLOSE, 1)
    f = a.wait_exit(1)
    assert u32(f, "EXIT_CODE") == 0 and sorted(a.exits[:3]) == [2, 3, 4] and a.exits[3] == 1, a.exits
    assert a.output(M.STDOUT, 4) == b"bg\n"


def t_extras_host_mode(a):
    """MOUNT, FILE and NET_* are checked but not applied on the host: nothing is mounted here."""
    scratch = f"/tmp/vmpod-agent-check-{os.getpid()}/scratch"
    extras = [field(F.MOUNT, f"tmpfs\ttmpfs\t{scratch}\tsize=8m,ro"),
              field(F.MOUNT, "9p\tvol0\t/data\t"), field(F.FILE, "/etc/hosts\t644\t1.2.3.4\tx\n"),
              field(F.NET_ADDRESS, "10.0.2.15/24"), field(F.NET_GATEWAY, "10.0.2.2")]
    typ, _, f = a.start(["/bin/true"], *extras)
    assert typ == M.OK, f
    assert u32(a.wait_exit(), "EXIT_CODE") == 0
    assert not os.path.exists(os.path.dirname(scratch))
    assert b"1.2.3.4" not in open("/etc/hosts", "rb").read()


def t_extras_bad_values(a):
    """A bad value fails START with EINVAL before the container exists: a good START still works."""
    bad = [
        [field(F.MOUNT, "tmpfs\ttmpfs\t/scratch")],  # three parts
        [field(F.MOUNT, "tmpfs\ttmpfs\t/scratch\tro\tx")],  # five
        [field(F.MOUNT, "ext4\t/dev/vdb\t/data\t")],
        [field(F.MOUNT, "9p\t\t/data\t")],
        [field(F.MOUNT, "tmpfs\ttmpfs\tscratch\t")],
        [field(F.MOUNT, "tmpfs\ttmpfs\t\t")],
        [field(F.MOUNT, "tmpfs\ttmpfs\t/a/../../etc\t")],
        [field(F.MOUNT, "tmpfs\ttmpfs\t/\t")],
        [field(F.FILE, "/etc/hosts\t644")],
        [field(F.FILE, "/etc/../../hosts\t644\tx")],
        [field(F.FILE, "/etc/hosts\t9\tx")],
        [field(F.FILE, "/big\t644\t" + "x" * (256 * 1024 + 1))],
        [field(F.MOUNT, f"tmpfs\ttmpfs\t/t{i}\t") for i in range(65)],
        [field(F.FILE, f"/f{i}\t644\t") for i in range(65)],
        [field(F.NET_ADDRESS, "10.0.2.15")],
        [field(F.NET_ADDRESS, "10.0.2.15/33")],
        [field(F.NET_ADDRESS, "10.0.2.15/24"), field(F.NET_GATEWAY, "gateway")],
        [field(F.NET_GATEWAY, "10.0.2.2")],  # without an address
    ]
    for extras in bad:
        typ, ident, f = a.start(["/bin/true"], *extras)
        assert (typ, ident) == (M.ERROR, 7) and u32(f, "ERRNO") == errno.EINVAL, (extras[0], f)
        assert f["MESSAGE"][0].startswith(b"START: "), f
    for extras in ([field(F.NET_ADDRESS, "10.0.2.15/24")] * 2, [field(F.NET_GATEWAY, "10.0.2.2")] * 2,
                   [field(F.MOUNT, "tmpfs\ttmpfs\t/a\0b\t")]):
        typ, _, f = a.start(["/bin/true"], *extras)
        assert typ == M.ERROR and u32(f, "ERRNO") == errno.EPROTO, (extras[0], f)
    ok = [field(F.MOUNT, f"tmpfs\ttmpfs\t/t{i}\t") for i in range(64)]
    ok += [field(F.FILE, f"/f{i}\t644\t" + "x" * (256 * 1024 if i < 3 else 0)) for i in range(64)]
    typ, _, f = a.start(["/bin/true"], *ok)
    assert typ == M.OK, f
    a.wait_exit()


def t_extras_not_in_exec(a):
    a.start(["sleep", "30"])
    for extra in (field(F.MOUNT, "tmpfs\ttmpfs\t/t\t"), field(F.FILE, "/e\t644\tx"),
                  field(F.NET_ADDRESS, "10.0.2.15/24"), field(F.NET_GATEWAY, "10.0.2.2")):
        typ, _, f = a.exec(2, ["/bin/true"], extra)
        assert typ == M.ERROR and u32(f, "ERRNO") == errno.EPROTO, (extra, f)
    a.kill_main()


def t_host_hangup(a):
    a.start(["sleep", "30"])
    a.host.close()
    assert a.proc.wait(5) == 0
    a.close = lambda: None


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith("t_"):
            check(name[2:], fn)
    # cat closes its stdio just before exiting: closing the pty master then would SIGHUP it
    for _ in range(20):
        check("tty_stdin (repeated, SIGHUP race)", t_tty_stdin)
