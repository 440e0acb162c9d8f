"""A transaction: steps register how to undo themselves; a failure undoes them all."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Literal, final


@final
class Transaction:
    """Use as a context manager; on an exception every undo runs, newest first.

    Undo errors are reported and skipped so one stuck step cannot keep the others
    in place; the original exception is what the caller sees.
    """

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], object]]] = []

    def on_rollback(self, what: str, undo: Callable[[], object]) -> None:
        self._undo.append((what, undo))

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> Literal[False]:
        if exc_type is not None:
            self.rollback()
        return False

    def rollback(self) -> None:
        while self._undo:
            what, undo = self._undo.pop()
            try:
                undo()
            except Exception as error:  # noqa: BLE001 - keep undoing the rest
                print(f"warning: rollback of {what} failed: {error}", file=sys.stderr)
