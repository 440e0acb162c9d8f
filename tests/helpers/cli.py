"""Running the command line in tests, and checking what it answered and what it changed.

A refused request must exit 1 with exactly one stderr line starting ``error: `` that
names the problem, print no traceback, and change nothing (``tree`` of the config and
state dirs before and after). Taking the state dir's ``lock`` is not counted as a
change: it is how concurrent invocations serialize, holds no data, and a command may
need it to find out that it has to refuse.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from helpers.nsutil import ROOT, run, virtfw_argv

#: Never let a test fall into an interactive editor.
NO_EDITOR = {"VISUAL": "", "EDITOR": "false"}


def tree(root: Path) -> dict[str, tuple[str, object]]:
    """Every entry under ROOT: kind and content (bytes, link target) or permission bits.

    A missing ROOT is empty. The state dir's ``lock`` is skipped (see the module docstring).
    """
    entries: dict[str, tuple[str, object]] = {}
    if not root.exists():
        return entries
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel == "lock":
            continue
        if path.is_symlink():
            entries[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            entries[rel] = ("dir", stat.S_IMODE(path.stat().st_mode))
        else:
            entries[rel] = ("file", path.read_bytes())
    return entries


def show(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"


def assert_refused(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 1, one ``error:`` line on stderr that mentions every needle, no traceback."""
    assert proc.returncode == 1, show(proc)
    assert "Traceback" not in proc.stdout + proc.stderr, show(proc)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"stderr must be one 'error: ' line\n{show(proc)}"
    assert "internal error" not in lines[0], f"an unexpected exception reached the user\n{show(proc)}"
    missing = [needle for needle in needles if needle not in lines[0]]
    assert not missing, f"the message does not mention {missing}\n{show(proc)}"
    return lines[0]


def assert_ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, show(proc)
    assert "Traceback" not in proc.stderr, show(proc)
    return proc


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


class Cli:
    """virtfw with its own config/state dirs; inside a private namespace when root, so
    nothing it might do to a firewall can reach the root namespace's."""

    def __init__(self, tmp: Path, ns=None, backend: str | None = None) -> None:
        self.config_dir = tmp / "etc"
        self.state_dir = tmp / "run"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.ns = ns
        self.backend = backend

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        argv = virtfw_argv(*args, config_dir=self.config_dir, state_dir=self.state_dir, backend=self.backend)
        argv = ["env", f"PYTHONPATH={ROOT}", *argv]
        if self.ns is not None:
            argv = ["ip", "netns", "exec", self.ns.name, *argv]
        return run(argv, check=check, timeout=60)
