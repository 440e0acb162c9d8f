"""The few rtnetlink requests a network's bridge needs, spoken with the standard library.

pyroute2 did this before, but importing it costs ~100 ms per command (its package
imports ipdb, ndb and asyncio whatever submodule is asked for), several times the work
itself. The requests below are the ones pyroute2's ``IPRoute`` sent for the same calls
(same message types, flags and attributes; errors carry the kernel's errno and
``os.strerror`` of it, as pyroute2's ``NetlinkError`` did without extended acks).
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

# linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
NLA_F_NESTED, NLA_TYPE_MASK = 0x8000, 0x3FFF
IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINKINFO = 1, 3, 18
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_BR_FORWARD_DELAY, IFLA_BR_STP_STATE = 1, 5
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP = 0x1

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_ATTR = struct.Struct("=HH")  # rtattr: length, type
CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
REQUEST = NLM_F_REQUEST | NLM_F_ACK


class NetlinkError(Exception):
    """A request the kernel refused: ``args`` is ``(errno, strerror)`` as with pyroute2."""

    def __init__(self, code: int, msg: str | None = None) -> None:
        super().__init__(code, msg or os.strerror(code))
        self.code = code


def attr(kind: int, payload: bytes) -> bytes:
    """One rtattr, padded to 4 bytes."""
    data = _ATTR.pack(_ATTR.size + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def asciiz(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def parse_attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """Attribute type -> payload (the first of each type; nesting flags dropped)."""
    found: dict[int, bytes] = {}
    while offset + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size:
            break
        found.setdefault(kind & NLA_TYPE_MASK, data[offset + _ATTR.size : offset + length])
        offset += (length + 3) & ~3
    return found


def ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


def address_family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


@dataclass(frozen=True)
class Address:
    """One interface address from a dump: what pyroute2's get_addr gave as IFA_ADDRESS/prefixlen."""

    index: int
    address: str | None
    prefixlen: int


class RouteSocket:
    """One NETLINK_ROUTE socket; each request waits for its acknowledgement (or dump end)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.sequence = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one message; the (type, payload) replies to it. A refusal raises NetlinkError."""
        self.sequence += 1
        self.sock.send(_HEADER.pack(_HEADER.size + len(body), kind, flags, self.sequence, 0) + body)
        replies: list[tuple[int, bytes]] = []
        while True:  # every request here asks for an ack or is a dump: both have an end
            for reply, payload in self._receive():
                if reply == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise NetlinkError(code)
                    return replies
                if reply == NLMSG_DONE:
                    return replies
                replies.append((reply, payload))

    def _receive(self) -> Iterator[tuple[int, bytes]]:
        data = self.sock.recv(1 << 16)
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, _flags, sequence, _port = _HEADER.unpack_from(data, offset)
            if length < _HEADER.size:
                break
            if sequence == self.sequence:
                yield kind, data[offset + _HEADER.size : offset + length]
            offset += (length + 3) & ~3

    # ---- links --------------------------------------------------------------

    def link_index(self, name: str) -> int | None:
        """The index of link ``name``; None when there is none (or the name is refused)."""
        try:
            replies = self.request(RTM_GETLINK, REQUEST, ifinfo() + asciiz(IFLA_IFNAME, name))
        except NetlinkError:
            return None
        for kind, payload in replies:
            if kind == RTM_NEWLINK:
                return _IFINFO.unpack_from(payload)[2]
        return None

    def link_kind(self, index: int) -> str | None:
        """IFLA_INFO_KIND of a link ("bridge", "veth", ...); None for plain devices."""
        for kind, payload in self.request(RTM_GETLINK, REQUEST, ifinfo(index)):
            if kind != RTM_NEWLINK:
                continue
            info = parse_attrs(payload, _IFINFO.size).get(IFLA_LINKINFO)
            found = parse_attrs(info).get(IFLA_INFO_KIND) if info is not None else None
            return found.rstrip(b"\0").decode() if found is not None else None
        return None

    def add_bridge(self, name: str, stp_state: int, forward_delay: int, mac: str | None) -> None:
        attrs = [asciiz(IFLA_IFNAME, name)]
        if mac:
            attrs.append(attr(IFLA_ADDRESS, bytes.fromhex(mac.replace(":", ""))))
        data = nested(IFLA_INFO_DATA, u32(IFLA_BR_FORWARD_DELAY, forward_delay), u32(IFLA_BR_STP_STATE, stp_state))
        attrs.append(nested(IFLA_LINKINFO, asciiz(IFLA_INFO_KIND, "bridge"), data))
        self.request(RTM_NEWLINK, CREATE, ifinfo() + b"".join(attrs))

    def set_up(self, index: int) -> None:
        self.request(RTM_NEWLINK, REQUEST, ifinfo(index, IFF_UP, IFF_UP))

    def delete_link(self, index: int) -> None:
        self.request(RTM_DELLINK, REQUEST, ifinfo(index))

    # ---- addresses ----------------------------------------------------------

    def addresses(self, index: int) -> list[Address]:
        """Every address of link ``index`` (IPv4 and IPv6)."""
        found = []
        body = _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        for kind, payload in self.request(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, body):
            if kind != RTM_NEWADDR:
                continue
            family, prefixlen, _flags, _scope, link = _IFADDR.unpack_from(payload)
            if link != index:
                continue
            raw = parse_attrs(payload, _IFADDR.size).get(IFA_ADDRESS)
            inet = raw is not None and family in (socket.AF_INET, socket.AF_INET6)
            found.append(Address(link, socket.inet_ntop(family, raw) if raw is not None and inet else None, prefixlen))
        return found

    def add_address(self, index: int, address: str, prefixlen: int) -> None:
        self.request(RTM_NEWADDR, CREATE, self._address_body(index, address, prefixlen))

    def delete_address(self, index: int, address: str, prefixlen: int) -> None:
        self.request(RTM_DELADDR, REQUEST, self._address_body(index, address, prefixlen))

    @staticmethod
    def _address_body(index: int, address: str, prefixlen: int) -> bytes:
        """IFA_ADDRESS, and for IPv4 IFA_LOCAL too (the kernel's primary key for IPv4)."""
        family = address_family(address)
        packed = socket.inet_pton(family, address)
        body = _IFADDR.pack(family, prefixlen, 0, 0, index) + attr(IFA_ADDRESS, packed)
        if family == socket.AF_INET:
            body += attr(IFA_LOCAL, packed)
        return body
