"""Entry point: global options, and the one place errors become ``error:`` lines."""

from __future__ import annotations

import os
import sys

import click

from virtfw import __version__
from virtfw.errors import VirtfwError, one_line

# Commands that change or read links, the firewall or processes of the kernel: as any other
# user they could only fail half-way with a permission error from the first tool.
NEEDS_ROOT = frozenset({
    "net-start", "net-create", "net-destroy", "autostart", "reload", "verify",
    "nwfilter-binding-create", "nwfilter-binding-delete", "watch-firewalld",
})  # fmt: skip


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config-dir",
    type=click.Path(),
    envvar="VIRTFW_CONFIG_DIR",
    help="Persistent definitions (default /etc/virtfw; per-user when not root).",
)
@click.option(
    "--state-dir",
    type=click.Path(),
    envvar="VIRTFW_STATE_DIR",
    help="Runtime status and the lock (default /run/virtfw; per-user when not root).",
)
@click.option(
    "--backend",
    type=click.Choice(["nftables", "iptables"]),
    envvar="VIRTFW_BACKEND",
    help="Firewall tools to drive (default: network.conf, else nftables if present).",
)
@click.option("--dry-run", is_flag=True, help="Print the exact commands and batches; change nothing.")
@click.option("-q", "--quiet", is_flag=True, help="Print less.")
@click.option("-v", "--verbose", is_flag=True, help="Show every command run.")
@click.version_option(__version__, prog_name="virtfw")
@click.pass_context
def cli(ctx: click.Context, config_dir, state_dir, backend, dry_run, quiet, verbose) -> None:
    """Firewalled virtual networks and network filters for VMs and containers, libvirt-style."""
    # Not imported for --help: the runner pulls in subprocess, the context dataclasses,
    # pathlib (and its re, fnmatch, urllib.parse).
    from pathlib import Path

    from virtfw.cli.context import AppContext
    from virtfw.config import Config, default_dirs
    from virtfw.rules.runner import Runner
    from virtfw.statefiles import check_trusted_dir

    if ctx.invoked_subcommand in NEEDS_ROOT and os.geteuid() != 0 and not dry_run:
        raise VirtfwError(
            f"{ctx.invoked_subcommand} needs root: it changes or reads the kernel's links and firewall "
            "(--dry-run shows what it would do, without root)"
        )
    default_config, default_state = default_dirs()
    config = Config(
        Path(config_dir) if config_dir else default_config, Path(state_dir) if state_dir else default_state, backend
    )
    check_trusted_dir(config.config_dir, "config dir")
    check_trusted_dir(config.state_dir, "state dir")
    ctx.obj = AppContext(config, Runner(dry_run=dry_run, verbose=verbose and not quiet))


def _register() -> None:
    from virtfw.cli import filter_cmds, host_cmds, import_cmds, net_cmds

    for command in [*net_cmds.COMMANDS, *filter_cmds.COMMANDS, *host_cmds.COMMANDS, *import_cmds.COMMANDS]:
        cli.add_command(command)


_register()


class _QuietWhenClosed:
    """Standard output that goes quiet once its reader has gone (``virtfw ... | head``).

    Output is best-effort: a write failing half-way through a change would otherwise raise
    inside its transaction and roll back what the command was asked to do (and print
    rollback warnings about the closed pipe). Later writes go to /dev/null.
    """

    def __init__(self, stream) -> None:
        self._stream = stream
        self._gone = False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._reader_gone()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._reader_gone()

    def _reader_gone(self) -> None:
        self._gone = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())  # and what the interpreter flushes at exit
        os.close(devnull)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def main() -> None:
    sys.stdout = _QuietWhenClosed(sys.stdout)
    try:
        status = cli.main(prog_name="virtfw", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(1)
    except VirtfwError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(1)
    except OSError as exc:  # a file or device the system refused (full disk, read-only): not a bug
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"error: {where}{exc.strerror or one_line(exc)}", err=True)
        sys.exit(1)
    except Exception as exc:
        if os.environ.get("VIRTFW_DEBUG"):
            raise
        click.echo(f"error: internal error: {type(exc).__name__}: {one_line(exc)}", err=True)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)
