"""Where virtfw keeps things: config dir, state dir, shipped defaults, network.conf."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from virtfw.errors import VirtfwError

T = TypeVar("T")

BACKENDS = ("nftables", "iptables")

_SETTING = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"([^"]*)"\s*$')


def shipped_dir() -> Path:
    """The read-only defaults that ship with virtfw: the repository's etc/.

    A source checkout (or editable install) reads etc/ in place; a wheel carries it
    as the package data ``virtfw.shipped``.
    """
    return _data_dir("etc", "shipped", "network.conf")


def manpage_dir() -> Path:
    """The manual pages: the repository's man/, carried by a wheel as ``virtfw.manpages``."""
    return _data_dir("man", "manpages", "virtfw.1")


def _data_dir(in_checkout: str, in_package: str, marker: str) -> Path:
    package = Path(__file__).resolve().parent
    checkout = package.parent / in_checkout
    if (checkout / marker).is_file():
        return checkout
    installed = package / in_package
    if installed.is_dir():  # a wheel unpacked on disk: the usual install
        return installed
    from importlib import resources  # pulls in zipfile: only for a zipped install

    return Path(str(resources.files("virtfw") / in_package))


def default_dirs() -> tuple[Path, Path]:
    """System directories for root, per-user ones (platformdirs) for anyone else.

    Unprivileged users can still define, list and --dry-run without touching /etc.
    """
    if os.geteuid() == 0:
        return Path("/etc/virtfw"), Path("/run/virtfw")
    import warnings

    import platformdirs

    with warnings.catch_warnings():  # no XDG_RUNTIME_DIR: its fallback is fine for us
        warnings.simplefilter("ignore")
        return (
            Path(platformdirs.user_config_dir("virtfw")),
            Path(platformdirs.user_runtime_dir("virtfw")),
        )


def parse_network_conf(text: str, origin: str) -> dict[str, str]:
    """Parse libvirt's ``key = "value"`` format; comments and blank lines are skipped."""
    settings: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _SETTING.match(line)
        if not match:
            raise VirtfwError(f"{origin}:{number}: expected 'name = \"value\"', got {stripped!r}")
        key, value = match.groups()
        if key != "firewall_backend":
            raise VirtfwError(f"{origin}:{number}: unknown setting {key!r}")
        if value not in BACKENDS:
            raise VirtfwError(
                f"{origin}:{number}: firewall_backend must be one of {', '.join(BACKENDS)}, not {value!r}"
            )
        settings[key] = value
    return settings


@dataclass(frozen=True)
class Config:
    config_dir: Path
    state_dir: Path
    backend_override: str | None = None

    @property
    def search_path(self) -> tuple[Path, Path]:
        """Config dir first, shipped defaults under it: a same-named file overrides."""
        return (self.config_dir, shipped_dir())

    def network_conf(self) -> dict[str, str]:
        for folder in self.search_path:
            path = folder / "network.conf"
            if path.is_file():
                return parse_network_conf(path.read_text(), str(path))
        return {}

    def requested_backend(self) -> str | None:
        """The backend asked for by option/env or network.conf; None means autodetect."""
        if self.backend_override:
            if self.backend_override not in BACKENDS:
                raise VirtfwError(f"unknown backend {self.backend_override!r}: use one of {', '.join(BACKENDS)}")
            return self.backend_override
        return self.network_conf().get("firewall_backend")


def find_layered(dirs: list[Path], name: str) -> Path | None:
    """``NAME.xml`` from the first of ``dirs`` that has it: the config dir over the shipped one."""
    for folder in dirs:
        candidate = folder / f"{name}.xml"
        if candidate.is_file():
            return candidate
    return None


def readable_others(names: list[str], skip: str, load: Callable[[str], T]) -> list[T]:
    """The definitions ``load`` reads of ``names`` other than ``skip``: a broken one (the
    listing shows it) stops no other from being defined."""
    found = []
    for name in names:
        if name != skip:
            try:
                found.append(load(name))
            except VirtfwError:
                continue
    return found


def layered_names(dirs: list[Path]) -> set[str]:
    return {p.stem for folder in dirs if folder.is_dir() for p in folder.glob("*.xml")}
