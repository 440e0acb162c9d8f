"""Fault injection shared by the rollback tests of networks and of filter bindings.

A PATH directory of wrappers in front of every firewall tool counts each call and
can make the Nth one fail or stall, so a test can break a command at every step and
check that it rolls back, or SIGKILL it at a chosen instant and check the cleanup.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

WRAPPED = (
    "nft", "iptables", "ip6tables", "ebtables",
    "iptables-save", "ip6tables-save", "ebtables-save",
    "iptables-restore", "ip6tables-restore", "ebtables-restore",
    "iptables-nft", "ip6tables-nft", "ebtables-nft",
    "iptables-nft-save", "ip6tables-nft-save", "ebtables-nft-save",
    "iptables-nft-restore", "ip6tables-nft-restore", "ebtables-nft-restore",
    "iptables-legacy", "ip6tables-legacy", "iptables-legacy-save", "iptables-legacy-restore",
    "ip6tables-legacy-save", "ip6tables-legacy-restore", "ebtables-legacy",
)  # fmt: skip
SLEEP = 4  # seconds a delayed wrapper sleeps; the test kills long before it ends

WRAPPER = r"""#!/bin/sh
# virtfw rollback test: wrapper for {tool}.
# Counts every call in the shared counter, logs it, and fails or delays the chosen one.
D={dir}
REAL={real}
exec 9>>"$D/lock"
flock 9
n=$(cat "$D/count" 2>/dev/null)
n=$(( ${{n:-0}} + 1 ))
echo "$n" > "$D/count"
printf '%s\t%s\n' "$n" "{tool} $*" >> "$D/log"
flock -u 9
exec 9>&-
if [ "$n" = "$(cat "$D/fail_at")" ]; then
    echo "injected failure of {tool} (call $n)" >&2
    exit 1
fi
if [ "$n" = "$(cat "$D/sleep_before")" ]; then
    echo "$n before" > "$D/marker.tmp" && mv "$D/marker.tmp" "$D/marker"
    sleep {sleep}
fi
if [ "$n" = "$(cat "$D/sleep_after")" ]; then
    "$REAL" "$@"
    rc=$?
    echo "$n after $rc" > "$D/marker.tmp" && mv "$D/marker.tmp" "$D/marker"
    sleep {sleep}
    exit $rc
fi
exec "$REAL" "$@"
"""


class Wrappers:
    """The wrapper directory: ``arm()`` chooses what the next run's calls do."""

    def __init__(self, root: Path) -> None:
        self.dir = root
        self.bin = root / "bin"
        self.tmp = root / "tmp"  # virtfw's TMPDIR: batch files of a killed run land here
        self.bin.mkdir(parents=True)
        self.tmp.mkdir()
        original = os.environ["PATH"]
        self.real: dict[str, str] = {}
        for tool in WRAPPED:
            found = subprocess.run(
                ["sh", "-c", 'command -v "$1"', "sh", tool],
                capture_output=True, text=True, env={**os.environ, "PATH": original}, check=False,
            ).stdout.strip()  # fmt: skip
            if not found.startswith("/"):
                continue  # not installed: virtfw will not find it either
            self.real[tool] = found
            path = self.bin / tool
            path.write_text(WRAPPER.format(
                tool=tool, dir=shlex.quote(str(root)), real=shlex.quote(found), sleep=SLEEP,
            ))  # fmt: skip
            path.chmod(0o755)
        assert "nft" in self.real, "nft is needed"
        self.env = {"PATH": f"{self.bin}:{original}", "TMPDIR": str(self.tmp)}
        self.arm()

    def arm(self, *, fail_at: int = 0, sleep_before: int = 0, sleep_after: int = 0) -> None:
        for name, value in (("fail_at", fail_at), ("sleep_before", sleep_before), ("sleep_after", sleep_after)):
            (self.dir / name).write_text(f"{value}\n")
        for name in ("count", "log", "marker", "marker.tmp"):
            (self.dir / name).unlink(missing_ok=True)

    def calls(self) -> list[str]:
        """The calls of the last run, in order: call N is ``calls()[N - 1]``."""
        log = self.dir / "log"
        if not log.exists():
            return []
        out = []
        for line in log.read_text().splitlines():
            _, _, call = line.partition("\t")
            out.append(call.replace(str(self.tmp), "$TMPDIR"))
        return out

    def marker(self) -> str | None:
        try:
            return (self.dir / "marker").read_text().strip()
        except FileNotFoundError:
            return None


@dataclass
class Instant:
    label: str
    sleep_before: int = 0
    sleep_after: int = 0
    poll_status: bool = False  # kill as soon as the status (intent) file exists


def group_alive(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def error_problems(proc: subprocess.CompletedProcess) -> list[str]:
    """What is wrong with the stderr of a refused command (contract: one error line)."""
    problems = []
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if proc.returncode != 1:
        problems.append(f"exit status {proc.returncode}, expected 1")
    if "Traceback" in proc.stderr:
        problems.append("a Python traceback on stderr")
    if len(lines) != 1 or not lines[0].startswith("error: "):
        problems.append(f"stderr is not exactly one 'error: ' line: {proc.stderr!r}")
    if "internal error" in proc.stderr:
        problems.append(f"an internal error instead of a reasoned one: {proc.stderr.strip()!r}")
    return problems


def describe(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}; stdout {proc.stdout.strip()!r}; stderr {proc.stderr.strip()!r}"
