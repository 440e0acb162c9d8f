"""The command line's everyday definition commands, and its refusals of bad definitions.

These commands (``net-define``, ``net-list``, ``net-dumpxml``, ``net-autostart``,
``net-undefine``, ``net-edit``, ``--help``) never touch the firewall or links, so they
run directly, as any user, with their own config and state dirs. A refused request
exits 1 with one ``error:`` line and changes nothing (``helpers.cli``). The commands
that reach the firewall or links are tested in namespaces in
``tests/netns/test_cli_errors.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.cli import NO_EDITOR, assert_ok, assert_refused, executable, tree, write
from helpers.network_cases import GOOD, INVALID, Invalid, variant
from helpers.nsutil import ROOT, SHARED, virtfw_argv

from virtfw.net.xml import parse_network

CONTRACT = SHARED / "docs" / "CLI-CONTRACT.md"


@dataclass
class Local:
    """virtfw run directly (for commands that never touch the firewall or links)."""

    tmp: Path

    @property
    def config_dir(self) -> Path:
        return self.tmp / "etc"

    @property
    def state_dir(self) -> Path:
        return self.tmp / "run"

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        argv = virtfw_argv(*args, config_dir=self.config_dir, state_dir=self.state_dir)
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
            env={**os.environ, **NO_EDITOR, **(env or {})}, check=False,
        )  # fmt: skip

    def files(self) -> tuple[dict, dict]:
        return tree(self.config_dir), tree(self.state_dir)


@pytest.fixture
def local(tmp_path: Path) -> Local:
    app = Local(tmp_path)
    app.config_dir.mkdir()
    return app


@pytest.fixture
def defined(local: Local, tmp_path: Path) -> Local:
    """A config dir holding the network 'testnet' (GOOD)."""
    assert_ok(local("net-define", str(write(tmp_path / "testnet.xml", GOOD))))
    return local


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_net_define_refuses_bad_xml(case: Invalid, defined: Local, tmp_path: Path) -> None:
    """net-define of a bad file is refused and the stored 'testnet' stays as it was."""
    path = write(tmp_path / "bad.xml", case.xml)
    before = defined.files()
    message = assert_refused(defined("net-define", str(path)), *case.needles)
    assert "root:" not in message
    assert defined.files() == before


def test_net_define_refuses_a_bridge_another_network_uses(defined: Local, tmp_path: Path) -> None:
    clash = variant("<name>testnet</name>", "<name>second</name>")
    before = defined.files()
    assert_refused(defined("net-define", str(write(tmp_path / "second.xml", clash))), "vtest0", "testnet")
    assert defined.files() == before


# ---------------------------------------------------------------------------------
# conflicts with a sibling definition that does not load (issue 11)
# ---------------------------------------------------------------------------------

BROKEN_UUID = "5a0c2f1e-7b3d-4c8e-9f10-2b3c4d5e6f70"
#: A stored definition made unloadable by one bad value: its uuid and bridge still read.
BROKEN = f"""<network>
  <name>broken</name>
  <uuid>{BROKEN_UUID}</uuid>
  <bridge name="vbroken0"/>
  <ip address="192.168.77.300" prefix="24"/>
</network>
"""


def put_broken(app: Local, text: str, name: str = "broken") -> Path:
    path = app.config_dir / "networks" / f"{name}.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    return write(path, text)


def other_network(name: str, extra: str = "", bridge: str = "vother0") -> str:
    return variant("<name>testnet</name>", f"<name>{name}</name>{extra}", with_bridge_name(bridge))


def with_bridge_name(bridge: str) -> str:
    return GOOD.replace('<bridge name="vtest0"/>', f'<bridge name="{bridge}"/>' if bridge else "").replace(
        "192.168.100.", "192.168.101."
    )


def test_a_broken_siblings_uuid_is_still_refused(defined: Local, tmp_path: Path) -> None:
    path = put_broken(defined, BROKEN)
    before = defined.files()
    clash = other_network("second", f"\n  <uuid>{BROKEN_UUID.upper()}</uuid>")
    message = assert_refused(defined("net-define", str(write(tmp_path / "s.xml", clash))), "'broken'", BROKEN_UUID)
    assert str(path) in message and "does not load" in message
    assert defined.files() == before


def test_a_broken_siblings_bridge_is_still_refused(defined: Local, tmp_path: Path) -> None:
    put_broken(defined, BROKEN)
    before = defined.files()
    clash = other_network("second", bridge="vbroken0")
    assert_refused(defined("net-define", str(write(tmp_path / "s.xml", clash))), "vbroken0", "'broken'")
    assert defined.files() == before


def test_a_broken_siblings_bridge_is_not_handed_out(local: Local, tmp_path: Path) -> None:
    """A network without <bridge name> gets the first virbrN no definition holds, broken or not."""
    put_broken(local, BROKEN.replace("vbroken0", "virbr1"), "broken1")
    put_broken(local, BROKEN.replace("vbroken0", "virbr2").replace(BROKEN_UUID[:8], "6b1d3f2e"), "broken2")
    assert_ok(local("net-define", str(write(tmp_path / "n.xml", other_network("auto", bridge="")))))
    dumped = parse_network(assert_ok(local("net-dumpxml", "auto")).stdout)
    assert dumped.bridge.name == "virbr3", "virbr0 is the shipped default's; virbr1 and virbr2 the broken ones'"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        pytest.param(BROKEN.replace("</network>", ""), "malformed XML", id="malformed"),
        pytest.param(
            '<?xml version="1.0"?>\n<!DOCTYPE network [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
            + BROKEN.replace("vbroken0", "&x;"),
            "DOCTYPE",
            id="external-entity",
        ),
        pytest.param("<domain><name>broken</name></domain>\n", "<network>", id="not-a-network"),
    ],
)
def test_a_sibling_that_cannot_be_read_is_named_but_blocks_nothing(
    defined: Local, tmp_path: Path, text: str, needle: str
) -> None:
    """Whether it holds the same uuid or bridge cannot be told: the definition is stored all
    the same (one broken file must not block every net-define) and a warning names the file."""
    path = put_broken(defined, text)
    proc = assert_ok(defined("net-define", str(write(tmp_path / "s.xml", other_network("second")))))
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, proc.stderr
    assert str(path) in warnings[0] and needle in warnings[0] and "net-undefine broken" in warnings[0]
    assert "root:" not in proc.stderr, "the entity's target was read"
    assert "second" in {r["name"] for r in list_json(defined, "--all")}


def test_redefining_a_broken_network_keeps_its_uuid(local: Local, tmp_path: Path) -> None:
    put_broken(local, BROKEN)
    fixed = BROKEN.replace(f"  <uuid>{BROKEN_UUID}</uuid>\n", "").replace("192.168.77.300", "192.168.77.1")
    assert_ok(local("net-define", str(write(tmp_path / "fixed.xml", fixed))))
    assert parse_network(assert_ok(local("net-dumpxml", "broken")).stdout).uuid == BROKEN_UUID


# ---------------------------------------------------------------------------------
# definitions: list, dumpxml, autostart, undefine, help
# ---------------------------------------------------------------------------------


def list_json(app: Local, *flags: str) -> list[dict]:
    return json.loads(assert_ok(app("net-list", "--json", *flags)).stdout)


def test_defined_network_is_listed_inactive(defined: Local) -> None:
    assert [row["name"] for row in list_json(defined)] == [], "net-list without --all shows active networks only"
    rows = {row["name"]: row for row in list_json(defined, "--all")}
    assert rows["testnet"] == {
        "name": "testnet", "state": "inactive", "autostart": False, "persistent": True,
        "bridge": "vtest0", "forward": "nat",
    }  # fmt: skip
    assert rows["default"]["state"] == "inactive", "the shipped default network is always listed"


def test_dumpxml_round_trips(defined: Local, tmp_path: Path) -> None:
    """net-dumpxml gives the definition back; defining that again changes nothing."""
    dumped = assert_ok(defined("net-dumpxml", "testnet")).stdout
    original, parsed = parse_network(GOOD), parse_network(dumped)
    original.uuid = parsed.uuid  # GOOD has no <uuid>: net-define generated one
    assert parsed == original
    assert assert_ok(defined("net-dumpxml", "--inactive", "testnet")).stdout == dumped
    before = defined.files()
    assert_ok(defined("net-define", str(write(tmp_path / "dumped.xml", dumped))))
    assert defined.files() == before, "re-defining the dumped XML changed the stored definition"
    assert assert_ok(defined("net-dumpxml", "testnet")).stdout == dumped


def test_redefine_without_uuid_keeps_the_uuid(defined: Local, tmp_path: Path) -> None:
    first = parse_network(assert_ok(defined("net-dumpxml", "testnet")).stdout).uuid
    assert_ok(defined("net-define", str(write(tmp_path / "again.xml", GOOD))))
    assert parse_network(assert_ok(defined("net-dumpxml", "testnet")).stdout).uuid == first


def test_dumpxml_of_shipped_default_round_trips(local: Local) -> None:
    dumped = assert_ok(local("net-dumpxml", "default")).stdout
    expected = parse_network((ROOT / "etc" / "networks" / "default.xml").read_text())
    actual = parse_network(dumped)
    expected.uuid = actual.uuid
    assert actual == expected


def test_autostart_mark_and_disable(defined: Local) -> None:
    mark = defined.config_dir / "networks" / "autostart" / "testnet.xml"
    assert_ok(defined("net-autostart", "testnet"))
    assert mark.exists() or mark.is_symlink(), "net-autostart left no mark"
    assert {r["name"]: r["autostart"] for r in list_json(defined, "--all")}["testnet"] is True
    assert_ok(defined("net-autostart", "--disable", "testnet"))
    assert not (mark.exists() or mark.is_symlink()), "--disable left the mark"
    assert {r["name"]: r["autostart"] for r in list_json(defined, "--all")}["testnet"] is False


def test_undefine_removes_own_definition(defined: Local) -> None:
    assert_ok(defined("net-autostart", "testnet"))
    assert_ok(defined("net-undefine", "testnet"))
    assert "testnet" not in {r["name"] for r in list_json(defined, "--all")}
    assert not list((defined.config_dir / "networks").rglob("testnet*"))


def test_undefine_of_shipped_default_is_refused(local: Local) -> None:
    before = local.files()
    assert_refused(local("net-undefine", "default"), "default")
    assert local.files() == before
    assert "default" in {r["name"] for r in list_json(local, "--all")}


def contract_network_commands() -> list[str]:
    """The command names in the first column of the contract's "## Networks" table."""
    section = CONTRACT.read_text().split("\n## Networks\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) > 2 and "`" in cells[1]:
            commands += [span.split()[0] for span in re.findall(r"`([^`]+)`", cells[1])]
    return commands


@pytest.mark.shared
def test_help_lists_every_contract_command(local: Local) -> None:
    expected = contract_network_commands()
    assert {"net-define", "net-info", "net-dumpxml", "autostart", "reload"} <= set(expected)
    help_text = assert_ok(local("--help")).stdout
    listed = set(re.findall(r"^  (\S+)", help_text.split("Commands:", 1)[1], re.MULTILINE))
    assert set(expected) - listed == set(), f"--help does not list {sorted(set(expected) - listed)}"


# ---------------------------------------------------------------------------------
# net-edit
# ---------------------------------------------------------------------------------


def test_net_edit_saves_the_edited_definition(defined: Local) -> None:
    uuid = parse_network(assert_ok(defined("net-dumpxml", "testnet")).stdout).uuid
    assert_ok(defined("net-edit", "testnet", env={"EDITOR": "sed -i s/192.168.100/192.168.77/g"}))
    net = parse_network(assert_ok(defined("net-dumpxml", "testnet")).stdout)
    assert [str(ip.address) for ip in net.ips] == ["192.168.77.1"]
    assert net.uuid == uuid
    stored = (defined.config_dir / "networks" / "testnet.xml").read_text()
    assert "192.168.77.1" in stored and "192.168.100" not in stored


def test_net_edit_without_change_writes_nothing(defined: Local) -> None:
    before = defined.files()
    assert_ok(defined("net-edit", "testnet", env={"EDITOR": "true"}))
    assert defined.files() == before


BROKEN_EDITORS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("malformed", "printf '<network><name>testnet</name>' > \"$1\"", ("malformed",)),
    ("bad-bridge", "sed -i 's/vtest0/vt;x/' \"$1\"", ("vt;x",)),
    ("bad-address", 'sed -i \'s/192.168.100.1"/192.168.100.300"/\' "$1"', ("192.168.100.300",)),
    ("rename", "sed -i 's/>testnet</>renamed</' \"$1\"", ("renamed",)),
    ("editor-fails", "exit 3", ("3",)),
)


@pytest.mark.parametrize("editor", BROKEN_EDITORS, ids=lambda e: e[0])
def test_net_edit_refuses_a_bad_result(
    editor: tuple[str, str, tuple[str, ...]], defined: Local, tmp_path: Path
) -> None:
    """An editor that leaves invalid XML (or fails) exits 1 and the definition stays as it was."""
    _, script, needles = editor
    path = executable(tmp_path / "editor.sh", f"#!/bin/sh\n{script}\n")
    before = defined.files()
    assert_refused(defined("net-edit", "testnet", env={"EDITOR": str(path)}), *needles)
    assert defined.files() == before


def test_concurrent_defines_without_bridge_names_get_distinct_bridges(local: Local, tmp_path: Path) -> None:
    """net-define picks a free virbrN under the lock: eight at once never pick the same one."""
    procs = []
    for n in range(8):
        xml = write(
            tmp_path / f"n{n}.xml", f"<network><name>par{n}</name><ip address='10.{n}.0.1' prefix='24'/></network>"
        )
        argv = virtfw_argv("net-define", str(xml), config_dir=local.config_dir, state_dir=local.state_dir)
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    bridges = [parse_network((local.config_dir / "networks" / f"par{n}.xml").read_text()).bridge_name for n in range(8)]
    assert len(set(bridges)) == 8, bridges
