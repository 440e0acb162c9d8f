"""Typed removal records of the filter backends (no root: a fake runner stands in for the tools).

For each record class: ``from_json(r.to_json()) == r`` for records the backends make,
records in the JSON the untyped version wrote (literal below) load and give the same
JSON back, and anything off-shape is refused with RecordError, above all names that are
not virtfw's own. Then the binding manager's status directory, and the render digest.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from virtfw.config import Config
from virtfw.filter.bindings import BindingManager, BindingStatus
from virtfw.filter.model import Binding
from virtfw.filter.store import FilterStore
from virtfw.rules.backend import merged_base, module_digest
from virtfw.rules.nft.filter import NftFilterBackend
from virtfw.rules.nft.filter_records import MapElement, NftFilterBaseRecord, NftPortRecord, PortChain
from virtfw.rules.portrules import Match, PortRule, PortRules
from virtfw.rules.records import RecordError
from virtfw.rules.runner import Result, Runner
from virtfw.rules.xtables.appeared import Appeared
from virtfw.rules.xtables.filter import EbiptablesFilterBackend
from virtfw.rules.xtables.filter_records import (
    TOOLS_BY_KEY,
    DeleteChain,
    DeleteRule,
    FlushChain,
    XtablesFilterBaseRecord,
    XtablesPortRecord,
    XtablesToolBase,
    save_digest,
)


class FakeRunner(Runner):
    """Every change succeeds, every query finds nothing: what a backend sees on an empty host
    (whose kernel passes every ``nft -c`` feature probe, whose ``*-save`` list no table)."""

    def run(self, argv, *, stdin=None, change=True, check=True, quiet=False) -> Result:
        self.log.append(argv)
        return Result(0 if change or argv[:2] == ["nft", "-c"] or argv[0].endswith("-save") else 1, "", "")

    def run_file(self, argv, text, *, check=True) -> Result:
        """A batch file: applied like any change, echoing nothing (records get no digests)."""
        return self.run(argv, stdin=text, check=check)


def rule(element: str, direction: str = "out", action: str = "accept", *, chain: str = "root",
         chain_priority: int = 0, negate: bool = False, **matches) -> PortRule:  # fmt: skip
    return PortRule(chain, chain_priority, 500, action, direction, True, element, negate,
                    tuple(Match(name.replace("_", "-"), value) for name, value in matches.items()))  # fmt: skip


RULES = (
    rule("mac", srcmacaddr="52:54:00:00:00:01", negate=True, action="drop"),
    rule("arp", "inout", chain="arp", chain_priority=-500, opcode=1),
    rule("ip", chain="ipv4", chain_priority=-700, protocol=17, comment="dhcp; ok"),
    rule("tcp", "in", dstportstart=22),
    rule("all-ipv6", "out", comment="v6"),
)
VARIANTS = [RULES, RULES[:1], RULES[3:], RULES[1:3]]


def installed(backend, rules=RULES, port: str = "vnet0"):
    return backend.install(FakeRunner(), [PortRules(port, f"binding:{port}", tuple(rules))])


# Records as the untyped version wrote them (one port, RULES[1:4]): status files still in
# /run after an upgrade must load.
OLD_NFT = {
    "port": "vnet0",
    "elements": [
        ["virtfw_nwfilter_ethernet", "vmap-iif", "vnet0", "n-vnet0-out"],
        ["virtfw_nwfilter_ethernet", "vmap-oif", "vnet0", "n-vnet0-in"],
        ["virtfw_nwfilter_inet", "vmap-iif", "vnet0", "n-vnet0-out"],
        ["virtfw_nwfilter_inet", "vmap-oif", "vnet0", "n-vnet0-in"],
    ],
    "chains": [
        ["virtfw_nwfilter_ethernet", "n-vnet0-out"],
        ["virtfw_nwfilter_ethernet", "n-vnet0-out-arp"],
        ["virtfw_nwfilter_ethernet", "n-vnet0-out-ipv4"],
        ["virtfw_nwfilter_inet", "n-vnet0-out"],
        ["virtfw_nwfilter_ethernet", "n-vnet0-in"],
        ["virtfw_nwfilter_ethernet", "n-vnet0-in-arp"],
        ["virtfw_nwfilter_inet", "n-vnet0-in"],
    ],
    "rules": {
        "virtfw_nwfilter_ethernet n-vnet0-out": 2,
        "virtfw_nwfilter_ethernet n-vnet0-out-arp": 1,
        "virtfw_nwfilter_ethernet n-vnet0-out-ipv4": 1,
        "virtfw_nwfilter_inet n-vnet0-out": 1,
        "virtfw_nwfilter_ethernet n-vnet0-in": 1,
        "virtfw_nwfilter_ethernet n-vnet0-in-arp": 1,
        "virtfw_nwfilter_inet n-vnet0-in": 1,
    },
    "texts": {
        "virtfw_nwfilter_ethernet n-vnet0-out": [
            "ether type 0x0800 jump n-vnet0-out-ipv4",
            "ether type 0x0806 jump n-vnet0-out-arp",
        ],
        "virtfw_nwfilter_ethernet n-vnet0-out-arp": ["ether type 0x0806 @nh,48,16 0x0001 accept"],
        "virtfw_nwfilter_ethernet n-vnet0-out-ipv4": ['ether type ip meta l4proto 17 accept comment "dhcp; ok"'],
        "virtfw_nwfilter_inet n-vnet0-out": ["ether type ip meta l4proto tcp tcp sport 22 accept"],
        "virtfw_nwfilter_ethernet n-vnet0-in": ["ether type 0x0806 jump n-vnet0-in-arp"],
        "virtfw_nwfilter_ethernet n-vnet0-in-arp": ["ether type 0x0806 @nh,48,16 0x0001 accept"],
        "virtfw_nwfilter_inet n-vnet0-in": ["ether type ip meta l4proto tcp tcp dport 22 accept"],
    },
}
OLD_NFT_BASE = {"tables": ["virtfw_nwfilter_ethernet", "virtfw_nwfilter_inet"]}
OLD_XT = {
    "backend": "iptables",
    "kind": "nwfilter",
    "port": "vnet0",
    "ebtables": {
        "nat": [
            "-D PREROUTING -i vnet0 -j virtfw-I-vnet0",
            "-D POSTROUTING -o vnet0 -j virtfw-O-vnet0",
            "-F virtfw-I-vnet0",
            "-F virtfw-O-vnet0",
            "-F I-vnet0-ipv4",
            "-F I-vnet0-arp",
            "-F O-vnet0-arp",
            "-X virtfw-I-vnet0",
            "-X virtfw-O-vnet0",
            "-X I-vnet0-ipv4",
            "-X I-vnet0-arp",
            "-X O-vnet0-arp",
        ]
    },
    "ipv4": {
        "filter": [
            "-D virtfw-out -m physdev --physdev-is-bridged --physdev-out vnet0 -g FO-vnet0",
            "-D virtfw-in -m physdev --physdev-in vnet0 -g FI-vnet0",
            "-D virtfw-host-in -m physdev --physdev-in vnet0 -g HI-vnet0",
            "-D virtfw-in-post -m physdev --physdev-in vnet0 -j ACCEPT",
            "-F FO-vnet0",
            "-X FO-vnet0",
            "-F FI-vnet0",
            "-X FI-vnet0",
            "-F HI-vnet0",
            "-X HI-vnet0",
        ]
    },
    "counts": {
        "ebtables": {"I-vnet0-arp": 1, "I-vnet0-ipv4": 1, "O-vnet0-arp": 1, "virtfw-I-vnet0": 2, "virtfw-O-vnet0": 1},
        "ipv4": {"FI-vnet0": 1, "FO-vnet0": 1, "HI-vnet0": 1},
    },
    "texts": {
        "I-vnet0-arp": ["-p 0x806 --arp-opcode 1 -j ACCEPT"],
        "I-vnet0-ipv4": ["-p ipv4 --ip-protocol 17 -j ACCEPT"],
        "O-vnet0-arp": ["-p 0x806 --arp-opcode 1 -j ACCEPT"],
        "virtfw-I-vnet0": ["-p 0x0800 -j I-vnet0-ipv4", "-p 0x0806 -j I-vnet0-arp"],
        "virtfw-O-vnet0": ["-p 0x0806 -j O-vnet0-arp"],
    },
}
OLD_XT_BASE = {
    "backend": "iptables",
    "kind": "nwfilter-base",
    "ipv4": {
        "filter": [
            "-D INPUT -j virtfw-host-in",
            "-D FORWARD -j virtfw-in-post",
            "-D FORWARD -j virtfw-out",
            "-D FORWARD -j virtfw-in",
            "-F virtfw-in",
            "-X virtfw-in",
            "-F virtfw-out",
            "-X virtfw-out",
            "-F virtfw-in-post",
            "-X virtfw-in-post",
            "-F virtfw-host-in",
            "-X virtfw-host-in",
        ],
        "appeared": {"tables": ["filter"], "chains": []},
    },
    "ebtables": {"appeared": {"tables": [], "chains": [["nat", "POSTROUTING"]]}},
}


# --- nftables ----------------------------------------------------------------------------


@pytest.mark.parametrize("rules", VARIANTS)
def test_nft_records_round_trip(rules) -> None:
    result = installed(NftFilterBackend(), rules)
    record = result.removals["binding:vnet0"]
    assert isinstance(record, NftPortRecord)
    assert NftPortRecord.from_json(record.to_json(), "r") == record
    assert NftPortRecord.from_json(json.loads(json.dumps(record.to_json())), "r") == record
    assert NftFilterBaseRecord.from_json(result.base.to_json(), "b") == result.base


def test_nft_old_records_load_and_keep_their_json() -> None:
    record = NftFilterBackend().load_record(copy.deepcopy(OLD_NFT), "old")
    assert record.to_json() == OLD_NFT
    # Today's rendering of the same rules has the same shape (map entries, chains); the
    # rule texts differ since layer-3 rules carry ct clauses and inout mirrors from the guest.
    now = installed(NftFilterBackend(), RULES[1:4]).removals["binding:vnet0"]
    assert record.elements == now.elements
    assert [(c.table, c.name, len(c.rules)) for c in record.chains] == [
        (c.table, c.name, len(c.rules)) for c in now.chains
    ]
    assert record.chains[2] == PortChain(
        "virtfw_nwfilter_ethernet", "n-vnet0-out-ipv4", ('ether type ip meta l4proto 17 accept comment "dhcp; ok"',)
    )
    base = NftFilterBackend().load_base(OLD_NFT_BASE, "old base")
    assert base.to_json() == OLD_NFT_BASE and base.merged(base) == base
    assert merged_base(None, base) is base and merged_base(base, None) is base


def test_nft_record_without_elements_has_both_tables_entries() -> None:
    """Records from before ``elements`` was written name every table's entries."""
    data = {key: value for key, value in OLD_NFT.items() if key != "elements"}
    record = NftPortRecord.from_json(data, "old")
    assert record.elements[0] == MapElement("virtfw_nwfilter_ethernet", "vmap-iif", "vnet0", "n-vnet0-out")
    assert len(record.elements) == 4


def _nft_changed(change) -> dict:
    data = copy.deepcopy(OLD_NFT)
    change(data)
    return data


NFT_MALFORMED = {
    "not an object": lambda d: d.clear() or d.update({"port": ["vnet0"]}),
    "unknown key": lambda d: d.update(handle=3),
    "port missing": lambda d: d.pop("port"),
    "port not a name": lambda d: d.update(port="vnet0;x"),
    "foreign table": lambda d: d["chains"].append(["filter", "n-vnet0-in"]),
    "chain of another port": lambda d: d["chains"].__setitem__(0, ["virtfw_nwfilter_ethernet", "n-vnet1-out"]),
    "chain not a port chain": lambda d: d["chains"].__setitem__(0, ["virtfw_nwfilter_ethernet", "prerouting"]),
    "element of another port": lambda d: d["elements"].__setitem__(
        0, ["virtfw_nwfilter_ethernet", "vmap-iif", "vnet1", "n-vnet1-out"]
    ),
    "element in a foreign map": lambda d: d["elements"].__setitem__(
        0, ["virtfw_nwfilter_ethernet", "vmap-x", "vnet0", "n-vnet0-out"]
    ),
    "element jumping elsewhere": lambda d: d["elements"].__setitem__(
        0, ["virtfw_nwfilter_ethernet", "vmap-iif", "vnet0", "n-vnet0-in"]
    ),
    "count not an integer": lambda d: d["rules"].update({"virtfw_nwfilter_inet n-vnet0-in": "1"}),
    "count off its rules": lambda d: d["rules"].update({"virtfw_nwfilter_inet n-vnet0-in": 2}),
    "rules of an unlisted chain": lambda d: d["texts"].update({"virtfw_nwfilter_inet n-vnet0-in-x": []}),
    "a rule ending its block": lambda d: d["texts"]["virtfw_nwfilter_inet n-vnet0-in"].__setitem__(
        0, "accept }\ntable inet x { chain y { drop"
    ),
    "a second statement": lambda d: d["texts"]["virtfw_nwfilter_inet n-vnet0-in"].__setitem__(
        0, "accept; flush ruleset"
    ),
    "a rule not a string": lambda d: d["texts"]["virtfw_nwfilter_inet n-vnet0-in"].__setitem__(0, 7),
}


@pytest.mark.parametrize("case", sorted(NFT_MALFORMED))
def test_nft_malformed_records_are_refused(case: str) -> None:
    with pytest.raises(RecordError, match="status of binding 'vnet0'.firewall"):
        NftPortRecord.from_json(_nft_changed(NFT_MALFORMED[case]), "status of binding 'vnet0'.firewall")


@pytest.mark.parametrize("data", [{"tables": ["filter"]}, {"tables": "virtfw_nwfilter_inet"}, {"handles": []}, []])
def test_nft_malformed_base_is_refused(data) -> None:
    with pytest.raises(RecordError, match="base"):
        NftFilterBaseRecord.from_json(data, "base")


# --- ebtables/iptables -------------------------------------------------------------------


@pytest.mark.parametrize("rules", VARIANTS)
def test_xtables_records_round_trip(rules) -> None:
    result = installed(EbiptablesFilterBackend(), rules)
    record = result.removals["binding:vnet0"]
    assert isinstance(record, XtablesPortRecord)
    assert XtablesPortRecord.from_json(record.to_json(), "r") == record
    if result.base is not None:
        assert XtablesFilterBaseRecord.from_json(result.base.to_json(), "b") == result.base


def test_xtables_old_records_load_and_keep_their_json() -> None:
    record = EbiptablesFilterBackend().load_record(copy.deepcopy(OLD_XT), "old")
    assert record.to_json() == OLD_XT
    assert record == installed(EbiptablesFilterBackend(), RULES[1:4]).removals["binding:vnet0"]
    assert record.steps["ebtables"][0] == DeleteRule("PREROUTING", "-i vnet0 -j virtfw-I-vnet0")
    assert record.steps["ipv4"][-2:] == (FlushChain("HI-vnet0"), DeleteChain("HI-vnet0"))
    base = EbiptablesFilterBackend().load_base(copy.deepcopy(OLD_XT_BASE), "old base")
    assert base.to_json() == OLD_XT_BASE
    assert base.tools["ebtables"] == XtablesToolBase((), Appeared((), (("nat", "POSTROUTING"),)))


def test_xtables_base_merge_orders_and_unites() -> None:
    one = XtablesFilterBaseRecord({"ipv4": XtablesToolBase((DeleteRule("FORWARD", "-j virtfw-in"),
                                                            FlushChain("virtfw-in"), DeleteChain("virtfw-in")))})  # fmt: skip
    two = XtablesFilterBaseRecord({"ipv4": XtablesToolBase((FlushChain("virtfw-in"), DeleteRule("INPUT", "-j virtfw-host-in"))),
                                   "ipv6": XtablesToolBase(appeared=Appeared(("filter",)))})  # fmt: skip
    merged = one.merged(two)
    assert [step.line for step in merged.tools["ipv4"].steps] == [
        "-D FORWARD -j virtfw-in", "-D INPUT -j virtfw-host-in", "-F virtfw-in", "-X virtfw-in",
    ]  # fmt: skip
    assert merged.tools["ipv6"].appeared == Appeared(("filter",))
    assert not XtablesFilterBaseRecord() and merged_base(None, None) is None


def _xt_changed(change) -> dict:
    data = copy.deepcopy(OLD_XT)
    change(data)
    return data


def _eb_line(index: int, line: object):
    return lambda d: d["ebtables"]["nat"].__setitem__(index, line)


def _ipt_line(index: int, line: object):
    return lambda d: d["ipv4"]["filter"].__setitem__(index, line)


XT_MALFORMED = {
    "wrong kind": lambda d: d.update(kind="nwfilter-base"),
    "wrong backend": lambda d: d.update(backend="nftables"),
    "unknown key": lambda d: d.update(arp={}),
    "unknown table": lambda d: d["ipv4"].update(nat=[]),
    "port not a name": lambda d: d.update(port="../vnet0"),
    "deletes a foreign hook": _eb_line(0, "-D PREROUTING -i vnet0 -j ACCEPT"),
    "deletes another port's hook": _eb_line(0, "-D PREROUTING -i vnet1 -j virtfw-I-vnet1"),
    "deletes from a foreign chain": _ipt_line(0, "-D FORWARD -m physdev --physdev-in vnet0 -j DROP"),
    "flushes a builtin chain": _ipt_line(4, "-F FORWARD"),
    "deletes another port's chain": _ipt_line(5, "-X FO-vnet1"),
    "deletes a shared chain": _ipt_line(5, "-X virtfw-in"),
    "flushes another port's sub-chain": _eb_line(3, "-F I-vnet1-ipv4"),
    "a line break": _ipt_line(0, "-D virtfw-in -j FI-vnet0\n-F FORWARD"),
    "not a removal line": _ipt_line(4, "-A FO-vnet0 -j ACCEPT"),
    "a bare -D": _ipt_line(0, "-D virtfw-in"),
    "a line not a string": _ipt_line(0, ["-F", "FO-vnet0"]),
    "counts of a foreign chain": lambda d: d["counts"]["ipv4"].update(FORWARD=1),
    "counts of an unknown tool": lambda d: d["counts"].update(arp={}),
    "texts of a foreign chain": lambda d: d["texts"].update(PREROUTING=[]),
}


@pytest.mark.parametrize("case", sorted(XT_MALFORMED))
def test_xtables_malformed_records_are_refused(case: str) -> None:
    with pytest.raises(RecordError, match="status of binding 'vnet0'.firewall"):
        XtablesPortRecord.from_json(_xt_changed(XT_MALFORMED[case]), "status of binding 'vnet0'.firewall")


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(kind="nwfilter"),
        lambda d: d["ipv4"]["filter"].append("-X FO-vnet0"),  # a port chain is no part of the base
        lambda d: d["ipv4"]["filter"].append("-D FORWARD -j ACCEPT"),
        lambda d: d["ebtables"].update(nat=["-X virtfw-I-vnet0"]),
        lambda d: d["ipv4"]["appeared"].update(tables=["nat"]),
        lambda d: d["ebtables"]["appeared"].update(chains=[["nat", "OUTPUT"]]),
    ],
)
def test_xtables_malformed_base_is_refused(change) -> None:
    data = copy.deepcopy(OLD_XT_BASE)
    change(data)
    with pytest.raises(RecordError, match="base"):
        XtablesFilterBaseRecord.from_json(data, "base")


# --- seams ---------------------------------------------------------------------------------


def test_render_digest_only_where_records_can_be_installed_again() -> None:
    assert EbiptablesFilterBackend().render_digest() is None
    digest = NftFilterBackend().render_digest()
    assert digest == NftFilterBackend().render_digest() and len(digest) == 64
    # the modules nft/filter.py renders with are part of it, wherever that code lives
    assert digest != module_digest("virtfw.rules.nft.filter_records")


def test_module_digest_follows_imports(tmp_path: Path, monkeypatch) -> None:
    seen: list[str] = []
    real = Path.read_text

    def read_text(self: Path, *args, **kwargs) -> str:
        seen.append(self.as_posix())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    module_digest("virtfw.rules.nft.filter")
    names = {path.split("/virtfw/", 1)[1] for path in seen}
    assert {"rules/nft/filter.py", "rules/nft/filter_records.py", "rules/layout.py", "rules/portrules.py"} <= names
    assert "rules/xtables/filter.py" not in names  # only what it imports


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_binding_status_files_through_the_status_dir(tmp_path: Path, monkeypatch, backend: str) -> None:
    """create, reload and delete with a runner that only pretends: status file, base
    record and their removal, as before; a reload that changes nothing writes nothing."""
    config = Config(tmp_path / "config", tmp_path / "state")
    manager = BindingManager(config, FakeRunner(), FilterStore(config), backend)
    manager.create(Binding("vnet0", "52:54:00:00:00:01", "clean-traffic", {"IP": ["192.0.2.10"]}))
    status = json.loads((tmp_path / "state" / "bindings" / "vnet0.json").read_text())
    assert status["state"] == "active" and status["backend"] == backend
    loaded = manager.backend.load_record(status["firewall"], "status")
    assert loaded.to_json() == status["firewall"]
    # what the rules were rendered from: kept for both backends (reload tells intact from it)
    assert isinstance(status["digest"], str) and re.fullmatch("[0-9a-f]{64}", status["digest"])
    base_file = tmp_path / "state" / f"nwfilter-{backend}.json"
    assert base_file.exists() == (backend == "nftables")  # clean-traffic is all ebtables: no shared chains
    if base_file.exists():
        assert manager.backend.load_base(json.loads(base_file.read_text()), "base")
    before = (tmp_path / "state" / "bindings" / "vnet0.json").stat().st_mtime_ns
    assert manager.reload() == (1, [])
    # nftables: installed again from its record; iptables: rendered again, to the same record;
    # either way nothing changed, nothing written
    assert (tmp_path / "state" / "bindings" / "vnet0.json").stat().st_mtime_ns == before
    (tmp_path / "state" / "bindings" / ".vnet0.json.leftover").write_text("{")
    manager.delete("vnet0")
    assert sorted(p.name for p in (tmp_path / "state" / "bindings").iterdir()) == []
    assert not base_file.exists()


def test_a_malformed_status_record_is_an_error_not_a_command(tmp_path: Path) -> None:
    config = Config(tmp_path / "config", tmp_path / "state")
    runner = FakeRunner()
    manager = BindingManager(config, runner, FilterStore(config), "nftables")
    manager.create(Binding("vnet0", "52:54:00:00:00:01", "clean-traffic", {"IP": ["192.0.2.10"]}))
    path = tmp_path / "state" / "bindings" / "vnet0.json"
    status = json.loads(path.read_text())
    status["firewall"]["chains"].append(["virtfw_nwfilter_ethernet", "prerouting"])
    path.write_text(json.dumps(status))
    runner.log.clear()
    with pytest.raises(RecordError, match="status of binding 'vnet0'.firewall"):
        manager.delete("vnet0")
    assert runner.log == [] and path.exists()


# A status file as the untyped version wrote it (iptables, no-mac-spoofing, with an owner).
OLD_STATUS = {
    "backend": "iptables",
    "binding": {
        "filter": "no-mac-spoofing",
        "linkdev": None,
        "mac": "52:54:00:00:00:03",
        "owner": "guest",
        "owner_uuid": "c7a5fdbd-edaf-9455-926a-d65c16db1809",
        "params": {"X": ["1", "2"]},
        "portdev": "vnet3",
    },
    "created": 1700000000.25,
    "digest": None,
    "firewall": {
        "backend": "iptables",
        "counts": {"ebtables": {"I-vnet3-mac": 2, "virtfw-I-vnet3": 1}},
        "ebtables": {
            "nat": [
                "-D PREROUTING -i vnet3 -j virtfw-I-vnet3",
                "-F virtfw-I-vnet3",
                "-F I-vnet3-mac",
                "-X virtfw-I-vnet3",
                "-X I-vnet3-mac",
            ]
        },
        "kind": "nwfilter",
        "port": "vnet3",
        "texts": {"I-vnet3-mac": ["-s 52:54:00:00:00:03 -j RETURN", "-j DROP"], "virtfw-I-vnet3": ["-j I-vnet3-mac"]},
    },
    "portdev": "vnet3",
    "state": "active",
    "xml": "<filterbinding>\n  <owner>\n    <name>guest</name>\n    <uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>\n  </owner>\n  <portdev name='vnet3'/>\n  <mac address='52:54:00:00:00:03'/>\n  <filterref filter='no-mac-spoofing'>\n    <parameter name='X' value='1'/>\n    <parameter name='X' value='2'/>\n  </filterref>\n</filterbinding>\n",
}


def test_binding_status_old_file_loads_and_keeps_its_json() -> None:
    status = BindingStatus.from_json(copy.deepcopy(OLD_STATUS), "status of binding 'vnet3'")
    assert status.to_json() == OLD_STATUS
    assert status.binding == Binding(
        "vnet3", "52:54:00:00:00:03", "no-mac-spoofing", {"X": ["1", "2"]}, "guest",
        "c7a5fdbd-edaf-9455-926a-d65c16db1809",
    )  # fmt: skip
    assert EbiptablesFilterBackend().load_record(status.firewall, "firewall").port == "vnet3"
    starting = {key: value for key, value in OLD_STATUS.items() if key not in ("digest", "binding")}
    starting.update(state="starting", firewall=None)  # a create's first write, before it had a digest
    loaded = BindingStatus.from_json(starting, "s")
    assert loaded.digest is None and loaded.binding is None and loaded.firewall is None


STATUS_MALFORMED = {
    "unknown key": lambda d: d.update(pid=3),
    "xml missing": lambda d: d.pop("xml"),
    "portdev not a name": lambda d: d.update(portdev="vnet3/../x"),
    "unknown state": lambda d: d.update(state="stopping"),
    "created not a number": lambda d: d.update(created="now"),
    "firewall not an object": lambda d: d.update(firewall=["-F FORWARD"]),
    "binding of another port": lambda d: d["binding"].update(portdev="vnet4"),
    "binding with an unknown field": lambda d: d["binding"].update(script="x"),
    "binding params not lists": lambda d: d["binding"].update(params={"X": "1"}),
}


@pytest.mark.parametrize("case", sorted(STATUS_MALFORMED))
def test_binding_status_malformed_is_refused(case: str) -> None:
    data = copy.deepcopy(OLD_STATUS)
    STATUS_MALFORMED[case](data)
    with pytest.raises(RecordError, match="status of binding 'vnet3'"):
        BindingStatus.from_json(data, "status of binding 'vnet3'")


# --- content digests (what the kernel lists for a port's chains) ------------------------------


def modelled(backend, rules=RULES, port: str = "vnet0"):
    """An install through the golden files' model of the tools: nft echoes what it adds,
    the xtables tools save their tables, so records get their digests; with what
    ``before_apply`` was handed."""
    from helpers.fakerunner import FakeRunner as ModelRunner

    handed = []
    result = backend.install(
        ModelRunner(), [PortRules(port, f"binding:{port}", tuple(rules))], before_apply=handed.append
    )
    return result, handed[0]


@pytest.mark.parametrize("rules", VARIANTS)
def test_nft_records_with_digests_round_trip(rules) -> None:
    result, handed = modelled(NftFilterBackend(), rules)
    record = result.removals["binding:vnet0"]
    assert record.content_known and all(re.fullmatch("[0-9a-f]{16}", c.digest or "") for c in record.chains)
    data = record.to_json()
    assert sorted(data["listed"]) == sorted(c.key for c in record.chains)
    assert NftPortRecord.from_json(json.loads(json.dumps(data)), "r") == record
    # before the batch: the same record, without digests (they are taken from its echo)
    early = handed.removals["binding:vnet0"]
    assert early == record.bare() and "listed" not in early.to_json() and not early.content_known
    assert {k: v for k, v in data.items() if k != "listed"} == early.to_json()


def test_nft_records_without_digests_are_counted_only() -> None:
    record = NftPortRecord.from_json(copy.deepcopy(OLD_NFT), "old")
    assert not record.content_known and not NftFilterBackend.content_known(record)
    assert record.bare() is record


def test_nft_digests_of_json_from_older_versions_are_checked_then_dropped() -> None:
    """Digests of nft's JSON cannot be confirmed by a text listing: such a record loads
    as one without digests (verify counts its rules, reload installs it again)."""
    data = _nft_digested()
    data["digests"] = data.pop("listed")
    record = NftPortRecord.from_json(copy.deepcopy(data), "older")
    assert not record.content_known and record == NftPortRecord.from_json(_nft_digested(), "r").bare()
    data["digests"]["filter input"] = "0123456789abcdef"
    with pytest.raises(RecordError, match="older"):
        NftPortRecord.from_json(data, "older")


def _nft_digested() -> dict:
    return modelled(NftFilterBackend(), RULES[1:4])[0].removals["binding:vnet0"].to_json()


NFT_MALFORMED_DIGESTS = {
    "not an object": lambda d: d.update(listed=["0123456789abcdef"]),
    "empty": lambda d: d.update(listed={}),
    "too short": lambda d: d["listed"].update({next(iter(d["listed"])): "0123456789abcde"}),
    "too long": lambda d: d["listed"].update({next(iter(d["listed"])): "0123456789abcdef0"}),
    "upper case": lambda d: d["listed"].update({next(iter(d["listed"])): "0123456789ABCDEF"}),
    "not hex": lambda d: d["listed"].update({next(iter(d["listed"])): "0123456789abcdeg"}),
    "a number": lambda d: d["listed"].update({next(iter(d["listed"])): 1234567890123456}),
    "a chain without": lambda d: d["listed"].pop(next(iter(d["listed"]))),
    "a chain not held": lambda d: d["listed"].update({"virtfw_nwfilter_inet n-vnet0-in-x": "0123456789abcdef"}),
    "a foreign chain": lambda d: d["listed"].update({"filter input": "0123456789abcdef"}),
}


@pytest.mark.parametrize("case", sorted(NFT_MALFORMED_DIGESTS))
def test_nft_malformed_digests_are_refused(case: str) -> None:
    data = _nft_digested()
    NftPortRecord.from_json(copy.deepcopy(data), "status of binding 'vnet0'.firewall")  # control: it loads
    NFT_MALFORMED_DIGESTS[case](data)
    with pytest.raises(RecordError, match="status of binding 'vnet0'.firewall"):
        NftPortRecord.from_json(data, "status of binding 'vnet0'.firewall")


def test_chain_digest_is_of_the_lines_in_order() -> None:
    from virtfw.rules.nft.listing import chain_digest

    accept, drop = "meta l4proto tcp counter accept", "meta l4proto tcp drop"
    assert chain_digest([accept, drop]) != chain_digest([drop, accept]) != chain_digest([accept, accept])
    assert chain_digest([accept + " " + drop]) != chain_digest([accept, drop])
    assert chain_digest([]) != chain_digest([accept]) and len(chain_digest([])) == 16


@pytest.mark.parametrize("rules", VARIANTS)
def test_xtables_records_with_digests_round_trip(rules) -> None:
    result, handed = modelled(EbiptablesFilterBackend(), rules)
    record = result.removals["binding:vnet0"]
    assert record.digests is not None and record.content_known
    assert set(record.digests) == set(record.steps)
    for key, chains in record.digests.items():
        tool = TOOLS_BY_KEY[key]
        assert sorted(chains) == sorted(record.digested_chains(tool))
        assert all(re.fullmatch("[0-9a-f]{16}", value) for value in chains.values())
    assert XtablesPortRecord.from_json(json.loads(json.dumps(record.to_json())), "r") == record
    early = handed.removals["binding:vnet0"]
    assert early == record.bare() and early.digests is None and "digests" not in early.to_json()


def test_xtables_records_without_digests_are_counted_only() -> None:
    record = XtablesPortRecord.from_json(copy.deepcopy(OLD_XT), "old")
    assert record.digests is None and not EbiptablesFilterBackend.content_known(record)
    assert record.bare() is record


def _xt_digested() -> dict:
    return modelled(EbiptablesFilterBackend(), RULES[1:4])[0].removals["binding:vnet0"].to_json()


XT_MALFORMED_DIGESTS = {
    "not an object": lambda d: d.update(digests=[]),
    "a tool not recorded": lambda d: d["digests"].update(ipv6={"FI-vnet0": "0123456789abcdef"}),
    "a tool missing": lambda d: d["digests"].pop("ipv4"),
    "an unknown tool": lambda d: d["digests"].update(arp={}),
    "a chain without": lambda d: d["digests"]["ipv4"].pop("FI-vnet0"),
    "another port's chain": lambda d: d["digests"]["ipv4"].update({"FI-vnet1": "0123456789abcdef"}),
    "a builtin it has no hook in": lambda d: d["digests"]["ipv4"].update(FORWARD="0123456789abcdef"),
    "a foreign chain": lambda d: d["digests"]["ebtables"].update({"FOREIGN": "0123456789abcdef"}),
    "not hex": lambda d: d["digests"]["ebtables"].update({"PREROUTING": "not a digest at all"}),
    "too short": lambda d: d["digests"]["ebtables"].update({"PREROUTING": "0123"}),
    "a list": lambda d: d["digests"]["ebtables"].update({"PREROUTING": ["0123456789abcdef"]}),
}


@pytest.mark.parametrize("case", sorted(XT_MALFORMED_DIGESTS))
def test_xtables_malformed_digests_are_refused(case: str) -> None:
    data = _xt_digested()
    XtablesPortRecord.from_json(copy.deepcopy(data), "status of binding 'vnet0'.firewall")  # control: it loads
    XT_MALFORMED_DIGESTS[case](data)
    with pytest.raises(RecordError, match="status of binding 'vnet0'.firewall"):
        XtablesPortRecord.from_json(data, "status of binding 'vnet0'.firewall")


def test_save_digest_holds_policy_and_order() -> None:
    rules = ["-s 52:54:00:00:00:01 -j RETURN", "-j DROP"]
    assert save_digest("ACCEPT", rules) != save_digest("DROP", rules) != save_digest("ACCEPT", rules[::-1])
    assert save_digest(None, rules) != save_digest("ACCEPT", rules) and len(save_digest(None, [])) == 16
