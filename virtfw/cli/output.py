"""Tables on a terminal (rich, imported only then), aligned text in a pipe, or JSON."""

from __future__ import annotations

import os
import sys

import click


def emit_json(data: object) -> None:
    import json  # only the --json paths pay for it

    click.echo(json.dumps(data, indent=2, sort_keys=False))


def table(headers: list[str], rows: list[list[str]]) -> None:
    """Rich's table on a terminal wide enough for every value whole; aligned plain text
    otherwise (a pipe, ``NO_COLOR``, a narrow terminal: a MAC address cut short to fit
    80 columns is worse than a line the terminal wraps)."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]
    needed = sum(widths) + 2 * len(widths)  # rich's padding: one space each side of a cell
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR") and needed <= _terminal_columns():
        from rich.console import Console
        from rich.table import Table

        grid = Table(box=None, header_style="bold")
        for header in headers:
            grid.add_column(header, no_wrap=True)
        for row in rows:
            grid.add_row(*row)
        Console().print(grid)
        return
    for row in [headers, *rows]:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def _terminal_columns() -> int:
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except OSError:
        return 80


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
