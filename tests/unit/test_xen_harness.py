"""The nested Xen harness's own logic (tests/xen/harness.py), without booting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.xen import dom0_checks, harness


def test_the_kernel_command_line_carries_the_checks_and_their_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMPOD_XEN_CHECK_TIMEOUT", "30")
    assert harness._checks_arg(["import_image", "stop"]) == " vmpod.checks=import_image+stop vmpod.check_timeout=30"
    monkeypatch.delenv("VMPOD_XEN_CHECK_TIMEOUT")
    assert harness._checks_arg([]) == ""


@pytest.mark.parametrize("names,limit", [(["a b"], ""), (["x=1"], ""), ([], "1 rm")])
def test_what_would_change_the_command_line_is_refused(
    monkeypatch: pytest.MonkeyPatch, names: list[str], limit: str
) -> None:
    monkeypatch.setenv("VMPOD_XEN_CHECK_TIMEOUT", limit)
    with pytest.raises(RuntimeError):
        harness._checks_arg(names)


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
    every = [name for name, _ in dom0_checks.CHECKS]
    assert harness._failed(outcome, []) == every[1:]  # failed, or never reported (a hang ended the boot)
    assert harness._failed(outcome, ["info_selects_xen"]) == []
