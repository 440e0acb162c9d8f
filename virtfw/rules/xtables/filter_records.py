"""Removal records of the ebtables/iptables filter backend, and the tools they are for.

A record holds, per tool, the steps that take back what an install made, in the order
they run: rule deletions (the port's hooks in builtin chains and links in the shared
chains), then chain flushes and chain deletions. JSON (the shape of the untyped records,
unchanged: each tool's steps as its ``*-restore`` lines under the tool's table)::

    port: {"backend": "iptables", "kind": "nwfilter", "port": P,
           "ebtables": {"nat": [LINE, ...]}, "ipv4": {"filter": [...]}, "ipv6": {"filter": [...]},
           "counts": {TOOL: {CHAIN: N, ...}, ...}, "texts": {EBTABLES_CHAIN: [RULE, ...], ...},
           "digests": {TOOL: {CHAIN: HEX16, ...}, ...}}

``digests`` (absent in records written before the batch applied, or by a version
without them) holds, per tool, a digest of what ``*-save`` listed after the install:
for each of the port's own chains its policy and rules, and for each chain the record
deletes rules from (builtin hooks, shared link chains) the port's rules in it
(``save_digest``). ``verify`` compares them with the live tables; without them it
counts rules, and ``reload`` installs the binding again.
    base: {"backend": "iptables", "kind": "nwfilter-base",
           TOOL: {TABLE: [LINE, ...], "appeared": {"tables": [...], "chains": [...]}}, ...}

``from_json`` reads each line into a step and refuses one that names anything but the
record's own objects: a port record only the port's hooks, its links and its chains, a
base record only the shared ``virtfw-*`` chains and their hooks.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from virtfw.errors import VirtfwError
from virtfw.names import check_ifname
from virtfw.rules import records
from virtfw.rules.xtables.appeared import Appeared
from virtfw.rules.xtables.filter_render import BASE_CHAINS, eb_root, ipt_chain
from virtfw.rules.xtables.syntax import target_of, tokens


@dataclass(frozen=True)
class FilterTool:
    """One firewall tool as the filter backend drives it."""

    key: str  # what records call it: ebtables | ipv4 | ipv6
    cli: str
    table: str
    nft_family: str
    builtins: tuple[str, ...]  # builtin chains we hook into

    @property
    def save(self) -> list[str]:
        return [f"{self.cli}-save"]

    @property
    def restore(self) -> list[str]:
        return (
            [f"{self.cli}-restore", "--noflush"]
            if self.key == "ebtables"
            else [f"{self.cli}-restore", "-w", "--noflush"]
        )

    def single(self, line: str) -> list[str]:
        """One removal line as its own command (the GONE-tolerant fallback)."""
        if self.key == "ebtables":
            return [self.cli, "-t", self.table, *tokens(line)]
        return [self.cli, "-w", "-t", self.table, *tokens(line)]


EBTABLES_FILTER = FilterTool("ebtables", "ebtables", "nat", "bridge", ("PREROUTING", "POSTROUTING"))
IPV4_FILTER = FilterTool("ipv4", "iptables", "filter", "ip", ("FORWARD", "INPUT"))
IPV6_FILTER = FilterTool("ipv6", "ip6tables", "filter", "ip6", ("FORWARD", "INPUT"))
FILTER_TOOLS = (EBTABLES_FILTER, IPV4_FILTER, IPV6_FILTER)  # libvirt's order: ebtables, iptables, ip6tables
TOOLS_BY_KEY = {tool.key: tool for tool in FILTER_TOOLS}

# The port chains libvirt's layout gives each tool (the ebtables roots; sub-chains are
# ``I-PORT-NAME``/``O-PORT-NAME``) and the iptables chains every port links from.
IPT_PORT_PREFIXES = ("FO", "FI", "HI")
_SUBCHAIN_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,12}")  # a filter chain name (filter/schema.py)


# --- steps ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeleteRule:
    """``-D CHAIN SPEC``: SPEC as after ``-A CHAIN`` in restore syntax."""

    chain: str
    spec: str

    @property
    def line(self) -> str:
        return f"-D {self.chain} {self.spec}"


@dataclass(frozen=True)
class FlushChain:
    chain: str

    @property
    def line(self) -> str:
        return f"-F {self.chain}"


@dataclass(frozen=True)
class DeleteChain:
    chain: str

    @property
    def line(self) -> str:
        return f"-X {self.chain}"


Step = DeleteRule | FlushChain | DeleteChain
STEP_ORDER = {DeleteRule: 0, FlushChain: 1, DeleteChain: 2}  # rules, then flushes, then deletions


@dataclass(frozen=True)
class OwnNames:
    """Which chains a record may name: ``chains`` it may flush and delete (and hook
    from builtin chains), ``rule_chains`` it may also delete rules from."""

    chains: Callable[[str], bool]
    rule_chains: Callable[[str], bool]

    def step(self, line: object, where: str, tool: FilterTool) -> Step:
        """The step of a ``*-restore`` removal line, if it names only these chains."""
        text = records.text(line, where)
        if "\n" in text or "\r" in text or "\0" in text:
            raise records.fail(where, "a removal line holds a line break")
        parts = text.split(" ", 2)
        step: Step
        if parts[0] == "-D" and len(parts) == 3 and tokens(parts[2]):
            step = DeleteRule(parts[1], parts[2])
            hook = step.chain in tool.builtins and self.chains(str(target_of(step.spec)))
            if not (hook or self.rule_chains(step.chain)):
                raise records.fail(where, f"{text!r} deletes a rule that is not virtfw's")
            return step
        if parts[0] in ("-F", "-X") and len(parts) == 2:
            step = FlushChain(parts[1]) if parts[0] == "-F" else DeleteChain(parts[1])
            if not self.chains(step.chain):
                raise records.fail(where, f"{text!r} names a chain that is not virtfw's")
            return step
        raise records.fail(where, f"{text!r} is not a removal line (-D CHAIN RULE, -F CHAIN or -X CHAIN)")

    def steps(self, data: object, where: str, tool: FilterTool) -> tuple[Step, ...]:
        if not isinstance(data, list):
            raise records.fail(where, "expected an array")
        return tuple(self.step(line, f"{where}[{index}]", tool) for index, line in enumerate(data))


def port_names(tool: FilterTool, port: str) -> OwnNames:
    """A port's chains in TOOL; in iptables, its links sit in the shared chains."""
    if tool is EBTABLES_FILTER:
        roots = {eb_root("I", port), eb_root("O", port)}
        prefixes = (f"I-{port}-", f"O-{port}-")  # of one length
        known = set(roots)  # each chain is named up to four times in a record

        def own(chain: str) -> bool:
            if chain in known:
                return True
            if chain.startswith(prefixes) and _SUBCHAIN_NAME.fullmatch(chain, len(prefixes[0])):
                known.add(chain)
                return True
            return False

        return OwnNames(own, own)
    chains = {ipt_chain(prefix, port) for prefix in IPT_PORT_PREFIXES}
    return OwnNames(chains.__contains__, lambda chain: chain in chains or chain in BASE_CHAINS)


def base_names(tool: FilterTool) -> OwnNames:
    """The shared chains (iptables only: ebtables has none)."""
    shared = set(BASE_CHAINS) if tool is not EBTABLES_FILTER else set()
    return OwnNames(shared.__contains__, shared.__contains__)


def _check_kind(fields: dict[str, object], kind: str, where: str) -> None:
    if fields.get("backend") != "iptables" or fields.get("kind") != kind:
        raise records.fail(where, f'expected "backend": "iptables", "kind": "{kind}"')


def save_digest(policy: str | None, specs: list[str]) -> str:
    """A chain's part as ``*-save`` lists it: its policy (None for a chain that is not
    the port's own) and rule texts in order."""
    text = "\n".join([policy or "", *specs])
    return hashlib.sha256(text.encode()).hexdigest()[: records.DIGEST_LENGTH]


# --- a port's record ---------------------------------------------------------------------


@dataclass(frozen=True)
class XtablesPortRecord:
    """What one binding added, per tool: the steps that take it back (hooks and links
    first), the number of rules of each chain (for ``verify``) and, for ebtables, the
    rules themselves (for verify's messages)."""

    port: str
    steps: dict[str, tuple[Step, ...]] = field(default_factory=dict)  # tool key -> steps
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # tool key -> chain -> rules
    ebtables_rules: dict[str, tuple[str, ...]] | None = None  # chain -> rules; None: no ebtables part
    # tool key -> chain -> save_digest; None before the batch applied (or from older versions)
    digests: dict[str, dict[str, str]] | None = None

    def digested_chains(self, tool: FilterTool) -> list[str]:
        """The chains a complete record has digests of in TOOL: its own (``counts``), then
        those it deletes rules from (its hooks and links), each once."""
        rule_chains = [step.chain for step in self.steps.get(tool.key, ()) if isinstance(step, DeleteRule)]
        return list(dict.fromkeys([*self.counts.get(tool.key, {}), *rule_chains]))

    @property
    def content_known(self) -> bool:
        return self.digests is not None or not self.steps

    def bare(self) -> XtablesPortRecord:
        """The record as known before its batch applied: without digests."""
        return self if self.digests is None else replace(self, digests=None)

    def to_json(self) -> dict:
        data: dict = {"backend": "iptables", "kind": "nwfilter", "port": self.port}
        for tool in FILTER_TOOLS:
            if tool.key in self.steps:
                data[tool.key] = {tool.table: [step.line for step in self.steps[tool.key]]}
        data["counts"] = {key: dict(chains) for key, chains in self.counts.items()}
        if self.ebtables_rules is not None:
            data["texts"] = {chain: list(rules) for chain, rules in self.ebtables_rules.items()}
        if self.digests is not None:
            data["digests"] = {key: dict(chains) for key, chains in self.digests.items()}
        return data

    @classmethod
    def from_json(cls, data: object, where: str) -> XtablesPortRecord:
        keys = {"backend", "kind", "port", "counts", "texts", "digests", *TOOLS_BY_KEY}
        fields = records.obj(data, where, keys)
        _check_kind(fields, "nwfilter", where)
        port = records.text(fields.get("port"), f"{where}.port")
        try:
            check_ifname(port, "port device")
        except VirtfwError as error:
            raise records.fail(f"{where}.port", str(error)) from None
        names = {tool.key: port_names(tool, port) for tool in FILTER_TOOLS}
        steps = {}
        for tool in FILTER_TOOLS:
            if tool.key in fields:
                section = records.obj(fields[tool.key], f"{where}.{tool.key}", {tool.table})
                at = f"{where}.{tool.key}.{tool.table}"
                steps[tool.key] = names[tool.key].steps(section.get(tool.table, []), at, tool)
        counts: dict[str, dict[str, int]] = {}
        for key, chains in records.mapping(fields.get("counts", {}), f"{where}.counts", records.obj).items():
            if key not in TOOLS_BY_KEY:
                raise records.fail(f"{where}.counts", f"unexpected key {key!r}")
            counts[key] = records.integers_by_key(chains, f"{where}.counts.{key}")
            _check_chains(counts[key], names[key], f"{where}.counts.{key}")
        rules = None
        if "texts" in fields:
            rules = {
                chain: tuple(lines) for chain, lines in records.texts_by_key(fields["texts"], f"{where}.texts").items()
            }
            _check_chains(rules, names[EBTABLES_FILTER.key], f"{where}.texts")
        record = cls(port, steps, counts, rules)
        if "digests" in fields:
            record = replace(record, digests=_digests(fields["digests"], f"{where}.digests", record))
        return record


def _digests(data: object, where: str, record: XtablesPortRecord) -> dict[str, dict[str, str]]:
    """A record's digests: for each tool it has steps for, exactly the chains it names."""
    found = records.mapping(data, where, lambda value, at: records.mapping(value, at, records.digest))
    if set(found) != set(record.steps):
        raise records.fail(where, f"expected the digests of tools {sorted(record.steps)}")
    for key, chains in found.items():
        wanted = record.digested_chains(TOOLS_BY_KEY[key])
        if sorted(chains) != sorted(wanted):
            unknown = sorted(set(chains) - set(wanted))
            what = f"chain {unknown[0]!r} is not one of the port's" if unknown else "a chain of the port has none"
            raise records.fail(f"{where}.{key}", what)
    return found


def _check_chains(chains: dict, names: OwnNames, where: str) -> None:
    for chain in chains:
        if not names.chains(chain):
            raise records.fail(where, f"chain {chain!r} is not this port's")


# --- the base record -----------------------------------------------------------------------


@dataclass(frozen=True)
class XtablesToolBase:
    """One tool's part of the base: steps that take back the shared chains and their
    hooks, and the nf_tables tables and builtin chains our first hooks made appear."""

    steps: tuple[Step, ...] = ()
    appeared: Appeared = field(default_factory=Appeared)

    def __bool__(self) -> bool:
        return bool(self.steps or self.appeared)

    def to_json(self, tool: FilterTool) -> dict:
        data: dict = {tool.table: [step.line for step in self.steps]} if self.steps else {}
        if self.appeared:
            data["appeared"] = self.appeared.to_json()
        return data

    @classmethod
    def from_json(cls, data: object, where: str, tool: FilterTool) -> XtablesToolBase:
        fields = records.obj(data, where, {tool.table, "appeared"})
        steps = base_names(tool).steps(fields.get(tool.table, []), f"{where}.{tool.table}", tool)
        appeared = Appeared.from_json(fields.get("appeared", {}), f"{where}.appeared")
        if any(table != tool.table for table in appeared.tables) or any(
            table != tool.table or chain not in tool.builtins for table, chain in appeared.chains
        ):
            raise records.fail(f"{where}.appeared", f"names other than {tool.nft_family} {tool.table}'s hooks")
        return cls(steps, appeared)

    def merged(self, other: XtablesToolBase) -> XtablesToolBase:
        """Steps of both, each once, rule deletions first, then flushes, then chain
        deletions (so the shared chains go after their hooks); appeared ones united."""
        steps = sorted(dict.fromkeys(self.steps + other.steps), key=lambda step: STEP_ORDER[type(step)])
        return XtablesToolBase(tuple(steps), self.appeared.union(other.appeared))


@dataclass(frozen=True)
class XtablesFilterBaseRecord:
    """The shared chains and hooks, per tool (only the tools with a part)."""

    tools: dict[str, XtablesToolBase] = field(default_factory=dict)  # tool key -> its part

    def __bool__(self) -> bool:
        return any(self.tools.values())

    def to_json(self) -> dict:
        data: dict = {"backend": "iptables", "kind": "nwfilter-base"}
        for tool in FILTER_TOOLS:
            part = self.tools.get(tool.key)
            if part:
                data[tool.key] = part.to_json(tool)
        return data

    @classmethod
    def from_json(cls, data: object, where: str) -> XtablesFilterBaseRecord:
        fields = records.obj(data, where, {"backend", "kind", *TOOLS_BY_KEY})
        _check_kind(fields, "nwfilter-base", where)
        return cls(
            {
                tool.key: XtablesToolBase.from_json(fields[tool.key], f"{where}.{tool.key}", tool)
                for tool in FILTER_TOOLS
                if tool.key in fields
            }
        )

    def merged(self, other: XtablesFilterBaseRecord) -> XtablesFilterBaseRecord:
        """One base record from two installs' pieces."""
        tools = {}
        for tool in FILTER_TOOLS:
            parts = [record.tools[tool.key] for record in (self, other) if tool.key in record.tools]
            if parts:  # even a single part gets its steps in order
                part = parts[0].merged(parts[1] if len(parts) == 2 else XtablesToolBase())
                if part:
                    tools[tool.key] = part
        return XtablesFilterBaseRecord(tools)
