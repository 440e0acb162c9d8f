"""One broken network or binding never keeps the others down.

``reload``, ``autostart``, ``verify`` and the listings handle each network and each binding
on its own: one that cannot be restored (its bridge gone and not virtfw's, its status file
garbage, its filter definition broken) is reported by name, the others are restored, and
the command exits non-zero. ``net-destroy`` / ``nwfilter-binding-delete`` of one whose
status file is garbage still removes what carries its name, and nothing of the others.

"Restored" is read back from the kernel: the firewall is flushed by hand first, and
afterwards ``verify`` reports problems of the broken one only (and, as a control, none
once it is gone).
"""

from __future__ import annotations

import json

import pytest
from helpers.nsutil import BACKENDS, Netns, Virtfw, add_port, define_second, filter_ruleset, netns, verify_problems

pytestmark = pytest.mark.netns


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


def flush_firewall(ns: Netns, backend: str) -> None:
    """Everything gone, as after an admin's ``nft flush ruleset`` or ``iptables -F``."""
    if backend == "nftables":
        ns.sh("nft", "flush", "ruleset")
        return
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            ns.sh(tool, "-w", "-t", table, "-F")
    for table in ("nat", "filter"):
        ns.run(["ebtables", "-t", table, "-F"], check=False)


def start_two(vfw: Virtfw, tmp_path) -> None:
    define_second(vfw, tmp_path)
    vfw("net-start", "default")
    vfw("net-start", "second")
    assert verify_problems(vfw) == []


def assert_one_failure(proc, name: str) -> None:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 1 not "), proc.stderr
    assert name in lines[0] and "/tmp/virtfw-" not in lines[0] and "Traceback" not in proc.stderr


def test_reload_recreates_a_bridge_virtfw_made(tmp_path, backend) -> None:
    with netns("vfwI") as ns:
        vfw = Virtfw(ns, tmp_path, backend)
        start_two(vfw, tmp_path)
        ns.sh("ip", "link", "del", "virbr7")
        assert any("bridge virbr7 is missing" in p for p in verify_problems(vfw))
        vfw("reload")
        assert verify_problems(vfw) == []
        assert "virtfw network second" in ns.sh("ip", "-d", "link", "show", "virbr7")
        assert "192.168.77.1/24" in ns.sh("ip", "addr", "show", "virbr7")
        vfw("net-destroy", "second")
        assert ns.run(["ip", "link", "show", "virbr7"], check=False).returncode != 0
        vfw("net-destroy", "default")


def test_reload_restores_the_others_when_a_bridge_it_did_not_make_is_gone(tmp_path, backend) -> None:
    with netns("vfwI") as ns:
        vfw = Virtfw(ns, tmp_path, backend)
        ns.sh("ip", "link", "add", "virbr7", "type", "bridge")  # the admin's: virtfw only adds addresses
        start_two(vfw, tmp_path)
        ns.sh("ip", "link", "del", "virbr7")
        flush_firewall(ns, backend)
        proc = vfw("reload", check=False)
        assert_one_failure(proc, "network second")
        assert "virbr7" in proc.stderr
        problems = verify_problems(vfw)
        assert problems and all(p.startswith("network second:") for p in problems), problems
        vfw("net-destroy", "second")
        assert verify_problems(vfw) == []
        vfw("net-destroy", "default")


def test_a_garbage_status_file_affects_only_its_own_network(tmp_path, backend) -> None:
    with netns("vfwI") as ns:
        vfw = Virtfw(ns, tmp_path, backend)
        start_two(vfw, tmp_path)
        alone = tmp_path / "alone"
        path = vfw.state_dir / "networks" / "second.json"
        path.write_text(path.read_text()[:60])
        listed = {row["name"]: row["state"] for row in json.loads(vfw("net-list", "--all", "--json").stdout)}
        assert listed == {"default": "active", "second": "broken"}
        flush_firewall(ns, backend)
        assert_one_failure(vfw("reload", check=False), "network second")
        problems = verify_problems(vfw)
        assert problems and all(p.startswith("network second:") for p in problems), problems
        vfw("net-destroy", "second")
        assert not path.exists()
        assert ns.run(["ip", "link", "show", "virbr7"], check=False).returncode != 0
        live = ns.sh("nft", "list", "ruleset") + ns.sh("iptables-save")
        assert "192.168.77." not in live and "virbr7" not in live
        assert verify_problems(vfw) == []
        vfw("net-destroy", "default")
        assert not alone.exists()


def test_a_broken_definition_hides_no_other(tmp_path, backend) -> None:
    with netns("vfwI") as ns:
        vfw = Virtfw(ns, tmp_path, backend)
        (vfw.config_dir / "networks").mkdir(parents=True)
        (vfw.config_dir / "networks" / "bad.xml").write_text("<network><name>bad")
        define_second(vfw, tmp_path)
        listed = {row["name"]: row["state"] for row in json.loads(vfw("net-list", "--all", "--json").stdout)}
        assert listed == {"bad": "broken", "default": "inactive", "second": "inactive"}
        proc = vfw("net-start", "bad", check=False)
        assert proc.returncode == 1 and "bad.xml" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_autostart_starts_the_others_when_one_cannot_start(tmp_path, backend) -> None:
    with netns("vfwI") as ns:
        vfw = Virtfw(ns, tmp_path, backend)
        define_second(vfw, tmp_path)
        vfw("net-autostart", "default")
        vfw("net-autostart", "second")
        add_port(ns, "virbr7")  # not a bridge: second cannot start
        proc = vfw("autostart", check=False)
        assert_one_failure(proc, "network second")
        assert "Started 1 network(s): default" in proc.stdout
        assert verify_problems(vfw) == []
        assert [row["name"] for row in json.loads(vfw("net-list", "--json").stdout)] == ["default"]
        vfw("net-destroy", "default")


def test_a_bridge_recreated_by_hand_is_reported_and_never_deleted(tmp_path, backend) -> None:
    with netns("vfwI") as ns:
        vfw = Virtfw(ns, tmp_path, backend)
        start_two(vfw, tmp_path)
        ns.sh("ip", "link", "del", "virbr7")
        ns.sh("ip", "link", "add", "virbr7", "type", "bridge")
        assert any("virbr7 was re-created" in p for p in verify_problems(vfw))
        vfw("net-destroy", "second")
        assert ns.run(["ip", "link", "show", "virbr7"], check=False).returncode == 0, "the admin's bridge was deleted"
        vfw("net-start", "second")  # on the admin's bridge now: it adds addresses only
        ns.sh("ip", "link", "del", "virbr7")
        ns.sh("ip", "link", "add", "virbr7", "type", "bridge")
        vfw("reload")  # takes the new bridge over: addresses and rules for its index
        assert verify_problems(vfw) == []
        vfw("net-destroy", "second")
        assert ns.run(["ip", "link", "show", "virbr7"], check=False).returncode == 0
        vfw("net-destroy", "default")


BINDING = (
    "<filterbinding><portdev name='{port}'/><mac address='52:54:00:00:00:0{n}'/>"
    "<filterref filter='{filter}'/></filterbinding>"
)
OWN_FILTER = """<filter name='own-filter' chain='root'>
<rule action='drop' direction='in' priority='500'><tcp dstportstart='23'/></rule></filter>"""


def bind_two(ns: Netns, vfw: Virtfw, tmp_path) -> None:
    own = tmp_path / "own.xml"
    own.write_text(OWN_FILTER)
    vfw("nwfilter-define", str(own))
    for n, (port, filt) in enumerate([("vnet0", "no-mac-spoofing"), ("vnet1", "own-filter")]):
        add_port(ns, port)
        path = tmp_path / f"{port}.xml"
        path.write_text(BINDING.format(port=port, n=n, filter=filt))
        vfw("nwfilter-binding-create", str(path))
    assert verify_problems(vfw) == []


def test_reload_restores_the_other_bindings_when_a_filter_is_broken(tmp_path, backend) -> None:
    with netns("vfwI") as ns:
        vfw = Virtfw(ns, tmp_path, backend)
        bind_two(ns, vfw, tmp_path)
        (vfw.config_dir / "nwfilter" / "own-filter.xml").write_text("<filter name='own-filter'")
        before = filter_ruleset(ns, backend)
        assert_one_failure(vfw("reload", check=False), "binding vnet1")
        assert verify_problems(vfw) == []  # vnet1 kept the rules it had; vnet0 was re-installed
        assert "dport 23" in before or "--dport 23" in before
        assert ("dport 23" in filter_ruleset(ns, backend)) and filter_ruleset(ns, backend).count(
            "vnet1"
        ) == before.count("vnet1")
        flush_firewall(ns, backend)
        assert_one_failure(vfw("reload", check=False), "binding vnet1")
        problems = verify_problems(vfw)
        if backend == "nftables":  # its records can be installed again: vnet1 gets back the rules it had
            assert problems == []
            return
        # iptables: vnet1's rules went with the flush, and it cannot be instantiated again; so
        # did the base's hooks into INPUT/FORWARD, which serve vnet1 only (vnet0 is ebtables
        # only), and which the others' re-install in place leaves alone
        theirs = [p for p in problems if not p.startswith("filter base (iptables)")]
        assert theirs and all(p.startswith("binding vnet1:") for p in theirs), "\n".join(problems)
        listed = vfw("nwfilter-list", "--json").stdout
        assert {"uuid": None, "name": "own-filter", "broken": True} in json.loads(listed)


def test_a_garbage_binding_status_affects_only_its_own_binding(tmp_path, backend) -> None:
    with netns("vfwI") as ns:
        vfw = Virtfw(ns, tmp_path, backend)
        bind_two(ns, vfw, tmp_path)
        path = vfw.state_dir / "bindings" / "vnet1.json"
        path.write_text("{")
        states = {r["portdev"]: r["state"] for r in json.loads(vfw("nwfilter-binding-list", "--json").stdout)}
        assert states == {"vnet0": "active", "vnet1": "broken"}
        before = filter_ruleset(ns, backend)
        assert_one_failure(vfw("reload", check=False), "binding vnet1")
        assert filter_ruleset(ns, backend).count("vnet1") == before.count("vnet1") > 0  # it keeps its rules
        problems = verify_problems(vfw)
        assert problems and all(p.startswith("binding vnet1:") for p in problems), "\n".join(problems)
        vfw("nwfilter-binding-delete", "vnet1")
        assert not path.exists()
        assert verify_problems(vfw) == []
        live = ns.sh("nft", "list", "ruleset") + ns.sh("ebtables-save") + ns.sh("iptables-save")
        assert "vnet1" not in live and "vnet0" in live
