"""DHCP and DNS of virtfw networks (one dnsmasq per network), with real traffic.

Every case builds its own namespaces (``topology.topology`` / ``nsutil.netns``) and
removes them, dnsmasq included (``nsutil.netns`` kills what is left in a namespace).
Guests have no address until DHCP gives them one: ``busybox udhcpc`` with a small
script that configures the lease (address, default route) and prints it.

The state dir of the traffic cases sits in a folder every user may traverse (as
/run is): dnsmasq reads its hosts files after dropping root for nobody.

Cases, each for both backends unless said:

* the shipped ``default`` network (empty config dir: virbr0, NAT, 192.168.122.1/24,
  DHCP .2-.254, STP on): a guest gets a lease in the range with the bridge as router
  and DNS server; ``net-dhcp-leases default`` and its ``--json`` show the lease (same
  mac, ip, hostname); the guest reaches a LAN namespace through NAT (the LAN sees the
  host's uplink address);
* a ``default`` overridden in the config dir with a static ``<host>``: the guest with
  that MAC gets the fixed address, another guest resolves its name through the bridge
  address (``busybox nslookup web 192.168.122.1``) and reaches it; the static entry
  is in ``STATE/dnsmasq/default.{hostsfile,addnhosts}``;
* ``<lease>`` of a range and of a ``<host>`` (issue 11): the guest of the range gets the
  range's lease time and the static guest its own, as udhcpc reports what dnsmasq offered
  (control: the default network's lease is dnsmasq's default hour);
* net-destroy: no dnsmasq of ours runs and no file of it is left in STATE/dnsmasq
  (positive control: both were there just before);
* a dnsmasq that cannot start (TFTP root missing: both backends; DHCP port already
  served: nftables; DNS port already served: iptables): net-start exits 1 with one
  ``error:`` line and leaves no bridge, no rule (firewall identical), no status file,
  no dnsmasq; control: once the cause is gone the same network starts;
* dnsmasq not on PATH: a DHCP network fails naming the package dnsmasq-base and
  leaves nothing; a network without DHCP/DNS/domain starts with the same PATH.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.dhcp import dhcp, write_udhcpc_script
from helpers.nsutil import Netns, firewall_snapshot, netns, public_tmp_dir, run
from helpers.topology import HOST_UPLINK, LAN_ADDR, Topology, VirtfwRunner, mac_of, ping, tcp_probe, topology

pytestmark = pytest.mark.netns

BRIDGE = "virbr0"
GATEWAY = "192.168.122.1"
WEB_MAC = "52:54:00:12:34:50"
WEB_IP = "192.168.122.50"


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """The state dir's parent: /run, the default one's, is 0755 too (see public_tmp_dir)."""
    with public_tmp_dir("vfwstate") as path:
        yield path


@pytest.fixture
def topo(tmp_path, backend, public_dir) -> Iterator[Topology]:
    with topology(tmp_path, backend) as t:
        t.vfw.state_dir = public_dir / "run"
        yield t


@pytest.fixture
def udhcpc_script(tmp_path) -> Path:
    return write_udhcpc_script(tmp_path)


def guest_ipv4(guest: Netns) -> list[str]:
    data = json.loads(guest.sh("ip", "-j", "-4", "addr", "show", "dev", "eth0"))
    return [a["local"] for entry in data for a in entry.get("addr_info", [])]


def in_default_range(ip: str) -> bool:
    parts = ip.split(".")
    return parts[:3] == ["192", "168", "122"] and 2 <= int(parts[3]) <= 254


def nslookup(guest: Netns, name: str, server: str = GATEWAY) -> list[str]:
    """Addresses busybox nslookup got for ``name`` from ``server`` (after the server's own lines)."""
    proc = guest.run(["busybox", "nslookup", name, server], check=False, timeout=20)
    text = proc.stdout + proc.stderr
    _, _, answer = text.partition("Name:")
    return re.findall(r"Address(?: \d+)?:\s*([0-9.]+)", answer)


# --------------------------------------------------------------------------- leases


def leases_text(vfw, name: str) -> list[dict]:
    """``net-dhcp-leases NAME`` parsed: Expiry Time (date time), MAC, IP, Hostname, Client ID."""
    out = vfw("net-dhcp-leases", name).stdout
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines and lines[0].split()[:2] == ["Expiry", "Time"], f"no table header:\n{out}"
    rows = []
    for line in lines[1:]:
        cells = line.split()
        assert len(cells) == 6, f"unexpected lease row {line!r} in:\n{out}"
        rows.append({"mac": cells[2], "ip": cells[3], "hostname": "" if cells[4] == "-" else cells[4]})
    return rows


def leases_json(vfw, name: str) -> list[dict]:
    rows = json.loads(vfw("net-dhcp-leases", name, "--json").stdout)
    return [{"mac": r["mac"], "ip": r["ip"], "hostname": r["hostname"]} for r in rows]


def by_mac(rows: list[dict]) -> dict[str, dict]:
    return {r["mac"].lower(): r for r in rows}


# --------------------------------------------------------------------------- dnsmasq processes and files


def dnsmasq_pids(ns: Netns) -> list[int]:
    """Every dnsmasq running inside ``ns``."""
    found = []
    for pid in run(["ip", "netns", "pids", ns.name], check=False).stdout.split():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "dnsmasq":
                found.append(int(pid))
    return found


def pgrep_conf(conf: Path) -> list[str]:
    """``pgrep -f`` for our config path (exit 1: none; anything else is a broken check)."""
    proc = run(["pgrep", "-f", "--", f"--conf-file={re.escape(str(conf))}"], check=False)
    assert proc.returncode in (0, 1), f"pgrep failed: {proc.stderr}"
    return proc.stdout.split()


def dnsmasq_files(state_dir: Path) -> list[str]:
    folder = state_dir / "dnsmasq"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def dnsmasq_access(state_dir: Path) -> str:
    """Diagnosis for a failure: may the user dnsmasq runs as reach its hosts files?"""
    import pwd

    pid = int((state_dir / "dnsmasq" / "default.pid").read_text().strip())
    user = pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
    modes = ", ".join(f"{p} {oct(p.stat().st_mode & 0o777)}" for p in (state_dir, state_dir / "dnsmasq"))
    return f"dnsmasq runs as {user}; {modes}"


def assert_our_dnsmasq_runs(ns: Netns, state_dir: Path, name: str) -> int:
    """Positive control of the "gone" checks: it runs, in ``ns``, found by each method."""
    conf = state_dir / "dnsmasq" / f"{name}.conf"
    files = dnsmasq_files(state_dir)
    for suffix in ("conf", "pid", "leases", "hostsfile", "addnhosts"):
        assert f"{name}.{suffix}" in files, f"STATE/dnsmasq/{name}.{suffix} missing: {files}"
    pid = int((state_dir / "dnsmasq" / f"{name}.pid").read_text().strip())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert f"--conf-file={conf}".encode() in cmdline, f"pid {pid} is not our dnsmasq: {cmdline}"
    assert pid in dnsmasq_pids(ns), f"dnsmasq {pid} not in namespace {ns}: {dnsmasq_pids(ns)}"
    assert str(pid) in pgrep_conf(conf)
    return pid


def assert_no_dnsmasq_left(ns: Netns, state_dir: Path, name: str, pid: int | None = None) -> None:
    conf = state_dir / "dnsmasq" / f"{name}.conf"
    deadline = time.monotonic() + 5
    while (dnsmasq_pids(ns) or pgrep_conf(conf)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dnsmasq_pids(ns) == [], f"dnsmasq still running in {ns}"
    assert pgrep_conf(conf) == [], f"a process still runs with --conf-file={conf}"
    if pid is not None:
        assert not Path(f"/proc/{pid}").exists() or b"dnsmasq" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    left = [f for f in dnsmasq_files(state_dir) if f.startswith(f"{name}.")]
    assert left == [], f"files of {name}'s dnsmasq left in STATE/dnsmasq: {left}"


# --------------------------------------------------------------------------- 1. shipped default


def test_shipped_default_gives_lease_and_nat(topo: Topology, backend: str, udhcpc_script: Path):
    t = topo
    vfw = t.vfw
    assert not (vfw.config_dir / "networks").exists(), "config dir must be empty: the shipped default is tested"
    vfw("net-start", "default")
    assert t.link_exists(t.host, BRIDGE)
    addrs = json.loads(t.host.sh("ip", "-j", "-4", "addr", "show", "dev", BRIDGE))[0]["addr_info"]
    assert [(a["local"], a["prefixlen"]) for a in addrs] == [(GATEWAY, 24)]

    guest = t.plug_guest(BRIDGE, wait=0)  # STP on: udhcpc retries until the port forwards
    assert guest_ipv4(guest) == [], "the guest must start without an address"
    lease = dhcp(guest, udhcpc_script, hostname="vm1")
    assert in_default_range(lease.ip), lease
    assert lease.router == GATEWAY and lease.dns == GATEWAY and lease.server == GATEWAY, lease
    assert guest_ipv4(guest) == [lease.ip]

    mac = mac_of(guest)
    text, js = leases_text(vfw, "default"), leases_json(vfw, "default")
    assert by_mac(text) == by_mac(js), f"text and --json differ:\n{text}\n{js}"
    assert by_mac(js).get(mac) == {"mac": mac, "ip": lease.ip, "hostname": "vm1"}, js

    # NAT: the LAN has no route to 192.168.122.0/24, and sees the host's uplink address
    assert ping(guest, LAN_ADDR)
    probe = tcp_probe(guest, t.lan, LAN_ADDR)
    assert probe.connected and probe.peer == HOST_UPLINK, str(probe)

    pid = assert_our_dnsmasq_runs(t.host, vfw.state_dir, "default")
    vfw("net-destroy", "default")
    assert_no_dnsmasq_left(t.host, vfw.state_dir, "default", pid)
    assert not t.link_exists(t.host, BRIDGE)


# --------------------------------------------------------------------------- lease times

LEASES = f"""<network>
  <name>default</name>
  <bridge name="virbr0" stp="off" delay="0"/>
  <forward mode="nat"/>
  <ip address="192.168.122.1" netmask="255.255.255.0">
    <dhcp>
      <range start="192.168.122.2" end="192.168.122.254"><lease expiry="2" unit="hours"/></range>
      <host mac="{WEB_MAC}" name="web" ip="{WEB_IP}"><lease expiry="300" unit="seconds"/></host>
    </dhcp>
  </ip>
</network>
"""


def test_lease_times_reach_the_guests(topo: Topology, backend: str, udhcpc_script: Path):
    t = topo
    vfw = t.vfw
    vfw("net-start", "default")  # control: no <lease>, dnsmasq's default of one hour
    plain = dhcp(t.plug_guest(BRIDGE, wait=0), udhcpc_script)
    assert plain.time == "3600", plain
    vfw("net-destroy", "default")

    path = t.tmp / "default.xml"
    path.write_text(LEASES)
    vfw("net-define", str(path))
    assert '<lease expiry="300" unit="seconds"/>' in vfw("net-dumpxml", "default").stdout
    vfw("net-start", "default")
    ranged = dhcp(t.plug_guest(BRIDGE, wait=0), udhcpc_script)
    web = dhcp(t.plug_guest(BRIDGE, mac=WEB_MAC, wait=0), udhcpc_script)
    assert in_default_range(ranged.ip) and ranged.time == "7200", ranged
    assert (web.ip, web.time) == (WEB_IP, "300"), f"{web}; " + dnsmasq_access(vfw.state_dir)
    vfw("net-destroy", "default")


# --------------------------------------------------------------------------- 2. static host, DNS

DEFAULT_WITH_HOST = f"""<network>
  <name>default</name>
  <bridge name="virbr0" stp="on" delay="0"/>
  <forward mode="nat"/>
  <ip address="192.168.122.1" netmask="255.255.255.0">
    <dhcp>
      <range start="192.168.122.2" end="192.168.122.254"/>
      <host mac="{WEB_MAC}" name="web" ip="{WEB_IP}"/>
    </dhcp>
  </ip>
</network>
"""


def test_static_host_gets_its_address_and_resolves(topo: Topology, backend: str, udhcpc_script: Path):
    t = topo
    vfw = t.vfw
    path = t.tmp / "default.xml"
    path.write_text(DEFAULT_WITH_HOST)
    vfw("net-define", str(path))
    assert WEB_MAC in vfw("net-dumpxml", "--inactive", "default").stdout, (
        "the config dir's default must override the shipped one"
    )
    vfw("net-start", "default")

    state = vfw.state_dir / "dnsmasq"
    assert f"{WEB_MAC},{WEB_IP},web" in (state / "default.hostsfile").read_text().splitlines()
    assert f"{WEB_IP} web" in (state / "default.addnhosts").read_text().splitlines()

    web = t.plug_guest(BRIDGE, mac=WEB_MAC, wait=0)
    other = t.plug_guest(BRIDGE, wait=0)
    web_lease = dhcp(web, udhcpc_script)
    other_lease = dhcp(other, udhcpc_script, hostname="vm1")
    assert web_lease.ip == WEB_IP, f"the guest with the <host> MAC got {web_lease}; " + dnsmasq_access(vfw.state_dir)
    assert in_default_range(other_lease.ip) and other_lease.ip != WEB_IP, other_lease

    # the static name, through the bridge address, from the other guest
    assert nslookup(other, "web") == [WEB_IP]
    assert ping(other, WEB_IP), "the address 'web' resolves to does not answer"
    # a name the other guest registered over DHCP, from web (dnsmasq's default, as libvirt)
    assert nslookup(web, "vm1") == [other_lease.ip]

    js = by_mac(leases_json(vfw, "default"))
    assert js.get(WEB_MAC) == {"mac": WEB_MAC, "ip": WEB_IP, "hostname": "web"}, js
    assert js.get(mac_of(other), {}).get("ip") == other_lease.ip, js
    assert by_mac(leases_text(vfw, "default")) == js

    probe = tcp_probe(other, t.lan, LAN_ADDR)
    assert probe.connected and probe.peer == HOST_UPLINK, str(probe)


# --------------------------------------------------------------------------- 3. net-destroy


def test_destroy_stops_dnsmasq_and_removes_its_files(tmp_path, backend: str):
    with netns("vfwd") as host:
        vfw = VirtfwRunner(host, tmp_path, backend)
        vfw("net-start", "default")
        pid = assert_our_dnsmasq_runs(host, vfw.state_dir, "default")
        vfw("net-destroy", "default")
        assert_no_dnsmasq_left(host, vfw.state_dir, "default", pid)
        # and again: a second start/destroy cycle does not find leftovers either
        vfw("net-start", "default")
        pid = assert_our_dnsmasq_runs(host, vfw.state_dir, "default")
        vfw("net-destroy", "default")
        assert_no_dnsmasq_left(host, vfw.state_dir, "default", pid)


# --------------------------------------------------------------------------- 4. dnsmasq cannot start

FAIL_NET = """<network>
  <name>{name}</name>
  <bridge name="{bridge}"/>
  <forward mode="nat"/>
  <ip address="192.168.123.1" netmask="255.255.255.0">{tftp}
    <dhcp>
      <range start="192.168.123.2" end="192.168.123.9"/>
    </dhcp>
  </ip>
</network>
"""

# A foreign server on a port dnsmasq needs; prints READY once bound.
_BLOCKER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("READY", flush=True)
time.sleep(120)
"""


@contextlib.contextmanager
def udp_blocker(ns: Netns, port: int) -> Iterator[None]:
    proc = subprocess.Popen(["ip", "netns", "exec", ns.name, sys.executable, "-c", _BLOCKER, str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.strip() == "READY", f"blocker on udp {port} did not start: {line!r} {proc.stderr.read()}"
        yield
    finally:
        proc.kill()
        proc.wait(timeout=10)


def snapshot(ns: Netns, vfw, bridges: list[str]) -> dict:
    """What a failed start must leave exactly as it was: firewall, links, state files."""
    networks = vfw.state_dir / "networks"
    return {
        "firewall": firewall_snapshot(ns),
        "links": sorted(e["ifname"] for e in json.loads(ns.sh("ip", "-j", "link", "show"))),
        "bridges present": [
            b for b in bridges if ns.run(["ip", "link", "show", "dev", b], check=False).returncode == 0
        ],
        "status files": sorted(p.name for p in networks.glob("*")) if networks.is_dir() else [],
        "dnsmasq files": dnsmasq_files(vfw.state_dir),
        "dnsmasq processes": dnsmasq_pids(ns),
    }


def assert_one_error_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 1, f"exit {proc.returncode}, expected 1:\n{proc.stdout}\n{proc.stderr}"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"expected one 'error:' line, got:\n{proc.stderr}"
    assert "Traceback" not in proc.stdout + proc.stderr
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def good_tftp() -> Iterator[Path]:
    """A TFTP root dnsmasq accepts: it checks it as its own user (nobody), so world-readable."""
    with public_tmp_dir("vfwtftp") as path:
        yield path


# The rollback after dnsmasq fails is the same whatever made it fail: every cause once,
# the TFTP one with both backends, the port ones split between them.
FAILURES = [("nftables", "tftp-root-missing"), ("iptables", "tftp-root-missing"),
            ("nftables", "dhcp-port-served"), ("iptables", "dns-port-served")]  # fmt: skip


@pytest.mark.parametrize(("backend_name", "cause"), FAILURES, ids=[f"{b}-{c}" for b, c in FAILURES])
def test_dnsmasq_failure_leaves_nothing(tmp_path, backend_name: str, cause: str, good_tftp: Path):
    backend = backend_name
    with netns("vfwd") as host:
        vfw = VirtfwRunner(host, tmp_path, backend)
        tftp = {"tftp-root-missing": "\n    <tftp root='/nonexistent'/>"}.get(cause, "")
        (tmp_path / "bad.xml").write_text(FAIL_NET.format(name="bad", bridge="vfwbad0", tftp=tftp))
        vfw("net-define", str(tmp_path / "bad.xml"))
        before = snapshot(host, vfw, ["vfwbad0"])

        port = {"dhcp-port-served": 67, "dns-port-served": 53}.get(cause)
        with udp_blocker(host, port) if port else contextlib.nullcontext():
            proc = vfw("net-start", "bad", check=False)
            after = snapshot(host, vfw, ["vfwbad0"])
        assert_one_error_line(proc, "dnsmasq", "bad")
        assert after == before, "a failed net-start changed something:\n" + _diff(before, after)

        # control: without the cause, the same network starts (and its dnsmasq is seen)
        if cause == "tftp-root-missing":
            (tmp_path / "bad.xml").write_text(
                FAIL_NET.format(name="bad", bridge="vfwbad0", tftp=f"\n    <tftp root='{good_tftp}'/>")
            )
            vfw("net-define", str(tmp_path / "bad.xml"))
        vfw("net-start", "bad")
        started = snapshot(host, vfw, ["vfwbad0"])
        assert started["bridges present"] == ["vfwbad0"] and len(started["dnsmasq processes"]) == 1, started
        assert started["firewall"] != before["firewall"], "the control start installed no rules"
        vfw("net-destroy", "bad")
        assert snapshot(host, vfw, ["vfwbad0"]) == before


def _diff(before: dict, after: dict) -> str:
    import difflib

    out = []
    for key, value in before.items():
        if value != after[key]:
            old = json.dumps(value, indent=1, sort_keys=True).splitlines()
            new = json.dumps(after[key], indent=1, sort_keys=True).splitlines()
            out.append(f"--- {key}\n" + "\n".join(difflib.unified_diff(old, new, "before", "after", lineterm="", n=2)))
    return "\n".join(out)


# --------------------------------------------------------------------------- 5. dnsmasq not installed

NO_DHCP_NET = """<network>
  <name>plain</name>
  <bridge name="vfwplain0"/>
  <forward mode="nat"/>
  <ip address="192.168.124.1" netmask="255.255.255.0"/>
</network>
"""


def bin_without_dnsmasq(folder: Path) -> str:
    """A PATH of one directory: symlinks to every program on the usual PATH but dnsmasq."""
    folder.mkdir()
    dirs = os.environ.get("PATH", "").split(os.pathsep) + [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    for d in dirs:
        if not d or not os.path.isdir(d):
            continue
        for entry in os.scandir(d):
            if entry.name == "dnsmasq" or (folder / entry.name).exists():
                continue
            if os.access(entry.path, os.X_OK) and not entry.is_dir():
                (folder / entry.name).symlink_to(os.path.realpath(entry.path))
    return str(folder)


def test_missing_dnsmasq_is_named_and_plain_network_starts(tmp_path, backend: str):
    path = bin_without_dnsmasq(tmp_path / "bin")
    assert shutil.which("dnsmasq", path=path) is None
    for tool in ("ip", "nft", "iptables", "iptables-restore", "ip6tables", "sysctl"):
        assert shutil.which(tool, path=path), f"{tool} missing from the test PATH"
    env = {"PATH": path}
    with netns("vfwd") as host:
        vfw = VirtfwRunner(host, tmp_path, backend)
        (tmp_path / "plain.xml").write_text(NO_DHCP_NET)
        vfw("net-define", str(tmp_path / "plain.xml"))
        before = snapshot(host, vfw, [BRIDGE, "vfwplain0"])

        proc = vfw("net-start", "default", check=False, env=env)
        assert_one_error_line(proc, "dnsmasq-base")
        after = snapshot(host, vfw, [BRIDGE, "vfwplain0"])
        assert after == before, "a failed net-start changed something:\n" + _diff(before, after)

        # control: the same PATH is good enough for a network that needs no dnsmasq
        vfw("net-start", "plain", env=env)
        started = snapshot(host, vfw, [BRIDGE, "vfwplain0"])
        assert started["status files"] == ["plain.json"]
        assert [n["name"] for n in json.loads(vfw("net-list", "--json", env=env).stdout)] == ["plain"]
        assert started["bridges present"] == ["vfwplain0"]
        assert started["firewall"] != before["firewall"], "the plain network installed no rules"
        assert started["dnsmasq processes"] == [] and started["dnsmasq files"] == []
        vfw("net-destroy", "plain", env=env)
        assert snapshot(host, vfw, [BRIDGE, "vfwplain0"]) == before


def test_reload_restarting_a_dead_dnsmasq_keeps_the_leases(topo: Topology, backend: str, udhcpc_script: Path):
    """A dnsmasq that died is restarted by reload with the lease file it had: the guest's
    lease is still listed (and still its own)."""
    t = topo
    vfw = t.vfw
    vfw("net-start", "default")
    guest = t.plug_guest(BRIDGE, wait=0)
    lease = dhcp(guest, udhcpc_script, hostname="vm1")
    mac = mac_of(guest)
    assert by_mac(leases_json(vfw, "default")).get(mac, {}).get("ip") == lease.ip
    pid = assert_our_dnsmasq_runs(t.host, vfw.state_dir, "default")
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]:
            break
        time.sleep(0.05)
    vfw("reload")
    assert assert_our_dnsmasq_runs(t.host, vfw.state_dir, "default") != pid
    assert by_mac(leases_json(vfw, "default")).get(mac, {}).get("ip") == lease.ip
    vfw("net-destroy", "default")
