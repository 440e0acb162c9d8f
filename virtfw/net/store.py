"""Persistent network definitions: config dir over shipped defaults, and autostart marks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from virtfw.config import Config, find_layered, layered_names
from virtfw.errors import VirtfwError
from virtfw.names import check_object_name
from virtfw.net.model import Network
from virtfw.net.xml import format_network, parse_network, peek_identity
from virtfw.statefiles import ensure_dir, write_atomic


@dataclass(frozen=True)
class Sibling:
    """What another definition holds that a new one must not repeat."""

    name: str
    uuid: str | None
    bridge: str | None
    broken: Path | None = None  # the file, when it does not load as a whole (read leniently)

    @property
    def what(self) -> str:
        """How messages name it."""
        where = f" (its definition {self.broken} does not load: fix it or net-undefine it)" if self.broken else ""
        return f"network '{self.name}'{where}"


class NetworkStore:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.own_dir = config.config_dir / "networks"
        self.autostart_dir = self.own_dir / "autostart"
        self.dirs = [folder / "networks" for folder in config.search_path]
        self.unchecked: dict[str, str] = {}  # sibling name -> why it could not be compared

    def path(self, name: str) -> Path | None:
        check_object_name(name, "network name")
        return find_layered(self.dirs, name)

    def names(self) -> list[str]:
        found = layered_names(self.dirs)
        return sorted(found)

    def load(self, name: str) -> Network:
        path = self.path(name)
        if path is None:
            raise VirtfwError(f"network '{name}' is not defined")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise VirtfwError(f"cannot read {path}: {exc.strerror}") from None
        net = parse_network(data, str(path))
        if net.name != name:
            raise VirtfwError(f"{path}: holds network '{net.name}', expected '{name}'")
        return net

    def assign_bridge(self, net: Network, taken: set[str]) -> None:
        """Give a network without <bridge name> the first free virbrN, as libvirt does."""
        if net.bridge.name:
            return
        number = 0
        while f"virbr{number}" in taken:
            number += 1
        net.bridge.name = f"virbr{number}"

    def siblings(self, name: str) -> list[Sibling]:
        """The uuid and bridge of every definition other than ``name``. One that does not load
        is read leniently (``peek_identity``); one that cannot be read even so is left out and
        named in ``unchecked`` (a broken file must not block every other definition; it cannot
        be started either until it is mended, and net-start checks its bridge then)."""
        found = []
        for other in self.names():
            if other == name:
                continue
            try:
                net = self.load(other)
                found.append(Sibling(other, net.uuid, net.bridge.name))
                continue
            except VirtfwError:
                pass
            try:
                path = self.path(other)
            except VirtfwError:
                continue  # a file whose name is no network name: it can never be loaded or started
            assert path is not None
            try:
                uuid, bridge = peek_identity(self._read(path), str(path))
            except VirtfwError as exc:
                self.unchecked[other] = (
                    f"network '{other}' cannot be read, so its uuid and bridge were not compared: {exc}; "
                    f"fix {path} or net-undefine {other}"
                )
                continue
            found.append(Sibling(other, uuid, bridge, broken=path))
        return found

    @staticmethod
    def _read(path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise VirtfwError(f"cannot read {path}: {exc.strerror}") from None

    def check_conflicts(self, net: Network, siblings: list[Sibling] | None = None) -> None:
        for other in self.siblings(net.name) if siblings is None else siblings:
            if other.uuid == net.uuid:
                raise VirtfwError(f"{other.what} already has uuid {net.uuid}")
            if net.bridge.name and other.bridge == net.bridge.name:
                raise VirtfwError(f"bridge {net.bridge.name} is already used by {other.what}")

    def prepare(self, net: Network, also: list[Sibling] | tuple[Sibling, ...] = ()) -> Network:
        """Fill in what the definition leaves open (uuid kept from an earlier definition, even
        one that no longer loads) and refuse a uuid or bridge another definition has (or one
        of ``also``: definitions accepted but not written yet, as in a dry run of an import)."""
        path = self.path(net.name)
        if net.uuid_generated and path:
            try:
                net.uuid = self.load(net.name).uuid
            except VirtfwError:
                try:
                    net.uuid = peek_identity(self._read(path), str(path))[0] or net.uuid
                except VirtfwError:
                    pass  # nothing to keep: the new random one stands
        siblings = self.siblings(net.name) + [other for other in also if other.name != net.name]
        self.assign_bridge(net, {s.bridge for s in siblings if s.bridge})
        self.check_conflicts(net, siblings)
        return net

    def define(self, net: Network) -> Path:
        path = ensure_dir(self.own_dir) / f"{net.name}.xml"
        write_atomic(path, format_network(net), mode=0o644)
        return path

    def undefine(self, name: str) -> None:
        own = self.own_dir / f"{name}.xml"
        if not own.is_file():
            if self.path(name):
                raise VirtfwError(f"network '{name}' is shipped with virtfw and cannot be undefined")
            raise VirtfwError(f"network '{name}' is not defined")
        self.set_autostart(name, False)
        own.unlink()

    def is_autostart(self, name: str) -> bool:
        return (self.autostart_dir / f"{name}.xml").exists()

    def set_autostart(self, name: str, enabled: bool) -> None:
        link = self.autostart_dir / f"{name}.xml"
        if enabled:
            target = self.path(name)
            if target is None:
                raise VirtfwError(f"network '{name}' is not defined")
            ensure_dir(self.autostart_dir)
            if link.is_symlink() or link.exists():
                link.unlink()
            os.symlink(target, link)
        elif link.is_symlink() or link.exists():
            link.unlink()
