"""The nested Xen harness's own logic (tests/xen/harness.py), without booting anything."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.xen import dom0_checks, harness


def test_the_kernel_command_line_carries_the_checks_and_their_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMPOD_XEN_CHECK_TIMEOUT", "30")
    assert harness._checks_arg(["import_image", "stop"]) == " vmpod.checks=import_image+stop vmpod.check_timeout=30"
    monkeypatch.delenv("VMPOD_XEN_CHECK_TIMEOUT")
    assert harness._checks_arg([]) == ""
    monkeypatch.setenv("VMPOD_XEN_GUEST_MODE", "pv")
    assert harness._checks_arg([]) == " vmpod.mode=pv"


@pytest.mark.parametrize(
    "names,limit,mode", [(["a b"], "", ""), (["x=1"], "", ""), ([], "1 rm", ""), ([], "", "hvm panic")]
)
def test_what_would_change_the_command_line_is_refused(
    monkeypatch: pytest.MonkeyPatch, names: list[str], limit: str, mode: str
) -> None:
    monkeypatch.setenv("VMPOD_XEN_CHECK_TIMEOUT", limit)
    monkeypatch.setenv("VMPOD_XEN_GUEST_MODE", mode)
    with pytest.raises(RuntimeError):
        harness._checks_arg(names)


def test_xen_switches_fpu_state_eagerly_and_more_options_come_last(monkeypatch: pytest.MonkeyPatch) -> None:
    files = [Path(f"/x/{n}") for n in ("xen.elf", "vmlinuz", "dom0.cpio", "console.log")]
    argv = harness.qemu_argv(*files, [])
    assert "spec-ctrl=eager-fpu" in argv[argv.index("-append") + 1].split()
    monkeypatch.setattr(harness, "XEN_ARGS", "spec-ctrl=eager-fpu=0")  # Xen takes an option's last value
    argv = harness.qemu_argv(*files, [])
    assert argv[argv.index("-append") + 1].endswith(" spec-ctrl=eager-fpu=0")


def test_console_lines_become_results_and_diagnoses() -> None:
    outcome = harness.Outcome(Path("console.log"))
    for line in [
        "[  1.0] VMPOD-XEN READY 12.5\r\r",
        'VMPOD-XEN CHECK {"name": "import_image", "ok": true, "detail": "", "seconds": 1.5}\r\r',
        'VMPOD-XEN DIAG {"name": "stop", "diag": "domains: []"}\r\r',
        "VMPOD-XEN DONE 1\r\r",
        "unrelated kernel noise",
    ]:
        harness._note(outcome, line, 0.0)
    assert outcome.ready_s is not None
    assert outcome.checks["import_image"]["ok"] is True
    assert outcome.errors == ['DIAG {"name": "stop", "diag": "domains: []"}']
    assert outcome.done == 1


def test_every_check_that_did_not_pass_is_rerun() -> None:
    outcome = harness.Outcome(Path("console.log"))
    outcome.checks = {"info_selects_xen": {"ok": True}, "import_image": {"ok": False}}
    every = dom0_checks.regular_checks()
    assert harness._failed(outcome, []) == every[1:]  # failed, or never reported (a hang ended the boot)
    assert harness._failed(outcome, ["info_selects_xen"]) == []


def test_the_guests_logs_come_back_from_the_log_disk_and_nothing_else(tmp_path: Path) -> None:
    disk = tmp_path / "console-1.guests.img"
    with tarfile.open(disk, "w") as archive:
        for name, data in [
            ("kept/stop_kills/guest-vmpod-1.log", b"[    0.0] Linux version\n"),
            ("kept/../../escaped.log", b"x"),
            ("kept/shallow.log", b"x"),
        ]:
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
        link = tarfile.TarInfo("kept/stop_kills/link.log")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    with disk.open("ab") as f:  # what an earlier, longer archive left on the disk
        f.write(b"stale bytes" * 1000)
    dest = tmp_path / "console-1.guests"
    harness.unpack_guest_logs(disk, dest)
    assert [p.relative_to(dest).as_posix() for p in sorted(dest.rglob("*"))] == [
        "stop_kills",
        "stop_kills/guest-vmpod-1.log",
    ]
    assert (dest / "stop_kills" / "guest-vmpod-1.log").read_bytes() == b"[    0.0] Linux version\n"
    assert not (tmp_path / "escaped.log").exists()


def test_a_log_disk_dom0_never_wrote_gives_no_logs(tmp_path: Path) -> None:
    disk = tmp_path / "console-1.guests.img"
    disk.write_bytes(bytes(harness.LOG_DISK_BYTES // 1024))
    harness.unpack_guest_logs(disk, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_diagnostics_run_only_when_named() -> None:
    assert {"stdin_soak", "channel_echo_without_vmpod"} <= dom0_checks.DIAGNOSTICS
    assert harness._failed(harness.Outcome(Path("console.log")), ["stdin_soak"]) == ["stdin_soak"]


def test_the_echo_domains_initramfs_is_a_cpio_the_kernel_reads(tmp_path: Path) -> None:
    archive = dom0_checks.newc(
        [("bin", 0o40755, b""), ("init", 0o100755, b"#!/bin/sh\n"), ("bin/x", 0o100755, b"abcde")]
    )
    listing = subprocess.run(["cpio", "-it"], input=archive, capture_output=True, check=True)
    assert listing.stdout.decode().split() == ["bin", "init", "bin/x"]
    unpacked = subprocess.run(["cpio", "-i", "--to-stdout", "bin/x"], input=archive, capture_output=True, check=True)
    assert unpacked.stdout == b"abcde"


def test_a_soaks_differences_are_named_as_runs() -> None:
    sent = bytes(256)
    got = bytearray(sent)
    got[64:128] = b"\xff" * 64
    got[200] = 1
    assert dom0_checks._differences(sent, bytes(got)) == f"changed ['0x40+64', '0xc8+1'], first bytes {'ff' * 32}"
    assert dom0_checks._differences(sent, sent[:10]) == "10 of 256 bytes came back"
