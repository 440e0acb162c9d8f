"""Conformance of virtfw's iptables-mode nwfilter rules with libvirt's own expectations.

libvirt's ``nwfilterxml2firewalltest`` instantiates each filter XML of
``nwfilterxml2firewalldata`` on port ``vnet0`` and records the commands its ebiptables
driver runs (``NAME-linux.args``), minus a fixed block of setup commands
(``commonRules[]`` in the test: the root chains, the global iptables chains and their
hooks, the physdev jumps). What has to match is the ruleset the kernel ends up with, so
each case runs twice, each in its own network namespace:

* namespace A: virtfw installs the case (see :data:`INSTALL_VIA`): with the CLI
  (``nwfilter-define`` + ``nwfilter-binding-create``), or, until the CLI can, by calling
  the backend with the case's ``PortRules`` in a Python process inside the namespace;
* namespace B: libvirt's commands are replayed, one process per command, with
  libvirt's names mapped to virtfw's (:data:`NAME_MAP`): the setup commands that were
  stripped from the file, then the file's commands, then the root hooks, then the
  renames of ``tearOldRules`` (temporary ``J``/``P``/``FJ``/``FP``/``HJ`` chains to
  their final names), since virtfw installs the final state.

Compared: normalized ``ebtables-save``, ``iptables-save`` and ``ip6tables-save`` (chain
order ignored, rule order kept) and the list of nft tables.

The libvirt data is read from ``../shared`` (``helpers.nsutil.TESTDATA``) and never copied here.
Run as a script (``python THIS install CASE``) it is the Python fallback installer.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import subprocess
import sys
from pathlib import Path

if __name__ == "__main__":  # the fallback installer runs with only this folder on sys.path
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]

import pytest
from helpers.nsutil import CONFORMANCE_NOTES, Netns, Virtfw, netns, normalize_iptables_save, read_commands, ruleset
from helpers.nwfilter_cases import DATA, MAC, PARAMETERS, PORT, case_filter, case_port_rules

#: libvirt's test cases (tests/nwfilterxml2firewalltest.c), one ``NAME-linux.args`` each.
#: Listed rather than globbed so that a missing shared/ folder fails instead of collecting nothing.
CASES: tuple[str, ...] = (
    "ah", "ah-ipv6", "all", "all-ipv6", "arp", "comment", "conntrack", "esp", "esp-ipv6",
    "example-1", "example-2", "hex-data", "icmp-direction2", "icmp-direction3",
    "icmp-direction", "icmp", "icmpv6", "igmp", "ip", "ipset", "ipt-no-macspoof", "ipv6",
    "iter1", "iter2", "iter3", "mac", "rarp", "sctp", "sctp-ipv6", "stp", "target2",
    "target", "tcp", "tcp-ipv6", "udp", "udp-ipv6", "udplite", "udplite-ipv6", "vlan",
)  # fmt: skip

#: libvirt's object names -> virtfw's, applied to every replayed argument.
NAME_MAP: tuple[tuple[str, str], ...] = (("libvirt-", "virtfw-"), ("LIBVIRT_", "VIRTFW_"))
pytestmark = pytest.mark.shared  # libvirt's cases, from ../shared

#: How namespace A is installed: "cli", "python" (the fallback), or "auto" (the CLI as
#: soon as it has ``nwfilter-binding-create``). Environment VIRTFW_NWFILTER_VIA overrides.
INSTALL_VIA = os.environ.get("VIRTFW_NWFILTER_VIA", "auto")

#: case -> why virtfw's ruleset is known to differ from libvirt's. Each entry is a strict
#: xfail, so a fixed difference fails loudly until its entry is removed.
KNOWN_DIFFERENCES: dict[str, str] = {}

# --- the setup commands libvirt's test strips (commonRules[]), creating ones only -----
# Deletions of things that do not exist yet (ignored errors in libvirt) are left out.

EB_ROOT_CHAIN = {"J": "libvirt-J-vnet0", "P": "libvirt-P-vnet0"}
EB_HOOK = {
    "J": ["ebtables", "--concurrent", "-t", "nat", "-A", "PREROUTING", "-i", PORT, "-j", "libvirt-J-vnet0"],
    "P": ["ebtables", "--concurrent", "-t", "nat", "-A", "POSTROUTING", "-o", PORT, "-j", "libvirt-P-vnet0"],
}


def ipt_setup(tool: str) -> list[list[str]]:
    """What applyNewRules runs for one iptables family before the rules (no deletions)."""
    lines = [
        "-N libvirt-in", "-N libvirt-out", "-N libvirt-in-post", "-N libvirt-host-in",
        "-I FORWARD 1 -j libvirt-in", "-I FORWARD 2 -j libvirt-out",
        "-I FORWARD 3 -j libvirt-in-post", "-I INPUT 1 -j libvirt-host-in",
        "-N FP-vnet0", "-N FJ-vnet0", "-N HJ-vnet0",
        "-A libvirt-out -m physdev --physdev-is-bridged --physdev-out vnet0 -g FP-vnet0",
        "-A libvirt-in -m physdev --physdev-in vnet0 -g FJ-vnet0",
        "-A libvirt-host-in -m physdev --physdev-in vnet0 -g HJ-vnet0",
        "-A libvirt-in-post -m physdev --physdev-in vnet0 -j ACCEPT",
    ]  # fmt: skip
    return [[tool, "-w", *line.split()] for line in lines]


def ipt_renames(tool: str) -> list[list[str]]:
    """tearOldRules' renames of the temporary iptables chains."""
    return [
        [tool, "-w", "-E", f"{tmp}-vnet0", f"{final}-vnet0"]
        for tmp, final in (("FP", "FO"), ("FJ", "FI"), ("HJ", "HI"))
    ]


# --- reading libvirt's data --------------------------------------------------------------


def rename(arg: str) -> str:
    for old, new in NAME_MAP:
        arg = arg.replace(old, new)
    return arg


ETHERNET = {"mac", "vlan", "stp", "arp", "rarp", "ip", "ipv6"}
IPV6 = {"tcp-ipv6", "udp-ipv6", "udplite-ipv6", "esp-ipv6", "ah-ipv6", "sctp-ipv6", "icmpv6", "all-ipv6"}


def referenced(name: str) -> list[str]:
    """NAME and every file its filter tree references (a <filterref filter=F> is F.xml)."""
    found: list[str] = []
    todo = [name]
    while todo:
        current = todo.pop(0)
        if current in found:
            continue
        found.append(current)
        todo += [ref.get("filter", "") for ref in case_filter(current).iter("filterref")]
    return found


def layers(name: str) -> dict[str, bool]:
    """Which of libvirt's setup blocks ran for a case, from its rules' elements:
    ebtables J (a layer-2 rule out of the guest), P (into it), iptables, ip6tables."""
    used = {"J": False, "P": False, "iptables": False, "ip6tables": False}
    for current in referenced(name):
        for rule in case_filter(current).iter("rule"):
            elements = [child.tag for child in rule]
            direction = rule.get("direction", "")
            for tag in elements or ["none"]:
                if tag in ETHERNET or tag == "none":
                    used["J"] |= direction in ("out", "inout")
                    used["P"] |= direction in ("in", "inout")
                elif tag in IPV6:
                    used["ip6tables"] = True
                else:
                    used["iptables"] = True
    return used


def libvirt_replay(name: str) -> list[tuple[list[str], bool]]:
    """libvirt's commands for case NAME on a fresh host, as (argv, must succeed).

    The stripped setup goes first, then the file's commands (its ``-F``/``-X`` of
    sub-chains that do not exist yet are ignored errors in libvirt too), then the root
    hooks, each only where the file does not already hold it (a setup block that did
    not match whole was not stripped). The ebtables renames need a listing of the
    chains, so they are done by :func:`tear_old_rules_ebtables`.
    """
    used = layers(name)
    commands = read_commands(DATA / f"{name}-linux.args")
    out: list[tuple[list[str], bool]] = []
    for prefix in ("J", "P"):
        create = ["ebtables", "--concurrent", "-t", "nat", "-N", EB_ROOT_CHAIN[prefix]]
        if used[prefix] and create not in commands:
            out.append((create, True))
    for tool in ("iptables", "ip6tables"):
        if used[tool]:
            out += [(argv, True) for argv in ipt_setup(tool)]
    for argv in commands:
        out.append((argv, argv[0] != "ebtables" or not {"-F", "-X"} & set(argv)))
    for prefix in ("J", "P"):
        if used[prefix] and EB_HOOK[prefix] not in commands:
            out.append((EB_HOOK[prefix], True))
    for tool in ("iptables", "ip6tables"):
        if used[tool]:
            out += [(argv, True) for argv in ipt_renames(tool)]
    return [([rename(arg) for arg in argv], check) for argv, check in out]


def tear_old_rules_ebtables(ns: Netns) -> None:
    """libvirt's ebtablesRenameTmpSubAndRootChainsFW: list each temporary root chain,
    rename every ``J-``/``P-`` chain it jumps to, then the roots themselves."""
    for prefix, final in (("J", "I"), ("P", "O")):
        root = rename(EB_ROOT_CHAIN[prefix])
        listing = ns.run(["ebtables", "--concurrent", "-t", "nat", "-L", root], check=False)
        if listing.returncode != 0:
            continue
        for line in listing.stdout.splitlines():
            match = re.search(r"-j ([JP]-\S+)", line)
            if match:
                chain = match.group(1)
                new = {"J": "I", "P": "O"}[chain[0]] + chain[1:]
                ns.run(["ebtables", "--concurrent", "-t", "nat", "-E", chain, new])
        ns.run(["ebtables", "--concurrent", "-t", "nat", "-E", root, root.replace(f"-{prefix}-", f"-{final}-")])


# --- the two sides -----------------------------------------------------------------------


#: What a case needs in the namespace before either side runs: the ipset case matches
#: set ``tck_test``, which the test file says to make with ``ipset create tck_test
#: hash:ip``; pyroute2 (a virtfw dependency) makes it, so no ipset tool is needed.
CASE_SETUP: dict[str, str] = {
    "ipset": "from pyroute2.ipset import IPSet\nwith IPSet() as s:\n    s.create('tck_test', stype='hash:ip')\n",
}


def prepare(ns: Netns, name: str) -> None:
    """A guest-like port device (a tap; no dummy module here), and the case's needs."""
    ns.run(["ip", "tuntap", "add", "dev", PORT, "mode", "tap"])
    if name in CASE_SETUP:
        ns.run([sys.executable, "-c", CASE_SETUP[name]])


def snapshot(ns: Netns) -> str:
    """Normalized ebtables, iptables and ip6tables rulesets plus the nft table list."""
    eb = normalize_iptables_save(ns.sh("ebtables-save"))
    tables = sorted(ns.sh("nft", "list", "tables").splitlines())
    return "# ebtables-save\n" + eb + "\n" + ruleset(ns, "iptables") + "\n# nft list tables\n" + "\n".join(tables)


def diff(expected: str, actual: str) -> str:
    lines = difflib.unified_diff(
        expected.splitlines(), actual.splitlines(), "libvirt (replayed)", "virtfw", lineterm=""
    )
    return "\n".join(lines)


def binding_xml(name: str) -> str:
    filter_name = case_filter(name).get("name")
    params = "".join(f"<parameter name='{k}' value='{v}'/>" for k, v in PARAMETERS)
    return (
        f"<filterbinding><portdev name='{PORT}'/><mac address='{MAC}'/>"
        f"<filterref filter='{filter_name}'>{params}</filterref></filterbinding>\n"
    )


@functools.cache
def via() -> str:
    """ "cli" or "python": how namespace A gets its rules (see INSTALL_VIA)."""
    if INSTALL_VIA != "auto":
        return INSTALL_VIA
    help_text = subprocess.run(
        [sys.executable, "-m", "virtfw", "--help"], capture_output=True, text=True, check=False
    ).stdout
    return "cli" if "nwfilter-binding-create" in help_text else "python"


def install_cli(ns: Netns, name: str, tmp: Path) -> None:
    virtfw = Virtfw(ns, tmp, "iptables")
    for current in reversed(referenced(name)):  # referenced filters first
        virtfw("nwfilter-define", str(DATA / f"{current}.xml"))
    binding = tmp / "binding.xml"
    binding.write_text(binding_xml(name))
    virtfw("nwfilter-binding-create", str(binding))


def install_python(ns: Netns, name: str) -> None:
    ns.run([sys.executable, str(Path(__file__).resolve()), "install", name])


def main(argv: list[str]) -> int:
    """``install CASE``: the Python fallback, run inside namespace A."""
    from virtfw.rules.runner import Runner
    from virtfw.rules.xtables.filter import EbiptablesFilterBackend

    if len(argv) != 2 or argv[0] != "install":
        print("usage: test_conformance_nwfilter.py install CASE", file=sys.stderr)
        return 2
    EbiptablesFilterBackend().install(Runner(), [case_port_rules(argv[1])])
    return 0


# --- tests -------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _summary_note():
    CONFORMANCE_NOTES["nwfilter conformance"] = f"installed via {via()}"
    yield


def case_params():
    for name in CASES:
        reason = KNOWN_DIFFERENCES.get(name)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(name, id=name, marks=marks)


def test_cases_cover_testdata() -> None:
    """Every case with expected commands is listed, so new data is not silently skipped."""
    found = {path.name.removesuffix("-linux.args") for path in DATA.glob("*-linux.args")}
    assert found == set(CASES)
    assert set(KNOWN_DIFFERENCES) <= set(CASES)


def test_replay_restores_stripped_setup() -> None:
    """The replay puts back what commonRules[] stripped, and only that."""
    stp = [argv for argv, _ in libvirt_replay("stp")]
    assert stp[0] == ["ebtables", "--concurrent", "-t", "nat", "-N", "virtfw-J-vnet0"]
    assert stp[1] == ["ebtables", "--concurrent", "-t", "nat", "-N", "virtfw-P-vnet0"]
    assert stp[-1] == [
        "ebtables",
        "--concurrent",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-o",
        "vnet0",
        "-j",
        "virtfw-P-vnet0",
    ]
    rarp = [argv for argv, _ in libvirt_replay("rarp")]
    assert rarp.count(["ebtables", "--concurrent", "-t", "nat", "-N", "virtfw-J-vnet0"]) == 1
    assert not any("virtfw-P-vnet0" in argv for argv in rarp)
    assert not any(argv[0] == "iptables" for argv in rarp)
    tcp = [argv for argv, _ in libvirt_replay("tcp")]
    assert ["iptables", "-w", "-I", "FORWARD", "1", "-j", "virtfw-in"] in tcp
    assert tcp[-1] == ["iptables", "-w", "-E", "HJ-vnet0", "HI-vnet0"]
    assert not any(argv[0] in ("ebtables", "ip6tables") for argv in tcp)


@pytest.mark.netns
@pytest.mark.parametrize("name", case_params())
def test_ruleset_matches_libvirt(name: str, tmp_path: Path) -> None:
    """virtfw's ruleset for case NAME equals the one libvirt's commands build."""
    with netns("vfwA") as ns_a:
        prepare(ns_a, name)
        if via() == "cli":
            install_cli(ns_a, name, tmp_path)
        else:
            install_python(ns_a, name)
        actual = snapshot(ns_a)

    with netns("vfwB") as ns_b:
        prepare(ns_b, name)
        for argv, check in libvirt_replay(name):
            ns_b.run(argv, check=check)
        tear_old_rules_ebtables(ns_b)
        expected = snapshot(ns_b)

    assert actual == expected, f"{name}: virtfw's ruleset differs from libvirt's\n" + diff(expected, actual)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
