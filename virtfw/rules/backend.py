"""The one small interface every firewall backend implements, and backend choice."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from virtfw.errors import VirtfwError

if TYPE_CHECKING:  # the filter paths never need the network rule model
    from virtfw.rules.netrules import RuleSet
    from virtfw.rules.runner import Runner

# A removal record: JSON-able, holding the exact commands that undo an install.
Removal = dict


@dataclass
class Installed:
    """What one install added: per-owner removal records, and the shared base it created."""

    removals: dict[str, Removal] = field(default_factory=dict)
    base: Removal | None = None


class Backend(Protocol):
    name: str

    def install(
        self,
        runner: Runner,
        rulesets: list[RuleSet],
        *,
        rebuild: bool = False,
        before_apply: Callable[[Installed], None] | None = None,
    ) -> Installed:
        """Add the rules of ``rulesets`` (and any missing base chains) as one batch per tool.

        ``rebuild`` first empties our own chains/tables, so the result holds exactly
        ``rulesets``: the idempotent path ``reload`` takes. ``before_apply`` gets the
        removal records as far as they are known before anything is applied, so the
        caller can store them first and a process killed mid-way leaves enough to
        clean up. A failure part-way takes back what was applied.
        """

    def remove(self, runner: Runner, removal: Removal) -> bool:
        """Run a removal record; rules already gone are fine. False: needs a rebuild."""

    def verify(self, runner: Runner, removal: Removal) -> list[str]:
        """What of a removal record's rules the kernel no longer holds, one line each."""

    def merge_base(self, old: Removal | None, new: Removal | None) -> Removal | None:
        """Combine two base removal records (pieces created at different times)."""


TOOLS = {"nftables": "nft", "iptables": "iptables"}


def select_backend(requested: str | None) -> Backend:
    """The requested backend if its tool exists, else the first available one."""
    return load_backend(select_backend_name(requested))


def select_backend_name(requested: str | None) -> str:
    """Which backend :func:`select_backend` would load, without importing it."""
    if requested:
        if shutil.which(TOOLS[requested]) is None:
            raise VirtfwError(
                f"requested firewall_backend '{requested}' is not available: {TOOLS[requested]} not found on PATH"
            )
        return requested
    for name, tool in TOOLS.items():
        if shutil.which(tool):
            return name
    raise VirtfwError("could not find a usable firewall backend: install nftables or iptables")


def load_filter_backend(name: str) -> Backend:
    """The nwfilter backend paired with a network backend of the same name.

    Its ``install`` takes ``PortRules`` instead of ``RuleSet``s, and an ``old`` map of
    owner -> removal record whose rules the new ones replace atomically.
    """
    if name == "nftables":
        from virtfw.rules.nft.filter import NftFilterBackend

        return NftFilterBackend()
    if name == "iptables":
        from virtfw.rules.xtables.filter import EbiptablesFilterBackend

        return EbiptablesFilterBackend()
    raise VirtfwError(f"unknown firewall backend {name!r}")


def load_backend(name: str) -> Backend:
    if name == "nftables":
        from virtfw.rules.nft.network import NftablesBackend

        return NftablesBackend()
    if name == "iptables":
        from virtfw.rules.xtables.network import IptablesBackend

        return IptablesBackend()
    raise VirtfwError(f"unknown firewall backend {name!r}")
