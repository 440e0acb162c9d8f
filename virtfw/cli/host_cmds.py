"""Commands about the host itself rather than networks or filters."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from virtfw.cli.output import info

if TYPE_CHECKING:
    from virtfw.cli.context import AppContext


@click.command("install-files")
@click.option("--prefix", type=click.Path(), default="/usr/local", show_default=True,
              help="Where the manual pages and shell completion go (PREFIX/share/...).")  # fmt: skip
@click.option("--unit-dir", type=click.Path(), default="/etc/systemd/system", show_default=True,
              help="Where the systemd unit goes.")  # fmt: skip
@click.pass_context
def install_files(ctx: click.Context, prefix: str, unit_dir: str) -> None:
    """Install the manual pages, the systemd unit and shell completion where the system looks."""
    from pathlib import Path

    from click.shell_completion import get_completion_class

    from virtfw import hostfiles

    app: AppContext = ctx.obj
    root = ctx.find_root().command
    completions = {}
    for shell in hostfiles.COMPLETION_FILES:
        kind = get_completion_class(shell)
        assert kind is not None  # bash, zsh and fish are click's own
        completions[shell] = kind(root, {}, "virtfw", "_VIRTFW_COMPLETE").source()
    command = hostfiles.this_command()
    files = hostfiles.host_files(Path(prefix), Path(unit_dir), command, completions)
    if app.runner.dry_run:
        for file in files:
            click.echo(f"would write {file.path} ({file.what})")
        return
    hostfiles.install(files)
    for file in files:
        info(f"installed {file.path} ({file.what})")
    info(f"the unit runs {' '.join(command)}; next: systemctl daemon-reload && systemctl enable --now virtfw")


COMMANDS = [install_files]
