"""The firewalld harness (tests/helpers/firewalld.py): a real firewalld in a namespace.

What it proves, each case in namespaces of its own:

* firewalld runs in the namespace (``--state`` running, ``table inet firewalld`` there),
  a zone dropped into its config is listed, an interface of the namespace can be put in
  it; after the context no process of it is left and the root namespace's ruleset and
  links are as before (and firewalld made no /run/firewalld on the host);
* what becomes of an interface's zone across ``--reload`` and a restart (virtfw's design
  depends on it): a runtime binding (``--change-interface``) is dropped by a reload with
  FlushAllOnReload=yes (firewalld's default), kept with FlushAllOnReload=no, and dropped
  by a restart either way; a permanent one (``<interface>`` in the zone's XML) survives
  both;
* forwarding through the namespace between two interfaces (ping between two leaf
  namespaces): rejected between two interfaces in no zone (the default zone's catch-all
  has no interface for its ``<forward/>``), accepted between two interfaces bound to one
  zone with ``<forward/>``, rejected between two zones of the default target, accepted
  out of a zone of target ACCEPT (trusted) into another zone or none, not the other way;
  and accepted again once firewalld is stopped (its table is gone).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.firewalld import Firewalld, firewalld_in
from helpers.nsutil import Netns, add_port, netns, run

pytestmark = pytest.mark.netns

ZONE = """<?xml version="1.0" encoding="utf-8"?>
<zone><short>vfwtest</short><description>dropped in by the test</description>{extra}</zone>
"""


def root_state() -> dict[str, object]:
    """What the harness must not change in the root namespace."""
    links = run(["ip", "-o", "link", "show"]).stdout.splitlines()
    return {
        "nft list ruleset": run(["nft", "list", "ruleset"]).stdout,
        "links": sorted(line.split(":")[1].strip() for line in links),
        "/run/firewalld": os.path.exists("/run/firewalld"),
    }


def zone_of(fw: Firewalld, interface: str) -> str:
    """``--get-zone-of-interface``, or "no zone" (firewall-cmd's message on stderr, exit 2)."""
    proc = fw.run(f"--get-zone-of-interface={interface}", check=False)
    if proc.returncode == 2:
        assert proc.stderr.strip() == "no zone", proc.stderr
        return "no zone"
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_firewalld_runs_in_namespace_and_leaves_nothing(tmp_path: Path) -> None:
    before = root_state()
    with netns() as ns:
        with firewalld_in(ns, tmp_path, zones={"vfwtest": ZONE.format(extra="")}) as fw:
            pids = [p.pid for p in (fw.proc, fw.bus) if p is not None]
            assert fw.cmd("--state").strip() == "running"
            assert "table inet firewalld" in ns.sh("nft", "list", "tables")
            assert root_state() == before, "firewalld's rules must stay in the namespace"
            assert "vfwtest" in fw.cmd("--get-zones").split()
            add_port(ns, "vfwport0")
            assert fw.cmd("--zone=vfwtest", "--change-interface=vfwport0").strip() == "success"
            assert zone_of(fw, "vfwport0") == "vfwtest"
            fw.reload()
            assert fw.cmd("--state").strip() == "running"
            # the env handed to virtfw reaches this firewalld through the wrapper on PATH
            proc = ns.run(["env", *(f"{k}={v}" for k, v in fw.env.items()), "firewall-cmd", "--get-default-zone"])
            assert proc.stdout.strip() == "public"
        assert run(["ip", "netns", "pids", ns.name]).stdout.split() == []
        assert ns.sh("nft", "list", "tables") == "", "CleanupOnExit: firewalld removes its table"
        for pid in pids:
            assert not os.path.exists(f"/proc/{pid}"), f"process {pid} left"
    assert root_state() == before


@pytest.mark.parametrize("flush_all", ["yes", "no"])
def test_zone_bindings_across_reload_and_restart(tmp_path: Path, flush_all: str) -> None:
    permanent = ZONE.format(extra='<interface name="vfwperm0"/>')
    with (
        netns() as ns,
        firewalld_in(ns, tmp_path, zones={"vfwtest": permanent}, conf={"FlushAllOnReload": flush_all}) as fw,
    ):
        add_port(ns, "vfwrt0")
        add_port(ns, "vfwperm0")
        assert zone_of(fw, "vfwperm0") == "vfwtest"
        fw.cmd("--zone=vfwtest", "--change-interface=vfwrt0")
        assert zone_of(fw, "vfwrt0") == "vfwtest"

        fw.reload()
        assert zone_of(fw, "vfwrt0") == ("no zone" if flush_all == "yes" else "vfwtest")
        assert zone_of(fw, "vfwperm0") == "vfwtest"

        fw.cmd("--zone=vfwtest", "--change-interface=vfwrt0")
        fw.restart()
        assert zone_of(fw, "vfwrt0") == "no zone"
        assert zone_of(fw, "vfwperm0") == "vfwtest"


def _leaf(router: Netns, leaf: Netns, name: str, subnet: int) -> None:
    """veth ``name`` in the router, its peer in ``leaf``: 10.99.<subnet>.1/24 and .2/24."""
    peer = f"{name}p"
    router.run(["ip", "link", "add", name, "type", "veth", "peer", "name", peer, "netns", leaf.name])
    router.run(["ip", "addr", "add", f"10.99.{subnet}.1/24", "dev", name])
    router.run(["ip", "link", "set", name, "up"])
    leaf.run(["ip", "addr", "add", f"10.99.{subnet}.2/24", "dev", peer])
    leaf.run(["ip", "link", "set", peer, "up"])
    leaf.run(["ip", "route", "add", "default", "via", f"10.99.{subnet}.1"])


def _pings(src: Netns, dst: str) -> bool:
    return src.run(["ping", "-c", "1", "-W", "2", dst], check=False).returncode == 0


def test_forwarding_between_zones(tmp_path: Path) -> None:
    """The zone an interface is in decides what firewalld forwards from it.

    firewalld's forward chain sends a packet to the chain of the zone of its input
    interface (an interface in no zone: the default zone, by a catch-all), which ends in
    the zone's target: reject, or accept for target ACCEPT. ``<forward/>`` of a zone
    accepts only towards interfaces bound to that zone, so the catch-all default zone
    forwards nothing, not even between two interfaces that are both in no zone. firewalld's
    reject is final whatever another table (virtfw's) accepts at the same hook.
    """
    with netns() as router, netns() as a, netns() as b:
        _leaf(router, a, "vfwa", 1)
        _leaf(router, b, "vfwb", 2)
        router.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        assert _pings(a, "10.99.2.2"), "control: forwarding works without firewalld"
        with firewalld_in(router, tmp_path, zones={"vfwtest": ZONE.format(extra="<forward/>")}) as fw:
            assert (zone_of(fw, "vfwa"), zone_of(fw, "vfwb")) == ("no zone", "no zone")
            assert not _pings(a, "10.99.2.2"), "both in no zone: the default zone's catch-all rejects"
            fw.cmd("--zone=vfwtest", "--change-interface=vfwa")
            fw.cmd("--zone=vfwtest", "--change-interface=vfwb")
            assert _pings(a, "10.99.2.2"), "both bound to one zone with <forward/>"
            fw.cmd("--zone=public", "--change-interface=vfwb")
            assert not _pings(a, "10.99.2.2"), "vfwtest -> public: no policy allows it"
            assert not _pings(b, "10.99.1.2"), "public -> vfwtest: no policy allows it"
            fw.cmd("--zone=trusted", "--change-interface=vfwa")
            assert _pings(a, "10.99.2.2"), "trusted (target ACCEPT) -> public"
            assert not _pings(b, "10.99.1.2"), "public -> trusted: rejected"
            fw.cmd("--zone=public", "--remove-interface=vfwb")
            assert _pings(a, "10.99.2.2"), "trusted -> no zone"
            fw.stop()
            assert ns_tables(router) == "", "firewalld stopped: its table is gone"
            assert _pings(b, "10.99.1.2"), "and it forwards nothing any more"


def ns_tables(ns: Netns) -> str:
    return ns.sh("nft", "list", "tables")
