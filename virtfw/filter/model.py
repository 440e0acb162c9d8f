"""The nwfilter model: filters, their rules and references, and bindings.

Attribute values are kept as libvirt formats them (``Literal``) or as references to
variables (``VarRef``); ``filter.schema`` turns either into the typed values of
``virtfw.rules.portrules`` once variables are known.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class VarRef:
    """``$NAME``, ``$NAME[2]`` (one element) or ``$NAME[@1]`` (iterator 1)."""

    name: str
    index: int | None = None
    iterator: int | None = None

    def __str__(self) -> str:
        if self.index is not None:
            return f"${self.name}[{self.index}]"
        if self.iterator is not None:
            return f"${self.name}[@{self.iterator}]"
        return f"${self.name}"


AttrValue = str | VarRef  # str: a literal, already validated, in libvirt's output form


@dataclass
class ProtocolMatch:
    """A rule's protocol element: ``<tcp srcipaddr='$IP' dstportstart='22'/>``."""

    protocol: str  # element name: "mac", "tcp", "tcp-ipv6", "all", ...
    attrs: dict[str, AttrValue] = field(default_factory=dict)  # in libvirt's table order
    negate: bool = False  # match='no'
    # match='no' on only some attributes: libvirt merges several same-named elements of
    # one rule attribute by attribute, each keeping its own negation. When that leaves
    # a mix, ``negate`` is False and these are the negated ones (empty otherwise).
    negated_attrs: frozenset[str] = frozenset()

    def is_negated(self, attr: str) -> bool:
        """Whether ``attr`` is matched with '!': ``negate`` covers all, else the mix."""
        return attr in self.attrs and (self.negate or attr in self.negated_attrs)


@dataclass
class FilterRule:
    action: str  # accept | drop | reject | return | continue
    direction: str  # in | out | inout
    priority: int = 500
    statematch: bool = True
    match: ProtocolMatch | None = None


@dataclass
class FilterRef:
    """``<filterref filter='NAME'>`` with its ``<parameter>``s (a name may repeat: a list)."""

    filter: str
    params: dict[str, list[str]] = field(default_factory=dict)


Entry = FilterRule | FilterRef


@dataclass
class Filter:
    name: str
    uuid: str
    chain: str = "root"  # root, mac, vlan, stp, arp, rarp, ipv4, ipv6, or TYPE-suffix
    priority: int = 0  # the chain priority (defaulted from the chain type when absent)
    priority_given: bool = False  # whether the XML said priority= (formatting shows priority when not 0 either way)
    uuid_generated: bool = False
    entries: list[Entry] = field(default_factory=list)

    def references(self) -> list[str]:
        return [entry.filter for entry in self.entries if isinstance(entry, FilterRef)]


@dataclass
class Binding:
    """``<filterbinding>``: a filter tree attached to one guest port."""

    portdev: str
    mac: str  # the guest's MAC address, canonical form
    filter: str
    params: dict[str, list[str]] = field(default_factory=dict)
    owner: str | None = None  # <owner><name>/<uuid> of the guest, when given
    owner_uuid: str | None = None
    linkdev: str | None = None  # <linkdev name=> for macvtap-style ports
