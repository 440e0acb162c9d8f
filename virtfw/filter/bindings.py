"""Binding lifecycle: create, delete, re-instantiate on redefinition, reload.

Like networks, a binding's status file (state dir ``bindings/PORT.json``) is written
before anything changes, holding the removal commands the backend knows in advance,
and completed after; it goes last on delete. Every change is one backend install:
redefining a filter used by 500 bindings is still one batch per tool, all or none.
A status also keeps a digest of what its rules were rendered from (see ``_digest``), and
its record digests of what the kernel listed for them once installed: ``reload`` leaves
the ruleset as it is (counters and handles included) when every binding's inputs are
unchanged and the kernel holds exactly its rules and nothing else in virtfw's chains
(``_intact``), and otherwise rebuilds, installing a binding whose digest still holds from
its record, unrendered, where the backend can.

Status files, the backends' base records and the temp files a killed write leaves are
handled through :class:`~virtfw.statefiles.StatusDir`; removal records are read into the
backend's typed records (``load_record``/``load_base``) and never looked into here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from virtfw.config import Config
from virtfw.errors import VirtfwError
from virtfw.filter.instantiate import binding_owner, check_total, instantiate, reachable, tree_digest
from virtfw.filter.model import Binding
from virtfw.filter.store import FilterStore
from virtfw.lifecycle import REINSTALLS, after_removal, all_or_each
from virtfw.names import check_ifname
from virtfw.rules import records
from virtfw.rules.backend import (
    BACKEND_TOOLS,
    FilterBackend,
    Installed,
    load_filter_backend,
    merged_base,
    module_digest,
)
from virtfw.rules.runner import Runner
from virtfw.statefiles import StatusDir, locked, remove_file, write_many
from virtfw.transaction import Transaction

AnyFilterBackend = FilterBackend[Any, Any]
# The code that turns a binding and its filter tree into PortRules: part of every digest,
# with the backend's own rendering code (``render_digest``).
INSTANTIATE_MODULES = ("virtfw.filter.instantiate", "virtfw.filter.model")


STARTING, ACTIVE = "starting", "active"  # a status is written before the install, completed after


@dataclass
class BindingStatus:
    """A binding's status file, ``bindings/PORT.json``: what is installed for it now.

    JSON: ``{"portdev", "xml", "binding": {Binding's fields}, "backend", "created",
    "state": "starting"|"active", "firewall": the backend's removal record or null,
    "digest": str or null}``. ``firewall`` stays JSON here: only its backend reads it
    (:meth:`ActiveBinding.record`). Files of the untyped version load: they may lack
    ``binding`` (then the XML is parsed) and, while starting, ``digest``.
    """

    portdev: str
    xml: str
    binding: Binding | None  # validated when the binding was created: no XML parsing on reload
    backend: str
    created: float
    state: str = STARTING
    firewall: dict | None = None
    digest: str | None = None  # what the record was rendered from (see BindingManager._digest)

    def to_json(self) -> dict:
        return {
            "portdev": self.portdev,
            "xml": self.xml,
            "binding": dataclasses.asdict(self.binding) if self.binding else None,
            "backend": self.backend,
            "created": self.created,
            "state": self.state,
            "firewall": self.firewall,
            "digest": self.digest,
        }

    @classmethod
    def from_json(cls, data: object, where: str) -> BindingStatus:
        keys = {"portdev", "xml", "binding", "backend", "created", "state", "firewall", "digest"}
        fields = records.obj(data, where, keys)
        for key in ("portdev", "xml", "backend", "created", "state"):
            if key not in fields:
                raise records.fail(where, f"{key!r} is missing")
        portdev = records.text(fields["portdev"], f"{where}.portdev")
        try:
            check_ifname(portdev, "port device")
        except VirtfwError as error:
            raise records.fail(f"{where}.portdev", str(error)) from None
        created = fields["created"]
        if isinstance(created, bool) or not isinstance(created, (int, float)):
            raise records.fail(f"{where}.created", "expected a number")
        state = records.text(fields["state"], f"{where}.state")
        if state not in (STARTING, ACTIVE):
            raise records.fail(f"{where}.state", f"expected {STARTING!r} or {ACTIVE!r}")
        firewall = fields.get("firewall")
        digest = fields.get("digest")
        return cls(
            portdev,
            records.text(fields["xml"], f"{where}.xml"),
            _binding(fields.get("binding"), f"{where}.binding", portdev),
            records.text(fields["backend"], f"{where}.backend"),
            created,
            state,
            records.obj(firewall, f"{where}.firewall") if firewall is not None else None,
            records.text(digest, f"{where}.digest") if digest is not None else None,
        )


def _binding(data: object, where: str, portdev: str) -> Binding | None:
    """Binding's fields as ``dataclasses.asdict`` wrote them; None when not recorded."""
    if data is None:
        return None
    names = {f.name for f in dataclasses.fields(Binding)}
    fields = records.obj(data, where, names)
    optional = ("owner", "owner_uuid", "linkdev")
    values: dict[str, Any] = {
        name: records.text(fields.get(name), f"{where}.{name}") for name in ("portdev", "mac", "filter")
    }
    values["params"] = records.texts_by_key(fields.get("params", {}), f"{where}.params")
    values.update(
        {name: records.text(fields[name], f"{where}.{name}") for name in optional if fields.get(name) is not None}
    )
    if values["portdev"] != portdev:
        raise records.fail(f"{where}.portdev", f"not the status's port {portdev}")
    return Binding(**values)


@dataclass
class ActiveBinding:
    status: BindingStatus

    @property
    def portdev(self) -> str:
        return self.status.portdev

    @property
    def owner(self) -> str:
        return binding_owner(self.portdev)

    @property
    def binding(self) -> Binding:
        if self.status.binding:
            return self.status.binding
        from virtfw.filter.xml import parse_binding

        return parse_binding(self.status.xml, f"status of binding '{self.portdev}'")

    def record(self, backend: AnyFilterBackend) -> Any | None:
        """The backend's removal record of this binding's rules; None before it has one."""
        if not self.status.firewall:
            return None
        return backend.load_record(self.status.firewall, f"status of binding '{self.portdev}'.firewall")


class BindingManager:
    def __init__(self, config: Config, runner: Runner, store: FilterStore, backend_name: str | None) -> None:
        self.config = config
        self.runner = runner
        self.store = store
        self._backend_name = backend_name
        # bindings/PORT.json, and the base records nwfilter-BACKEND.json beside the folder
        self.statuses = StatusDir(config.state_dir / "bindings", "nwfilter", dry_run=runner.dry_run)
        # Wraps long loops; the CLI puts a progress bar here on a terminal.
        self.progress: Callable[[list, str], Iterable] = lambda items, label: items
        self._code_digests: dict[str, str] = {}  # backend name -> digest of the code rendering its records
        self._tree_digests: dict[str, str] = {}  # filter name -> digest of its tree
        # Bindings whose status file cannot be read, by port, as ``active()`` last found them.
        self.unreadable: dict[str, str] = {}

    @property
    def backend(self) -> AnyFilterBackend:
        if self._backend_name is None:
            raise VirtfwError("no firewall backend selected")
        return load_filter_backend(self._backend_name, self.config.state_dir)

    # ---- status files -------------------------------------------------------

    def active(self) -> list[ActiveBinding]:
        """The bindings with a readable status file (the others: ``unreadable``)."""
        statuses, self.unreadable = self.statuses.read_each(self._load)
        return [ActiveBinding(status) for status in statuses]

    def get(self, portdev: str) -> ActiveBinding | None:
        check_ifname(portdev, "port device")
        status = self._load(portdev)
        return ActiveBinding(status) if status else None

    def _load(self, portdev: str) -> BindingStatus | None:
        """The binding's status; a file that is not one virtfw wrote is a RecordError naming it."""
        where = f"status of binding '{portdev}'"
        try:
            data = self.statuses.load(portdev)
        except VirtfwError as exc:
            raise records.RecordError(str(exc)) from None
        if not data:
            return None
        status = BindingStatus.from_json(data, where)
        if status.portdev != portdev:
            raise records.RecordError(f"{where}: it names port '{status.portdev}'")
        return status

    def _save(self, status: BindingStatus) -> None:
        self.statuses.save(status.portdev, status.to_json())

    def _save_many(self, statuses: list[BindingStatus]) -> None:
        self.statuses.save_many([(status.portdev, status.to_json()) for status in statuses])

    def _drop(self, portdev: str) -> None:
        self.statuses.drop(portdev)

    def _load_base(self, backend: AnyFilterBackend) -> Any | None:
        data = self.statuses.load_base(backend.name)
        if not data:
            return None
        return backend.load_base(data, f"status file {self.statuses.base_path(backend.name)}")

    def _save_base(self, backend: AnyFilterBackend, base: Any | None) -> None:
        self.statuses.save_base(backend.name, base.to_json() if base is not None else None)

    # ---- changes ------------------------------------------------------------

    def create(self, binding: Binding) -> None:
        self.create_many([binding])

    def create_many(self, bindings: list[Binding]) -> None:
        """Instantiate ``bindings`` in one backend install, and record them for boot."""
        from virtfw.filter.xml import format_binding

        with locked(self.config.state_dir, dry_run=self.runner.dry_run, config_dir=self.config.config_dir):
            seen: set[str] = set()
            for binding in bindings:
                if self.get(binding.portdev) or binding.portdev in seen:
                    raise VirtfwError(f"port {binding.portdev} already has a filter binding")
                seen.add(binding.portdev)
            ports = [instantiate(b, self.store.load) for b in self.progress(bindings, "Instantiating bindings")]
            backend = self.backend
            digests = {binding_owner(b.portdev): self._digest(backend, b) for b in bindings}
            statuses: dict[str, BindingStatus] = {}
            with Transaction() as tx:
                for binding, port_rules in zip(bindings, ports):
                    statuses[port_rules.owner] = BindingStatus(
                        binding.portdev, format_binding(binding), binding, backend.name, time.time()
                    )
                    tx.on_rollback(f"status of {binding.portdev}", partial(self._drop, binding.portdev))
                self._save_many(list(statuses.values()))
                self._record(tx, [(s.portdev, s.xml) for s in statuses.values()])
                self._install(tx, backend, ports, statuses, digests, old={}, new_ports=self._has_peers(backend, seen))

    # ---- records that outlive a reboot (the state dir does not) --------------

    @property
    def records_dir(self) -> Path:
        return self.config.config_dir / "bindings"

    def _record(self, tx: Transaction, entries: list[tuple[str, str]]) -> None:
        if self.runner.dry_run:
            return
        paths = [(self.records_dir / f"{portdev}.xml", xml) for portdev, xml in entries]
        previous = [(path, path.read_text()) for path, _ in paths if path.exists()]
        created = [path for path, _ in paths if not path.exists()]

        def undo() -> None:
            for path in created:
                remove_file(path)
            write_many(previous, 0o644)

        write_many(paths, 0o644)
        tx.on_rollback("binding records", undo)

    def recorded_each(self) -> tuple[list[Binding], list[str]]:
        """The bindings recorded for boot, and a line for each record that cannot be read."""
        from virtfw.filter.xml import parse_binding

        if not self.records_dir.is_dir():
            return [], []
        found, failures = [], []
        for path in sorted(self.records_dir.glob("*.xml")):
            try:
                found.append(parse_binding(path.read_bytes(), str(path)))
            except OSError as exc:
                failures.append(f"binding record {path}: {exc.strerror}")
            except VirtfwError as exc:
                failures.append(str(exc))
        return found, failures

    def restore_recorded(self, recorded: list[Binding]) -> tuple[list[str], list[str]]:
        """Re-create every recorded binding that is not active (boot): one batch; when that
        fails, each on its own, so that one binding that cannot be made keeps no other out.
        The ports re-created, and a line for each that failed."""
        present = {a.portdev for a in self.active()} | set(self.unreadable)
        missing = [b for b in recorded if b.portdev not in present]
        done, failures = all_or_each(missing, self.create_many, lambda b: f"binding {b.portdev}")
        return [b.portdev for b in done], failures

    def delete(self, portdev: str) -> None:
        with locked(self.config.state_dir, dry_run=self.runner.dry_run, config_dir=self.config.config_dir):
            try:
                active = self.get(portdev)
            except records.RecordError:
                self._delete_unreadable(portdev)
                return
            if active is None:
                raise VirtfwError(f"port {portdev} has no filter binding")
            backend = load_filter_backend(active.status.backend, self.config.state_dir)
            record = active.record(backend)
            # The status file goes last: it is what says the binding exists. Until it goes,
            # a failure puts back what went (boot record, rules) and a kill leaves a binding
            # that reload restores or nwfilter-binding-delete finishes.
            with Transaction() as tx:
                self._forget_boot_record(tx, portdev)
                rebuild = record is not None and not backend.remove(self.runner, record)
                if record is not None and active.status.state == ACTIVE:
                    # a later step failing puts the binding's rules back as they were
                    tx.on_rollback(f"rules of {portdev}", lambda: self._reinstall(backend, active))
                self._after_removal(backend, rebuild, leaving=portdev)
                self._drop(portdev)
            if not self.runner.dry_run:
                self._drop_leftovers([portdev])

    def _forget_boot_record(self, tx: Transaction, portdev: str) -> None:
        """Remove the binding's record for boot; put back if the deletion fails later."""
        path = self.records_dir / f"{portdev}.xml"
        if self.runner.dry_run or not path.exists():
            return
        text = path.read_text()
        remove_file(path)
        tx.on_rollback(f"boot record of {portdev}", lambda: write_many([(path, text)], 0o644))

    def _delete_unreadable(self, portdev: str) -> None:
        """nwfilter-binding-delete of a binding whose status file cannot be read: nothing in it
        is run. Its rules (chains named after its port) go with a rebuild of the other
        bindings of each backend, or with the backend's base when no other is left."""
        others = self.active()
        also = sorted(set(self.unreadable) - {portdev})
        if also:  # the rebuild below would take their rules away too
            raise VirtfwError(
                f"binding {portdev}: the status of binding {also[0]} cannot be read either; "
                f"remove what it says by hand, or restore it, before deleting {portdev}"
            )
        for name in BACKEND_TOOLS:
            backend = load_filter_backend(name, self.config.state_dir)
            users = [a for a in others if a.status.backend == name and a.status.firewall]
            broken = [a for a, _ in self._uninstantiable(users)]
            if broken and not self._reinstallable(name):
                raise VirtfwError(
                    f"binding {portdev}: binding {broken[0].portdev}'s filter cannot be instantiated, and "
                    f"the rebuild that removes {portdev}'s rules would take its rules away: mend it first"
                )
            if users:
                self._rebuild([a for a in users if a not in broken], keep=broken)
            elif self.statuses.load_base(name) is not None:
                self._drop_base(backend)
        if not self.runner.dry_run:
            remove_file(self.records_dir / f"{portdev}.xml")
            self._drop_leftovers([portdev])
        self._drop(portdev)

    def _reinstall(self, backend: AnyFilterBackend, active: ActiveBinding) -> None:
        installed = backend.install(self.runner, [instantiate(active.binding, self.store.load)])
        self._save_base(backend, merged_base(self._load_base(backend), installed.base))
        active.status.firewall = installed.removals[active.owner].to_json()
        active.status.digest = self._digest(backend, active.binding)
        self._save(active.status)

    def _drop_leftovers(self, portdevs: list[str]) -> None:
        """Temp files of writes that a killed process never finished renaming
        (one listing per folder, whatever the number of bindings)."""
        if self.runner.dry_run:
            return
        if self.records_dir.is_dir():
            prefixes = tuple(f".{portdev}.xml." for portdev in portdevs)
            for name in os.listdir(self.records_dir):
                if name.startswith(prefixes):
                    remove_file(self.records_dir / name)
        self.statuses.drop_leftovers(portdevs)

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

    def reinstantiate(self, filter_name: str, actives: list[ActiveBinding]) -> int:
        """Replace the rules of ``actives`` (the users of ``filter_name``) with what the
        current filters give, atomically.

        The caller holds the lock (it also saves the filter definition inside it). The
        rules all of them would make are counted first, from list lengths: a definition
        that would make too many is refused before any is built (``check_total``).
        """
        if not actives:
            return 0
        check_total(filter_name, [a.binding for a in actives], self.store.load)
        by_backend: dict[str, list[ActiveBinding]] = {}
        for active in actives:
            by_backend.setdefault(active.status.backend, []).append(active)
        for name, group in by_backend.items():
            backend = load_filter_backend(name, self.config.state_dir)
            ports = [
                instantiate(a.binding, self.store.load, counted=True)  # by check_total, above
                for a in self.progress(group, "Re-instantiating bindings")
            ]
            statuses = {a.owner: a.status for a in group}
            digests = {a.owner: self._digest(backend, a.binding) for a in group}
            old = {a.owner: record for a in group if (record := a.record(backend)) is not None}
            with Transaction() as tx:
                self._install(tx, backend, ports, statuses, digests, old=old)
        return len(actives)

    def reload(self) -> tuple[int, list[str]]:
        """Restore every binding's rules: an intact ruleset is left as it is (no batch, so
        counters and handles stay), anything else rebuilt; after a flush it restores.

        Each binding on its own: one that cannot be instantiated (its filter is gone or
        broken) or whose status cannot be read is reported by name and keeps the rules it
        has (nftables: re-installed from its record; otherwise, and for an unreadable
        status, the others are re-installed in place instead of rebuilding the tables),
        and the others are restored. Returns how many were, and the failures.
        """
        with locked(self.config.state_dir, dry_run=self.runner.dry_run, config_dir=self.config.config_dir):
            actives = self.active()
            failures = [f"binding {port}: {error}" for port, error in self.unreadable.items()]
            if not actives:
                return 0, failures
            target = self.backend if self._backend_name else None
            for active in actives:
                if target and active.status.backend != target.name:
                    old = load_filter_backend(active.status.backend, self.config.state_dir)
                    record = active.record(old)
                    if record is not None:
                        old.remove(self.runner, record)
                    active.status.backend = target.name
                    active.status.firewall = active.status.digest = None
                    self._save(active.status)
                    self._after_removal(old, False, leaving="")
            self._ensure_boot_records(actives)
            if self._intact(actives):
                return len(actives), failures
            broken = self._uninstantiable(actives)
            failures += [f"binding {a.portdev}: not restored, its rules are left as they were: {e}" for a, e in broken]
            if not broken and not self.unreadable:
                self._rebuild(actives)
                return len(actives), failures
            left_out = {a.portdev for a, _ in broken}
            good = [a for a in actives if a.portdev not in left_out]
            kept = [a for a, _ in broken if a.status.firewall and a.status.state == ACTIVE]
            failed: list[str] = []
            if good and not self.unreadable and self._reinstallable(good[0].status.backend):
                self._rebuild(good, keep=kept)
            elif good:  # a rebuild would take away what the unreadable ones have
                failed = self._replace_each(good)
            failures += failed
        return len(actives) - len(broken) - len(failed), failures

    def _intact(self, actives: list[ActiveBinding]) -> bool:
        """Whether reload can leave the ruleset as it is: every binding of the backend
        reload uses, complete, rendered by this code from its inputs as they are now (its
        digest), and the kernel holding what its record says, rule content included (one
        listing or ``*-save`` per table), the base in place and nothing in virtfw's chains
        that no record holds. With an unreadable status around, its rules cannot be told
        from foreign ones: they are left (a rebuild would take them away)."""
        names = {a.status.backend for a in actives}
        if len(names) != 1 or (self._backend_name and names != {self._backend_name}):
            return False
        backend = load_filter_backend(names.pop(), self.config.state_dir)
        records = []
        for active in actives:
            if active.status.state != ACTIVE or active.status.digest is None:
                return False
            try:
                record = active.record(backend)
                digest = self._digest(backend, active.binding)
            except VirtfwError:
                return False  # a record or definition refused: the rebuild reports it
            if record is None or active.status.digest != digest or not backend.content_known(record):
                return False
            records.append(record)
        try:
            base = self._load_base(backend)
        except VirtfwError:
            return False
        if base is not None and backend.verify(self.runner, base):
            return False
        if any(backend.verify(self.runner, record) for record in records):
            return False
        return bool(self.unreadable) or not backend.unexpected(self.runner, records)

    def _reinstallable(self, backend_name: str) -> bool:
        """Whether the backend's records can be installed again as they are (nftables)."""
        return load_filter_backend(backend_name, self.config.state_dir).render_digest() is not None

    def _uninstantiable(self, actives: list[ActiveBinding]) -> list[tuple[ActiveBinding, str]]:
        """The bindings whose filter tree cannot be instantiated now, with why."""
        broken = []
        for active in actives:
            try:
                instantiate(active.binding, self.store.load)
            except VirtfwError as exc:
                broken.append((active, str(exc)))
        return broken

    def _replace_each(self, actives: list[ActiveBinding]) -> list[str]:
        """Re-install ``actives`` in place, leaving every other binding's rules as they are
        (a rebuild would take those away): all in one install, else each on its own."""
        _, failures = all_or_each(
            actives,
            lambda group: self.reinstantiate(group[0].binding.filter, group),
            lambda a: f"binding {a.portdev}: not restored",
        )
        return failures

    def verify(self) -> tuple[int, list[str]]:
        problems: list[str] = []
        actives = self.active()
        problems += [
            f"binding {port}: {error}; nwfilter-binding-delete {port} removes what carries its name"
            for port, error in self.unreadable.items()
        ]
        backends: dict[str, AnyFilterBackend] = {}
        for active in actives:
            where = f"binding {active.portdev}"
            if active.status.state != ACTIVE or not active.status.firewall:
                problems.append(f"{where}: creation was interrupted (run nwfilter-binding-delete {active.portdev})")
                continue
            # one backend object per kind: it reads the live ruleset once for all bindings
            backend = backends.setdefault(
                active.status.backend, load_filter_backend(active.status.backend, self.config.state_dir)
            )
            problems += [f"{where}: {p}; {REINSTALLS}" for p in backend.verify(self.runner, active.record(backend))]
            if not _port_exists(active.portdev):
                problems.append(
                    f"{where}: port device {active.portdev} no longer exists; nwfilter-binding-delete "
                    f"{active.portdev} removes the binding (else the next device of that name gets its rules)"
                )
        for name, backend in sorted(backends.items()):
            base = self._load_base(backend)
            if base:
                problems += [f"filter base ({name}): {p}; {REINSTALLS}" for p in backend.verify(self.runner, base)]
            if not self.unreadable:  # else whose rules are whose cannot be told
                records = [r for a in actives if a.status.backend == name and (r := a.record(backend)) is not None]
                found = backend.unexpected(self.runner, records)
                problems += [f"filter base ({name}): {p}; virtfw reload removes it" for p in found]
        return len(actives), problems

    # ---- internals ----------------------------------------------------------

    def _has_peers(self, backend: AnyFilterBackend, creating: set[str]) -> bool:
        """Whether another binding of ``backend`` is in place (its status says so): the
        first one found ends the search, so this costs a directory listing, not a read
        of every status."""
        for name in self.statuses.names():
            if name in creating:
                continue
            status = self._load(name)
            if status and status.backend == backend.name and status.state == ACTIVE and status.firewall:
                return True
        return False

    def _digest(self, backend: AnyFilterBackend, binding: Binding) -> str:
        """What the rendering of ``binding`` depends on: its fields, its filter tree's
        definitions and the code that instantiates and renders them. A record is installed
        again from it only where the backend can (its ``render_digest``); for any backend it
        tells reload whether the rules in place are what rendering them now would give."""
        if backend.name not in self._code_digests:
            rendering = backend.render_digest() or module_digest(type(backend).__module__)
            self._code_digests[backend.name] = f"{module_digest(*INSTANTIATE_MODULES)} {rendering}"
        code = self._code_digests[backend.name]
        tree = self._tree_digests.get(binding.filter)
        if tree is None:
            tree = self._tree_digests[binding.filter] = tree_digest(binding.filter, self.store.load)
        inputs = json.dumps([code, tree, vars(binding)], sort_keys=True)  # fields: str, dict of lists
        return hashlib.sha256(inputs.encode()).hexdigest()

    def _install(
        self,
        tx: Transaction,
        backend: AnyFilterBackend,
        ports: list,
        statuses: dict[str, BindingStatus],
        digests: dict[str, str],
        *,
        old: dict,
        new_ports: bool = False,
    ) -> None:
        old_base_file = self.statuses.load_base(backend.name)  # put back as it was on rollback
        tx.on_rollback("nwfilter base record", lambda: self.statuses.save_base(backend.name, old_base_file))
        old_base = self._load_base(backend)
        previous = {owner: dataclasses.replace(status) for owner, status in statuses.items()}

        written: dict[str, object] = {}  # what the last call wrote, by file: the same is not written again
        applied = False

        def record(installed: Installed[Any, Any]) -> None:
            # Called before the batch applies (the records are known then: a kill after it
            # commits leaves what removes the new rules) and after. Before, no digest: it
            # says the rules in place are these, which only holds once the batch is in, so
            # a binding killed in between is rendered again by the next reload.
            base = merged_base(old_base, installed.base)
            base_json = None if base is None else base.to_json()
            if "" not in written or written[""] != base_json:
                self._save_base(backend, base)
                written[""] = base_json
            changed = []
            for owner, removal in installed.removals.items():
                statuses[owner].firewall = removal.to_json()
                statuses[owner].digest = digests.get(owner) if applied else None
                data = statuses[owner].to_json()
                if written.get(owner) != data:
                    changed.append(statuses[owner])
                    written[owner] = data
            self._save_many(changed)

        def restore_statuses() -> None:
            for owner, status in previous.items():
                if status.state == STARTING:
                    continue  # a new binding: its status file goes with its own rollback
                vars(statuses[owner]).update(vars(status))  # in place: callers hold these objects
                self._save(status)

        tx.on_rollback("binding status", restore_statuses)
        installed = backend.install(self.runner, ports, old=old, before_apply=record, new_ports=new_ports)
        if not old:
            if installed.base:
                tx.on_rollback("nwfilter base chains", lambda: backend.remove(self.runner, installed.base))
            for removal in installed.removals.values():
                tx.on_rollback("binding rules", partial(backend.remove, self.runner, removal))
        for status in statuses.values():
            status.state = ACTIVE
        applied = True
        try:
            record(installed)
        except VirtfwError:
            if any(status.state == STARTING for status in previous.values()):
                raise  # a new binding must be recorded as made, or its rules go again
            # Only the digests were left to write: without them, reload renders these
            # bindings again, and the files already name the rules in place.

    def _after_removal(self, backend: AnyFilterBackend, rebuild: bool, leaving: str) -> None:
        """After a removal: rebuild the other bindings of ``backend`` if it could not be
        run as recorded, or remove the base if no binding uses it any more."""
        users = [
            a for a in self.active()
            if a.status.backend == backend.name and a.portdev != leaving and a.status.firewall
        ]  # fmt: skip
        after_removal(
            users,
            needs_rebuild=rebuild,
            rebuild=lambda others: self._rebuild(list(others)),
            drop_base=lambda: self._drop_base(backend),
        )

    def _drop_base(self, backend: AnyFilterBackend) -> None:
        base = self._load_base(backend)
        if base:
            backend.remove(self.runner, base)
            self._save_base(backend, None)

    def _ensure_boot_records(self, actives: list[ActiveBinding]) -> None:
        """A binding's record for boot, where a create or delete killed half-way left none."""
        missing = [a for a in actives if not (self.records_dir / f"{a.portdev}.xml").exists()]
        if missing and not self.runner.dry_run:
            write_many([(self.records_dir / f"{a.portdev}.xml", a.status.xml) for a in missing], 0o644)

    def _rebuild(self, actives: list[ActiveBinding], keep: Sequence[ActiveBinding] = ()) -> None:
        """Our tables anew with the rules of ``actives``, and ``keep``'s recorded rules as
        they are (bindings that cannot be instantiated now keep what they had)."""
        self._ensure_boot_records(actives)
        if not self.runner.dry_run:
            self._drop_leftovers([active.portdev for active in actives])
        backend = load_filter_backend([*actives, *keep][0].status.backend, self.config.state_dir)
        digests = {a.owner: self._digest(backend, a.binding) for a in actives}
        # A binding whose record was rendered by this code from these very inputs is
        # installed again from its record; only the others are instantiated and rendered.
        reusable = backend.render_digest() is not None
        reuse = {
            a.owner: a.record(backend) for a in actives
            if reusable and digests[a.owner] and a.status.digest == digests[a.owner]
            and a.status.firewall and a.status.state == ACTIVE
        }  # fmt: skip
        todo = [a for a in actives if a.owner not in reuse]
        ports = [instantiate(a.binding, self.store.load) for a in self.progress(todo, "Re-instantiating bindings")]
        reuse |= {a.owner: a.record(backend) for a in keep if a.status.backend == backend.name}
        current = {a.owner: reuse.get(a.owner) or self._readable_record(backend, a) for a in actives}
        old_base_file = self.statuses.load_base(backend.name)
        old_base = self._load_base(backend)
        previous = {a.owner: dataclasses.replace(a.status) for a in actives}
        written: dict[str, dict | None] = {a.owner: a.status.to_json() for a in actives}  # what each file holds
        written[""] = old_base_file
        applied = False

        def record(installed: Installed[Any, Any]) -> None:
            # Before the batch (records as far as they are known, no digests): the base, and
            # the statuses whose record names other objects than the one on file or was
            # rendered from other inputs, with no digest (a binding killed after the batch is
            # rendered again by the next reload, and verify counts its rules meanwhile).
            # After it: every status whose record, state or digest changed. A rebuild that
            # changes no record writes no file.
            base = merged_base(old_base, installed.base)
            base_json = None if base is None else base.to_json()
            if written[""] != base_json:
                self._save_base(backend, base)
                written[""] = base_json
            changed = []
            for active in actives:
                removal = installed.removals[active.owner]
                status = active.status
                if applied:
                    if removal is not reuse.get(active.owner):  # else: the very record on file
                        status.firewall = removal.to_json()
                    status.state, status.digest = ACTIVE, digests[active.owner]
                else:
                    known = current[active.owner]
                    if known is not None and known.bare() == removal and status.digest == digests[active.owner]:
                        continue  # the file's record names what the batch adds, and says what it holds
                    status.firewall, status.digest = removal.to_json(), None
                data = status.to_json()
                if written[active.owner] != data:
                    changed.append(status)
                    written[active.owner] = data
            self._save_many(changed)

        try:
            installed = backend.install(self.runner, ports, rebuild=True, reuse=reuse, before_apply=record)
        except BaseException:
            # nothing applied (or the failed batch taken back): the files as they were
            for active in actives:
                vars(active.status).update(vars(previous[active.owner]))
            self._put_back(backend, previous, written, old_base_file)
            raise
        applied = True
        try:
            record(installed)
        except VirtfwError:
            if any(status.state == STARTING for status in previous.values()):
                raise  # its status must say it was made; the files name its rules already
            # Only what the batch taught was left to write (digests): the files name the
            # rules in place, and without digests the next reload installs them again.

    def _readable_record(self, backend: AnyFilterBackend, active: ActiveBinding) -> Any | None:
        try:
            return active.record(backend)
        except VirtfwError:
            return None

    def _put_back(
        self, backend: AnyFilterBackend, previous: dict[str, BindingStatus], written: dict, base_file: dict | None
    ) -> None:
        """The status files and base record ``_rebuild`` wrote before a batch that failed, as they were."""
        if written[""] != base_file:
            self.statuses.save_base(backend.name, base_file)
        self._save_many([status for owner, status in previous.items() if written[owner] != status.to_json()])


def _port_exists(portdev: str) -> bool:
    """Whether a network device of that name exists (in this network namespace)."""
    import socket

    try:
        socket.if_nametoindex(portdev)
    except OSError:
        return False
    return True


def define_filter(manager: BindingManager, filt, save: Callable[[], None]) -> int:
    """Save a new definition and re-instantiate every binding that uses it: all or nothing.

    The file is written first (a read-only or full config dir refuses it before any rule
    changes) and put back as it was when the rules cannot follow. A kill between the two
    leaves the new definition with the bindings' rules of either; the next ``reload``
    instantiates them from the file, which is the new state.
    """
    with locked(manager.config.state_dir, dry_run=manager.runner.dry_run, config_dir=manager.config.config_dir):
        manager.store.overrides[filt.name] = filt
        users = manager.users_of(filt.name)
        with Transaction() as tx:
            previous = manager.store.own_text(filt.name)
            save()
            tx.on_rollback(f"definition of {filt.name}", lambda: manager.store.put_back(filt.name, previous))
            count = manager.reinstantiate(filt.name, users)
    return count
