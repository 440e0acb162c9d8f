"""iptables network backend: private VIRTFW_* chains changed with ``*-restore --noflush``.

One restore run per address family carries every table's changes (neutron's model:
one process per change, not one per rule). Removal records
(:mod:`virtfw.rules.xtables.network_records`) are the exact ``-D`` lines of what was
inserted, known before anything is applied.

Atomic: each restore run is committed whole; when the IPv6 run fails, the IPv4 one
that went in is taken back, so a failed install leaves the rules as they were.

Checks (``verify``, ``unexpected``, and so reload's "is it intact") read one
``iptables-save`` and one ``ip6tables-save`` (:class:`Saved`) and look each recorded
rule up there as ``*-save`` prints it (:func:`~virtfw.rules.xtables.save.saved_spec`);
only a rule not found so is asked about with ``-C``, which is exact whatever the
tools print.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from virtfw.errors import ToolError
from virtfw.rules.backend import Installed
from virtfw.rules.netrules import Family, RuleSet
from virtfw.rules.nft.syntax import NFT_FAMILY
from virtfw.rules.runner import Result, Runner, find_tool
from virtfw.rules.xtables.appeared import Appeared, drop_appeared
from virtfw.rules.xtables.network_records import (
    CHAINS,
    HOOKS,
    NETWORK_TABLES,
    FamilyRemoval,
    IptablesRecord,
    RemovalLine,
)
from virtfw.rules.xtables.save import GONE, Table, parse_tables, saved_spec
from virtfw.rules.xtables.syntax import render_spec, restore_blocks

IPTABLES_BY_FAMILY = {Family.IPV4: "iptables", Family.IPV6: "ip6tables"}
VERSION = {Family.IPV4: 4, Family.IPV6: 6}
_OWN_CHAINS = {chain for _, chain in CHAINS.values()}

NetworkInstalled = Installed[IptablesRecord, IptablesRecord]


@dataclass
class _Live:
    """Which of our chains and hook jumps exist in one family, read from *-save."""

    chains: set[tuple[str, str]]
    hooks: set[tuple[str, str, str]]
    tables: set[str]


@dataclass
class Saved:
    """One ``iptables-save`` and one ``ip6tables-save``: the live rules that checks read,
    read once for all the records looked at (``IptablesBackend.snapshot``)."""

    results: dict[Family, Result]
    tables: dict[Family, dict[str, Table]]
    _sets: dict[tuple[Family, str, str], frozenset[str]] = field(default_factory=dict)

    def has(self, family: Family, table: str, chain: str, spec: str) -> bool:
        """Whether CHAIN of TABLE holds a rule printed as ``spec``."""
        key = (family, table, chain)
        if key not in self._sets:
            model = self.tables[family].get(table)
            self._sets[key] = frozenset(model.rules(chain) if model else ())
        return spec in self._sets[key]


class IptablesBackend:
    name = "iptables"

    def snapshot(self, runner: Runner) -> Saved:
        """The live rules of both families, for several ``verify``/``unexpected`` calls."""
        results = {}
        for family, tool in IPTABLES_BY_FAMILY.items():
            results[family] = runner.run([f"{tool}-save"], change=False, check=False)
        tables = {f: parse_tables(r.stdout) if r.returncode == 0 else {} for f, r in results.items()}
        return Saved(results, tables)

    def _live(self, runner: Runner, family: Family) -> _Live:
        result = runner.query([f"{IPTABLES_BY_FAMILY[family]}-save"])
        live = _Live(set(), set(), set())
        table = ""
        ours = {chain for _, chain in CHAINS.values()}
        for line in result.stdout.splitlines() if result.returncode == 0 else []:
            if line.startswith("*"):
                table = line[1:].strip()
                live.tables.add(table)
            elif line.startswith(":") and line[1:].split()[0] in ours:
                live.chains.add((table, line[1:].split()[0]))
            elif line.startswith("-A "):
                words = line.split()
                if len(words) == 4 and words[2] == "-j" and words[3] in ours:
                    live.hooks.add((table, words[1], words[3]))
        return live

    def install(
        self,
        runner: Runner,
        rulesets: list[RuleSet],
        *,
        rebuild: bool = False,
        before_apply: Callable[[NetworkInstalled], None] | None = None,
    ) -> NetworkInstalled:
        owners: dict[str, dict[Family, FamilyRemoval]] = {rs.owner: {} for rs in rulesets}
        base: dict[Family, FamilyRemoval] = {}
        texts: dict[Family, str] = {}
        for family in IPTABLES_BY_FAMILY:
            blocks, base[family] = self._base_blocks(runner, family, rebuild)
            for ruleset in rulesets:
                removal: dict[str, list[RemovalLine]] = {}
                for rule in reversed(ruleset.rules):
                    if rule.family is family:
                        table, chain = CHAINS[rule.chain]
                        spec = render_spec(rule)
                        blocks[table].append(f"-I {chain} {spec}")
                        removal.setdefault(table, []).insert(0, RemovalLine("-D", chain, spec))
                owners[ruleset.owner][family] = _family_removal(removal)
            texts[family] = restore_blocks(blocks)
        installed: NetworkInstalled = Installed(
            {owner: IptablesRecord(parts[Family.IPV4], parts[Family.IPV6]) for owner, parts in owners.items()},
            IptablesRecord(base[Family.IPV4], base[Family.IPV6]) if any(base.values()) else None,
        )
        if before_apply:
            before_apply(installed)  # every -D line is known before anything is applied
        applied: list[Family] = []
        try:
            for family, text in texts.items():
                if text:
                    runner.run([f"{IPTABLES_BY_FAMILY[family]}-restore", "-w", "--noflush"], stdin=text)
                applied.append(family)
        except ToolError:
            # Each restore is atomic; the families that went in whole come out again.
            for family in applied:
                for record in installed.removals.values():
                    self._remove_family(runner, family, record.family(family))
                if installed.base:
                    self._remove_family(runner, family, installed.base.family(family))
            raise
        return installed

    def load_record(self, data: object, where: str) -> IptablesRecord:
        return IptablesRecord.from_json(data, where)

    def load_base(self, data: object, where: str) -> IptablesRecord:
        return IptablesRecord.from_json(data, where)

    def _base_blocks(self, runner: Runner, family: Family, rebuild: bool) -> tuple[dict[str, list[str]], FamilyRemoval]:
        live = self._live(runner, family)
        blocks: dict[str, list[str]] = {table: [] for table in NETWORK_TABLES}
        removal: dict[str, list[RemovalLine]] = {}
        for table, chain in dict.fromkeys(CHAINS.values()):
            if rebuild or (table, chain) not in live.chains:
                blocks[table].append(f":{chain} - [0:0]")  # creates, or flushes ours
            if (table, chain) not in live.chains:
                removal.setdefault(table, []).extend([RemovalLine("-F", chain), RemovalLine("-X", chain)])
        for table, parent, chain in HOOKS:
            if (table, parent, chain) not in live.hooks:
                blocks[table].append(f"-I {parent} -j {chain}")
                removal.setdefault(table, []).insert(0, RemovalLine("-D", parent, f"-j {chain}"))
        appeared = self._appeared(runner, family, live, set(removal)) if removal else None
        return blocks, _family_removal(removal, appeared)

    def foreign_drops(self, runner: Runner, bridges: list[str]) -> list[str]:
        """Nothing to report: virtfw's chains are jumped to first from the builtin chains,
        and their ACCEPT ends the builtin chain before another manager's rules or a drop
        policy there."""
        return []

    def remove(self, runner: Runner, removal: IptablesRecord) -> bool:
        for family in (Family.IPV4, Family.IPV6):
            self._remove_family(runner, family, removal.family(family))
        return True

    def _remove_family(self, runner: Runner, family: Family, record: FamilyRemoval) -> None:
        self._run_removal(runner, family, record.blocks())
        if record.appeared:
            drop_appeared(runner, NFT_FAMILY[family], record.appeared)

    def _appeared(self, runner: Runner, family: Family, live: _Live, tables: set[str]) -> Appeared | None:
        """nf_tables tables and builtin chains that our batch is about to make appear.

        iptables-nft creates a table, and each builtin chain, on first use; legacy
        iptables has them all along. What appears for us goes again at teardown
        if nothing else was put in it, so teardown leaves the ruleset as it found it.
        """
        if runner.dry_run or find_tool("nft") is None:
            return None
        if "nf_tables" not in runner.query([IPTABLES_BY_FAMILY[family], "--version"]).stdout:
            return None
        listed = runner.query(["nft", "-j", "list", "chains", NFT_FAMILY[family]])
        existing = set()
        for item in json.loads(listed.stdout or "{}").get("nftables", []):
            chain = item.get("chain")
            if chain:
                existing.add((chain["table"], chain["name"]))
        appeared = sorted(set(NETWORK_TABLES) - live.tables - {t for t, _ in existing})
        hooked = {(table, parent) for table, parent, _ in HOOKS if table in tables}
        chains = sorted((t, c) for t, c in hooked - existing if t not in appeared)
        return Appeared(tuple(appeared), tuple(chains))

    def _run_removal(self, runner: Runner, family: Family, blocks: dict[str, list[str]]) -> None:
        text = restore_blocks(blocks)
        if not text:
            return
        try:
            runner.run([f"{IPTABLES_BY_FAMILY[family]}-restore", "-w", "--noflush"], stdin=text)
        except ToolError:
            # Something was already gone (an admin flushed): remove the rest one by one.
            for table, lines in blocks.items():
                for line in lines:
                    argv = [IPTABLES_BY_FAMILY[family], "-w", "-t", table, *line.split()]
                    result = runner.run(argv, check=False)
                    if result.returncode != 0 and not any(gone in result.stderr for gone in GONE):
                        raise ToolError(argv, result.returncode, result.stderr)

    def matches(self, ruleset: RuleSet, removal: IptablesRecord) -> bool:
        """Whether installing ``ruleset`` now would add the very rules ``removal`` holds."""
        for family in IPTABLES_BY_FAMILY:
            wanted = sorted(
                (CHAINS[rule.chain][0], CHAINS[rule.chain][1], render_spec(rule))
                for rule in ruleset.rules
                if rule.family is family
            )
            lines = removal.family(family).lines()
            if any(line.verb != "-D" for _, line in lines):
                return False
            if wanted != sorted((table, line.chain, line.spec) for table, line in lines):
                return False
        return True

    def unexpected(self, runner: Runner, removals: list[IptablesRecord], live: Saved | None = None) -> list[str]:
        """Rules in our chains beyond those the records hold (someone added them), and hooks
        into them found more than once, one line per chain (``live``: as read before)."""
        live = live or self.snapshot(runner)
        problems = []
        for family, tool in IPTABLES_BY_FAMILY.items():
            result = live.results[family]
            if result.returncode != 0 and not runner.dry_run:  # as a query: no picture, no verdict
                raise ToolError([f"{tool}-save"], result.returncode, result.stderr)
            recorded: dict[tuple[str, str], int] = {}
            for removal in removals:
                for table, line in removal.family(family).lines():
                    if line.verb == "-D" and line.chain in _OWN_CHAINS:
                        recorded[(table, line.chain)] = recorded.get((table, line.chain), 0) + 1
            found: dict[tuple[str, str], int] = {}
            hooks: dict[tuple[str, str, str], int] = {}
            for table, model in live.tables[family].items():
                for chain, rules in model.chains.items():
                    if chain in _OWN_CHAINS:
                        if rules:
                            found[(table, chain)] = len(rules)
                        continue
                    for spec in rules:
                        words = spec.split()
                        if len(words) == 2 and words[0] == "-j" and words[1] in _OWN_CHAINS:
                            hooks[(table, chain, words[1])] = hooks.get((table, chain, words[1]), 0) + 1
            for key in sorted(found):
                if found[key] > recorded.get(key, 0):
                    problems.append(
                        f"{found[key] - recorded.get(key, 0)} rule(s) in {tool} -t {key[0]} {key[1]} that virtfw did not add"
                    )
            problems += [
                f"{tool} -t {t} {parent} jumps to {chain} {n} times" for (t, parent, chain), n in hooks.items() if n > 1
            ]
        return problems

    def verify(self, runner: Runner, removal: IptablesRecord, live: Saved | None = None) -> list[str]:
        """What of the record's rules the kernel no longer holds: each rule looked up in
        ``*-save``'s output as it prints it, and asked about with ``-C`` (exact, whatever
        ``*-save`` prints) only when not found there (``live``: the output, read before)."""
        live = live or self.snapshot(runner)
        problems = []
        for family, tool in IPTABLES_BY_FAMILY.items():
            lines = dict(removal.family(family).tables)
            for table, line in ((t, line) for t in NETWORK_TABLES for line in lines.get(t, ())):
                if line.verb != "-D":
                    continue
                saved = saved_spec(line.spec, VERSION[family])
                if saved is not None and live.has(family, table, line.chain, saved):
                    continue
                argv = [tool, "-w", "-t", table, "-C", line.chain, *line.spec.split()]
                if runner.run(argv, change=False, check=False).returncode != 0:
                    problems.append(f"{tool} -t {table} -A {line.chain} {line.spec} is missing")
        return problems


def _family_removal(removal: dict[str, list[RemovalLine]], appeared: Appeared | None = None) -> FamilyRemoval:
    """Tables in the order their first line was queued (which is the removal batch's)."""
    return FamilyRemoval(tuple((table, tuple(lines)) for table, lines in removal.items()), appeared)
