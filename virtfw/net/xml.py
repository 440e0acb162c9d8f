"""libvirt <network> XML to and from the model, with precise validation messages."""

from __future__ import annotations

import ipaddress
import re
import uuid as uuidlib

from lxml import etree

from virtfw import xmlsafe
from virtfw.errors import VirtfwError
from virtfw.names import (
    ZONE_NAME_RULE,
    check_absolute_path,
    check_conf_value,
    check_hostname,
    check_ifname,
    check_mac,
    check_object_name,
    is_zone_name,
)
from virtfw.net.model import (
    LEASE_UNITS,
    Bridge,
    DhcpHost,
    DhcpRange,
    Dns,
    DnsHost,
    Forward,
    IPDef,
    Lease,
    Nat,
    Network,
)
from virtfw.xmlsafe import Reader

# libvirt elements virtfw does not act on but keeps, so libvirt files load unchanged
# and format back the same.
DNSMASQ_NS = "http://libvirt.org/schemas/network/dnsmasq/1.0"
DNSMASQ_OPTIONS = f"{{{DNSMASQ_NS}}}options"  # <dnsmasq:options>, as lxml names it
KEPT_ELEMENTS = (
    "title", "description", "metadata", "dns", "mtu", "route", "portgroup",
    "bandwidth", "virtualport", "vlan", "port", DNSMASQ_OPTIONS,
)  # fmt: skip
UNSUPPORTED_MODES = ("bridge", "private", "vepa", "passthrough", "hostdev")

#: dnsmasq reads a lease time as a C int of seconds (and takes at least two minutes).
LEASE_MAX_SECONDS = 2**31 - 1
LEASE_MIN_SECONDS = 120

#: libvirt's DUID types (basictypes.rng): LLT, EN, LL and UUID, as colon-separated hex octets.
_HEX = "[0-9a-fA-F]{1,2}"
_DUID = re.compile(
    rf"0{{1,2}}:0?1:0{{1,2}}:0?[a-fA-F1-9](:{_HEX}){{4}}(:{_HEX}){{6,8}}"
    rf"|0{{1,2}}:0?2(:{_HEX}){{4}}(:{_HEX}){{1,124}}"
    rf"|0{{1,2}}:0?3:0{{1,2}}:0?[a-fA-F1-9](:{_HEX}){{6,8}}"
    rf"|0{{1,2}}:0?4(:{_HEX}){{16}}"
)

#: What the hypervisor-side device pools of the refused forward modes are, for refusals.
_DEVICE_POOL = "forward modes virtfw does not manage (hostdev, passthrough, private, vepa, bridge)"
#: A read-only count libvirt adds to the XML of an active network.
_LIVE_COUNT = (
    "is the number of guests libvirt saw connected (read-only live state), not a setting: "
    "remove it (virsh net-dumpxml --inactive leaves it out)"
)


def _refuse_attribute(reader: Reader, attr: str, why: str) -> None:
    """Refuse ATTR when present: virtfw cannot do what it asks."""
    if reader.element.get(attr) is not None:
        raise reader.fail(f"attribute '{attr}' {why}")


def parse_network(text: str | bytes, origin: str = "network XML") -> Network:
    root = xmlsafe.parse(text, origin)
    if root.tag != "network":
        raise VirtfwError(f"{origin}: root element must be <network>, not <{root.tag}>")
    top = Reader(origin, root)
    _refuse_attribute(top, "connections", _LIVE_COUNT)
    top.check_known(
        ("ipv6", "trustGuestRxFilters"),
        ("name", "uuid", "bridge", "mac", "forward", "ip", "domain", *KEPT_ELEMENTS),
    )
    name_el = root.find("name")
    if name_el is None or not (name_el.text or "").strip():
        raise VirtfwError(f"{origin}: <name> is required")
    name = check_object_name(name_el.text.strip(), "network name")
    net = Network(
        name=name,
        uuid=_uuid(origin, root.findtext("uuid")),
        bridge=_bridge(origin, root.find("bridge")),
        forward=_forward(origin, root.find("forward")),
        ipv6_nogw=top.yes_no("ipv6", False),
        uuid_generated=not (root.findtext("uuid") or "").strip(),
        trust_guest_rx_filters=_yes_no_or_none(top, "trustGuestRxFilters"),
    )
    mac = root.find("mac")
    if mac is not None:
        net.mac = check_mac(Reader(origin, mac).require("address"), "<mac address>")
    domain = root.find("domain")
    if domain is not None:
        reader = Reader(origin, domain)
        reader.check_known(("name", "localOnly", "register"))
        net.domain = check_hostname(reader.require("name"), "<domain name>")
        net.domain_local_only = _yes_no_word(reader, "localOnly")
        net.domain_register = _yes_no_word(reader, "register")
        if net.domain_register == "yes":
            raise reader.fail(
                "attribute 'register': registering the domain with the host's systemd-resolved is not "
                f"supported: remove it, and point the host's resolver at the network's address for "
                f"'{net.domain}' yourself (resolvectl dns BRIDGE ADDRESS; resolvectl domain BRIDGE '~{net.domain}')"
            )
    net.ips = [_ip(origin, element) for element in root.findall("ip")]
    net.extra = [_canonical(child) for child in root if child.tag in KEPT_ELEMENTS]
    net.dns = _dns(origin, root.findall("dns"))
    net.dnsmasq_options = _dnsmasq_options(origin, root.findall(DNSMASQ_OPTIONS))
    _check_consistency(origin, net)
    return net


def peek_identity(text: str | bytes, origin: str) -> tuple[str | None, str | None]:
    """The uuid and bridge name of a definition that does not load as a whole (a bad value
    elsewhere, an element virtfw refuses): read leniently, what conflicts are checked on, with
    the same safe parser (no DTDs, entities or network access). A uuid that is not one is None
    (it equals no other); an XML document virtfw cannot read at all raises VirtfwError."""
    root = xmlsafe.parse(text, origin)
    if root.tag != "network":
        raise VirtfwError(f"{origin}: root element must be <network>, not <{root.tag}>")
    uuid_text = (root.findtext("uuid") or "").strip()
    try:
        uuid = str(uuidlib.UUID(uuid_text)) if uuid_text else None
    except ValueError:
        uuid = None
    bridge = root.find("bridge")
    name = (bridge.get("name") or "").strip() if bridge is not None else ""
    return uuid, name or None


def _yes_no_word(reader: Reader, attr: str) -> str | None:
    """A yes/no attribute kept as written: it is formatted back and decides a dnsmasq
    line, so any other word (a typo, a newline) is refused rather than read as 'no'."""
    value = reader.get(attr)
    if value is not None:
        reader.yes_no(attr, False)
    return value


def _yes_no_or_none(reader: Reader, attr: str) -> bool | None:
    """A yes/no attribute that is formatted back only when it was written."""
    return None if reader.get(attr) is None else reader.yes_no(attr, False)


def _hostname(name: str | None, what: str) -> str | None:
    return check_hostname(name, what) if name else None


def _dns(origin: str, elements: list[etree._Element]) -> Dns | None:
    """The <dns> element's enable flag and static host entries, validated; the element
    itself is kept in ``extra``. Of repeated elements the last one's flag counts."""
    if not elements:
        return None
    dns = Dns()
    for element in elements:
        reader = Reader(origin, element)
        dns.enabled = reader.yes_no("enable", True)  # not any word but 'no'
        records = [child for child in element if child.tag in ("forwarder", "host", "srv", "txt")]
        if not dns.enabled and records:  # as libvirt refuses it: records nobody would serve
            raise reader.fail(
                f"<{records[0].tag}> in a <dns enable='no'> would never be served: remove it, or enable DNS"
            )
        for host in element.findall("host"):
            address = _address(Reader(origin, host), "ip")
            names = [check_hostname((h.text or "").strip(), "<dns><host><hostname>") for h in host.findall("hostname")]
            dns.hosts.append(DnsHost(address, names))
    return dns


def _dnsmasq_options(origin: str, elements: list[etree._Element]) -> list[str]:
    """<dnsmasq:options><dnsmasq:option value=.../>: extra lines for dnsmasq, one each."""
    options = []
    for element in elements:
        for option in element.findall(f"{{{DNSMASQ_NS}}}option"):
            value = option.get("value", "")
            if not value or any(ord(c) < 32 for c in value):
                raise VirtfwError(f"{origin}: <dnsmasq:option value={value!r}>: one non-empty line is required")
            options.append(value)
    return options


def _canonical(element: etree._Element) -> str:
    """A kept element without layout whitespace, so formatting and parsing agree."""
    copy = etree.fromstring(etree.tostring(element))
    for node in copy.iter():
        if node.text is not None and not node.text.strip():
            node.text = None
        if node.tail is not None and not node.tail.strip():
            node.tail = None
    copy.tail = None
    return etree.tostring(copy, encoding="unicode")


def _uuid(origin: str, text: str | None) -> str:
    if text is None or not text.strip():
        return str(uuidlib.uuid4())
    try:
        return str(uuidlib.UUID(text.strip()))
    except ValueError:
        raise VirtfwError(f"{origin}: <uuid>: {text.strip()!r} is not a UUID") from None


def _bridge(origin: str, element: etree._Element | None) -> Bridge:
    if element is None:
        return Bridge()
    reader = Reader(origin, element)
    reader.check_known(("name", "stp", "delay", "macTableManager", "zone"))
    name = reader.get("name")
    zone = reader.get("zone")
    if zone is not None and not is_zone_name(zone):
        raise reader.fail(f"attribute 'zone': {zone!r} is not a firewalld zone name ({ZONE_NAME_RULE})")
    manager = reader.get("macTableManager")
    if manager == "libvirt":
        raise reader.fail(
            "attribute 'macTableManager': 'libvirt' is not supported: it needs the hypervisor to enter each "
            "guest's MAC address in the bridge's table, and virtfw does not attach guests; remove it or use 'kernel'"
        )
    if manager is not None and manager != "kernel":
        raise reader.fail(f"attribute 'macTableManager': '{manager}' must be 'kernel' or 'libvirt'")
    return Bridge(
        name=check_ifname(name, "bridge name") if name else None,
        stp=reader.yes_no("stp", True, "on", "off"),
        delay=reader.integer("delay", 0, 30, 0) or 0,
        mac_table_manager=manager,
        zone=zone,
    )


def _forward(origin: str, element: etree._Element | None) -> Forward:
    if element is None:
        return Forward(mode="none")
    reader = Reader(origin, element)
    mode = reader.get("mode", "nat")
    if mode in UNSUPPORTED_MODES:
        raise reader.fail(f"forward mode '{mode}' needs no firewall and is not managed by virtfw")
    if mode not in ("nat", "route", "open"):
        raise reader.fail(f"attribute 'mode': '{mode}' must be one of nat, route, open")
    _refuse_attribute(
        reader, "managed", f"(detaching PCI devices from the host) applies to {_DEVICE_POOL} only: remove it"
    )
    for child in element:
        if child.tag in ("pf", "address", "driver"):
            what = {
                "pf": "names the physical function whose virtual functions are handed to guests",
                "address": "lists PCI devices handed to guests",
                "driver": "picks how PCI devices are handed to guests",
            }[child.tag]
            raise VirtfwError(
                f"{origin}: {xmlsafe.describe(child)} in <forward> {what} in {_DEVICE_POOL}; it is not supported "
                f"in mode '{mode}': remove it, and name the outside interface with <forward dev='IFNAME'>"
            )
    reader.check_known(("mode", "dev"), ("nat", "interface"))
    dev = _forward_dev(origin, reader)
    if dev and mode == "open":
        raise reader.fail(
            "a forward device is not allowed with mode 'open': it adds no firewall rules, so nothing "
            "would keep forwarding to that device; remove it, or use mode 'route'"
        )
    forward = Forward(mode=mode, dev=dev)
    nat_el = element.find("nat")
    if nat_el is not None:
        if mode != "nat":
            raise VirtfwError(f"{origin}: <nat> is only allowed with forward mode 'nat'")
        forward.nat = _nat(origin, nat_el)
    return forward


def _forward_dev(origin: str, reader: Reader) -> str | None:
    """The outside interface: <forward dev=...> and/or one <interface dev=.../> (which libvirt
    writes next to it), which must then name the same device."""
    dev = reader.get("dev")
    dev = check_ifname(dev, "forward dev") if dev else None
    interfaces = reader.element.findall("interface")
    if len(interfaces) > 1:
        raise Reader(origin, interfaces[1]).fail(
            "only one forward interface is supported (libvirt's rule for modes nat, route and open)"
        )
    if interfaces:
        ireader = Reader(origin, interfaces[0])
        _refuse_attribute(ireader, "connections", _LIVE_COUNT)
        ireader.check_known(("dev",))
        name = check_ifname(ireader.require("dev"), "<forward><interface dev>")
        if dev is not None and name != dev:
            raise ireader.fail(f"attribute 'dev': '{name}' must match <forward dev='{dev}'>")
        dev = name
    return dev


def _nat(origin: str, element: etree._Element) -> Nat:
    reader = Reader(origin, element)
    reader.check_known(("ipv6",), ("address", "port"))
    nat = Nat(ipv6=reader.yes_no("ipv6", False))
    address = element.find("address")
    if address is not None:
        areader = Reader(origin, address)
        areader.check_known(("start", "end"))
        start = _address(areader, "start", version=4)
        end = _address(areader, "end", version=4) if areader.get("end") else start
        if end < start:
            raise areader.fail("end address is below start address")
        nat.address_start, nat.address_end = start, end
    port = element.find("port")
    if port is not None:
        preader = Reader(origin, port)
        preader.check_known(("start", "end"))
        start = preader.integer("start", 1, 65535)
        end = preader.integer("end", 1, 65535)
        if start is None or end is None:
            raise preader.fail("both 'start' and 'end' are required")
        if start >= end:
            raise preader.fail(f"port range {start}-{end}: start must be below end")
        nat.port_start, nat.port_end = start, end
    return nat


def _address(reader: Reader, attr: str, version: int | None = None):
    value = reader.require(attr)
    if "%" in value:  # Python takes 'fe80::1%eth0'; the zone id would reach dnsmasq's files verbatim
        raise reader.fail(f"attribute '{attr}': '{value}': an address with a zone id ('%') is not allowed here")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise reader.fail(f"attribute '{attr}': '{value}' is not an IP address") from None
    if version and address.version != version:
        raise reader.fail(f"attribute '{attr}': '{value}' is not an IPv{version} address")
    return address


def _ip(origin: str, element: etree._Element) -> IPDef:
    reader = Reader(origin, element)
    reader.check_known(("address", "netmask", "prefix", "family", "localPtr"), ("dhcp", "tftp"))
    family = reader.get("family", "ipv4")
    if family not in ("ipv4", "ipv6"):
        raise reader.fail(f"attribute 'family': '{family}' must be ipv4 or ipv6")
    version = 4 if family == "ipv4" else 6
    address = _address(reader, "address", version)
    netmask = reader.get("netmask")
    if netmask and reader.get("prefix"):
        raise reader.fail("give either 'netmask' or 'prefix', not both")
    if netmask:
        if version == 6:
            raise reader.fail("IPv6 addresses take 'prefix', not 'netmask'")
        prefix = _netmask_prefix(reader, netmask)
    else:
        default = 24 if version == 4 else 64
        prefix = reader.integer("prefix", 1, 32 if version == 4 else 128, default)
    ip = IPDef(address=address, prefix=prefix, family=family, netmask_form=bool(netmask))
    if address == ip.network.network_address and prefix < (32 if version == 4 else 128):
        raise reader.fail(f"'{address}' is the network address of {ip.network}, not a host address")
    ip.local_ptr = _yes_no_or_none(reader, "localPtr")
    if ip.local_ptr and ip.ptr_domain is None:
        raise reader.fail(
            f"attribute 'localPtr': the reverse zone of {ip.network} cannot be named: its prefix must be a "
            f"multiple of {8 if version == 4 else 4} for dnsmasq's local=/ZONE/; remove localPtr or change the prefix"
        )
    tftp = element.find("tftp")
    if tftp is not None:
        treader = Reader(origin, tftp)
        treader.check_known(("root",))
        if version != 4:
            raise treader.fail("TFTP is only supported on IPv4")
        ip.tftp_root = check_absolute_path(treader.require("root"), "<tftp root>")
    dhcp = element.find("dhcp")
    if dhcp is not None:
        _dhcp(origin, dhcp, ip, version)
    return ip


def _netmask_prefix(reader: Reader, netmask: str) -> int:
    """Prefix length of a dotted netmask: contiguous ones, then zeros (not a hostmask)."""
    try:
        mask = int(ipaddress.IPv4Address(netmask))
    except ValueError:
        raise reader.fail(f"attribute 'netmask': '{netmask}' is not a netmask") from None
    inverse = ~mask & 0xFFFFFFFF
    if inverse & (inverse + 1) or mask == 0:
        raise reader.fail(f"attribute 'netmask': '{netmask}' is not a netmask (ones must come first)")
    return 32 - inverse.bit_length()


def _dhcp(origin: str, element: etree._Element, ip: IPDef, version: int) -> None:
    Reader(origin, element).check_known((), ("range", "host", "bootp"))
    for child in element:
        reader = Reader(origin, child)
        if child.tag == "range":
            reader.check_known(("start", "end"), ("lease",))
            start, end = _address(reader, "start", version), _address(reader, "end", version)
            for attr, value in (("start", start), ("end", end)):
                if value not in ip.network:
                    raise reader.fail(f"attribute '{attr}': {value} is outside the network {ip.network}")
            if end < start:
                raise reader.fail("range end is below range start")
            ip.ranges.append(DhcpRange(start, end, _lease(origin, child)))
        elif child.tag == "host":
            reader.check_known(("mac", "ip", "name", "id"), ("lease",))
            mac = reader.get("mac")
            address = _address(reader, "ip", version) if reader.get("ip") else None
            if address is not None and address not in ip.network:
                raise reader.fail(f"attribute 'ip': {address} is outside the network {ip.network}")
            ip.hosts.append(
                DhcpHost(
                    mac=check_mac(mac, "<host mac>") if mac else None,
                    ip=address,
                    name=_hostname(reader.get("name"), "<host name>"),
                    id=_duid(reader, version),
                    lease=_lease(origin, child),
                )
            )
        elif child.tag == "bootp":
            reader.check_known(("file", "server"))
            ip.bootp_file = check_conf_value(reader.require("file"), "<bootp file>")
            server = reader.get("server")
            ip.bootp_server = _bootp_server(reader, server) if server is not None else None


def _duid(reader: Reader, version: int) -> str | None:
    """<host id>: a DHCPv6 client's DUID, of one of libvirt's four forms."""
    duid = reader.get("id")
    if duid is None:
        return None
    if version != 6:
        raise reader.fail(
            "attribute 'id' (a DHCPv6 DUID) is only for hosts of an IPv6 <ip>: an IPv4 host is matched by 'mac'"
        )
    if reader.get("mac") is not None:
        raise reader.fail("give either attribute 'id' or 'mac', not both")
    if not _DUID.fullmatch(duid):
        raise reader.fail(
            f"attribute 'id': '{duid}' is not a DUID (colon-separated hex octets of type 1 to 4, e.g. "
            "'0:3:0:1:52:54:0:12:34:56')"
        )
    return duid.lower()


def _lease(origin: str, owner: etree._Element) -> Lease | None:
    """<lease expiry unit> of a range or host: seconds, minutes (the default) or hours; 0 is
    infinite; at least two minutes otherwise, and at most what dnsmasq can count."""
    elements = owner.findall("lease")
    if not elements:
        return None
    if len(elements) > 1:
        raise Reader(origin, elements[1]).fail(f"only one <lease> is allowed in <{owner.tag}>")
    reader = Reader(origin, elements[0])
    reader.check_known(("expiry", "unit"))
    unit = reader.get("unit", "minutes")
    if unit not in LEASE_UNITS:
        raise reader.fail(f"attribute 'unit': '{unit}' must be seconds, minutes or hours")
    expiry = reader.integer("expiry", 0, 2**64 - 1)  # libvirt's unsignedLong
    if expiry is None:
        raise reader.fail("attribute 'expiry' is required")
    seconds = expiry * LEASE_UNITS[unit]
    if 0 < seconds < LEASE_MIN_SECONDS:
        raise reader.fail(
            f"attribute 'expiry': {seconds} seconds is below the 2 minutes a lease lasts at least (0 means infinite)"
        )
    if seconds > LEASE_MAX_SECONDS:
        raise reader.fail(
            f"attribute 'expiry': {expiry} {unit} is more than dnsmasq can count "
            f"(at most {LEASE_MAX_SECONDS // LEASE_UNITS[unit]} {unit}; 0 means infinite)"
        )
    return Lease(expiry, unit if expiry else None)


def _bootp_server(reader: Reader, server: str) -> str:
    """A host name or an IPv4 address, as libvirt's schema has it."""
    try:
        return str(ipaddress.IPv4Address(server))
    except ValueError:
        pass
    try:
        return check_hostname(server, "<bootp server>")
    except VirtfwError:
        raise reader.fail(f"attribute 'server': '{server}' is neither an IPv4 address nor a host name") from None


def _check_consistency(origin: str, net: Network) -> None:
    seen: list = []
    for ip in net.ips:
        for other in seen:
            if ip.network.version == other.version and ip.network.overlaps(other):
                raise VirtfwError(f"{origin}: <ip> networks {other} and {ip.network} overlap")
        seen.append(ip.network)
    if sum(1 for ip in net.ips if ip.family == "ipv4" and ip.has_dhcp) > 1:
        raise VirtfwError(f"{origin}: only one IPv4 <ip> may have <dhcp>")
    if sum(1 for ip in net.ips if ip.family == "ipv6" and ip.has_dhcp) > 1:
        raise VirtfwError(f"{origin}: only one IPv6 <ip> may have <dhcp>")


def format_network(net: Network) -> str:
    """Format back to libvirt's XML; parse(format(x)) == x."""
    root = etree.Element("network")
    if net.ipv6_nogw:
        root.set("ipv6", "yes")
    if net.trust_guest_rx_filters is not None:
        root.set("trustGuestRxFilters", "yes" if net.trust_guest_rx_filters else "no")
    etree.SubElement(root, "name").text = net.name
    etree.SubElement(root, "uuid").text = net.uuid
    if net.forward.mode != "none":
        forward = etree.SubElement(root, "forward", mode=net.forward.mode)
        if net.forward.dev:
            forward.set("dev", net.forward.dev)
            etree.SubElement(forward, "interface", dev=net.forward.dev)  # as libvirt writes it
        if net.forward.nat:
            _format_nat(forward, net.forward.nat)
    bridge = etree.SubElement(root, "bridge")
    if net.bridge.name:
        bridge.set("name", net.bridge.name)
    bridge.set("stp", "on" if net.bridge.stp else "off")
    bridge.set("delay", str(net.bridge.delay))
    if net.bridge.mac_table_manager:
        bridge.set("macTableManager", net.bridge.mac_table_manager)
    if net.bridge.zone:
        bridge.set("zone", net.bridge.zone)
    if net.mac:
        etree.SubElement(root, "mac", address=net.mac)
    if net.domain:
        domain = etree.SubElement(root, "domain", name=net.domain)
        if net.domain_local_only:
            domain.set("localOnly", net.domain_local_only)
        if net.domain_register:
            domain.set("register", net.domain_register)
    for text in net.extra:
        root.append(etree.fromstring(text))
    for ip in net.ips:
        _format_ip(root, ip)
    etree.indent(root, space="  ")
    return etree.tostring(root, encoding="unicode") + "\n"


def _format_nat(forward: etree._Element, nat: Nat) -> None:
    element = etree.SubElement(forward, "nat")
    if nat.ipv6:
        element.set("ipv6", "yes")
    if nat.address_start:
        etree.SubElement(element, "address", start=str(nat.address_start), end=str(nat.address_end))
    if nat.port_start:
        etree.SubElement(element, "port", start=str(nat.port_start), end=str(nat.port_end))


def _format_ip(root: etree._Element, ip: IPDef) -> None:
    element = etree.SubElement(root, "ip")
    if ip.family == "ipv6":
        element.set("family", "ipv6")
    element.set("address", str(ip.address))
    if ip.netmask_form:
        element.set("netmask", str(ip.network.netmask))
    else:
        element.set("prefix", str(ip.prefix))
    if ip.local_ptr is not None:
        element.set("localPtr", "yes" if ip.local_ptr else "no")
    if ip.tftp_root:
        etree.SubElement(element, "tftp", root=ip.tftp_root)
    if ip.ranges or ip.hosts or ip.bootp_file:
        dhcp = etree.SubElement(element, "dhcp")
        for rng in ip.ranges:
            _format_lease(etree.SubElement(dhcp, "range", start=str(rng.start), end=str(rng.end)), rng.lease)
        for host in ip.hosts:
            attrs = {
                k: str(v) for k, v in (("mac", host.mac), ("id", host.id), ("name", host.name), ("ip", host.ip)) if v
            }
            _format_lease(etree.SubElement(dhcp, "host", **attrs), host.lease)
        if ip.bootp_file:
            bootp = etree.SubElement(dhcp, "bootp", file=ip.bootp_file)
            if ip.bootp_server:
                bootp.set("server", ip.bootp_server)


def _format_lease(owner: etree._Element, lease: Lease | None) -> None:
    """<lease expiry unit>, as libvirt writes it (an infinite one without a unit)."""
    if lease is None:
        return
    element = etree.SubElement(owner, "lease", expiry=str(lease.expiry))
    if lease.expiry and lease.unit:
        element.set("unit", lease.unit)
