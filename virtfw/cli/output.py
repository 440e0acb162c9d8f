"""Tables on a terminal (rich, imported only then), aligned text in a pipe, or JSON."""

from __future__ import annotations

import sys

import click


def emit_json(data: object) -> None:
    import json  # only the --json paths pay for it

    click.echo(json.dumps(data, indent=2, sort_keys=False))


def table(headers: list[str], rows: list[list[str]]) -> None:
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        grid = Table(*headers, box=None, header_style="bold")
        for row in rows:
            grid.add_row(*row)
        Console().print(grid)
        return
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]
    for row in [headers, *rows]:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def fields(pairs: list[tuple[str, str]]) -> None:
    width = max(len(key) for key, _ in pairs) + 1
    for key, value in pairs:
        click.echo(f"{key + ':':<{width}} {value}")


def info(message: str) -> None:
    ctx = click.get_current_context(silent=True)
    if ctx is None or not ctx.find_root().params.get("quiet"):
        click.echo(message)


def done(message: str) -> None:
    """What a changing command did; a dry run says that it changed nothing instead."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.find_root().params.get("dry_run"):
        info("Dry run: nothing was changed.")
    else:
        info(message)


def progress(items: list, label: str):
    """A progress bar on a terminal for long operations; the items unchanged otherwise."""
    if len(items) < 50 or not sys.stderr.isatty():
        return items
    from rich.progress import track

    return track(items, description=label, transient=True, console=_stderr_console())


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)
