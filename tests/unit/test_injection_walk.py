"""The injection walk over every attribute and text node of the network and nwfilter schemas.

Issue 11, item 1: every value that reaches a file, a command line or a batch is checked
by type where it is read. This walk proves it field by field. Its documents set every
attribute and text node the parsers read: the protocol elements' attributes come from
``schema.ELEMENT_ATTRIBUTES`` (one document per attribute, generated), and
``test_the_walk_covers_every_attribute_and_element_the_parsers_know`` records what the
parsers' ``check_known`` calls accept and fails for anything the documents leave out.
Each payload of ``PAYLOADS`` goes after and before each field's good value, and each
(field, payload) pair must end in one of two ways:

* refused: one ``VirtfwError`` whose message is one line and names the field or its element;
* accepted and inert: every target the definition reaches (dnsmasq's three files, the
  nftables and iptables network batches, the nftables and ebtables/iptables filter
  batches through the fake runner, the XML virtfw stores) has the same *shape* as with the
  good value alone: the same lines (split at '\n' only, as the tools read), no control
  character, and on each line the same tokens as that target's reader splits it (words and
  quoted strings, ';', '{', '}', '#' in nft; words in *-restore; the option name, ',', '"',
  '\\' and '#' in dnsmasq's lines; fields in a hosts file; elements and attribute names in
  XML). A payload that escaped its quoting adds a line, a token, a field, a ';' or a '#',
  and the shapes differ: ``test_the_shape_checks_can_fail`` breaks each quoting function
  in turn and sees the walk report it.

A value accepted whose targets all stay byte for byte the same is counted apart (stripped
blanks, or an attribute read and not used). The counts are printed: ``pytest -s`` shows them.
"""

from __future__ import annotations

import itertools
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers.fakerunner import FakeRunner
from lxml import etree

from virtfw import xmlsafe
from virtfw.config import Config
from virtfw.errors import VirtfwError, one_line
from virtfw.filter import schema
from virtfw.filter.instantiate import instantiate
from virtfw.filter.model import Binding, Filter
from virtfw.filter.store import FilterStore
from virtfw.filter.xml import format_binding, format_filter, parse_binding, parse_filter
from virtfw.net.dnsmasq import files_for, render_config
from virtfw.net.model import Network
from virtfw.net.policy import network_rules
from virtfw.net.xml import format_network, parse_network
from virtfw.rules.nft.filter import NftFilterBackend
from virtfw.rules.nft.network import NftablesBackend
from virtfw.rules.xtables.filter import EbiptablesFilterBackend
from virtfw.rules.xtables.network import IptablesBackend

#: (character, filler): after a good value the character comes first, before it the filler
#: does ("x" + "\t" + value): the filler never merges with the value into another good one.
#: As written in the XML document, entities and all.
PAYLOADS = {
    "newline": ("&#10;", "dhcp-script=/tmp/x.sh"),
    "trailing newline": ("&#10;", ""),
    "carriage return": ("&#13;", "flush ruleset"),
    "tab": ("&#9;", "x"),
    "space": (" ", "x"),
    "hash": ("#", "x"),
    "comma": (",", "x"),
    "semicolon": (";", "x"),
    "quote": ("&quot;", "x"),
    "apostrophe": ("&apos;", "x"),
    "percent": ("%", "x"),
    "NUL": ("&#0;", ""),  # not XML: lxml refuses it, so refused either way
    "backslash": ("\\", "x"),
    "braces": ("{x}", ""),
    "angle and ampersand": ("&lt;x&amp;&gt;", ""),
    "unicode line separator": ("&#8232;", "x"),
}

BEFORE, AFTER = "INJECTIONBEFORE", "INJECTIONAFTER"  # where a payload goes around a good value
PLACES = {"after": AFTER, "before": BEFORE}  # a pattern anchored at one end only lets one through


# ---- what the targets' readers see ------------------------------------------------------


def _nft_shape(line: str) -> tuple[str, ...]:
    """nft's tokens: a double-quoted string (no escapes in nft), a word, or one of the
    characters that end a statement, open a block or start a comment."""
    kinds: list[str] = []
    i = 0
    while i < len(line):
        char = line[i]
        if char in " \t":
            i += 1
        elif char == '"':
            end = line.find('"', i + 1)
            if end < 0:
                return (*kinds, "UNTERMINATED")
            kinds.append("W")  # a quoted string is one token, as a word is
            i = end + 1
        elif char in ";#{}":
            kinds.append(char)
            i += 1
        else:
            match = re.compile(r'[^ \t";#{}]+').match(line, i)
            assert match is not None
            kinds.append("W")
            i = match.end()
    return tuple(kinds)


def _restore_shape(line: str) -> tuple[str, ...]:
    """xtables-restore's words: blanks split, double quotes group (backslash escapes
    inside), a '#' line is a comment. A word is a word, quoted or not."""
    if line.startswith("#"):
        return ("#",)
    words = 0
    quoted = escaped = in_word = False
    for char in line:
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = in_word = True
        elif char in " \t":
            words += in_word
            in_word = False
        else:
            in_word = True
    if quoted:
        return ("W",) * words + ("UNTERMINATED",)
    return ("W",) * (words + in_word)


def _dnsmasq_shape(line: str) -> tuple[object, ...]:
    """dnsmasq's option lines: the option name, then what splits, quotes, escapes or ends
    its value (',' fields, '"' quoting, '\\' escapes, '#' comments, blanks at either end)."""
    name = line.partition("=")[0]
    return (name, *(line.count(c) for c in ',"\\#'), line != line.strip())


def _hosts_shape(line: str) -> tuple[object, ...]:
    """A hosts file line (dnsmasq's addn-hosts): blank-separated fields, '#' comments."""
    return (len(line.split()), line.count("#"))


def _xml_shape(text: str) -> tuple[object, ...]:
    """The stored XML: its elements and attribute names (values may hold anything, escaped)."""
    root = etree.fromstring(text.encode())
    return tuple((node.tag, tuple(sorted(node.attrib))) for node in root.iter() if isinstance(node.tag, str))


LINE_READERS: dict[str, Callable[[str], tuple[object, ...]]] = {
    "nft": _nft_shape,
    "restore": _restore_shape,
    "dnsmasq": _dnsmasq_shape,
    "hosts": _hosts_shape,
}


def shape(kind: str, text: str) -> tuple[object, ...]:
    """What a target's reader makes of TEXT. Lines end only at '\\n' (as all of them read);
    a control character anywhere else is a shape of its own, never equal to a good one."""
    if kind == "xml":
        return _xml_shape(text)
    if kind == "argv":  # exec'd as a list: the number of arguments is the shape
        return (len(text.split("\0")),)
    lines = text.split("\n")
    bad = [line for line in lines if any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in line)]
    if bad:
        return ("CONTROL CHARACTER", *bad)
    return tuple(LINE_READERS[kind](line) for line in lines)


Targets = dict[str, tuple[str, str]]  # target name -> (kind, text)


def _calls(prefix: str, runner: FakeRunner) -> Targets:
    """Each command a backend ran: its argv, and its batch in the kind its tool reads."""
    out: Targets = {}
    for number, call in enumerate(runner.calls):
        tool = call.argv[0]
        out[f"{prefix} #{number} argv"] = ("argv", "\0".join(call.argv))
        if call.text:
            kind = "nft" if tool == "nft" else "restore"
            out[f"{prefix} #{number} {tool}"] = (kind, call.text)
    return out


def _batches(prefix: str, install: Callable[[FakeRunner], object]) -> Targets:
    """A backend's commands through the fake runner; a backend that refuses the definition
    is left out (the good value's rendering decides which backends a field is checked on)."""
    runner = FakeRunner()
    try:
        install(runner)
    except VirtfwError as exc:
        return {f"{prefix} refused": ("refused", one_line(exc))}
    return _calls(prefix, runner)


# ---- network targets ---------------------------------------------------------------------


def network_targets(net: Network) -> Targets:
    """dnsmasq's three files, the stored XML and both backends' network batches."""
    files = files_for(Path("/state"), net.name)
    rendered = render_config(net, files)
    targets: Targets = {
        "dnsmasq conf": ("dnsmasq", rendered[files.conf]),
        "dnsmasq hostsfile": ("dnsmasq", rendered[files.hostsfile]),
        "dnsmasq addnhosts": ("hosts", rendered[files.addnhosts]),
    }
    stored = format_network(net)
    assert format_network(parse_network(stored, "stored.xml")) == stored, "the stored XML reads back the same"
    targets["stored network XML"] = ("xml", stored)
    rules = network_rules(net)
    targets |= _batches("nft network", lambda runner: NftablesBackend().install(runner, [rules]))
    targets |= _batches("iptables network", lambda runner: IptablesBackend().install(runner, [rules]))
    return targets


# ---- filter targets ------------------------------------------------------------------------

#: Filters a walked filter or binding refers to.
HELPERS = {
    "injref": "<filter name='injref' chain='root'><rule action='accept' direction='out'>"
    "<ip srcipaddr='$P'/></rule></filter>",
    "injb": "<filter name='injb' chain='root'><rule action='accept' direction='out'>"
    "<ip srcipaddr='$IP' srcmacaddr='$MAC'/></rule></filter>",
}
#: The binding a walked filter is instantiated with.
BINDING = (
    "<filterbinding><portdev name='vnet0'/><mac address='52:54:00:00:00:01'/><filterref filter='{}'>"
    "<parameter name='P' value='10.0.0.1'/><parameter name='P' value='10.0.0.2'/></filterref></filterbinding>"
)


def _store() -> FilterStore:
    store = FilterStore(Config(Path("/nonexistent/etc"), Path("/nonexistent/run")))
    for name, text in HELPERS.items():
        store.overrides[name] = parse_filter(text, f"{name}.xml")
    return store


def _filter_batches(binding: Binding, store: FilterStore) -> Targets:
    ports = [instantiate(binding, store.load)]
    targets: Targets = {}
    targets |= _batches("nft filter", lambda runner: NftFilterBackend().install(runner, ports))
    targets |= _batches("ebiptables filter", lambda runner: EbiptablesFilterBackend().install(runner, ports))
    return targets


def filter_targets(flt: Filter) -> Targets:
    """The stored XML and both backends' batches of the filter on a port."""
    stored = format_filter(flt)
    assert format_filter(parse_filter(stored, "stored.xml")) == stored, "the stored XML reads back the same"
    store = _store()
    store.overrides[flt.name] = flt
    binding = parse_binding(BINDING.format(flt.name), "binding.xml")
    return {"stored filter XML": ("xml", stored), **_filter_batches(binding, store)}


def binding_targets(binding: Binding) -> Targets:
    stored = format_binding(binding)
    assert format_binding(parse_binding(stored, "stored.xml")) == stored, "the stored XML reads back the same"
    return {"stored binding XML": ("xml", stored), **_filter_batches(binding, _store())}


@dataclass(frozen=True)
class Reading:
    """How a document is read (where a value must be refused) and what it reaches."""

    parse: Callable[[str], object]
    targets: Callable[[Any], Targets]


NETWORK = Reading(lambda text: parse_network(text, "inj.xml"), network_targets)
FILTER = Reading(lambda text: parse_filter(text, "inj.xml"), filter_targets)
FILTERBINDING = Reading(lambda text: parse_binding(text, "inj.xml"), binding_targets)


# ---- the fields --------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One attribute or text node of one sample document; TEMPLATE has BEFORE and AFTER around its value."""

    name: str  # e.g. "network/ip[1]/dhcp/host@mac"
    template: str
    reading: Reading


def _path(node: etree._Element) -> str:
    """'network/ip[2]/dhcp/host' style: the element and its ancestors, repeated tags numbered."""
    parts = []
    while node is not None:
        parent = node.getparent()
        tag = etree.QName(node).localname
        if parent is not None:
            same = [sibling for sibling in parent if sibling.tag == node.tag]
            if len(same) > 1:
                tag += f"[{same.index(node) + 1}]"
        parts.append(tag)
        node = parent
    return "/".join(reversed(parts))


def _template(document: str, node_path: tuple[int, ...], attribute: str | None) -> str:
    """DOCUMENT with the marks around one attribute's value (or the element's text)."""
    root = etree.fromstring(document.encode())
    node = root
    for index in node_path:
        node = node[index]
    if attribute is None:
        node.text = BEFORE + (node.text or "") + AFTER
    else:
        node.set(attribute, BEFORE + node.get(attribute) + AFTER)
    return etree.tostring(root, encoding="unicode")


def _index_path(node: etree._Element) -> tuple[int, ...]:
    path = []
    while node.getparent() is not None:
        path.append(node.getparent().index(node))
        node = node.getparent()
    return tuple(reversed(path))


def document_fields(document: str, reading: Reading, only: set[str] | None = None) -> Iterator[Field]:
    """Every attribute and non-blank text node of DOCUMENT (or those named in ONLY)."""
    root = etree.fromstring(document.encode())
    for node in root.iter():
        if not isinstance(node.tag, str):
            continue
        where = _path(node)
        for attribute in node.attrib:
            name = f"{where}@{etree.QName(attribute).localname}"
            if only is None or name in only:
                yield Field(name, _template(document, _index_path(node), attribute), reading)
        if (node.text or "").strip() and (only is None or where in only):
            yield Field(where, _template(document, _index_path(node), None), reading)


# ---- the network documents ---------------------------------------------------------------

UUID = "3f6e8a2c-1b4d-4e5f-8a9b-0c1d2e3f4a5b"
NAT_NETWORK = f"""<network ipv6='yes' trustGuestRxFilters='no'
    xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>
  <name>inj</name>
  <uuid>{UUID}</uuid>
  <title>A title</title>
  <description>A description</description>
  <metadata><app:info xmlns:app='http://example.org/app' key='k'>v</app:info></metadata>
  <forward mode='nat' dev='eth0'>
    <nat ipv6='yes'><address start='203.0.113.10' end='203.0.113.20'/><port start='2000' end='3000'/></nat>
    <interface dev='eth0'/>
  </forward>
  <bridge name='vfwinj0' stp='on' delay='2' macTableManager='kernel' zone='virtfw'/>
  <mac address='52:54:00:0a:0b:0c'/>
  <mtu size='9000'/>
  <domain name='example.org' localOnly='yes' register='no'/>
  <dns enable='yes' forwardPlainNames='no'>
    <forwarder addr='192.0.2.53' domain='example.com'/>
    <host ip='10.9.9.7'><hostname>h</hostname><hostname>h2.example.org</hostname></host>
    <srv service='ldap' protocol='tcp' domain='example.org' target='srv.example.org' port='389' priority='1'
         weight='10'/>
    <txt name='t' value='some text'/>
  </dns>
  <route address='192.0.2.0' prefix='24' gateway='10.9.9.2' metric='1'/>
  <route family='ipv6' address='2001:db8:9::' prefix='64' gateway='fd09::2'/>
  <route address='198.51.100.0' netmask='255.255.255.0' gateway='10.9.9.3'/>
  <portgroup name='engineering' default='yes'>
    <vlan trunk='yes'><tag id='42' nativeMode='untagged'/></vlan>
    <bandwidth><inbound average='1000' peak='5000' burst='1024'/><outbound average='128' floor='64'/></bandwidth>
    <virtualport type='openvswitch'><parameters interfaceid='09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f'/></virtualport>
  </portgroup>
  <bandwidth><inbound average='1000'/></bandwidth>
  <vlan><tag id='7'/></vlan>
  <virtualport type='openvswitch'><parameters interfaceid='6a7f0b1e-2f3d-4c5b-8a9e-1d2c3b4a5f6e'/></virtualport>
  <port isolated='yes'/>
  <ip address='10.9.9.1' prefix='24' localPtr='yes'>
    <tftp root='/srv/tftp'/>
    <dhcp>
      <range start='10.9.9.10' end='10.9.9.99'><lease expiry='1' unit='hours'/></range>
      <host mac='52:54:00:00:00:01' ip='10.9.9.5' name='guest'><lease expiry='30' unit='minutes'/></host>
      <bootp file='pxelinux.0' server='10.9.9.2'/>
    </dhcp>
  </ip>
  <ip family='ipv6' address='fd09::1' prefix='64' localPtr='yes'>
    <dhcp>
      <range start='fd09::10' end='fd09::20'><lease expiry='7200' unit='seconds'/></range>
      <host name='guest6' ip='fd09::5'/>
      <host id='0:3:0:1:52:54:0:0:0:6' name='guest7' ip='fd09::6'><lease expiry='0'/></host>
    </dhcp>
  </ip>
  <dnsmasq:options><dnsmasq:option value='log-queries'/></dnsmasq:options>
</network>"""

ROUTED_NETWORK = """<network>
  <name>injroute</name>
  <forward mode='route'><interface dev='eth0'/></forward>
  <bridge name='vfwinj1'/>
  <ip address='10.8.8.1' netmask='255.255.255.0'><dhcp><bootp file='boot.ipxe'/></dhcp></ip>
  <ip family='ipv6' address='fd08::1' prefix='64'/>
</network>"""

ISOLATED_NETWORK = """<network>
  <name>injiso</name>
  <bridge name='vfwinj2'/>
  <dns enable='no'/>
  <ip address='10.7.7.1' prefix='24'/>
</network>"""

NETWORK_DOCUMENTS = {"nat": NAT_NETWORK, "routed": ROUTED_NETWORK, "isolated": ISOLATED_NETWORK}

#: Values that are lines of dnsmasq's configuration by design: the admin's own options,
#: passed on verbatim as libvirt does. They must stay one line; what is on it is theirs.
VERBATIM_LINES = {"network/options/option@value"}


# ---- the filter documents ----------------------------------------------------------------

FRAME_FILTER = f"""<filter name='injf' chain='ipv4' priority='-650'>
  <uuid>{UUID}</uuid>
  <rule action='accept' direction='out' priority='100' statematch='false'>
    <ip match='yes' protocol='tcp' dstportstart='22'/>
  </rule>
  <filterref filter='injref'>
    <parameter name='P' value='10.0.0.1'/>
  </filterref>
</filter>"""

VARIABLE_FILTER = """<filter name='injv' chain='root'>
  <rule action='drop' direction='out'><all srcipaddr='$P' dstipaddr='$P[1]' srcipfrom='$P[@1]'/></rule>
  <filterref filter='injref'><parameter name='P' value='10.0.0.1'/><parameter name='P' value='10.0.0.2'/></filterref>
</filter>"""

FILTER_BINDING = f"""<filterbinding>
  <owner><name>guest</name><uuid>{UUID}</uuid></owner>
  <portdev name='vnet0'/>
  <linkdev name='eth0'/>
  <mac address='52:54:00:00:00:01'/>
  <filterref filter='injb'><parameter name='IP' value='10.0.0.5'/></filterref>
</filterbinding>"""

#: A good value of each datatype of the nwfilter attribute tables, by its name.
GOOD_VALUES = {
    "MAC address": "52:54:00:00:00:02",
    "MAC mask": "ff:ff:ff:ff:ff:00",
    "IPv4 address": "10.1.2.3",
    "IPv4 mask": "24",
    "IPv6 address": "fd00::1",
    "IPv6 mask": "64",
    "8-bit number": "3",
    "16-bit number": "22",
    "32-bit number": "5",
    "number 0..63": "10",
    "number 0..4095": "10",
    "boolean": "true",
    "comment": "a comment",
    "connection state list": "NEW",
    "TCP flags MASK/FLAGS": "SYN,ACK/SYN",
    "ipset name": "myset",
    "ipset flags": "src",
    "an EtherType": "ipv4",
    "an encapsulated protocol": "ipv4",
    "an ARP opcode": "Request",
    "an IP protocol": "tcp",
}

#: The chain a rule of each protocol element lives in (the rest: root).
CHAINS = {"mac": "mac", "vlan": "vlan", "stp": "stp", "arp": "arp", "rarp": "rarp", "ip": "ipv4", "ipv6": "ipv6"}


def _companions(protocol: str, attr: str) -> dict[str, str]:
    """The attributes a rule needs besides ATTR for ATTR to take effect: the address of a
    mask, the start of a range, the type of a code, a port protocol, the set of flags."""
    known = schema.attribute_order(protocol)
    wanted = [schema.NEGATION_SOURCE[protocol].get(attr)]
    for end, start in (("end", "start"), ("-hi", ""), ("mask", "addr")):
        if attr.endswith(end):
            wanted.append(attr[: -len(end)] + start)
    wanted.append({"typeend": "type", "codeend": "code", "code": "type", "ipsetflags": "ipset"}.get(attr))
    if protocol in ("ip", "ipv6") and attr in schema.PORT_ATTRIBUTES:
        wanted.append("protocol")
    chosen = {}
    for other in wanted:
        if other and other in known and other != attr:
            chosen[other] = _good(protocol, other)
            chosen |= {a: v for a, v in _companions(protocol, other).items() if a != attr}
    return chosen


def _good(protocol: str, attr: str) -> str:
    kind = schema.datatype(protocol, attr).name
    assert kind in GOOD_VALUES, f"datatype {kind!r} (of <{protocol} {attr}>) needs a good value in GOOD_VALUES"
    return GOOD_VALUES[kind]


def protocol_fields() -> Iterator[Field]:
    """One filter per attribute of each protocol element's table, with that attribute
    walked: an attribute added to ``schema.ELEMENT_ATTRIBUTES`` is walked with no edit here."""
    for protocol, table in schema.ELEMENT_ATTRIBUTES.items():
        for number, (attr, _) in enumerate(table):
            values = {attr: _good(protocol, attr), **_companions(protocol, attr)}
            walked = {f"filter/rule/{protocol}@{attr}"}
            if number == 0:  # match= is walked once per element, next to its first attribute
                values["match"] = "yes"
                walked.add(f"filter/rule/{protocol}@match")
            yield from document_fields(protocol_document(protocol, values), FILTER, only=walked)


def protocol_document(protocol: str, values: dict[str, str]) -> str:
    """A filter with one rule of PROTOCOL, in the chain its kind lives in."""
    attrs = " ".join(f"{a}='{v}'" for a, v in values.items())
    return (
        f"<filter name='injp' chain='{CHAINS.get(protocol, 'root')}'>"
        f"<rule action='accept' direction='out'><{protocol} {attrs}/></rule></filter>"
    )


def network_fields() -> list[Field]:
    return [f for doc in NETWORK_DOCUMENTS.values() for f in document_fields(doc, NETWORK)]


def filter_fields() -> list[Field]:
    return [
        *document_fields(FRAME_FILTER, FILTER),
        *document_fields(VARIABLE_FILTER, FILTER),
        *document_fields(FILTER_BINDING, FILTERBINDING),
        *protocol_fields(),
    ]


# ---- the walk ----------------------------------------------------------------------------


@dataclass
class Walk:
    """What happened to each (field, payload) pair of one schema."""

    pairs: int = 0
    refused: int = 0
    inert: int = 0
    dropped: list[str] = field(default_factory=list)  # accepted, reaching no target
    failures: list[str] = field(default_factory=list)
    unreached: list[str] = field(default_factory=list)  # fields whose good value renders no batch

    def summary(self, name: str) -> str:
        return (
            f"{name}: {self.pairs} pairs, {self.refused} refused, {self.inert} written inertly, "
            f"{len(self.dropped)} accepted and unused"
        )


def _refusal_problem(exc: VirtfwError, field_name: str) -> str | None:
    """A refusal must be one line naming the attribute or element it refuses."""
    message = str(exc)
    if message != one_line(message) or "\n" in message:
        return f"message is not one line: {message!r}"
    if "malformed XML" in message and re.search(r"line [0-9]+", message):
        return None  # the XML parser's own refusal (a NUL, say): it gives the line
    last = re.split(r"[/@]", field_name)[-1].split("[")[0]
    if last not in message:
        return f"message does not name {last!r}: {message}"
    return None


def _first_difference(good: str, bad: str) -> str:
    """The first line of BAD that differs from GOOD, for a short failure message."""
    good_lines, bad_lines = good.split("\n"), bad.split("\n")
    for number, line in enumerate(bad_lines):
        if number >= len(good_lines) or line != good_lines[number]:
            return f"line {number + 1} of {len(bad_lines)} (was {len(good_lines)}): {line!r}"
    return f"{len(bad_lines)} lines, was {len(good_lines)}"


def _placed(template: str, mark: str, payload: str) -> str:
    """The document with PAYLOAD at MARK and nothing at the other mark."""
    return template.replace(mark, payload).replace(BEFORE, "").replace(AFTER, "")


def _render(item: Field, document: str) -> Targets:
    """What an accepted document reaches; any error here is the walk's failure, not a refusal."""
    return item.reading.targets(item.reading.parse(document))


def walk(fields: list[Field]) -> Walk:
    result = Walk()
    for item in fields:
        baseline = _render(item, _placed(item.template, "", ""))
        if not any(kind in ("nft", "restore") for kind, _ in baseline.values()):
            result.unreached.append(item.name)
        good = {name: shape(kind, text) for name, (kind, text) in baseline.items() if kind != "refused"}
        for (label, (char, filler)), (place, mark) in itertools.product(PAYLOADS.items(), PLACES.items()):
            result.pairs += 1
            pair = f"{item.name} + {label} ({place})"
            document = _placed(item.template, mark, char + filler if mark == AFTER else filler + char)
            try:
                model = item.reading.parse(document)
            except VirtfwError as exc:
                problem = _refusal_problem(exc, item.name)
                if problem:
                    result.failures.append(f"{pair}: {problem}")
                result.refused += 1
                continue
            try:
                targets = item.reading.targets(model)
            except (VirtfwError, AssertionError, etree.XMLSyntaxError) as exc:
                result.failures.append(f"{pair}: accepted, then rendering failed: {one_line(exc)}")
                continue
            if targets.keys() != baseline.keys():
                result.failures.append(f"{pair}: reaches other targets: {sorted(targets.keys() ^ baseline.keys())}")
                continue
            if item.name in VERBATIM_LINES:  # one line, whatever is on it
                changed = [
                    name for name, (_, text) in targets.items() if text.count("\n") != baseline[name][1].count("\n")
                ]
            else:
                changed = [
                    name
                    for name, (kind, text) in targets.items()
                    if kind != "refused" and shape(kind, text) != good[name]
                ]
            if changed:
                shown = {name: _first_difference(baseline[name][1], targets[name][1]) for name in changed[:2]}
                result.failures.append(f"{pair}: changes the shape of {shown}")
            elif targets == baseline:
                result.dropped.append(pair)
            else:
                result.inert += 1
    return result


@pytest.fixture(autouse=True)
def _tools_on_path(monkeypatch) -> None:
    """The xtables backends look for nft on PATH before asking which tables will appear."""
    monkeypatch.setattr(shutil, "which", lambda tool, *args, **kwargs: f"/usr/sbin/{tool}")


def _check(name: str, result: Walk) -> None:
    print("\n" + result.summary(name))
    assert not result.failures, f"{result.summary(name)}; {len(result.failures)} not refused or inert:\n" + "\n".join(
        result.failures[:40]
    )
    assert result.refused + result.inert + len(result.dropped) == result.pairs


@pytest.fixture(scope="module")
def walks() -> dict[str, Walk]:
    """Both walks, once for the module (the xtables backends look for nft on PATH first)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shutil, "which", lambda tool, *args, **kwargs: f"/usr/sbin/{tool}")
        return {"network": walk(network_fields()), "filter": walk(filter_fields())}


def test_network_walk(walks: dict[str, Walk]) -> None:
    _check("network", walks["network"])
    assert walks["network"].pairs >= 100 * len(PAYLOADS) * len(PLACES)


def test_filter_walk(walks: dict[str, Walk]) -> None:
    _check("filter", walks["filter"])
    assert not walks["filter"].unreached, f"fields whose good value reaches no batch: {walks['filter'].unreached}"
    assert walks["filter"].pairs >= 400 * len(PAYLOADS) * len(PLACES)


def test_the_walk_counts_its_pairs(walks: dict[str, Walk]) -> None:
    line = ", ".join(f"{name}: {result.pairs} pairs" for name, result in walks.items())
    clean = not any(result.failures for result in walks.values())
    print(f"\ninjection walk: {line}, {'all refused or inert' if clean else 'NOT all refused or inert'}")
    assert clean, f"injection walk: {line}: some pairs neither refused nor inert (see the walks above)"


# ---- the walk covers what the parsers read -----------------------------------------------


def _documents() -> list[tuple[str, Reading]]:
    protocols = [
        (protocol_document(p, {a: _good(p, a), **_companions(p, a)}), FILTER)
        for p, table in schema.ELEMENT_ATTRIBUTES.items()
        for a, _ in table
    ]
    fixed = [(FRAME_FILTER, FILTER), (VARIABLE_FILTER, FILTER), (FILTER_BINDING, FILTERBINDING)]
    return [*((doc, NETWORK) for doc in NETWORK_DOCUMENTS.values()), *fixed, *protocols]


def _unindexed(path: str) -> str:
    return re.sub(r"\[[0-9]+\]", "", path)


def test_the_walk_covers_every_attribute_and_element_the_parsers_know(monkeypatch) -> None:
    """Each parser names what an element may hold (``Reader.check_known``); recorded while
    the walk's documents are read, every attribute named there must be a walked field and
    every child element must occur. A parser taught a new attribute fails this until the
    documents above set it. (Elements read without that check: ``<name>``, ``<uuid>``,
    ``<dns>`` and the elements kept verbatim, are in NAT_NETWORK by hand.)"""
    known: dict[str, tuple[set[str], set[str]]] = {}
    original = xmlsafe.Reader.check_known

    def recording(self: xmlsafe.Reader, attributes: tuple[str, ...], children: tuple[str, ...] = ()) -> None:
        attrs, kids = known.setdefault(_unindexed(_path(self.element)), (set(), set()))
        attrs.update(attributes)
        kids.update(etree.QName(child).localname for child in children)
        original(self, attributes, children)

    monkeypatch.setattr(xmlsafe.Reader, "check_known", recording)
    documents = _documents()
    for document, reading in documents:
        reading.parse(document)
    walked: dict[str, set[str]] = {}
    for item in [*network_fields(), *filter_fields()]:
        path, _, attr = _unindexed(item.name).partition("@")
        walked.setdefault(path, set()).update([attr] if attr else [])
    present: dict[str, set[str]] = {}
    for document, _ in documents:
        for node in etree.fromstring(document.encode()).iter():
            if isinstance(node.tag, str):
                present.setdefault(_unindexed(_path(node)), set()).update(etree.QName(c).localname for c in node)
    missing_attrs = {p: sorted(a - walked.get(p, set())) for p, (a, _) in known.items() if a - walked.get(p, set())}
    missing_kids = {p: sorted(k - present.get(p, set())) for p, (_, k) in known.items() if k - present.get(p, set())}
    assert not missing_attrs, f"attributes the parsers take that the walk does not inject into: {missing_attrs}"
    assert not missing_kids, f"elements the parsers take that the walk's documents lack: {missing_kids}"
    assert set(schema.PROTOCOLS) <= known["filter/rule"][1]
    print(f"\nparsers' known attributes walked: {sum(len(a) for a, _ in known.values())} on {len(known)} elements")


# ---- the checks can fail -------------------------------------------------------------------


def _walk_one(name: str) -> Walk:
    fields = [f for f in [*network_fields(), *filter_fields()] if f.name == name]
    assert fields, name
    return walk(fields)


BREAKS = {
    "xtables quoting": (
        "virtfw.rules.xtables.syntax.quote",
        lambda word: word,
        "filter/rule/tcp@comment",
        "ebiptables",
    ),
    "nft comment": (
        "virtfw.rules.nft.syntax._COMMENT_SAFE",
        re.compile(r"[\x00-\x1f]"),
        "filter/rule/udp@comment",
        "nft filter",
    ),
    "dnsmasq values": (
        "virtfw.net.xml.check_conf_value",
        lambda value, what: value,
        "network/ip[1]/dhcp/bootp@file",
        "dnsmasq conf",
    ),
    "XML escaping": ("virtfw.filter.xml._escape", lambda text: text, "filter/rule/all@comment", "rendering failed"),
}


@pytest.mark.parametrize("broken", BREAKS)
def test_the_shape_checks_can_fail(broken: str, monkeypatch) -> None:
    """With one quoting or checking function broken the walk reports pairs that escape."""
    target, replacement, field_name, reported = BREAKS[broken]
    monkeypatch.setattr(shutil, "which", lambda tool, *args, **kwargs: f"/usr/sbin/{tool}")
    assert not _walk_one(field_name).failures
    monkeypatch.setattr(target, replacement)
    failures = _walk_one(field_name).failures
    assert any(reported in failure for failure in failures), failures


# ---- what the walk found -------------------------------------------------------------------


@pytest.mark.parametrize(
    "element",
    ["<dns enable='yes&#10;port=5353'/>", "<dns enable='off'/>", "<domain name='example.org' localOnly='yes#x'/>"],
)
def test_yes_no_attributes_take_yes_or_no_only(element: str) -> None:
    """<dns enable> read every word but 'no' as yes, <domain localOnly> kept any word and
    wrote local=/.../ only for exactly 'yes': a payload silently dropped the line."""
    text = f"<network><name>n</name>{element}<ip address='10.9.9.1' prefix='24'/></network>"
    with pytest.raises(VirtfwError, match="must be 'yes' or 'no'") as caught:
        parse_network(text, "n.xml")
    assert "\n" not in str(caught.value)


def test_yes_no_attributes_keep_their_meaning() -> None:
    net = parse_network(
        "<network><name>n</name><bridge name='vb0'/><dns enable='no'/><domain name='e.org' localOnly='no'/>"
        "<ip address='10.9.9.1' prefix='24'/></network>"
    )
    assert net.dns is not None and not net.dns.enabled and net.domain_local_only == "no"
    assert "local=/" not in render_config(net, files_for(Path("/state"), "n"))[files_for(Path("/state"), "n").conf]


def test_a_saved_rule_whose_comment_holds_a_unicode_line_separator_stays_one_rule() -> None:
    """iptables-save ends lines at '\\n' only; a foreign rule's comment may hold U+2028,
    which str.splitlines() took for a line end (the rest read as a rule of its own)."""
    from virtfw.rules.xtables.save import parse_save

    text = '*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -m comment --comment "a\u2028-A FORWARD -j DROP" -j ACCEPT\nCOMMIT\n'
    table = parse_save(text, "filter")
    assert table is not None and len(table.rules("FORWARD")) == 1
