"""`vmpod --driver xen` end to end, in a Xen dom0 nested under QEMU TCG (`make test-xen`).

One boot of the nested machine runs every check of dom0_checks.py (the user-level checks of
tests/integration/test_run.py and test_lifecycle.py); each test here asserts on one check's result.
Consoles: build/xen/console-*.log; each guest's logs: build/xen/console-*.guests/<check>/.
"""

from __future__ import annotations

import warnings

import pytest

from tests.xen import dom0_checks, harness

pytestmark = pytest.mark.integration

NAMES = dom0_checks.regular_checks()


def test_dom0_boots_and_runs_the_checks(nested_xen: harness.Outcome) -> None:
    assert nested_xen.ready_s is not None, f"dom0 never came up: {nested_xen.errors}; see {nested_xen.console}"
    assert nested_xen.done is not None, f"the checks never finished: {nested_xen.errors}; see {nested_xen.console}"


@pytest.mark.parametrize("name", NAMES)
def test_check(nested_xen: harness.Outcome, name: str) -> None:
    result = nested_xen.checks.get(name)
    assert result is not None, f"check {name} reported nothing (see {nested_xen.console})"
    assert result["ok"], f"{name}: {result['detail']} (see {nested_xen.console})"
    if name in nested_xen.rerun:  # shown in pytest's summary, so a flaky check is seen, not hidden
        warnings.warn(f"{name} {result['detail']}", stacklevel=1)
