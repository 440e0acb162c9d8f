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

The text is not trusted to be unambiguous: nft prints names and comments as they are, so
a chain added through netlink or ``nft -j`` with a newline in its name, or a rule comment
holding a quote and a newline, prints lines of its own choosing, a decoy ``chain NAME {``
among them. A listing whose blocks are not exactly virtfw's shape (``chain``/``map``
headers of plain names, each once, every line inside a block, no other kind of block) or
whose chains and maps are not those nft names in JSON (``check_names``) carries its
``doubts``: then no chain of it can be told apart, and ``verify`` reports the table.

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
_OPENS = re.compile(r"(chain|map) ([A-Za-z0-9_.:-]+) \{")  # the only blocks virtfw's tables hold
_TABLE = re.compile(r"table bridge [A-Za-z0-9_.-]+ \{")
LIST_CHAINS = ["nft", "-j", "list", "chains"]  # + family


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
    map_blocks: set[str] = field(default_factory=set)  # the maps the text shows
    doubts: list[str] = field(default_factory=list)  # why the text cannot be read as virtfw's
    _digests: dict[str, str] = field(default_factory=dict)

    @property
    def chains(self) -> set[str]:
        return set(self.rules)

    def digest(self, chain: str) -> str:
        if chain not in self._digests:
            self._digests[chain] = chain_digest(self.rules.get(chain, []))
        return self._digests[chain]


def parse_table(text: str) -> TableListing:
    """The chains of the table printed by ``nft -s -y list table bridge NAME``, and the
    doubts its shape raises (see the module docstring)."""
    listing = TableListing()
    kind = name = None
    outer = [line for line in text.split("\n") if line.strip() and not line.startswith("\t")]
    if len(outer) != 2 or not _TABLE.fullmatch(outer[0]) or outer[1] != "}":
        listing.doubts.append("lines outside the table's block")
    for line in text.split("\n"):
        if not line.strip() or not line.startswith("\t"):
            continue  # the table's own "table ... {" and "}", blank lines between blocks
        stripped = line.strip()
        if not line.startswith("\t\t"):  # a block opens or closes
            if stripped == "}" and kind is not None:
                kind = name = None
                continue
            match = _OPENS.fullmatch(line[1:])
            if kind is not None or match is None:
                listing.doubts.append(f"a line virtfw does not make: {stripped[:60]!r}")
                kind, name = "?", None
                continue
            kind, name = match.groups()
            blocks = listing.rules if kind == "chain" else listing.map_blocks
            if name in blocks:
                listing.doubts.append(f"{kind} {name} listed twice")
            if kind == "chain":
                listing.rules[name] = []
            else:
                listing.map_blocks.add(name)
            continue
        if kind is None:
            listing.doubts.append(f"a line outside any block: {stripped[:60]!r}")
        elif kind == "chain" and name is not None:
            rules = listing.rules[name]
            header = _HEADER.fullmatch(stripped)
            if header and not rules and name not in listing.hooks:
                type_, hook, prio, policy = header.groups()
                listing.hooks[name] = Hook(type_, hook, int(prio), policy)
            else:
                rules.append(stripped)
    return listing


def parse_chains(text: str) -> dict[str, list[str]]:
    """``nft -j list chains FAMILY`` as table -> its chains' names (a name as nft holds
    it, whatever it contains)."""
    found: dict[str, list[str]] = {}
    for item in json.loads(text).get("nftables", []):
        chain = item.get("chain") if isinstance(item, dict) else None
        if isinstance(chain, dict) and isinstance(chain.get("table"), str) and isinstance(chain.get("name"), str):
            found.setdefault(chain["table"], []).append(chain["name"])
    return found


def check_names(listing: TableListing, chains: list[str] | None) -> None:
    """Add a doubt when the text's chains and maps are not the ones nft names in JSON
    (``chains`` None: they could not be listed)."""
    if chains is None:
        listing.doubts.append("its chains could not be listed as JSON")
    elif len(chains) != len(listing.rules) or set(chains) != set(listing.rules):
        listing.doubts.append("its chains' names do not read back as nft prints them")
    if listing.map_blocks != set(listing.maps):
        listing.doubts.append("its maps' names do not read back as nft prints them")


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
