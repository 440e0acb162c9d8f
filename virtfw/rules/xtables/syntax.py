"""xtables syntax: how both xtables backends spell rules for iptables, ip6tables and ebtables.

Pure functions, no I/O. The network backend renders ``netrules.Rule``s (``render_spec``);
the filter backend renders each ``PortRule`` the way libvirt's ebiptables driver
does (``ebtables_args``, ``iptables_args``: per-protocol option spelling, negation
placement, number bases, the instances libvirt skips). Both write ``*-restore``
input (``quote``, ``restore_line``, ``restore_block``) and read ``*-save`` output back
(``tokens``, ``target_of``) with the quoting xtables-restore understands.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address

from virtfw.rules.netrules import Action, Addr, CtState, DPort, Iface, Match, Proto, Rule, Verdict
from virtfw.rules.portrules import PortRule, Value
from virtfw.rules.protocols import ETHERTYPES, STP_ADDRESS

# ---- restore input and save output ----------------------------------------------------------

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


def restore_block(table: str, lines: Iterable[str]) -> str:
    """One table's ``*TABLE`` ... ``COMMIT`` block of restore input; '' without lines."""
    lines = list(lines)
    return f"*{table}\n" + "".join(line + "\n" for line in lines) + "COMMIT\n" if lines else ""


def restore_blocks(blocks: dict[str, list[str]]) -> str:
    """The blocks of several tables (table -> lines), in order, those without lines left out."""
    return "".join(restore_block(table, lines) for table, lines in blocks.items())


_BLANKS = re.compile(r"[ \t\n]+")


def tokens(line: str) -> list[str]:
    """Split a save/restore line the way xtables-restore does: blanks separate words,
    double quotes group, backslash escapes inside quotes; single quotes are literal."""
    if '"' not in line:  # the common case, and what makes reading 30,000 rules fast
        return _BLANKS.split(line.strip(" \t\n")) if line.strip(" \t\n") else []
    words: list[str] = []
    word: list[str] = []
    quoted = escaped = started = False
    for char in line:
        if quoted:
            if escaped:
                word.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
            else:
                word.append(char)
        elif char == '"':
            quoted = started = True
        elif char in " \t\n":
            if started:
                words.append("".join(word))
                word, started = [], False
        else:
            word.append(char)
            started = True
    if started:
        words.append("".join(word))
    return words


def target_of(spec: str) -> str | None:
    """The ``-j``/``-g`` target of a rule's text (the last one given)."""
    words = tokens(spec)
    target = None
    for i, word in enumerate(words[:-1]):
        if word in ("-j", "-g", "--jump", "--goto"):
            target = words[i + 1]
    return target


# ---- network rules --------------------------------------------------------------------------


def render_match(match: Match) -> list[str]:
    if isinstance(match, Iface):
        return ["-i" if match.inbound else "-o", match.name]
    if isinstance(match, Addr):
        flag = "-s" if match.source else "-d"
        return (["!"] if match.negate else []) + [flag, match.cidr]
    if isinstance(match, Proto):
        return ["-p", match.name]
    if isinstance(match, DPort):
        return ["--dport", str(match.port)]
    if isinstance(match, CtState):
        return ["-m", "conntrack", "--ctstate", ",".join(s.upper() for s in match.states)]
    raise TypeError(f"cannot render {match!r}")


def render_verdict(verdict: Verdict) -> list[str]:
    action = verdict.action
    ports = f"{verdict.ports[0]}-{verdict.ports[1]}" if verdict.ports else ""
    if action is Action.MASQUERADE:
        return ["-j", "MASQUERADE"] + (["--to-ports", ports] if ports else [])
    if action is Action.SNAT:
        assert verdict.addresses is not None, "an SNAT verdict carries its addresses"
        start, end = verdict.addresses
        target = start + (f"-{end}" if end else "") + (f":{ports}" if ports else "")
        return ["-j", "SNAT", "--to-source", target]
    if action is Action.CHECKSUM_FILL:
        return ["-j", "CHECKSUM", "--checksum-fill"]
    return ["-j", action.value.upper()]


def render_spec(rule: Rule) -> str:
    words: list[str] = []
    for match in rule.matches:
        words += render_match(match)
    return " ".join(words + render_verdict(rule.verdict))


# ---- filter rules: values -------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedRule:
    """One rule to append: its chain, and its arguments after ``-A CHAIN``."""

    chain: str
    args: tuple[str, ...]

    def command(self) -> list[str]:
        return ["-A", self.chain, *self.args]


EB_TARGETS = {"accept": "ACCEPT", "drop": "DROP", "reject": "DROP", "return": "RETURN", "continue": "CONTINUE"}
IPT_TARGETS = {"drop": "DROP", "reject": "REJECT", "return": "RETURN", "continue": "CONTINUE"}


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


class ArgList:
    """The argument list of one rule, built option by option."""

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
        # libvirt's ENTRY_WANT_NEG_SIGN: the attribute carries match='no'
        return ["!"] if self.has(name) and self.rule.is_negated(name) else []

    def add(self, *words: str) -> None:
        self.args.extend(words)

    def opt_neg_val(self, name: str, option: str, text: str) -> None:
        """``OPTION [!] VALUE``: ebtables style, the bang after the option."""
        self.args += [option, *self.neg(name), text]

    def neg_opt_val(self, name: str, option: str, text: str) -> None:
        """``[!] OPTION VALUE``: iptables style, the bang before the option."""
        self.args += [*self.neg(name), option, text]


# ---- filter rules: ebtables -----------------------------------------------------------------


def ebtables_jump_match(kind: str) -> tuple[str, ...]:
    """The match of a root chain's jump into a sub-chain of chain type KIND."""
    if kind == "stp":
        return ("-d", STP_ADDRESS)
    if kind in ETHERTYPES:
        return ("-p", f"0x{ETHERTYPES[kind]:04x}")
    return ()


def _eth_header(a: ArgList, reverse: bool) -> None:
    for addr, mask, flag, rflag in (("srcmacaddr", "srcmacmask", "-s", "-d"), ("dstmacaddr", "dstmacmask", "-d", "-s")):
        if a.has(addr):
            text = fmt(a.val(addr)) + (f"/{fmt(a.val(mask))}" if a.has(mask) else "")
            a.opt_neg_val(addr, rflag if reverse else flag, text)


def _pair(a: ArgList, low: str, high: str, sep: str) -> str:
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


def _eb_arp(a: ArgList, reverse: bool) -> None:
    a.add("-p", fmt_hex(ETHERTYPES["arp" if a.rule.protocol == "arp" else "rarp"]))
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


def _eb_ip(a: ArgList, reverse: bool, six: bool) -> None:
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


def ebtables_args(rule: PortRule, reverse: bool) -> tuple[str, ...]:
    """The arguments after ``-A CHAIN`` of one ethernet rule in one direction
    (``reverse``: src/dst swapped)."""
    a = ArgList(rule)
    proto = rule.protocol
    if proto is not None:
        if proto == "stp" and reverse and a.has("srcmacaddr"):
            raise ValueError("STP filtering in inout direction with source MAC address set is not supported")
        _eth_header(a, reverse)
    if proto == "mac":
        if a.has("protocolid"):
            a.add("-p", *a.neg("protocolid"), fmt_hex(a.val("protocolid")))
    elif proto == "vlan":
        a.add("-p", fmt_hex(ETHERTYPES["vlan"]))
        for name, option in (("vlanid", "--vlan-id"), ("encap-protocol", "--vlan-encap")):
            if a.has(name):
                a.opt_neg_val(name, option, fmt(a.val(name)))
    elif proto == "stp":
        a.add("-d", STP_ADDRESS)
        for low, high, option, sep in _STP_ITEMS:
            if a.has(low):
                a.opt_neg_val(low, option, _pair(a, low, high, sep) if high else fmt(a.val(low)))
    elif proto in ("arp", "rarp"):
        _eb_arp(a, reverse)
    elif proto in ("ip", "ipv6"):
        _eb_ip(a, reverse, proto == "ipv6")
    return (*a.args, "-j", EB_TARGETS[rule.action])


# ---- filter rules: iptables -----------------------------------------------------------------


def _ip_header(a: ArgList, direction_in: bool) -> tuple[bool, bool]:
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


def _ports(a: ArgList, direction_in: bool) -> None:
    for start, end, src in (("srcportstart", "srcportend", True), ("dstportstart", "dstportend", False)):
        if a.has(start):
            a.neg_opt_val(start, "--sport" if src != direction_in else "--dport", _pair(a, start, end, ":"))


def _ipset_flags(flags: str, direction_in: bool) -> str:
    """ipsetflags for the packet direction of this instance: src/dst swap when incoming."""
    swap = {"src": "dst", "dst": "src"}
    return ",".join(swap[f] if direction_in else f for f in str(flags).lower().split(","))


@dataclass(frozen=True)
class IptablesInstance:
    """One of the copies libvirt makes of a layer-3 rule, for one of a port's chains."""

    chain: str  # FI/FO/HI prefix
    direction_in: bool
    state: str | None
    def_match: bool
    accept_target: str
    may_skip_icmp: bool


def iptables_args(rule: PortRule, inst: IptablesInstance) -> tuple[str, ...] | None:
    """The arguments after ``-A CHAIN`` of one instance of an iptables rule, or None
    when libvirt skips that instance."""
    a = ArgList(rule)
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
    elif base in ("icmp", "icmpv6") and a.has("type"):
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
    return (*a.args, "-j", target)
