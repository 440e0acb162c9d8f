"""The <dns> and <dnsmasq:options> settings are parsed into the model once, at XML
parse time; dnsmasq's configuration is made from the model alone."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from virtfw.errors import VirtfwError
from virtfw.net import dnsmasq
from virtfw.net.model import Dns, DnsHost
from virtfw.net.xml import format_network, parse_network

NS = "xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'"


def network(body: str) -> str:
    return f"<network {NS}><name>n</name><bridge name='virbr9'/>{body}<ip address='10.9.0.1' prefix='24'/></network>"


def conf(text: str) -> str:
    net = parse_network(text, "n.xml")
    return dnsmasq.render_config(net, dnsmasq.files_for(Path("/state"), net.name))[Path("/state/dnsmasq/n.conf")]


def test_dns_hosts_and_options_are_model_fields() -> None:
    net = parse_network(
        network(
            "<dns><host ip='10.9.0.7'><hostname>a</hostname><hostname>b</hostname></host>"
            "<host ip='fd00::7'><hostname>c</hostname></host></dns>"
            "<dnsmasq:options><dnsmasq:option value='log-queries'/><dnsmasq:option value='x=1'/></dnsmasq:options>"
        ),
        "n.xml",
    )
    assert net.dns == Dns(True, [DnsHost(IPv4Address("10.9.0.7"), ["a", "b"]), DnsHost(IPv6Address("fd00::7"), ["c"])])
    assert net.dnsmasq_options == ["log-queries", "x=1"]
    assert parse_network(format_network(net), "again") == net  # the elements still round-trip through extra


def test_no_dns_element() -> None:
    net = parse_network(network(""), "n.xml")
    assert net.dns is None and net.dnsmasq_options == []
    assert not dnsmasq.needs_dnsmasq(net)


def test_disabled_dns_stays_disabled_next_to_dnsmasq_options() -> None:
    """enable='no' gives port=0 wherever the options element stands (as in libvirt)."""
    text = network("<dns enable='no'/><dnsmasq:options><dnsmasq:option value='log-queries'/></dnsmasq:options>")
    assert "port=0\n" in conf(text)
    assert not dnsmasq.needs_dnsmasq(parse_network(text, "n.xml"))


def test_dnsmasq_options_alone_start_dnsmasq() -> None:
    text = network("<dnsmasq:options><dnsmasq:option value='log-queries'/></dnsmasq:options>")
    assert dnsmasq.needs_dnsmasq(parse_network(text, "n.xml"))
    assert conf(text).splitlines()[-1] == "log-queries"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("<dns><host ip='nope'><hostname>a</hostname></host></dns>", "n.xml: <host ip='nope'>: attribute 'ip'"),
        ("<dnsmasq:options><dnsmasq:option value=''/></dnsmasq:options>", "n.xml: <dnsmasq:option value=''>"),
    ],
)
def test_bad_dns_settings_are_refused_at_parse_time(body: str, message: str) -> None:
    with pytest.raises(VirtfwError, match=message):
        parse_network(network(body), "n.xml")
