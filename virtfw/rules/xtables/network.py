"""iptables backend: private VIRTFW_* chains changed with ``*-restore --noflush`` batches.

One restore run per address family carries every table's changes (neutron's model:
one process per change, not one per rule). Removal records are the exact ``-D``
lines of what was inserted.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from virtfw.errors import ToolError
from virtfw.rules.backend import Installed, Removal
from virtfw.rules.netrules import Chain, Family, RuleSet
from virtfw.rules.nft.syntax import NFT_FAMILY
from virtfw.rules.runner import Runner
from virtfw.rules.xtables.appeared import drop_appeared
from virtfw.rules.xtables.save import GONE
from virtfw.rules.xtables.syntax import render_spec, restore_blocks

IPTABLES_BY_FAMILY = {Family.IPV4: "iptables", Family.IPV6: "ip6tables"}

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
NETWORK_TABLES = ("filter", "nat", "mangle")  # the tables our chains are in


@dataclass
class _Live:
    """Which of our chains and hook jumps exist in one family, read from *-save."""

    chains: set[tuple[str, str]]
    hooks: set[tuple[str, str, str]]
    tables: set[str]


class IptablesBackend:
    name = "iptables"

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
        before_apply: Callable[[Installed], None] | None = None,
    ) -> Installed:
        installed = Installed(removals={rs.owner: self._empty() for rs in rulesets}, base=self._empty())
        texts: dict[Family, str] = {}
        for family in IPTABLES_BY_FAMILY:
            blocks, installed.base[family.value] = self._base_blocks(runner, family, rebuild)
            for ruleset in rulesets:
                removal = installed.removals[ruleset.owner][family.value]
                for rule in reversed(ruleset.rules):
                    if rule.family is family:
                        table, chain = CHAINS[rule.chain]
                        spec = render_spec(rule)
                        blocks[table].append(f"-I {chain} {spec}")
                        removal.setdefault(table, []).insert(0, f"-D {chain} {spec}")
            texts[family] = restore_blocks(blocks)
        if not any(installed.base[f.value] for f in IPTABLES_BY_FAMILY):
            installed.base = None
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
                for removal in installed.removals.values():
                    self._remove_family(runner, family, removal[family.value])
                if installed.base:
                    self._remove_family(runner, family, installed.base[family.value])
            raise
        return installed

    def _empty(self) -> Removal:
        return {"backend": self.name, Family.IPV4.value: {}, Family.IPV6.value: {}}

    def _base_blocks(self, runner: Runner, family: Family, rebuild: bool) -> tuple[dict[str, list[str]], dict]:
        live = self._live(runner, family)
        blocks: dict[str, list[str]] = {table: [] for table in NETWORK_TABLES}
        removal: dict[str, list[str]] = {}
        for table, chain in dict.fromkeys(CHAINS.values()):
            if rebuild or (table, chain) not in live.chains:
                blocks[table].append(f":{chain} - [0:0]")  # creates, or flushes ours
            if (table, chain) not in live.chains:
                removal.setdefault(table, []).extend([f"-F {chain}", f"-X {chain}"])
        for table, parent, chain in HOOKS:
            if (table, parent, chain) not in live.hooks:
                blocks[table].append(f"-I {parent} -j {chain}")
                removal.setdefault(table, []).insert(0, f"-D {parent} -j {chain}")
        if removal:
            appeared = self._appeared(runner, family, live, removal)
            if appeared:
                removal["appeared"] = appeared
        return blocks, removal

    def remove(self, runner: Runner, removal: Removal) -> bool:
        for family in (Family.IPV4, Family.IPV6):
            self._remove_family(runner, family, removal.get(family.value, {}))
        return True

    def _remove_family(self, runner: Runner, family: Family, record: dict[str, list[str]]) -> None:
        blocks = {table: lines for table, lines in record.items() if table in NETWORK_TABLES}
        self._run_removal(runner, family, blocks)
        if record.get("appeared"):
            drop_appeared(runner, NFT_FAMILY[family], record["appeared"])

    def _appeared(self, runner: Runner, family: Family, live: _Live, removal: dict) -> dict:
        """nf_tables tables and builtin chains that our batch is about to make appear.

        iptables-nft creates a table, and each builtin chain, on first use; legacy
        iptables has them all along. What appears for us goes again at teardown
        if nothing else was put in it, so teardown leaves the ruleset as it found it.
        """
        if runner.dry_run or shutil.which("nft") is None:
            return {}
        if "nf_tables" not in runner.query([IPTABLES_BY_FAMILY[family], "--version"]).stdout:
            return {}
        listed = runner.query(["nft", "-j", "list", "chains", NFT_FAMILY[family]])
        existing = set()
        for item in json.loads(listed.stdout or "{}").get("nftables", []):
            chain = item.get("chain")
            if chain:
                existing.add((chain["table"], chain["name"]))
        tables = sorted(set(NETWORK_TABLES) - live.tables - {t for t, _ in existing})
        hooked = {(table, parent) for table, parent, _ in HOOKS if table in removal}
        chains = sorted([t, c] for t, c in hooked - existing if t not in tables)
        return {"tables": tables, "chains": chains}

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

    def verify(self, runner: Runner, removal: Removal) -> list[str]:
        """Check each recorded rule with ``-C``: exact, whatever iptables-save prints."""
        problems = []
        for family in IPTABLES_BY_FAMILY:
            record = removal.get(family.value, {})
            for table in NETWORK_TABLES:
                for line in record.get(table, []):
                    words = line.split()
                    if words[0] != "-D":
                        continue
                    argv = [IPTABLES_BY_FAMILY[family], "-w", "-t", table, "-C", *words[1:]]
                    if runner.run(argv, change=False, check=False).returncode != 0:
                        problems.append(f"{IPTABLES_BY_FAMILY[family]} -t {table} -A {' '.join(words[1:])} is missing")
        return problems

    def merge_base(self, old: Removal | None, new: Removal | None) -> Removal | None:
        if not old or not new:
            return new or old
        merged = self._empty()
        for family in (Family.IPV4.value, Family.IPV6.value):
            target = merged[family]
            for source in (old.get(family, {}), new.get(family, {})):
                for table in NETWORK_TABLES:
                    lines = target.setdefault(table, [])
                    lines.extend(line for line in source.get(table, []) if line not in lines)
                if "appeared" in source and "appeared" not in target:
                    target["appeared"] = source["appeared"]  # the earliest record knows
            for table in NETWORK_TABLES:
                # hook jumps go before the flush and delete of the chains they reach
                target[table].sort(key=lambda line: {"-D": 0, "-F": 1, "-X": 2}[line.split()[0]])
        return merged
