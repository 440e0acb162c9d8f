"""The iptables-mode nwfilter backend (virtfw/rules/xtables/filter.py) with the real tools.

Each test runs the backend in a Python process inside a namespace it creates
(``in_ns``), on hand-made rules (``helpers.filter_rules``), and reads the tools' tables
back. The rendering itself is unit-tested in ``tests/unit/test_ebiptables_render.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers.nsutil import Netns, netns, normalize_iptables_save, ruleset


def snapshot(ns: Netns) -> str:
    eb = normalize_iptables_save(ns.sh("ebtables-save"))
    tables = sorted(ns.sh("nft", "list", "tables").splitlines())
    return eb + "\n" + ruleset(ns, "iptables") + "\n" + "\n".join(tables)


def in_ns(ns: Netns, code: str) -> str:
    """Run backend code in a Python process inside NS; ``ports(n)``, ``backend``, ``runner``,
    ``json``, ``records`` (an install's records as JSON) and ``loaded`` (back again) are at
    hand; what it prints comes back."""
    prelude = (
        "import json, sys\n"
        f"sys.path[:0] = [{str(Path(__file__).resolve().parents[2])!r}, {str(Path(__file__).resolve().parents[1])!r}]\n"
        "from helpers.filter_rules import rule, port, demo_rules\n"
        "from virtfw.rules.xtables.filter import EbiptablesFilterBackend\n"
        "from virtfw.rules.runner import Runner\n"
        "backend, runner = EbiptablesFilterBackend(), Runner()\n"
        "def records(installed):\n"
        "    return {owner: record.to_json() for owner, record in installed.removals.items()}\n"
        "def loaded(removals):\n"
        "    return {owner: backend.load_record(record, owner) for owner, record in removals.items()}\n"
    )
    return ns.run([sys.executable, "-c", prelude + code], timeout=300).stdout


@pytest.mark.netns
def test_install_then_remove_leaves_nothing() -> None:
    with netns("vfwU") as ns:
        out = in_ns(
            ns,
            (
                "inst = backend.install(runner, [port(demo_rules(), 'vnet0'), port(demo_rules(), 'vnet1')])\n"
                "print(json.dumps([[a[0] for a in runner.log], records(inst), inst.base.to_json()]))\n"
            ),
        )
        assert "virtfw-I-vnet1" in snapshot(ns) and "FO-vnet1" in snapshot(ns)
        log, removals, base = json.loads(out)
        changes = [tool for tool in log if tool.endswith("-restore")]
        assert changes == ["ebtables-restore", "iptables-restore", "ip6tables-restore"]
        assert removals["binding:vnet0"]["ebtables"]["nat"][:2] == [
            "-D PREROUTING -i vnet0 -j virtfw-I-vnet0",
            "-D POSTROUTING -o vnet0 -j virtfw-O-vnet0",
        ]
        assert removals["binding:vnet0"]["ipv4"]["filter"][-1] == "-X HI-vnet0"
        in_ns(
            ns,
            (
                f"removals, base = {removals!r}, {base!r}\n"
                "assert all(backend.remove(runner, r) for r in loaded(removals).values())\n"
                "assert backend.remove(runner, backend.load_base(base, 'base'))\n"
            ),
        )
        assert snapshot(ns).strip() == "# iptables-save\n# ip6tables-save"


@pytest.mark.netns
def test_replace_swaps_old_rules_in_one_batch_per_tool() -> None:
    with netns("vfwU") as ns:
        in_ns(
            ns,
            (
                "first = backend.install(runner, [port(demo_rules(0))])\n"
                "runner.log.clear()\n"
                "second = backend.install(runner, [port(demo_rules(1))], old=first.removals)\n"
                "assert [a[0] for a in runner.log if a[0].endswith('-restore')] == "
                "['ebtables-restore', 'iptables-restore', 'ip6tables-restore']\n"
            ),
        )
        replaced = snapshot(ns)
    with netns("vfwV") as ns:
        in_ns(ns, "backend.install(runner, [port(demo_rules(1))])\n")
        fresh = snapshot(ns)
    assert replaced == fresh  # the ipv4 sub-chain of the old rules is gone too
    assert "I-vnet0-ipv4" not in replaced and "--dport 23" in replaced


@pytest.mark.netns
def test_failed_later_batch_rolls_back_to_the_old_rules() -> None:
    """ip6tables refuses the new rules (a missing ipset): the ebtables and iptables
    batches that went in are taken back, and the old rules are in place again."""
    with netns("vfwU") as ns:
        out = in_ns(
            ns,
            (
                "first = backend.install(runner, [port(demo_rules(0)), port(demo_rules(0), 'vnet1')])\n"
                "print(json.dumps(records(first)))\n"
            ),
        )
        before = snapshot(ns)
        removals = json.loads(out)
        out = in_ns(
            ns,
            (
                "from virtfw.errors import ToolError\n"
                f"old = loaded({removals!r})\n"
                "bad = demo_rules(1) + [rule('tcp-ipv6', ipset='missing', ipsetflags='src')]\n"
                "try:\n"
                "    backend.install(runner, [port(bad), port(demo_rules(1), 'vnet1')], old=old)\n"
                "except ToolError as error:\n"
                "    print('refused:', error)\n"
            ),
        )
        assert "refused: ip6tables-restore failed" in out
        assert snapshot(ns) == before


@pytest.mark.netns
def test_rebuild_restores_hand_flushed_rules_and_is_idempotent() -> None:
    with netns("vfwU") as ns:
        in_ns(ns, "backend.install(runner, [port(demo_rules(0)), port(demo_rules(0), 'vnet1')])\n")
        wanted = snapshot(ns)
        ns.run(["iptables", "-w", "-F", "virtfw-in"])
        ns.run(["iptables", "-w", "-D", "FORWARD", "-j", "virtfw-out"])
        ns.run(["ebtables", "-t", "nat", "-F", "I-vnet0-arp"])
        ns.run(["ebtables", "-t", "nat", "-D", "POSTROUTING", "-o", "vnet1", "-j", "virtfw-O-vnet1"])
        assert snapshot(ns) != wanted
        rebuild = "backend.install(runner, [port(demo_rules(0)), port(demo_rules(0), 'vnet1')], rebuild=True)\n"
        in_ns(ns, rebuild)
        assert snapshot(ns) == wanted
        in_ns(ns, rebuild)
        assert snapshot(ns) == wanted
        in_ns(ns, "backend.install(runner, [port(demo_rules(0))], rebuild=True)\n")
        only_one = snapshot(ns)
        assert "vnet1" not in only_one and "virtfw-I-vnet0" in only_one


@pytest.mark.netns
def test_remove_tolerates_rules_already_gone() -> None:
    with netns("vfwU") as ns:
        out = in_ns(ns, "print(json.dumps(records(backend.install(runner, [port(demo_rules())]))))\n")
        ns.run(["iptables", "-w", "-F", "virtfw-in"])
        ns.run(["ip6tables", "-w", "-F", "virtfw-out"])
        ns.run(["ip6tables", "-w", "-F", "FO-vnet0"])
        ns.run(["ip6tables", "-w", "-X", "FO-vnet0"])
        ns.run(["ebtables", "-t", "nat", "-D", "PREROUTING", "-i", "vnet0", "-j", "virtfw-I-vnet0"])
        in_ns(ns, f"assert backend.remove(runner, backend.load_record({json.loads(out)['binding:vnet0']!r}, 'r'))\n")
        left = snapshot(ns)
        assert "vnet0" not in left


@pytest.mark.netns
def test_records_are_handed_over_before_anything_is_applied() -> None:
    with netns("vfwU") as ns:
        out = in_ns(
            ns,
            (
                "import subprocess\n"
                "def seen(installed):\n"
                "    print(json.dumps(records(installed)))\n"
                "    print(subprocess.run(['iptables-save'], capture_output=True, text=True).stdout.count('-A '))\n"
                "backend.install(runner, [port(demo_rules())], before_apply=seen)\n"
            ),
        )
        record, applied = out.strip().splitlines()
        assert applied == "0"
        assert "-X FO-vnet0" in record


@pytest.mark.netns
def test_thousand_ports_in_a_few_batches_per_tool() -> None:
    """Not one process per rule: iptables and ip6tables get one batch each, ebtables one
    per segment of about EB_SEGMENT_LINES lines."""
    with netns("vfwU") as ns:
        out = in_ns(
            ns,
            (
                "from virtfw.rules.xtables.filter import EB_SEGMENT_LINES\n"
                "ports = [port(demo_rules(), f'tap{i}') for i in range(1000)]\n"
                "installed = backend.install(runner, ports)\n"
                "calls = [a[0] for a in runner.log if a[0].endswith('-restore')]\n"
                "print(json.dumps([len(installed.removals), calls, EB_SEGMENT_LINES]))\n"
            ),
        )
        removals, calls, segment = json.loads(out)
        assert removals == 1000
        assert calls.count("iptables-restore") == calls.count("ip6tables-restore") == 1
        saved = ns.sh("ebtables-save")
        eb_lines = 2 * saved.count("\n:") + saved.count("\n-A ")  # a chain: -N and -F/-X
        assert 2 <= calls.count("ebtables-restore") <= eb_lines // segment + 2
        assert ns.sh("iptables-save").count("-A virtfw-in-post ") == 1000


@pytest.mark.netns
def test_a_failed_segment_takes_back_the_segments_before_it() -> None:
    """Segments are separate transactions: when the third ebtables batch of a reload
    fails, the two applied before it are undone and every port keeps its old rules."""
    with netns("vfwU") as ns:
        in_ns(ns, "backend.install(runner, [port(demo_rules(), f'tap{i}') for i in range(60)])\n")
        before = snapshot(ns)
        out = in_ns(
            ns,
            (
                "import virtfw.rules.xtables.filter as eb\n"
                "from virtfw.errors import ToolError\n"
                "eb.EB_SEGMENT_LINES = 200\n"
                "calls = []\n"
                "real = runner.run\n"
                "def run(argv, **kw):\n"
                "    calls.append(argv[0])\n"
                "    if argv[0] == 'ebtables-restore' and calls.count('ebtables-restore') == 3:\n"
                "        raise ToolError(argv, 1, 'injected')\n"
                "    return real(argv, **kw)\n"
                "runner.run = run\n"
                "try:\n"
                "    backend.install(runner, [port(demo_rules(1), f'tap{i}') for i in range(60)], rebuild=True)\n"
                "except ToolError:\n"
                "    print('failed', calls.count('ebtables-restore'))\n"
            ),
        )
        assert out.split()[0] == "failed" and int(out.split()[1]) == 5  # 2 applied, 1 failed, 2 undone
        assert snapshot(ns) == before


@pytest.mark.netns
def test_new_ports_skip_reading_ebtables_unless_a_chain_is_left_over() -> None:
    """With ``new_ports`` the ebtables table is not read before the batch; a leftover
    chain of the new port makes that batch fail whole, and the install is computed
    again from the live table, removing the leftover."""
    with netns("vfwU") as ns:
        in_ns(ns, "backend.install(runner, [port(demo_rules(), 'tap0'), port(demo_rules(), 'tap1')])\n")
        clean = snapshot(ns)
        in_ns(
            ns,
            "backend.remove(runner, backend.load_record({'backend': 'iptables', 'kind': 'nwfilter', 'port': 'tap1', "
            "'ebtables': {'nat': ['-D PREROUTING -i tap1 -j virtfw-I-tap1', '-D POSTROUTING -o tap1 -j virtfw-O-tap1', "
            "'-F virtfw-I-tap1', '-F virtfw-O-tap1', '-X virtfw-I-tap1', '-X virtfw-O-tap1']}}, 'tap1'))\n",
        )
        assert "virtfw-I-tap1" not in ns.sh("ebtables-save") and "I-tap1-" in ns.sh("ebtables-save"), (
            "control: tap1's sub-chains are left over"
        )
        out = in_ns(
            ns,
            (
                "backend.install(runner, [port(demo_rules(), 'tap1')], new_ports=True)\n"
                "print(json.dumps([a[0] for a in runner.log]))\n"
            ),
        )
        eb_calls = [call for call in json.loads(out) if call.startswith("ebtables")]
        assert eb_calls[:3] == ["ebtables-restore", "ebtables-save", "ebtables-restore"], eb_calls
        assert snapshot(ns) == clean
        out = in_ns(
            ns,
            (
                "backend.install(runner, [port(demo_rules(), 'tap2')], new_ports=True)\n"
                "print(json.dumps([a[0] for a in runner.log]))\n"
            ),
        )
        assert "ebtables-save" not in json.loads(out) and "virtfw-I-tap2" in ns.sh("ebtables-save")


@pytest.mark.netns
def test_dry_run_applies_nothing() -> None:
    with netns("vfwU") as ns:
        out = in_ns(ns, ("runner.dry_run = True\nbackend.install(runner, [port(demo_rules())])\n"))
        assert "-N virtfw-I-vnet0" in out and "-A virtfw-in-post" in out
        assert snapshot(ns).strip() == "# iptables-save\n# ip6tables-save"
