"""``virtfw.rules.nft.listing``: nft's text listing of a table read into chains and maps,
with anything it cannot read kept apart from what is virtfw's (never taken for it)."""

from __future__ import annotations

import json

import pytest

from virtfw.rules.nft.listing import Hook, chain_digest, check_names, parse_chains, parse_maps, parse_table

LISTED = """table bridge virtfw_nwfilter_ethernet {
\tmap vmap-iif {
\t\ttype ifname : verdict
\t\telements = { "vnet1" : jump n-vnet1-out,
\t\t\t     "vnet2" : jump n-vnet2-out,
\t\t\t     "vnet3" : drop }
\t}

\tmap vmap-oif {
\t\ttype ifname : verdict
\t}

\tchain prerouting {
\t\ttype filter hook prerouting priority -300; policy accept;
\t\tiifname vmap @vmap-iif
\t}

\tchain n-vnet1-out {
\t\tether type ip counter accept comment "a { b"
\t\tdrop
\t}

\tchain n-vnet2-out {
\t}
}
"""


def test_chains_hooks_and_map_entries_are_read() -> None:
    listing = parse_table(LISTED)
    assert listing.chains == {"prerouting", "n-vnet1-out", "n-vnet2-out"}
    assert listing.hooks == {"prerouting": Hook("filter", "prerouting", -300, "accept")}
    assert listing.rules["prerouting"] == ["iifname vmap @vmap-iif"]
    assert listing.rules["n-vnet1-out"] == ['ether type ip counter accept comment "a { b"', "drop"]
    assert listing.rules["n-vnet2-out"] == []
    assert listing.maps == {}  # read from JSON: parse_maps
    assert listing.digest("n-vnet1-out") == chain_digest(listing.rules["n-vnet1-out"])
    assert listing.digest("n-vnet2-out") == chain_digest([]) != listing.digest("n-vnet1-out")


def test_map_entries_are_read_from_json_each_key_whole() -> None:
    odd = 'vnet1" : jump n-vnet1-out, "vnet5'  # in text, it would pass for two entries
    listed = {
        "nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"map": {"family": "bridge", "name": "vmap-iif", "table": "t", "type": "ifname", "map": "verdict",
                     "elem": [["vnet1", {"jump": {"target": "n-vnet1-out"}}], [odd, {"jump": {"target": "x"}}],
                              ["vnet3", {"drop": None}], [{"concat": ["a", "b"]}, {"jump": {"target": "y"}}]]}},
            {"map": {"family": "bridge", "name": "vmap-oif", "table": "t", "type": "ifname", "map": "verdict"}},
        ]
    }  # fmt: skip
    assert parse_maps(json.dumps(listed)) == {
        "t": {
            "vmap-iif": {"vnet1": "n-vnet1-out", odd: "x", "vnet3": None, '{"concat": ["a", "b"]}': "y"},
            "vmap-oif": {},
        }
    }


def test_a_hook_line_is_only_a_base_chains_first_line() -> None:
    later = LISTED.replace("\t\tdrop\n", "\t\tdrop\n\t\ttype filter hook input priority 0; policy drop;\n")
    listing = parse_table(later)
    assert "n-vnet1-out" not in listing.hooks
    assert listing.rules["n-vnet1-out"][-1] == "type filter hook input priority 0; policy drop;"


def test_a_line_it_does_not_know_counts_as_a_rule() -> None:
    commented = LISTED.replace("\tchain n-vnet2-out {\n", '\tchain n-vnet2-out {\n\t\tcomment "someone\'s"\n')
    assert parse_table(commented).rules["n-vnet2-out"] == ['comment "someone\'s"']


def test_virtfws_own_listing_raises_no_doubt() -> None:
    listing = parse_table(LISTED)
    assert listing.doubts == []
    assert listing.map_blocks == {"vmap-iif", "vmap-oif"}
    listing.maps = {"vmap-iif": {}, "vmap-oif": {}}
    check_names(listing, ["prerouting", "n-vnet1-out", "n-vnet2-out"])
    assert listing.doubts == []


DECOYS = {
    # a chain named "x\n\tchain n-vnet1-out" (netlink, nft -j) after the real one
    "a name with a newline": "\tchain x\n\tchain n-vnet1-out {\n\t\tdrop\n\t}\n",
    # a rule comment holding a quote and a newline closes the block and opens a decoy
    "a comment with a quote": '\tchain n-vnet2-out {\n\t\taccept comment "a"\n\t}\n\tchain n-vnet1-out {\n\t\tdrop"\n\t}\n',
    "the same chain twice": "\tchain n-vnet1-out {\n\t\tdrop\n\t}\n",
    "a kind of block virtfw does not make": "\tset s {\n\t\ttype ipv4_addr\n\t}\n",
    "a line outside any block": "\t}\n\t\tdrop\n",
    "a second table": "}\ntable bridge other {\n",
}


@pytest.mark.parametrize("what", sorted(DECOYS))
def test_a_listing_not_shaped_as_virtfws_is_doubted(what) -> None:
    tampered = LISTED.replace("\n}\n", "\n" + DECOYS[what] + "}\n")
    assert parse_table(tampered).doubts, what


def test_chain_and_map_names_are_checked_against_json() -> None:
    listed = {"nftables": [
        {"chain": {"family": "bridge", "table": "t", "name": "prerouting"}},
        {"chain": {"family": "bridge", "table": "t", "name": "n-vnet1-out"}},
        {"chain": {"family": "bridge", "table": "t", "name": "x\n\tchain n-vnet2-out"}},
        {"chain": {"family": "bridge", "table": "u", "name": "n-vnet2-out"}},
    ]}  # fmt: skip
    chains = parse_chains(json.dumps(listed))
    assert chains["t"] == ["prerouting", "n-vnet1-out", "x\n\tchain n-vnet2-out"]
    listing = parse_table(LISTED)
    listing.maps = {"vmap-iif": {}, "vmap-oif": {}}
    check_names(listing, chains["t"])
    assert listing.doubts == ["its chains' names do not read back as nft prints them"]
    listing = parse_table(LISTED)
    listing.maps = {"vmap-iif": {}}
    check_names(listing, None)
    assert listing.doubts == [
        "its chains could not be listed as JSON",
        "its maps' names do not read back as nft prints them",
    ]
