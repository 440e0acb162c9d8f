"""Shell completion of names for bash, zsh and fish, through click's completion protocol.

Each ``complete_*`` function is a click ``shell_complete`` callable: it receives the
context of the command being completed, the parameter and the word typed so far, and
returns ``CompletionItem``s. They only list directories, so that pressing TAB stays
instant and works for anyone:

- network names: ``networks/*.xml`` in the config dir and in the shipped defaults, and
  active networks from the state dir's ``networks/*.json``;
- filter names: ``nwfilter/*.xml`` in the config dir and in the shipped defaults;
- binding port devices: the state dir's ``bindings/*.json``.

The directories are the ones the command itself would use: ``--config-dir`` and
``--state-dir`` given earlier on the command line (the root context's params), else
``VIRTFW_CONFIG_DIR`` and ``VIRTFW_STATE_DIR``, else the defaults. Nothing here
imports lxml, pyroute2 or rich, parses XML, takes the lock or runs a program, and no
error ever escapes: a completion that cannot be computed is simply empty.

Enable completion with click's own scripts, e.g. for bash::

    eval "$(_VIRTFW_COMPLETE=bash_source virtfw)"

(``zsh_source`` for zsh; ``_VIRTFW_COMPLETE=fish_source virtfw | source`` for fish).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # imported when completing only: every command would pay for it
    from pathlib import Path

    from click.shell_completion import CompletionItem

__all__ = [
    "complete_active_networks",
    "complete_bindings",
    "complete_defined_networks",
    "complete_files",
    "complete_filters",
    "complete_inactive_networks",
    "complete_networks",
]

# The names virtfw accepts for networks and filters (virtfw.names.check_object_name)
# and for port devices (check_ifname); a file whose stem does not fit is not offered.
_OBJECT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")
_IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")


# ---------------------------------------------------------------------------------
# where to look
# ---------------------------------------------------------------------------------


def _root_param(ctx: click.Context | None, name: str) -> Path | None:
    """A global option as parsed for this command line (option, then env var)."""
    if ctx is None:
        return None
    value = ctx.find_root().params.get(name)
    if value in (None, ""):
        return None
    from pathlib import Path

    return Path(os.path.expanduser(str(value)))


def _dirs(ctx: click.Context | None) -> tuple[Path, Path]:
    """The config and state dirs the command being completed would use."""
    from pathlib import Path

    config_dir = _root_param(ctx, "config_dir")
    state_dir = _root_param(ctx, "state_dir")
    # click has already applied the env vars when it parsed the root options; reading
    # them again covers a context built without them (direct calls, older clicks).
    if config_dir is None and os.environ.get("VIRTFW_CONFIG_DIR"):
        config_dir = Path(os.environ["VIRTFW_CONFIG_DIR"])
    if state_dir is None and os.environ.get("VIRTFW_STATE_DIR"):
        state_dir = Path(os.environ["VIRTFW_STATE_DIR"])
    if config_dir is None or state_dir is None:
        from virtfw.config import default_dirs  # stdlib (+ platformdirs when not root)

        default_config, default_state = default_dirs()
        config_dir = config_dir or default_config
        state_dir = state_dir or default_state
    return config_dir, state_dir


def _shipped() -> Path | None:
    try:
        from virtfw.config import shipped_dir

        return shipped_dir()
    except Exception:  # noqa: BLE001 - completion never fails
        return None


def _stems(folder: Path | None, suffix: str, pattern: re.Pattern[str]) -> set[str]:
    """Names of the ``*suffix`` files in a folder that are valid virtfw names."""
    if folder is None:
        return set()
    try:
        entries = list(folder.iterdir())
    except OSError:
        return set()
    names = set()
    for entry in entries:
        name = entry.name
        if not name.endswith(suffix) or name.startswith("."):
            continue
        stem = name[: -len(suffix)]
        if pattern.fullmatch(stem):
            names.add(stem)
    return names


def _items(names: Iterable[str], incomplete: str, helps: dict[str, str] | None = None) -> list[CompletionItem]:
    from click.shell_completion import CompletionItem

    helps = helps or {}
    return [CompletionItem(name, help=helps.get(name)) for name in sorted(set(names)) if name.startswith(incomplete)]


# ---------------------------------------------------------------------------------
# what exists
# ---------------------------------------------------------------------------------


def _defined_networks(config_dir: Path) -> set[str]:
    shipped = _shipped()
    return _stems(config_dir / "networks", ".xml", _OBJECT_NAME) | _stems(
        shipped / "networks" if shipped else None, ".xml", _OBJECT_NAME
    )


def _active_networks(state_dir: Path) -> set[str]:
    return _stems(state_dir / "networks", ".json", _OBJECT_NAME)


def _filters(config_dir: Path) -> set[str]:
    shipped = _shipped()
    return _stems(config_dir / "nwfilter", ".xml", _OBJECT_NAME) | _stems(
        shipped / "nwfilter" if shipped else None, ".xml", _OBJECT_NAME
    )


def _bindings(state_dir: Path) -> set[str]:
    return _stems(state_dir / "bindings", ".json", _IFNAME)


def _network_items(ctx: click.Context, incomplete: str, which: str) -> list[CompletionItem]:
    """``which``: "all" (defined or active), "defined", "inactive" (defined, not active)
    or "active"; each name carries "active"/"inactive" as help (shown by zsh and fish)."""
    config_dir, state_dir = _dirs(ctx)
    active = _active_networks(state_dir)
    defined = _defined_networks(config_dir) if which != "active" else set()
    names = {
        "all": defined | active,
        "defined": defined,
        "inactive": defined - active,
        "active": active,
    }[which]
    return _items(names, incomplete, {n: "active" if n in active else "inactive" for n in names})


# ---------------------------------------------------------------------------------
# the shell_complete callables
# ---------------------------------------------------------------------------------


def complete_networks(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Every network: defined (config dir and shipped) and active (state dir)."""
    try:
        return _network_items(ctx, incomplete, "all")
    except Exception:  # noqa: BLE001 - completion never fails
        return []


def complete_defined_networks(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Networks with a persistent definition (config dir and shipped)."""
    try:
        return _network_items(ctx, incomplete, "defined")
    except Exception:  # noqa: BLE001
        return []


def complete_inactive_networks(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Defined networks that are not active: what net-start can start."""
    try:
        return _network_items(ctx, incomplete, "inactive")
    except Exception:  # noqa: BLE001
        return []


def complete_active_networks(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Active networks (state dir): what net-destroy can destroy."""
    try:
        return _network_items(ctx, incomplete, "active")
    except Exception:  # noqa: BLE001
        return []


def complete_filters(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Every network filter: the config dir's nwfilter/ and the shipped filters."""
    try:
        config_dir, _ = _dirs(ctx)
        return _items(_filters(config_dir), incomplete)
    except Exception:  # noqa: BLE001
        return []


def complete_bindings(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Port devices that have an active filter binding (state dir bindings/)."""
    try:
        _, state_dir = _dirs(ctx)
        return _items(_bindings(state_dir), incomplete)
    except Exception:  # noqa: BLE001
        return []


def complete_files(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Let the shell complete file names (for the FILE of the *-define/-create commands)."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="file")]
