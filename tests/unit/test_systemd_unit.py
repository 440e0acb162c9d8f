"""The boot unit etc/systemd/virtfw.service: its keys, and systemd's own verdict on it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "etc" / "systemd" / "virtfw.service"
WATCHER = ROOT / "etc" / "systemd" / "virtfw-firewalld.service"
MAN = ROOT / "man"

FIREWALL_SERVICES = [
    "nftables.service",
    "firewalld.service",
    "iptables.service",
    "ip6tables.service",
    "ebtables.service",
]


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's unit syntax, configparser-style but keeping repeated keys in order
    (ExecStart= may repeat; an empty assignment resets the list, as in systemd)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = pending + raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"line {number}: bad section header {line!r}"
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"line {number}: assignment outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"line {number}: not KEY=VALUE: {line!r}"
        key, value = key.strip(), value.strip()
        if value:
            current.setdefault(key, []).append(value)
        else:
            current[key] = []
    assert not pending, "file ends in a line continuation"
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def words(unit, section: str, key: str) -> list[str]:
    return [word for value in unit[section].get(key, []) for word in value.split()]


def test_sections(unit) -> None:
    assert set(unit) == {"Unit", "Service", "Install"}
    assert unit["Unit"]["Description"]
    assert "man:virtfw(1)" in words(unit, "Unit", "Documentation")


def test_oneshot_that_stays_active(unit) -> None:
    service = unit["Service"]
    assert service["Type"] == ["oneshot"]
    assert service["RemainAfterExit"] == ["yes"]


def test_commands(unit) -> None:
    service = unit["Service"]
    assert service["ExecStart"] == ["virtfw autostart"]
    assert service["ExecReload"] == ["virtfw reload"]
    # after a firewall service restart (PartOf=) the networks are still active and
    # autostart skips them: reload must put their rules back before autostart runs
    assert service.get("ExecStartPre") == ["virtfw reload"]


def test_stop_leaves_networks_up(unit) -> None:
    service = unit["Service"]
    assert not service.get("ExecStop"), "stopping the unit must not tear networks down"
    assert not service.get("ExecStopPost")
    # dnsmasq processes started by autostart live in the unit's cgroup
    assert service.get("KillMode") == ["process"]


def test_ordering(unit) -> None:
    after = words(unit, "Unit", "After")
    for dependency in ["network-pre.target", *FIREWALL_SERVICES]:
        assert dependency in after, f"After= lacks {dependency}"
    assert "network.target" in words(unit, "Unit", "Before")
    # ordering only: the unit must not pull firewall services in or fight them
    for key in ("Requires", "Wants", "BindsTo", "Requisite", "Conflicts"):
        assert not set(words(unit, "Unit", key)) & set(FIREWALL_SERVICES), key


def test_follows_firewall_restarts(unit) -> None:
    part_of = words(unit, "Unit", "PartOf")
    assert "firewalld.service" in part_of
    assert "nftables.service" in part_of
    reload_from = words(unit, "Unit", "ReloadPropagatedFrom")
    assert "nftables.service" in reload_from
    # ordered after everything it follows, or it would re-apply too early
    assert set(part_of) | set(reload_from) <= set(words(unit, "Unit", "After"))


def test_install(unit) -> None:
    assert "multi-user.target" in words(unit, "Install", "WantedBy")


@pytest.mark.parametrize("path", [UNIT, WATCHER], ids=lambda p: p.name)
def test_commands_exist(path) -> None:
    """Every subcommand the units run is a command of the CLI."""
    from virtfw.cli.main import cli

    unit = parse_unit(path.read_text())
    for key in ("ExecStartPre", "ExecStart", "ExecReload"):
        for line in unit["Service"].get(key, []):
            argv = line.lstrip("-@:+!").split()
            assert argv[0] == "virtfw", line
            assert argv[1] in cli.commands, f"{key}={line}: no such command"


def test_the_watcher_runs_for_good() -> None:
    """It listens until the bus goes away, and comes back with it; after the boot unit."""
    unit = parse_unit(WATCHER.read_text())
    assert unit["Service"]["Type"] == ["simple"] and unit["Service"]["Restart"] == ["always"]
    assert unit["Service"]["ExecStart"] == ["virtfw watch-firewalld"]
    assert {"virtfw.service", "firewalld.service"} <= set(" ".join(unit["Unit"]["After"]).split())
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.parametrize("path", [UNIT, WATCHER], ids=lambda p: p.name)
def test_systemd_analyze_verify(tmp_path, path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    # systemd checks that the commands exist and are executable: point them at the
    # virtfw this test runs against (the unit itself relies on systemd's search path)
    virtfw = shutil.which("virtfw")
    if virtfw is None:
        pytest.skip("the virtfw console script is not on PATH")
    copy = tmp_path / path.name
    text = path.read_text()
    for key in ("ExecStartPre", "ExecStart", "ExecReload"):
        text = text.replace(f"\n{key}=virtfw ", f"\n{key}={virtfw} ")
    copy.write_text(text)
    env = dict(os.environ, SYSTEMD_LOG_LEVEL="notice")
    command = [tool, "verify"]
    if shutil.which("man"):
        # systemd also checks the Documentation= man pages: offer ours, uninstalled
        for page in MAN.glob("*.[1-8]"):
            section = tmp_path / "man" / f"man{page.suffix[1:]}"
            section.mkdir(parents=True, exist_ok=True)
            shutil.copy(page, section / page.name)
        env["MANPATH"] = str(tmp_path / "man")
    else:
        command.append("--man=no")
    result = subprocess.run([*command, str(copy)], env=env, capture_output=True, text=True, timeout=120, check=False)
    output = (result.stdout + result.stderr).strip()
    # systemd also loads the units this one names (firewalld.service, ...) when they
    # are installed; their own complaints are not ours
    ours = [line for line in output.splitlines() if "virtfw" in line]
    assert result.returncode == 0 and not ours, output
