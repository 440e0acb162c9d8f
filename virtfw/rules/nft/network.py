"""nftables backend: private ``ip``/``ip6`` tables changed by one atomic ``nft -f`` batch.

The layout is libvirt's (table ``libvirt_network`` renamed ``virtfw_network``) so an
admin who knows one knows the other. Handles of added rules come back from the
same batch (``--echo --handle`` with JSON output) and become the removal record.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from virtfw.errors import ToolError
from virtfw.rules.backend import Installed
from virtfw.rules.netrules import (
    Action,
    Addr,
    Chain,
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
from virtfw.rules.nft.network_records import TABLE, NftBase, NftIntent, NftRecord, NftRule, NftRules, load_record
from virtfw.rules.runner import Runner

FAMILIES = {Family.IPV4: "ip", Family.IPV6: "ip6"}
ADDR_KEYWORD = {"ip": "ip", "ip6": "ip6"}

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


def render_match(match: Match, fam: str) -> str:
    if isinstance(match, Iface):
        key = ("iif" if match.inbound else "oif") + ("" if match.by_index else "name")
        return f'{key} "{match.name}"'
    if isinstance(match, Addr):
        op = "!= " if match.negate else ""
        return f"{ADDR_KEYWORD[fam]} {'saddr' if match.source else 'daddr'} {op}{match.cidr}"
    if isinstance(match, Proto):
        return f"meta l4proto {match.name}"
    if isinstance(match, DPort):
        return f"{match.proto} dport {match.port}"
    if isinstance(match, CtState):
        return "ct state " + ",".join(match.states)
    raise TypeError(f"cannot render {match!r}")


def render_verdict(verdict: Verdict, fam: str) -> str:
    action = verdict.action
    ports = f":{verdict.ports[0]}-{verdict.ports[1]}" if verdict.ports else ""
    if action is Action.MASQUERADE:
        return f"masquerade to {ports}" if ports else "masquerade"
    if action is Action.SNAT:
        start, end = verdict.addresses
        return f"snat to {start}{'-' + end if end else ''}{ports}"
    return action.value


def render_rule(rule: Rule) -> str:
    fam = FAMILIES[rule.family]
    parts = [render_match(m, fam) for m in rule.matches]
    parts += ["counter", render_verdict(rule.verdict, fam)]
    return " ".join(parts)


class NftablesBackend:
    """Networks' rules in our tables ``ip``/``ip6 virtfw_network``; the contract is rules/backend.py's."""

    name = "nftables"

    def load_record(self, data: object, where: str) -> NftRecord:
        return load_record(data, where)

    def load_base(self, data: object, where: str) -> NftBase:
        return NftBase.from_json(data, where)

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
        before_apply: Callable[[Installed[NftRecord, NftBase]], None] | None = None,
    ) -> Installed[NftRecord, NftBase]:
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
            before_apply(Installed(
                removals={rs.owner: NftIntent() for rs in rulesets},
                base=NftBase(dict.fromkeys(created), handles_unknown=True) if created else None,
            ))  # fmt: skip
        result = runner.run_file(["nft", "-j", "-e", "-a", "-f"], "\n".join(lines) + "\n")
        handles, tables = self._echoed(result.stdout, len(owners))
        tables = {**present, **tables}
        added: dict[str, list[NftRule]] = {rs.owner: [] for rs in rulesets}
        for (owner, fam, chain, text), handle in zip(owners, handles):
            added[owner].append(NftRule(fam, chain, handle, text))
        installed: Installed[NftRecord, NftBase] = Installed()
        if created:
            installed.base = NftBase({fam: tables.get(fam) for fam in created})
        for owner, rules in added.items():
            installed.removals[owner] = NftRules({r.family: tables.get(r.family) for r in rules}, tuple(rules))
        return installed

    @staticmethod
    def _echoed(stdout: str, expected: int) -> tuple[list[int], dict[str, int]]:
        """Rule handles (in batch order, base jumps excluded) and new table handles."""
        if not stdout.strip():  # dry run
            return [0] * expected, {}
        handles: list[int] = []
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
                    handles.append(rule["handle"])
        if len(handles) != expected:
            raise ToolError(["nft"], 0, f"nft echoed {len(handles)} rule handles, expected {expected}")
        return handles, tables

    def remove(self, runner: Runner, record: NftRecord | NftBase) -> bool:
        if isinstance(record, NftIntent):
            return False
        live = self._tables(runner)
        if isinstance(record, NftBase):
            self._delete_tables(runner, record, live)
        else:
            self._delete_rules(runner, record, live)
        return True

    def _delete_tables(self, runner: Runner, base: NftBase, live: dict[str, int]) -> None:
        # A table re-created since (flush, reload) has new handles: the recorded one is gone.
        families = [
            fam for fam, handle in base.tables.items() if fam in live and (base.handles_unknown or live[fam] == handle)
        ]
        if not families:
            return
        try:
            _run_batch(runner, [f"delete table {fam} {TABLE}" for fam in families])
        except ToolError:
            live = self._tables(runner)  # gone meanwhile? the rest still goes
            families = [fam for fam in families if fam in live]
            if families:
                _run_batch(runner, [f"delete table {fam} {TABLE}" for fam in families])

    def _delete_rules(self, runner: Runner, record: NftRules, live: dict[str, int]) -> None:
        rules = [r for r in record.rules if r.family in live and live[r.family] == record.tables.get(r.family)]
        if not rules:
            return
        try:
            _run_batch(runner, [rule.delete_command() for rule in rules])
        except ToolError:
            existing = self._rule_handles(runner, {rule.family for rule in rules})
            rules = [rule for rule in rules if rule.key in existing]
            if rules:
                _run_batch(runner, [rule.delete_command() for rule in rules])

    @staticmethod
    def _rule_handles(runner: Runner, families: set[str]) -> set[tuple[str, str, int]]:
        found = set()
        for fam in families:
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

    def verify(self, runner: Runner, record: NftRecord | NftBase) -> list[str]:
        """What of the record's rules the kernel no longer holds (handles are never reused)."""
        if isinstance(record, NftIntent):
            return ["the start was interrupted before its rules were recorded"]
        live = self._tables(runner)
        by_handle = not (isinstance(record, NftBase) and record.handles_unknown)
        problems = [
            f"table {fam} {TABLE} is missing" if fam not in live else f"table {fam} {TABLE} was re-created"
            for fam, handle in record.tables.items()
            if by_handle and live.get(fam) != handle
        ]  # fmt: skip
        if problems:
            return problems
        if isinstance(record, NftBase):
            return self._verify_jumps(runner, list(record.tables))
        existing = self._rule_handles(runner, set(record.tables))
        return [
            f"rule missing from {rule.family} {TABLE} {rule.chain}: {rule.text}"
            for rule in record.rules
            if rule.key not in existing
        ]

    @staticmethod
    def _verify_jumps(runner: Runner, families: list[str]) -> list[str]:
        problems = []
        for fam in families:
            result = runner.run(["nft", "-j", "list", "chain", fam, TABLE, "forward"], change=False, check=False)
            text = result.stdout if result.returncode == 0 else ""
            for chain in ("guest_cross", "guest_input", "guest_output"):
                if f'"target": "{chain}"' not in text:
                    problems.append(f"{fam} {TABLE} forward no longer jumps to {chain}")
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


def _run_batch(runner: Runner, lines: list[str]) -> None:
    runner.run(["nft", "-f", "-"], stdin="\n".join(lines) + "\n")
