"""Unit tests of the network XML model and the per-mode firewall policy (no root needed).

* Every network XML of libvirt's firewall test data, and the shipped ``default``
  network, parses; what it says is what the model holds; and
  ``format_network(parse_network(x))`` parses back to an equal model.
* Every bad value is refused with a :class:`VirtfwError` whose single-line message
  names the element, the attribute and the offending value, so a user can find it.
* ``network_rules`` gives each forward mode libvirt's rules, in libvirt's final order.

The valid template and the invalid documents (``INVALID``) are in
``tests/helpers/network_cases.py``; the command-line tests refuse them the same way.
"""

from __future__ import annotations

import ipaddress
import shlex
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers.network_cases import (
    BILLION_LAUGHS,
    GOOD,
    INVALID,
    IPV6_IP,
    Invalid,
    variant,
    with_bridge,
    with_dhcp,
    with_ip,
    with_ip_attrs,
    with_name,
    with_nat_port,
    with_range,
)
from helpers.nsutil import ROOT, TESTDATA

from virtfw.errors import VirtfwError
from virtfw.net.model import Network
from virtfw.net.policy import network_rules
from virtfw.net.xml import format_network, parse_network
from virtfw.rules.netrules import (
    FORWARD_ORDER,
    Action,
    Addr,
    Chain,
    CtState,
    Family,
    Iface,
    Rule,
)

DATA = TESTDATA / "networkxml2firewalldata"
DEFAULT_XML = ROOT / "etc" / "networks" / "default.xml"

#: libvirt's test networks plus the shipped default. Globbed so that new test data is
#: covered; test_network_files_found() makes sure the glob did not come back empty.
NETWORK_FILES: list[Path] = [*sorted(DATA.glob("*.xml")), DEFAULT_XML]


def test_good_template_is_valid() -> None:
    """The template the invalid cases start from is itself accepted as written."""
    net = parse_network(GOOD)
    assert (net.name, net.bridge.name, net.forward.mode) == ("testnet", "vtest0", "nat")
    assert [(str(ip.address), ip.prefix) for ip in net.ips] == [("192.168.100.1", 24)]


def test_billion_laughs_is_really_nested() -> None:
    """The billion-laughs case declares ten levels of entities that expand tenfold."""
    assert BILLION_LAUGHS.count("<!ENTITY") == 10
    assert "&lol8;" * 10 in BILLION_LAUGHS


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_network_is_refused_precisely(case: Invalid) -> None:
    """A bad document raises VirtfwError with one line naming element, attribute, value."""
    started = time.monotonic()
    with pytest.raises(VirtfwError) as info:
        parse_network(case.xml, "bad.xml")
    message = str(info.value)
    assert time.monotonic() - started < 5, "refusing the document took too long"
    assert "\n" not in message, f"message is not one line: {message!r}"
    missing = [needle for needle in case.needles if needle not in message]
    assert not missing, f"message {message!r} does not mention {missing}"
    assert "root:" not in message, "the message leaks the content of an external entity"


@pytest.mark.parametrize(
    ("xml", "check"),
    [
        pytest.param(
            with_bridge("vtest0123456789"), lambda n: n.bridge.name == "vtest0123456789", id="bridge-15-chars"
        ),
        pytest.param(with_bridge("v_b-r.0"), lambda n: n.bridge.name == "v_b-r.0", id="bridge-punctuation"),
        pytest.param(with_name("my-net_2.test+x"), lambda n: n.name == "my-net_2.test+x", id="name-punctuation"),
        pytest.param(
            with_ip('<ip address="192.168.101.1" netmask="255.255.255.128"/>'),
            lambda n: n.ips[1].prefix == 25,
            id="netmask-25",
        ),
        pytest.param(
            with_ip_attrs('address="192.168.100.1" prefix="24"'), lambda n: n.ips[0].prefix == 24, id="prefix-24"
        ),
        pytest.param(with_nat_port("1", "65535"), lambda n: n.nat.ports == (1, 65535), id="nat-port-full-range"),
        pytest.param(
            with_range("192.168.100.9", "192.168.100.9"),
            lambda n: n.ips[0].ranges[0].start == n.ips[0].ranges[0].end,
            id="dhcp-range-one-address",
        ),
        pytest.param(
            with_dhcp('<host mac="52:54:00:AB:00:01" name="vm1" ip="192.168.100.10"/>'),
            lambda n: n.ips[0].hosts[0].mac == "52:54:00:ab:00:01",
            id="dhcp-host",
        ),
        pytest.param(with_ip(IPV6_IP), lambda n: [ip.family for ip in n.ips] == ["ipv4", "ipv6"], id="ipv6-alongside"),
        pytest.param(
            with_ip('<ip address="192.168.101.1" prefix="24"/>'), lambda n: len(n.ips) == 2, id="ipv4-adjacent"
        ),
    ],
)
def test_valid_edge_values_are_accepted(xml: str, check) -> None:
    """Values at the edge of what is allowed are not refused by an over-eager check."""
    assert check(parse_network(xml, "edge.xml"))


# ---------------------------------------------------------------------------------
# libvirt's test data and the shipped default: parse, content, round trip
# ---------------------------------------------------------------------------------


@pytest.mark.shared
def test_network_files_found() -> None:
    """libvirt's data is present (a missing ../shared must fail, not collect nothing)."""
    names = {path.stem for path in NETWORK_FILES}
    assert {"nat-default", "isolated", "route-default", "nat-ipv6", "nat-port-range", "default"} <= names
    assert len(NETWORK_FILES) >= 12


def expected_ips(root: ET.Element) -> list[tuple[str, str, int, list[tuple[str, str]]]]:
    """(family, address, prefix, dhcp ranges) of every <ip>, read with the stdlib parser."""
    ips = []
    for element in root.findall("ip"):
        family = element.get("family", "ipv4")
        mask = element.get("prefix") or element.get("netmask") or ("24" if family == "ipv4" else "64")
        interface = ipaddress.ip_interface(f"{element.get('address')}/{mask}")
        ranges = [(r.get("start", ""), r.get("end", "")) for r in element.findall("dhcp/range")]
        ips.append((family, str(interface.ip), interface.network.prefixlen, ranges))
    return ips


@pytest.mark.parametrize("path", NETWORK_FILES, ids=lambda p: p.name)
def test_file_parses_to_what_it_says(path: Path) -> None:
    """Name, bridge, forward mode and device, addresses, DHCP ranges and NAT ports are kept."""
    root = ET.parse(path).getroot()
    net = parse_network(path.read_bytes(), str(path))
    assert net.name == (root.findtext("name") or "").strip()
    bridge = root.find("bridge")
    assert net.bridge.name == (bridge.get("name") if bridge is not None else None)
    forward = root.find("forward")
    assert net.forward.mode == ("none" if forward is None else forward.get("mode", "nat"))
    assert net.forward.dev == (forward.get("dev") if forward is not None else None)
    port = root.find("forward/nat/port")
    if port is not None:
        assert net.nat.ports == (int(port.get("start", "")), int(port.get("end", "")))
    actual = [
        (ip.family, str(ip.address), ip.prefix, [(str(r.start), str(r.end)) for r in ip.ranges]) for ip in net.ips
    ]
    assert actual == expected_ips(root)


@pytest.mark.parametrize("path", NETWORK_FILES, ids=lambda p: p.name)
def test_format_round_trips(path: Path) -> None:
    """format_network(parse(x)) parses back equal, and formatting again is stable."""
    net = parse_network(path.read_bytes(), str(path))
    text = format_network(net)
    again = parse_network(text, f"formatted {path.name}")
    assert again == net, f"round trip changed the network:\n{text}"
    assert format_network(again) == text


def test_round_trip_keeps_every_field() -> None:
    """A network using every modelled field survives format and parse unchanged."""
    xml = """\
<network ipv6="yes">
  <name>full</name>
  <uuid>3d0b7e8c-9f2e-4b7a-8a55-6c2f3f6c1a10</uuid>
  <forward mode="nat" dev="eth0">
    <nat ipv6="yes">
      <address start="203.0.113.10" end="203.0.113.20"/>
      <port start="2000" end="3000"/>
    </nat>
  </forward>
  <bridge name="vfull0" stp="off" delay="5"/>
  <mac address="52:54:00:12:34:56"/>
  <domain name="example.test" localOnly="yes"/>
  <ip address="192.168.150.1" prefix="24">
    <tftp root="/srv/tftp"/>
    <dhcp>
      <range start="192.168.150.10" end="192.168.150.20"/>
      <host mac="52:54:00:00:00:01" name="vm" ip="192.168.150.5"/>
      <bootp file="pxelinux.0" server="192.168.150.2"/>
    </dhcp>
  </ip>
  <ip family="ipv6" address="fd00:150::1" prefix="64"/>
</network>
"""
    net = parse_network(xml)
    again = parse_network(format_network(net))
    assert again == net
    assert (again.bridge.stp, again.bridge.delay, again.domain, again.ipv6_nogw) == (False, 5, "example.test", True)
    assert (again.nat.address_start, again.nat.ports) == (ipaddress.ip_address("203.0.113.10"), (2000, 3000))
    assert again.ips[0].tftp_root == "/srv/tftp" and again.ips[0].bootp_file == "pxelinux.0"


@pytest.mark.parametrize(
    "kept",
    [
        pytest.param('<dns><host ip="192.168.100.5"><hostname>vm</hostname></host></dns>', id="dns-one-line"),
        pytest.param(
            '<dns>\n    <host ip="192.168.100.5">\n      <hostname>vm</hostname>\n    </host>\n  </dns>',
            id="dns-indented",
        ),
        pytest.param("<mtu size='9000'/>", id="mtu"),
        pytest.param("<description>lab network</description>", id="description"),
    ],
)
def test_round_trip_keeps_libvirt_elements_virtfw_does_not_act_on(kept: str) -> None:
    """Elements kept for libvirt compatibility (<dns>, <mtu>, ...) survive a round trip equal."""
    net = parse_network(variant("<name>testnet</name>", "<name>testnet</name>\n  " + kept))
    assert len(net.extra) == 1
    again = parse_network(format_network(net))
    assert again == net, f"kept element changed: {net.extra} -> {again.extra}"


# ---------------------------------------------------------------------------------
# Policy: which rules each forward mode gets
# ---------------------------------------------------------------------------------


def load(path: Path) -> Network:
    return parse_network(path.read_bytes(), str(path))


def chain_rules(net: Network, chain: Chain) -> list[Rule]:
    return [rule for rule in network_rules(net).rules if rule.chain is chain]


def test_open_mode_has_no_rules() -> None:
    net = parse_network(variant('<forward mode="nat"/>', '<forward mode="open"/>'))
    assert net.forward.mode == "open"
    assert network_rules(net).rules == ()


@pytest.mark.shared
def test_isolated_has_no_nat_and_no_way_out() -> None:
    """No <forward>: no NAT rules, and nothing may leave or enter the network, only cross it."""
    net = load(DATA / "isolated.xml")
    assert net.forward.mode == "none"
    rules = network_rules(net).rules
    assert rules, "an isolated network still needs its reject rules"
    assert [r for r in rules if r.chain is Chain.NAT_POST] == []
    for chain in (Chain.FWD_IN, Chain.FWD_OUT):
        verdicts = {r.verdict.action for r in rules if r.chain is chain}
        assert verdicts == {Action.REJECT}, f"{chain.value} of an isolated network: {verdicts}"
    assert {r.verdict.action for r in rules if r.chain is Chain.FWD_CROSS} == {Action.ACCEPT}


@pytest.mark.shared
def test_route_mode_does_not_masquerade() -> None:
    """forward mode='route': the network's addresses are routed both ways, never rewritten."""
    net = load(DATA / "route-default.xml")
    assert net.forward.mode == "route"
    rules = network_rules(net).rules
    rewriting = [r for r in rules if r.verdict.action in (Action.MASQUERADE, Action.SNAT) or r.chain is Chain.NAT_POST]
    assert rewriting == []
    cidr = "192.168.122.0/24"
    assert any(
        Addr(cidr, source=True) in r.matches and r.verdict.action is Action.ACCEPT
        for r in chain_rules(net, Chain.FWD_OUT)
    )
    assert any(
        Addr(cidr, source=False) in r.matches and r.verdict.action is Action.ACCEPT
        for r in chain_rules(net, Chain.FWD_IN)
    )


def test_nat_mode_masquerades() -> None:
    """Counterpart of the two tests above: the same network in NAT mode does rewrite."""
    rules = network_rules(load(DEFAULT_XML)).rules
    assert any(r.chain is Chain.NAT_POST and r.verdict.action is Action.MASQUERADE for r in rules)


def libvirt_commands(path: Path) -> list[list[str]]:
    """libvirt's expected commands, one argument per line continued with `` \\``."""
    commands, pending = [], []
    for line in path.read_text().splitlines():
        pending.append(line.removesuffix(" \\"))
        if not line.endswith(" \\"):
            commands.append(shlex.split(" ".join(pending)))
            pending = []
    return commands


LIBVIRT_FORWARD_CHAINS = {"LIBVIRT_FWX": Chain.FWD_CROSS, "LIBVIRT_FWI": Chain.FWD_IN, "LIBVIRT_FWO": Chain.FWD_OUT}


@pytest.mark.shared
def test_forward_chain_order_is_libvirts() -> None:
    """libvirt inserts the jumps FWO, FWI, FWX at the top of FORWARD: cross, in, out is the result."""
    jumps = [
        argv[argv.index("--jump") + 1]
        for argv in libvirt_commands(DATA / "base.iptables")
        if argv[0] == "iptables" and "--insert" in argv and argv[argv.index("--insert") + 1] == "FORWARD"
    ]
    final = [LIBVIRT_FORWARD_CHAINS[name] for name in reversed(jumps)]
    assert final == [Chain.FWD_CROSS, Chain.FWD_IN, Chain.FWD_OUT]
    assert tuple(final) == FORWARD_ORDER


def shape(rule: Rule) -> tuple[frozenset, Action]:
    """A rule's matches (in any order) and verdict, for comparing with libvirt's."""
    return frozenset(rule.matches), rule.verdict.action


def test_default_network_forward_rules_in_libvirt_order() -> None:
    """The shipped default network: per forward chain, the accepts come before the rejects.

    libvirt (nat-default-linux.iptables) inserts at the top of each chain, reject first
    and accept after, so the accept ends up above the reject it must take precedence over.
    """
    net = load(DEFAULT_XML)
    into, out_of = Iface("virbr0", inbound=True), Iface("virbr0", inbound=False)
    cidr = "192.168.122.0/24"
    expected = {
        Chain.FWD_CROSS: [
            (frozenset({into, out_of}), Action.ACCEPT),
        ],
        Chain.FWD_IN: [
            (frozenset({out_of, Addr(cidr, source=False), CtState(("related", "established"))}), Action.ACCEPT),
            (frozenset({out_of}), Action.REJECT),
        ],
        Chain.FWD_OUT: [
            (frozenset({into, Addr(cidr, source=True)}), Action.ACCEPT),
            (frozenset({into}), Action.REJECT),
        ],
    }
    for chain, rules in expected.items():
        actual = [shape(r) for r in chain_rules(net, chain) if r.family is Family.IPV4]
        assert actual == rules, f"{chain.value}: {actual}"


def test_default_network_nat_rules_in_libvirt_order() -> None:
    """Broadcast and multicast are exempted (RETURN) above the masquerade rules, as libvirt does."""
    rules = chain_rules(load(DEFAULT_XML), Chain.NAT_POST)
    actions = [r.verdict.action for r in rules]
    assert actions == [Action.RETURN, Action.RETURN, Action.MASQUERADE, Action.MASQUERADE, Action.MASQUERADE]
    assert Addr("224.0.0.0/24", source=False) in rules[0].matches
    assert Addr("255.255.255.255/32", source=False) in rules[1].matches
    assert rules[-1].verdict.ports is None and rules[2].verdict.ports == (1024, 65535)
