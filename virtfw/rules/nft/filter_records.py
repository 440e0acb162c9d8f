"""Removal records of the nftables filter backend, and the names of the objects they hold.

A port's record names its map entries and chains, and keeps each chain's rule texts:
``reuse`` installs those texts again verbatim, and ``remove`` composes the delete
commands from the names alone. Once the install's batch is in, each chain also has a
digest of its rules as the kernel holds them (``listing.chain_digest`` of the lines nft
prints for them): ``verify`` compares it with the kernel's, and a ``reload`` finding
every digest holding leaves the ruleset as it is. A record written before the batch
applied, or by a version without such digests, has none: ``verify`` then compares rule
counts, and ``reload`` installs it again. (Versions before the text listing kept digests
of nft's JSON under ``digests``: still read and checked, then dropped, since a listing
now cannot confirm them.) The base record names the two tables. JSON (the shape of the
untyped records, plus the optional ``listed``)::

    port: {"port": P, "elements": [[TABLE, VMAP, P, CHAIN], ...], "chains": [[TABLE, CHAIN], ...],
           "rules": {"TABLE CHAIN": N, ...}, "texts": {"TABLE CHAIN": [RULE, ...], ...},
           "listed": {"TABLE CHAIN": HEX16, ...}}   (every chain's, or the key is absent)
    base: {"tables": [TABLE, ...]}

``from_json`` accepts only virtfw's own tables, maps and the chains of the record's
port, and rule texts that cannot end their chain block: a record can name nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from virtfw.errors import VirtfwError
from virtfw.names import check_ifname
from virtfw.rules import records

ETHERNET = "virtfw_nwfilter_ethernet"
INET = "virtfw_nwfilter_inet"
# Hook priorities: layer 2 first (as ebtables before iptables); layer 3 after the bridge
# family's connection tracking (-200, nf_conntrack_bridge), or its ct matches see no state.
TABLES = {ETHERNET: -300, INET: -150}
# Each verdict map, and the direction of the port chains it dispatches to.
VMAPS = {"vmap-iif": "out", "vmap-oif": "in"}
DIGESTS = "listed"  # a port record's key for its chains' digests
_JSON_DIGESTS = "digests"  # the key of the digests of nft's JSON, which older versions kept

_SUBCHAIN = re.compile(r"[A-Za-z0-9_.:-]{1,12}")  # a filter chain name (filter/schema.py)
# A rule inside a chain block: no block or statement ends, no newline, except inside
# the one trailing comment the renderer may add (itself free of quotes).
_RULE = r'[^{};#"\n\r\0]*(?: comment "[^"\n\r\0]*")?'
_RULES = re.compile(f"{_RULE}(?:\0{_RULE})*")  # a chain's rules joined by NULs: one match per chain


def chain_names(port: str, direction: str) -> str:
    return f"n-{port}-{direction}"


@dataclass(frozen=True)
class MapElement:
    """One verdict-map entry: in TABLE's VMAP, the port jumps to CHAIN."""

    table: str
    vmap: str
    port: str
    chain: str

    def to_json(self) -> list[str]:
        return [self.table, self.vmap, self.port, self.chain]

    @classmethod
    def from_json(cls, data: object, where: str, port: str) -> MapElement:
        fields = records.texts(data, where)
        if len(fields) != 4:
            raise records.fail(where, "expected [table, map, port, chain]")
        element = cls(*fields)
        if element.table not in TABLES or element.vmap not in VMAPS or element.port != port:
            raise records.fail(where, "not a map entry of this port in virtfw's tables")
        if element.chain != chain_names(port, VMAPS[element.vmap]):
            raise records.fail(where, f"chain {element.chain!r} is not this port's")
        return element


@dataclass(frozen=True)
class PortChain:
    """One chain of a port as installed, with its rules in nft syntax."""

    table: str
    name: str
    rules: tuple[str, ...]
    digest: str | None = None  # of its rules as the kernel listed them after the install

    @property
    def key(self) -> str:
        """How the JSON names the chain in ``rules`` and ``texts``."""
        return f"{self.table} {self.name}"


@dataclass(frozen=True)
class NftPortRecord:
    """What one binding added: its map entries and its chains (roots first)."""

    port: str
    elements: tuple[MapElement, ...]
    chains: tuple[PortChain, ...]

    @staticmethod
    def elements_for(port: str, tables=TABLES) -> tuple[MapElement, ...]:
        """The entries of a port with chains in ``tables``; records written before they
        listed their entries had both tables'."""
        return tuple(
            MapElement(table, vmap, port, chain_names(port, direction))
            for table in tables
            for vmap, direction in VMAPS.items()
        )

    @property
    def content_known(self) -> bool:
        """Whether every chain has its digest (``verify`` compares what the rules say)."""
        return all(chain.digest is not None for chain in self.chains)

    def bare(self) -> NftPortRecord:
        """The record as known before its batch applied: without digests."""
        if all(chain.digest is None for chain in self.chains):
            return self
        return replace(self, chains=tuple(replace(chain, digest=None) for chain in self.chains))

    def to_json(self) -> dict:
        data = {
            "port": self.port,
            "elements": [element.to_json() for element in self.elements],
            "chains": [[chain.table, chain.name] for chain in self.chains],
            "rules": {chain.key: len(chain.rules) for chain in self.chains},
            "texts": {chain.key: list(chain.rules) for chain in self.chains},
        }
        if self.chains and self.content_known:
            data[DIGESTS] = {chain.key: chain.digest for chain in self.chains}
        return data

    @classmethod
    def from_json(cls, data: object, where: str) -> NftPortRecord:
        fields = records.obj(data, where, {"port", "elements", "chains", "rules", "texts", DIGESTS, _JSON_DIGESTS})
        for key in ("port", "chains", "rules", "texts"):
            if key not in fields:
                raise records.fail(where, f"{key!r} is missing")
        port = records.text(fields["port"], f"{where}.port")
        try:
            check_ifname(port, "port device")
        except VirtfwError as error:
            raise records.fail(f"{where}.port", str(error)) from None
        if "elements" in fields:
            elements = _elements(fields["elements"], f"{where}.elements", port)
        else:
            elements = cls.elements_for(port)
        counts = records.integers_by_key(fields["rules"], f"{where}.rules")
        texts = records.texts_by_key(fields["texts"], f"{where}.texts")
        kept = {}  # the older ones are checked as these are, then dropped
        for key in (_JSON_DIGESTS, DIGESTS):
            kept[key] = records.mapping(fields.get(key, {}), f"{where}.{key}", records.digest)
            if key in fields and not kept[key]:
                raise records.fail(f"{where}.{key}", "empty: a record without digests has no such key")
            for name in kept[key]:
                if name not in texts:
                    raise records.fail(where, f"rules of chain {name!r} that the record does not hold")
        digests = kept[DIGESTS]
        own = _PortChains(port)
        chains = []
        if not isinstance(fields["chains"], list):
            raise records.fail(f"{where}.chains", "expected an array")
        for index, pair in enumerate(fields["chains"]):
            if type(pair) is not list or len(pair) != 2 or not all(type(part) is str for part in pair):
                raise records.fail(f"{where}.chains[{index}]", "expected [table, chain]")
            table, name = pair
            if table not in TABLES:
                raise records.fail(f"{where}.chains[{index}]", f"table {table!r} is not virtfw's")
            if not own.holds(name):
                raise records.fail(f"{where}.chains[{index}]", f"chain {name!r} is not a chain of port {port}")
            key = f"{table} {name}"
            if key not in texts or counts.get(key) != len(texts[key]):
                raise records.fail(f"{where}.chains[{index}]", "its rules and their count are not recorded")
            if not _RULES.fullmatch("\0".join(texts[key])):
                bad = next(rule for rule in texts[key] if not _RULES.fullmatch(rule) or "\0" in rule)
                raise records.fail(f"{where}.texts.{key}", f"{bad!r} is not one rule")
            for digest_key, found in kept.items():
                if found and key not in found:
                    raise records.fail(f"{where}.{digest_key}", f"chain {key!r} has no digest")
            chains.append(PortChain(table, name, tuple(texts[key]), digests.get(key)))
        names = {chain.key for chain in chains}
        for key in sorted(set(counts) | set(texts) | set(digests)):
            if key not in names:
                raise records.fail(where, f"rules of chain {key!r} that the record does not hold")
        return cls(port, elements, tuple(chains))


def _elements(data: object, where: str, port: str) -> tuple[MapElement, ...]:
    """The recorded map entries: each one of the port's four possible ones."""
    possible = {
        (table, vmap, port, chain_names(port, direction)) for table in TABLES for vmap, direction in VMAPS.items()
    }
    if not isinstance(data, list):
        raise records.fail(where, "expected an array")
    found = []
    for index, value in enumerate(data):
        if type(value) is list and tuple(value) in possible:
            found.append(MapElement(*value))
        else:
            found.append(MapElement.from_json(value, f"{where}[{index}]", port))  # it says what is wrong
    return tuple(found)


class _PortChains:
    """The names of a port's chains: ``n-PORT-DIR`` and ``n-PORT-DIR-SUBCHAIN``."""

    def __init__(self, port: str) -> None:
        self.roots = {chain_names(port, direction) for direction in VMAPS.values()}
        self.prefixes = tuple(f"{root}-" for root in self.roots)

    def holds(self, name: str) -> bool:
        if name in self.roots:
            return True
        prefix = next((p for p in self.prefixes if name.startswith(p)), None)
        return prefix is not None and bool(_SUBCHAIN.fullmatch(name, len(prefix)))


@dataclass(frozen=True)
class NftFilterBaseRecord:
    """The shared tables (each with its maps and dispatching hook chains)."""

    tables: tuple[str, ...] = tuple(TABLES)

    def to_json(self) -> dict:
        return {"tables": list(self.tables)}

    @classmethod
    def from_json(cls, data: object, where: str) -> NftFilterBaseRecord:
        fields = records.obj(data, where, {"tables"})
        tables = records.texts(fields.get("tables", []), f"{where}.tables")
        for table in tables:
            if table not in TABLES:
                raise records.fail(f"{where}.tables", f"table {table!r} is not virtfw's")
        return cls(tuple(tables))

    def merged(self, other: NftFilterBaseRecord) -> NftFilterBaseRecord:
        """Both records' tables, each once."""
        return NftFilterBaseRecord(tuple(dict.fromkeys(self.tables + other.tables)))
