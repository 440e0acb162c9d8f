"""Facts about nwfilter's protocol elements that the schema and every backend share.

Written once here, so the filter schema (which reads ethertype names), the layout
(which sorts rules into layer 2 and layer 3) and both backends' renderers (which
spell the jumps into sub-chains) cannot drift apart.
"""

from __future__ import annotations

# EtherTypes by the name libvirt accepts for them (protocolid=, encap-protocol=) and
# by the chain type whose sub-chain matches them on its jump (ipv4, ipv6, arp, ...).
ETHERTYPES = {"arp": 0x0806, "rarp": 0x8035, "ipv4": 0x0800, "ipv6": 0x86DD, "vlan": 0x8100}

# STP's bridge group address: what an stp element (and the jump to an stp sub-chain) matches.
STP_ADDRESS = "01:80:c2:00:00:00"

# Protocol elements by layer: layer 2 are bridge-level rules (ebtables, nft ether);
# the others are layer-3 rules of one address family, with connection tracking.
LAYER2_ELEMENTS = frozenset({"mac", "vlan", "stp", "arp", "rarp", "ip", "ipv6"})
IPV4_ELEMENTS = frozenset({"tcp", "udp", "udplite", "esp", "ah", "sctp", "icmp", "igmp", "all"})
IPV6_ELEMENTS = frozenset(
    {"tcp-ipv6", "udp-ipv6", "udplite-ipv6", "esp-ipv6", "ah-ipv6", "sctp-ipv6", "icmpv6", "all-ipv6"}
)


def is_layer2(element: str | None) -> bool:
    """A rule without a protocol element is a layer-2 rule too (it matches any frame)."""
    return element is None or element in LAYER2_ELEMENTS


def layer(element: str | None) -> str:
    """``ethernet``, ``ipv4`` or ``ipv6``: where a rule with this element is enforced."""
    if is_layer2(element):
        return "ethernet"
    if element in IPV4_ELEMENTS:
        return "ipv4"
    if element in IPV6_ELEMENTS:
        return "ipv6"
    raise ValueError(f"unknown protocol element {element!r}")


def ip_protocol(element: str) -> str:
    """The IP protocol a layer-3 element names, as libvirt spells it: ``tcp-ipv6`` is
    ``tcp``; ``icmpv6`` stays ``icmpv6`` and ``all``/``all-ipv6`` are ``all``."""
    return element.removesuffix("-ipv6")


# The chain types a filter's chain name may start with, in libvirt's lookup order
# (l3_protocols[]: a prefix match, so 'ipv4x' and 'ipv4-dhcp' are both of type ipv4).
SUBCHAIN_TYPES = ("ipv4", "ipv6", "arp", "rarp", "vlan", "stp", "mac")


def chain_type(chain: str) -> str | None:
    """The type of a filter chain by its name (what its sub-chain's jump matches), or None."""
    return next((kind for kind in SUBCHAIN_TYPES if chain.startswith(kind)), None)
