"""Each standard network filter virtfw ships (etc/nwfilter) instantiates on a port.

On both backends, in a namespace with a bridge and a guest port: a binding of the filter
is created with ``nwfilter-binding-create``, installs rules, and
``nwfilter-binding-delete`` restores the ruleset exactly. The filters' names, chains,
variables and rules are checked in ``tests/unit/test_shipped_filters.py`` (which also
asserts that the shipped files are exactly the standard set).
"""

from __future__ import annotations

import re
import uuid

import pytest
from helpers.cli import Cli
from helpers.nsutil import ROOT, filter_ruleset, netns

BACKENDS = ("nftables", "iptables")
SHIPPED_NAMES = sorted(path.stem for path in (ROOT / "etc" / "nwfilter").glob("*.xml"))

GUEST_MAC = "52:54:00:5a:01:02"
PARAMS = {
    "IP": "10.77.0.5",
    "IPV6": "fd00:77::5",
    "GATEWAY_MAC": "52:54:00:5a:00:01",
}
DHCPSERVER = {"allow-dhcp-server": "10.77.0.1", "allow-dhcpv6-server": "fd00:77::1"}


def _binding_xml(port: str, name: str) -> str:
    params = dict(PARAMS)
    if name in DHCPSERVER:
        params["DHCPSERVER"] = DHCPSERVER[name]
    lines = "\n".join(f"    <parameter name='{k}' value='{v}'/>" for k, v in params.items())
    return (
        "<filterbinding>\n"
        f"  <owner><name>shipped-{name}</name><uuid>{uuid.uuid4()}</uuid></owner>\n"
        f"  <portdev name='{port}'/>\n"
        f"  <mac address='{GUEST_MAC}'/>\n"
        f"  <filterref filter='{name}'>\n{lines}\n  </filterref>\n"
        "</filterbinding>\n"
    )


@pytest.fixture(scope="module", params=BACKENDS)
def port_ns(request, tmp_path_factory):
    """One namespace per backend with a bridge and a guest port (vnet0) on it."""
    with netns("vfwsf") as ns:
        ns.sh("ip", "link", "add", "vfwsfbr0", "type", "bridge", "stp_state", "0")
        ns.sh("ip", "link", "add", "vnet0", "type", "veth", "peer", "name", "vnet0p")
        ns.sh("ip", "link", "set", "vnet0", "master", "vfwsfbr0")
        for dev in ("vfwsfbr0", "vnet0", "vnet0p"):
            ns.sh("ip", "link", "set", dev, "up")
        yield request.param, Cli(tmp_path_factory.mktemp(f"bind-{request.param}"), ns, request.param)


def _bindings(cli) -> str:
    return cli("nwfilter-binding-list").stdout


@pytest.mark.netns
@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_each_shipped_filter_instantiates_and_is_removed(port_ns, name, tmp_path):
    backend, cli = port_ns
    ns = cli.ns
    before = filter_ruleset(ns, backend)
    xml = tmp_path / f"binding-{name}.xml"
    xml.write_text(_binding_xml("vnet0", name))
    proc = cli("nwfilter-binding-create", str(xml), check=False)
    try:
        assert proc.returncode == 0, f"nwfilter-binding-create ({name}, {backend}) failed: {proc.stderr.strip()}"
        assert re.search(r"(^|\s)vnet0(\s|$)", _bindings(cli), re.MULTILINE), "binding not listed"
        assert filter_ruleset(ns, backend) != before, f"binding of {name} installed no rules"
    finally:
        deleted = cli("nwfilter-binding-delete", "vnet0", check=False)
    assert deleted.returncode == 0, f"nwfilter-binding-delete failed: {deleted.stderr.strip()}"
    assert not re.search(r"(^|\s)vnet0(\s|$)", _bindings(cli), re.MULTILINE), "binding still listed after delete"
    after = filter_ruleset(ns, backend)
    if after != before:
        import difflib

        diff = "\n".join(difflib.unified_diff(before.splitlines(), after.splitlines(), "before", "after", lineterm=""))
        pytest.fail(f"binding-delete of {name} did not restore the ruleset ({backend}):\n{diff}", pytrace=False)
