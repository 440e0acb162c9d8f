"""The live ruleset of one table as ``*-save`` prints it, and batches computed against it.

Every command of an ``*-restore --noflush`` batch must apply, or the whole batch is
refused: a ``-D`` of a rule that is not there fails it. So the backend reads the live
table first and only deletes what exists, using the rule text exactly as ``*-save``
printed it (which the restore parser reads back). ``Batch`` replays each operation on
that model as it is queued, which gives two things for free:

* the inverse of every operation at the exact position it applied to, so a batch that
  went in can be taken back exactly (the rollback when a later tool's batch fails);
* an up-to-date picture for later operations in the same batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from virtfw.rules.xtables.syntax import restore_block, restore_line, target_of

# What xtables tools say when a rule or chain to delete is not there (already gone).
GONE = ("does a matching rule exist", "does not exist", "No chain/target/match", "doesn't exist")


@dataclass
class Table:
    """One table: chains (builtin and user) in order of listing, each with its rules'
    text after ``-A CHAIN`` in order, and each chain's policy as listed (``ACCEPT``...;
    ``-`` for an iptables user chain, which has none)."""

    chains: dict[str, list[str]] = field(default_factory=dict)
    policies: dict[str, str] = field(default_factory=dict)
    # what readers derived from this listing, for its lifetime (not part of what it is)
    derived: dict = field(default_factory=dict, compare=False, repr=False)

    def has(self, chain: str) -> bool:
        return chain in self.chains

    def rules(self, chain: str) -> list[str]:
        return self.chains.get(chain, [])

    def targets(self, chain: str) -> set[str | None]:
        """The targets the rules of ``chain`` jump to, read once per listing: whether a
        port's hook rule is there is one look-up, not a pass over every port's hook."""
        key = ("targets", chain)
        if key not in self.derived:
            self.derived[key] = {target_of(spec) for spec in self.rules(chain)}
        return self.derived[key]


def parse_save(text: str, table: str) -> Table | None:
    """TABLE from ``iptables-save``/``ebtables-save`` output; None when it is not there."""
    return parse_tables(text).get(table)


@dataclass
class Batch:
    """An ``*-restore`` batch for one table, checked against (and applied to) a model
    of the live table, recording the exact inverse of each operation."""

    table: str
    model: Table
    lines: list[str] = field(default_factory=list)
    undo: list[str] = field(default_factory=list)  # inverse lines, newest first when read reversed
    cuts: list[tuple[int, int]] = field(default_factory=list)  # segment ends: (lines, undo) lengths

    # --- queueing operations ---

    def new_chain(self, chain: str) -> None:
        if self.model.has(chain):
            raise ValueError(f"chain {chain} exists")
        self.model.chains[chain] = []
        self.lines.append(f"-N {chain}")
        self.undo.append(f"-X {chain}")

    def flush(self, chain: str) -> None:
        old = self.model.chains.get(chain)
        if old is None:
            return
        self.lines.append(f"-F {chain}")
        # undo is read newest first: queue the re-adds last rule first
        self.undo.extend(f"-A {chain} {spec}".rstrip() for spec in reversed(old))
        self.model.chains[chain] = []

    def set_policy(self, chain: str, policy: str) -> None:
        """``-P CHAIN POLICY`` (an ebtables user chain has one), undone with the old one."""
        old = self.model.policies.get(chain)
        if old is None or old == policy:
            return
        self.lines.append(f"-P {chain} {policy}")
        self.undo.append(f"-P {chain} {old}")
        self.model.policies[chain] = policy

    def delete_chain(self, chain: str) -> None:
        """Flush (if needed) and delete a chain that exists."""
        if not self.model.has(chain):
            return
        self.flush(chain)
        del self.model.chains[chain]
        policy = self.model.policies.get(chain)  # policies change only with set_policy
        self.lines.append(f"-X {chain}")
        if policy not in (None, "-", "ACCEPT"):  # undo is read newest first: -N, then -P
            self.undo.append(f"-P {chain} {policy}")
        self.undo.append(f"-N {chain}")

    def append(self, chain: str, args: Sequence[str]) -> None:
        spec = restore_line(args)
        self.model.chains.setdefault(chain, []).append(spec)
        self.lines.append(f"-A {chain} {spec}")
        self.undo.append(f"-D {chain} {spec}")

    def insert(self, chain: str, position: int, args: Sequence[str]) -> None:
        spec = restore_line(args)
        self.model.chains.setdefault(chain, []).insert(position - 1, spec)
        self.lines.append(f"-I {chain} {position} {spec}")
        self.undo.append(f"-D {chain} {spec}")

    def delete_rule(self, chain: str, spec: str) -> None:
        """Delete a live rule, given as ``*-save`` printed it."""
        rules = self.model.chains[chain]
        index = rules.index(spec)
        del rules[index]
        self.lines.append(f"-D {chain} {spec}".rstrip())
        self.undo.append(f"-I {chain} {index + 1} {spec}".rstrip())

    def delete_rules(self, chain: str, predicate) -> None:
        for spec in [s for s in self.model.rules(chain) if predicate(s)]:
            self.delete_rule(chain, spec)

    # --- segments ---

    def cut(self) -> None:
        """End a segment here: what was queued since the last cut becomes one restore
        call (one transaction) of its own."""
        if not self.cuts or self.cuts[-1][0] < len(self.lines):
            self.cuts.append((len(self.lines), len(self.undo)))

    def segments(self) -> list[tuple[str, str]]:
        """(batch text, its undo text) per segment, in the order they are to be applied."""
        ends = [*self.cuts, (len(self.lines), len(self.undo))]
        segments: list[tuple[str, str]] = []
        start = (0, 0)
        for end in ends:
            if end[0] > start[0]:
                lines, undo = self.lines[start[0] : end[0]], self.undo[start[1] : end[1]]
                segments.append((restore_block(self.table, lines), restore_block(self.table, reversed(undo))))
            start = end
        return segments


def parse_tables(text: str) -> dict[str, Table]:
    """Every table of one ``*-save`` run (a table saved twice: its last copy)."""
    tables: dict[str, Table] = {}
    current: Table | None = None
    for raw in text.split("\n"):  # the tools end lines at '\n' only; a comment may hold U+2028
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current = tables[line[1:]] = Table()
        elif current is None:
            continue
        elif line == "COMMIT":
            current = None
        elif line.startswith(":"):
            words = line[1:].split()
            current.chains.setdefault(words[0], [])
            if len(words) > 1:
                current.policies[words[0]] = words[1]
        elif line.startswith("-A "):
            _, chain, *rest = line.split(" ", 2)
            current.chains.setdefault(chain, []).append(rest[0] if rest else "")
    return tables


# The options iptables keeps in the rule's header (struct ipt_entry / ip6t_entry), which
# ``*-save`` prints first, in this order, whatever order they were given in.
_HEADER = ("-s", "-d", "-i", "-o", "-p")
_PORTS = ("--sport", "--dport")  # options of the tcp/udp match that -p loads implicitly
_REJECT_DEFAULT = {4: "icmp-port-unreachable", 6: "icmp6-port-unreachable"}


def saved_spec(spec: str, version: int) -> str | None:
    """How ``iptables-save`` (``version`` 4) or ``ip6tables-save`` (6) prints the rule that
    ``-A CHAIN SPEC`` adds, for the rule texts virtfw's network backend writes; None for a
    text it does not know the printed form of (the caller then asks ``-C``).

    Every change made here is one iptables makes itself when it parses a rule, so the text
    returned denotes the very rule ``spec`` does (equal to a saved line, that rule is
    there): the header options ``-s -d -i -o -p`` first, in that order; an address with
    its prefix length and its host bits cleared; ``-m tcp``/``-m udp`` loaded where the
    first port option needs it; ``REJECT``'s default ``--reject-with``.
    """
    import ipaddress

    if '"' in spec or "\\" in spec or "'" in spec:
        return None
    words = spec.split(" ")
    header: dict[str, list[str]] = {}
    rest: list[str] = []
    proto = ""
    loaded: set[str] = set()  # matches named by -m so far
    i = 0
    while i < len(words):
        negate = words[i] == "!"
        word = words[i + negate] if i + negate < len(words) else ""
        value = words[i + negate + 1] if i + negate + 1 < len(words) else None
        if word in _HEADER and value is not None and not value.startswith("-"):
            if word in header:
                return None  # given twice: iptables refuses it; ask -C
            if word in ("-s", "-d"):
                try:
                    network = ipaddress.ip_network(value, strict=False)
                except ValueError:
                    return None  # a host name (resolved by iptables), a mask: not ours
                if network.version != version or (version == 6 and "." in value):
                    return None
                value = str(network)
            elif word == "-p":
                if value not in ("tcp", "udp"):
                    return None
                proto = value
            header[word] = ["!"] * negate + [word, value]
            i += negate + 2
            continue
        if negate:
            return None  # a negated match option: not one virtfw writes
        if word == "-m" and value is not None:
            loaded.add(value)
        elif word in _PORTS and proto and proto not in loaded:
            rest += ["-m", proto]
            loaded.add(proto)
        elif word in _PORTS:
            return None  # a port option without -p tcp/udp: refused by iptables
        elif word == "-j":
            target = words[i:]
            if target == ["-j", "REJECT"]:
                target += ["--reject-with", _REJECT_DEFAULT[version]]
            rest += target
            break
        rest.append(words[i])
        i += 1
    return " ".join([*(w for flag in _HEADER for w in header.get(flag, ())), *rest])
