"""``import-libvirt``: move a libvirt host's network and filter definitions over."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from virtfw.cli.output import emit_json, info
from virtfw.errors import VirtfwError

if TYPE_CHECKING:
    from virtfw.cli.context import AppContext


@click.command("import-libvirt")
@click.option(
    "--from",
    "source",
    default="/etc/libvirt",
    show_default=True,
    type=click.Path(file_okay=False),
    help="libvirt's config dir: qemu/networks/ (and autostart/) and nwfilter/.",
)
@click.option("--json", "as_json", is_flag=True,
              help="The report as JSON on stdout (items, counts, warnings); refusals still exit 1.")  # fmt: skip
@click.pass_obj
def import_libvirt(app: AppContext, source: str, as_json: bool) -> None:
    """Import libvirt's networks, autostart marks and own filters, each as net-define and nwfilter-define would."""
    from pathlib import Path

    from virtfw.importer import OUTCOMES, REFUSED, LibvirtImport

    run = LibvirtImport(app.config, Path(source), dry_run=app.runner.dry_run)
    items = run.run()
    counts = {outcome: sum(1 for item in items if item.outcome == outcome) for outcome in OUTCOMES}
    refused = [f"{item.kind} {item.name}" for item in items if item.outcome == REFUSED]
    if as_json:
        rows = [{"kind": i.kind, "name": i.name, "outcome": i.outcome, "why": i.why} for i in items]
        emit_json({"items": rows, "counts": counts, "warnings": run.warnings, "dry_run": app.runner.dry_run})
    else:
        _report(app, items, run.warnings, counts)
    if refused:
        raise VirtfwError(f"{len(refused)} definition(s) refused: {', '.join(refused)} (the lines above say why)")


def _report(app: AppContext, items: list, warnings: list[str], counts: dict[str, int]) -> None:
    from virtfw.importer import REFUSED

    for why in warnings:
        click.echo(f"warning: {why}", err=True)
    for item in items:
        if item.outcome == REFUSED:
            click.echo(item.line())
        else:
            info(item.line())
    info(", ".join(f"{count} {outcome}" for outcome, count in counts.items()))
    if app.runner.dry_run:
        info("Dry run: nothing was changed.")


COMMANDS = [import_libvirt]
