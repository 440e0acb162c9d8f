"""What the nftables filter backend writes for each kind of rule: libvirt's meaning, spelled for nft.

The kernel loads these (tests/netns), and real traffic shows their meaning
(tests/netns/test_traffic_nwfilter.py); here each rule shape's exact text.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from virtfw.rules.nft import kernel
from virtfw.rules.nft.filter import NftFilterBackend
from virtfw.rules.nft.syntax import jump_match, layer2_expr, layer3_needs, layer3_plan
from virtfw.rules.portrules import Match, PortRule, PortRules
from virtfw.rules.runner import Result, Runner


def rule(element: str | None, direction: str = "out", action: str = "accept", *, statematch: bool = True,
         negate: bool = False, negated: frozenset[str] | None = None, chain: str = "root", **matches) -> PortRule:  # fmt: skip
    return PortRule(chain, 0, 500, action, direction, statematch, element, negate,
                    tuple(Match(name.replace("_", "-"), value) for name, value in matches.items()), negated)  # fmt: skip


class ProbeRunner(Runner):
    """Answers ``nft -c`` probes as a kernel with (or without) bridge conntrack; counts them."""

    def __init__(self, conntrack: bool = True) -> None:
        super().__init__()
        self.conntrack = conntrack
        self.probes = 0
        self.changes: list[list[str]] = []

    def run(self, argv, *, stdin=None, change=True, check=True, quiet=False) -> Result:
        self.log.append(argv)
        if change:
            self.changes.append(argv)
        if argv[:2] == ["nft", "-c"]:
            self.probes += 1
            return Result(0 if self.conntrack or "ct " not in (stdin or "") else 1, "", "")
        return Result(0 if change else 1, "", "")

    def run_file(self, argv, text, *, check=True) -> Result:
        """A batch file: applied like any change, echoing nothing (records get no digests)."""
        return self.run(argv, stdin=text, check=check)


def chains(rules: list[PortRule], port: str = "vnet0") -> dict[str, list[str]]:
    installed = NftFilterBackend().install(ProbeRunner(), [PortRules(port, f"binding:{port}", tuple(rules))])
    return {
        f"{c.table.removeprefix('virtfw_nwfilter_')} {c.name}": list(c.rules)
        for c in installed.removals[f"binding:{port}"].chains
    }


# ---- layer 3: connection tracking -----------------------------------------------------

PLANS = {
    "accept out": (rule("tcp", "out", dstportstart=9000),
                   [], [(False, "ct direction original ct state new,established")],
                   [(True, "ct direction reply ct state established")]),
    "accept in": (rule("tcp", "in", dstportstart=8080),
                  [], [(True, "ct direction reply ct state established")],
                  [(False, "ct direction original ct state new,established")]),
    "accept inout": (rule("all", "inout"), [], [(True, "ct state new,established")], [(False, "ct state new,established")]),
    "drop out: not mirrored": (rule("tcp", "out", "drop", dstportstart=25), [], [(False, "")], []),
    "reject in: not mirrored": (rule("tcp", "in", "reject"), [], [], [(False, "")]),
    "state as given, own direction only": (rule("tcp", "in", state="NEW"), [], [], [(False, "ct state new")]),
    "state NONE: stateless": (rule("tcp", "in", state="NONE"), [], [], [(False, "")]),
    "statematch false: stateless, accept mirrored": (
        rule("tcp", "in", statematch=False, dstportstart=80), [], [(True, "")], [(False, "")]),
    "statematch false drop": (rule("tcp", "in", "drop", statematch=False), [], [], [(False, "")]),
    "connlimit": (rule("tcp", "out", "drop", connlimit_above=2), [], [(False, "ct count over 2")], []),
}  # fmt: skip


@pytest.mark.parametrize("name", PLANS)
def test_layer3_plan(name: str) -> None:
    port_rule, _, from_guest, to_guest = PLANS[name]
    assert layer3_plan(port_rule, False) == from_guest
    assert layer3_plan(port_rule, True) == to_guest


def test_what_needs_conntrack() -> None:
    assert layer3_needs(rule("tcp", "in")) == ["conntrack"]
    assert layer3_needs(rule("tcp", "in", statematch=False)) == []
    assert layer3_needs(rule("tcp", "in", "drop")) == []
    assert layer3_needs(rule("tcp", "out", "drop", connlimit_above=1)) == ["conntrack", "ct_count"]


def test_web_only_rules() -> None:
    got = chains([rule("tcp", "in", dstportstart=8080), rule("tcp", "out", dstportstart=9000),
                  rule("all", "inout", "drop")])  # fmt: skip
    assert got["inet n-vnet0-in"] == [
        "ether type ip meta l4proto tcp tcp dport 8080 ct direction original ct state new,established accept",
        "ether type ip meta l4proto tcp tcp sport 9000 ct direction reply ct state established accept",
        "ether type ip drop",
    ]
    assert got["inet n-vnet0-out"] == [
        "ether type ip meta l4proto tcp tcp sport 8080 ct direction reply ct state established accept",
        "ether type ip meta l4proto tcp tcp dport 9000 ct direction original ct state new,established accept",
        "ether type ip drop",
    ]


def test_refused_without_bridge_conntrack_naming_rule_and_ways_out() -> None:
    web = rule("tcp", "in", dstportstart=8080)
    web = PortRule(**{**web.__dict__, "origin": "filter 'web-only', rule 1 (accept in tcp, priority 500)"})
    runner = ProbeRunner(conntrack=False)
    with pytest.raises(Exception) as caught:
        NftFilterBackend().install(runner, [PortRules("vnet0", "binding:vnet0", (web,))])
    message = str(caught.value)
    assert "\n" not in message
    for part in ("binding vnet0", "filter 'web-only', rule 1", "nf_conntrack_bridge", "modprobe", "--backend iptables"):
        assert part in message
    assert runner.changes == [], "refused before any change"


def test_stateless_rules_need_no_probe() -> None:
    runner = ProbeRunner(conntrack=False)
    NftFilterBackend().install(runner, [PortRules("vnet0", "binding:vnet0", (rule("tcp", "in", "drop"), rule("mac")))])
    assert runner.probes == 0


# ---- layer 2 ----------------------------------------------------------------------------


def test_mac_mask_is_written_as_a_link_layer_address() -> None:
    masked = rule("mac", srcmacaddr="01:02:03:04:05:06", srcmacmask="ff:ff:ff:00:00:00")
    assert layer2_expr(masked, False) == "ether saddr & ff:ff:ff:00:00:00 == 01:02:03:00:00:00"
    negated = rule("mac", negate=True, srcmacaddr="01:02:03:04:05:06", srcmacmask="ff:ff:ff:00:00:00")
    assert layer2_expr(negated, False) == "ether saddr & ff:ff:ff:00:00:00 != 01:02:03:00:00:00"
    assert layer2_expr(rule("mac", srcmacaddr="01:02:03:04:05:06", srcmacmask="ff:ff:ff:ff:ff:ff"), False) == (
        "ether saddr 01:02:03:04:05:06"
    )


def test_negation_stays_with_its_attribute() -> None:
    """libvirt's merge of <arp opcode='Reply'/><arp match='no' arpsrcmacaddr='$MAC'/>."""
    merged = rule("arp", "drop", negated=frozenset({"arpsrcmacaddr"}), opcode=2, arpsrcmacaddr="52:54:00:00:00:01")
    assert layer2_expr(merged, False) == "ether type 0x0806 arp operation 2 arp saddr ether != 52:54:00:00:00:01"
    merged_l3 = rule("tcp", negated=frozenset({"dstportstart"}), srcipaddr=IPv4Address("10.0.0.1"), dstportstart=22)
    from virtfw.rules.nft.syntax import layer3_expr

    assert layer3_expr(merged_l3, False) == "ether type ip ip saddr 10.0.0.1 meta l4proto tcp tcp dport != 22"
    assert layer3_expr(merged_l3, True) == "ether type ip ip daddr 10.0.0.1 meta l4proto tcp tcp sport != 22"


def test_inout_layer2_rule_is_mirrored_on_the_from_guest_chain() -> None:
    got = chains([rule("mac", "inout", srcmacaddr="52:54:00:00:00:01")])
    assert got["ethernet n-vnet0-in"] == ["ether saddr 52:54:00:00:00:01 accept"]
    assert got["ethernet n-vnet0-out"] == ["ether daddr 52:54:00:00:00:01 accept"]


@pytest.mark.parametrize(
    ("chain", "match"),
    [("ipv4", "ether type 0x0800"), ("ipv4x", "ether type 0x0800"), ("ipv6-dhcp", "ether type 0x86dd"),
     ("arp-ip", "ether type 0x0806"), ("rarp", "ether type 0x8035"), ("vlan1", "ether type 0x8100"),
     ("stp-x", "ether daddr 01:80:c2:00:00:00"), ("mac-x", ""), ("other", "")],
)  # fmt: skip
def test_subchain_jump_matches_the_chain_type_by_prefix(chain: str, match: str) -> None:
    assert jump_match(chain) == match


def test_stp_fields_icmpv6_and_tcp_option() -> None:
    stp = rule("stp", "out", "drop", type=0x80, root_priority=0x1000, root_priority_hi=0x2000,
               root_address="01:02:03:04:05:06", root_address_mask="ff:ff:ff:00:00:00")  # fmt: skip
    assert layer2_expr(stp, False) == (
        "ether daddr 01:80:c2:00:00:00 @nh,48,8 0x80 @nh,64,16 0x1000-0x2000 "
        "@nh,80,48 & 0xffffff000000 == 0x010203000000"
    )
    v6 = rule("ipv6", type=1, typeend=4, code=0)
    assert layer2_expr(v6, False) == "ether type ip6 icmpv6 type 1-4 icmpv6 code 0"
    from virtfw.rules.nft.syntax import layer3_expr

    assert layer3_expr(rule("tcp", option=5), False) == "ether type ip meta l4proto tcp tcp option 5 exists"


# ---- the kernel probe's cache ------------------------------------------------------------


def test_kernel_features_are_probed_once_and_cached(tmp_path: Path) -> None:
    path = tmp_path / "nft-kernel.json"
    runner = ProbeRunner(conntrack=False)
    assert kernel.KernelFeatures(path).has(runner, "conntrack") is False
    probes = runner.probes
    assert kernel.KernelFeatures(path).has(runner, "conntrack") is False
    assert runner.probes == probes, "the cached answer costs no process"


@pytest.mark.parametrize(
    "tamper",
    [lambda d: d.update(kernel="another boot"), lambda d: d["features"].update(conntrack="yes"),
     lambda d: d["features"].update(extra=True), lambda d: d.update(features=[True])],
)  # fmt: skip
def test_a_cache_that_does_not_check_out_is_asked_again(tmp_path: Path, tamper) -> None:
    path = tmp_path / "nft-kernel.json"
    kernel.KernelFeatures(path).has(ProbeRunner(conntrack=True), "conntrack")
    data = json.loads(path.read_text())
    tamper(data)
    path.write_text(json.dumps(data))
    runner = ProbeRunner(conntrack=False)
    assert kernel.KernelFeatures(path).has(runner, "conntrack") is False
    assert runner.probes > 0


def test_inout_rule_with_a_source_mac_applies_towards_the_guest_only() -> None:
    """libvirt's released driver skips the from-guest half: the guest's own frames never
    carry another sender's MAC, and the mirror cannot drop the match (every frame would go)."""
    got = chains([rule("all", "inout", "drop", negate=True, srcmacaddr="12:34:56:78:9a:bc")])
    assert got["inet n-vnet0-in"] == ["ether type ip ether saddr != 12:34:56:78:9a:bc drop"]
    assert got.get("inet n-vnet0-out", []) == []


def test_verify_reports_rules_the_kernel_cannot_hold(tmp_path: Path) -> None:
    backend = NftFilterBackend(tmp_path / "nft-kernel.json")
    record = backend.install(ProbeRunner(conntrack=True), [PortRules("vnet0", "binding:vnet0", (rule("tcp", "in"),))])
    record = record.removals["binding:vnet0"]
    later = NftFilterBackend(None)  # the module is gone now: the kernel says no
    problems = later._kernel_lacks(ProbeRunner(conntrack=False), record)
    assert problems == [
        "its rules need connection tracking in the bridge family (nf_conntrack_bridge), which this kernel does not have"
    ]
    assert NftFilterBackend(None)._kernel_lacks(ProbeRunner(conntrack=True), record) == []


def test_gratuitous_arp_by_libvirts_per_byte_lookups() -> None:
    from virtfw.rules.nft.syntax import GRATUITOUS, Unsupported

    assert layer2_expr(rule("arp", gratuitous=True), False) == f"ether type 0x0806 {GRATUITOUS}"
    assert GRATUITOUS.count("@same-ip-set") == 4
    with pytest.raises(Unsupported, match="--backend iptables"):
        layer2_expr(rule("arp", negate=True, gratuitous=True), False)
    got = NftFilterBackend().install(
        ProbeRunner(), [PortRules("vnet0", "binding:vnet0", (rule("arp", gratuitous=True),))]
    )
    assert got.removals["binding:vnet0"].chains


def test_what_nftables_cannot_say_as_written_is_refused() -> None:
    from virtfw.rules.nft.syntax import Unsupported, layer3_expr

    with pytest.raises(Unsupported, match="code= without type="):
        layer3_expr(rule("icmp", code=3), False)
    with pytest.raises(Unsupported, match="per remote address"):
        layer3_plan(rule("tcp", "in", "drop", connlimit_above=2), True)


def test_reused_records_are_checked_against_the_kernel_too(tmp_path: Path) -> None:
    made = NftFilterBackend().install(ProbeRunner(), [PortRules("vnet0", "binding:vnet0", (rule("tcp", "in"),))])
    runner = ProbeRunner(conntrack=False)
    with pytest.raises(Exception, match="connection tracking"):
        NftFilterBackend().install(runner, [], reuse={"binding:vnet0": made.removals["binding:vnet0"]})
    assert runner.changes == []
