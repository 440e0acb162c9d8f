"""A synchronous rtnetlink socket: pyroute2's message codecs over a plain AF_NETLINK socket.

virtfw asks the kernel for a handful of link and address changes per command, one at a
time. pyroute2's ``IPRoute`` runs each through an asyncio event loop, and importing it
brings asyncio, ssl, concurrent.futures and unittest.mock along: about 65 ms of a
~230 ms ``net-start``. Only the encoding and decoding of the messages is worth a library,
so this module imports pyroute2's message classes (``ifinfmsg``, ``ifaddrmsg``) and its
``NetlinkError``, and does the send-and-wait itself.

The methods keep ``IPRoute``'s names and keywords for the subset virtfw uses
(``link_lookup``, ``get_links``, ``get_addr``, ``link``, ``addr``), so code and tests
written against either read the same. A refusal raises pyroute2's ``NetlinkError`` with
the errno and the kernel's own message (extended ack) where it gave one.
"""

from __future__ import annotations

import errno
import functools
import importlib
import importlib.util
import ipaddress
import os
import socket
import struct
import sys
from types import ModuleType
from typing import Any

NETLINK_ROUTE = 0
NETLINK_EXT_ACK = 11
SOL_NETLINK = 270

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100  # on an error: the echoed request is its header alone
NLM_F_ACK_TLVS = 0x200  # on an error: extended-ack attributes follow

NLMSG_ERROR = 2
NLMSG_DONE = 3

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22

IFF_UP = 0x1
NLMSGERR_ATTR_MSG = 1

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_ALIGN = 4


def _package_deferred(name: str) -> None:
    """Register package ``name`` without running its ``__init__`` until one of its names is asked for.

    pyroute2's ``__init__`` imports every module of the library (ndb, ipdb, conntrack, ...),
    about 45 ms of a ~200 ms ``net-start``, for the few message classes virtfw uses. The stand-in
    has the real spec and ``__path__``, so its submodules import as usual (a submodule
    asked for as an attribute, as in ``from pyroute2 import config``, is imported), and
    anything else asked of the package first runs the real ``__init__``, so other code
    in the process sees the whole package.
    """
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def attribute_of(attribute: str) -> Any:
        if not attribute.startswith("__") and importlib.util.find_spec(f"{name}.{attribute}") is not None:
            return importlib.import_module(f"{name}.{attribute}")
        del package.__dict__["__getattr__"]
        loader.exec_module(package)
        return getattr(package, attribute)

    package.__dict__["__getattr__"] = attribute_of
    sys.modules[name] = package


@functools.cache
def pyroute2_module(name: str) -> ModuleType:
    """pyroute2's module ``name``, imported without running the package's ``__init__``."""
    _package_deferred("pyroute2")
    return importlib.import_module(name)


def netlink_error() -> Any:
    """pyroute2's ``NetlinkError``: the one exception every netlink refusal is raised as."""
    return pyroute2_module("pyroute2.netlink.exceptions").NetlinkError


def _aligned(length: int) -> int:
    return (length + _ALIGN - 1) & ~(_ALIGN - 1)


def _ack_message(payload: bytes, flags: int) -> str | None:
    """The kernel's text among the extended-ack attributes of an error (``payload`` is what
    follows the error's own header: the errno, the echoed request, the attributes)."""
    if not flags & NLM_F_ACK_TLVS or len(payload) < 4 + _HEADER.size:
        return None
    offset = 4 + (_HEADER.size if flags & NLM_F_CAPPED else _aligned(_HEADER.unpack_from(payload, 4)[0]))
    while offset + 4 <= len(payload):
        length, kind = struct.unpack_from("=HH", payload, offset)
        if length < 4:
            return None
        if kind & 0x3FFF == NLMSGERR_ATTR_MSG:
            return payload[offset + 4 : offset + length].split(b"\0", 1)[0].decode(errors="replace") or None
        offset += _aligned(length)
    return None


class Netlink:
    """One NETLINK_ROUTE socket; every request waits for its answer (or its ack)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        except OSError:  # kernels before 4.12: errno alone
            pass
        self._sock.bind((0, 0))
        self._sequence = 0
        self._ifinfmsg = pyroute2_module("pyroute2.netlink.rtnl.ifinfmsg").ifinfmsg
        self._ifaddrmsg = pyroute2_module("pyroute2.netlink.rtnl.ifaddrmsg").ifaddrmsg

    def close(self) -> None:
        self._sock.close()

    # ------------------------------------------------------------------ queries

    def link_lookup(self, *, ifname: str) -> list[int]:
        """The index of the link named ``ifname`` (a one-element list, as pyroute2), or []."""
        msg = self._ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", ifname)]
        try:
            found = self._request(msg, RTM_GETLINK, 0, self._ifinfmsg)
        except netlink_error() as exc:
            if exc.code == errno.ENODEV:
                return []
            raise
        return [found[0]["index"]] if found else []

    def get_links(self, *indices: int) -> list[Any]:
        """The links at ``indices``, or every link when none is given."""
        if not indices:
            return self._request(self._ifinfmsg(), RTM_GETLINK, NLM_F_DUMP, self._ifinfmsg)
        links = []
        for index in indices:
            msg = self._ifinfmsg()
            msg["index"] = index
            links.extend(self._request(msg, RTM_GETLINK, 0, self._ifinfmsg))
        return links

    def get_addr(self, *, index: int) -> list[Any]:
        """Every address on the link at ``index``, both families."""
        found = self._request(self._ifaddrmsg(), RTM_GETADDR, NLM_F_DUMP, self._ifaddrmsg)
        return [address for address in found if address["index"] == index]

    # ------------------------------------------------------------------ changes

    def link(self, command: str, **spec: Any) -> None:
        """``add`` (``ifname``, ``kind="bridge"``, ``br_stp_state``, ``br_forward_delay``,
        ``address``), ``set`` (``index`` with ``ifalias`` and/or ``state="up"``) or ``del``
        (``index``)."""
        msg = self._ifinfmsg()
        if command == "add":
            if spec.pop("kind") != "bridge":
                raise ValueError("only bridges are created")
            msg["attrs"].append(("IFLA_IFNAME", spec.pop("ifname")))
            if "address" in spec:
                msg["attrs"].append(("IFLA_ADDRESS", spec.pop("address")))
            data = [
                ("IFLA_BR_STP_STATE", spec.pop("br_stp_state")),
                ("IFLA_BR_FORWARD_DELAY", spec.pop("br_forward_delay")),
            ]
            msg["attrs"].append(
                ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge"), ("IFLA_INFO_DATA", {"attrs": data})]})
            )
            kind, flags = RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL
        elif command == "set":
            msg["index"] = spec.pop("index")
            if "ifalias" in spec:
                msg["attrs"].append(("IFLA_IFALIAS", spec.pop("ifalias")))
            if spec.pop("state", None) == "up":
                msg["flags"], msg["change"] = IFF_UP, IFF_UP
            kind, flags = RTM_NEWLINK, 0
        elif command == "del":
            msg["index"] = spec.pop("index")
            kind, flags = RTM_DELLINK, 0
        else:
            raise ValueError(f"unknown link command {command!r}")
        if spec:
            raise TypeError(f"link {command}: unexpected {sorted(spec)}")
        self._request(msg, kind, NLM_F_ACK | flags, None)

    def addr(self, command: str, *, index: int, address: str, prefixlen: int) -> None:
        """``add`` or ``del`` ``address``/``prefixlen`` on the link at ``index``; an IPv4
        address gets its local and broadcast attributes as ``ip address add ... brd +`` sets them."""
        ip = ipaddress.ip_address(address)
        msg = self._ifaddrmsg()
        msg["family"] = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        msg["prefixlen"], msg["index"] = prefixlen, index
        msg["attrs"] = [("IFA_ADDRESS", str(ip))]
        if ip.version == 4:
            msg["attrs"].append(("IFA_LOCAL", str(ip)))
            if command == "add" and prefixlen < 31:
                network = ipaddress.ip_network(f"{ip}/{prefixlen}", strict=False)
                msg["attrs"].append(("IFA_BROADCAST", str(network.broadcast_address)))
        if command == "add":
            kind, flags = RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL
        elif command == "del":
            kind, flags = RTM_DELADDR, 0
        else:
            raise ValueError(f"unknown addr command {command!r}")
        self._request(msg, kind, NLM_F_ACK | flags, None)

    # ------------------------------------------------------------------ transport

    def _request(self, msg: Any, kind: int, flags: int, answer: Any) -> list[Any]:
        """Send ``msg`` and collect what answers it: decoded ``answer`` messages, until the
        ack, the end of a dump or the one reply of a plain get."""
        self._sequence += 1
        sequence = self._sequence
        msg["header"]["type"] = kind
        msg["header"]["flags"] = NLM_F_REQUEST | flags
        msg["header"]["sequence_number"] = sequence
        msg["header"]["pid"] = 0
        msg.encode()
        self._sock.send(msg.data)
        dump = flags & NLM_F_DUMP == NLM_F_DUMP
        found: list[Any] = []
        while True:
            data = self._sock.recv(1 << 20)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, reply, reply_flags, reply_sequence, _ = _HEADER.unpack_from(data, offset)
                if length < _HEADER.size:
                    raise OSError(errno.EBADMSG, "malformed netlink message")
                chunk = data[offset : offset + length]
                offset += _aligned(length)
                if reply_sequence != sequence:
                    continue  # a late answer to an earlier request
                if reply == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", chunk, _HEADER.size)[0]
                    if code:
                        text = _ack_message(chunk[_HEADER.size :], reply_flags) or os.strerror(code)
                        raise netlink_error()(code, text)
                    return found
                if reply == NLMSG_DONE:
                    return found
                if answer is not None:
                    decoded = answer(chunk)
                    decoded.decode()
                    found.append(decoded)
                if not dump and not reply_flags & NLM_F_MULTI and not flags & NLM_F_ACK:
                    return found
