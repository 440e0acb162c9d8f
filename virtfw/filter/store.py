"""Persistent filter definitions: the config dir's nwfilter/ over the shipped filters."""

from __future__ import annotations

from pathlib import Path

from virtfw.config import Config, find_layered, layered_names, readable_others
from virtfw.errors import VirtfwError
from virtfw.filter.model import Filter
from virtfw.names import check_object_name
from virtfw.statefiles import ensure_dir, remove_file, write_atomic


class FilterStore:
    """Loads filters by name, each file parsed at most once per command."""

    def __init__(self, config: Config) -> None:
        self.own_dir = config.config_dir / "nwfilter"
        self.dirs = [folder / "nwfilter" for folder in config.search_path]
        self._cache: dict[str, Filter] = {}
        self.overrides: dict[str, Filter] = {}  # definitions being tried before they are saved

    def path(self, name: str) -> Path | None:
        check_object_name(name, "filter name")
        return find_layered(self.dirs, name)

    def names(self) -> list[str]:
        found = layered_names(self.dirs)
        return sorted(found | set(self.overrides))

    def load(self, name: str) -> Filter:
        if name in self.overrides:
            return self.overrides[name]
        if name in self._cache:
            return self._cache[name]
        path = self.path(name)
        if path is None:
            raise VirtfwError(f"filter '{name}' is not defined")
        from virtfw.filter.xml import parse_filter

        try:
            data = path.read_bytes()
        except OSError as exc:
            raise VirtfwError(f"cannot read {path}: {exc.strerror}") from None
        filt = parse_filter(data, str(path))
        if filt.name != name:
            raise VirtfwError(f"{path}: holds filter '{filt.name}', expected '{name}'")
        self._cache[name] = filt
        return filt

    def prepare(self, filt: Filter) -> Filter:
        """Keep the uuid of an earlier definition; refuse a uuid another filter holds."""
        if filt.uuid_generated and self.path(filt.name):
            filt.uuid = self.load(filt.name).uuid
        for other in self.others(filt.name):
            if other.uuid == filt.uuid:
                raise VirtfwError(f"filter '{other.name}' already has uuid {filt.uuid}")
        return filt

    def others(self, name: str) -> list[Filter]:
        """The readable definitions other than ``name`` (nwfilter-list shows a broken one)."""
        return readable_others(self.names(), name, self.load)

    def users(self, name: str) -> list[str]:
        """Filters that reference ``name`` directly."""
        return [other.name for other in self.others(name) if name in other.references()]

    def define(self, filt: Filter) -> Path:
        from virtfw.filter.xml import format_filter

        path = ensure_dir(self.own_dir) / f"{filt.name}.xml"
        write_atomic(path, format_filter(filt), mode=0o644)
        self._cache[filt.name] = filt
        return path

    def own_text(self, name: str) -> str | None:
        """The config dir's file of ``name`` as it is (None: there is none)."""
        path = self.own_dir / f"{name}.xml"
        try:
            return path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise VirtfwError(f"cannot read {path}: {exc.strerror}") from None

    def put_back(self, name: str, text: str | None) -> None:
        """Undo a ``define``: the file as ``own_text`` found it."""
        path = self.own_dir / f"{name}.xml"
        if text is None:
            remove_file(path)
        else:
            write_atomic(path, text, mode=0o644)
        self._cache.pop(name, None)

    def undefine(self, name: str) -> None:
        own = self.own_dir / f"{name}.xml"
        if not own.is_file():
            if self.path(name):
                raise VirtfwError(f"filter '{name}' is shipped with virtfw and cannot be undefined")
            raise VirtfwError(f"filter '{name}' is not defined")
        own.unlink()
        self._cache.pop(name, None)
