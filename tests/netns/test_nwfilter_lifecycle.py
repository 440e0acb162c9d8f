"""Lifecycle of filter bindings: exact teardown, redefinition, rollback, reload, bad input.

Every case runs in a network namespace created here (``nsutil.netns``) and deleted
afterwards, with its own config and state dirs; guest ports are stand-in links made in
that namespace (``nsutil.add_port``). Nothing touches the root namespace.

What "the firewall" means here is everything a namespace holds, read back and
normalized (``nsutil.firewall_snapshot``): ``nft list ruleset`` and the ``*-save``
output of iptables, ip6tables and ebtables, whatever the backend. "Nothing changed"
adds the state dir's files (status files of bindings, the base record; not the lock)
and the config dir's files (filter definitions).

Cases, each for both backends:

* teardown: with an admin's own nft tables and iptables/ip6tables/ebtables rules in
  place, bindings are created and deleted: the firewall is exactly as before. Deleting
  one of two bindings leaves the other's chains and dispatch exactly as they were, and
  the whole firewall equal to that of a namespace where only the other was created;
* redefinition: ``nwfilter-define`` of a changed filter re-instantiates every binding
  using it, directly or through a filterref, in one command, and leaves others alone;
  a redefinition that cannot be instantiated for one of them changes nothing at all;
* rollback: the Nth call of any firewall tool fails (wrapper first on PATH), for every
  N up to what a clean run needs, plus one: ``nwfilter-binding-create``, ``-delete`` and
  ``nwfilter-define`` (redefinition with bindings present) either succeed with the
  result of a clean run, or exit 1 with one ``error:`` line and nothing changed;
* SIGKILL during ``nwfilter-binding-create``: the next ``nwfilter-binding-delete``, or
  ``reload`` then delete, brings back the firewall and state of before;
* reload: after the rules are flushed behind virtfw's back, ``reload`` restores them
  exactly; a second ``reload`` changes nothing;
* bad input: every refused command exits 1 with one ``error:`` line, no traceback, and
  nothing changed; each refusal has a control, the same command with good input
  succeeding, so a command that always fails does not pass.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.faults import Instant, Wrappers, describe, error_problems, group_alive
from helpers.nsutil import Netns, Virtfw, add_port, dir_files, firewall_snapshot, netns, run, virtfw_argv

pytestmark = pytest.mark.netns

BACKENDS = ("nftables", "iptables")
NS_PREFIX = "vfwl"
MAC = "52:54:00:00:00:{:02x}"
WAIT = 20  # bound on every wait of the SIGKILL cases

# ---------------------------------------------------------------------------
# filters (small, so the rollback loop stays short)

INNER = """<filter name='lc-inner' chain='root'>
  <uuid>6f0c2a3e-1b1d-4a55-9d1e-000000000001</uuid>
  <rule action='drop' direction='out' priority='400'>
    <mac protocolid='{proto}'/>
  </rule>
</filter>
"""
INNER_V1 = INNER.format(proto="0x1234")
INNER_V2 = INNER.format(proto="0x1235")
# valid XML, but needs $IP, which only some bindings carry
INNER_NEEDS_IP = """<filter name='lc-inner' chain='root'>
  <uuid>6f0c2a3e-1b1d-4a55-9d1e-000000000001</uuid>
  <rule action='drop' direction='out' priority='400'>
    <mac protocolid='0x1235'/>
  </rule>
  <rule action='drop' direction='out' priority='410'>
    <ip srcipaddr='$IP'/>
  </rule>
</filter>
"""
OUTER = """<filter name='lc-outer' chain='root'>
  <uuid>6f0c2a3e-1b1d-4a55-9d1e-000000000002</uuid>
  <filterref filter='lc-inner'/>
  <rule action='drop' direction='in' priority='600'>
    <mac protocolid='0x4321'/>
  </rule>
</filter>
"""
OTHER = """<filter name='lc-other' chain='root'>
  <uuid>6f0c2a3e-1b1d-4a55-9d1e-000000000003</uuid>
  <rule action='drop' direction='out' priority='300'>
    <mac protocolid='0x5555'/>
  </rule>
</filter>
"""


def binding_xml(port: str, filt: str, mac: str, params: dict[str, str | list[str]] | None = None) -> str:
    lines = [
        "<filterbinding>",
        f"  <portdev name='{port}'/>",
        f"  <mac address='{mac}'/>",
        f"  <filterref filter='{filt}'>",
    ]
    for name, values in (params or {}).items():
        for value in [values] if isinstance(values, str) else values:
            lines.append(f"    <parameter name='{name}' value='{value}'/>")
    lines += ["  </filterref>", "</filterbinding>", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# snapshots and diffs


def _diff_text(label: str, old: str, new: str, names: tuple[str, str], limit: int = 60) -> str:
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), f"{names[0]}: {label}",
                                      f"{names[1]}: {label}", lineterm="", n=2))  # fmt: skip
    if len(lines) > limit:
        lines = lines[:limit] + [f"... ({len(lines) - limit} more diff lines)"]
    return "\n".join(lines)


def diff(expected: dict, actual: dict, names: tuple[str, str] = ("before", "after")) -> str:
    """Empty when equal; else a unified diff per differing part (dicts of files nested)."""
    parts = []
    for key in sorted(expected.keys() | actual.keys()):
        old, new = expected.get(key), actual.get(key)
        if old == new:
            continue
        if isinstance(old, dict) or isinstance(new, dict):
            old, new = old or {}, new or {}
            for path in sorted(old.keys() | new.keys()):
                if path not in new:
                    parts.append(f"{key} {path}: removed")
                elif path not in old:
                    parts.append(f"{key} {path}: appeared:\n{new[path].rstrip()[:2000]}")
                elif old[path] != new[path]:
                    parts.append(_diff_text(f"{key} {path}", old[path], new[path], names))
        else:
            parts.append(_diff_text(key, str(old or ""), str(new or ""), names))
    return "\n".join(parts)


_TIMESTAMP_KEYS = ("created", "updated", "time", "timestamp")


def masked_state(files: dict[str, str]) -> dict[str, str]:
    """State files comparable across two runs: JSON with timestamps dropped."""

    def scrub(value):
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items() if k not in _TIMESTAMP_KEYS}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    out = {}
    for path, text in files.items():
        try:
            out[path] = json.dumps(scrub(json.loads(text)), indent=1, sort_keys=True)
        except ValueError:
            out[path] = text
    return out


def blocks(fw: dict[str, str]) -> dict[str, list[str]]:
    """Every chain (and nft map/set) of a firewall snapshot -> its lines, keyed by
    ``<view> <table> <chain>``; rules of ``*-save`` views grouped by their chain."""
    out: dict[str, list[str]] = {}
    for view, text in fw.items():
        if not isinstance(text, str):
            continue  # state / config files of a full snapshot
        if view == "nft list ruleset":
            table = block = None
            for line in text.splitlines():
                if line.startswith("table "):
                    table, block = line[len("table ") :].rstrip(" {"), None
                elif line.startswith("\t") and not line.startswith("\t\t"):
                    stripped = line.strip()
                    if stripped.endswith("{"):
                        block = f"nft {table} {stripped[:-1].strip()}"
                        out[block] = []
                    elif stripped == "}":
                        block = None
                elif block and line.startswith("\t\t"):
                    out[block].append(line.strip())
        else:
            table = None
            for line in text.splitlines():
                if line.startswith("*"):
                    table = line[1:]
                elif line.startswith(":"):
                    out.setdefault(f"{view} {table} {line[1:].split()[0]}", [])
                elif line.startswith("-A "):
                    out.setdefault(f"{view} {table} {line.split()[1]}", []).append(line)
    return out


def _name_re(port: str) -> re.Pattern:
    return re.compile(rf"(?<![A-Za-z0-9_.]){re.escape(port)}(?![A-Za-z0-9_.])")


def port_view(fw: dict[str, str], port: str) -> dict[str, list[str]]:
    """What of a firewall belongs to one port: its chains (named after it), the lines of
    other chains that name it (jumps, ``-i PORT``), and its nft verdict-map elements."""
    name = _name_re(port)
    out: dict[str, list[str]] = {}
    for key, lines in blocks(fw).items():
        chain = key.split()[-1]
        if name.search(chain) and " map " not in f" {key} ":
            out[key] = lines
            continue
        if " map " in f" {key} ":
            elements = re.findall(r'"([^"]+)"\s*:\s*((?:jump|goto)\s+[\w.-]+)', " ".join(lines))
            mine = [f"{k} : {v}" for k, v in elements if k == port]
            if mine:
                out[key + " elements"] = mine
            continue
        mentions = [line for line in lines if name.search(line)]
        if mentions:
            out[key + " (lines naming the port)"] = mentions
    return out


def port_text(fw: dict[str, str], port: str) -> str:
    return "\n".join(f"[{k}]\n" + "\n".join(v) for k, v in sorted(port_view(fw, port).items()))


# Chains holding one dispatch rule per port (hooks and the global chains): the order of
# those rules does not matter, each matches its own port device only.
DISPATCH_CHAINS = {"PREROUTING", "POSTROUTING", "virtfw-in", "virtfw-out", "virtfw-in-post", "virtfw-host-in"}


def dispatch_order_free(snap: dict) -> dict:
    """A snapshot with the rules of the dispatch chains sorted: two rulesets that differ
    only in the order ports were hooked in compare equal. Everything else keeps its order."""
    out = dict(snap)
    for view, text in snap.items():
        if not isinstance(text, str):
            continue
        lines = text.splitlines()
        result: list[str] = []
        if view == "nft list ruleset":
            pending: list[str] = []
            active = False
            for line in lines:
                if line.startswith("\t") and not line.startswith("\t\t"):
                    result.extend(sorted(pending))
                    pending = []
                    header = line.strip()
                    active = (
                        header.endswith("{")
                        and header.split()[:1] == ["chain"]
                        and header.split()[1] in DISPATCH_CHAINS
                    )
                    result.append(line)
                elif active and line.startswith("\t\t") and not line.strip().startswith("type "):
                    pending.append(line)
                else:
                    result.extend(sorted(pending))
                    pending = []
                    result.append(line)
            result.extend(sorted(pending))
        else:
            pending = []
            for line in lines:
                if line.startswith("-A ") and line.split()[1] in DISPATCH_CHAINS:
                    pending.append(line)
                    continue
                result.extend(sorted(pending))
                pending = []
                result.append(line)
            result.extend(sorted(pending))
        out[view] = "\n".join(result)
    return out


# ---------------------------------------------------------------------------
# the lab: one namespace, one config dir, one state dir


class Lab:
    def __init__(self, ns: Netns, root: Path, backend: str) -> None:
        self.ns = ns
        self.root = root
        self.backend = backend
        self.vf = Virtfw(ns, root, backend)
        self.files = root / "xml"
        self.files.mkdir(parents=True, exist_ok=True)
        self._n = 0

    # files and commands

    def write(self, stem: str, text: str) -> str:
        self._n += 1
        path = self.files / f"{self._n:03d}-{re.sub(r'[^A-Za-z0-9_-]', '_', stem)}.xml"
        path.write_text(text)
        return str(path)

    def __call__(self, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        proc = self.vf(*args, check=False, env=env)
        if check and proc.returncode != 0:
            raise AssertionError(f"virtfw {shlex.join(args)}: {describe(proc)}")
        return proc

    def ports(self, *names: str) -> None:
        for name in names:
            add_port(self.ns, name)

    def define(self, xml: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        return self("nwfilter-define", self.write("filter", xml), check=check, env=env)

    def bind_args(self, port: str, filt: str, params: dict | None = None, mac: str | None = None) -> list[str]:
        mac = mac or MAC.format(int(re.sub(r"\D", "", port) or 0) % 256)
        return ["nwfilter-binding-create", self.write(f"binding-{port}", binding_xml(port, filt, mac, params))]

    def bind(self, port: str, filt: str, params: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return self(*self.bind_args(port, filt, params), check=check)

    def unbind(self, port: str, check: bool = True) -> subprocess.CompletedProcess:
        return self("nwfilter-binding-delete", port, check=check)

    def bound(self) -> dict[str, str]:
        rows = json.loads(self("nwfilter-binding-list", "--json").stdout or "[]")
        return {row["portdev"]: row["filter"] for row in rows}

    # reading back

    def fw(self) -> dict[str, str]:
        return firewall_snapshot(self.ns)

    def state(self) -> dict[str, str]:
        return dir_files(self.vf.state_dir)

    def config(self) -> dict[str, str]:
        return dir_files(self.vf.config_dir)

    def snapshot(self) -> dict:
        """Firewall, state files and config files: all a command may change."""
        return {**self.fw(), "state": self.state(), "config": self.config()}


def live(snap: dict) -> dict:
    return {k: v for k, v in snap.items() if k not in ("state", "config")}


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


class Labs:
    """Fresh labs on demand, each in its own namespace, all deleted at the end."""

    def __init__(self, tmp_path: Path, backend: str) -> None:
        self.tmp_path, self.backend, self.count = tmp_path, backend, 0

    def fresh(self, label: str):
        self.count += 1
        return _LabContext(self.tmp_path / f"{self.count:03d}-{label}", self.backend)


class _LabContext:
    def __init__(self, root: Path, backend: str) -> None:
        self.root, self.backend = root, backend

    def __enter__(self) -> Lab:
        self._cm = netns(NS_PREFIX)
        ns = self._cm.__enter__()
        return Lab(ns, self.root, self.backend)

    def __exit__(self, *exc) -> None:
        self._cm.__exit__(*exc)


@pytest.fixture
def labs(tmp_path, backend) -> Labs:
    return Labs(tmp_path, backend)


def _our_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    mine = re.compile(rf"^{NS_PREFIX}{os.getpid()}x")
    return [line.split()[0] for line in out.splitlines() if line.strip() and mine.match(line.split()[0])]


@pytest.fixture(scope="module", autouse=True)
def _no_namespace_left_behind():
    yield
    assert _our_namespaces() == [], "namespaces left behind"


# ---------------------------------------------------------------------------
# an admin's own rules, which virtfw must never disturb

ADMIN_NFT = """
table bridge admin {
    chain c { type filter hook prerouting priority 0; policy accept; ether type 0x88b5 counter accept; }
}
table inet admin {
    set trusted { type ipv4_addr; elements = { 192.0.2.10 } }
    chain input { type filter hook input priority 0; policy accept; tcp dport 22 ip saddr @trusted accept; }
    chain forward { type filter hook forward priority 0; policy accept; }
}
"""
ADMIN_XTABLES = [
    ["iptables", "-w", "-N", "ADMIN"],
    ["iptables", "-w", "-A", "ADMIN", "-s", "192.0.2.1", "-j", "ACCEPT"],
    ["iptables", "-w", "-A", "FORWARD", "-j", "ADMIN"],
    ["iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "ACCEPT"],
    ["ip6tables", "-w", "-A", "FORWARD", "-s", "2001:db8::1", "-j", "ACCEPT"],
    ["ebtables", "--concurrent", "-t", "nat", "-A", "PREROUTING", "-i", "adm0", "-j", "ACCEPT"],
    ["ebtables", "--concurrent", "-t", "nat", "-A", "POSTROUTING", "-o", "adm0", "-j", "ACCEPT"],
    ["ebtables", "--concurrent", "-A", "FORWARD", "-p", "0x88b5", "-j", "ACCEPT"],
]


def add_admin_rules(lab: Lab) -> None:
    lab.ns.run(["nft", "-f", "-"], input=ADMIN_NFT)
    for argv in ADMIN_XTABLES:
        lab.ns.run(argv)
    fw = lab.fw()
    assert "table bridge admin" in fw["nft list ruleset"] and "-i adm0" in fw.get("ebtables-save", "-i adm0")


# ---------------------------------------------------------------------------
# 1. teardown


def test_teardown_is_exact(labs, backend):
    with labs.fresh("teardown") as lab:
        lab.ports("vnet1", "vnet2", "vnet3")
        add_admin_rules(lab)
        before = lab.snapshot()
        lab.define(INNER_V1)
        lab.define(OUTER)
        defined = lab.snapshot()
        lab.bind("vnet1", "clean-traffic", {"IP": "10.0.0.5"})
        lab.bind("vnet2", "lc-outer")
        lab.bind("vnet3", "clean-traffic", {"IP": ["10.0.0.6", "10.0.0.7"]})
        during = lab.fw()
        # control: the bindings really are in the firewall, each with its own rules
        assert diff(live(before), during), "creating three bindings changed nothing in the firewall"
        for port in ("vnet1", "vnet2", "vnet3"):
            assert port_view(during, port), f"no rules of {port} in the firewall:\n{during}"
        assert "10.0.0.7" in port_text(during, "vnet3") and "10.0.0.7" not in port_text(during, "vnet1")
        assert lab.bound() == {"vnet1": "clean-traffic", "vnet2": "lc-outer", "vnet3": "clean-traffic"}
        for port in ("vnet2", "vnet1", "vnet3"):
            lab.unbind(port)
        assert lab.bound() == {}
        d = diff(defined, lab.snapshot())
        assert not d, f"deleting every binding does not restore the firewall and state exactly:\n{d}"
        # and the admin's rules were there all along
        assert "table inet admin" in lab.fw()["nft list ruleset"]


def test_delete_one_keeps_the_other(labs, backend):
    with labs.fresh("only-b") as lab:
        lab.ports("vnet1", "vnet2")
        add_admin_rules(lab)
        lab.define(INNER_V1)
        lab.bind("vnet2", "lc-inner")
        only_b = lab.fw()
    with labs.fresh("a-and-b") as lab:
        lab.ports("vnet1", "vnet2")
        add_admin_rules(lab)
        lab.define(INNER_V1)
        lab.bind("vnet1", "clean-traffic", {"IP": "10.0.0.5"})
        lab.bind("vnet2", "lc-inner")
        both = lab.fw()
        b_before = port_view(both, "vnet2")
        assert b_before and port_view(both, "vnet1"), "control: both ports have rules"
        assert "0x1234" in port_text(both, "vnet2")
        lab.unbind("vnet1")
        after = lab.fw()
        assert not port_view(after, "vnet1"), f"rules of the deleted binding remain:\n{port_text(after, 'vnet1')}"
        b_after = port_view(after, "vnet2")
        assert b_after == b_before, "the other binding's chains/dispatch changed:\n" + _diff_text(
            "vnet2", port_text(both, "vnet2"), port_text(after, "vnet2"), ("before", "after")
        )
        d = diff(only_b, after, ("only vnet2 bound", "vnet1 bound then deleted"))
        assert not d, f"the firewall differs from a namespace where only vnet2 was bound:\n{d}"
        assert lab.bound() == {"vnet2": "lc-inner"}
        status = json.loads(lab("nwfilter-binding-list", "--json").stdout)
        assert [row.get("state") for row in status] == ["active"]


# ---------------------------------------------------------------------------
# 2. redefinition


def test_redefinition_reinstantiates_every_user(labs, backend):
    with labs.fresh("redefine") as lab:
        lab.ports("vnet1", "vnet2", "vnet3", "vnet4")
        lab.define(INNER_V1)
        lab.define(OUTER)
        lab.define(OTHER)
        lab.bind("vnet1", "lc-inner", {"IP": "10.0.0.5"})  # directly (and it has $IP)
        lab.bind("vnet2", "lc-outer")  # through a filterref (no $IP)
        lab.bind("vnet3", "clean-traffic", {"IP": "10.0.0.7"})  # does not use lc-inner
        lab.bind("vnet4", "lc-other")
        before = lab.snapshot()
        for port in ("vnet1", "vnet2"):  # control: the old protocol is there, the new one not
            text = port_text(before, port)
            assert "0x1234" in text and "0x1235" not in text, f"{port} before redefinition:\n{text}"

        # a redefinition one binding (vnet2, no IP) cannot take: refused, nothing changed
        proc = lab.define(INNER_NEEDS_IP, check=False)
        problems = error_problems(proc)
        d = diff(before, lab.snapshot())
        if d:
            problems.append(f"changed:\n{d}")
        assert not problems, "redefinition invalid for one binding:\n" + "\n".join(problems)
        assert "IP" in proc.stderr, f"the error does not say what is missing: {proc.stderr!r}"

        # a valid one: every user changes at once, the others do not
        proc = lab.define(INNER_V2)
        after = lab.snapshot()
        for port in ("vnet1", "vnet2"):
            text = port_text(after, port)
            assert "0x1235" in text and "0x1234" not in text, f"{port} not re-instantiated:\n{text}"
        assert "0x4321" in port_text(after, "vnet2"), "vnet2 lost the rule of lc-outer itself"
        for port in ("vnet3", "vnet4"):
            assert port_view(after, port) == port_view(before, port), f"{port} (not a user) changed"
        assert after["config"] != before["config"], "the new definition was not saved"
        assert "0x1235" in lab("nwfilter-dumpxml", "lc-inner").stdout
        assert lab.bound() == {"vnet1": "lc-inner", "vnet2": "lc-outer", "vnet3": "clean-traffic", "vnet4": "lc-other"}

        # now that vnet2 is gone, the $IP version is valid for every user: accepted
        lab.unbind("vnet2")
        lab.define(INNER_NEEDS_IP)
        assert "10.0.0.5" in port_text(lab.fw(), "vnet1"), "control: the $IP definition instantiates on vnet1"

        # and the rules match a fresh instantiation of the current definitions
        redefined = lab.fw()
        lab.unbind("vnet1")
        lab.bind("vnet1", "lc-inner", {"IP": "10.0.0.5"})
        assert port_view(lab.fw(), "vnet1") == port_view(redefined, "vnet1"), (
            "re-instantiated rules differ from a fresh binding of the same filter:\n"
            + _diff_text("vnet1", port_text(redefined, "vnet1"), port_text(lab.fw(), "vnet1"), ("redefined", "fresh"))
        )


# ---------------------------------------------------------------------------
# 3. reload


def _flushes(backend: str) -> list[tuple[str, list[list[str]]]]:
    common = [("nft flush ruleset", [["nft", "flush", "ruleset"]])]
    if backend == "nftables":
        return common + [
            ("nft flush table (rules only)", [["nft", "flush", "table", "bridge", "virtfw_nwfilter_ethernet"]]),
            ("nft delete table", [["nft", "delete", "table", "bridge", "virtfw_nwfilter_ethernet"]]),
        ]
    return common + [
        ("ebtables -t nat -F, iptables -F, ip6tables -F", [
            ["ebtables", "--concurrent", "-t", "nat", "-F"], ["iptables", "-w", "-F"], ["ip6tables", "-w", "-F"]]),
        ("ebtables -t nat -F only", [["ebtables", "--concurrent", "-t", "nat", "-F"]]),
    ]  # fmt: skip


@pytest.mark.parametrize("flush", range(3))
def test_reload_restores_and_is_idempotent(labs, backend, flush):
    label, commands = _flushes(backend)[flush]
    with labs.fresh("reload") as lab:
        lab.ports("vnet1", "vnet2", "vnet3")
        lab.define(INNER_V1)
        lab.define(OUTER)
        lab.bind("vnet1", "clean-traffic", {"IP": "10.0.0.5"})
        lab.bind("vnet2", "lc-outer")
        lab.bind("vnet3", "lc-inner")
        installed = lab.snapshot()
        for argv in commands:
            lab.ns.run(argv)
        flushed = lab.fw()
        assert diff(live(installed), flushed), f"control: '{label}' removed nothing"
        lab("reload")
        d = diff(installed, lab.snapshot(), ("installed", "after reload"))
        assert not d, f"reload after '{label}' does not restore the rules exactly:\n{d}"
        again = lab.snapshot()
        lab("reload")
        d = diff(again, lab.snapshot(), ("after one reload", "after a second"))
        assert not d, f"a second reload changed something:\n{d}"
        # the restored bindings are still managed: deleting them empties our part
        for port in ("vnet1", "vnet2", "vnet3"):
            lab.unbind(port)
        fw = lab.fw()
        for port in ("vnet1", "vnet2", "vnet3"):
            assert not port_view(fw, port), f"rules of {port} remain after reload + delete:\n{port_text(fw, port)}"


def test_reload_without_changes_changes_nothing(labs, backend):
    with labs.fresh("reload-noop") as lab:
        lab.ports("vnet1", "vnet2")
        add_admin_rules(lab)
        lab.define(INNER_V1)
        lab.bind("vnet1", "clean-traffic", {"IP": "10.0.0.5"})
        lab.bind("vnet2", "lc-inner")
        before = lab.snapshot()
        lab("reload")
        d = diff(before, lab.snapshot())
        assert not d, f"reload of an intact ruleset changed it:\n{d}"
        lab.unbind("vnet1")
        lab.unbind("vnet2")
        assert not port_view(lab.fw(), "vnet1") and not port_view(lab.fw(), "vnet2")


def test_create_after_a_flush_installs_the_new_binding(labs, backend):
    """A create next to other bindings does not look at the live tables first (their
    records say the shared parts are there); after a flush they are not, and the
    create must still install its binding whole."""
    with labs.fresh("create-flushed") as lab:
        lab.ports("vnet1", "vnet2")
        lab.bind("vnet1", "clean-traffic", {"IP": "10.0.0.5"})
        lab.ns.run(["nft", "flush", "ruleset"])
        assert not port_view(lab.fw(), "vnet1"), "control: the flush removed vnet1's rules"
        lab.bind("vnet2", "clean-traffic", {"IP": "10.0.0.6"})
        assert port_view(lab.fw(), "vnet2"), "vnet2's rules are not installed"
        proc = lab("verify", check=False)
        assert proc.returncode == 3 and "vnet1" in proc.stdout + proc.stderr, describe(proc)
        assert "binding vnet2" not in proc.stdout + proc.stderr, f"vnet2 is incomplete:\n{proc.stdout}"
        lab("reload")
        assert lab("verify", check=False).returncode == 0


def test_reload_takes_up_a_filter_edited_by_hand(labs, backend):
    """reload re-installs unchanged bindings from their records, so it must notice a
    filter file changed behind its back, also one that a binding only reaches through
    a filterref, and one without a uuid."""
    with labs.fresh("reload-edit") as lab:
        lab.ports("vnet1", "vnet2")
        lab.define(INNER_V1)
        lab.define(OUTER)
        lab.bind("vnet1", "lc-outer")
        lab.bind("vnet2", "clean-traffic", {"IP": "10.0.0.7"})
        before = lab.fw()
        assert "0x1234" in port_text(before, "vnet1"), "control: the old protocol is installed"
        lab("reload")
        assert port_view(lab.fw(), "vnet1") == port_view(before, "vnet1"), "control: reload alone changes nothing"
        edited = re.sub(r"\s*<uuid>[^<]*</uuid>", "", INNER_V2)
        (lab.vf.config_dir / "nwfilter" / "lc-inner.xml").write_text(edited)
        lab("reload")
        after = lab.fw()
        text = port_text(after, "vnet1")
        assert "0x1235" in text and "0x1234" not in text, f"reload kept the rules of the old file:\n{text}"
        assert port_view(after, "vnet2") == port_view(before, "vnet2"), "vnet2 (not a user) changed"


# ---------------------------------------------------------------------------
# 4. bad input


@dataclass
class Bad:
    label: str
    args: Callable[[Lab], list[str]]  # the refused command
    control: Callable[[Lab], list[str]] | None = None  # the same with good input: succeeds
    says: tuple[str, ...] = ()  # words the error line must contain


def _filter_cmd(xml: str) -> Callable[[Lab], list[str]]:
    return lambda lab: ["nwfilter-define", lab.write("bad", xml)]


def _bind_cmd(port: str, filt: str = "lc-inner", params: dict | None = None, mac: str | None = None):
    return lambda lab: lab.bind_args(port, filt, params, mac)


GOOD_RULE = "<rule action='drop' direction='out' priority='500'><mac protocolid='0x1111'/></rule>"


def _filt(name: str, body: str) -> str:
    return f"<filter name='{name}' chain='root'>\n  {body}\n</filter>\n"


BAD_PORTS = ["vnet0;x", "a b", "$(x)", "{x}", "vnet`id`", "x" * 16, "../x", 'vnet0"', "-vnet0"]
BAD_VALUES = ["10.0.0.5;x", "10.0.0.5 x", "$(x)", "{x}", '10.0.0.5"', "`id`", "10.0.0.5}"]

BAD_CASES = [
    Bad("filterref cycle A -> B -> A", _filter_cmd(_filt("lc-cyc-a", "<filterref filter='lc-cyc-b'/>")),
        _filter_cmd(_filt("lc-cyc-a", "<filterref filter='lc-inner'/>")), ("lc-cyc-a", "lc-cyc-b", "cycle")),
    Bad("filterref to itself", _filter_cmd(_filt("lc-self", "<filterref filter='lc-self'/>")),
        _filter_cmd(_filt("lc-self", "<filterref filter='lc-inner'/>")), ("lc-self", "cycle")),
    Bad("unknown element in a rule", _filter_cmd(_filt("lc-bad", "<rule action='drop' direction='out'><bogus/></rule>")),
        _filter_cmd(_filt("lc-bad", GOOD_RULE)), ("bogus",)),
    Bad("unknown element in a filter", _filter_cmd(_filt("lc-bad", "<frobnicate/>")),
        _filter_cmd(_filt("lc-bad", GOOD_RULE)), ("frobnicate",)),
    Bad("unknown attribute of a rule", _filter_cmd(_filt("lc-bad", GOOD_RULE.replace("<rule ", "<rule colour='red' "))),
        _filter_cmd(_filt("lc-bad", GOOD_RULE)), ("colour",)),
    Bad("unknown attribute of a protocol", _filter_cmd(_filt("lc-bad", GOOD_RULE.replace("<mac ", "<mac bogusattr='1' "))),
        _filter_cmd(_filt("lc-bad", GOOD_RULE)), ("bogusattr",)),
    Bad("wrong type: port number", _filter_cmd(_filt("lc-bad", "<rule action='drop' direction='out'><tcp dstportstart='http'/></rule>")),
        _filter_cmd(_filt("lc-bad", "<rule action='drop' direction='out'><tcp dstportstart='80'/></rule>")), ("dstportstart",)),
    Bad("wrong type: IP address", _filter_cmd(_filt("lc-bad", "<rule action='drop' direction='out'><ip srcipaddr='300.1.1.1'/></rule>")),
        _filter_cmd(_filt("lc-bad", "<rule action='drop' direction='out'><ip srcipaddr='10.1.1.1'/></rule>")), ("srcipaddr",)),
    Bad("wrong type: priority", _filter_cmd(_filt("lc-bad", GOOD_RULE.replace("priority='500'", "priority='high'"))),
        _filter_cmd(_filt("lc-bad", GOOD_RULE)), ("priority",)),
    Bad("wrong value: action", _filter_cmd(_filt("lc-bad", GOOD_RULE.replace("action='drop'", "action='maybe'"))),
        _filter_cmd(_filt("lc-bad", GOOD_RULE)), ("action",)),
    Bad("filter name with shell syntax", _filter_cmd(_filt("lc;x", GOOD_RULE)), _filter_cmd(_filt("lc-x", GOOD_RULE))),
    *[Bad(f"portdev {port!r}", _bind_cmd(port), _bind_cmd("vnet5")) for port in BAD_PORTS],
    *[Bad(f"parameter value {value!r}", _bind_cmd("vnet5", "clean-traffic", {"IP": value}),
          _bind_cmd("vnet5", "clean-traffic", {"IP": "10.0.0.5"})) for value in BAD_VALUES],
    Bad("parameter name with shell syntax", _bind_cmd("vnet5", "lc-inner", {"X;y": "1"}),
        _bind_cmd("vnet5", "lc-inner", {"Xy": "1"})),
    Bad("MAC address that is not one", _bind_cmd("vnet5", mac="52:54:00:00:00:zz"), _bind_cmd("vnet5", mac="52:54:00:00:00:0a")),
    Bad("binding to an undefined filter", _bind_cmd("vnet5", "lc-nosuchfilter"), _bind_cmd("vnet5", "lc-inner"),
        ("lc-nosuchfilter",)),
    Bad("binding to a filter name with shell syntax", _bind_cmd("vnet5", "lc-inner;x"), _bind_cmd("vnet5", "lc-inner")),
    Bad("binding that needs $IP without IP", _bind_cmd("vnet5", "clean-traffic"),
        _bind_cmd("vnet5", "clean-traffic", {"IP": "10.0.0.5"}), ("IP",)),
    Bad("a second binding on the same port", _bind_cmd("vnet1", "lc-inner"), _bind_cmd("vnet5", "lc-inner"), ("vnet1",)),
    Bad("deleting a binding that does not exist", lambda lab: ["nwfilter-binding-delete", "vnet9"],
        lambda lab: ["nwfilter-binding-delete", "vnet1"], ("vnet9",)),
    Bad("deleting a binding of a port with shell syntax", lambda lab: ["nwfilter-binding-delete", "vnet1;x"],
        lambda lab: ["nwfilter-binding-delete", "vnet1"]),
    Bad("undefine a filter a binding uses", lambda lab: ["nwfilter-undefine", "lc-other"],
        lambda lab: ["nwfilter-undefine", "lc-unused"], ("lc-other",)),
    Bad("undefine a filter another filter references", lambda lab: ["nwfilter-undefine", "lc-leaf"],
        lambda lab: ["nwfilter-undefine", "lc-unused"], ("lc-leaf",)),
    Bad("undefine a filter used by a binding through a filterref", lambda lab: ["nwfilter-undefine", "lc-inner"],
        lambda lab: ["nwfilter-undefine", "lc-unused"], ("lc-inner",)),
    Bad("undefine a filter that is not defined", lambda lab: ["nwfilter-undefine", "lc-nosuchfilter"],
        lambda lab: ["nwfilter-undefine", "lc-unused"], ("lc-nosuchfilter",)),
]  # fmt: skip


def _bad_input_lab(lab: Lab) -> None:
    lab.ports("vnet1", "vnet2", "vnet5")
    lab.define(INNER_V1)
    lab.define(OUTER)
    lab.define(OTHER)
    lab.define(_filt("lc-cyc-b", "<filterref filter='lc-cyc-a'/>"))  # lc-cyc-a: not defined yet
    lab.define(_filt("lc-leaf", GOOD_RULE))
    lab.define(_filt("lc-mid", "<filterref filter='lc-leaf'/>"))  # unbound filter referencing lc-leaf
    lab.define(_filt("lc-unused", GOOD_RULE))
    lab.bind("vnet1", "lc-other")
    lab.bind("vnet2", "lc-outer")  # uses lc-inner through a filterref only


def test_bad_input_changes_nothing(labs, backend):
    failures: list[str] = []
    with labs.fresh("bad") as lab:
        _bad_input_lab(lab)
        for case in BAD_CASES:
            before = lab.snapshot()
            args = case.args(lab)
            proc = lab(*args, check=False)
            problems = error_problems(proc)
            line = proc.stderr.strip().lower()
            missing = [word for word in case.says if word.lower() not in line]
            if missing:
                problems.append(f"the error does not name {missing}")
            d = diff(before, lab.snapshot())
            if d:
                problems.append(f"something changed:\n{d}")
            if problems:
                failures.append(f"[{backend}] {case.label}: virtfw {shlex.join(args)}\n  {describe(proc)}\n  "
                                + "\n  ".join(problems))  # fmt: skip
    assert not failures, f"{len(failures)} of {len(BAD_CASES)} bad inputs mishandled:\n\n" + "\n\n".join(failures)


def test_bad_input_controls_succeed(labs, backend):
    """The controls: each refused command, with good input instead, is accepted."""
    failures: list[str] = []
    with labs.fresh("bad-control") as lab:
        _bad_input_lab(lab)
        for case in BAD_CASES:
            if case.control is None:
                continue
            args = case.control(lab)
            before = lab.snapshot()
            proc = lab(*args, check=False)
            if proc.returncode != 0:
                failures.append(f"[{backend}] control of {case.label}: virtfw {shlex.join(args)}\n  {describe(proc)}")
                continue
            if not diff(before, lab.snapshot()):
                failures.append(f"[{backend}] control of {case.label}: exit 0 but nothing changed")
            _undo(lab, args)
    assert not failures, "controls failed:\n\n" + "\n\n".join(failures)


def _undo(lab: Lab, args: list[str]) -> None:
    """Take back a successful control so the next case starts from the same place."""
    command = args[0]
    if command == "nwfilter-binding-create":
        port = re.search(r"<portdev name='([^']*)'", Path(args[1]).read_text()).group(1)
        lab.unbind(port)
    elif command == "nwfilter-define":
        name = re.search(r"<filter name='([^']*)'", Path(args[1]).read_text()).group(1)
        if name not in ("lc-inner", "lc-outer", "lc-other", "lc-cyc-a"):  # lc-cyc-b references lc-cyc-a
            lab("nwfilter-undefine", name)
    elif command == "nwfilter-binding-delete":
        lab.bind("vnet1", "lc-other")
    elif command == "nwfilter-undefine":
        lab.define(_filt(args[1], GOOD_RULE))


# ---------------------------------------------------------------------------
# 5. rollback: the Nth firewall tool call fails


@pytest.fixture
def wrappers(tmp_path) -> Wrappers:
    return Wrappers(tmp_path / "wrap")


@dataclass
class Scenario:
    title: str
    prepare: Callable[[Lab], None]
    action: Callable[[Lab], list[str]]
    port: str | None = None  # the binding a create makes (SIGKILL cases)


def _prep_ports(lab: Lab) -> None:
    lab.ports("vnet1", "vnet2")
    lab.define(INNER_V1)


def _prep_one(lab: Lab) -> None:
    _prep_ports(lab)
    lab.bind("vnet2", "lc-inner")


def _prep_two(lab: Lab) -> None:
    _prep_one(lab)
    lab.bind("vnet1", "lc-inner")


def _prep_users(lab: Lab) -> None:
    _prep_ports(lab)
    lab.define(OUTER)
    lab.bind("vnet1", "lc-inner")
    lab.bind("vnet2", "lc-outer")


SCENARIOS = {
    "create-first": Scenario("binding-create, no other binding", _prep_ports,
                             lambda lab: lab.bind_args("vnet1", "lc-inner"), "vnet1"),
    "create-second": Scenario("binding-create while another binding exists", _prep_one,
                              lambda lab: lab.bind_args("vnet1", "lc-inner"), "vnet1"),
    "delete-last": Scenario("binding-delete of the only binding", _prep_one,
                            lambda lab: ["nwfilter-binding-delete", "vnet2"]),
    "delete-one-of-two": Scenario("binding-delete, another binding stays", _prep_two,
                                  lambda lab: ["nwfilter-binding-delete", "vnet1"]),
    "redefine": Scenario("nwfilter-define of a filter two bindings use", _prep_users,
                         lambda lab: ["nwfilter-define", lab.write("filter", INNER_V2)]),
}  # fmt: skip


@dataclass
class Baseline:
    calls: list[str]
    after: dict  # snapshot after a clean run (live part compared; state/config masked)


def baseline(labs: Labs, wrap: Wrappers, sc: Scenario) -> Baseline:
    with labs.fresh("count") as lab:
        sc.prepare(lab)
        before = lab.snapshot()
        wrap.arm()
        proc = lab(*sc.action(lab), check=False, env=wrap.env)
        assert proc.returncode == 0, f"clean run of '{sc.title}' failed: {describe(proc)}"
        calls = wrap.calls()
        after = lab.snapshot()
    assert calls, "the wrappers saw no call: is PATH passed through?"
    assert diff(before, after), f"control: a clean run of '{sc.title}' changed nothing"
    return Baseline(calls, after)


def comparable(snap: dict) -> dict:
    """A snapshot comparable across namespaces: state JSON without timestamps."""
    return {**snap, "state": masked_state(snap["state"])}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_tool_failure_rolls_back(labs, backend, wrappers, scenario):
    sc = SCENARIOS[scenario]
    base = baseline(labs, wrappers, sc)
    failures: list[str] = []
    total = len(base.calls) + 1
    for n in range(1, total + 1):
        with labs.fresh(f"fail{n}") as lab:
            sc.prepare(lab)
            before = lab.snapshot()
            wrappers.arm(fail_at=n)
            proc = lab(*sc.action(lab), check=False, env=wrappers.env)
            calls = wrappers.calls()
            failing = calls[n - 1] if n <= len(calls) else "(not reached)"
            case = f"[{backend} / {scenario}: {sc.title}] N={n} failing call: {failing}"
            after = lab.snapshot()
            problems: list[str] = []
            if proc.returncode == 1:
                problems += error_problems(proc)
                d = diff(before, after)
                if d:
                    problems.append(f"exit 1 but not exactly as before:\n{d}")
            elif proc.returncode == 0:
                d = diff(comparable(base.after), comparable(after), ("clean run", "this run"))
                if d:
                    problems.append(f"exit 0 but the result differs from a clean run:\n{d}")
            else:
                problems.append("unexpected exit status")
            if n == total and proc.returncode != 0:
                problems.append("no call failed (N is past the last call), yet the command failed")
            if problems:
                failures.append(f"{case}\n  {describe(proc)}\n  " + "\n  ".join(problems))
    assert not failures, f"{len(failures)} of {total} injected failures mishandled:\n\n" + "\n\n".join(failures)


# ---------------------------------------------------------------------------
# 6. SIGKILL during binding-create


def _is_batch(call: str) -> bool:
    words = call.split()
    if words[0] == "nft":
        return "list" not in words and ("-f" in words or len(words) > 1)
    return words[0].endswith("-restore") or any(w in words for w in ("-A", "-I", "-N", "-D", "-X", "-F", "-E"))


def instants(calls: list[str]) -> list[Instant]:
    found = [Instant("as soon as the binding's status file exists", poll_status=True),
             Instant(f"before call 1 ({calls[0]})", sleep_before=1)]  # fmt: skip
    for i, call in enumerate(calls, start=1):
        if _is_batch(call):
            found.append(Instant(f"before call {i} ({call}) runs", sleep_before=i))
            found.append(Instant(f"after call {i} ({call}) succeeded", sleep_after=i))
    return found


def kill_at(lab: Lab, wrap: Wrappers, args: list[str], port: str, instant: Instant) -> str | None:
    """Run virtfw in the background and SIGKILL its process group at ``instant``;
    returns why the instant was not reached, if it was not."""
    wrap.arm(sleep_before=instant.sleep_before, sleep_after=instant.sleep_after)
    argv = ["env", *(f"{k}={v}" for k, v in wrap.env.items()), "ip", "netns", "exec", lab.ns.name]
    argv += virtfw_argv(*args, config_dir=lab.vf.config_dir, state_dir=lab.vf.state_dir, backend=lab.backend)
    out = lab.root / "killed.out"
    with open(out, "w") as sink:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, start_new_session=True)
    status_file = lab.vf.state_dir / "bindings" / f"{port}.json"
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
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=WAIT)
        deadline = time.monotonic() + WAIT
        while group_alive(proc.pid):
            assert time.monotonic() < deadline, f"process group {proc.pid} still alive"
            time.sleep(0.01)
    if problem is None and proc.returncode != -signal.SIGKILL:
        problem = f"virtfw was not killed (exit {proc.returncode})"
    return problem


@pytest.mark.parametrize("scenario", ["create-first", "create-second"])
def test_sigkill_during_create_is_cleaned_up(labs, backend, wrappers, scenario):
    sc = SCENARIOS[scenario]
    base = baseline(labs, wrappers, sc)
    failures: list[str] = []
    reached = 0
    for instant in instants(base.calls):
        for cleanup in ("delete", "reload, then delete"):
            with labs.fresh("kill") as lab:
                sc.prepare(lab)
                before = lab.snapshot()
                case = f"[{backend} / {scenario}] SIGKILL {instant.label}; cleanup: {cleanup}"
                problem = kill_at(lab, wrappers, sc.action(lab), sc.port, instant)
                if problem:
                    failures.append(f"{case}\n  could not kill at that instant: {problem}")
                    continue
                reached += 1
                problems: list[str] = []
                if cleanup.startswith("reload"):
                    proc = lab("reload", check=False)
                    if proc.returncode != 0:
                        problems.append(f"reload after the kill: {describe(proc)}")
                    elif sc.port in lab.bound():
                        # reload finished the binding: it must be exactly a clean run's
                        # (reload hooks ports in in its own order: the dispatch order is free)
                        d = diff(
                            dispatch_order_free(comparable(base.after)),
                            dispatch_order_free(comparable(lab.snapshot())),
                            ("clean create", "kill + reload"),
                        )
                        if d:
                            problems.append(f"reload completed the binding, but not as a clean create:\n{d}")
                proc = lab.unbind(sc.port, check=False)
                if proc.returncode != 0:
                    # acceptable only if nothing at all was left to clean up
                    problems += [p for p in error_problems(proc) if "exit status" not in p]
                    if sc.port not in proc.stderr:
                        problems.append(f"binding-delete after the kill failed: {describe(proc)}")
                d = diff(before, lab.snapshot())
                if d:
                    problems.append(f"not the state of before the create:\n{d}")
                if problems:
                    failures.append(f"{case}\n  " + "\n  ".join(problems))
    assert reached, "no kill instant was reached"
    assert not failures, f"{len(failures)} kill cases mishandled:\n\n" + "\n\n".join(failures)
