"""iptables backend: private VIRTFW_* chains changed with ``*-restore --noflush`` batches.

One restore run per address family carries every table's changes (neutron's model:
one process per change, not one per rule). Removal records (``network_records``) name
what was inserted, the rules, our chains and the jumps to them, from which the
``-D``/``-F``/``-X`` lines are composed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace

from virtfw.errors import ToolError
from virtfw.rules.backend import Installed
from virtfw.rules.netrules import (
    Action,
    Addr,
    CtState,
    DPort,
    Family,
    Iface,
    Match,
    Proto,
    Rule,
    RuleSet,
    Verdict,
)
from virtfw.rules.runner import Runner
from virtfw.rules.xtables.appeared import Appeared, drop_appeared
from virtfw.rules.xtables.network_records import CHAINS, HOOKS, TABLES, IptBase, IptFamilyBase, IptRule, IptRules
from virtfw.rules.xtables.save import GONE

TOOLS = {Family.IPV4: "iptables", Family.IPV6: "ip6tables"}

# Where iptables-nft keeps each address family's tables.
NFT_FAMILY = {Family.IPV4: "ip", Family.IPV6: "ip6"}


def render_match(match: Match) -> list[str]:
    if isinstance(match, Iface):
        return ["-i" if match.inbound else "-o", match.name]
    if isinstance(match, Addr):
        flag = "-s" if match.source else "-d"
        return (["!"] if match.negate else []) + [flag, match.cidr]
    if isinstance(match, Proto):
        return ["-p", match.name]
    if isinstance(match, DPort):
        return ["--dport", str(match.port)]
    if isinstance(match, CtState):
        return ["-m", "conntrack", "--ctstate", ",".join(s.upper() for s in match.states)]
    raise TypeError(f"cannot render {match!r}")


def render_verdict(verdict: Verdict) -> list[str]:
    action = verdict.action
    ports = f"{verdict.ports[0]}-{verdict.ports[1]}" if verdict.ports else ""
    if action is Action.MASQUERADE:
        return ["-j", "MASQUERADE"] + (["--to-ports", ports] if ports else [])
    if action is Action.SNAT:
        start, end = verdict.addresses
        target = start + (f"-{end}" if end else "") + (f":{ports}" if ports else "")
        return ["-j", "SNAT", "--to-source", target]
    if action is Action.CHECKSUM_FILL:
        return ["-j", "CHECKSUM", "--checksum-fill"]
    return ["-j", action.value.upper()]


def render_spec(rule: Rule) -> str:
    words: list[str] = []
    for match in rule.matches:
        words += render_match(match)
    return " ".join(words + render_verdict(rule.verdict))


@dataclass
class _Live:
    """Which of our chains and hook jumps exist in one family, read from *-save."""

    chains: set[tuple[str, str]]
    hooks: set[tuple[str, str, str]]
    tables: set[str]


def restore_text(blocks: dict[str, list[str]]) -> str:
    return "".join(f"*{table}\n" + "\n".join(lines) + "\nCOMMIT\n" for table, lines in blocks.items() if lines)


class IptablesBackend:
    """Networks' rules in our ``VIRTFW_*`` chains; the contract is rules/backend.py's."""

    name = "iptables"

    def load_record(self, data: object, where: str) -> IptRules:
        return IptRules.from_json(data, where)

    def load_base(self, data: object, where: str) -> IptBase:
        return IptBase.from_json(data, where)

    def _live(self, runner: Runner, family: Family) -> _Live:
        result = runner.query([f"{TOOLS[family]}-save"])
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
        before_apply: Callable[[Installed[IptRules, IptBase]], None] | None = None,
    ) -> Installed[IptRules, IptBase]:
        texts: dict[Family, str] = {}
        bases: dict[Family, IptFamilyBase] = {}
        added: dict[str, dict[Family, list[IptRule]]] = {rs.owner: {} for rs in rulesets}
        for family in TOOLS:
            blocks, bases[family] = self._base_blocks(runner, family, rebuild)
            for ruleset in rulesets:
                rules = added[ruleset.owner].setdefault(family, [])
                for rule in reversed(ruleset.rules):
                    if rule.family is family:
                        table, chain = CHAINS[rule.chain]
                        spec = render_spec(rule)
                        blocks[table].append(f"-I {chain} {spec}")
                        rules.insert(0, IptRule(table, chain, spec))
            texts[family] = restore_text(blocks)
        base = IptBase(bases[Family.IPV4], bases[Family.IPV6])
        installed: Installed[IptRules, IptBase] = Installed(
            removals={
                owner: IptRules(tuple(rules[Family.IPV4]), tuple(rules[Family.IPV6])) for owner, rules in added.items()
            },
            base=base or None,
        )
        if before_apply:
            before_apply(installed)  # every removal is known before anything is applied
        applied: list[Family] = []
        try:
            for family, text in texts.items():
                if text:
                    runner.run([f"{TOOLS[family]}-restore", "-w", "--noflush"], stdin=text)
                applied.append(family)
        except ToolError:
            # Each restore is atomic; the families that went in whole come out again.
            for family in applied:
                for removal in installed.removals.values():
                    self._remove_rules(runner, family, removal)
                self._remove_base(runner, family, base.of(family))
            raise
        return installed

    def _base_blocks(self, runner: Runner, family: Family, rebuild: bool) -> tuple[dict[str, list[str]], IptFamilyBase]:
        live = self._live(runner, family)
        blocks: dict[str, list[str]] = {table: [] for table in TABLES}
        for table, chain in dict.fromkeys(CHAINS.values()):
            if rebuild or (table, chain) not in live.chains:
                blocks[table].append(f":{chain} - [0:0]")  # creates, or flushes ours
        chains = tuple(chain for chain in dict.fromkeys(CHAINS.values()) if chain not in live.chains)
        hooks = tuple(hook for hook in HOOKS if hook not in live.hooks)
        for table, parent, chain in hooks:
            blocks[table].append(f"-I {parent} -j {chain}")
        # each jump was inserted at the top: they come out in the reverse order
        base = IptFamilyBase(hooks[::-1], chains)
        if base:
            base = replace(base, appeared=self._appeared(runner, family, live, base))
        return blocks, base

    def remove(self, runner: Runner, record: IptRules | IptBase) -> bool:
        for family in (Family.IPV4, Family.IPV6):
            if isinstance(record, IptBase):
                self._remove_base(runner, family, record.of(family))
            else:
                self._remove_rules(runner, family, record)
        return True

    def _remove_rules(self, runner: Runner, family: Family, record: IptRules) -> None:
        self._run_removal(runner, family, record.removal_blocks(family))

    def _remove_base(self, runner: Runner, family: Family, base: IptFamilyBase) -> None:
        self._run_removal(runner, family, base.removal_blocks())
        if base.appeared:
            drop_appeared(runner, NFT_FAMILY[family], base.appeared)

    def _appeared(self, runner: Runner, family: Family, live: _Live, base: IptFamilyBase) -> Appeared:
        """nf_tables tables and builtin chains that our batch is about to make appear.

        iptables-nft creates a table, and each builtin chain, on first use; legacy
        iptables has them all along. What appears for us goes again at teardown
        if nothing else was put in it, so teardown leaves the ruleset as it found it.
        """
        if runner.dry_run or shutil.which("nft") is None:
            return Appeared()
        if "nf_tables" not in runner.query([TOOLS[family], "--version"]).stdout:
            return Appeared()
        listed = runner.query(["nft", "-j", "list", "chains", NFT_FAMILY[family]])
        existing = set()
        for item in json.loads(listed.stdout or "{}").get("nftables", []):
            chain = item.get("chain")
            if chain:
                existing.add((chain["table"], chain["name"]))
        tables = sorted(set(TABLES) - live.tables - {t for t, _ in existing})
        touched = {table for table, _ in base.chains} | {table for table, _, _ in base.hooks}
        hooked = {(table, parent) for table, parent, _ in HOOKS if table in touched}
        chains = sorted((t, c) for t, c in hooked - existing if t not in tables)
        return Appeared(tuple(tables), tuple(chains))

    def _run_removal(self, runner: Runner, family: Family, blocks: dict[str, list[str]]) -> None:
        text = restore_text(blocks)
        if not text:
            return
        try:
            runner.run([f"{TOOLS[family]}-restore", "-w", "--noflush"], stdin=text)
        except ToolError:
            # Something was already gone (an admin flushed): remove the rest one by one.
            for table, lines in blocks.items():
                for line in lines:
                    argv = [TOOLS[family], "-w", "-t", table, *line.split()]
                    result = runner.run(argv, check=False)
                    if result.returncode != 0 and not any(gone in result.stderr for gone in GONE):
                        raise ToolError(argv, result.returncode, result.stderr)

    def verify(self, runner: Runner, record: IptRules | IptBase) -> list[str]:
        """Check each recorded rule with ``-C``: exact, whatever iptables-save prints."""
        problems = []
        for family, tool in TOOLS.items():
            if isinstance(record, IptBase):
                checks = [(table, [parent, "-j", chain]) for table, parent, chain in record.of(family).hooks]
            else:
                checks = [(rule.table, [rule.chain, *rule.spec.split()]) for rule in record.of(family)]
            for table in TABLES:
                for words in (words for at, words in checks if at == table):
                    argv = [tool, "-w", "-t", table, "-C", *words]
                    if runner.run(argv, change=False, check=False).returncode != 0:
                        problems.append(f"{tool} -t {table} -A {' '.join(words)} is missing")
        return problems

    def foreign_drops(self, runner: Runner, bridges: list[str]) -> list[str]:
        """None looked for: another manager's iptables drops sit behind our jumps in the same
        builtin chains. (On iptables-nft, a foreign nft table's drop is not checked yet.)"""
        return []
