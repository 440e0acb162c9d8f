"""Rendering one binding's rules the way libvirt's ebiptables nwfilter driver does.

Pure functions, no I/O: ``plan_port`` turns a ``PortRules`` into the commands that
build its chains (ebtables ``nat`` for layer 2, iptables/ip6tables ``filter`` with
physdev matches for layer 3), in libvirt's order, under the *final* names libvirt
leaves after ``applyNewRules`` + ``tearOldRules`` (``J``->``I``, ``P``->``O``,
``FJ``->``FI``, ``FP``->``FO``, ``HJ``->``HI``), with ``libvirt-`` spelled ``virtfw-``.

What is reproduced from libvirt 11.3.0 (nwfilter_ebiptables_driver.c), as facts:

* rule order: root-chain rules first, then by rule priority (a stable sort, so rules
  of equal priority keep definition order and iterations stay together);
* a rule in a non-root chain whose priority is below its chain's priority is moved up
  to the chain priority, which decides where the jump to its sub-chain lands;
* ebtables sub-chains (``I-PORT-ipv4``...) are created, and jumped to from the root
  chain, in chain-priority order interleaved with the root chain's rules;
* a rule ``out`` of the guest lands in ebtables ``I`` (``-i PORT``) and in iptables
  FI/HI (RETURN) with the mirrored FO (ACCEPT) rule; ``in`` the other way round;
  ``inout`` in both, with src/dst swapped in the ebtables ``I`` chain;
* the FI/FO/HI instances of a layer-3 rule and their state matching; how each rule is
  spelled (option order, negation, number bases, the instances libvirt skips) is
  ``xtables.syntax``'s part.

Rules are ``PlannedRule``s: a chain and the arguments after ``-A CHAIN``, unquoted;
``syntax.restore_line`` quotes them for ``*-restore``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from virtfw.rules import protocols
from virtfw.rules.portrules import PortRule, PortRules
from virtfw.rules.xtables.syntax import (
    IptablesInstance,
    PlannedRule,
    ebtables_args,
    ebtables_jump_match,
    iptables_args,
)

# Global iptables chains and their hooks (libvirt: libvirt-in, -out, -in-post, -host-in).
IN_CHAIN, OUT_CHAIN, IN_POST_CHAIN, HOST_IN_CHAIN = "virtfw-in", "virtfw-out", "virtfw-in-post", "virtfw-host-in"
BASE_CHAINS = (IN_CHAIN, OUT_CHAIN, IN_POST_CHAIN, HOST_IN_CHAIN)
# (builtin chain, position, our chain) as libvirt inserts them: -I FORWARD 1/2/3, -I INPUT 1.
BASE_HOOKS = (
    ("FORWARD", 1, IN_CHAIN),
    ("FORWARD", 2, OUT_CHAIN),
    ("FORWARD", 3, IN_POST_CHAIN),
    ("INPUT", 1, HOST_IN_CHAIN),
)


def family_of(rule: PortRule) -> str:
    """``ebtables``, ``ipv4`` or ``ipv6``: which tool a rule's element belongs to."""
    layer = protocols.layer(rule.protocol)
    return "ebtables" if layer == "ethernet" else layer


# --- chain names -----------------------------------------------------------------------


def eb_root(prefix: str, port: str) -> str:
    """ebtables root chain: ``virtfw-I-PORT`` (from the guest) or ``virtfw-O-PORT``."""
    return f"virtfw-{prefix}-{port}"


def eb_chain(prefix: str, port: str, suffix: str) -> str:
    """The chain a rule of filter chain SUFFIX goes to (root, or ``I-PORT-SUFFIX``)."""
    return eb_root(prefix, port) if suffix == "root" else f"{prefix}-{port}-{suffix}"


def ipt_chain(prefix: str, port: str) -> str:
    """iptables per-port chain: ``FI-PORT``, ``FO-PORT`` or ``HI-PORT``."""
    return f"{prefix}-{port}"


def ipt_links(port: str) -> list[PlannedRule]:
    """The jumps from the global chains to a port's chains, in libvirt's order, plus the
    ``virtfw-in-post`` accept."""
    return [
        PlannedRule(
            OUT_CHAIN, ("-m", "physdev", "--physdev-is-bridged", "--physdev-out", port, "-g", ipt_chain("FO", port))
        ),
        PlannedRule(IN_CHAIN, ("-m", "physdev", "--physdev-in", port, "-g", ipt_chain("FI", port))),
        PlannedRule(HOST_IN_CHAIN, ("-m", "physdev", "--physdev-in", port, "-g", ipt_chain("HI", port))),
        PlannedRule(IN_POST_CHAIN, ("-m", "physdev", "--physdev-in", port, "-j", "ACCEPT")),
    ]


def eb_hook(prefix: str, port: str) -> PlannedRule:
    """The builtin-chain jump to a root chain: ``PREROUTING -i`` for I, ``POSTROUTING -o`` for O."""
    if prefix == "I":
        return PlannedRule("PREROUTING", ("-i", port, "-j", eb_root("I", port)))
    return PlannedRule("POSTROUTING", ("-o", port, "-j", eb_root("O", port)))


def _state_text(rule: PortRule) -> str | None:
    """The ``state`` attribute as --ctstate prints it; NONE means no state match at all."""
    state = rule.get("state")
    if state is None:
        return None
    text = str(state)
    return None if "NONE" in text.split(",") else text


def iptables_instances(rule: PortRule) -> list[IptablesInstance]:
    """The FI (RETURN), FO (ACCEPT), HI (RETURN) instances libvirt makes of one rule."""
    direction_in = rule.direction in ("in", "inout")
    inout = rule.direction == "inout"
    out: list[IptablesInstance] = []
    if rule.statematch and rule.get("state") is not None:
        # An explicit state: each chain gets it as given, only in the directions it names.
        state = _state_text(rule)
        if not (direction_in and not inout):
            out.append(IptablesInstance("FI", direction_in, state, False, "RETURN", direction_in or inout))
        if direction_in:
            out.append(IptablesInstance("FO", not direction_in, state, False, "ACCEPT", not direction_in or inout))
        if not (direction_in and not inout):
            out.append(IptablesInstance("HI", direction_in, state, False, "RETURN", direction_in))
        return out
    need_state = rule.statematch and not inout
    one = ("ESTABLISHED" if direction_in else "NEW,ESTABLISHED") if need_state else None
    two = ("NEW,ESTABLISHED" if direction_in else "ESTABLISHED") if need_state else None
    return [
        IptablesInstance("FI", direction_in, one, True, "RETURN", direction_in or inout),
        IptablesInstance("FO", not direction_in, two, True, "ACCEPT", not direction_in or inout),
        IptablesInstance("HI", direction_in, one, True, "RETURN", direction_in),
    ]


# --- layout ----------------------------------------------------------------------------


@dataclass
class EbPlan:
    """ebtables part of a port: chains in creation order, rules, and the root hooks
    (rules of the builtin chains PREROUTING/POSTROUTING)."""

    chains: list[str] = field(default_factory=list)
    rules: list[PlannedRule] = field(default_factory=list)
    hooks: list[PlannedRule] = field(default_factory=list)


@dataclass
class IptPlan:
    """One family's part of a port: rules for FI/FO/HI (chains and links are fixed)."""

    rules: list[PlannedRule] = field(default_factory=list)


@dataclass
class PortPlan:
    owner: str  # the binding's key in the status files, from its PortRules
    port: str
    ebtables: EbPlan | None
    families: dict[str, IptPlan]  # "ipv4" / "ipv6" -> plan, only the families with rules


def sort_rules(rules: Sequence[PortRule]) -> list[PortRule]:
    """libvirt's order: root-chain rules first, then by priority; stable otherwise."""
    return sorted(rules, key=lambda r: (0 if r.chain == "root" else 1, r.priority))


def _adjusted_priority(rule: PortRule) -> int:
    """A non-root rule never sorts before its own chain's creation (libvirt's bump)."""
    if rule.chain_priority > rule.priority and rule.chain not in "root":
        return rule.chain_priority
    return rule.priority


def _subchain_match(suffix: str) -> tuple[str, ...] | None:
    kind = protocols.chain_type(suffix)
    return ebtables_jump_match(kind) if kind is not None else None


def _eb_plan(port: str, rules: list[PortRule]) -> EbPlan | None:
    eth = [r for r in rules if family_of(r) == "ebtables"]
    if not eth:
        return None
    plan = EbPlan()
    sets: dict[str, dict[str, int]] = {"I": {}, "O": {}}
    for rule in eth:
        if rule.direction in ("out", "inout"):
            sets["I"][rule.chain] = rule.chain_priority
        if rule.direction in ("in", "inout"):
            sets["O"][rule.chain] = rule.chain_priority
    subchains: list[tuple[int, str, str, tuple[str, ...]]] = []  # (priority, prefix, suffix, match)
    for prefix in ("I", "O"):
        if sets[prefix]:
            plan.chains.append(eb_root(prefix, port))
            for suffix, prio in sorted(sets[prefix].items(), key=lambda item: item[1]):
                match = _subchain_match(suffix)
                if match is not None:
                    subchains.append((prio, prefix, suffix, match))
    subchains.sort(key=lambda item: item[0])
    pending = iter(subchains)
    next_sub = next(pending, None)

    def create(sub: tuple[int, str, str, tuple[str, ...]]) -> None:
        _, prefix, suffix, match = sub
        chain = eb_chain(prefix, port, suffix)
        plan.chains.append(chain)
        plan.rules.append(PlannedRule(eb_root(prefix, port), (*match, "-j", chain)))

    for rule in eth:
        priority = _adjusted_priority(rule)
        while next_sub is not None and next_sub[0] <= priority:
            create(next_sub)
            next_sub = next(pending, None)
        if rule.direction in ("out", "inout"):
            plan.rules.append(
                PlannedRule(eb_chain("I", port, rule.chain), ebtables_args(rule, rule.direction == "inout"))
            )
        if rule.direction in ("in", "inout"):
            plan.rules.append(PlannedRule(eb_chain("O", port, rule.chain), ebtables_args(rule, False)))
    while next_sub is not None:
        create(next_sub)
        next_sub = next(pending, None)
    plan.hooks = [eb_hook(prefix, port) for prefix in ("I", "O") if sets[prefix]]
    return plan


def plan_port(port_rules: PortRules) -> PortPlan:
    """Everything one port needs, per tool, in libvirt's order."""
    port = port_rules.port
    rules = sort_rules(port_rules.rules)
    families: dict[str, IptPlan] = {}
    for family in ("ipv4", "ipv6"):
        selected = [r for r in rules if family_of(r) == family]
        if not selected:
            continue
        plan = IptPlan()
        for rule in selected:
            for inst in iptables_instances(rule):
                args = iptables_args(rule, inst)
                if args is not None:
                    plan.rules.append(PlannedRule(ipt_chain(inst.chain, port), args))
        families[family] = plan
    return PortPlan(port_rules.owner, port, _eb_plan(port, rules), families)
