"""README's two commands: what CI runs, and true on a stock Debian/Ubuntu python.

CI runs exactly the README's test command (``.ci/run``); a newcomer on a stock system
python cannot ``pip install`` outside a virtualenv (PEP 668), and a clone of the project
has nothing beside it, so the docs may name only the project's own files.
"""

import re
import shlex

from helpers.nsutil import ROOT

README = (ROOT / "README.md").read_text()
TRY_IT = "## Try it (fresh Debian/Ubuntu machine, as root)"
RUN_TESTS = "## Run the tests (as root: they create network namespaces)"


def _command_after(heading: str) -> str:
    """The one line of the first ``sh`` block below ``heading``."""
    section = README.split(f"\n{heading}\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("\n```", 1)[0]
    lines = block.splitlines()
    assert len(lines) == 1, f"the command under {heading!r} is not one line"
    return lines[0]


def _pip_calls(command: str) -> list[list[str]]:
    """Each ``pip`` run of a command line (``pip``, ``pip3`` or ``python -m pip``)."""
    steps = [shlex.split(step) for step in command.split(" && sh -c ", 1)[0].split(" && ")]
    return [s for s in steps if s and (s[0].rsplit("/", 1)[-1] in ("pip", "pip3") or s[1:3] == ["-m", "pip"])]


def test_ci_runs_the_readmes_test_command() -> None:
    command = _command_after(RUN_TESTS)
    ci = (ROOT / ".ci" / "run").read_text()
    found = re.search(r'^README_TEST_COMMAND="(.*)"$', ci, re.MULTILINE)
    assert found, ".ci/run holds no README_TEST_COMMAND"
    assert found.group(1) == command
    assert 'bash -c "$README_TEST_COMMAND"' in ci


def test_commands_install_into_a_virtualenv() -> None:
    for heading in (TRY_IT, RUN_TESTS):
        command = _command_after(heading)
        assert "python3-venv" in command and "python3 -m venv /opt/virtfw" in command, heading
        pips = _pip_calls(command)
        assert pips, f"no pip install under {heading!r}"
        for call in pips:
            assert call[0] == "/opt/virtfw/bin/pip", f"{' '.join(call)}: a pip outside the virtualenv (PEP 668)"
    test_command = _command_after(RUN_TESTS)
    assert "'.[test]'" in test_command, "the tests' dependencies are not installed"
    assert test_command.endswith("/opt/virtfw/bin/python -m pytest -q tests")


def test_docs_name_only_the_projects_files() -> None:
    pages = {"README.md": README} | {f"man/{p.name}": p.read_text() for p in (ROOT / "man").iterdir()}
    for name, text in pages.items():
        assert "../" not in text, f"{name} points outside the project"
        assert "shared/docs" not in text and "libvirt-testdata" not in text, name
