"""The bridge a network lives on, and kernel forwarding (netlink, standard library only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from virtfw.errors import VirtfwError
from virtfw.net.model import Network
from virtfw.net.netlink import NetlinkError, RouteSocket

FORWARDING = {
    "ipv4": Path("/proc/sys/net/ipv4/ip_forward"),
    "ipv6": Path("/proc/sys/net/ipv6/conf/all/forwarding"),
}


@dataclass
class BridgeRecord:
    """What net-start did to links, so net-destroy undoes exactly that."""

    name: str
    created: bool
    addresses: list[str] = field(default_factory=list)  # "addr/prefix" we added

    def to_json(self) -> dict:
        return {"name": self.name, "created": self.created, "addresses": self.addresses}

    @classmethod
    def from_json(cls, data: dict) -> BridgeRecord:
        return cls(data["name"], data["created"], list(data.get("addresses", [])))


class Links:
    """One netlink socket for the whole command; printing instead in dry-run mode."""

    def __init__(self, dry_run: bool = False) -> None:
        self.dry_run = dry_run
        self._ipr: RouteSocket | None = None

    @property
    def ipr(self) -> RouteSocket:
        if self._ipr is None:
            self._ipr = RouteSocket()
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def index(self, name: str) -> int | None:
        if self.dry_run:
            return None
        return self.ipr.link_index(name)

    def kind(self, index: int) -> str | None:
        return self.ipr.link_kind(index)

    def bring_up(self, net: Network, record: BridgeRecord) -> None:
        """Create the bridge if needed, add the network's addresses, set it up.

        ``record`` is filled in as each change lands, so a failure part-way leaves
        an exact list of what to undo.
        """
        name = net.bridge_name
        if self.dry_run:
            print(
                f"+ ip link add {name} type bridge stp_state {int(net.bridge.stp)} forward_delay {net.bridge.delay * 100}"
            )
            for ip in net.ips:
                print(f"+ ip address add {ip.address}/{ip.prefix} dev {name}")
            print(f"+ ip link set {name} up")
            return
        index = self.index(name)
        if index is None:
            try:
                self.ipr.add_bridge(name, int(net.bridge.stp), net.bridge.delay * 100, net.mac)
            except NetlinkError as exc:
                raise VirtfwError(f"cannot create bridge {name}: {exc.args[-1]}") from None
            record.created = True
            index = self.index(name)
        elif self.kind(index) != "bridge":
            raise VirtfwError(f"interface {name} exists and is not a bridge")
        if index is None:  # created, and gone again before we could look it up
            raise VirtfwError(f"cannot create bridge {name}: {NetlinkError(19).args[-1]}")
        existing = {(a.address, a.prefixlen) for a in self.ipr.addresses(index)}
        for ip in net.ips:
            if (str(ip.address), ip.prefix) in existing:
                continue
            try:
                self.ipr.add_address(index, str(ip.address), ip.prefix)
            except NetlinkError as exc:
                raise VirtfwError(f"cannot add {ip.address}/{ip.prefix} to {name}: {exc.args[-1]}") from None
            record.addresses.append(f"{ip.address}/{ip.prefix}")
        self.ipr.set_up(index)

    def tear_down(self, record: BridgeRecord) -> None:
        if self.dry_run:
            print(f"+ ip link del {record.name}" if record.created else f"+ ip address del ... dev {record.name}")
            return
        index = self.index(record.name)
        if index is None:
            return
        try:
            if record.created:
                self.ipr.delete_link(index)
                return
            for cidr in record.addresses:
                address, prefix = cidr.split("/")
                self.ipr.delete_address(index, address, int(prefix))
        except NetlinkError as exc:
            if exc.code not in (19, 99):  # ENODEV, EADDRNOTAVAIL: already gone
                raise VirtfwError(f"cannot clean up bridge {record.name}: {exc.args[-1]}") from None


def enable_forwarding(families: set[str], dry_run: bool = False) -> None:
    """Switch on forwarding; left on at destroy, as libvirt does (other things may rely on it)."""
    for family in sorted(families):
        path = FORWARDING[family]
        if dry_run:
            print(f"+ sysctl {'net.ipv4.ip_forward' if family == 'ipv4' else 'net.ipv6.conf.all.forwarding'}=1")
            continue
        try:
            if path.read_text().strip() != "1":
                path.write_text("1\n")
        except OSError as exc:
            raise VirtfwError(f"cannot enable {family} forwarding ({path}): {exc.strerror}") from None
