"""nftables backend for filter bindings: verdict-map dispatch, one batch per change.

Two ``bridge`` tables of our own, named after libvirt's newer nftables layout:
``virtfw_nwfilter_ethernet`` (layer-2 rules) and ``virtfw_nwfilter_inet`` (layer-3).
Each has maps ``vmap-iif`` / ``vmap-oif`` from port name to the port's chains
``n-PORT-out`` (from the guest) and ``n-PORT-in`` (to the guest), consulted once by
the hook chains, so a packet's cost does not grow with the number of bindings.

Connection tracking: the bridge family can only match ``ct`` where the kernel has
nf_conntrack_bridge. Without it, rules are stateless, as libvirt's own rules are
with ``statematch='false'``: an accept in one direction is mirrored (addresses and
ports swapped) into the other. An explicit ``state=`` match is refused.

What the rules say is checked, not only that they are there: a port's record keeps, per
chain, a digest of the chain's rules as the kernel holds them (``listing.chain_digest``
of the lines ``nft -s`` prints for them). ``verify`` (and ``reload``, which leaves an
intact ruleset alone) lists each table once, as text (``listing``: 0.4 s next to 1,000
ports, where ``-j`` takes 0.9 s and its decoding 0.45 s more), and compares. The batch
itself is not echoed: with ``-e`` nft 1.0.6 first fetches the whole ruleset, 290 ms next
to 1,000 ports for a one-port batch. Instead, after the batch, the chains whose digests
are not known (a record installed again as it is, ``reuse``: same code, inputs and nft,
keeps its own) are added once more, alone, to an empty table of a private network
namespace (``unshare --net``, gone with the process) with ``nft -e -s -f``: the same nft
and kernel print the same rules, each echoed ``add rule bridge TABLE CHAIN`` (nft 1.0.6
puts the position, ``handle N``, after the chain) and then the line a listing prints, in
10 ms for a port. Above PRIVATE_ECHO_RULES rules (a rebuild rendering many ports), and
where no such namespace can be made, the tables here are listed instead.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from virtfw.errors import ToolError, VirtfwError
from virtfw.rules.backend import Installed, module_digest
from virtfw.rules.layout import Jump, is_layer2, layer2_layout, layer3_rules
from virtfw.rules.nft.filter_records import (
    ETHERNET,
    INET,
    TABLES,
    VMAPS,
    NftFilterBaseRecord,
    NftPortRecord,
    PortChain,
    chain_names,
)
from virtfw.rules.nft.kernel import WAYS_OUT, KernelFeatures, describe, needs_message
from virtfw.rules.nft.listing import (
    LIST,
    LIST_CHAINS,
    LIST_MAPS,
    TableListing,
    chain_digest,
    check_names,
    parse_chains,
    parse_maps,
    parse_table,
)
from virtfw.rules.nft.syntax import (
    SAME_IP_SET,
    bare_verdict,
    ifname,
    jump_match,
    layer2_expr,
    layer3_expr,
    layer3_needs,
    layer3_plan,
    port_rule_text,
    same_ip_set,
)
from virtfw.rules.portrules import PortRules
from virtfw.rules.runner import Runner, find_tool

BASE_CHAINS = ("prerouting", "postrouting")  # each holds its one dispatching rule
# The one rule of each hook chain, as nft lists it: the port's chain by its name.
DISPATCH = {"prerouting": "iifname vmap @vmap-iif", "postrouting": "oifname vmap @vmap-oif"}
ECHO = ["nft", "-e", "-s", "-f"]
PRIVATE_ECHO_RULES = 4000  # above: the tables are listed here (see the module docstring)
# An echoed rule: its table, chain, and the line a listing prints for it.
_ECHOED_RULE = re.compile(r"(?:add|insert) rule bridge (\S+) (\S+) (?:handle \d+ )?(.+)")


@functools.cache
def _nft_version() -> str:
    """Which nft decodes the kernel's rules (digests are of its decoding): its version
    line, asked once per process; "none" without nft."""
    path = find_tool("nft")
    if path is None:
        return "none"
    try:
        proc = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    except OSError as exc:
        raise VirtfwError(f"cannot run nft --version: {exc.strerror}") from None
    if proc.returncode != 0 or not proc.stdout.strip():
        raise VirtfwError(f"nft --version failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout.strip()


class NftFilterBackend:
    name = "nftables"

    def __init__(self, kernel_cache: Path | None = None) -> None:
        self.kernel = KernelFeatures(kernel_cache)

    # ---- records --------------------------------------------------------------

    @staticmethod
    def load_record(data: object, where: str) -> NftPortRecord:
        return NftPortRecord.from_json(data, where)

    @staticmethod
    def load_base(data: object, where: str) -> NftFilterBaseRecord:
        return NftFilterBaseRecord.from_json(data, where)

    @staticmethod
    def render_digest() -> str:
        """The code a port's record depends on besides its PortRules (this module and
        what it draws on, and the version of nft, whose decoding its digests are): a record
        made by the same code from equal inputs can be installed again as it is
        (``reuse``), digests and all."""
        return hashlib.sha256(f"{module_digest(__name__)} {_nft_version()}".encode()).hexdigest()

    @staticmethod
    def content_known(record: NftPortRecord) -> bool:
        """Whether ``verify`` compares what the record's rules say (its digests were taken)."""
        return record.content_known

    # ---- rendering ----------------------------------------------------------

    def _port_chains(self, ports: PortRules) -> tuple[dict[tuple[str, str], list[str]], NftPortRecord]:
        """Each chain of one port with its rules, and the record of what they are."""
        chains: dict[tuple[str, str], list[str]] = {}
        rules = list(ports.rules)
        port = ports.port
        for direction, to_guest in (("out", False), ("in", True)):
            root = chain_names(port, direction)
            layout = layer2_layout(rules, direction)
            body: list[str] = []
            chains[(ETHERNET, root)] = body
            subchains = {
                name: [
                    text for rule in sub_rules
                    for text in port_rule_text(rule, layer2_expr(rule, rule.direction == "inout" and not to_guest))
                ]
                for name, sub_rules in layout.subchains.items()
            }  # fmt: skip
            for entry in layout.root:
                if isinstance(entry, Jump):
                    verdict = bare_verdict(entry.chain, subchains[entry.chain])
                    target = verdict or f"jump {root}-{entry.chain}"
                    body.append(f"{jump_match(entry.chain)} {target}".strip())
                else:
                    body.extend(port_rule_text(entry, layer2_expr(entry, entry.direction == "inout" and not to_guest)))
            for sub_name, sub_body in subchains.items():
                if not bare_verdict(sub_name, sub_body):
                    chains[(ETHERNET, f"{root}-{sub_name}")] = sub_body
            l3_body: list[str] = []
            for rule in layer3_rules(rules):
                for mirrored, ct in layer3_plan(rule, to_guest):
                    l3_body.extend(port_rule_text(rule, f"{layer3_expr(rule, mirrored)} {ct}".strip()))
            chains[(INET, root)] = l3_body
        # A table in which the port has no rule at all gets no chains and no map entry:
        # clean-traffic is all layer 2, so its packets never visit the inet table.
        used = {t for (t, _), body in chains.items() if body}
        chains = {key: body for key, body in chains.items() if key[0] in used}
        record = NftPortRecord(
            port,
            NftPortRecord.elements_for(port, sorted(used)),
            tuple(PortChain(table, chain, tuple(body)) for (table, chain), body in chains.items()),
        )
        return chains, record

    @staticmethod
    def _blocks(chains: dict[tuple[str, str], list[str]]) -> list[str]:
        """Chains in nft's block syntax: parsed much faster than one 'add rule' per line."""
        lines: list[str] = []
        for table in TABLES:
            mine = [(c, body) for (t, c), body in chains.items() if t == table]
            if not mine:
                continue
            lines.append(f"table bridge {table} {{")
            if any(SAME_IP_SET in rule for _, body in mine for rule in body):
                lines.append(same_ip_set())  # declared again only adds what is missing
            for chain, body in mine:
                lines.append(f"chain {chain} {{")
                lines.extend(body)
                lines.append("}")
            lines.append("}")
        return lines

    @staticmethod
    def _base_lines(rebuild: bool) -> list[str]:
        lines = []
        for table, priority in TABLES.items():
            t = f"bridge {table}"
            if rebuild:
                lines += [f"add table {t}", f"delete table {t}"]
            lines += [
                f"add table {t}",
                f"add map {t} vmap-iif {{ type ifname : verdict; }}",
                f"add map {t} vmap-oif {{ type ifname : verdict; }}",
                f"add chain {t} prerouting {{ type filter hook prerouting priority {priority}; policy accept; }}",
                f"add chain {t} postrouting {{ type filter hook postrouting priority {priority}; policy accept; }}",
                f"flush chain {t} prerouting",
                f"flush chain {t} postrouting",
                f"add rule {t} prerouting iifname vmap @vmap-iif",
                f"add rule {t} postrouting oifname vmap @vmap-oif",
            ]
        return lines

    @staticmethod
    def _base_present(runner: Runner) -> bool:
        """Both dispatching hook chains exist. Listing just those is cheap; nft 1.0.6
        fetches every rule of the ruleset for 'list tables', 0.5 s next to 1,000 ports."""
        query = "".join(f"list chain bridge {table} prerouting\n" for table in TABLES)
        result = runner.run(["nft", "-f", "-"], stdin=query, change=False, check=False)
        return result.returncode == 0 and not runner.dry_run

    @staticmethod
    def _recorded_chains(record: NftPortRecord) -> dict[tuple[str, str], list[str]]:
        return {(chain.table, chain.name): list(chain.rules) for chain in record.chains}

    # ---- the interface ------------------------------------------------------

    def install(
        self,
        runner: Runner,
        ports: list[PortRules],
        *,
        old: dict[str, NftPortRecord] | None = None,
        rebuild: bool = False,
        before_apply: Callable[[Installed[NftPortRecord, NftFilterBaseRecord]], None] | None = None,
        reuse: dict[str, NftPortRecord] | None = None,
        new_ports: bool = False,
    ) -> Installed[NftPortRecord, NftFilterBaseRecord]:
        """Install (or replace) the filters of ``ports`` in one nft batch.

        ``reuse``: owner -> a record this backend made earlier from the same rules (the
        caller knows their inputs did not change): installed again from its chain texts,
        without rendering. ``rebuild``: the tables are made anew, holding only these.
        ``new_ports``: the caller's records say other bindings are in place.
        """
        old = old or {}
        # The tables, maps and dispatching hook chains: (re)made only when missing, since
        # re-adding the hook rules makes nft read back chains of a large ruleset. With
        # ``new_ports`` (other bindings are in place) they are not even looked for: if
        # they are gone after all, the batch fails on the missing map and goes again
        # with them.
        probe = not (rebuild or new_ports) or runner.dry_run
        lines = self._base_lines(rebuild) if rebuild or (probe and not self._base_present(runner)) else []
        installed: Installed[NftPortRecord, NftFilterBaseRecord] = Installed(base=NftFilterBaseRecord())
        chains: dict[tuple[str, str], list[str]] = {}
        dropped: list[str] = []
        added: dict[tuple[str, str], list[str]] = {}  # (table, map) -> "port : jump chain"
        self._check_kernel(runner, ports)
        for owner, record in (reuse or {}).items():  # made on another kernel, perhaps
            if lacks := self._kernel_lacks(runner, record):
                raise VirtfwError(f"binding {record.port}: {lacks[0]}; {WAYS_OUT}")
        rendered = [(pr.owner, *self._port_chains(pr)) for pr in ports]
        rendered += [(owner, self._recorded_chains(record), record) for owner, record in (reuse or {}).items()]
        for owner, port_chains, record in rendered:
            previous = old.get(owner)
            elements = list(record.elements)
            if previous is not None and not rebuild:
                # replaced in place: the port's chains are emptied and refilled in this same
                # transaction; map entries and chains it no longer has go after the swap
                lines += [f"add chain bridge {t} {c}\nflush chain bridge {t} {c}" for t, c in port_chains]
                before = previous.elements
                dropped += [
                    f"delete element bridge {e.table} {e.vmap} {{ {ifname(e.port)} }}"
                    for e in before
                    if e not in elements
                ]
                kept = set(port_chains)
                dropped += [
                    f"delete chain bridge {c.table} {c.name}" for c in previous.chains if (c.table, c.name) not in kept
                ]
                elements = [e for e in elements if e not in before]
            for element in elements:
                added.setdefault((element.table, element.vmap), []).append(
                    f"{ifname(element.port)} : jump {element.chain}"
                )
            chains.update(port_chains)
            installed.removals[owner] = record
        lines += self._blocks(chains)
        for (table, vmap), entries in added.items():
            lines.append(f"add element bridge {table} {vmap} {{ {', '.join(entries)} }}")
        lines += dropped
        if before_apply:  # the records as known before the batch: no digests yet
            before_apply(Installed({o: r.bare() for o, r in installed.removals.items()}, installed.base))
        try:
            result = runner.run(["nft", "-f", "-"], stdin="\n".join(lines) + "\n", check=probe or rebuild)
            if result.returncode != 0:  # not probed, and the base was gone after all
                runner.run(["nft", "-f", "-"], stdin="\n".join(self._base_lines(False) + lines) + "\n")
        except ToolError as exc:
            raise VirtfwError(f"nft refused the filter batch: {exc}") from None
        unknown = {(c.table, c.name): list(c.rules) for _, _, r in rendered for c in r.chains if c.digest is None}
        if unknown and not runner.dry_run:
            self._take_digests(runner, installed, unknown)
        return installed

    def _take_digests(
        self,
        runner: Runner,
        installed: Installed[NftPortRecord, NftFilterBaseRecord],
        unknown: dict[tuple[str, str], list[str]],
    ) -> None:
        """The digests of the ``unknown`` chains just installed, in place in ``installed``
        (see the module docstring for where they are read). A chain whose rules are not
        read back as many as it was given (or at all) keeps none: then ``verify`` counts
        its rules, and ``reload`` installs it again."""
        listed = None
        tables = {table for table, _ in unknown}
        if sum(len(rules) for rules in unknown.values()) <= PRIVATE_ECHO_RULES:
            listed = self._private_echo(runner, unknown)
        if listed is None:
            listed = {}
            for table in sorted(tables):
                items = self._list(runner, table)
                if items is None or items.doubts:  # gone, or not readable as ours: no digests
                    tables.discard(table)
                    continue
                listed.update({(table, chain): rules for chain, rules in items.rules.items()})
        for owner, record in installed.removals.items():
            if not any((chain.table, chain.name) in unknown for chain in record.chains):
                continue
            chains = []
            for chain in record.chains:
                if (chain.table, chain.name) not in unknown:
                    chains.append(chain)
                    continue
                lines = listed.get((chain.table, chain.name), [])
                read = chain.table in tables and len(lines) == len(chain.rules)
                chains.append(dataclasses.replace(chain, digest=chain_digest(lines) if read else None))
            if all(chain.digest is not None for chain in chains):  # all or none: see to_json
                installed.removals[owner] = dataclasses.replace(record, chains=tuple(chains))

    def _private_echo(
        self, runner: Runner, chains: dict[tuple[str, str], list[str]]
    ) -> dict[tuple[str, str], list[str]] | None:
        """(table, chain) -> its rules' lines, as nft echoes ``chains`` added to empty
        tables of a private network namespace; None when none can be made."""
        try:
            unshare = runner.which("unshare")
        except VirtfwError:
            return None
        argv = [unshare, "--net", "--", *ECHO]
        try:
            result = runner.run_file(argv, "\n".join(self._blocks(chains)) + "\n", check=False)
        except VirtfwError:
            return None
        if result.returncode != 0 or not result.stdout.strip():
            return None
        echoed: dict[tuple[str, str], list[str]] = {}
        for line in result.stdout.split("\n"):
            match = _ECHOED_RULE.fullmatch(line)
            if match and match.group(1) in TABLES:
                echoed.setdefault((match.group(1), match.group(2)), []).append(match.group(3))
        return echoed

    def _check_kernel(self, runner: Runner, ports: list[PortRules]) -> None:
        """Refuse, before anything changes, rules this kernel's bridge family cannot hold:
        never a weaker rule in their place. The kernel is asked only if a rule needs it."""
        for port_rules in ports:
            for rule in port_rules.rules:
                if is_layer2(rule):
                    continue
                for feature in layer3_needs(rule):
                    if not self.kernel.has(runner, feature):
                        what = f"binding {port_rules.port}: {rule.origin or f'a {rule.protocol} rule'}"
                        raise VirtfwError(needs_message(feature, what))

    def remove(self, runner: Runner, record: NftPortRecord | NftFilterBaseRecord) -> bool:
        if isinstance(record, NftFilterBaseRecord):
            lines = [f"add table bridge {t}\ndelete table bridge {t}" for t in record.tables]
            runner.run(["nft", "-f", "-"], stdin="\n".join(lines) + "\n")
            return True
        result = runner.run(["nft", "-f", "-"], stdin=self._removal_lines(record, present=None), check=False)
        if result.returncode == 0:
            return True
        present = self._present(runner)
        if not present:
            return False  # our tables are gone (flushed): the others need a rebuild
        runner.run(["nft", "-f", "-"], stdin=self._removal_lines(record, present))
        return True

    def _removal_lines(self, record: NftPortRecord, present: set[tuple[str, str]] | None) -> str:
        lines = []
        for element in record.elements:
            if present is None or (element.table, f"@{element.vmap}:{element.port}") in present:
                lines.append(f"delete element bridge {element.table} {element.vmap} {{ {ifname(element.port)} }}")
        roots = {chain_names(record.port, d) for d in VMAPS.values()}
        ordered = sorted(record.chains, key=lambda chain: chain.name not in roots)  # roots hold the jumps: first
        for chain in ordered:
            if present is None or (chain.table, chain.name) in present:
                lines.append(f"delete chain bridge {chain.table} {chain.name}")
        return "\n".join(lines) + "\n"

    def _present(self, runner: Runner) -> set[tuple[str, str]]:
        """Our chains and map keys as the kernel has them (only on the repair path)."""
        found: set[tuple[str, str]] = set()
        for table, items in self._read(runner).items():
            if items is None:
                continue
            found |= {(table, chain) for chain in items.chains}
            found |= {(table, f"@{vmap}:{key}") for vmap, entries in items.maps.items() for key in entries}
        return found

    def _listing(self, runner: Runner) -> dict[str, TableListing | None]:
        """Each table as listed: one listing serves every record this object checks."""
        if not hasattr(self, "_listed"):
            self._listed = self._read(runner)
        return self._listed

    def _read(self, runner: Runner) -> dict[str, TableListing | None]:
        """Our tables' chains (a text listing each) and their maps' entries (one JSON
        listing of the family's maps), checked against the family's chain names in JSON
        (see ``listing``); None for a table that is not there."""
        found = {table: self._list(runner, table) for table in TABLES}
        if any(found.values()):
            result = runner.run([*LIST_MAPS, "bridge"], change=False, check=False)
            maps = parse_maps(result.stdout) if result.returncode == 0 else {}
            result = runner.run([*LIST_CHAINS, "bridge"], change=False, check=False)
            chains = parse_chains(result.stdout) if result.returncode == 0 else None
            for table, items in found.items():
                if items is not None:
                    items.maps = maps.get(table, {})
                    check_names(items, None if chains is None else chains.get(table, []))
        return found

    def verify(self, runner: Runner, record: NftPortRecord | NftFilterBaseRecord) -> list[str]:
        """Our chains, map entries and rules (what they say where the record has their
        digests, else their number) against the kernel's; for the base, its hook chains:
        their dispatching rule, hook, priority and policy."""
        listed = self._listing(runner)
        if isinstance(record, NftFilterBaseRecord):
            problems = [f"table bridge {t} is missing" for t in record.tables if listed.get(t) is None]
            for table, items in listed.items():
                if items is None:
                    continue
                if items.doubts:  # a decoy could stand in for any chain, ours included
                    problems.append(
                        f"table bridge {table} cannot be read as virtfw's ({'; '.join(dict.fromkeys(items.doubts))}): "
                        "objects were added whose names or comments nft prints ambiguously"
                    )
                for hook in BASE_CHAINS:
                    where = f"bridge {table} {hook}"
                    if hook not in items.chains:
                        problems.append(f"chain {where} is missing")
                        continue
                    if DISPATCH[hook] not in items.rules[hook]:
                        problems.append(f"{where} no longer dispatches through its verdict map")
                    line = items.hooks.get(hook)
                    if line is None:
                        problems.append(f"{where} is no longer a hook chain")
                        continue
                    wanted = {"type": "filter", "hook": hook, "prio": TABLES[table], "policy": "accept"}
                    for key, value in wanted.items():
                        if getattr(line, key) != value:
                            problems.append(f"{where} has {key} {getattr(line, key)}, not {value}")
            return problems
        problems = self._kernel_lacks(runner, record)
        for element in record.elements:
            items = listed.get(element.table)
            if items is None:
                problems.append(f"table bridge {element.table} is missing")
                continue
            if items.maps.get(element.vmap, {}).get(element.port) != element.chain:
                problems.append(f"bridge {element.table} {element.vmap} has no entry for {element.port}")
        for chain in record.chains:
            items = listed.get(chain.table)
            if items is None:
                continue
            expected = len(chain.rules)
            found = len(items.rules.get(chain.name, ()))
            texts = "; ".join(chain.rules)
            if chain.name not in items.rules:
                problems.append(f"chain bridge {chain.table} {chain.name} is missing")
            elif found != expected:
                problems.append(
                    f"chain bridge {chain.table} {chain.name} holds {found} rules, {expected} were installed: {texts}"
                )
            elif chain.digest is not None and items.digest(chain.name) != chain.digest:
                problems.append(
                    f"chain bridge {chain.table} {chain.name}: its rules were changed, those installed: {texts}"
                )
        return list(dict.fromkeys(problems))

    def unexpected(self, runner: Runner, records: list[NftPortRecord]) -> list[str]:
        """Chains, map entries and hook rules in our tables that no record holds (someone
        added them): what ``verify`` cannot see port by port."""
        problems = []
        for table, items in self._listing(runner).items():
            if items is None:
                continue
            chains = {c.name for r in records for c in r.chains if c.table == table} | set(BASE_CHAINS)
            problems += [
                f"chain bridge {table} {name} that virtfw did not add" for name in sorted(items.chains - chains)
            ]
            entries = {(e.vmap, e.port) for r in records for e in r.elements if e.table == table}
            for vmap, found in items.maps.items():
                problems += [f"bridge {table} {vmap} entry {port} that virtfw did not add"
                             for port in sorted(found) if (vmap, port) not in entries]  # fmt: skip
            for chain in BASE_CHAINS:
                if len(items.rules.get(chain, ())) > 1:
                    problems.append(f"bridge {table} {chain} holds rules that virtfw did not add")
        return problems

    def _kernel_lacks(self, runner: Runner, record: NftPortRecord) -> list[str]:
        """What the port's recorded rules need that the running kernel does not have (a
        module unloaded, or state carried over to another kernel)."""
        texts = [f" {rule.split(' comment ')[0]} " for chain in record.chains for rule in chain.rules]
        needs = {"conntrack"} if any(" ct " in text for text in texts) else set()
        needs |= {"ct_count"} if any(" ct count " in text for text in texts) else set()
        return [
            f"its rules need {describe(feature)}, which this kernel does not have"
            for feature in sorted(needs)
            if not self.kernel.has(runner, feature)
        ]

    @staticmethod
    def _list(runner: Runner, table: str) -> TableListing | None:
        result = runner.run([*LIST, "bridge", table], change=False, check=False)
        return parse_table(result.stdout) if result.returncode == 0 else None
