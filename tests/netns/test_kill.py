"""A SIGKILL at any instant leaves the old state or the new one (issue 11, item 4).

What is proven: for ``nwfilter-define`` (a filter with two bindings), ``nwfilter-binding-delete``
and ``reload`` (intact, after the firewall was flushed behind virtfw's back, after a
binding's rule was replaced in place, and after a filter definition was edited by hand:
the rebuild with our chains standing, installing records again or rendering them anew), on each
backend, a command killed with SIGKILL at a random instant and followed by one clean
``virtfw reload`` leaves the state of before (OLD) or that of a clean run (NEW), in the
kernel and in the files alike (for ``reload``: the networks' part and the bindings' part
each OLD or NEW); ``reload`` exits 0, ``virtfw verify`` then exits 0, no temp file (a name
starting with ``.``) is left in the state or config dir, no process but the networks'
dnsmasq is left in the namespace, and a foreign nft table (and, on iptables, a foreign
chain) is untouched.

How: the scenarios, the state (``state``, ``part``, ``normalized``) and the namespace set-up
(``prepared``) are those of ``test_faults.py``. NEW comes from a twin namespace where the
command ran to its end (D: its duration, its change points with their times). Each trial
takes a fresh namespace in OLD state, starts the command (``ip netns exec NS python3 -c
TRACER ...``, in its own session) and, as ``random.Random(trial)`` draws: one trial in three
waits a delay from [0, D) after the start; the others wait for a change point k of the
clean run (drawn from all of them) to begin, then a delay from [0, the clean run's gap from
point k to the next one, or to the exit). Then SIGKILL goes to the process group (the
python that ``ip netns exec`` became, and any tool it was running at that instant). TRACER
is virtfw's own CLI under the fault driver's recorder in count mode
(``helpers/inject_faults.py``: nothing is failed or changed) that appends each point (file
write, removal, changing tool call, netlink change) to a trace file as it begins, so each
trial says after which point the kill landed (``reload`` of an intact ruleset has none:
its kills all land among its reads). A trial whose command had already exited is still
checked (it must be NEW) but counted apart: at least half the trials of each case must
kill a running command.

Every trial is printed (``pytest -s``) and appended to ``$VIRTFW_KILL_TABLE`` (JSON lines)
when that is set.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers.nsutil import Netns, run

pytestmark = pytest.mark.netns


def _load_faults() -> Any:
    """``test_faults.py`` as a module (the same object pytest collected, when it did)."""
    path = Path(__file__).with_name("test_faults.py")
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) == str(path):
            return module
    spec = importlib.util.spec_from_file_location("_virtfw_test_faults", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


faults = _load_faults()

BACKENDS = ("nftables", "iptables")
TESTS = Path(__file__).resolve().parents[1]
WORKERS = 2  # namespaces handled at once (the machine has two CPUs)
# case -> trials; the scenario of that name in test_faults
TRIALS = {"nwfilter-define": 12, "nwfilter-binding-delete": 12, "reload": 10, "reload-after-flush": 10,
          "reload-after-change": 8, "reload-after-edit": 8}  # fmt: skip
CASES = [scenario for scenario in faults.SCENARIOS if scenario.key in TRIALS]

TRACER = r"""
import json, os, sys, time
sys.path.insert(0, {tests!r})
from helpers import inject_faults as inj
fd = os.open(os.environ["VIRTFW_KILL_TRACE"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
def note(kind, what):
    os.write(fd, (json.dumps({{"t": time.time(), "kind": kind, "what": what}}) + "\n").encode())
real = inj.Recorder.passes
def passes(self, kind, what):
    note(kind, what)
    return real(self, kind, what)
inj.Recorder.passes = passes
note("start", "interpreter up")
try:
    inj.main(["count", "--", *sys.argv[1:]])
finally:
    note("exit", "")
"""


# ---------------------------------------------------------------------------
# foreign rules: in OLD and NEW alike, so any change to them shows as a third state


def add_foreign(ns: Netns, backend: str) -> None:
    ns.run(["nft", "-f", "-"], input="""table inet foreign {
  chain input { type filter hook input priority 10; policy accept; tcp dport 4242 counter accept; }
}
""")  # fmt: skip
    if backend == "iptables":
        ns.run(["iptables", "-w", "-N", "FOREIGN"])
        ns.run(["iptables", "-w", "-A", "FOREIGN", "-p", "tcp", "--dport", "4242", "-j", "ACCEPT"])


def finish_old(box: Any) -> None:
    """The last touch of the OLD set-up, after ``prepared`` (which flushes for reload-after-flush)."""
    add_foreign(box.ns, str(box.vf.backend))


# ---------------------------------------------------------------------------
# one run of the traced command


def tracer_argv(box: Any, args: list[str]) -> list[str]:
    code = TRACER.format(tests=str(TESTS))
    return ["ip", "netns", "exec", box.ns.name, sys.executable, "-c", code, *box.common(), *args]


@dataclass
class Run:
    returncode: int
    duration: float  # from the start of ``ip netns exec`` to the exit (or the kill's reaping)
    points: list[dict[str, Any]]  # {"t": offset, "kind", "what"}, "start" and "exit" included
    stderr: str
    delay: float = 0.0  # when the kill was sent, from the start


@dataclass
class Plan:
    """When to kill: ``after`` change points have begun (0: counted from the start), then ``extra`` seconds."""

    after: int
    extra: float

    def shown(self) -> str:
        return f"{self.extra:.3f}s after start" if self.after == 0 else f"{self.extra:.4f}s after point {self.after}"


def read_trace(trace: Path, started: float) -> list[dict[str, Any]]:
    points = []
    if trace.exists():
        for line in trace.read_text().splitlines():
            try:
                point = json.loads(line)
            except ValueError:
                continue  # cut by the kill
            point["t"] = round(point["t"] - started, 4)
            points.append(point)
    return points


def traced(box: Any, args: list[str], plan: Plan | None = None) -> Run:
    """The command, run to its end (``plan`` None) or killed as ``plan`` says."""
    trace = box.tmp / "trace.jsonl"
    trace.unlink(missing_ok=True)
    env = dict(os.environ, VIRTFW_KILL_TRACE=str(trace))
    started = time.time()
    proc = subprocess.Popen(tracer_argv(box, args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    delay = 0.0
    if plan is not None:
        exited = False
        if plan.after:
            # wait for the trace to show that many change points begun (or the command to end)
            while len(changes_of(read_trace(trace, started))) < plan.after:
                if proc.poll() is not None:
                    exited = True
                    break
                time.sleep(0.0005)
        time.sleep(max(0.0, plan.extra - (0 if plan.after else time.time() - started)))
        delay = time.time() - started
        if not exited:
            # not reaped yet: a command that already exited is a zombie, and the kill leaves its status
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    _, stderr = proc.communicate(timeout=120)
    duration = time.time() - started
    points = read_trace(trace, started)
    trace.unlink(missing_ok=True)
    return Run(proc.returncode, duration, points, stderr, delay)


def changes_of(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in points if p["kind"] not in ("start", "exit")]


def changes(run_: Run) -> list[dict[str, Any]]:
    return changes_of(run_.points)


# ---------------------------------------------------------------------------
# state after the next command


def dot_files(*roots: Path) -> list[str]:
    return sorted(str(p) for root in roots if root.exists() for p in root.rglob(".*"))


def others(ns: Netns, patience: float = 2.0) -> list[str]:
    """Processes in the namespace other than dnsmasq (a tool or virtfw that outlived the kill),
    once ``patience`` seconds have not seen them go (a killed process takes a moment to exit)."""
    deadline = time.time() + patience
    while True:
        found = []
        for pid in run(["ip", "netns", "pids", ns.name], check=False).stdout.split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0] and not cmdline[0].endswith(b"dnsmasq"):
                found.append(f"{pid}: {b' '.join(cmdline).decode(errors='replace')[:100]}")
        if not found or time.time() > deadline:
            return found
        time.sleep(0.05)


def without_dot_files(value: dict[str, Any]) -> dict[str, Any]:
    """The state with temp files left out: they are reported on their own."""
    hidden = lambda name: any(piece.startswith(".") for piece in name.split("/"))
    out = dict(value)
    out["state dir"] = [name for name in value["state dir"] if not hidden(name)]
    out["config dir"] = {name: text for name, text in value["config dir"].items() if not hidden(name)}
    return out


def classify(after: dict, old: dict, new: dict, per_part: bool) -> tuple[str, str]:
    """OLD, NEW, OLD=NEW; per part for reload (``nets NEW, bindings OLD``); else THIRD + detail."""
    if after == old == new:
        return "OLD=NEW", ""
    if after == old:
        return "OLD", ""
    if after == new:
        return "NEW", ""
    if per_part:
        named = []
        for networks, label in ((True, "nets"), (False, "bindings")):
            got = faults.part(after, networks)
            which = [w for w, ref in (("OLD", old), ("NEW", new)) if faults.part(ref, networks) == got]
            named.append(f"{label} {'='.join(which) or 'THIRD'}")
        if "THIRD" not in " ".join(named):
            return ", ".join(named), ""
    detail = "vs OLD: " + "; ".join(faults.differs(old, after)) + " | vs NEW: " + "; ".join(faults.differs(new, after))
    return "THIRD", detail


@dataclass
class Trial:
    command: str
    backend: str
    seed: int
    plan: str
    delay: float  # the kill, from the start
    killed: bool  # the command was still running when the kill came
    passed: int  # change points begun before the kill
    of: int  # change points of the clean run
    last: str  # the last point begun
    result: str
    problems: list[str]
    diff: list[str]  # unified-style lines of what differed, for a THIRD state

    @property
    def bad(self) -> bool:
        return self.result == "THIRD" or bool(self.problems)

    def stage(self) -> str:
        if not self.killed:
            return "after exit"
        if self.passed == 0:
            return "before the first point"
        return f"after point {self.passed}/{self.of} ({self.last.split()[0]})"

    def row(self) -> str:
        text = f"seed {self.seed:>2} {self.plan:<26} kill {self.delay:6.3f}s {self.stage():<29} {self.result:<22}"
        text += f" {self.last[:80]}"
        for line in self.problems + self.diff:
            text += f"\n{'':>8}{line}"
        return text


def diff_lines(expected: dict, actual: dict, label: str, limit: int = 30) -> list[str]:
    """What differs from ``expected``, line by line (firewall views, file lists and contents)."""
    import difflib

    out: list[str] = []
    for key in expected.keys() | actual.keys():
        want, got = expected.get(key), actual.get(key)
        if want == got:
            continue
        if isinstance(want, dict) and isinstance(got, dict):
            for sub in sorted(want.keys() | got.keys()):
                if want.get(sub) != got.get(sub):
                    a, b = str(want.get(sub, "<absent>")), str(got.get(sub, "<absent>"))
                    lines = difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0)
                    out += [f"{label} {key} {sub}: {line}" for line in list(lines)[2:]]
        else:
            a, b = json.dumps(want, indent=0), json.dumps(got, indent=0)
            lines = difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0)
            out += [f"{label} {key}: {line}" for line in list(lines)[2:]]
    return out[:limit] + ([f"... {len(out) - limit} more"] if len(out) > limit else [])


def plan(seed: int, clean: Run) -> Plan:
    """One trial in three: a delay from the start, drawn from [0, D) (D: the clean run's
    duration). The others: a change point k of the clean run drawn at random, and a delay
    after it has begun drawn from [0, gap to the next point or the exit) of the clean run."""
    rng = random.Random(seed)
    points = changes(clean)
    if seed % 3 == 0 or not points:
        return Plan(0, rng.uniform(0.0, clean.duration))
    k = rng.randint(1, len(points))
    end = points[k]["t"] if k < len(points) else clean.points[-1]["t"]  # the next point, or the exit mark
    return Plan(k, rng.uniform(0.0, max(end - points[k - 1]["t"], 0.001)))


def one_trial(tmp: Path, backend: str, scenario: Any, seed: int, clean: Run, old: dict, new: dict) -> Trial:
    when = plan(seed, clean)
    with faults.prepared(tmp, backend, scenario) as box:
        finish_old(box)
        killed = traced(box, scenario.args(box), when)
        problems = []
        points = changes(killed)
        running = killed.returncode == -signal.SIGKILL
        if not running and killed.returncode != 0:
            problems.append(f"command exited {killed.returncode} before the kill: {killed.stderr.strip()[-200:]}")
        left = others(box.ns)
        if left:
            problems.append(f"processes left after the kill: {left}")
        after_kill = dot_files(box.vf.state_dir, box.vf.config_dir)
        proc = box.vf("reload", check=False)
        if proc.returncode != 0:
            problems.append(f"reload after the kill exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
        full = faults.normalized(faults.state(box, scenario), box.tmp)
        left = dot_files(box.vf.state_dir, box.vf.config_dir)
        if left:
            shown = [str(Path(p).relative_to(box.tmp)) for p in left]
            problems.append(f"temp files left after reload: {shown} (after the kill: {len(after_kill)})")
        left = others(box.ns)
        if left:
            problems.append(f"processes left after reload: {left}")
        verified = faults.verify(box)
        if verified != 0:
            problems.append(f"verify exit {verified}")
    after = without_dot_files(full)
    result, detail = classify(after, old, new, scenario.per_part)
    if result.startswith("OLD") and not running and "=" not in result:
        problems.append("the command had finished, yet the state is OLD")
    diff: list[str] = []
    if result == "THIRD":
        diff = [detail, *diff_lines(old, after, "OLD->now"), *diff_lines(new, after, "NEW->now")]
    last = points[-1] if points else None
    shown = f"{last['kind']} {last['what']}".replace(str(tmp), "$TMP") if last else ""
    return Trial(scenario.key, backend, seed, when.shown(), round(killed.delay, 4), running, len(points),
                 len(changes(clean)), shown, result, problems, diff)  # fmt: skip


def record(trials: list[Trial]) -> None:
    path = os.environ.get("VIRTFW_KILL_TABLE")
    if path:
        with open(path, "a") as handle:
            handle.writelines(json.dumps({**asdict(trial), "stage": trial.stage()}) + "\n" for trial in trials)


def summary(trials: list[Trial]) -> str:
    stages: dict[str, dict[str, int]] = {}
    for trial in trials:
        counts = stages.setdefault(trial.stage(), {})
        counts[trial.result] = counts.get(trial.result, 0) + 1
    return "; ".join(f"{stage}: " + ", ".join(f"{n} {r}" for r, n in sorted(c.items())) for stage, c in stages.items())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scenario", CASES, ids=[s.key for s in CASES])
def test_kill_leaves_old_or_new(scenario: Any, backend: str, tmp_path: Path) -> None:
    with faults.prepared(tmp_path / "old", backend, scenario) as box:
        finish_old(box)
        old = without_dot_files(faults.normalized(faults.state(box, scenario), box.tmp))
        assert faults.verify(box) == 0 or scenario.disturbed, "OLD state does not verify"
    with faults.prepared(tmp_path / "new", backend, scenario) as box:
        finish_old(box)
        clean = traced(box, scenario.args(box))
        assert clean.returncode == 0, f"clean run failed: {clean.stderr}"
        new = without_dot_files(faults.normalized(faults.state(box, scenario), box.tmp))
        assert faults.verify(box) == 0, "NEW state does not verify"
    points = changes(clean)
    timeline = "\n".join(f"  {p['t']:.3f}s {p['kind']:<6} {p['what']}".replace(str(tmp_path), "$TMP")[:150]
                         for p in clean.points)  # fmt: skip
    with ThreadPoolExecutor(WORKERS) as pool:
        trials = list(pool.map(
            lambda seed: one_trial(tmp_path / f"k{seed}", backend, scenario, seed, clean, old, new),
            range(TRIALS[scenario.key]),
        ))  # fmt: skip
    record(trials)
    killed = sum(trial.killed for trial in trials)
    table = "\n".join(trial.row() for trial in trials)
    head = (f"{scenario.key} / {backend}: clean run {clean.duration:.3f}s, {len(points)} change points;"
            f" {killed}/{len(trials)} killed while running\n{timeline}")  # fmt: skip
    print(f"\n{head}\n{table}\nsummary: {summary(trials)}")
    bad = [trial for trial in trials if trial.bad]
    assert not bad, f"{len(bad)}/{len(trials)} trials leave a third state or break a contract:\n{head}\n{table}"
    assert killed * 2 >= len(trials), f"only {killed}/{len(trials)} trials killed a running command:\n{table}"
