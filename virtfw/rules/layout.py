"""How a binding's rules are laid out, whatever the tool: the parts libvirt's drivers share.

- Layer-2 protocol elements (mac, vlan, stp, arp, rarp, ip, ipv6, or none) are
  bridge-level rules; the others (tcp, udp, icmp, all, ... and their -ipv6 forms)
  are layer-3 rules with connection-tracking semantics.
- A filter's chain other than ``root`` becomes a sub-chain of the port's root chain,
  entered by a jump that matches its protocol; jumps and root rules are ordered
  together by priority (a jump carries its filter's chain priority).
- Directions: ``out`` is traffic from the guest, ``in`` traffic to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from virtfw.rules import protocols
from virtfw.rules.portrules import PortRule


def is_layer2(rule: PortRule) -> bool:
    return protocols.is_layer2(rule.protocol)


@dataclass
class Jump:
    """A root-chain entry that enters a sub-chain."""

    chain: str
    priority: int


@dataclass
class DirectionLayout:
    """One direction of one port: root entries in order, and each sub-chain's rules."""

    root: list[PortRule | Jump] = field(default_factory=list)
    subchains: dict[str, list[PortRule]] = field(default_factory=dict)


def sort_key(entry: PortRule | Jump) -> int:
    return entry.priority


def layer2_layout(rules: list[PortRule], direction: str) -> DirectionLayout:
    """The bridge-level rules for one direction ('in' or 'out'), laid out by chain."""
    layout = DirectionLayout()
    jumps: dict[str, Jump] = {}
    for rule in rules:
        if not is_layer2(rule) or rule.direction not in (direction, "inout"):
            continue
        if rule.chain == "root":
            layout.root.append(rule)
            continue
        layout.subchains.setdefault(rule.chain, []).append(rule)
        if rule.chain not in jumps:
            jumps[rule.chain] = Jump(rule.chain, rule.chain_priority)
    layout.root.extend(jumps.values())
    layout.root.sort(key=sort_key)  # stable: equal priorities keep definition order
    for chain_rules in layout.subchains.values():
        chain_rules.sort(key=lambda r: r.priority)
    return layout


def layer3_rules(rules: list[PortRule]) -> list[PortRule]:
    """Layer-3 rules in evaluation order (libvirt ignores their filter's chain)."""
    return sorted((r for r in rules if not is_layer2(r)), key=lambda r: r.priority)
