"""The nwfilter attribute language: what each protocol element takes, and how values read.

Every protocol element of a ``<rule>`` (``<tcp>``, ``<mac>``, ``<all-ipv6>``, ...) has a
table of attributes in libvirt's order, the order libvirt prints them in, each with a
datatype. A datatype turns the text of a value into two things at once:

- the text libvirt prints for it (``'1:2:3:4:5:6'`` -> ``'01:02:03:04:05:06'``,
  ``'255.255.255.0'`` -> ``'24'``, ``'17'`` -> ``'udp'``); ``ProtocolMatch.attrs`` keeps
  literals in this form, so formatting a filter is a lookup, and
- the typed value of :mod:`virtfw.rules.portrules` that backends consume.

One parser serves both the literal written in a filter (checked at define time) and the
value a variable takes when a binding is instantiated, so both obey the same rules.

Where libvirt is lenient in ways that hide mistakes, virtfw is stricter and says so:
hexadecimal numbers need their ``0x`` prefix (libvirt reads a bare ``abc`` as 0xabc when
decimal fails), booleans must be true/false/yes/no/1/0 (libvirt reads any other word as
false), lists need their commas, a comment longer than libvirt keeps is refused rather
than cut, and ``dstipto`` of the ``-ipv6`` elements takes an IPv6 address (libvirt's
table asks for IPv4 there, which no IPv6 rule can use).

This module has no XML in it; ``filter.xml`` reads and writes the documents.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from virtfw.errors import VirtfwError
from virtfw.filter.model import VarRef
from virtfw.rules.portrules import Value
from virtfw.rules.protocols import ETHERTYPES


class BadValue(ValueError):
    """A text that does not fit its datatype; the message completes "'TEXT' ..."."""


@dataclass(frozen=True)
class Parsed:
    """A value read by a datatype: the typed value, and the text libvirt prints for it."""

    value: Value
    text: str


@dataclass(frozen=True)
class Datatype:
    """How the values of one kind of attribute are read (``parse`` raises BadValue)."""

    name: str  # for messages and for consumers: "MAC address", "16-bit number", ...
    parse: Callable[[str], Parsed]


# ---------------------------------------------------------------------------------
# numbers
# ---------------------------------------------------------------------------------

_DECIMAL = re.compile(r"[0-9]+")
_HEXADECIMAL = re.compile(r"0[xX][0-9a-fA-F]+")


def _number(text: str, maximum: int, hex_ok: bool) -> tuple[int, bool]:
    """Read a decimal (or 0x-hexadecimal) number; return it and whether it was hex."""
    text = text.strip()
    if _DECIMAL.fullmatch(text):
        value, is_hex = int(text, 10), False
    elif hex_ok and _HEXADECIMAL.fullmatch(text):
        value, is_hex = int(text, 16), True
    elif hex_ok:
        raise BadValue("is not a number (decimal, or hexadecimal with 0x)")
    else:
        raise BadValue("is not a decimal number")
    if value > maximum:
        raise BadValue(f"is outside 0..{maximum}")
    return value, is_hex


def _uint(bits: int, hex_ok: bool = True, maximum: int | None = None) -> Datatype:
    """An unsigned number printed back in the base it was written in, as libvirt does."""
    limit = (1 << bits) - 1 if maximum is None else maximum

    def parse(text: str) -> Parsed:
        value, is_hex = _number(text, limit, hex_ok)
        return Parsed(value, f"0x{value:x}" if is_hex else str(value))

    name = f"{bits}-bit number" if maximum is None else f"number 0..{maximum}"
    return Datatype(name, parse)


def _named_number(names: dict[str, int], bits: int, minimum: int, hex_ok: bool, hex_kept: bool, what: str) -> Datatype:
    """A number that may also be given by name (case-insensitive) and prints as its name.

    Numbers without a name print in the base they were written in (``hex_kept``) or
    always in decimal (ARP opcodes, as libvirt does).
    """
    by_value = {value: name for name, value in names.items()}
    by_name = {name.lower(): value for name, value in names.items()}

    def parse(text: str) -> Parsed:
        stripped = text.strip()
        if stripped.lower() in by_name:
            value = by_name[stripped.lower()]
            return Parsed(value, by_value[value])
        if not (_DECIMAL.fullmatch(stripped) or (hex_ok and _HEXADECIMAL.fullmatch(stripped))):
            known = ", ".join(names)
            raise BadValue(f"is neither a number nor one of {known}")
        value, is_hex = _number(stripped, (1 << bits) - 1, hex_ok)
        if value < minimum:
            raise BadValue(f"is below {minimum:#x} ({minimum}): not {what}")
        if value in by_value:
            return Parsed(value, by_value[value])
        return Parsed(value, f"0x{value:x}" if (is_hex and hex_kept) else str(value))

    return Datatype(what, parse)


# ---------------------------------------------------------------------------------
# addresses and masks
# ---------------------------------------------------------------------------------

_MAC = re.compile(r"[0-9a-fA-F]{1,2}(?::[0-9a-fA-F]{1,2}){5}")


def _mac_bytes(text: str) -> bytes:
    text = text.strip()
    if not _MAC.fullmatch(text):
        raise BadValue("is not a MAC address (six hex bytes separated by ':')")
    return bytes(int(part, 16) for part in text.split(":"))


def _contiguous(data: bytes) -> bool:
    """Whether a mask is ones followed by zeros (all ones and all zeros included)."""
    bits = int.from_bytes(data, "big")
    inverse = ~bits & ((1 << (8 * len(data))) - 1)
    return inverse & (inverse + 1) == 0


def _parse_mac(text: str) -> Parsed:
    canonical = ":".join(f"{b:02x}" for b in _mac_bytes(text))
    return Parsed(canonical, canonical)


def _parse_mac_mask(text: str) -> Parsed:
    data = _mac_bytes(text)
    if not _contiguous(data):
        raise BadValue("is not a MAC mask (ones must come first, then zeros)")
    canonical = ":".join(f"{b:02x}" for b in data)
    return Parsed(canonical, canonical)


def _parse_ipv4(text: str) -> Parsed:
    try:
        address = ipaddress.IPv4Address(text.strip())
    except ValueError:
        raise BadValue("is not an IPv4 address") from None
    return Parsed(address, str(address))


def _ipv6(text: str) -> ipaddress.IPv6Address:
    text = text.strip()
    if "%" in text:  # a zone index means nothing to a firewall
        raise BadValue("is not an IPv6 address (zone indexes are not allowed)")
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        raise BadValue("is not an IPv6 address") from None


def _parse_ipv6(text: str) -> Parsed:
    import socket  # here only: importing it costs every command start-up time

    address = _ipv6(text)
    # the C library's spelling, as libvirt prints it (::ffff:10.1.2.3 stays dotted)
    return Parsed(address, socket.inet_ntop(socket.AF_INET6, address.packed))


def _ip_mask(bits: int) -> Datatype:
    """A prefix length 0..bits, or a netmask in address form; printed as the length."""

    def parse(text: str) -> Parsed:
        stripped = text.strip()
        if _DECIMAL.fullmatch(stripped):
            prefix = int(stripped)
            if prefix > bits:
                raise BadValue(f"is not a prefix length 0..{bits} or a netmask")
            return Parsed(prefix, str(prefix))
        try:
            packed = (ipaddress.IPv4Address if bits == 32 else ipaddress.IPv6Address)(stripped).packed
        except ValueError:
            raise BadValue(f"is not a prefix length 0..{bits} or a netmask") from None
        if not _contiguous(packed):
            raise BadValue("is not a netmask (ones must come first, then zeros)")
        prefix = int.from_bytes(packed, "big").bit_count()
        return Parsed(prefix, str(prefix))

    return Datatype(f"IPv{4 if bits == 32 else 6} mask", parse)


# ---------------------------------------------------------------------------------
# words and lists
# ---------------------------------------------------------------------------------

_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")


def _parse_boolean(text: str) -> Parsed:
    word = text.strip().lower()
    if word in _TRUE:
        return Parsed(True, "true")
    if word in _FALSE:
        return Parsed(False, "false")
    raise BadValue("is not a boolean (true or false)")


MAX_COMMENT_LENGTH = 256  # what libvirt keeps of a comment


def _parse_comment(text: str) -> Parsed:
    if len(text) > MAX_COMMENT_LENGTH:
        raise BadValue(f"is longer than {MAX_COMMENT_LENGTH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise BadValue("contains control characters")
    return Parsed(text, text)


_STATE_BITS = {"NEW": 1, "ESTABLISHED": 2, "RELATED": 4, "INVALID": 8, "NONE": 16}
_TCP_FLAG_BITS = {"FIN": 0x1, "SYN": 0x2, "RST": 0x4, "PSH": 0x8, "ACK": 0x10, "URG": 0x20}
_TCP_FLAG_WORDS = {**_TCP_FLAG_BITS, "ALL": 0x3F, "NONE": 0}


def _words(text: str, allowed: dict[str, int], what: str) -> int:
    """OR the bits of a comma separated list of words (case-insensitive)."""
    bits = 0
    for word in re.split(r"[,\s]+", text.strip()):
        if not word:
            continue
        if word.upper() not in allowed:
            raise BadValue(f"has '{word}', which is not {what} ({', '.join(allowed)})")
        bits |= allowed[word.upper()]
    return bits


def _spell(bits: int, names: dict[str, int]) -> str:
    """The names of the set bits, lowest bit first, comma separated."""
    return ",".join(name for name, bit in names.items() if bit and bits & bit)


def _parse_state(text: str) -> Parsed:
    if not re.sub(r"[,\s]", "", text):
        raise BadValue("is empty; give NEW, ESTABLISHED, RELATED, INVALID or NONE")
    bits = _words(text, _STATE_BITS, "a connection state")
    if bits & _STATE_BITS["NONE"]:  # NONE switches state matching off and wins
        bits = _STATE_BITS["NONE"]
    spelled = _spell(bits, _STATE_BITS)
    return Parsed(spelled, spelled)


def _tcp_flag_set(bits: int) -> str:
    if bits == 0:
        return "NONE"
    if bits == 0x3F:
        return "ALL"
    return _spell(bits, _TCP_FLAG_BITS)


def _parse_tcp_flags(text: str) -> Parsed:
    mask_text, slash, flags_text = text.partition("/")
    if not slash:
        raise BadValue("is not MASK/FLAGS (e.g. SYN,ACK/SYN)")
    mask = _words(mask_text, _TCP_FLAG_WORDS, "a TCP flag") & 0x3F
    flags = _words(flags_text, _TCP_FLAG_WORDS, "a TCP flag") & 0x3F
    spelled = f"{_tcp_flag_set(mask)}/{_tcp_flag_set(flags)}"
    return Parsed(spelled, spelled)


_IPSET_NAME = re.compile(r"[A-Za-z0-9_.:+ -]{1,31}")  # libvirt's characters and length


def _parse_ipset(text: str) -> Parsed:
    if not _IPSET_NAME.fullmatch(text):
        raise BadValue("is not an ipset name (1-31 of letters, digits, space and _ . : - +)")
    return Parsed(text, text)


def _parse_ipset_flags(text: str) -> Parsed:
    words = text.split(",")
    if not 1 <= len(words) <= 6 or any(w.lower() not in ("src", "dst") for w in words):
        raise BadValue("is not a list of 1 to 6 of src and dst, comma separated")
    spelled = ",".join(w.lower() for w in words)
    return Parsed(spelled, spelled)


# ---------------------------------------------------------------------------------
# the datatypes and the tables
# ---------------------------------------------------------------------------------

MAC = Datatype("MAC address", _parse_mac)
MAC_MASK = Datatype("MAC mask", _parse_mac_mask)
IPV4_ADDRESS = Datatype("IPv4 address", _parse_ipv4)
IPV4_MASK = _ip_mask(32)
IPV6_ADDRESS = Datatype("IPv6 address", _parse_ipv6)
IPV6_MASK = _ip_mask(128)
UINT8 = _uint(8)
UINT16 = _uint(16)
UINT32 = _uint(32)
UINT16_DECIMAL = _uint(16, hex_ok=False)
DSCP = _uint(6, maximum=63)
VLAN_ID = _uint(12, maximum=4095)
BOOLEAN = Datatype("boolean", _parse_boolean)
COMMENT = Datatype("comment", _parse_comment)
STATE = Datatype("connection state list", _parse_state)
TCP_FLAGS = Datatype("TCP flags MASK/FLAGS", _parse_tcp_flags)
IPSET = Datatype("ipset name", _parse_ipset)
IPSET_FLAGS = Datatype("ipset flags", _parse_ipset_flags)

ARP_OPCODES = {
    "Request": 1, "Reply": 2, "Request_Reverse": 3, "Reply_Reverse": 4,
    "DRARP_Request": 5, "DRARP_Reply": 6, "DRARP_Error": 7, "InARP_Request": 8,
    "ARP_NAK": 9,
}  # fmt: skip
IP_PROTOCOLS = {
    "tcp": 6, "udp": 17, "udplite": 136, "esp": 50, "ah": 51, "icmp": 1, "igmp": 2,
    "sctp": 132, "icmpv6": 58,
}  # fmt: skip

MAC_PROTOCOL_ID = _named_number(ETHERTYPES, 16, 0x600, True, True, "an EtherType")
VLAN_ENCAP = _named_number(ETHERTYPES, 16, 0x3C, True, True, "an encapsulated protocol")
ARP_OPCODE = _named_number(ARP_OPCODES, 16, 0, True, False, "an ARP opcode")
IP_PROTOCOL = _named_number(IP_PROTOCOLS, 8, 0, True, True, "an IP protocol")

AttributeTable = tuple[tuple[str, Datatype], ...]

_ETHERNET: AttributeTable = (
    ("srcmacaddr", MAC), ("srcmacmask", MAC_MASK),
    ("dstmacaddr", MAC), ("dstmacmask", MAC_MASK),
)  # fmt: skip
_PORTS: AttributeTable = (
    ("srcportstart", UINT16), ("srcportend", UINT16),
    ("dstportstart", UINT16), ("dstportend", UINT16),
)  # fmt: skip
_COMMENT: AttributeTable = (("comment", COMMENT),)


def _ip_common(address: Datatype, mask: Datatype) -> AttributeTable:
    """The attributes shared by the layer-4 elements (tcp, udp, all, ...)."""
    return (
        ("srcmacaddr", MAC),
        ("srcipaddr", address), ("srcipmask", mask),
        ("dstipaddr", address), ("dstipmask", mask),
        ("srcipfrom", address), ("srcipto", address),
        ("dstipfrom", address), ("dstipto", address),
        ("dscp", DSCP), ("connlimit-above", UINT16_DECIMAL), ("state", STATE),
        ("ipset", IPSET), ("ipsetflags", IPSET_FLAGS),
    )  # fmt: skip


_IP4 = _ip_common(IPV4_ADDRESS, IPV4_MASK)
_IP6 = _ip_common(IPV6_ADDRESS, IPV6_MASK)
_ICMP_TYPE_CODE: AttributeTable = (("type", UINT8), ("code", UINT8))

_ARP: AttributeTable = _ETHERNET + (
    ("hwtype", UINT16), ("protocoltype", UINT16), ("opcode", ARP_OPCODE),
    ("arpsrcmacaddr", MAC), ("arpdstmacaddr", MAC),
    ("arpsrcipaddr", IPV4_ADDRESS), ("arpsrcipmask", IPV4_MASK),
    ("arpdstipaddr", IPV4_ADDRESS), ("arpdstipmask", IPV4_MASK),
    ("gratuitous", BOOLEAN),
) + _COMMENT  # fmt: skip

_STP: AttributeTable = (
    ("srcmacaddr", MAC), ("srcmacmask", MAC_MASK),
    ("type", UINT8), ("flags", UINT8),
    ("root-priority", UINT16), ("root-priority-hi", UINT16),
    ("root-address", MAC), ("root-address-mask", MAC_MASK),
    ("root-cost", UINT32), ("root-cost-hi", UINT32),
    ("sender-priority", UINT16), ("sender-priority-hi", UINT16),
    ("sender-address", MAC), ("sender-address-mask", MAC_MASK),
    ("port", UINT16), ("port-hi", UINT16),
    ("age", UINT16), ("age-hi", UINT16),
    ("max-age", UINT16), ("max-age-hi", UINT16),
    ("hello-time", UINT16), ("hello-time-hi", UINT16),
    ("forward-delay", UINT16), ("forward-delay-hi", UINT16),
) + _COMMENT  # fmt: skip

#: Every protocol element with its attributes, in libvirt's order (elements too).
ELEMENT_ATTRIBUTES: dict[str, AttributeTable] = {
    "arp": _ARP,
    "rarp": _ARP,
    "mac": _ETHERNET + (("protocolid", MAC_PROTOCOL_ID),) + _COMMENT,
    "vlan": _ETHERNET + (("vlanid", VLAN_ID), ("encap-protocol", VLAN_ENCAP)) + _COMMENT,
    "stp": _STP,
    "ip": _ETHERNET + (
        ("srcipaddr", IPV4_ADDRESS), ("srcipmask", IPV4_MASK),
        ("dstipaddr", IPV4_ADDRESS), ("dstipmask", IPV4_MASK),
        ("protocol", IP_PROTOCOL),
    ) + _PORTS + (("dscp", DSCP),) + _COMMENT,
    "ipv6": _ETHERNET + (
        ("srcipaddr", IPV6_ADDRESS), ("srcipmask", IPV6_MASK),
        ("dstipaddr", IPV6_ADDRESS), ("dstipmask", IPV6_MASK),
        ("protocol", IP_PROTOCOL),
    ) + _PORTS + (
        ("type", UINT8), ("typeend", UINT8), ("code", UINT8), ("codeend", UINT8),
    ) + _COMMENT,
    "tcp": _IP4 + _PORTS + (("option", UINT8), ("flags", TCP_FLAGS)) + _COMMENT,
    "udp": _IP4 + _PORTS + _COMMENT,
    "udplite": _IP4 + _COMMENT,
    "esp": _IP4 + _COMMENT,
    "ah": _IP4 + _COMMENT,
    "sctp": _IP4 + _PORTS + _COMMENT,
    "icmp": _IP4 + _ICMP_TYPE_CODE + _COMMENT,
    "all": _IP4 + _COMMENT,
    "igmp": _IP4 + _COMMENT,
    "tcp-ipv6": _IP6 + _PORTS + (("option", UINT8),) + _COMMENT,  # no flags, as in libvirt
    "udp-ipv6": _IP6 + _PORTS + _COMMENT,
    "udplite-ipv6": _IP6 + _COMMENT,
    "esp-ipv6": _IP6 + _COMMENT,
    "ah-ipv6": _IP6 + _COMMENT,
    "sctp-ipv6": _IP6 + _PORTS + _COMMENT,
    "icmpv6": _IP6 + _ICMP_TYPE_CODE + _COMMENT,
    "all-ipv6": _IP6 + _COMMENT,
}  # fmt: skip

PROTOCOLS: tuple[str, ...] = tuple(ELEMENT_ATTRIBUTES)

_DATATYPES: dict[str, dict[str, Datatype]] = {p: dict(t) for p, t in ELEMENT_ATTRIBUTES.items()}
_ORDER: dict[str, tuple[str, ...]] = {p: tuple(a for a, _ in t) for p, t in ELEMENT_ATTRIBUTES.items()}

# match='no' is kept per attribute. After merging a rule's elements libvirt makes some
# attributes take their negation from another one: a mask from its address, a range end
# from its start, every port and the ICMP code from the first port or the type.
_IP_PAIRS = {"srcipmask": "srcipaddr", "dstipmask": "dstipaddr", "srcipto": "srcipfrom", "dstipto": "dstipfrom"}
_PORT_PAIRS = {"srcportend": "srcportstart", "dstportstart": "srcportstart", "dstportend": "srcportstart"}
_MAC_PAIRS = {"srcmacmask": "srcmacaddr", "dstmacmask": "dstmacaddr"}
_STP_PAIRS = {
    "srcmacmask": "srcmacaddr", "root-priority-hi": "root-priority",
    "root-address-mask": "root-address", "root-cost-hi": "root-cost",
    "sender-priority-hi": "sender-priority", "sender-address-mask": "sender-address",
    "port-hi": "port", "age-hi": "age", "max-age-hi": "max-age",
    "hello-time-hi": "hello-time", "forward-delay-hi": "forward-delay",
}  # fmt: skip

NEGATION_SOURCE: dict[str, dict[str, str]] = {
    "mac": _MAC_PAIRS,
    "vlan": _MAC_PAIRS,
    "stp": _STP_PAIRS,
    "arp": {},
    "rarp": {},
    "ip": {"srcipmask": "srcipaddr", "dstipmask": "dstipaddr"},
    "ipv6": {"srcipmask": "srcipaddr", "dstipmask": "dstipaddr",
             "typeend": "type", "code": "type", "codeend": "type"},
    **{p: {**_IP_PAIRS, **_PORT_PAIRS} for p in ("tcp", "udp", "sctp", "tcp-ipv6", "udp-ipv6", "sctp-ipv6")},
    **{p: dict(_IP_PAIRS) for p in ("udplite", "esp", "ah", "all", "igmp",
                                    "udplite-ipv6", "esp-ipv6", "ah-ipv6", "all-ipv6")},
    **{p: {**_IP_PAIRS, "code": "type"} for p in ("icmp", "icmpv6")},
}  # fmt: skip

#: Elements where ``ipset`` alone gets ``ipsetflags='src'`` added (libvirt leaves ``all`` alone).
IPSET_DEFAULT_FLAGS = frozenset(p for p in PROTOCOLS if "ipset" in _DATATYPES[p]) - {"all", "all-ipv6"}

#: ip and ipv6 rules with ports must name one of these protocols (tcp, udp, dccp, sctp).
PORT_PROTOCOLS = frozenset({6, 17, 33, 132})
PORT_ATTRIBUTES = ("srcportstart", "srcportend", "dstportstart", "dstportend")


# ---------------------------------------------------------------------------------
# chains
# ---------------------------------------------------------------------------------

CHAIN_TYPES = ("root", "mac", "vlan", "stp", "arp", "rarp", "ipv4", "ipv6")
MAX_CHAIN_LENGTH = 12  # what fits in a 32 character ebtables chain name with the port
_CHAIN_CHARS = re.compile(r"[A-Za-z0-9_.:-]+")

#: libvirt's default chain priorities by chain type; its table has no stp entry, so stp
#: (like any type not listed) defaults to 0.
DEFAULT_CHAIN_PRIORITY = {"root": 0, "mac": -800, "vlan": -750, "ipv4": -700, "ipv6": -600, "arp": -500, "rarp": -400}
MIN_PRIORITY, MAX_PRIORITY = -1000, 1000


def chain_type(chain: str) -> str:
    """The chain type a chain name selects: 'root' exactly, or a name starting with a type."""
    if not chain:
        raise VirtfwError("chain name is empty")
    if len(chain) > MAX_CHAIN_LENGTH:
        raise VirtfwError(f"chain name '{show_value(chain)}' is longer than {MAX_CHAIN_LENGTH} characters")
    if not _CHAIN_CHARS.fullmatch(chain):
        raise VirtfwError(f"chain name '{show_value(chain)}' has characters other than letters, digits and _ . : -")
    if chain == "root":
        return "root"
    for kind in CHAIN_TYPES[1:]:
        if chain.startswith(kind):
            return kind
    raise VirtfwError(f"chain name '{chain}' must be 'root' or start with one of {', '.join(CHAIN_TYPES[1:])}")


def default_chain_priority(chain: str) -> int:
    return DEFAULT_CHAIN_PRIORITY.get(chain_type(chain), 0)


# ---------------------------------------------------------------------------------
# variables and parameters
# ---------------------------------------------------------------------------------

MAX_ITERATOR = 1000  # libvirt's highest iterator id too
MAX_INDEX = 2**32 - 1
# Values one variable may hold (a parameter repeated this often). libvirt sets no limit;
# a guest's addresses or ports are a handful, a whole /20 of addresses still fits. Lists
# multiply under separate iterators: the rule count bound is in filter.instantiate.
MAX_VALUES = 4096
_VARIABLE = re.compile(r"\$([A-Za-z0-9_]+)(?:\[\s*(@?)\s*([0-9]+)\s*\])?\s*")
_PARAM_NAME = re.compile(r"[A-Za-z0-9_]+")
_PARAM_VALUE = re.compile(r"[A-Za-z0-9_.:/-]+")
PARAM_VALUE_CHARS = "letters, digits and . : / _ -"


def parse_variable(text: str) -> VarRef:
    """``$NAME``, ``$NAME[2]`` or ``$NAME[@1]``; ``$NAME[@0]`` is ``$NAME`` (iterator 0)."""
    match = _VARIABLE.fullmatch(text)
    if not match:
        raise VirtfwError(f"'{show_value(text)}' is not a variable reference ($NAME, $NAME[index] or $NAME[@iterator])")
    name, at, number = match.groups()
    if number is None:
        return VarRef(name)
    value = int(number)
    if at:
        if value > MAX_ITERATOR:
            raise VirtfwError(f"'{show_value(text)}': iterator {value} is above {MAX_ITERATOR}")
        return VarRef(name) if value == 0 else VarRef(name, iterator=value)
    if value > MAX_INDEX:
        raise VirtfwError(f"'{show_value(text)}': index {value} is too large")
    return VarRef(name, index=value)


def check_param_name(name: str) -> str:
    if not _PARAM_NAME.fullmatch(name):
        raise VirtfwError(f"parameter name '{show_value(name)}' is not allowed (letters, digits and _ only)")
    return name


def check_param_value(name: str, value: str) -> str:
    """Parameter values reach firewall rules; only characters safe everywhere pass."""
    if not _PARAM_VALUE.fullmatch(value):
        what = "is empty" if not value else f"'{show_value(value)}' has characters other than {PARAM_VALUE_CHARS}"
        raise VirtfwError(f"parameter '{name}' value {what}")
    return value


# ---------------------------------------------------------------------------------
# the public lookups
# ---------------------------------------------------------------------------------


def attribute_order(protocol: str) -> tuple[str, ...]:
    """The attributes of a protocol element, in the order libvirt prints them."""
    try:
        return _ORDER[protocol]
    except KeyError:
        raise VirtfwError(f"<{protocol}> is not a protocol element of nwfilter rules") from None


def datatype(protocol: str, attr: str) -> Datatype:
    attribute_order(protocol)
    try:
        return _DATATYPES[protocol][attr]
    except KeyError:
        raise VirtfwError(f"<{protocol}> has no attribute '{attr}'") from None


def parse_value(protocol: str, attr: str, text: str) -> Parsed:
    """Read one value of ``<protocol attr=...>``; VirtfwError names all three and why."""
    kind = datatype(protocol, attr)
    try:
        return kind.parse(text)
    except BadValue as exc:
        raise VirtfwError(f"<{protocol}> attribute '{attr}': '{show_value(text)}' {exc}") from None


def typed_value(protocol: str, attr: str, text: str) -> Value:
    """The typed value (see rules.portrules) of a literal or of a variable's value."""
    return parse_value(protocol, attr, text).value


def literal_text(protocol: str, attr: str, text: str) -> str:
    """The text libvirt prints for a literal value."""
    return parse_value(protocol, attr, text).text


def show_value(text: str) -> str:
    """A value fit for a one-line message: control characters spelled out."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
