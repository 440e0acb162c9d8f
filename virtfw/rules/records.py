"""Checks for reading typed records back from JSON.

Removal records live in status files, and a status file is input like any other: it
may have been edited, truncated or written by another version. Each record class's
``from_json`` reads its fields through these functions, which refuse a value of the
wrong type with one message naming where it was found, instead of letting a wrong
value reach a command line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from virtfw.errors import VirtfwError

T = TypeVar("T")


class RecordError(VirtfwError):
    """A record in a status file is not of the shape virtfw writes."""


def fail(where: str, what: str) -> RecordError:
    return RecordError(f"{where}: {what} (the status file was not written by this virtfw; remove it by hand)")


def obj(data: object, where: str, keys: set[str] | None = None) -> dict[str, object]:
    """A JSON object; with ``keys``, one holding no other keys."""
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise fail(where, "expected an object")
    if keys is not None:
        unknown = sorted(set(data) - keys)
        if unknown:
            raise fail(where, f"unexpected key {unknown[0]!r}")
    return data


def text(data: object, where: str) -> str:
    if not isinstance(data, str):
        raise fail(where, "expected a string")
    return data


def integer(data: object, where: str) -> int:
    if isinstance(data, bool) or not isinstance(data, int):
        raise fail(where, "expected an integer")
    return data


DIGEST_LENGTH = 16  # hex digits of a content digest (``nft``'s rules and chains, ``*-save`` chains)
_DIGEST = re.compile(f"[0-9a-f]{{{DIGEST_LENGTH}}}")


def digest(data: object, where: str) -> str:
    """A content digest: exactly DIGEST_LENGTH lower-case hex digits."""
    if not isinstance(data, str) or not _DIGEST.fullmatch(data):
        raise fail(where, f"expected a digest of {DIGEST_LENGTH} hex digits")
    return data


def flag(data: object, where: str) -> bool:
    if not isinstance(data, bool):
        raise fail(where, "expected true or false")
    return data


def items(data: object, where: str, read: Callable[[object, str], T]) -> list[T]:
    """A JSON array, each element read with ``read``."""
    if not isinstance(data, list):
        raise fail(where, "expected an array")
    return [read(value, f"{where}[{i}]") for i, value in enumerate(data)]


def texts(data: object, where: str) -> list[str]:
    if _all_texts(data):
        return list(data)  # type: ignore[call-overload]  # the common case, without a location per element
    return items(data, where, text)


def _all_texts(data: object) -> bool:
    """A list of strings only: ``str.join`` checks that in C (records hold thousands)."""
    if type(data) is not list:
        return False
    try:
        "".join(data)
    except TypeError:
        return False
    return True


def mapping(data: object, where: str, read: Callable[[object, str], T]) -> dict[str, T]:
    """A JSON object with arbitrary keys, each value read with ``read``."""
    return {key: read(value, f"{where}.{key}") for key, value in obj(data, where).items()}


def integers_by_key(data: object, where: str) -> dict[str, int]:
    """A JSON object of integers (``mapping(data, where, integer)``, fast when well formed)."""
    if isinstance(data, dict) and all(type(key) is str and type(value) is int for key, value in data.items()):
        return dict(data)
    return mapping(data, where, integer)


def texts_by_key(data: object, where: str) -> dict[str, list[str]]:
    """A JSON object of string arrays (``mapping(data, where, texts)``, fast when well formed)."""
    if isinstance(data, dict) and all(type(key) is str and _all_texts(value) for key, value in data.items()):
        return {key: list(value) for key, value in data.items()}
    return mapping(data, where, texts)
