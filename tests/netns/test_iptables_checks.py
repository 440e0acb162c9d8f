"""iptables: ``reload`` decides two networks' rules are intact, and ``verify`` finds them in
place, with one ``iptables-save`` and one ``ip6tables-save`` and no other tool (no ``-C``
per rule); a rule changed in place (``iptables -R``: the negation of the masquerade rule's
destination dropped, or an option given to its target) is still reported and rebuilt.

Tool calls are counted by the wrappers of ``helpers.faults`` put on PATH in front of the
real tools; everything runs in a namespace made here.
"""

from __future__ import annotations

import pytest
from helpers.faults import Wrappers
from helpers.nsutil import Virtfw, define_second, netns, ruleset, verify_problems

pytestmark = pytest.mark.netns

MASQUERADE = "-s 192.168.122.0/24 ! -d 192.168.122.0/24 -j MASQUERADE"
SAVES = ["iptables-save", "ip6tables-save"]


def saved_rules(vfw: Virtfw, chain: str, table: str) -> list[str]:
    return [line for line in vfw.ns.sh("iptables", "-t", table, "-S", chain).splitlines() if line.startswith("-A")]


def test_reload_and_verify_of_two_intact_networks_read_one_save_per_family(tmp_path) -> None:
    with netns("vfwK") as ns:
        vfw = Virtfw(ns, tmp_path, "iptables")
        define_second(vfw, tmp_path)
        vfw("net-start", "default")
        vfw("net-start", "second")
        wrap = Wrappers(tmp_path / "wrap")
        before = ruleset(ns, "iptables")
        vfw("reload", env=wrap.env)
        assert [call.strip() for call in wrap.calls()] == SAVES, wrap.calls()
        assert ruleset(ns, "iptables") == before
        wrap.arm()
        proc = vfw("verify", env=wrap.env)
        assert proc.stdout.startswith("OK"), proc.stdout
        assert [call.strip() for call in wrap.calls()] == SAVES, wrap.calls()
        vfw("net-destroy", "second")
        vfw("net-destroy", "default")


@pytest.mark.parametrize(
    "replacement",
    [
        "-s 192.168.122.0/24 -d 192.168.122.0/24 -j MASQUERADE",  # the one '!' gone
        "-s 192.168.122.0/24 ! -d 192.168.122.0/24 -j MASQUERADE --random",  # a target option added
    ],
)
def test_a_rule_replaced_in_place_is_reported_and_reload_rebuilds(tmp_path, replacement: str) -> None:
    with netns("vfwK") as ns:
        vfw = Virtfw(ns, tmp_path, "iptables")
        vfw("net-start", "default")
        installed = ruleset(ns, "iptables")
        rules = saved_rules(vfw, "VIRTFW_PRT", "nat")
        position = rules.index(f"-A VIRTFW_PRT {MASQUERADE}") + 1
        ns.sh("iptables", "-w", "-t", "nat", "-R", "VIRTFW_PRT", str(position), *replacement.split())
        assert f"-A VIRTFW_PRT {replacement}" in saved_rules(vfw, "VIRTFW_PRT", "nat")
        assert verify_problems(vfw) == [
            f"network default: iptables -t nat -A VIRTFW_PRT {MASQUERADE} is missing; virtfw reload re-installs it"
        ]
        vfw("reload")
        assert verify_problems(vfw) == []
        assert ruleset(ns, "iptables") == installed
        vfw("net-destroy", "default")
