"""Typed removal records of the network backends (no root, no tools).

* every record class reads back what it writes (``from_json(r.to_json()) == r``);
* records of the previous version (command lines) load, and give the same lines back;
* anything off-shape, or naming objects that are not virtfw's, is refused (RecordError);
* base records combine with ``merged``; the shared lifecycle decisions;
* a network's status file, typed the same way.
"""

from __future__ import annotations

import copy

import pytest

from virtfw.lifecycle import after_removal, combined_base
from virtfw.net.bridge import BridgeRecord
from virtfw.net.status import DnsmasqStatus, NetworkStatus
from virtfw.rules.netrules import Family
from virtfw.rules.nft.network import CHAINS as NFT_CHAINS
from virtfw.rules.nft.network import NftablesBackend
from virtfw.rules.nft.network_records import RULE_CHAINS, NftBase, NftIntent, NftRule, NftRules, load_record
from virtfw.rules.records import RecordError
from virtfw.rules.xtables.appeared import Appeared
from virtfw.rules.xtables.network import IptablesBackend
from virtfw.rules.xtables.network_records import IptBase, IptFamilyBase, IptRule, IptRules

W = "status of network 'default'.firewall"

NFT_RULES = NftRules(
    {"ip": 1, "ip6": 2},
    (
        NftRule("ip", "guest_output", 9, 'iif "vfwbr0" counter reject'),
        NftRule("ip6", "guest_output", 9, 'iif "vfwbr0" counter reject'),
        NftRule("ip", "guest_nat", 14, "ip saddr 192.168.122.0/24 ip daddr != 192.168.122.0/24 counter masquerade"),
    ),
)
NFT_BASE = NftBase({"ip": 1, "ip6": 2})
NFT_BASE_INTENT = NftBase({"ip": None, "ip6": None}, handles_unknown=True)

IPT_RULES = IptRules(
    (
        IptRule("filter", "VIRTFW_FWX", "-i vfwbr0 -o vfwbr0 -j ACCEPT"),
        IptRule("nat", "VIRTFW_PRT", "-s 192.168.122.0/24 ! -d 192.168.122.0/24 -j MASQUERADE"),
    ),
    (IptRule("filter", "VIRTFW_FWO", "-s fd00:1::/64 -i vfwbr0 -j ACCEPT"),),
)
IPT_FAMILY_BASE = IptFamilyBase(
    (("filter", "FORWARD", "VIRTFW_FWX"), ("filter", "INPUT", "VIRTFW_INP"), ("nat", "POSTROUTING", "VIRTFW_PRT")),
    (("filter", "VIRTFW_INP"), ("filter", "VIRTFW_FWX"), ("nat", "VIRTFW_PRT")),
    Appeared(("nat",), (("filter", "FORWARD"),)),
)
IPT_BASE = IptBase(IPT_FAMILY_BASE, IptFamilyBase((("filter", "INPUT", "VIRTFW_INP"),), (("filter", "VIRTFW_INP"),)))

# ---- the previous version's records, as net-start wrote them (trimmed) ------------------

OLD_NFT_RULES = {
    "backend": "nftables",
    "batch": [
        "delete rule ip virtfw_network guest_output handle 9",
        "delete rule ip6 virtfw_network guest_output handle 9",
        "delete rule ip virtfw_network guest_nat handle 14",
    ],
    "rules": {
        "9": 'iif "vfwbr0" counter reject',
        "14": "ip saddr 192.168.122.0/24 ip daddr != 192.168.122.0/24 counter masquerade",
    },
    "tables": {"ip": 1, "ip6": 2},
}
OLD_NFT_INTENT = {"backend": "nftables", "rebuild": True}
OLD_NFT_BASE = {
    "backend": "nftables",
    "batch": ["delete table ip virtfw_network", "delete table ip6 virtfw_network"],
    "tables": {"ip": 1, "ip6": 2},
}
OLD_NFT_BASE_INTENT = {**OLD_NFT_BASE, "tables": {"ip": None, "ip6": None}, "any_handle": True}
OLD_IPT_RULES = {
    "backend": "iptables",
    "ipv4": {
        "filter": [
            "-D VIRTFW_FWI -o vfwbr0 -d 192.168.122.0/24 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-D VIRTFW_FWX -i vfwbr0 -o vfwbr0 -j ACCEPT",
            "-D VIRTFW_INP -i vfwbr0 -p udp --dport 67 -j ACCEPT",
        ],
        "nat": [
            "-D VIRTFW_PRT -p tcp -s 192.168.122.0/24 ! -d 192.168.122.0/24 -j MASQUERADE --to-ports 1024-65535",
            "-D VIRTFW_PRT -s 192.168.122.0/24 ! -d 192.168.122.0/24 -j MASQUERADE",
        ],
    },
    "ipv6": {"filter": ["-D VIRTFW_FWO -s fd00:1::/64 -i vfwbr0 -j ACCEPT"]},
}
_OLD_IPT_FAMILY_BASE = {
    "appeared": {"chains": [], "tables": ["filter", "mangle", "nat"]},
    "filter": [
        "-D FORWARD -j VIRTFW_FWX",
        "-D FORWARD -j VIRTFW_FWI",
        "-D FORWARD -j VIRTFW_FWO",
        "-D OUTPUT -j VIRTFW_OUT",
        "-D INPUT -j VIRTFW_INP",
        "-F VIRTFW_INP",
        "-X VIRTFW_INP",
        "-F VIRTFW_OUT",
        "-X VIRTFW_OUT",
        "-F VIRTFW_FWX",
        "-X VIRTFW_FWX",
        "-F VIRTFW_FWI",
        "-X VIRTFW_FWI",
        "-F VIRTFW_FWO",
        "-X VIRTFW_FWO",
    ],
    "mangle": ["-D POSTROUTING -j VIRTFW_PRT", "-F VIRTFW_PRT", "-X VIRTFW_PRT"],
    "nat": ["-D POSTROUTING -j VIRTFW_PRT", "-F VIRTFW_PRT", "-X VIRTFW_PRT"],
}
OLD_IPT_BASE = {"backend": "iptables", "ipv4": _OLD_IPT_FAMILY_BASE, "ipv6": {}}


# ---- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [NFT_RULES, NftRules(), NftIntent(), NFT_BASE, NFT_BASE_INTENT, IPT_RULES, IptRules(), IPT_BASE, IptBase()],
    ids=repr,
)
def test_record_reads_back_what_it_writes(record):
    data = record.to_json()
    assert type(record).from_json(data, W) == record
    assert data["backend"] in ("nftables", "iptables")


def test_nft_load_record_tells_intent_from_rules():
    assert load_record(NftIntent().to_json(), W) == NftIntent()
    assert load_record(NFT_RULES.to_json(), W) == NFT_RULES
    backend = NftablesBackend()
    assert backend.load_record(NFT_RULES.to_json(), W) == NFT_RULES
    assert backend.load_base(NFT_BASE.to_json(), W) == NFT_BASE


def test_iptables_backend_loads_its_records():
    backend = IptablesBackend()
    assert backend.load_record(IPT_RULES.to_json(), W) == IPT_RULES
    assert backend.load_base(IPT_BASE.to_json(), W) == IPT_BASE


def test_json_shapes():
    assert NFT_RULES.to_json() == {
        "backend": "nftables",
        "tables": {"ip": 1, "ip6": 2},
        "rules": [
            ["ip", "guest_output", 9, 'iif "vfwbr0" counter reject'],
            ["ip6", "guest_output", 9, 'iif "vfwbr0" counter reject'],
            ["ip", "guest_nat", 14, "ip saddr 192.168.122.0/24 ip daddr != 192.168.122.0/24 counter masquerade"],
        ],
    }
    assert NftIntent().to_json() == {"backend": "nftables", "rebuild": True}
    assert NFT_BASE_INTENT.to_json() == {
        "backend": "nftables",
        "tables": {"ip": None, "ip6": None},
        "handles_unknown": True,
    }
    assert IptBase(IptFamilyBase((("filter", "INPUT", "VIRTFW_INP"),), (("filter", "VIRTFW_INP"),))).to_json() == {
        "backend": "iptables",
        "ipv4": {"hooks": [["filter", "INPUT", "VIRTFW_INP"]], "chains": [["filter", "VIRTFW_INP"]]},
        "ipv6": {"hooks": [], "chains": []},
    }


# ---- the previous version's records ------------------------------------------------------


def test_old_nft_rules_load_with_their_texts():
    record = NftRules.from_json(OLD_NFT_RULES, W)
    assert record == NFT_RULES
    assert [rule.delete_command() for rule in record.rules] == OLD_NFT_RULES["batch"]


def test_old_nft_rules_without_texts_name_the_handle():
    old = {"backend": "nftables", "batch": ["delete rule ip virtfw_network guest_nat handle 7"], "tables": {"ip": 3}}
    assert NftRules.from_json(old, W).rules == (NftRule("ip", "guest_nat", 7, "handle 7"),)


def test_old_nft_intent_and_bases_load():
    assert load_record(OLD_NFT_INTENT, W) == NftIntent()
    assert NftBase.from_json(OLD_NFT_BASE, W) == NFT_BASE
    assert NftBase.from_json(OLD_NFT_BASE_INTENT, W) == NFT_BASE_INTENT


def test_old_iptables_rules_load_and_give_the_same_lines():
    record = IptRules.from_json(OLD_IPT_RULES, W)
    assert record.removal_blocks(Family.IPV4) == OLD_IPT_RULES["ipv4"]
    assert record.removal_blocks(Family.IPV6) == OLD_IPT_RULES["ipv6"]
    assert record.ipv4[0] == IptRule(
        "filter", "VIRTFW_FWI", "-o vfwbr0 -d 192.168.122.0/24 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    )


def test_old_iptables_base_loads_and_gives_the_same_lines():
    record = IptBase.from_json(OLD_IPT_BASE, W)
    old_lines = {table: lines for table, lines in _OLD_IPT_FAMILY_BASE.items() if table != "appeared"}
    assert record.ipv4.removal_blocks() == old_lines
    assert record.ipv4.appeared == Appeared(("filter", "mangle", "nat"))
    assert not record.ipv6
    assert IptBase.from_json(record.to_json(), W) == record


# ---- refused -------------------------------------------------------------------------------


def _changed(data: dict, path: list, value) -> dict:
    data = copy.deepcopy(data)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


NFT_RULES_JSON = NFT_RULES.to_json()
IPT_RULES_JSON = IPT_RULES.to_json()
IPT_BASE_JSON = IPT_BASE.to_json()

REFUSED = {
    # wrong types
    "nft not an object": (NftRules, []),
    "nft rules not a list": (NftRules, _changed(NFT_RULES_JSON, ["rules"], {})),
    "nft rule too short": (NftRules, _changed(NFT_RULES_JSON, ["rules", 0], ["ip", "guest_nat", 3])),
    "nft handle a string": (NftRules, _changed(NFT_RULES_JSON, ["rules", 0, 2], "9")),
    "nft handle a bool": (NftRules, _changed(NFT_RULES_JSON, ["rules", 0, 2], True)),
    "nft handle negative": (NftRules, _changed(NFT_RULES_JSON, ["rules", 0, 2], -1)),
    "nft table handle a string": (NftRules, _changed(NFT_RULES_JSON, ["tables", "ip"], "1")),
    "nft base flag not a bool": (NftBase, _changed(NFT_BASE.to_json(), ["handles_unknown"], "yes")),
    "nft intent not true": (NftIntent, {"backend": "nftables", "rebuild": False}),
    # unknown keys
    "nft rules unknown key": (NftRules, {**NFT_RULES_JSON, "extra": 1}),
    "nft base unknown key": (NftBase, {**NFT_BASE.to_json(), "batch2": []}),
    "nft intent unknown key": (NftIntent, {**OLD_NFT_INTENT, "tables": {}}),
    "ipt rules unknown key": (IptRules, {**IPT_RULES_JSON, "ipv5": []}),
    "ipt base unknown key": (IptBase, _changed(IPT_BASE_JSON, ["ipv4", "rules"], [])),
    # another backend's record, or none named
    "nft record of iptables": (NftRules, {**NFT_RULES_JSON, "backend": "iptables"}),
    "ipt record of nftables": (IptRules, {**IPT_RULES_JSON, "backend": "nftables"}),
    "ipt base without backend": (IptBase, {"ipv4": {}}),
    # names that are not ours
    "nft foreign family": (NftRules, _changed(NFT_RULES_JSON, ["rules", 0, 0], "inet")),
    "nft foreign chain": (NftRules, _changed(NFT_RULES_JSON, ["rules", 0, 1], "forward")),
    "nft foreign table family": (NftBase, _changed(NFT_BASE.to_json(), ["tables"], {"bridge": 1})),
    "nft old foreign table": (NftRules, _changed(OLD_NFT_RULES, ["batch", 0], "delete rule ip filter INPUT handle 9")),
    "nft old not a deletion": (NftRules, _changed(OLD_NFT_RULES, ["batch", 0], "flush ruleset")),
    "nft old base foreign table": (NftBase, _changed(OLD_NFT_BASE, ["batch", 0], "delete table ip filter")),
    "nft old base unrecorded family": (NftBase, _changed(OLD_NFT_BASE, ["tables"], {"ip": 1})),
    "ipt foreign chain": (IptRules, _changed(IPT_RULES_JSON, ["ipv4", 0, 1], "INPUT")),
    "ipt chain in wrong table": (IptRules, _changed(IPT_RULES_JSON, ["ipv4", 0, 0], "raw")),
    "ipt foreign hook": (IptBase, _changed(IPT_BASE_JSON, ["ipv4", "hooks", 0], ["filter", "FORWARD", "DOCKER"])),
    "ipt foreign chain to delete": (IptBase, _changed(IPT_BASE_JSON, ["ipv4", "chains", 0], ["filter", "INPUT"])),
    "ipt old foreign chain": (IptRules, _changed(OLD_IPT_RULES, ["ipv4", "filter", 0], "-D INPUT -j ACCEPT")),
    "ipt old flush of a builtin": (IptBase, _changed(OLD_IPT_BASE, ["ipv4", "filter", 5], "-F INPUT")),
    "ipt old unknown table": (IptRules, _changed(OLD_IPT_RULES, ["ipv4", "raw"], [])),
    # specifications that could be read as something else
    "ipt spec with a newline": (IptRules, _changed(IPT_RULES_JSON, ["ipv4", 0, 2], "-j ACCEPT\nCOMMIT\n*filter")),
    "ipt spec moves table": (IptRules, _changed(IPT_RULES_JSON, ["ipv4", 0, 2], "-t nat -j ACCEPT")),
    "ipt spec another command": (IptRules, _changed(IPT_RULES_JSON, ["ipv4", 0, 2], "-j ACCEPT -F INPUT")),
    "ipt spec empty": (IptRules, _changed(IPT_RULES_JSON, ["ipv4", 0, 2], "")),
    "ipt spec double space": (IptRules, _changed(IPT_RULES_JSON, ["ipv4", 0, 2], "-j  ACCEPT")),
    "ipt appeared wrong shape": (IptBase, _changed(IPT_BASE_JSON, ["ipv4", "appeared"], {"tables": "nat"})),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_off_shape_records_are_refused(case):
    cls, data = REFUSED[case]
    with pytest.raises(RecordError) as raised:
        cls.from_json(data, W)
    assert str(raised.value).startswith(W), "the error names where the record was found"


# ---- the names the records accept are the backends' ------------------------------------


def test_nft_record_chains_are_the_backends():
    assert set(NFT_CHAINS.values()) == set(RULE_CHAINS)


# ---- base records combine ------------------------------------------------------------------


def test_nft_bases_merge():
    merged = NFT_BASE_INTENT.merged(NftBase({"ip": 5}))
    assert merged == NftBase({"ip": 5, "ip6": None}, handles_unknown=True)
    assert NftBase({"ip": 1}).merged(NftBase({"ip6": 2})) == NFT_BASE


def test_iptables_bases_merge_each_piece_once_and_keep_the_earliest_appeared():
    later = IptFamilyBase(
        (("filter", "OUTPUT", "VIRTFW_OUT"), ("filter", "INPUT", "VIRTFW_INP")),
        (("filter", "VIRTFW_OUT"),),
        Appeared(("mangle",)),
    )
    merged = IptBase(IPT_FAMILY_BASE).merged(IptBase(later))
    assert merged.ipv4.hooks == IPT_FAMILY_BASE.hooks + (("filter", "OUTPUT", "VIRTFW_OUT"),)
    assert merged.ipv4.chains == IPT_FAMILY_BASE.chains + (("filter", "VIRTFW_OUT"),)
    assert merged.ipv4.appeared == IPT_FAMILY_BASE.appeared
    assert IptBase().merged(IptBase(later)).ipv4.appeared == Appeared(("mangle",))
    blocks = merged.ipv4.removal_blocks()
    assert list(blocks) == ["filter", "nat"]
    assert blocks["filter"][:4] == [
        "-D FORWARD -j VIRTFW_FWX",
        "-D INPUT -j VIRTFW_INP",
        "-D OUTPUT -j VIRTFW_OUT",
        "-F VIRTFW_INP",
    ], "jumps go before the chains they reach"


def test_combined_base():
    assert combined_base(None, NFT_BASE) is NFT_BASE
    assert combined_base(NFT_BASE, None) is NFT_BASE
    assert combined_base(None, None) is None
    assert combined_base(NftBase({"ip": 1}), NftBase({"ip6": 2})) == NFT_BASE


# ---- what a removal leaves to do -------------------------------------------------------------


@pytest.mark.parametrize(
    "others, needs_rebuild, expected",
    [
        (["b"], True, "rebuild ['b']"),
        (["b"], False, None),
        ([], True, "drop base"),
        ([], False, "drop base"),
    ],
)
def test_after_removal(others, needs_rebuild, expected):
    done = []
    after_removal(
        others,
        needs_rebuild=needs_rebuild,
        rebuild=lambda users: done.append(f"rebuild {list(users)}"),
        drop_base=lambda: done.append("drop base"),
    )
    assert done == ([expected] if expected else [])


def test_iptables_reports_no_foreign_drops():
    assert IptablesBackend().foreign_drops(None, ["vfwbr0"]) == []  # type: ignore[arg-type]


# ---- the status file ---------------------------------------------------------------------

# As net-start writes it (the previous version wrote the same shape).
STATUS = {
    "backend": "nftables",
    "bridge": {"addresses": ["192.168.122.1/24"], "created": True, "name": "vfwbr0"},
    "dnsmasq": {"pid": 4242},
    "firewall": OLD_NFT_RULES,
    "name": "default",
    "started": 1764630000.25,
    "state": "active",
    "transient": False,
    "xml": "<network>\n  <name>default</name>\n</network>\n",
}


def test_status_reads_back_what_it_writes():
    status = NetworkStatus.from_json(STATUS, "status of network 'default'")
    assert status.to_json() == STATUS
    assert status.bridge == BridgeRecord("vfwbr0", True, ["192.168.122.1/24"])
    assert status.dnsmasq == DnsmasqStatus(4242)
    assert status.complete
    starting = {**STATUS, "state": "starting", "firewall": None, "backend": None}
    del starting["dnsmasq"]
    again = NetworkStatus.from_json(starting, "s")
    assert again.to_json() == starting
    assert again.dnsmasq is None and not again.complete


STATUS_REFUSED = {
    "unknown key": {**STATUS, "pid": 1},
    "missing key": {k: v for k, v in STATUS.items() if k != "transient"},
    "unknown state": {**STATUS, "state": "running"},
    "started not a number": {**STATUS, "started": "today"},
    "bridge name not text": {**STATUS, "bridge": {"name": 1, "created": True}},
    "bridge unknown key": {**STATUS, "bridge": {**STATUS["bridge"], "mtu": 1500}},
    "firewall not an object": {**STATUS, "firewall": ["delete table ip filter"]},
    "dnsmasq pid not an integer": {**STATUS, "dnsmasq": {"pid": "1"}},
    "backend not text": {**STATUS, "backend": 1},
}


@pytest.mark.parametrize("case", sorted(STATUS_REFUSED))
def test_off_shape_status_is_refused(case):
    with pytest.raises(RecordError) as raised:
        NetworkStatus.from_json(STATUS_REFUSED[case], "status of network 'default'")
    assert str(raised.value).startswith("status of network 'default'")
