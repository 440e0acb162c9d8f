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

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from virtfw.errors import VirtfwError
from virtfw.rules.runner import find_tool

if TYPE_CHECKING:  # the filter paths never need the network rule model
    from typing_extensions import Self

    from virtfw.rules.netrules import RuleSet
    from virtfw.rules.portrules import PortRules
    from virtfw.rules.runner import Runner

R = TypeVar("R")  # a backend's per-owner removal record
B = TypeVar("B")  # a backend's base record


@dataclass
class Installed(Generic[R, B]):
    """What one install added: per-owner removal records, and the shared base it created."""

    removals: dict[str, R] = field(default_factory=dict)
    base: B | None = None


NR = TypeVar("NR")  # a network backend's per-network record
NB = TypeVar("NB")  # a network backend's base record


class NetworkBackend(Protocol[NR, NB]):
    """Installs virtual networks' rules (see the module docstring for the contract).

    One per tool: ``rules/nft/network.py`` (one ``nft -f`` batch per change, rule
    handles echoed into the records) and ``rules/xtables/network.py`` (one
    ``iptables-restore``/``ip6tables-restore --noflush`` per family, the IPv4 batch
    taken back when the IPv6 one fails). The contract, for networks:

    * **Owners and records.** The owner is the network's name; its record (NR) names
      its rules. The base record (NB) names the tables or chains and hook jumps the
      first network created; the caller removes it once no network of this backend
      has rules, and combines base records of several installs with their ``merged``.
    * **What a kill leaves.** ``before_apply`` gets records that already remove all the
      batch may add: iptables the final ones; nftables an intent per network (its
      ``remove`` returns False, and the caller rebuilds the networks still active)
      and a base that removes virtfw's tables whatever their handles.
    * **What a record may name.** Only virtfw's own objects: nft rules in the
      ``virtfw_network`` tables by (family, chain, handle) and those tables; iptables
      deletions of rules in the ``VIRTFW_*`` chains, of those chains and of the jumps
      to them, and what the nf_tables tools made appear. ``load_record``/``load_base``
      refuse anything else with a :class:`~virtfw.rules.records.RecordError`.
    """

    name: str

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
        exactly ``rulesets``: the idempotent path ``reload`` takes; its records then
        replace every earlier record of these networks.
        """
        ...

    def remove(self, runner: Runner, removal: NR | NB) -> bool:
        """Run a network's or the base's record; rules already gone are fine. False:
        the record cannot be run as it stands (an intent without handles), rebuild."""
        ...

    def snapshot(self, runner: Runner) -> Any:
        """The live rules that ``verify`` and ``unexpected`` read, read once, to hand to
        several of them that look at the same moment (None: each reads its own)."""
        ...

    def verify(self, runner: Runner, removal: NR | NB, live: Any = None) -> list[str]:
        """What of a record's rules the kernel no longer holds, one line each (``live``:
        a ``snapshot`` taken since the last change, or None to read now)."""
        ...

    def load_record(self, data: object, where: str) -> NR:
        """A network's record from its JSON; RecordError (naming ``where``) if it is not one."""
        ...

    def matches(self, ruleset: RuleSet, removal: NR) -> bool:
        """Whether installing ``ruleset`` now would add exactly the rules ``removal`` holds
        (definition and code unchanged since): ``reload`` then leaves an intact ruleset be."""
        ...

    def unexpected(self, runner: Runner, removals: list[NR], live: Any = None) -> list[str]:
        """Rules in virtfw's own chains that none of ``removals`` holds, one line per chain
        (``live`` as for ``verify``)."""
        ...

    def load_base(self, data: object, where: str) -> NB:
        """The base record from its JSON (its ``merged`` combines two installs' bases)."""
        ...

    def foreign_drops(self, runner: Runner, bridges: list[str]) -> list[str]:
        """Other managers' rules that drop what virtfw accepts for ``bridges``, each with
        the way to let the guests through (verify reports them)."""
        ...


class FilterBaseRecord(Protocol):
    """A filter backend's base record: the shared pieces installs created."""

    def to_json(self) -> dict: ...

    def merged(self, other: Self) -> Self:
        """One record of both records' pieces (created by different installs)."""
        ...


BaseT = TypeVar("BaseT", bound=FilterBaseRecord)
FR = TypeVar("FR")  # a filter backend's per-port record
FB = TypeVar("FB", bound=FilterBaseRecord)


def merged_base(old: BaseT | None, new: BaseT | None) -> BaseT | None:
    """The base record after an install: the earlier one, the new one, or both merged."""
    if old is None or new is None:
        return new or old
    return old.merged(new)


class FilterBackend(Protocol[FR, FB]):
    """Installs filter bindings' rules on guest ports (see the module docstring).

    A binding is one port's filter; its record is the backend's per-port record class
    (FR), the shared tables or chains its base record (FB). The contract, for filters:

    * **What is atomic.** nftables: ``install`` is one ``nft -f`` batch, one kernel
      transaction: the old rules of a replaced port are swapped for the new ones in it,
      so a failure changes nothing. ebtables/iptables: one ``*-restore --noflush`` per
      tool (ebtables, iptables, ip6tables, in that order), and for a long ebtables
      batch one per segment between ports, each holding both the removal of its ports'
      old rules and their new ones; each is committed whole. A later batch failing
      makes the backend take back the earlier ones exactly (each records the inverse
      of what it did), so a failed ``install`` leaves the old rules and raises.
    * **What a failure or kill leaves.** ``before_apply`` gets the records (whose names
      are final before anything is applied) to store first: a process killed between
      two batches leaves records that still name everything the applied batches made.
      ``remove`` treats rules and chains already gone as removed; it returns False when
      it could not run a record as it stands (the nft tables were flushed by hand, an
      xtables line was refused for another reason): the caller then rebuilds the
      bindings still active (``install(rebuild=True)``), which makes the result hold
      exactly them.
    * **What a record may name.** Only virtfw's own objects: nft records the two
      ``virtfw_nwfilter_*`` tables, their map entries and the chains of the record's
      port; xtables records deletions of the port's hooks, links and chains and of
      the shared ``virtfw-*`` chains, and the nf_tables tables/builtin chains the
      tools made appear (``Appeared``). ``load_record``/``load_base`` refuse anything
      else with a :class:`~virtfw.rules.records.RecordError`.
    * **What the rules say.** ``install`` returns records that also hold digests of what
      the kernel lists for the port's chains once the batch is in (nft: from the batch's
      echo; xtables: from one ``*-save`` per tool after it); ``before_apply`` gets them
      without (``bare()``). ``verify`` compares them with the live ruleset, reading each
      table once per backend object; a record without them (older, or written before its
      batch applied: ``content_known`` False) is checked by rule counts only, and the
      caller installs it again on ``reload`` rather than take the ruleset for intact.
    """

    name: str

    def install(
        self,
        runner: Runner,
        ports: list[PortRules],
        *,
        old: dict[str, FR] | None = None,
        rebuild: bool = False,
        before_apply: Callable[[Installed[FR, FB]], None] | None = None,
        reuse: dict[str, FR] | None = None,
        new_ports: bool = False,
    ) -> Installed[FR, FB]:
        """Install or replace the filters of ``ports`` (see the class docstring for what is atomic).

        ``old``: owner -> the record of rules the new ones replace in the same batch,
        so a port is never unfiltered. ``reuse``: owner -> a record this backend made
        earlier from unchanged inputs (the caller compared ``render_digest``), installed
        again without rendering. ``rebuild``: the result holds exactly these ports.
        ``new_ports``: the caller's records say these ports have no rules yet and other
        bindings of this backend are in place.
        """
        ...

    def remove(self, runner: Runner, record: FR | FB) -> bool:
        """Run a port's or the base's record; rules already gone are fine. False: needs a rebuild."""
        ...

    def verify(self, runner: Runner, record: FR | FB) -> list[str]:
        """What of a record's rules the kernel no longer holds or holds otherwise (its
        digests), and for the base its hooks and the policies of virtfw's chains, one line each."""
        ...

    def content_known(self, record: FR) -> bool:
        """Whether ``verify`` compares what ``record``'s rules say, not only their number."""
        ...

    def load_record(self, data: object, where: str) -> FR:
        """A port's record from its JSON; RecordError (naming ``where``) if it is not one."""
        ...

    def load_base(self, data: object, where: str) -> FB:
        """The base record from its JSON; RecordError (naming ``where``) if it is not one."""
        ...

    def unexpected(self, runner: Runner, records: list[FR]) -> list[str]:
        """What is in virtfw's own tables or chains that none of ``records`` holds."""
        ...

    def render_digest(self) -> str | None:
        """A digest of the code that renders this backend's records from PortRules; None
        when its records cannot be installed again (``reuse`` must then stay empty)."""
        ...


# A module's own imports of virtfw modules (unindented: not the lazy ones of other code
# paths, nor those only for type checking). A regular expression rather than ``ast``:
# parsing every file took 50 ms per digest.
_IMPORT = re.compile(r"^import[ \t]+(virtfw[\w.]*)", re.MULTILINE)
_FROM_IMPORT = re.compile(r"^from[ \t]+(virtfw[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)", re.MULTILINE)


def module_digest(*names: str) -> str:
    """A digest of the virtfw version and the source of modules ``names`` and of every
    virtfw module they import at module level, directly or not (read from the files, not
    imported): the code they draw on is part of it, whichever module it is moved to."""
    import hashlib

    import virtfw

    package = Path(virtfw.__file__).parent

    def source(module: str) -> Path | None:
        """The file of virtfw module ``module``; None for any other name (a class, say)."""
        relative = package.joinpath(*module.split(".")[1:])
        for path in (relative.parent / f"{relative.name}.py", relative / "__init__.py"):
            if path.is_file():
                return path
        return None

    todo, seen = list(names), set()
    files: list[tuple[str, Path]] = []
    while todo:
        module = todo.pop()
        path = source(module) if module not in seen else None
        seen.add(module)
        if path is None:
            continue
        files.append((module, path))
        text = path.read_text()
        todo += _IMPORT.findall(text)
        for module, imported in _FROM_IMPORT.findall(text):
            # the module, and each name in case it is a submodule (``from virtfw.rules import records``)
            todo += [module, *(f"{module}.{name}" for name in re.findall(r"\w+", imported))]
    digest = hashlib.sha256(virtfw.__version__.encode())
    for module, path in sorted(files):
        digest.update(f"{module}\0".encode() + path.read_bytes())
    return digest.hexdigest()


# The command that tells whether a backend's tools are installed.
BACKEND_TOOLS = {"nftables": "nft", "iptables": "iptables"}


def select_backend(requested: str | None) -> NetworkBackend[Any, Any]:
    """The requested backend if its tool exists, else the first available one."""
    return load_backend(select_backend_name(requested))


def select_backend_name(requested: str | None) -> str:
    """Which backend :func:`select_backend` would load, without importing it."""
    if requested:
        if find_tool(BACKEND_TOOLS[requested]) is None:
            raise VirtfwError(
                f"requested firewall_backend '{requested}' is not available: "
                f"{BACKEND_TOOLS[requested]} not found on PATH"
            )
        return requested
    for name, tool in BACKEND_TOOLS.items():
        if find_tool(tool):
            return name
    raise VirtfwError("could not find a usable firewall backend: install nftables or iptables")


def load_filter_backend(name: str, state_dir: Path | None = None) -> FilterBackend[Any, Any]:
    """The nwfilter backend that shares a network backend's name (and tools); ``state_dir``
    is where it may keep what it learnt of the kernel (nftables: its bridge features)."""
    if name == "nftables":
        from virtfw.rules.nft.filter import NftFilterBackend
        from virtfw.rules.nft.kernel import cache_path

        return NftFilterBackend(cache_path(state_dir) if state_dir is not None else None)
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
