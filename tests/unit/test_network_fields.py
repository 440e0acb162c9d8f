"""libvirt's network fields that virtfw used to accept and drop (issue 11): each is now
kept and written back (a define then dumpxml shows it), used where libvirt uses it, or
refused (the refusals are cases of ``helpers.network_cases.INVALID``).

* Round trip: each kept field survives format and parse, and the formatted XML spells it.
* dnsmasq: lease times, DUIDs and localPtr reach dnsmasq's files as libvirt writes them,
  compared with libvirt 11.3.0's own ``networkxml2confdata`` expectations.
* libvirt's ``networkxml2xmlin``/``networkxml2xmlout`` pairs: what virtfw accepts of an
  input parses to the same network as libvirt's output; what it refuses, it refuses in
  one line; libvirt's own parse-error cases are refused too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.network_cases import GOOD, variant, with_dhcp, with_ip, with_ip_attrs
from helpers.nsutil import TESTDATA

from virtfw.errors import VirtfwError
from virtfw.net.dnsmasq import files_for, render_config
from virtfw.net.model import Lease, Network
from virtfw.net.xml import format_network, parse_network

CONFDATA = TESTDATA / "networkxml2confdata"
XML_IN = TESTDATA / "networkxml2xmlin"
XML_OUT = TESTDATA / "networkxml2xmlout"
V6 = '<ip family="ipv6" address="2001:db8:1::1" prefix="64"><dhcp>{}</dhcp></ip>'


def rendered(net: Network) -> tuple[str, str]:
    files = files_for(Path("/state"), net.name)
    out = render_config(net, files)
    return out[files.conf], out[files.hostsfile]


# ---- round trip ----------------------------------------------------------------------------

ROUND_TRIPS = [
    pytest.param(
        variant('<forward mode="nat"/>', '<forward mode="nat"><interface dev="eth1"/></forward>'),
        lambda n: n.forward.dev == "eth1",
        ('dev="eth1"', '<interface dev="eth1"/>'),
        id="forward-interface",
    ),
    pytest.param(
        variant('<forward mode="nat"/>', '<forward mode="route" dev="eth1"><interface dev="eth1"/></forward>'),
        lambda n: (n.forward.mode, n.forward.dev) == ("route", "eth1"),
        ('<interface dev="eth1"/>',),
        id="forward-dev-and-interface",
    ),
    pytest.param(
        variant("<network>", '<network trustGuestRxFilters="yes">'),
        lambda n: n.trust_guest_rx_filters is True,
        ('trustGuestRxFilters="yes"',),
        id="trust-guest-rx-filters",
    ),
    pytest.param(
        variant('<bridge name="vtest0"/>', '<bridge name="vtest0" macTableManager="kernel"/>'),
        lambda n: n.bridge.mac_table_manager == "kernel",
        ('macTableManager="kernel"',),
        id="mac-table-manager-kernel",
    ),
    pytest.param(
        variant('<bridge name="vtest0"/>', '<bridge name="vtest0"/>\n  <domain name="lab.test" register="no"/>'),
        lambda n: n.domain_register == "no",
        ('register="no"',),
        id="domain-register-no",
    ),
    pytest.param(
        with_ip_attrs('address="192.168.100.1" netmask="255.255.255.0" localPtr="yes"'),
        lambda n: n.ips[0].local_ptr is True,
        ('localPtr="yes"',),
        id="local-ptr",
    ),
    pytest.param(
        variant('end="192.168.100.254"/>', 'end="192.168.100.254"><lease expiry="2" unit="hours"/></range>'),
        lambda n: n.ips[0].ranges[0].lease == Lease(2, "hours"),
        ('<lease expiry="2" unit="hours"/>',),
        id="range-lease",
    ),
    pytest.param(
        with_dhcp('<host mac="52:54:00:ab:00:01" ip="192.168.100.10"><lease expiry="45"/></host>'),
        lambda n: n.ips[0].hosts[0].lease == Lease(45, "minutes"),
        ('<lease expiry="45" unit="minutes"/>',),
        id="host-lease-default-unit",
    ),
    pytest.param(
        with_dhcp('<host mac="52:54:00:ab:00:01" ip="192.168.100.10"><lease expiry="0" unit="hours"/></host>'),
        lambda n: n.ips[0].hosts[0].lease == Lease(0, None),
        ('<lease expiry="0"/>',),
        id="host-lease-infinite",
    ),
    pytest.param(
        with_ip(V6.format('<host id="0:4:7E:7d:f0:7d:a8:bc:c5:d2:13:32:11:ed:16:ea:84:63" ip="2001:db8:1::20"/>')),
        lambda n: n.ips[1].hosts[0].id == "0:4:7e:7d:f0:7d:a8:bc:c5:d2:13:32:11:ed:16:ea:84:63",
        ('id="0:4:7e:7d:f0:7d:a8:bc:c5:d2:13:32:11:ed:16:ea:84:63"',),
        id="host-id",
    ),
]


@pytest.mark.parametrize(("xml", "check", "spelled"), ROUND_TRIPS)
def test_kept_field_round_trips(xml: str, check, spelled: tuple[str, ...]) -> None:
    net = parse_network(xml, "in.xml")
    assert check(net)
    text = format_network(net)
    assert all(piece in text for piece in spelled), text
    again = parse_network(text, "formatted.xml")
    assert again == net and format_network(again) == text


def test_absent_fields_stay_absent() -> None:
    """The formatter adds none of the new attributes to a network that had none of them."""
    text = format_network(parse_network(GOOD))
    for word in ("trustGuestRxFilters", "macTableManager", "register", "localPtr", "<lease", "<interface", " id="):
        assert word not in text


# ---- dnsmasq -------------------------------------------------------------------------------


def test_leases_reach_dnsmasq() -> None:
    net = parse_network(
        with_ip(
            V6.format(
                '<range start="2001:db8:1::10" end="2001:db8:1::20"><lease expiry="300" unit="seconds"/></range>'
                '<host id="0:3:0:1:52:54:0:0:0:6" name="six" ip="2001:db8:1::6"><lease expiry="0"/></host>'
            )
        ).replace('end="192.168.100.254"/>', 'end="192.168.100.254"><lease expiry="90"/></range>')
    )
    conf, hosts = rendered(net)
    assert "dhcp-range=192.168.100.2,192.168.100.254,255.255.255.0,90m\n" in conf
    assert "dhcp-range=2001:db8:1::10,2001:db8:1::20,64,300s\n" in conf
    assert hosts == "id:0:3:0:1:52:54:0:0:0:6,six,[2001:db8:1::6],infinite\n"


def test_local_ptr_needs_dns() -> None:
    """localPtr answers the reverse zone from dnsmasq's DNS: with DNS off there is none."""
    xml = with_ip_attrs('address="192.168.100.1" netmask="255.255.255.0" localPtr="yes"')
    assert "local=/100.168.192.in-addr.arpa/\n" in rendered(parse_network(xml))[0]
    off = variant('<bridge name="vtest0"/>', '<bridge name="vtest0"/>\n  <dns enable="no"/>', xml)
    assert "in-addr.arpa" not in rendered(parse_network(off))[0]
    no = with_ip_attrs('address="192.168.100.1" netmask="255.255.255.0" localPtr="no"')
    assert "in-addr.arpa" not in rendered(parse_network(no))[0]


def libvirt_lines(case: str, *prefixes: str) -> list[str]:
    return [line for line in (CONFDATA / f"{case}.conf").read_text().splitlines() if line.startswith(prefixes)]


CONF_CASES = ["leasetime-seconds", "leasetime-minutes", "leasetime-hours", "leasetime-infinite", "ptr-domains-auto"]


@pytest.mark.parametrize("case", CONF_CASES)
@pytest.mark.shared
def test_dnsmasq_lines_match_libvirts(case: str) -> None:
    """libvirt's networkxml2confdata: the same IPv4 dhcp-range (lease time and all) and
    local= lines, and the same hosts file, byte for byte."""
    conf, hosts = rendered(parse_network((CONFDATA / f"{case}.xml").read_bytes(), case))
    ours = [line for line in conf.splitlines() if line.startswith(("local=", "dhcp-range=192."))]
    assert ours == libvirt_lines(case, "local=", "dhcp-range=192.")
    assert hosts == (CONFDATA / f"{case}.hostsfile").read_text()


@pytest.mark.shared
def test_dhcpv6_hosts_file_matches_libvirts() -> None:
    """dhcp6host-routed-network: DUIDs (id:), names and [addresses] in libvirt's order."""
    case = "dhcp6host-routed-network"
    _, hosts = rendered(parse_network((CONFDATA / f"{case}.xml").read_bytes(), case))
    assert hosts == (CONFDATA / f"{case}.hostsfile").read_text()


@pytest.mark.shared
def test_the_conf_cases_are_there() -> None:
    missing = [c for c in [*CONF_CASES, "dhcp6host-routed-network"] if not (CONFDATA / f"{c}.conf").is_file()]
    assert not missing, f"libvirt's networkxml2confdata is incomplete: {missing}"


# ---- libvirt's xml2xml corpus ----------------------------------------------------------------

#: tests/networkxml2xmltest.c's DO_TEST_PARSE_ERROR cases: libvirt refuses them.
LIBVIRT_REFUSES = [
    "routed-network-no-dns-extra-elements",
    "open-network-with-forward-dev",
    "hostdev-duplicate",
    "passthrough-duplicate",
]
PAIRS = sorted(p.stem for p in XML_IN.glob("*.xml") if (XML_OUT / p.name).is_file())


@pytest.mark.shared
def test_xml2xml_corpus_found() -> None:
    assert len(PAIRS) >= 40 and "leasetime-hours" in PAIRS and "nat-network-explicit-flood" in PAIRS


@pytest.mark.parametrize("case", PAIRS)
@pytest.mark.shared
def test_libvirt_output_means_what_the_input_says(case: str) -> None:
    """Accepted: libvirt's formatted output is the same network as its input, and virtfw's
    own formatting of it reads back equal. Refused: both, in one line."""
    source, formatted = (XML_IN / f"{case}.xml").read_bytes(), (XML_OUT / f"{case}.xml").read_bytes()
    try:
        net = parse_network(source, f"{case}.xml")
    except VirtfwError as exc:
        assert "\n" not in str(exc)
        with pytest.raises(VirtfwError):
            parse_network(formatted, f"out/{case}.xml")
        return
    assert parse_network(formatted, f"out/{case}.xml") == net
    assert parse_network(format_network(net), "again") == net


@pytest.mark.parametrize("case", LIBVIRT_REFUSES)
@pytest.mark.shared
def test_what_libvirt_refuses_virtfw_refuses(case: str) -> None:
    with pytest.raises(VirtfwError) as caught:
        parse_network((XML_IN / f"{case}.xml").read_bytes(), f"{case}.xml")
    assert "\n" not in str(caught.value)


@pytest.mark.shared
def test_accepted_libvirt_cases() -> None:
    """The cases of the corpus virtfw takes (the others use forward modes it does not manage),
    among them those with the fields this change keeps."""
    accepted = []
    for case in PAIRS:
        try:
            parse_network((XML_IN / f"{case}.xml").read_bytes(), case)
        except VirtfwError:
            continue
        accepted.append(case)
    assert {
        "leasetime-hours",
        "leasetime-infinite",
        "nat-network-explicit-flood",
        "dhcp6host-routed-network",
        "routed-network",  # bridge zone='myzone': kept, used where firewalld runs
    } <= set(accepted)
