"""Network-namespace helpers for tests that run real firewall tools.

Every namespace is created here (``ip netns add``) with a unique name and deleted
afterwards, so no test ever touches the root namespace's firewall or links.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # the project: tests/helpers/ is two below
SHARED = ROOT.parent / "shared"
TESTDATA = SHARED / "libvirt-testdata"
# Tests marked ``shared`` read libvirt's test corpora (or the CLI contract) from ../shared,
# which a clone of the project does not have: without it they are skipped, and counted.
SHARED_ABSENT = (
    None
    if TESTDATA.is_dir() and (SHARED / "docs").is_dir()
    else (f"libvirt's test data is not beside the checkout ({SHARED}): comparison with libvirt skipped")
)

_counter = itertools.count()


def need_root() -> None:
    """Skip on a developer machine without root; CI (CI=true) runs as root and must not skip."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("namespace tests need root in CI")
        pytest.skip("needs root to create network namespaces")


def run(
    argv: Sequence[str], *, check: bool = True, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


class Netns:
    """One named network namespace; ``ns.run([...])`` runs a command inside it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        return run(["ip", "netns", "exec", self.name, *argv], **kwargs)

    def sh(self, *argv: str, **kwargs) -> str:
        return self.run(argv, **kwargs).stdout

    def __repr__(self) -> str:
        return f"Netns({self.name})"


@contextlib.contextmanager
def netns(prefix: str = "vfw") -> Iterator[Netns]:
    need_root()
    name = f"{prefix}{os.getpid()}x{next(_counter)}x{uuid.uuid4().hex[:4]}"
    run(["ip", "netns", "add", name])
    try:
        ns = Netns(name)
        ns.run(["ip", "link", "set", "lo", "up"])
        yield ns
    finally:
        kill_namespace_processes(name)
        run(["ip", "netns", "del", name], check=False)


BACKENDS = ("nftables", "iptables")


@contextlib.contextmanager
def public_tmp_dir(prefix: str) -> Iterator[Path]:
    """A folder under /tmp that every user may traverse (0755), removed afterwards: dnsmasq
    drops root for nobody before it reads its files, so one under pytest's tmp_path (0700
    parents) would make the test, not virtfw, hide them."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# label -> text shown after a conformance summary line (see conftest)
CONFORMANCE_NOTES: dict[str, str] = {}


def our_namespaces() -> list[str]:
    """Namespaces this test process created (named PREFIX<pid>x...) that still exist."""
    mine = re.compile(rf"^vfw[A-Za-z]*{os.getpid()}x")
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip() and mine.match(line.split()[0])]


def read_commands(path: Path) -> list[list[str]]:
    """The commands of a libvirt expected-output file, each as an argv.

    One argument per line, continued with `` \\``; shell quoting only where a shell needs
    it (``'!'``, ``'{ ... }'``), and some lines hold two arguments (nft's ``-ae insert``),
    so each command's lines are joined and split with :func:`shlex.split`.
    """
    commands: list[list[str]] = []
    pending: list[str] = []
    for line in path.read_text().splitlines():
        if line.endswith(" \\"):
            pending.append(line[:-2])
            continue
        pending.append(line)
        commands.append(shlex.split(" ".join(pending)))
        pending = []
    assert not pending, f"{path}: last command continues past the end of the file"
    return commands


def kill_namespace_processes(name: str) -> None:
    """Daemons started inside (dnsmasq of a network never destroyed) die with the namespace."""
    listed = run(["ip", "netns", "pids", name], check=False).stdout.split()
    for pid in listed:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)


def virtfw_argv(*args: str, config_dir: Path, state_dir: Path, backend: str | None = None) -> list[str]:
    argv = [sys.executable, "-m", "virtfw", "--config-dir", str(config_dir), "--state-dir", str(state_dir)]
    if backend:
        argv += ["--backend", backend]
    return argv + list(args)


class Virtfw:
    """virtfw run inside one namespace with its own config and state dirs."""

    def __init__(self, ns: Netns, tmp: Path, backend: str | None = None) -> None:
        self.ns = ns
        self.config_dir = tmp / "etc"
        self.state_dir = tmp / "run"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.backend = backend

    def __call__(
        self, *args: str, check: bool = True, env: dict | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        argv = ["ip", "netns", "exec", self.ns.name]
        argv += virtfw_argv(*args, config_dir=self.config_dir, state_dir=self.state_dir, backend=self.backend)
        if env:
            argv = ["env", *(f"{k}={v}" for k, v in env.items()), *argv]
        return run(argv, check=check, timeout=timeout)


def ruleset(ns: Netns, backend: str) -> str:
    """The live ruleset of a namespace, normalized so two equal rulesets compare equal.

    nftables: ``nft list ruleset`` (see :func:`normalize_nft`).
    iptables: ``iptables-save`` then ``ip6tables-save`` (see :func:`normalize_iptables_save`),
    each under a ``# <tool>`` line so a diff says which family differs.
    Chain order inside a table is ignored (chains are sorted); rule order within a chain is not.
    """
    if backend == "nftables":
        return normalize_nft(ns.sh("nft", "list", "ruleset"))
    if backend != "iptables":
        raise ValueError(f"unknown backend {backend!r}")
    parts: list[str] = []
    for tool in ("iptables-save", "ip6tables-save"):
        parts.append(f"# {tool}")
        parts.append(normalize_iptables_save(ns.sh(tool)))
    return "\n".join(part for part in parts if part)


_NFT_HANDLE = re.compile(r"\s*# handle \d+\s*$")
_NFT_COUNTER = re.compile(r"\bpackets \d+ bytes \d+\b")
_NFT_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


@dataclass
class _NftBlock:
    """One block directly inside a table (chain, set, map, flowtable, ...)."""

    header: str
    body: list[str] = field(default_factory=list)


@dataclass
class _NftTable:
    header: str
    attributes: list[str] = field(default_factory=list)
    blocks: list[_NftBlock] = field(default_factory=list)


def normalize_nft(text: str) -> str:
    """Canonical form of ``nft [-a] list ruleset`` output.

    Parsed by brace depth into tables and the blocks (chains, sets, ...) inside them.
    Handles (``# handle N``, printed with ``-a``) are dropped and counters zeroed, since
    both differ between two namespaces holding the same rules; blank lines and
    indentation are dropped and re-made. Tables are sorted, and blocks within a table
    are sorted by their header line, because the order chains were created in has no
    effect on packets. Rule order inside a chain is kept: it is what decides verdicts.
    """
    tables: list[_NftTable] = []
    depth = 0
    block: _NftBlock | None = None
    for raw in text.splitlines():
        line = _NFT_COUNTER.sub("packets 0 bytes 0", _NFT_HANDLE.sub("", raw)).strip()
        if not line:
            continue
        unquoted = _NFT_QUOTED.sub('""', line)
        delta = unquoted.count("{") - unquoted.count("}")
        if depth == 0:
            if not (line.startswith("table ") and delta == 1):
                raise ValueError(f"nft ruleset: expected a table, got {raw!r}")
            tables.append(_NftTable(line))
        elif depth == 1:
            if line == "}":
                pass  # end of the table
            elif delta > 0:
                block = _NftBlock(line)
                tables[-1].blocks.append(block)
            else:
                tables[-1].attributes.append(line)
        else:
            assert block is not None
            if not (line == "}" and depth + delta == 1):  # the block's own closing brace
                block.body.append("\t" * min(depth, depth + delta) + line)
        depth += delta
        if depth < 0:
            raise ValueError(f"nft ruleset: unbalanced braces at {raw!r}")
    if depth != 0:
        raise ValueError("nft ruleset: unbalanced braces at end of output")
    out: list[str] = []
    for table in sorted(tables, key=lambda t: t.header):
        out.append(table.header)
        out.extend("\t" + line for line in table.attributes)
        for blk in sorted(table.blocks, key=lambda b: b.header):
            out.append("\t" + blk.header)
            out.extend(blk.body)
            out.append("\t}")
        out.append("}")
    return "\n".join(out)


_IPT_COUNTERS = re.compile(r"\[\d+:\d+\]")


def normalize_iptables_save(text: str) -> str:
    """Canonical form of ``iptables-save`` / ``ip6tables-save`` output.

    Comments (the generated/completed stamps, iptables-nft warnings) are dropped and
    counters zeroed. Tables are sorted (iptables-save prints them in kernel order), chain
    declarations are sorted, and rules are grouped by chain with chains sorted, keeping
    the order of rules within each chain.
    """
    tables: dict[str, tuple[dict[str, str], dict[str, list[str]]]] = {}
    current: tuple[dict[str, str], dict[str, list[str]]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current = tables.setdefault(line[1:], ({}, {}))
        elif current is None:
            raise ValueError(f"iptables-save: line outside a table: {raw!r}")
        elif line == "COMMIT":
            current = None
        elif line.startswith(":"):
            name, _, rest = line[1:].partition(" ")
            current[0][name] = _IPT_COUNTERS.sub("[0:0]", rest)
        elif line.startswith("-A "):
            current[1].setdefault(line.split()[1], []).append(line)
        else:
            raise ValueError(f"iptables-save: unexpected line {raw!r}")
    out: list[str] = []
    for table in sorted(tables):
        chains, rules = tables[table]
        out.append(f"*{table}")
        out.extend(f":{name} {chains[name]}" for name in sorted(chains))
        for chain in sorted(rules):
            out.extend(rules[chain])
        out.append("COMMIT")
    return "\n".join(out)


# --- guest ports and whole-firewall snapshots (nwfilter lifecycle tests) -------------------

_PORT_KINDS: list[str] = []  # the first kind that worked, remembered for later ports


def add_port(ns: Netns, name: str) -> None:
    """A stand-in guest port device named ``name`` inside ``ns``.

    A ``dummy`` link where the kernel has the module, else ``ifb``, else one end of a
    veth pair (the peer is ``p<name>``, cut to 15 characters). Filters do not need the
    port to exist; these make the rules realistic (an interface of that name is there).
    """
    kinds = _PORT_KINDS or ["dummy", "ifb", "veth"]
    problems = []
    for kind in kinds:
        argv = ["ip", "link", "add", name, "type", kind]
        if kind == "veth":
            argv += ["peer", "name", ("p" + name)[:15]]
        proc = ns.run(argv, check=False)
        if proc.returncode == 0:
            if not _PORT_KINDS:
                _PORT_KINDS.append(kind)
            return
        problems.append(f"{kind}: {proc.stderr.strip()}")
    raise AssertionError(f"cannot create port {name} in {ns.name}: {'; '.join(problems)}")


SAVE_TOOLS = ("iptables-save", "ip6tables-save", "ebtables-save")


def firewall_snapshot(ns: Netns) -> dict[str, str]:
    """Every firewall view of a namespace, normalized: ``nft list ruleset`` and the
    ``*-save`` output of iptables, ip6tables and ebtables (those installed).

    None of these reads creates a table, so taking a snapshot changes nothing.
    """
    out = {"nft list ruleset": normalize_nft(ns.sh("nft", "list", "ruleset"))}
    for tool in SAVE_TOOLS:
        if shutil.which(tool):
            out[tool] = normalize_iptables_save(ns.sh(tool))
    return out


def dir_files(root: Path, skip: Sequence[str] = ("lock",)) -> dict[str, str]:
    """Relative path -> content of every regular file under ``root`` (empty if absent)."""
    files: dict[str, str] = {}
    if root.exists():
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.name not in skip:
                files[str(path.relative_to(root))] = path.read_text(errors="replace")
    return files


def filter_ruleset(ns: Netns, backend: str) -> str:
    """:func:`ruleset` plus, for iptables, the ebtables nat and filter tables, where
    nwfilter's layer-2 rules live (listed with ``ebtables -L``, which shows the
    built-in chains whether or not the table exists)."""
    text = ruleset(ns, backend)
    if backend == "iptables":
        for table in ("nat", "filter"):
            text += f"\n# ebtables -t {table}\n" + ns.sh("ebtables", "-t", table, "-L")
    return text


# A second NAT network beside the shipped ``default`` (virbr0, 192.168.122.0/24).
SECOND_NETWORK = """<network><name>second</name><forward mode='nat'/><bridge name='virbr7'/>
<ip address='192.168.77.1' netmask='255.255.255.0'/></network>"""


def define_second(vfw: Virtfw, tmp: Path) -> None:
    """``net-define`` the network of SECOND_NETWORK (not started)."""
    path = tmp / "second.xml"
    path.write_text(SECOND_NETWORK)
    vfw("net-define", str(path))


def verify_problems(vfw: Virtfw) -> list[str]:
    """What ``verify --json`` reports (it must exit 0 or 3: no error)."""
    proc = vfw("verify", "--json", check=False)
    assert proc.returncode in (0, 3), proc.stderr
    return json.loads(proc.stdout)["problems"]
