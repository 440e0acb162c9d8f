"""The nftables network backend's records: what it added, so that exactly that can go again.

Every object is virtfw's own: the table ``virtfw_network`` of family ``ip`` or ``ip6``,
and rules in its four guest chains. A record stores that structure (family, chain,
handle), never command text; the backend composes the ``delete`` commands, so a record
read back from a status file can only ever remove virtfw's own objects.

Kernel handles identify a table for as long as it lives: a table re-created since
(a flush, a rebuild) has new handles, and the rules recorded for the old one are gone.

JSON, as status files hold it (``backend`` is always ``"nftables"``):

* :class:`NftRules` ``{"tables": {FAM: HANDLE}, "rules": [[FAM, CHAIN, HANDLE, TEXT]...]}``
* :class:`NftIntent` ``{"rebuild": true}``
* :class:`NftBase` ``{"tables": {FAM: HANDLE or null}, "handles_unknown": BOOL}``

Records of the previous version (``"batch"`` command lines, ``"any_handle"``) still load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from virtfw.rules import records

BACKEND = "nftables"
TABLE = "virtfw_network"
NFT_FAMILIES = ("ip", "ip6")
# The chains network rules go in (the base's forward chain holds only our jumps).
RULE_CHAINS = ("guest_cross", "guest_input", "guest_output", "guest_nat")

_OLD_DELETE_RULE = re.compile(rf"delete rule (\S+) {TABLE} (\S+) handle (\d+)")
_OLD_DELETE_TABLE = re.compile(rf"delete table (\S+) {TABLE}")


@dataclass(frozen=True)
class NftRule:
    """One rule a network added; ``text`` is what it matched, for verify's messages only."""

    family: str
    chain: str
    handle: int
    text: str

    def delete_command(self) -> str:
        return f"delete rule {self.family} {TABLE} {self.chain} handle {self.handle}"

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.family, self.chain, self.handle)


@dataclass(frozen=True)
class NftRules:
    """The rules one network added, and the handles of the tables they went into."""

    tables: dict[str, int | None] = field(default_factory=dict)
    rules: tuple[NftRule, ...] = ()

    def to_json(self) -> dict:
        return {
            "backend": BACKEND,
            "tables": dict(self.tables),
            "rules": [[r.family, r.chain, r.handle, r.text] for r in self.rules],
        }

    @classmethod
    def from_json(cls, data: object, where: str) -> NftRules:
        fields = records.obj(data, where, {"backend", "tables", "rules", "batch"})
        _check_backend(fields, where)
        tables = _table_handles(fields.get("tables", {}), f"{where}.tables")
        if "batch" in fields:  # the previous version's shape
            return cls(tables, _old_rules(fields, where))
        return cls(tables, tuple(records.items(fields.get("rules", []), f"{where}.rules", _rule)))


@dataclass(frozen=True)
class NftIntent:
    """A network's rules as known before nft ran (their handles come back from the
    batch): a process killed then leaves this, and the network's rules are removed by
    rebuilding our tables from the networks still active."""

    def to_json(self) -> dict:
        return {"backend": BACKEND, "rebuild": True}

    @classmethod
    def from_json(cls, data: object, where: str) -> NftIntent:
        fields = records.obj(data, where, {"backend", "rebuild"})
        _check_backend(fields, where)
        if fields.get("rebuild") is not True:
            raise records.fail(f"{where}.rebuild", "expected true")
        return cls()


NftRecord = NftRules | NftIntent


def load_record(data: object, where: str) -> NftRecord:
    """A network's record, of whichever kind the status file holds."""
    if isinstance(data, dict) and "rebuild" in data:
        return NftIntent.from_json(data, where)
    return NftRules.from_json(data, where)


@dataclass(frozen=True)
class NftBase:
    """Our tables that an install created, by family, with their handles.

    ``handles_unknown``: written before nft ran (or combined with such a record), so the
    tables are removed whatever their handles are: a killed start leaves no table behind.
    """

    tables: dict[str, int | None] = field(default_factory=dict)
    handles_unknown: bool = False

    def to_json(self) -> dict:
        return {"backend": BACKEND, "tables": dict(self.tables), "handles_unknown": self.handles_unknown}

    @classmethod
    def from_json(cls, data: object, where: str) -> NftBase:
        fields = records.obj(data, where, {"backend", "tables", "handles_unknown", "batch", "any_handle"})
        _check_backend(fields, where)
        tables = _table_handles(fields.get("tables", {}), f"{where}.tables")
        if "batch" in fields:  # the previous version's shape
            for i, line in enumerate(records.texts(fields["batch"], f"{where}.batch")):
                found = _OLD_DELETE_TABLE.fullmatch(line)
                if not found or found.group(1) not in tables:
                    raise records.fail(f"{where}.batch[{i}]", f"not the deletion of a recorded table: {line!r}")
            return cls(tables, records.flag(fields.get("any_handle", False), f"{where}.any_handle"))
        return cls(tables, records.flag(fields.get("handles_unknown", False), f"{where}.handles_unknown"))

    def merged(self, other: NftBase) -> NftBase:
        """Both records' tables (the later handle wins); unknown handles stay unknown."""
        return NftBase({**self.tables, **other.tables}, self.handles_unknown or other.handles_unknown)


def _check_backend(fields: dict[str, object], where: str) -> None:
    if fields.get("backend") != BACKEND:
        raise records.fail(f"{where}.backend", f"expected {BACKEND!r}")


def _family(data: object, where: str) -> str:
    family = records.text(data, where)
    if family not in NFT_FAMILIES:
        raise records.fail(where, f"not a family of ours: {family!r}")
    return family


def _handle(data: object, where: str) -> int:
    handle = records.integer(data, where)
    if handle < 0:
        raise records.fail(where, "expected a kernel handle")
    return handle


def _table_handles(data: object, where: str) -> dict[str, int | None]:
    def table_handle(value: object, at: str) -> int | None:
        return None if value is None else _handle(value, at)

    tables = records.mapping(data, where, table_handle)
    for family in tables:
        _family(family, f"{where}.{family}")
    return tables


def _chain(data: object, where: str) -> str:
    chain = records.text(data, where)
    if chain not in RULE_CHAINS:
        raise records.fail(where, f"not a chain of ours: {chain!r}")
    return chain


def _rule(data: object, where: str) -> NftRule:
    if not isinstance(data, list) or len(data) != 4:
        raise records.fail(where, "expected [family, chain, handle, text]")
    family, chain, handle, text = data
    return NftRule(
        _family(family, f"{where}[0]"),
        _chain(chain, f"{where}[1]"),
        _handle(handle, f"{where}[2]"),
        records.text(text, f"{where}[3]"),
    )


def _old_rules(fields: dict[str, object], where: str) -> tuple[NftRule, ...]:
    """``"batch": ["delete rule FAM virtfw_network CHAIN handle N"...]``, texts by handle."""
    texts = records.mapping(fields.get("rules", {}), f"{where}.rules", records.text)
    rules = []
    for i, line in enumerate(records.texts(fields["batch"], f"{where}.batch")):
        at = f"{where}.batch[{i}]"
        found = _OLD_DELETE_RULE.fullmatch(line)
        if not found:
            raise records.fail(at, f"not the deletion of one of our rules: {line!r}")
        family, chain, handle = _family(found.group(1), at), _chain(found.group(2), at), int(found.group(3))
        rules.append(NftRule(family, chain, handle, texts.get(str(handle), f"handle {handle}")))
    return tuple(rules)
