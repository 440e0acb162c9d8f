"""A failed or killed command leaves the firewall, the links and the status files as they were.

Two kinds of trouble, both inside namespaces created here and deleted afterwards
(nothing touches the root namespace's firewall or links):

Fault injection
    A directory of wrappers named like the firewall tools (nft, iptables, ...,
    tc) is put first on virtfw's PATH. Every wrapper counts its call in one
    shared counter file and either execs the real tool (absolute path found with
    ``command -v`` on the original PATH) or, for the chosen Nth call, exits 1
    with a message on stderr. A successful run is counted first (K calls); then
    every N in 1..K gets a fresh namespace and state dir, a snapshot, the run
    with call N failing, and the contract check:

    * exit 1, one ``error:`` line, no traceback, and the ruleset, links and
      status files exactly as in the snapshot; or
    * exit 0 (the failed call was a query whose failure is tolerated): then the
      network is active with the same rules and links as a clean run, and a
      plain net-destroy brings back the snapshot exactly.

    net-destroy gets the same treatment: with call N of the teardown failing it
    either succeeds (snapshot of before the start restored) or a second, plain
    net-destroy succeeds and restores it.

SIGKILL
    The wrapper of a chosen call sleeps before (or after) running the real tool
    and drops a marker file; the test then SIGKILLs virtfw's whole process group
    (the python process and the wrapper) at that instant, and a plain
    ``net-destroy NAME`` must exit 0 and bring back the snapshot of before the
    start.

All failures of one test are collected (each with N, the failing call, the
scenario and a diff) so one run reports every case.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.faults import Instant, Wrappers, describe, error_problems, group_alive
from helpers.nsutil import TESTDATA, Netns, Virtfw, netns, normalize_nft, ruleset, run, virtfw_argv

pytestmark = pytest.mark.netns

BACKENDS = ("nftables", "iptables")
NS_PREFIX = "vfwr"
WAIT = 20  # bound on every wait for a marker or a process

NAT_IPV6 = TESTDATA / "networkxml2firewalldata" / "nat-ipv6.xml"

SECOND_XML = """<network>
  <name>second</name>
  <bridge name="virbr1" stp="on" delay="0"/>
  <forward mode="nat"/>
  <ip address="192.168.100.1" netmask="255.255.255.0"/>
</network>
"""

# ---------------------------------------------------------------------------
# wrappers


# ---------------------------------------------------------------------------
# scenarios


@dataclass
class Scenario:
    key: str
    title: str
    name: str  # the network the action starts
    action: Callable[[Virtfw], list[str]]
    prepare: Callable[[Virtfw], None] = lambda vf: None
    other: str | None = None  # a network prepare() leaves active


def _prepare_second(vf: Virtfw) -> None:
    networks = vf.config_dir / "networks"
    networks.mkdir(parents=True, exist_ok=True)
    (networks / "second.xml").write_text(SECOND_XML)
    vf("net-start", "default")  # base chains/tables exist before the action


SCENARIOS = {
    "a": Scenario("a", "net-start default on a clean namespace", "default", lambda vf: ["net-start", "default"]),
    "b": Scenario(
        "b",
        "net-start second while default is active",
        "second",
        lambda vf: ["net-start", "second"],
        _prepare_second,
        other="default",
    ),
    "c": Scenario("c", "net-create nat-ipv6.xml (dual stack)", "default", lambda vf: ["net-create", str(NAT_IPV6)]),
}


# ---------------------------------------------------------------------------
# snapshots


_MAC = re.compile(r"\b[0-9a-f]{2}(?::[0-9a-f]{2}){5}\b")
_LINK_LOCAL = re.compile(r"\bfe80::[0-9a-f:]+/64\b")  # derived from the (random) bridge MAC


def snapshot(ns: Netns, vf: Virtfw, backend: str) -> dict[str, object]:
    """Everything a command may change: rules, links, addresses, status files."""
    snap: dict[str, object] = {"nft list ruleset": normalize_nft(ns.sh("nft", "list", "ruleset"))}
    if backend == "iptables":
        snap["iptables-save"] = ruleset(ns, "iptables")
    snap["ip -br link"] = ns.sh("ip", "-br", "link")
    snap["ip -br addr"] = ns.sh("ip", "-br", "addr")
    files = {}
    if vf.state_dir.exists():
        for path in sorted(vf.state_dir.rglob("*")):
            if path.is_file() and path.name != "lock":
                files[str(path.relative_to(vf.state_dir))] = path.read_text()
    snap["state files"] = files
    return snap


def live_part(snap: dict[str, object]) -> dict[str, object]:
    """Rules and links only, bridge MACs masked: comparable across namespaces."""
    out = {k: v for k, v in snap.items() if k != "state files"}
    out["ip -br link"] = _MAC.sub("<mac>", str(out["ip -br link"]))
    out["ip -br addr"] = _LINK_LOCAL.sub("<link-local>", str(out["ip -br addr"]))
    return out


def _diff_text(label: str, old: str, new: str, limit: int = 80, names: tuple[str, str] = ("before", "after")) -> str:
    lines = list(difflib.unified_diff(
        old.splitlines(), new.splitlines(), f"{names[0]}: {label}", f"{names[1]}: {label}", lineterm="", n=2,
    ))  # fmt: skip
    if len(lines) > limit:
        lines = lines[:limit] + [f"... ({len(lines) - limit} more diff lines)"]
    return "\n".join(lines)


def diff(expected: dict[str, object], actual: dict[str, object], names: tuple[str, str] = ("before", "after")) -> str:
    """Empty when equal; otherwise a unified diff per differing part."""
    parts = []
    for key in expected.keys() | actual.keys():
        old, new = expected.get(key), actual.get(key)
        if old == new:
            continue
        if isinstance(old, dict) or isinstance(new, dict):
            old, new = old or {}, new or {}
            for path in sorted(old.keys() | new.keys()):
                if path not in new:
                    parts.append(f"state file {path}: removed (was {len(old[path])} bytes)")
                elif path not in old:
                    parts.append(f"state file {path}: appeared:\n{new[path].rstrip()}")
                elif old[path] != new[path]:
                    parts.append(_diff_text(f"state {path}", old[path], new[path], names=names))
        else:
            parts.append(_diff_text(key, str(old or ""), str(new or ""), names=names))
    return "\n".join(parts)


def status_state(vf: Virtfw, name: str) -> str | None:
    path = vf.state_dir / "networks" / f"{name}.json"
    try:
        return json.loads(path.read_text()).get("state")
    except (OSError, ValueError) as exc:
        return f"<unreadable: {exc}>"


# ---------------------------------------------------------------------------
# fixtures


def _our_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    mine = re.compile(rf"^{NS_PREFIX}{os.getpid()}x")
    return [line.split()[0] for line in out.splitlines() if line.strip() and mine.match(line.split()[0])]


@pytest.fixture(scope="module", autouse=True)
def _no_namespace_left_behind():
    yield
    assert _our_namespaces() == [], "namespaces left behind"


@pytest.fixture
def wrappers(tmp_path) -> Wrappers:
    return Wrappers(tmp_path / "wrap")


class Workspace:
    """A fresh namespace with its own config and state dirs, one per case."""

    def __init__(self, tmp_path: Path, backend: str) -> None:
        self.tmp_path = tmp_path
        self.backend = backend
        self.count = 0

    def fresh(self, label: str):
        self.count += 1
        return _fresh(self.tmp_path / f"{self.count:03d}-{label}", self.backend)


class _fresh:
    def __init__(self, root: Path, backend: str) -> None:
        self.root, self.backend = root, backend

    def __enter__(self) -> tuple[Netns, Virtfw]:
        self._cm = netns(NS_PREFIX)
        ns = self._cm.__enter__()
        return ns, Virtfw(ns, self.root, self.backend)

    def __exit__(self, *exc) -> None:
        self._cm.__exit__(*exc)


# ---------------------------------------------------------------------------
# the clean run every case is measured against


@dataclass
class Baseline:
    start_calls: list[str]
    destroy_calls: list[str]
    started: dict[str, object]  # live_part of the snapshot after a clean start


def baseline(ws: Workspace, wrap: Wrappers, sc: Scenario) -> Baseline:
    """Run the scenario once with every call passing through: count the calls."""
    with ws.fresh("count") as (ns, vf):
        sc.prepare(vf)
        before = snapshot(ns, vf, ws.backend)
        wrap.arm()
        proc = vf(*sc.action(vf), check=False, env=wrap.env)
        assert proc.returncode == 0, f"clean run failed: {describe(proc)}"
        start_calls = wrap.calls()
        started = snapshot(ns, vf, ws.backend)
        assert status_state(vf, sc.name) == "active"
        wrap.arm()
        proc = vf("net-destroy", sc.name, check=False, env=wrap.env)
        assert proc.returncode == 0, f"clean net-destroy failed: {describe(proc)}"
        destroy_calls = wrap.calls()
        d = diff(before, snapshot(ns, vf, ws.backend))
        assert not d, f"a clean start + destroy does not restore the snapshot:\n{d}"
    assert start_calls, "the wrappers saw no call: is PATH passed through?"
    return Baseline(start_calls, destroy_calls, live_part(started))


def _case(backend: str, sc: Scenario, what: str, n: int, calls: list[str]) -> str:
    call = calls[n - 1] if 0 < n <= len(calls) else "(not reached)"
    return f"[{backend} / {sc.key}: {sc.title}] {what} N={n} failing call: {call}"


# ---------------------------------------------------------------------------
# 1. fault injection


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_start_rolls_back_on_any_tool_failure(tmp_path, wrappers, backend, scenario):
    sc = SCENARIOS[scenario]
    ws = Workspace(tmp_path, backend)
    base = baseline(ws, wrappers, sc)
    failures: list[str] = []
    for n in range(1, len(base.start_calls) + 1):
        with ws.fresh(f"start-fail{n}") as (ns, vf):
            sc.prepare(vf)
            before = snapshot(ns, vf, backend)
            wrappers.arm(fail_at=n)
            proc = vf(*sc.action(vf), check=False, env=wrappers.env)
            calls = wrappers.calls()
            case = _case(backend, sc, "start", n, calls)
            after = snapshot(ns, vf, backend)
            if proc.returncode == 1:
                problems = error_problems(proc)
                d = diff(before, after)
                if d:
                    problems.append(f"not rolled back to the snapshot:\n{d}")
                if problems:
                    failures.append(f"{case}\n  {describe(proc)}\n  " + "\n  ".join(problems))
            elif proc.returncode == 0:
                problems = []
                state = status_state(vf, sc.name)
                if state != "active":
                    problems.append(f"exit 0 but network status is {state!r}")
                d = diff(base.started, live_part(after), names=("clean run", "this run"))
                if d:
                    problems.append(f"exit 0 but the rules/links differ from a clean run:\n{d}")
                destroy = vf("net-destroy", sc.name, check=False)
                if destroy.returncode != 0:
                    problems.append(f"net-destroy after it: {describe(destroy)}")
                d = diff(before, snapshot(ns, vf, backend))
                if d:
                    problems.append(f"net-destroy after it does not restore the snapshot:\n{d}")
                if problems:
                    failures.append(f"{case}\n  (virtfw exited 0)\n  " + "\n  ".join(problems))
            else:
                failures.append(f"{case}\n  unexpected exit status: {describe(proc)}")
    assert not failures, f"{len(failures)} of {len(base.start_calls)} injected failures mishandled:\n\n" + "\n\n".join(
        failures
    )


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_destroy_survives_any_tool_failure(tmp_path, wrappers, backend, scenario):
    sc = SCENARIOS[scenario]
    ws = Workspace(tmp_path, backend)
    base = baseline(ws, wrappers, sc)
    failures: list[str] = []
    for n in range(1, len(base.destroy_calls) + 1):
        with ws.fresh(f"destroy-fail{n}") as (ns, vf):
            sc.prepare(vf)
            before = snapshot(ns, vf, backend)
            vf(*sc.action(vf))
            wrappers.arm(fail_at=n)
            proc = vf("net-destroy", sc.name, check=False, env=wrappers.env)
            case = _case(backend, sc, "net-destroy", n, wrappers.calls())
            problems = []
            if proc.returncode == 0:
                d = diff(before, snapshot(ns, vf, backend))
                if d:
                    problems.append(f"net-destroy exited 0 but did not restore the pre-start snapshot:\n{d}")
            elif proc.returncode == 1:
                problems += error_problems(proc)
                again = vf("net-destroy", sc.name, check=False)
                if again.returncode != 0:
                    problems.append(f"second (plain) net-destroy: {describe(again)}")
                d = diff(before, snapshot(ns, vf, backend))
                if d:
                    problems.append(f"after the second net-destroy, not the pre-start snapshot:\n{d}")
            else:
                problems.append("unexpected exit status")
            if problems:
                failures.append(f"{case}\n  first net-destroy: {describe(proc)}\n  " + "\n  ".join(problems))
    assert not failures, (
        f"{len(failures)} of {len(base.destroy_calls)} injected failures mishandled:\n\n" + "\n\n".join(failures)
    )


# ---------------------------------------------------------------------------
# 2. SIGKILL


def _is_batch(call: str) -> bool:
    words = call.split()
    if words[0] == "nft":
        return "-f" in words and "list" not in words
    return words[0].endswith("-restore")


def instants(calls: list[str]) -> list[Instant]:
    found = [
        Instant("as soon as the status intent file exists (polled)", poll_status=True),
        Instant(f"before call 1 ({calls[0]}), before any batch", sleep_before=1),
    ]
    for i, call in enumerate(calls, start=1):
        if _is_batch(call):
            found.append(Instant(f"before batch call {i} ({call}) runs the real tool", sleep_before=i))
            found.append(Instant(f"after batch call {i} ({call}) succeeded, before virtfw records it", sleep_after=i))
    return found


def kill_at(ns: Netns, vf: Virtfw, wrap: Wrappers, args: list[str], name: str, instant: Instant) -> str | None:
    """Start virtfw in the background, SIGKILL its process group at ``instant``.

    Returns a problem description if the instant was never reached.
    """
    wrap.arm(sleep_before=instant.sleep_before, sleep_after=instant.sleep_after)
    argv = ["env", *(f"{k}={v}" for k, v in wrap.env.items()), "ip", "netns", "exec", ns.name]
    argv += virtfw_argv(*args, config_dir=vf.config_dir, state_dir=vf.state_dir, backend=vf.backend)
    out = vf.config_dir.parent / "killed.out"
    with open(out, "w") as sink:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, start_new_session=True)
    status_file = vf.state_dir / "networks" / f"{name}.json"
    deadline = time.monotonic() + WAIT
    problem = None
    try:
        while True:
            if instant.poll_status and status_file.exists():
                break
            if not instant.poll_status and wrap.marker():
                break
            if proc.poll() is not None:
                problem = f"virtfw finished ({proc.returncode}) before the instant: {out.read_text()!r}"
                break
            if time.monotonic() > deadline:
                problem = "instant not reached in time"
                break
            time.sleep(0.0005 if instant.poll_status else 0.01)
        if problem is None:
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(b"\0", b" ")
            assert b"virtfw" in cmdline, f"process {proc.pid} is not virtfw: {cmdline!r}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the python process and its wrapper children
        proc.wait(timeout=WAIT)
        deadline = time.monotonic() + WAIT
        while group_alive(proc.pid):
            assert time.monotonic() < deadline, f"process group {proc.pid} still alive: {group_alive(proc.pid)}"
            time.sleep(0.01)
    if problem is None and proc.returncode != -signal.SIGKILL:
        problem = f"virtfw was not killed (exit {proc.returncode})"
    marker = wrap.marker()
    if problem is None and marker and marker.split()[1] == "after" and marker.split()[2] != "0":
        problem = f"the delayed real tool failed: {marker}"
    return problem


KILL_SCENARIOS = ("a", "b")


@pytest.mark.parametrize("scenario", KILL_SCENARIOS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_destroy_cleans_up_after_sigkill(tmp_path, wrappers, backend, scenario):
    sc = SCENARIOS[scenario]
    ws = Workspace(tmp_path, backend)
    base = baseline(ws, wrappers, sc)
    failures: list[str] = []
    for instant in instants(base.start_calls):
        with ws.fresh("kill") as (ns, vf):
            clean = snapshot(ns, vf, backend)
            sc.prepare(vf)
            before = snapshot(ns, vf, backend)
            case = f"[{backend} / {sc.key}: {sc.title}] SIGKILL {instant.label}"
            problem = kill_at(ns, vf, wrappers, sc.action(vf), sc.name, instant)
            if problem:
                failures.append(f"{case}\n  test could not kill at that instant: {problem}")
                continue
            proc = vf("net-destroy", sc.name, check=False)
            problems = []
            if proc.returncode != 0:
                problems.append(f"net-destroy after the kill: {describe(proc)}")
            after = snapshot(ns, vf, backend)
            if sc.other:
                # Another network stays active: cleaning up may rebuild our tables, which
                # re-records its handles. Its status must otherwise be unchanged, and
                # destroying it too must then bring back the clean namespace exactly.
                old_files, new_files = before.pop("state files"), after.pop("state files")
                if sorted(old_files) != sorted(new_files):
                    problems.append(f"state files differ: {sorted(old_files)} -> {sorted(new_files)}")
                for path in set(old_files) & set(new_files):
                    if path.startswith("networks/"):
                        old, new = json.loads(old_files[path]), json.loads(new_files[path])
                        old.pop("firewall", None), new.pop("firewall", None)
                        if old != new:
                            problems.append(
                                _diff_text(
                                    f"state {path} (without 'firewall')",
                                    json.dumps(old, indent=1, sort_keys=True),
                                    json.dumps(new, indent=1, sort_keys=True),
                                )
                            )
            d = diff(before, after)
            if d:
                problems.append(f"not the pre-start snapshot after net-destroy:\n{d}")
            if sc.other and not problems:
                proc = vf("net-destroy", sc.other, check=False)
                if proc.returncode != 0:
                    problems.append(f"net-destroy of the other network ({sc.other}): {describe(proc)}")
                d = diff(clean, snapshot(ns, vf, backend))
                if d:
                    problems.append(f"after destroying the other network too, not the clean namespace:\n{d}")
            if problems:
                failures.append(f"{case}\n  " + "\n  ".join(problems))
    assert not failures, f"{len(failures)} kill instants mishandled:\n\n" + "\n\n".join(failures)
