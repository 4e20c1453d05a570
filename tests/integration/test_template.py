"""VM templates as a user meets them: the same containers, started from a saved VM instead of a boot."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import BUSYBOX_TAR, Vmpod, leftovers, qemu_processes

pytestmark = pytest.mark.integration

SCRIPT = 'echo "out $X $(id -u) $(pwd) $(hostname)"; echo err >&2; cat; exit 3'


def _templates(vmpod: Vmpod) -> list[dict[str, object]]:
    out = vmpod("template", "ls", "--format", "json", check=True).stdout.decode()
    return [json.loads(line) for line in out.splitlines()]


def _restored(stderr: bytes) -> bool:
    """`--debug` names each phase of a run; a restored VM has a `restored` phase and no `ready` one."""
    phases = re.search(rb"phases: (.*)", stderr)
    assert phases, stderr.decode()
    return b"restored=" in phases.group(1) and b"ready=" not in phases.group(1)


@pytest.mark.parametrize("mode", ["template", "cold"])
def test_same_behaviour_with_and_without_template(vmpod: Vmpod, mode: str) -> None:
    flags = ["--no-template"] if mode == "cold" else []
    done = vmpod(
        "--debug", "run", "--rm", "-i", *flags, "-e", "X=1", "-u", "user", "-w", "/tmp", "-h", "box",
        "busybox", "sh", "-c", SCRIPT, input=b"from stdin\n",
    )  # fmt: skip
    assert done.returncode == 3, done.stderr.decode()
    assert done.stdout == b"out 1 1000 /tmp box\nfrom stdin\n"
    assert b"err\n" in done.stderr
    assert _restored(done.stderr) is (mode == "template")
    assert vmpod("run", "--rm", *flags, "busybox", "no-such-command").returncode == 127

    name = f"detached-{mode}"
    assert vmpod("run", "-d", *flags, "--name", name, "busybox", "sleep", "600").returncode == 0
    done = vmpod("exec", name, "sh", "-c", "echo exec-ok; exit 4")
    assert (done.returncode, done.stdout) == (4, b"exec-ok\n")
    assert vmpod("stop", "-t", "1", name, check=True).stdout.strip() == name.encode()
    inspected = json.loads(vmpod("inspect", name, check=True).stdout)[0]
    assert inspected["State"]["Status"] == "exited"
    vmpod("rm", name, check=True)
    assert not qemu_processes(vmpod.root)
    assert not leftovers(vmpod.root)


def test_restored_vms_are_distinct_machines(vmpod: Vmpod) -> None:
    probe = (
        "cat /proc/sys/kernel/random/uuid /proc/sys/kernel/random/boot_id; head -c 32 /dev/urandom | od -An -tx1;"
        " cat /sys/class/net/eth0/address"
    )
    first = vmpod("--debug", "run", "--rm", "busybox", "sh", "-c", probe, check=True)
    second = vmpod("--debug", "run", "--rm", "busybox", "sh", "-c", probe, check=True)
    assert _restored(first.stderr) and _restored(second.stderr)
    a, b = first.stdout.decode().splitlines(), second.stdout.decode().splitlines()
    assert len(a) == len(b) >= 4
    assert a[0] != b[0], "two containers from one template read the same random UUID"
    assert a[1] != b[1], "two containers from one template have the same boot_id"
    assert a[2:-1] != b[2:-1], "two containers from one template read the same /dev/urandom bytes"
    assert a[-1] != b[-1] and a[-1] != "02:00:00:00:00:01", "the MAC address is the template's"


def test_volumes_arrive_after_the_restore(vmpod: Vmpod, tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "hello").write_text("from the host\n")
    (tmp_path / "rw").mkdir()
    args = ["-v", f"{tmp_path / 'ro'}:/in:ro", "-v", f"{tmp_path / 'rw'}:/out", "--tmpfs", "/scratch"]
    script = "cat /in/hello; echo written > /out/file; touch /scratch/x; echo ok"
    env = {"VMPOD_SHARES": "9p"}  # read-write volumes on virtio-fs boot cold: QEMU cannot save virtio-fs
    done = vmpod("--debug", "run", "--rm", *args, "busybox", "sh", "-c", script, env=env)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"from the host\nok\n" and _restored(done.stderr)
    assert (tmp_path / "rw" / "file").read_text() == "written\n"
    cold = vmpod("--debug", "run", "--rm", *args, "busybox", "cat", "/out/file")
    assert cold.stdout == b"written\n" and not _restored(cold.stderr)  # virtio-fs: a cold boot
    assert b"booting without a template: virtio-fs" in cold.stderr


def test_guest_clock_is_the_hosts_after_restore(vmpod: Vmpod) -> None:
    vmpod("template", "build", check=True)
    time.sleep(2.5)  # the template's own clock is now well behind
    before = time.time()
    done = vmpod("--debug", "run", "--rm", "busybox", "date", "+%s", check=True)
    after = time.time()
    assert _restored(done.stderr)
    guest = int(done.stdout)
    assert before - 1 <= guest <= after + 1, (before, guest, after)


@pytest.fixture
def own_root(tmp_path: Path) -> Vmpod:
    """A state directory of the test's own, so that breaking its templates touches no other test."""
    tool = Vmpod(tmp_path / "root")
    tool("import", "--change", 'CMD ["/bin/sh"]', str(BUSYBOX_TAR), "busybox", check=True)
    return tool


def test_damaged_template_is_never_used(own_root: Vmpod) -> None:
    built = own_root("template", "build", check=True).stdout.decode().strip()
    (template,) = _templates(own_root)
    snapshot = own_root.root / "templates" / str(template["ID"]) / "vm.snapshot"
    with open(snapshot, "r+b") as f:  # same size, other bytes: only the digest can tell
        f.seek(snapshot.stat().st_size // 2)
        f.write(os.urandom(4096))
    done = own_root("run", "--rm", "busybox", "echo", "still-works")
    assert (done.returncode, done.stdout) == (0, b"still-works\n"), done.stderr.decode()
    assert b"could not be restored" in done.stderr and b"damaged" in done.stderr
    assert b"booting without a template" in done.stderr
    assert not _templates(own_root), "the damaged template was kept"
    done = own_root("--debug", "run", "--rm", "busybox", "echo", "rebuilt", check=True)
    assert done.stdout == b"rebuilt\n" and _restored(done.stderr)
    assert [t["ID"] for t in _templates(own_root)] == [template["ID"]] and built == str(template["ID"])[:12]
    assert not qemu_processes(own_root.root)


def test_truncated_or_stale_template_is_rebuilt(own_root: Vmpod, tmp_path: Path) -> None:
    kernel = tmp_path / "bzImage"
    info = json.loads(own_root("info", "--format", "json", check=True).stdout)
    shutil.copy(str(info["Kernel"]).split(" (")[0], kernel)
    own_root("run", "--rm", "--kernel", str(kernel), "busybox", "true", check=True)
    (template,) = _templates(own_root)
    snapshot = own_root.root / "templates" / str(template["ID"]) / "vm.snapshot"
    os.truncate(snapshot, snapshot.stat().st_size // 2)
    done = own_root("--debug", "run", "--rm", "--kernel", str(kernel), "busybox", "echo", "again", check=True)
    assert done.stdout == b"again\n" and _restored(done.stderr)
    assert b"could not be restored" not in done.stderr  # a short file is never even tried
    (rebuilt,) = _templates(own_root)
    assert rebuilt["ID"] == template["ID"] and rebuilt["Created"] != template["Created"]

    os.utime(kernel, (time.time() + 10, time.time() + 10))  # a new kernel at the same path
    own_root("run", "--rm", "--kernel", str(kernel), "busybox", "true", check=True)
    (renewed,) = _templates(own_root)  # the stale one is gone: it can never match again
    assert renewed["ID"] != template["ID"], "a changed kernel must get a template of its own"


def test_template_commands(own_root: Vmpod) -> None:
    first = own_root("template", "build", check=True).stdout.decode().strip()
    second = own_root("template", "build", "--network", "none", "-m", "256m", check=True).stdout.decode().strip()
    assert first != second
    table = own_root("template", "ls", check=True).stdout.decode()
    assert table.startswith("TEMPLATE ID") and first in table and second in table
    rows = {str(t["ID"])[:12]: t for t in _templates(own_root)}
    assert rows[second]["MemoryMiB"] == 256 + 64 and rows[first]["Devices"] == "nic"
    assert own_root("template", "build", check=True).stdout.decode().strip() == first  # built once
    usage = own_root("system", "df", check=True).stdout.decode()
    (line,) = [line for line in usage.splitlines() if line.startswith("VM Templates")]
    assert line.split()[2:4] == ["2", "0"] and line.split()[-1].endswith("MB"), usage
    done = own_root("template", "rm", "0000")
    assert done.returncode == 125 and b"no template matches '0000'" in done.stderr
    assert own_root("template", "rm", first, check=True).stdout.decode().strip() == first
    assert [str(t["ID"])[:12] for t in _templates(own_root)] == [second]
    own_root("template", "rm", "--all", check=True)
    assert not _templates(own_root)
    assert own_root("template", "build", "--network", "bridge0").returncode == 125
