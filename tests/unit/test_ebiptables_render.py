"""Unit tests of the iptables-mode nwfilter backend (virtfw/rules/xtables/filter*.py).

Rendering tests need no root: they check the commands against libvirt's expected
``NAME-linux.args`` (renamed to the final chain names) and single facts on hand-built
``PortRules``. The backend's tests with the real tools, in namespaces, are
``tests/netns/test_ebiptables_backend.py``.
"""

from __future__ import annotations

import copy
from ipaddress import IPv4Address, IPv6Address

import pytest
from helpers.filter_rules import port, rule
from helpers.nsutil import TESTDATA, read_commands
from helpers.nwfilter_cases import case_port_rules

from virtfw.rules.backend import merged_base
from virtfw.rules.xtables.filter import EbiptablesFilterBackend
from virtfw.rules.xtables.filter_render import plan_port
from virtfw.rules.xtables.save import Batch, Table, parse_save
from virtfw.rules.xtables.syntax import PlannedRule, fmt_ip, quote, restore_line, tokens

DATA = TESTDATA / "nwfilterxml2firewalldata"
CASES = sorted(path.name.removesuffix("-linux.args") for path in DATA.glob("*-linux.args"))


def lines(commands: list[list[str]] | list[PlannedRule]) -> list[str]:
    """Rules as their ``-A CHAIN ARGS`` command lines, planned or read from libvirt's files."""
    return [" ".join(c.command() if isinstance(c, PlannedRule) else c) for c in commands]


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
    assert eb.hooks == [PlannedRule("PREROUTING", ("-i", "vnet0", "-j", "virtfw-I-vnet0"))]


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
        (
            "-A FO-vnet0 -p udp -m mac --mac-source 52:54:00:00:00:01 -m conntrack --ctstate NEW,ESTABLISHED "
            "-m conntrack --ctdir Original -j ACCEPT"
        ),
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
