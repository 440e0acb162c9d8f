"""The iptables network backend's records: what it added, so that exactly that can go again.

Every object is virtfw's own: the ``VIRTFW_*`` chains of the filter, nat and mangle
tables, the jumps to them from builtin chains, and rules in them. A record stores that
structure (table, chain, rule specification); the backend composes the ``-D``/``-F``/
``-X`` lines, so a record read back from a status file can only remove virtfw's own
objects, and a specification is refused if it could be read as another command.

JSON, as status files hold it (``backend`` is always ``"iptables"``; FAMILY is
``ipv4``/``ipv6``):

* :class:`IptRules` ``{FAMILY: [[TABLE, CHAIN, SPEC]...]}``
* :class:`IptBase` ``{FAMILY: {"hooks": [[TABLE, BUILTIN, CHAIN]...], "chains": [[TABLE, CHAIN]...],
  "appeared": APPEARED}}`` (``appeared``: see :class:`~virtfw.rules.xtables.appeared.Appeared`)

Records of the previous version (per table lists of ``-D``/``-F``/``-X`` lines) still load.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from virtfw.rules import records
from virtfw.rules.netrules import Chain, Family
from virtfw.rules.xtables.appeared import Appeared

BACKEND = "iptables"

CHAINS: dict[Chain, tuple[str, str]] = {
    Chain.HOST_IN: ("filter", "VIRTFW_INP"),
    Chain.HOST_OUT: ("filter", "VIRTFW_OUT"),
    Chain.FWD_CROSS: ("filter", "VIRTFW_FWX"),
    Chain.FWD_IN: ("filter", "VIRTFW_FWI"),
    Chain.FWD_OUT: ("filter", "VIRTFW_FWO"),
    Chain.NAT_POST: ("nat", "VIRTFW_PRT"),
    Chain.MANGLE_POST: ("mangle", "VIRTFW_PRT"),
}
OUR_CHAINS = frozenset(CHAINS.values())  # (table, chain)

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
TABLES = ("filter", "nat", "mangle")

# Words that would make a rule specification another command, or move it to another table.
_COMMAND_WORDS = frozenset((
    "-A", "--append", "-C", "--check", "-D", "--delete", "-I", "--insert", "-R", "--replace", "-L", "--list",
    "-S", "--list-rules", "-F", "--flush", "-Z", "--zero", "-N", "--new-chain", "-X", "--delete-chain",
    "-P", "--policy", "-E", "--rename-chain", "-t", "--table",
))  # fmt: skip


@dataclass(frozen=True)
class IptRule:
    """One rule a network inserted: ``-I CHAIN SPEC`` in ``TABLE``."""

    table: str
    chain: str
    spec: str

    def delete_line(self) -> str:
        return f"-D {self.chain} {self.spec}"


@dataclass(frozen=True)
class IptRules:
    """The rules one network inserted, per address family."""

    ipv4: tuple[IptRule, ...] = ()
    ipv6: tuple[IptRule, ...] = ()

    def of(self, family: Family) -> tuple[IptRule, ...]:
        return self.ipv4 if family is Family.IPV4 else self.ipv6

    def removal_blocks(self, family: Family) -> dict[str, list[str]]:
        """Per table, the ``-D`` lines that remove this family's rules."""
        blocks: dict[str, list[str]] = {}
        for rule in self.of(family):
            blocks.setdefault(rule.table, []).append(rule.delete_line())
        return {table: blocks[table] for table in sorted(blocks)}

    def to_json(self) -> dict:
        data: dict = {"backend": BACKEND}
        for family in Family:
            data[family.value] = [[r.table, r.chain, r.spec] for r in self.of(family)]
        return data

    @classmethod
    def from_json(cls, data: object, where: str) -> IptRules:
        fields = records.obj(data, where, {"backend", *(f.value for f in Family)})
        _check_backend(fields, where)
        parts = {}
        for family in Family:
            at = f"{where}.{family.value}"
            part = fields.get(family.value, [])
            if isinstance(part, dict):  # the previous version's shape
                parts[family] = _old_rules(part, at)
            else:
                parts[family] = tuple(records.items(part, at, _rule))
        return cls(parts[Family.IPV4], parts[Family.IPV6])


@dataclass(frozen=True)
class IptFamilyBase:
    """What an install created in one address family: the jumps from builtin chains, our
    chains (flushed and deleted at removal), and what iptables-nft made appear for them."""

    hooks: tuple[tuple[str, str, str], ...] = ()  # (table, builtin, our chain), in removal order
    chains: tuple[tuple[str, str], ...] = ()  # (table, our chain)
    appeared: Appeared = field(default_factory=Appeared)

    def __bool__(self) -> bool:
        return bool(self.hooks or self.chains)

    def removal_blocks(self) -> dict[str, list[str]]:
        """Per table, the lines that remove it: the jumps go before the chains they reach."""
        blocks: dict[str, list[str]] = {}
        for table, parent, chain in self.hooks:
            blocks.setdefault(table, []).append(f"-D {parent} -j {chain}")
        for table, chain in self.chains:
            blocks.setdefault(table, []).extend([f"-F {chain}", f"-X {chain}"])
        return {table: blocks[table] for table in sorted(blocks)}

    def to_json(self) -> dict:
        data: dict = {"hooks": [list(hook) for hook in self.hooks], "chains": [list(chain) for chain in self.chains]}
        if self.appeared:
            data["appeared"] = self.appeared.to_json()
        return data

    @classmethod
    def from_json(cls, data: object, where: str) -> IptFamilyBase:
        fields = records.obj(data, where)
        if set(fields) & set(TABLES):  # the previous version's shape
            return _old_family_base(fields, where)
        records.obj(fields, where, {"hooks", "chains", "appeared"})
        hooks = tuple(records.items(fields.get("hooks", []), f"{where}.hooks", _hook))
        chains = tuple(records.items(fields.get("chains", []), f"{where}.chains", _our_chain))
        appeared = Appeared.from_json(fields["appeared"], f"{where}.appeared") if "appeared" in fields else Appeared()
        return cls(hooks, chains, appeared)

    def merged(self, other: IptFamilyBase) -> IptFamilyBase:
        """Both records' pieces, each once; what appeared is what the earliest install saw."""
        return IptFamilyBase(
            tuple(dict.fromkeys(self.hooks + other.hooks)),
            tuple(dict.fromkeys(self.chains + other.chains)),
            self.appeared if self else other.appeared,
        )


@dataclass(frozen=True)
class IptBase:
    """The shared chains and hook jumps an install created, per address family."""

    ipv4: IptFamilyBase = field(default_factory=IptFamilyBase)
    ipv6: IptFamilyBase = field(default_factory=IptFamilyBase)

    def __bool__(self) -> bool:
        return bool(self.ipv4 or self.ipv6)

    def of(self, family: Family) -> IptFamilyBase:
        return self.ipv4 if family is Family.IPV4 else self.ipv6

    def to_json(self) -> dict:
        data: dict = {"backend": BACKEND}
        for family in Family:
            data[family.value] = self.of(family).to_json()
        return data

    @classmethod
    def from_json(cls, data: object, where: str) -> IptBase:
        fields = records.obj(data, where, {"backend", *(f.value for f in Family)})
        _check_backend(fields, where)
        parts = {f: IptFamilyBase.from_json(fields.get(f.value, {}), f"{where}.{f.value}") for f in Family}
        return cls(parts[Family.IPV4], parts[Family.IPV6])

    def merged(self, other: IptBase) -> IptBase:
        return IptBase(self.ipv4.merged(other.ipv4), self.ipv6.merged(other.ipv6))


def _check_backend(fields: dict[str, object], where: str) -> None:
    if fields.get("backend") != BACKEND:
        raise records.fail(f"{where}.backend", f"expected {BACKEND!r}")


def _words(data: object, where: str, count: int) -> list[str]:
    words = records.texts(data, where)
    if len(words) != count:
        raise records.fail(where, f"expected {count} strings")
    return words


def _table_chain(table: str, chain: str, where: str) -> tuple[str, str]:
    if (table, chain) not in OUR_CHAINS:
        raise records.fail(where, f"not a chain of ours: {table} {chain}")
    return (table, chain)


def _our_chain(data: object, where: str) -> tuple[str, str]:
    table, chain = _words(data, where, 2)
    return _table_chain(table, chain, where)


def _hook(data: object, where: str) -> tuple[str, str, str]:
    table, parent, chain = _words(data, where, 3)
    if (table, parent, chain) not in HOOKS:
        raise records.fail(where, f"not a jump of ours: {table} {parent} -j {chain}")
    return (table, parent, chain)


def _spec(spec: str, where: str) -> str:
    """A rule specification that can only ever be one rule of the chain it is recorded for."""
    words = spec.split(" ")
    if not spec or any(not word for word in words) or not spec.isprintable():
        raise records.fail(where, f"not a rule specification: {spec!r}")
    command = next((word for word in words if word in _COMMAND_WORDS), None)
    if command:
        raise records.fail(where, f"not a rule specification (has {command}): {spec!r}")
    return spec


def _rule(data: object, where: str) -> IptRule:
    table, chain, spec = _words(data, where, 3)
    _table_chain(table, chain, where)
    return IptRule(table, chain, _spec(spec, where))


def _old_lines(part: dict[str, object], where: str) -> list[tuple[str, str, list[str]]]:
    """(table, where, words) of each line of the previous version's per table lists."""
    lines = []
    for table in TABLES:
        for i, line in enumerate(records.texts(part.get(table, []), f"{where}.{table}")):
            lines.append((table, f"{where}.{table}[{i}]", line.split(" ")))
    return lines


def _old_rules(part: dict[str, object], where: str) -> tuple[IptRule, ...]:
    records.obj(part, where, set(TABLES))
    rules = []
    for table, at, words in _old_lines(part, where):
        if len(words) < 3 or words[0] != "-D":
            raise records.fail(at, f"not the deletion of one of our rules: {' '.join(words)!r}")
        _table_chain(table, words[1], at)
        rules.append(IptRule(table, words[1], _spec(" ".join(words[2:]), at)))
    return tuple(rules)


def _old_family_base(part: dict[str, object], where: str) -> IptFamilyBase:
    records.obj(part, where, {*TABLES, "appeared"})
    hooks: list[tuple[str, str, str]] = []
    chains: list[tuple[str, str]] = []
    for table, at, words in _old_lines(part, where):
        if len(words) == 4 and words[0] == "-D" and words[2] == "-j" and (table, words[1], words[3]) in HOOKS:
            hooks.append((table, words[1], words[3]))
        elif len(words) == 2 and words[0] in ("-F", "-X"):
            chains.append(_table_chain(table, words[1], at))
        else:
            raise records.fail(at, f"not the removal of our chains or jumps: {' '.join(words)!r}")
    appeared = Appeared.from_json(part["appeared"], f"{where}.appeared") if "appeared" in part else Appeared()
    return IptFamilyBase(tuple(hooks), tuple(dict.fromkeys(chains)), appeared)
