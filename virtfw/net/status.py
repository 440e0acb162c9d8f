"""A network's status file, typed: what net-start brought up, so net-destroy takes down that.

The file (state dir ``networks/NAME.json``) is written before each step that changes the
host and completed after it, so a process killed at any instant leaves what the next
net-destroy needs. Read back strictly: a status file is input like any other.

JSON: ``{"name", "xml", "transient", "started", "state": "starting"|"active", "bridge":
{"name", "created", "addresses"}, "backend": NAME|null, "firewall": RECORD|null}``, and
``"dnsmasq": {"pid": PID|null}`` once a dnsmasq may be running, and ``"zone": ZONE`` once
net-start may have put the bridge in that firewalld zone (net-destroy takes it out). ``firewall`` is the
backend's removal record, which that backend reads (``NetworkBackend.load_record``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from virtfw.names import is_ifname, is_zone_name
from virtfw.net.bridge import BridgeRecord
from virtfw.rules import records

STARTING = "starting"
ACTIVE = "active"

_KEYS = {"name", "xml", "transient", "started", "state", "bridge", "backend", "firewall", "dnsmasq", "zone"}
_OPTIONAL = {"dnsmasq", "zone"}


@dataclass
class DnsmasqStatus:
    """A network's dnsmasq: its pid once it serves; None until then (found by its pid file)."""

    pid: int | None = None


@dataclass
class NetworkStatus:
    name: str
    xml: str  # the definition it was started from
    transient: bool
    started: float  # time.time() of the start: ``active()`` lists networks in start order
    state: str  # STARTING until every step is done, then ACTIVE
    bridge: BridgeRecord
    backend: str | None  # None: the network needs no firewall rules
    firewall: dict | None = None  # the backend's record, as JSON; None until the backend made one
    dnsmasq: DnsmasqStatus | None = None
    zone: str | None = None  # the firewalld zone net-start put the bridge in

    @property
    def complete(self) -> bool:
        return self.state == ACTIVE

    def to_json(self) -> dict:
        data = {
            "name": self.name,
            "xml": self.xml,
            "transient": self.transient,
            "started": self.started,
            "state": self.state,
            "bridge": self.bridge.to_json(),
            "backend": self.backend,
            "firewall": self.firewall,
        }
        if self.dnsmasq is not None:
            data["dnsmasq"] = {"pid": self.dnsmasq.pid}
        if self.zone is not None:
            data["zone"] = self.zone
        return data

    @classmethod
    def from_json(cls, data: object, where: str) -> NetworkStatus:
        fields = records.obj(data, where, _KEYS)
        missing = sorted(_KEYS - _OPTIONAL - set(fields))
        if missing:
            raise records.fail(where, f"missing key {missing[0]!r}")
        state = records.text(fields["state"], f"{where}.state")
        if state not in (STARTING, ACTIVE):
            raise records.fail(f"{where}.state", f"expected {STARTING!r} or {ACTIVE!r}")
        firewall, backend = fields["firewall"], fields["backend"]
        return cls(
            name=records.text(fields["name"], f"{where}.name"),
            xml=records.text(fields["xml"], f"{where}.xml"),
            transient=records.flag(fields["transient"], f"{where}.transient"),
            started=_number(fields["started"], f"{where}.started"),
            state=state,
            bridge=_bridge(fields["bridge"], f"{where}.bridge"),
            backend=None if backend is None else records.text(backend, f"{where}.backend"),
            firewall=None if firewall is None else records.obj(firewall, f"{where}.firewall"),
            dnsmasq=_dnsmasq(fields["dnsmasq"], f"{where}.dnsmasq") if "dnsmasq" in fields else None,
            zone=_zone(fields["zone"], f"{where}.zone") if "zone" in fields else None,
        )


def _number(data: object, where: str) -> float:
    if isinstance(data, bool) or not isinstance(data, (int, float)):
        raise records.fail(where, "expected a number")
    return data


def _bridge(data: object, where: str) -> BridgeRecord:
    fields = records.obj(data, where, {"name", "created", "addresses", "ifindex"})
    if "name" not in fields or "created" not in fields:
        raise records.fail(where, "expected name and created")
    name = records.text(fields["name"], f"{where}.name")
    if not is_ifname(name):
        raise records.fail(f"{where}.name", "expected an interface name")
    addresses = records.texts(fields.get("addresses", []), f"{where}.addresses")
    for i, address in enumerate(addresses):
        _interface_address(address, f"{where}.addresses[{i}]")
    ifindex = fields.get("ifindex")
    return BridgeRecord(
        name,
        records.flag(fields["created"], f"{where}.created"),
        addresses,
        None if ifindex is None else records.integer(ifindex, f"{where}.ifindex"),
    )


def _interface_address(text: str, where: str) -> None:
    """``ADDRESS/PREFIX`` as net-start writes it (no zone id, no host bits beyond it)."""
    try:
        ipaddress.ip_interface(text)
    except ValueError:
        raise records.fail(where, "expected ADDRESS/PREFIX") from None
    if "/" not in text or "%" in text:
        raise records.fail(where, "expected ADDRESS/PREFIX")


def _zone(data: object, where: str) -> str:
    zone = records.text(data, where)
    if not is_zone_name(zone):
        raise records.fail(where, "expected a firewalld zone name")
    return zone


def _dnsmasq(data: object, where: str) -> DnsmasqStatus:
    fields = records.obj(data, where, {"pid"})
    pid = fields.get("pid")
    return DnsmasqStatus(None if pid is None else records.integer(pid, f"{where}.pid"))
