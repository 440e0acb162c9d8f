"""A valid network document and its invalid variants, each with what its error must name.

Shared by the XML unit tests (``tests/unit/test_network_xml.py``: the parser refuses each
case precisely) and the command-line tests (the CLI refuses them the same way, changing
nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

#: A valid NAT network that every invalid case below changes in exactly one place.
GOOD = """\
<network>
  <name>testnet</name>
  <bridge name="vtest0"/>
  <forward mode="nat"/>
  <ip address="192.168.100.1" netmask="255.255.255.0">
    <dhcp>
      <range start="192.168.100.2" end="192.168.100.254"/>
    </dhcp>
  </ip>
</network>
"""

IPV6_IP = '<ip family="ipv6" address="2001:db8:1::1" prefix="64"/>'


def variant(old: str, new: str, base: str = GOOD) -> str:
    """BASE with the one fragment OLD replaced by NEW (OLD must be there exactly once)."""
    assert base.count(old) == 1, f"{old!r} is not exactly once in the template"
    return base.replace(old, new)


def with_ip(extra: str) -> str:
    """GOOD with one more element after its <ip>."""
    return variant("  </ip>\n", "  </ip>\n  " + extra + "\n")


def with_dhcp(extra: str) -> str:
    """GOOD with one more element inside its <dhcp>."""
    return variant("    </dhcp>", "      " + extra + "\n    </dhcp>")


def with_bridge(name: str) -> str:
    """GOOD with <bridge name=NAME>, NAME quoted for XML (it may hold quotes)."""
    return variant('<bridge name="vtest0"/>', f"<bridge name={quoteattr(name)}/>")


def with_name(name: str) -> str:
    return variant("<name>testnet</name>", f"<name>{name}</name>")


def with_nat_port(start: str, end: str) -> str:
    return variant(
        '<forward mode="nat"/>', f'<forward mode="nat"><nat><port start="{start}" end="{end}"/></nat></forward>'
    )


def with_ip_attrs(attrs: str) -> str:
    return variant('<ip address="192.168.100.1" netmask="255.255.255.0">', f"<ip {attrs}>")


def with_range(start: str, end: str) -> str:
    return variant('<range start="192.168.100.2" end="192.168.100.254"/>', f'<range start="{start}" end="{end}"/>')


EXTERNAL_ENTITY = '<?xml version="1.0"?>\n<!DOCTYPE network [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n' + with_name(
    "&x;"
)

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE network [\n  <!ENTITY lol0 "lol">\n'
    + "".join(f'  <!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">\n' for i in range(1, 10))
    + "]>\n"
    + variant("<name>testnet</name>", "<name>testnet</name>\n  <description>&lol9;</description>")
)


@dataclass(frozen=True)
class Invalid:
    """An invalid network document and what its error message must mention.

    ``needles`` are the element (``<ip``), the attribute and the offending value,
    where the case has them; every one must occur in the message.
    """

    id: str
    xml: str
    needles: tuple[str, ...]


INVALID: tuple[Invalid, ...] = (
    # values that would write dnsmasq configuration of their own (a program run as root)
    Invalid(
        "tftp-root-newline",
        variant(
            '<ip address="192.168.100.1" netmask="255.255.255.0">',
            '<ip address="192.168.100.1" netmask="255.255.255.0">\n    <tftp root="/srv/tftp&#10;dhcp-script=/tmp/x.sh"/>',
        ),
        ("tftp root", "dhcp-script"),
    ),
    Invalid("bootp-file-comma", with_dhcp('<bootp file="pxe.0,,10.0.0.1"/>'), ("bootp file", "pxe.0,,10.0.0.1")),
    Invalid("bootp-server-newline", with_dhcp('<bootp file="p" server="x&#10;y"/>'), ("<bootp", "server")),
    Invalid("range-zone-id", with_range("192.168.100.2%x", "192.168.100.254"), ("<range", "start", "zone id")),
    Invalid("bridge-name-newline", with_bridge("vte&#10;st0"), ("bridge",)),
    # addresses
    Invalid(
        "ipv4-address-octet",
        with_ip_attrs('address="192.168.100.300" netmask="255.255.255.0"'),
        ("<ip", "address", "192.168.100.300"),
    ),
    Invalid(
        "ipv4-address-word", with_ip_attrs('address="gateway" netmask="255.255.255.0"'), ("<ip", "address", "gateway")
    ),
    Invalid(
        "ipv6-address",
        with_ip(IPV6_IP.replace("2001:db8:1::1", "2001:db8:1::zz")),
        ("<ip", "address", "2001:db8:1::zz"),
    ),
    Invalid(
        "ipv6-family-ipv4-address",
        with_ip('<ip family="ipv6" address="10.9.9.1" prefix="64"/>'),
        ("<ip", "address", "10.9.9.1"),
    ),
    Invalid(
        "ipv4-ipv6-address", with_ip_attrs('address="2001:db8:5::1" prefix="64"'), ("<ip", "address", "2001:db8:5::1")
    ),
    Invalid(
        "netmask-noncontiguous",
        with_ip_attrs('address="192.168.100.1" netmask="255.0.255.0"'),
        ("<ip", "netmask", "255.0.255.0"),
    ),
    Invalid(
        "netmask-hostmask",
        with_ip_attrs('address="192.168.100.1" netmask="0.0.0.255"'),
        ("<ip", "netmask", "0.0.0.255"),
    ),
    Invalid(
        "netmask-octet",
        with_ip_attrs('address="192.168.100.1" netmask="255.255.255.256"'),
        ("<ip", "netmask", "255.255.255.256"),
    ),
    Invalid("prefix-33", with_ip_attrs('address="192.168.100.1" prefix="33"'), ("<ip", "prefix", "33")),
    Invalid(
        "prefix-word", with_ip_attrs('address="192.168.100.1" prefix="twentyfour"'), ("<ip", "prefix", "twentyfour")
    ),
    Invalid("ipv6-prefix-129", with_ip(IPV6_IP.replace('"64"', '"129"')), ("<ip", "prefix", "129")),
    # DHCP
    Invalid("dhcp-range-outside", with_range("192.168.101.2", "192.168.101.254"), ("<range", "start", "192.168.101.2")),
    Invalid(
        "dhcp-range-end-outside", with_range("192.168.100.2", "192.168.101.10"), ("<range", "end", "192.168.101.10")
    ),
    Invalid(
        "dhcp-range-end-below-start",
        with_range("192.168.100.200", "192.168.100.10"),
        ("<range", "end", "192.168.100.10"),
    ),
    Invalid(
        "dhcp-range-bad-address", with_range("192.168.100.2", "192.168.100.999"), ("<range", "end", "192.168.100.999")
    ),
    Invalid(
        "dhcp-host-bad-mac",
        with_dhcp('<host mac="52:54:00:zz:00:01" name="vm1" ip="192.168.100.10"/>'),
        ("<host", "mac", "52:54:00:zz:00:01"),
    ),
    Invalid(
        "dhcp-host-short-mac",
        with_dhcp('<host mac="52:54:00:00:01" name="vm1" ip="192.168.100.10"/>'),
        ("<host", "mac", "52:54:00:00:01"),
    ),
    Invalid(
        "dhcp-host-ip-outside",
        with_dhcp('<host mac="52:54:00:00:00:01" name="vm1" ip="10.1.1.1"/>'),
        ("<host", "ip", "10.1.1.1"),
    ),
    # forward and NAT
    Invalid("nat-port-start-equals-end", with_nat_port("2000", "2000"), ("<port", "start", "end", "2000")),
    Invalid("nat-port-start-above-end", with_nat_port("3000", "2000"), ("<port", "start", "end", "3000", "2000")),
    Invalid("nat-port-end-65536", with_nat_port("1024", "65536"), ("<port", "end", "65536")),
    Invalid("nat-port-start-0", with_nat_port("0", "1000"), ("<port", "start", "0")),
    Invalid(
        "forward-mode-unknown",
        variant('<forward mode="nat"/>', '<forward mode="bogus"/>'),
        ("<forward", "mode", "bogus"),
    ),
    Invalid(
        "forward-dev-shell",
        variant('<forward mode="nat"/>', '<forward mode="nat" dev="eth0;reboot"/>'),
        ("forward", "dev", "eth0;reboot"),
    ),
    # unknown elements and attributes
    Invalid(
        "unknown-element",
        variant("<name>testnet</name>", "<name>testnet</name>\n  <frobnicate/>"),
        ("frobnicate", "<network>"),
    ),
    Invalid(
        "unknown-element-in-dhcp", with_dhcp('<rnage start="192.168.100.2" end="192.168.100.9"/>'), ("rnage", "<dhcp>")
    ),
    Invalid(
        "unknown-attribute-bridge",
        variant('<bridge name="vtest0"/>', '<bridge name="vtest0" colour="red"/>'),
        ("<bridge", "colour"),
    ),
    Invalid(
        "unknown-attribute-ip",
        with_ip_attrs('address="192.168.100.1" netmask="255.255.255.0" gateway="192.168.100.254"'),
        ("<ip", "gateway"),
    ),
    # names
    Invalid("name-missing", variant("  <name>testnet</name>\n", ""), ("<name>",)),
    Invalid("name-empty", with_name(" "), ("<name>",)),
    Invalid("name-slash", with_name("a/b"), ("name", "a/b")),
    Invalid("name-dotdot", with_name("../etc"), ("name", "../etc")),
    Invalid("name-space", with_name("my net"), ("name", "my net")),
    Invalid("name-semicolon", with_name("net;reboot"), ("name", "net;reboot")),
    Invalid("bridge-16-chars", with_bridge("vtest0123456789x"), ("bridge", "name", "vtest0123456789x")),
    Invalid("bridge-semicolon", with_bridge("vb;reboot"), ("bridge", "name", "vb;reboot")),
    Invalid("bridge-double-quote", with_bridge('vb"x'), ("bridge", "name", 'vb"x')),
    Invalid("bridge-brace", with_bridge("vb{x}"), ("bridge", "name", "vb{x}")),
    Invalid("bridge-space", with_bridge("vb x"), ("bridge", "name", "vb x")),
    Invalid("bridge-command-substitution", with_bridge("vb$(id)"), ("bridge", "name", "vb$(id)")),
    Invalid("bridge-star", with_bridge("vb*"), ("bridge", "name", "vb*")),
    Invalid(
        "mac-address",
        variant('<bridge name="vtest0"/>', '<bridge name="vtest0"/>\n  <mac address="52:54:00:xx:00:01"/>'),
        ("<mac", "address", "52:54:00:xx:00:01"),
    ),
    Invalid(
        "uuid",
        variant("<name>testnet</name>", "<name>testnet</name>\n  <uuid>not-a-uuid</uuid>"),
        ("<uuid>", "not-a-uuid"),
    ),
    # consistency
    Invalid(
        "ipv4-networks-overlap",
        with_ip('<ip address="192.168.100.129" prefix="25"/>'),
        ("<ip", "192.168.100.0/24", "192.168.100.128/25"),
    ),
    Invalid(
        "ipv6-networks-overlap",
        with_ip(IPV6_IP + '\n  <ip family="ipv6" address="2001:db8:1::2" prefix="48"/>'),
        ("<ip", "2001:db8:1::/64", "2001:db8:1::/48"),
    ),
    # libvirt fields virtfw cannot honour: refused, saying so and what to do (issue 11)
    Invalid(
        "network-connections",
        variant("<network>", '<network connections="2">'),
        ("<network", "connections", "read-only", "--inactive"),
    ),
    Invalid(
        "forward-managed",
        variant('<forward mode="nat"/>', '<forward mode="nat" managed="yes"/>'),
        ("<forward", "managed", "hostdev", "remove it"),
    ),
    Invalid(
        "forward-pf",
        variant('<forward mode="nat"/>', '<forward mode="nat"><pf dev="eth1"/></forward>'),
        ("<pf dev='eth1'>", "physical function", "not supported in mode 'nat'", "dev="),
    ),
    Invalid(
        "forward-pci-address",
        variant(
            '<forward mode="nat"/>',
            '<forward mode="route"><address type="pci" domain="0x0000" bus="0x04" slot="0x00" function="0x1"/>'
            "</forward>",
        ),
        ("<address type='pci'", "PCI devices", "not supported in mode 'route'"),
    ),
    Invalid(
        "forward-driver",
        variant('<forward mode="nat"/>', '<forward mode="nat"><driver name="vfio"/></forward>'),
        ("<driver name='vfio'>", "PCI devices", "not supported in mode 'nat'"),
    ),
    Invalid(
        "forward-interface-connections",
        variant('<forward mode="nat"/>', '<forward mode="nat"><interface dev="eth0" connections="1"/></forward>'),
        ("<interface", "connections", "read-only"),
    ),
    Invalid(
        "forward-interface-two",
        variant(
            '<forward mode="nat"/>', '<forward mode="nat"><interface dev="eth0"/><interface dev="eth1"/></forward>'
        ),
        ("<interface dev='eth1'>", "only one forward interface"),
    ),
    Invalid(
        "forward-interface-mismatch",
        variant('<forward mode="nat"/>', '<forward mode="nat" dev="eth0"><interface dev="eth1"/></forward>'),
        ("<interface dev='eth1'>", "must match", "eth0"),
    ),
    Invalid(
        "forward-interface-bad-name",
        variant('<forward mode="nat"/>', '<forward mode="nat"><interface dev="eth0;x"/></forward>'),
        ("<forward><interface dev>", "eth0;x", "not a valid interface name"),
    ),
    Invalid(
        "forward-interface-no-dev",
        variant('<forward mode="nat"/>', '<forward mode="nat"><interface/></forward>'),
        ("<interface>", "'dev' is required"),
    ),
    Invalid(
        "forward-open-dev",
        variant('<forward mode="nat"/>', '<forward mode="open" dev="eth0"/>'),
        ("<forward", "mode 'open'", "route"),
    ),
    Invalid(
        "forward-open-interface",
        variant('<forward mode="nat"/>', '<forward mode="open"><interface dev="eth0"/></forward>'),
        ("<forward", "mode 'open'"),
    ),
    Invalid(
        "bridge-zone-word",
        variant('<bridge name="vtest0"/>', '<bridge name="vtest0" zone="trusted;drop"/>'),
        ("<bridge", "zone", "firewalld zone name", "1-17 characters"),
    ),
    Invalid(
        "bridge-mac-table-manager-libvirt",
        variant('<bridge name="vtest0"/>', '<bridge name="vtest0" macTableManager="libvirt"/>'),
        ("<bridge", "macTableManager", "'libvirt' is not supported", "'kernel'"),
    ),
    Invalid(
        "bridge-mac-table-manager-word",
        variant('<bridge name="vtest0"/>', '<bridge name="vtest0" macTableManager="Kernel"/>'),
        ("<bridge", "macTableManager", "'Kernel'"),
    ),
    Invalid(
        "domain-register",
        variant('<bridge name="vtest0"/>', '<bridge name="vtest0"/>\n  <domain name="lab.test" register="yes"/>'),
        ("<domain", "register", "systemd-resolved", "resolvectl"),
    ),
    Invalid(
        "domain-register-word",
        variant('<bridge name="vtest0"/>', '<bridge name="vtest0"/>\n  <domain name="lab.test" register="true"/>'),
        ("<domain", "register", "'true'", "'yes' or 'no'"),
    ),
    Invalid(
        "trust-guest-rx-filters-word",
        variant("<network>", '<network trustGuestRxFilters="on">'),
        ("<network", "trustGuestRxFilters", "'on'"),
    ),
    Invalid(
        "local-ptr-word",
        with_ip_attrs('address="192.168.100.1" netmask="255.255.255.0" localPtr="1"'),
        ("<ip", "localPtr", "'1'"),
    ),
    Invalid(
        "local-ptr-prefix",
        with_ip_attrs('address="192.168.100.1" prefix="22" localPtr="yes"'),
        ("<ip", "localPtr", "192.168.100.0/22", "multiple of 8"),
    ),
    Invalid(
        "local-ptr-ipv6-prefix",
        with_ip('<ip family="ipv6" address="2001:db8:1::1" prefix="62" localPtr="yes"/>'),
        ("<ip", "localPtr", "multiple of 4"),
    ),
    Invalid(
        "lease-below-two-minutes",
        with_range("192.168.100.2", "192.168.100.254").replace(
            '254"/>', '254"><lease expiry="119" unit="seconds"/></range>'
        ),
        ("<lease", "expiry", "119 seconds", "2 minutes"),
    ),
    Invalid(
        "lease-one-minute-default-unit",
        with_dhcp('<host mac="52:54:00:ab:00:01" ip="192.168.100.10"><lease expiry="1"/></host>'),
        ("<lease", "expiry", "60 seconds", "2 minutes"),
    ),
    Invalid(
        "lease-beyond-dnsmasq",
        with_dhcp('<host mac="52:54:00:ab:00:01" ip="192.168.100.10"><lease expiry="596524" unit="hours"/></host>'),
        ("<lease", "expiry", "596524 hours", "at most 596523 hours"),
    ),
    Invalid(
        "lease-unit",
        with_dhcp('<host mac="52:54:00:ab:00:01" ip="192.168.100.10"><lease expiry="1" unit="days"/></host>'),
        ("<lease", "unit", "'days'", "seconds, minutes or hours"),
    ),
    Invalid(
        "lease-expiry-word",
        with_dhcp('<host mac="52:54:00:ab:00:01" ip="192.168.100.10"><lease expiry="1h"/></host>'),
        ("<lease", "expiry", "'1h'", "not an integer"),
    ),
    Invalid(
        "lease-expiry-missing",
        with_dhcp('<host mac="52:54:00:ab:00:01" ip="192.168.100.10"><lease unit="hours"/></host>'),
        ("<lease", "'expiry' is required"),
    ),
    Invalid(
        "lease-twice",
        with_dhcp('<host mac="52:54:00:ab:00:01" ip="192.168.100.10"><lease expiry="5"/><lease expiry="6"/></host>'),
        ("<lease expiry='6'>", "only one <lease>"),
    ),
    Invalid(
        "lease-unknown-attribute",
        with_dhcp('<host mac="52:54:00:ab:00:01" ip="192.168.100.10"><lease expiry="5" max="9"/></host>'),
        ("<lease", "unknown attribute 'max'"),
    ),
    Invalid(
        "host-id-on-ipv4",
        with_dhcp('<host id="0:3:0:1:52:54:0:0:0:1" ip="192.168.100.10"/>'),
        ("<host", "'id'", "IPv6", "'mac'"),
    ),
    Invalid(
        "host-id-and-mac",
        with_ip(
            '<ip family="ipv6" address="2001:db8:1::1" prefix="64"><dhcp>'
            '<host id="0:3:0:1:52:54:0:0:0:1" mac="52:54:00:00:00:01" ip="2001:db8:1::5"/></dhcp></ip>'
        ),
        ("<host", "'id' or 'mac'"),
    ),
    Invalid(
        "host-id-not-duid",
        with_ip(
            '<ip family="ipv6" address="2001:db8:1::1" prefix="64"><dhcp>'
            '<host id="0:9:1:2:3" ip="2001:db8:1::5"/></dhcp></ip>'
        ),
        ("<host", "attribute 'id'", "'0:9:1:2:3'", "not a DUID"),
    ),
    Invalid(
        "dns-disabled-with-records",
        variant(
            '<bridge name="vtest0"/>', '<bridge name="vtest0"/>\n  <dns enable="no"><txt name="t" value="v"/></dns>'
        ),
        ("<dns enable='no'>", "<txt>", "never be served"),
    ),
    # hostile or broken XML
    Invalid("doctype-external-entity", EXTERNAL_ENTITY, ("entity",)),
    Invalid("doctype-billion-laughs", BILLION_LAUGHS, ("entity",)),
    Invalid("undeclared-entity", with_name("&x;"), ("malformed", "line")),
    Invalid("malformed-unclosed", GOOD.replace("</network>", ""), ("malformed", "line")),
    Invalid("malformed-mismatched-tag", GOOD.replace("</ip>", "</ipp>"), ("malformed", "line")),
    Invalid("malformed-empty", "", ("malformed",)),
    Invalid("malformed-not-xml", "name = testnet\n", ("malformed", "line")),
    Invalid("root-not-network", "<domain><name>testnet</name></domain>\n", ("<network>", "<domain>")),
)
