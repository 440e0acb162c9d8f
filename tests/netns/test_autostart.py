"""``virtfw autostart`` (what a boot runs): networks marked with ``net-autostart`` and
the filter bindings recorded in CONFIG/bindings come back, once.

Every case runs in namespaces made here (``nsutil.netns``) with its own config and
state dirs. A "reboot" is a new namespace (empty firewall, no links) with a fresh
state dir and the same config dir.

Cases, each for both backends:

* three networks defined, two marked autostart: ``autostart`` on a fresh state dir
  brings up exactly those two (``net-list --json``, bridges, rules); a second
  ``autostart`` exits 0 and changes nothing (firewall, state files, dnsmasq);
* bindings: after ``nwfilter-binding-create`` of two bindings and
  ``nwfilter-binding-delete`` of one, a reboot and ``autostart`` re-create exactly the
  recorded one (``nwfilter-binding-list --json``), with a firewall identical to the one
  before the reboot; a second ``autostart`` changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.nsutil import Netns, add_port, dir_files, firewall_snapshot, netns, run
from helpers.topology import VirtfwRunner

pytestmark = pytest.mark.netns

BACKENDS = ("nftables", "iptables")


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


def network_xml(name: str, bridge: str, mode: str | None, third: int, dhcp: bool = False) -> str:
    forward = f"\n  <forward mode='{mode}'/>" if mode else ""
    dhcp_xml = (
        f"\n    <dhcp>\n      <range start='192.168.{third}.2' end='192.168.{third}.99'/>\n    </dhcp>\n  "
        if dhcp
        else ""
    )
    return (
        f"<network>\n  <name>{name}</name>\n  <bridge name='{bridge}'/>{forward}\n"
        f"  <ip address='192.168.{third}.1' netmask='255.255.255.0'>{dhcp_xml}</ip>\n</network>\n"
    )


NETWORKS = {
    # name: (bridge, forward mode, third octet, DHCP)
    "auto1": ("vfwas1", "nat", 211, True),
    "manual2": ("vfwas2", "route", 212, False),
    "auto3": ("vfwas3", None, 213, False),
}
AUTOSTART = {"auto1", "auto3"}


def link_names(ns: Netns) -> set[str]:
    return {e["ifname"] for e in json.loads(ns.sh("ip", "-j", "link", "show"))}


def dnsmasq_pids(ns: Netns) -> list[int]:
    found = []
    for pid in run(["ip", "netns", "pids", ns.name], check=False).stdout.split():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "dnsmasq":
                found.append(int(pid))
        except OSError:
            pass
    return sorted(found)


def state(ns: Netns, vfw) -> dict:
    """Everything a second autostart must leave exactly as it was."""
    return {
        "firewall": firewall_snapshot(ns),
        "links": sorted(link_names(ns)),
        "state files": dir_files(vfw.state_dir),
        "dnsmasq": dnsmasq_pids(ns),
        "net-list": json.loads(vfw("net-list", "--all", "--json").stdout),
        "bindings": json.loads(vfw("nwfilter-binding-list", "--json").stdout),
    }


def test_autostart_starts_exactly_the_marked_networks(tmp_path, backend: str):
    with netns("vfwa") as ns:
        vfw = VirtfwRunner(ns, tmp_path, backend)
        for name, (bridge, mode, third, dhcp) in NETWORKS.items():
            path = tmp_path / f"{name}.xml"
            path.write_text(network_xml(name, bridge, mode, third, dhcp))
            vfw("net-define", str(path))
        for name in sorted(AUTOSTART):
            vfw("net-autostart", name)
        assert not vfw.state_dir.exists() or not any((vfw.state_dir / "networks").glob("*"))

        listed = {n["name"]: n for n in json.loads(vfw("net-list", "--all", "--json").stdout)}
        for name in NETWORKS:
            assert listed[name]["state"] != "active", listed[name]
            assert listed[name]["autostart"] is (name in AUTOSTART), listed[name]
        assert json.loads(vfw("net-list", "--json").stdout) == [], "a network is active before autostart"
        firewall_before = firewall_snapshot(ns)

        vfw("autostart")
        active = json.loads(vfw("net-list", "--json").stdout)
        assert sorted(n["name"] for n in active) == sorted(AUTOSTART), active
        assert all(n["state"] == "active" and n["autostart"] for n in active), active
        links = link_names(ns)
        assert {"vfwas1", "vfwas3"} <= links and "vfwas2" not in links, sorted(links)
        assert firewall_snapshot(ns) != firewall_before, "autostart installed no rules"
        assert len(dnsmasq_pids(ns)) == 1, "auto1 has DHCP: one dnsmasq expected"

        first = state(ns, vfw)
        proc = vfw("autostart", check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        second = state(ns, vfw)
        for key in first:
            assert second[key] == first[key], f"a second autostart changed {key}"


BINDING = """<filterbinding>
  <portdev name='{port}'/>
  <mac address='{mac}'/>
  <filterref filter='clean-traffic'>
    <parameter name='IP' value='{ip}'/>
  </filterref>
</filterbinding>
"""
PORTS = {"vnet0": ("52:54:00:00:00:01", "192.168.122.5"), "vnet1": ("52:54:00:00:00:02", "192.168.122.6")}


def test_autostart_after_reboot_recreates_recorded_bindings(tmp_path, backend: str):
    with netns("vfwa") as before_boot:
        vfw = VirtfwRunner(before_boot, tmp_path, backend)
        (tmp_path / "lan.xml").write_text(network_xml("lan", "vfwab1", "nat", 221))
        vfw("net-define", str(tmp_path / "lan.xml"))
        vfw("net-autostart", "lan")
        vfw("net-start", "lan")
        for port, (mac, ip) in PORTS.items():
            add_port(before_boot, port)
            path = tmp_path / f"{port}.xml"
            path.write_text(BINDING.format(port=port, mac=mac, ip=ip))
            vfw("nwfilter-binding-create", str(path))
        records = vfw.config_dir / "bindings"
        assert sorted(p.name for p in records.glob("*.xml")) == ["vnet0.xml", "vnet1.xml"]
        vfw("nwfilter-binding-delete", "vnet1")
        assert sorted(p.name for p in records.glob("*.xml")) == ["vnet0.xml"], "a deleted binding is still recorded"
        expected_bindings = json.loads(vfw("nwfilter-binding-list", "--json").stdout)
        assert [b["portdev"] for b in expected_bindings] == ["vnet0"], expected_bindings
        expected_networks = json.loads(vfw("net-list", "--json").stdout)
        expected_firewall = firewall_snapshot(before_boot)

    # the reboot: a new namespace, the same config dir, an empty state dir
    with netns("vfwa") as after_boot:
        vfw = VirtfwRunner(after_boot, tmp_path, backend)
        vfw.state_dir = tmp_path / "run-after-reboot"
        add_port(after_boot, "vnet0")  # the guest's port is back; vnet1's guest is gone
        add_port(after_boot, "vnet1")
        assert json.loads(vfw("nwfilter-binding-list", "--json").stdout) == []
        assert json.loads(vfw("net-list", "--json").stdout) == []
        assert firewall_snapshot(after_boot) != expected_firewall, "control: the new namespace starts empty"

        vfw("autostart")
        assert json.loads(vfw("nwfilter-binding-list", "--json").stdout) == expected_bindings
        assert json.loads(vfw("net-list", "--json").stdout) == expected_networks
        assert firewall_snapshot(after_boot) == expected_firewall, (
            "the firewall after autostart differs from before the reboot"
        )
        assert sorted(p.name for p in (vfw.config_dir / "bindings").glob("*.xml")) == ["vnet0.xml"]

        first = state(after_boot, vfw)
        proc = vfw("autostart", check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        second = state(after_boot, vfw)
        for key in first:
            assert second[key] == first[key], f"a second autostart changed {key}"
