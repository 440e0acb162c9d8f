"""Unit tests of the iptables-mode nwfilter backend (virtfw/rules/xtables/filter*.py).

Rendering tests need no root: they check the commands against libvirt's expected
``NAME-linux.args`` (renamed to the final chain names) and single facts on hand-built
``PortRules``. Backend tests run the real tools inside namespaces they create.
"""

from __future__ import annotations

import copy
import json
import sys
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from nsutil import TESTDATA, Netns, netns, normalize_iptables_save, ruleset

from virtfw.rules.backend import merged_base
from virtfw.rules.portrules import Match, PortRule, PortRules
from virtfw.rules.xtables.filter import EbiptablesFilterBackend
from virtfw.rules.xtables.filter_render import fmt_ip, plan_port, quote, restore_line
from virtfw.rules.xtables.save import Batch, Table, parse_save, tokens

DATA = TESTDATA / "nwfilterxml2firewalldata"
CASES = sorted(path.name.removesuffix("-linux.args") for path in DATA.glob("*-linux.args"))


def rule(
    element: str | None,
    direction: str = "out",
    action: str = "accept",
    *,
    chain: str = "root",
    chain_priority: int = 0,
    priority: int = 500,
    statematch: bool = True,
    negate: bool = False,
    **matches,
) -> PortRule:
    """A PortRule by hand; attribute names with '-' are written with '_'."""
    return PortRule(
        chain,
        chain_priority,
        priority,
        action,
        direction,
        statematch,
        element,
        negate,
        tuple(Match(name.replace("_", "-"), value) for name, value in matches.items()),
    )


def port(rules: list[PortRule], name: str = "vnet0") -> PortRules:
    return PortRules(name, f"binding:{name}", tuple(rules))


def lines(commands: list[list[str]]) -> list[str]:
    return [" ".join(argv) for argv in commands]


# --- against libvirt's expected commands --------------------------------------------------

LIBVIRT_TO_FINAL = (
    ("libvirt-J-", "virtfw-I-"),
    ("libvirt-P-", "virtfw-O-"),
    ("J-vnet0-", "I-vnet0-"),
    ("P-vnet0-", "O-vnet0-"),
    ("FJ-", "FI-"),
    ("FP-", "FO-"),
    ("HJ-", "HI-"),
)


def final_name(word: str) -> str:
    for old, new in LIBVIRT_TO_FINAL:
        if word.startswith(old):
            return new + word[len(old) :]
    return word


def expected_rules(name: str) -> dict[str, list[list[str]]]:
    """The rule commands of NAME-linux.args per tool, with final chain names; chain
    creation and root hooks are checked by the conformance test."""
    from test_conformance_nwfilter import read_commands

    out: dict[str, list[list[str]]] = {"ebtables": [], "ipv4": [], "ipv6": [], "subchains": []}
    for argv in read_commands(DATA / f"{name}-linux.args"):
        words = [final_name(w) for w in argv[1:] if w not in ("--concurrent", "-w")]
        if argv[0] == "ebtables":
            words = words[2:]  # -t nat
            if words[0] == "-N" and not words[1].startswith("virtfw-"):
                out["subchains"].append(words[1:])
            if words[0] != "-A" or words[1] in ("PREROUTING", "POSTROUTING"):
                continue
            out["ebtables"].append(words)
        else:
            out["ipv4" if argv[0] == "iptables" else "ipv6"].append(words)
    return out


@pytest.mark.parametrize("name", CASES)
def test_rules_match_libvirt_args(name: str) -> None:
    """Each case's rules, sub-chains and their order are exactly libvirt's."""
    from test_conformance_nwfilter import case_port_rules

    plan = plan_port(case_port_rules(name))
    expected = expected_rules(name)
    eb = plan.ebtables
    assert lines(eb.rules if eb else []) == lines(expected["ebtables"])
    assert [c for c in (eb.chains if eb else []) if not c.startswith("virtfw-")] == [
        w[0] for w in expected["subchains"]
    ]
    for family in ("ipv4", "ipv6"):
        got = plan.families[family].rules if family in plan.families else []
        assert lines(got) == lines(expected[family]), family


# --- single facts on hand-built rules -----------------------------------------------------


def test_root_rules_first_then_priority_with_subchains_interleaved() -> None:
    """Root rules sort first; sub-chains are created (and jumped to) as soon as a rule's
    priority reaches the chain's priority; a rule below its chain's priority moves up for
    that, but keeps its place among the rules."""
    rules = [
        rule("arp", chain="arp", chain_priority=-500, priority=-600, opcode=1),
        rule("ip", chain="ipv4", chain_priority=-700, priority=100, protocol=17),
        rule("mac", priority=0, protocolid=0x806),
        rule("mac", priority=-800, srcmacaddr="52:54:00:00:00:01"),
    ]
    eb = plan_port(port(rules)).ebtables
    assert eb is not None
    assert eb.chains == ["virtfw-I-vnet0", "I-vnet0-ipv4", "I-vnet0-arp"]
    assert lines(eb.rules) == [
        "-A virtfw-I-vnet0 -s 52:54:00:00:00:01 -j ACCEPT",
        "-A virtfw-I-vnet0 -p 0x0800 -j I-vnet0-ipv4",
        "-A virtfw-I-vnet0 -p 0x0806 -j I-vnet0-arp",
        "-A virtfw-I-vnet0 -p 0x806 -j ACCEPT",
        "-A I-vnet0-arp -p 0x806 --arp-opcode 1 -j ACCEPT",  # sorted by its own priority
        "-A I-vnet0-ipv4 -p ipv4 --ip-protocol 17 -j ACCEPT",
    ]
    assert eb.hooks == [("PREROUTING", ["-i", "vnet0", "-j", "virtfw-I-vnet0"])]


def test_inout_ebtables_rule_is_reversed_in_the_from_guest_chain() -> None:
    eb = plan_port(
        port([rule("ip", "inout", "drop", srcipaddr=IPv4Address("10.0.0.1"), srcportstart=22, protocol=6, negate=True)])
    ).ebtables
    assert eb is not None
    assert lines(eb.rules) == [
        "-A virtfw-I-vnet0 -p ipv4 --ip-destination ! 10.0.0.1 --ip-protocol ! 6 --ip-destination-port ! 22 -j DROP",
        "-A virtfw-O-vnet0 -p ipv4 --ip-source ! 10.0.0.1 --ip-protocol ! 6 --ip-source-port ! 22 -j DROP",
    ]


def test_iptables_directions_states_and_skips() -> None:
    rules = [
        rule("tcp", "in", statematch=False, dstportstart=22),  # no conntrack at all
        rule("icmp", "out", type=8),  # the FO instance with a type is skipped, no --ctdir
        rule("udp", "in", srcmacaddr="52:54:00:00:00:01"),  # FI/HI lose their only match: skipped
        rule("all", "out", "drop", connlimit_above=3),  # no state for drop; no FO (incoming)
        rule("tcp", "in", state="NEW,ESTABLISHED", comment="x y"),
    ]
    assert lines(plan_port(port(rules)).families["ipv4"].rules) == [
        "-A FI-vnet0 -p tcp --sport 22 -j RETURN",
        "-A FO-vnet0 -p tcp --dport 22 -j ACCEPT",
        "-A HI-vnet0 -p tcp --sport 22 -j RETURN",
        "-A FI-vnet0 -p icmp --icmp-type 8 -m conntrack --ctstate NEW,ESTABLISHED -j RETURN",
        "-A HI-vnet0 -p icmp --icmp-type 8 -m conntrack --ctstate NEW,ESTABLISHED -j RETURN",
        "-A FO-vnet0 -p udp -m mac --mac-source 52:54:00:00:00:01 -m conntrack --ctstate NEW,ESTABLISHED "
        "-m conntrack --ctdir Original -j ACCEPT",
        "-A FI-vnet0 -p all -m connlimit --connlimit-above 3 -j DROP",
        "-A HI-vnet0 -p all -m connlimit --connlimit-above 3 -j DROP",
        "-A FO-vnet0 -p tcp -m conntrack --ctstate NEW,ESTABLISHED -m comment --comment x y -j ACCEPT",
    ]


def test_arp_destination_without_mask_reuses_source_mask() -> None:
    """libvirt keeps one mask buffer for both ARP addresses."""
    eb = plan_port(
        port([rule("arp", arpsrcipaddr=IPv4Address("10.0.0.1"), arpsrcipmask=24, arpdstipaddr=IPv4Address("10.0.0.2"))])
    ).ebtables
    assert eb is not None
    assert lines(eb.rules) == ["-A virtfw-I-vnet0 -p 0x806 --arp-ip-src 10.0.0.1/24 --arp-ip-dst 10.0.0.2/24 -j ACCEPT"]


def test_ipv6_addresses_print_as_inet_ntop() -> None:
    assert fmt_ip(IPv6Address("::ffff:10.1.2.3")) == "::ffff:10.1.2.3"
    assert fmt_ip(IPv6Address("::10.1.2.3")) == "::10.1.2.3"
    assert fmt_ip(IPv6Address("::1")) == "::1"
    assert fmt_ip(IPv6Address("a:b:c::")) == "a:b:c::"


@pytest.mark.parametrize("word", ["plain", "two  spaces", 'say "hi"', "back\\slash", "it's", "", "`ls`;$(x)"])
def test_restore_quoting_round_trips(word: str) -> None:
    assert tokens(restore_line(["-m", "comment", "--comment", word])) == ["-m", "comment", "--comment", word]
    assert quote("FI-vnet0") == "FI-vnet0"


def _replay(model: Table, commands: list[str]) -> None:
    """A tiny interpreter of restore lines on a model, to check undo lists."""
    for line in commands:
        words = line.split(" ", 2)
        op, chain = words[0], words[1]
        rest = words[2] if len(words) > 2 else ""
        if op == "-N":
            model.chains[chain] = []
        elif op == "-X":
            del model.chains[chain]
        elif op == "-F":
            model.chains[chain] = []
        elif op == "-A":
            model.chains[chain].append(rest)
        elif op == "-I":
            position, spec = rest.split(" ", 1)
            model.chains[chain].insert(int(position) - 1, spec)
        elif op == "-D":
            model.chains[chain].remove(rest)


def test_batch_undo_restores_the_table_exactly() -> None:
    saved = (
        "*filter\n:FORWARD ACCEPT [0:0]\n:virtfw-in - [0:0]\n:FI-a - [0:0]\n-A FORWARD -j X\n"
        "-A FORWARD -j virtfw-in\n-A virtfw-in -m physdev --physdev-in a -g FI-a\n"
        '-A FI-a -p tcp -m comment --comment "a b" -j RETURN\n-A FI-a -j DROP\nCOMMIT\n'
    )
    original = parse_save(saved, "filter")
    assert original is not None
    batch = Batch("filter", copy.deepcopy(original))
    batch.delete_rule("virtfw-in", "-m physdev --physdev-in a -g FI-a")
    batch.delete_chain("FI-a")
    batch.delete_rule("FORWARD", "-j virtfw-in")
    batch.insert("FORWARD", 1, ["-j", "virtfw-in"])
    batch.new_chain("FI-a")
    batch.append("FI-a", ["-p", "udp", "-j", "RETURN"])
    batch.append("virtfw-in", ["-m", "physdev", "--physdev-in", "a", "-g", "FI-a"])
    after = copy.deepcopy(original)
    _replay(after, batch.lines)
    assert after == batch.model
    _replay(after, list(reversed(batch.undo)))
    assert after == original


def test_base_records_merge() -> None:
    backend = EbiptablesFilterBackend()
    one = {
        "backend": "iptables",
        "kind": "nwfilter-base",
        "ipv4": {
            "filter": ["-D FORWARD -j virtfw-in", "-F virtfw-in", "-X virtfw-in"],
            "appeared": {"tables": ["filter"], "chains": []},
        },
    }
    two = {
        "backend": "iptables",
        "kind": "nwfilter-base",
        "ebtables": {"appeared": {"tables": [], "chains": [["nat", "POSTROUTING"]]}},
        "ipv4": {"filter": ["-D INPUT -j virtfw-host-in", "-F virtfw-host-in", "-X virtfw-host-in"]},
    }
    first, second = backend.load_base(one, "one"), backend.load_base(two, "two")
    merged = merged_base(first, second).to_json()
    assert merged["ipv4"]["filter"] == [
        "-D FORWARD -j virtfw-in",
        "-D INPUT -j virtfw-host-in",
        "-F virtfw-in",
        "-F virtfw-host-in",
        "-X virtfw-in",
        "-X virtfw-host-in",
    ]
    assert merged["ipv4"]["appeared"] == {"tables": ["filter"], "chains": []}
    assert merged["ebtables"] == {"appeared": {"tables": [], "chains": [["nat", "POSTROUTING"]]}}
    assert merged_base(None, second) is second


# --- the backend in namespaces --------------------------------------------------------------


def snapshot(ns: Netns) -> str:
    eb = normalize_iptables_save(ns.sh("ebtables-save"))
    tables = sorted(ns.sh("nft", "list", "tables").splitlines())
    return eb + "\n" + ruleset(ns, "iptables") + "\n" + "\n".join(tables)


def in_ns(ns: Netns, code: str) -> str:
    """Run backend code in a Python process inside NS; ``ports(n)``, ``backend``, ``runner``,
    ``json``, ``records`` (an install's records as JSON) and ``loaded`` (back again) are at
    hand; what it prints comes back."""
    prelude = (
        "import json, sys\n"
        f"sys.path[:0] = [{str(Path(__file__).resolve().parent.parent)!r}, {str(Path(__file__).resolve().parent)!r}]\n"
        "from test_ebiptables_render import rule, port, demo_rules\n"
        "from virtfw.rules.xtables.filter import EbiptablesFilterBackend\n"
        "from virtfw.rules.runner import Runner\n"
        "backend, runner = EbiptablesFilterBackend(), Runner()\n"
        "def records(installed):\n"
        "    return {owner: record.to_json() for owner, record in installed.removals.items()}\n"
        "def loaded(removals):\n"
        "    return {owner: backend.load_record(record, owner) for owner, record in removals.items()}\n"
    )
    return ns.run([sys.executable, "-c", prelude + code], timeout=300).stdout


def demo_rules(variant: int = 0) -> list[PortRule]:
    """A filter using every tool: ebtables root and sub-chains, iptables and ip6tables."""
    rules = [
        rule("mac", srcmacaddr="52:54:00:00:00:01", negate=True, action="drop"),
        rule("arp", "inout", chain="arp", chain_priority=-500, opcode=1 + variant),
        rule("tcp", "in", dstportstart=22 + variant),
        rule("all-ipv6", "out", comment=f"v{variant}"),
    ]
    if variant == 0:
        rules.append(rule("ip", chain="ipv4", chain_priority=-700, protocol=17))
    return rules


@pytest.mark.netns
def test_install_then_remove_leaves_nothing() -> None:
    with netns("vfwU") as ns:
        out = in_ns(
            ns,
            (
                "inst = backend.install(runner, [port(demo_rules(), 'vnet0'), port(demo_rules(), 'vnet1')])\n"
                "print(json.dumps([[a[0] for a in runner.log], records(inst), inst.base.to_json()]))\n"
            ),
        )
        assert "virtfw-I-vnet1" in snapshot(ns) and "FO-vnet1" in snapshot(ns)
        log, removals, base = json.loads(out)
        changes = [tool for tool in log if tool.endswith("-restore")]
        assert changes == ["ebtables-restore", "iptables-restore", "ip6tables-restore"]
        assert removals["binding:vnet0"]["ebtables"]["nat"][:2] == [
            "-D PREROUTING -i vnet0 -j virtfw-I-vnet0",
            "-D POSTROUTING -o vnet0 -j virtfw-O-vnet0",
        ]
        assert removals["binding:vnet0"]["ipv4"]["filter"][-1] == "-X HI-vnet0"
        in_ns(
            ns,
            (
                f"removals, base = {removals!r}, {base!r}\n"
                "assert all(backend.remove(runner, r) for r in loaded(removals).values())\n"
                "assert backend.remove(runner, backend.load_base(base, 'base'))\n"
            ),
        )
        assert snapshot(ns).strip() == "# iptables-save\n# ip6tables-save"


@pytest.mark.netns
def test_replace_swaps_old_rules_in_one_batch_per_tool() -> None:
    with netns("vfwU") as ns:
        in_ns(
            ns,
            (
                "first = backend.install(runner, [port(demo_rules(0))])\n"
                "runner.log.clear()\n"
                "second = backend.install(runner, [port(demo_rules(1))], old=first.removals)\n"
                "assert [a[0] for a in runner.log if a[0].endswith('-restore')] == "
                "['ebtables-restore', 'iptables-restore', 'ip6tables-restore']\n"
            ),
        )
        replaced = snapshot(ns)
    with netns("vfwV") as ns:
        in_ns(ns, "backend.install(runner, [port(demo_rules(1))])\n")
        fresh = snapshot(ns)
    assert replaced == fresh  # the ipv4 sub-chain of the old rules is gone too
    assert "I-vnet0-ipv4" not in replaced and "--dport 23" in replaced


@pytest.mark.netns
def test_failed_later_batch_rolls_back_to_the_old_rules() -> None:
    """ip6tables refuses the new rules (a missing ipset): the ebtables and iptables
    batches that went in are taken back, and the old rules are in place again."""
    with netns("vfwU") as ns:
        out = in_ns(
            ns,
            (
                "first = backend.install(runner, [port(demo_rules(0)), port(demo_rules(0), 'vnet1')])\n"
                "print(json.dumps(records(first)))\n"
            ),
        )
        before = snapshot(ns)
        removals = json.loads(out)
        out = in_ns(
            ns,
            (
                "from virtfw.errors import ToolError\n"
                f"old = loaded({removals!r})\n"
                "bad = demo_rules(1) + [rule('tcp-ipv6', ipset='missing', ipsetflags='src')]\n"
                "try:\n"
                "    backend.install(runner, [port(bad), port(demo_rules(1), 'vnet1')], old=old)\n"
                "except ToolError as error:\n"
                "    print('refused:', error)\n"
            ),
        )
        assert "refused: ip6tables-restore failed" in out
        assert snapshot(ns) == before


@pytest.mark.netns
def test_rebuild_restores_hand_flushed_rules_and_is_idempotent() -> None:
    with netns("vfwU") as ns:
        in_ns(ns, "backend.install(runner, [port(demo_rules(0)), port(demo_rules(0), 'vnet1')])\n")
        wanted = snapshot(ns)
        ns.run(["iptables", "-w", "-F", "virtfw-in"])
        ns.run(["iptables", "-w", "-D", "FORWARD", "-j", "virtfw-out"])
        ns.run(["ebtables", "-t", "nat", "-F", "I-vnet0-arp"])
        ns.run(["ebtables", "-t", "nat", "-D", "POSTROUTING", "-o", "vnet1", "-j", "virtfw-O-vnet1"])
        assert snapshot(ns) != wanted
        rebuild = "backend.install(runner, [port(demo_rules(0)), port(demo_rules(0), 'vnet1')], rebuild=True)\n"
        in_ns(ns, rebuild)
        assert snapshot(ns) == wanted
        in_ns(ns, rebuild)
        assert snapshot(ns) == wanted
        in_ns(ns, "backend.install(runner, [port(demo_rules(0))], rebuild=True)\n")
        only_one = snapshot(ns)
        assert "vnet1" not in only_one and "virtfw-I-vnet0" in only_one


@pytest.mark.netns
def test_remove_tolerates_rules_already_gone() -> None:
    with netns("vfwU") as ns:
        out = in_ns(ns, "print(json.dumps(records(backend.install(runner, [port(demo_rules())]))))\n")
        ns.run(["iptables", "-w", "-F", "virtfw-in"])
        ns.run(["ip6tables", "-w", "-F", "virtfw-out"])
        ns.run(["ip6tables", "-w", "-F", "FO-vnet0"])
        ns.run(["ip6tables", "-w", "-X", "FO-vnet0"])
        ns.run(["ebtables", "-t", "nat", "-D", "PREROUTING", "-i", "vnet0", "-j", "virtfw-I-vnet0"])
        in_ns(ns, f"assert backend.remove(runner, backend.load_record({json.loads(out)['binding:vnet0']!r}, 'r'))\n")
        left = snapshot(ns)
        assert "vnet0" not in left


@pytest.mark.netns
def test_records_are_handed_over_before_anything_is_applied() -> None:
    with netns("vfwU") as ns:
        out = in_ns(
            ns,
            (
                "import subprocess\n"
                "def seen(installed):\n"
                "    print(json.dumps(records(installed)))\n"
                "    print(subprocess.run(['iptables-save'], capture_output=True, text=True).stdout.count('-A '))\n"
                "backend.install(runner, [port(demo_rules())], before_apply=seen)\n"
            ),
        )
        record, applied = out.strip().splitlines()
        assert applied == "0"
        assert "-X FO-vnet0" in record


@pytest.mark.netns
def test_thousand_ports_in_a_few_batches_per_tool() -> None:
    """Not one process per rule: iptables and ip6tables get one batch each, ebtables one
    per segment of about EB_SEGMENT_LINES lines."""
    with netns("vfwU") as ns:
        out = in_ns(
            ns,
            (
                "from virtfw.rules.xtables.filter import EB_SEGMENT_LINES\n"
                "ports = [port(demo_rules(), f'tap{i}') for i in range(1000)]\n"
                "installed = backend.install(runner, ports)\n"
                "calls = [a[0] for a in runner.log if a[0].endswith('-restore')]\n"
                "print(json.dumps([len(installed.removals), calls, EB_SEGMENT_LINES]))\n"
            ),
        )
        removals, calls, segment = json.loads(out)
        assert removals == 1000
        assert calls.count("iptables-restore") == calls.count("ip6tables-restore") == 1
        saved = ns.sh("ebtables-save")
        eb_lines = 2 * saved.count("\n:") + saved.count("\n-A ")  # a chain: -N and -F/-X
        assert 2 <= calls.count("ebtables-restore") <= eb_lines // segment + 2
        assert ns.sh("iptables-save").count("-A virtfw-in-post ") == 1000


@pytest.mark.netns
def test_a_failed_segment_takes_back_the_segments_before_it() -> None:
    """Segments are separate transactions: when the third ebtables batch of a reload
    fails, the two applied before it are undone and every port keeps its old rules."""
    with netns("vfwU") as ns:
        in_ns(ns, "backend.install(runner, [port(demo_rules(), f'tap{i}') for i in range(60)])\n")
        before = snapshot(ns)
        out = in_ns(
            ns,
            (
                "import virtfw.rules.xtables.filter as eb\n"
                "from virtfw.errors import ToolError\n"
                "eb.EB_SEGMENT_LINES = 200\n"
                "calls = []\n"
                "real = runner.run\n"
                "def run(argv, **kw):\n"
                "    calls.append(argv[0])\n"
                "    if argv[0] == 'ebtables-restore' and calls.count('ebtables-restore') == 3:\n"
                "        raise ToolError(argv, 1, 'injected')\n"
                "    return real(argv, **kw)\n"
                "runner.run = run\n"
                "try:\n"
                "    backend.install(runner, [port(demo_rules(1), f'tap{i}') for i in range(60)], rebuild=True)\n"
                "except ToolError:\n"
                "    print('failed', calls.count('ebtables-restore'))\n"
            ),
        )
        assert out.split()[0] == "failed" and int(out.split()[1]) == 5  # 2 applied, 1 failed, 2 undone
        assert snapshot(ns) == before


@pytest.mark.netns
def test_new_ports_skip_reading_ebtables_unless_a_chain_is_left_over() -> None:
    """With ``new_ports`` the ebtables table is not read before the batch; a leftover
    chain of the new port makes that batch fail whole, and the install is computed
    again from the live table, removing the leftover."""
    with netns("vfwU") as ns:
        in_ns(ns, "backend.install(runner, [port(demo_rules(), 'tap0'), port(demo_rules(), 'tap1')])\n")
        clean = snapshot(ns)
        in_ns(
            ns,
            "backend.remove(runner, backend.load_record({'backend': 'iptables', 'kind': 'nwfilter', 'port': 'tap1', "
            "'ebtables': {'nat': ['-D PREROUTING -i tap1 -j virtfw-I-tap1', '-D POSTROUTING -o tap1 -j virtfw-O-tap1', "
            "'-F virtfw-I-tap1', '-F virtfw-O-tap1', '-X virtfw-I-tap1', '-X virtfw-O-tap1']}}, 'tap1'))\n",
        )
        assert "virtfw-I-tap1" not in ns.sh("ebtables-save") and "I-tap1-" in ns.sh("ebtables-save"), (
            "control: tap1's sub-chains are left over"
        )
        out = in_ns(
            ns,
            (
                "backend.install(runner, [port(demo_rules(), 'tap1')], new_ports=True)\n"
                "print(json.dumps([a[0] for a in runner.log]))\n"
            ),
        )
        eb_calls = [call for call in json.loads(out) if call.startswith("ebtables")]
        assert eb_calls[:3] == ["ebtables-restore", "ebtables-save", "ebtables-restore"], eb_calls
        assert snapshot(ns) == clean
        out = in_ns(
            ns,
            (
                "backend.install(runner, [port(demo_rules(), 'tap2')], new_ports=True)\n"
                "print(json.dumps([a[0] for a in runner.log]))\n"
            ),
        )
        assert "ebtables-save" not in json.loads(out) and "virtfw-I-tap2" in ns.sh("ebtables-save")


@pytest.mark.netns
def test_dry_run_applies_nothing() -> None:
    with netns("vfwU") as ns:
        out = in_ns(ns, ("runner.dry_run = True\nbackend.install(runner, [port(demo_rules())])\n"))
        assert "-N virtfw-I-vnet0" in out and "-A virtfw-in-post" in out
        assert snapshot(ns).strip() == "# iptables-save\n# ip6tables-save"
