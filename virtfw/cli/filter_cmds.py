"""virsh-style network filter and filter binding commands."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from virtfw.cli import complete
from virtfw.cli.net_cmds import edit_text, read_input
from virtfw.cli.output import done, emit_json, info, table
from virtfw.errors import VirtfwError

if TYPE_CHECKING:
    from virtfw.cli.context import AppContext

pass_app = click.pass_obj


def _define(app: AppContext, text: bytes | str, origin: str, expect_name: str | None = None) -> tuple[str, int]:
    """Validate a filter, refuse cycles, re-instantiate its users, then save it."""
    from virtfw.filter.bindings import define_filter
    from virtfw.filter.instantiate import check_acyclic
    from virtfw.filter.xml import parse_filter

    filt = parse_filter(text, origin)
    if expect_name and filt.name != expect_name:
        raise VirtfwError(f"the edited filter is named '{filt.name}'; renaming is not supported")
    store = app.filter_store()
    store.prepare(filt)
    store.overrides[filt.name] = filt
    check_acyclic(filt, store.load)
    manager = app.bindings(store, need_backend=False)  # bindings keep the backend they were made with
    if app.runner.dry_run:
        return filt.name, manager.reinstantiate(filt.name, manager.users_of(filt.name))
    return filt.name, define_filter(manager, filt, lambda: store.define(filt))


@click.command("nwfilter-define")
@click.argument("file", shell_complete=complete.complete_files)
@pass_app
def nwfilter_define(app: AppContext, file: str) -> None:
    """Validate and store a filter; bindings that use it are re-instantiated at once."""
    name, count = _define(app, read_input(file), file)
    done(f"Network filter {name} defined from {file}" + (f" ({count} binding(s) updated)" if count else ""))


@click.command("nwfilter-undefine")
@click.argument("name", shell_complete=complete.complete_filters)
@pass_app
def nwfilter_undefine(app: AppContext, name: str) -> None:
    """Remove a filter (refused while a binding or another filter references it)."""
    store = app.filter_store()
    store.load(name)
    referrers = store.users(name)
    if referrers:
        raise VirtfwError(f"filter '{name}' is referenced by filter(s) {', '.join(referrers)}")
    bound = app.bindings(store, need_backend=False).users_of(name)
    if bound:
        raise VirtfwError(f"filter '{name}' is in use by binding(s) on {', '.join(b.portdev for b in bound)}")
    if not app.runner.dry_run:
        store.undefine(name)
    done(f"Network filter {name} undefined")


@click.command("nwfilter-list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def nwfilter_list(app: AppContext, as_json: bool) -> None:
    """UUID and name of every filter."""
    store = app.filter_store()
    rows = [_filter_row(store, name) for name in store.names()]
    if as_json:
        emit_json(rows)
        return
    table(["UUID", "Name"], [[r["uuid"] or "(broken: nwfilter-dumpxml says why)", r["name"]] for r in rows])


def _filter_row(store, name: str) -> dict:
    """A filter whose definition cannot be read is listed with no uuid, hiding no other."""
    try:
        return {"uuid": store.load(name).uuid, "name": name, "broken": False}
    except VirtfwError:
        return {"uuid": None, "name": name, "broken": True}


@click.command("nwfilter-dumpxml")
@click.argument("name", shell_complete=complete.complete_filters)
@pass_app
def nwfilter_dumpxml(app: AppContext, name: str) -> None:
    """The filter's XML."""
    from virtfw.filter.xml import format_filter

    click.echo(format_filter(app.filter_store().load(name)), nl=False)


@click.command("nwfilter-edit")
@click.argument("name", shell_complete=complete.complete_filters)
@pass_app
def nwfilter_edit(app: AppContext, name: str) -> None:
    """Edit a filter in $EDITOR; it is validated (and its bindings updated) before saving."""
    from virtfw.filter.xml import format_filter

    original = format_filter(app.filter_store().load(name))
    edited = edit_text(original, name, app.config.state_dir)
    if edited == original:
        info(f"Network filter {name} XML configuration not changed.")
        return
    _define(app, edited, f"edited filter '{name}'", expect_name=name)
    done(f"Network filter {name} XML configuration edited.")


@click.command("nwfilter-binding-create")
@click.argument("file", shell_complete=complete.complete_files)
@pass_app
def nwfilter_binding_create(app: AppContext, file: str) -> None:
    """Attach a filter to a guest port from a <filterbinding> XML file."""
    from virtfw.filter.xml import parse_binding

    binding = parse_binding(read_input(file), file)
    app.bindings().create(binding)
    done(f"Network filter binding on {binding.portdev} created from {file}")


@click.command("nwfilter-binding-delete")
@click.argument("portdev", shell_complete=complete.complete_bindings)
@pass_app
def nwfilter_binding_delete(app: AppContext, portdev: str) -> None:
    """Remove exactly the rules of the binding on PORTDEV."""
    app.bindings(need_backend=False).delete(portdev)
    done(f"Network filter binding on {portdev} deleted")


@click.command("nwfilter-binding-list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def nwfilter_binding_list(app: AppContext, as_json: bool) -> None:
    """Active bindings: port device and filter."""
    rows = []
    manager = app.bindings(need_backend=False)
    for active in manager.active():
        binding = active.binding
        rows.append({"portdev": binding.portdev, "filter": binding.filter, "mac": binding.mac,
                     "backend": active.status.backend, "state": active.status.state})  # fmt: skip
    for portdev in manager.unreadable:  # listed so that it is seen: verify says why
        rows.append({"portdev": portdev, "filter": "(broken status)", "mac": None, "backend": None, "state": "broken"})
    rows.sort(key=lambda row: row["portdev"])
    if as_json:
        emit_json(rows)
        return
    table(["Port Dev", "Filter"], [[r["portdev"], r["filter"]] for r in rows])


@click.command("nwfilter-binding-dumpxml")
@click.argument("portdev", shell_complete=complete.complete_bindings)
@pass_app
def nwfilter_binding_dumpxml(app: AppContext, portdev: str) -> None:
    """The binding's XML."""
    active = app.bindings(need_backend=False).get(portdev)
    if active is None:
        raise VirtfwError(f"port {portdev} has no filter binding")
    click.echo(active.status.xml, nl=False)


COMMANDS = [
    nwfilter_define, nwfilter_undefine, nwfilter_list, nwfilter_dumpxml, nwfilter_edit,
    nwfilter_binding_create, nwfilter_binding_delete, nwfilter_binding_list, nwfilter_binding_dumpxml,
]  # fmt: skip
