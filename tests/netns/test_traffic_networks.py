"""Real traffic through networks virtfw starts, in namespaces the tests create.

Each test builds a fresh topology (see helpers/topology.py): a host namespace where
virtfw runs, a lan namespace on the host's uplink (10.99.0.1 <-> 10.99.0.2),
and guest namespaces plugged into the bridges virtfw creates.  Reachability is
checked with real TCP connections; the listener reports the source address it
saw, so NAT versus routing is visible.  Nothing runs in the root namespace.
"""

from __future__ import annotations

import pytest
from helpers.nsutil import our_namespaces, ruleset
from helpers.topology import HOST_UPLINK, LAN_ADDR, Topology, ping, raw_rulesets, tcp_probe, topology

pytestmark = pytest.mark.netns


@pytest.fixture
def topo(tmp_path, backend):
    with topology(tmp_path, backend) as t:
        # STP off so a plugged guest forwards at once instead of after ~4 s of
        # listening/learning; the teardown test keeps the default (on).
        t.stp = False
        names = [t.host.name, t.lan.name]
        yield t
        names += [g.name for g in t.guests.values()]
    left = set(names) & set(our_namespaces())
    assert not left, f"namespaces not deleted: {left}"


def connected_as(probe, peer: str) -> None:
    assert probe.connected, str(probe)
    assert probe.peer == peer, str(probe)


def refused(probe) -> None:
    assert not probe.connected, str(probe)
    assert probe.peer is None, str(probe)


def forwarding(t: Topology) -> str:
    return t.sysctl(t.host, "net.ipv4.ip_forward")


# ---------------------------------------------------------------- 1. NAT


def test_nat_masquerades_and_blocks_unsolicited(topo: Topology):
    t = topo
    assert forwarding(t) == "0"
    t.define_and_start("nat1", "vfwbr1", "nat", "192.168.101.1")
    assert forwarding(t) == "1", "net-start of a nat network must enable IPv4 forwarding"
    guest = t.add_guest("vfwbr1", "192.168.101.10", "192.168.101.1")

    # guest -> lan works, and the lan sees the host's uplink address
    connected_as(tcp_probe(guest, t.lan, LAN_ADDR), HOST_UPLINK)
    assert ping(guest, LAN_ADDR)

    # give the lan a route to the guest subnet: still masqueraded outbound,
    # and a connection the guest did not start is refused
    t.lan_route("192.168.101.0/24")
    connected_as(tcp_probe(guest, t.lan, LAN_ADDR), HOST_UPLINK)
    # control: the route works (the host's own bridge address answers)
    connected_as(tcp_probe(t.lan, t.host, "192.168.101.1"), LAN_ADDR)
    refused(tcp_probe(t.lan, guest, "192.168.101.10"))


# ---------------------------------------------------------------- 2. routed


def test_routed_both_ways_without_nat(topo: Topology):
    t = topo
    t.define_and_start("route1", "vfwbr1", "route", "192.168.101.1")
    assert forwarding(t) == "1", "net-start of a routed network must enable IPv4 forwarding"
    guest = t.add_guest("vfwbr1", "192.168.101.10", "192.168.101.1")
    t.lan_route("192.168.101.0/24")

    connected_as(tcp_probe(guest, t.lan, LAN_ADDR), "192.168.101.10")
    connected_as(tcp_probe(t.lan, guest, "192.168.101.10"), LAN_ADDR)
    assert ping(guest, LAN_ADDR)
    assert ping(t.lan, "192.168.101.10")


# ---------------------------------------------------------------- 3. isolated


def test_isolated_guests_only_reach_each_other(topo: Topology):
    t = topo
    t.define_and_start("iso1", "vfwbr1", None, "192.168.101.1")
    g1 = t.add_guest("vfwbr1", "192.168.101.10", "192.168.101.1")
    g2 = t.add_guest("vfwbr1", "192.168.101.11", "192.168.101.1")
    t.lan_route("192.168.101.0/24")
    # Forwarding on, as it is whenever any nat/route network is active on the
    # host: the isolated network's own rules must keep it isolated, not a
    # disabled ip_forward.
    t.sysctl_set(t.host, "net.ipv4.ip_forward", "1")

    connected_as(tcp_probe(g1, g2, "192.168.101.11"), "192.168.101.10")
    connected_as(tcp_probe(g2, g1, "192.168.101.10"), "192.168.101.11")

    refused(tcp_probe(g1, t.lan, LAN_ADDR))
    refused(tcp_probe(t.lan, g1, "192.168.101.10"))
    assert not ping(g1, LAN_ADDR)
    assert not ping(t.lan, "192.168.101.10")


# ---------------------------------------------------------------- 4. two NAT networks

NATS = {
    1: ("nat1", "vfwbr1", "192.168.101.1"),
    2: ("nat2", "vfwbr2", "192.168.102.1"),
}


@pytest.mark.parametrize("order", [(1, 2), (2, 1)], ids=["nat1-first", "nat2-first"])
def test_two_nat_networks_do_not_reach_each_other(topo: Topology, order):
    t = topo
    for n in order:
        name, bridge, address = NATS[n]
        t.define_and_start(name, bridge, "nat", address)
    g1 = t.add_guest("vfwbr1", "192.168.101.10", "192.168.101.1")
    g2 = t.add_guest("vfwbr2", "192.168.102.10", "192.168.102.1")

    refused(tcp_probe(g1, g2, "192.168.102.10"))
    refused(tcp_probe(g2, g1, "192.168.101.10"))

    connected_as(tcp_probe(g1, t.lan, LAN_ADDR), HOST_UPLINK)
    connected_as(tcp_probe(g2, t.lan, LAN_ADDR), HOST_UPLINK)


# ---------------------------------------------------------------- 5. exact teardown

ADMIN_NFT = """
table inet admin {
    chain c {
        type filter hook forward priority 10; policy accept;
        tcp dport 22 accept
    }
}
"""


def test_teardown_restores_ruleset_exactly(topo: Topology, backend: str):
    t = topo
    t.stp = None  # the network XML exactly as an admin would write it: bridge STP default (on)
    h = t.host
    h.run(["nft", "-f", "-"], input=ADMIN_NFT)
    h.sh("iptables", "-A", "FORWARD", "-s", "10.1.2.3", "-j", "ACCEPT")
    h.sh("ip6tables", "-A", "FORWARD", "-s", "2001:db8::3", "-j", "ACCEPT")
    before = ruleset(h, backend)
    before_raw = raw_rulesets(h)

    t.define_and_start("nat1", "vfwbr1", "nat", "192.168.101.1")
    t.define_and_start("route2", "vfwbr2", "route", "192.168.102.1")
    t.create_transient("iso3", "vfwbr3", None, "192.168.103.1")
    for bridge in ("vfwbr1", "vfwbr2", "vfwbr3"):
        assert t.link_exists(h, bridge), f"{bridge} missing after net-start"
    assert ruleset(h, backend) != before, "net-start installed no rules"
    # live traffic, so the rules have counters and conntrack state when removed
    guest = t.add_guest("vfwbr1", "192.168.101.10", "192.168.101.1")
    connected_as(tcp_probe(guest, t.lan, LAN_ADDR), HOST_UPLINK)

    for name in ("route2", "iso3", "nat1"):
        t.vfw("net-destroy", name)

    left = [bridge for bridge in ("vfwbr1", "vfwbr2", "vfwbr3") if t.link_exists(h, bridge)]
    assert not left, f"bridges still exist after net-destroy: {left}"
    # every difference at once, so a failure shows the whole picture
    compared = {f"ruleset({backend}) normalized": (before, ruleset(h, backend))}
    after_raw = raw_rulesets(h)
    compared.update({f"raw {tool}": (before_raw[tool], after_raw[tool]) for tool in before_raw})
    diffs = [_diff(what, old, new) for what, (old, new) in compared.items() if old != new]
    if diffs:
        pytest.fail("ruleset differs after destroying every network:\n" + "\n".join(diffs), pytrace=False)


def _diff(what: str, old: str, new: str) -> str:
    import difflib

    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), "before", "after", lineterm="")
    return f"--- {what}\n" + "\n".join(lines)


# ---------------------------------------------------------------- 6. reload


def test_reload_restores_flushed_rules(topo: Topology, backend: str):
    t = topo
    h = t.host
    t.define_and_start("nat1", "vfwbr1", "nat", "192.168.101.1")
    guest = t.add_guest("vfwbr1", "192.168.101.10", "192.168.101.1")
    connected_as(tcp_probe(guest, t.lan, LAN_ADDR), HOST_UPLINK)
    installed = ruleset(h, backend)

    if backend == "nftables":
        h.sh("nft", "flush", "ruleset")
    else:
        h.sh("iptables", "-F")
        h.sh("iptables", "-t", "nat", "-F")
    assert ruleset(h, backend) != installed
    # without masquerade the lan (no route back) cannot answer
    refused(tcp_probe(guest, t.lan, LAN_ADDR))

    t.vfw("reload")
    connected_as(tcp_probe(guest, t.lan, LAN_ADDR), HOST_UPLINK)
    first = ruleset(h, backend)

    t.vfw("reload")
    assert ruleset(h, backend) == first, "a second reload changed the ruleset"
    connected_as(tcp_probe(guest, t.lan, LAN_ADDR), HOST_UPLINK)
    assert first == installed, "reload did not restore the ruleset net-start installed"
