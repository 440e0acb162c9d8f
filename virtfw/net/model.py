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


@dataclass
class DhcpRange:
    start: IPAddress
    end: IPAddress


@dataclass
class DhcpHost:
    mac: str | None
    ip: IPAddress | None
    name: str | None


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

    @property
    def network(self) -> IPNetwork:
        return ipaddress.ip_network(f"{self.address}/{self.prefix}", strict=False)

    @property
    def has_dhcp(self) -> bool:
        return bool(self.ranges or self.hosts)


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
    dev: str | None = None
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
