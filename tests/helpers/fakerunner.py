"""A stand-in for ``virtfw.rules.runner.Runner`` that records every call and runs nothing.

Golden-file tests drive the four firewall backends through it: each call (its argv, and
its stdin or, for ``run_file``, the file's text) is recorded, and what the backends read
back is answered from a small model of the kernel's state that the recorded batches
themselves update:

* nftables: tables with their handles and chains (``nft -j list tables``, the echo of
  ``nft -j -e -a -f FILE`` with handles, the text echo of a batch in a private namespace,
  ``unshare --net -- nft -e -s -f FILE``, the ``list chain`` probes of ``nft -f -``,
  ``nft -j list chains|chain|table``);
* xtables: one table model per tool (``iptables``, ``ip6tables``, ``ebtables``), fed by
  ``*-restore --noflush`` batches and printed back as ``*-save`` prints it; the tools
  behave as the nf_tables variants do (a table appears on first use, with its builtin
  chains, and is listed by ``nft`` too).

A batch that does not apply to the model fails whole, as the real tools do. A command the
model does not know raises ``UnexpectedCommand``: no real tool is ever run.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from virtfw.rules.runner import Result, Runner


class UnexpectedCommand(AssertionError):
    """The backend ran a command (or batch line) the fake does not model."""


@dataclass
class Call:
    """One command a backend ran, as it ran it."""

    argv: list[str]
    text: str | None  # stdin, or the file's text for run_file
    change: bool
    check: bool
    file: bool = False  # run_file: the text went in a file whose path ends argv
    returncode: int = 0

    def render(self) -> str:
        """Human-readable: '$' for a change, '?' for a read; the text indented below."""
        argv = [*self.argv, "FILE"] if self.file else self.argv
        argv = ["PYTHON" if arg == sys.executable else arg for arg in argv]  # the same on every machine
        line = ("$ " if self.change else "? ") + " ".join(argv)
        if not self.check:
            line += "  [unchecked]"
        if self.returncode:
            line += f"  -> exit {self.returncode}"
        if self.text:
            line += "\n" + "".join(f"  | {text}\n" for text in self.text.rstrip("\n").split("\n")).rstrip("\n")
        return line


# ---- nftables model ------------------------------------------------------------------


@dataclass
class NftTable:
    handle: int
    chains: dict[str, int] = field(default_factory=dict)  # name -> handle
    sets: set[str] = field(default_factory=set)  # named sets declared in block syntax
    next_handle: int = 1  # chains, rules, maps share one counter per table, as in nft

    def new_handle(self) -> int:
        handle = self.next_handle
        self.next_handle += 1
        return handle


class NftError(Exception):
    pass


@dataclass
class NftState:
    tables: dict[tuple[str, str], NftTable] = field(default_factory=dict)
    next_table_handle: int = 1

    def table(self, family: str, name: str) -> NftTable:
        if (family, name) not in self.tables:
            raise NftError(f"Error: No such file or directory; table {family} {name}")
        return self.tables[(family, name)]

    def add_table(self, family: str, name: str) -> NftTable:
        if (family, name) not in self.tables:
            self.tables[(family, name)] = NftTable(self.next_table_handle)
            self.next_table_handle += 1
        return self.tables[(family, name)]

    def chain(self, family: str, table: str, chain: str) -> None:
        if chain not in self.table(family, table).chains:
            raise NftError(f"Error: No such file or directory; chain {family} {table} {chain}")


_BLOCK_TABLE = re.compile(r"^table (\S+) (\S+) \{$")
_BLOCK_CHAIN = re.compile(r"^chain (\S+) \{$")


def _apply_nft(state: NftState, text: str) -> list[dict]:
    """Apply an nft batch to STATE; the echo (with handles) of its add/insert commands."""
    echo: list[dict] = []
    block_table: tuple[str, str] | None = None
    block_chain: str | None = None
    for raw in text.split("\n"):  # as nft reads: lines end at '\n' only
        line = raw.strip()
        if not line:
            continue
        if block_table is not None:  # nft's block syntax: table F T { chain C { rules } }
            match = _BLOCK_CHAIN.match(line)
            if line == "}":
                if block_chain is not None:
                    block_chain = None
                else:
                    block_table = None
            elif match and block_chain is None:
                table = state.table(*block_table)
                block_chain = match.group(1)
                table.chains.setdefault(block_chain, table.new_handle())
            elif block_chain is not None:  # a rule, echoed with its text standing for its statements
                handle = state.table(*block_table).new_handle()
                rule = {"family": block_table[0], "table": block_table[1], "chain": block_chain, "handle": handle,
                        "expr": [{"text": line}]}  # fmt: skip
                echo.append({"add": {"rule": rule}})
            elif line.startswith("set ") and line.endswith("}"):  # a whole set on one line
                state.table(*block_table).sets.add(line.split()[1])
            else:
                raise UnexpectedCommand(f"nft block line not modelled: {line!r}")
            continue
        match = _BLOCK_TABLE.match(line)
        if match:
            block_table = (match.group(1), match.group(2))
            state.add_table(*block_table)
            continue
        echo.extend(_nft_command(state, line.split()))
    if block_table is not None:
        raise NftError("Error: syntax error, unexpected end of file")
    return echo


MODELLED = {
    ("add", "table"), ("delete", "table"), ("add", "chain"), ("flush", "chain"), ("delete", "chain"),
    ("add", "rule"), ("insert", "rule"), ("delete", "rule"), ("add", "map"), ("add", "element"),
    ("delete", "element"),
}  # fmt: skip


def _nft_command(state: NftState, words: list[str]) -> list[dict]:
    verb, kind = words[0], words[1]
    if (verb, kind) not in MODELLED:
        raise UnexpectedCommand(f"nft command not modelled: {' '.join(words)!r}")
    family, name = words[2], words[3]
    if (verb, kind) == ("add", "table"):
        table = state.add_table(family, name)
        return [{"add": {"table": {"family": family, "name": name, "handle": table.handle}}}]
    if (verb, kind) == ("delete", "table"):
        state.table(family, name)
        del state.tables[(family, name)]
        return []
    table = state.table(family, name)
    chain = words[4]
    if (verb, kind) == ("add", "chain"):
        handle = table.chains.setdefault(chain, table.new_handle())
        return [{"add": {"chain": {"family": family, "table": name, "name": chain, "handle": handle}}}]
    if (verb, kind) in (("add", "rule"), ("insert", "rule")):
        state.chain(family, name, chain)
        rule = {"family": family, "table": name, "chain": chain, "handle": table.new_handle()}
        return [{verb: {"rule": rule}}]
    if (verb, kind) in (("flush", "chain"), ("delete", "rule")):
        state.chain(family, name, chain)
        return []
    if (verb, kind) == ("delete", "chain"):
        state.chain(family, name, chain)
        del table.chains[chain]
        return []
    if kind == "map":
        table.new_handle()
    return []  # elements


# ---- xtables model -------------------------------------------------------------------

BUILTINS = {
    "iptables": {
        "filter": ("INPUT", "FORWARD", "OUTPUT"),
        "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
        "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    },
    "ebtables": {
        "filter": ("INPUT", "FORWARD", "OUTPUT"),
        "nat": ("PREROUTING", "OUTPUT", "POSTROUTING"),
    },
}
BUILTINS["ip6tables"] = BUILTINS["iptables"]
NFT_FAMILY = {"iptables": "ip", "ip6tables": "ip6", "ebtables": "bridge"}
TOOL_OF_FAMILY = {family: tool for tool, family in NFT_FAMILY.items()}
BANNER_DATE = "Thu Jan  1 00:00:00 2026"

Tables = dict[str, dict[str, list[str]]]  # table -> chain -> rule texts after '-A CHAIN'


class RestoreError(Exception):
    pass


def _apply_restore(tool: str, tables: Tables, text: str) -> None:
    """Apply a ``*-restore --noflush`` batch to TABLES (changed in place)."""
    current: dict[str, list[str]] | None = None
    builtins: tuple[str, ...] = ()
    for number, raw in enumerate(text.split("\n"), start=1):  # '\n' only, as the tools read
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            name = line[1:]
            builtins = BUILTINS[tool][name]
            current = tables.setdefault(name, {chain: [] for chain in builtins})
            continue
        if line == "COMMIT":
            current = None
            continue
        if current is None:
            raise RestoreError(f"line {number}: no table given")
        if line.startswith(":"):
            chain = line[1:].split()[0]
            if chain not in builtins:
                current[chain] = []  # creates, or flushes a user chain
            continue
        op, chain, *rest = line.split(" ", 2)
        spec = rest[0] if rest else ""
        if op == "-N":
            if chain in current:
                raise RestoreError(f"line {number}: Chain already exists")
            current[chain] = []
        elif chain not in current:
            raise RestoreError(f"line {number}: chain {chain} does not exist")
        elif op == "-X":
            if current[chain] or chain in builtins:
                raise RestoreError(f"line {number}: cannot delete chain {chain}")
            del current[chain]
        elif op == "-F":
            current[chain] = []
        elif op == "-P" and tool == "ebtables" and spec == "ACCEPT":
            pass  # the only policy the model knows
        elif op == "-A":
            current[chain].append(spec)
        elif op == "-I":
            first, _, after = spec.partition(" ")
            position, spec = (int(first), after) if first.isdigit() else (1, spec)
            current[chain].insert(position - 1, spec)
        elif op == "-D":
            if spec not in current[chain]:
                raise RestoreError(f"line {number}: does a matching rule exist in that chain?")
            current[chain].remove(spec)
        else:
            raise UnexpectedCommand(f"{tool}-restore line not modelled: {line!r}")


def _save_text(tool: str, tables: Tables) -> str:
    """TABLES as ``TOOL-save`` of the nf_tables variant prints them."""
    if not tables:
        return ""
    out = [f"# Generated by {tool}-save v1.8.9 (nf_tables) on {BANNER_DATE}"]
    for table, chains in tables.items():
        out.append(f"*{table}")
        for chain in chains:
            builtin = chain in BUILTINS[tool][table]
            if tool == "ebtables":
                out.append(f":{chain} ACCEPT")
            else:
                out.append(f":{chain} {'ACCEPT' if builtin else '-'} [0:0]")
        out += [f"-A {chain} {spec}".rstrip() for chain, specs in chains.items() for spec in specs]
        if tool != "ebtables":
            out.append("COMMIT")
        out.append(f"# Completed on {BANNER_DATE}")
    return "\n".join(out) + "\n"


# ---- the runner ----------------------------------------------------------------------

Answer = Callable[[list[str], "str | None"], Result]
RESTORES = {
    ("iptables-restore", "-w", "--noflush"): "iptables",
    ("ip6tables-restore", "-w", "--noflush"): "ip6tables",
    ("ebtables-restore", "--noflush"): "ebtables",
}
VERSIONS = {
    "iptables": "iptables v1.8.9 (nf_tables)\n",
    "ip6tables": "ip6tables v1.8.9 (nf_tables)\n",
    "ebtables": "ebtables 1.8.9 (nf_tables)\n",
}
METAINFO = {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}


@dataclass
class FakeRunner(Runner):
    """Records every call in ``calls``; answers from the models; never runs a tool.

    ``answers`` maps an exact argv (a tuple) to a function of (argv, stdin) giving the
    Result, for a test that wants to answer a command differently.
    """

    calls: list[Call] = field(default_factory=list)
    answers: dict[tuple[str, ...], Answer] = field(default_factory=dict)
    nft: NftState = field(default_factory=NftState)
    xtables: dict[str, Tables] = field(default_factory=lambda: {tool: {} for tool in NFT_FAMILY})
    # What the modelled kernel's bridge family can do (``nft -c`` probes): a stock kernel's.
    bridge_features: frozenset[str] = frozenset({"ct state", "ct count"})

    def which(self, tool: str) -> str:
        return f"/usr/sbin/{tool}"

    def run(
        self,
        argv: list[str],
        *,
        stdin: str | None = None,
        change: bool = True,
        check: bool = True,
        quiet: bool = False,
    ) -> Result:
        self.log.append(argv)
        result = self._answer(list(argv), stdin, change)
        self.calls.append(Call(list(argv), stdin, change, check, returncode=result.returncode))
        return self._checked(argv, result, check)

    def run_file(self, argv: list[str], text: str, *, check: bool = True) -> Result:
        self.log.append(argv)
        if argv == ["/usr/sbin/unshare", "--net", "--", "nft", "-e", "-s", "-f"]:
            result = self._private_nft(text)  # the batch in a private namespace's empty ruleset
        elif argv != ["nft", "-j", "-e", "-a", "-f"]:
            raise UnexpectedCommand(f"run_file of {argv}")
        else:
            result = self._nft_batch(text, echo=True)
        self.calls.append(Call(list(argv), text, True, check, file=True, returncode=result.returncode))
        return self._checked(argv, result, check)

    @staticmethod
    def _checked(argv: list[str], result: Result, check: bool) -> Result:
        if check and result.returncode != 0:
            from virtfw.errors import ToolError

            raise ToolError(list(argv), result.returncode, result.stderr or result.stdout)
        return result

    # ---- answers ----

    def _answer(self, argv: list[str], stdin: str | None, change: bool) -> Result:
        key = tuple(argv)
        if key in self.answers:
            return self.answers[key](argv, stdin)
        if key in RESTORES:
            return self._restore(RESTORES[key], stdin or "")
        if len(argv) == 2 and argv[1] == "--version" and argv[0] in VERSIONS:
            return Result(0, VERSIONS[argv[0]], "")
        if len(argv) == 1 and argv[0].endswith("-save") and argv[0][: -len("-save")] in self.xtables:
            tool = argv[0][: -len("-save")]
            return Result(0, _save_text(tool, self.xtables[tool]), "")
        if argv[:3] == ["/usr/sbin/unshare", "--net", "--"] and not change:
            return self._private_save(argv, stdin or "")
        if argv == ["nft", "-c", "-f", "-"] and not change:
            wanted = {statement for statement in ("ct state", "ct count") if statement in (stdin or "")}
            return Result(
                0 if wanted <= self.bridge_features else 1,
                "",
                "" if wanted <= self.bridge_features else "Error: Could not process rule: Protocol error",
            )
        if argv == ["nft", "-f", "-"]:
            if not change and all(line.startswith("list ") for line in (stdin or "").splitlines() if line):
                return self._nft_probe(stdin or "")
            return self._nft_batch(stdin or "", echo=False)
        if argv[:3] == ["nft", "-j", "list"]:
            return self._nft_list(argv[3:])
        if argv[:3] == ["nft", "delete", "chain"] or argv[:3] == ["nft", "delete", "table"]:
            return self._nft_delete(argv[2], argv[3:])
        raise UnexpectedCommand(f"the fake runner does not model {argv} (stdin {stdin!r})")

    def _private_save(self, argv: list[str], stdin: str) -> Result:
        """``unshare --net -- PYTHON -I -S -c CODE RESTORE SAVE ...``: the batches restored
        into a private namespace's empty tables, saved there (the model's own tables untouched)."""
        if argv[3:7] != [sys.executable, "-I", "-S", "-c"] or not argv[8].endswith("-restore"):
            raise UnexpectedCommand(f"the fake runner does not model {argv}")
        tool = argv[8].rsplit("/", 1)[-1].removesuffix("-restore")
        tables: Tables = {}
        try:
            for text in stdin.split("\0"):
                _apply_restore(tool, tables, text)
        except RestoreError as error:
            return Result(1, "", f"{tool}-restore: {error}")
        return Result(0, _save_text(tool, tables), "")

    def _restore(self, tool: str, text: str) -> Result:
        tables = copy.deepcopy(self.xtables[tool])
        try:
            _apply_restore(tool, tables, text)
        except RestoreError as error:
            return Result(1, "", f"{tool}-restore: {error}")
        self.xtables[tool] = tables
        return Result(0, "", "")

    def _nft_batch(self, text: str, echo: bool) -> Result:
        state = copy.deepcopy(self.nft)
        try:
            items = _apply_nft(state, text)
        except NftError as error:
            return Result(1, "", str(error))
        self.nft = state
        return Result(0, json.dumps({"nftables": items}) + "\n" if echo else "", "")

    def _private_nft(self, text: str) -> Result:
        """The text echo of a batch applied to an empty nft model (this model untouched):
        its rules as nft 1.0.6 echoes them, the position after the first of a chain."""
        try:
            items = _apply_nft(NftState(), text)
        except NftError as error:
            return Result(1, "", str(error))
        lines, last = [], {}
        for item in items:
            rule = item.get("add", {}).get("rule")
            if rule:
                where = f"{rule['family']} {rule['table']} {rule['chain']}"
                position = f"handle {last[where]} " if where in last else ""
                lines.append(f"add rule {where} {position}{rule['expr'][0]['text']}")
                last[where] = rule["handle"]
        return Result(0, "".join(f"{line}\n" for line in lines), "")

    def _nft_probe(self, text: str) -> Result:
        for line in text.splitlines():
            words = line.split()
            if words[:2] != ["list", "chain"] or len(words) != 5:
                raise UnexpectedCommand(f"nft list not modelled: {line!r}")
            try:
                self.nft.chain(*words[2:5])
            except NftError as error:
                return Result(1, "", str(error))
        return Result(0, "", "")

    def _nft_list(self, what: list[str]) -> Result:
        items: list[dict] = [METAINFO]
        if what == ["tables"]:
            for (family, name), table in self._nft_tables().items():
                items.append({"table": {"family": family, "name": name, "handle": table}})
        elif what[0] == "chains" and len(what) == 2:
            items += [{"chain": chain} for chain, _ in self._nft_chains(what[1])]
        elif what[0] in ("chain", "table") and len(what) in (3, 4):
            family, table, *chain = what[1:]
            found = [(c, rules) for c, rules in self._nft_chains(family) if c["table"] == table]
            found = [(c, rules) for c, rules in found if not chain or c["name"] == chain[0]]
            if not found and (what[0] == "chain" or (family, table) not in self._nft_tables()):
                return Result(1, "", "Error: No such file or directory")
            for chain_item, rules in found:
                items.append({"chain": chain_item})
                items += [{"rule": {"family": family, "table": table, "chain": chain_item["name"]}} for _ in rules]
        else:
            raise UnexpectedCommand(f"nft -j list {' '.join(what)} not modelled")
        return Result(0, json.dumps({"nftables": items}) + "\n", "")

    def _nft_tables(self) -> dict[tuple[str, str], int]:
        """Every nft table with a handle: ours, then those the xtables tools made."""
        found = {key: table.handle for key, table in self.nft.tables.items()}
        for tool, tables in self.xtables.items():
            for number, table in enumerate(tables, start=1):
                found[(NFT_FAMILY[tool], table)] = 1000 * (list(NFT_FAMILY).index(tool) + 1) + number
        return found

    def _nft_chains(self, family: str) -> list[tuple[dict, list[str]]]:
        """(chain item, its rules) of FAMILY: the nft model's chains and the xtables tool's."""
        found: list[tuple[dict, list[str]]] = []
        for (fam, name), table in self.nft.tables.items():
            if fam == family:
                found += [({"family": fam, "table": name, "name": c, "handle": h}, []) for c, h in table.chains.items()]
        tool = TOOL_OF_FAMILY.get(family)
        for table, chains in self.xtables.get(tool, {}).items() if tool else []:
            for chain, rules in chains.items():
                item: dict = {"family": family, "table": table, "name": chain}
                if chain in BUILTINS[tool][table]:
                    item["policy"] = "accept"
                found.append((item, rules))
        return found

    def _nft_delete(self, kind: str, what: list[str]) -> Result:
        family, table, *chain = what
        tool = TOOL_OF_FAMILY.get(family)
        tables = self.xtables.get(tool, {}) if tool else {}
        if table not in tables or (kind == "chain" and chain[0] not in tables[table]):
            raise UnexpectedCommand(f"nft delete {kind} {' '.join(what)}: only xtables-made ones are modelled")
        if kind == "chain":
            if tables[table][chain[0]]:
                return Result(1, "", "Error: Could not process rule: Device or resource busy")
            del tables[table][chain[0]]
        else:
            if any(tables[table].values()):
                return Result(1, "", "Error: Could not process rule: Device or resource busy")
            del tables[table]
        return Result(0, "", "")

    # ---- for golden files ----

    def transcript(self, since: int = 0) -> str:
        """The calls from number SINCE on, one block each."""
        return "\n".join(call.render() for call in self.calls[since:])
