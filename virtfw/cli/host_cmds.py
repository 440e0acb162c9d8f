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
@click.option("--firewalld-dir", type=click.Path(), default="/etc/firewalld", show_default=True,
              help="firewalld's configuration: virtfw's zones and policies go in it, where it exists.")  # fmt: skip
@click.pass_context
def install_files(ctx: click.Context, prefix: str, unit_dir: str, firewalld_dir: str) -> None:
    """Install the manual pages, the systemd unit, shell completion and (where firewalld is
    installed) virtfw's firewalld zones where the system looks."""
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
    zones_to = Path(firewalld_dir) if Path(firewalld_dir).is_dir() else None
    files = hostfiles.host_files(Path(prefix), Path(unit_dir), command, completions, zones_to)
    if app.runner.dry_run:
        for file in files:
            click.echo(f"would write {file.path} ({file.what})")
        return
    hostfiles.install(files)
    for file in files:
        info(f"installed {file.path} ({file.what})")
    info(f"the unit runs {' '.join(command)}; next: systemctl daemon-reload && systemctl enable --now virtfw")
    if zones_to is not None:
        info("firewalld loads virtfw's zones on its next reload: firewall-cmd --reload")


@click.command("watch-firewalld")
@click.pass_context
def watch_firewalld(ctx: click.Context) -> None:
    """Run virtfw reload whenever firewalld reloads or restarts (runs until killed; the
    unit virtfw-firewalld.service runs it)."""
    from virtfw import firewalld_watch, hostfiles

    app: AppContext = ctx.obj
    options = ["--config-dir", str(app.config.config_dir), "--state-dir", str(app.config.state_dir)]
    if app.config.backend_override:
        options += ["--backend", app.config.backend_override]
    firewalld_watch.main([*hostfiles.this_command(), *options, "reload"], info)


COMMANDS = [install_files, watch_firewalld]
