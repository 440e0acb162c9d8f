"""What every owner manager (networks, filter bindings) decides alike once an owner's
rules are removed. (Which base record holds after an install: ``rules.backend.merged_base``.)"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from virtfw.errors import VirtfwError

T = TypeVar("T")

# What verify says fixes a finding that a reload repairs (rules missing or changed).
REINSTALLS = "virtfw reload re-installs it"


def all_or_each(
    items: Sequence[T], do: Callable[[list[T]], object], name: Callable[[T], str]
) -> tuple[list[T], list[str]]:
    """Do ``items`` in one go (one batch: the fast path); when that fails, each on its own,
    so that one that cannot be done keeps none of the others out. What was done, and a
    line ``NAME: why`` for each that failed."""
    if not items:
        return [], []
    try:
        do(list(items))
        return list(items), []
    except VirtfwError as exc:
        if len(items) == 1:
            return [], [f"{name(items[0])}: {exc}"]
    done, failures = [], []
    for item in items:
        try:
            do([item])
            done.append(item)
        except VirtfwError as exc:
            failures.append(f"{name(item)}: {exc}")
    return done, failures


def after_removal(
    others: Sequence[T],
    *,
    needs_rebuild: bool,
    rebuild: Callable[[Sequence[T]], Any],  # what it returns (the owners it could not restore) is verify's to report
    drop_base: Callable[[], None],
) -> None:
    """After one owner's rules were removed: ``others`` are the owners of the same backend
    that still have rules. When the removal could not run as recorded (``needs_rebuild``,
    e.g. an nft intent without handles), rebuilding them takes the owner's rules away;
    when none is left, the shared base goes (``drop_base``, which copes with there being none).
    """
    if others and needs_rebuild:
        rebuild(others)
    elif not others:
        drop_base()
