"""Conformance of virtfw's nftables filter rules with libvirt's nftables nwfilter driver.

libvirt's development tree (no release yet) has the expected ``nft`` commands of 38 of
its ``nwfilterxml2firewalldata`` cases (``../shared/.../nwfilterxml2firewalldata-nftables``).
Each case is instantiated by virtfw's own XML parser and instantiation on port vnet0, and
rendered by the nftables backend (through the fake runner: no kernel needed); both
rulesets are reduced to their meaning by :mod:`helpers.nftmeaning` (one documented
comparison: per table kind and direction, the entries in evaluation order, each a set
of match terms and a verdict) and compared.

Where the two differ, libvirt's documented semantics and its released (iptables)
driver decide, as the issue asks; each such case is listed in ``KNOWN_DIFFERENCES``
with why, as a strict xfail (a case that starts to agree fails until it is removed).
"""

from __future__ import annotations

import pytest
from helpers import nftmeaning
from helpers.fakerunner import FakeRunner
from helpers.nsutil import TESTDATA, read_commands
from helpers.nwfilter_cases import NFT_CASES as CASES
from helpers.nwfilter_cases import PORT, case_port_rules

from virtfw.errors import VirtfwError

DATA = TESTDATA / "nwfilterxml2firewalldata-nftables"
pytestmark = pytest.mark.shared  # libvirt's cases, from ../shared

ICMP_DIRECTION = (
    "libvirt writes no `ct direction` on icmp/icmpv6 rules, so an accept for one direction also "
    "admits ICMP flows begun from the other (its reply rule is `ct state established` in any "
    "direction); virtfw matches the direction as for every other protocol, as libvirt's iptables "
    "driver does with --ctdir. With that clause added to libvirt's ICMP rules the case is equal."
)
STATE_NONE_AND_STATELESS = (
    "state='NONE': libvirt's nftables driver treats NONE as a state and adds ct with its defaults "
    "plus a reply rule; its iptables driver, and virtfw, match no state and add no reverse rule. "
    "statematch='false' accepts: libvirt's nftables driver writes no reverse rule; its released "
    "driver, and virtfw, mirror the stateless accept so its replies pass."
)
KNOWN_DIFFERENCES: dict[str, str] = {
    "example-1": ICMP_DIRECTION,
    "icmp": ICMP_DIRECTION,
    "icmpv6": ICMP_DIRECTION,
    "icmp-direction": ICMP_DIRECTION,
    "icmp-direction2": ICMP_DIRECTION,
    "icmp-direction3": ICMP_DIRECTION,
    "example-2": "an explicit state= (ESTABLISHED, NEW, ...): libvirt's nftables driver adds `ct "
    "direction original` and a reply rule with the same states in the other chain; its released "
    "driver, and virtfw, match just `ct state` as given, in the rule's own direction.",
    "target": "an inout accept: libvirt writes `ct direction original ct state new,established` in "
    "both chains, which admits no reply of any connection (replies are ct direction reply); "
    "virtfw writes `ct state new,established`, so both halves of a connection the rule matches pass.",
    "target2": STATE_NONE_AND_STATELESS,
    "tcp": STATE_NONE_AND_STATELESS,
    "ipt-no-macspoof": "an inout rule with srcmacaddr: libvirt's nftables driver matches the guest's "
    "own frames against srcmacaddr unswapped (dropping every frame of a guest whose MAC differs); "
    "its released driver, and virtfw, apply it to frames towards the guest only.",
    "ipv6": "icmpv6 type/code ranges (typeend, codeend) of the ipv6 element: libvirt's nftables "
    "driver drops the ends and matches the start value only; virtfw matches the range, as ebtables does.",
    "rarp": "libvirt reads the RARP protocol type at @nh,40,16 (inside the address lengths); the "
    "field is at bit 16 (@nh,16,16), where virtfw reads it.",
    "stp": "libvirt inverts every stp range match (plain ranges are written `!=`, negated ones `==`) "
    "and masks stp addresses with the address itself instead of its mask; virtfw writes them as given.",
}


def _ours(name: str) -> dict:
    from virtfw.rules.nft.filter import NftFilterBackend

    port_rules = case_port_rules(name)
    installed = NftFilterBackend().install(FakeRunner(), [port_rules])
    record = installed.removals[port_rules.owner]
    chains = {(chain.table, chain.name): list(chain.rules) for chain in record.chains}
    return nftmeaning.drop_empty(nftmeaning.meaning(chains, PORT))


def _theirs(name: str) -> dict:
    commands = read_commands(DATA / f"{name}-linux.nftables.args")
    found = nftmeaning.meaning(nftmeaning.libvirt_chains(commands, PORT), PORT)
    return nftmeaning.corrected(nftmeaning.drop_empty(found))


def _params():
    for name in CASES:
        reason = KNOWN_DIFFERENCES.get(name)
        yield pytest.param(name, marks=[pytest.mark.xfail(strict=True, reason=reason)] if reason else [])


def _require_data() -> None:
    if not DATA.is_dir():
        pytest.skip(f"libvirt's nftables expectations are not beside the checkout ({DATA})")


def test_cases_cover_the_expectations() -> None:
    _require_data()
    files = sorted(p.name.removesuffix("-linux.nftables.args") for p in DATA.glob("*-linux.nftables.args"))
    assert files == sorted(CASES)


@pytest.mark.parametrize("name", _params())
def test_rules_mean_what_libvirts_mean(name: str) -> None:
    _require_data()
    try:
        ours = _ours(name)
    except VirtfwError as exc:  # a refusal is a difference too (and says why)
        pytest.fail(f"virtfw does not render {name}: {exc}")
    theirs = _theirs(name)
    if ours != theirs:
        lines = []
        for key in sorted(set(ours) | set(theirs)):
            if ours.get(key) != theirs.get(key):
                lines.append(f"{key}:\n  virtfw:  " + "\n           ".join(map(str, ours.get(key, ()))))
                lines.append("  libvirt: " + "\n           ".join(map(str, theirs.get(key, ()))))
        pytest.fail("\n".join(lines), pytrace=False)
