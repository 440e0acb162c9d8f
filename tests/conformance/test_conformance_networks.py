"""Conformance of virtfw's virtual-network firewall rules with libvirt's own expectations.

libvirt's ``networkxml2firewalltest`` keeps, for each network XML in
``networkxml2firewalldata``, the exact commands its iptables and nftables backends run
(``NAME-linux.iptables`` / ``NAME-linux.nftables``), plus the one-time setup of the
private chains (``base.iptables`` / ``base.nftables``). Comparing command text with
virtfw's would tie virtfw to libvirt's spelling (one command per rule, ``--insert``
order, ...). What has to match is the ruleset the kernel ends up with, so each case runs
twice, each in its own network namespace:

* namespace A: ``virtfw net-create NAME.xml`` (virtfw makes the bridge and the rules);
* namespace B: the bridge is made by hand and libvirt's expected commands are replayed
  verbatim, with libvirt's names mapped to virtfw's (:data:`NAME_MAP`);

and the two normalized rulesets (``tests/helpers/nsutil.ruleset``) must be equal.

One deliberate difference is left out of the replay: in nftables mode libvirt fixes DHCP
reply checksums with a ``tc`` ``csum`` action on the bridge (the ``tc qdisc``/``tc
filter`` commands at the top of every ``*-linux.nftables`` file). virtfw does not install
it: nft has no checksum-fill statement and the ``act_csum`` module that the tc action
needs cannot be loaded here, so the ``tc`` commands are skipped in namespace B and the
test checks instead that virtfw left no tc filter on the bridge in namespace A. In
iptables mode virtfw installs the same mangle ``CHECKSUM --checksum-fill`` rule as
libvirt, so nothing is skipped there.

The libvirt data is read from ``../shared`` (``helpers.nsutil.TESTDATA``) and never copied into
this repository.
"""

from __future__ import annotations

import difflib
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.faults import Wrappers
from helpers.nsutil import (
    TESTDATA,
    Netns,
    Virtfw,
    netns,
    normalize_iptables_save,
    normalize_nft,
    read_commands,
    ruleset,
    run,
    verify_problems,
    virtfw_argv,
)

DATA = TESTDATA / "networkxml2firewalldata"
pytestmark = pytest.mark.shared  # libvirt's cases, from ../shared

#: libvirt's test cases (tests/networkxml2firewalltest.c), one ``NAME.xml`` each. Listed
#: rather than globbed so that a missing shared/ folder fails instead of collecting nothing.
CASES: tuple[str, ...] = (
    "nat-default",
    "nat-tftp",
    "nat-many-ips",
    "nat-no-dhcp",
    "nat-ipv6",
    "nat-ipv6-masquerade",
    "route-default",
    "forward-dev",
    "isolated",
    "nat-port-range",
    "nat-port-range-ipv6",
)

BACKENDS: tuple[str, ...] = ("nftables", "iptables")

#: libvirt's object names -> virtfw's, applied to every replayed argument.
NAME_MAP: tuple[tuple[str, str], ...] = (
    ("LIBVIRT_", "VIRTFW_"),
    ("libvirt_network", "virtfw_network"),
    ("libvirt-", "virtfw-"),
)

#: (case, backend) -> why virtfw's ruleset is known to differ from libvirt's. Each entry
#: is a strict xfail, so a fixed difference fails loudly until its entry is removed.
KNOWN_DIFFERENCES: dict[tuple[str, str], str] = {}

#: What a dry-run batch must mention for each backend (a name only virtfw's rules use).
DRY_RUN_MARKER: dict[str, str] = {"nftables": "virtfw_network", "iptables": "VIRTFW_"}


def is_query(argv: list[str]) -> bool:
    """Whether a command only reads state (libvirt parses its output to decide what to add)."""
    if argv[0] in ("iptables", "ip6tables"):
        return "--list-rules" in argv
    if argv[0] == "nft":
        return "list" in argv
    return False


def rename(arg: str) -> str:
    """One argument with libvirt's object names replaced by virtfw's."""
    for old, new in NAME_MAP:
        arg = arg.replace(old, new)
    return arg


def libvirt_commands(name: str, backend: str) -> list[list[str]]:
    """What libvirt runs to start network NAME on a fresh host, renamed for virtfw.

    The base setup comes first (minus its queries), then the network's own commands;
    ``tc`` commands are dropped (see the module docstring).
    """
    commands = read_commands(DATA / f"base.{backend}") + read_commands(DATA / f"{name}-linux.{backend}")
    return [[rename(arg) for arg in argv] for argv in commands if not is_query(argv) and argv[0] != "tc"]


def bridge_name(xml_path: Path) -> str:
    """The ``<bridge name=...>`` of a network XML (libvirt's own trusted test data)."""
    bridge = ET.parse(xml_path).getroot().find("bridge")
    assert bridge is not None and bridge.get("name"), f"{xml_path}: no <bridge name=...>"
    return bridge.get("name", "")


def snapshot(ns: Netns, backend: str) -> str:
    """The namespace's normalized ruleset for BACKEND, plus the list of all nft tables.

    The table list catches a backend leaking into the other one: an ``ip virtfw_network``
    table in iptables mode, or iptables-nft tables in nftables mode.
    """
    tables = sorted(ns.sh("nft", "list", "tables").splitlines())
    return ruleset(ns, backend) + "\n# nft list tables\n" + "\n".join(tables)


def diff(expected: str, actual: str) -> str:
    """A unified diff from libvirt's ruleset to virtfw's."""
    lines = difflib.unified_diff(
        expected.splitlines(), actual.splitlines(), "libvirt (replayed)", "virtfw", lineterm=""
    )
    return "\n".join(lines)


def case_params() -> Iterator[object]:
    """Every (case, backend) pair, with KNOWN_DIFFERENCES marked as strict xfail."""
    for name in CASES:
        for backend in BACKENDS:
            marks = []
            reason = KNOWN_DIFFERENCES.get((name, backend))
            if reason is not None:
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
            yield pytest.param(name, backend, id=f"{name}-{backend}", marks=marks)


def test_cases_cover_testdata() -> None:
    """Every network XML in libvirt's data is a case here, so new data is not silently skipped."""
    found = {path.stem for path in DATA.glob("*.xml")}
    assert found == set(CASES)
    for name in CASES:
        for backend in BACKENDS:
            assert (DATA / f"{name}-linux.{backend}").is_file()


def test_read_commands_splits_joined_arguments() -> None:
    """The replay parser undoes libvirt's one-argument-per-line format, quotes included."""
    commands = read_commands(DATA / "nat-default-linux.nftables")
    masquerade = [argv for argv in commands if argv[-1] == "masquerade"]
    assert masquerade == [
        [
            "nft",
            "-ae",
            "insert",
            "rule",
            "ip",
            "libvirt_network",
            "guest_nat",
            "ip",
            "saddr",
            "192.168.122.0/24",
            "ip",
            "daddr",
            "!=",
            "192.168.122.0/24",
            "counter",
            "masquerade",
        ],
    ]
    setup = read_commands(DATA / "base.nftables")
    assert [
        "nft",
        "add",
        "chain",
        "ip",
        "libvirt_network",
        "forward",
        "{ type filter hook forward priority 0; policy accept; }",
    ] in setup


def test_normalize_nft_ignores_chain_order_not_rule_order() -> None:
    """Chains may be listed in any order and carry any handle/counter; rule order matters."""
    one = (
        "table ip t { # handle 3\n\tchain b { # handle 2\n\t\tcounter packets 5 bytes 900 accept # handle 7\n"
        "\t\tdrop # handle 8\n\t}\n\n\tchain a { # handle 1\n\t\ttype filter hook forward priority filter; "
        "policy accept;\n\t}\n}\n"
    )
    two = (
        "table ip t {\n\tchain a {\n\t\ttype filter hook forward priority filter; policy accept;\n\t}\n"
        "\tchain b {\n\t\tcounter packets 0 bytes 0 accept\n\t\tdrop\n\t}\n}\n"
    )
    swapped = two.replace("accept\n\t\tdrop", "drop\n\t\taccept")
    assert normalize_nft(one) == normalize_nft(two)
    assert normalize_nft(two) != normalize_nft(swapped)


def test_normalize_iptables_save_ignores_chain_order_not_rule_order() -> None:
    """Same contract for iptables-save: stamps, counters and chain order don't count."""
    one = (
        "# Generated by iptables-save\n*nat\n:POSTROUTING ACCEPT [3:4]\n:X - [0:0]\n"
        "-A X -j RETURN\n-A X -j MASQUERADE\n-A POSTROUTING -j X\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"
    )
    two = (
        "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n*nat\n:X - [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
        "-A POSTROUTING -j X\n-A X -j RETURN\n-A X -j MASQUERADE\nCOMMIT\n"
    )
    swapped = two.replace("-A X -j RETURN\n-A X -j MASQUERADE", "-A X -j MASQUERADE\n-A X -j RETURN")
    assert normalize_iptables_save(one) == normalize_iptables_save(two)
    assert normalize_iptables_save(two) != normalize_iptables_save(swapped)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CASES)
def test_dry_run_prints_batch(name: str, backend: str, tmp_path: Path) -> None:
    """``--dry-run net-create`` succeeds and shows the rules it would add, changing nothing.

    Needs no root. As root it runs inside a fresh namespace, so that a dry run that did
    apply something could not touch the host, and that namespace must stay empty.
    """
    xml = DATA / f"{name}.xml"
    config_dir, state_dir = tmp_path / "etc", tmp_path / "run"
    config_dir.mkdir()
    argv = virtfw_argv("--dry-run", "net-create", str(xml), config_dir=config_dir, state_dir=state_dir, backend=backend)
    if os.geteuid() != 0:
        proc = run(argv, check=False)
    else:
        with netns("vfwD") as ns:
            proc = ns.run(argv, check=False)
            assert ns.sh("nft", "list", "ruleset").strip() == "", "dry run changed the firewall"
            assert bridge_name(xml) not in ns.sh("ip", "-o", "link", "show"), "dry run created the bridge"
    assert proc.returncode == 0, proc.stderr
    assert DRY_RUN_MARKER[backend] in proc.stdout, proc.stdout + proc.stderr


def runnable_copy(xml: Path, tmp_path: Path) -> Path:
    """The case as given, except a TFTP root that exists (dnsmasq refuses a missing or unreadable one).

    The firewall rules do not depend on the directory, only on TFTP being served.
    """
    text = xml.read_text()
    if "<tftp root=" not in text:
        return xml
    root = Path("/tmp/virtfw-test-tftp")  # dnsmasq checks it after dropping to 'nobody'
    root.mkdir(mode=0o755, exist_ok=True)
    copy = tmp_path / xml.name
    copy.write_text(re.sub(r"<tftp root='[^']*'", f"<tftp root='{root}'", text))
    return copy


@pytest.mark.netns
@pytest.mark.parametrize(("name", "backend"), case_params())
def test_ruleset_matches_libvirt(name: str, backend: str, tmp_path: Path) -> None:
    """virtfw's ruleset for network NAME equals the one libvirt's commands build, and verifies clean."""
    xml = DATA / f"{name}.xml"
    bridge = bridge_name(xml)
    commands = libvirt_commands(name, backend)

    with netns("vfwA") as ns_a:
        vfw = Virtfw(ns_a, tmp_path, backend)
        vfw("net-create", str(runnable_copy(xml, tmp_path)))
        ns_a.run(["ip", "link", "show", "dev", bridge])  # virtfw made the bridge
        # what install recorded of each rule (on nftables: its statements as echoed) is what
        # a later listing shows, so an untouched network verifies clean
        assert verify_problems(vfw) == []
        if backend == "iptables":
            # each recorded rule is found in *-save's output as saved_spec prints it: no -C
            wrap = Wrappers(tmp_path / "wrap")
            vfw("verify", env=wrap.env)
            assert [call.strip() for call in wrap.calls()] == ["iptables-save", "ip6tables-save"], wrap.calls()
        if backend == "nftables":
            tc_filters = ns_a.sh("tc", "filter", "show", "dev", bridge)
            assert tc_filters.strip() == "", f"virtfw left a tc filter on {bridge}:\n{tc_filters}"
        actual = snapshot(ns_a, backend)

    with netns("vfwB") as ns_b:
        ns_b.run(["ip", "link", "add", bridge, "type", "bridge"])
        ns_b.run(["ip", "link", "set", bridge, "up"])
        for argv in commands:
            ns_b.run(argv)
        expected = snapshot(ns_b, backend)

    assert actual == expected, f"{name} ({backend}): virtfw's ruleset differs from libvirt's\n" + diff(expected, actual)
