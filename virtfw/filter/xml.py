"""libvirt ``<filter>`` and ``<filterbinding>`` XML to and from the model.

Formatting writes exactly what libvirt 11.3.0 writes for the same definition (single
quoted attributes, two-space indentation, priorities and defaults spelled out), so
``nwfilter-dumpxml`` output can be compared with libvirt's byte for byte.

Parsing follows libvirt's reading of a filter, including its quirks that change what a
rule matches (several protocol elements of one rule merge attribute by attribute; masks,
range ends and later ports take their negation from the address, start or first port).
Where libvirt silently drops or ignores something, virtfw refuses with one line naming
the file, the line, the element, the attribute, the value and why: unknown elements and
attributes, out-of-range values, protocol elements of a second kind in one rule, invalid
parameters, and a ``match='no'`` libvirt would silently undo.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from lxml import etree

from virtfw import xmlsafe
from virtfw.errors import VirtfwError
from virtfw.filter import schema
from virtfw.filter.model import (
    AttrValue,
    Binding,
    Entry,
    Filter,
    FilterRef,
    FilterRule,
    ProtocolMatch,
    VarRef,
)
from virtfw.names import check_ifname, check_mac, check_object_name
from virtfw.xmlsafe import Reader

T = TypeVar("T")

ACTIONS = ("drop", "accept", "reject", "return", "continue")
DIRECTIONS = ("in", "out", "inout")
DEFAULT_RULE_PRIORITY = 500
_TRUE_WORDS = ("true", "1")
_FALSE_WORDS = ("false", "0")
_INTEGER = re.compile(r"[-+]?[0-9]+")


class _Located(Reader):
    """xmlsafe.Reader whose messages also give the line: filters are long documents."""

    def fail(self, why: str) -> VirtfwError:
        line = self.element.sourceline
        where = f"line {line}: " if line else ""
        return VirtfwError(f"{self.origin}: {where}<{self.element.tag}>: {why}")

    def unknown_child(self, child: etree._Element) -> VirtfwError:
        return _Located(self.origin, child).fail(f"unknown element in <{self.element.tag}>")

    def checked(self, check: Callable[..., T], *args: object) -> T:
        """Run a virtfw.names-style check, putting this location in its message."""
        try:
            return check(*args)
        except VirtfwError as exc:
            raise self.fail(str(exc)) from None


# ---------------------------------------------------------------------------------
# <filter>
# ---------------------------------------------------------------------------------


def parse_filter(text: str | bytes, origin: str = "filter XML") -> Filter:
    root = xmlsafe.parse(text, origin)
    if root.tag != "filter":
        raise VirtfwError(f"{origin}: root element must be <filter>, not <{root.tag}>")
    top = _Located(origin, root)
    top.check_known(("name", "chain", "priority"), ("uuid", "rule", "filterref"))
    name = top.checked(check_object_name, top.require("name"), "filter name")
    chain_given = root.get("chain")
    chain = chain_given if chain_given is not None else "root"
    kind = top.checked(schema.chain_type, chain)
    priority_text = root.get("priority")
    priority = schema.DEFAULT_CHAIN_PRIORITY.get(kind, 0)
    if priority_text is not None:
        given = _integer(top, "priority", priority_text, schema.MIN_PRIORITY, schema.MAX_PRIORITY)
        # libvirt applies priority= only together with chain=; alone it is ignored
        priority = given if chain_given is not None else 0
    uuid, generated = _filter_uuid(origin, root)
    entries: list[Entry] = []
    for child in root:
        if child.tag == "rule":
            entries.append(_rule(origin, child))
        elif child.tag == "filterref":
            entries.append(_filterref(origin, child))
    return Filter(
        name=name,
        uuid=uuid,
        chain=chain,
        priority=priority,
        priority_given=priority_text is not None,
        uuid_generated=generated,
        entries=entries,
    )


def _integer(where: _Located, attr: str, text: str, low: int, high: int) -> int:
    stripped = text.strip()
    if not _INTEGER.fullmatch(stripped):
        raise where.fail(f"attribute '{attr}': '{schema.show_value(text)}' is not an integer")
    number = int(stripped, 10)
    if not low <= number <= high:
        raise where.fail(f"attribute '{attr}': {number} is outside {low}..{high}")
    return number


def _new_uuid() -> str:
    import uuid  # only for filters without one: the module costs start-up time

    return str(uuid.uuid4())


def _filter_uuid(origin: str, root: etree._Element) -> tuple[str, bool]:
    """The filter's UUID, or a new one (and True) when absent or empty, as libvirt does."""
    elements = root.findall("uuid")
    if len(elements) > 1:
        raise _Located(origin, elements[1]).fail("only one <uuid> is allowed")
    if not elements:
        return _new_uuid(), True
    where = _Located(origin, elements[0])
    where.check_known(())
    text = (elements[0].text or "").strip()
    if not text:
        return _new_uuid(), True
    return _uuid(where, text), False


def _uuid(where: _Located, text: str) -> str:
    digits = text.replace("-", "")
    if len(digits) != 32 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise where.fail(f"'{schema.show_value(text)}' is not a UUID")
    digits = digits.lower()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def _rule(origin: str, element: etree._Element) -> FilterRule:
    where = _Located(origin, element)
    where.check_known(("action", "direction", "priority", "statematch"), schema.PROTOCOLS)
    action = _choice(where, "action", ACTIONS)
    direction = _choice(where, "direction", DIRECTIONS)
    priority = DEFAULT_RULE_PRIORITY
    if element.get("priority") is not None:
        priority = _integer(where, "priority", element.get("priority"), schema.MIN_PRIORITY, schema.MAX_PRIORITY)
    return FilterRule(
        action=action,
        direction=direction,
        priority=priority,
        statematch=_statematch(where, element.get("statematch")),
        match=_protocol_match(origin, element),
    )


def _choice(where: _Located, attr: str, allowed: tuple[str, ...]) -> str:
    value = where.require(attr)
    if value not in allowed:
        raise where.fail(f"attribute '{attr}': '{schema.show_value(value)}' must be one of {', '.join(allowed)}")
    return value


def _statematch(where: _Located, text: str | None) -> bool:
    """libvirt turns state matching off for '0' and 'false' and reads any other word as on;
    virtfw takes only true/false/1/0 so that 'no' cannot silently mean 'on'."""
    if text is None:
        return True
    word = text.strip().lower()
    if word in _FALSE_WORDS:
        return False
    if word in _TRUE_WORDS:
        return True
    raise where.fail(f"attribute 'statematch': '{schema.show_value(text)}' must be true or false (or 1 or 0)")


def _protocol_match(origin: str, rule: etree._Element) -> ProtocolMatch | None:
    """Merge the rule's protocol elements the way libvirt does.

    A rule may repeat its protocol element; attributes accumulate, a later value
    replacing an earlier one, and each keeps the match='no' of the element it came from.
    """
    elements = list(rule)
    if not elements:
        return None
    protocol = elements[0].tag
    values: dict[str, tuple[AttrValue, bool]] = {}
    for element in elements:
        where = _Located(origin, element)
        if element.tag != protocol:
            raise where.fail(f"a rule takes one kind of protocol element; this one already has <{protocol}>")
        where.check_known(("match", *schema.attribute_order(protocol)))
        match = element.get("match")
        if match is not None and match not in ("yes", "no"):
            raise where.fail(f"attribute 'match': '{schema.show_value(match)}' must be yes or no")
        for attr, raw in element.attrib.items():
            if attr != "match":
                values[attr] = (_attr_value(where, protocol, attr, raw), match == "no")
    where = _Located(origin, elements[0])
    _default_ipset_flags(where, protocol, values)
    negated = _settle_negation(where, protocol, values)
    _check_ports(where, protocol, values)
    order = schema.attribute_order(protocol)
    attrs = {attr: values[attr][0] for attr in order if attr in values}
    negated &= set(attrs)
    if negated and negated == set(attrs):
        return ProtocolMatch(protocol, attrs, negate=True)
    return ProtocolMatch(protocol, attrs, negate=False, negated_attrs=frozenset(negated))


def _attr_value(where: _Located, protocol: str, attr: str, raw: str) -> AttrValue:
    """A VarRef for '$...' (every datatype takes variables, as in libvirt), else the
    literal checked and turned into the text libvirt prints for it."""
    if raw.startswith("$"):
        try:
            return schema.parse_variable(raw)
        except VirtfwError as exc:
            raise where.fail(f"attribute '{attr}': {exc}") from None
    try:
        return schema.datatype(protocol, attr).parse(raw).text
    except schema.BadValue as exc:
        raise where.fail(f"attribute '{attr}': '{schema.show_value(raw)}' {exc}") from None


def _settle_negation(where: _Located, protocol: str, values: dict[str, tuple[AttrValue, bool]]) -> set[str]:
    """Apply libvirt's negation inheritance; refuse when it would drop a match='no'.

    libvirt gives a mask the negation of its address, a range end that of its start and
    the later ports that of srcportstart. A negated dstportstart without a negated
    srcportstart thus silently matches the opposite in libvirt; virtfw refuses that.
    """
    negated = {attr for attr, (_, neg) in values.items() if neg}
    for attr, source in schema.NEGATION_SOURCE[protocol].items():
        if attr not in values:
            continue
        inherited = source in negated
        if attr in negated and not inherited:
            raise where.fail(
                f"match='no' on '{attr}' needs '{source}' negated too: libvirt takes the "
                f"negation of '{attr}' from '{source}' and would match the opposite"
            )
        if inherited:
            negated.add(attr)
    return negated


def _default_ipset_flags(where: _Located, protocol: str, values: dict[str, tuple[AttrValue, bool]]) -> None:
    if "ipsetflags" in values and "ipset" not in values:
        raise where.fail("attribute 'ipsetflags' needs 'ipset'")
    if protocol in schema.IPSET_DEFAULT_FLAGS and "ipset" in values and "ipsetflags" not in values:
        # libvirt's default. It negates the set match through 'ipset' alone; giving the
        # added flags the same negation keeps <tcp match='no' ipset='x'/> one negated match.
        values["ipsetflags"] = ("src", values["ipset"][1])


def _check_ports(where: _Located, protocol: str, values: dict[str, tuple[AttrValue, bool]]) -> None:
    """<ip>/<ipv6> with ports must name a port protocol, literally (as libvirt checks)."""
    if protocol not in ("ip", "ipv6") or not any(a in values for a in schema.PORT_ATTRIBUTES):
        return
    given = values.get("protocol", (None, False))[0]
    if isinstance(given, str) and schema.typed_value(protocol, "protocol", given) in schema.PORT_PROTOCOLS:
        return
    what = "a variable" if isinstance(given, VarRef) else (f"'{given}'" if given else "missing")
    raise where.fail(f"ports need attribute 'protocol' to be tcp, udp, sctp or 33 (dccp); it is {what}")


def _filterref(origin: str, element: etree._Element) -> FilterRef:
    where = _Located(origin, element)
    where.check_known(("filter",), ("parameter",))
    name = where.checked(check_object_name, where.require("filter"), "filterref filter")
    return FilterRef(filter=name, params=_parameters(origin, element))


def _parameters(origin: str, element: etree._Element) -> dict[str, list[str]]:
    """``<parameter name= value=>`` children; a repeated name makes a list, in order."""
    params: dict[str, list[str]] = {}
    for child in element:
        where = _Located(origin, child)
        where.check_known(("name", "value"))
        name = child.get("name")
        value = child.get("value")
        if name is None or value is None:
            raise where.fail("attributes 'name' and 'value' are required")
        where.checked(schema.check_param_name, name)
        where.checked(schema.check_param_value, name, value)
        values = params.setdefault(name, [])
        if len(values) == schema.MAX_VALUES:
            raise where.fail(
                f"parameter '{name}' has more than {schema.MAX_VALUES} values, the most one variable may hold"
            )
        values.append(value)
    return params


def format_filter(flt: Filter) -> str:
    """libvirt's formatting: priority shown when not 0, every rule with its priority."""
    head = f"<filter name='{_escape(flt.name)}' chain='{_escape(flt.chain)}'"
    if flt.priority != 0:
        head += f" priority='{flt.priority}'"
    lines = [head + ">", f"  <uuid>{flt.uuid}</uuid>"]
    for entry in flt.entries:
        if isinstance(entry, FilterRule):
            lines += _format_rule(entry)
        else:
            lines += _format_filterref(entry.filter, entry.params, "  ")
    lines.append("</filter>")
    return "\n".join(lines) + "\n"


def _format_rule(rule: FilterRule) -> list[str]:
    head = f"  <rule action='{rule.action}' direction='{rule.direction}' priority='{rule.priority}'"
    if not rule.statematch:
        head += " statematch='false'"
    if rule.match is None:
        return [head + "/>"]
    return [head + ">", *("    " + line for line in _format_match(rule.match)), "  </rule>"]


def _format_match(match: ProtocolMatch) -> list[str]:
    """One element for the plain attributes, then one with match='no' for the negated
    ones (libvirt's order), or a bare element when there are no attributes."""
    plain = [(a, v) for a, v in match.attrs.items() if not match.is_negated(a)]
    negated = [(a, v) for a, v in match.attrs.items() if match.is_negated(a)]
    lines = []
    if plain or not negated:
        lines.append(f"<{match.protocol}{_format_attrs(plain)}/>")
    if negated:
        lines.append(f"<{match.protocol} match='no'{_format_attrs(negated)}/>")
    return lines


def _format_attrs(pairs: list[tuple[str, AttrValue]]) -> str:
    return "".join(f" {attr}='{_escape(str(value))}'" for attr, value in pairs)


def _format_filterref(name: str, params: dict[str, list[str]], indent: str) -> list[str]:
    """Parameters sorted by name, each name's values in their order, as libvirt does."""
    head = f"{indent}<filterref filter='{_escape(name)}'"
    if not params:
        return [head + "/>"]
    lines = [head + ">"]
    for key in sorted(params):
        for value in params[key]:
            lines.append(f"{indent}  <parameter name='{_escape(key)}' value='{_escape(value)}'/>")
    lines.append(f"{indent}</filterref>")
    return lines


_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "'": "&apos;", '"': "&quot;"}


def _escape(text: str) -> str:
    """Attribute text escaped the way libvirt's XML writer does it."""
    return "".join(_ESCAPES.get(c, c) for c in text)


# ---------------------------------------------------------------------------------
# <filterbinding>
# ---------------------------------------------------------------------------------


def parse_binding(text: str | bytes, origin: str = "binding XML") -> Binding:
    root = xmlsafe.parse(text, origin)
    if root.tag != "filterbinding":
        raise VirtfwError(f"{origin}: root element must be <filterbinding>, not <{root.tag}>")
    top = _Located(origin, root)
    top.check_known((), ("owner", "portdev", "linkdev", "mac", "filterref"))
    for tag in ("owner", "portdev", "linkdev", "mac", "filterref"):
        found = root.findall(tag)
        if len(found) > 1:
            raise _Located(origin, found[1]).fail(f"only one <{tag}> is allowed")
    portdev = _device(origin, root, "portdev")
    mac_el = _single(origin, root, "mac")
    mac_where = _Located(origin, mac_el)
    mac_where.check_known(("address",))
    ref_el = _single(origin, root, "filterref")
    ref_where = _Located(origin, ref_el)
    ref_where.check_known(("filter",), ("parameter",))
    binding = Binding(
        portdev=portdev,
        mac=mac_where.checked(check_mac, mac_where.require("address"), "<mac address>"),
        filter=ref_where.checked(check_object_name, ref_where.require("filter"), "filterref filter"),
        params=_parameters(origin, ref_el),
        linkdev=_optional_device(origin, root, "linkdev"),
    )
    owner = root.find("owner")
    if owner is not None:
        binding.owner, binding.owner_uuid = _owner(origin, owner)
    return binding


def _single(origin: str, root: etree._Element, tag: str) -> etree._Element:
    element = root.find(tag)
    if element is None:
        raise VirtfwError(f"{origin}: <{root.tag}> needs a <{tag}> element")
    return element


def _optional_device(origin: str, root: etree._Element, tag: str) -> str | None:
    return None if root.find(tag) is None else _device(origin, root, tag)


def _device(origin: str, root: etree._Element, tag: str) -> str:
    where = _Located(origin, _single(origin, root, tag))
    where.check_known(("name",))
    return where.checked(check_ifname, where.require("name"), f"<{tag} name>")


def _owner(origin: str, owner: etree._Element) -> tuple[str, str | None]:
    where = _Located(origin, owner)
    where.check_known((), ("name", "uuid"))
    for tag in ("name", "uuid"):
        extras = owner.findall(tag)[1:]
        if extras:
            raise _Located(origin, extras[0]).fail(f"only one <{tag}> is allowed")
    name_el = owner.find("name")
    if name_el is None or not (name_el.text or "").strip():
        raise where.fail("<name> is required")
    _Located(origin, name_el).check_known(())
    name = _Located(origin, name_el).checked(check_object_name, name_el.text.strip(), "owner name")
    uuid_el = owner.find("uuid")
    if uuid_el is None:
        return name, None
    _Located(origin, uuid_el).check_known(())
    return name, _uuid(_Located(origin, uuid_el), (uuid_el.text or "").strip())


def format_binding(binding: Binding) -> str:
    lines = ["<filterbinding>"]
    if binding.owner is not None:
        lines += ["  <owner>", f"    <name>{_escape(binding.owner)}</name>"]
        if binding.owner_uuid:
            lines.append(f"    <uuid>{binding.owner_uuid}</uuid>")
        lines.append("  </owner>")
    lines.append(f"  <portdev name='{_escape(binding.portdev)}'/>")
    if binding.linkdev:
        lines.append(f"  <linkdev name='{_escape(binding.linkdev)}'/>")
    lines.append(f"  <mac address='{binding.mac}'/>")
    lines += _format_filterref(binding.filter, binding.params, "  ")
    lines.append("</filterbinding>")
    return "\n".join(lines) + "\n"
