"""A network's status file, typed (virtfw/net/status.py), and the lifecycle decision both
owner managers share (virtfw/lifecycle.py). No root, no tools."""

from __future__ import annotations

import pytest

from virtfw.lifecycle import after_removal
from virtfw.net.bridge import BridgeRecord
from virtfw.net.status import DnsmasqStatus, NetworkStatus
from virtfw.rules.records import RecordError

# As net-start writes it (the previous, untyped version wrote the same shape).
STATUS = {
    "backend": "nftables",
    "bridge": {"addresses": ["192.168.122.1/24"], "created": True, "name": "vfwbr0"},
    "dnsmasq": {"pid": 4242},
    "firewall": {
        "backend": "nftables",
        "batch": ["delete rule ip virtfw_network guest_nat handle 14"],
        "rules": {"14": "ip saddr 192.168.122.0/24 ip daddr != 192.168.122.0/24 counter masquerade"},
        "tables": {"ip": 1},
    },
    "name": "default",
    "started": 1764630000.25,
    "state": "active",
    "transient": False,
    "xml": "<network>\n  <name>default</name>\n</network>\n",
}
WHERE = "status of network 'default'"


def test_status_reads_back_what_it_writes():
    status = NetworkStatus.from_json(STATUS, WHERE)
    assert status.to_json() == STATUS
    assert status.bridge == BridgeRecord("vfwbr0", True, ["192.168.122.1/24"])
    assert status.dnsmasq == DnsmasqStatus(4242)
    assert status.complete


def test_status_of_a_start_under_way():
    starting = {**STATUS, "state": "starting", "firewall": None, "backend": None}
    del starting["dnsmasq"]
    status = NetworkStatus.from_json(starting, WHERE)
    assert status.to_json() == starting, "no dnsmasq key until a dnsmasq may run"
    assert status.dnsmasq is None and not status.complete


def test_status_with_a_firewalld_zone():
    zoned = {**STATUS, "zone": "virtfw-routed"}
    status = NetworkStatus.from_json(zoned, WHERE)
    assert status.zone == "virtfw-routed" and status.to_json() == zoned
    assert NetworkStatus.from_json(STATUS, WHERE).zone is None and "zone" not in STATUS


STATUS_REFUSED = {
    "not an object": [],
    "unknown key": {**STATUS, "pid": 1},
    "missing key": {k: v for k, v in STATUS.items() if k != "transient"},
    "unknown state": {**STATUS, "state": "running"},
    "started not a number": {**STATUS, "started": "today"},
    "started a bool": {**STATUS, "started": True},
    "bridge name not text": {**STATUS, "bridge": {"name": 1, "created": True}},
    "bridge without created": {**STATUS, "bridge": {"name": "vfwbr0"}},
    "bridge unknown key": {**STATUS, "bridge": {**STATUS["bridge"], "mtu": 1500}},
    "firewall not an object": {**STATUS, "firewall": ["delete table ip filter"]},
    "dnsmasq pid not an integer": {**STATUS, "dnsmasq": {"pid": "1"}},
    "dnsmasq unknown key": {**STATUS, "dnsmasq": {"pid": 1, "port": 53}},
    "backend not text": {**STATUS, "backend": 1},
    "zone not a zone name": {**STATUS, "zone": "public --add-service=telnet"},
    "zone not text": {**STATUS, "zone": ["virtfw"]},
    "zone empty": {**STATUS, "zone": ""},
}


@pytest.mark.parametrize("case", sorted(STATUS_REFUSED))
def test_off_shape_status_is_refused(case):
    with pytest.raises(RecordError) as raised:
        NetworkStatus.from_json(STATUS_REFUSED[case], WHERE)
    assert str(raised.value).startswith(WHERE), "the error names the file's network"


@pytest.mark.parametrize(
    "others, needs_rebuild, expected",
    [
        (["b"], True, "rebuild ['b']"),  # the removal could not run: the others are rebuilt without it
        (["b"], False, None),  # removed; the base stays for the others
        ([], True, "drop base"),  # nobody left: the base goes, and what it holds with it
        ([], False, "drop base"),
    ],
)
def test_after_removal(others, needs_rebuild, expected):
    done = []
    after_removal(
        others,
        needs_rebuild=needs_rebuild,
        rebuild=lambda users: done.append(f"rebuild {list(users)}"),
        drop_base=lambda: done.append("drop base"),
    )
    assert done == ([expected] if expected else [])
