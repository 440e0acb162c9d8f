"""verify reads what the rules say, not only that a rule is there: a network rule an admin
replaced in place (same handle, ``nft replace rule``) and a chain of ours given policy drop
are reported (nftables), and so are, on both backends, a filter binding's rule replaced in
place (as many rules as before), a policy of virtfw's filter chains changed, a foreign rule
in them and a chain of theirs gone; ``reload`` puts each back."""

from __future__ import annotations

import json

import pytest
from helpers.nsutil import BACKENDS, Virtfw, add_port, firewall_snapshot, netns, verify_problems

pytestmark = pytest.mark.netns


def reject_handle(vfw: Virtfw) -> int:
    listed = json.loads(vfw.ns.sh("nft", "-j", "list", "chain", "ip", "virtfw_network", "guest_output"))
    for item in listed["nftables"]:
        rule = item.get("rule")
        if rule and any("reject" in statement for statement in rule["expr"]):
            return rule["handle"]
    raise AssertionError("no reject rule in guest_output")


def test_a_rule_replaced_in_place_and_a_drop_policy_are_reported(tmp_path) -> None:
    with netns("vfwC") as ns:
        vfw = Virtfw(ns, tmp_path, "nftables")
        vfw("net-start", "default")
        assert verify_problems(vfw) == []
        handle = reject_handle(vfw)
        ns.sh("nft", "replace", "rule", "ip", "virtfw_network", "guest_output", "handle", str(handle), "accept")
        problems = verify_problems(vfw)
        assert len(problems) == 1 and "rule changed" in problems[0] and "reject" in problems[0], problems
        vfw("reload")
        assert verify_problems(vfw) == []
        ns.sh("nft", "add", "chain", "ip", "virtfw_network", "forward", "{ policy drop; }")
        problems = verify_problems(vfw)
        assert problems == [
            "base chains (nftables): ip virtfw_network forward has policy drop, not accept; virtfw reload re-installs it"
        ], problems
        vfw("reload")
        assert verify_problems(vfw) == []
        vfw("net-destroy", "default")


# --------------------------------------------------------------------------- filter bindings

OWN = """<filter name='own' chain='root'>
<rule action='drop' direction='out' priority='500'><tcp dstportstart='23'/></rule></filter>"""
BINDING = (
    "<filterbinding><portdev name='{port}'/><mac address='52:54:00:00:00:0{n}'/>"
    "<filterref filter='{filter}'><parameter name='IP' value='192.168.122.{n}0'/></filterref></filterbinding>"
)


def nft_handle(ns, table: str, chain: str, word: str) -> int:
    listed = json.loads(ns.sh("nft", "-j", "-a", "list", "chain", "bridge", table, chain))
    for item in listed["nftables"]:
        rule = item.get("rule")
        if rule and any(word in statement for statement in rule["expr"]):
            return rule["handle"]
    raise AssertionError(f"no {word} rule in bridge {table} {chain}")


def replace_drop(ns, backend: str) -> None:
    """vnet1's drop (filter own) replaced in place by an accept: as many rules as before."""
    if backend == "nftables":
        handle = nft_handle(ns, "virtfw_nwfilter_inet", "n-vnet1-out", "drop")
        ns.sh(
            "nft", "replace", "rule", "bridge", "virtfw_nwfilter_inet", "n-vnet1-out", "handle", str(handle), "accept"
        )
    else:
        chain = next(c for c in ("FI-vnet1", "FO-vnet1", "HI-vnet1") if "-j DROP" in ns.sh("iptables", "-w", "-S", c))
        ns.sh("iptables", "-w", "-R", chain, "1", "-j", "ACCEPT")


def replace_mac_check(ns, backend: str) -> None:
    """vnet0's own-MAC return (clean-traffic) replaced in place by another MAC's."""
    if backend == "nftables":
        handle = nft_handle(ns, "virtfw_nwfilter_ethernet", "n-vnet0-out-mac", "match")
        ns.sh("nft", "replace", "rule", "bridge", "virtfw_nwfilter_ethernet", "n-vnet0-out-mac", "handle",
              str(handle), "ether", "saddr", "52:54:00:00:00:09", "return")  # fmt: skip
    else:
        ns.sh("ebtables", "-t", "nat", "-D", "I-vnet0-mac", "1")
        ns.sh("ebtables", "-t", "nat", "-I", "I-vnet0-mac", "1", "-s", "52:54:00:00:00:09", "-j", "RETURN")


def change_policy(ns, backend: str) -> None:
    """A chain of virtfw's given policy drop (nft: a hook chain; ebtables: a port's chain)."""
    if backend == "nftables":
        ns.sh("nft", "add", "chain", "bridge", "virtfw_nwfilter_ethernet", "prerouting", "{ policy drop; }")
    else:
        ns.sh("ebtables", "-t", "nat", "-P", "virtfw-I-vnet0", "DROP")


def add_foreign_rule(ns, backend: str) -> None:
    """A rule someone added to a port's chain (nft) or to a shared chain (iptables)."""
    if backend == "nftables":
        ns.sh("nft", "add", "rule", "bridge", "virtfw_nwfilter_inet", "n-vnet1-out", "accept")
    else:
        ns.sh("iptables", "-w", "-I", "virtfw-in", "1", "-j", "ACCEPT")


def drop_chain(ns, backend: str) -> None:
    """One of vnet1's chains gone, with what reached it."""
    if backend == "nftables":
        ns.sh("nft", "delete", "element", "bridge", "virtfw_nwfilter_inet", "vmap-oif", '{ "vnet1" }')
        ns.sh("nft", "delete", "chain", "bridge", "virtfw_nwfilter_inet", "n-vnet1-in")
    else:
        ns.sh("iptables", "-w", "-D", "virtfw-host-in", "-m", "physdev", "--physdev-in", "vnet1", "-g", "HI-vnet1")
        ns.sh("iptables", "-w", "-F", "HI-vnet1")
        ns.sh("iptables", "-w", "-X", "HI-vnet1")


def bind_two(ns, vfw: Virtfw, tmp_path) -> None:
    """vnet0 with clean-traffic and vnet1 with the filter ``own``."""
    (tmp_path / "own.xml").write_text(OWN)
    vfw("nwfilter-define", str(tmp_path / "own.xml"))
    for n, (port, filt) in enumerate([("vnet0", "clean-traffic"), ("vnet1", "own")], start=1):
        add_port(ns, port)
        (tmp_path / f"{port}.xml").write_text(BINDING.format(port=port, n=n, filter=filt))
        vfw("nwfilter-binding-create", str(tmp_path / f"{port}.xml"))


# what was changed -> (how, whose lines report it: nftables, iptables; how many: one per change)
TAMPERS = {
    "a rule replaced in place": (replace_drop, ("binding vnet1", "binding vnet1"), 1),
    "a layer-2 rule replaced in place": (replace_mac_check, ("binding vnet0", "binding vnet0"), 1),
    "a chain's policy changed": (change_policy, ("filter base", "binding vnet0"), 1),
    "a foreign rule in our chain": (add_foreign_rule, ("binding vnet1", "filter base"), 1),
    "a chain missing": (drop_chain, ("binding vnet1", "binding vnet1"), 2),  # the chain, and its map entry or link
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_binding_rules_changed_behind_our_back_are_reported_and_repaired(tmp_path, backend) -> None:
    """verify compares what a binding's rules say (not only how many there are) and the
    policies of virtfw's chains; each change is reported, by the binding's port where it is
    a binding's, and ``reload`` puts back exactly what the bindings installed."""
    with netns("vfwC") as ns:
        vfw = Virtfw(ns, tmp_path, backend)
        bind_two(ns, vfw, tmp_path)
        installed = firewall_snapshot(ns)
        assert verify_problems(vfw) == []
        for what, (tamper, whose, lines) in TAMPERS.items():
            tamper(ns, backend)
            assert firewall_snapshot(ns) != installed, f"{what}: the change did nothing"
            problems = verify_problems(vfw)
            assert len(problems) == lines, f"{what}: {problems}"
            assert all(line.startswith(whose[BACKENDS.index(backend)]) for line in problems), f"{what}: {problems}"
            vfw("reload")
            assert verify_problems(vfw) == [], what
            assert firewall_snapshot(ns) == installed, f"{what}: reload did not put back what was installed"


# nftables only: what the text listing of virtfw's filter tables must still tell apart
NFT_TAMPERS = {
    "a foreign map entry": (
        ["add", "element", "bridge", "virtfw_nwfilter_inet", "vmap-oif", '{ "vnet7" : jump n-vnet1-in }'],
        "filter base (nftables): bridge virtfw_nwfilter_inet vmap-oif entry vnet7 that virtfw did not add",
    ),
    "a foreign chain": (
        ["add", "chain", "bridge", "virtfw_nwfilter_ethernet", "n-vnet9-out"],
        "filter base (nftables): chain bridge virtfw_nwfilter_ethernet n-vnet9-out that virtfw did not add",
    ),
    "a hook rule added": (
        ["add", "rule", "bridge", "virtfw_nwfilter_ethernet", "postrouting", "counter", "accept"],
        "filter base (nftables): bridge virtfw_nwfilter_ethernet postrouting holds rules that virtfw did not add",
    ),
    "a rule's counter turned into a drop": (
        ["insert", "rule", "bridge", "virtfw_nwfilter_ethernet", "n-vnet0-out-mac", "counter", "drop"],
        "binding vnet0: chain bridge virtfw_nwfilter_ethernet n-vnet0-out-mac holds 3 rules, 2 were installed",
    ),
}


@pytest.mark.parametrize("what", sorted(NFT_TAMPERS))
def test_nft_listing_tells_foreign_objects_from_ours(tmp_path, what) -> None:
    """Read from ``nft list`` text: a map entry, chain or hook rule someone added is reported
    as not virtfw's, and reload takes it away."""
    command, expected = NFT_TAMPERS[what]
    with netns("vfwC") as ns:
        vfw = Virtfw(ns, tmp_path, "nftables")
        bind_two(ns, vfw, tmp_path)
        installed = firewall_snapshot(ns)
        ns.sh("nft", *command)
        problems = verify_problems(vfw)
        assert len(problems) == 1 and problems[0].startswith(expected), problems
        vfw("reload")
        assert verify_problems(vfw) == []
        assert firewall_snapshot(ns) == installed


def add_decoy(ns, chain: str, rules: list[list[dict]]) -> None:
    """A chain added through nft's JSON whose name holds a newline: listed as text it
    prints ``chain x`` and then ``chain CHAIN {`` with the decoy's ``rules`` under it."""
    name = f"x\n\tchain {chain}"
    table = "virtfw_nwfilter_inet"
    batch = [{"add": {"chain": {"family": "bridge", "table": table, "name": name}}}]
    batch += [{"add": {"rule": {"family": "bridge", "table": table, "chain": name, "expr": e}}} for e in rules]
    ns.run(["nft", "-j", "-f", "-"], input=json.dumps({"nftables": batch}), check=True)


def decoy_port_chain(ns) -> None:
    """vnet1's drop replaced by an accept, its original rule shown by a decoy after it."""
    table, chain = "virtfw_nwfilter_inet", "n-vnet1-out"
    listed = json.loads(ns.sh("nft", "-j", "list", "chain", "bridge", table, chain))["nftables"]
    original = [item["rule"]["expr"] for item in listed if "rule" in item]
    replace_drop(ns, "nftables")
    add_decoy(ns, chain, original)


def decoy_hook_chains(ns) -> None:
    """Both hook chains flushed (no port's chain is reached any more), each shown
    dispatching by a decoy."""
    for hook, key, vmap in (("prerouting", "iifname", "vmap-iif"), ("postrouting", "oifname", "vmap-oif")):
        ns.sh("nft", "flush", "chain", "bridge", "virtfw_nwfilter_inet", hook)
        add_decoy(ns, hook, [[{"vmap": {"key": {"meta": {"key": key}}, "data": f"@{vmap}"}}]])


@pytest.mark.parametrize("tamper", [decoy_port_chain, decoy_hook_chains], ids=lambda t: t.__name__)
def test_nft_chains_named_to_print_as_ours_are_reported(tmp_path, tamper) -> None:
    """nft prints names as they are: a chain whose name holds a newline and ``chain NAME {``
    would pass for one of ours in the text listing and hide the real one, changed. verify
    says the table cannot be read as virtfw's; reload rebuilds it, decoys gone."""
    with netns("vfwD") as ns:
        vfw = Virtfw(ns, tmp_path, "nftables")
        bind_two(ns, vfw, tmp_path)
        installed = firewall_snapshot(ns)
        tamper(ns)
        problems = verify_problems(vfw)
        assert any("table bridge virtfw_nwfilter_inet cannot be read as virtfw's" in p for p in problems), problems
        vfw("reload")
        assert verify_problems(vfw) == []
        assert firewall_snapshot(ns) == installed
