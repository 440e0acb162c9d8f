"""Validation of every name that can reach a firewall command or a file path."""

from __future__ import annotations

import re

from virtfw.errors import VirtfwError

# Linux allows almost any byte in an interface name; we allow the set that is safe
# in nft and iptables syntax, shell-free argv, and file names alike.
_IFNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
_OBJECT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
# firewalld's own rule for a zone's name (letters, digits, '_', '-'; its limit of 17
# characters, which its iptables chain names need), without the '/' of its old sub-zones.
_ZONE = re.compile(r"^[A-Za-z0-9_-]{1,17}$")
ZONE_NAME_RULE = "1-17 characters: letters, digits, '_', '-'"


def is_ifname(name: str) -> bool:
    return bool(_IFNAME.fullmatch(name)) and name not in (".", "..")


def check_ifname(name: str, what: str = "interface name") -> str:
    if not is_ifname(name):
        raise VirtfwError(
            f"{what} {name!r} is not a valid interface name (1-15 characters: letters, digits, '_', '.', '-')"
        )
    return name


def check_object_name(name: str, what: str = "name") -> str:
    if not _OBJECT.fullmatch(name):
        raise VirtfwError(
            f"{what} {name!r} is not allowed "
            "(1-64 characters: letters, digits, '_', '.', '+', '-'; not starting with '.', '+' or '-')"
        )
    return name


def is_zone_name(name: str) -> bool:
    return bool(_ZONE.fullmatch(name))


def check_mac(mac: str, what: str = "MAC address") -> str:
    if not _MAC.fullmatch(mac):
        raise VirtfwError(f"{what} {mac!r} is not of the form aa:bb:cc:dd:ee:ff")
    return mac.lower()


def check_hostname(name: str, what: str = "host name") -> str:
    """DNS names end up in dnsmasq's files: letters, digits, '-' and dots only."""
    if not _HOSTNAME.fullmatch(name):
        raise VirtfwError(f"{what} {name!r} is not a valid DNS name (letters, digits, '-', dot-separated labels)")
    return name


# What ends or splits a line of dnsmasq's configuration, starts a comment or a quoted
# part there, or separates its fields: a value holding one would write configuration
# of its own (a newline and 'dhcp-script=' runs a program as root).
_CONF_UNSAFE = re.compile(r'[\x00-\x1f\x7f,#"\\]')


def check_conf_value(value: str, what: str) -> str:
    """A free-form value (a path, a file name) that is written into a dnsmasq option."""
    if not value or _CONF_UNSAFE.search(value) or value != value.strip():
        raise VirtfwError(
            f"{what} {value!r} is not allowed in dnsmasq's configuration "
            "(no control characters, ',', '#', '\"', '\\', or blanks at either end)"
        )
    return value


def check_absolute_path(value: str, what: str) -> str:
    check_conf_value(value, what)
    if not value.startswith("/") or "/../" in f"{value}/":
        raise VirtfwError(f"{what} {value!r} must be an absolute path without '..'")
    return value
