"""nftables network backend: private ``ip``/``ip6`` tables changed by one ``nft -f`` batch.

The layout is libvirt's (table ``libvirt_network`` renamed ``virtfw_network``) so an
admin who knows one knows the other. Handles of added rules come back from the
same batch (``--echo --handle`` with JSON output) and become the removal record
(:mod:`virtfw.rules.nft.network_records`).

Atomic: every install, removal and rebuild is one ``nft -f`` batch, which the kernel
commits whole or not at all. Before it runs, the caller stores a pending record (no
handles yet): a process killed then is cleaned up by a rebuild of the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from virtfw.errors import ToolError
from virtfw.rules.backend import Installed
from virtfw.rules.netrules import Chain, RuleSet
from virtfw.rules.nft.network_records import (
    TABLE,
    NftNetworkBase,
    NftNetworkRecord,
    NftPendingRecord,
    NftRecord,
    NftRule,
    load_record,
)
from virtfw.rules.nft.syntax import NFT_FAMILY as FAMILIES
from virtfw.rules.nft.syntax import render_rule
from virtfw.rules.runner import Runner

NetworkInstalled = Installed[NftRecord, NftNetworkBase]

# Host input/output rules only matter where they can override a host firewall's drop;
# an accept in a private nft table cannot (every table's verdict counts), so, as in
# libvirt, they are left out. nft has no checksum-fill; libvirt uses tc for it.
CHAINS = {
    Chain.FWD_CROSS: "guest_cross",
    Chain.FWD_IN: "guest_input",
    Chain.FWD_OUT: "guest_output",
    Chain.NAT_POST: "guest_nat",
}


def base_commands(fam: str) -> list[str]:
    """The table and chains, in libvirt's order (jumps end up cross, input, output)."""
    t = f"{fam} {TABLE}"
    lines = [
        f"add table {t}",
        f"add chain {t} forward {{ type filter hook forward priority 0; policy accept; }}",
    ]
    for chain in ("guest_output", "guest_input", "guest_cross"):
        lines += [f"add chain {t} {chain}", f"insert rule {t} forward counter jump {chain}"]
    lines.append(f"add chain {t} guest_nat {{ type nat hook postrouting priority 100; policy accept; }}")
    return lines


def rule_digest(expr: list) -> str:
    """A rule's statements as nft lists them, counters' figures left out: equal for the rule
    installed and for the same rule later, different once someone replaced it."""
    import hashlib

    def scrub(value: object) -> object:
        if isinstance(value, dict):
            return {k: (None if k == "counter" else scrub(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return hashlib.sha256(json.dumps(scrub(expr), sort_keys=True).encode()).hexdigest()[:16]


JUMPED = ("guest_cross", "guest_input", "guest_output")


def _jump_target(expr: list) -> str | None:
    for statement in expr:
        if isinstance(statement, dict) and "jump" in statement:
            return statement["jump"].get("target")
    return None


class NftablesBackend:
    name = "nftables"

    def _tables(self, runner: Runner) -> dict[str, int]:
        """Our tables that exist now, by family, with their kernel handles."""
        result = runner.query(["nft", "-j", "list", "tables"])
        if result.returncode != 0 or not result.stdout.strip():
            return {}
        found = {}
        for item in json.loads(result.stdout).get("nftables", []):
            table = item.get("table")
            if table and table["name"] == TABLE and table["family"] in FAMILIES.values():
                found[table["family"]] = table["handle"]
        return found

    def install(
        self,
        runner: Runner,
        rulesets: list[RuleSet],
        *,
        rebuild: bool = False,
        before_apply: Callable[[NetworkInstalled], None] | None = None,
    ) -> NetworkInstalled:
        present = self._tables(runner)
        lines: list[str] = []
        created: list[str] = []
        for fam in FAMILIES.values():
            if fam in present and rebuild:
                lines.append(f"delete table {fam} {TABLE}")
            if fam not in present or rebuild:
                lines += base_commands(fam)
                created.append(fam)
        owners: list[tuple[str, str, str, str]] = []  # (owner, family, chain, rule) per rule line
        for ruleset in rulesets:
            for rule in reversed(ruleset.rules):
                chain = CHAINS.get(rule.chain)
                if chain is None:
                    continue
                fam = FAMILIES[rule.family]
                text = render_rule(rule)
                lines.append(f"insert rule {fam} {TABLE} {chain} {text}")
                owners.append((ruleset.owner, fam, chain, text))
        if before_apply:
            # Handles are known only once nft has run: until then a killed process is
            # cleaned up by rebuilding our tables from what is still active.
            pending: dict[str, NftRecord] = {rs.owner: NftPendingRecord() for rs in rulesets}
            unknown = NftNetworkBase(tuple((fam, None) for fam in created), handles_known=False)
            before_apply(Installed(pending, unknown if created else None))
        result = runner.run_file(["nft", "-j", "-e", "-a", "-f"], "\n".join(lines) + "\n")
        echoed, tables = self._echoed(result.stdout, len(owners))
        tables = {**present, **tables}
        rules: dict[str, list[NftRule]] = {ruleset.owner: [] for ruleset in rulesets}
        for (owner, fam, chain, text), (handle, digest) in zip(owners, echoed):
            rules[owner].append(NftRule(fam, chain, handle, text, digest))
        installed: NetworkInstalled = Installed()
        if created:
            installed.base = NftNetworkBase(tuple((fam, tables.get(fam)) for fam in created))
        for owner, added in rules.items():
            families = dict.fromkeys(rule.family for rule in added)
            installed.removals[owner] = NftNetworkRecord(tuple((f, tables.get(f)) for f in families), tuple(added))
        return installed

    def load_record(self, data: object, where: str) -> NftRecord:
        return load_record(data, where)

    def load_base(self, data: object, where: str) -> NftNetworkBase:
        return NftNetworkBase.from_json(data, where)

    @staticmethod
    def _echoed(stdout: str, expected: int) -> tuple[list[tuple[int, str | None]], dict[str, int]]:
        """Each rule's handle and ``rule_digest`` (in batch order, base jumps excluded), and
        the new tables' handles.

        nft echoes a rule as it decodes the kernel's notification of it, the same decoding a
        listing does, so the echo's statements are the ones ``verify`` will list later: no
        second ``nft -j list table`` after the batch (~10 ms a family at every start).
        """
        if not stdout.strip():  # dry run
            return [(0, None)] * expected, {}
        echoed: list[tuple[int, str | None]] = []
        tables: dict[str, int] = {}
        for item in json.loads(stdout).get("nftables", []):
            for verb in ("add", "insert"):
                body = item.get(verb)
                if not body:
                    continue
                if "table" in body and body["table"]["name"] == TABLE:
                    tables[body["table"]["family"]] = body["table"]["handle"]
                rule = body.get("rule")
                if rule and rule["table"] == TABLE and rule["chain"] != "forward":
                    echoed.append((rule["handle"], rule_digest(rule["expr"]) if "expr" in rule else None))
        if len(echoed) != expected:
            raise ToolError(["nft"], 0, f"nft echoed {len(echoed)} rule handles, expected {expected}")
        return echoed, tables

    def remove(self, runner: Runner, removal: NftRecord | NftNetworkBase) -> bool:
        if isinstance(removal, NftPendingRecord):
            return False
        live = self._tables(runner)
        # A table re-created since (flush, reload) has new handles: what we recorded is gone.
        recorded = dict(removal.tables)
        if isinstance(removal, NftNetworkBase):
            lines = [
                f"delete table {fam} {TABLE}"
                for fam in recorded
                if fam in live and (not removal.handles_known or live[fam] == recorded[fam])
            ]
            if lines:
                runner.run(["nft", "-f", "-"], stdin="\n".join(lines) + "\n")
            return True
        rules = [rule for rule in removal.rules if live.get(rule.family) == recorded.get(rule.family)]
        if not rules:
            return True
        try:
            runner.run(["nft", "-f", "-"], stdin="".join(rule.delete + "\n" for rule in rules))
        except ToolError:
            existing = self._rule_handles(runner, {rule.family for rule in rules})
            rules = [rule for rule in rules if (rule.family, rule.chain, rule.handle) in existing]
            if rules:
                runner.run(["nft", "-f", "-"], stdin="".join(rule.delete + "\n" for rule in rules))
        return True

    @staticmethod
    def _rule_handles(runner: Runner, families: set[str]) -> set[tuple[str, str, int]]:
        found = set()
        for fam in sorted(families):
            argv = ["nft", "-j", "list", "table", fam, TABLE]
            result = runner.run(argv, change=False, check=False)
            if result.returncode != 0:
                if "No such file or directory" in result.stderr:
                    continue  # the table is gone, and its rules with it
                raise ToolError(argv, result.returncode, result.stderr)
            for item in json.loads(result.stdout).get("nftables", []):
                rule = item.get("rule")
                if rule:
                    found.add((fam, rule["chain"], rule["handle"]))
        return found

    @staticmethod
    def _listed(runner: Runner, families: set[str]) -> dict[tuple[str, str, int], str]:
        """(family, chain, handle) -> ``rule_digest`` of each rule in our tables, as listed now."""
        found = {}
        for fam in sorted(families):
            result = runner.run(["nft", "-j", "list", "table", fam, TABLE], change=False, check=False)
            if result.returncode != 0:
                continue
            for item in json.loads(result.stdout or "{}").get("nftables", []):
                rule = item.get("rule")
                if rule:
                    found[(fam, rule["chain"], rule["handle"])] = rule_digest(rule.get("expr", []))
        return found

    def snapshot(self, runner: Runner) -> None:
        """Nothing read ahead: each check lists what it looks at (by handle) itself."""

    def verify(self, runner: Runner, removal: NftRecord | NftNetworkBase, live: None = None) -> list[str]:
        """What of ``removal``'s rules the kernel no longer holds (handles are never reused)."""
        if isinstance(removal, NftPendingRecord):
            return ["the start was interrupted before its rules were recorded"]
        tables = self._tables(runner)
        any_handle = isinstance(removal, NftNetworkBase) and not removal.handles_known
        problems = [
            f"table {fam} {TABLE} is missing" if fam not in tables else f"table {fam} {TABLE} was re-created"
            for fam, handle in removal.tables
            if tables.get(fam) != handle and not any_handle
        ]
        if problems:
            return problems
        families = [fam for fam, _ in removal.tables]
        if isinstance(removal, NftNetworkBase):  # the base: its hook jumps and chain policies
            return self._verify_jumps(runner, families)
        listed = self._listed(runner, set(families))
        for rule in removal.rules:
            key = (rule.family, rule.chain, rule.handle)
            if key not in listed:
                problems.append(f"rule missing from {rule.family} {TABLE} {rule.chain}: {rule.text}")
            elif rule.digest is not None and listed[key] != rule.digest:
                problems.append(
                    f"rule changed in {rule.family} {TABLE} {rule.chain} (handle {rule.handle}): {rule.text}"
                )
        return problems

    def matches(self, ruleset: RuleSet, removal: NftRecord) -> bool:
        """Whether installing ``ruleset`` now would add the very rules ``removal`` holds."""
        if not isinstance(removal, NftNetworkRecord):
            return False
        wanted = sorted(
            (FAMILIES[rule.family], CHAINS[rule.chain], render_rule(rule))
            for rule in ruleset.rules
            if rule.chain in CHAINS
        )
        return wanted == sorted((rule.family, rule.chain, rule.text) for rule in removal.rules)

    def unexpected(self, runner: Runner, removals: list[NftRecord], live: None = None) -> list[str]:
        """Rules in our tables that no record holds (someone added them), one line per chain."""
        recorded = {(r.family, r.chain, r.handle) for removal in removals if isinstance(removal, NftNetworkRecord)
                    for r in removal.rules}  # fmt: skip
        extra: dict[tuple[str, str], int] = {}
        for fam in FAMILIES.values():
            result = runner.run(["nft", "-j", "list", "table", fam, TABLE], change=False, check=False)
            if result.returncode != 0:
                continue
            for item in json.loads(result.stdout or "{}").get("nftables", []):
                rule = item.get("rule")
                if not rule:
                    continue
                key = (fam, rule["chain"], rule["handle"])
                jump = rule["chain"] == "forward" and _jump_target(rule.get("expr", [])) in JUMPED
                if key not in recorded and not jump:
                    extra[(fam, rule["chain"])] = extra.get((fam, rule["chain"]), 0) + 1
        return [
            f"{count} rule(s) in {fam} {TABLE} {chain} that virtfw did not add" for (fam, chain), count in extra.items()
        ]

    @staticmethod
    def _verify_jumps(runner: Runner, families: list[str]) -> list[str]:
        problems = []
        for fam in sorted(families):
            result = runner.run(["nft", "-j", "list", "chain", fam, TABLE, "forward"], change=False, check=False)
            text = result.stdout if result.returncode == 0 else ""
            for chain in ("guest_cross", "guest_input", "guest_output"):
                if f'"target": "{chain}"' not in text:
                    problems.append(f"{fam} {TABLE} forward no longer jumps to {chain}")
            listed = runner.run(["nft", "-j", "list", "chains", fam], change=False, check=False)
            for item in json.loads(listed.stdout or "{}").get("nftables", []) if listed.returncode == 0 else []:
                chain = item.get("chain")
                if chain and chain.get("table") == TABLE and chain.get("policy", "accept") != "accept":
                    problems.append(f"{fam} {TABLE} {chain['name']} has policy {chain['policy']}, not accept")
        return problems

    def foreign_drops(self, runner: Runner, bridges: list[str]) -> list[str]:
        """Another manager's forward chain with policy drop also sees guest traffic and drops it.

        nftables evaluates every table's base chains: an accept in ours does not stop a drop
        in Docker's or firewalld's, so say where it is and how to let guests through.
        """
        result = runner.run(["nft", "-j", "list", "chains"], change=False, check=False)
        if result.returncode != 0:
            return []
        problems = []
        for item in json.loads(result.stdout or "{}").get("nftables", []):
            chain = item.get("chain")
            if not chain or chain.get("hook") != "forward" or chain.get("policy") != "drop":
                continue
            if chain["table"].startswith("virtfw_") or chain["family"] not in ("ip", "ip6", "inet"):
                continue
            names = ", ".join(f'"{b}"' for b in bridges)
            where = f"{chain['family']} {chain['table']} {chain['name']}"
            problems.append(
                f"{where} has policy drop and drops guest traffic virtfw accepts: let the bridges through "
                f"there, e.g. 'nft insert rule {where} iifname {{ {names} }} accept' and the same with oifname"
                + (
                    " (Docker: 'iptables -I DOCKER-USER -i BRIDGE -j ACCEPT' and -o)"
                    if chain["table"] == "filter"
                    else ""
                )
            )
        return problems
