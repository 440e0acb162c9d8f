"""The backend-neutral rule model: what net/ and filter/ hand to a backend.

A rule is a logical chain, an ordered tuple of matches and a verdict. Match order is
kept because nft lists expressions in the order they were given; iptables
canonicalizes, so its backend may ignore the order.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Family(str, Enum):
    IPV4 = "ipv4"
    IPV6 = "ipv6"


class Chain(str, Enum):
    """Logical chains; each backend maps them to its own tables and chains."""

    HOST_IN = "host_in"  # traffic from guests to the host (DHCP, DNS, TFTP)
    HOST_OUT = "host_out"  # traffic from the host to guests
    FWD_CROSS = "fwd_cross"  # between guests of one network
    FWD_IN = "fwd_in"  # into a network from elsewhere
    FWD_OUT = "fwd_out"  # out of a network to elsewhere
    NAT_POST = "nat_post"  # source NAT on the way out
    MANGLE_POST = "mangle_post"  # packet fix-ups on the way out (checksum fill)


# The order the forward sets are evaluated in: cross, then incoming, then outgoing,
# so one network's outgoing accept can never admit traffic into another network.
FORWARD_ORDER = (Chain.FWD_CROSS, Chain.FWD_IN, Chain.FWD_OUT)


@dataclass(frozen=True)
class Iface:
    """Match on the input (``inbound=True``) or output interface.

    ``by_index`` follows libvirt: bridges virtfw brings up are matched by index
    (nft ``iif``), forward devices that may come and go by name (``oifname``).
    """

    name: str
    inbound: bool
    by_index: bool = True


@dataclass(frozen=True)
class Addr:
    """Match a source (``source=True``) or destination network in CIDR form."""

    cidr: str
    source: bool
    negate: bool = False


@dataclass(frozen=True)
class Proto:
    name: str  # "tcp" | "udp"


@dataclass(frozen=True)
class DPort:
    proto: str
    port: int


@dataclass(frozen=True)
class CtState:
    states: tuple[str, ...]  # lowercase: "established", "related", "new"


Match = Iface | Addr | Proto | DPort | CtState


class Action(str, Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    DROP = "drop"
    RETURN = "return"
    MASQUERADE = "masquerade"
    SNAT = "snat"
    CHECKSUM_FILL = "checksum_fill"


@dataclass(frozen=True)
class Verdict:
    action: Action
    ports: tuple[int, int] | None = None  # source port range for masquerade/snat
    addresses: tuple[str, str | None] | None = None  # snat address range


@dataclass(frozen=True)
class Rule:
    family: Family
    chain: Chain
    matches: tuple[Match, ...]
    verdict: Verdict


@dataclass(frozen=True)
class RuleSet:
    """The rules one owner (a network, later a binding) needs, in final top-down order."""

    owner: str
    rules: tuple[Rule, ...]

    def families(self) -> set[Family]:
        return {rule.family for rule in self.rules}
