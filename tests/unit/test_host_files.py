"""The wheel alone carries the manual pages, the systemd unit and shell completion, and
``virtfw install-files`` puts them where man, systemd and the shells look."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers.nsutil import ROOT
from lxml import etree

from virtfw.errors import VirtfwError
from virtfw.hostfiles import unit_text

PAGES = ["virtfw.1", "virtfw-network.5", "virtfw-network.conf.5", "virtfw-nwfilter.5"]
FIREWALLD_FILES = {
    "zones": ["virtfw", "virtfw-routed"],
    "policies": ["virtfw-to-host", "virtfw-routed-in", "virtfw-routed-out"],
}


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory) -> Path:
    """This checkout built as a wheel and unpacked: what an install from it holds."""
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    wheel = next(out.glob("virtfw-*.whl"))
    site = out / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def test_wheel_carries_pages_and_unit(unpacked_wheel: Path) -> None:
    for page in PAGES:
        assert (unpacked_wheel / "virtfw" / "manpages" / page).is_file(), page
    assert (unpacked_wheel / "virtfw" / "shipped" / "systemd" / "virtfw.service").is_file()
    assert (unpacked_wheel / "virtfw" / "shipped" / "systemd" / "virtfw-firewalld.service").is_file()
    assert (unpacked_wheel / "virtfw" / "shipped" / "systemd" / "virtfw-firewall.conf").is_file()
    for kind, names in FIREWALLD_FILES.items():
        for name in names:
            assert (unpacked_wheel / "virtfw" / "shipped" / "firewalld" / kind / f"{name}.xml").is_file(), name


def test_install_files_from_the_wheel_alone(unpacked_wheel: Path, tmp_path: Path) -> None:
    prefix, units, firewalld = tmp_path / "usr", tmp_path / "units", tmp_path / "firewalld"
    firewalld.mkdir()  # as where firewalld is installed
    env = {**os.environ, "PYTHONPATH": str(unpacked_wheel)}
    argv = [sys.executable, "-m", "virtfw", "--config-dir", str(tmp_path / "etc"), "--state-dir", str(tmp_path / "run")]
    dirs = ["--prefix", str(prefix), "--unit-dir", str(units), "--firewalld-dir", str(firewalld)]
    dry = subprocess.run([*argv, "--dry-run", "install-files", *dirs],
                         capture_output=True, text=True, env=env, cwd=tmp_path, check=False)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert not prefix.exists() and not units.exists() and not any(firewalld.iterdir()), "--dry-run wrote files"
    done = subprocess.run([*argv, "install-files", *dirs],
                          capture_output=True, text=True, env=env, cwd=tmp_path, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for kind, names in FIREWALLD_FILES.items():
        for name in names:
            installed = firewalld / kind / f"{name}.xml"
            assert installed.read_text() == (ROOT / "etc" / "firewalld" / kind / f"{name}.xml").read_text()
            root = etree.fromstring(installed.read_bytes())
            assert root.tag == kind[:-1] if kind == "zones" else root.tag == "policy"
            assert root.findtext("short") == name
    assert str(unpacked_wheel) in subprocess.run(
        [sys.executable, "-c", "import virtfw; print(virtfw.__file__)"], capture_output=True, text=True, env=env,
        cwd=tmp_path, check=True,
    ).stdout  # fmt: skip
    for page in PAGES:
        installed = prefix / "share" / "man" / f"man{page[-1]}" / page
        assert installed.read_text() == (ROOT / "man" / page).read_text()
        assert installed.stat().st_mode & 0o777 == 0o644
    unit = (units / "virtfw.service").read_text()
    assert f"ExecStart={sys.executable} -m virtfw autostart" in unit
    assert f"ExecStartPre={sys.executable} -m virtfw reload" in unit
    watcher = (units / "virtfw-firewalld.service").read_text()
    assert f"ExecStart={sys.executable} -m virtfw watch-firewalld" in watcher
    for service in ("nftables", "iptables", "ip6tables", "ebtables", "netfilter-persistent"):
        dropin = (units / f"{service}.service.d" / "virtfw.conf").read_text()
        assert f"\nExecStartPost=-+{sys.executable} -m virtfw reload\n" in dropin, service
        assert f"\nExecStopPost=-+{sys.executable} -m virtfw reload\n" in dropin, service
        has_reload = f"\nExecReload=-+{sys.executable} -m virtfw reload\n" in dropin
        assert has_reload == (service != "netfilter-persistent"), service  # it has no reload to append to
        assert "\nExecReload=\n" not in dropin
    bash = (prefix / "share" / "bash-completion" / "completions" / "virtfw").read_text()
    assert "_VIRTFW_COMPLETE=bash_complete" in bash
    assert "compdef" in (prefix / "share" / "zsh" / "site-functions" / "_virtfw").read_text()
    assert "complete " in (prefix / "share" / "fish" / "vendor_completions.d" / "virtfw.fish").read_text()
    if shutil.which("man") is None:
        pytest.skip("man is not installed (apt-get install man-db)")
    found = subprocess.run(["man", "-M", str(prefix / "share" / "man"), "-w", "virtfw"],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert found.stdout.strip() == str(prefix / "share" / "man" / "man1" / "virtfw.1"), found.stderr


def test_install_files_refuses_a_symlink_target(tmp_path: Path) -> None:
    prefix = tmp_path / "usr"
    (prefix / "share" / "man" / "man1").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("keep\n")
    (prefix / "share" / "man" / "man1" / "virtfw.1").symlink_to(elsewhere)
    argv = [sys.executable, "-m", "virtfw", "--config-dir", str(tmp_path / "etc"), "--state-dir", str(tmp_path / "run")]
    proc = subprocess.run([*argv, "install-files", "--prefix", str(prefix), "--unit-dir", str(tmp_path / "units"),
                           "--firewalld-dir", str(tmp_path / "no-firewalld")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert elsewhere.read_text() == "keep\n"
    assert not (tmp_path / "units").exists(), "a refused install wrote some files"


def test_install_files_refuses_a_symlink_dropin(tmp_path: Path) -> None:
    """A drop-in that is a link is refused like any target, before anything is written."""
    units = tmp_path / "units"
    (units / "nftables.service.d").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("keep\n")
    (units / "nftables.service.d" / "virtfw.conf").symlink_to(elsewhere)
    argv = [sys.executable, "-m", "virtfw", "--config-dir", str(tmp_path / "etc"), "--state-dir", str(tmp_path / "run")]
    proc = subprocess.run([*argv, "install-files", "--prefix", str(tmp_path / "usr"), "--unit-dir", str(units),
                           "--firewalld-dir", str(tmp_path / "no-firewalld")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 1 and "virtfw.conf is not a regular file" in proc.stderr, proc.stderr
    assert elsewhere.read_text() == "keep\n"
    assert not (units / "virtfw.service").exists() and not (tmp_path / "usr").exists(), "a refused install wrote files"


def test_dropin_text() -> None:
    from virtfw.hostfiles import dropin_text

    template = "[Service]\nExecStartPost=-+virtfw reload\nExecReload=-+virtfw reload\n# ExecReload=virtfw x\n"
    assert dropin_text(template, ["/v/bin/virtfw"], True) == (
        "[Service]\nExecStartPost=-+/v/bin/virtfw reload\nExecReload=-+/v/bin/virtfw reload\n# ExecReload=virtfw x\n"
    )
    assert dropin_text(template, ["/v/bin/virtfw"], False) == (
        "[Service]\nExecStartPost=-+/v/bin/virtfw reload\n# ExecReload=virtfw x\n"
    )


def test_unit_refuses_a_path_systemd_would_split() -> None:
    with pytest.raises(VirtfwError, match="systemd would split"):
        unit_text("ExecStart=virtfw autostart\n", ["/opt/my venv/bin/virtfw"])
    assert unit_text("ExecStart=virtfw autostart\n#   ExecStop=virtfw x\n", ["/v/bin/virtfw"]) == (
        "ExecStart=/v/bin/virtfw autostart\n#   ExecStop=virtfw x\n"
    )
