"""nftables backend: private ``ip``/``ip6`` tables changed by one atomic ``nft -f`` batch.

The layout is libvirt's (table ``libvirt_network`` renamed ``virtfw_network``) so an
admin who knows one knows the other. Handles of added rules come back from the
same batch (``--echo --handle`` with JSON output) and become the removal record.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from virtfw.errors import ToolError
from virtfw.rules.backend import Installed, Removal
from virtfw.rules.netrules import Chain, RuleSet
from virtfw.rules.nft.syntax import NFT_FAMILY as FAMILIES
from virtfw.rules.nft.syntax import render_rule
from virtfw.rules.runner import Runner

TABLE = "virtfw_network"

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
        before_apply: Callable[[Installed], None] | None = None,
    ) -> Installed:
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
                removals={rs.owner: {"backend": self.name, "rebuild": True} for rs in rulesets},
                base=self._base_record(created, {}, any_handle=True) if created else None,
            ))  # fmt: skip
        result = runner.run_file(["nft", "-j", "-e", "-a", "-f"], "\n".join(lines) + "\n")
        handles, tables = self._echoed(result.stdout, len(owners))
        tables = {**present, **tables}
        installed = Installed()
        if created:
            installed.base = self._base_record(created, tables)
        for ruleset in rulesets:
            installed.removals[ruleset.owner] = {"backend": self.name, "tables": {}, "batch": []}
        for (owner, fam, chain, text), handle in zip(owners, handles):
            record = installed.removals[owner]
            record["tables"][fam] = tables.get(fam)
            record["batch"].append(f"delete rule {fam} {TABLE} {chain} handle {handle}")
            record.setdefault("rules", {})[str(handle)] = text  # for verify's messages
        return installed

    def _base_record(self, created: list[str], tables: dict[str, int], any_handle: bool = False) -> Removal:
        record = {
            "backend": self.name,
            "tables": {fam: tables.get(fam) for fam in created},
            "batch": [f"delete table {fam} {TABLE}" for fam in created],
        }
        if any_handle:
            record["any_handle"] = True
        return record

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

    def remove(self, runner: Runner, removal: Removal) -> bool:
        if removal.get("rebuild"):
            return False
        live = self._tables(runner)
        # A table re-created since (flush, reload) has new handles: what we recorded is gone.
        if removal.get("any_handle"):  # intent of a killed start: our tables, whatever handle
            lines = [f"delete table {fam} {TABLE}" for fam in removal["tables"] if fam in live]
        else:
            lines = [
                line for line in removal.get("batch", [])
                if live.get(line.split()[2]) == removal["tables"].get(line.split()[2])
            ]  # fmt: skip
        if not lines:
            return True
        try:
            runner.run(["nft", "-f", "-"], stdin="\n".join(lines) + "\n")
        except ToolError:
            existing = self._rule_handles(runner, {line.split()[2] for line in lines})
            lines = [line for line in lines if self._key(line) in existing or line.startswith("delete table")]
            if lines:
                runner.run(["nft", "-f", "-"], stdin="\n".join(lines) + "\n")
        return True

    @staticmethod
    def _key(line: str) -> tuple[str, str, int]:
        words = line.split()  # delete rule FAM TABLE CHAIN handle N
        return (words[2], words[4], int(words[6])) if words[1] == "rule" else ("", "", -1)

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

    def verify(self, runner: Runner, removal: Removal) -> list[str]:
        """What of ``removal``'s rules the kernel no longer holds (handles are never reused)."""
        if removal.get("rebuild"):
            return ["the start was interrupted before its rules were recorded"]
        live = self._tables(runner)
        problems = [
            f"table {fam} {TABLE} is missing" if fam not in live else f"table {fam} {TABLE} was re-created"
            for fam, handle in removal.get("tables", {}).items()
            if live.get(fam) != handle and not removal.get("any_handle")
        ]  # fmt: skip
        if problems:
            return problems
        existing = self._rule_handles(runner, set(removal.get("tables", {})))
        for line in removal.get("batch", []):
            if line.startswith("delete rule") and self._key(line) not in existing:
                fam, chain, handle = self._key(line)
                text = removal.get("rules", {}).get(str(handle), f"handle {handle}")
                problems.append(f"rule missing from {fam} {TABLE} {chain}: {text}")
        if "delete table" in " ".join(removal.get("batch", [])):  # the base: its hook jumps
            problems += self._verify_jumps(runner, list(removal.get("tables", {})))
        return problems

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

    def merge_base(self, old: Removal | None, new: Removal | None) -> Removal | None:
        if not old or not new:
            return new or old
        tables = {**old["tables"], **new["tables"]}
        merged = self._base_record(
            list(tables), tables, any_handle=bool(old.get("any_handle") or new.get("any_handle"))
        )
        return merged
