"""Network definitions as data: what libvirt's <network> XML says, validated."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

FORWARD_MODES = ("nat", "route", "open", "none")


@dataclass
class Bridge:
    name: str | None = None
    stp: bool = True
    delay: int = 0
    mac_table_manager: str | None = None  # 'kernel' (the kernel learns, as without it) or absent
    zone: str | None = None  # the firewalld zone the bridge goes in (firewalld must run); None: the default


#: <lease unit>: seconds per unit.
LEASE_UNITS = {"seconds": 1, "minutes": 60, "hours": 3600}


@dataclass
class Lease:
    """A DHCP lease time (<lease expiry unit>): 0 is infinite (and has no unit)."""

    expiry: int
    unit: str | None = "minutes"

    @property
    def dnsmasq(self) -> str:
        """As dnsmasq's dhcp-range and dhcp-host take it, and libvirt writes it: 1h, 10m, 200s."""
        if self.expiry == 0 or self.unit is None:
            return "infinite"
        return f"{self.expiry}{self.unit[0]}"


@dataclass
class DhcpRange:
    start: IPAddress
    end: IPAddress
    lease: Lease | None = None


@dataclass
class DhcpHost:
    mac: str | None
    ip: IPAddress | None
    name: str | None
    id: str | None = None  # a DHCPv6 client's DUID (IPv6 hosts only)
    lease: Lease | None = None


@dataclass
class IPDef:
    address: IPAddress
    prefix: int
    family: str  # "ipv4" | "ipv6"
    netmask_form: bool = False  # written as netmask= (kept for round-trip)
    ranges: list[DhcpRange] = field(default_factory=list)
    hosts: list[DhcpHost] = field(default_factory=list)
    tftp_root: str | None = None
    bootp_file: str | None = None
    bootp_server: str | None = None
    local_ptr: bool | None = None  # localPtr: the network's reverse zone is answered locally, never forwarded

    @property
    def network(self) -> IPNetwork:
        return ipaddress.ip_network(f"{self.address}/{self.prefix}", strict=False)

    @property
    def has_dhcp(self) -> bool:
        return bool(self.ranges or self.hosts)

    @property
    def ptr_domain(self) -> str | None:
        """The reverse DNS zone of the network (122.168.192.in-addr.arpa), or None when its
        prefix does not end at a label (a multiple of 8 bits for IPv4, 4 for IPv6)."""
        network = self.network
        step = 8 if network.version == 4 else 4
        if self.prefix % step:
            return None
        if network.version == 4:
            labels = str(network.network_address).split(".")[: self.prefix // 8]
            suffix = "in-addr.arpa"
        else:
            labels = list(network.network_address.exploded.replace(":", ""))[: self.prefix // 4]
            suffix = "ip6.arpa"
        return ".".join([*reversed(labels), suffix])


@dataclass
class Nat:
    ipv6: bool = False
    address_start: ipaddress.IPv4Address | None = None
    address_end: ipaddress.IPv4Address | None = None
    port_start: int = 0  # 0: default range
    port_end: int = 0

    @property
    def ports(self) -> tuple[int, int]:
        if self.port_start:
            return (self.port_start, self.port_end)
        return (1024, 65535)


@dataclass
class Forward:
    mode: str = "none"  # "none" = isolated (no <forward> element)
    dev: str | None = None  # the one outside interface: dev= or <interface dev=> (libvirt writes both)
    nat: Nat | None = None


@dataclass
class DnsHost:
    """A static DNS entry: an address and the names it answers for."""

    ip: IPAddress
    hostnames: list[str]


@dataclass
class Dns:
    """What dnsmasq takes from the <dns> element (which ``Network.extra`` keeps whole)."""

    enabled: bool = True  # enable='no': dnsmasq serves no DNS (port=0)
    hosts: list[DnsHost] = field(default_factory=list)


@dataclass
class Network:
    name: str
    uuid: str
    bridge: Bridge
    forward: Forward
    ips: list[IPDef] = field(default_factory=list)
    mac: str | None = None
    domain: str | None = None
    domain_local_only: str | None = None
    domain_register: str | None = None  # only 'no' (registering with systemd-resolved is refused)
    trust_guest_rx_filters: bool | None = None  # kept for the hypervisor, which reads it per guest
    ipv6_nogw: bool = False  # <network ipv6='yes'>
    dns: Dns | None = None  # None: no <dns> element
    dnsmasq_options: list[str] = field(default_factory=list)  # <dnsmasq:option value=...>, in order
    extra: list[str] = field(default_factory=list)  # libvirt elements kept verbatim (for formatting back)
    uuid_generated: bool = field(default=False, compare=False, repr=False)

    @property
    def bridge_name(self) -> str:
        assert self.bridge.name, "bridge name is assigned when the network is stored"
        return self.bridge.name

    def ips_of(self, family: str) -> list[IPDef]:
        return [ip for ip in self.ips if ip.family == family]

    @property
    def nat(self) -> Nat:
        return self.forward.nat or Nat()
