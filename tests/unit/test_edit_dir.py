"""``net-edit`` and ``nwfilter-edit`` hand the editor a copy in a directory of their own.

Not in /tmp, where anyone may create files, read them or put a link where the copy is
about to be: in a new directory under ``STATE/edit`` that only the user running virtfw
(root) can enter (0700, made by this run), removed with everything the editor left in
it once the editor is done, whether it succeeded, failed, or the command was
interrupted. An ``edit`` folder that someone else controls (a link, another owner,
group or world writable) is refused before the editor runs. The editor is a script
(``$EDITOR``, or ``$VISUAL`` which wins) that records where it was started.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from helpers.cli import NO_EDITOR, assert_ok, assert_refused, executable, write
from helpers.network_cases import GOOD
from helpers.nsutil import virtfw_argv

RECORD = """#!/bin/sh
# a fake editor: where it was asked to edit, with the modes and owners there
f="$1"
d=$(dirname "$f")
printf '%s\\n%s\\n%s\\n' "$f" "$(stat -c '%a %u' "$d")" "$(stat -c '%a %u' "$f")" > {log}
{then}
"""


def virtfw(tmp: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    argv = virtfw_argv(*args, config_dir=tmp / "etc", state_dir=tmp / "run")
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={**os.environ, **NO_EDITOR, **env}, check=False,
    )  # fmt: skip


def editor(tmp: Path, then: str = "exit 0") -> tuple[Path, Path]:
    log = tmp / "editor.log"
    return executable(tmp / "editor.sh", RECORD.format(log=log, then=then)), log


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    assert_ok(virtfw(tmp_path, "net-define", str(write(tmp_path / "testnet.xml", GOOD)), env={}))
    return tmp_path


def recorded(log: Path) -> tuple[Path, str, str]:
    path, folder, file = log.read_text().splitlines()
    return Path(path), folder, file


def assert_private_and_gone(tmp: Path, log: Path) -> Path:
    path, folder, file = recorded(log)
    assert path.parent.parent == tmp / "run" / "edit", f"the copy was not in the state dir's edit folder: {path}"
    assert folder == f"700 {os.geteuid()}", f"its directory: mode and owner {folder}"
    assert file == f"600 {os.geteuid()}", f"the copy: mode and owner {file}"
    assert not path.parent.exists(), "the edit directory is left behind"
    assert not (tmp / "run" / "edit").exists(), "the edit folder is left behind"
    return path


@pytest.mark.parametrize("variable", ["EDITOR", "VISUAL"])
def test_net_edit_edits_in_a_private_directory_removed_afterwards(tmp: Path, variable: str) -> None:
    script, log = editor(tmp, 'sed -i s/192.168.100/192.168.77/g "$f"')
    assert_ok(virtfw(tmp, "net-edit", "testnet", env={variable: str(script)}))
    path = assert_private_and_gone(tmp, log)
    assert path.name == "testnet.xml"
    assert "192.168.77.1" in (tmp / "etc" / "networks" / "testnet.xml").read_text()


def test_nwfilter_edit_edits_in_a_private_directory_removed_afterwards(tmp: Path) -> None:
    script, log = editor(tmp)
    proc = assert_ok(virtfw(tmp, "nwfilter-edit", "no-ip-spoofing", env={"EDITOR": str(script)}))
    assert "not changed" in proc.stdout
    assert assert_private_and_gone(tmp, log).name == "no-ip-spoofing.xml"


@pytest.mark.parametrize(
    ("case", "then"),
    [
        ("fails", "exit 3"),
        ("fails-leaving-files", 'touch "$d/.testnet.xml.swp" && mkdir "$d/sub" && touch "$d/sub/x" && exit 3'),
        ("leaves-files", 'touch "$d/.testnet.xml.swp" "$d/testnet.xml~"'),
        ("leaves-a-link", 'ln -s /etc/passwd "$d/link"'),
        ("malformed", "printf '<network>' > \"$f\""),
    ],
)
def test_the_edit_directory_goes_whatever_the_editor_did(tmp: Path, case: str, then: str) -> None:
    script, log = editor(tmp, then)
    proc = virtfw(tmp, "net-edit", "testnet", env={"EDITOR": str(script)})
    if case == "leaves-files" or case == "leaves-a-link":
        assert_ok(proc)
    else:
        assert_refused(proc)
    assert_private_and_gone(tmp, log)
    assert Path("/etc/passwd").exists()


def test_an_interrupted_edit_removes_its_directory(tmp: Path) -> None:
    """Ctrl-C while the editor runs (SIGINT to virtfw): the copy goes all the same."""
    script, log = editor(tmp, "kill -INT $PPID; sleep 1")
    proc = virtfw(tmp, "net-edit", "testnet", env={"EDITOR": str(script)})
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    assert_private_and_gone(tmp, log)


def _link(edit: Path, tmp: Path) -> None:
    (tmp / "elsewhere").mkdir()
    edit.symlink_to(tmp / "elsewhere")


def _open(edit: Path, tmp: Path) -> None:
    edit.mkdir()
    edit.chmod(0o777)


def _foreign(edit: Path, tmp: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the folder to another user")
    edit.mkdir(mode=0o700)
    os.chown(edit, 65534, 65534)


@pytest.mark.parametrize(
    ("make", "needle"),
    [(_link, "symbolic link"), (_open, "writable by group or others"), (_foreign, "belongs to uid 65534")],
    ids=["symlink", "world-writable", "another-owner"],
)
def test_an_edit_folder_someone_else_controls_is_refused(tmp: Path, make, needle: str) -> None:
    (tmp / "run").mkdir(mode=0o711, exist_ok=True)
    edit = tmp / "run" / "edit"
    make(edit, tmp)
    before = os.lstat(edit)
    script, log = editor(tmp)
    assert_refused(virtfw(tmp, "net-edit", "testnet", env={"EDITOR": str(script)}), needle, str(edit))
    assert not log.exists(), "the editor ran"
    after = os.lstat(edit)
    assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid), "the folder was changed"
    if stat.S_ISLNK(after.st_mode):
        assert list((tmp / "elsewhere").iterdir()) == [], "something was made where the link leads"


def test_a_missing_state_dir_is_made_as_the_lock_makes_it(tmp: Path) -> None:
    """The edit makes the state dir 0711 (dnsmasq passes through it later), not 0700."""
    script, log = editor(tmp)
    (tmp / "run" / "lock").unlink()  # net-define's
    (tmp / "run").rmdir()
    assert_ok(virtfw(tmp, "net-edit", "testnet", env={"EDITOR": str(script)}))
    assert stat.S_IMODE((tmp / "run").stat().st_mode) == 0o711
    assert_private_and_gone(tmp, log)
