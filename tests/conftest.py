"""Shared fixtures and the conformance summary lines, for every group of tests.

The tests are grouped by what they need: ``unit/`` (no root, no kernel tools),
``netns/`` (root: real tools in namespaces they create), ``conformance/`` (libvirt's
test cases, in namespaces), ``vm/`` (stock-kernel VMs, to come). Shared helpers are the
package ``helpers`` (``tests/helpers/``; pyproject.toml puts ``tests/`` on the path).
"""

import os

import pytest
from helpers.nsutil import BACKENDS, CONFORMANCE_NOTES, SHARED_ABSENT, our_namespaces

_skipped_for_shared: list[str] = []


def pytest_collection_modifyitems(items) -> None:
    """Without ../shared, the tests marked ``shared`` are skipped with the reason."""
    if SHARED_ABSENT is None:
        return
    for item in items:
        if item.get_closest_marker("shared"):
            item.add_marker(pytest.mark.skip(reason=SHARED_ABSENT))
            _skipped_for_shared.append(item.nodeid)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Both firewall backends, for tests that take ``backend`` without parametrizing it."""
    return request.param


@pytest.fixture(scope="module", autouse=True)
def _no_namespace_left_behind():
    yield
    if os.geteuid() == 0:
        assert our_namespaces() == [], "namespaces left behind"


# --- conformance summaries: "networks conformance: N/M cases identical" -----------------

_CONFORMANCE = {
    "test_conformance_networks.py::test_ruleset_matches_libvirt[": "networks conformance",
    "test_conformance_nwfilter.py::test_ruleset_matches_libvirt[": "nwfilter conformance",
}
_outcomes: dict[str, dict[str, str]] = {}


def pytest_runtest_logreport(report) -> None:
    """Record one outcome per case of each conformance test."""
    label = next((label for key, label in _CONFORMANCE.items() if key in report.nodeid), None)
    if label is None:
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
    seen = _outcomes.setdefault(label, {})
    # a failure in teardown after a passing call still counts as failed
    if seen.get(report.nodeid) in (None, "identical"):
        seen[report.nodeid] = outcome


def pytest_terminal_summary(terminalreporter) -> None:
    if _skipped_for_shared:
        terminalreporter.write_line(f"{len(_skipped_for_shared)} tests skipped: {SHARED_ABSENT}")
    for label, seen in _outcomes.items():
        counts: dict[str, int] = {}
        for outcome in seen.values():
            counts[outcome] = counts.get(outcome, 0) + 1
        others = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()) if what != "identical")
        line = f"{label}: {counts.get('identical', 0)}/{len(seen)} cases identical"
        note = CONFORMANCE_NOTES.get(label)
        terminalreporter.write_line(line + (f" ({others})" if others else "") + (f" [{note}]" if note else ""))
