"""The bridge a network lives on, and kernel forwarding; netlink (virtfw.net.netlink) is imported lazily."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from virtfw.errors import VirtfwError
from virtfw.net.model import Network

if TYPE_CHECKING:
    from virtfw.net.netlink import Netlink
    from virtfw.rules.runner import Runner

FORWARDING = {
    "ipv4": Path("/proc/sys/net/ipv4/ip_forward"),
    "ipv6": Path("/proc/sys/net/ipv6/conf/all/forwarding"),
}


def bridge_alias(network: str) -> str:
    """The alias (``ip link show`` prints it) that marks a bridge virtfw created for ``network``.

    It is what lets net-destroy tell its own bridge from one an admin made under the same
    name, and find its bridge when the network's status file is unreadable.
    """
    return f"virtfw network {network}"


@dataclass
class BridgeRecord:
    """What net-start did to links, so net-destroy undoes exactly that.

    ``ifindex`` is the bridge's index once known: a bridge of that name with another index
    was re-created by someone else since, and is neither deleted nor stripped of addresses.
    """

    name: str
    created: bool
    addresses: list[str] = field(default_factory=list)  # "addr/prefix" we added
    ifindex: int | None = None

    def to_json(self) -> dict:
        data: dict = {"name": self.name, "created": self.created, "addresses": self.addresses}
        if self.ifindex is not None:
            data["ifindex"] = self.ifindex
        return data


def _netlink_error() -> Any:
    from virtfw.net.netlink import netlink_error

    return netlink_error()


class Links:
    """One netlink socket for the whole command; each change announced through the runner
    (printed instead of made in a dry run, shown with -v)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.dry_run = runner.dry_run
        self._ipr: Netlink | None = None

    @property
    def ipr(self) -> Netlink:
        if self._ipr is None:
            from virtfw.net.netlink import Netlink

            self._ipr = Netlink()
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def index(self, name: str) -> int | None:
        if self.dry_run:
            return None
        found = self.ipr.link_lookup(ifname=name)
        return found[0] if found else None

    def kind(self, index: int) -> str | None:
        link = self.ipr.get_links(index)[0]
        info = link.get_attr("IFLA_LINKINFO")
        return info.get_attr("IFLA_INFO_KIND") if info else None

    def alias(self, index: int) -> str:
        return self.ipr.get_links(index)[0].get_attr("IFLA_IFALIAS") or ""

    def aliased(self, network: str) -> list[tuple[str, int]]:
        """Bridges marked as virtfw's for ``network``: (name, index)."""
        return self.marked().get(network, [])

    def marked(self) -> dict[str, list[tuple[str, int]]]:
        """Every bridge marked as virtfw's, by the network it was created for: (name, index)."""
        if self.dry_run:
            return {}
        prefix = bridge_alias("")
        found: dict[str, list[tuple[str, int]]] = {}
        for link in self.ipr.get_links():
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else None
            alias = link.get_attr("IFLA_IFALIAS") or ""
            if kind == "bridge" and alias.startswith(prefix) and len(alias) > len(prefix):
                found.setdefault(alias[len(prefix) :], []).append((link.get_attr("IFLA_IFNAME"), link["index"]))
        return found

    def state(self, record: BridgeRecord) -> str:
        """``missing``, ``replaced`` (same name, another index: not the one recorded) or ``present``."""
        index = self.index(record.name)
        if index is None:
            return "missing"
        if record.ifindex is not None and index != record.ifindex:
            return "replaced"
        return "present"

    def is_up(self, name: str) -> bool:
        """Whether the link is administratively up (IFF_UP); False when it is gone."""
        index = self.index(name)
        return index is not None and bool(self.ipr.get_links(index)[0]["flags"] & 1)

    def bring_up(self, net: Network, record: BridgeRecord) -> None:
        """Create the bridge if needed, add the network's addresses, set it up (see
        ``_bring_up``); the kernel's refusal of any step, a bridge gone meanwhile included,
        is one plain error."""
        if self.dry_run:
            self._bring_up(net, record)
            return
        NetlinkError = _netlink_error()
        try:
            self._bring_up(net, record)
        except NetlinkError as exc:
            raise VirtfwError(f"cannot bring up bridge {net.bridge_name}: {exc.args[-1]}") from None

    def _bring_up(self, net: Network, record: BridgeRecord) -> None:
        """Create the bridge if needed, add the network's addresses, set it up.

        ``record`` is filled in as each change lands, so a failure part-way leaves
        an exact list of what to undo.
        """
        name = net.bridge_name
        add = f"ip link add {name} type bridge stp_state {int(net.bridge.stp)} forward_delay {net.bridge.delay * 100}"
        if self.dry_run:
            self.runner.announce(add)
            for ip in net.ips:
                self.runner.announce(f"ip address add {ip.address}/{ip.prefix} dev {name}")
            self.runner.announce(f"ip link set {name} up")
            return
        index = self.index(name)
        if index is None:
            self.runner.announce(add)
            attrs: dict[str, int | str] = {
                "br_stp_state": int(net.bridge.stp),
                "br_forward_delay": net.bridge.delay * 100,
            }
            if net.mac:
                attrs["address"] = net.mac
            self._netlink(f"create bridge {name}", self.ipr.link, "add", ifname=name, kind="bridge", **attrs)
            record.created = True
            index = self.index(name)
            if index is None:
                raise VirtfwError(f"bridge {name} vanished as it was created")
            # the kernel takes no alias at add
            self._netlink(f"mark bridge {name}", self.ipr.link, "set", index=index, ifalias=bridge_alias(net.name))
        elif self.kind(index) != "bridge":
            raise VirtfwError(f"interface {name} exists and is not a bridge")
        record.ifindex = index
        existing = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in self.ipr.get_addr(index=index)}
        for ip in net.ips:
            if (str(ip.address), ip.prefix) in existing:
                continue
            where = f"add {ip.address}/{ip.prefix} to {name}"
            self.runner.announce(f"ip address add {ip.address}/{ip.prefix} dev {name}")
            self._netlink(where, self.ipr.addr, "add", index=index, address=str(ip.address), prefixlen=ip.prefix)
            record.addresses.append(f"{ip.address}/{ip.prefix}")
        if not self.ipr.get_links(index)[0]["flags"] & 1:  # IFF_UP: a reload of an intact bridge changes nothing
            self.runner.announce(f"ip link set {name} up")
            self._netlink(f"set {name} up", self.ipr.link, "set", index=index, state="up")

    @staticmethod
    def _netlink(what: str, call: Any, *args: Any, **kwargs: Any) -> None:
        """One change through netlink; the kernel's refusal as one line naming what was tried."""
        NetlinkError = _netlink_error()
        try:
            call(*args, **kwargs)
        except NetlinkError as exc:
            raise VirtfwError(f"cannot {what}: {exc.args[-1]}") from None

    def tear_down(self, record: BridgeRecord, network: str) -> None:
        """Delete the bridge if virtfw created it for ``network``, else take back the addresses
        it added. A bridge re-created by someone else under the name is left as it is."""
        if self.dry_run:
            self.runner.announce(
                f"ip link del {record.name}" if record.created else f"ip address del ... dev {record.name}"
            )
            return
        NetlinkError = _netlink_error()
        index = self.index(record.name)
        if index is None or (record.ifindex is not None and index != record.ifindex):
            return
        try:
            if record.created:
                if self._made_for(index, record, network):
                    self.runner.announce(f"ip link del {record.name}")
                    self.ipr.link("del", index=index)
                return
            for cidr in record.addresses:
                address, prefix = cidr.split("/")
                self.runner.announce(f"ip address del {cidr} dev {record.name}")
                self.ipr.addr("del", index=index, address=address, prefixlen=int(prefix))
        except NetlinkError as exc:
            if exc.code not in (19, 99):  # ENODEV, EADDRNOTAVAIL: already gone
                raise VirtfwError(f"cannot clean up bridge {record.name}: {exc.args[-1]}") from None

    def _made_for(self, index: int, record: BridgeRecord, network: str) -> bool:
        """The bridge at ``index`` carries our alias, or it is the one a start killed between
        creating it and marking it (no alias yet, index never recorded)."""
        if self.kind(index) != "bridge":
            return False
        alias = self.alias(index)
        return alias == bridge_alias(network) or (not alias and record.ifindex is None)

    def remove_aliased(self, network: str, keep: set[str]) -> list[str]:
        """Delete the bridges marked as created for ``network``, but for those in ``keep``
        (another network uses it now); their names."""
        removed = []
        for name, index in self.aliased(network):
            if name in keep:
                continue
            self.runner.announce(f"ip link del {name}")
            self._netlink(f"delete bridge {name}", self.ipr.link, "del", index=index)
            removed.append(name)
        return removed


def enable_forwarding(families: set[str], runner: Runner) -> None:
    """Switch on forwarding; left on at destroy, as libvirt does (other things may rely on it)."""
    for family in sorted(families):
        path = FORWARDING[family]
        sysctl = f"sysctl {'net.ipv4.ip_forward' if family == 'ipv4' else 'net.ipv6.conf.all.forwarding'}=1"
        if runner.dry_run:
            runner.announce(sysctl)
            continue
        try:
            if path.read_text().strip() != "1":
                runner.announce(sysctl)
                path.write_text("1\n")
        except OSError as exc:
            raise VirtfwError(f"cannot enable {family} forwarding ({path}): {exc.strerror}") from None
