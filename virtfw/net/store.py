"""Persistent network definitions: config dir over shipped defaults, and autostart marks."""

from __future__ import annotations

import os
from pathlib import Path

from virtfw.config import Config, find_layered, layered_names, readable_others
from virtfw.errors import VirtfwError
from virtfw.names import check_object_name
from virtfw.net.model import Network
from virtfw.net.xml import format_network, parse_network
from virtfw.statefiles import ensure_dir, write_atomic


class NetworkStore:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.own_dir = config.config_dir / "networks"
        self.autostart_dir = self.own_dir / "autostart"
        self.dirs = [folder / "networks" for folder in config.search_path]

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

    def others(self, name: str) -> list[Network]:
        """The readable definitions other than ``name`` (net-list shows a broken one)."""
        return readable_others(self.names(), name, self.load)

    def check_conflicts(self, net: Network) -> None:
        for other in self.others(net.name):
            if other.uuid == net.uuid:
                raise VirtfwError(f"network '{other.name}' already has uuid {net.uuid}")
            if net.bridge.name and other.bridge.name == net.bridge.name:
                raise VirtfwError(f"bridge {net.bridge.name} is already used by network '{other.name}'")

    def prepare(self, net: Network) -> Network:
        """Fill in what the definition leaves open (uuid kept from an earlier definition)."""
        if net.uuid_generated and self.path(net.name):
            net.uuid = self.load(net.name).uuid
        taken = {other.bridge.name for other in self.others(net.name)}
        self.assign_bridge(net, {t for t in taken if t})
        self.check_conflicts(net)
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
