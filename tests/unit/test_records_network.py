"""Typed removal records of the network backends: JSON round trips, the JSON the untyped
records had (status files of the previous version still load), and refusal of anything
that is not a record of virtfw's own objects."""

from __future__ import annotations

import json

import pytest

from virtfw.rules.nft.network_records import (
    NftNetworkBase,
    NftNetworkRecord,
    NftPendingRecord,
    NftRule,
    load_record,
)
from virtfw.rules.records import RecordError
from virtfw.rules.xtables.appeared import Appeared
from virtfw.rules.xtables.network_records import FamilyRemoval, IptablesRecord, RemovalLine

# As the untyped backends wrote them (taken from status files of the previous version).
OLD_NFT_NETWORK = {
    "backend": "nftables",
    "tables": {"ip": 7},
    "batch": [
        "delete rule ip virtfw_network guest_output handle 12",
        "delete rule ip virtfw_network guest_nat handle 15",
    ],
    "rules": {"12": 'iif "virbr0" ip saddr 192.168.122.0/24 counter accept', "15": "counter masquerade"},
}
OLD_NFT_BASE = {
    "backend": "nftables",
    "tables": {"ip": 7, "ip6": 8},
    "batch": ["delete table ip virtfw_network", "delete table ip6 virtfw_network"],
}
OLD_NFT_INTENT = {
    "backend": "nftables",
    "tables": {"ip": None},
    "batch": ["delete table ip virtfw_network"],
    "any_handle": True,
}
OLD_IPTABLES = {
    "backend": "iptables",
    "ipv4": {
        "filter": ["-D VIRTFW_FWO -s 192.168.122.0/24 -i virbr0 -j ACCEPT", "-D INPUT -j VIRTFW_INP"],
        "nat": ["-D POSTROUTING -j VIRTFW_PRT", "-F VIRTFW_PRT", "-X VIRTFW_PRT"],
        "appeared": {"tables": ["nat"], "chains": [["filter", "FORWARD"]]},
    },
    "ipv6": {},
}


@pytest.mark.parametrize("data", [OLD_NFT_NETWORK, {"backend": "nftables", "tables": {}, "batch": []}])
def test_nft_network_record_reads_the_old_json_and_writes_it_back(data: dict) -> None:
    record = NftNetworkRecord.from_json(json.loads(json.dumps(data)), "test")
    written = record.to_json()
    assert NftNetworkRecord.from_json(written, "test") == record
    # texts (and digests) are now keyed by family and handle; everything else as it was
    keyed = {f"ip {handle}": text for handle, text in data.get("rules", {}).items()}
    assert written == ({**data, "rules": keyed} if keyed else data)


def test_nft_network_record_keeps_ip_and_ip6_rules_of_one_handle_apart() -> None:
    """Both tables number their rules from 1: handle 9 in ip and handle 9 in ip6 are two rules."""
    rules = (
        NftRule("ip", "guest_output", 9, 'iif "virbr0" counter reject', "aaaa"),
        NftRule("ip6", "guest_output", 9, 'iif "virbr0" counter reject', "bbbb"),
        NftRule("ip", "guest_output", 12, "ip saddr 192.168.122.0/24 counter accept", "cccc"),
        NftRule("ip6", "guest_output", 12, "ip6 saddr 2001:db8::/64 counter accept", "dddd"),
    )
    record = NftNetworkRecord((("ip", 3), ("ip6", 4)), rules)
    assert NftNetworkRecord.from_json(json.loads(json.dumps(record.to_json())), "test") == record


def test_an_old_record_with_one_handle_in_both_families_mixes_nothing_up() -> None:
    """Keyed by the handle alone, a shared handle's text and digest could be either family's:
    neither is used (verify then checks presence only), the unshared ones are."""
    old = {
        "backend": "nftables",
        "tables": {"ip": 3, "ip6": 4},
        "batch": [
            "delete rule ip virtfw_network guest_output handle 9",
            "delete rule ip6 virtfw_network guest_output handle 9",
            "delete rule ip virtfw_network guest_nat handle 15",
        ],
        "rules": {"9": "ip6 saddr 2001:db8::/64 counter accept", "15": "counter masquerade"},
        "digests": {"9": "ffff", "15": "eeee"},
    }
    record = NftNetworkRecord.from_json(old, "test")
    assert [(rule.text, rule.digest) for rule in record.rules] == [
        ("handle 9", None),
        ("handle 9", None),
        ("counter masquerade", "eeee"),
    ]


def test_nft_network_record_holds_structure() -> None:
    record = NftNetworkRecord.from_json(OLD_NFT_NETWORK, "test")
    assert record.tables == (("ip", 7),)
    assert record.rules[1] == NftRule("ip", "guest_nat", 15, "counter masquerade")
    assert record.rules[1].delete == "delete rule ip virtfw_network guest_nat handle 15"


def test_nft_pending_and_base_records() -> None:
    assert load_record({"backend": "nftables", "rebuild": True}, "test") == NftPendingRecord()
    assert NftPendingRecord().to_json() == {"backend": "nftables", "rebuild": True}
    for data in (OLD_NFT_BASE, OLD_NFT_INTENT):
        base = NftNetworkBase.from_json(data, "test")
        assert base.to_json() == data
    assert not NftNetworkBase.from_json(OLD_NFT_INTENT, "test").handles_known


def test_nft_base_merge_keeps_later_handles_and_unknown_handles() -> None:
    known = NftNetworkBase.from_json(OLD_NFT_BASE, "test")
    intent = NftNetworkBase.from_json(OLD_NFT_INTENT, "test")
    merged = known.merged(intent)
    assert dict(merged.tables) == {"ip": None, "ip6": 8}
    assert not merged.handles_known
    assert known.merged(NftNetworkBase((("ip", 9),))).tables == (("ip", 9), ("ip6", 8))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected an object"),
        ({**OLD_NFT_NETWORK, "batch": ["delete table ip filter"]}, "not a deletion of a rule"),
        ({**OLD_NFT_NETWORK, "batch": ["delete rule ip filter INPUT handle 3"]}, "not a deletion of a rule"),
        ({**OLD_NFT_NETWORK, "batch": ["delete rule ip virtfw_network guest_nat handle 3; flush ruleset"]}, "not a"),
        ({**OLD_NFT_NETWORK, "tables": {"inet": 3}}, "not an nft family"),
        ({**OLD_NFT_NETWORK, "tables": {"ip": "7"}}, "expected an integer"),
        ({**OLD_NFT_NETWORK, "extra": 1}, "unexpected key"),
    ],
)
def test_nft_network_record_refuses_what_virtfw_did_not_write(data: object, message: str) -> None:
    with pytest.raises(RecordError, match=message):
        NftNetworkRecord.from_json(data, "status of network 'n'")


def test_nft_base_refuses_other_tables() -> None:
    with pytest.raises(RecordError, match="not a deletion of virtfw's table"):
        NftNetworkBase.from_json({**OLD_NFT_BASE, "batch": ["delete table ip nat"]}, "base")


def test_iptables_record_round_trip_and_structure() -> None:
    record = IptablesRecord.from_json(OLD_IPTABLES, "test")
    assert record.to_json() == OLD_IPTABLES
    assert IptablesRecord.from_json(record.to_json(), "test") == record
    assert record.ipv4.appeared == Appeared(("nat",), (("filter", "FORWARD"),))
    assert record.ipv4.lines()[1] == ("filter", RemovalLine("-D", "INPUT", "-j VIRTFW_INP"))
    assert not record.ipv6


def test_iptables_base_merge_orders_hook_deletes_first_and_keeps_the_first_appeared() -> None:
    one = IptablesRecord(FamilyRemoval((("nat", (RemovalLine("-F", "VIRTFW_PRT"),)),), Appeared(("nat",))))
    two = IptablesRecord(FamilyRemoval((("nat", (RemovalLine("-D", "POSTROUTING", "-j VIRTFW_PRT"),)),), Appeared()))
    merged = one.merged(two)
    assert merged.ipv4.blocks() == {
        "filter": [],
        "nat": ["-D POSTROUTING -j VIRTFW_PRT", "-F VIRTFW_PRT"],
        "mangle": [],
    }
    assert merged.ipv4.appeared == Appeared(("nat",))


@pytest.mark.parametrize(
    "line",
    [
        "-F INPUT",  # a builtin chain
        "-X DOCKER",  # someone else's chain
        "-D INPUT -j DOCKER",  # a jump that is not ours
        "-D FORWARD -s 10.0.0.0/8 -j ACCEPT",  # an admin's rule in a builtin chain
        "-D VIRTFW_FWO -j ACCEPT\nCOMMIT\n*filter\n-F INPUT",  # a second batch smuggled in
        "-D VIRTFW_FWO  -j ACCEPT",  # not one line as virtfw writes them
        "-D VIRTFW_FWO -j ACCEPT -t nat",  # a rule spec that moves to another table
        "-D VIRTFW_FWO -j ACCEPT -F INPUT",  # a rule spec that is a second command
        "-D VIRTFW_FWO --flush INPUT",
        "-P FORWARD ACCEPT",
    ],
)
def test_iptables_record_refuses_lines_that_remove_anything_else(line: str) -> None:
    with pytest.raises(RecordError, match="status of network 'n'.ipv4.filter"):
        IptablesRecord.from_json({"backend": "iptables", "ipv4": {"filter": [line]}}, "status of network 'n'")


def test_iptables_record_refuses_unknown_tables_and_keys() -> None:
    with pytest.raises(RecordError, match="unexpected key 'raw'"):
        IptablesRecord.from_json({"backend": "iptables", "ipv4": {"raw": []}}, "test")
    with pytest.raises(RecordError, match="expected an array"):
        IptablesRecord.from_json({"backend": "iptables", "ipv4": {"filter": "-F VIRTFW_FWO"}}, "test")
