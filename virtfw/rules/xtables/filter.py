"""iptables-mode nwfilter backend: ebtables (layer 2) + iptables/ip6tables (layer 3).

Installs what libvirt's ebiptables driver leaves after ``applyNewRules`` +
``tearOldRules`` (see ``filter_render`` and ``syntax`` for the rule facts), but as one
``*-restore --noflush`` batch per tool for any number of ports (for ebtables, one per
segment of a few thousand lines, see ``EB_SEGMENT_LINES``), instead of one process
per rule:

* each tool's live table is read once (``*-save``), and the batch is computed against
  it: whatever exists for the ports (hooks, root and sub-chains, the virtfw-in-post
  accept) is deleted and the new chains are built, under their final names, in the
  same batch;
* each batch is one nf_tables transaction (one table commit with legacy), so a guest
  port is never unfiltered: it sees the old rules, then the new ones. libvirt needs
  temporary ``J``/``P``/``FJ``/``FP``/``HJ`` chains and renames (``-E``) because it
  runs one command at a time; inside a batch a chain created by the batch cannot be
  renamed (ebtables-nft: ``CHAIN_RENAME failed (No such file or directory)``), and
  does not need to be, since nothing is visible before the commit;
* a large ebtables change is cut into segments between ports, each one transaction
  holding both the removal of its ports' old rules and their new ones, so no port is
  unfiltered between two segments either;
* a batch that fails changes nothing; the batches of earlier tools (and segments) are then taken back
  exactly (each batch records the inverse of every operation at the position it
  applied to), which restores the old rules;
* removal records are written before anything is applied (``before_apply``): they
  name the hooks and chains by their final names, which are the same for the old and
  the new rules, so a process killed between two tools' batches still leaves enough
  to clean up.

Per port: ebtables ``nat`` chains ``virtfw-I-PORT`` (hooked ``PREROUTING -i PORT``),
``virtfw-O-PORT`` (``POSTROUTING -o PORT``) and sub-chains ``I-PORT-ipv4``...;
iptables/ip6tables ``filter`` chains FI-/FO-/HI-PORT reached from the shared
``virtfw-in``/``-out``/``-host-in`` by physdev gotos, plus a ``virtfw-in-post`` accept.
The shared chains and their ``FORWARD``/``INPUT`` hooks are the base.

What the rules say is checked, not only how many there are: after the batches, each
tool's table is read once more (``*-save``, whose output is canonical) and a port's
record gets, per chain, a digest of its saved lines (``save_digest``). ``verify`` (and a
``reload``, which leaves an intact ruleset alone) reads each table once and compares.
Where the install did not read the ebtables table (``new_ports``: its save takes 0.3 s
next to 1,000 ports), the batch, which then only adds the new ports' chains, is restored
into the empty table of a private network namespace (``unshare --net``, gone with the
process) and saved there: the same tool prints the same rules as it will list them here,
in 30 ms. Where no such namespace can be made, the table here is read after all.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from virtfw.errors import ToolError, VirtfwError
from virtfw.names import check_ifname
from virtfw.rules.backend import Installed
from virtfw.rules.portrules import PortRules
from virtfw.rules.runner import Runner, find_tool
from virtfw.rules.xtables.appeared import Appeared, drop_appeared
from virtfw.rules.xtables.filter_records import (
    EBTABLES_FILTER,
    FILTER_TOOLS,
    IPT_PORT_PREFIXES,
    TOOLS_BY_KEY,
    DeleteChain,
    DeleteRule,
    FilterTool,
    FlushChain,
    Step,
    XtablesFilterBaseRecord,
    XtablesPortRecord,
    XtablesToolBase,
    save_digest,
)
from virtfw.rules.xtables.filter_render import (
    BASE_CHAINS,
    BASE_HOOKS,
    IN_POST_CHAIN,
    EbPlan,
    PortPlan,
    eb_root,
    ipt_chain,
    ipt_links,
    plan_port,
)
from virtfw.rules.xtables.save import GONE, Batch, Table, parse_save
from virtfw.rules.xtables.syntax import restore_block, restore_line, target_of, tokens

EB_PREFIXES = ("I", "O", "J", "P")  # final and libvirt's temporary root prefixes
IPT_PREFIXES = ("FO", "FI", "HI", "FP", "FJ", "HJ")
LINK_CHAINS = ("virtfw-out", "virtfw-in", "virtfw-host-in")
# ebtables-nft keeps the chain names a batch mentions in a sorted list that it walks for
# each command, so one batch costs (commands x chains), while each commit also costs in
# proportion to the whole table (the kernel checks its jumps). Segments of about this
# many lines balance the two; measured on the reload of 1,000 clean-traffic ports:
# one batch 5 s of ebtables-restore, segments of 4,000 lines 1.6 s (8,000: 2.1 s).
EB_SEGMENT_LINES = 4000
# Run as ``unshare --net -- python -I -S -c PRIVATE_SAVE RESTORE SAVE`` (tools' absolute
# paths; restore's options after them): each NUL-separated batch on stdin restored into
# the private namespace's empty table, then the table saved to stdout.
PRIVATE_SAVE = (
    "import subprocess, sys\n"
    "restore, save, *options = sys.argv[1:]\n"
    "for text in sys.stdin.read().split('\\0'):\n"
    "    subprocess.run([restore, *options], input=text, text=True, check=True, capture_output=True)\n"
    "sys.stdout.write(subprocess.run([save], text=True, check=True, capture_output=True).stdout)\n"
)


Plans = list[PortPlan]  # one per port, in the caller's order


@dataclass
class _ToolBatch:
    """One tool's batch for this install, and what it adds to the records."""

    tool: FilterTool
    batch: Batch
    removals: dict[str, tuple[Step, ...]]  # owner -> the steps that take its port's rules back
    base_steps: list[Step]  # the steps that take back the shared chains this batch creates
    first_hooked: list[str]  # builtin chains hooked by us for the first time (they may appear)
    appeared: Appeared = field(default_factory=Appeared)  # what the batch makes appear in nf_tables

    @property
    def base(self) -> XtablesToolBase:
        """This tool's part of the base record."""
        return XtablesToolBase(tuple(self.base_steps), self.appeared)


class EbiptablesFilterBackend:
    name = "iptables"

    # --- records ---------------------------------------------------------------------

    @staticmethod
    def load_record(data: object, where: str) -> XtablesPortRecord:
        return XtablesPortRecord.from_json(data, where)

    @staticmethod
    def load_base(data: object, where: str) -> XtablesFilterBaseRecord:
        return XtablesFilterBaseRecord.from_json(data, where)

    @staticmethod
    def content_known(record: XtablesPortRecord) -> bool:
        """Whether ``verify`` compares what the record's rules say (its digests were taken)."""
        return record.content_known

    def unexpected(self, runner: Runner, records: list[XtablesPortRecord]) -> list[str]:
        """What is in virtfw's own chains that no record holds (someone added it): rules in
        the shared iptables chains and more than one hook to each, ebtables chains named
        ``virtfw-*`` and hooks jumping to them that belong to no recorded port."""
        problems = []
        for tool in FILTER_TOOLS:
            live = self._saved_table(runner, tool)
            if live is None:
                continue
            own = {chain for record in records for chain in record.counts.get(tool.key, {})}
            where = f"{tool.cli} -t {tool.table}"
            if tool is EBTABLES_FILTER:
                problems += [f"{where} chain {c} that virtfw did not add"
                             for c in live.chains if c.startswith("virtfw-") and c not in own]  # fmt: skip
                for builtin in tool.builtins:
                    for spec in live.rules(builtin):
                        target = str(target_of(spec))
                        if target.startswith("virtfw-") and target not in own:
                            problems.append(f"{where} -A {builtin} {spec} that virtfw did not add")
                continue
            ports = {record.port for record in records if tool.key in record.steps}
            for chain in BASE_CHAINS:
                extra = [spec for spec in live.rules(chain) if not self._belongs(chain, spec, own, ports)]
                if extra:
                    problems.append(f"{len(extra)} rule(s) in {where} {chain} that virtfw did not add")
            for builtin, _, chain in BASE_HOOKS:
                if sum(tokens(spec) == ["-j", chain] for spec in live.rules(builtin)) > 1:
                    problems.append(f"{where} {builtin} jumps to {chain} more than once")
        return problems

    def _belongs(self, chain: str, spec: str, own: set[str], ports: set[str]) -> bool:
        """Whether a rule of shared chain CHAIN is a port's: a link to its chains, or its
        ``virtfw-in-post`` accept."""
        if chain == IN_POST_CHAIN:
            return target_of(spec) == "ACCEPT" and self._physdev_in(spec) in ports
        return target_of(spec) in own

    def _saved_table(self, runner: Runner, tool: FilterTool) -> Table | None:
        """TOOL's table as ``*-save`` lists it now: read once for every record this object checks."""
        saved = self.__dict__.setdefault("_saved", {})
        if tool.key not in saved:
            result = runner.query(tool.save)
            saved[tool.key] = parse_save(result.stdout, tool.table) if result.returncode == 0 else None
        return saved[tool.key]

    def _port_digests(self, live: Table, tool: FilterTool, record: XtablesPortRecord) -> dict[str, str]:
        """The record's chains in TOOL as LIVE lists them (``save_digest``): its own chains'
        policies and rules, and its rules in the chains it hooks or links from."""
        own = set(record.counts.get(tool.key, {}))
        digests = {}
        for chain in record.digested_chains(tool):
            if chain in own:
                digests[chain] = save_digest(live.policies.get(chain), live.rules(chain))
                continue
            index = self._whose(live, chain)
            keys = [*own, f"physdev {record.port}"] if chain == IN_POST_CHAIN else own
            found = sorted(entry for key in keys for entry in index.get(key, ()))
            digests[chain] = save_digest(None, [spec for _, spec in found])
        return digests

    def _whose(self, live: Table, chain: str) -> dict[str, list[tuple[int, str]]]:
        """The rules of a shared or builtin CHAIN (with their positions) by whose they may be:
        their target, or ``physdev PORT`` for a port's accept in virtfw-in-post. Made once
        per listing: a port's hooks are looked up among thousands."""
        indexes = live.derived.setdefault("whose", {})
        if chain not in indexes:
            index: dict[str, list[tuple[int, str]]] = {}
            for position, spec in enumerate(live.rules(chain)):
                port = self._physdev_in(spec) if chain == IN_POST_CHAIN and target_of(spec) == "ACCEPT" else None
                index.setdefault(f"physdev {port}" if port else str(target_of(spec)), []).append((position, spec))
            indexes[chain] = index
        return indexes[chain]

    @staticmethod
    def render_digest() -> None:
        """None: a record holds the removal steps and rule counts, not the rules in a
        form that could be installed again, so callers never offer any for ``reuse``."""

    # --- install ---------------------------------------------------------------------

    def install(
        self,
        runner: Runner,
        ports: list[PortRules],
        *,
        old: dict[str, XtablesPortRecord] | None = None,
        rebuild: bool = False,
        before_apply: Callable[[Installed[XtablesPortRecord, XtablesFilterBaseRecord]], None] | None = None,
        reuse: dict[str, XtablesPortRecord] | None = None,
        new_ports: bool = False,
    ) -> Installed[XtablesPortRecord, XtablesFilterBaseRecord]:
        """Install (or replace) the filters of ``ports``: one batch per tool with work.

        ``old``: owner -> the current removal record of ports being replaced (their
        port's hooks and chains are replaced in the same batch). ``rebuild``: the result
        holds exactly ``ports``: every virtfw nwfilter hook and chain is rebuilt.
        ``new_ports``: the caller's records say these ports have no rules of ours and
        other bindings of this backend are in place (so are the ebtables hooks): the
        ebtables table, which ebtables-save takes long to print next to thousands of
        ports, is not read first. Should a chain of these ports exist after all, the
        batch fails whole and the install is done again from the live table.
        ``reuse`` must be empty: records of this backend are not complete enough to be
        installed again (its ``render_digest`` is None, so callers never offer any).
        """
        if reuse:
            raise ValueError("the iptables filter backend cannot install records again")
        if new_ports and not rebuild and not old:
            try:
                return self._install(runner, ports, {}, False, before_apply, read_ebtables=False)
            except ToolError:
                pass  # whatever was applied has been taken back
        return self._install(runner, ports, old or {}, rebuild, before_apply, read_ebtables=True)

    def _install(
        self,
        runner: Runner,
        ports: list[PortRules],
        old: dict[str, XtablesPortRecord],
        rebuild: bool,
        before_apply: Callable[[Installed[XtablesPortRecord, XtablesFilterBaseRecord]], None] | None,
        read_ebtables: bool,
    ) -> Installed[XtablesPortRecord, XtablesFilterBaseRecord]:
        seen: set[str] = set()
        for port_rules in ports:
            check_ifname(port_rules.port, "port device")
            if port_rules.port in seen:
                raise VirtfwError(f"port device {port_rules.port} is given twice")
            seen.add(port_rules.port)
        plans: Plans = [plan_port(pr) for pr in ports]
        teardown = set(seen) | {record.port for record in old.values()}
        batches: list[_ToolBatch] = []
        for tool in FILTER_TOOLS:
            wanted = any(self._uses(plan, tool) for plan in plans)
            if not (wanted or rebuild or any(tool.key in record.steps for record in old.values())):
                continue
            if tool is EBTABLES_FILTER and not read_ebtables:
                tool_batch = self._eb_work(tool, None, plans, teardown, rebuild)
                tool_batch.first_hooked = []  # the hooks of the other bindings are there
                batches.append(tool_batch)
                continue
            text = runner.query(tool.save)
            live = parse_save(text.stdout, tool.table) if text.returncode == 0 else None
            tool_batch = (self._eb_work if tool is EBTABLES_FILTER else self._ipt_work)(
                tool, live, plans, teardown, rebuild
            )
            if tool_batch.batch.lines:
                tool_batch.appeared = self._appeared(runner, tool, tool_batch, text.stdout)
                batches.append(tool_batch)
        installed = self._records(plans, batches)
        if before_apply:  # the records as known before the batches: no digests yet
            before_apply(Installed(dict(installed.removals), installed.base))
        applied = self._apply(runner, batches)
        try:
            self._take_digests(runner, installed, batches, read_ebtables)
        except ToolError:
            self._take_back(runner, applied)  # the install is all or nothing, its records too
            raise
        return installed

    def _take_digests(
        self,
        runner: Runner,
        installed: Installed[XtablesPortRecord, XtablesFilterBaseRecord],
        batches: list[_ToolBatch],
        read_ebtables: bool,
    ) -> None:
        """Each installed record's digests, from one ``*-save`` per tool that had a batch
        (in place in ``installed``); for an ebtables batch made without reading the table,
        from its private copy (see the module docstring). A dry run leaves them out (then
        ``verify`` counts rules and ``reload`` installs the bindings again); a save that
        fails is a ToolError."""
        if runner.dry_run:
            return
        live = {}
        for tool_batch in batches:
            tool = tool_batch.tool
            table = None
            if tool is EBTABLES_FILTER and not read_ebtables:
                table = self._private_save(runner, tool, [text for text, _ in tool_batch.batch.segments()])
            if table is None:
                result = runner.query(tool.save)
                if result.returncode != 0:
                    raise ToolError(tool.save, result.returncode, result.stderr)
                table = parse_save(result.stdout, tool.table)
            if table is None:
                return  # a tool that lists nothing (a stand-in): no digests
            live[tool.key] = table
        for owner, record in installed.removals.items():
            if any(key not in live for key in record.steps):
                continue
            digests = {key: self._port_digests(live[key], TOOLS_BY_KEY[key], record) for key in record.steps}
            installed.removals[owner] = replace(record, digests=digests)

    @staticmethod
    def _private_save(runner: Runner, tool: FilterTool, batches: Sequence[str]) -> Table | None:
        """TOOL's table as it lists after ``batches`` are restored into an empty one, in a
        private network namespace; None when none can be made (no privilege, no unshare)."""
        try:
            restore, save, unshare = (runner.which(name) for name in (tool.restore[0], tool.save[0], "unshare"))
        except VirtfwError:
            return None
        if any("\0" in text for text in batches):
            return None
        argv = [unshare, "--net", "--", sys.executable, "-I", "-S", "-c", PRIVATE_SAVE, restore, save]
        result = runner.run([*argv, *tool.restore[1:]], stdin="\0".join(batches), change=False, check=False)
        return parse_save(result.stdout, tool.table) if result.returncode == 0 else None

    @staticmethod
    def _uses(plan: PortPlan, tool: FilterTool) -> bool:
        return plan.ebtables is not None if tool is EBTABLES_FILTER else tool.key in plan.families

    def _eb_work(
        self, tool: FilterTool, live: Table | None, plans: Plans, teardown: set[str], rebuild: bool
    ) -> _ToolBatch:
        model = live or Table({name: [] for name in ("PREROUTING", "OUTPUT", "POSTROUTING")})
        batch = Batch(tool.table, model)
        roots = {eb_root(x, port) for port in teardown for x in EB_PREFIXES}
        if rebuild:
            roots |= {c for c in model.chains if c.startswith("virtfw-") and c[7:8] in EB_PREFIXES and c[8:9] == "-"}
        hooks: dict[str, list[tuple[str, str]]] = {}  # root -> its live hooks (builtin, rule text)
        hooked_before: set[str] = set()
        for builtin in tool.builtins:
            for spec in model.rules(builtin):
                target = str(target_of(spec))
                if target.startswith("virtfw-"):
                    hooked_before.add(builtin)
                if target in roots:
                    hooks.setdefault(target, []).append((builtin, spec))
        planned_ports = {plan.port for plan in plans if plan.ebtables}
        # The batch is cut into segments (see EB_SEGMENT_LINES). Ports whose old rules go
        # without new ones come first; then each segment replaces the old rules of its
        # ports by their new ones, so that no port is ever seen unfiltered.
        port_roots: dict[str, list[str]] = {}
        for root in sorted(roots):
            port_roots.setdefault(root[len("virtfw-X-") :], []).append(root)
        for port in [p for p in port_roots if p not in planned_ports]:
            self._eb_teardown(batch, model, port_roots[port], hooks, None)
        batch.cut()
        removals: dict[str, tuple[Step, ...]] = {}
        for group in self._eb_groups([(plan.port, plan.ebtables) for plan in plans if plan.ebtables]):
            kept: set[tuple[str, str]] = set()
            for port, eb in group:  # within a segment: every teardown first, then every build
                kept |= self._eb_teardown(batch, model, port_roots.get(port, []), hooks, eb)
            for _, eb in group:
                self._eb_build(batch, model, kept, eb)
            batch.cut()
        for plan in plans:
            if plan.ebtables:
                eb = plan.ebtables
                removals[plan.owner] = (
                    *(DeleteRule(hook.chain, restore_line(hook.args)) for hook in eb.hooks),
                    *(FlushChain(c) for c in eb.chains),
                    *(DeleteChain(c) for c in eb.chains),
                )
        first_hooked = sorted(
            {hook.chain for plan in plans if plan.ebtables for hook in plan.ebtables.hooks} - hooked_before
        )
        return _ToolBatch(tool, batch, removals, [], first_hooked)

    @staticmethod
    def _eb_groups(plans: list[tuple[str, EbPlan]]) -> list[list[tuple[str, EbPlan]]]:
        """(port, plan) pairs in segments of about EB_SEGMENT_LINES lines each."""
        groups: list[list[tuple[str, EbPlan]]] = [[]]
        size = 0
        for plan in plans:
            eb = plan[1]
            lines = 2 * len(eb.chains) + len(eb.rules) + len(eb.hooks)
            if groups[-1] and size + lines > EB_SEGMENT_LINES:
                groups.append([])
                size = 0
            groups[-1].append(plan)
            size += lines
        return [group for group in groups if group]

    def _eb_teardown(
        self, batch: Batch, model: Table, roots: list[str], hooks: dict[str, list[tuple[str, str]]], eb: EbPlan | None
    ) -> set[tuple[str, str]]:
        """One port's live hooks and chains (from ROOTS) go, but for what EB keeps; the
        kept hooks are returned.

        A hook that stays exactly as it is, and a chain rebuilt under the same name, are
        kept (the chain emptied, then refilled by ``_eb_build``) rather than deleted and
        made again: each '-D' of a hook makes ebtables search the whole builtin chain,
        which made a reload of N ports cost N squared. The segment is one transaction.
        """
        planned = set(eb.chains) if eb else set()
        wanted_hooks = {(hook.chain, restore_line(hook.args)) for hook in eb.hooks} if eb else set()
        kept: set[tuple[str, str]] = set()
        for root in roots:
            for builtin, spec in hooks.get(root, []):
                if (builtin, spec) in wanted_hooks and model.has(root):
                    kept.add((builtin, spec))
                else:
                    batch.delete_rule(builtin, spec)
        retired = self._descendants(model, [r for r in roots if model.has(r)])  # the port's live chains
        retired += [c for c in (eb.chains if eb else []) if model.has(c) and c not in retired]
        for chain in retired:
            batch.flush(chain)
        for chain in retired:
            if chain not in planned:
                batch.delete_chain(chain)
            else:  # refilled: with the policy -N gives it, should someone have changed it
                batch.set_policy(chain, "ACCEPT")
        return kept

    @staticmethod
    def _eb_build(batch: Batch, model: Table, kept: set[tuple[str, str]], eb: EbPlan) -> None:
        """One port's chains made (or refilled), rules added, hooks added unless kept."""
        for chain in eb.chains:
            if not model.has(chain):
                batch.new_chain(chain)
        for rule in eb.rules:
            batch.append(rule.chain, rule.args)
        for hook in eb.hooks:
            if (hook.chain, restore_line(hook.args)) not in kept:
                batch.append(hook.chain, hook.args)

    @staticmethod
    def _descendants(model: Table, roots: list[str]) -> list[str]:
        """ROOTS and the chains they jump to, as libvirt finds sub-chains: a jump target
        whose name is a prefix letter and a dash (``I-vnet0-ipv4``)."""
        found: list[str] = []
        todo = list(roots)
        while todo:
            chain = todo.pop(0)
            if chain in found or not model.has(chain):
                continue
            found.append(chain)
            for spec in model.rules(chain):
                target = target_of(spec)
                if target and target[0] in EB_PREFIXES and target[1:2] == "-":
                    todo.append(target)
        return found

    def _ipt_work(
        self, tool: FilterTool, live: Table | None, plans: Plans, teardown: set[str], rebuild: bool
    ) -> _ToolBatch:
        model = live or Table({name: [] for name in ("INPUT", "FORWARD", "OUTPUT")})
        batch = Batch(tool.table, model)
        wanted = [plan for plan in plans if tool.key in plan.families]
        base_steps: list[Step] = []
        # A rebuild keeps the base whole while it is there (its record stands until the
        # last binding goes), hooks put back even when no port of this batch uses the tool.
        keep_base = bool(wanted) or (rebuild and any(model.has(chain) for chain in BASE_CHAINS))
        if keep_base:
            for chain in BASE_CHAINS:
                if not model.has(chain):
                    batch.new_chain(chain)
                    base_steps += [FlushChain(chain), DeleteChain(chain)]
        retired = {ipt_chain(prefix, port) for port in teardown for prefix in IPT_PREFIXES}  # chains that go
        if rebuild:
            for chain in LINK_CHAINS:
                retired |= {t for t in map(target_of, model.rules(chain)) if t}
            for chain in BASE_CHAINS:
                batch.flush(chain)
        else:
            for chain in LINK_CHAINS:
                batch.delete_rules(chain, lambda spec: target_of(spec) in retired)
            batch.delete_rules(IN_POST_CHAIN, lambda spec: self._physdev_in(spec) in teardown)
        for chain in sorted(c for c in retired if model.has(c) and c not in BASE_CHAINS):
            batch.delete_chain(chain)
        first_hooked: set[str] = set()
        if keep_base:
            hooked = {(builtin, chain) for builtin, _, chain in BASE_HOOKS}
            present = set()
            for builtin, chain in sorted(hooked):
                before = len(batch.lines)
                batch.delete_rules(builtin, lambda spec, c=chain: tokens(spec) == ["-j", c])
                if len(batch.lines) > before:
                    present.add((builtin, chain))
            for builtin, position, chain in BASE_HOOKS:
                batch.insert(builtin, position, ["-j", chain])
                if (builtin, chain) not in present:
                    base_steps.insert(0, DeleteRule(builtin, f"-j {chain}"))
                    first_hooked.add(builtin)
        removals: dict[str, tuple[Step, ...]] = {}
        for plan in wanted:
            port = plan.port
            chains = [ipt_chain(prefix, port) for prefix in IPT_PORT_PREFIXES]
            for chain in chains:
                batch.new_chain(chain)
            links = ipt_links(port)
            for link in links:
                batch.append(link.chain, link.args)
            for rule in plan.families[tool.key].rules:
                batch.append(rule.chain, rule.args)
            removals[plan.owner] = (
                *(DeleteRule(link.chain, restore_line(link.args)) for link in links),
                *(step for chain in chains for step in (FlushChain(chain), DeleteChain(chain))),
            )
        return _ToolBatch(tool, batch, removals, base_steps, sorted(first_hooked))

    @staticmethod
    def _physdev_in(spec: str) -> str | None:
        """The port of a ``virtfw-in-post`` accept (``-m physdev --physdev-in P -j ACCEPT``)."""
        words = tokens(spec)
        if target_of(spec) != "ACCEPT" or "--physdev-in" not in words:
            return None
        index = words.index("--physdev-in")
        return words[index + 1] if index + 1 < len(words) else None

    # --- records ---------------------------------------------------------------------

    @staticmethod
    def _counts(plan: PortPlan) -> dict[str, dict[str, int]]:
        """Rules per chain as installed, per tool: what ``verify`` compares against."""
        counts: dict[str, dict[str, int]] = {}
        if plan.ebtables:
            eb = counts.setdefault(EBTABLES_FILTER.key, {c: 0 for c in plan.ebtables.chains})
            for rule in plan.ebtables.rules:
                eb[rule.chain] = eb.get(rule.chain, 0) + 1
        for key, family in plan.families.items():
            chains = counts.setdefault(key, {ipt_chain(p, plan.port): 0 for p in IPT_PORT_PREFIXES})
            for rule in family.rules:
                chains[rule.chain] = chains.get(rule.chain, 0) + 1
        return counts

    def verify(self, runner: Runner, record: XtablesPortRecord | XtablesFilterBaseRecord) -> list[str]:
        """Hooks, chains and rules of a record against each tool's live table: what the
        rules say where the record has their digests, else their number."""
        problems: list[str] = []
        for tool in FILTER_TOOLS:
            steps = self._steps(record, tool)
            if steps is None:
                continue
            live = self._saved_table(runner, tool)  # one *-save per tool for all records
            if live is None:
                problems.append(f"{tool.cli} table {tool.table} is missing")
                continue
            reported = set()  # chains a line names already: no second line for their digest
            for step in steps:
                if isinstance(step, DeleteRule):
                    if target_of(step.spec) not in live.targets(step.chain):
                        rule = " ".join([step.chain, *tokens(step.spec)])
                        problems.append(f"{tool.cli} -t {tool.table} -A {rule} is missing")
                        reported.add(step.chain)
                elif isinstance(step, DeleteChain) and not live.has(step.chain):
                    problems.append(f"{tool.cli} -t {tool.table} chain {step.chain} is missing")
            if not isinstance(record, XtablesPortRecord):
                continue
            installed_rules = record.ebtables_rules or {}
            for chain, expected in record.counts.get(tool.key, {}).items():
                found = len(live.rules(chain))
                texts = "; ".join(installed_rules.get(chain, ()))
                if not live.has(chain):
                    reported.add(chain)  # missing: said above
                elif found != expected:
                    reported.add(chain)
                    problems.append(
                        f"{tool.cli} -t {tool.table} chain {chain} holds {found} rules, {expected} were installed"
                        + (f": {texts}" if texts else "")
                    )
            recorded = (record.digests or {}).get(tool.key)
            if recorded is None:
                continue
            for chain, digest in self._port_digests(live, tool, record).items():
                if chain in reported or recorded.get(chain) == digest:
                    continue
                if chain in record.counts.get(tool.key, {}):
                    texts = "; ".join(installed_rules.get(chain, ()))
                    problems.append(
                        f"{tool.cli} -t {tool.table} chain {chain}: its rules or policy were changed"
                        + (f", those installed: {texts}" if texts else "")
                    )
                else:
                    problems.append(
                        f"{tool.cli} -t {tool.table} chain {chain}: the rules of port {record.port} changed"
                    )
        return problems

    @staticmethod
    def _steps(record: XtablesPortRecord | XtablesFilterBaseRecord, tool: FilterTool) -> tuple[Step, ...] | None:
        """The record's steps for TOOL; None when it has no part for TOOL."""
        if isinstance(record, XtablesFilterBaseRecord):
            part = record.tools.get(tool.key)
            return part.steps if part else None
        return record.steps.get(tool.key)

    def _records(
        self, plans: Plans, batches: list[_ToolBatch]
    ) -> Installed[XtablesPortRecord, XtablesFilterBaseRecord]:
        installed: Installed[XtablesPortRecord, XtablesFilterBaseRecord] = Installed()
        for plan in plans:
            owner = plan.owner
            steps = {
                tool_batch.tool.key: tool_batch.removals[owner]
                for tool_batch in batches
                if owner in tool_batch.removals
            }
            texts = None
            if plan.ebtables:  # the installed ebtables rules, for verify's messages
                rules: dict[str, list[str]] = {r.chain: [] for r in plan.ebtables.rules}
                for rule in plan.ebtables.rules:
                    rules[rule.chain].append(restore_line(rule.args))
                texts = {chain: tuple(lines) for chain, lines in rules.items()}
            installed.removals[owner] = XtablesPortRecord(plan.port, steps, self._counts(plan), texts)
        base = XtablesFilterBaseRecord(
            {tool_batch.tool.key: tool_batch.base for tool_batch in batches if tool_batch.base}
        )
        installed.base = base if base else None
        return installed

    def _appeared(self, runner: Runner, tool: FilterTool, tool_batch: _ToolBatch, saved: str) -> Appeared:
        """nf_tables tables and builtin chains this batch makes appear (iptables-nft and
        ebtables-nft create them on first use; their save output lists builtin chains
        either way), so that removing the base leaves the ruleset as it was. Only looked
        up when we hook a builtin chain for the first time; legacy tools have them all."""
        if runner.dry_run or not tool_batch.first_hooked or find_tool("nft") is None:
            return Appeared()
        banner = saved.split("\n", 1)[0]
        if banner.startswith("#"):
            if "(nf_tables)" not in banner:
                return Appeared()
        elif "nf_tables" not in runner.query([tool.cli, "--version"]).stdout:
            return Appeared()
        listed = runner.query(["nft", "-j", "list", "chains", tool.nft_family])
        existing = set()
        for item in json.loads(listed.stdout or "{}").get("nftables", []):
            chain = item.get("chain")
            if chain:
                existing.add((chain["table"], chain["name"]))
        if not any(table == tool.table for table, _ in existing):
            return Appeared(tables=(tool.table,))
        missing = tuple((tool.table, chain) for chain in tool_batch.first_hooked if (tool.table, chain) not in existing)
        return Appeared(chains=missing)

    # --- applying --------------------------------------------------------------------

    def _apply(self, runner: Runner, batches: list[_ToolBatch]) -> list[tuple[_ToolBatch, str]]:
        """Each batch, segment by segment; the (tool batch, undo text) of each segment applied."""
        applied: list[tuple[_ToolBatch, str]] = []
        try:
            for tool_batch in batches:
                for text, undo in tool_batch.batch.segments():
                    runner.run(tool_batch.tool.restore, stdin=text)
                    applied.append((tool_batch, undo))
        except ToolError:
            # Each segment is atomic: the failed one changed nothing; take back the others.
            self._take_back(runner, applied)
            raise
        return applied

    @staticmethod
    def _take_back(runner: Runner, applied: list[tuple[_ToolBatch, str]]) -> None:
        """Undo the segments ``_apply`` applied, newest first, and what their first hooks made appear."""
        for index, (tool_batch, undo) in reversed(list(enumerate(applied))):
            try:
                runner.run(tool_batch.tool.restore, stdin=undo)
                first = index == 0 or applied[index - 1][0] is not tool_batch
                if first and tool_batch.appeared:
                    drop_appeared(runner, tool_batch.tool.nft_family, tool_batch.appeared)
            except (ToolError, VirtfwError) as error:
                print(f"warning: rollback of {tool_batch.tool.cli} rules failed: {error}", file=sys.stderr)

    # --- removal ---------------------------------------------------------------------

    def remove(self, runner: Runner, record: XtablesPortRecord | XtablesFilterBaseRecord) -> bool:
        """Run a removal record (a port's or the base's). Rules and chains already gone
        are fine; False when something else refused, so the caller rebuilds."""
        ok = True
        for tool in FILTER_TOOLS:
            steps = self._steps(record, tool)
            if steps is not None:
                ok = self._run_removal(runner, tool, [step.line for step in steps]) and ok
            if isinstance(record, XtablesFilterBaseRecord) and tool.key in record.tools:
                appeared = record.tools[tool.key].appeared
                if appeared:
                    drop_appeared(runner, tool.nft_family, appeared)
        return ok

    def _run_removal(self, runner: Runner, tool: FilterTool, lines: list[str]) -> bool:
        if not lines:
            return True
        try:
            runner.run(tool.restore, stdin=restore_block(tool.table, lines))
            return True
        except ToolError:
            pass
        # Something was already gone (flushed by hand): the rest one by one.
        ok = True
        for line in lines:
            result = runner.run(tool.single(line), check=False)
            if result.returncode != 0 and not any(gone in result.stderr for gone in GONE):
                print(f"warning: {' '.join(tool.single(line))}: {result.stderr.strip()}", file=sys.stderr)
                ok = False
        return ok
