"""Safe XML input shared by networks and filters: no DTDs, entities or network access."""

from __future__ import annotations

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


def parse(text: str | bytes, origin: str) -> etree._Element:
    """Parse XML refusing any DOCTYPE: libvirt's formats never need one, attacks do."""
    if isinstance(text, str):
        text = text.encode()
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
