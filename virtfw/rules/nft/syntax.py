"""nft's syntax: how both nftables backends spell matches, verdicts and values.

Pure functions, no I/O. The network backend renders ``netrules.Rule``s (``render_rule``);
the filter backend renders ``PortRule``s, one direction at a time (``layer2_expr``,
``layer3_expr``, ``port_rule_text``), and the jumps into a port's sub-chains
(``jump_match``, ``bare_verdict``). The backends own tables, chains and batches.
"""

from __future__ import annotations

import re
from dataclasses import replace
from functools import lru_cache
from ipaddress import IPv4Address

from virtfw.errors import VirtfwError
from virtfw.rules import protocols
from virtfw.rules.netrules import Action, Addr, CtState, DPort, Family, Iface, Match, Proto, Rule, Verdict
from virtfw.rules.portrules import Match as PortMatch
from virtfw.rules.portrules import PortRule
from virtfw.rules.protocols import ETHERTYPES, STP_ADDRESS

# The nft family of each address family's tables (``ip``/``ip6`` also name the address matches).
NFT_FAMILY = {Family.IPV4: "ip", Family.IPV6: "ip6"}


def ifname(name: str) -> str:
    """An interface name as an nft value: quoted, so a port named 'drop' or 'map' is a name,
    not a keyword (names are checked by ``names.check_ifname``: no quote inside)."""
    return f'"{name}"'


# ---- network rules ---------------------------------------------------------------


def render_match(match: Match, fam: str) -> str:
    if isinstance(match, Iface):
        key = ("iif" if match.inbound else "oif") + ("" if match.by_index else "name")
        return f'{key} "{match.name}"'
    if isinstance(match, Addr):
        op = "!= " if match.negate else ""
        return f"{fam} {'saddr' if match.source else 'daddr'} {op}{match.cidr}"
    if isinstance(match, Proto):
        return f"meta l4proto {match.name}"
    if isinstance(match, DPort):
        return f"{match.proto} dport {match.port}"
    if isinstance(match, CtState):
        return "ct state " + ",".join(match.states)
    raise TypeError(f"cannot render {match!r}")


def render_verdict(verdict: Verdict) -> str:
    action = verdict.action
    ports = f":{verdict.ports[0]}-{verdict.ports[1]}" if verdict.ports else ""
    if action is Action.MASQUERADE:
        return f"masquerade to {ports}" if ports else "masquerade"
    if action is Action.SNAT:
        assert verdict.addresses is not None, "an SNAT verdict carries its addresses"
        start, end = verdict.addresses
        return f"snat to {start}{'-' + end if end else ''}{ports}"
    return action.value


def render_rule(rule: Rule) -> str:
    fam = NFT_FAMILY[rule.family]
    parts = [render_match(m, fam) for m in rule.matches]
    parts += ["counter", render_verdict(rule.verdict)]
    return " ".join(parts)


# ---- filter rules: values ----------------------------------------------------------


class Unsupported(VirtfwError):
    """A filter rule bridge-family nftables cannot express (the iptables backend can)."""


# For the mirrored (reply) direction: each attribute and its counterpart.
SWAP = {}
for _a, _b in (("srcipaddr", "dstipaddr"), ("srcipmask", "dstipmask"), ("srcipfrom", "dstipfrom"),
               ("srcipto", "dstipto"), ("srcportstart", "dstportstart"), ("srcportend", "dstportend")):  # fmt: skip
    SWAP[_a], SWAP[_b] = _b, _a

# nft's names for a layer-3 element's IP protocol, where they differ from libvirt's
# (None: no protocol match at all).
NFT_IP_PROTOCOL: dict[str, str | None] = {"icmpv6": "ipv6-icmp", "all": None}

# The ethertypes nft prints by name (``ether type ip``) rather than by number.
NFT_ETHERTYPE_NAMES = {"ip": ETHERTYPES["ipv4"], "ip6": ETHERTYPES["ipv6"], "arp": ETHERTYPES["arp"]}

_COMMENT_SAFE = re.compile(r"[^A-Za-z0-9 _.,:;/=+@()\[\]-]")


def _hex(value: int, width: int) -> str:
    return f"0x{value:0{width}x}"


def _mac_int(mac: str) -> int:
    return int(mac.replace(":", ""), 16)


def _ip_int(addr: object) -> int:
    return int(IPv4Address(str(addr)))


def _prefix_mask(length: int, bits: int) -> int:
    return ((1 << bits) - 1) ^ ((1 << (bits - length)) - 1)


def l3_family_and_protocol(element: str) -> tuple[str, str | None]:
    """The nft family (``ip``/``ip6``) and ``meta l4proto`` name of a layer-3 element."""
    layer = protocols.layer(element)
    if layer == "ethernet":
        raise ValueError(f"{element!r} is a layer-2 element")
    name = protocols.ip_protocol(element)
    return ("ip" if layer == "ipv4" else "ip6"), NFT_IP_PROTOCOL.get(name, name)


class _Expr:
    """Builds one rule's match text. Each comparison is negated (``!=``) when its attribute
    is: ``match='no'`` covers every attribute, libvirt's merged elements only some."""

    def __init__(self, rule: PortRule) -> None:
        self.rule = rule
        self.parts: list[str] = []

    def _op(self, attr: str) -> str:
        return "!= " if self.rule.is_negated(attr) else ""

    def eq(self, left: str, right: object, attr: str) -> None:
        self.parts.append(f"{left} {self._op(attr)}{right}")

    def masked(self, left: str, value: str, mask: str, full: str, attr: str) -> None:
        """``left value``, or ``left & mask ==|!= value`` when the mask is not all ones."""
        if mask == full:
            self.eq(left, value, attr)
        else:
            self.parts.append(f"{left} & {mask} {'!=' if self._op(attr) else '=='} {value}")

    def raw(self, text: str) -> None:
        self.parts.append(text)


FULL_MAC = "ff:ff:ff:ff:ff:ff"


def _mac_text(value: int) -> str:
    raw = f"{value:012x}"
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


def _mac_match(expr: _Expr, keyword: str, rule: PortRule, addr_attr: str, mask_attr: str) -> None:
    mac = rule.get(addr_attr)
    if mac is None:
        return
    mask = str(rule.get(mask_attr) or FULL_MAC)
    # nft compares a masked link-layer address with one in the same form (not a number)
    value = _mac_text(_mac_int(str(mac)) & _mac_int(mask)) if mask != FULL_MAC else str(mac)
    expr.masked(keyword, value, mask, FULL_MAC, addr_attr)


def _addr_match(expr: _Expr, fam: str, side: str, rule: PortRule, prefix: str, bits: int) -> None:
    addr = rule.get(f"{prefix}ipaddr")
    if addr is not None:
        mask = rule.get(f"{prefix}ipmask")
        value = f"{addr}/{mask}" if mask is not None and mask != bits else addr
        expr.eq(f"{fam} {side}", value, f"{prefix}ipaddr")
    start, end = rule.get(f"{prefix}ipfrom"), rule.get(f"{prefix}ipto")
    if start is not None:
        expr.eq(f"{fam} {side}", f"{start}-{end}" if end is not None else start, f"{prefix}ipfrom")


def _port_match(expr: _Expr, proto: str, side: str, rule: PortRule, prefix: str) -> None:
    start, end = rule.get(f"{prefix}portstart"), rule.get(f"{prefix}portend")
    if start is None:
        return
    value = f"{start}-{end}" if end is not None and end != start else start
    expr.eq(f"{proto} {side}", value, f"{prefix}portstart")


def _range_match(expr: _Expr, left: str, rule: PortRule, attr: str, width: int) -> None:
    """An stp field with its optional ``-hi`` end: one value or an inclusive range."""
    low, high = rule.get(attr), rule.get(f"{attr}-hi")
    if low is None:
        return
    value = _hex(int(low), width) + (f"-{_hex(int(high), width)}" if high is not None else "")
    expr.eq(left, value, attr)


def _swapped(rule: PortRule) -> PortRule:
    """The rule with source and destination swapped (the guest's own MAC is not an
    address of the reply); per-attribute negation follows its attribute."""
    matches = tuple(PortMatch(SWAP.get(m.name, m.name), m.value) for m in rule.matches if m.name != "srcmacaddr")
    negated = frozenset(SWAP.get(name, name) for name in rule.negated) if rule.negated is not None else None
    return replace(rule, matches=matches, negated=negated)


def _comment(rule: PortRule) -> str:
    text = rule.get("comment")
    if not text:
        return ""
    return f' comment "{_COMMENT_SAFE.sub("_", str(text))[:120]}"'


def _verdict(rule: PortRule) -> str | None:
    """nft's verdict for the rule's action; reject is a drop, as libvirt's nftables driver
    spells it (the bridge family cannot reject on the to-guest path at all)."""
    action = rule.action
    if action == "continue":
        return None
    return "drop" if action == "reject" else action


def _refuse(rule: PortRule, *names: str) -> None:
    for name in names:
        if rule.get(name) is not None:
            raise Unsupported(
                f"the nftables backend cannot match {rule.protocol} {name}= "
                "(bridge-family nftables has no equivalent here); use --backend iptables"
            )


# ---- filter rules: layer 2 ---------------------------------------------------------


@lru_cache(maxsize=65536)
def layer2_expr(rule: PortRule, mirrored: bool) -> str:
    """Match text of a bridge-level rule; ``mirrored``: the from-guest half of an 'inout' rule."""
    proto = rule.protocol
    expr = _Expr(rule)
    src, dst = ("dst", "src") if mirrored else ("src", "dst")
    _mac_match(expr, "ether saddr", rule, f"{src}macaddr", f"{src}macmask")
    _mac_match(expr, "ether daddr", rule, f"{dst}macaddr", f"{dst}macmask")
    if proto == "mac":
        if (pid := rule.get("protocolid")) is not None:
            expr.eq("ether type", _hex(int(pid), 4), "protocolid")
    elif proto == "vlan":
        expr.raw(f"ether type {_hex(ETHERTYPES['vlan'], 4)}")
        if (vid := rule.get("vlanid")) is not None:
            expr.eq("vlan id", vid, "vlanid")
        if (encap := rule.get("encap-protocol")) is not None:
            expr.eq("vlan type", _hex(int(encap), 4), "encap-protocol")
    elif proto == "stp":
        _stp_expr(expr, rule)
    elif proto == "arp":
        _arp_expr(expr, rule, mirrored)
    elif proto == "rarp":
        _rarp_expr(expr, rule, mirrored)
    elif proto in ("ip", "ipv6"):
        _ip_expr(expr, rule, proto, mirrored)
    return " ".join(expr.parts)


# STP BPDU fields from the LLC header on (nft's @nh in the bridge family): (attribute,
# bit offset, width in hex digits), as libvirt's nftables driver places them.
STP_FIELDS = (
    ("type", 48, 2), ("flags", 56, 2), ("root-priority", 64, 4), ("root-cost", 128, 8),
    ("sender-priority", 160, 4), ("port", 224, 4), ("age", 240, 4), ("max-age", 256, 4),
    ("hello-time", 272, 4), ("forward-delay", 288, 4),
)  # fmt: skip
STP_ADDRESSES = (("root-address", 80), ("sender-address", 176))


def _stp_expr(expr: _Expr, rule: PortRule) -> None:
    expr.raw(f"ether daddr {STP_ADDRESS}")
    for attr, offset, width in STP_FIELDS:
        _range_match(expr, f"@nh,{offset},{width * 4}", rule, attr, width)
    for attr, offset in STP_ADDRESSES:
        if (mac := rule.get(attr)) is not None:
            mask = _mac_int(str(rule.get(f"{attr}-mask") or FULL_MAC))
            value = _hex(_mac_int(str(mac)) & mask, 12)
            expr.masked(f"@nh,{offset},48", value, _hex(mask, 12), _hex(_mac_int(FULL_MAC), 12), attr)


def _arp_expr(expr: _Expr, rule: PortRule, mirrored: bool) -> None:
    """ARP fields by nft's arp keywords (which imply ethertype ARP)."""
    expr.raw(f"ether type {_hex(ETHERTYPES['arp'], 4)}")
    for attr, keyword in (("hwtype", "arp htype"), ("protocoltype", "arp ptype"), ("opcode", "arp operation")):
        if (value := rule.get(attr)) is not None:
            expr.eq(keyword, _hex(int(value), 4) if attr == "protocoltype" else int(value), attr)
    src, dst = ("dst", "src") if mirrored else ("src", "dst")
    for side, keyword in ((src, "saddr"), (dst, "daddr")):
        if (mac := rule.get(f"arp{side}macaddr")) is not None:
            expr.eq(f"arp {keyword} ether", mac, f"arp{side}macaddr")
        if (ip := rule.get(f"arp{side}ipaddr")) is not None:
            mask = rule.get(f"arp{side}ipmask")
            expr.eq(f"arp {keyword} ip", f"{ip}/{mask}" if mask is not None and mask != 32 else ip, f"arp{side}ipaddr")
    if rule.get("gratuitous") is True:  # false matches nothing more, as in libvirt's drivers
        if rule.is_negated("gratuitous"):
            raise Unsupported(
                "the nftables backend cannot match arp gratuitous='true' with match='no' "
                "(nft compares no two fields, and 'some byte differs' is no single rule); use --backend iptables"
            )
        expr.raw(GRATUITOUS)


# A gratuitous ARP has sender IP == target IP. nft compares no two fields, so (as libvirt's
# nftables driver does) each byte pair is looked up in a set of the 256 equal pairs per byte.
SAME_IP_SET = "same-ip-set"
GRATUITOUS = " ".join(
    f"arp saddr ip & {mask} . arp daddr ip & {mask} @{SAME_IP_SET}"
    for mask in ("255.0.0.0", "0.255.0.0", "0.0.255.0", "0.0.0.255")
)


def same_ip_set() -> str:
    """The set GRATUITOUS looks up, in nft's block syntax."""
    pairs = ["0.0.0.0 . 0.0.0.0"]
    for byte in range(4):
        for value in range(1, 256):
            address = ".".join(str(value) if i == byte else "0" for i in range(4))
            pairs.append(f"{address} . {address}")
    return f"set {SAME_IP_SET} {{ type ipv4_addr . ipv4_addr; elements = {{ {', '.join(pairs)} }} }}"


def _rarp_expr(expr: _Expr, rule: PortRule, mirrored: bool) -> None:
    """RARP fields as raw payload: nft's arp keywords imply ethertype ARP."""
    expr.raw(f"ether type {_hex(ETHERTYPES['rarp'], 4)}")
    for attr, offset, width in (("hwtype", 0, 4), ("protocoltype", 16, 4), ("opcode", 48, 4)):
        if (value := rule.get(attr)) is not None:
            expr.eq(f"@nh,{offset},{width * 4}", _hex(int(value), width), attr)
    src, dst = ("dst", "src") if mirrored else ("src", "dst")
    for side, mac_off, ip_off in ((src, 64, 112), (dst, 144, 192)):
        if (mac := rule.get(f"arp{side}macaddr")) is not None:
            expr.eq(f"@nh,{mac_off},48", _hex(_mac_int(str(mac)), 12), f"arp{side}macaddr")
        if (ip := rule.get(f"arp{side}ipaddr")) is not None:
            mask = _prefix_mask(int(rule.get(f"arp{side}ipmask") or 32), 32)
            value = _hex(_ip_int(ip) & mask, 8)
            expr.masked(f"@nh,{ip_off},32", value, _hex(mask, 8), _hex(0xFFFFFFFF, 8), f"arp{side}ipaddr")
    _refuse(rule, "gratuitous")


def _ip_expr(expr: _Expr, rule: PortRule, proto: str, mirrored: bool) -> None:
    fam, bits = ("ip", 32) if proto == "ip" else ("ip6", 128)
    expr.raw("ether type " + fam)
    src, dst = ("dst", "src") if mirrored else ("src", "dst")
    _addr_match(expr, fam, "saddr", rule, src, bits)
    _addr_match(expr, fam, "daddr", rule, dst, bits)
    protocol = rule.get("protocol")
    if protocol is not None:
        expr.eq("meta l4proto", protocol, "protocol")
        _port_match(expr, "th", "sport", rule, src)
        _port_match(expr, "th", "dport", rule, dst)
    if (dscp := rule.get("dscp")) is not None:
        expr.eq(f"{fam} dscp", _hex(int(dscp), 2), "dscp")
    if proto == "ipv6":  # icmpv6 type and code ranges of the ipv6 element
        for attr in ("type", "code"):
            low, high = rule.get(attr), rule.get(f"{attr}end")
            if low is not None:
                expr.eq(f"icmpv6 {attr}", f"{low}-{high}" if high is not None else low, attr)


# ---- filter rules: layer 3 ---------------------------------------------------------


@lru_cache(maxsize=65536)
def layer3_expr(rule: PortRule, mirrored: bool) -> str:
    """Match text of a layer-3 rule; ``mirrored`` swaps source and destination."""
    _refuse(rule, "ipset", "ipsetflags")
    if mirrored:
        rule = _swapped(rule)
    assert rule.protocol is not None, "a rule without a protocol element is a layer-2 rule"
    fam, l4 = l3_family_and_protocol(rule.protocol)
    bits = 32 if fam == "ip" else 128
    expr = _Expr(rule)
    expr.raw("ether type " + fam)
    _mac_match(expr, "ether saddr", rule, "srcmacaddr", "srcmacmask")
    _addr_match(expr, fam, "saddr", rule, "src", bits)
    _addr_match(expr, fam, "daddr", rule, "dst", bits)
    if l4:
        expr.raw(f"meta l4proto {l4}")
    if l4 in ("tcp", "udp", "udplite", "sctp"):
        keyword = "th" if l4 == "udplite" else l4
        _port_match(expr, keyword, "sport", rule, "src")
        _port_match(expr, keyword, "dport", rule, "dst")
    if (dscp := rule.get("dscp")) is not None:
        expr.eq(f"{fam} dscp", _hex(int(dscp), 2), "dscp")
    if l4 == "tcp" and (flags := rule.get("flags")) is not None:
        mask, _, wanted = str(flags).partition("/")  # libvirt: MASK/SET, as iptables --tcp-flags
        op = "!=" if rule.is_negated("flags") else "=="
        expr.raw(f"tcp flags & ({_tcp_flags(mask)}) {op} {_tcp_flags(wanted)}")
    if l4 == "tcp" and (option := rule.get("option")) is not None:
        expr.raw(f"tcp option {option} {'missing' if rule.is_negated('option') else 'exists'}")
    if l4 in ("icmp", "ipv6-icmp"):
        keyword = "icmp" if l4 == "icmp" else "icmpv6"
        if rule.get("code") is not None and rule.get("type") is None:
            raise Unsupported(
                f"{rule.origin or 'a rule'}: {rule.protocol} code= without type= cannot be matched "
                "(libvirt's drivers drop the code and match every ICMP message); give type= as well"
            )
        if (kind := rule.get("type")) is not None:
            expr.eq(f"{keyword} type", kind, "type")
            if (code := rule.get("code")) is not None:
                expr.eq(f"{keyword} code", code, "code")
    return " ".join(expr.parts)


# ---- filter rules: layer 3 connection tracking -------------------------------------

ORIGINAL = "ct direction original ct state new,established"
REPLY = "ct direction reply ct state established"


def _joined(*parts: str | None) -> str:
    return " ".join(part for part in parts if part)


def _explicit_states(rule: PortRule) -> str | None:
    """``state=`` as nft spells it; '' for NONE (no state match at all)."""
    state = rule.get("state")
    if state is None:
        return None
    names = [name.lower() for name in str(state).split(",") if name]
    return "" if "none" in names else ",".join(names)


def layer3_plan(rule: PortRule, to_guest: bool) -> list[tuple[bool, str]]:
    """What a layer-3 rule puts in the port's chain of one direction: (mirrored, ct clause)
    per line, libvirt's stateful semantics spelled with nft's ``ct``:

    - an accept (``statematch`` on, no ``state=``) matches ``ct direction original ct
      state new,established`` in its own direction, and its mirror (addresses and ports
      swapped) ``ct direction reply ct state established`` in the other, so replies and
      nothing else come back; ``inout`` is one rule for both halves of a connection (as
      written towards the guest, swapped from it) with ``ct state new,established``;
    - ``state=`` is matched as given, in the rule's own direction only (NONE: no state);
    - ``statematch='false'``: no ``ct`` at all; a stateless accept is mirrored, as
      libvirt's released driver does, so that its replies pass;
    - drop, reject, return and continue are never mirrored;
    - ``connlimit-above`` is ``ct count over N`` on the rule's own lines (no mirror).
    """
    direction = rule.direction
    own = direction == "inout" or (direction == "in") == to_guest
    mirrored = direction == "inout" and not to_guest
    if mirrored and rule.get("srcmacaddr") is not None:
        return []  # the guest's frames cannot be from another MAC: libvirt skips this half too
    limit = rule.get("connlimit-above")
    if limit is not None and direction != "out":
        # iptables counts per source address; towards the guest, sources are many remote
        # hosts, and nft's plain `ct count` would count them all together
        raise Unsupported(
            f"{rule.origin or 'a rule'}: connlimit-above on a rule towards the guest (direction "
            f"'{direction}') counts per remote address, which the nftables backend does not; use --backend iptables"
        )
    count = f"ct count over {limit}" if limit is not None else ""
    states = _explicit_states(rule) if rule.statematch else None
    if states is not None:
        return [(mirrored, _joined(states and f"ct state {states}", count))] if own else []
    if rule.action != "accept" or not rule.statematch:
        if own:
            return [(mirrored, count)]
        stateless_reply = rule.action == "accept" and direction != "inout" and limit is None
        return [(True, "")] if stateless_reply else []
    if direction == "inout":
        return [(mirrored, _joined("ct state new,established", count))]
    if own:
        return [(False, _joined(ORIGINAL, count))]
    return [] if limit is not None else [(True, REPLY)]


def layer3_needs(rule: PortRule) -> list[str]:
    """The kernel features (``kernel.FEATURES``) the rule's lines need in the bridge family."""
    clauses = " ".join(ct for to_guest in (False, True) for _, ct in layer3_plan(rule, to_guest))
    needs = []
    if "ct " in clauses:
        needs.append("conntrack")
    if "ct count" in clauses:
        needs.append("ct_count")
    return needs


def _tcp_flags(text: str) -> str:
    names = [f.lower() for f in text.split(",") if f]
    if names == ["all"]:
        names = ["fin", "syn", "rst", "psh", "ack", "urg"]
    if names in ([], ["none"]):
        return "0x0"
    return " | ".join(names)


def port_rule_text(rule: PortRule, match: str) -> list[str]:
    """The rule line (match, verdict, comment); none for 'continue'."""
    verdict = _verdict(rule)
    if verdict is None:
        return []
    return [f"{match} {verdict}{_comment(rule)}".strip()]


# ---- jumps into a port's sub-chains ------------------------------------------------


def bare_verdict(chain: str, body: list[str]) -> str | None:
    """'accept'/'drop' when a sub-chain holds just that (perhaps behind the very
    ethertype match its jump already made): then the jump can carry the verdict and
    the chain need not exist: one chain and one rule less per port."""
    if len(body) != 1:
        return None
    words = body[0].split()
    if words[-1] not in ("accept", "drop"):
        return None
    if len(words) == 1:
        return words[0]
    kind = ETHERTYPES.get(protocols.chain_type(chain) or "")
    if len(words) == 4 and words[:2] == ["ether", "type"] and kind is not None:
        value = NFT_ETHERTYPE_NAMES.get(words[2]) or (int(words[2], 16) if words[2].startswith("0x") else None)
        if value == kind:
            return words[3]
    return None


def jump_match(chain: str) -> str:
    """The match of the root chain's jump into sub-chain CHAIN ('' for any frame)."""
    kind = protocols.chain_type(chain)
    if kind == "stp":
        return f"ether daddr {STP_ADDRESS}"
    if kind in ETHERTYPES:
        return f"ether type {_hex(ETHERTYPES[kind], 4)}"
    return ""
