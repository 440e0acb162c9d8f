"""Filter rules made by hand (``PortRule``/``PortRules``), for backend tests.

Shared by the render unit tests and the backend tests in namespaces; the latter also
import them inside the namespace's Python process.
"""

from __future__ import annotations

from virtfw.rules.portrules import Match, PortRule, PortRules


def rule(
    element: str | None,
    direction: str = "out",
    action: str = "accept",
    *,
    chain: str = "root",
    chain_priority: int = 0,
    priority: int = 500,
    statematch: bool = True,
    negate: bool = False,
    **matches,
) -> PortRule:
    """A PortRule by hand; attribute names with '-' are written with '_'."""
    return PortRule(
        chain,
        chain_priority,
        priority,
        action,
        direction,
        statematch,
        element,
        negate,
        tuple(Match(name.replace("_", "-"), value) for name, value in matches.items()),
    )


def port(rules: list[PortRule], name: str = "vnet0") -> PortRules:
    return PortRules(name, f"binding:{name}", tuple(rules))


def demo_rules(variant: int = 0) -> list[PortRule]:
    """A filter using every tool: ebtables root and sub-chains, iptables and ip6tables."""
    rules = [
        rule("mac", srcmacaddr="52:54:00:00:00:01", negate=True, action="drop"),
        rule("arp", "inout", chain="arp", chain_priority=-500, opcode=1 + variant),
        rule("tcp", "in", dstportstart=22 + variant),
        rule("all-ipv6", "out", comment=f"v{variant}"),
    ]
    if variant == 0:
        rules.append(rule("ip", chain="ipv4", chain_priority=-700, protocol=17))
    return rules
