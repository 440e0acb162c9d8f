"""nftables filters on a stock distribution kernel (Debian's, under QEMU): bridge conntrack.

This machine's kernel has no connection tracking in the bridge family, so there the
stateful rules are refused (tests/netns); here they are loaded into a kernel that has it
and real traffic shows their meaning. One boot runs every scenario (helpers/stockvm.py);
each test asserts its own probes. Skipped, saying what is missing, where the VM tools are
not installed (`.ci/run` installs them).
"""

from __future__ import annotations

import pytest
from helpers import stockvm
from helpers.nwfilter_cases import NFT_CASES as CASES
from helpers.nwfilter_cases import case_port_rules

pytestmark = pytest.mark.vm

G1, G2 = "192.168.131.10", "192.168.131.11"
MAC1 = "52:54:00:00:00:01"

WEB_ONLY = """<filter name='web-only' chain='root'>
  <rule action='accept' direction='in' priority='500'><tcp dstportstart='8080'/></rule>
  <rule action='accept' direction='out' priority='500'><tcp dstportstart='9000'/></rule>
  <rule action='drop' direction='inout' priority='1000'><all/></rule>
</filter>"""

STATE_NEW = """<filter name='new-only' chain='root'>
  <rule action='accept' direction='in' priority='500'><tcp dstportstart='8080' state='NEW'/></rule>
  <rule action='accept' direction='inout' priority='510'><tcp state='ESTABLISHED'/></rule>
  <rule action='drop' direction='inout' priority='1000'><all/></rule>
</filter>"""

CONNLIMIT = """<filter name='one-conn' chain='root'>
  <rule action='drop' direction='out' priority='400'><tcp connlimit-above='1'/></rule>
  <rule action='accept' direction='out' priority='500'><all/></rule>
  <rule action='drop' direction='inout' priority='1000'><all/></rule>
</filter>"""

REJECT = """<filter name='no-8081' chain='root'>
  <rule action='reject' direction='in' priority='500'><tcp dstportstart='8081'/></rule>
</filter>"""

SHIPPED_PARAMS = {"IP": [G1], "IPV6": ["fd00:77::5"], "GATEWAY_MAC": ["52:54:00:00:00:fe"]}
DHCPSERVER = {"allow-dhcp-server": ["192.168.131.1"], "allow-dhcpv6-server": ["fd00:77::1"]}
SHIPPED_BINDINGS = {  # every shipped filter, with the parameters it needs
    name: {**SHIPPED_PARAMS, **({"DHCPSERVER": DHCPSERVER[name]} if name in DHCPSERVER else {})}
    for name in sorted(p.stem for p in stockvm.SHIPPED.glob("*.xml"))
}


def _binding(script: stockvm.GuestScript, xml: str, root: str) -> str:
    return script.batch(stockvm.nft_batch(stockvm.port_rules([xml], root, "vg1", MAC1)))


def _web_only(s: stockvm.GuestScript) -> None:
    s.add("fresh", f"check web.sanity pass tcp g1 g2 {G2} 7001 18080")
    s.add(f"apply {_binding(s, WEB_ONLY, 'web-only')}")
    s.add(
        f"check web.lan-to-guest-8080 pass tcp g2 g1 {G1} 8080",
        f"check web.guest-to-lan-9000 pass tcp g1 g2 {G2} 9000",
        f"check web.lan-to-guest-8081 block tcp g2 g1 {G1} 8081",
        f"check web.guest-to-lan-9001 block tcp g1 g2 {G2} 9001",
        f"check web.guest-from-port-8080 block tcp g1 g2 {G2} 7001 8080",
        f"check web.lan-from-port-9000 block tcp g2 g1 {G1} 7002 9000",
        f"check web.lan-pings-guest block ping1 g2 {G1}",
    )


def _web_only_iptables(s: stockvm.GuestScript) -> None:
    """The same on the iptables backend: physdev rules (br_netfilter) with conntrack."""
    s.add("fresh", "ip netns exec h sysctl -qw net.bridge.bridge-nf-call-iptables=1")
    s.replay(stockvm.changes(stockvm.port_rules([WEB_ONLY], "web-only", "vg1", MAC1), "iptables"))
    s.add(
        f"check ipt.lan-to-guest-8080 pass tcp g2 g1 {G1} 8080",
        f"check ipt.guest-to-lan-9000 pass tcp g1 g2 {G2} 9000",
        f"check ipt.lan-to-guest-8081 block tcp g2 g1 {G1} 8081",
        f"check ipt.guest-from-port-8080 block tcp g1 g2 {G2} 7001 8080",
        f"check ipt.lan-from-port-9000 block tcp g2 g1 {G1} 7002 9000",
        f"check ipt.lan-pings-guest block ping1 g2 {G1}",
    )


def _state_new(s: stockvm.GuestScript) -> None:
    s.add("fresh", f"apply {_binding(s, STATE_NEW, 'new-only')}")
    s.add(
        f"check new.lan-to-guest-8080 pass tcp g2 g1 {G1} 8080",
        f"check new.lan-to-guest-8081 block tcp g2 g1 {G1} 8081",
        f"check new.guest-to-lan block tcp g1 g2 {G2} 9000",
    )


def _connlimit(s: stockvm.GuestScript) -> None:
    s.add("fresh", f"check conn.sanity pass tcp g1 g2 {G2} 9100")
    s.add(f"apply {_binding(s, CONNLIMIT, 'one-conn')}")
    s.add(
        f"check conn.first pass tcp g1 g2 {G2} 9101",
        f"hold g1 g2 {G2} 9102",
        f"check conn.second-while-one-is-open block tcp g1 g2 {G2} 9103",
    )


def _reject(s: stockvm.GuestScript) -> None:
    s.add("fresh", f"apply {_binding(s, REJECT, 'no-8081')}")
    s.add(f"check reject.8081 block tcp g2 g1 {G1} 8081", f"check reject.8080 pass tcp g2 g1 {G1} 8080")


def _clean_traffic(s: stockvm.GuestScript) -> None:
    rules = stockvm.port_rules([], "clean-traffic", "vg1", MAC1, {"IP": [G1]})
    s.add("fresh", f"apply {s.batch(stockvm.nft_batch(rules))}")
    s.add(
        f"check clean.as-itself pass tcp g1 g2 {G2} 9200",
        "ip -n g1 addr flush dev eth0; ip -n g1 addr add 192.168.131.50/24 dev eth0",
        f"check clean.foreign-ip block tcp g1 g2 {G2} 9201",
        f"ip -n g1 addr flush dev eth0; ip -n g1 addr add {G1}/24 dev eth0",
        "ip -n g1 link set eth0 address 52:54:00:de:ad:01",
        f"check clean.foreign-mac block tcp g1 g2 {G2} 9202",
        f"ip -n g1 link set eth0 address {MAC1}",
        f"check clean.as-itself-again pass tcp g1 g2 {G2} 9203",
    )


ARP_GUARD = """<filter name='arp-guard' chain='arp'>
  <rule action='drop' direction='out' priority='400'>
    <arp opcode='Reply'/>
    <arp match='no' arpsrcmacaddr='$MAC'/>
  </rule>
</filter>"""


def _arp_guard(s: stockvm.GuestScript) -> None:
    """libvirt's merged <arp> elements with match='no' on one attribute: g1's own ARP replies
    are learnt by g2, one with a forged sender MAC is not (until the rules are gone)."""
    from helpers.topology import _SEND_ARP

    sender = s.folder / "send_arp.py"
    sender.write_text(_SEND_ARP)
    s.add(
        "fresh",
        "ip netns exec g2 sysctl -qw net.ipv4.conf.all.arp_accept=1 net.ipv4.conf.eth0.arp_accept=1",
        "learnt() {  # SENDER-MAC: g1 tells g2 '.10 is at SENDER-MAC'; did g2 learn it?",
        "  ip -n g2 neigh flush dev eth0",
        f"  ip netns exec g1 python3 {sender} eth0 3 52:54:00:00:00:02 {MAC1} 2 $1 {G1} 52:54:00:00:00:02 {G2}",
        "  sleep 1",
        f"  ip -n g2 neigh show {G1} | grep -qi $1",
        "}",
        f"apply {_binding(s, ARP_GUARD, 'arp-guard')}",
        f"check arp.own-reply pass learnt {MAC1}",
        "check arp.forged-reply block learnt 52:54:00:de:ad:01",
        "ip netns exec h nft flush ruleset",
        "check arp.forged-reply-unfiltered pass learnt 52:54:00:de:ad:01",
    )


def _conformance(s: stockvm.GuestScript) -> dict[str, str]:
    files = {}
    for name in CASES:
        files[name] = s.batch(stockvm.nft_batch(case_port_rules(name)))
        s.add("ip netns del h 2>/dev/null; ip netns add h", f"apply {files[name]}")
    return files


def _shipped(s: stockvm.GuestScript) -> dict[str, str]:
    files = {}
    for name, params in SHIPPED_BINDINGS.items():
        files[name] = s.batch(stockvm.nft_batch(stockvm.port_rules([], name, "vnet0", MAC1, params)))
        s.add("ip netns del h 2>/dev/null; ip netns add h", f"apply {files[name]}")
    return files


@pytest.fixture(scope="module")
def vm(tmp_path_factory):
    why = stockvm.missing()
    if why:
        pytest.skip(why)
    script = stockvm.GuestScript(tmp_path_factory.mktemp("stockvm"))
    for scenario in (_web_only, _web_only_iptables, _state_new, _connlimit, _reject, _clean_traffic, _arp_guard):
        scenario(script)
    conformance = _conformance(script)
    shipped = _shipped(script)
    results = script.run()
    return results, conformance, shipped


def _checks(vm, prefix: str) -> None:
    results = vm[0]
    mine = {name: value for name, value in results.items() if name.startswith(prefix + ".")}
    assert mine, f"no {prefix} probe ran: {results}"
    wrong = {name: value for name, value in mine.items() if value[0] != value[1]}
    assert not wrong, f"(wanted, got): {wrong}"


def test_web_only_is_stateful(vm):
    _checks(vm, "web")


def test_web_only_on_iptables(vm):
    _checks(vm, "ipt")


def test_state_new(vm):
    _checks(vm, "new")


def test_connlimit_above(vm):
    _checks(vm, "conn")


def test_reject_blocks(vm):
    _checks(vm, "reject")


def test_clean_traffic_still_blocks_spoofing(vm):
    _checks(vm, "clean")


def test_match_no_on_one_attribute_of_merged_elements(vm):
    _checks(vm, "arp")


def _loaded(vm, files: dict[str, str]) -> None:
    results = vm[0]
    refused = [
        name for name, path in files.items() if results.get(f"batch:{path.rsplit('/', 1)[1]}") != ("APPLIED", "APPLIED")
    ]
    assert not refused, f"the stock kernel did not load: {refused}"


def test_every_conformance_case_loads(vm):
    _loaded(vm, vm[1])


def test_every_shipped_filter_loads(vm):
    _loaded(vm, vm[2])
