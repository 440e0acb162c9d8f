"""Unit tests of the nwfilter XML parser, validator and formatter (no root needed).

* libvirt 11.3.0's own cases: every ``nwfilterxml2xmlin`` file with a same-named
  ``nwfilterxml2xmlout`` file parses and formats to exactly that text; every
  ``*-invalid.xml`` without one is refused, for the value libvirt itself objects to.
* Every xmlout file is formatted back unchanged, formatting is stable
  (``format(parse(format(parse(x)))) == format(parse(x))``), and libvirt's 24 shipped
  filters and the filters of its firewall tests all parse.
* What the model holds: literals in libvirt's output form, VarRefs, negation.
* Typed values (``schema.typed_value``) for literals and variables' values.
* Bad input of every kind is refused with one line naming the thing and why.
* ``<filterbinding>`` XML both ways, and its parameter values restricted to a safe set.

The test data is read from ../shared (tests/helpers/nsutil.py TESTDATA), never copied here.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from helpers.nsutil import TESTDATA

from virtfw.errors import VirtfwError
from virtfw.filter import schema
from virtfw.filter.model import Binding, Filter, FilterRef, FilterRule, ProtocolMatch, VarRef
from virtfw.filter.xml import format_binding, format_filter, parse_binding, parse_filter

XML_IN = TESTDATA / "nwfilterxml2xmlin"
XML_OUT = TESTDATA / "nwfilterxml2xmlout"
DEFAULTS = TESTDATA / "nwfilter-defaults"
FIREWALL = TESTDATA / "nwfilterxml2firewalldata"

#: Inputs with an expected output of the same name: parse + format must give it.
PAIRED = sorted(p.name for p in XML_IN.glob("*.xml") if (XML_OUT / p.name).exists())
#: Inputs libvirt refuses: named *-invalid.xml, with no output of the same name.
INVALID = sorted(p.name for p in XML_IN.glob("*-invalid.xml") if not (XML_OUT / p.name).exists())

#: Cases where virtfw knowingly differs from libvirt, and why.
KNOWN_DIFFERENCES = {
    "quirks-invalid.xml": (
        "virtfw refuses the unknown attributes srcporttend/dstporttend (typos of "
        "srcportend/dstportend) that libvirt silently ignores; "
        "test_quirks_merge_like_libvirt checks the same file without them"
    ),
}

#: The attribute and value each invalid case is refused for. They are exactly what
#: libvirt refuses too: its stale output files for these inputs (ah-ipv6-test.xml for
#: ah-ipv6-test-invalid.xml, ...) show the values an older, lenient libvirt dropped.
INVALID_REASONS = {
    "ah-ipv6-test-invalid.xml": ("srcipmask", "'129'"),
    "all-ipv6-test-invalid.xml": ("srcipmask", "'129'"),
    "arp-test-invalid.xml": ("opcode", "'65536'"),
    "chain_prefixtest1-invalid.xml": ("opcode", "'65536'"),
    "comment-test-invalid.xml": ("dscp", "'0x40'"),
    "esp-ipv6-test-invalid.xml": ("srcipmask", "'129'"),
    "hex-data-test-invalid.xml": ("dscp", "'0x40'"),
    "icmp-test-invalid.xml": ("type", "'256'"),
    "icmpv6-test-invalid.xml": ("srcipmask", "'129'"),
    "ip-test-invalid.xml": ("dscp", "'64'"),
    "ipv6-test-invalid.xml": ("dstportend", "'65536'"),
    "mac-test-invalid.xml": ("protocolid", "'15'"),
    "rarp-test-invalid.xml": ("opcode", "'65536'"),
    "sctp-ipv6-test-invalid.xml": ("srcipmask", "'129'"),
    "sctp-test-invalid.xml": ("dstportend", "'65536'"),
    "tcp-ipv6-test-invalid.xml": ("srcipmask", "'129'"),
    "tcp-test-invalid.xml": ("dstportend", "'65536'"),
    "udp-ipv6-test-invalid.xml": ("srcipaddr", "'a:b:c'"),
    "udp-test-invalid.xml": ("dstportend", "'65536'"),
    "udplite-ipv6-test-invalid.xml": ("srcipmask", "'129'"),
    "vlan-test-invalid.xml": ("vlanid", "'0xffff'"),
}

#: xmlout files that are not libvirt's formatting (so not a fixed point of ours).
NOT_LIBVIRT_FORMATTED = {
    "ipv6-test.xml": "its last four rules were written by hand (no priority, 5-space indent)",
}


def read(path: Path) -> str:
    return path.read_text()


def _paired_params():
    for name in PAIRED:
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN_DIFFERENCES[name])] if name in KNOWN_DIFFERENCES else []
        yield pytest.param(name, marks=marks, id=name)


# ---------------------------------------------------------------------------------
# libvirt's xml2xml cases
# ---------------------------------------------------------------------------------


def _formats_like_libvirt(name: str) -> bool:
    try:
        return format_filter(parse_filter(read(XML_IN / name), name)) == read(XML_OUT / name)
    except VirtfwError:
        return False


def _refused_file(name: str) -> bool:
    try:
        parse_filter(read(XML_IN / name), name)
    except VirtfwError:
        return True
    return False


@pytest.mark.shared
def test_test_data_found() -> None:
    """The globs found libvirt 11.3.0's cases; print how they fare (pytest -s shows it)."""
    matched = sum(_formats_like_libvirt(name) for name in PAIRED)
    refused = sum(_refused_file(name) for name in INVALID)
    print(
        f"\nnwfilter xml2xml: {matched}/{len(PAIRED)} cases identical to libvirt "
        f"({len(KNOWN_DIFFERENCES)} known difference), {refused}/{len(INVALID)} invalid cases refused"
    )
    assert (len(PAIRED), len(INVALID)) == (21, 21)
    assert set(INVALID) == set(INVALID_REASONS)
    assert (matched, refused) == (len(PAIRED) - len(KNOWN_DIFFERENCES), len(INVALID))
    assert len(list(DEFAULTS.glob("*.xml"))) == 24


@pytest.mark.parametrize("name", list(_paired_params()))
def test_case_formats_like_libvirt(name: str) -> None:
    flt = parse_filter(read(XML_IN / name), name)
    assert format_filter(flt) == read(XML_OUT / name)


@pytest.mark.parametrize("name", INVALID)
def test_invalid_case_refused(name: str) -> None:
    with pytest.raises(VirtfwError) as info:
        parse_filter(read(XML_IN / name), name)
    message = str(info.value)
    attr, value = INVALID_REASONS[name]
    assert message.startswith(f"{name}: line ")
    assert f"attribute '{attr}': {value}" in message
    assert "\n" not in message


@pytest.mark.shared
def test_quirks_refused_for_the_typos() -> None:
    with pytest.raises(VirtfwError, match=r"line 9: <tcp>: unknown attribute 'srcporttend'"):
        parse_filter(read(XML_IN / "quirks-invalid.xml"), "quirks-invalid.xml")


@pytest.mark.shared
def test_quirks_merge_like_libvirt() -> None:
    """Several <tcp> of one rule merge attribute by attribute; each attribute keeps the
    match='no' of its element, and dstportstart/srcipmask take it from srcportstart/srcipaddr."""
    text = re.sub(r" (srcporttend|dstporttend)='24'", "", read(XML_IN / "quirks-invalid.xml"))
    assert "porttend" not in text
    flt = parse_filter(text, "quirks")
    assert format_filter(flt) == read(XML_OUT / "quirks-invalid.xml")
    match = flt.entries[0].match
    assert match.attrs == {
        "srcipaddr": "10.1.2.3", "srcipmask": "32", "srcportstart": "22",
        "dstportstart": "22", "comment": "comment",
    }  # fmt: skip
    assert not match.negate
    assert match.negated_attrs == {"srcipaddr", "srcipmask", "srcportstart", "dstportstart"}
    assert not match.is_negated("comment") and match.is_negated("dstportstart")


@pytest.mark.parametrize(
    "name",
    [pytest.param(p.name, id=p.name) for p in sorted(XML_OUT.glob("*.xml")) if p.name not in NOT_LIBVIRT_FORMATTED],
)
def test_xmlout_is_formatted_unchanged(name: str) -> None:
    """libvirt's own output (also the older outputs kept for the invalid cases) is a
    fixed point: escaped comments, inet_ntop IPv6 spelling, hex kept, names for numbers."""
    assert format_filter(parse_filter(read(XML_OUT / name), name)) == read(XML_OUT / name)


def _round_trip_files() -> list[Path]:
    files = [XML_IN / n for n in PAIRED if n not in KNOWN_DIFFERENCES]
    files += sorted(XML_OUT.glob("*.xml")) + sorted(DEFAULTS.glob("*.xml")) + sorted(FIREWALL.glob("*.xml"))
    return files


def _without_generated(flt: Filter) -> Filter:
    flt.uuid_generated = False
    return flt


@pytest.mark.parametrize("path", [pytest.param(p, id=f"{p.parent.name}/{p.name}") for p in _round_trip_files()])
def test_round_trip_is_stable(path: Path) -> None:
    once = format_filter(parse_filter(read(path), path.name))
    again = parse_filter(once, path.name)
    assert format_filter(again) == once
    assert _without_generated(parse_filter(once, path.name)) == _without_generated(again)


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name) for p in sorted(DEFAULTS.glob("*.xml"))])
def test_shipped_libvirt_filters_parse(path: Path) -> None:
    flt = parse_filter(read(path), path.name)
    assert flt.name == path.stem


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name) for p in sorted(FIREWALL.glob("*.xml"))])
def test_firewall_test_filters_parse(path: Path) -> None:
    parse_filter(read(path), path.name)


# ---------------------------------------------------------------------------------
# what the model holds
# ---------------------------------------------------------------------------------


def _rules(name: str, folder: Path = XML_IN) -> list[FilterRule]:
    return [e for e in parse_filter(read(folder / name), name).entries if isinstance(e, FilterRule)]


@pytest.mark.shared
def test_literals_are_kept_as_libvirt_prints_them() -> None:
    ip = _rules("ip.xml", FIREWALL)[0].match
    assert ip == ProtocolMatch("ip", {
        "srcmacaddr": "01:02:03:04:05:06", "srcmacmask": "ff:ff:ff:ff:ff:ff",
        "dstmacaddr": "aa:bb:cc:dd:ee:ff", "dstmacmask": "ff:ff:ff:ff:ff:ff",
        "srcipaddr": "10.1.2.3", "srcipmask": "32", "dstipaddr": "10.1.2.3", "dstipmask": "32",
        "protocol": "udp", "srcportstart": "20", "srcportend": "22",
        "dstportstart": "100", "dstportend": "101",
    })  # fmt: skip
    assert list(ip.attrs) == [a for a in schema.attribute_order("ip") if a in ip.attrs]
    comment = _rules("comment.xml", FIREWALL)
    assert comment[1].match.attrs["srcportstart"] == "0x123"
    assert comment[2].match.attrs["dstipmask"] == "113"
    assert comment[2].match.attrs["dstipaddr"] == "::ffff:10.1.2.3"
    assert comment[6].match.attrs["comment"] == "`ls`;${COLUMNS};$(ls);\"test\";&'3   spaces'"


@pytest.mark.shared
def test_variables_are_varrefs() -> None:
    first, second, *_ = _rules("iter-test2.xml")
    assert first.match.attrs["srcipaddr"] == VarRef("A")
    assert first.match.attrs["srcportstart"] == VarRef("B")  # $B[@0] is $B
    assert second.match.attrs["srcipaddr"] == VarRef("A", iterator=1)
    assert str(second.match.attrs["srcportstart"]) == "$B[@2]"
    spaced = _rules("iter-test3.xml")
    assert spaced[0].match.attrs == {"srcipaddr": VarRef("A", index=0), "dscp": "1", "srcportstart": VarRef("B")}
    assert spaced[2].match.attrs["dstportstart"] == VarRef("C", index=2)
    ipset = _rules("ipset-test.xml")[5].match
    assert ipset.attrs == {"ipset": VarRef("IPSETNAME"), "ipsetflags": "src,dst"}


@pytest.mark.shared
def test_rules_filterrefs_and_parameters() -> None:
    flt = parse_filter(read(XML_IN / "attr-value-test.xml"), "attr-value-test.xml")
    ref = flt.entries[0]
    assert ref == FilterRef("clean-traffic", {
        "a": ["1.2.3.4", "1.2.3.5", "1.2.3.6"],
        "c": ["1.1.1.1", "2.2.2.2"],
        "b": ["1.2.3.10", "1.2.3.11", "1.2.3.12"],
    })  # fmt: skip
    assert flt.references() == ["clean-traffic"]
    rule = flt.entries[1]
    assert (rule.action, rule.direction, rule.priority, rule.statematch) == ("accept", "out", 500, True)
    assert [r.statematch for r in _rules("tcp.xml", FIREWALL)][1:3] == [False, False]


@pytest.mark.shared
def test_negation() -> None:
    match = _rules("ipt-no-macspoof-test.xml")[0].match
    assert match.negate and match.negated_attrs == frozenset() and match.is_negated("srcmacaddr")
    yes = parse_filter(read(DEFAULTS / "no-arp-mac-spoofing.xml"), "x").entries[0].match
    assert not yes.negate and not yes.is_negated("arpsrcmacaddr")
    no_attrs = _filter_with("<tcp match='no'/>")
    assert no_attrs.entries[0].match == ProtocolMatch("tcp", {})
    assert "    <tcp/>\n" in format_filter(no_attrs)
    masked = _filter_with("<tcp match='no' srcipaddr='10.0.0.1' srcipmask='8' srcportstart='1' dstportend='9'/>")
    assert masked.entries[0].match.negate


def test_ipset_flags_default_to_src_except_on_all() -> None:
    assert _filter_with("<tcp ipset='x'/>").entries[0].match.attrs == {"ipset": "x", "ipsetflags": "src"}
    assert _filter_with("<all ipset='x'/>").entries[0].match.attrs == {"ipset": "x"}
    negated = _filter_with("<udp match='no' ipset='x'/>").entries[0].match
    assert negated.negate and negated.attrs == {"ipset": "x", "ipsetflags": "src"}


@pytest.mark.parametrize(
    "chain, priority, expected",
    [
        (None, None, 0), ("root", None, 0), ("mac", None, -800), ("vlan-x", None, -750),
        ("stp-xyz", None, 0), ("arp-ip", None, -500), ("rarp", None, -400),
        ("ipv4", None, -700), ("ipv6-ip", None, -600), ("ipv4-ip", "-710", -710),
        ("root", "5", 5), (None, "5", 0),  # libvirt ignores priority= without chain=
    ],
)  # fmt: skip
def test_chain_priorities(chain: str | None, priority: str | None, expected: int) -> None:
    attrs = (f" chain='{chain}'" if chain else "") + (f" priority='{priority}'" if priority else "")
    flt = parse_filter(f"<filter name='f'{attrs}/>", "f.xml")
    assert (flt.chain, flt.priority, flt.priority_given) == (chain or "root", expected, priority is not None)
    shown = f" priority='{expected}'" if expected else ""
    assert format_filter(flt).startswith(f"<filter name='f' chain='{chain or 'root'}'{shown}>\n")


def test_uuid_generated_when_absent() -> None:
    flt = parse_filter("<filter name='f'><uuid> </uuid></filter>", "f.xml")
    assert flt.uuid_generated and re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", flt.uuid)
    given = parse_filter("<filter name='f'><uuid>5C6D49AFB0716127B4EC6F8ED4B55335</uuid></filter>", "f.xml")
    assert not given.uuid_generated and given.uuid == "5c6d49af-b071-6127-b4ec-6f8ed4b55335"


def test_formatting_details() -> None:
    comment = "comment='a&lt;b &quot;c&quot;'"
    flt = _filter_with(f"<tcp-ipv6 srcipaddr='::FFFF:10.1.2.3' srcipmask='ffff:ffff::' {comment}/>")
    assert f"<tcp-ipv6 srcipaddr='::ffff:10.1.2.3' srcipmask='32' {comment}/>" in format_filter(flt)
    bare = parse_filter("<filter name='f'><rule action='drop' direction='inout' statematch='FALSE'/></filter>", "f")
    assert "  <rule action='drop' direction='inout' priority='500' statematch='false'/>\n" in format_filter(bare)


# ---------------------------------------------------------------------------------
# typed values
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "protocol, attr, text, typed, printed",
    [
        ("tcp", "srcmacaddr", "1:2:3:4:5:6", "01:02:03:04:05:06", "01:02:03:04:05:06"),
        ("mac", "dstmacmask", "FF:ff:ff:ff:ff:80", "ff:ff:ff:ff:ff:80", "ff:ff:ff:ff:ff:80"),
        ("tcp", "srcipaddr", "10.1.2.3", IPv4Address("10.1.2.3"), "10.1.2.3"),
        ("udp-ipv6", "dstipaddr", "A:B:C::D:E:F", IPv6Address("a:b:c::d:e:f"), "a:b:c::d:e:f"),
        ("tcp", "srcipmask", "255.255.128.0", 17, "17"),
        ("ipv6", "dstipmask", "ffff:ffff:ffff:ffff:8000::", 65, "65"),
        ("arp", "arpsrcipmask", "24", 24, "24"),
        ("tcp", "dstportstart", "0x16", 22, "0x16"),
        ("tcp", "dstportstart", "022", 22, "22"),
        ("stp", "root-cost", "4294967295", 4294967295, "4294967295"),
        ("ip", "protocol", "UDP", 17, "udp"),
        ("ip", "protocol", "17", 17, "udp"),
        ("ipv6", "protocol", "0x12", 18, "0x12"),
        ("mac", "protocolid", "2048", 0x800, "ipv4"),
        ("mac", "protocolid", "0x835", 0x835, "0x835"),
        ("vlan", "encap-protocol", "ARP", 0x806, "arp"),
        ("vlan", "vlanid", "4095", 4095, "4095"),
        ("arp", "opcode", "0x1", 1, "Request"),
        ("rarp", "opcode", "reply_reverse", 4, "Reply_Reverse"),
        ("arp", "opcode", "0x10", 16, "16"),
        ("arp", "gratuitous", "yes", True, "true"),
        ("all", "dscp", "0x3f", 63, "0x3f"),
        ("icmp", "connlimit-above", "10", 10, "10"),
        ("all", "state", "related, NEW", "NEW,RELATED", "NEW,RELATED"),
        ("all", "state", "NEW,NONE", "NONE", "NONE"),
        ("tcp", "flags", "syn,ack/ALL", "SYN,ACK/ALL", "SYN,ACK/ALL"),
        ("tcp", "flags", "PSH/", "PSH/NONE", "PSH/NONE"),
        ("all", "ipset", "test:_.-+", "test:_.-+", "test:_.-+"),
        ("all", "ipsetflags", "SRC,dSt", "src,dst", "src,dst"),
        ("all-ipv6", "comment", "a 'b' $c", "a 'b' $c", "a 'b' $c"),
    ],
)  # fmt: skip
def test_typed_value(protocol: str, attr: str, text: str, typed, printed: str) -> None:
    assert schema.typed_value(protocol, attr, text) == typed
    assert type(schema.typed_value(protocol, attr, text)) is type(typed)
    assert schema.literal_text(protocol, attr, text) == printed
    assert schema.typed_value(protocol, attr, printed) == typed  # the stored form reads back


@pytest.mark.parametrize(
    "protocol, attr, text, why",
    [
        ("tcp", "srcipaddr", "10.0.0.256", "is not an IPv4 address"),
        ("tcp", "srcipaddr", "::1", "is not an IPv4 address"),
        ("tcp-ipv6", "srcipaddr", "10.0.0.1", "is not an IPv6 address"),
        ("tcp-ipv6", "srcipaddr", "fe80::1%eth0", "zone indexes"),
        ("tcp", "srcipmask", "255.0.255.0", "is not a netmask"),
        ("tcp", "srcipmask", "33", "prefix length 0..32"),
        ("tcp", "srcportstart", "abc", "is not a number"),
        ("tcp", "srcportstart", "-1", "is not a number"),
        ("tcp", "srcportstart", "65536", "outside 0..65535"),
        ("icmp", "connlimit-above", "0x10", "is not a decimal number"),
        ("mac", "srcmacaddr", "1:2:3:4:5", "is not a MAC address"),
        ("mac", "srcmacmask", "ff:00:ff:00:00:00", "is not a MAC mask"),
        ("mac", "protocolid", "0x5ff", "below 0x600"),
        ("mac", "protocolid", "ipx", "neither a number nor one of arp"),
        ("vlan", "encap-protocol", "59", "below 0x3c"),
        ("ip", "protocol", "256", "outside 0..255"),
        ("all", "state", "", "is empty"),
        ("tcp", "flags", "SYN,FOO/SYN", "'FOO', which is not a TCP flag"),
        ("all", "ipset", "x" * 32, "is not an ipset name"),
        ("all", "ipsetflags", "src,dst,src,dst,src,dst,src", "1 to 6"),
        ("all", "comment", "x" * 257, "longer than 256"),
        ("tcp", "option", "0x100", "outside 0..255"),
        ("stp", "root-cost", "4294967296", "outside 0..4294967295"),
    ],
)  # fmt: skip
def test_typed_value_refuses(protocol: str, attr: str, text: str, why: str) -> None:
    with pytest.raises(VirtfwError) as info:
        schema.typed_value(protocol, attr, text)
    message = str(info.value)
    assert message.startswith(f"<{protocol}> attribute '{attr}': '")
    assert why in message and "\n" not in message


def test_attribute_order_and_lookups() -> None:
    assert schema.attribute_order("tcp")[:3] == ("srcmacaddr", "srcipaddr", "srcipmask")
    assert schema.attribute_order("tcp")[-3:] == ("option", "flags", "comment")
    assert "flags" not in schema.attribute_order("tcp-ipv6")
    assert schema.attribute_order("rarp") == schema.attribute_order("arp")
    assert len(schema.PROTOCOLS) == 24
    with pytest.raises(VirtfwError, match=r"<tcp6> is not a protocol element"):
        schema.attribute_order("tcp6")
    with pytest.raises(VirtfwError, match=r"<udp> has no attribute 'flags'"):
        schema.typed_value("udp", "flags", "SYN/SYN")
    assert schema.parse_variable("$A[ @3 ] ") == VarRef("A", iterator=3)


# ---------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------


def _filter_with(inner: str, rule: str = "action='accept' direction='in'") -> Filter:
    return parse_filter(f"<filter name='f'>\n<rule {rule}>\n{inner}\n</rule>\n</filter>", "f.xml")


def _refused(text: str, *expected: str) -> None:
    with pytest.raises(VirtfwError) as info:
        parse_filter(text, "f.xml")
    message = str(info.value)
    assert message.startswith("f.xml: "), message
    assert "\n" not in message, message
    for part in expected:
        assert part in message, message


@pytest.mark.parametrize(
    "inner, expected",
    [
        ("<tcp srcportstart='abc'/>", ["line 3: <tcp>", "'srcportstart'", "'abc'", "is not a number"]),
        ("<tcp srcmacaddr='zz'/>", ["'srcmacaddr'", "'zz'", "is not a MAC address"]),
        ("<udp srcipaddr='1.2.3'/>", ["'srcipaddr'", "'1.2.3'", "IPv4"]),
        ("<all dscp='64'/>", ["'dscp'", "'64'", "outside 0..63"]),
        ("<vlan vlanid='4096'/>", ["'vlanid'", "'4096'", "outside 0..4095"]),
        ("<sctp dstportend='70000'/>", ["'dstportend'", "'70000'"]),
        ("<icmp type='0x100'/>", ["'type'", "'0x100'"]),
        ("<arp gratuitous='maybe'/>", ["'gratuitous'", "'maybe'", "boolean"]),
        ("<tcp state='NEW,OLD'/>", ["'state'", "'OLD'"]),
        ("<tcp flags='SYN'/>", ["'flags'", "MASK/FLAGS"]),
        ("<all comment='a&#10;b'/>", ["'comment'", "control characters"]),
        ("<tcp srcipaddr='$'/>", ["'srcipaddr'", "not a variable reference"]),
        ("<tcp srcipaddr='$A[@1001]'/>", ["iterator 1001"]),
        ("<tcp srcipaddr='$A[1'/>", ["not a variable reference"]),
        ("<tcp sourceport='22'/>", ["<tcp>", "unknown attribute 'sourceport'"]),
        ("<tcp srcporttend='24'/>", ["unknown attribute 'srcporttend'"]),
        ("<tcp-ipv6 flags='SYN/SYN'/>", ["<tcp-ipv6>", "unknown attribute 'flags'"]),
        ("<tcp4/>", ["<tcp4>", "unknown element in <rule>"]),
        ("<tcp><port/></tcp>", ["<port>", "unknown element in <tcp>"]),
        ("<tcp match='nope'/>", ["'match'", "'nope'", "yes or no"]),
        ("<tcp/><udp/>", ["<udp>", "already has <tcp>"]),
        ("<ip srcportstart='22'/>", ["ports need attribute 'protocol'", "missing"]),
        ("<ipv6 protocol='icmpv6' dstportstart='22'/>", ["ports need", "'icmpv6'"]),
        ("<ip protocol='$P' dstportstart='22'/>", ["ports need", "a variable"]),
        ("<tcp match='no' dstportstart='22'/>", ["match='no' on 'dstportstart'", "'srcportstart'"]),
        ("<icmp match='no' code='3'/>", ["match='no' on 'code'", "'type'"]),
        ("<all ipsetflags='src'/>", ["'ipsetflags' needs 'ipset'"]),
    ],
)  # fmt: skip
def test_bad_rule_content(inner: str, expected: list[str]) -> None:
    _refused(f"<filter name='f'>\n<rule action='accept' direction='in'>\n{inner}\n</rule>\n</filter>", *expected)


@pytest.mark.parametrize(
    "rule, expected",
    [
        ("action='allow' direction='in'", ["<rule>", "'action'", "'allow'", "drop, accept, reject, return, continue"]),
        ("direction='in'", ["attribute 'action' is required"]),
        ("action='accept' direction='both'", ["'direction'", "'both'", "in, out, inout"]),
        ("action='accept'", ["attribute 'direction' is required"]),
        ("action='accept' direction='in' priority='1001'", ["'priority'", "1001", "-1000..1000"]),
        ("action='accept' direction='in' priority='-1001'", ["-1001", "-1000..1000"]),
        ("action='accept' direction='in' priority='high'", ["'priority'", "'high'", "not an integer"]),
        ("action='accept' direction='in' statematch='no'", ["'statematch'", "'no'", "true or false"]),
        ("action='accept' direction='in' state='NEW'", ["<rule>", "unknown attribute 'state'"]),
    ],
)  # fmt: skip
def test_bad_rule_attributes(rule: str, expected: list[str]) -> None:
    _refused(f"<filter name='f'>\n<rule {rule}/>\n</filter>", *expected)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<filter name='f' chain='rootx'/>", ["<filter>", "'rootx'", "must be 'root' or start with one of"]),
        ("<filter name='f' chain='filter'/>", ["'filter'", "must be 'root'"]),
        ("<filter name='f' chain='ip'/>", ["'ip'", "must be 'root'"]),
        ("<filter name='f' chain=''/>", ["chain name is empty"]),
        ("<filter name='f' chain='ipv4-abcdefgh'/>", ["'ipv4-abcdefgh'", "longer than 12"]),
        ("<filter name='f' chain='arp;x'/>", ["'arp;x'", "characters"]),
        ("<filter name='f' chain='mac' priority='-1001'/>", ["'priority'", "-1001", "-1000..1000"]),
        ("<filter name='f' chain='mac' priority='0x10'/>", ["'priority'", "'0x10'", "not an integer"]),
        ("<filter chain='mac'/>", ["attribute 'name' is required"]),
        ("<filter name='a b'/>", ["filter name 'a b' is not allowed"]),
        ("<filter name='../x'/>", ["filter name '../x' is not allowed"]),
        ("<filter name='f' policy='drop'/>", ["<filter>", "unknown attribute 'policy'"]),
        ("<filter name='f'><description/></filter>", ["<description>", "unknown element in <filter>"]),
        ("<filter name='f'><uuid>xyz</uuid></filter>", ["<uuid>", "'xyz' is not a UUID"]),
        (("<filter name='f'><uuid>5c6d49af-b071-6127-b4ec-6f8ed4b55335</uuid>"
          "<uuid>5c6d49af-b071-6127-b4ec-6f8ed4b55336</uuid></filter>"), ["only one <uuid>"]),
        ("<network name='f'/>", ["root element must be <filter>, not <network>"]),
        ("<filter name='f'>", ["malformed XML"]),
        ("<!DOCTYPE f [<!ENTITY x 'y'>]><filter name='f'/>", ["DOCTYPE"]),
        ("<filter name='f'><filterref/></filter>", ["<filterref>", "attribute 'filter' is required"]),
        ("<filter name='f'><filterref filter='a;b'/></filter>", ["filterref filter 'a;b' is not allowed"]),
        ("<filter name='f'><filterref filter='x' extra='1'/></filter>", ["unknown attribute 'extra'"]),
        ("<filter name='f'><filterref filter='x'><param name='A' value='1'/></filterref></filter>",
         ["<param>", "unknown element in <filterref>"]),
        ("<filter name='f'><filterref filter='x'><parameter name='A'/></filterref></filter>",
         ["<parameter>", "'name' and 'value' are required"]),
        ("<filter name='f'><filterref filter='x'><parameter name='A' value='1' type='x'/></filterref></filter>",
         ["unknown attribute 'type'"]),
    ],
)  # fmt: skip
def test_bad_filter(text: str, expected: list[str]) -> None:
    _refused(text, *expected)


#: Parameter values that must never reach a firewall rule or a shell.
BAD_PARAM_VALUES = [
    "1;2", "$(reboot)", "`id`", "a b", "{x}", "x}", "", "a'b", "a\"b", "a|b", "a&b", "a>b", "a\\b", "a*", "a,b",
]  # fmt: skip


@pytest.mark.parametrize("value", BAD_PARAM_VALUES)
def test_bad_parameter_value_in_filter(value: str) -> None:
    quoted = value.replace("&", "&amp;").replace("'", "&apos;").replace('"', "&quot;").replace(">", "&gt;")
    text = f"<filter name='f'><filterref filter='x'><parameter name='A' value='{quoted}'/></filterref></filter>"
    _refused(text, "<parameter>", "parameter 'A' value", "letters, digits and . : / _ -" if value else "is empty")


@pytest.mark.parametrize("name", ["A-B", "A B", "$A", "", "A.B", "A;B"])
def test_bad_parameter_name(name: str) -> None:
    text = f"<filter name='f'><filterref filter='x'><parameter name='{name}' value='1'/></filterref></filter>"
    _refused(text, f"parameter name '{name}' is not allowed")


def test_good_parameter_values() -> None:
    text = (
        "<filter name='f'><filterref filter='x'>"
        "<parameter name='IP_6' value='fe80::1/64'/><parameter name='M' value='52:54:00:aa:bb:cc'/>"
        "<parameter name='N' value='a-b_c.d'/></filterref></filter>"
    )
    assert parse_filter(text, "f").entries[0].params == {
        "IP_6": ["fe80::1/64"], "M": ["52:54:00:aa:bb:cc"], "N": ["a-b_c.d"],
    }  # fmt: skip


# ---------------------------------------------------------------------------------
# <filterbinding>
# ---------------------------------------------------------------------------------

BINDING = """\
<filterbinding>
  <owner>
    <name>guest1</name>
    <uuid>D54DF46F-1AB5-4A22-8618-4560EF5FAC2C</uuid>
  </owner>
  <portdev name='vnet0'/>
  <linkdev name='eth0'/>
  <mac address='52:54:00:7B:35:93'/>
  <filterref filter='clean-traffic'>
    <parameter name='MAC' value='52:54:00:7b:35:93'/>
    <parameter name='IP' value='10.0.0.2'/>
    <parameter name='IP' value='10.0.0.3'/>
  </filterref>
</filterbinding>
"""

BINDING_FORMATTED = """\
<filterbinding>
  <owner>
    <name>guest1</name>
    <uuid>d54df46f-1ab5-4a22-8618-4560ef5fac2c</uuid>
  </owner>
  <portdev name='vnet0'/>
  <linkdev name='eth0'/>
  <mac address='52:54:00:7b:35:93'/>
  <filterref filter='clean-traffic'>
    <parameter name='IP' value='10.0.0.2'/>
    <parameter name='IP' value='10.0.0.3'/>
    <parameter name='MAC' value='52:54:00:7b:35:93'/>
  </filterref>
</filterbinding>
"""


def test_binding_both_ways() -> None:
    binding = parse_binding(BINDING, "b.xml")
    assert binding == Binding(
        portdev="vnet0",
        mac="52:54:00:7b:35:93",
        filter="clean-traffic",
        params={"MAC": ["52:54:00:7b:35:93"], "IP": ["10.0.0.2", "10.0.0.3"]},
        owner="guest1",
        owner_uuid="d54df46f-1ab5-4a22-8618-4560ef5fac2c",
        linkdev="eth0",
    )
    assert format_binding(binding) == BINDING_FORMATTED
    assert parse_binding(format_binding(binding), "again") == binding


def test_minimal_binding() -> None:
    binding = parse_binding(_binding(ref="<filterref filter='f'/>", portdev="<portdev name='tap1'/>"), "b.xml")
    assert binding == Binding(portdev="tap1", mac="52:54:00:00:00:01", filter="f")
    assert format_binding(binding) == (
        "<filterbinding>\n  <portdev name='tap1'/>\n  <mac address='52:54:00:00:00:01'/>\n"
        "  <filterref filter='f'/>\n</filterbinding>\n"
    )


def _binding_refused(text: str, *expected: str) -> None:
    with pytest.raises(VirtfwError) as info:
        parse_binding(text, "b.xml")
    message = str(info.value)
    assert message.startswith("b.xml: ") and "\n" not in message, message
    for part in expected:
        assert part in message, message


def _binding(portdev: str = "<portdev name='vnet0'/>", mac: str = "<mac address='52:54:00:00:00:01'/>",
             ref: str = "<filterref filter='clean-traffic'/>", extra: str = "") -> str:  # fmt: skip
    return f"<filterbinding>{extra}{portdev}{mac}{ref}</filterbinding>"


@pytest.mark.parametrize(
    "text, expected",
    [
        (_binding(portdev=""), ["needs a <portdev> element"]),
        (_binding(portdev="<portdev/>"), ["<portdev>", "attribute 'name' is required"]),
        (_binding(portdev="<portdev name='vnet0;reboot'/>"), ["<portdev name> 'vnet0;reboot' is not a valid"]),
        (_binding(portdev="<portdev name='averyveryverylongname'/>"), ["is not a valid interface name"]),
        (_binding(extra="<portdev name='vnet1'/>"), ["only one <portdev>"]),
        (_binding(extra="<linkdev name='e th0'/>"), ["<linkdev name> 'e th0'"]),
        (_binding(mac=""), ["needs a <mac> element"]),
        (_binding(mac="<mac address='52:54:00:00:00'/>"), ["<mac address> '52:54:00:00:00' is not of the form"]),
        (_binding(mac="<mac address='52:54:00:00:00:01' type='x'/>"), ["<mac>", "unknown attribute 'type'"]),
        (_binding(ref=""), ["needs a <filterref> element"]),
        (_binding(ref="<filterref filter='$(x)'/>"), ["filterref filter '$(x)' is not allowed"]),
        (_binding(ref="<filterref filter='f'><parameter name='IP' value='1.2.3.4;rm'/></filterref>"),
         ["parameter 'IP' value '1.2.3.4;rm'"]),
        (_binding(extra="<virtualport/>"), ["<virtualport>", "unknown element in <filterbinding>"]),
        (_binding(extra="<owner><uuid>d54df46f-1ab5-4a22-8618-4560ef5fac2c</uuid></owner>"), ["<name> is required"]),
        (_binding(extra="<owner><name>g</name><uuid>nope</uuid></owner>"), ["<uuid>", "'nope' is not a UUID"]),
        (_binding(extra="<owner><name>g</name><id>1</id></owner>"), ["<id>", "unknown element in <owner>"]),
        (_binding(extra="<owner><name>a;b</name></owner>"), ["owner name 'a;b' is not allowed"]),
        ("<filter name='x'/>", ["root element must be <filterbinding>, not <filter>"]),
        ("<filterbinding version='1'/>", ["unknown attribute 'version'"]),
    ],
)  # fmt: skip
def test_bad_binding(text: str, expected: list[str]) -> None:
    _binding_refused(text, *expected)


@pytest.mark.parametrize("value", BAD_PARAM_VALUES)
def test_bad_parameter_value_in_binding(value: str) -> None:
    quoted = value.replace("&", "&amp;").replace("'", "&apos;").replace('"', "&quot;").replace(">", "&gt;")
    ref = f"<filterref filter='clean-traffic'><parameter name='IP' value='{quoted}'/></filterref>"
    _binding_refused(_binding(ref=ref), "<parameter>", "parameter 'IP' value")
