"""Unit tests never change a real firewall: a changing tool call through ``Runner`` (a
batch file or a command run for a change) fails the test unless the tool is a stand-in a
test put in a temporary folder. Every unit test's runner is a fake; this catches a fake
that misses a method (``run_file``, say), which would otherwise reach the host's nft."""

from __future__ import annotations

import tempfile

import pytest

from virtfw.errors import VirtfwError
from virtfw.rules.runner import Runner


def _stand_in(runner: Runner, tool: str) -> bool:
    try:
        path = runner.which(tool)
    except VirtfwError:
        return True  # not installed: nothing can run
    return path.startswith(tempfile.gettempdir() + "/")


@pytest.fixture(autouse=True)
def _no_real_firewall_change(monkeypatch) -> None:
    real_run, real_passing = Runner.run, Runner._run_passing

    def run(self, argv, *, stdin=None, change=True, check=True, quiet=False):
        if change and not self.dry_run and type(self).run is run and not _stand_in(self, argv[0]):
            pytest.fail(f"a unit test ran a real {argv[0]} to change something: {argv}")
        return real_run(self, argv, stdin=stdin, change=change, check=check, quiet=quiet)

    def passing(self, argv, path, fd):
        if not _stand_in(self, argv[0]):
            pytest.fail(f"a unit test ran a real {argv[0]} with a batch file: {argv}")
        return real_passing(self, argv, path, fd)

    monkeypatch.setattr(Runner, "run", run)
    monkeypatch.setattr(Runner, "_run_passing", passing)
