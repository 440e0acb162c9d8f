"""Removal records of the nftables network backend, and the names of what they hold.

Everything the backend makes lives in one table per family, ``virtfw_network``; a
record names rules in it by (family, chain, kernel handle), and the backend composes
the delete commands itself, so a record can remove nothing but virtfw's own rules.
The table handles are kept too: a table re-created since (a flush, another reload)
has new handles, and what a record names is then gone already. JSON (the shape the
untyped records had, unchanged)::

    network:  {"backend": "nftables", "tables": {FAM: HANDLE}, "batch": [DELETE RULE...],
               "rules": {"HANDLE": RULE TEXT}}
    pending:  {"backend": "nftables", "rebuild": true}
    base:     {"backend": "nftables", "tables": {FAM: HANDLE or null}, "batch": [DELETE TABLE...],
               "any_handle": true (only while the handles are unknown)}
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from virtfw.rules import records

TABLE = "virtfw_network"
FAMILIES = ("ip", "ip6")
# The chains rules go to (netrules.Chain -> nft chain lives in the backend).
RULE_CHAINS = ("guest_cross", "guest_input", "guest_output", "guest_nat")
BACKEND = "nftables"

_DELETE_RULE = re.compile(rf"delete rule ({'|'.join(FAMILIES)}) {TABLE} ({'|'.join(RULE_CHAINS)}) handle ([0-9]+)")
_DELETE_TABLE = re.compile(rf"delete table ({'|'.join(FAMILIES)}) {TABLE}")


def _family(data: object, where: str) -> str:
    family = records.text(data, where)
    if family not in FAMILIES:
        raise records.fail(where, f"{family!r} is not an nft family of virtfw's tables")
    return family


def _handles(data: object, where: str, missing_ok: bool) -> tuple[tuple[str, int | None], ...]:
    found: list[tuple[str, int | None]] = []
    for family, handle in records.obj(data, where).items():
        _family(family, f"{where}.{family}")
        if handle is None and missing_ok:
            found.append((family, None))
        else:
            found.append((family, records.integer(handle, f"{where}.{family}")))
    return tuple(found)


@dataclass(frozen=True)
class NftRule:
    """One rule a network added: in ``virtfw_network`` of FAMILY, chain CHAIN, handle N."""

    family: str
    chain: str
    handle: int
    text: str  # as rendered, for verify's messages
    digest: str | None = None  # of the rule as nft echoed it at install (``rule_digest``)

    @property
    def delete(self) -> str:
        return f"delete rule {self.family} {TABLE} {self.chain} handle {self.handle}"

    @property
    def key(self) -> str:
        """Its key in a record's texts and digests: the ip and ip6 tables number handles alike."""
        return f"{self.family} {self.handle}"


@dataclass(frozen=True)
class NftNetworkRecord:
    """The rules one network added, and the handles of the tables they are in."""

    tables: tuple[tuple[str, int | None], ...]
    rules: tuple[NftRule, ...]

    def to_json(self) -> dict:
        data: dict = {"backend": BACKEND, "tables": dict(self.tables), "batch": [rule.delete for rule in self.rules]}
        if self.rules:
            data["rules"] = {rule.key: rule.text for rule in self.rules}
            digests = {rule.key: rule.digest for rule in self.rules if rule.digest}
            if digests:
                data["digests"] = digests
        return data

    @classmethod
    def from_json(cls, data: object, where: str) -> NftNetworkRecord:
        fields = records.obj(data, where, {"backend", "tables", "batch", "rules", "digests"})
        texts = records.mapping(fields.get("rules", {}), f"{where}.rules", records.text)
        digests = records.mapping(fields.get("digests", {}), f"{where}.digests", records.text)
        deletions = []
        for index, line in enumerate(records.texts(fields.get("batch", []), f"{where}.batch")):
            match = _DELETE_RULE.fullmatch(line)
            if match is None:
                raise records.fail(f"{where}.batch[{index}]", "not a deletion of a rule in virtfw's table")
            deletions.append(match.groups())
        # Older records keyed texts and digests by the handle alone, which the ip and ip6
        # tables both number from 1: such a key is used only where one family has that handle.
        handles = [handle for _, _, handle in deletions]
        rules = []
        for family, chain, handle in deletions:
            key = f"{family} {handle}"
            legacy = handle if handles.count(handle) == 1 else key
            text = texts.get(key, texts.get(legacy, f"handle {handle}"))
            rules.append(NftRule(family, chain, int(handle), text, digests.get(key, digests.get(legacy))))
        return cls(_handles(fields.get("tables", {}), f"{where}.tables", missing_ok=True), tuple(rules))


@dataclass(frozen=True)
class NftPendingRecord:
    """Written before nft has run: the rules' handles are not known yet. A network
    killed in that window is cleaned up by rebuilding the tables from the others."""

    def to_json(self) -> dict:
        return {"backend": BACKEND, "rebuild": True}


@dataclass(frozen=True)
class NftNetworkBase:
    """The ``virtfw_network`` tables an install created (with their forward and
    postrouting chains), by family. ``handles_known`` is False for the intent written
    before nft ran: then a removal deletes our tables whatever their handle."""

    tables: tuple[tuple[str, int | None], ...]
    handles_known: bool = True

    def to_json(self) -> dict:
        data: dict = {
            "backend": BACKEND,
            "tables": dict(self.tables),
            "batch": [f"delete table {family} {TABLE}" for family, _ in self.tables],
        }
        if not self.handles_known:
            data["any_handle"] = True
        return data

    @classmethod
    def from_json(cls, data: object, where: str) -> NftNetworkBase:
        fields = records.obj(data, where, {"backend", "tables", "batch", "any_handle"})
        tables = _handles(fields.get("tables", {}), f"{where}.tables", missing_ok=True)
        for index, line in enumerate(records.texts(fields.get("batch", []), f"{where}.batch")):
            if not _DELETE_TABLE.fullmatch(line):
                raise records.fail(f"{where}.batch[{index}]", "not a deletion of virtfw's table")
        return cls(tables, not records.flag(fields.get("any_handle", False), f"{where}.any_handle"))

    def merged(self, other: NftNetworkBase) -> NftNetworkBase:
        """Both records' tables (the later handle wins); handles known only if both knew."""
        return NftNetworkBase(
            tuple({**dict(self.tables), **dict(other.tables)}.items()), self.handles_known and other.handles_known
        )


NftRecord = NftNetworkRecord | NftPendingRecord


def load_record(data: object, where: str) -> NftRecord:
    fields = records.obj(data, where)
    if fields.get("rebuild") is True:
        records.obj(data, where, {"backend", "rebuild"})
        return NftPendingRecord()
    return NftNetworkRecord.from_json(data, where)
