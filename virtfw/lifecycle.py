"""Decisions every owner manager (networks, filter bindings) takes alike about its backend's
shared base: which record holds it after an install, and what a removal leaves to do."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from virtfw.rules.backend import BaseRecord

B = TypeVar("B", bound="BaseRecord")
T = TypeVar("T")


def combined_base(recorded: B | None, created: B | None) -> B | None:
    """The base record after an install: the one on file with what the install created."""
    if recorded is None or created is None:
        return created if created is not None else recorded
    return recorded.merged(created)


def after_removal(
    others: Sequence[T],
    *,
    needs_rebuild: bool,
    rebuild: Callable[[Sequence[T]], None],
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
