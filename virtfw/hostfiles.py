"""The files a host needs besides the package: manual pages, the systemd unit, shell completion.

A wheel carries them (the pages as package data ``virtfw.manpages``, the unit with the
shipped defaults), so that an install from the wheel alone can put them where the system
looks: ``virtfw install-files`` writes

- ``PREFIX/share/man/man1/virtfw.1`` and the section-5 pages (man-db's default path);
- ``PREFIX/share/bash-completion/completions/virtfw``, ``PREFIX/share/zsh/site-functions/_virtfw``
  and ``PREFIX/share/fish/vendor_completions.d/virtfw.fish`` (each shell's system-wide
  directory under ``/usr/local``, loaded on demand);
- ``UNIT_DIR/virtfw.service`` and ``UNIT_DIR/virtfw-firewalld.service`` (the watcher that
  re-applies after firewalld reloads), running this very virtfw by its absolute path: a
  virtualenv's ``virtfw`` is not in systemd's search path;
- ``UNIT_DIR/<service>.d/virtfw.conf`` for each firewall service (``FIREWALL_SERVICES``):
  a drop-in that runs ``virtfw reload`` after the service starts, reloads and stops, since
  each of them flushes virtfw's rules with its own (a drop-in for a service that is not
  installed does nothing);
- where firewalld is installed (its ``FIREWALLD_DIR``, ``/etc/firewalld``, exists), virtfw's
  zones and policies in its ``zones/`` and ``policies/``, which ``firewall-cmd --reload``
  loads (net-start puts bridges in them: ``rules.firewalld``).

All of them or none (every file staged before any is renamed into place); a target that
is a symbolic link or not a regular file, and a directory someone else controls, are
refused, never followed.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from virtfw.config import manpage_dir, shipped_dir
from virtfw.errors import VirtfwError

COMPLETION_FILES = {
    "bash": "share/bash-completion/completions/virtfw",
    "zsh": "share/zsh/site-functions/_virtfw",
    "fish": "share/fish/vendor_completions.d/virtfw.fish",
}
UNIT_NAMES = ("virtfw.service", "virtfw-firewalld.service")  # the boot unit, and the firewalld watcher
DROPIN_TEMPLATE = "virtfw-firewall.conf"
DROPIN_NAME = "virtfw.conf"
# The firewall services whose start, reload or stop flushes virtfw's rules, and whether
# each has a reload of its own (the drop-in's ExecReload= is only appended to one that has:
# added to netfilter-persistent.service it would make `reload-or-restart` skip its rules
# files). firewalld is not here: virtfw-firewalld.service follows it.
FIREWALL_SERVICES = {
    "nftables.service": True,  # Debian, Fedora: nft -f /etc/nftables.conf, stop flushes the ruleset
    "iptables.service": True,  # Fedora/RHEL iptables-services, Arch: iptables-restore
    "ip6tables.service": True,
    "ebtables.service": True,  # Fedora ebtables-services
    "netfilter-persistent.service": False,  # Debian/Ubuntu iptables-persistent: start restores rules.v4/v6
}
# What a word of an Exec= line may hold without quoting: systemd splits at white space
# and gives quotes, backslashes, "$" and "%" meanings of their own.
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_/.+-]+")
_EXEC_LINE = re.compile(r"^(Exec[A-Za-z]+=[-+@:!]*)virtfw(?= |$)", re.MULTILINE)


@dataclass(frozen=True)
class HostFile:
    path: Path
    text: str
    what: str


def this_command() -> list[str]:
    """How to run the virtfw that is running now: its console script, else ``python -m virtfw``."""
    script = sys.argv[0]
    if os.path.isabs(script) and os.path.basename(script) == "virtfw" and os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-m", "virtfw"]


def unit_text(template: str, command: list[str]) -> str:
    """The shipped unit with each ``virtfw`` it runs replaced by ``command``."""
    for word in command:
        if not _PLAIN_WORD.fullmatch(word):
            raise VirtfwError(
                f"cannot write a systemd unit that runs {word!r}: systemd would split or expand it "
                "(install virtfw in a path of letters, digits and _/.+- only)"
            )
    return _EXEC_LINE.sub(lambda m: f"{m.group(1)}{' '.join(command)}", template)


def dropin_text(template: str, command: list[str], reloads: bool) -> str:
    """The shipped firewall-service drop-in running ``command``; without its ExecReload=
    line for a service that has no reload of its own (``reloads`` false)."""
    if not reloads:
        template = re.sub(r"^ExecReload=.*\n", "", template, flags=re.MULTILINE)
    return unit_text(template, command)


def host_files(
    prefix: Path, unit_dir: Path, command: list[str], completions: dict[str, str], firewalld_dir: Path | None = None
) -> list[HostFile]:
    """Every file to install, with its text (``completions``: shell -> its completion script;
    ``firewalld_dir``: firewalld's configuration, None where it is not installed)."""
    files = []
    for page in sorted(manpage_dir().iterdir()):
        section = page.suffix[1:]
        if section in ("1", "5"):
            target = prefix / "share" / "man" / f"man{section}" / page.name
            files.append(HostFile(target, page.read_text(), f"manual page {page.name}"))
    for name in UNIT_NAMES:
        template = (shipped_dir() / "systemd" / name).read_text()
        files.append(HostFile(unit_dir / name, unit_text(template, command), f"systemd unit {name}"))
    dropin = (shipped_dir() / "systemd" / DROPIN_TEMPLATE).read_text()
    for service, reloads in FIREWALL_SERVICES.items():
        text = dropin_text(dropin, command, reloads)
        files.append(HostFile(unit_dir / f"{service}.d" / DROPIN_NAME, text, f"systemd drop-in for {service}"))
    for shell, relative in COMPLETION_FILES.items():
        files.append(HostFile(prefix / relative, completions[shell], f"{shell} completion"))
    if firewalld_dir is not None:
        for kind in ("zones", "policies"):
            for source in sorted((shipped_dir() / "firewalld" / kind).glob("*.xml")):
                what = f"firewalld {kind[:-1] if kind == 'zones' else 'policy'} {source.stem}"
                files.append(HostFile(firewalld_dir / kind / source.name, source.read_text(), what))
    return files


def install(files: list[HostFile]) -> None:
    """Write ``files`` (mode 0644), all or none, making missing directories 0755."""
    from virtfw.statefiles import ensure_dir, write_many

    for file in files:
        if file.path.is_symlink() or (file.path.exists() and not file.path.is_file()):
            raise VirtfwError(f"{file.path} is not a regular file: refused (remove it first)")
    for folder in dict.fromkeys(file.path.parent for file in files):
        ensure_dir(folder, 0o755)
    write_many([(file.path, file.text) for file in files], 0o644)
