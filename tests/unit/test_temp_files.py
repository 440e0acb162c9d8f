"""Temp files a killed virtfw leaves (issue 11), and messages that never name one.

- nft's batch is an anonymous in-memory file passed as ``/proc/self/fd/N``: no file in
  /tmp at all, and a message quoting that path and a line names the line's content.
- An atomic write killed before its rename leaves ``.NAME.json.XXXXXXXX``: the next
  command taking the state lock removes those, and only those (regular files of that
  name, older than the lock, nothing followed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers.cli import NO_EDITOR, assert_ok, write
from helpers.network_cases import GOOD
from helpers.nsutil import ROOT, virtfw_argv

from virtfw.errors import ToolError
from virtfw.rules.runner import Runner, name_batch_lines
from virtfw.statefiles import KERNEL_CACHE, UNLOCKED_GRACE, locked, sweep_leftovers, write_json

# ---------------------------------------------------------------------------------
# the batch file
# ---------------------------------------------------------------------------------

# Reads its last argument twice (as nft does: JSON parser, then its own), and refuses
# any line holding "bogus" the way nft words a syntax error: PATH:LINE:COLUMNS: Error: ...
FAKE_NFT = """#!{python}
import sys
path = sys.argv[-1]
first = open(path).read()
second = open(path).read()
assert first == second and first, "the batch cannot be read twice"
for number, line in enumerate(first.splitlines(), 1):
    if "bogus" in line:
        sys.stderr.write(f"{{path}}:{{number}}:5-9: Error: syntax error, unexpected string\\n{{line}}\\n    ^^^^^\\n")
        sys.exit(1)
print('{{"nftables": []}}')
"""


@pytest.fixture
def fake_nft(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    nft = folder / "nft"
    nft.write_text(FAKE_NFT.format(python=sys.executable))
    nft.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    return nft


def _batch_files() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("virtfw-")}


def test_a_batch_is_read_from_memory_and_leaves_no_file(fake_nft: Path) -> None:
    before = _batch_files()
    result = Runner().run_file(["nft", "-j", "-e", "-a", "-f"], "add table inet t\n")
    assert result.returncode == 0 and "nftables" in result.stdout
    assert _batch_files() == before


def test_a_syntax_error_names_the_batch_line_not_a_temp_file(fake_nft: Path) -> None:
    batch = "add table inet t\nadd chain inet t c\nadd rule inet t c bogus accept\n"
    before = _batch_files()
    with pytest.raises(ToolError) as caught:
        Runner().run_file(["nft", "-j", "-e", "-a", "-f"], batch)
    message = str(caught.value)
    assert "/tmp/virtfw-" not in message and "/proc/self/fd" not in message and ".batch" not in message
    assert (
        message == "nft failed: batch line 3 (add rule inet t c bogus accept): Error: syntax error, unexpected string"
    )
    assert "/proc/self/fd" not in caught.value.stderr  # what callers search in names no path either
    assert _batch_files() == before


def test_name_batch_lines_forms() -> None:
    path, text = "/proc/self/fd/7", "first\n  second line  \n"
    assert name_batch_lines(f"{path}:2:1-6: Error: x", path, text) == "batch line 2 (second line): Error: x"
    assert name_batch_lines(f"{path}:9:1: Error: y", path, text) == "batch line 9: Error: y"
    assert name_batch_lines(f"Error: cannot open {path}", path, text) == "Error: cannot open the batch"
    assert name_batch_lines("Error: no path here", path, text) == "Error: no path here"
    long = "x" * 500
    shown = name_batch_lines(f"{path}:1:1: E", path, long)
    assert len(shown) < 200 and shown.endswith("...): E")


# ---------------------------------------------------------------------------------
# atomic-write leftovers in the state dir
# ---------------------------------------------------------------------------------

OLD = time.time() - 3600


def _file(path: Path, mtime: float = OLD) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def state(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir(mode=0o711)
    return folder


def test_leftovers_are_removed_and_nothing_else(state: Path, tmp_path: Path) -> None:
    leftovers = [
        _file(state / "bindings" / ".vnet0.json.ab_d12z4"),
        _file(state / "networks" / ".default.json.k2j3h4g5"),
        _file(state / ".firewall-nftables.json.qwertyui"),
        _file(state / "dnsmasq" / ".default.conf.zxcvbnm0"),
        _file(state / "dnsmasq" / ".default.hostsfile.12345678"),
    ]
    outside = _file(tmp_path / "precious.json")
    (state / "bindings" / ".vnet1.json.linkedto").symlink_to(outside)  # our name, but a link
    (state / "bindings" / ".vnet2.json.dirnamed").mkdir()  # our name, but a directory
    elsewhere = _file(tmp_path / "elsewhere" / ".vnet3.json.abcdefgh")
    (state / "linked").symlink_to(elsewhere.parent)  # a linked folder is not entered
    survivors = [
        _file(state / "bindings" / "vnet0.json"),  # the status itself
        _file(state / "bindings" / ".vnet0.json.bak"),  # not mkstemp's 8 characters
        _file(state / "bindings" / ".vnet0.json.ABCDEFGH"),  # not mkstemp's characters
        _file(state / "bindings" / "vnet0.json.abcdefgh"),  # no leading dot
        _file(state / "bindings" / ".notes.txt.abcdefgh"),  # not a kind virtfw writes
        _file(state / "bindings" / ".vnet0.json.abcdefgh.x"),  # something appended
        _file(state / "lock"),
    ]
    with locked(state):
        pass
    assert [p for p in leftovers if p.exists()] == []
    assert all(p.exists() for p in survivors), [p for p in survivors if not p.exists()]
    assert (state / "bindings" / ".vnet1.json.linkedto").is_symlink() and outside.read_text() == "{}"
    assert (state / "bindings" / ".vnet2.json.dirnamed").is_dir()
    assert elsewhere.exists()


def test_a_temp_file_newer_than_the_lock_survives(state: Path) -> None:
    """Written after we took the lock: not a killed locked writer's."""
    acquired = time.time() - 10
    fresh = _file(state / "bindings" / ".vnet0.json.abcdefgh", mtime=time.time())
    assert sweep_leftovers(state, acquired) == []
    assert fresh.exists()


def test_the_kernel_cache_written_without_the_lock_gets_a_grace(state: Path) -> None:
    now = time.time()
    recent = _file(state / f".{KERNEL_CACHE}.abcdefgh", mtime=now - UNLOCKED_GRACE / 2)
    stale = _file(state / f".{KERNEL_CACHE}.hgfedcba", mtime=now - UNLOCKED_GRACE * 2)
    assert sweep_leftovers(state, now) == [str(stale)]
    assert recent.exists() and not stale.exists()


def test_a_dry_run_removes_nothing(state: Path) -> None:
    leftover = _file(state / "bindings" / ".vnet0.json.abcdefgh")
    with locked(state, dry_run=True):
        pass
    assert leftover.exists()


def test_own_writes_leave_nothing_and_are_not_taken_for_leftovers(state: Path) -> None:
    with locked(state):
        write_json(state / "bindings" / "vnet0.json", {"a": 1}, durable=False)
    with locked(state):
        pass
    assert sorted(os.listdir(state / "bindings")) == ["vnet0.json"]


def test_the_next_command_removes_leftovers(tmp_path: Path) -> None:
    """A killed writer's leftovers, then net-define (which takes the lock): gone."""
    config, state = tmp_path / "etc", tmp_path / "run"
    config.mkdir()
    state.mkdir(mode=0o711)
    leftover = _file(state / "networks" / ".testnet.json.abcdefgh")
    foreign = _file(state / "networks" / ".testnet.json.orig")
    argv = virtfw_argv("net-define", str(write(tmp_path / "testnet.xml", GOOD)), config_dir=config, state_dir=state)
    env = {**os.environ, **NO_EDITOR, "PYTHONPATH": str(ROOT)}
    assert_ok(subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False))
    assert not leftover.exists() and foreign.exists()


# ---------------------------------------------------------------------------------
# temp_file and find_tool: what tempfile and shutil did, without importing them
# ---------------------------------------------------------------------------------


def test_a_temp_file_is_named_for_the_sweep_private_and_new(tmp_path: Path) -> None:
    from virtfw.statefiles import TEMP_NAME, temp_file

    target = tmp_path / "vnet0.json"
    names = set()
    for _ in range(50):
        fd, name = temp_file(target)
        os.close(fd)
        assert TEMP_NAME.fullmatch(os.path.basename(name)), name
        assert os.path.dirname(name) == str(tmp_path)
        assert os.stat(name).st_mode & 0o777 == 0o600
        names.add(name)
    assert len(names) == 50


def test_a_temp_file_is_never_opened_through_a_planted_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name someone created first (a symlink to elsewhere) is skipped, not written through."""
    from virtfw import statefiles

    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("keep\n")
    planted = tmp_path / ".vnet0.json.aaaaaaaa"
    planted.symlink_to(elsewhere)
    draws = iter([b"\0" * 8, b"\1" * 8])  # the first draw names the planted link
    monkeypatch.setattr(statefiles.os, "urandom", lambda n: next(draws))
    fd, name = statefiles.temp_file(tmp_path / "vnet0.json")
    os.close(fd)
    assert name == str(tmp_path / ".vnet0.json.bbbbbbbb")
    assert planted.is_symlink() and elsewhere.read_text() == "keep\n"


def test_tools_are_found_as_which_finds_them_but_never_in_a_relative_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from virtfw.rules.runner import find_tool

    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "nft").write_text("#!/bin/sh\n")  # not executable: skipped
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "nft"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (tmp_path / "dir" / "nft").mkdir(parents=True)  # a folder of that name: skipped
    monkeypatch.chdir(tmp_path / "bin")
    monkeypatch.setenv(
        "PATH", os.pathsep.join(["", ".", str(tmp_path / "plain"), str(tmp_path / "dir"), str(tmp_path / "bin")])
    )
    assert find_tool("nft") == str(tool)
    monkeypatch.setenv("PATH", os.pathsep.join(["", "."]))
    assert find_tool("nft") is None
