"""Which firewall rules each forward mode needs: libvirt's policy, backend-neutral.

libvirt inserts every rule at the top of its chain, so the last rule it issues ends
up first. The builders below add rules in libvirt's issue order, which keeps this
file easy to hold against libvirt's own test data; ``network_rules`` reverses the
list once to give the final top-down order the backends install.
"""

from __future__ import annotations

from virtfw.net.model import IPDef, Network
from virtfw.rules.netrules import (
    Action,
    Addr,
    Chain,
    CtState,
    DPort,
    Family,
    Iface,
    Proto,
    Rule,
    RuleSet,
    Verdict,
)

ACCEPT = Verdict(Action.ACCEPT)
REJECT = Verdict(Action.REJECT)
RETURN = Verdict(Action.RETURN)

# Modes that get the full libvirt treatment; "open" gets no rules at all.
FIREWALLED_MODES = ("none", "nat", "route")


def needs_firewall(net: Network) -> bool:
    return net.forward.mode in FIREWALLED_MODES


# The firewalld zones virtfw ships (etc/firewalld): libvirt's 'libvirt' and 'libvirt-routed'
# zones and policies, in effect, under virtfw's names.
ZONE = "virtfw"
ROUTED_ZONE = "virtfw-routed"
ROUTED_POLICY = "virtfw-routed-out"  # the routed zone is used only where its policies are loaded too


def zone_choices(net: Network) -> tuple[list[tuple[str, str | None]], bool]:
    """Where firewalld runs, the zones (each with a policy it also needs) a network's bridge
    may go in, the first that firewalld has taken, and whether the network named it: its
    ``<bridge zone>``; else, as libvirt does, the routed zone for a routed network and the
    zone for any other firewalled one (an open network gets none: it asked for no rules)."""
    if net.bridge.zone:
        return [(net.bridge.zone, None)], True
    if net.forward.mode == "route":
        return [(ROUTED_ZONE, ROUTED_POLICY), (ZONE, None)], False
    if net.forward.mode in FIREWALLED_MODES:
        return [(ZONE, None)], False
    return [], False


def needs_forwarding(net: Network) -> set[Family]:
    """Families whose kernel forwarding net-start must switch on."""
    if net.forward.mode not in ("nat", "route", "open"):
        return set()
    return {Family(ip.family) for ip in net.ips}


def network_rules(net: Network) -> RuleSet:
    if not needs_firewall(net):
        return RuleSet(net.name, ())
    builder = _RuleBuilder(net)
    builder.general_ipv4()
    if net.ips_of("ipv6") or net.ipv6_nogw:
        builder.general_ipv6()
    for ip in net.ips:
        builder.per_ip(ip)
    builder.checksum()
    return RuleSet(net.name, tuple(reversed(builder.rules)))


class _RuleBuilder:
    """Collects rules in libvirt's issue order for one network."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.bridge = net.bridge_name
        self.dev = net.forward.dev
        self.rules: list[Rule] = []

    def add(self, family: Family, chain: Chain, *matches, verdict: Verdict = ACCEPT) -> None:
        self.rules.append(Rule(family, chain, tuple(m for m in matches if m is not None), verdict))

    def _in(self, by_index: bool = True) -> Iface:
        return Iface(self.bridge, inbound=True, by_index=by_index)

    def _out(self) -> Iface:
        return Iface(self.bridge, inbound=False)

    def _host_service(self, family: Family, port: int, protos=("tcp", "udp"), inbound=True) -> None:
        chain = Chain.HOST_IN if inbound else Chain.HOST_OUT
        iface = self._in() if inbound else self._out()
        for proto in protos:
            self.add(family, chain, iface, Proto(proto), DPort(proto, port))

    def _isolate(self, family: Family) -> None:
        self.add(family, Chain.FWD_OUT, self._in(), verdict=REJECT)
        self.add(family, Chain.FWD_IN, self._out(), verdict=REJECT)
        self.add(family, Chain.FWD_CROSS, self._in(), self._out())

    def general_ipv4(self) -> None:
        v4 = Family.IPV4
        self._host_service(v4, 67)  # DHCP requests
        self._host_service(v4, 68, inbound=False)  # DHCP replies
        self._host_service(v4, 53)
        self._host_service(v4, 53, inbound=False)
        dhcp_ip = next((ip for ip in self.net.ips_of("ipv4") if ip.has_dhcp or ip.tftp_root), None)
        if dhcp_ip is not None and dhcp_ip.tftp_root:
            self._host_service(v4, 69, protos=("udp",))
            self._host_service(v4, 69, protos=("udp",), inbound=False)
        self._isolate(v4)

    def general_ipv6(self) -> None:
        v6 = Family.IPV6
        self._isolate(v6)
        if self.net.ips_of("ipv6"):
            self._host_service(v6, 53)
            self._host_service(v6, 53, inbound=False)
            self._host_service(v6, 547, protos=("udp",))
            self._host_service(v6, 546, protos=("udp",), inbound=False)

    def per_ip(self, ip: IPDef) -> None:
        mode = self.net.forward.mode
        masquerade = mode == "nat" and (ip.family == "ipv4" or self.net.nat.ipv6)
        if masquerade:
            self._masquerade(ip)
        elif mode in ("nat", "route"):
            self._routing(ip)

    def _dev_out(self) -> Iface | None:
        return Iface(self.dev, inbound=False, by_index=False) if self.dev else None

    def _dev_in(self) -> Iface | None:
        return Iface(self.dev, inbound=True, by_index=False) if self.dev else None

    def _routing(self, ip: IPDef) -> None:
        family, cidr = Family(ip.family), str(ip.network)
        self.add(family, Chain.FWD_OUT, Addr(cidr, source=True), self._in(), self._dev_out())
        self.add(family, Chain.FWD_IN, self._dev_in(), Addr(cidr, source=False), self._out())

    def _masquerade(self, ip: IPDef) -> None:
        family, cidr, nat = Family(ip.family), str(ip.network), self.net.nat
        src, not_dst = Addr(cidr, source=True), Addr(cidr, source=False, negate=True)
        self.add(family, Chain.FWD_OUT, src, self._in(), self._dev_out())
        self.add(
            family, Chain.FWD_IN, self._dev_in(), self._out(), Addr(cidr, source=False),
            CtState(("related", "established")),
        )  # fmt: skip
        if nat.address_start and family is Family.IPV4:
            addresses = (str(nat.address_start), str(nat.address_end) if nat.address_end != nat.address_start else None)
            plain = Verdict(Action.SNAT, addresses=addresses)
            ported = Verdict(Action.SNAT, ports=nat.ports, addresses=addresses)
        else:
            plain = Verdict(Action.MASQUERADE)
            ported = Verdict(Action.MASQUERADE, ports=nat.ports)
        self.add(family, Chain.NAT_POST, src, not_dst, self._dev_out(), verdict=plain)
        for proto in ("udp", "tcp"):
            self.add(family, Chain.NAT_POST, Proto(proto), src, not_dst, self._dev_out(), verdict=ported)
        if family is Family.IPV4:
            self.add(
                family, Chain.NAT_POST, self._dev_out(), src, Addr("255.255.255.255/32", source=False), verdict=RETURN
            )
            multicast = "224.0.0.0/24"
        else:
            multicast = "ff02::/16"
        self.add(family, Chain.NAT_POST, self._dev_out(), src, Addr(multicast, source=False), verdict=RETURN)

    def checksum(self) -> None:
        if any(ip.has_dhcp for ip in self.net.ips_of("ipv4")):
            self.add(
                Family.IPV4, Chain.MANGLE_POST, self._out(), Proto("udp"), DPort("udp", 68),
                verdict=Verdict(Action.CHECKSUM_FILL),
            )  # fmt: skip
