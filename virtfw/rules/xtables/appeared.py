"""Tables and builtin chains that iptables-nft/ebtables-nft make appear on first use.

Legacy tools have them all along; the nf_tables variants create them the first time
a rule goes in. What appeared for us is removed again at teardown when nothing else
was put in it, so teardown leaves the ruleset as it found it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from virtfw.errors import ToolError
from virtfw.rules import records
from virtfw.rules.runner import Runner


@dataclass(frozen=True)
class Appeared:
    """What an install made appear in one nft family: whole tables, and builtin chains
    of tables that were there already. JSON: ``{"tables": [T...], "chains": [[T, C]...]}``."""

    tables: tuple[str, ...] = ()
    chains: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.tables or self.chains)

    def to_json(self) -> dict:
        return {"tables": list(self.tables), "chains": [list(chain) for chain in self.chains]}

    @classmethod
    def from_json(cls, data: object, where: str) -> Appeared:
        fields = records.obj(data, where, {"tables", "chains"})
        chains = records.items(fields.get("chains", []), f"{where}.chains", records.texts)
        if any(len(chain) != 2 for chain in chains):
            raise records.fail(f"{where}.chains", "expected [table, chain] pairs")
        return cls(
            tuple(records.texts(fields.get("tables", []), f"{where}.tables")),
            tuple((table, chain) for table, chain in chains),
        )

    def union(self, other: Appeared) -> Appeared:
        """Both records' tables and chains, each once, in the order first seen."""
        return Appeared(
            tuple(dict.fromkeys(self.tables + other.tables)), tuple(dict.fromkeys(self.chains + other.chains))
        )


def nft_items(runner: Runner, what: list[str]) -> list[dict]:
    """``nft -j list WHAT``; [] when it does not exist, an error on any other failure."""
    argv = ["nft", "-j", "list", *what]
    result = runner.run(argv, change=False, check=False)
    if result.returncode != 0:
        if "No such file or directory" in result.stderr:
            return []
        raise ToolError(argv, result.returncode, result.stderr)
    return json.loads(result.stdout or "{}").get("nftables", [])


def drop_appeared(runner: Runner, family: str, appeared: Appeared | dict) -> None:
    """Delete the recorded chains, then tables, of nft ``family`` if still empty and open."""
    if isinstance(appeared, dict):  # until every caller holds typed records
        appeared = Appeared.from_json(appeared, "appeared")
    for table, chain in appeared.chains:
        items = nft_items(runner, ["chain", family, table, chain])
        policy = next((i["chain"].get("policy") for i in items if "chain" in i), None)
        if items and not any("rule" in i for i in items) and policy in (None, "accept"):
            runner.run(["nft", "delete", "chain", family, table, chain])
    for table in appeared.tables:
        items = nft_items(runner, ["table", family, table])
        policies = [i["chain"].get("policy") for i in items if "chain" in i]
        if items and not any("rule" in i for i in items) and all(p in (None, "accept") for p in policies):
            runner.run(["nft", "delete", "table", family, table])
