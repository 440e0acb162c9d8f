#!/usr/bin/env python3
"""Benchmark: how long virtfw takes to start and stop NAT networks, against libvirt.

    python bench/net_start.py [--counts 1,10,50] [--backend nftables|iptables|both]
                              [--repeat R] [--runs S] [--virtfw PATH] [--use-installed]
                              [--venv] [--startup-only] [--profile]

What runs: the console script next to this Python (``--virtfw`` for another), always
importing the checkout this file lives in (PYTHONPATH, ahead of any installed or
editable virtfw; ``--use-installed`` for what is installed), with its bytecode cached
under a temporary PYTHONPYCACHEPREFIX filled by an untimed warm-up (nothing is ever
written into the checkout). Run it with the interpreter itself, not a pyenv shim.
``--venv`` measures what a user runs: the checkout installed (not editable) into a
throwaway venv of this Python, as README installs it, so the .pth files of a
development interpreter's site-packages (an editable finder, say) are not charged to
every start; the start-up section then has no "uncached" rows.

For each backend and each count N it generates N NAT networks shaped like libvirt's
nat-default (name netK, bridge vbK, 10.(K//250).(K%250).1/24 with a DHCP range) and
measures, every time in a fresh network namespace with fresh state:

  (a) one ``virtfw net-start netK`` process per network, then one ``net-destroy`` each;
  (b) one ``virtfw autostart`` process starting all N (bridges, rules and dnsmasq: end
      to end), then one ``net-destroy`` each;
  (c) a replay of the firewall commands libvirt 11.3 runs for the same networks, one
      process per command: base.{nftables,iptables} without its list queries, then
      nat-default-linux.{nftables,iptables} per network (renamed, tc skipped); it is
      compared with virtfw's own firewall tool time from (d), like with like;
  (d) one plain ``nft -f`` (or iptables-restore + ip6tables-restore) of the final
      ruleset (b) leaves, against the time virtfw spends in firewall tools during
      (b), measured by timing wrappers put on PATH in front of the real tools;
  (e) nftables: the batch virtfw applied in (d), loaded as virtfw loads it
      (``nft -j -e -a -f``: JSON echo, for the rule handles) and plainly (``nft -f``);
  (f) the sync calls (fsync, fdatasync, sync, syncfs) of one ``autostart``, counted
      with ``strace -f`` (children detached at exec: the tools' own are not counted),
      and by file.

Start-up (medians of ``--runs``, fresh namespace and state each): ``virtfw --help``,
one ``net-start default`` and one first ``nwfilter-binding-create`` (clean-traffic
on a new port), against their targets, also uncached (a copy of the checkout imported
with no bytecode written: the first run after an install), the interpreter's own
start-up and what ``site`` (the .pth files) imports, for scale. Each figure is wall
clock, fork to exit, with the CPU time beside it (steadier on a busy machine).
``--repeat R`` runs (a)-(c) R times and prints medians; ``--profile`` adds import
times and a cProfile of one net-start. Nothing is asserted: a benchmark, not a test.

Safety: every command that touches links or firewall runs inside a namespace created
here (``ip netns add``) and deleted in a ``finally`` (and on SIGTERM), after every
process left in it (each network's dnsmasq) is stopped by pid; the end of the output
says whether any dnsmasq this run started is still there. Child processes enter the
namespace with setns(2) between fork and exec (no ``ip netns exec``, whose own
mount-namespace set-up would be charged to every command); a child that cannot enter
it fails instead of running in the root namespace, and each new namespace is checked
to hold only ``lo`` before use.
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import os
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTDATA = ROOT.parent / "shared" / "libvirt-testdata" / "networkxml2firewalldata"

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count()
_live_namespaces: set[str] = set()
_IPT_COUNTERS = re.compile(r"\[\d+:\d+\]")

FIREWALL_TOOLS = (
    "nft", "iptables", "ip6tables", "iptables-save", "ip6tables-save",
    "iptables-restore", "ip6tables-restore", "tc",
)  # fmt: skip

TARGETS = {
    "tool_ratio": 1.5,  # virtfw tool time / one plain batch, at most
    "firewall_speedup": 4.0,  # libvirt replay / virtfw's firewall tool time in autostart, N=50, at least
    "net_start_ms": 200.0,  # one net-start default, bytecode cached, less than
    "help_ms": 60.0,  # virtfw --help, bytecode cached, less than
    "binding_create_ms": 150.0,  # a first nwfilter-binding-create, bytecode cached, less than
}


class BenchError(Exception):
    pass


@dataclass(frozen=True)
class Timing:
    wall: float  # s, fork to exit
    cpu: float  # s, user + system


def medians(samples: Sequence[Timing]) -> Timing:
    return Timing(statistics.median(t.wall for t in samples), statistics.median(t.cpu for t in samples))


# ---- processes and namespaces ------------------------------------------------------


def run_root(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess:
    """Only ``ip netns add/del`` runs in the root namespace."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=120, check=False)
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)} -> {proc.returncode}: {proc.stderr.strip()}")
    return proc


class Namespace:
    """A network namespace of our own; ``run`` executes argv inside it and times it."""

    def __init__(self, tag: str) -> None:
        self.name = f"vfwbench{os.getpid()}x{next(_counter)}{tag}"
        self.fd = -1
        self.last_cpu = 0.0

    def __enter__(self) -> Namespace:  # noqa: PYI034 - not subclassed
        run_root(["ip", "netns", "add", self.name])
        _live_namespaces.add(self.name)
        try:
            self.fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY | os.O_CLOEXEC)
            self.run(["ip", "link", "set", "lo", "up"])
            links = self.run(["ip", "-o", "link", "show"]).stdout.split("\n")
            names = {line.split(":")[1].strip().split("@")[0] for line in links if line.strip()}
            if names != {"lo"}:  # we would be somewhere else than a fresh namespace
                raise BenchError(f"namespace {self.name} is not fresh: links {sorted(names)}")
        except BaseException:
            self._delete()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._delete()

    def _delete(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        delete_namespace(self.name)

    def _enter(self) -> None:  # runs in the child, between fork and exec
        if _libc.setns(self.fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        env: dict[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess:
        proc = self.timed(argv, input=input, env=env)[1]
        if check and proc.returncode != 0:
            raise BenchError(f"{shlex.join(argv)} -> {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-400:]}")
        return proc

    def timed(
        self, argv: Sequence[str], *, input: str | None = None, env: dict[str, str] | None = None
    ) -> tuple[float, subprocess.CompletedProcess]:
        """Wall time (s) of one process from fork to exit, and its result."""
        if self.fd < 0:
            raise BenchError(f"namespace {self.name} is not open")
        start = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, env=env, check=False,
            preexec_fn=self._enter, timeout=600, **stdin,
        )  # fmt: skip
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.last_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return elapsed, proc

    def sample(self, argv: Sequence[str], **kwargs) -> Timing:
        """Wall and CPU time of one successful run (CPU: the process and the children it
        waited for, so not a daemon it left behind; on a busy machine it varies less)."""
        wall = self.timed_ok(argv, **kwargs)
        return Timing(wall, self.last_cpu)

    def timed_ok(self, argv: Sequence[str], **kwargs) -> float:
        elapsed, proc = self.timed(argv, **kwargs)
        if proc.returncode != 0:
            raise BenchError(f"{shlex.join(argv)} -> {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-400:]}")
        return elapsed

    def add_bridges(self, names: Sequence[str]) -> None:
        batch = "".join(f"link add {name} type bridge\n" for name in names)
        self.run(["ip", "-batch", "-"], input=batch)


def stop_processes(name: str, grace: float = 2.0) -> None:
    """End every process in namespace ``name`` (ours: the dnsmasq of each network started
    there, by pid), SIGTERM then SIGKILL. ``ip netns del`` alone would leave them running,
    holding their inotify instances, with no namespace left to find them by."""
    pids = [int(p) for p in run_root(["ip", "netns", "pids", name], check=False).stdout.split()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _is_zombie(pid)]
            if pids:
                time.sleep(0.02)
        if not pids:
            return


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def delete_namespace(name: str) -> None:
    stop_processes(name)
    run_root(["ip", "netns", "del", name], check=False)
    _live_namespaces.discard(name)


def cleanup_all() -> None:
    for name in list(_live_namespaces):
        delete_namespace(name)


def dnsmasq_pids(under: Path | None = None) -> list[int]:
    """dnsmasq processes on this machine; with ``under``, only those whose config is there."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"dnsmasq") or _is_zombie(int(entry.name)):
            continue
        if under is None or any(str(under).encode() in arg for arg in argv):
            found.append(int(entry.name))
    return found


def _on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)


# ---- networks ----------------------------------------------------------------------


@dataclass(frozen=True)
class Net:
    k: int

    @property
    def name(self) -> str:
        return f"net{self.k}"

    @property
    def bridge(self) -> str:
        return f"vb{self.k}"

    @property
    def prefix(self) -> str:  # first three octets
        return f"10.{self.k // 250}.{self.k % 250}"

    def xml(self) -> str:
        p = self.prefix
        return (
            "<network>\n"
            f"  <name>{self.name}</name>\n"
            f"  <bridge name='{self.bridge}'/>\n"
            "  <forward/>\n"
            f"  <ip address='{p}.1' netmask='255.255.255.0'>\n"
            "    <dhcp>\n"
            f"      <range start='{p}.2' end='{p}.254'/>\n"
            "    </dhcp>\n"
            "  </ip>\n"
            "</network>\n"
        )


def nets_for(count: int) -> list[Net]:
    return [Net(k) for k in range(1, count + 1)]


class Virtfw:
    """argv builder for one config dir (definitions) and one state dir (runtime)."""

    def __init__(self, exe: str, config_dir: Path, state_dir: Path, backend: str | None) -> None:
        self.exe, self.config_dir, self.state_dir, self.backend = exe, config_dir, state_dir, backend

    def argv(self, *args: str) -> list[str]:
        argv = [self.exe, "--config-dir", str(self.config_dir), "--state-dir", str(self.state_dir)]
        if self.backend:
            argv += ["--backend", self.backend]
        return argv + list(args)


# ---- libvirt expected commands -----------------------------------------------------


def read_expected(path: Path) -> list[list[str]]:
    """Commands of a libvirt expected file: one argument per line, ' \\' continues."""
    commands: list[list[str]] = []
    current: list[str] = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        if line.endswith(" \\"):
            current.append(line[:-2])
        else:
            current.append(line)
            commands.append(shlex.split(" ".join(current)))
            current = []
    if current:
        commands.append(shlex.split(" ".join(current)))
    return commands


def is_query(argv: list[str]) -> bool:
    return (argv[0] == "nft" and "list" in argv) or "--list-rules" in argv


def renamed(argv: list[str], net: Net) -> list[str]:
    out = []
    for arg in argv:
        arg = arg.replace("virbr0", net.bridge).replace("LIBVIRT_", "VIRTFW_")
        arg = arg.replace("libvirt_network", "virtfw_network")
        arg = re.sub(r"\b192\.168\.122\.", net.prefix + ".", arg)
        out.append(arg)
    return out


def libvirt_replay(backend: str, nets: list[Net]) -> list[list[str]]:
    base = [c for c in read_expected(TESTDATA / f"base.{backend}") if not is_query(c)]
    base = [renamed(c, Net(0)) for c in base]  # only the LIBVIRT_/libvirt_network renames apply
    per_net = [c for c in read_expected(TESTDATA / f"nat-default-linux.{backend}") if c[0] != "tc"]
    commands = list(base)
    for net in nets:
        commands += [renamed(c, net) for c in per_net]
    return commands


# ---- timing wrappers ---------------------------------------------------------------

WRAPPER = """#!/bin/bash
# virtfw bench timing wrapper: runs the real tool, logs its wall time (s) and argv.
start=$EPOCHREALTIME
{real} "$@"
rc=$?
end=$EPOCHREALTIME
printf '%s\\t%s\\t%s\\t%s\\n' "{tool}" "$start" "$end" "$*" >> "$VIRTFW_BENCH_TOOLLOG"
for arg in "$@"; do  # a copy of each batch (a memfd virtfw passes as /proc/self/fd/N), untimed
    case "$arg" in /proc/self/fd/*|*/virtfw-*.batch) cp -- "$arg" "$VIRTFW_BENCH_TOOLLOG.$EPOCHREALTIME.{tool}.batch" ;; esac
done
exit $rc
"""


def make_wrappers(folder: Path, real: dict[str, str]) -> None:
    for tool, path in real.items():
        script = folder / tool
        script.write_text(WRAPPER.format(real=shlex.quote(path), tool=tool))
        script.chmod(0o755)


@dataclass
class ToolCall:
    tool: str
    seconds: float
    args: str


def read_tool_log(path: Path) -> list[ToolCall]:
    calls = []
    if not path.exists():
        return calls
    for line in path.read_text().splitlines():
        tool, start, end, args = (line.split("\t", 3) + [""])[:4]
        calls.append(ToolCall(tool, float(end) - float(start), args))
    return calls


# ---- scenarios ---------------------------------------------------------------------


@dataclass
class Result:
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(
        self, exe: str, repeat: int, tmp: Path, use_installed: bool = False, python: str = sys.executable
    ) -> None:
        self.exe = exe
        self.python = python
        self.uncached = not use_installed
        self.repeat = repeat
        self.tmp = tmp
        self.real = {t: p for t in FIREWALL_TOOLS if (p := shutil.which(t))}
        self.wrapdir = tmp / "wrappers"
        self.wrapdir.mkdir()
        make_wrappers(self.wrapdir, self.real)
        self.config_dirs: dict[int, Path] = {}
        self.batches: dict[int, Path] = {}  # N -> the largest nft batch autostart applied
        # Every run: the console script, importing the checkout this file lives in
        # (PYTHONPATH, ahead of any installed virtfw) with its bytecode cached under our
        # temp dir (never written into the checkout), as an installed package has it.
        # The "uncached" figures import a copy of the checkout made here, with no
        # bytecode written anywhere: every virtfw module is compiled on every run (the
        # first run after an install or a pull); stdlib and site-packages keep theirs.
        base = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
        source = ROOT
        if not use_installed:
            source = tmp / "uncached-copy"
            for part in ("virtfw", "etc"):
                shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
        self.env = {
            **self._with_path(base, None if use_installed else ROOT),
            "PYTHONPYCACHEPREFIX": str(tmp / "pycache"),
        }
        self.env_uncached = {**self._with_path(base, None if use_installed else source), "PYTHONDONTWRITEBYTECODE": "1"}

    @staticmethod
    def _with_path(env: dict[str, str], root: Path | None) -> dict[str, str]:
        if root is None:
            return dict(env)
        return {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)}

    def warm(self, backends: list[str]) -> None:
        """Fill the bytecode cache (untimed): every module a timed command imports."""
        for backend in backends:
            with Namespace("warm") as ns:
                ns.run([self.exe, "--help"], env=self.env)
                self.create_binding(ns, backend, self.env)
                vf = Virtfw(self.exe, self.empty_config(), self.fresh_state(), backend)
                ns.run(vf.argv("net-start", "default"), env=self.env)
                ns.run(vf.argv("net-destroy", "default"), env=self.env)

    def empty_config(self) -> Path:
        config = self.tmp / "config-empty"
        config.mkdir(exist_ok=True)
        return config

    def code_location(self) -> str:
        """Which virtfw package the runs import, and its git commit (plus local changes)."""
        probe = "import os, virtfw; print(os.path.dirname(virtfw.__file__))"
        proc = subprocess.run([self.python, "-c", probe], capture_output=True, text=True, env=self.env, check=False)
        where = proc.stdout.strip() or f"? ({proc.stderr.strip()[-200:]})"
        repo = Path(where).parent
        git = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
        )
        return f"{where} (git {git.stdout.strip() or '?'})"

    def fresh_state(self) -> Path:
        """A new state dir (mkdtemp makes it 0700): 0711, as virtfw makes its own, since
        dnsmasq reads its files there as an unprivileged user and virtfw refuses one it
        cannot pass through."""
        path = Path(tempfile.mkdtemp(prefix="state-", dir=self.tmp))
        path.chmod(0o711)
        return path

    def config_for(self, count: int, info: Result) -> Path:
        """Definitions of net1..netN, all marked autostart (made once per N, untimed)."""
        if count in self.config_dirs:
            return self.config_dirs[count]
        config = self.tmp / f"config-{count}"
        (config / "xml").mkdir(parents=True)
        vf = Virtfw(self.exe, config, self.fresh_state(), None)
        define = mark = 0.0
        with Namespace("def") as ns:
            for net in nets_for(count):
                src = config / "xml" / f"{net.name}.xml"
                src.write_text(net.xml())
                define += ns.timed_ok(vf.argv("net-define", str(src)), env=self.env)
                mark += ns.timed_ok(vf.argv("net-autostart", net.name), env=self.env)
        info.figures[f"define_mean_{count}"] = define / count
        info.figures[f"mark_mean_{count}"] = mark / count
        self.config_dirs[count] = config
        return config

    def _median(self, fn) -> dict[str, float]:
        runs = [fn() for _ in range(self.repeat)]
        return {key: statistics.median(r[key] for r in runs) for key in runs[0]}

    # (a)
    def per_network(self, backend: str, count: int, config: Path) -> dict[str, float]:
        def once() -> dict[str, float]:
            vf = Virtfw(self.exe, config, self.fresh_state(), backend)
            nets = nets_for(count)
            with Namespace("a") as ns:
                up = sum(ns.timed_ok(vf.argv("net-start", n.name), env=self.env) for n in nets)
                down = sum(ns.timed_ok(vf.argv("net-destroy", n.name), env=self.env) for n in nets)
            return {"up": up, "down": down}

        return self._median(once)

    # (b), and the ruleset it leaves for (d)
    def autostart(self, backend: str, count: int, config: Path) -> tuple[dict[str, float], dict[str, str]]:
        saved: dict[str, str] = {}

        def once() -> dict[str, float]:
            vf = Virtfw(self.exe, config, self.fresh_state(), backend)
            with Namespace("b") as ns:
                up = ns.timed_ok(vf.argv("autostart"), env=self.env)
                saved.clear()
                saved.update(self.save_ruleset(ns, backend))
                down = sum(ns.timed_ok(vf.argv("net-destroy", n.name), env=self.env) for n in nets_for(count))
            return {"up": up, "down": down}

        return self._median(once), saved

    @staticmethod
    def save_ruleset(ns: Namespace, backend: str) -> dict[str, str]:
        """The live firewall state as loadable text, comments and counters dropped.

        nftables: our two tables. iptables: *-save output, minus the built-in chains
        that iptables-save prints but that do not exist in the kernel (iptables-nft
        creates them on first use; restoring them would register extra hooked chains).
        """
        if backend == "nftables":
            return {
                "nft": "".join(ns.run(["nft", "list", "table", fam, "virtfw_network"]).stdout for fam in ("ip", "ip6"))
            }
        saved = {}
        for tool, fam in (("iptables", "ip"), ("ip6tables", "ip6")):
            listed = ns.run(["nft", "-j", "list", "chains", fam]).stdout
            kernel = {(c["chain"]["table"], c["chain"]["name"]) for c in json.loads(listed)["nftables"] if "chain" in c}
            lines, table = [], ""
            for line in ns.run([f"{tool}-save"]).stdout.splitlines():
                if line.startswith("#"):
                    continue
                if line.startswith("*"):
                    table = line[1:]
                if line.startswith(":"):
                    name, policy = line[1:].split()[:2]
                    if policy != "-" and (table, name) not in kernel:
                        continue
                    line = _IPT_COUNTERS.sub("[0:0]", line)
                lines.append(line)
            saved[tool] = "\n".join(lines) + "\n" if lines else ""
        return saved

    # (b) again, with timing wrappers in front of the firewall tools
    def autostart_tools(self, backend: str, count: int, config: Path) -> tuple[dict[str, float], list[ToolCall]]:
        calls: list[ToolCall] = []

        def once() -> dict[str, float]:
            vf = Virtfw(self.exe, config, self.fresh_state(), backend)
            log = Path(tempfile.mkstemp(prefix="tools-", suffix=".log", dir=self.tmp)[1])
            env = {**self.env, "PATH": f"{self.wrapdir}:{os.environ.get('PATH', '')}",
                   "VIRTFW_BENCH_TOOLLOG": str(log)}  # fmt: skip
            with Namespace("w") as ns:
                wall = ns.timed_ok(vf.argv("autostart"), env=env)
            run_calls = read_tool_log(log)
            if not run_calls:
                raise BenchError("the timing wrappers logged nothing: virtfw did not find them on PATH")
            calls[:] = run_calls
            batches = sorted(log.parent.glob(f"{log.name}.*.nft.batch"), key=lambda b: b.stat().st_size)
            if batches:
                self.batches[count] = batches[-1]
            apply = sum(c.seconds for c in run_calls if "restore" in c.tool or " -f " in f" {c.args} ")
            return {"wall": wall, "tools": sum(c.seconds for c in run_calls), "apply": apply,
                    "calls": len(run_calls)}  # fmt: skip

        return self._median(once), calls

    # (c)
    def replay(self, backend: str, count: int) -> dict[str, float]:
        nets = nets_for(count)
        commands = libvirt_replay(backend, nets)
        missing = {c[0] for c in commands} - set(self.real)
        if missing:
            raise BenchError(f"not on PATH: {', '.join(sorted(missing))}")
        argvs = [[self.real[c[0]], *c[1:]] for c in commands]  # absolute, as libvirt runs them

        def once() -> dict[str, float]:
            with Namespace("c") as ns:
                ns.add_bridges([n.bridge for n in nets])  # untimed
                total = 0.0
                for argv in argvs:
                    total += ns.timed_ok(argv)
            return {"total": total, "commands": len(argvs)}

        return self._median(once)

    # (d)
    def single_batch(self, backend: str, count: int, saved: dict[str, str]) -> dict[str, float]:
        """One plain load of the final ruleset into a fresh namespace holding the bridges.

        nftables: ``nft -f`` of our two tables. iptables: iptables-restore +
        ip6tables-restore, of the *-save text ("save") and of the same text without the
        built-in chains' ``:CHAIN ACCEPT`` policy lines ("batch"): iptables-nft creates
        those chains on first use with that same policy, and setting it explicitly costs
        tens of ms per restore. Both give the same ruleset; the faster is the reference.
        """
        bridges = [n.bridge for n in nets_for(count)]
        variants: dict[str, dict[str, str]] = {}
        if backend == "nftables":
            path = self.tmp / f"saved-{backend}-{count}.nft"
            path.write_text(saved["nft"])
            variants["batch"] = {"nft": str(path)}
        else:
            builtin_policy = re.compile(r"^:[A-Z]+ ACCEPT \[0:0\]$")
            variants["save"] = saved
            variants["batch"] = {
                tool: "".join(line + "\n" for line in text.splitlines() if not builtin_policy.match(line))
                for tool, text in saved.items()
            }
        times: dict[str, list[float]] = {key: [] for key in variants}
        for _ in range(max(3, self.repeat)):
            for key, texts in variants.items():
                with Namespace("d") as ns:
                    ns.add_bridges(bridges)
                    if backend == "nftables":
                        times[key].append(ns.timed_ok([self.real["nft"], "-f", texts["nft"]]))
                    else:
                        # On stdin: `iptables-restore -w FILE` takes FILE as -w's argument
                        # and silently restores nothing.
                        times[key].append(sum(
                            ns.timed_ok([self.real[f"{tool}-restore"], "-w"], input=texts[tool])
                            for tool in ("iptables", "ip6tables") if texts[tool]
                        ))  # fmt: skip
                    self.check_loaded(ns, backend, saved)
        return {key: statistics.median(values) for key, values in times.items()}

    def net_start_default(self, backend: str, runs: int = 5, cached: bool = True) -> Timing:
        """One ``net-start default`` (bridge, rules, dnsmasq) in a fresh namespace and state, median."""
        env = self.env if cached else self.env_uncached
        times = []
        for _ in range(runs):
            vf = Virtfw(self.exe, self.empty_config(), self.fresh_state(), backend)
            with Namespace("s") as ns:
                times.append(ns.sample(vf.argv("net-start", "default"), env=env))
        return medians(times)

    def create_binding(self, ns: Namespace, backend: str, env: dict[str, str]) -> Timing:
        """A first ``nwfilter-binding-create`` (clean-traffic on a new port), fresh state."""
        port = f"vnet{next(_counter)}"
        if ns.run(["ip", "link", "add", port, "type", "dummy"], check=False).returncode != 0:  # no dummy module
            ns.run(["ip", "link", "add", port, "type", "veth", "peer", "name", f"p{port}"[:15]])
        xml = self.tmp / f"binding-{port}.xml"
        xml.write_text(
            f"<filterbinding>\n  <portdev name='{port}'/>\n  <mac address='52:54:00:00:00:01'/>\n"
            "  <filterref filter='clean-traffic'>\n    <parameter name='IP' value='10.0.0.1'/>\n"
            "  </filterref>\n</filterbinding>\n"
        )
        vf = Virtfw(self.exe, self.empty_config(), self.fresh_state(), backend)
        return ns.sample(vf.argv("nwfilter-binding-create", str(xml)), env=env)

    def binding_create(self, backend: str, runs: int = 5, cached: bool = True) -> Timing:
        env = self.env if cached else self.env_uncached
        times = []
        for _ in range(runs):
            with Namespace("f") as ns:
                times.append(self.create_binding(ns, backend, env))
        return medians(times)

    def startup(self, runs: int = 9) -> dict[str, Timing]:
        figures = {}
        with Namespace("h") as ns:

            def median(argv: list[str], env: dict[str, str] | None = None) -> Timing:
                ns.timed_ok(argv, env=env or self.env)  # warm the page cache
                return medians([ns.sample(argv, env=env or self.env) for _ in range(runs)])

            py = self.python
            figures["python -c pass"] = median([py, "-c", "pass"])
            figures["python -S -c pass (no site, no .pth files)"] = median([py, "-S", "-c", "pass"])
            figures["python -c 'import click'"] = median([py, "-c", "import click"])
            figures["python -c 'import lxml.etree'"] = median([py, "-c", "import lxml.etree"])
            figures["virtfw --help"] = median([self.exe, "--help"])
            if self.uncached:
                figures["virtfw --help, uncached"] = median([self.exe, "--help"], env=self.env_uncached)
        return figures

    def site_imports(self) -> list[tuple[str, float]]:
        """What ``site`` imports at every start (the .pth files' doing), ms, from -X importtime."""
        with Namespace("i") as ns:
            err = ns.run([self.python, "-X", "importtime", "-c", "pass"], env=self.env).stderr
        rows, inside = [], []
        for line in err.splitlines():
            m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
            if not m:
                continue
            depth = len(m.group(2)) // 2
            if depth == 0:
                if m.group(3) == "site":
                    rows = [("site, all", int(m.group(1)) / 1000), *inside]
                inside = []
            elif depth == 1:
                inside.append((m.group(3), int(m.group(1)) / 1000))
        return rows

    # (e) nft with JSON echo (for handles) against a plain load of the same batch
    def nft_echo(self, count: int) -> dict[str, float]:
        batch = self.batches.get(count)
        if batch is None:
            raise BenchError("no nft batch was captured from the wrapped autostart")
        bridges = [n.bridge for n in nets_for(count)]
        times: dict[str, list[float]] = {"echo": [], "text": [], "plain": []}
        for _ in range(max(5, self.repeat)):
            for key, argv in (("echo", ["-j", "-e", "-a", "-f"]), ("text", ["-e", "-a", "-f"]), ("plain", ["-f"])):
                with Namespace("e") as ns:
                    ns.add_bridges(bridges)
                    times[key].append(ns.timed_ok([self.real["nft"], *argv, str(batch)]))
        return {key: statistics.median(values) for key, values in times.items()}

    # fsync(2) and friends made by one ``virtfw autostart`` of N networks
    def syncs(self, backend: str, count: int, config: Path) -> tuple[int, list[tuple[int, str]]]:
        """Total sync calls of the virtfw process (and its children up to their exec: the
        tools' own are not counted), and the count per kind of file synced."""
        strace = shutil.which("strace")
        if strace is None:
            raise BenchError("strace not on PATH (apt-get install strace)")
        state = self.fresh_state()
        vf = Virtfw(self.exe, config, state, backend)
        log = self.tmp / f"strace-{count}-{backend}.log"
        argv = [strace, "-f", "-b", "execve", "-qq", "-y", "-e", "trace=fsync,fdatasync,sync,syncfs", "-o", str(log)]
        with Namespace("y") as ns:
            ns.run([*argv, *vf.argv("autostart")], env=self.env)
        kinds: dict[str, int] = {}
        pattern = re.compile(r"^\d+\s+(fsync|fdatasync|sync|syncfs)\((?:\d+<([^>]*)>)?")
        for line in log.read_text().splitlines():
            m = pattern.match(line)
            if not m:
                continue
            where = m.group(2)
            if where is None:
                what = f"{m.group(1)}()"
            else:
                path = Path(where)
                rel = where
                for label, folder in (("STATE", state), ("CONFIG", config)):
                    if path.is_relative_to(folder):
                        rel = f"{label}/{path.relative_to(folder)}".rstrip("/.")
                rel = re.sub(r"/\.([^/]+?)\.[^./]+$", r"/\1", rel)  # mkstemp's temp name -> the file's
                rel = re.sub(r"\d+", "N", rel)
                what = f"{m.group(1)}(directory {rel})" if path.is_dir() else f"{m.group(1)}({rel})"
            kinds[what] = kinds.get(what, 0) + 1
        return sum(kinds.values()), sorted(((n, k) for k, n in kinds.items()), reverse=True)

    def check_loaded(self, ns: Namespace, backend: str, saved: dict[str, str]) -> None:
        """The single batch really loaded that ruleset, no more, no less (checked untimed)."""
        if self.save_ruleset(ns, backend) != saved:
            raise BenchError("the single batch did not reproduce the saved ruleset")


# ---- output ------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("[met]" if ok else "[MISSED]")


def print_table(title: str, counts: list[int], rows: list[tuple[str, list[str], str]]) -> None:
    header = ["", *[f"N={n}" for n in counts], "target"]
    body = [[label, *cells, target] for label, cells, target in rows]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    print(title)
    print("-" * len(title))

    def line(row: list[str]) -> str:
        parts = [row[0].ljust(widths[0])]
        parts += [cell.rjust(widths[i + 1]) for i, cell in enumerate(row[1:-1])]
        parts.append(row[-1])
        return "  ".join(parts).rstrip()

    print(line(header))
    for row in body:
        print(line(row))
    print()


def run_backend(bench: Bench, backend: str, counts: list[int], info: Result) -> list[str]:
    per_count: dict[int, dict[str, float | None]] = {}
    errors: list[str] = []
    tool_breakdown: dict[int, list[ToolCall]] = {}
    sync_breakdown: dict[int, list[tuple[int, str]]] = {}
    for count in counts:
        fig: dict[str, float | None] = {}
        per_count[count] = fig

        def attempt(what: str, fn, *args, count: int = count):
            try:
                return fn(*args)
            except (BenchError, subprocess.SubprocessError, OSError) as exc:
                errors.append(f"N={count} {what}: {exc}")
                return None

        print(f"  [{backend}] N={count} ...", file=sys.stderr, flush=True)
        config = attempt("define", bench.config_for, count, info)
        if config is None:
            continue
        a = attempt("(a) net-start/net-destroy", bench.per_network, backend, count, config)
        if a:
            fig.update(a_up=a["up"], a_down=a["down"])
        b = attempt("(b) autostart", bench.autostart, backend, count, config)
        saved = None
        if b:
            fig.update(b_up=b[0]["up"], b_down=b[0]["down"])
            saved = b[1]
        c = attempt("(c) libvirt replay", bench.replay, backend, count)
        if c:
            fig.update(c_total=c["total"], c_commands=c["commands"])
        w = attempt("(d) wrapped autostart", bench.autostart_tools, backend, count, config)
        if w:
            fig.update(w_wall=w[0]["wall"], w_tools=w[0]["tools"], w_apply=w[0]["apply"], w_calls=w[0]["calls"])
            tool_breakdown[count] = w[1]
        if saved:
            d = attempt("(d) single batch", bench.single_batch, backend, count, saved)
            if d:
                fig["d_batch"] = d["batch"]
                fig["d_save"] = d.get("save")
        if backend == "nftables" and w:
            e = attempt("(e) nft echo", lambda count=count: bench.nft_echo(count))
            if e:
                fig.update(e_echo=e["echo"], e_text=e["text"], e_plain=e["plain"])
        f = attempt("(f) syncs", lambda count=count, config=config: bench.syncs(backend, count, config))
        if f:
            fig["f_syncs"] = f[0]
            sync_breakdown[count] = f[1]

    def get(count: int, key: str) -> float | None:
        return per_count[count].get(key)

    def div(x: float | None, y: float | None) -> float | None:
        return None if x is None or not y else x / y

    def cells(fn) -> list[str]:
        return [fn(n) for n in counts]

    big = max(counts)
    speedup = div(get(big, "c_total"), get(big, "w_tools"))
    tool_ratios = [div(get(n, "w_tools"), get(n, "d_batch")) for n in counts]
    tools_ok = None if any(r is None for r in tool_ratios) else all(r <= TARGETS["tool_ratio"] for r in tool_ratios)
    met = None if speedup is None else speedup >= TARGETS["firewall_speedup"]
    firewall_target = (
        f">= {TARGETS['firewall_speedup']:.0f}x at N={big} {verdict(met)} (firewall commands only, both sides)"
    )
    batch_tool = "nft -f" if backend == "nftables" else "iptables-restore + ip6tables-restore"
    rows = [
        ("(a) net-start x N, total ms", cells(lambda n: ms(get(n, "a_up"))), ""),
        ("    per network, mean ms", cells(lambda n: ms(div(get(n, "a_up"), n))), ""),
        ("(a) net-destroy x N, total ms", cells(lambda n: ms(get(n, "a_down"))), ""),
        ("    per network, mean ms", cells(lambda n: ms(div(get(n, "a_down"), n))), ""),
        ("(b) autostart (1 process), ms", cells(lambda n: ms(get(n, "b_up"))), "(end to end: bridges, rules, dnsmasq)"),
        ("    per network, mean ms", cells(lambda n: ms(div(get(n, "b_up"), n))), ""),
        ("(b) net-destroy x N, total ms", cells(lambda n: ms(get(n, "b_down"))), ""),
        ("    per network, mean ms", cells(lambda n: ms(div(get(n, "b_down"), n))), ""),
        ("(c) libvirt replay, total ms", cells(lambda n: ms(get(n, "c_total"))), ""),
        (
            "    commands (1 process each)",
            cells(lambda n: "-" if get(n, "c_commands") is None else str(int(get(n, "c_commands")))),
            "",
        ),
        ("    per network, mean ms", cells(lambda n: ms(div(get(n, "c_total"), n))), ""),
        (
            "(c)/(d) replay / virtfw tool time",
            cells(lambda n: ratio(div(get(n, "c_total"), get(n, "w_tools")))),
            firewall_target,
        ),
        (f"(d) one {batch_tool}, ms", cells(lambda n: ms(get(n, "d_batch"))), "(median of 3; the reference)"),
    ]
    if backend == "iptables":
        rows.append(
            (
                "    same, *-save text as-is, ms",
                cells(lambda n: ms(get(n, "d_save"))),
                "(with ':CHAIN ACCEPT' lines for built-in chains)",
            )
        )
    rows += [
        ("(d) virtfw tool time in autostart, ms", cells(lambda n: ms(get(n, "w_tools"))), ""),
        ("    of which batch apply, ms", cells(lambda n: ms(get(n, "w_apply"))), ""),
        (
            "    tool invocations",
            cells(lambda n: "-" if get(n, "w_calls") is None else str(int(get(n, "w_calls")))),
            "",
        ),
        ("    autostart wall (wrapped), ms", cells(lambda n: ms(get(n, "w_wall"))), ""),
        (
            "(d) tool time / one batch",
            [ratio(r) for r in tool_ratios],
            f"<= {TARGETS['tool_ratio']}x {verdict(tools_ok)}",
        ),
    ]
    if backend == "nftables":
        rows += [
            ("(e) nft -j -e -a -f of virtfw's batch, ms", cells(lambda n: ms(get(n, "e_echo"))), "(median of 5)"),
            ("    nft -e -a -f (text echo), ms", cells(lambda n: ms(get(n, "e_text"))), "(median of 5)"),
            ("    nft -f of the same batch, ms", cells(lambda n: ms(get(n, "e_plain"))), "(median of 5)"),
            ("    JSON echo / plain", cells(lambda n: ratio(div(get(n, "e_echo"), get(n, "e_plain")))), ""),
            ("    text echo / plain", cells(lambda n: ratio(div(get(n, "e_text"), get(n, "e_plain")))), ""),
        ]
    rows.append(
        (
            "(f) sync calls in autostart",
            cells(lambda n: "-" if get(n, "f_syncs") is None else str(int(get(n, "f_syncs")))),
            "(fsync, fdatasync, sync, syncfs; strace)",
        )
    )
    print_table(f"backend {backend}", counts, rows)
    if tool_breakdown:
        count = max(tool_breakdown)
        print(f"  firewall tools run by `virtfw autostart` (N={count}, wrapped run):")
        for call in tool_breakdown[count]:
            args = call.args if len(call.args) <= 60 else call.args[:57] + "..."
            print(f"    {ms(call.seconds):>8} ms  {call.tool} {args}")
        print()
    if sync_breakdown:
        count = max(sync_breakdown)
        print(f"  sync calls of `virtfw autostart` (N={count}), by file (N = any number):")
        for number, what in sync_breakdown[count]:
            print(f"    {number:>6}  {what}")
        print()
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1,10,50", help="network counts, comma-separated (default 1,10,50)")
    parser.add_argument("--backend", choices=["nftables", "iptables", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario (a)-(c), median reported")
    parser.add_argument("--virtfw", help="virtfw executable (default: the console script of this Python)")
    parser.add_argument(
        "--use-installed",
        action="store_true",
        help="run whatever virtfw is installed (default: this checkout, via PYTHONPATH)",
    )
    parser.add_argument(
        "--venv",
        action="store_true",
        help="install this checkout into a throwaway venv (as README does) and run that virtfw",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print import times and a cProfile of one net-start default"
    )
    parser.add_argument("--startup-only", action="store_true", help="only the start-up figures (no N networks)")
    parser.add_argument("--runs", type=int, default=9, help="runs per start-up figure, median reported (default 9)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("error: needs root (creates network namespaces)", file=sys.stderr)
        return 2
    counts = sorted({int(c) for c in args.counts.split(",") if c.strip()})
    if not counts or min(counts) < 1 or max(counts) > 62499:
        print("error: counts must be between 1 and 62499", file=sys.stderr)
        return 2
    backends = ["nftables", "iptables"] if args.backend == "both" else [args.backend]
    if args.venv and (args.virtfw or args.use_installed):
        print("error: --venv installs its own virtfw; it takes no --virtfw or --use-installed", file=sys.stderr)
        return 2
    exe = args.virtfw or str(Path(sys.executable).parent / "virtfw")
    if not os.access(exe, os.X_OK):
        exe = shutil.which("virtfw") or ""
    if not exe and not args.venv:
        print("error: virtfw not found", file=sys.stderr)
        return 2

    bench_dnsmasq_before = len(dnsmasq_pids())
    tmp = ""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    errors: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="virtfw-bench-") as tmp:
            if args.venv:
                python = make_venv(Path(tmp) / "venv")
                bench = Bench(str(Path(python).parent / "virtfw"), args.repeat, Path(tmp), True, python)
            else:
                bench = Bench(exe, args.repeat, Path(tmp), args.use_installed)
            info = Result()
            print(f"virtfw bench: {bench.exe}; python {sys.version.split()[0]}; kernel {os.uname().release}; "
                  f"{os.cpu_count()} CPUs; repeat {args.repeat}")  # fmt: skip
            versions = [
                run_root([bench.real[t], "--version"]).stdout.strip() for t in ("nft", "iptables") if t in bench.real
            ]
            print("tools: " + "; ".join(versions))
            print(f"virtfw code measured: {bench.code_location()}")
            print(f"load average at start: {Path('/proc/loadavg').read_text().strip()}")
            print("times are wall clock per process (fork to exit), in ms; each scenario in a fresh namespace\n")
            print("warming the bytecode cache (untimed) ...", file=sys.stderr, flush=True)
            bench.warm(backends)
            for backend in backends if not args.startup_only else []:
                errors += run_backend(bench, backend, counts, info)

            print_startup(bench, backends, args.runs, errors)
            for count in counts if not args.startup_only else []:
                if f"define_mean_{count}" in info.figures:
                    print(f"net-define, mean of {count} (untimed set-up): {ms(info.figures[f'define_mean_{count}'])} ms; "
                          f"net-autostart: {ms(info.figures[f'mark_mean_{count}'])} ms")  # fmt: skip
            print()
            print(f"load average at end: {Path('/proc/loadavg').read_text().strip()}\n")
            if args.profile:
                profile(bench, backends[0])
    finally:
        cleanup_all()
        after = dnsmasq_pids()
        print(f"dnsmasq processes on this machine: {bench_dnsmasq_before} before the run, {len(after)} after")
        if leaked := dnsmasq_pids(Path(tmp)):
            print(f"LEAK: {len(leaked)} dnsmasq started by this bench still running: pids {leaked}")
        else:
            print("none started by this bench is left running")
    if errors:
        print("errors (figures shown as '-'):")
        for error in errors:
            print(f"  {error}")
    return 0


def make_venv(folder: Path) -> str:
    """A venv of this Python with the checkout installed (not editable) as README does; its python."""
    print(f"installing the checkout into a throwaway venv ({folder}) ...", file=sys.stderr, flush=True)
    source = folder.parent / "venv-source"  # a copy: the build writes build/ and *.egg-info beside its sources
    ignore = shutil.ignore_patterns(".git", "__pycache__", "build", "*.egg-info", "tests", "bench", ".*_cache")
    shutil.copytree(ROOT, source, ignore=ignore)
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    python = str(folder / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", str(source)], check=True)
    return python


def print_startup(bench: Bench, backends: list[str], runs: int, errors: list[str]) -> None:
    """The start-up figures: medians of single commands against their targets."""
    rows: list[tuple[str, str, str]] = []

    def row(label: str, value: Timing, key: str | None) -> tuple[str, str, str]:
        met = f"< {TARGETS[key]:.0f} ms {verdict(value.wall * 1000 < TARGETS[key])}" if key else ""
        return (label, f"{ms(value.wall):>8} ms  cpu {ms(value.cpu):>6} ms", met)

    def add(label: str, key: str | None, fn, *args, **kwargs) -> None:
        try:
            rows.append(row(label, fn(*args, **kwargs), key))
        except (BenchError, subprocess.SubprocessError, OSError) as exc:
            errors.append(f"{label}: {exc}")

    try:
        for label, value in bench.startup(runs).items():
            rows.append(row(label, value, "help_ms" if label == "virtfw --help" else None))
    except (BenchError, subprocess.SubprocessError, OSError) as exc:
        errors.append(f"start-up: {exc}")
    for backend in backends:
        add(f"virtfw net-start default [{backend}]", "net_start_ms", bench.net_start_default, backend, runs)
        add(f"virtfw nwfilter-binding-create [{backend}]", "binding_create_ms", bench.binding_create, backend, runs)
    for backend in backends[:1] if bench.uncached else []:
        add(f"virtfw net-start default [{backend}], uncached", None, bench.net_start_default, backend, runs, False)
        add(f"virtfw nwfilter-binding-create [{backend}], uncached", None, bench.binding_create, backend, runs, False)
    width = max(len(r[0]) for r in rows) if rows else 0
    title = f"start-up: medians of {runs} runs, wall clock fork to exit; bytecode cached unless 'uncached'"
    print(title)
    print("-" * len(title))
    for label, value, verdict_text in rows:
        print(f"{label.ljust(width)}  {value}  {verdict_text}".rstrip())
    try:
        site = bench.site_imports()
    except (BenchError, subprocess.SubprocessError, OSError) as exc:
        errors.append(f"site imports: {exc}")
        site = []
    if site:
        print(
            "what `site` imports at every start (python -X importtime -c pass, cumulative ms; the .pth files' doing):"
        )
        for name, value in site:
            print(f"  {value:7.1f}  {name}")
    print()


def profile(bench: Bench, backend: str) -> None:
    """Where one process's time goes: slowest imports, and cProfile of net-start default."""
    py = bench.python
    with Namespace("p") as ns:
        proc = ns.run([py, "-X", "importtime", "-m", "virtfw", "--help"], env=bench.env)
        rows = []
        for line in proc.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
            if m:
                rows.append((int(m.group(2)), len(m.group(3)) // 2, m.group(4)))
        print("import time (python -X importtime -m virtfw --help), top cumulative, ms")
        for cumulative, depth, name in sorted(rows, reverse=True)[:20]:
            print(f"  {cumulative / 1000:8.1f}  {'  ' * depth}{name}")
        print()
    config = bench.tmp / "config-empty"
    config.mkdir(exist_ok=True)
    vf = Virtfw(py, config, bench.fresh_state(), backend)
    with Namespace("p") as ns:
        argv = [py, "-m", "cProfile", "-s", "cumtime", "-m", "virtfw", *vf.argv("net-start", "default")[1:]]
        out = ns.run(argv, env=bench.env).stdout.splitlines()
    print(f"cProfile of virtfw net-start default [{backend}], top 30 by cumulative time")
    start = next((i for i, line in enumerate(out) if "ncalls" in line), 0)
    for line in out[max(0, start - 3) : start + 31]:
        print("  " + line)
    print()


if __name__ == "__main__":
    sys.exit(main())
