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
DROPIN = ROOT / "etc" / "systemd" / "virtfw-firewall.conf"
MAN = ROOT / "man"

FIREWALL_SERVICES = [
    "nftables.service",
    "firewalld.service",
    "iptables.service",
    "ip6tables.service",
    "ebtables.service",
    "netfilter-persistent.service",
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


def test_does_not_follow_firewall_services(unit) -> None:
    """Through PartOf=, `systemctl stop nftables` stopped the unit and `start nftables` did
    not start it again: the drop-ins follow the firewall services instead."""
    for key in ("PartOf", "ReloadPropagatedFrom", "BindsTo"):
        assert not unit["Unit"].get(key), key


@pytest.fixture(scope="module")
def dropin() -> dict[str, dict[str, list[str]]]:
    return parse_unit(DROPIN.read_text())


def test_dropin_reloads_after_every_job(dropin) -> None:
    """After start (and restart), reload and stop of a firewall service, its own job
    re-applies virtfw's rules; a failure of virtfw never fails it ("-"), and the
    service's sandboxing (ProtectHome=, ProtectSystem=) does not apply to virtfw ("+")."""
    assert set(dropin) == {"Service"}
    service = dropin["Service"]
    for key in ("ExecStartPost", "ExecReload", "ExecStopPost"):
        assert service.get(key) == ["-+virtfw reload"], key
    assert set(service) == {"ExecStartPost", "ExecReload", "ExecStopPost", "KillMode"}
    # a dnsmasq reload revives lives in the firewall service's cgroup: not killed at its stop
    assert service["KillMode"] == ["process"]


def test_dropin_appends_to_the_service_reload() -> None:
    """An empty ExecReload= would throw away the service's own reload (its ruleset)."""
    lines = [line.strip() for line in DROPIN.read_text().splitlines()]
    assert not [line for line in lines if line.startswith("Exec") and line.endswith("=")]


def test_dropins_for_every_firewall_service_but_firewalld() -> None:
    from virtfw.hostfiles import FIREWALL_SERVICES

    assert set(FIREWALL_SERVICES) == set(FIREWALL_SERVICES_BUT_FIREWALLD)
    assert FIREWALL_SERVICES["netfilter-persistent.service"] is False  # it has no reload


FIREWALL_SERVICES_BUT_FIREWALLD = [name for name in FIREWALL_SERVICES if name != "firewalld.service"]


def test_install(unit) -> None:
    assert "multi-user.target" in words(unit, "Install", "WantedBy")


@pytest.mark.parametrize("path", [UNIT, WATCHER, DROPIN], ids=lambda p: p.name)
def test_commands_exist(path) -> None:
    """Every subcommand the units run is a command of the CLI."""
    from virtfw.cli.main import cli

    unit = parse_unit(path.read_text())
    for key in ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStopPost"):
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
    _verify(tmp_path, copy)


def _verify(tmp_path: Path, unit: Path) -> None:
    tool = shutil.which("systemd-analyze")
    assert tool is not None
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
    result = subprocess.run([*command, str(unit)], env=env, capture_output=True, text=True, timeout=120, check=False)
    output = (result.stdout + result.stderr).strip()
    # systemd also loads the units this one names (firewalld.service, ...) when they
    # are installed; their own complaints are not ours
    ours = [line for line in output.splitlines() if "virtfw" in line]
    assert result.returncode == 0 and not ours, output


def test_systemd_analyze_verify_dropin(tmp_path) -> None:
    """The drop-in as systemd merges it into a firewall service: a stand-in nftables.service
    (Debian's, with its sandboxing) beside nftables.service.d/virtfw.conf."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    virtfw = shutil.which("virtfw")
    if virtfw is None:
        pytest.skip("the virtfw console script is not on PATH")
    service = tmp_path / "nftables.service"
    service.write_text(
        "[Unit]\nDescription=stand-in nftables\nDefaultDependencies=no\n\n[Service]\nType=oneshot\n"
        "RemainAfterExit=yes\nProtectSystem=full\nProtectHome=true\nExecStart=/bin/true\n"
        "ExecReload=/bin/true\nExecStop=/bin/true\n"
    )
    (tmp_path / "nftables.service.d").mkdir()
    text = DROPIN.read_text().replace("=-+virtfw ", f"=-+{virtfw} ")
    (tmp_path / "nftables.service.d" / "virtfw.conf").write_text(text)
    _verify(tmp_path, service)
