"""The backend-neutral model of a filter binding: what filter/ hands to a backend.

A binding instantiates a filter tree on one guest port. filter/ resolves the tree
(filterrefs, variables, iterations) into a flat list of ``PortRule``s in definition
order, each with typed values; a backend lays them out in its own chains (sorting
by priority, splitting by protocol chain) and renders them for its tools.

Typed values follow what libvirt's parser stores for each attribute, so renderers
need no parsing of their own:

- MAC addresses and masks: ``str`` in canonical ``aa:bb:cc:dd:ee:ff`` form
- IPv4 / IPv6 addresses: ``ipaddress.IPv4Address`` / ``ipaddress.IPv6Address``
- IP masks (IPv4 and IPv6): ``int`` prefix length
- numbers (ports, protocol ids, types, codes, dscp, vlan ids, connlimit): ``int``
- booleans: ``bool``
- everything else (comment, ipset name and flags, state list, tcp flags, names):
  ``str`` exactly as libvirt would print it
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

Value = str | int | bool | IPv4Address | IPv6Address


@dataclass(frozen=True)
class Match:
    """One attribute of a rule's protocol element, e.g. ``srcipaddr=10.0.0.1``."""

    name: str  # libvirt's attribute name
    value: Value


@dataclass(frozen=True)
class PortRule:
    """One instantiated nwfilter rule (one iteration of its variables)."""

    chain: str  # the owning filter's chain: "root", "mac", "ipv4", "arp-xyz", ...
    chain_priority: int  # the owning filter's chain priority
    priority: int  # the rule's priority, -1000..1000
    action: str  # accept | drop | reject | return | continue
    direction: str  # in (to the guest) | out (from the guest) | inout
    statematch: bool
    protocol: str | None  # element name: "mac", "tcp", "tcp-ipv6", "all", ...; None: no element
    negate: bool  # match='no' on the protocol element
    matches: tuple[Match, ...]  # in the order libvirt's attribute table lists them
    # Per-attribute negation, only where a rule mixes negated and plain attributes
    # (libvirt's merge of repeated protocol elements); None: ``negate`` holds for all.
    negated: frozenset[str] | None = None
    # Where the rule comes from, for messages ("filter 'web-only', rule 2 (...)"); not part
    # of what the rule is, so equal rules of two filters still compare (and cache) equal.
    origin: str = field(default="", compare=False)

    def is_negated(self, name: str) -> bool:
        return name in self.negated if self.negated is not None else self.negate

    def get(self, name: str) -> Value | None:
        for match in self.matches:
            if match.name == name:
                return match.value
        return None


@dataclass(frozen=True)
class PortRules:
    """Everything one binding needs on one port device."""

    port: str  # the guest's port device (tap/veth on the host side)
    owner: str  # key in the status files: "binding:PORT"
    rules: tuple[PortRule, ...]
