#!/usr/bin/env python3
"""Benchmark: filter bindings at scale, against a per-command replay of libvirt's commands.

    python bench/bindings.py [--counts 1000] [--backend nftables|iptables|both]
                             [--quick] [--repeat R] [--samples S] [--full-replay]
                             [--skip-replay] [--no-create-loop] [--profile]
                             [--bounds-only]

For each backend and each count N, in a fresh network namespace holding 2N+10 stand-in
guest ports (dummy links, else ifb, else veth), with fresh config and state dirs:

  (a) N ``virtfw nwfilter-binding-create`` processes, one per binding, each binding
      clean-traffic with its own MAC and IP: total, and mean per call (also over the
      first and the last 10 calls, which shows whether a call gets dearer as bindings
      pile up);
  (b) one ``virtfw reload``, which re-installs all N bindings (median of R): from their
      records where a binding's inputs (its fields, its filter tree, the rendering code)
      are unchanged, else instantiated and rendered anew; also the same reload after
      ``nft flush ruleset`` (everything made anew), and ``nwfilter-define`` of the
      (unchanged) filter all N use, which instantiates and renders every one of them;
  (c) the (N+1)th binding-create, and its binding-delete (medians of R: create, time,
      delete, again); for (b) and (c) one more run each with timing wrappers (those of
      bench/net_start.py) in front of the firewall tools says how much of the command
      is spent in the tools, and ``--profile`` adds a cProfile of each;
  (d) N more bindings are added (untimed set-up: one Python process inside the
      namespace calling virtfw's CLI entry point once per binding, whose mean is shown
      as "in-process create" = a call's work without interpreter start-up), then one
      ``reload`` of all 2N (median of R): the ratio 2N/N says how reload scales;
  (e) libvirt's way: the ebtables/iptables commands libvirt 11.3 runs to instantiate
      one clean-traffic binding on a new port, one process per command, replayed into a
      namespace already holding k bindings, for k = 0, N/2 and N (S bindings each,
      mean per binding). The commands are built from libvirt 11.3's
      ``ebiptablesApplyNewRules`` + ``ebiptablesTearOldRules`` sequence (temporary
      ``J``/``P`` chains, the ignored-error clean-up commands, the ``-L`` queries, the
      ``-E`` renames), with the rule arguments from virtfw's libvirt-conformant renderer
      (``virtfw.rules.xtables.filter_render.plan_port``, checked against libvirt's
      nwfilterxml2firewalldata test files), ``libvirt-`` spelled ``virtfw-``. The k
      existing bindings are loaded untimed with one ``ebtables-restore`` of the final
      ruleset libvirt leaves. Replaying all N bindings one command at a time takes
      far too long at N=1000 (each ebtables command costs more as the table grows), so
      the total for N is integrated from the three measured points (trapezoid) unless
      ``--full-replay`` is given, in which case all N are replayed and timed. Either
      way libvirt's own re-instantiation on a restart also tears old rules down per
      binding, so the replay is a lower bound for it.

  (f) bounds (in-process, no namespace, also alone with ``--bounds-only``, without
      root): the time to refuse a binding whose one rule iterates three lists of 200
      values under three iterators (8,000,000 rules: counted from the list lengths and
      refused before any is built; it once ran 90 s and took 2 GB), next to the time
      to instantiate a binding just at the per-binding bound (20x20x50 = 20,000 rules).

Targets are printed next to the figures (stated for N=1000): reload of 1,000 under
2 s on nftables, the 1,001st create under 300 ms, reload of 2,000 at most 2.2x that
of 1,000, and reload at least 20x faster than the per-command replay of the same
bindings. Nothing is asserted: this is a benchmark, not a test.

Safety: everything that touches links or a firewall runs inside namespaces created
here (``ip netns add``) and deleted in a ``finally`` (and on SIGTERM); children enter
them with setns(2) between fork and exec (see bench/net_start.py, whose Namespace is
reused), and fail rather than run in the root namespace.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))  # the checkout's virtfw, for building libvirt's commands

from net_start import BenchError, Namespace, _on_signal, cleanup_all, make_wrappers, read_tool_log

if TYPE_CHECKING:
    from virtfw.rules.xtables.syntax import PlannedRule

TARGETS = {
    "reload_ms": 2000.0,  # reload of 1,000 bindings on nftables, at most
    "next_create_ms": 300.0,  # the 1,001st binding-create, at most
    "linearity": 2.2,  # reload(2N) / reload(N), at most
    "replay_speedup": 20.0,  # libvirt per-command replay / virtfw reload, at least
}
FILTER = "clean-traffic"
INPROCESS_SAMPLE = 50  # bindings of (d) created in-process, one CLI call each
TOOLS = ("nft", "ebtables", "ebtables-save", "ebtables-restore", "iptables", "iptables-save", "iptables-restore",
         "ip6tables", "ip6tables-save", "ip6tables-restore")  # fmt: skip

# One Python process creating many bindings through virtfw's CLI entry point (set-up).
DRIVER = r"""
import json, sys, time
from virtfw.cli.main import cli
jobs = json.load(sys.stdin)
start = time.perf_counter()
for args in jobs:
    try:
        cli.main(args=args, prog_name="virtfw", standalone_mode=False)
    except Exception as exc:
        print(f"failed: {args[-1]}: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
print(json.dumps({"seconds": time.perf_counter() - start, "count": len(jobs)}))
"""


# ---- bindings ----------------------------------------------------------------------


def port_name(k: int) -> str:
    return f"vnet{k}"


def mac_of(k: int) -> str:
    return f"52:54:00:{(k >> 16) & 255:02x}:{(k >> 8) & 255:02x}:{k & 255:02x}"


def ip_of(k: int) -> str:
    return f"10.{(k >> 16) & 255}.{(k >> 8) & 255}.{k & 255}"


def binding_xml(k: int) -> str:
    return (
        "<filterbinding>\n"
        f"  <portdev name='{port_name(k)}'/>\n"
        f"  <mac address='{mac_of(k)}'/>\n"
        f"  <filterref filter='{FILTER}'>\n"
        f"    <parameter name='IP' value='{ip_of(k)}'/>\n"
        "  </filterref>\n"
        "</filterbinding>\n"
    )


class Files:
    """Binding XML files, one per k, written once (untimed)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, k: int) -> str:
        path = self.folder / f"binding-{k}.xml"
        if not path.exists():
            path.write_text(binding_xml(k))
        return str(path)


_PORT_KIND: list[str] = []


def add_ports(ns: Namespace, ks: Sequence[int]) -> str:
    """Stand-in guest ports vnetK in ``ns`` (one ``ip -batch``); returns the link kind."""
    if not _PORT_KIND:
        for kind in ("dummy", "ifb", "veth"):
            extra = ["peer", "name", "pvprobe"] if kind == "veth" else []
            probe = ns.run(["ip", "link", "add", "vprobe", "type", kind, *extra], check=False)
            if probe.returncode == 0:
                ns.run(["ip", "link", "del", "vprobe"])
                _PORT_KIND.append(kind)
                break
        else:
            raise BenchError("cannot create dummy, ifb or veth links")
    kind = _PORT_KIND[0]
    lines = []
    for k in ks:
        peer = f" peer name {('p' + port_name(k))[:15]}" if kind == "veth" else ""
        lines.append(f"link add {port_name(k)} type {kind}{peer}\n")
    ns.run(["ip", "-batch", "-"], input="".join(lines))
    return kind


# ---- virtfw ------------------------------------------------------------------------


class Virtfw:
    def __init__(self, exe: list[str], config_dir: Path, state_dir: Path, backend: str) -> None:
        self.exe, self.config_dir, self.state_dir, self.backend = exe, config_dir, state_dir, backend
        config_dir.mkdir(parents=True, exist_ok=True)

    def args(self, *args: str) -> list[str]:
        return ["--config-dir", str(self.config_dir), "--state-dir", str(self.state_dir),
                "--backend", self.backend, *args]  # fmt: skip

    def argv(self, *args: str) -> list[str]:
        return [*self.exe, *self.args(*args)]


def ruleset_digest(ns: Namespace) -> str:
    """A digest of everything in the namespace's firewall, as a multiset of lines.

    Counters, handles and comments are dropped, and lines (and the elements of nft maps)
    are sorted: a reload may hook ports in another order, or rebuild a verdict map whose
    elements nft then prints in another order, without any change that matters. This is
    a sanity check that a timed command did not lose or add rules, nothing finer.
    """
    parts = [ns.run(["nft", "list", "ruleset"]).stdout]
    for tool in ("iptables-save", "ip6tables-save", "ebtables-save"):
        if shutil.which(tool):
            parts.append(ns.run([tool]).stdout)
    text = "\n".join(parts)
    text = re.sub(r"packets \d+ bytes \d+", "", re.sub(r"\[\d+:\d+\]", "", text))
    items = []
    for line in text.replace(",", "\n").replace("{", "\n").replace("}", "\n").splitlines():
        line = line.split(" # handle")[0].strip()
        if line and not line.startswith("#"):
            items.append(line)
    return hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()[:16]


# ---- libvirt's commands for one binding --------------------------------------------


def _temp(name: str) -> str:
    """libvirt's temporary name of a chain: I->J, O->P (root and sub-chains), FI->FJ..."""
    for final, temp in (("virtfw-I-", "virtfw-J-"), ("virtfw-O-", "virtfw-P-"), ("I-", "J-"), ("O-", "P-"),
                        ("FI-", "FJ-"), ("FO-", "FP-"), ("HI-", "HJ-")):  # fmt: skip
        if name.startswith(final):
            return temp + name[len(final) :]
    return name


@dataclass
class Cmd:
    argv: list[str]
    must: bool  # libvirt treats a failure as fatal (else the error is ignored)


class LibvirtCommands:
    """What libvirt 11.3 runs for a new binding, built from virtfw's renderer."""

    def __init__(self, config_dir: Path, state_dir: Path) -> None:
        from virtfw.config import Config
        from virtfw.filter.store import FilterStore

        self.store = FilterStore(Config(config_dir, state_dir))

    def plan(self, k: int):
        from virtfw.filter.instantiate import instantiate
        from virtfw.filter.xml import parse_binding
        from virtfw.rules.xtables.filter_render import plan_port

        return plan_port(instantiate(parse_binding(binding_xml(k), f"binding {k}"), self.store.load))

    def final_restore_lines(self, k: int) -> tuple[list[str], list[str]]:
        """(chain declarations, rules) of the ebtables nat table libvirt leaves for binding k."""
        from virtfw.rules.xtables.syntax import restore_line

        plan = self.plan(k)
        if plan.families:
            raise BenchError("the preload only covers ebtables-only filters such as clean-traffic")
        eb = plan.ebtables
        chains = [f"-N {c}" for c in eb.chains]
        rules = [restore_line(r.command()) for r in eb.rules] + [restore_line(hook.command()) for hook in eb.hooks]
        return chains, rules

    def commands(self, k: int) -> list[Cmd]:
        plan = self.plan(k)
        port = port_name(k)
        eb = ["ebtables", "--concurrent", "-t", "nat"]
        out: list[Cmd] = []

        def add(argv: list[str], must: bool) -> None:
            out.append(Cmd(argv, must))

        jroot, proot = f"virtfw-J-{port}", f"virtfw-P-{port}"
        iroot, oroot = f"virtfw-I-{port}", f"virtfw-O-{port}"
        # applyNewRules, transaction 1 (errors ignored): clean up leftover temporary chains
        add([*eb, "-D", "PREROUTING", "-i", port, "-j", jroot], False)
        add([*eb, "-D", "POSTROUTING", "-o", port, "-j", proot], False)
        add([*eb, "-L", jroot], False)  # query: sub-chains to remove (none on a new port)
        add([*eb, "-L", proot], False)
        for root in (jroot, proot):
            add([*eb, "-F", root], False)
            add([*eb, "-X", root], False)
        # transaction 2: root chains, then sub-chains interleaved with rules, then the hooks
        subchains: list[str] = []
        if plan.ebtables:
            roots = [c for c in plan.ebtables.chains if c.startswith("virtfw-")]
            subchains = [c for c in plan.ebtables.chains if not c.startswith("virtfw-")]
            for root in roots:
                add([*eb, "-N", _temp(root)], True)
            for planned in plan.ebtables.rules:
                rule = ["-A", _temp(planned.chain), *planned.args[:-1], _temp(planned.args[-1])]
                if rule[-1] in {_temp(s) for s in subchains} and rule[1].startswith("virtfw-"):
                    add([*eb, "-F", rule[-1]], False)
                    add([*eb, "-X", rule[-1]], False)
                    add([*eb, "-N", rule[-1]], True)
                add([*eb, *rule], True)
        for family, plan_family in plan.families.items():
            out.extend(self._iptables_apply(port, "iptables" if family == "ipv4" else "ip6tables", plan_family.rules))
        if plan.ebtables:
            for hook in plan.ebtables.hooks:
                add([*eb, "-A", hook.chain, *[_temp(a) for a in hook.args]], True)
        # tearOldRules (errors ignored): iptables and ip6tables, then ebtables
        for tool in ("iptables", "ip6tables"):
            ipt = [tool, "-w"]
            add(
                [
                    *ipt,
                    "-D",
                    "virtfw-out",
                    "-m",
                    "physdev",
                    "--physdev-is-bridged",
                    "--physdev-out",
                    port,
                    "-g",
                    f"FO-{port}",
                ],
                False,
            )
            add([*ipt, "-D", "virtfw-out", "-m", "physdev", "--physdev-out", port, "-g", f"FO-{port}"], False)
            add([*ipt, "-D", "virtfw-in", "-m", "physdev", "--physdev-in", port, "-g", f"FI-{port}"], False)
            add([*ipt, "-D", "virtfw-host-in", "-m", "physdev", "--physdev-in", port, "-g", f"HI-{port}"], False)
            for chain in (f"FO-{port}", f"FI-{port}", f"HI-{port}"):
                add([*ipt, "-F", chain], False)
                add([*ipt, "-X", chain], False)
            for chain in (f"FO-{port}", f"FI-{port}", f"HI-{port}"):
                add(
                    [*ipt, "-E", _temp(chain), chain], bool(plan.families.get("ipv4" if tool == "iptables" else "ipv6"))
                )
        add([*eb, "-D", "PREROUTING", "-i", port, "-j", iroot], False)
        add([*eb, "-D", "POSTROUTING", "-o", port, "-j", oroot], False)
        add([*eb, "-L", iroot], False)  # query: old sub-chains (none on a new port)
        add([*eb, "-L", oroot], False)
        for root in (iroot, oroot):
            add([*eb, "-F", root], False)
            add([*eb, "-X", root], False)
        roots_made = {c for c in (plan.ebtables.chains if plan.ebtables else []) if c.startswith("virtfw-")}
        for root in (jroot, proot):
            add([*eb, "-L", root], False)  # query: temporary sub-chains to rename
        for root in (iroot, oroot):
            add([*eb, "-E", _temp(root), root], root in roots_made)
        for sub in subchains:  # what the queries found, as libvirt appends it
            add([*eb, "-L", _temp(sub)], False)
            add([*eb, "-F", sub], False)
            add([*eb, "-X", sub], False)
            add([*eb, "-E", _temp(sub), sub], True)
        return out

    @staticmethod
    def _iptables_apply(port: str, tool: str, rules: list[PlannedRule]) -> list[Cmd]:
        ipt = [tool, "-w"]
        out = [Cmd([*ipt, "-D", "virtfw-out", "-m", "physdev", "--physdev-is-bridged", "--physdev-out", port, "-g", f"FP-{port}"], False),
               Cmd([*ipt, "-D", "virtfw-out", "-m", "physdev", "--physdev-out", port, "-g", f"FP-{port}"], False),
               Cmd([*ipt, "-D", "virtfw-in", "-m", "physdev", "--physdev-in", port, "-g", f"FJ-{port}"], False),
               Cmd([*ipt, "-D", "virtfw-host-in", "-m", "physdev", "--physdev-in", port, "-g", f"HJ-{port}"], False)]  # fmt: skip
        for chain in (f"FP-{port}", f"FJ-{port}", f"HJ-{port}"):
            out += [Cmd([*ipt, "-F", chain], False), Cmd([*ipt, "-X", chain], False)]
        for chain in ("virtfw-in", "virtfw-out", "virtfw-in-post", "virtfw-host-in"):
            out.append(Cmd([*ipt, "-N", chain], False))
        for hook, chain in (
            ("FORWARD", "virtfw-in"),
            ("FORWARD", "virtfw-out"),
            ("FORWARD", "virtfw-in-post"),
            ("INPUT", "virtfw-host-in"),
        ):
            out.append(Cmd([*ipt, "-D", hook, "-j", chain], False))
        for hook, pos, chain in (
            ("FORWARD", "1", "virtfw-in"),
            ("FORWARD", "2", "virtfw-out"),
            ("FORWARD", "3", "virtfw-in-post"),
            ("INPUT", "1", "virtfw-host-in"),
        ):
            out.append(Cmd([*ipt, "-I", hook, pos, "-j", chain], True))
        for chain in (f"FP-{port}", f"FJ-{port}", f"HJ-{port}"):
            out.append(Cmd([*ipt, "-N", chain], True))
        out += [Cmd([*ipt, "-A", "virtfw-out", "-m", "physdev", "--physdev-is-bridged", "--physdev-out", port, "-g", f"FP-{port}"], True),
                Cmd([*ipt, "-A", "virtfw-in", "-m", "physdev", "--physdev-in", port, "-g", f"FJ-{port}"], True),
                Cmd([*ipt, "-A", "virtfw-host-in", "-m", "physdev", "--physdev-in", port, "-g", f"HJ-{port}"], True),
                Cmd([*ipt, "-D", "virtfw-in-post", "-m", "physdev", "--physdev-in", port, "-j", "ACCEPT"], False),
                Cmd([*ipt, "-A", "virtfw-in-post", "-m", "physdev", "--physdev-in", port, "-j", "ACCEPT"], True)]  # fmt: skip
        for rule in rules:
            out.append(Cmd([*ipt, "-A", _temp(rule.chain), *rule.args], True))
        return out


# ---- the bench ---------------------------------------------------------------------


@dataclass
class Figures:
    values: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(
        self,
        tmp: Path,
        repeat: int,
        samples: int,
        full_replay: bool,
        profile: bool = False,
        no_create_loop: bool = False,
    ) -> None:
        self.tmp = tmp
        self.no_create_loop = no_create_loop
        self.profile = profile
        self.profiles: list[str] = []
        self.repeat = repeat
        self.samples = samples
        self.full_replay = full_replay
        self.real = {
            t: p for t in ("nft", "ebtables", "ebtables-restore", "iptables", "ip6tables") if (p := shutil.which(t))
        }
        script = Path(sys.executable).parent / "virtfw"
        self.exe = [str(script)] if os.access(script, os.X_OK) else [sys.executable, "-m", "virtfw"]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        # compiled bytecode kept under our temp dir (never written into the checkout), as an
        # installed package has it; filled by an untimed first run
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        self.env = env
        self.files = Files(tmp / "xml")
        self._states = 0
        # timing wrappers (bench/net_start.py's) in front of the firewall tools, for the
        # extra untimed runs that say how much of a command is spent in the tools
        self.wrapdir = tmp / "wrappers"
        self.wrapdir.mkdir()
        make_wrappers(self.wrapdir, {t: p for t in TOOLS if (p := shutil.which(t))})
        self._logs = 0

    def virtfw(self, backend: str) -> Virtfw:
        """Fresh config and state dirs (a create also records the binding in the config dir)."""
        self._states += 1
        return Virtfw(self.exe, self.tmp / f"config-{self._states}", self.tmp / f"state-{self._states}", backend)

    def code_location(self) -> str:
        probe = "import os, virtfw; print(os.path.dirname(virtfw.__file__))"
        proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=self.env, check=False)
        where = proc.stdout.strip() or "?"
        git = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
        )
        return f"{where} (git {git.stdout.strip() or '?'})"

    def warm(self) -> None:
        with Namespace("warm") as ns:
            ns.run([*self.exe, "--help"], env=self.env)
            ns.run([*self.exe, *self.virtfw("nftables").args("nwfilter-list")], env=self.env)

    # -- helpers

    def tool_time(self, ns: Namespace, argv: list[str]) -> tuple[float, float, int]:
        """(wall, seconds in firewall tools, tool calls) of one run with timing wrappers."""
        self._logs += 1
        log = self.tmp / f"tools-{self._logs}.log"
        env = {**self.env, "PATH": f"{self.wrapdir}:{os.environ.get('PATH', '')}", "VIRTFW_BENCH_TOOLLOG": str(log)}
        wall = ns.timed_ok(argv, env=env)
        calls = read_tool_log(log)
        if not calls:
            raise BenchError("the timing wrappers logged nothing: virtfw did not find them on PATH")
        return wall, sum(c.seconds for c in calls), len(calls)

    def cprofile(self, ns: Namespace, label: str, args: list[str], top: int = 40) -> None:
        argv = [sys.executable, "-m", "cProfile", "-s", "cumtime", "-m", "virtfw", *args]
        out = ns.run(argv, env=self.env).stdout.splitlines()
        start = next((i for i, line in enumerate(out) if "ncalls" in line), 0)
        self.profiles.append(f"cProfile of {label}, top {top} by cumulative time\n"
                             + "\n".join("  " + line for line in out[max(0, start - 3): start + top + 1]))  # fmt: skip

    def create(self, ns: Namespace, vf: Virtfw, k: int) -> float:
        return ns.timed_ok(vf.argv("nwfilter-binding-create", self.files.path(k)), env=self.env)

    def delete(self, ns: Namespace, vf: Virtfw, k: int) -> float:
        return ns.timed_ok(vf.argv("nwfilter-binding-delete", port_name(k)), env=self.env)

    def create_in_process(self, ns: Namespace, vf: Virtfw, ks: Sequence[int]) -> float:
        """Set-up: bindings ks created by one Python process; returns its seconds per binding."""
        jobs = [vf.args("-q", "nwfilter-binding-create", self.files.path(k)) for k in ks]
        proc = ns.run([sys.executable, "-c", DRIVER], input=json.dumps(jobs), env=self.env)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        return result["seconds"] / max(1, result["count"])

    def bound(self, ns: Namespace, vf: Virtfw) -> int:
        return len(json.loads(ns.run(vf.argv("nwfilter-binding-list", "--json"), env=self.env).stdout or "[]"))

    # -- (a) to (d)

    def virtfw_figures(self, backend: str, n: int, fig: Figures) -> None:
        vf = self.virtfw(backend)
        with Namespace("v") as ns:
            kind = add_ports(ns, range(1, 2 * n + 2))
            fig.notes.append(f"{2 * n + 1} ports ({kind} links)")
            # (a)
            if self.no_create_loop:
                fig.notes.append("(a) skipped (--no-create-loop): bindings 1..N set up untimed, as (d) does")
                self.grow(ns, vf, backend, 0, fig, upto=n)
            times = []
            for k in [] if self.no_create_loop else range(1, n + 1):
                times.append(self.create(ns, vf, k))
                if k % 100 == 0 or k == n:
                    print(
                        f"    [{backend}] created {k}/{n}, last call {times[-1] * 1000:.0f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
            if self.bound(ns, vf) != n:
                raise BenchError(f"after {n} creates, binding-list does not show {n} bindings")
            if times:
                fig.values.update(create_total=sum(times), create_mean=statistics.mean(times),
                                  create_first=statistics.mean(times[:10]), create_last=statistics.mean(times[-10:]))  # fmt: skip
            # (b)
            digest = ruleset_digest(ns)
            fig.values["reload_n"] = statistics.median(
                ns.timed_ok(vf.argv("reload"), env=self.env) for _ in range(self.repeat)
            )
            if ruleset_digest(ns) != digest:
                fig.notes.append("WARNING: reload of an intact ruleset changed it")
            _, fig.values["reload_tools"], calls = self.tool_time(ns, vf.argv("reload"))
            fig.values["reload_tool_calls"] = calls
            if self.profile:
                self.cprofile(ns, f"virtfw reload of {n} bindings [{backend}]", vf.args("reload"))
            # (b) the same after a flush of the whole ruleset (everything is made anew), and a
            # re-instantiation of every binding (nwfilter-define of the filter they use,
            # unchanged: each binding is instantiated and rendered again, one transaction)
            flushed = []
            for _ in range(self.repeat):
                ns.run(["nft", "flush", "ruleset"])
                flushed.append(ns.timed_ok(vf.argv("reload"), env=self.env))
            fig.values["reload_flushed"] = statistics.median(flushed)
            shipped = str(ROOT / "etc" / "nwfilter" / f"{FILTER}.xml")
            fig.values["redefine"] = statistics.median(
                ns.timed_ok(vf.argv("nwfilter-define", shipped), env=self.env) for _ in range(self.repeat)
            )
            if ruleset_digest(ns) != digest:
                fig.notes.append("WARNING: reload after a flush, or the redefinition, changed the ruleset")
            # (c)
            creates, deletes = [], []
            for _ in range(self.repeat):
                creates.append(self.create(ns, vf, n + 1))
                deletes.append(self.delete(ns, vf, n + 1))
            _, fig.values["next_create_tools"], calls = self.tool_time(
                ns, vf.argv("nwfilter-binding-create", self.files.path(n + 1))
            )
            fig.values["next_create_tool_calls"] = calls
            if self.profile:
                self.delete(ns, vf, n + 1)
                self.cprofile(ns, f"virtfw nwfilter-binding-create, binding {n + 1} [{backend}]",
                              vf.args("nwfilter-binding-create", self.files.path(n + 1)))  # fmt: skip
            self.delete(ns, vf, n + 1)
            if ruleset_digest(ns) != digest:
                fig.notes.append("WARNING: create + delete of the (N+1)th binding did not restore the ruleset")
            fig.values.update(next_create=statistics.median(creates), next_delete=statistics.median(deletes))
            # (d)
            self.grow(ns, vf, backend, n, fig)
            digest = ruleset_digest(ns)
            fig.values["reload_2n"] = statistics.median(
                ns.timed_ok(vf.argv("reload"), env=self.env) for _ in range(self.repeat)
            )
            if ruleset_digest(ns) != digest:
                fig.notes.append("WARNING: reload of 2N changed the ruleset")

    def grow(self, ns: Namespace, vf: Virtfw, backend: str, n: int, fig: Figures, upto: int | None = None) -> None:
        """Set-up of (d): bindings N+1..2N. The first few by one Python process calling the
        CLI entry point once per binding (a call's work without interpreter start-up), the
        rest as binding records in the config dir re-created by one ``virtfw autostart``
        (virtfw's boot path: one batch); one process per binding if that path is absent."""
        upto = 2 * n if upto is None else upto
        few = min(upto - n, INPROCESS_SAMPLE)
        print(f"    [{backend}] adding bindings {n + 1}..{upto} (set-up)", file=sys.stderr, flush=True)
        seconds = self.create_in_process(ns, vf, range(n + 1, n + few + 1))
        if n:
            fig.values["inprocess_create"] = seconds
        rest = range(n + few + 1, upto + 1)
        if rest:
            records = vf.config_dir / "bindings"
            if records.is_dir() and (records / f"{port_name(n + 1)}.xml").exists():
                for k in rest:
                    (records / f"{port_name(k)}.xml").write_text(binding_xml(k))
                elapsed = ns.timed_ok(vf.argv("autostart"), env=self.env)
                if n:
                    fig.values["autostart_rest"] = elapsed
            if self.bound(ns, vf) != upto:
                fig.notes.append("binding records + autostart did not re-create the bindings; created one process each")
                fig.values.pop("autostart_rest", None)
                rows = json.loads(ns.run(vf.argv("nwfilter-binding-list", "--json"), env=self.env).stdout or "[]")
                present = {row["portdev"] for row in rows}
                self.create_in_process(ns, vf, [k for k in rest if port_name(k) not in present])
        if self.bound(ns, vf) != upto:
            raise BenchError(f"after the set-up, binding-list does not show {upto} bindings")

    # -- (e)

    def replay_figures(self, n: int, fig: Figures) -> None:
        lib = LibvirtCommands(self.tmp / "config-replay", self.tmp / "state-replay")
        per_binding = lib.commands(1)
        fig.values["replay_commands"] = len(per_binding)
        fig.notes.append(f"libvirt replay: {len(per_binding)} commands per clean-traffic binding "
                         f"({sum(1 for c in per_binding if not c.must)} of them with errors ignored by libvirt)")  # fmt: skip
        if self.full_replay:
            with Namespace("r") as ns:
                add_ports(ns, range(1, n + 1))
                total = 0.0
                for k in range(1, n + 1):
                    total += self.replay_one(ns, lib, k)
                    if k % 50 == 0:
                        print(
                            f"    [libvirt replay] {k}/{n} bindings, {total:.0f} s so far", file=sys.stderr, flush=True
                        )
                fig.values["replay_total"] = total
            fig.notes.append(f"libvirt replay: all {n} bindings replayed and timed")
            return
        points = sorted({0, n // 2, n})
        costs = {}
        for k0 in points:
            print(f"    [libvirt replay] {self.samples} bindings on top of {k0}", file=sys.stderr, flush=True)
            with Namespace("r") as ns:
                add_ports(ns, range(1, k0 + self.samples + 1))
                if k0:
                    self.preload(ns, lib, range(1, k0 + 1))
                costs[k0] = statistics.mean(self.replay_one(ns, lib, k) for k in range(k0 + 1, k0 + self.samples + 1))
        for k0, cost in costs.items():
            fig.values[f"replay_at_{'0' if k0 == 0 else ('half' if k0 == n // 2 and k0 != n else 'n')}"] = cost
        total = 0.0
        for (x0, y0), (x1, y1) in zip(list(costs.items()), list(costs.items())[1:]):
            total += (x1 - x0) * (y0 + y1) / 2
        fig.values["replay_total"] = total
        fig.notes.append(f"libvirt replay total for N: integrated from {self.samples} bindings replayed on top "
                         f"of {', '.join(map(str, points))} existing ones (trapezoid)")  # fmt: skip

    def preload(self, ns: Namespace, lib: LibvirtCommands, ks: Sequence[int]) -> None:
        """The final ruleset libvirt leaves for bindings ks, in one ebtables-restore (untimed)."""
        chains, rules = [], []
        for k in ks:
            c, r = lib.final_restore_lines(k)
            chains += c
            rules += r
        text = "*nat\n" + "\n".join(chains + rules) + "\nCOMMIT\n"
        ns.run([self.real["ebtables-restore"], "--noflush"], input=text)

    def replay_one(self, ns: Namespace, lib: LibvirtCommands, k: int) -> float:
        """Run libvirt's commands for binding k, one process each; returns the seconds."""
        total = 0.0
        for cmd in lib.commands(k):
            argv = [self.real[cmd.argv[0]], *cmd.argv[1:]]
            elapsed, proc = ns.timed(argv)
            total += elapsed
            if cmd.must and proc.returncode != 0:
                raise BenchError(f"libvirt replay: {shlex.join(cmd.argv)} -> {proc.returncode}: {proc.stderr.strip()}")
        listed = ns.run(
            [self.real["ebtables"], "--concurrent", "-t", "nat", "-L", f"virtfw-I-{port_name(k)}"], check=False
        )
        if listed.returncode != 0:  # checked, untimed: the replay really built the port's chains
            raise BenchError(f"libvirt replay: virtfw-I-{port_name(k)} missing afterwards")
        return total


# ---- output ------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def secs(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def count(value: float | None) -> str:
    return "-" if value is None else str(int(value))


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("[met]" if ok else "[MISSED]")


def div(x: float | None, y: float | None) -> float | None:
    return None if x is None or not y else x / y


def print_table(title: str, counts: list[int], rows: list[tuple[str, list[str], str]]) -> None:
    header = ["", *[f"N={n}" for n in counts], "target"]
    body = [[label, *cells, target] for label, cells, target in rows]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    print(title)
    print("-" * len(title))
    for row in [header, *body]:
        parts = [row[0].ljust(widths[0])] + [c.rjust(widths[i + 1]) for i, c in enumerate(row[1:-1])] + [row[-1]]
        print("  ".join(parts).rstrip())
    print()


def report(backend: str, counts: list[int], figs: dict[int, Figures], replay: dict[int, Figures]) -> None:
    def v(n: int, key: str) -> float | None:
        return figs[n].values.get(key)

    def r(n: int, key: str) -> float | None:
        return replay[n].values.get(key) if n in replay else None

    def cells(fn) -> list[str]:
        return [fn(n) for n in counts]

    def target(text: str, oks: list[bool | None]) -> str:
        known = [ok for ok in oks if ok is not None]
        return f"{text} {verdict(all(known) if known else None)}".rstrip()

    reload_ok = [None if v(n, "reload_n") is None else v(n, "reload_n") * 1000 <= TARGETS["reload_ms"] for n in counts]
    next_ok = [
        None if v(n, "next_create") is None else v(n, "next_create") * 1000 <= TARGETS["next_create_ms"] for n in counts
    ]
    lin = {n: div(v(n, "reload_2n"), v(n, "reload_n")) for n in counts}
    lin_ok = [None if lin[n] is None else lin[n] <= TARGETS["linearity"] for n in counts]
    speed = {n: div(r(n, "replay_total"), v(n, "reload_n")) for n in counts}
    speed_ok = [None if speed[n] is None else speed[n] >= TARGETS["replay_speedup"] for n in counts]
    rows = [
        ("(a) create x N, 1 process each, total s", cells(lambda n: secs(v(n, "create_total"))), ""),
        ("    per call, mean ms", cells(lambda n: ms(v(n, "create_mean"))), ""),
        ("    first 10 calls, mean ms", cells(lambda n: ms(v(n, "create_first"))), ""),
        ("    last 10 calls, mean ms", cells(lambda n: ms(v(n, "create_last"))), ""),
        ("(b) reload of N bindings, ms", cells(lambda n: ms(v(n, "reload_n"))),
         target(f"< {TARGETS['reload_ms']:.0f} ms" + (" (nftables)" if backend == "nftables" else " on nftables; none here"),
                reload_ok if backend == "nftables" else [])),
        ("    of which firewall tools, ms", cells(lambda n: ms(v(n, "reload_tools"))),
         "(one more run, timing wrappers on PATH)"),
        ("    tool calls", cells(lambda n: count(v(n, "reload_tool_calls"))), ""),
        ("    the same after 'nft flush ruleset', ms", cells(lambda n: ms(v(n, "reload_flushed"))), ""),
        ("    nwfilter-define of the filter of all N, ms", cells(lambda n: ms(v(n, "redefine"))),
         "(every binding instantiated and rendered again)"),
        ("(c) (N+1)th binding-create, ms", cells(lambda n: ms(v(n, "next_create"))),
         target(f"< {TARGETS['next_create_ms']:.0f} ms", next_ok)),
        ("    of which firewall tools, ms", cells(lambda n: ms(v(n, "next_create_tools"))), ""),
        ("    tool calls", cells(lambda n: count(v(n, "next_create_tool_calls"))), ""),
        ("    (N+1)th binding-delete, ms", cells(lambda n: ms(v(n, "next_delete"))), ""),
        ("(d) in-process create, ms per binding", cells(lambda n: ms(v(n, "inprocess_create"))),
         f"(set-up: {INPROCESS_SAMPLE} calls in one process = a call's work without interpreter start-up)"),
        ("(d) autostart re-creating the rest, ms", cells(lambda n: ms(v(n, "autostart_rest"))),
         "(set-up: N-" + str(INPROCESS_SAMPLE) + " recorded bindings in one batch)"),
        ("(d) reload of 2N bindings, ms", cells(lambda n: ms(v(n, "reload_2n"))), ""),
        ("    reload 2N / reload N", cells(lambda n: ratio(lin[n])), target(f"<= {TARGETS['linearity']}x", lin_ok)),
        ("(e) libvirt replay, commands per binding", cells(lambda n: count(r(n, "replay_commands"))), ""),
        ("    1 binding on top of 0, ms", cells(lambda n: ms(r(n, "replay_at_0"))), ""),
        ("    1 binding on top of N/2, ms", cells(lambda n: ms(r(n, "replay_at_half"))), ""),
        ("    1 binding on top of N (the (N+1)th), ms", cells(lambda n: ms(r(n, "replay_at_n"))), ""),
        ("    N bindings, total s", cells(lambda n: secs(r(n, "replay_total"))), "(see notes: integrated or fully replayed)"),
        ("(e)/(b) replay of N / virtfw reload", cells(lambda n: ratio(speed[n])), target(f">= {TARGETS['replay_speedup']:.0f}x", speed_ok)),
        ("(e)/(a) replay of N / N virtfw creates", cells(lambda n: ratio(div(r(n, "replay_total"), v(n, "create_total")))), ""),
        ("(N+1)th: libvirt replay / virtfw create", cells(lambda n: ratio(div(r(n, "replay_at_n"), v(n, "next_create")))), ""),
    ]  # fmt: skip
    print_table(f"backend {backend} (filter {FILTER}; targets stated for N=1000)", counts, rows)
    notes = [f"N={n}: {note}" for n in counts for note in figs[n].notes]
    notes += [f"N={n}: {note}" for n in counts if n in replay for note in replay[n].notes]
    for note in dict.fromkeys(notes):
        print(f"  note: {note}")
    print()


def bounds_figures(repeat: int) -> str:
    """(f): refusing an 8,000,000-rule binding, and instantiating one at the bound."""
    from virtfw.errors import VirtfwError
    from virtfw.filter.instantiate import MAX_RULES_PER_BINDING, instantiate
    from virtfw.filter.model import Binding
    from virtfw.filter.xml import parse_filter

    def cross():  # a new object each time: instantiation caches per filter object
        return parse_filter(
            "<filter name='cross' chain='ipv4'><rule action='accept' direction='in'>"
            "<tcp srcipaddr='$A' srcportstart='$B[@1]' dstportstart='$C[@2]'/></rule></filter>"
        )

    def binding(a: int, b: int, c: int) -> Binding:
        params = {"A": [f"10.0.{i // 256}.{i % 256}" for i in range(a)],
                  "B": [str(1000 + i) for i in range(b)], "C": [str(30000 + i) for i in range(c)]}  # fmt: skip
        return Binding("vnet0", "52:54:00:00:00:01", "cross", params)

    refusals, builds = [], []
    for _ in range(max(repeat, 1)):
        big, filt = binding(200, 200, 200), cross()
        start = time.perf_counter()
        try:
            instantiate(big, lambda name, filt=filt: filt)
        except VirtfwError:
            refusals.append(time.perf_counter() - start)
        else:
            raise BenchError("the 8,000,000-rule binding was not refused")
        at_bound, filt = binding(20, 20, MAX_RULES_PER_BINDING // 400), cross()
        start = time.perf_counter()
        count = len(instantiate(at_bound, lambda name, filt=filt: filt).rules)
        builds.append(time.perf_counter() - start)
    refuse, build = statistics.median(refusals) * 1000, statistics.median(builds) * 1000
    return (
        f"bounds (in-process, median of {len(refusals)})\n"
        f"  refuse 200x200x200 = 8,000,000 rules:   {refuse:.3f} ms\n"
        f"  instantiate {count:,} rules (the bound): {build:.0f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1000", help="binding counts N, comma-separated (default 1000)")
    parser.add_argument("--backend", choices=["nftables", "iptables", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="N=100, fewer repeats and samples: a smoke run")
    parser.add_argument("--repeat", type=int, default=5, help="runs of reload and of the (N+1)th create (median)")
    parser.add_argument("--samples", type=int, default=3, help="bindings replayed per point of the libvirt replay")
    parser.add_argument("--skip-replay", action="store_true", help="leave out (e), the libvirt replay")
    parser.add_argument(
        "--no-create-loop",
        action="store_true",
        help="leave out (a): set the N bindings up untimed, as (d) does (for quick profiling at scale)",
    )
    parser.add_argument("--full-replay", action="store_true", help="replay all N bindings one command at a time (slow)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print a cProfile of one reload and one (N+1)th create per backend and N",
    )
    parser.add_argument("--bounds-only", action="store_true", help="only (f), the bounds figures (no root needed)")
    args = parser.parse_args()
    if args.bounds_only:
        print(bounds_figures(args.repeat))
        return 0
    if os.geteuid() != 0:
        print("error: needs root (creates network namespaces)", file=sys.stderr)
        return 2
    if args.quick:
        args.counts, args.repeat, args.samples = "100", 3, 2
    counts = sorted({int(c) for c in args.counts.split(",") if c.strip()})
    if not counts or min(counts) < 1 or max(counts) > 30000:
        print("error: counts must be between 1 and 30000", file=sys.stderr)
        return 2
    backends = ["nftables", "iptables"] if args.backend == "both" else [args.backend]
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    errors: list[str] = []
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="virtfw-bench-bindings-") as tmp:
            bench = Bench(Path(tmp), args.repeat, args.samples, args.full_replay, args.profile, args.no_create_loop)
            versions = [subprocess.run([bench.real[t], "--version"], capture_output=True, text=True, check=False).stdout.strip()
                        for t in ("nft", "ebtables", "iptables") if t in bench.real]  # fmt: skip
            print(f"virtfw bindings bench; python {sys.version.split()[0]}; kernel {os.uname().release}; "
                  f"{os.cpu_count()} CPUs; repeat {args.repeat}")  # fmt: skip
            print("tools: " + "; ".join(versions))
            print(f"virtfw code measured: {bench.code_location()}; run as {shlex.join(bench.exe)} "
                  "(bytecode cached under a temp dir, warmed untimed)")  # fmt: skip
            print(f"load average at start: {Path('/proc/loadavg').read_text().strip()}")
            print("times are wall clock per process (fork to exit); each scenario in a fresh namespace\n")
            print(bounds_figures(args.repeat) + "\n")
            bench.warm()
            replay: dict[int, Figures] = {}
            for n in [] if args.skip_replay else counts:
                fig = Figures()
                try:
                    bench.replay_figures(n, fig)
                    replay[n] = fig
                except (BenchError, subprocess.SubprocessError, OSError) as exc:
                    errors.append(f"N={n} libvirt replay: {exc}")
            for backend in backends:
                figs: dict[int, Figures] = {}
                for n in counts:
                    print(f"  [{backend}] N={n} ...", file=sys.stderr, flush=True)
                    figs[n] = Figures()
                    try:
                        bench.virtfw_figures(backend, n, figs[n])
                    except (BenchError, subprocess.SubprocessError, OSError) as exc:
                        errors.append(f"[{backend}] N={n}: {exc}")
                report(backend, counts, figs, replay)
            for text in bench.profiles:
                print(text + "\n")
            print(f"load average at end: {Path('/proc/loadavg').read_text().strip()}; "
                  f"bench wall time {time.monotonic() - started:.0f} s\n")  # fmt: skip
    finally:
        cleanup_all()
    if errors:
        print("errors (figures shown as '-'):")
        for error in errors:
            print(f"  {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
