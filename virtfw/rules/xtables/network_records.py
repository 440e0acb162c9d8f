"""Removal records of the iptables network backend, and the chains they may name.

virtfw's network rules live in its own ``VIRTFW_*`` chains, hooked into the builtin
chains by one jump each. A record holds, per address family and table, the removal
lines an ``*-restore`` batch runs: ``-D CHAIN SPEC`` (a rule of ours, or the hook jump
``-D BUILTIN -j VIRTFW_...``), ``-F``/``-X`` of our chains; plus what the nf_tables
tools made appear (:class:`~virtfw.rules.xtables.appeared.Appeared`). ``from_json``
accepts no other line, so a record can remove nothing but virtfw's own objects.
JSON (the shape the untyped records had, unchanged)::

    {"backend": "iptables", "ipv4": {TABLE: [LINE, ...], "appeared": {...}}, "ipv6": {...}}
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from virtfw.rules import records
from virtfw.rules.netrules import Chain, Family
from virtfw.rules.xtables.appeared import Appeared

BACKEND = "iptables"
NETWORK_TABLES = ("filter", "nat", "mangle")  # the tables our chains are in

CHAINS: dict[Chain, tuple[str, str]] = {
    Chain.HOST_IN: ("filter", "VIRTFW_INP"),
    Chain.HOST_OUT: ("filter", "VIRTFW_OUT"),
    Chain.FWD_CROSS: ("filter", "VIRTFW_FWX"),
    Chain.FWD_IN: ("filter", "VIRTFW_FWI"),
    Chain.FWD_OUT: ("filter", "VIRTFW_FWO"),
    Chain.NAT_POST: ("nat", "VIRTFW_PRT"),
    Chain.MANGLE_POST: ("mangle", "VIRTFW_PRT"),
}

# (table, builtin parent, our chain) in libvirt's order: each is inserted at the top
# of its parent, so FORWARD ends up FWX, FWI, FWO.
HOOKS = (
    ("filter", "INPUT", "VIRTFW_INP"),
    ("filter", "OUTPUT", "VIRTFW_OUT"),
    ("filter", "FORWARD", "VIRTFW_FWO"),
    ("filter", "FORWARD", "VIRTFW_FWI"),
    ("filter", "FORWARD", "VIRTFW_FWX"),
    ("nat", "POSTROUTING", "VIRTFW_PRT"),
    ("mangle", "POSTROUTING", "VIRTFW_PRT"),
)

_OWN = set(CHAINS.values())
_HOOKED = {(table, parent, chain) for table, parent, chain in HOOKS}
_UNSAFE = re.compile(r"[\n\r\0]")  # a removal line is one line of a restore batch
_ORDER = {"-D": 0, "-F": 1, "-X": 2}  # hook jumps go before the flush and delete of their chains
# Words that would make a rule specification a second command, or move it to another table.
_COMMAND_WORDS = frozenset((
    "-A", "--append", "-C", "--check", "-D", "--delete", "-I", "--insert", "-R", "--replace", "-L", "--list",
    "-S", "--list-rules", "-F", "--flush", "-Z", "--zero", "-N", "--new-chain", "-X", "--delete-chain",
    "-P", "--policy", "-E", "--rename-chain", "-t", "--table",
))  # fmt: skip


@dataclass(frozen=True)
class RemovalLine:
    """One line of a removal batch: ``VERB CHAIN [SPEC]`` in TABLE."""

    verb: str  # -D | -F | -X
    chain: str
    spec: str = ""  # the rule after ``-D CHAIN``

    @property
    def line(self) -> str:
        return f"{self.verb} {self.chain} {self.spec}" if self.spec else f"{self.verb} {self.chain}"

    @classmethod
    def parse(cls, line: str, table: str, where: str) -> RemovalLine:
        verb, _, rest = line.partition(" ")
        chain, _, spec = rest.partition(" ")
        removal = cls(verb, chain, spec)
        if _UNSAFE.search(line) or removal.line != line or " ".join(spec.split()) != spec:
            raise records.fail(where, "not one removal line")
        if verb in ("-F", "-X") and not spec and (table, chain) in _OWN:
            return removal
        if verb == "-D" and spec and (table, chain) in _OWN and _COMMAND_WORDS.isdisjoint(spec.split(" ")):
            return removal
        if verb == "-D" and spec.startswith("-j ") and (table, chain, spec[3:]) in _HOOKED:
            return removal
        raise records.fail(where, f"{line!r} does not remove one of virtfw's network rules or chains")


@dataclass(frozen=True)
class FamilyRemoval:
    """One address family's part: removal lines per table (in the tables recorded),
    and what the nf_tables tools made appear for us."""

    tables: tuple[tuple[str, tuple[RemovalLine, ...]], ...] = ()
    appeared: Appeared | None = None

    def __bool__(self) -> bool:
        return bool(self.tables or self.appeared)

    def blocks(self) -> dict[str, list[str]]:
        return {table: [removal.line for removal in lines] for table, lines in self.tables}

    def lines(self) -> list[tuple[str, RemovalLine]]:
        return [(table, removal) for table, lines in self.tables for removal in lines]

    def to_json(self) -> dict:
        data: dict = self.blocks()
        if self.appeared is not None:
            data["appeared"] = self.appeared.to_json()
        return data

    @classmethod
    def from_json(cls, data: object, where: str) -> FamilyRemoval:
        fields = records.obj(data, where, {*NETWORK_TABLES, "appeared"})
        tables = tuple(
            (
                table,
                tuple(
                    RemovalLine.parse(line, table, f"{where}.{table}[{i}]")
                    for i, line in enumerate(records.texts(value, f"{where}.{table}"))
                ),
            )
            for table, value in fields.items()
            if table != "appeared"
        )
        appeared = Appeared.from_json(fields["appeared"], f"{where}.appeared") if "appeared" in fields else None
        return cls(tables, appeared)

    def merged(self, other: FamilyRemoval) -> FamilyRemoval:
        """Every table's lines of both, each once, hook jumps first; the earlier record's
        ``appeared`` (it knows what was there before either)."""
        tables = []
        for table in NETWORK_TABLES:
            lines = list(dict.fromkeys(dict(self.tables).get(table, ()) + dict(other.tables).get(table, ())))
            tables.append((table, tuple(sorted(lines, key=lambda removal: _ORDER[removal.verb]))))
        return FamilyRemoval(tuple(tables), self.appeared if self.appeared is not None else other.appeared)


@dataclass(frozen=True)
class IptablesRecord:
    """A network's rules, or the base chains and hooks, in both address families."""

    ipv4: FamilyRemoval = FamilyRemoval()
    ipv6: FamilyRemoval = FamilyRemoval()

    def family(self, family: Family) -> FamilyRemoval:
        return self.ipv4 if family is Family.IPV4 else self.ipv6

    def to_json(self) -> dict:
        return {"backend": BACKEND, Family.IPV4.value: self.ipv4.to_json(), Family.IPV6.value: self.ipv6.to_json()}

    @classmethod
    def from_json(cls, data: object, where: str) -> IptablesRecord:
        fields = records.obj(data, where, {"backend", Family.IPV4.value, Family.IPV6.value})
        return cls(
            *(
                FamilyRemoval.from_json(fields.get(f.value, {}), f"{where}.{f.value}")
                for f in (Family.IPV4, Family.IPV6)
            )
        )

    def merged(self, other: IptablesRecord) -> IptablesRecord:
        return IptablesRecord(self.ipv4.merged(other.ipv4), self.ipv6.merged(other.ipv6))
