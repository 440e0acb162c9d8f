"""Network lifecycle: start, destroy, reload, autostart — each one transaction.

The status file of a network is written before anything changes (an intent holding
the removal commands known in advance) and completed after, so a process killed at
any instant leaves enough behind for the next net-destroy to remove everything; the
destroy removes it first (a state dir that refuses the removal changes nothing), and
what a destroy killed after that leaves carries the network's name.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from virtfw.config import Config
from virtfw.errors import VirtfwError
from virtfw.lifecycle import REINSTALLS, after_removal
from virtfw.net import dnsmasq
from virtfw.net.bridge import BridgeRecord, Links, enable_forwarding
from virtfw.net.model import Network
from virtfw.net.policy import needs_firewall, needs_forwarding, network_rules, zone_choices
from virtfw.net.status import ACTIVE, STARTING, DnsmasqStatus, NetworkStatus
from virtfw.net.xml import format_network, parse_network
from virtfw.rules.backend import BACKEND_TOOLS, Installed, NetworkBackend, load_backend, merged_base
from virtfw.rules.firewalld import Firewalld
from virtfw.rules.records import RecordError
from virtfw.rules.runner import Runner
from virtfw.statefiles import StatusDir, locked
from virtfw.transaction import Transaction

AnyNetworkBackend = NetworkBackend[Any, Any]  # whichever backend a status names


@dataclass
class ActiveNetwork:
    """An active network as its status file records it."""

    status: NetworkStatus

    @property
    def name(self) -> str:
        return self.status.name

    @property
    def network(self) -> Network:
        return parse_network(self.status.xml, f"status of network '{self.name}'")

    @property
    def complete(self) -> bool:
        return self.status.complete


class NetworkManager:
    def __init__(self, config: Config, runner: Runner, backend: AnyNetworkBackend | None) -> None:
        self.config = config
        self.runner = runner
        self._backend = backend
        self.statuses = StatusDir(config.state_dir / "networks", "firewall", runner.dry_run)
        self.links = Links(runner)
        self.firewalld = Firewalld(runner)  # asked only where firewall-cmd is on PATH
        # Networks whose status file cannot be read, by name, as ``active()`` last found them:
        # each is reported on its own and the others carry on.
        self.unreadable: dict[str, str] = {}

    @property
    def backend(self) -> AnyNetworkBackend:
        if self._backend is None:
            raise VirtfwError("no firewall backend selected")
        return self._backend

    # ---- status files -------------------------------------------------------

    def active(self) -> list[ActiveNetwork]:
        """The networks with a readable status file, in start order (see ``unreadable``)."""
        found, self.unreadable = self.statuses.read_each(self.get_active)
        return sorted(found, key=lambda a: a.status.started)

    def get_active(self, name: str) -> ActiveNetwork | None:
        """The network's status; a file that is not one virtfw wrote is an error naming it."""
        where = f"status of network '{name}'"
        try:
            data = self.statuses.load(name)
        except VirtfwError as exc:
            raise RecordError(str(exc)) from None
        if data is None:
            return None
        status = NetworkStatus.from_json(data, where)
        if status.name != name:
            raise RecordError(f"{where}: it names network '{status.name}'")
        return ActiveNetwork(status)

    def _save(self, status: NetworkStatus) -> None:
        self.statuses.save(status.name, status.to_json())

    def _drop_status(self, name: str) -> None:
        self.statuses.drop(name)

    def _record(self, backend: AnyNetworkBackend, active: ActiveNetwork) -> Any:
        """The network's removal record, checked by type before it reaches a command;
        None when it has none."""
        data = active.status.firewall
        if not data:
            return None
        if data.get("backend") != backend.name:
            # Another backend's record: a reload switching backends removed its rules,
            # then saved the new backend's name, and was stopped before it rebuilt.
            return None
        return backend.load_record(data, f"status of network '{active.name}': firewall")

    def _base(self, backend: AnyNetworkBackend) -> Any:
        data = self.statuses.load_base(backend.name)
        where = f"{self.statuses.base_path(backend.name)}"
        return None if data is None else backend.load_base(data, where)

    def _save_base(self, backend: AnyNetworkBackend, base: Any) -> None:
        self.statuses.save_base(backend.name, None if base is None else base.to_json())

    def _merge_base(self, backend: AnyNetworkBackend, old: Any, new: Any) -> None:
        if new is not None:  # else the base on file stands as it is: no write
            self._save_base(backend, merged_base(old, new))

    # ---- start --------------------------------------------------------------

    def start(self, nets: list[Network], transient: bool = False) -> None:
        """Bring up ``nets`` and install all their rules in one firewall batch."""
        with locked(self.config.state_dir, dry_run=self.runner.dry_run, config_dir=self.config.config_dir):
            self._check_startable(nets)
            zones = {net.name: self._zone_for(net) for net in nets}  # refused before anything changes
            with Transaction() as tx:
                statuses = [self._begin(tx, net, transient, zones[net.name]) for net in nets]
                self._install(tx, nets, statuses)
                for net, status in zip(nets, statuses):
                    self._start_dnsmasq(tx, net, status)
                for status in statuses:
                    status.state = ACTIVE
                    self._save(status)
        self.links.close()

    def _check_startable(self, nets: list[Network]) -> None:
        active = {a.name: a for a in self.active()}
        bridges = {a.status.bridge.name: a.name for a in active.values()}
        remains = self._remains(list(active.values()))
        for net in nets:
            if net.name in self.unreadable:
                raise VirtfwError(f"{self.unreadable[net.name]}; net-destroy {net.name} removes what it started")
            if net.name in remains:
                raise VirtfwError(
                    f"network '{net.name}': {', '.join(remains[net.name])} of it remain from a destroy that was "
                    f"interrupted; net-destroy {net.name} removes them"
                )
            if net.name in active:
                raise VirtfwError(f"network '{net.name}' is already active")
            owner = bridges.get(net.bridge_name)
            if owner:
                raise VirtfwError(f"bridge {net.bridge_name} is in use by active network '{owner}'")
            bridges[net.bridge_name] = net.name

    def _zone_for(self, net: Network, what: str | None = None) -> str | None:
        """The firewalld zone the network's bridge goes in; None where firewalld does not run."""
        choices, explicit = zone_choices(net)
        return self.firewalld.pick_zone(choices, explicit, what or f"network '{net.name}'")

    def _begin(self, tx: Transaction, net: Network, transient: bool, zone: str | None) -> NetworkStatus:
        record = BridgeRecord(net.bridge_name, created=False)  # bring_up sets it once it creates
        may_create = self.links.index(net.bridge_name) is None
        firewalled = needs_firewall(net)
        status = NetworkStatus(
            name=net.name,
            xml=format_network(net),
            transient=transient,
            started=time.time(),
            state=STARTING,
            bridge=BridgeRecord(net.bridge_name, created=may_create),
            backend=self.backend.name if firewalled else None,
            firewall=None,  # filled in by the backend's preview, before it applies
        )
        self._save(status)
        tx.on_rollback(f"status of {net.name}", lambda: self._drop_status(net.name))
        tx.on_rollback(f"bridge {net.bridge_name}", lambda: self.links.tear_down(record, net.name))
        try:
            self.links.bring_up(net, record)
        finally:
            status.bridge = BridgeRecord(record.name, record.created, list(record.addresses), record.ifindex)
        enable_forwarding({f.value for f in needs_forwarding(net)}, self.runner)
        if zone is not None:
            self._put_in_zone(tx, status, zone)
        return status

    def _put_in_zone(self, tx: Transaction | None, status: NetworkStatus, zone: str) -> None:
        """Put the bridge in firewalld's ``zone``, recorded first (a kill leaves what takes it out)."""
        status.zone = zone
        self._save(status)
        bridge = status.bridge.name
        if tx is not None:
            tx.on_rollback(f"firewalld zone of {bridge}", lambda: self.firewalld.take_out_of_zone(bridge, zone))
        self.firewalld.put_in_zone(bridge, zone)

    def _install(self, tx: Transaction, nets: list[Network], statuses: list[NetworkStatus]) -> None:
        rulesets = [network_rules(net) for net in nets if needs_firewall(net)]
        if not rulesets:
            return
        backend = self.backend
        old_base = self._base(backend)
        tx.on_rollback("base record", lambda: self._save_base(backend, old_base))

        def record(installed: Installed) -> None:
            self._merge_base(backend, old_base, installed.base)
            for status in statuses:
                if status.name in installed.removals:
                    status.firewall = installed.removals[status.name].to_json()
                    self._save(status)

        installed = backend.install(self.runner, rulesets, before_apply=record)
        for removal in [installed.base, *installed.removals.values()]:
            if removal is not None:
                tx.on_rollback("rules", partial(backend.remove, self.runner, removal))
        record(installed)

    def _start_dnsmasq(self, tx: Transaction, net: Network, status: NetworkStatus) -> None:
        if not dnsmasq.needs_dnsmasq(net):
            return
        files = dnsmasq.files_for(self.config.state_dir, net.name)
        running = status.dnsmasq = DnsmasqStatus()
        self._save(status)  # a kill from here on leaves the name to look for
        tx.on_rollback(f"dnsmasq of {net.name}", lambda: dnsmasq.stop(files, running.pid, self.runner))
        running.pid = dnsmasq.start(net, files, self.runner)
        self._save(status)

    def _stop_dnsmasq(self, status: NetworkStatus) -> None:
        if status.dnsmasq is None:
            return
        files = dnsmasq.files_for(self.config.state_dir, status.name)
        pid = status.dnsmasq.pid or dnsmasq.read_pid(files, wait=False)
        dnsmasq.stop(files, pid, self.runner)

    # ---- destroy ------------------------------------------------------------

    def destroy(self, name: str) -> None:
        """Undo a start. The status file goes first, before anything in the kernel changes:
        when it cannot be removed (a read-only or full state dir), the command fails with
        nothing changed, kernel and files alike. When a later step fails, the network is put
        back as it was (bridge, rules, dnsmasq) and its status written again first.

        A destroy killed after the status went leaves its remains named after the network
        (its bridge's alias, its dnsmasq's files): the next net-destroy of the name removes
        them, as it removes a network whose status cannot be read."""
        with locked(self.config.state_dir, dry_run=self.runner.dry_run, config_dir=self.config.config_dir):
            try:
                active = self.get_active(name)
            except RecordError:
                self._destroy_unreadable(name)
                return
            if active is None:
                if self._left_behind(name):
                    self._destroy_unreadable(name)
                    return
                raise VirtfwError(f"network '{name}' is not active")
            status = active.status
            # Records are read (and checked) before anything changes: a refused one stops nothing.
            backend = load_backend(status.backend) if status.backend else None
            record = self._record(backend, active) if backend else None
            removed = False
            self._drop_status(name)  # first: failing here leaves everything as it was

            def put_back() -> None:
                """A later step failed: the network as it was (status, bridge, its rules, dnsmasq)."""
                self._save(status)  # first: a kill from here on leaves the network to destroy again
                self._restore_bridge(active)
                if backend and removed:
                    self._install_rebuilt(backend, [active], rebuild=False)
                if status.zone and self.firewalld.running:
                    self.firewalld.put_in_zone(status.bridge.name, status.zone)
                self._revive_dnsmasq(active)

            with Transaction() as tx:
                tx.on_rollback(f"network {name}", put_back)
                if backend:
                    rebuild = record is not None and not backend.remove(self.runner, record)
                    removed = record is not None
                    self._after_removal(backend, rebuild, leaving=name)
                if status.zone:
                    self.firewalld.take_out_of_zone(status.bridge.name, status.zone)
                self.links.tear_down(status.bridge, name)
                self._stop_dnsmasq(status)
            self.statuses.drop_leftovers([name])
        self.links.close()

    def _left_behind(self, name: str) -> bool:
        """Whether a network without a status file left a bridge marked as created for it,
        or its dnsmasq's files (a destroy killed once its status was gone)."""
        return name in self._remains(self.active())

    def _remains(self, actives: list[ActiveNetwork]) -> dict[str, list[str]]:
        """What networks with no status file left (a destroy killed once the status was
        gone): by network, its bridges marked as created for it that no active network
        uses, and its dnsmasq's config or pid file."""
        if self.runner.dry_run:
            return {}
        named = {a.name for a in actives} | set(self.unreadable)
        used = {a.status.bridge.name for a in actives}
        found: dict[str, list[str]] = {}
        for network, bridges in self.links.marked().items():
            for bridge, _ in bridges:
                if network not in named and bridge not in used:
                    found.setdefault(network, []).append(f"bridge {bridge}")
        folder = self.config.state_dir / "dnsmasq"
        for entry in sorted(os.listdir(folder)) if folder.is_dir() else []:
            network, _, suffix = entry.rpartition(".")
            if suffix in ("conf", "pid") and network and network[0] != "." and network not in named:
                found.setdefault(network, []).append(f"dnsmasq {entry}")
        return found

    def _destroy_unreadable(self, name: str) -> None:
        """net-destroy of a network whose status file cannot be read: nothing in it is run.
        What carries the network's name goes: its dnsmasq (pid file and command line name it),
        its rules (each backend's chains are rebuilt from the other networks, or dropped when
        none is left) and the bridge marked as created for it. Addresses it added to a bridge
        it did not create cannot be told from an admin's, and stay."""
        others = self.active()
        also = sorted(set(self.unreadable) - {name})
        if also:  # the rebuild below would take their rules away too
            raise VirtfwError(
                f"network '{name}': the status of network '{also[0]}' cannot be read either; "
                f"restore it, or remove what it made by hand, before destroying '{name}'"
            )
        files = dnsmasq.files_for(self.config.state_dir, name)
        dnsmasq.stop(files, dnsmasq.read_pid(files, wait=False), self.runner)
        for backend_name in BACKEND_TOOLS:
            if self.statuses.load_base(backend_name) is None:
                continue
            backend = load_backend(backend_name)
            users = [a for a in others if a.status.backend == backend_name and a.status.firewall]
            if users:
                self._rebuild(backend, users)  # without this network's rules, whatever else fails (verify says)
            else:
                self._drop_base(backend)
        self.links.remove_aliased(name, keep={a.status.bridge.name for a in others})
        self._drop_status(name)
        self.statuses.drop_leftovers([name])

    def _after_removal(self, backend: AnyNetworkBackend, rebuild: bool, leaving: str) -> None:
        """Drop the shared base once nobody else uses it; rebuild when handles were unknown."""
        others = [
            a for a in self.active()
            if a.status.backend == backend.name and a.name != leaving and a.status.firewall
        ]  # fmt: skip
        after_removal(
            others,
            needs_rebuild=rebuild,
            rebuild=lambda users: self._rebuild(backend, users),
            drop_base=lambda: self._drop_base(backend),
        )

    def _drop_base(self, backend: AnyNetworkBackend) -> None:
        base = self._base(backend)
        if base:
            backend.remove(self.runner, base)
            self._save_base(backend, None)

    # ---- verify -------------------------------------------------------------

    def verify(self) -> tuple[int, list[str]]:
        """What the status files say is installed and the kernel no longer holds."""
        problems: list[str] = []
        actives = self.active()
        problems += [
            f"network {name}: {error}; net-destroy {name} removes what carries its name"
            for name, error in self.unreadable.items()
        ]
        backends: set[str] = set()
        live: dict[str, Any] = {}  # per backend: one read of the rules for all the checks

        def snapshot(backend: AnyNetworkBackend) -> Any:
            if backend.name not in live:
                live[backend.name] = backend.snapshot(self.runner)
            return live[backend.name]

        for active in actives:
            status = active.status
            where = f"network {active.name}"
            if not active.complete:
                problems.append(f"{where}: start was interrupted (run net-destroy {active.name})")
            if status.backend and status.firewall:
                backend = load_backend(status.backend)
                backends.add(backend.name)
                record = self._record(backend, active)
                if record is not None:
                    problems += [
                        f"{where}: {p}; {REINSTALLS}" for p in backend.verify(self.runner, record, snapshot(backend))
                    ]
            problems += [f"{where}: {p}" for p in self._bridge_problems(active)]
            problems += [f"{where}: {p}" for p in self._zone_problems(active)]
            if status.dnsmasq is not None:
                files = dnsmasq.files_for(self.config.state_dir, active.name)
                pid = status.dnsmasq.pid
                if pid is None or not dnsmasq.is_ours(pid, files):
                    problems.append(f"{where}: its dnsmasq (pid {pid}) is not running; virtfw reload restarts it")
        problems += [
            f"network {name}: not active, yet {', '.join(what)} of it remain (a destroy was interrupted); "
            f"net-destroy {name} removes them"
            for name, what in sorted(self._remains(actives).items())
        ]
        for name in sorted(backends):
            backend = load_backend(name)
            base = self._base(backend)
            if base:
                problems += [
                    f"base chains ({name}): {p}; {REINSTALLS}"
                    for p in backend.verify(self.runner, base, snapshot(backend))
                ]
            records = [self._record(backend, a) for a in actives if a.status.backend == name and a.status.firewall]
            if not self.unreadable:  # else whose rules are whose cannot be told
                found = backend.unexpected(self.runner, [r for r in records if r], snapshot(backend))
                problems += [f"base chains ({name}): {p}; virtfw reload removes it" for p in found]
            bridges = [a.status.bridge.name for a in actives if a.status.backend == name]
            problems += backend.foreign_drops(self.runner, bridges)
        self.links.close()
        return len(actives), problems

    def _bridge_problems(self, active: ActiveNetwork) -> list[str]:
        """The bridge gone, replaced or down, each with what puts it right."""
        record = active.status.bridge
        state = self.links.state(record)
        if state == "missing" and record.created:
            return [f"bridge {record.name} is missing; virtfw reload re-creates it"]
        if state == "missing":
            how = f"create it again (then virtfw reload), or net-destroy {active.name}"
            return [f"bridge {record.name} is missing, and virtfw did not create it: {how}"]
        if state == "replaced":
            return [f"bridge {record.name} was re-created since its rules were loaded; virtfw reload takes it over"]
        if not self.links.is_up(record.name):
            return [f"bridge {record.name} is down; virtfw reload sets it up"]
        return []

    def _zone_problems(self, active: ActiveNetwork) -> list[str]:
        """Where firewalld runs: the bridge out of the zone it should be in (firewalld
        restarted or reloaded with its runtime bindings lost, or someone moved it)."""
        if not self.firewalld.running:
            return []
        try:
            wanted = active.status.zone or self._zone_for(active.network, f"bridge {active.status.bridge.name}")
        except VirtfwError as exc:
            return [str(exc)]
        bridge = active.status.bridge.name
        found = self.firewalld.zone_of(bridge)
        if wanted is None or found == wanted:
            return []
        where = f"in firewalld zone '{found}'" if found else "in no firewalld zone"
        return [f"bridge {bridge} is {where}, not '{wanted}'; virtfw reload puts it back"]

    def _restore_zone(self, active: ActiveNetwork) -> None:
        """reload puts the bridge back in its firewalld zone, and in one for a network
        started before firewalld was."""
        if not self.firewalld.running:
            return
        wanted = active.status.zone or self._zone_for(active.network)
        if wanted is not None and self.firewalld.zone_of(active.status.bridge.name) != wanted:
            self._put_in_zone(None, active.status, wanted)

    # ---- reload -------------------------------------------------------------

    def reload(self) -> tuple[int, list[str]]:
        """Re-install the rules of every active network (idempotent), re-create a bridge
        virtfw made that has gone, and restart a dnsmasq that died.

        Each network is restored on its own: one that cannot be (its status file unreadable,
        a bridge virtfw did not make gone, a rule the kernel refuses) is reported by name and
        the others are restored. Returns how many were restored, and the failures.
        """
        with locked(self.config.state_dir, dry_run=self.runner.dry_run, config_dir=self.config.config_dir):
            actives = self.active()
            failures: list[str] = []
            restorable = []
            moved = False  # a bridge re-created or taken over: rules by index must be loaded anew
            for active in actives:
                present = self.links.state(active.status.bridge) == "present"
                moved = moved or not present
                try:
                    self._restore_bridge(active)
                except VirtfwError as exc:
                    failures.append(f"network {active.name}: {exc}")
                    if not present:  # rules for a bridge that is not there cannot load (nft) or serve
                        continue
                restorable.append(active)
            firewalled = []
            for active in [a for a in restorable if a.status.firewall]:
                try:
                    self._switch_backend(active)
                except VirtfwError as exc:
                    failures.append(f"network {active.name}: {exc}")
                    continue
                firewalled.append(active)
            intact = firewalled and not moved and self._intact(self.backend, firewalled)
            rebuilt = bool(firewalled) and not intact
            failed = self._rebuild(self.backend, firewalled) if rebuilt else []
            fate = "its rules went with the rebuild of the others'" if rebuilt else "its rules are left as they are"
            failures = [f"network {name}: {error}; {fate}" for name, error in self.unreadable.items()] + failures
            failures += failed
            for active in restorable:
                try:
                    self._restore_zone(active)
                    self._revive_dnsmasq(active)
                except VirtfwError as exc:
                    failures.append(f"network {active.name}: {exc}")
        self.links.close()
        return len(restorable) - len(failed), failures

    def _switch_backend(self, active: ActiveNetwork) -> None:
        """A network installed with another backend than the one reload uses: its rules go."""
        if active.status.backend == self.backend.name:
            return
        old = load_backend(str(active.status.backend))
        record = self._record(old, active)
        if record is not None:
            old.remove(self.runner, record)
        active.status.backend = self.backend.name
        self._save(active.status)
        self._after_removal(old, False, leaving="")

    def _intact(self, backend: AnyNetworkBackend, actives: Sequence[ActiveNetwork]) -> bool:
        """Whether the kernel holds exactly what the networks' rules are now, and nothing
        else in our chains: then reload leaves the ruleset as it is, counters and all."""
        records = []
        for active in actives:
            try:
                record = self._record(backend, active)
                matching = record is not None and backend.matches(network_rules(active.network), record)
            except VirtfwError:
                return False  # a record or definition refused: the rebuild replaces or reports it
            if not matching or not active.complete:
                return False
            records.append(record)
        base = self._base(backend)
        if base is None:
            return False
        live = backend.snapshot(self.runner)  # iptables: one *-save per family for every check below
        if backend.verify(self.runner, base, live):
            return False
        if any(backend.verify(self.runner, record, live) for record in records):
            return False
        # With an unreadable status around, its rules cannot be told from foreign ones:
        # they are left (a rebuild would take them away).
        return bool(self.unreadable) or not backend.unexpected(self.runner, records, live)

    def _restore_bridge(self, active: ActiveNetwork) -> None:
        """Bring the network's bridge back: re-create one virtfw made, take over one an admin
        re-created under the name (its addresses added, it is not deleted at destroy)."""
        status = active.status
        state = self.links.state(status.bridge)
        if state == "missing" and not status.bridge.created:
            raise VirtfwError(
                f"bridge {status.bridge.name} is gone and virtfw did not create it: "
                f"create it again, or net-destroy {active.name}"
            )
        if state == "present":  # its addresses, should one have gone
            record = dataclasses.replace(status.bridge, addresses=list(status.bridge.addresses))
        else:
            record = BridgeRecord(status.bridge.name, created=False)
            status.bridge = BridgeRecord(status.bridge.name, created=state == "missing")  # a kill leaves it findable
            self._save(status)
        try:
            self.links.bring_up(active.network, record)
        finally:
            if record != status.bridge:
                status.bridge = record
                self._save(status)

    def _revive_dnsmasq(self, active: ActiveNetwork) -> None:
        """reload also restarts a network's dnsmasq that died (verify reports it)."""
        status = active.status
        if status.dnsmasq is None:
            return
        files = dnsmasq.files_for(self.config.state_dir, active.name)
        pid = status.dnsmasq.pid
        if pid is not None and dnsmasq.is_ours(pid, files):
            return
        dnsmasq.stop(files, None, self.runner, keep_leases=True)  # the dead one's files, not its leases
        status.dnsmasq.pid = dnsmasq.start(active.network, files, self.runner)
        self._save(status)

    def _rebuild(self, backend: AnyNetworkBackend, actives: Sequence[ActiveNetwork]) -> list[str]:
        """Rebuild our chains with the rules of ``actives``: one batch; when the kernel refuses
        it, the chains alone and then each network on its own, so that one network's rule
        cannot keep the others out. The networks that failed, with why."""
        try:
            self._install_rebuilt(backend, actives, rebuild=True)
            return []
        except VirtfwError:
            pass
        self._install_rebuilt(backend, [], rebuild=True)
        failures = []
        for active in actives:
            try:
                self._install_rebuilt(backend, [active], rebuild=False)
            except VirtfwError as exc:
                failures.append(f"network {active.name}: its rules are not installed: {exc}")
        return failures

    def _install_rebuilt(self, backend: AnyNetworkBackend, actives: Sequence[ActiveNetwork], rebuild: bool) -> None:
        """Install ``actives``' rules (``rebuild``: our chains anew, holding only theirs).

        A rebuild re-creates tables, whose handles the records hold: the records the backend
        knows before it applies (an nft intent without handles, or the exact -D lines) are
        saved first, so a write that fails (a full state dir) stops the rebuild before the
        kernel changes, and a record never names handles that are gone.
        """
        rulesets = [network_rules(a.network) for a in actives]
        old_base = self._base(backend)

        def record(installed: Installed) -> None:
            self._merge_base(backend, old_base, installed.base)
            changed = []
            for active in actives:
                removal = installed.removals[active.name].to_json()
                if (active.status.firewall, active.status.state) == (removal, ACTIVE):
                    continue  # a rebuild that changes no record writes no file
                active.status.firewall = removal
                active.status.state = ACTIVE
                changed.append((active.name, active.status.to_json()))
            self.statuses.save_many(changed)  # all or none of them

        before = backend.install(self.runner, rulesets, rebuild=rebuild, before_apply=record)
        record(before)
