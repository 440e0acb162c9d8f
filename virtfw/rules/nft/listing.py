"""An nft table's chains as ``nft -s -y list table`` prints them, and its maps' entries as
``nft -j list maps`` gives them.

Why text for the chains: next to 1,000 filter ports nft 1.0.6 prints a table in 0.4 s as
text and 0.9 s as JSON (7.5 MB of it, another 0.45 s to decode), and ``reload`` lists the
table each time it checks that the ruleset is intact. ``-s`` prints counters without their
figures (a rule's line does not change as packets pass) and ``-y`` prints priorities as
numbers. Each chain's lines are read in order (a rule per line, as nft prints one; a base
chain's ``type ... hook ... priority ...; policy ...;`` line apart); a line this reader
does not know counts as one of the chain's rules, so the chain then differs from what
virtfw recorded, which ``verify`` reports and ``reload`` rebuilds.

Why JSON for the maps: a key is printed in quotes that nothing escapes, so in text a
crafted key could pass for several entries, ours among them; as JSON each key is one
string (and listing the maps alone costs 15 ms next to 1,000 ports).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from virtfw.rules.records import DIGEST_LENGTH

LIST = ["nft", "-s", "-y", "list", "table"]  # + family, table
LIST_MAPS = ["nft", "-j", "list", "maps"]  # + family
_HEADER = re.compile(r"type (\S+) hook (\S+) priority (-?\d+); policy (\S+);")
_OPENS = re.compile(r"(\S+(?: \S+)?) (\S+) \{")  # chain NAME {, map NAME {, ct helper NAME {


def chain_digest(lines: list[str] | tuple[str, ...]) -> str:
    """A chain's rules, as nft prints them with ``-s`` (counters without figures), in
    order: equal for the rules installed and for the same rules later, different once a
    rule was replaced, added, removed or moved."""
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:DIGEST_LENGTH]


@dataclass
class Hook:
    """A base chain's line: ``type filter hook prerouting priority -300; policy accept;``."""

    type: str
    hook: str
    prio: int
    policy: str


@dataclass
class TableListing:
    rules: dict[str, list[str]] = field(default_factory=dict)  # chain -> its lines, in order
    hooks: dict[str, Hook] = field(default_factory=dict)  # base chain -> its hook line
    maps: dict[str, dict[str, str | None]] = field(default_factory=dict)  # map -> key -> jump target
    _digests: dict[str, str] = field(default_factory=dict)

    @property
    def chains(self) -> set[str]:
        return set(self.rules)

    def digest(self, chain: str) -> str:
        if chain not in self._digests:
            self._digests[chain] = chain_digest(self.rules.get(chain, []))
        return self._digests[chain]


def parse_table(text: str) -> TableListing:
    """The chains of the table printed by ``nft -s -y list table FAMILY NAME``."""
    listing = TableListing()
    kind = name = None
    for line in text.split("\n"):
        if not line.strip() or not line.startswith("\t"):
            continue  # the table's own "table ... {" and "}", blank lines between blocks
        if not line.startswith("\t\t"):  # a block opens or closes
            stripped = line.strip()
            if stripped == "}":
                kind = name = None
                continue
            match = _OPENS.fullmatch(stripped)
            kind, name = (match.group(1), match.group(2)) if match else ("?", None)
            if kind == "chain" and name is not None:
                listing.rules[name] = []
            continue
        stripped = line.strip()
        if kind == "chain" and name is not None:
            rules = listing.rules[name]
            header = _HEADER.fullmatch(stripped)
            if header and not rules and name not in listing.hooks:
                type_, hook, prio, policy = header.groups()
                listing.hooks[name] = Hook(type_, hook, int(prio), policy)
            else:
                rules.append(stripped)
    return listing


def parse_maps(text: str) -> dict[str, dict[str, dict[str, str | None]]]:
    """``nft -j list maps FAMILY`` as table -> map -> key -> the chain its verdict jumps
    to (None for any other verdict). A key that is not a string is kept as its JSON."""
    found: dict[str, dict[str, dict[str, str | None]]] = {}
    for item in json.loads(text).get("nftables", []):
        if "map" not in item:
            continue
        entries = found.setdefault(item["map"]["table"], {}).setdefault(item["map"]["name"], {})
        for element in item["map"].get("elem", []):
            key, verdict = element if isinstance(element, list) and len(element) == 2 else (element, None)
            jump = verdict.get("jump") if isinstance(verdict, dict) else None
            target = jump.get("target") if isinstance(jump, dict) else None
            entries[key if isinstance(key, str) else json.dumps(key)] = target if isinstance(target, str) else None
    return found
