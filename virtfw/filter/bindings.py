"""Binding lifecycle: create, delete, re-instantiate on redefinition, reload.

Like networks, a binding's status file (state dir ``bindings/PORT.json``) is written
before anything changes, holding the removal commands the backend knows in advance,
and completed after; it goes last on delete. Every change is one backend install:
redefining a filter used by 500 bindings is still one batch per tool, all or none.
A status also keeps a digest of what its rules were rendered from (see ``_digest``):
``reload`` installs a binding whose digest still holds from its record, unrendered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from virtfw.config import Config
from virtfw.errors import VirtfwError
from virtfw.filter.instantiate import binding_owner, instantiate, reachable, tree_digest
from virtfw.filter.model import Binding
from virtfw.filter.store import FilterStore
from virtfw.names import check_ifname
from virtfw.rules.backend import Backend, Installed, load_filter_backend
from virtfw.rules.runner import Runner
from virtfw.statefiles import json_text, locked, read_json, remove_file, write_json, write_many
from virtfw.transaction import Transaction


@dataclass
class ActiveBinding:
    status: dict

    @property
    def portdev(self) -> str:
        return self.status["portdev"]

    @property
    def owner(self) -> str:
        return binding_owner(self.portdev)

    @property
    def binding(self) -> Binding:
        fields = self.status.get("binding")
        if fields:  # validated when the binding was created: no XML parsing on reload
            return Binding(**fields)
        from virtfw.filter.xml import parse_binding

        return parse_binding(self.status["xml"], f"status of binding '{self.portdev}'")


class BindingManager:
    def __init__(self, config: Config, runner: Runner, store: FilterStore, backend_name: str | None) -> None:
        self.config = config
        self.runner = runner
        self.store = store
        self._backend_name = backend_name
        self.status_dir = config.state_dir / "bindings"
        # Wraps long loops; the CLI puts a progress bar here on a terminal.
        self.progress: Callable[[list, str], Iterable] = lambda items, label: items
        self._code_digests: dict[str, str] = {}  # backend name -> digest of its rendering code
        self._tree_digests: dict[str, str] = {}  # filter name -> digest of its tree

    @property
    def backend(self) -> Backend:
        if self._backend_name is None:
            raise VirtfwError("no firewall backend selected")
        return load_filter_backend(self._backend_name)

    # ---- status files -------------------------------------------------------

    def _path(self, portdev: str) -> Path:
        return self.status_dir / f"{portdev}.json"

    def _base_path(self, backend: str) -> Path:
        return self.config.state_dir / f"nwfilter-{backend}.json"

    def active(self) -> list[ActiveBinding]:
        if not self.status_dir.is_dir():
            return []
        found = [read_json(p) for p in sorted(self.status_dir.glob("*.json"))]
        return [ActiveBinding(s) for s in found if s]

    def get(self, portdev: str) -> ActiveBinding | None:
        check_ifname(portdev, "port device")
        status = read_json(self._path(portdev))
        return ActiveBinding(status) if status else None

    def _save(self, status: dict) -> None:
        if not self.runner.dry_run:
            write_json(self._path(status["portdev"]), status)

    def _save_many(self, statuses: list[dict]) -> None:
        if not self.runner.dry_run:
            write_many([(self._path(s["portdev"]), json_text(s)) for s in statuses])

    def _drop(self, portdev: str) -> None:
        if not self.runner.dry_run:
            remove_file(self._path(portdev))

    def _save_base(self, backend: Backend, base: dict | None) -> None:
        if self.runner.dry_run:
            return
        if base is None:
            remove_file(self._base_path(backend.name))
        else:
            write_json(self._base_path(backend.name), base)

    # ---- changes ------------------------------------------------------------

    def create(self, binding: Binding) -> None:
        self.create_many([binding])

    def create_many(self, bindings: list[Binding]) -> None:
        """Instantiate ``bindings`` in one backend install, and record them for boot."""
        from virtfw.filter.xml import format_binding

        with locked(self.config.state_dir):
            seen: set[str] = set()
            for binding in bindings:
                if self.get(binding.portdev) or binding.portdev in seen:
                    raise VirtfwError(f"port {binding.portdev} already has a filter binding")
                seen.add(binding.portdev)
            ports = [instantiate(b, self.store.load) for b in self.progress(bindings, "Instantiating bindings")]
            backend = self.backend
            digests = {binding_owner(b.portdev): self._digest(backend, b) for b in bindings}
            statuses = {}
            with Transaction() as tx:
                for binding, port_rules in zip(bindings, ports):
                    statuses[port_rules.owner] = {
                        "portdev": binding.portdev,
                        "xml": format_binding(binding),
                        "binding": dataclasses.asdict(binding),
                        "backend": backend.name,
                        "created": time.time(),
                        "state": "starting",
                        "firewall": None,
                    }
                    tx.on_rollback(f"status of {binding.portdev}", lambda p=binding.portdev: self._drop(p))
                self._save_many(list(statuses.values()))
                self._record(tx, [(s["portdev"], s["xml"]) for s in statuses.values()])
                self._install(tx, backend, ports, statuses, digests, old={}, new_ports=self._has_peers(backend, seen))

    # ---- records that outlive a reboot (the state dir does not) --------------

    @property
    def records_dir(self) -> Path:
        return self.config.config_dir / "bindings"

    def _record(self, tx: Transaction, entries: list[tuple[str, str]]) -> None:
        if self.runner.dry_run:
            return
        from virtfw.statefiles import write_many

        paths = [(self.records_dir / f"{portdev}.xml", xml) for portdev, xml in entries]
        previous = [(path, path.read_text()) for path, _ in paths if path.exists()]
        fresh = [path for path, _ in paths if not path.exists()]

        def undo() -> None:
            for path in fresh:
                remove_file(path)
            write_many(previous, 0o644)

        write_many(paths, 0o644)
        tx.on_rollback("binding records", undo)

    def recorded(self) -> list[Binding]:
        from virtfw.filter.xml import parse_binding

        if not self.records_dir.is_dir():
            return []
        return [parse_binding(p.read_bytes(), str(p)) for p in sorted(self.records_dir.glob("*.xml"))]

    def restore_recorded(self) -> list[str]:
        """Re-create every recorded binding that is not active (boot): one batch."""
        missing = [b for b in self.recorded() if self.get(b.portdev) is None]
        if missing:
            self.create_many(missing)
        return [b.portdev for b in missing]

    def delete(self, portdev: str) -> None:
        with locked(self.config.state_dir):
            active = self.get(portdev)
            if active is None:
                raise VirtfwError(f"port {portdev} has no filter binding")
            backend = load_filter_backend(active.status["backend"])
            firewall = active.status.get("firewall")
            with Transaction() as tx:
                rebuild = bool(firewall) and not backend.remove(self.runner, firewall)
                if firewall and active.status.get("state") == "active":
                    # a later step failing puts the binding's rules back as they were
                    tx.on_rollback(f"rules of {portdev}", lambda: self._reinstall(backend, active))
                self._after_removal(backend, rebuild, leaving=portdev)
            if not self.runner.dry_run:
                remove_file(self.records_dir / f"{portdev}.xml")
                self._drop_leftovers([portdev])
            self._drop(portdev)

    def _reinstall(self, backend: Backend, active: ActiveBinding) -> None:
        installed = backend.install(self.runner, [instantiate(active.binding, self.store.load)])
        base = read_json(self._base_path(backend.name))
        self._save_base(backend, backend.merge_base(base, installed.base))
        active.status["firewall"] = installed.removals[active.owner]
        active.status["digest"] = self._digest(backend, active.binding)
        self._save(active.status)

    def _drop_leftovers(self, portdevs: list[str]) -> None:
        """Temp files of writes that a killed process never finished renaming
        (one listing per folder, whatever the number of bindings)."""
        for folder, suffix in ((self.records_dir, "xml"), (self.status_dir, "json")):
            if not folder.is_dir():
                continue
            prefixes = tuple(f".{portdev}.{suffix}." for portdev in portdevs)
            for name in os.listdir(folder):
                if name.startswith(prefixes):
                    remove_file(folder / name)

    def users_of(self, filter_name: str) -> list[ActiveBinding]:
        """Active bindings whose filter tree uses ``filter_name``, directly or not."""
        found = []
        for active in self.active():
            try:
                names = reachable(active.binding.filter, self.store.load)
            except VirtfwError:
                names = {active.binding.filter}
            if filter_name in names:
                found.append(active)
        return found

    def reinstantiate(self, actives: list[ActiveBinding]) -> int:
        """Replace the rules of ``actives`` with what the current filters give, atomically.

        The caller holds the lock (it also saves the filter definition inside it).
        """
        if not actives:
            return 0
        by_backend: dict[str, list[ActiveBinding]] = {}
        for active in actives:
            by_backend.setdefault(active.status["backend"], []).append(active)
        for name, group in by_backend.items():
            backend = load_filter_backend(name)
            ports = [instantiate(a.binding, self.store.load) for a in self.progress(group, "Re-instantiating bindings")]
            statuses = {a.owner: a.status for a in group}
            digests = {a.owner: self._digest(backend, a.binding) for a in group}
            old = {a.owner: a.status["firewall"] for a in group if a.status.get("firewall")}
            with Transaction() as tx:
                self._install(tx, backend, ports, statuses, digests, old=old)
        return len(actives)

    def reload(self) -> int:
        """Re-install every binding from scratch: after a flush it restores, twice it changes nothing."""
        with locked(self.config.state_dir):
            actives = self.active()
            if not actives:
                return 0
            target = self.backend if self._backend_name else None
            for active in actives:
                if target and active.status["backend"] != target.name:
                    old = load_filter_backend(active.status["backend"])
                    if active.status.get("firewall"):
                        old.remove(self.runner, active.status["firewall"])
                    active.status["backend"] = target.name
                    active.status["firewall"] = active.status["digest"] = None
                    self._save(active.status)
                    self._after_removal(old, False, leaving="")
            self._rebuild(actives)
        return len(actives)

    def verify(self) -> tuple[int, list[str]]:
        problems: list[str] = []
        actives = self.active()
        backends: dict[str, Backend] = {}
        for active in actives:
            where = f"binding {active.portdev}"
            if active.status.get("state") != "active" or not active.status.get("firewall"):
                problems.append(f"{where}: creation was interrupted (run nwfilter-binding-delete {active.portdev})")
                continue
            # one backend object per kind: it reads the live ruleset once for all bindings
            backend = backends.setdefault(active.status["backend"], load_filter_backend(active.status["backend"]))
            problems += [f"{where}: {p}" for p in backend.verify(self.runner, active.status["firewall"])]
        for name, backend in sorted(backends.items()):
            base = read_json(self._base_path(name))
            if base:
                problems += [f"filter base ({name}): {p}" for p in backend.verify(self.runner, base)]
        return len(actives), problems

    # ---- internals ----------------------------------------------------------

    def _has_peers(self, backend: Backend, creating: set[str]) -> bool:
        """Whether another binding of ``backend`` is in place (its status says so): the
        first one found ends the search, so this costs a directory listing, not a read
        of every status."""
        if not self.status_dir.is_dir():
            return False
        for name in sorted(os.listdir(self.status_dir)):
            if not name.endswith(".json") or name[:-5] in creating:
                continue
            status = read_json(self.status_dir / name) or {}
            if status.get("backend") == backend.name and status.get("state") == "active" and status.get("firewall"):
                return True
        return False

    def _digest(self, backend: Backend, binding: Binding) -> str | None:
        """What the rendering of ``binding`` depends on: its fields, its filter tree's
        definitions and the code that renders them. None when the backend cannot install
        a record again (``render_modules``)."""
        modules = getattr(backend, "render_modules", None)
        if not modules:
            return None
        code = self._code_digests.get(backend.name)
        if code is None:
            code = self._code_digests[backend.name] = _code_digest(
                ("virtfw.filter.instantiate", "virtfw.filter.model", *modules))  # fmt: skip
        tree = self._tree_digests.get(binding.filter)
        if tree is None:
            tree = self._tree_digests[binding.filter] = tree_digest(binding.filter, self.store.load)
        inputs = json.dumps([code, tree, vars(binding)], sort_keys=True)  # fields: str, dict of lists
        return hashlib.sha256(inputs.encode()).hexdigest()

    def _install(
        self,
        tx: Transaction,
        backend: Backend,
        ports: list,
        statuses: dict[str, dict],
        digests: dict[str, str | None],
        *,
        old: dict,
        new_ports: bool = False,
    ) -> None:
        old_base = read_json(self._base_path(backend.name))
        tx.on_rollback("nwfilter base record", lambda: self._save_base(backend, old_base))
        previous = {owner: dict(status) for owner, status in statuses.items()}

        def record(installed: Installed) -> None:
            self._save_base(backend, backend.merge_base(old_base, installed.base))
            for owner, removal in installed.removals.items():
                statuses[owner]["firewall"] = removal
                statuses[owner]["digest"] = digests.get(owner)
            self._save_many([statuses[owner] for owner in installed.removals])

        def restore_statuses() -> None:
            for owner, status in previous.items():
                if status.get("state") == "starting":
                    continue  # a new binding: its status file goes with its own rollback
                statuses[owner].clear()
                statuses[owner].update(status)
                self._save(status)

        tx.on_rollback("binding status", restore_statuses)
        installed = backend.install(self.runner, ports, old=old, before_apply=record, new_ports=new_ports)
        if not old:
            if installed.base:
                tx.on_rollback("nwfilter base chains", lambda: backend.remove(self.runner, installed.base))
            for removal in installed.removals.values():
                tx.on_rollback("binding rules", lambda removal=removal: backend.remove(self.runner, removal))
        for status in statuses.values():
            status["state"] = "active"
        record(installed)

    def _after_removal(self, backend: Backend, rebuild: bool, leaving: str) -> None:
        users = [
            a for a in self.active()
            if a.status.get("backend") == backend.name and a.portdev != leaving and a.status.get("firewall")
        ]  # fmt: skip
        base = read_json(self._base_path(backend.name))
        if users and rebuild:
            self._rebuild(users)
        elif not users and base:
            backend.remove(self.runner, base)
            self._save_base(backend, None)

    def _rebuild(self, actives: list[ActiveBinding]) -> None:
        missing = [a for a in actives if not (self.records_dir / f"{a.portdev}.xml").exists()]
        if missing and not self.runner.dry_run:  # a create killed before it recorded the binding
            from virtfw.statefiles import write_many

            write_many([(self.records_dir / f"{a.portdev}.xml", a.status["xml"]) for a in missing], 0o644)
        if not self.runner.dry_run:
            self._drop_leftovers([active.portdev for active in actives])
        backend = load_filter_backend(actives[0].status["backend"])
        digests = {a.owner: self._digest(backend, a.binding) for a in actives}
        # A binding whose record was rendered by this code from these very inputs is
        # installed again from its record; only the others are instantiated and rendered.
        reuse = {
            a.owner: a.status["firewall"] for a in actives
            if digests[a.owner] and a.status.get("digest") == digests[a.owner]
            and a.status.get("firewall") and a.status.get("state") == "active"
        }  # fmt: skip
        todo = [a for a in actives if a.owner not in reuse]
        ports = [instantiate(a.binding, self.store.load) for a in self.progress(todo, "Re-instantiating bindings")]
        installed = backend.install(self.runner, ports, rebuild=True, reuse=reuse)
        base = read_json(self._base_path(backend.name))
        self._save_base(backend, backend.merge_base(base, installed.base))
        changed = []
        for active in actives:
            before = (active.status.get("firewall"), active.status.get("state"), active.status.get("digest"))
            active.status["firewall"] = installed.removals[active.owner]
            active.status["state"] = "active"
            active.status["digest"] = digests[active.owner]
            if before != (active.status["firewall"], "active", digests[active.owner]):
                changed.append(active.status)
        self._save_many(changed)  # a reload that changes no record writes no file


def _code_digest(modules: Iterable[str]) -> str:
    from importlib import import_module

    from virtfw import __version__

    digest = hashlib.sha256(__version__.encode())
    for name in modules:
        module = sys.modules.get(name) or import_module(name)
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()


def define_filter(manager: BindingManager, filt, save: Callable[[], None]) -> int:
    """Try a new definition on every binding that uses it, then save it: all or nothing."""
    with locked(manager.config.state_dir):
        manager.store.overrides[filt.name] = filt
        users = manager.users_of(filt.name)
        count = manager.reinstantiate(users)
        save()
    return count
