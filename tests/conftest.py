import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nsutil import BACKENDS, our_namespaces  # noqa: E402


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Both firewall backends, for tests that take ``backend`` without parametrizing it."""
    return request.param


@pytest.fixture(scope="module", autouse=True)
def _no_namespace_left_behind():
    yield
    if os.geteuid() == 0:
        assert our_namespaces() == [], "namespaces left behind"


# --- networks conformance summary (tests/test_conformance_networks.py) ---------------

_NETWORK_CONFORMANCE = "test_conformance_networks.py::test_ruleset_matches_libvirt["
_network_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report) -> None:
    """Record one outcome per (case, backend) of the networks conformance test."""
    if _NETWORK_CONFORMANCE not in report.nodeid:
        return
    if hasattr(report, "wasxfail"):
        outcome = "known difference" if report.skipped else "failed"  # strict xpass fails
    elif report.failed:
        outcome = "failed"
    elif report.skipped:
        outcome = "skipped"
    elif report.when == "call":
        outcome = "identical"
    else:
        return
    # a failure in teardown after a passing call still counts as failed
    if _network_outcomes.get(report.nodeid) in (None, "identical"):
        _network_outcomes[report.nodeid] = outcome


def pytest_terminal_summary(terminalreporter) -> None:
    """Print "networks conformance: N/M cases identical" when that test ran."""
    if not _network_outcomes:
        return
    counts: dict[str, int] = {}
    for outcome in _network_outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    others = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()) if what != "identical")
    line = f"networks conformance: {counts.get('identical', 0)}/{len(_network_outcomes)} cases identical"
    terminalreporter.write_line(line + (f" ({others})" if others else ""))
