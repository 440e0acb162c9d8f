"""A DHCP client for test guests: ``busybox udhcpc`` with a script that configures the
lease it gets (address, default route) and prints it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helpers.nsutil import Netns

# busybox udhcpc runs this with $1 = deconfig | bound | renew | leasefail | nak and the
# lease in the environment ($mask is the prefix length).
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    if [ -n "$router" ]; then
        ip route replace default via "${router%% *}" dev "$interface"
    fi
    echo "LEASE_IP=$ip"
    echo "LEASE_ROUTER=$router"
    echo "LEASE_DNS=$dns"
    echo "LEASE_SERVER=$serverid"
    echo "LEASE_TIME=$lease"
    ;;
esac
exit 0
"""


@dataclass
class Lease:
    ip: str
    router: str
    dns: str
    server: str
    time: str = ""  # the lease time the server gave, in seconds


def dhcp(guest: Netns, script: Path, hostname: str | None = None, timeout: float = 40) -> Lease:
    """Run ``busybox udhcpc`` in ``guest`` until it holds a lease (10 discovers, 1 s apart:
    long enough for a bridge port with STP on to reach forwarding).

    Guests ask one after the other: two udhcpc started at the same instant on two ports
    of one bridge often go without a lease here (dnsmasq logs its offers and acks, the
    clients keep asking), with either firewall backend and with STP off, while one at
    a time always works; that is the test clients, not what is tested.
    """
    argv = ["busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "10", "-T", "1", "-s", str(script)]
    if hostname:
        argv += ["-x", f"hostname:{hostname}"]
    proc = guest.run(argv, check=False, timeout=timeout)
    found = dict(line.split("=", 1) for line in proc.stdout.splitlines() if line.startswith("LEASE_"))
    assert proc.returncode == 0 and "LEASE_IP" in found, (
        f"no DHCP lease in {guest} (udhcpc exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    )
    return Lease(found["LEASE_IP"], found.get("LEASE_ROUTER", ""), found.get("LEASE_DNS", ""),
                 found.get("LEASE_SERVER", ""), found.get("LEASE_TIME", ""))  # fmt: skip


def write_udhcpc_script(folder: Path) -> Path:
    path = folder / "udhcpc.sh"
    path.write_text(UDHCPC_SCRIPT)
    path.chmod(0o755)
    return path
