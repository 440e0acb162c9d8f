"""The two firewall-backend interfaces, their records, and which backend to use.

A backend turns backend-neutral rules into one tool's batches and applies them. There
are two kinds, each with one module per tool (``rules/nft/``, ``rules/xtables/``):

* a :class:`NetworkBackend` installs :class:`~virtfw.rules.netrules.RuleSet`\\ s, the
  rules of virtual networks, into virtfw's own chains or tables;
* a :class:`FilterBackend` installs :class:`~virtfw.rules.portrules.PortRules`, the
  instantiated nwfilter rules of guest ports.

The contract both keep:

* **What is atomic.** ``install`` applies one batch per tool (nft: one ``nft -f``,
  which the kernel commits as one transaction; xtables: one ``*-restore --noflush``
  per tool, or per segment of a long ebtables batch, each committed whole). Several
  batches are not atomic together: when a later one fails, the earlier ones are
  taken back exactly, so a failed ``install`` leaves the ruleset as it found it and
  raises.
* **What a kill leaves.** ``before_apply`` receives the records as far as they are
  known before anything is applied (for nft networks, an intent without handles); the
  caller stores them, so a process killed at any point leaves enough for the next
  ``remove`` or a rebuild to clean up.
* **What a record may remove.** A record names only objects the backend made (its own
  tables, chains, rules and hook jumps); ``remove`` removes exactly those, treats what
  is already gone as removed, and returns False when the record cannot be run as it
  stands (the caller then rebuilds the owners still active). Records are typed
  dataclasses with ``to_json``/``from_json``; ``from_json`` refuses anything that is not
  of the record's shape, since status files are input like any other.
* **Shared pieces.** Chains or tables every owner needs (the *base*) are created by the
  first install that needs them and recorded separately, in a base record; base
  records of several installs combine with ``merged``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from virtfw.errors import VirtfwError

if TYPE_CHECKING:  # the filter paths never need the network rule model
    from typing_extensions import Self

    from virtfw.rules.netrules import RuleSet
    from virtfw.rules.portrules import PortRules
    from virtfw.rules.runner import Runner

# A removal record as JSON (the form status files hold). Being replaced by each
# backend's typed record classes.
Removal = dict

R = TypeVar("R")  # a backend's per-owner removal record
B = TypeVar("B")  # a backend's base record


class Record(Protocol):
    """A typed removal record: what status files hold, as JSON."""

    def to_json(self) -> dict: ...


class BaseRecord(Record, Protocol):
    """A base record: the shared pieces one install created."""

    def merged(self, other: Self) -> Self:
        """Both records' pieces (created at different times), as one record."""
        ...


NR = TypeVar("NR", bound=Record)  # a network backend's per-network record
NB = TypeVar("NB", bound=BaseRecord)  # a network backend's base record


@dataclass
class Installed(Generic[R, B]):
    """What one install added: per-owner removal records, and the shared base it created."""

    removals: dict[str, R] = field(default_factory=dict)
    base: B | None = None


class NetworkBackend(Protocol[NR, NB]):
    """Installs virtual networks' rules; the module docstring's contract, for networks:

    * The owner is the network's name. Each network gets one record of its rules (type
      ``NR``); the shared tables or chains, with the jumps into them, one base record
      (``NB``), which the caller removes once no network of this backend has rules.
    * ``before_apply`` gets records that already remove everything the batch may add
      (iptables: the final ones; nftables: an intent per network, whose ``remove``
      returns False so the caller rebuilds the networks still active, and a base that
      removes our tables whatever their handles).
    * Records name only the backend's own objects; ``load_record``/``load_base`` read
      them back from status JSON and refuse anything else (:class:`~virtfw.rules.records.RecordError`).
    """

    name: str

    def load_record(self, data: object, where: str) -> NR:
        """A network's record from its status file's JSON; ``where`` names it in errors."""
        ...

    def load_base(self, data: object, where: str) -> NB:
        """The base record from its file's JSON."""
        ...

    def install(
        self,
        runner: Runner,
        rulesets: list[RuleSet],
        *,
        rebuild: bool = False,
        before_apply: Callable[[Installed[NR, NB]], None] | None = None,
    ) -> Installed[NR, NB]:
        """Add the rules of ``rulesets`` (and any missing base) as one batch per tool.

        ``rebuild`` first empties virtfw's own chains/tables, so the result holds
        exactly ``rulesets``: the idempotent path ``reload`` takes; the records returned
        then replace every earlier one of these networks.
        """
        ...

    def remove(self, runner: Runner, record: NR | NB) -> bool:
        """Run a record; what is already gone is fine. False: it needs a rebuild."""
        ...

    def verify(self, runner: Runner, record: NR | NB) -> list[str]:
        """What of a record's objects the kernel no longer holds, one line each."""
        ...

    def foreign_drops(self, runner: Runner, bridges: list[str]) -> list[str]:
        """Other managers' rules that drop what ours accept on ``bridges``, one line each
        saying where and how to let the guests through (verify reports them)."""
        ...


class FilterBackend(Protocol):
    """Installs filter bindings' rules on guest ports; see the module docstring."""

    name: str

    def install(
        self,
        runner: Runner,
        ports: list[PortRules],
        *,
        old: dict[str, Any] | None = None,
        rebuild: bool = False,
        before_apply: Callable[[Installed[Any, Any]], None] | None = None,
        reuse: dict[str, Any] | None = None,
        new_ports: bool = False,
    ) -> Installed[Any, Any]:
        """Install or replace the filters of ``ports`` as one batch per tool.

        ``old``: owner -> the record of rules the new ones replace in the same batch,
        so a port is never unfiltered. ``reuse``: owner -> a record this backend made
        earlier from unchanged inputs, installed again without rendering. ``rebuild``:
        the result holds exactly these ports. ``new_ports``: the caller's records say
        these ports have no rules yet and other bindings of this backend are in place.
        """
        ...

    def remove(self, runner: Runner, removal: Any) -> bool:
        """Run a removal record; rules already gone are fine. False: needs a rebuild."""
        ...

    def verify(self, runner: Runner, removal: Any) -> list[str]:
        """What of a record's rules the kernel no longer holds, one line each."""
        ...

    def merge_base(self, old: Any, new: Any) -> Any:
        """Combine two base records (pieces created at different times)."""
        ...


Backend = NetworkBackend | FilterBackend  # being split: callers name the kind they use

# The command that tells whether a backend's tools are installed.
BACKEND_TOOLS = {"nftables": "nft", "iptables": "iptables"}


def select_backend(requested: str | None) -> NetworkBackend[Any, Any]:
    """The requested backend if its tool exists, else the first available one."""
    return load_backend(select_backend_name(requested))


def select_backend_name(requested: str | None) -> str:
    """Which backend :func:`select_backend` would load, without importing it."""
    if requested:
        if shutil.which(BACKEND_TOOLS[requested]) is None:
            raise VirtfwError(
                f"requested firewall_backend '{requested}' is not available: "
                f"{BACKEND_TOOLS[requested]} not found on PATH"
            )
        return requested
    for name, tool in BACKEND_TOOLS.items():
        if shutil.which(tool):
            return name
    raise VirtfwError("could not find a usable firewall backend: install nftables or iptables")


def load_filter_backend(name: str) -> FilterBackend:
    """The nwfilter backend that shares a network backend's name (and tools)."""
    if name == "nftables":
        from virtfw.rules.nft.filter import NftFilterBackend

        return NftFilterBackend()
    if name == "iptables":
        from virtfw.rules.xtables.filter import EbiptablesFilterBackend

        return EbiptablesFilterBackend()
    raise VirtfwError(f"unknown firewall backend {name!r}")


def load_backend(name: str) -> NetworkBackend[Any, Any]:
    """The network backend of that name."""
    if name == "nftables":
        from virtfw.rules.nft.network import NftablesBackend

        return NftablesBackend()
    if name == "iptables":
        from virtfw.rules.xtables.network import IptablesBackend

        return IptablesBackend()
    raise VirtfwError(f"unknown firewall backend {name!r}")
