"""``reload`` of networks and filter bindings whose ruleset is intact changes nothing: no table,
chain or rule is re-created, so handles and counters stay as they were (nftables: ``nft -a
list ruleset`` byte for byte; iptables: ``iptables-save -c``, ``ebtables-save -c`` with the
counters packets made). Anything out of place (a rule of ours deleted, a foreign rule added
to our chain, a definition edited by hand) still makes it rebuild."""

from __future__ import annotations

import json
import re
import time

import pytest
from helpers.nsutil import BACKENDS, Virtfw, add_port, define_second, netns, verify_problems

pytestmark = pytest.mark.netns

SEND = "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('192.168.122.2', 68))"


def live(vfw: Virtfw, backend: str) -> str:
    """nft's listing with handles (iptables-nft and ebtables-nft are in it too), and the
    counters of iptables-save, which legacy iptables keeps outside nft."""
    text = vfw.ns.sh("nft", "-a", "list", "ruleset")
    if backend == "iptables":
        text += vfw.ns.sh("iptables-save", "-c") + vfw.ns.sh("ip6tables-save", "-c")
    return text


COUNTER = re.compile(r"packets (\d+) bytes (\d+)|\[(\d+):(\d+)\]")


def without_dates(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


def assert_unchanged(before: str, after: str) -> None:
    """The same objects (handles, rules, order), each counter where it was or above: the
    namespace's own traffic (a router solicitation, say) may pass meanwhile, but nothing
    was re-created, which would have set them back to zero."""
    assert COUNTER.sub("C", after) == COUNTER.sub("C", before)
    figures = [tuple(int(x) for x in m.groups() if x is not None) for m in COUNTER.finditer(before)]
    later = [tuple(int(x) for x in m.groups() if x is not None) for m in COUNTER.finditer(after)]
    assert all(b <= a for old, new in zip(figures, later) for b, a in zip(old, new)), "a counter went back"


@pytest.mark.parametrize("backend", BACKENDS)
def test_reload_of_an_intact_ruleset_changes_nothing(tmp_path, backend) -> None:
    with netns("vfwR") as ns:
        vfw = Virtfw(ns, tmp_path, backend)
        define_second(vfw, tmp_path)
        vfw("net-start", "default")
        vfw("net-start", "second")
        ns.sh("python3", "-c", SEND)
        before = without_dates(live(vfw, backend))
        if backend == "iptables":
            assert "[1:29] -A VIRTFW_OUT -o virbr0 -p udp -m udp --dport 68 -j ACCEPT" in before, before
        state = sorted(p.read_text() for p in (vfw.state_dir / "networks").iterdir())
        vfw("reload")
        assert_unchanged(before, without_dates(live(vfw, backend)))
        assert sorted(p.read_text() for p in (vfw.state_dir / "networks").iterdir()) == state
        # a foreign rule in our chain is not intact: the rebuild takes it away
        if backend == "nftables":
            ns.sh("nft", "add", "rule", "ip", "virtfw_network", "guest_output", "accept")
        else:
            ns.sh("iptables", "-w", "-A", "VIRTFW_FWO", "-j", "ACCEPT")
        proc = vfw("verify", check=False)
        assert proc.returncode == 3 and "that virtfw did not add" in proc.stdout, proc.stdout
        vfw("reload")
        vfw("verify")
        assert without_dates(live(vfw, backend)) != before
        vfw("net-destroy", "second")
        vfw("net-destroy", "default")


# --------------------------------------------------------------------------- filter bindings

OWN = """<filter name='own' chain='root'>
<rule action='drop' direction='in' priority='500'><tcp dstportstart='23'/></rule></filter>"""
BINDING = (
    "<filterbinding><portdev name='{port}'/><mac address='52:54:00:00:00:0{n}'/>"
    "<filterref filter='{filter}'><parameter name='IP' value='192.168.122.{n}0'/></filterref></filterbinding>"
)
GUEST_SEND = (
    "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "[s.sendto(b'x', ('192.168.122.1', 9)) for _ in range(3)]"
)


def bindings_live(vfw: Virtfw, backend: str) -> str:
    """nft's listing with handles, and for iptables the counters of ebtables-save -c and
    iptables-save -c (those a guest's frames made)."""
    text = vfw.ns.sh("nft", "-a", "list", "ruleset")
    if backend == "iptables":
        text += vfw.ns.sh("ebtables-save", "-c") + vfw.ns.sh("iptables-save", "-c") + vfw.ns.sh("ip6tables-save", "-c")
    return without_dates(text)


def bound(vfw: Virtfw, tmp_path, guest_ns) -> None:
    """The default network, a guest on vnet0 (clean-traffic, its own MAC and IP) that sends a
    few frames through the bridge, and vnet1 with a filter of layer-3 rules."""
    ns = vfw.ns
    vfw("net-start", "default")
    (tmp_path / "own.xml").write_text(OWN)
    vfw("nwfilter-define", str(tmp_path / "own.xml"))
    ns.sh("ip", "link", "add", "vnet0", "type", "veth", "peer", "name", "eth0", "netns", guest_ns.name)
    ns.sh("ip", "link", "set", "vnet0", "master", "virbr0", "up")
    guest_ns.sh("ip", "link", "set", "eth0", "address", "52:54:00:00:00:01", "up")
    guest_ns.sh("ip", "address", "add", "192.168.122.10/24", "dev", "eth0")
    add_port(ns, "vnet1")
    for n, (port, filt) in enumerate([("vnet0", "clean-traffic"), ("vnet1", "own")], start=1):
        path = tmp_path / f"{port}.xml"
        path.write_text(BINDING.format(port=port, n=n, filter=filt))
        vfw("nwfilter-binding-create", str(path))
    deadline = time.monotonic() + 10  # the port forwards once the bridge's STP lets it
    while "forwarding" not in ns.sh("ip", "-d", "link", "show", "vnet0") and time.monotonic() < deadline:
        time.sleep(0.1)
    guest_ns.sh("python3", "-c", GUEST_SEND)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reload_of_intact_bindings_changes_nothing(tmp_path, backend) -> None:
    """Bindings whose rules are all in place, as their records say, are left as they are by
    reload: every handle (nft -a) and counter (ebtables-save -c, iptables-save -c) the same,
    no status file written; anything else (a definition edited by hand) is rendered anew."""
    with netns("vfwR") as ns, netns("vfwG") as guest:
        vfw = Virtfw(ns, tmp_path, backend)
        bound(vfw, tmp_path, guest)
        before = bindings_live(vfw, backend)
        if backend == "iptables":  # control: the guest's frames were counted by our rules
            hook = re.search(r"^\[(\d+):\d+\] -A PREROUTING -i vnet0 -j virtfw-I-vnet0$", before, re.MULTILINE)
            assert hook and int(hook.group(1)) > 0, before
        state = {p.name: p.read_text() for p in (vfw.state_dir / "bindings").iterdir()}
        vfw("reload")
        after = bindings_live(vfw, backend)
        assert_unchanged(before, after)  # handles, rules, order; each counter where it was or above
        assert {p.name: p.read_text() for p in (vfw.state_dir / "bindings").iterdir()} == state
        assert verify_problems(vfw) == []
        # a definition changed by hand is not intact: reload renders it anew
        (vfw.config_dir / "nwfilter" / "own.xml").write_text(
            (vfw.config_dir / "nwfilter" / "own.xml").read_text().replace("'23'", "'25'")
        )
        vfw("reload")
        changed = bindings_live(vfw, backend)
        assert changed != after and ("dport 25" in changed or "--dport 25" in changed or "sport 25" in changed)
        assert verify_problems(vfw) == []


@pytest.mark.parametrize("older", ["none", "json"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_status_files_without_digests_are_counted_and_rebuilt(tmp_path, backend, older) -> None:
    """A status file of a version without content digests loads: verify counts its rules,
    and reload installs the binding again (then with digests), as it did then. So does
    one whose nft digests are of nft's JSON (the versions before the text listing)."""
    if older == "json" and backend != "nftables":
        pytest.skip("only nftables records changed how their digests are taken")
    key = "listed" if backend == "nftables" else "digests"
    with netns("vfwR") as ns:
        vfw = Virtfw(ns, tmp_path, backend)
        add_port(ns, "vnet1")
        (tmp_path / "own.xml").write_text(OWN)
        vfw("nwfilter-define", str(tmp_path / "own.xml"))
        (tmp_path / "vnet1.xml").write_text(BINDING.format(port="vnet1", n=1, filter="own"))
        vfw("nwfilter-binding-create", str(tmp_path / "vnet1.xml"))
        path = vfw.state_dir / "bindings" / "vnet1.json"
        status = json.loads(path.read_text())
        assert key in status["firewall"], status
        digests = status["firewall"].pop(key)
        if older == "json":
            status["firewall"]["digests"] = {chain: "0123456789abcdef" for chain in digests}
        path.write_text(json.dumps(status))
        assert verify_problems(vfw) == []
        before = bindings_live(vfw, backend)
        vfw("reload")
        assert bindings_live(vfw, backend) != before  # rebuilt: not taken for intact
        assert key in json.loads(path.read_text())["firewall"]
        assert verify_problems(vfw) == []
        again = bindings_live(vfw, backend)
        vfw("reload")
        assert bindings_live(vfw, backend) == again
