"""Files and kernel agree after any failure (issue 11, item 4).

What is proven: for each command below and each backend, a failure at any single point
of the command leaves either the state of before (OLD) or that of a clean run (NEW),
in the kernel and in the files alike, and ``virtfw verify`` then finds them agreeing.

How: ``helpers/inject_faults.py`` runs virtfw in-process inside the namespace and first
counts the command's fault points (each file write, file removal, changing tool call,
netlink change); then, for every point, a fresh namespace is set up as for OLD and the
command run with that one point failing: file writes with ENOSPC (at the first write to
the temp file) and EROFS (at its creation), removals with EROFS, tool calls and netlink
changes as failed tools. The command must exit 1 with exactly one ``error:`` line (or
succeed, leaving NEW), and the state must then equal OLD or NEW. NEW comes from a twin
namespace where the command ran without a fault.

State: the whole firewall (``nsutil.firewall_snapshot``: nft and the ``*-save`` views,
handles dropped, counters zeroed), the bridges and their addresses, dnsmasq processes
per network, the names of the state dir's files, the config dir's files with content,
``nwfilter-binding-list --json``, ``net-list --all --json`` and ``nwfilter-dumpxml``.
Every outcome is appended to ``$VIRTFW_FAULT_TABLE`` (JSON lines) when that is set.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers.faults import error_problems
from helpers.nsutil import Netns, Virtfw, add_port, dir_files, firewall_snapshot, netns, run

pytestmark = pytest.mark.netns

BACKENDS = ("nftables", "iptables")
DRIVER = Path(__file__).resolve().parents[1] / "helpers" / "inject_faults.py"
WORKERS = 2  # namespaces handled at once (the machine has two CPUs)
UNTRACKED = {"lock", "nft-kernel.json"}  # the lock; a cache read-only commands refresh

SECOND_XML = """<network>
  <name>second</name>
  <uuid>6f0c2a3e-1b1d-4a55-9d1e-0000000000f7</uuid>
  <bridge name="virbr7" stp="on" delay="0"/>
  <forward mode="nat"/>
  <ip address="192.168.77.1" netmask="255.255.255.0"/>
</network>
"""
OWN = """<filter name='own' chain='root'>
  <uuid>6f0c2a3e-1b1d-4a55-9d1e-0000000000f1</uuid>
  <rule action='drop' direction='out' priority='500'>
    <tcp dstportstart='{port}'/>
  </rule>
</filter>
"""
BINDING = """<filterbinding>
  <portdev name='{port}'/>
  <mac address='52:54:00:00:00:{n:02x}'/>
  <filterref filter='own'/>
</filterbinding>
"""

# ---------------------------------------------------------------------------
# running virtfw through the driver


@dataclass
class Box:
    """One namespace with its virtfw dirs."""

    ns: Netns
    vf: Virtfw
    tmp: Path

    def common(self) -> list[str]:
        return ["--config-dir", str(self.vf.config_dir), "--state-dir", str(self.vf.state_dir),
                "--backend", str(self.vf.backend)]  # fmt: skip

    def batch(self, commands: list[list[str]]) -> list[dict[str, Any]]:
        """Unfaulted commands, in one process; each must succeed."""
        argv = ["ip", "netns", "exec", self.ns.name, sys.executable, str(DRIVER), "batch"]
        done = json.loads(run(argv, input=json.dumps([self.common() + c for c in commands])).stdout)
        last = done[-1] if done else None
        assert last is not None and len(done) == len(commands) and last["returncode"] == 0, f"setup failed: {last}"
        return done

    def faulted(self, spec: str, args: list[str]) -> tuple[Any, dict[str, Any]]:
        log = self.tmp / "faults.json"
        argv = ["env", f"VIRTFW_FAULT_LOG={log}", "ip", "netns", "exec", self.ns.name,
                sys.executable, str(DRIVER), spec, "--", *self.common(), *args]  # fmt: skip
        proc = run(argv, check=False)
        points = json.loads(log.read_text()) if log.exists() else {"points": [], "injected": None}
        return proc, points


# ---------------------------------------------------------------------------
# scenarios


@dataclass
class Scenario:
    key: str
    setup: Callable[[Box], list[list[str]]]  # files to write, then the commands of OLD
    args: Callable[[Box], list[str]]
    filters: tuple[str, ...] = ()  # for nwfilter-dumpxml
    flush: bool = False  # the firewall flushed behind virtfw's back after setup
    # reload restores networks and bindings each on its own: each part old or new (MIXED),
    # the failed part named in the error line
    per_part: bool = False
    # removals that are also failed "stuck" (this one and every file write and removal after
    # it, as when the state dir turns read-only there), by the end of the path removed
    stuck: tuple[str, ...] = ()
    changes_nothing: bool = False  # an intact state: the clean run must pass no fault point at all
    tamper: Callable[[Box], None] | None = None  # a change behind virtfw's back after setup

    @property
    def disturbed(self) -> bool:
        """OLD is not what virtfw made (verify rightly reports it)."""
        return self.flush or self.tamper is not None


def _files(box: Box) -> None:
    (box.tmp / "own.xml").write_text(OWN.format(port=23))
    (box.tmp / "own-v2.xml").write_text(OWN.format(port=25))
    (box.tmp / "second.xml").write_text(SECOND_XML)
    for n, port in enumerate(("vnet0", "vnet1")):
        (box.tmp / f"{port}.xml").write_text(BINDING.format(port=port, n=n + 1))
        add_port(box.ns, port)


def _bound(box: Box) -> list[list[str]]:
    _files(box)
    return _binding_commands(box)


def _binding_commands(box: Box) -> list[list[str]]:
    return [["nwfilter-define", str(box.tmp / "own.xml")],
            ["nwfilter-binding-create", str(box.tmp / "vnet0.xml")],
            ["nwfilter-binding-create", str(box.tmp / "vnet1.xml")]]  # fmt: skip


def _two_networks(box: Box) -> list[list[str]]:
    _files(box)
    return [["net-start", "default"], ["net-define", str(box.tmp / "second.xml")], ["net-start", "second"]]


def _everything(box: Box) -> list[list[str]]:
    return _two_networks(box) + _binding_commands(box)


def _one_network(box: Box) -> list[list[str]]:
    """The shipped default network alone (its dnsmasq, the base chains only it uses)."""
    return [["net-start", "default"]]


def _second_defined(box: Box) -> list[list[str]]:
    return _two_networks(box)[:2]


def replace_binding_rule(box: Box) -> None:
    """vnet0's drop (filter own) replaced in place by an accept: as many rules as before."""
    ns = box.ns
    if box.vf.backend == "nftables":
        listed = json.loads(ns.sh("nft", "-j", "-a", "list", "table", "bridge", "virtfw_nwfilter_inet"))
        rule = next(item["rule"] for item in listed["nftables"]
                    if "rule" in item and item["rule"]["chain"] == "n-vnet0-out"
                    and any("drop" in statement for statement in item["rule"]["expr"]))  # fmt: skip
        ns.run(["nft", "replace", "rule", "bridge", "virtfw_nwfilter_inet", "n-vnet0-out",
                "handle", str(rule["handle"]), "accept"])  # fmt: skip
        return
    chain = next(c for c in ("FI-vnet0", "FO-vnet0", "HI-vnet0") if "-j DROP" in ns.sh("iptables", "-w", "-S", c))
    ns.run(["iptables", "-w", "-R", chain, "1", "-j", "ACCEPT"])


def _reload(box: Box) -> list[str]:
    return ["reload"]


def edit_definition(box: Box) -> None:
    """Filter own's definition edited by hand (port 23 -> 25): reload renders its bindings anew."""
    path = box.vf.config_dir / "nwfilter" / "own.xml"
    assert "'23'" in path.read_text(), path.read_text()
    path.write_text(path.read_text().replace("'23'", "'25'"))


SCENARIOS = [
    Scenario("nwfilter-define", _bound, lambda box: ["nwfilter-define", str(box.tmp / "own-v2.xml")], ("own",)),
    Scenario("nwfilter-binding-delete", _bound, lambda box: ["nwfilter-binding-delete", "vnet0"], ("own",)),
    Scenario("reload", _everything, lambda box: ["reload"], ("own",), per_part=True, changes_nothing=True),
    Scenario("reload-after-flush", _everything, lambda box: ["reload"], ("own",), flush=True, per_part=True),
    # the rebuild with our tables and chains in place: the bindings' records written before its batch
    Scenario("reload-after-change", _everything, _reload, ("own",), per_part=True, tamper=replace_binding_rule),
    # the rebuild that renders bindings anew: new records written before its batch, digests after
    Scenario("reload-after-edit", _everything, _reload, ("own",), per_part=True, tamper=edit_definition),
    Scenario("net-start", _second_defined, lambda box: ["net-start", "second"]),
    Scenario("net-destroy", _two_networks, lambda box: ["net-destroy", "second"], stuck=("/networks/second.json",)),
    Scenario(
        "net-destroy-last", _one_network, lambda box: ["net-destroy", "default"], stuck=("/networks/default.json",)
    ),
]


def flush_firewall(ns: Netns, backend: str) -> None:
    if backend == "nftables":
        ns.run(["nft", "flush", "ruleset"])
        return
    for tool, tables in (("iptables", ("filter", "nat", "mangle")), ("ip6tables", ("filter", "nat", "mangle")),
                         ("ebtables", ("filter", "nat"))):  # fmt: skip
        for table in tables:
            ns.run([tool, "-t", table, "-F"], check=False)


# ---------------------------------------------------------------------------
# state


def links(ns: Netns) -> list[str]:
    """Bridges and their addresses (no index or MAC: those differ between namespaces)."""
    shown = json.loads(ns.sh("ip", "-j", "-d", "address", "show"))
    out = []
    for link in shown:
        kind = (link.get("linkinfo") or {}).get("info_kind", "")
        addresses = sorted(f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []))
        up = "UP" in link.get("flags", [])
        out.append(f"{link['ifname']} {kind} {'up' if up else 'down'} {link.get('ifalias', '')} {addresses}")
    return sorted(out)


def dnsmasqs(ns: Netns) -> list[str]:
    found = []
    for pid in ns.sh("ip", "netns", "pids", ns.name).split():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"dnsmasq"):
            found.append(" ".join(Path(arg.decode()).name for arg in cmdline if arg))
    return sorted(found)


def state(box: Box, scenario: Scenario) -> dict[str, Any]:
    reads = [["nwfilter-binding-list", "--json"], ["net-list", "--all", "--json"]]
    reads += [["nwfilter-dumpxml", name] for name in scenario.filters]
    done = box.batch(reads)
    state_files = dir_files(box.vf.state_dir, skip=tuple(UNTRACKED))
    return {
        "firewall": {view: unordered_links(text) for view, text in firewall_snapshot(box.ns).items()},
        "links": links(box.ns),
        "dnsmasq": dnsmasqs(box.ns),
        "state dir": sorted(state_files),
        "config dir": dir_files(box.vf.config_dir),
        **{" ".join(result["args"][6:]): result["stdout"] for result in done},
    }


# The iptables filter backend's link chains hold one jump per port, each matching only that
# port: their order does not change what passes (a rollback that re-installs a port's rules
# puts its jumps after the others'), so it is not compared.
LINK_CHAINS = ("virtfw-in", "virtfw-out", "virtfw-host-in", "virtfw-in-post")


def unordered_links(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    run: list[str] = []
    block = ""  # the nft chain block we are in
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("chain "):
            block = stripped.split()[1]
        elif stripped == "}":
            block = ""
        in_link = block in LINK_CHAINS and not stripped.startswith("chain ") and stripped != "}"
        in_link = in_link or any(stripped.startswith(f"-A {chain} ") for chain in LINK_CHAINS)
        if in_link:
            run.append(line)
            continue
        out += sorted(run)
        run = []
        out.append(line)
    return "\n".join(out + sorted(run))


NETWORK_FILES = ("networks/", "firewall-", "dnsmasq/")


def part(state: dict[str, Any], networks: bool) -> dict[str, Any]:
    """The networks' (or the bindings') share of a state: reload restores each on its own."""
    firewall = {view: _firewall_part(text, networks) for view, text in state["firewall"].items()}
    files = [f for f in state["state dir"] if f.startswith(NETWORK_FILES) == networks]
    config = {k: v for k, v in state["config dir"].items() if k.startswith("networks/") == networks}
    structural = {"firewall", "links", "dnsmasq", "state dir", "config dir"}
    reads = {k: v for k, v in state.items() if k not in structural and k.startswith("net-list") == networks}
    shared = {"links": state["links"], "dnsmasq": state["dnsmasq"]} if networks else {}
    return {"firewall": firewall, "state dir": files, "config dir": config, **reads, **shared}


def _firewall_part(text: str, networks: bool) -> str:
    kept = []
    table = chain = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("table "):
            table = stripped
        elif stripped.startswith("chain "):
            chain = stripped.split()[1]
        ours = "virtfw_network" in table or chain.startswith("VIRTFW_") or "VIRTFW_" in line
        if ours == networks:
            kept.append(line)
    return "\n".join(kept)


def verify(box: Box) -> int:
    argv = ["ip", "netns", "exec", box.ns.name, sys.executable, "-m", "virtfw", *box.common(), "verify"]
    return run(argv, check=False).returncode


def differs(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    parts = []
    for key, want in expected.items():
        got = actual[key]
        if want == got:
            continue
        if isinstance(want, dict):
            changed = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
            parts.append(f"{key}: {', '.join(changed)}")
        else:
            parts.append(key)
    return parts


# ---------------------------------------------------------------------------
# one fault point


@dataclass
class Outcome:
    point: str
    what: str
    result: str  # OLD, NEW, OLD=NEW, MIXED (per part, see Scenario.per_part), THIRD
    detail: str

    def row(self) -> str:
        return f"{self.point:<16} {self.result:<8} {self.what[:90]}" + (
            f"\n{'':>26}{self.detail}" if self.detail else ""
        )


def prepared(tmp: Path, backend: str, scenario: Scenario):
    """A context: a fresh namespace in OLD state."""
    import contextlib

    @contextlib.contextmanager
    def made():
        with netns("vfwf") as ns:
            tmp.mkdir(parents=True)
            box = Box(ns, Virtfw(ns, tmp, backend), tmp)
            box.batch(scenario.setup(box))
            if scenario.flush:
                flush_firewall(ns, backend)
            if scenario.tamper is not None:
                scenario.tamper(box)
            yield box

    return made()


def normalized(value: Any, tmp: Path) -> Any:
    """Paths of one namespace's dirs made equal to another's."""
    return json.loads(json.dumps(value).replace(str(tmp), "$TMP"))


def judge(
    spec: str, what: str, proc: Any, after: dict, old: dict, new: dict, verified: int, scenario: Scenario
) -> Outcome:
    flushed = scenario.disturbed
    problems = [] if proc.returncode == 0 else error_problems(proc)
    result = "OLD=NEW" if after == old == new else "OLD" if after == old else "NEW" if after == new else "THIRD"
    if result == "THIRD" and scenario.per_part and proc.returncode == 1 and _each_part_old_or_new(after, old, new):
        result, verified = "MIXED", 0  # verify reports what the error line named as not restored
    if result == "OLD" and proc.returncode == 0:
        result, problems = "THIRD", [*problems, "exit 0 with the old state"]
    detail = []
    if result == "THIRD":
        detail.append("vs OLD: " + "; ".join(differs(old, after)) + " | vs NEW: " + "; ".join(differs(new, after)))
    if result == "OLD" and flushed:
        verified = 0  # OLD is the flushed firewall, which verify rightly reports
    if verified != 0:
        detail.append(f"verify exit {verified}")
    detail += problems
    if problems or verified != 0:
        result = result if result == "THIRD" else f"{result}!"
    message = proc.stderr.strip().splitlines()[-1:] if proc.returncode else ["exit 0"]
    return Outcome(spec, what, result, " / ".join([*detail, *message]) if detail else message[0][:120])


def one_fault(tmp: Path, backend: str, scenario: Scenario, spec: str, what: str, old: dict, new: dict) -> Outcome:
    with prepared(tmp, backend, scenario) as box:
        proc, _ = box.faulted(spec, scenario.args(box))
        proc.stderr = proc.stderr.replace(str(tmp), "$TMP")
        after = normalized(state(box, scenario), tmp)
        return judge(spec, what, proc, after, old, new, verify(box), scenario)


def _each_part_old_or_new(after: dict, old: dict, new: dict) -> bool:
    return all(part(after, nets) in (part(old, nets), part(new, nets)) for nets in (True, False))


def fault_specs(points: list[dict[str, Any]], stuck: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    specs = []
    for point in points:
        base = f"{point['kind']}:{point['n']}"
        if point["kind"] == "write":
            specs += [(f"{base}:ENOSPC", point["what"]), (f"{base}:EROFS", point["what"])]
        elif point["kind"] == "remove":
            specs.append((f"{base}:EROFS", point["what"]))
            if point["what"].endswith(stuck):
                specs += [(f"{base}:{code}:stuck", f"{point['what']} (and every file change after)")
                          for code in ("EROFS", "EACCES")]  # fmt: skip
        else:
            specs.append((base, point["what"]))
    return specs


def record(scenario: Scenario, backend: str, outcomes: list[Outcome]) -> None:
    path = os.environ.get("VIRTFW_FAULT_TABLE")
    if path:
        with open(path, "a") as handle:
            for outcome in outcomes:
                row = {"command": scenario.key, "backend": backend, **outcome.__dict__}
                handle.write(json.dumps(row) + "\n")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.key for s in SCENARIOS])
def test_failure_leaves_old_or_new(scenario: Scenario, backend: str, tmp_path: Path) -> None:
    with prepared(tmp_path / "old", backend, scenario) as box:
        old = normalized(state(box, scenario), box.tmp)
        assert verify(box) == 0 or scenario.disturbed, "OLD state does not verify"
    with prepared(tmp_path / "new", backend, scenario) as box:
        proc, points = box.faulted("count", scenario.args(box))
        assert proc.returncode == 0, f"clean run failed: {proc.stderr}"
        new = normalized(state(box, scenario), box.tmp)
        assert verify(box) == 0, "NEW state does not verify"
    specs = fault_specs(normalized(points["points"], tmp_path / "new"), scenario.stuck)
    if scenario.changes_nothing:  # reload of an intact state writes, runs and changes nothing
        assert specs == [] and new == old, specs
        return
    assert specs, "no fault point counted"
    stuck = [spec for spec, _ in specs if spec.endswith(":stuck")]
    assert len(stuck) == 2 * len(scenario.stuck), f"the removals to fail stuck were not all passed: {stuck}"
    with ThreadPoolExecutor(WORKERS) as pool:
        outcomes = list(pool.map(
            lambda item: one_fault(tmp_path / f"f{item[0]}", backend, scenario, *item[1], old, new),
            enumerate(specs),
        ))  # fmt: skip
    record(scenario, backend, outcomes)
    bad = [o for o in outcomes if o.result == "THIRD" or o.result.endswith("!")]
    table = "\n".join(o.row() for o in outcomes)
    assert not bad, f"{len(bad)}/{len(outcomes)} fault points leave a third state or break a contract:\n{table}"
