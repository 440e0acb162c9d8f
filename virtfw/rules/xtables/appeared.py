"""Tables and builtin chains that iptables-nft/ebtables-nft make appear on first use.

Legacy tools have them all along; the nf_tables variants create them the first time
a rule goes in. What appeared for us is removed again at teardown when nothing else
was put in it, so teardown leaves the ruleset as it found it.
"""

from __future__ import annotations

import json

from virtfw.errors import ToolError
from virtfw.rules.runner import Runner


def nft_items(runner: Runner, what: list[str]) -> list[dict]:
    """``nft -j list WHAT``; [] when it does not exist, an error on any other failure."""
    argv = ["nft", "-j", "list", *what]
    result = runner.run(argv, change=False, check=False)
    if result.returncode != 0:
        if "No such file or directory" in result.stderr:
            return []
        raise ToolError(argv, result.returncode, result.stderr)
    return json.loads(result.stdout or "{}").get("nftables", [])


def drop_appeared(runner: Runner, family: str, appeared: dict) -> None:
    """Delete the recorded chains, then tables, of nft ``family`` if still empty and open."""
    for table, chain in appeared.get("chains", []):
        items = nft_items(runner, ["chain", family, table, chain])
        policy = next((i["chain"].get("policy") for i in items if "chain" in i), None)
        if items and not any("rule" in i for i in items) and policy in (None, "accept"):
            runner.run(["nft", "delete", "chain", family, table, chain])
    for table in appeared.get("tables", []):
        items = nft_items(runner, ["table", family, table])
        policies = [i["chain"].get("policy") for i in items if "chain" in i]
        if items and not any("rule" in i for i in items) and all(p in (None, "accept") for p in policies):
            runner.run(["nft", "delete", "table", family, table])
