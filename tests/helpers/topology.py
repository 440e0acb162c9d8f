"""Test topologies built from network namespaces, and traffic probes between them.

The layout every traffic test uses::

    lan ns                       host ns (virtfw runs here)                guest ns
    eth0 10.99.0.2/24 ── veth ── uplink0 10.99.0.1/24
                                 bridge made by virtfw (e.g. vfwbr1) ── vgN ── veth ── eth0 192.168.10N.x/24
                                                                                       default via the bridge address

Nothing here touches the root namespace: every link, address, route, sysctl and
firewall command runs inside a namespace created by ``nsutil.netns()``, and all
of them are deleted (after killing any background process started here) when
the ``topology()`` context exits.

Traffic probes are real TCP connections: ``Listener`` runs a one-shot TCP server
in a namespace that reports the peer address it saw, ``tcp_connect`` tries to
connect (short timeout) and checks the server's banner, ``tcp_probe`` does both.
Every wait is bounded in time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from helpers.nsutil import ROOT, Netns, Virtfw, netns, run

if TYPE_CHECKING:
    from typing_extensions import Self

HOST_UPLINK = "10.99.0.1"
LAN_ADDR = "10.99.0.2"
UPLINK_PREFIX = 24
HOST_UPLINK_DEV = "uplink0"

BANNER = "virtfw-hello"

_ports = itertools.count(20000 + (os.getpid() % 1000) * 20)

# A one-shot TCP server: prints READY once listening, then for the first
# connection sends the banner and prints "PEER <address>"; "TIMEOUT" if nobody
# connected within the timeout.  argv: bind address, port, timeout seconds.
_LISTENER = rf"""
import socket, sys
bind, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((bind, port))
s.listen(8)
s.settimeout(timeout)
print("READY", flush=True)
try:
    c, addr = s.accept()
except socket.timeout:
    print("TIMEOUT", flush=True)
    sys.exit(3)
print("PEER", addr[0], flush=True)
c.settimeout(2)
try:
    c.sendall(b"{BANNER.encode()}\n")
finally:
    c.close()
    s.close()
"""

# A TCP connect attempt: exit 0 and print the banner if the server answered.
# argv: address, port, timeout seconds.
_CONNECT = rf"""
import socket, sys
addr, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    c = socket.create_connection((addr, port), timeout=timeout)
    c.settimeout(timeout)
    data = c.recv(64)
    c.close()
except OSError as e:
    print("FAIL", type(e).__name__, e, flush=True)
    sys.exit(1)
print("GOT", data.decode(errors="replace").strip(), flush=True)
sys.exit(0 if data.startswith(b"{BANNER.encode()}") else 4)
"""


def next_port() -> int:
    return next(_ports)


# --------------------------------------------------------------------------- traffic


class Listener:
    """A one-shot TCP server in ``ns`` (background process); ``peer()`` says who connected."""

    def __init__(self, ns: Netns, port: int, *, bind: str = "0.0.0.0", timeout: float = 8.0) -> None:
        self.ns = ns
        self.port = port
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, sys.executable, "-c", _LISTENER, bind, str(port), str(timeout)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._out = b""
        self._err = b""
        self._wait_ready(5.0)

    def _wait_ready(self, limit: float) -> None:
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + limit
        while b"\n" not in self._out:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:  # process exited
                break
            self._out += chunk
        if not self._out.startswith(b"READY\n"):
            self.stop()
            raise AssertionError(
                f"listener in {self.ns} on port {self.port} did not start: {self._out!r} {self._err!r}"
            )

    def peer(self, wait: float = 3.0) -> str | None:
        """Wait (bounded) for the server to finish; the peer address it saw, or None."""
        self._finish(wait)
        for line in self._out.decode(errors="replace").splitlines():
            if line.startswith("PEER "):
                return line.split()[1]
        return None

    def _finish(self, wait: float) -> None:
        if self.proc.returncode is not None and self.proc.stdout.closed:
            return
        try:
            out, err = self.proc.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=5)
        self._out += out or b""
        self._err += err or b""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self._finish(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclasses.dataclass
class Connect:
    ok: bool
    detail: str
    seconds: float


def tcp_connect(ns: Netns, addr: str, port: int, timeout: float = 2.0) -> Connect:
    """Try a TCP connection from ``ns``; ok only if the listener's banner came back."""
    start = time.monotonic()
    proc = run(
        ["ip", "netns", "exec", ns.name, sys.executable, "-c", _CONNECT, addr, str(port), str(timeout)],
        check=False,
        timeout=timeout + 10,
    )
    return Connect(proc.returncode == 0, (proc.stdout + proc.stderr).strip(), time.monotonic() - start)


@dataclasses.dataclass
class Probe:
    """Outcome of one TCP attempt: did it connect, and which source address did the server see."""

    src: str
    dst: str
    addr: str
    port: int
    connected: bool
    peer: str | None
    detail: str

    def __str__(self) -> str:
        state = "connected" if self.connected else "failed"
        return f"TCP {self.src} -> {self.dst} {self.addr}:{self.port}: {state}, server saw peer {self.peer} ({self.detail})"


def tcp_probe(src: Netns, dst: Netns, addr: str, *, port: int | None = None, timeout: float = 2.0) -> Probe:
    """Listen in ``dst``, connect from ``src`` to ``addr``; both sides' view of the result."""
    port = port or next_port()
    with Listener(dst, port) as listener:
        conn = tcp_connect(src, addr, port, timeout)
        peer = listener.peer(wait=2.0 if conn.ok else 0.3)
    return Probe(src.name, dst.name, addr, port, conn.ok, peer, conn.detail)


def ping(ns: Netns, addr: str) -> bool:
    return ns.run(["ping", "-n", "-q", "-c1", "-W1", addr], check=False, timeout=10).returncode == 0


# --------------------------------------------------------------------------- networks


def network_xml(
    name: str, bridge: str, mode: str | None, address: str, netmask: str = "255.255.255.0", stp: bool | None = None
) -> str:
    """libvirt network XML; ``mode`` None means isolated (no <forward>); ``stp`` None
    leaves the bridge's stp attribute out (libvirt's default: on)."""
    forward = f"\n  <forward mode='{mode}'/>" if mode else ""
    stp_attr = "" if stp is None else f" stp='{'on' if stp else 'off'}'"
    return (
        f"<network>\n  <name>{name}</name>\n  <bridge name='{bridge}'{stp_attr}/>{forward}\n"
        f"  <ip address='{address}' netmask='{netmask}'/>\n</network>\n"
    )


class VirtfwRunner(Virtfw):
    """``Virtfw`` that finds the package from this checkout whatever the working directory."""

    def __call__(self, *args: str, check: bool = True, env: dict | None = None, timeout: float = 30):
        merged = {"PYTHONPATH": str(ROOT)}
        merged.update(env or {})
        return super().__call__(*args, check=check, env=merged, timeout=timeout)


# --------------------------------------------------------------------------- topology


class Topology:
    """host + lan namespaces joined by a veth pair, plus guests added on bridges in host."""

    def __init__(self, stack: contextlib.ExitStack, tmp: Path, backend: str | None) -> None:
        self._stack = stack
        self.tmp = tmp
        self.backend = backend
        self.host = stack.enter_context(netns("vfwh"))
        self.lan = stack.enter_context(netns("vfwl"))
        self.guests: dict[str, Netns] = {}
        # guest address -> its host-side veth end (the bridge port, an nwfilter portdev)
        self.ports: dict[str, str] = {}
        self._nguest = itertools.count(1)
        self.vfw = VirtfwRunner(self.host, tmp / "virtfw", backend)
        # The stp attribute of the bridges this topology's network XML asks for
        # (None: left out, so libvirt's default, on).  With STP on the kernel holds
        # a new port in listening/learning for 2 x forward_delay, at least 2 s each
        # (the kernel's minimum with STP on), so a guest is usable ~4 s after plugging.
        self.stp: bool | None = None

        # The host does not forward until virtfw says so (a new namespace may
        # inherit ip_forward from the root namespace; make the start state known).
        self.sysctl_set(self.host, "net.ipv4.ip_forward", "0")

        self.host.sh(
            "ip", "link", "add", HOST_UPLINK_DEV, "type", "veth", "peer", "name", "eth0", "netns", self.lan.name
        )
        self.host.sh("ip", "addr", "add", f"{HOST_UPLINK}/{UPLINK_PREFIX}", "dev", HOST_UPLINK_DEV)
        self.host.sh("ip", "link", "set", HOST_UPLINK_DEV, "up")
        self.lan.sh("ip", "addr", "add", f"{LAN_ADDR}/{UPLINK_PREFIX}", "dev", "eth0")
        self.lan.sh("ip", "link", "set", "eth0", "up")

    # ---- configuration helpers

    def write_network(self, name: str, bridge: str, mode: str | None, address: str) -> Path:
        path = self.tmp / f"{name}.xml"
        path.write_text(network_xml(name, bridge, mode, address, stp=self.stp))
        return path

    def define_and_start(self, name: str, bridge: str, mode: str | None, address: str) -> None:
        path = self.write_network(name, bridge, mode, address)
        self.vfw("net-define", str(path))
        self.vfw("net-start", name)

    def create_transient(self, name: str, bridge: str, mode: str | None, address: str) -> None:
        self.vfw("net-create", str(self.write_network(name, bridge, mode, address)))

    @staticmethod
    def sysctl(ns: Netns, key: str) -> str:
        return ns.sh("cat", "/proc/sys/" + key.replace(".", "/")).strip()

    @staticmethod
    def sysctl_set(ns: Netns, key: str, value: str) -> None:
        ns.sh("sh", "-c", f"echo {value} > /proc/sys/{key.replace('.', '/')}")

    def lan_route(self, subnet: str) -> None:
        """Give the lan a route to ``subnet`` via the host's uplink address."""
        self.lan.sh("ip", "route", "replace", subnet, "via", HOST_UPLINK)

    def link_exists(self, ns: Netns, dev: str) -> bool:
        return ns.run(["ip", "link", "show", "dev", dev], check=False).returncode == 0

    def add_guest(self, bridge: str, address: str, gateway: str, prefix: int = 24) -> Netns:
        """A guest namespace whose eth0 (``address``/``prefix``, default via ``gateway``)
        is plugged into ``bridge`` in the host namespace."""
        n = next(self._nguest)
        guest = self._stack.enter_context(netns("vfwg"))
        port = f"vg{n}"
        if not self.link_exists(self.host, bridge):
            raise AssertionError(
                f"bridge {bridge} does not exist in {self.host}:\n" + self.host.sh("ip", "-br", "link")
            )
        self.host.sh("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", guest.name)
        self.host.sh("ip", "link", "set", port, "master", bridge)
        self.host.sh("ip", "link", "set", port, "up")
        guest.sh("ip", "addr", "add", f"{address}/{prefix}", "dev", "eth0")
        guest.sh("ip", "link", "set", "eth0", "up")
        guest.sh("ip", "route", "add", "default", "via", gateway)
        self._wait_port_forwarding(port)
        self.guests[address] = guest
        self.ports[address] = port
        return guest

    def plug_guest(self, bridge: str, mac: str | None = None, wait: float = 10.0) -> Netns:
        """A guest namespace whose eth0 (no address: DHCP configures it; MAC ``mac`` if
        given) is plugged into ``bridge`` in the host namespace; waits (at most ``wait``
        seconds) until the bridge port forwards. The port name is in ``self.ports[guest.name]``."""
        n = next(self._nguest)
        guest = self._stack.enter_context(netns("vfwg"))
        port = f"vg{n}"
        if not self.link_exists(self.host, bridge):
            raise AssertionError(
                f"bridge {bridge} does not exist in {self.host}:\n" + self.host.sh("ip", "-br", "link")
            )
        self.host.sh("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", guest.name)
        if mac:
            guest.sh("ip", "link", "set", "eth0", "address", mac)
        self.host.sh("ip", "link", "set", port, "master", bridge)
        self.host.sh("ip", "link", "set", port, "up")
        guest.sh("ip", "link", "set", "eth0", "up")
        if wait:
            self._wait_port_forwarding(port, limit=wait)
        self.guests[guest.name] = guest
        self.ports[guest.name] = port
        return guest

    def wait_forwarding(self, guest: Netns, limit: float = 10.0) -> None:
        """Wait (bounded) until the bridge port of a guest made by ``plug_guest`` forwards."""
        self._wait_port_forwarding(self.ports[guest.name], limit=limit)

    def _wait_port_forwarding(self, port: str, limit: float = 8.0) -> None:
        """A bridge port with STP on passes through listening/learning; wait (bounded)."""
        deadline = time.monotonic() + limit
        while True:
            out = self.host.sh("bridge", "link", "show", "dev", port)
            if "state forwarding" in out:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"bridge port {port} not forwarding after {limit}s: {out}")
            time.sleep(0.1)


@contextlib.contextmanager
def topology(tmp: Path, backend: str | None = None) -> Iterator[Topology]:
    """Build the host/lan topology; everything is removed on exit."""
    tmp.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        yield Topology(stack, tmp, backend)


# --------------------------------------------------------------------------- raw ruleset text


def raw_nft(ns: Netns) -> str:
    """``nft list ruleset`` verbatim except counters and handles."""
    import re

    text = ns.sh("nft", "list", "ruleset")
    text = re.sub(r"counter packets \d+ bytes \d+", "counter", text)
    return re.sub(r" # handle \d+", "", text)


def raw_save(ns: Netns, tool: str) -> str:
    """``iptables-save``/``ip6tables-save`` verbatim except comment lines and counters."""
    import re

    lines = [l for l in ns.sh(tool).splitlines() if not l.startswith("#")]
    return "\n".join(re.sub(r"\[\d+:\d+\]", "[0:0]", l) for l in lines)


def raw_rulesets(ns: Netns) -> dict[str, str]:
    return {
        "nft list ruleset": raw_nft(ns),
        "iptables-save": raw_save(ns, "iptables-save"),
        "ip6tables-save": raw_save(ns, "ip6tables-save"),
    }


# --------------------------------------------------------------------------- link layer
#
# Helpers for filter tests: addresses, neighbour tables, TCP from a chosen source
# address, and hand-made ARP frames.  All run inside the namespace given.


def mac_of(ns: Netns, dev: str = "eth0") -> str:
    """The link-layer address of ``dev`` in ``ns``, lower case."""
    import json

    return json.loads(ns.sh("ip", "-j", "link", "show", "dev", dev))[0]["address"].lower()


def set_mac(ns: Netns, mac: str, dev: str = "eth0") -> None:
    """Change ``dev``'s MAC while it stays up (veth allows it), so its routes stay."""
    ns.sh("ip", "link", "set", "dev", dev, "address", mac)


def neigh_lladdr(ns: Netns, addr: str, dev: str = "eth0") -> str | None:
    """The MAC ``ns``'s neighbour table holds for ``addr`` (any usable state), or None.

    INCOMPLETE and FAILED entries carry no address and count as not learnt.
    """
    import json

    out = ns.sh("ip", "-j", "neigh", "show", "to", addr, "dev", dev)
    for entry in json.loads(out or "[]"):
        lladdr = entry.get("lladdr")
        if lladdr and not set(entry.get("state", [])) & {"INCOMPLETE", "FAILED"}:
            return lladdr.lower()
    return None


def neigh_flush(ns: Netns, dev: str = "eth0") -> None:
    """Forget every learnt (non-permanent) neighbour on ``dev``."""
    ns.run(["ip", "neigh", "flush", "dev", dev], check=False)


def neigh_static(ns: Netns, addr: str, mac: str, dev: str = "eth0") -> None:
    """A permanent neighbour entry, so traffic to ``addr`` needs no ARP at all."""
    ns.sh("ip", "neigh", "replace", addr, "lladdr", mac, "dev", dev, "nud", "permanent")


# A TCP connect attempt from a chosen local address; otherwise like _CONNECT.
# argv: source address, address, port, timeout seconds.
_CONNECT_FROM = rf"""
import socket, sys
src, addr, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
sport = int(sys.argv[5]) if len(sys.argv) > 5 else 0
try:
    c = socket.create_connection((addr, port), timeout=timeout, source_address=(src, sport))
    c.settimeout(timeout)
    data = c.recv(64)
    c.close()
except OSError as e:
    print("FAIL", type(e).__name__, e, flush=True)
    sys.exit(1)
print("GOT", data.decode(errors="replace").strip(), flush=True)
sys.exit(0 if data.startswith(b"{BANNER.encode()}") else 4)
"""


def tcp_probe_from(
    src: Netns,
    source: str,
    dst: Netns,
    addr: str,
    *,
    port: int | None = None,
    timeout: float = 2.0,
    source_port: int = 0,
) -> Probe:
    """``tcp_probe`` with the client socket bound to ``source`` (an address of ``src``), and
    to ``source_port`` when given."""
    port = port or next_port()
    with Listener(dst, port) as listener:
        start = time.monotonic()
        proc = run(
            [
                "ip",
                "netns",
                "exec",
                src.name,
                sys.executable,
                "-c",
                _CONNECT_FROM,
                source,
                addr,
                str(port),
                str(timeout),
                str(source_port),
            ],
            check=False,
            timeout=timeout + 10,
        )
        ok = proc.returncode == 0
        peer = listener.peer(wait=2.0 if ok else 0.3)
    detail = (
        f"from {source}:{source_port or '*'}: "
        + (proc.stdout + proc.stderr).strip()
        + f" ({time.monotonic() - start:.1f}s)"
    )
    return Probe(src.name, dst.name, addr, port, ok, peer, detail)


# Sends ARP frames built by hand on a raw packet socket.
# argv: dev, count, then one frame as: eth_dst eth_src op sha spa tha tpa.
_SEND_ARP = r"""
import socket, struct, sys, time
dev, count = sys.argv[1], int(sys.argv[2])
eth_dst, eth_src, op, sha, spa, tha, tpa = sys.argv[3:10]
mac = lambda m: bytes.fromhex(m.replace(":", ""))
frame = (mac(eth_dst) + mac(eth_src) + struct.pack("!H", 0x0806)
         + struct.pack("!HHBBH", 1, 0x0800, 6, 4, int(op))
         + mac(sha) + socket.inet_aton(spa) + mac(tha) + socket.inet_aton(tpa))
frame += bytes(60 - len(frame))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
for i in range(count):
    s.send(frame)
    time.sleep(0.05)
"""

ARP_REQUEST = 1
ARP_REPLY = 2
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


def send_arp(
    ns: Netns,
    *,
    op: int,
    eth_src: str,
    eth_dst: str,
    sha: str,
    spa: str,
    tha: str,
    tpa: str,
    dev: str = "eth0",
    count: int = 3,
) -> None:
    """Send ``count`` copies of one ARP frame from ``dev`` in ``ns``.

    ``sha``/``spa``: sender hardware/protocol address inside the ARP payload;
    ``tha``/``tpa``: target; ``eth_src``/``eth_dst``: the Ethernet header.
    """
    ns.run(
        [sys.executable, "-c", _SEND_ARP, dev, str(count), eth_dst, eth_src, str(op), sha, spa, tha, tpa], timeout=10
    )
