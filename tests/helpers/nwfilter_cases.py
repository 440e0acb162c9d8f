"""libvirt's nwfilter test cases (``nwfilterxml2firewalldata``) as virtfw instantiates them.

Shared by the conformance test, which installs each case and compares the kernel's
ruleset with libvirt's replayed commands, and by the render unit tests, which compare
the planned commands with the case's ``NAME-linux.args``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from helpers.nsutil import TESTDATA

DATA = TESTDATA / "nwfilterxml2firewalldata"
PORT = "vnet0"
MAC = "52:54:00:00:00:01"

#: The variables libvirt's test sets (testSetDefaultParameters), lists in order.
PARAMETERS: tuple[tuple[str, str], ...] = (
    ("IPSETNAME", "tck_test"),
    ("A", "1.1.1.1"), ("A", "2.2.2.2"), ("A", "3.3.3.3"), ("A", "3.3.3.3"),
    ("B", "80"), ("B", "90"), ("B", "80"), ("B", "80"),
    ("C", "1080"), ("C", "1090"), ("C", "1100"), ("C", "1110"),
)  # fmt: skip


#: The cases with an nftables expectation in libvirt's development tree (ipset has none),
#: listed so that a missing folder skips with a reason instead of collecting nothing.
NFT_CASES: tuple[str, ...] = (
    "ah", "ah-ipv6", "all", "all-ipv6", "arp", "comment", "conntrack", "esp", "esp-ipv6",
    "example-1", "example-2", "hex-data", "icmp-direction2", "icmp-direction3",
    "icmp-direction", "icmp", "icmpv6", "igmp", "ip", "ipt-no-macspoof", "ipv6",
    "iter1", "iter2", "iter3", "mac", "rarp", "sctp", "sctp-ipv6", "stp", "target2",
    "target", "tcp", "tcp-ipv6", "udp", "udp-ipv6", "udplite", "udplite-ipv6", "vlan",
)  # fmt: skip


def case_filter(name: str) -> ET.Element:
    return ET.parse(DATA / f"{name}.xml").getroot()


def case_port_rules(name: str):
    """The case's PortRules, made by virtfw's own XML parser and instantiation."""
    from virtfw.filter.instantiate import instantiate
    from virtfw.filter.model import Binding
    from virtfw.filter.xml import parse_filter

    root_name = case_filter(name).get("name")

    def lookup(filter_name: str):
        file = name if filter_name == root_name else filter_name
        return parse_filter((DATA / f"{file}.xml").read_text(), f"{file}.xml")

    params: dict[str, list[str]] = {}
    for key, value in PARAMETERS:
        params.setdefault(key, []).append(value)
    binding = Binding(portdev=PORT, mac=MAC, filter=root_name or "", params=params)
    return instantiate(binding, lookup)
