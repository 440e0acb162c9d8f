"""Values from XML never write configuration or commands of their own.

Each value that reaches dnsmasq's files, an nft batch or a restore batch is checked
by type where it is read: a newline (or another character that ends a line, starts a
comment or splits a field in the target format) in any of them is refused with one
error, and what is accepted is written as one inert value. The walk below injects
each payload into each field and counts the pairs it tried.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from virtfw.errors import VirtfwError, one_line
from virtfw.filter.xml import parse_binding
from virtfw.names import check_hostname, check_ifname, check_mac, check_object_name
from virtfw.net.dnsmasq import files_for, render_config
from virtfw.net.xml import parse_network

PAYLOADS = {
    "newline": "&#10;dhcp-script=/tmp/x.sh",
    "carriage return": "&#13;dhcp-script=/tmp/x.sh",
    "hash": "#x",
    "comma": ",x",
    "semicolon": ";x",
    "quote": '"x',
    "apostrophe": "&apos;x",
    "percent": "%x",
    "NUL": "&#0;",  # lxml refuses it as XML: refused either way
    "tab": "&#9;x",
    "backslash": "\\x",
}

# name -> network XML with the field set to a good value + PAYLOAD ('{}' is where it goes)
FIELDS = {
    "tftp root": "<ip address='10.9.9.1' prefix='24'><tftp root='/srv/tftp{}'/></ip>",
    "bootp file": "<ip address='10.9.9.1' prefix='24'><dhcp><bootp file='pxelinux.0{}'/></dhcp></ip>",
    "bootp server": "<ip address='10.9.9.1' prefix='24'><dhcp><bootp file='p' server='10.9.9.2{}'/></dhcp></ip>",
    "dhcp range start": "<ip address='10.9.9.1' prefix='24'><dhcp><range start='10.9.9.2{}' end='10.9.9.9'/></dhcp></ip>",
    "dhcp range (IPv6 zone id)": "<ip family='ipv6' address='fd09::1' prefix='64'><dhcp>"
    "<range start='fd09::10{}' end='fd09::20'/></dhcp></ip>",
    "dhcp host ip": "<ip address='10.9.9.1' prefix='24'><dhcp><host mac='52:54:00:00:00:01' ip='10.9.9.5{}'/></dhcp></ip>",
    "dhcp host name": "<ip address='10.9.9.1' prefix='24'><dhcp><host mac='52:54:00:00:00:01' name='h{}'/></dhcp></ip>",
    "dhcp host mac": "<ip address='10.9.9.1' prefix='24'><dhcp><host mac='52:54:00:00:00:01{}' ip='10.9.9.5'/></dhcp></ip>",
    "dns host ip": "<dns><host ip='10.9.9.7{}'><hostname>h</hostname></host></dns><ip address='10.9.9.1' prefix='24'/>",
    "dns hostname": "<dns><host ip='10.9.9.7'><hostname>h{}</hostname></host></dns><ip address='10.9.9.1' prefix='24'/>",
    "domain": "<domain name='example.org{}'/><ip address='10.9.9.1' prefix='24'/>",
    "bridge name": "<bridge name='vfwinj0{}'/><ip address='10.9.9.1' prefix='24'/>",
    "network name": "",
}


#: The only (field, payload) pairs accepted: free-form paths and file names may hold these,
#: which dnsmasq reads as plain characters of the value.
INERT = {
    (field, payload) for field in ("tftp root", "bootp file") for payload in ("semicolon", "apostrophe", "percent")
}


def _network(field: str, payload: str) -> str:
    body = FIELDS[field].format(payload)
    name = f"inj{payload}" if field == "network name" else "inj"
    bridge = "" if field == "bridge name" else "<bridge name='vfwinj0'/>"
    return f"<network><name>{name}</name>{bridge}{body}</network>"


def _inert(text: str, payload: str) -> bool:
    """The payload stayed inside one value of one line (no line, comment or field of its own)."""
    return all(not any(ord(c) < 32 for c in line) for line in text.splitlines())


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("field", FIELDS)
def test_network_values_cannot_write_dnsmasq_configuration(field: str, payload: str, tmp_path: Path) -> None:
    xml = _network(field, PAYLOADS[payload])
    try:
        net = parse_network(xml, "test.xml")
    except VirtfwError as exc:
        assert "\n" not in one_line(exc)  # as the command line prints it
        return
    written = render_config(net, files_for(tmp_path, net.name))
    for text in written.values():
        assert "dhcp-script" not in text.replace(f"{PAYLOADS[payload]}", ""), text
        assert _inert(text, PAYLOADS[payload]), text
    # what was accepted must be a character dnsmasq reads as part of the value
    assert (field, payload) in INERT, (field, payload, written)


def test_the_walk_counts_its_pairs() -> None:
    print(f"injection walk: {len(FIELDS) * len(PAYLOADS)} (field, payload) pairs over dnsmasq's inputs")
    assert len(FIELDS) * len(PAYLOADS) >= 140


@pytest.mark.parametrize(
    ("check", "good"),
    [
        (check_ifname, "vnet0"),
        (check_object_name, "net"),
        (check_mac, "52:54:00:00:00:01"),
        (check_hostname, "h.example"),
    ],
)
@pytest.mark.parametrize("tail", ["\n", "\r\n", "\n;flush ruleset"])
def test_names_refuse_a_trailing_line_break(check, good: str, tail: str) -> None:
    """Python's '$' matches before a final newline: the patterns are matched whole."""
    assert check(good)
    with pytest.raises(VirtfwError):
        check(good + tail)


def test_an_error_is_one_line_whatever_the_value_holds() -> None:
    assert str(VirtfwError("bad 'a\nerror: forged'")) == "bad 'a\\nerror: forged'"


def test_a_port_name_with_a_newline_never_reaches_a_batch() -> None:
    xml = "<filterbinding><portdev name='vne&#10;t0'/><mac address='52:54:00:00:00:01'/><filterref filter='x'/></filterbinding>"
    with pytest.raises(VirtfwError, match="portdev|interface name"):
        parse_binding(xml, "binding.xml")
