"""Safe XML input shared by networks and filters: no DTDs, entities or network access."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import overload

from lxml import etree

from virtfw.errors import VirtfwError

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
)


# The largest network, filter or binding document accepted: libvirt's remote protocol
# carries no string (so no XML document) longer than 4 MiB, and virsh reads XML files of
# at most 10 MiB. A network with 50,000 DHCP hosts fits; lxml's own limits (huge_tree
# off: nesting depth, text node size) apply inside it.
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024


def parse(text: str | bytes, origin: str) -> etree._Element:
    """Parse XML refusing any DOCTYPE (libvirt's formats never need one, attacks do) and
    any document larger than ``MAX_DOCUMENT_BYTES``, before lxml sees it."""
    if isinstance(text, str):
        text = text.encode()
    if len(text) > MAX_DOCUMENT_BYTES:
        raise VirtfwError(f"{origin}: {too_large(len(text))}")
    if b"<!DOCTYPE" in text or b"<!ENTITY" in text:
        raise VirtfwError(f"{origin}: DOCTYPE and entity declarations are not allowed")
    try:
        tree = etree.fromstring(text, _PARSER).getroottree()
    except etree.XMLSyntaxError as exc:
        raise VirtfwError(f"{origin}: malformed XML: {exc}") from None
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise VirtfwError(f"{origin}: DOCTYPE and entity declarations are not allowed")
    root = tree.getroot()
    for node in root.iter():
        if not isinstance(node.tag, str):  # an unresolved entity reference
            raise VirtfwError(f"{origin}: entity references are not allowed")
    return root


def too_large(size: int | None = None) -> str:
    figure = f" ({size:,} bytes)" if size is not None else ""
    return (
        f"the document is larger{figure} than the {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB "
        "an XML definition may have; split it or remove unused parts"
    )


def read_document(path: str | Path, *, regular_only: bool = False) -> bytes:
    """A file named on the command line, read up to one byte past ``MAX_DOCUMENT_BYTES``:
    a huge file (or /dev/zero) is refused without being read into memory.

    With ``regular_only`` (files found in a directory someone else may control), the last
    component is not followed if it is a symbolic link, and what was opened must be a regular
    file (a FIFO would block for ever): both checked on the open descriptor, not by name."""
    try:
        if regular_only:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise VirtfwError(f"{path} is not a regular file")
            handle = os.fdopen(fd, "rb")
        else:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
        with handle:
            data = handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise VirtfwError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise VirtfwError(f"{path}: {too_large()}")
    return data


def describe(element: etree._Element) -> str:
    """``<ip address='...'>``-style locator used in validation messages."""
    attrs = " ".join(f"{k}='{v}'" for k, v in list(element.attrib.items())[:2])
    return f"<{element.tag}{' ' + attrs if attrs else ''}>"


class Reader:
    """Reads one element's attributes with precise error messages."""

    def __init__(self, origin: str, element: etree._Element) -> None:
        self.origin = origin
        self.element = element

    def fail(self, why: str) -> VirtfwError:
        return VirtfwError(f"{self.origin}: {describe(self.element)}: {why}")

    def check_known(self, attributes: tuple[str, ...], children: tuple[str, ...] = ()) -> None:
        for name in self.element.attrib:
            if name not in attributes:
                raise self.fail(f"unknown attribute '{name}'")
        for child in self.element:
            if child.tag not in children:
                raise self.unknown_child(child)

    def unknown_child(self, child: etree._Element) -> VirtfwError:
        return VirtfwError(f"{self.origin}: unknown element <{child.tag}> in <{self.element.tag}>")

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self.element.get(name)
        return default if value is None else value.strip()

    def require(self, name: str) -> str:
        value = self.get(name)
        if not value:
            raise self.fail(f"attribute '{name}' is required")
        return value

    def yes_no(self, name: str, default: bool, true: str = "yes", false: str = "no") -> bool:
        value = self.get(name)
        if value is None:
            return default
        if value not in (true, false):
            raise self.fail(f"attribute '{name}': '{value}' must be '{true}' or '{false}'")
        return value == true

    @overload
    def integer(self, name: str, low: int, high: int, default: int) -> int: ...

    @overload
    def integer(self, name: str, low: int, high: int, default: None = None) -> int | None: ...

    def integer(self, name: str, low: int, high: int, default: int | None = None) -> int | None:
        value = self.get(name)
        if value is None:
            return default
        try:
            number = int(value, 10)
        except ValueError:
            raise self.fail(f"attribute '{name}': '{value}' is not an integer") from None
        if not low <= number <= high:
            raise self.fail(f"attribute '{name}': {number} is outside {low}..{high}")
        return number
