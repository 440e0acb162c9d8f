"""Shell completion (bash, zsh, fish) through click's protocol, against temp dirs.

The ``test_shell_*`` tests run the installed program exactly as the shells' scripts
do (``_VIRTFW_COMPLETE=bash_complete COMP_WORDS=... COMP_CWORD=... virtfw``), so they
cover the wiring of ``virtfw.cli.complete`` into the commands. The ``test_function_*``
tests drive the completion functions through click's machinery in-process, attached
to the real command tree, and the rest check that completion stays cheap and safe.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.shell_completion import ShellComplete

from virtfw.cli import complete
from virtfw.cli.main import cli

SHELLS = ("bash", "zsh", "fish")
TYPES = ("plain", "file", "dir")

NETWORK_XML = """<network>
  <name>{name}</name>
  <bridge name="{bridge}"/>
  <forward mode="nat"/>
  <ip address="{address}" prefix="24"/>
</network>
"""
FILTER_XML = """<filter name="{name}" chain="root">
  <rule action="drop" direction="inout" priority="1000"/>
</filter>
"""


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A config dir defining alpha, beta, my-filter-1, my-filter-2; a state dir where
    the transient network gamma is active and vnet7 has a binding."""
    config, state = tmp_path / "etc", tmp_path / "run"
    (config / "networks" / "autostart").mkdir(parents=True)
    (config / "nwfilter").mkdir(parents=True)
    for number, name in enumerate(("alpha", "beta"), start=1):
        (config / "networks" / f"{name}.xml").write_text(
            NETWORK_XML.format(name=name, bridge=f"vfwtest{number}", address=f"10.99.{number}.1")
        )
    for name in ("my-filter-1", "my-filter-2"):
        (config / "nwfilter" / f"{name}.xml").write_text(FILTER_XML.format(name=name))
    (config / "networks" / "README").write_text("not a definition\n")
    (state / "networks").mkdir(parents=True)
    (state / "bindings").mkdir(parents=True)
    (state / "networks" / "gamma.json").write_text('{"name": "gamma", "state": "active"}\n')
    (state / "bindings" / "vnet7.json").write_text('{"portdev": "vnet7", "state": "active"}\n')
    return config, state


# ---------------------------------------------------------------------------------
# running the program the way the shells' scripts do
# ---------------------------------------------------------------------------------


def _program() -> list[str]:
    """The console script of this interpreter's environment, else ``python -m virtfw``."""
    script = Path(sys.executable).with_name("virtfw")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("virtfw")
    return [found] if found else [sys.executable, "-m", "virtfw"]


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTFW_", "_VIRTFW_", "COMP_"))}
    env.update(extra or {})
    return env


def run_completion(
    shell: str, words: list[str], incomplete: str, env: dict[str, str] | None = None
) -> list[tuple[str, str]]:
    """(type, value) pairs the program answers for ``virtfw WORDS INCOMPLETE<TAB>``."""
    line = shlex.join(["virtfw", *words])
    variables = {"_VIRTFW_COMPLETE": f"{shell}_complete"}
    if shell == "fish":
        # fish passes the whole line (partial word included) and the partial word itself
        variables["COMP_WORDS"] = line + (" " + shlex.quote(incomplete) if incomplete else " ")
        variables["COMP_CWORD"] = incomplete
    else:
        variables["COMP_WORDS"] = line + " " + (shlex.quote(incomplete) if incomplete else "")
        variables["COMP_CWORD"] = str(len(words) + 1)
    result = subprocess.run(
        _program(), env=_clean_env({**(env or {}), **variables}),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return parse_completion(shell, result.stdout)


def parse_completion(shell: str, output: str) -> list[tuple[str, str]]:
    """Read the reply of any click >= 8.1: bash ``type,value`` lines; zsh ``type``,
    ``value``, ``help`` line triples; fish triples (click >= 8.2) or ``type,value[\\thelp]``."""
    lines = output.splitlines()
    if shell == "zsh" or (shell == "fish" and _triples(lines)):
        return [(lines[i], lines[i + 1].replace("\\:", ":")) for i in range(0, len(lines) - 2, 3)]
    pairs = []
    for line in lines:
        kind, _, value = line.partition(",")
        pairs.append((kind, value.split("\t", 1)[0]))
    return pairs


def _triples(lines: list[str]) -> bool:
    return bool(lines) and len(lines) % 3 == 0 and all(lines[i] in TYPES for i in range(0, len(lines), 3))


def values(pairs: list[tuple[str, str]]) -> set[str]:
    return {value for kind, value in pairs if kind == "plain"}


def dir_options(dirs: tuple[Path, Path]) -> list[str]:
    config, state = dirs
    return ["--config-dir", str(config), "--state-dir", str(state)]


# (command, typed so far, names that must be offered, names that must not be)
CASES = [
    ("net-start", "", {"alpha", "beta", "default"}, {"README", "my-filter-1"}),
    ("net-start", "al", {"alpha"}, {"beta", "default", "gamma"}),
    ("net-info", "", {"alpha", "beta", "default", "gamma"}, set()),
    ("net-dumpxml", "g", {"gamma"}, {"alpha"}),
    ("net-destroy", "", {"gamma"}, set()),
    ("net-dhcp-leases", "", {"gamma"}, {"my-filter-1"}),
    ("net-undefine", "b", {"beta"}, {"alpha"}),
    ("net-autostart", "", {"alpha", "beta"}, set()),
    ("net-edit", "a", {"alpha"}, {"beta"}),
    ("nwfilter-dumpxml", "my", {"my-filter-1", "my-filter-2"}, {"clean-traffic"}),
    ("nwfilter-edit", "", {"my-filter-1", "my-filter-2", "clean-traffic", "no-ip-spoofing"}, {"alpha"}),
    ("nwfilter-undefine", "my-filter-2", {"my-filter-2"}, {"my-filter-1"}),
    ("nwfilter-binding-delete", "", {"vnet7"}, {"alpha", "gamma"}),
    ("nwfilter-binding-dumpxml", "vn", {"vnet7"}, set()),
]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("command", "incomplete", "wanted", "unwanted"), CASES, ids=[f"{c[0]}-{c[1] or 'all'}" for c in CASES]
)
def test_shell_completes_names(dirs, shell, command, incomplete, wanted, unwanted) -> None:
    offered = values(run_completion(shell, [*dir_options(dirs), command], incomplete))
    assert wanted <= offered, f"{command} {incomplete!r}: wanted {sorted(wanted)}, got {sorted(offered)}"
    assert not (unwanted & offered)
    assert all(name.startswith(incomplete) for name in offered)


@pytest.mark.parametrize("shell", SHELLS)
def test_shell_uses_environment_dirs(dirs, shell) -> None:
    config, state = dirs
    env = {"VIRTFW_CONFIG_DIR": str(config), "VIRTFW_STATE_DIR": str(state)}
    assert {"alpha", "beta"} <= values(run_completion(shell, ["net-start"], "", env))
    assert values(run_completion(shell, ["nwfilter-binding-delete"], "", env)) == {"vnet7"}


@pytest.mark.parametrize("shell", SHELLS)
def test_shell_option_beats_environment(dirs, tmp_path, shell) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"VIRTFW_CONFIG_DIR": str(empty), "VIRTFW_STATE_DIR": str(empty)}
    offered = values(run_completion(shell, [*dir_options(dirs), "net-start"], "", env))
    assert {"alpha", "beta"} <= offered
    offered = values(run_completion(shell, ["net-start"], "", env))
    assert "default" in offered and not {"alpha", "beta"} & offered


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("command", ["net-define", "net-create", "nwfilter-define", "nwfilter-binding-create"])
def test_shell_completes_files(dirs, shell, command) -> None:
    kinds = {kind for kind, _ in run_completion(shell, [*dir_options(dirs), command], "")}
    assert "file" in kinds


@pytest.mark.parametrize("shell", SHELLS)
def test_shell_missing_dirs_complete_nothing_and_do_not_fail(tmp_path, shell) -> None:
    nowhere = tmp_path / "missing"
    offered = values(
        run_completion(shell, ["--config-dir", str(nowhere), "--state-dir", str(nowhere), "net-destroy"], "")
    )
    assert offered == set()


# click completes these by itself: commands, global options, --backend's choices.


@pytest.mark.parametrize("shell", SHELLS)
def test_shell_completes_commands_and_choices(dirs, shell) -> None:
    assert {"net-start", "net-destroy"} <= values(run_completion(shell, [], "net-"))
    assert {"nwfilter-binding-create", "nwfilter-binding-list"} <= values(
        run_completion(shell, [], "nwfilter-binding-")
    )
    assert values(run_completion(shell, ["--backend"], "")) == {"nftables", "iptables"}


@pytest.mark.parametrize("shell", SHELLS)
def test_source_scripts(shell) -> None:
    """What the man page and README tell users to eval."""
    if shell == "bash" and shutil.which("bash") is None:
        pytest.skip("bash is not installed")  # click checks the bash version first
    result = subprocess.run(
        _program(), env=_clean_env({"_VIRTFW_COMPLETE": f"{shell}_source"}),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "_VIRTFW_COMPLETE" in result.stdout
    assert f"{shell}_complete" in result.stdout


def test_bash_loads_the_script() -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    program = shlex.join(_program())
    script = f'eval "$(_VIRTFW_COMPLETE=bash_source {program})" && complete -p virtfw'
    result = subprocess.run([bash, "--norc", "--noprofile", "-c", script], env=_clean_env(),
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "virtfw" in result.stdout


# ---------------------------------------------------------------------------------
# the functions themselves, through click's machinery, attached to the real commands
# ---------------------------------------------------------------------------------

WIRING = {
    "net-start": complete.complete_inactive_networks,
    "net-info": complete.complete_networks,
    "net-dumpxml": complete.complete_networks,
    "net-destroy": complete.complete_active_networks,
    "net-dhcp-leases": complete.complete_active_networks,
    "net-undefine": complete.complete_defined_networks,
    "net-autostart": complete.complete_defined_networks,
    "net-edit": complete.complete_defined_networks,
    "nwfilter-dumpxml": complete.complete_filters,
    "nwfilter-edit": complete.complete_filters,
    "nwfilter-undefine": complete.complete_filters,
    "nwfilter-binding-delete": complete.complete_bindings,
    "nwfilter-binding-dumpxml": complete.complete_bindings,
    "net-define": complete.complete_files,
    "net-create": complete.complete_files,
    "nwfilter-define": complete.complete_files,
    "nwfilter-binding-create": complete.complete_files,
}


@pytest.fixture
def wired(monkeypatch) -> ShellComplete:
    """The real command tree with the recommended functions attached (as the commands
    will have them), and click's completion driver for it."""
    for name, function in WIRING.items():
        command = cli.commands[name]
        (argument,) = [p for p in command.params if isinstance(p, click.Argument)]
        monkeypatch.setattr(argument, "_custom_shell_complete", function)
    return ShellComplete(cli, {}, "virtfw", "_VIRTFW_COMPLETE")


def test_every_argument_completes() -> None:
    """Every positional argument of every command completes something: a function of
    virtfw.cli.complete, or a click type that completes by itself (Path, Choice)."""
    missing = []
    for name, command in sorted(cli.commands.items()):
        for param in command.params:
            if not isinstance(param, click.Argument):
                continue
            own = getattr(param, "_custom_shell_complete", None)
            if own is None and not isinstance(param.type, (click.Path, click.Choice)):
                missing.append(f"{name} {param.human_readable_name}")
    assert not missing, f"arguments without completion: {', '.join(missing)}"


def test_recommended_wiring_is_complete() -> None:
    """WIRING (the functions these tests attach) names every command with an argument."""
    for name, command in cli.commands.items():
        if any(isinstance(p, click.Argument) for p in command.params):
            assert name in WIRING, f"no completion function is recommended for {name}"


@pytest.mark.parametrize(
    ("command", "incomplete", "wanted", "unwanted"), CASES, ids=[f"{c[0]}-{c[1] or 'all'}" for c in CASES]
)
def test_function_completes_names(dirs, wired, command, incomplete, wanted, unwanted) -> None:
    items = wired.get_completions([*dir_options(dirs), command], incomplete)
    offered = {item.value for item in items}
    assert wanted <= offered
    assert not (unwanted & offered)
    assert all(item.type == "plain" and item.value.startswith(incomplete) for item in items)


def test_function_precise_sets(dirs, wired) -> None:
    def offered(command: str, incomplete: str = "") -> list[str]:
        return [i.value for i in wired.get_completions([*dir_options(dirs), command], incomplete)]

    assert offered("net-start") == ["alpha", "beta", "default"]
    assert offered("net-destroy") == ["gamma"]
    assert offered("net-info") == ["alpha", "beta", "default", "gamma"]
    assert offered("nwfilter-binding-delete") == ["vnet7"]
    shipped = {p.stem for p in (Path(__file__).resolve().parents[2] / "etc" / "nwfilter").glob("*.xml")}
    assert set(offered("nwfilter-edit")) == shipped | {"my-filter-1", "my-filter-2"}
    helps = {i.value: i.help for i in wired.get_completions([*dir_options(dirs), "net-info"], "")}
    assert helps == {"alpha": "inactive", "beta": "inactive", "default": "inactive", "gamma": "active"}


def test_function_environment_and_override(dirs, wired, monkeypatch, tmp_path) -> None:
    config, state = dirs
    monkeypatch.setenv("VIRTFW_CONFIG_DIR", str(config))
    monkeypatch.setenv("VIRTFW_STATE_DIR", str(state))
    assert [i.value for i in wired.get_completions(["net-destroy"], "")] == ["gamma"]
    assert "my-filter-1" in {i.value for i in wired.get_completions(["nwfilter-edit"], "")}
    empty = tmp_path / "empty"
    empty.mkdir()
    items = wired.get_completions(["--config-dir", str(empty), "--state-dir", str(empty), "net-info"], "")
    assert [i.value for i in items] == ["default"]


def test_function_files(dirs, wired) -> None:
    items = wired.get_completions([*dir_options(dirs), "net-define"], "foo")
    assert [(i.type, i.value) for i in items] == [("file", "foo")]


def test_function_never_fails(tmp_path) -> None:
    """Broken or hostile surroundings give an empty list, never an exception."""
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")

    class Broken:
        def find_root(self):
            raise RuntimeError("boom")

    ctx = cli.make_context(
        "virtfw", ["--config-dir", str(not_a_dir), "--state-dir", str(not_a_dir)], resilient_parsing=True
    )
    functions = [getattr(complete, name) for name in complete.__all__ if name != "complete_files"]
    for function in functions:
        assert function(Broken(), None, "") == []
        offered = [i.value for i in function(ctx, None, "")]
        assert set(offered) <= {p.stem for p in (Path(__file__).resolve().parents[2] / "etc").glob("*/*.xml")}
    bad_status = tmp_path / "locked"
    (bad_status / "networks").mkdir(parents=True)
    (bad_status / "networks" / "x.json").write_text("{")
    ctx = cli.make_context(
        "virtfw", ["--config-dir", str(bad_status), "--state-dir", str(bad_status)], resilient_parsing=True
    )
    assert [i.value for i in complete.complete_active_networks(ctx, None, "")] == ["x"]


def test_no_heavy_imports(dirs) -> None:
    """Completion runs on every TAB: it must not pull in lxml, pyroute2 or rich."""
    config, state = dirs
    code = f"""
import sys
from virtfw.cli.main import cli
from virtfw.cli import complete
ctx = cli.make_context("virtfw", ["--config-dir", {str(config)!r}, "--state-dir", {str(state)!r}], resilient_parsing=True)
names = [getattr(complete, n) for n in complete.__all__]
assert all(f(ctx, None, "") is not None for f in names)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("lxml", "pyroute2", "rich"))
assert not heavy, heavy
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
