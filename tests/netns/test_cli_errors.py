"""The command line's behaviour on bad input, through subprocess, in namespaces.

Every refused request must exit 1 with exactly one stderr line starting ``error: ``
that names the problem, print no traceback, and change nothing: the config and state
dirs stay byte-identical and, for commands that can reach the firewall or links (run
inside a fresh namespace from ``helpers.nsutil.netns``), so do the namespace's ruleset
and links. Usage errors exit 2. The state dir's ``lock`` does not count as a change
(see ``helpers.cli``). The definition commands, which need no namespace, are tested
in ``tests/unit/test_cli_definitions.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.cli import NO_EDITOR, assert_ok, assert_refused, executable, show, tree, write
from helpers.network_cases import GOOD, INVALID, IPV6_IP, Invalid, variant, with_bridge, with_ip, with_name
from helpers.nsutil import ROOT, Netns, Virtfw, need_root, netns, ruleset, virtfw_argv

from virtfw.net.xml import parse_network

BACKENDS: tuple[str, ...] = ("nftables", "iptables")

#: A second network, started first where a test needs something already active.
OTHER = """\
<network>
  <name>other</name>
  <bridge name="vother0"/>
  <forward mode="nat"/>
  <ip address="10.99.0.1" prefix="24">
    <dhcp>
      <range start="10.99.0.10" end="10.99.0.99"/>
    </dhcp>
  </ip>
</network>
"""

#: Names that are not networks: unknown, or not even a valid name.
BAD_NAMES: tuple[str, ...] = ("nosuch", "a;b", "../../etc/passwd", "x y", "$(reboot)")

#: Commands that take a network name.
NAME_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("net-start",), ("net-destroy",), ("net-info",), ("net-dumpxml",), ("net-dumpxml", "--inactive"),
    ("net-undefine",), ("net-autostart",), ("net-autostart", "--disable"), ("net-edit",),
)  # fmt: skip


@dataclass
class Sandbox:
    """virtfw inside a fresh namespace, with a snapshot of everything it could change."""

    ns: Netns
    vf: Virtfw
    backend: str
    tmp: Path

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return self.vf(*args, check=False, env={**NO_EDITOR, **(env or {})})

    def ok(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return assert_ok(self(*args, env=env))

    def define(self, xml: str, start: bool = False) -> str:
        name = parse_network(xml).name
        self.ok("net-define", str(write(self.tmp / f"{name}.xml", xml)))
        if start:
            self.ok("net-start", name)
        return name

    def snapshot(self) -> dict[str, object]:
        """Rulesets of both backends, links with addresses, and the config and state files."""
        return {
            "ruleset": ruleset(self.ns, self.backend),
            "nft ruleset": ruleset(self.ns, "nftables"),
            "links": self.ns.sh("ip", "-br", "link"),
            "addresses": self.ns.sh("ip", "-br", "addr"),
            "config dir": tree(self.vf.config_dir),
            "state dir": tree(self.vf.state_dir),
        }


@pytest.fixture(params=BACKENDS)
def sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sandbox]:
    with netns("vfwE") as ns:
        yield Sandbox(ns, Virtfw(ns, tmp_path, request.param), request.param, tmp_path)


def assert_unchanged(before: dict[str, object], after: dict[str, object]) -> None:
    changed = [key for key in before if before[key] != after[key]]
    details = "\n".join(f"== {key}\nbefore: {before[key]!r}\nafter:  {after[key]!r}" for key in changed)
    assert not changed, f"a refused command changed {changed}\n{details}"


# ---------------------------------------------------------------------------------
# bad network XML and paths
# ---------------------------------------------------------------------------------


@pytest.mark.netns
@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_net_create_refuses_bad_xml(case: Invalid, sandbox: Sandbox) -> None:
    """net-create of a bad file is refused before any link or rule is touched."""
    path = write(sandbox.tmp / "bad.xml", case.xml)
    before = sandbox.snapshot()
    message = assert_refused(sandbox("net-create", str(path)), *case.needles)
    assert "root:" not in message
    assert_unchanged(before, sandbox.snapshot())


@pytest.mark.netns
@pytest.mark.parametrize("command", ["net-define", "net-create"])
@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_path_is_refused(command: str, kind: str, sandbox: Sandbox) -> None:
    """A FILE that does not exist, or is a directory, is refused naming the path."""
    sandbox.define(GOOD)
    path = sandbox.tmp / "no" / "such.xml" if kind == "missing" else sandbox.tmp
    before = sandbox.snapshot()
    assert_refused(sandbox(command, str(path)), str(path))
    assert_unchanged(before, sandbox.snapshot())


# ---------------------------------------------------------------------------------
# unknown networks and wrong states
# ---------------------------------------------------------------------------------


@pytest.mark.netns
@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("command", NAME_COMMANDS, ids=" ".join)
def test_unknown_network_is_refused(command: tuple[str, ...], name: str, sandbox: Sandbox) -> None:
    """Every NAME command refuses a network that does not exist, or a name that cannot be one."""
    sandbox.define(OTHER, start=True)
    before = sandbox.snapshot()
    assert_refused(sandbox(*command, name), name)
    assert_unchanged(before, sandbox.snapshot())


@pytest.mark.netns
def test_net_destroy_of_inactive_network_is_refused(sandbox: Sandbox) -> None:
    sandbox.define(OTHER, start=True)
    sandbox.define(GOOD)
    before = sandbox.snapshot()
    assert_refused(sandbox("net-destroy", "testnet"), "testnet", "active")
    assert_unchanged(before, sandbox.snapshot())


@pytest.mark.netns
def test_net_destroy_twice_is_refused_the_second_time(sandbox: Sandbox) -> None:
    sandbox.define(GOOD, start=True)
    sandbox.ok("net-destroy", "testnet")
    before = sandbox.snapshot()
    assert_refused(sandbox("net-destroy", "testnet"), "testnet", "active")
    assert_unchanged(before, sandbox.snapshot())


@pytest.mark.netns
def test_net_start_of_active_network_is_refused(sandbox: Sandbox) -> None:
    sandbox.define(GOOD, start=True)
    before = sandbox.snapshot()
    assert_refused(sandbox("net-start", "testnet"), "testnet", "active")
    assert_unchanged(before, sandbox.snapshot())


@pytest.mark.netns
def test_net_undefine_of_active_network_is_refused(sandbox: Sandbox) -> None:
    sandbox.define(GOOD, start=True)
    before = sandbox.snapshot()
    assert_refused(sandbox("net-undefine", "testnet"), "testnet", "active")
    assert_unchanged(before, sandbox.snapshot())


@pytest.mark.netns
def test_net_create_of_active_network_name_is_refused(sandbox: Sandbox) -> None:
    sandbox.define(GOOD, start=True)
    again = variant('<bridge name="vtest0"/>', '<bridge name="vtest9"/>')
    before = sandbox.snapshot()
    assert_refused(sandbox("net-create", str(write(sandbox.tmp / "again.xml", again))), "testnet", "active")
    assert_unchanged(before, sandbox.snapshot())


@pytest.mark.netns
def test_net_create_on_a_bridge_in_use_is_refused(sandbox: Sandbox) -> None:
    """A transient network may not take the bridge of an active one."""
    sandbox.define(GOOD, start=True)
    clash = with_name("clash").replace("192.168.100.", "192.168.200.")
    before = sandbox.snapshot()
    assert_refused(sandbox("net-create", str(write(sandbox.tmp / "clash.xml", clash))), "vtest0")
    assert_unchanged(before, sandbox.snapshot())


@pytest.mark.netns
def test_net_create_on_an_interface_that_is_not_a_bridge_is_refused(sandbox: Sandbox) -> None:
    """The bridge name belongs to a veth link: refused, the link and everything else kept."""
    sandbox.define(OTHER, start=True)
    sandbox.ns.run(["ip", "link", "add", "vveth0", "type", "veth", "peer", "name", "vveth1"])
    before = sandbox.snapshot()
    xml = with_bridge("vveth0")
    assert_refused(sandbox("net-create", str(write(sandbox.tmp / "veth.xml", xml))), "vveth0")
    assert_unchanged(before, sandbox.snapshot())


#: (backend, tool that fails): a fake on PATH makes this tool's batch fail. ip6tables-restore
#: fails after iptables-restore has applied the IPv4 batch, so that one must be undone.
FAULTS: tuple[tuple[str, str], ...] = (
    ("nftables", "nft"),
    ("iptables", "iptables-restore"),
    ("iptables", "ip6tables-restore"),
)

FAKE_TOOL = """\
#!/bin/sh
# Fail any batch (nft -f FILE, *-restore), pass every query to the real tool.
case "$(basename "$0")" in *-restore) echo "$(basename "$0"): injected failure" >&2; exit 1;; esac
for arg in "$@"; do
    if [ "$arg" = "-f" ]; then echo "nft: injected failure" >&2; exit 1; fi
done
exec {real} "$@"
"""


@pytest.mark.netns
@pytest.mark.parametrize(("backend", "tool"), FAULTS, ids=["-".join(f) for f in FAULTS])
def test_failed_firewall_batch_is_rolled_back(backend: str, tool: str, tmp_path: Path) -> None:
    """net-start whose firewall batch fails exits 1 and removes the bridge it had created."""
    real = shutil.which(tool)
    assert real, f"{tool} is not installed"
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    executable(fakes / tool, FAKE_TOOL.format(real=real))
    with netns("vfwF") as ns:
        box = Sandbox(ns, Virtfw(ns, tmp_path, backend), backend, tmp_path)
        box.define(OTHER, start=True)
        box.define(with_ip(IPV6_IP))
        before = box.snapshot()
        proc = box("net-start", "testnet", env={"PATH": f"{fakes}:{os.environ['PATH']}"})
        assert_refused(proc, "injected failure")
        assert_unchanged(before, box.snapshot())


# ---------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------

BAD_CONFS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("unknown-backend", 'firewall_backend = "pf"\n', ("firewall_backend", "pf", "network.conf")),
    ("empty-backend", 'firewall_backend = ""\n', ("firewall_backend", "network.conf")),
    ("not-key-value", "firewall_backend nftables\n", ("firewall_backend", "network.conf")),
    ("unknown-setting", 'firewall_backendd = "nftables"\n', ("firewall_backendd", "network.conf")),
)


@pytest.mark.netns
@pytest.mark.parametrize("conf", BAD_CONFS, ids=lambda c: c[0])
@pytest.mark.parametrize("command", ["net-start", "net-create"])
def test_bad_network_conf_is_refused(command: str, conf: tuple[str, str, tuple[str, ...]], tmp_path: Path) -> None:
    """A broken network.conf in the config dir stops net-start/net-create, naming the file and value."""
    _, text, needles = conf
    with netns("vfwC") as ns:
        vf = Virtfw(ns, tmp_path, backend=None)  # no --backend: network.conf decides
        box = Sandbox(ns, vf, "nftables", tmp_path)
        box.define(GOOD)
        write(vf.config_dir / "network.conf", text)
        target = "testnet" if command == "net-start" else str(write(tmp_path / "create.xml", with_name("created")))
        before = box.snapshot()
        assert_refused(box(command, target), *needles)
        assert_unchanged(before, box.snapshot())


# ---------------------------------------------------------------------------------
# usage errors
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("net-frobnicate",),
        ("net-start",),
        ("net-define",),
        ("net-create",),
        ("net-list", "--bogus"),
        ("net-start", "a", "b"),
        ("--backend", "pf", "net-list"),
        (),
    ],
    ids=lambda a: " ".join(a) or "no-command",
)
def test_usage_error_exits_2(args: tuple[str, ...], tmp_path: Path) -> None:
    """Run in a namespace too: net-start/net-create must not run with wrong arguments."""
    with netns("vfwS") as ns:
        box = Sandbox(ns, Virtfw(ns, tmp_path), "nftables", tmp_path)
        before = box.snapshot()
        proc = box(*args)
        assert proc.returncode == 2, show(proc)
        assert "Traceback" not in proc.stdout + proc.stderr, show(proc)
        assert proc.stderr.strip(), "a usage error must say what is wrong"
        assert_unchanged(before, box.snapshot())


# ---------------------------------------------------------------------------------
# --dry-run
# ---------------------------------------------------------------------------------

#: What each backend's printed batch must contain (besides the bridge name).
DRY_RUN_MARKERS: dict[str, tuple[str, ...]] = {
    "nftables": ("nft", "add table ip virtfw_network", "masquerade"),
    "iptables": ("iptables-restore", "*filter", "VIRTFW_FWO", "MASQUERADE", "COMMIT"),
}


def status_files(state_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(state_dir)) for p in state_dir.rglob("*.json")) if state_dir.exists() else []


@pytest.mark.netns
def test_dry_run_net_start_changes_nothing(sandbox: Sandbox) -> None:
    before = sandbox.snapshot()
    proc = sandbox.ok("--dry-run", "net-start", "default")
    missing = [m for m in (*DRY_RUN_MARKERS[sandbox.backend], "virbr0") if m not in proc.stdout]
    assert not missing, f"dry run did not print {missing}\n{show(proc)}"
    assert status_files(sandbox.vf.state_dir) == []
    assert_unchanged(before, sandbox.snapshot())
    assert json.loads(sandbox.ok("net-list", "--json").stdout) == []


@pytest.mark.netns
def test_dry_run_prints_every_action_and_says_nothing_changed(sandbox: Sandbox) -> None:
    """Bridge, address, sysctl, batch and dnsmasq configuration; no state dir or lock is
    made, and the last line says nothing changed (never "started")."""
    proc = sandbox.ok("--dry-run", "net-start", "default")
    for action in ("+ ip link add virbr0 type bridge", "+ ip address add 192.168.122.1/24 dev virbr0",
                   "+ ip link set virbr0 up", "+ sysctl net.ipv4.ip_forward=1", "+ dnsmasq --conf-file=",
                   "interface=virbr0", "dhcp-range=192.168.122.2,192.168.122.254"):  # fmt: skip
        assert action in proc.stdout, f"dry run did not print {action!r}\n{show(proc)}"
    assert proc.stdout.splitlines()[-1] == "Dry run: nothing was changed."
    assert "started" not in proc.stdout.lower(), show(proc)
    assert not sandbox.vf.state_dir.exists(), "a dry run made the state dir (or its lock)"


@pytest.mark.netns
@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "real"])
def test_a_closed_stdout_changes_nothing_about_the_command(sandbox: Sandbox, dry: bool) -> None:
    """``virtfw ... | head -1``: the reader goes away, the command still does all its work
    (or, dry, none), exits 0 and prints no rollback warning about the pipe."""
    argv = ["ip", "netns", "exec", sandbox.ns.name, *virtfw_argv(
        *(["--dry-run"] if dry else []), "-v", "net-start", "default",
        config_dir=sandbox.vf.config_dir, state_dir=sandbox.vf.state_dir, backend=sandbox.backend,
    )]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    errors = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, errors
    assert not [line for line in errors.splitlines() if line.startswith(("warning", "error"))], errors
    assert "Broken pipe" not in errors and "Traceback" not in errors, errors
    if not dry:  # -v shows each action as it is taken, on stderr: not only the batches
        for action in ("+ ip link add virbr0 type bridge", "+ ip address add 192.168.122.1/24 dev virbr0",
                       "+ ip link set virbr0 up", "+ sysctl net.ipv4.ip_forward=1", "+ dnsmasq --conf-file="):  # fmt: skip
            assert action in errors, f"-v did not show {action!r}:\n{errors}"
    active = [n["name"] for n in json.loads(sandbox.ok("net-list", "--json").stdout)]
    assert active == ([] if dry else ["default"])
    if not dry:
        sandbox.ok("net-destroy", "default")


@pytest.mark.netns
def test_dry_run_net_destroy_changes_nothing(sandbox: Sandbox) -> None:
    sandbox.define(GOOD, start=True)
    before = sandbox.snapshot()
    proc = sandbox.ok("--dry-run", "net-destroy", "testnet")
    assert "vtest0" in proc.stdout, show(proc)
    assert_unchanged(before, sandbox.snapshot())


@pytest.mark.netns
def test_dry_run_of_a_refused_request_still_fails(sandbox: Sandbox) -> None:
    before = sandbox.snapshot()
    assert_refused(sandbox("--dry-run", "net-start", "nosuch"), "nosuch")
    assert_unchanged(before, sandbox.snapshot())


# --- as an unprivileged user --------------------------------------------------------

NOBODY = 65534


def _blocked_ancestor(path: Path) -> Path | None:
    """The topmost ancestor of PATH that other users cannot enter (e.g. /root), if any."""
    for parent in reversed(path.parents):
        if not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return None


@dataclass
class Nobody:
    """Runs ``python -m virtfw`` as uid/gid 65534 with HOME (and TMPDIR) in a private dir.

    No --config-dir/--state-dir: virtfw must pick per-user directories. The code run is
    a copy of this checkout's ``virtfw/`` and ``etc/`` in a directory anyone can read
    (the checkout may lie where other users cannot enter). When this Python lives under
    such a directory (a pyenv under /root), it is made reachable by bind mounts in a
    private mount namespace, at the same path.
    """

    home: Path
    shadow: Path
    code: Path

    def argv(self, *args: str) -> list[str]:
        env = [
            "env", "-i", f"HOME={self.home}", f"TMPDIR={self.home}", "LANG=C.UTF-8",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"PYTHONPATH={self.code}", "PYTHONDONTWRITEBYTECODE=1",
        ]  # fmt: skip
        drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        command = [*drop, *env, sys.executable, "-m", "virtfw", *args]
        blocked = _blocked_ancestor(Path(sys.base_prefix))
        if blocked is None:
            return command
        mounts = []
        for prefix in sorted({Path(sys.base_prefix), Path(sys.prefix)}):
            if blocked in prefix.parents:
                inside = self.shadow / prefix.relative_to(blocked)
                inside.mkdir(parents=True, exist_ok=True)
                mounts.append(f"mount --bind {prefix} {inside}")
        script = " && ".join([*mounts, f"mount --rbind {self.shadow} {blocked}", 'exec "$@"'])
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *command]


@pytest.fixture
def nobody() -> Iterator[Nobody]:
    need_root()
    home = Path(tempfile.mkdtemp(prefix="virtfw-nobody-"))
    shadow = Path(tempfile.mkdtemp(prefix="virtfw-shadow-"))
    code = Path(tempfile.mkdtemp(prefix="virtfw-code-"))
    try:
        os.chown(home, NOBODY, NOBODY)
        shadow.chmod(0o755)
        code.chmod(0o755)
        skip = shutil.ignore_patterns("__pycache__")
        for part in ("virtfw", "etc"):
            shutil.copytree(ROOT / part, code / part, ignore=skip)
        for path in code.rglob("*"):  # readable whatever the checkout's umask was
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield Nobody(home, shadow, code)
    finally:
        for folder in (home, shadow, code):
            shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.netns
@pytest.mark.parametrize("backend", BACKENDS)
def test_dry_run_as_unprivileged_user(backend: str, nobody: Nobody) -> None:
    """A non-root user defines a network in per-user dirs and dry-runs net-start of it and of default."""
    xml = nobody.home / "testnet.xml"
    xml.write_text(GOOD)
    os.chown(xml, NOBODY, NOBODY)
    with netns("vfwU") as ns:
        system_before = (ruleset(ns, backend), ruleset(ns, "nftables"), ns.sh("ip", "-br", "addr"))
        define = ns.run(nobody.argv("net-define", str(xml)), check=False)
        assert_ok(define)
        stored = list(nobody.home.rglob("networks/testnet.xml"))
        assert stored, f"net-define as non-root stored nothing under HOME:\n{show(define)}"
        for name, bridge in (("testnet", "vtest0"), ("default", "virbr0")):
            proc = ns.run(nobody.argv("--backend", backend, "--dry-run", "net-start", name), check=False)
            assert_ok(proc)
            missing = [m for m in (*DRY_RUN_MARKERS[backend], bridge) if m not in proc.stdout]
            assert not missing, f"dry run did not print {missing}\n{show(proc)}"
        assert status_files(nobody.home) == []
        assert (ruleset(ns, backend), ruleset(ns, "nftables"), ns.sh("ip", "-br", "addr")) == system_before


@pytest.mark.netns
@pytest.mark.parametrize("command", [["net-start", "default"], ["reload"], ["verify"], ["net-destroy", "default"]])
def test_kernel_commands_say_they_need_root(nobody: Nobody, command: list[str]) -> None:
    """Not a permission error from the first tool half-way through: one line, before anything."""
    with netns("vfwU") as ns:
        before = ns.sh("ip", "-br", "link")
        proc = ns.run(nobody.argv(*command), check=False)
        assert proc.returncode == 1, show(proc)
        assert proc.stderr.startswith(f"error: {command[0]} needs root") and proc.stderr.count("\n") == 1, show(proc)
        assert ns.sh("ip", "-br", "link") == before
        assert status_files(nobody.home) == []
