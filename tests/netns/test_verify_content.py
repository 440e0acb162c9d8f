"""verify reads what the rules say, not only that a rule is there (nftables): a rule an admin
replaced in place (same handle, ``nft replace rule``) and a chain of ours given policy drop
are reported, and ``reload`` puts both back."""

from __future__ import annotations

import json

import pytest
from helpers.nsutil import Virtfw, netns, verify_problems

pytestmark = pytest.mark.netns


def reject_handle(vfw: Virtfw) -> int:
    listed = json.loads(vfw.ns.sh("nft", "-j", "list", "chain", "ip", "virtfw_network", "guest_output"))
    for item in listed["nftables"]:
        rule = item.get("rule")
        if rule and any("reject" in statement for statement in rule["expr"]):
            return rule["handle"]
    raise AssertionError("no reject rule in guest_output")


def test_a_rule_replaced_in_place_and_a_drop_policy_are_reported(tmp_path) -> None:
    with netns("vfwC") as ns:
        vfw = Virtfw(ns, tmp_path, "nftables")
        vfw("net-start", "default")
        assert verify_problems(vfw) == []
        handle = reject_handle(vfw)
        ns.sh("nft", "replace", "rule", "ip", "virtfw_network", "guest_output", "handle", str(handle), "accept")
        problems = verify_problems(vfw)
        assert len(problems) == 1 and "rule changed" in problems[0] and "reject" in problems[0], problems
        vfw("reload")
        assert verify_problems(vfw) == []
        ns.sh("nft", "add", "chain", "ip", "virtfw_network", "forward", "{ policy drop; }")
        problems = verify_problems(vfw)
        assert problems == [
            "base chains (nftables): ip virtfw_network forward has policy drop, not accept; virtfw reload re-installs it"
        ], problems
        vfw("reload")
        assert verify_problems(vfw) == []
        vfw("net-destroy", "default")
