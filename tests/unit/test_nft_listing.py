"""``virtfw.rules.nft.listing``: nft's text listing of a table read into chains and maps,
with anything it cannot read kept apart from what is virtfw's (never taken for it)."""

from __future__ import annotations

import json

from virtfw.rules.nft.listing import Hook, chain_digest, parse_maps, parse_table

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
