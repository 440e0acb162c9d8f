"""``virtfw verify``: exit 0 when everything the status files record is in the kernel,
exit 3 with one line per missing or changed thing; ``reload`` repairs.

Every case runs in a namespace made here (``nsutil.netns``) with its own config and
state dirs; the rules deleted "by hand" are deleted inside that namespace. Each
"verify finds it" assertion follows a "verify is happy" control on the same setup, and
each deletion is checked to have happened, so no case passes because verify always
complains or the deletion did nothing.

Cases (both backends unless said):

* two network rules deleted by hand (nftables: ``nft delete rule ... handle N`` in
  our table; iptables: ``iptables -t nat -D VIRTFW_PRT 1`` and one in VIRTFW_FWX):
  verify exits 3 with exactly one line per deleted rule naming it (chain and rule
  text); ``verify --json`` holds the same facts (ok false, the same problems);
  ``reload`` brings back the exact ruleset and verify exits 0 again; (nftables) our
  whole table deleted: reported, and reload repairs it;
* a filter binding (clean-traffic on a dummy vnet0): a rule deleted from one of its
  chains makes verify exit 3 naming the port, and reload repairs it; the line also
  names the rule itself (its text). Should the iptables-mode filter backend be unable
  to verify (verify exits 1: no attribute 'verify'), the iptables cases xfail with its message;
* a foreign nft table whose forward chain has policy drop (nftables): reported, with a
  hint that says what to accept; the same table with policy accept is not;
* the network's dnsmasq killed: verify exits 3 naming it; net-destroy still cleans
  up; ``reload`` restarts it (verify exits 0 again).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.nsutil import Netns, add_port, firewall_snapshot, netns, ruleset, run
from helpers.topology import VirtfwRunner

pytestmark = pytest.mark.netns

BACKENDS = ("nftables", "iptables")
NFT_TABLE = "virtfw_network"

BINDING = (
    "<filterbinding><portdev name='vnet0'/><mac address='52:54:00:00:00:01'/>"
    "<filterref filter='clean-traffic'><parameter name='IP' value='192.168.122.5'/></filterref>"
    "</filterbinding>\n"
)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


class Host:
    def __init__(self, ns: Netns, tmp: Path, backend: str) -> None:
        self.ns = ns
        self.tmp = tmp
        self.backend = backend
        self.vfw = VirtfwRunner(ns, tmp, backend)

    def verify(self) -> tuple[int, list[str], dict]:
        """(exit status, problem lines of the text output, the --json document)."""
        text = self.vfw("verify", check=False)
        assert text.returncode in (0, 3), f"verify exit {text.returncode}:\n{text.stdout}\n{text.stderr}"
        assert "Traceback" not in text.stderr
        lines = [line for line in text.stdout.splitlines() if line.strip()]
        if text.returncode == 0:
            assert len(lines) == 1 and lines[0].startswith("OK"), f"verify exit 0 but printed:\n{text.stdout}"
            lines = []
        js = self.vfw("verify", "--json", check=False)
        assert js.returncode == text.returncode, f"verify --json exit {js.returncode}, text {text.returncode}"
        doc = json.loads(js.stdout)
        assert doc["ok"] is (text.returncode == 0), doc
        assert doc["problems"] == lines, f"--json problems differ from the text lines:\n{doc['problems']}\n{lines}"
        return text.returncode, lines, doc

    def assert_ok(self, when: str) -> None:
        """verify --json exits 0 with ok true and no problems (the text form is compared
        with --json wherever there are problems to print)."""
        proc = self.vfw("verify", "--json", check=False)
        if self.backend == "iptables" and proc.returncode == 1 and "attribute 'verify'" in proc.stderr:
            pytest.xfail(f"iptables filter backend cannot verify bindings yet: {proc.stderr.strip()}")
        assert proc.returncode == 0, f"verify {when}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        doc = json.loads(proc.stdout)
        assert doc["ok"] is True and doc["problems"] == [], f"verify {when}: {doc}"


@pytest.fixture
def host(tmp_path, backend) -> Iterator[Host]:
    with netns("vfwv") as ns:
        yield Host(ns, tmp_path, backend)


# --------------------------------------------------------------------------- network rules


def nft_rule(h: Host, chain: str, pattern: str) -> tuple[int, str]:
    """(handle, text without counters) of the one rule of ``chain`` in our ip table matching ``pattern``."""
    out = h.ns.sh("nft", "-a", "list", "chain", "ip", NFT_TABLE, chain)
    found = []
    for line in out.splitlines():
        m = re.match(r"\s*(.*?)\s*# handle (\d+)\s*$", line)
        text = re.sub(r" packets \d+ bytes \d+", "", m.group(1)) if m else ""
        if m and "{" not in text and re.search(pattern, text):
            found.append((int(m.group(2)), text))
    assert len(found) == 1, f"expected one rule matching {pattern!r} in {chain}:\n{out}"
    return found[0]


def delete_network_rules(h: Host) -> list[tuple[str, ...]]:
    """Delete two rules of the network by hand; for each, the words its problem line must hold."""
    ns = h.ns
    if h.backend == "nftables":
        # the plain masquerade (not the tcp/udp port-range ones) and the bridge-to-itself accept
        masq, _ = nft_rule(
            h, "guest_nat", r"^ip saddr 192\.168\.122\.0/24 ip daddr != 192\.168\.122\.0/24 counter masquerade$"
        )
        cross, _ = nft_rule(h, "guest_cross", r'iif "virbr0" oif "virbr0"')
        ns.sh("nft", "delete", "rule", "ip", NFT_TABLE, "guest_nat", "handle", str(masq))
        ns.sh("nft", "delete", "rule", "ip", NFT_TABLE, "guest_cross", "handle", str(cross))
        left = ns.sh("nft", "-a", "list", "table", "ip", NFT_TABLE)
        assert f"# handle {masq}\n" not in left and f"# handle {cross}\n" not in left, left
        return [
            ("guest_nat", "ip saddr 192.168.122.0/24 ip daddr != 192.168.122.0/24", "masquerade"),
            ("guest_cross", 'iif "virbr0" oif "virbr0"', "accept"),
        ]
    nat = [line for line in ns.sh("iptables", "-t", "nat", "-S", "VIRTFW_PRT").splitlines() if line.startswith("-A")]
    fwx = [line for line in ns.sh("iptables", "-t", "filter", "-S", "VIRTFW_FWX").splitlines() if line.startswith("-A")]
    assert nat[0] == "-A VIRTFW_PRT -s 192.168.122.0/24 -d 224.0.0.0/24 -j RETURN", nat
    assert fwx[0] == "-A VIRTFW_FWX -i virbr0 -o virbr0 -j ACCEPT", fwx
    ns.sh("iptables", "-t", "nat", "-D", "VIRTFW_PRT", "1")
    ns.sh("iptables", "-t", "filter", "-D", "VIRTFW_FWX", "1")
    assert nat[0] not in ns.sh("iptables", "-t", "nat", "-S", "VIRTFW_PRT")
    assert fwx[0] not in ns.sh("iptables", "-t", "filter", "-S", "VIRTFW_FWX")
    return [
        ("nat", "VIRTFW_PRT", "-s 192.168.122.0/24", "-d 224.0.0.0/24", "RETURN"),
        ("VIRTFW_FWX", "-i virbr0", "-o virbr0", "ACCEPT"),
    ]


def test_deleted_network_rules_are_named_and_reload_repairs(host: Host):
    h = host
    h.vfw("net-start", "default")
    h.assert_ok("right after net-start")
    installed = ruleset(h.ns, h.backend)

    expected = delete_network_rules(h)
    assert ruleset(h.ns, h.backend) != installed
    code, lines, doc = h.verify()
    assert code == 3, f"verify exit {code} after deleting two rules"
    assert len(lines) == len(expected), "expected one line per deleted rule, got:\n" + "\n".join(lines)
    for words in expected:
        matching = [line for line in lines if all(w in line for w in words)]
        assert len(matching) == 1, f"no single line names the deleted rule {words}:\n" + "\n".join(lines)
        assert "default" in matching[0], f"the line does not name the network: {matching[0]}"
    assert doc["networks"] == 1

    h.vfw("reload")
    h.assert_ok("after reload")
    assert ruleset(h.ns, h.backend) == installed, "reload did not restore the ruleset net-start installed"


@pytest.mark.parametrize("backend", ["nftables"], indirect=True)
def test_missing_table_is_reported_and_reload_repairs(host: Host):
    """Our whole nft table gone (iptables has no table of its own: rule by rule above)."""
    h = host
    h.vfw("net-start", "default")
    h.assert_ok("right after net-start")
    installed = ruleset(h.ns, h.backend)
    h.ns.sh("nft", "delete", "table", "ip", NFT_TABLE)
    assert ruleset(h.ns, h.backend) != installed
    code, lines, _ = h.verify()
    assert code == 3 and any(NFT_TABLE in line and "missing" in line for line in lines), "\n".join(lines)
    h.vfw("reload")
    h.assert_ok("after reload")
    assert ruleset(h.ns, h.backend) == installed


# --------------------------------------------------------------------------- binding rules


def start_with_binding(h: Host) -> None:
    h.vfw("net-start", "default")
    add_port(h.ns, "vnet0")
    path = h.tmp / "binding.xml"
    path.write_text(BINDING)
    h.vfw("nwfilter-binding-create", str(path))


def delete_binding_rule(h: Host) -> str:
    """Delete the rule that lets the guest's own MAC through; returns its distinctive text."""
    ns = h.ns
    mac = "52:54:00:00:00:01"
    if h.backend == "nftables":
        table = "virtfw_nwfilter_ethernet"
        chains = [
            line.split()[1]
            for line in ns.sh("nft", "list", "table", "bridge", table).splitlines()
            if line.strip().startswith("chain ")
        ]
        for chain in chains:
            out = ns.sh("nft", "-a", "list", "chain", "bridge", table, chain)
            m = re.search(rf"^\s*ether saddr {mac} return # handle (\d+)$", out, re.MULTILINE)
            if m:
                ns.sh("nft", "delete", "rule", "bridge", table, chain, "handle", m.group(1))
                assert f"ether saddr {mac} return" not in ns.sh("nft", "list", "chain", "bridge", table, chain)
                return f"ether saddr {mac}"
        raise AssertionError(f"no 'ether saddr {mac} return' rule in bridge {table}")
    saved = ns.sh("ebtables-save")
    m = re.search(rf"^-A (\S+) -s {mac} -j RETURN$", saved, re.MULTILINE)
    assert m, f"no '-s {mac} -j RETURN' rule in ebtables:\n{saved}"
    chain = m.group(1)
    rules = [line for line in saved.splitlines() if line.startswith(f"-A {chain} ")]
    ns.sh("ebtables", "-t", "nat", "-D", chain, str(rules.index(m.group(0)) + 1))
    assert m.group(0) not in ns.sh("ebtables-save")
    return f"-s {mac}"


def test_deleted_binding_rule_is_reported_and_reload_repairs(host: Host):
    h = host
    start_with_binding(h)
    h.assert_ok("right after nwfilter-binding-create")  # xfails while iptables mode cannot verify
    installed = firewall_snapshot(h.ns)

    delete_binding_rule(h)
    assert firewall_snapshot(h.ns) != installed
    code, lines, doc = h.verify()
    assert code == 3, f"verify exit {code} after deleting a rule of the binding"
    assert len(lines) == 1 and "vnet0" in lines[0], "expected one line naming port vnet0:\n" + "\n".join(lines)
    assert doc["bindings"] == 1

    h.vfw("reload")
    h.assert_ok("after reload")
    assert firewall_snapshot(h.ns) == installed, "reload did not restore the binding's rules"


def test_deleted_binding_rule_is_named_by_its_text(host: Host):
    h = host
    start_with_binding(h)
    h.assert_ok("right after nwfilter-binding-create")  # xfails while iptables mode cannot verify
    text = delete_binding_rule(h)
    proc = h.vfw("verify", check=False)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert any(text in line for line in lines), (
        f"verify does not name the deleted rule (its text holds {text!r}):\n" + "\n".join(lines)
    )


# --------------------------------------------------------------------------- foreign drop

FOREIGN = """table inet foreignfw {{
    chain gate {{
        type filter hook forward priority 0; policy {policy};
    }}
}}
"""

OTHER_NET = """<network>
  <name>other</name>
  <bridge name="vfwbr7"/>
  <forward mode="nat"/>
  <ip address="192.168.127.1" netmask="255.255.255.0"/>
</network>
"""


@pytest.mark.parametrize("backend", ["nftables"], indirect=True)
def test_foreign_forward_drop_is_reported_with_a_hint(host: Host):
    h = host
    h.vfw("net-start", "default")
    h.assert_ok("before any foreign table")
    # control: a foreign forward chain that accepts is nobody's problem
    h.ns.run(["nft", "-f", "-"], input=FOREIGN.format(policy="accept"))
    h.assert_ok("with a foreign forward chain of policy accept")

    h.ns.sh("nft", "delete", "table", "inet", "foreignfw")
    h.ns.run(["nft", "-f", "-"], input=FOREIGN.format(policy="drop"))
    code, lines, _ = h.verify()
    assert code == 3, "a foreign forward chain with policy drop is not reported"
    assert len(lines) == 1, "\n".join(lines)
    line = lines[0]
    for word in ("foreignfw", "gate", "drop"):
        assert word in line, f"{word!r} missing from {line!r}"
    assert "accept" in line.lower(), f"no hint how to let guest traffic through: {line!r}"

    h.ns.sh("nft", "delete", "table", "inet", "foreignfw")
    h.assert_ok("once the foreign table is gone")


@pytest.mark.parametrize("backend", ["nftables"], indirect=True)
def test_foreign_drop_hint_names_the_networks_bridge(host: Host):
    """The hint tells what to accept: the bridge of the active network, not a fixed name."""
    h = host
    (h.tmp / "other.xml").write_text(OTHER_NET)
    h.vfw("net-define", str(h.tmp / "other.xml"))
    h.vfw("net-start", "other")
    h.assert_ok("before the foreign table")
    h.ns.run(["nft", "-f", "-"], input=FOREIGN.format(policy="drop"))
    code, lines, _ = h.verify()
    assert code == 3 and len(lines) == 1, "\n".join(lines)
    assert "vfwbr7" in lines[0], f"the hint does not name the network's bridge vfwbr7: {lines[0]!r}"


# --------------------------------------------------------------------------- dnsmasq


def kill_dnsmasq(h: Host) -> int:
    conf = h.vfw.state_dir / "dnsmasq" / "default.conf"
    pid = int((h.vfw.state_dir / "dnsmasq" / "default.pid").read_text().strip())
    assert f"--conf-file={conf}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z"):
            break  # a zombie until init reaps it: dead all the same
        time.sleep(0.02)
    return pid


def our_dnsmasq(h: Host) -> list[int]:
    conf = h.vfw.state_dir / "dnsmasq" / "default.conf"
    proc = run(["pgrep", "-f", "--", f"--conf-file={re.escape(str(conf))}"], check=False)
    return [int(p) for p in proc.stdout.split()]


def test_killed_dnsmasq_is_reported(host: Host):
    h = host
    h.vfw("net-start", "default")
    h.assert_ok("right after net-start")
    pid = kill_dnsmasq(h)
    code, lines, _ = h.verify()
    assert code == 3, "a dead dnsmasq is not reported"
    assert len(lines) == 1 and "dnsmasq" in lines[0] and "default" in lines[0], "\n".join(lines)
    assert str(pid) in lines[0]
    # net-destroy still removes everything of it
    h.vfw("net-destroy", "default")
    folder = h.vfw.state_dir / "dnsmasq"
    assert not folder.exists() or list(folder.iterdir()) == []
    h.assert_ok("after net-destroy")


def test_reload_restarts_killed_dnsmasq(host: Host):
    h = host
    h.vfw("net-start", "default")
    h.assert_ok("right after net-start")
    pid = kill_dnsmasq(h)
    assert h.vfw("verify", check=False).returncode == 3
    h.vfw("reload")
    running = [p for p in our_dnsmasq(h) if p != pid]
    assert running, "reload did not start the network's dnsmasq again"
    h.assert_ok("after reload")


# --------------------------------------------------------------------------- advice that fits


def test_a_bridge_set_down_is_reported_and_reload_sets_it_up(host: Host):
    h = host
    h.vfw("net-start", "default")
    h.assert_ok("right after net-start")
    h.ns.sh("ip", "link", "set", "virbr0", "down")
    code, lines, _ = h.verify()
    assert code == 3 and lines == ["network default: bridge virbr0 is down; virtfw reload sets it up"], lines
    h.vfw("reload")
    assert "UP" in json.loads(h.ns.sh("ip", "-j", "link", "show", "virbr0"))[0]["flags"]
    h.assert_ok("after reload")


def test_a_bridge_virtfw_did_not_make_gone_is_not_sent_to_reload(host: Host):
    """reload cannot bring back a bridge it did not create: the advice says what can."""
    h = host
    h.ns.sh("ip", "link", "add", "virbr0", "type", "bridge")
    h.vfw("net-start", "default")
    h.assert_ok("right after net-start on an existing bridge")
    h.ns.sh("ip", "link", "del", "virbr0")
    code, lines, _ = h.verify()
    bridge = [line for line in lines if "bridge virbr0 is missing" in line]
    assert code == 3 and len(bridge) == 1, lines
    assert "virtfw did not create it" in bridge[0] and "net-destroy default" in bridge[0], lines
    assert "reload re-creates it" not in bridge[0], lines


def test_a_binding_whose_port_is_gone_is_reported(host: Host):
    h = host
    start_with_binding(h)
    h.assert_ok("right after nwfilter-binding-create")
    h.ns.sh("ip", "link", "del", "vnet0")
    code, lines, _ = h.verify()
    assert code == 3, "a binding on a port that no longer exists is not reported"
    expected = (
        "binding vnet0: port device vnet0 no longer exists; nwfilter-binding-delete vnet0 removes the binding "
        "(else the next device of that name gets its rules)"
    )
    assert lines == [expected], lines
    h.vfw("nwfilter-binding-delete", "vnet0")
    h.assert_ok("after nwfilter-binding-delete")


def test_every_problem_line_says_what_puts_it_right(host: Host):
    h = host
    start_with_binding(h)
    delete_binding_rule(h)
    kill_dnsmasq(h)
    code, lines, _ = h.verify()
    assert code == 3 and len(lines) >= 2, lines
    for line in lines:
        assert "; virtfw reload " in line, f"no advice in {line!r}"
