"""With a real firewalld running (in the host namespace of the test, on a D-Bus of its own:
``helpers.firewalld``), a network's bridge goes in virtfw's zone, so guests get DHCP and
DNS from the host and reach the LAN through NAT; firewalld's own rules would reject all
of it otherwise (control: the bridge taken out of the zone, a guest gets no lease).

* net-start puts ``virbr0`` in zone ``virtfw`` (shipped under etc/firewalld, loaded as
  ``install-files`` would put it); a guest gets a lease and pings the LAN; net-destroy
  takes the bridge out of the zone;
* firewalld's reload (FlushAllOnReload, its default) and its restart drop runtime zone
  bindings (and flush the iptables tables, virtfw's iptables rules with them): verify
  reports the bridge out of its zone, and ``virtfw reload`` puts it back (a guest gets a
  lease again); ``virtfw watch-firewalld`` does so by itself;
* a network started before firewalld: verify reports it, reload puts the bridge in its zone;
* ``<bridge zone='trusted'>`` puts the bridge in that zone; without firewalld running the
  same network is refused with one ``error:`` line and nothing changes; with firewalld
  running but virtfw's zone not loaded, the default network is refused, naming
  ``virtfw install-files``, and nothing changes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.dhcp import dhcp, write_udhcpc_script
from helpers.firewalld import firewalld_in
from helpers.nsutil import BACKENDS, ROOT, Netns, firewall_snapshot, public_tmp_dir, virtfw_argv
from helpers.topology import LAN_ADDR, Topology, ping, topology

pytestmark = pytest.mark.netns

SHIPPED = ROOT / "etc" / "firewalld"
ZONES = {p.stem: p.read_text() for p in sorted((SHIPPED / "zones").glob("*.xml"))}
POLICIES = {p.stem: p.read_text() for p in sorted((SHIPPED / "policies").glob("*.xml"))}
BRIDGE = "virbr0"


@pytest.fixture
def public_dir() -> Iterator[Path]:
    with public_tmp_dir("vfwstate") as path:  # dnsmasq reads its files as nobody
        yield path


@pytest.fixture(params=BACKENDS)
def topo(request, tmp_path, public_dir) -> Iterator[Topology]:
    with topology(tmp_path / "topo", request.param) as t:
        t.vfw.state_dir = public_dir / "run"
        yield t


def no_lease(guest: Netns, script: Path) -> bool:
    """A guest's DHCP discover goes unanswered (3 tries, 1 s apart)."""
    argv = ["busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "3", "-T", "1", "-s", str(script)]
    return "LEASE_IP=" not in guest.run(argv, check=False, timeout=20).stdout


def verify_lines(t: Topology, env: dict) -> list[str]:
    proc = t.vfw("verify", check=False, env=env)
    return [line for line in proc.stdout.splitlines() if line.startswith("network ")]


def test_the_bridge_is_in_virtfw_s_zone_and_guests_get_dhcp_dns_and_nat(topo, tmp_path) -> None:
    script = write_udhcpc_script(tmp_path)
    with firewalld_in(topo.host, tmp_path, zones=ZONES, policies=POLICIES) as fw:
        env = fw.env
        topo.vfw("net-start", "default", env=env)
        assert fw.cmd(f"--get-zone-of-interface={BRIDGE}").strip() == "virtfw"
        status = json.loads((topo.vfw.state_dir / "networks" / "default.json").read_text())
        assert status["zone"] == "virtfw"
        assert verify_lines(topo, env) == []
        guest = topo.plug_guest(BRIDGE)
        lease = dhcp(guest, tmp_path / "udhcpc.sh")
        assert lease.router == "192.168.122.1" and lease.dns == "192.168.122.1", lease
        assert ping(guest, LAN_ADDR), "NAT through firewalld's zone"
        assert ping(guest, "192.168.122.1"), "the gateway answers pings in firewalld's zone (its icmp protocol)"
        answer = guest.run(["busybox", "nslookup", "localhost", "192.168.122.1"], check=False, timeout=20).stdout
        assert "Address: 127.0.0.1" in answer, f"no DNS answer through firewalld's zone: {answer}"

        # control: out of the zone, firewalld rejects the guest's DHCP; verify says so
        fw.cmd("--zone=virtfw", f"--remove-interface={BRIDGE}")
        assert no_lease(guest, script), "a bridge in no zone still got DHCP: the control proves nothing"
        problems = verify_lines(topo, env)
        assert problems == [
            f"network default: bridge {BRIDGE} is in no firewalld zone, not 'virtfw'; virtfw reload puts it back"
        ], problems
        topo.vfw("reload", env=env)
        assert fw.cmd(f"--get-zone-of-interface={BRIDGE}").strip() == "virtfw"
        dhcp(guest, script)

        # firewalld's reload and restart drop runtime bindings; virtfw reload restores them
        for event in (fw.reload, fw.restart):
            event()
            problems = verify_lines(topo, env)
            out_of_zone = (
                f"network default: bridge {BRIDGE} is in no firewalld zone, not 'virtfw'; virtfw reload puts it back"
            )
            assert out_of_zone in problems, problems
            # firewalld also flushes the iptables tables when it (re)starts: virtfw's rules there
            assert len(problems) == 1 if topo.backend == "nftables" else len(problems) > 1, problems
            topo.vfw("reload", env=env)
            assert verify_lines(topo, env) == [], event
            dhcp(guest, script)
            assert ping(guest, LAN_ADDR)

        topo.vfw("net-destroy", "default", env=env)
        assert fw.run(f"--get-zone-of-interface={BRIDGE}", check=False).stdout.strip() != "virtfw"
        assert "virbr0" not in fw.cmd("--zone=virtfw", "--list-interfaces")


def named_zone_network(t: Topology) -> Path:
    path = t.tmp / "zoned.xml"
    path.write_text(
        "<network><name>zoned</name><forward mode='nat'/><bridge name='vfwz0' zone='trusted'/>"
        "<ip address='10.77.0.1' prefix='24'/></network>"
    )
    t.vfw("net-define", str(path))
    return path


def test_a_zone_named_in_the_definition_needs_firewalld(topo, tmp_path) -> None:
    named_zone_network(topo)
    before = firewall_snapshot(topo.host)
    proc = topo.vfw("net-start", "zoned", check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: network 'zoned': <bridge zone='trusted'> needs firewalld"), proc.stderr
    assert firewall_snapshot(topo.host) == before and not topo.link_exists(topo.host, "vfwz0")
    with firewalld_in(topo.host, tmp_path) as fw:  # the package's zones only: no virtfw zone
        topo.vfw("net-start", "zoned", env=fw.env)
        assert fw.cmd("--get-zone-of-interface=vfwz0").strip() == "trusted"
        topo.vfw("net-destroy", "zoned", env=fw.env)
        assert "vfwz0" not in fw.cmd("--zone=trusted", "--list-interfaces")
        # the default network wants virtfw's zone, which this firewalld lacks: refused, nothing changed
        before = firewall_snapshot(topo.host)
        proc = topo.vfw("net-start", "default", check=False, env=fw.env)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert "firewalld has no zone 'virtfw'" in proc.stderr and "virtfw install-files" in proc.stderr
        assert firewall_snapshot(topo.host) == before and not topo.link_exists(topo.host, BRIDGE)
        assert not (topo.vfw.state_dir / "networks" / "default.json").exists()


def test_watch_firewalld_puts_the_bridge_back_after_firewalld_reloads_and_restarts(topo, tmp_path) -> None:
    """``virtfw watch-firewalld`` hears firewalld's Reloaded signal and its taking its bus
    name again, and runs ``virtfw reload``: the bridge is back in its zone each time."""
    if shutil.which("dbus-monitor") is None:
        if os.environ.get("CI"):
            pytest.fail("dbus-monitor is missing (apt-get install dbus-bin)")
        pytest.skip("dbus-monitor is missing (apt-get install dbus-bin)")
    with firewalld_in(topo.host, tmp_path, zones=ZONES, policies=POLICIES) as fw:
        topo.vfw("net-start", "default", env=fw.env)
        env = [f"{key}={value}" for key, value in {**fw.env, "PYTHONPATH": str(ROOT)}.items()]
        argv = virtfw_argv("watch-firewalld", config_dir=topo.vfw.config_dir, state_dir=topo.vfw.state_dir,
                           backend=topo.backend)  # fmt: skip
        log = (tmp_path / "watch.log").open("w")
        watcher = subprocess.Popen(
            ["ip", "netns", "exec", topo.host.name, "env", *env, *argv], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_for(lambda: "start: virtfw reload" in (tmp_path / "watch.log").read_text(), "the first reload")
            for event in (fw.reload, fw.restart):
                event()
                wait_for(lambda: zone_of(fw) == "virtfw", f"the bridge back in its zone after {event.__name__}")
                assert verify_lines(topo, fw.env) == []
            assert watcher.poll() is None, (tmp_path / "watch.log").read_text()
        finally:
            watcher.terminate()
            watcher.wait(timeout=10)
            log.close()
        text = (tmp_path / "watch.log").read_text()
        assert text.count("firewalld reloaded or restarted: virtfw reload: Reloaded 1 network(s)") >= 2, text
        topo.vfw("net-destroy", "default", env=fw.env)


def zone_of(fw) -> str:
    return fw.run(f"--get-zone-of-interface={BRIDGE}", check=False).stdout.strip()


def wait_for(condition, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {limit:.0f} s")
        time.sleep(0.5)


def test_a_network_started_before_firewalld_goes_in_its_zone_on_reload(tmp_path, public_dir) -> None:
    """firewalld started after the network (as at boot, when virtfw.service ran first):
    verify reports the bridge in no zone, reload puts it in virtfw's zone and records it,
    and net-destroy takes it out."""
    with topology(tmp_path / "topo", "nftables") as t:
        t.vfw.state_dir = public_dir / "run"
        t.vfw("net-start", "default")
        assert "zone" not in json.loads((t.vfw.state_dir / "networks" / "default.json").read_text())
        with firewalld_in(t.host, tmp_path, zones=ZONES, policies=POLICIES) as fw:
            assert verify_lines(t, fw.env) == [
                f"network default: bridge {BRIDGE} is in no firewalld zone, not 'virtfw'; virtfw reload puts it back"
            ]
            t.vfw("reload", env=fw.env)
            assert zone_of(fw) == "virtfw" and verify_lines(t, fw.env) == []
            assert json.loads((t.vfw.state_dir / "networks" / "default.json").read_text())["zone"] == "virtfw"
            dry = t.vfw("--dry-run", "net-destroy", "default", env=fw.env).stdout
            assert f"firewall-cmd --zone=virtfw --remove-interface={BRIDGE}" in dry, dry
            t.vfw("net-destroy", "default", env=fw.env)
            assert zone_of(fw) != "virtfw"
