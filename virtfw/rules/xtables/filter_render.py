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
* state matching (``-m conntrack --ctstate/--ctdir``), ICMP-type and source-MAC skips,
  connlimit, ipset, comment placement, per-protocol option spelling and number bases.

Arguments are returned as lists; ``restore_line`` quotes them for ``*-restore``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address

from virtfw.rules.portrules import PortRule, PortRules, Value

# Element names that are layer 2 (ebtables) and layer 3 per family (iptables/ip6tables).
ETHERNET = frozenset({"mac", "vlan", "stp", "arp", "rarp", "ip", "ipv6"})
IPV4 = frozenset({"tcp", "udp", "udplite", "esp", "ah", "sctp", "icmp", "igmp", "all"})
IPV6 = frozenset({"tcp-ipv6", "udp-ipv6", "udplite-ipv6", "esp-ipv6", "ah-ipv6", "sctp-ipv6", "icmpv6", "all-ipv6"})

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

# Sub-chain protocols by prefix, in libvirt's lookup order (l3_protocols[]), with the
# match on the root chain's jump: an ethertype, or STP's bridge group address.
STP_BGA = "01:80:c2:00:00:00"
SUBCHAIN_MATCH: tuple[tuple[str, list[str]], ...] = (
    ("ipv4", ["-p", "0x0800"]),
    ("ipv6", ["-p", "0x86dd"]),
    ("arp", ["-p", "0x0806"]),
    ("rarp", ["-p", "0x8035"]),
    ("mac", []),
    ("vlan", ["-p", "0x8100"]),
    ("stp", ["-d", STP_BGA]),
)

EB_TARGETS = {"accept": "ACCEPT", "drop": "DROP", "reject": "DROP", "return": "RETURN", "continue": "CONTINUE"}
IPT_TARGETS = {"drop": "DROP", "reject": "REJECT", "return": "RETURN", "continue": "CONTINUE"}


def family_of(rule: PortRule) -> str:
    """``ebtables``, ``ipv4`` or ``ipv6``: which tool a rule's element belongs to."""
    if rule.protocol is None or rule.protocol in ETHERNET:
        return "ebtables"
    if rule.protocol in IPV4:
        return "ipv4"
    if rule.protocol in IPV6:
        return "ipv6"
    raise ValueError(f"unknown protocol element {rule.protocol!r}")


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


def ipt_links(port: str) -> list[tuple[str, list[str]]]:
    """The jumps from the global chains to a port's chains, in libvirt's order, plus the
    ``virtfw-in-post`` accept: (global chain, rule arguments after ``-A CHAIN``)."""
    return [
        (OUT_CHAIN, ["-m", "physdev", "--physdev-is-bridged", "--physdev-out", port, "-g", ipt_chain("FO", port)]),
        (IN_CHAIN, ["-m", "physdev", "--physdev-in", port, "-g", ipt_chain("FI", port)]),
        (HOST_IN_CHAIN, ["-m", "physdev", "--physdev-in", port, "-g", ipt_chain("HI", port)]),
        (IN_POST_CHAIN, ["-m", "physdev", "--physdev-in", port, "-j", "ACCEPT"]),
    ]


def eb_hook(prefix: str, port: str) -> tuple[str, list[str]]:
    """The builtin-chain jump to a root chain: ``PREROUTING -i`` for I, ``POSTROUTING -o`` for O."""
    if prefix == "I":
        return "PREROUTING", ["-i", port, "-j", eb_root("I", port)]
    return "POSTROUTING", ["-o", port, "-j", eb_root("O", port)]


# --- value printing --------------------------------------------------------------------


def fmt_ip(value: Value) -> str:
    """An address as libvirt prints it (inet_ntop: IPv4-mapped/-compatible tails dotted)."""
    if isinstance(value, IPv6Address):
        mapped = value.ipv4_mapped
        if mapped is not None:
            return f"::ffff:{mapped}"
        packed = value.packed
        if packed[:12] == bytes(12) and packed[12:14] != bytes(2):
            return f"::{IPv4Address(packed[12:])}"
        return str(value)
    return str(value)


def fmt(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (IPv4Address, IPv6Address)):
        return fmt_ip(value)
    return str(value)


def fmt_hex(value: Value) -> str:
    """libvirt's printDataTypeAsHex: ``0x%x``."""
    return f"0x{int(value):x}"


# --- ebtables --------------------------------------------------------------------------


def negated(rule: PortRule, name: str) -> bool:
    """Whether attribute NAME carries match='no' (libvirt's ENTRY_WANT_NEG_SIGN).

    The seam carries the element's match='no' (every attribute negated); a per-attribute
    set (``rule.negated``), should the seam grow one, takes precedence.
    """
    per_attribute = getattr(rule, "negated", None)
    if per_attribute is not None:
        return name in per_attribute
    return rule.negate


class _Args:
    """Argument list builder for one rule."""

    def __init__(self, rule: PortRule) -> None:
        self.rule = rule
        self.args: list[str] = []

    def has(self, name: str) -> bool:
        return self.rule.get(name) is not None

    def val(self, name: str) -> Value:
        value = self.rule.get(name)
        assert value is not None
        return value

    def neg(self, name: str) -> list[str]:
        return ["!"] if self.has(name) and negated(self.rule, name) else []

    def add(self, *words: str) -> None:
        self.args.extend(words)

    def opt_neg_val(self, name: str, option: str, text: str) -> None:
        """``OPTION [!] VALUE``: ebtables style, the bang after the option."""
        self.args += [option, *self.neg(name), text]

    def neg_opt_val(self, name: str, option: str, text: str) -> None:
        """``[!] OPTION VALUE``: iptables style, the bang before the option."""
        self.args += [*self.neg(name), option, text]


def _eth_header(a: _Args, reverse: bool) -> None:
    for addr, mask, flag, rflag in (("srcmacaddr", "srcmacmask", "-s", "-d"), ("dstmacaddr", "dstmacmask", "-d", "-s")):
        if a.has(addr):
            text = fmt(a.val(addr)) + (f"/{fmt(a.val(mask))}" if a.has(mask) else "")
            a.opt_neg_val(addr, rflag if reverse else flag, text)


def _pair(a: _Args, low: str, high: str, sep: str) -> str:
    return fmt(a.val(low)) + (f"{sep}{fmt(a.val(high))}" if a.has(high) else "")


_STP_ITEMS: tuple[tuple[str, str | None, str, str], ...] = (
    ("type", None, "--stp-type", ""),
    ("flags", None, "--stp-flags", ""),
    ("root-priority", "root-priority-hi", "--stp-root-pri", ":"),
    ("root-address", "root-address-mask", "--stp-root-addr", "/"),
    ("root-cost", "root-cost-hi", "--stp-root-cost", ":"),
    ("sender-priority", "sender-priority-hi", "--stp-sender-prio", ":"),
    ("sender-address", "sender-address-mask", "--stp-sender-addr", "/"),
    ("port", "port-hi", "--stp-port", ":"),
    ("age", "age-hi", "--stp-msg-age", ":"),
    ("max-age", "max-age-hi", "--stp-max-age", ":"),
    ("hello-time", "hello-time-hi", "--stp-hello-time", ":"),
    ("forward-delay", "forward-delay-hi", "--stp-forward-delay", ":"),
)


def _eb_arp(a: _Args, reverse: bool) -> None:
    a.add("-p", "0x806" if a.rule.protocol == "arp" else "0x8035")
    if a.has("hwtype"):
        a.opt_neg_val("hwtype", "--arp-htype", fmt(a.val("hwtype")))
    if a.has("opcode"):
        a.opt_neg_val("opcode", "--arp-opcode", fmt(a.val("opcode")))
    if a.has("protocoltype"):
        a.opt_neg_val("protocoltype", "--arp-ptype", fmt_hex(a.val("protocoltype")))
    # libvirt keeps one mask buffer: a destination without its own mask reuses the
    # source's mask when one was given (else /32).
    mask: str | None = None
    for addr, own_mask, flag, rflag in (
        ("arpsrcipaddr", "arpsrcipmask", "--arp-ip-src", "--arp-ip-dst"),
        ("arpdstipaddr", "arpdstipmask", "--arp-ip-dst", "--arp-ip-src"),
    ):
        if a.has(addr):
            if a.has(own_mask):
                mask = fmt(a.val(own_mask))
            a.opt_neg_val(addr, rflag if reverse else flag, f"{fmt(a.val(addr))}/{mask if mask is not None else '32'}")
    for addr, flag, rflag in (
        ("arpsrcmacaddr", "--arp-mac-src", "--arp-mac-dst"),
        ("arpdstmacaddr", "--arp-mac-dst", "--arp-mac-src"),
    ):
        if a.has(addr):
            a.opt_neg_val(addr, rflag if reverse else flag, fmt(a.val(addr)))
    if a.rule.get("gratuitous") is True:
        a.add(*a.neg("gratuitous"), "--arp-gratuitous")


def _eb_ip(a: _Args, reverse: bool, six: bool) -> None:
    p = "ip6" if six else "ip"
    a.add("-p", "ipv6" if six else "ipv4")
    for addr, mask, src in (("srcipaddr", "srcipmask", True), ("dstipaddr", "dstipmask", False)):
        if a.has(addr):
            flag = f"--{p}-source" if src != reverse else f"--{p}-destination"
            a.opt_neg_val(addr, flag, _pair(a, addr, mask, "/"))
    if a.has("protocol"):
        a.opt_neg_val("protocol", f"--{p}-protocol", fmt(a.val("protocol")))
    for start, end, src in (("srcportstart", "srcportend", True), ("dstportstart", "dstportend", False)):
        if a.has(start):
            flag = f"--{p}-source-port" if src != reverse else f"--{p}-destination-port"
            a.opt_neg_val(start, flag, _pair(a, start, end, ":"))
    if not six and a.has("dscp"):
        a.opt_neg_val("dscp", "--ip-tos", fmt_hex(a.val("dscp")))
    if six and any(a.has(n) for n in ("type", "typeend", "code", "codeend")):
        text = ""
        for low, high in (("type", "typeend"), ("code", "codeend")):
            lo = fmt(a.val(low)) if a.has(low) else "0"
            hi = fmt(a.val(high)) if a.has(high) else (lo if a.has(low) else "255")
            text += f"{lo}:{hi}/"
        a.add("--ip6-icmp-type", *a.neg("type"), text[:-1])  # libvirt looks at the type's negation only


def ebtables_rule(rule: PortRule, chain: str, reverse: bool) -> list[str]:
    """``-A CHAIN ...`` for one ethernet rule in one direction (``reverse``: swap src/dst)."""
    a = _Args(rule)
    proto = rule.protocol
    if proto is not None:
        if proto == "stp" and reverse and a.has("srcmacaddr"):
            raise ValueError("STP filtering in inout direction with source MAC address set is not supported")
        _eth_header(a, reverse)
    if proto == "mac":
        if a.has("protocolid"):
            a.add("-p", *a.neg("protocolid"), fmt_hex(a.val("protocolid")))
    elif proto == "vlan":
        a.add("-p", "0x8100")
        for name, option in (("vlanid", "--vlan-id"), ("encap-protocol", "--vlan-encap")):
            if a.has(name):
                a.opt_neg_val(name, option, fmt(a.val(name)))
    elif proto == "stp":
        a.add("-d", STP_BGA)
        for low, high, option, sep in _STP_ITEMS:
            if a.has(low):
                a.opt_neg_val(low, option, _pair(a, low, high, sep) if high else fmt(a.val(low)))
    elif proto in ("arp", "rarp"):
        _eb_arp(a, reverse)
    elif proto in ("ip", "ipv6"):
        _eb_ip(a, reverse, proto == "ipv6")
    return ["-A", chain, *a.args, "-j", EB_TARGETS[rule.action]]


# --- iptables --------------------------------------------------------------------------


def _ip_header(a: _Args, direction_in: bool) -> tuple[bool, bool]:
    """Addresses, ranges and dscp; returns (skip_rule, skip_match) for connlimit."""
    for addr, mask, frm, to, src in (
        ("srcipaddr", "srcipmask", "srcipfrom", "srcipto", True),
        ("dstipaddr", "dstipmask", "dstipfrom", "dstipto", False),
    ):
        is_src = src != direction_in
        if a.has(addr):
            a.neg_opt_val(addr, "--source" if is_src else "--destination", _pair(a, addr, mask, "/"))
        elif a.has(frm):
            a.add("-m", "iprange")
            a.neg_opt_val(frm, "--src-range" if is_src else "--dst-range", _pair(a, frm, to, "-"))
    if a.has("dscp"):
        a.add("-m", "dscp")
        a.neg_opt_val("dscp", "--dscp", fmt(a.val("dscp")))
    if a.has("connlimit-above"):
        return direction_in, not direction_in  # only the outgoing direction supports it
    return False, False


def _ports(a: _Args, direction_in: bool) -> None:
    for start, end, src in (("srcportstart", "srcportend", True), ("dstportstart", "dstportend", False)):
        if a.has(start):
            a.neg_opt_val(start, "--sport" if src != direction_in else "--dport", _pair(a, start, end, ":"))


def _ipset_flags(flags: str, direction_in: bool) -> str:
    """ipsetflags for the packet direction of this instance: src/dst swap when incoming."""
    swap = {"src": "dst", "dst": "src"}
    return ",".join(swap[f] if direction_in else f for f in str(flags).lower().split(","))


@dataclass(frozen=True)
class _Instance:
    chain: str  # FI/FO/HI prefix
    direction_in: bool
    state: str | None
    def_match: bool
    accept_target: str
    may_skip_icmp: bool


def iptables_rule(rule: PortRule, port: str, inst: _Instance) -> list[str] | None:
    """``-A CHAIN ...`` for one instance of an iptables rule, or None when libvirt skips it."""
    a = _Args(rule)
    base = rule.protocol.removesuffix("-ipv6") if rule.protocol else ""
    a.add("-p", base)
    start = len(a.args)
    direction_in = inst.direction_in
    mac_skipped = False
    if a.has("srcmacaddr"):
        if direction_in:
            mac_skipped = True
        else:
            a.add("-m", "mac")
            a.neg_opt_val("srcmacaddr", "--mac-source", fmt(a.val("srcmacaddr")))
    skip_rule, skip_match = _ip_header(a, direction_in)
    has_icmp_type = False
    if base == "tcp":
        if a.has("flags"):
            mask, _, flags = str(a.val("flags")).partition("/")
            a.add(*a.neg("flags"), "--tcp-flags", mask, flags)
        _ports(a, direction_in)
        if a.has("option"):
            a.neg_opt_val("option", "--tcp-option", fmt(a.val("option")))
    elif base in ("udp", "sctp"):
        _ports(a, direction_in)
    elif base in ("icmp", "icmpv6"):
        if a.has("type"):
            has_icmp_type = True
            if inst.may_skip_icmp:
                return None
            code = f"/{fmt(a.val('code'))}" if a.has("code") else ""
            a.neg_opt_val("type", "--icmp-type" if base == "icmp" else "--icmpv6-type", fmt(a.val("type")) + code)
    if (mac_skipped and len(a.args) == start) or skip_rule:
        return None
    if rule.action == "accept":
        target = inst.accept_target
    else:
        target = IPT_TARGETS[rule.action]
        skip_match = inst.def_match
    if inst.state and not skip_match:
        a.add("-m", "conntrack", "--ctstate", inst.state)
        if inst.def_match and not has_icmp_type and rule.direction != "inout":
            a.add("-m", "conntrack", "--ctdir", "Reply" if direction_in else "Original")
    if a.has("ipset") and a.has("ipsetflags"):
        a.add("-m", "set", "--match-set", fmt(a.val("ipset")), _ipset_flags(str(a.val("ipsetflags")), direction_in))
    if a.has("connlimit-above") and not direction_in:
        a.add("-m", "connlimit")
        a.neg_opt_val("connlimit-above", "--connlimit-above", fmt(a.val("connlimit-above")))
    if a.has("comment"):
        a.add("-m", "comment", "--comment", str(a.val("comment")))
    return ["-A", ipt_chain(inst.chain, port), *a.args, "-j", target]


def _state_text(rule: PortRule) -> str | None:
    """The ``state`` attribute as --ctstate prints it; NONE means no state match at all."""
    state = rule.get("state")
    if state is None:
        return None
    text = str(state)
    return None if "NONE" in text.split(",") else text


def iptables_instances(rule: PortRule) -> list[_Instance]:
    """The FI (RETURN), FO (ACCEPT), HI (RETURN) instances libvirt makes of one rule."""
    direction_in = rule.direction in ("in", "inout")
    inout = rule.direction == "inout"
    out: list[_Instance] = []
    if rule.statematch and rule.get("state") is not None:
        # An explicit state: each chain gets it as given, only in the directions it names.
        state = _state_text(rule)
        if not (direction_in and not inout):
            out.append(_Instance("FI", direction_in, state, False, "RETURN", direction_in or inout))
        if direction_in:
            out.append(_Instance("FO", not direction_in, state, False, "ACCEPT", not direction_in or inout))
        if not (direction_in and not inout):
            out.append(_Instance("HI", direction_in, state, False, "RETURN", direction_in))
        return out
    need_state = rule.statematch and not inout
    one = ("ESTABLISHED" if direction_in else "NEW,ESTABLISHED") if need_state else None
    two = ("NEW,ESTABLISHED" if direction_in else "ESTABLISHED") if need_state else None
    return [
        _Instance("FI", direction_in, one, True, "RETURN", direction_in or inout),
        _Instance("FO", not direction_in, two, True, "ACCEPT", not direction_in or inout),
        _Instance("HI", direction_in, one, True, "RETURN", direction_in),
    ]


# --- layout ----------------------------------------------------------------------------


@dataclass
class EbPlan:
    """ebtables part of a port: chains in creation order, rules, and the root hooks."""

    chains: list[str] = field(default_factory=list)
    rules: list[list[str]] = field(default_factory=list)
    hooks: list[tuple[str, list[str]]] = field(default_factory=list)  # (builtin chain, args)


@dataclass
class IptPlan:
    """One family's part of a port: rules for FI/FO/HI (chains and links are fixed)."""

    rules: list[list[str]] = field(default_factory=list)


@dataclass
class PortPlan:
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


def _subchain_match(suffix: str) -> list[str] | None:
    for proto, match in SUBCHAIN_MATCH:
        if suffix.startswith(proto):
            return match
    return None


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
    subchains: list[tuple[int, str, str, list[str]]] = []  # (priority, prefix, suffix, match)
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

    def create(sub: tuple[int, str, str, list[str]]) -> None:
        _, prefix, suffix, match = sub
        chain = eb_chain(prefix, port, suffix)
        plan.chains.append(chain)
        plan.rules.append(["-A", eb_root(prefix, port), *match, "-j", chain])

    for rule in eth:
        priority = _adjusted_priority(rule)
        while next_sub is not None and next_sub[0] <= priority:
            create(next_sub)
            next_sub = next(pending, None)
        if rule.direction in ("out", "inout"):
            plan.rules.append(ebtables_rule(rule, eb_chain("I", port, rule.chain), rule.direction == "inout"))
        if rule.direction in ("in", "inout"):
            plan.rules.append(ebtables_rule(rule, eb_chain("O", port, rule.chain), False))
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
                args = iptables_rule(rule, port, inst)
                if args is not None:
                    plan.rules.append(args)
        families[family] = plan
    return PortPlan(port, _eb_plan(port, rules), families)


# --- restore syntax --------------------------------------------------------------------

_PLAIN = re.compile(r"[A-Za-z0-9_\-+.:/,!@%=^~\[\]]+")


@lru_cache(maxsize=65536)
def quote(word: str) -> str:
    """One argument for an ``*-restore`` line: double quotes with backslash escapes,
    the only quoting xtables-restore understands (single quotes are literal)."""
    if _PLAIN.fullmatch(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def restore_line(args: Sequence[str]) -> str:
    return " ".join(map(quote, args))
