"""``reload`` of networks whose ruleset is intact changes nothing: no table, chain or rule is re-created, so
handles and counters stay as they were (nftables: ``nft -a list ruleset`` byte for byte;
iptables: ``iptables-save -c`` with the counters a packet made). Anything out of place
(a rule of ours deleted, a foreign rule added to our chain) still makes it rebuild."""

from __future__ import annotations

import re

import pytest
from helpers.nsutil import BACKENDS, Virtfw, define_second, netns

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
