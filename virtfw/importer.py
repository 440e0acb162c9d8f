"""``import-libvirt``: a libvirt host's networks, autostart marks and own filters, moved over.

Reads ``DIR/qemu/networks/*.xml`` (and the names in ``autostart/``) and ``DIR/nwfilter/*.xml``
of a libvirt configuration directory, and stores each definition as ``net-define`` and
``nwfilter-define`` would: the same parsers, the same uuid and bridge checks against
virtfw's definitions (and the ones imported before it), one atomic write each. An item
virtfw refuses is reported with its reason and stops no other.

Nothing is ever written outside virtfw's config dir, and nothing is read through a
symbolic link that leads outside DIR (an autostart link is only a name: it is never
followed). Standard filters that virtfw ships are not imported: one of the same name is
reported as skipped, and said to differ when its rules do.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from virtfw.config import Config, shipped_dir
from virtfw.errors import VirtfwError, one_line
from virtfw.filter.model import Filter
from virtfw.filter.store import FilterStore
from virtfw.names import check_object_name
from virtfw.net.model import Network
from virtfw.net.store import NetworkStore, Sibling
from virtfw.statefiles import locked
from virtfw.xmlsafe import read_document

IMPORTED, PRESENT, SKIPPED, REFUSED = "imported", "already present", "skipped", "refused"
OUTCOMES = (IMPORTED, PRESENT, SKIPPED, REFUSED)
KINDS = ("network", "autostart", "filter")


@dataclass(frozen=True)
class Item:
    """What became of one definition (``kind``: network, autostart or filter)."""

    kind: str
    name: str
    outcome: str
    why: str = ""

    def line(self) -> str:
        return one_line(f"{self.kind} {self.name}: {self.outcome}" + (f": {self.why}" if self.why else ""))


@dataclass
class _Source:
    """One definition file of DIR: its name (the file's, without .xml) and content, or
    why it cannot be read."""

    name: str
    shown: str
    data: bytes | None = None
    refused: str | None = None


class LibvirtImport:
    def __init__(self, config: Config, source: Path, *, dry_run: bool) -> None:
        self.config = config
        self.source = source
        self.root = Path(os.path.realpath(source))
        self.dry_run = dry_run
        self.items: list[Item] = []
        self.warnings: list[str] = []

    # --- reading DIR ----------------------------------------------------------------

    def _files(self, folder: Path) -> list[_Source]:
        """``*.xml`` of ``folder``, sorted; a link leading outside DIR, or to anything
        but a regular file, is refused unread."""
        if not folder.is_dir():
            return []
        try:
            entries = sorted(os.listdir(folder))
        except OSError as exc:
            raise VirtfwError(f"cannot list {folder}: {exc.strerror}") from None
        found = []
        for entry in entries:
            if not entry.endswith(".xml") or entry.startswith("."):
                continue
            path = folder / entry
            item = _Source(entry[:-4], str(path))
            real = Path(os.path.realpath(path))
            if not real.is_relative_to(self.root):
                item.refused = f"{path} leads to {real}, outside {self.source}: refused, unread"
            else:
                try:  # the resolved path, not followed again: a link swapped in since is refused
                    item.data = read_document(real, regular_only=True)
                except VirtfwError as exc:
                    item.refused = str(exc).replace(str(real), str(path), 1)
            found.append(item)
        return found

    def _autostart_names(self, folder: Path) -> list[str]:
        """The names marked in ``autostart/``: links by nature, never followed."""
        if not folder.is_dir():
            return []
        try:
            entries = os.listdir(folder)
        except OSError as exc:
            raise VirtfwError(f"cannot list {folder}: {exc.strerror}") from None
        return sorted(e[:-4] for e in entries if e.endswith(".xml") and not e.startswith("."))

    # --- the import -----------------------------------------------------------------

    def run(self) -> list[Item]:
        networks_dir = self.source / "qemu" / "networks"
        filters_dir = self.source / "nwfilter"
        if not self.source.is_dir():
            raise VirtfwError(f"{self.source} is not a directory")
        if not networks_dir.is_dir() and not filters_dir.is_dir():
            raise VirtfwError(f"{self.source} holds neither qemu/networks/ nor nwfilter/: not libvirt's config dir")
        networks = self._files(networks_dir)
        marks = self._autostart_names(networks_dir / "autostart")
        filters = self._files(filters_dir)
        with locked(self.config.state_dir, dry_run=self.dry_run, config_dir=self.config.config_dir):
            kept = self._networks(networks)
            self._autostart(marks, kept, {n.name for n in networks})
            self._filters(filters)
        self.items.sort(key=lambda item: (KINDS.index(item.kind), item.name))  # filters: in file order too
        return self.items

    def _add(self, kind: str, name: str, outcome: str, why: str = "") -> None:
        self.items.append(Item(kind, name, outcome, why))

    # networks

    def _networks(self, sources: list[_Source]) -> set[str]:
        """Import each network; the names now defined in virtfw as libvirt has them."""
        from virtfw.net.xml import format_network, parse_network

        store = NetworkStore(self.config)
        accepted: list[Sibling] = []  # imported in this run (not on disk in a dry run)
        kept: set[str] = set()
        for source in sources:
            if source.data is None:
                self._add("network", source.name, REFUSED, source.refused or "")
                continue
            try:
                check_object_name(source.name, "network name")
                net = parse_network(source.data, source.shown)
                if net.name != source.name:
                    raise VirtfwError(
                        f"{source.shown} holds network '{net.name}' (libvirt names each file after its network)"
                    )
                defined = store.path(net.name)
                if defined is not None:
                    stored = store.load(net.name)
                    if _same_network(net, stored, format_network):
                        where = "shipped with virtfw" if defined.parent != store.own_dir else ""
                        self._add("network", net.name, PRESENT, where)
                        kept.add(net.name)
                        continue
                    if defined.parent == store.own_dir:
                        raise VirtfwError(
                            f"network '{net.name}' is already defined in virtfw, differently (net-dumpxml "
                            f"--inactive {net.name} shows it; net-define {source.shown} replaces it)"
                        )
                store.prepare(net, accepted)
            except VirtfwError as exc:
                self._add("network", source.name, REFUSED, str(exc))
                continue
            if not self.dry_run:
                store.define(net)
            accepted.append(Sibling(net.name, net.uuid, net.bridge.name))
            kept.add(net.name)
            self._add("network", net.name, IMPORTED, "overrides the one virtfw ships" if defined else "")
        self.warnings += store.unchecked.values()
        return kept

    def _autostart(self, marks: list[str], kept: set[str], sources: set[str]) -> None:
        store = NetworkStore(self.config)
        for name in marks:
            if name not in sources:
                self._add("autostart", name, SKIPPED, f"no definition qemu/networks/{name}.xml beside the mark")
            elif name not in kept:
                self._add("autostart", name, SKIPPED, f"network {name} was not imported")
            elif store.is_autostart(name):
                self._add("autostart", name, PRESENT)
            else:
                if not self.dry_run:
                    store.set_autostart(name, True)
                self._add("autostart", name, IMPORTED)

    # filters

    def _filters(self, sources: list[_Source]) -> None:
        from virtfw.filter.instantiate import check_acyclic
        from virtfw.filter.xml import format_filter, parse_filter

        store = FilterStore(self.config)
        shipped = FilterStore(self.config)
        shipped.dirs = [shipped_dir() / "nwfilter"]  # only the filters virtfw ships
        pending: dict[str, Filter] = {}
        refused: set[str] = set()
        for source in sources:
            if source.data is None:
                self._add("filter", source.name, REFUSED, source.refused or "")
                refused.add(source.name)
                continue
            try:
                check_object_name(source.name, "filter name")
                filt = parse_filter(source.data, source.shown)
                if filt.name != source.name:
                    raise VirtfwError(
                        f"{source.shown} holds filter '{filt.name}' (libvirt names each file after its filter)"
                    )
                if shipped.path(filt.name) is not None:
                    if _same_filter(filt, shipped.load(filt.name), format_filter):
                        self._add("filter", filt.name, SKIPPED, "a standard filter virtfw ships, identical")
                    else:
                        self._add(
                            "filter", filt.name, SKIPPED,
                            "a standard filter virtfw ships, but its rules differ from virtfw's: not imported, "
                            "and filters that reference it get virtfw's (define yours under another name to keep it)",
                        )  # fmt: skip
                    continue
                if store.path(filt.name) is not None:
                    if _same_filter(filt, store.load(filt.name), format_filter):
                        self._add("filter", filt.name, PRESENT)
                        continue
                    raise VirtfwError(
                        f"filter '{filt.name}' is already defined in virtfw, differently (nwfilter-dumpxml "
                        f"{filt.name} shows it; nwfilter-define {source.shown} replaces it)"
                    )
            except VirtfwError as exc:
                self._add("filter", source.name, REFUSED, str(exc))
                refused.add(source.name)
                continue
            pending[filt.name] = filt

        # In an order that satisfies the references: a filter once every filter it
        # references is defined or accepted; one referencing a missing or refused filter is
        # refused; what is left references itself through others.
        accepted: list[Filter] = []
        progress = True
        while pending and progress:
            progress = False
            for name in sorted(pending):
                filt = pending[name]
                refs = filt.references()
                missing = [r for r in refs if r not in pending and store.path(r) is None and r not in store.overrides]
                if missing:
                    why = "was refused" if missing[0] in refused else "is neither defined in virtfw nor imported"
                    self._add("filter", name, REFUSED, f"it references filter '{missing[0]}', which {why}")
                elif all(r not in pending for r in refs):
                    try:
                        store.prepare(filt)
                        store.overrides[name] = filt
                        check_acyclic(filt, store.load)
                    except VirtfwError as exc:
                        store.overrides.pop(name, None)
                        self._add("filter", name, REFUSED, str(exc))
                    else:
                        accepted.append(filt)
                        self._add("filter", name, IMPORTED)
                        del pending[name]
                        progress = True
                        continue
                else:
                    continue
                refused.add(name)
                del pending[name]
                progress = True
        for name in sorted(pending):  # each waits on another: a cycle, or a filter in one
            store.overrides.update(pending)
            try:
                check_acyclic(pending[name], store.load)
                why = "it references a filter in a filterref cycle"
            except VirtfwError as exc:
                why = str(exc)
            for other in pending:
                store.overrides.pop(other, None)
            self._add("filter", name, REFUSED, why)
        if not self.dry_run:
            # New names only: no binding can use a filter that was not defined, so there is
            # nothing to re-instantiate (nwfilter-define's other half).
            for filt in accepted:
                store.define(filt)


def _same_network(new: Network, stored: Network, render) -> bool:
    """The same definition, but for what libvirt's file leaves to virtfw (uuid, bridge)."""
    new = dataclasses.replace(new, bridge=dataclasses.replace(new.bridge))
    if new.uuid_generated:
        new.uuid = stored.uuid
    if not new.bridge.name:
        new.bridge.name = stored.bridge.name
    return render(new) == render(stored)


def _same_filter(new: Filter, stored: Filter, render) -> bool:
    """The same rules: a uuid is no part of a filter's meaning (libvirt gives its copies
    of the standard filters their own)."""
    return render(dataclasses.replace(new, uuid=stored.uuid, uuid_generated=False)) == render(stored)
