"""virsh-style network commands."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from virtfw.cli import complete
from virtfw.cli.output import done, emit_json, fields, info, table
from virtfw.errors import VirtfwError

if TYPE_CHECKING:
    from pathlib import Path

    from virtfw.cli.context import AppContext
    from virtfw.net.model import Network
    from virtfw.net.status import NetworkStatus


def read_input(path: str) -> bytes:
    """An XML file named on the command line; unreadable or too large is a user error,
    not a traceback or a memory exhaustion."""
    from virtfw.xmlsafe import read_document  # lxml: only when a command needs it

    return read_document(path)


def parse_network(text: str | bytes, origin: str) -> Network:
    from virtfw.net.xml import parse_network as parse  # lxml: only when a command needs it

    return parse(text, origin)


def format_network(net: Network) -> str:
    from virtfw.net.xml import format_network as render

    return render(net)


pass_app = click.pass_obj


def _define(app: AppContext, net: Network) -> None:
    """Pick what the definition leaves to virtfw (a free bridge name) and store it, under
    the lock, so that concurrent definitions never pick the same."""
    store = app.store()
    if app.runner.dry_run:
        store.prepare(net)
    else:
        from virtfw.statefiles import locked

        with locked(app.config.state_dir, config_dir=app.config.config_dir):
            store.prepare(net)
            store.define(net)
    for why in store.unchecked.values():
        click.echo(f"warning: {why}", err=True)


@click.command("net-define")
@click.argument("file", shell_complete=complete.complete_files)
@pass_app
def net_define(app: AppContext, file: str) -> None:
    """Validate and store a persistent network definition."""
    net = parse_network(read_input(file), file)
    _define(app, net)
    done(f"Network {net.name} defined from {file}")


@click.command("net-undefine")
@click.argument("name", shell_complete=complete.complete_defined_networks)
@pass_app
def net_undefine(app: AppContext, name: str) -> None:
    """Remove a definition (refused while the network is active)."""
    store = app.store()
    store.path(name)  # validates the name
    if app.network_status().get_active(name):
        raise VirtfwError(f"network '{name}' is active: net-destroy it first")
    if not app.runner.dry_run:
        store.undefine(name)
    done(f"Network {name} has been undefined")


@click.command("net-create")
@click.argument("file", shell_complete=complete.complete_files)
@pass_app
def net_create(app: AppContext, file: str) -> None:
    """Start a transient network from FILE without defining it."""
    net = parse_network(read_input(file), file)
    store = app.store()
    if store.path(net.name) is not None:
        defined = store.load(net.name)
        if defined.uuid != net.uuid and not net.uuid_generated:
            raise VirtfwError(f"network '{net.name}' is defined with another uuid")
    if not net.bridge.name:
        taken = {a.status.bridge.name for a in app.network_status().active()}
        taken |= {other.bridge for other in store.siblings("")}  # broken ones read leniently
        store.assign_bridge(net, {t for t in taken if t})
    app.networks().start([net], transient=True)
    done(f"Network {net.name} created from {file}")


@click.command("net-start")
@click.argument("name", shell_complete=complete.complete_inactive_networks)
@pass_app
def net_start(app: AppContext, name: str) -> None:
    """Bring up the bridge and install the firewall rules of a defined network."""
    net = app.store().load(name)
    app.networks().start([net])
    done(f"Network {name} started")


@click.command("net-destroy")
@click.argument("name", shell_complete=complete.complete_active_networks)
@pass_app
def net_destroy(app: AppContext, name: str) -> None:
    """Remove exactly what net-start added."""
    app.store().path(name)  # validates the name
    app.network_status().destroy(name)
    done(f"Network {name} destroyed")


def _rows(app: AppContext, show_all: bool) -> list[dict]:
    """One row per network; one whose status or definition cannot be read is listed with
    state ``broken`` (``verify`` says why), so that it hides no other."""
    store = app.store()
    status = app.network_status()
    active = {a.name: a for a in status.active()}
    names = sorted(set(active) | set(status.unreadable) | (set(store.names()) if show_all else set()))
    rows = []
    for name in names:
        persistent = store.path(name) is not None
        row = {
            "name": name,
            "state": "active" if name in active else "broken" if name in status.unreadable else "inactive",
            "autostart": persistent and store.is_autostart(name),
            "persistent": persistent,
            "bridge": None,
            "forward": None,
        }
        try:
            net = active[name].network if name in active else None if name in status.unreadable else store.load(name)
        except VirtfwError:
            net, row["state"] = None, "broken"
        if net is not None:
            row.update(bridge=net.bridge.name, forward=net.forward.mode)
        rows.append(row)
    return rows


@click.command("net-list")
@click.option("--all", "show_all", is_flag=True, help="Include inactive networks.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def net_list(app: AppContext, show_all: bool, as_json: bool) -> None:
    """List active (or all) networks."""
    rows = _rows(app, show_all)
    if as_json:
        emit_json(rows)
        return
    yes_no = {True: "yes", False: "no"}
    table(
        ["Name", "State", "Autostart", "Persistent", "Bridge", "Forward"],
        [
            [
                r["name"],
                r["state"],
                yes_no[r["autostart"]],
                yes_no[r["persistent"]],
                r["bridge"] or "",
                r["forward"] or "",
            ]
            for r in rows
        ],
    )


def _lookup(app: AppContext, name: str) -> tuple[Network, NetworkStatus | None]:
    store = app.store()
    store.path(name)
    active = app.network_status().get_active(name)
    if active:
        return active.network, active.status
    return store.load(name), None


@click.command("net-info")
@click.argument("name", shell_complete=complete.complete_networks)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def net_info(app: AppContext, name: str, as_json: bool) -> None:
    """Details of one network."""
    net, status = _lookup(app, name)
    store = app.store()
    persistent = store.path(name) is not None
    data = {
        "name": net.name,
        "uuid": net.uuid,
        "active": status is not None,
        "persistent": persistent,
        "autostart": persistent and store.is_autostart(name),
        "bridge": net.bridge.name,
        "forward": net.forward.mode,
        "backend": status.backend if status else None,
        "addresses": [f"{ip.address}/{ip.prefix}" for ip in net.ips],
    }
    if as_json:
        emit_json(data)
        return
    yes_no = {True: "yes", False: "no"}
    fields([
        ("Name", net.name), ("UUID", net.uuid or ""), ("Active", yes_no[status is not None]),
        ("Persistent", yes_no[persistent]), ("Autostart", yes_no[bool(data["autostart"])]),
        ("Bridge", net.bridge.name or ""), ("Forward", net.forward.mode),
        ("Backend", str(data["backend"] or "-")), ("Addresses", ", ".join(f"{ip.address}/{ip.prefix}" for ip in net.ips) or "-"),
    ])  # fmt: skip


@click.command("net-dumpxml")
@click.argument("name", shell_complete=complete.complete_networks)
@click.option("--inactive", is_flag=True, help="The stored definition, not the running one.")
@pass_app
def net_dumpxml(app: AppContext, name: str, inactive: bool) -> None:
    """The network's XML."""
    if inactive:
        net = app.store().load(name)
    else:
        net, _ = _lookup(app, name)
    click.echo(format_network(net), nl=False)


@click.command("net-autostart")
@click.argument("name", shell_complete=complete.complete_defined_networks)
@click.option("--disable", is_flag=True, help="Do not start at boot.")
@pass_app
def net_autostart(app: AppContext, name: str, disable: bool) -> None:
    """Mark (or unmark) a defined network for start at boot."""
    store = app.store()
    if store.path(name) is None:
        raise VirtfwError(f"network '{name}' is not defined")
    if not app.runner.dry_run:
        store.set_autostart(name, not disable)
    done(f"Network {name} {'unmarked' if disable else 'marked'} as autostarted")


@click.command("net-edit")
@click.argument("name", shell_complete=complete.complete_defined_networks)
@pass_app
def net_edit(app: AppContext, name: str) -> None:
    """Edit a definition in $EDITOR; it is validated before it is saved."""
    store = app.store()
    original = format_network(store.load(name))
    edited = edit_text(original, name, app.config.state_dir)
    if edited == original:
        info(f"Network {name} XML configuration not changed.")
        return
    net = parse_network(edited, f"edited network '{name}'")
    if net.name != name:
        raise VirtfwError(f"the edited network is named '{net.name}'; renaming is not supported")
    _define(app, net)
    done(f"Network {name} XML configuration edited.")


def edit_text(text: str, name: str, state_dir: Path) -> str:
    """Run $VISUAL/$EDITOR (an argument vector, no shell) on a copy of ``text`` named
    ``name``.xml, in a directory of the state dir that only root (you) can enter, which
    goes with the copy once the editor is done, or failed (``statefiles.private_dir``)."""
    import re
    import shlex
    import subprocess

    from virtfw.statefiles import ensure_dir, private_dir

    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    file_name = (name if re.fullmatch(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]{0,63}", name) else "definition") + ".xml"
    edits = state_dir / "edit"
    try:
        ensure_dir(state_dir, 0o711)  # as the lock makes it: dnsmasq passes through
        with private_dir(edits) as folder:
            path = folder / file_name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            try:
                result = subprocess.run([*shlex.split(editor), str(path)], check=False)
            except OSError as exc:
                raise VirtfwError(f"cannot run editor {editor!r}: {exc.strerror}") from None
            if result.returncode != 0:
                raise VirtfwError(f"editor {editor!r} exited with status {result.returncode}; nothing changed")
            with open(path, encoding="utf-8") as edited:
                return edited.read()
    except OSError as exc:
        raise VirtfwError(f"cannot edit a copy in {edits}: {exc.strerror or exc}") from None


@click.command("autostart")
@pass_app
def autostart(app: AppContext) -> None:
    """Start every autostart network that is not active, and re-create recorded bindings (boot)."""
    store = app.store()
    status = app.network_status()
    active = {a.name for a in status.active()} | set(status.unreadable)
    failures: list[str] = []
    nets = []
    for name in store.names():
        if store.is_autostart(name) and name not in active:
            try:
                nets.append(store.load(name))
            except VirtfwError as exc:
                failures.append(f"network {name}: {exc}")
    started = _start_each(app, nets, failures)
    done(f"Started {len(started)} network(s)" + _names(started))
    manager = app.bindings(need_backend=False)
    recorded, broken = manager.recorded_each()
    failures += broken
    present = {a.portdev for a in manager.active()} | set(manager.unreadable)
    if any(b.portdev not in present for b in recorded):
        restored, failed = app.bindings().restore_recorded(recorded)
        failures += failed
        done(f"Re-created {len(restored)} filter binding(s)" + _names(restored))
    _fail_on(failures, "not started")


def _names(names: list[str], shown: int = 10) -> str:
    """': a, b, c' for a summary line; past ``shown`` names, how many more (a boot with
    1,000 bindings would otherwise print one line of 1,000 names)."""
    if not names:
        return ""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ": " + ", ".join(names[:shown]) + more


def _start_each(app: AppContext, nets: list[Network], failures: list[str]) -> list[str]:
    """Start ``nets`` in one transaction, else each on its own. The names started."""
    from virtfw.lifecycle import all_or_each

    started, failed = all_or_each(nets, app.networks().start, lambda net: f"network {net.name}")
    failures += failed
    return [net.name for net in started]


def _fail_on(failures: list[str], what: str) -> None:
    """Exit 1 with one line that names each network or binding that failed, after the rest was done."""
    if failures:
        raise VirtfwError(f"{len(failures)} {what}: " + "; ".join(failures))


@click.command("reload")
@pass_app
def reload(app: AppContext) -> None:
    """Re-install the rules of every active network and binding, idempotently."""
    count, failures = app.networks().reload()
    bindings, binding_failures = app.bindings().reload()
    done(f"Reloaded {count} network(s) and {bindings} binding(s)")
    _fail_on(failures + binding_failures, "not restored")


@click.command("net-dhcp-leases")
@click.argument("name", shell_complete=complete.complete_active_networks)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def net_dhcp_leases(app: AppContext, name: str, as_json: bool) -> None:
    """DHCP leases handed out on an active network."""
    import time

    from virtfw.net import dnsmasq

    app.store().path(name)  # validates the name
    if app.network_status().get_active(name) is None:
        raise VirtfwError(f"network '{name}' is not active")
    leases = dnsmasq.read_leases(dnsmasq.files_for(app.config.state_dir, name))
    rows = [{"expiry": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lease.expiry)) if lease.expiry else "never",
             "mac": lease.mac, "ip": lease.ip, "hostname": "" if lease.hostname == "*" else lease.hostname,
             "client_id": "" if lease.client_id == "*" else lease.client_id} for lease in leases]  # fmt: skip
    if as_json:
        emit_json(rows)
        return
    table(["Expiry Time", "MAC address", "IP address", "Hostname", "Client ID"],
          [[r["expiry"], r["mac"], r["ip"], r["hostname"] or "-", r["client_id"] or "-"] for r in rows])  # fmt: skip


@click.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def verify(app: AppContext, as_json: bool) -> None:
    """Check that everything the status files record is still in the kernel (exit 3 if not)."""
    networks, problems = app.network_status().verify()
    bindings, binding_problems = app.bindings(need_backend=False).verify()
    problems += binding_problems
    if as_json:
        emit_json({"networks": networks, "bindings": bindings, "ok": not problems, "problems": problems})
    else:
        for problem in problems:
            click.echo(problem)
        if not problems:
            info(f"OK: {networks} network(s) and {bindings} binding(s) fully in place")
        else:
            click.echo(f"{len(problems)} problem(s); each line says what puts it right", err=True)
    if problems:
        raise click.exceptions.Exit(3)


COMMANDS = [
    net_define, net_undefine, net_create, net_start, net_destroy, net_list, net_info,
    net_dumpxml, net_autostart, net_edit, net_dhcp_leases, autostart, reload, verify,
]  # fmt: skip
