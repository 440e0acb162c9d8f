"""Which firewalld zone a network's bridge goes in (``net.policy.zone_choices``) and how
``rules.firewalld`` asks firewalld for it, through a scripted ``firewall-cmd``."""

from __future__ import annotations

import pytest

from virtfw.errors import VirtfwError
from virtfw.net.policy import zone_choices
from virtfw.net.xml import parse_network
from virtfw.rules import firewalld
from virtfw.rules.firewalld import Firewalld
from virtfw.rules.runner import Result, Runner


def network(forward: str, zone: str | None = None) -> object:
    zone_attr = f" zone='{zone}'" if zone else ""
    return parse_network(
        f"<network><name>n</name><bridge name='vb0'{zone_attr}/>{forward}<ip address='10.9.0.1' prefix='24'/></network>"
    )


class Scripted(Runner):
    """Answers firewall-cmd from ``answers`` (args -> (status, stdout)); records every call."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str]]) -> None:
        super().__init__()
        self.answers = answers

    def run(self, argv, *, stdin=None, change=True, check=True, quiet=False) -> Result:  # type: ignore[override]
        self.log.append(argv)
        assert argv[0] == "firewall-cmd"
        status, out = self.answers.get(tuple(argv[1:]), (0, "success\n"))
        return Result(status, out, "")


RUNNING = {("--state",): (0, "running\n"), ("--get-zones",): (0, "block drop public trusted virtfw virtfw-routed\n")}


@pytest.fixture
def on_path(monkeypatch):
    monkeypatch.setattr(firewalld, "find_tool", lambda tool: f"/usr/bin/{tool}")


def test_zone_choices_follow_libvirt() -> None:
    assert zone_choices(network("<forward mode='nat'/>")) == ([("virtfw", None)], False)
    assert zone_choices(network("")) == ([("virtfw", None)], False)  # isolated
    assert zone_choices(network("<forward mode='route'/>")) == (
        [("virtfw-routed", "virtfw-routed-out"), ("virtfw", None)],
        False,
    )
    assert zone_choices(network("<forward mode='open'/>")) == ([], False)
    assert zone_choices(network("<forward mode='open'/>", "trusted")) == ([("trusted", None)], True)


def test_without_firewall_cmd_nothing_is_asked(monkeypatch) -> None:
    monkeypatch.setattr(firewalld, "find_tool", lambda tool: None)
    runner = Scripted({})
    assert Firewalld(runner).pick_zone([("virtfw", None)], False, "network 'n'") is None
    assert runner.log == []
    with pytest.raises(VirtfwError, match="needs firewalld, which is not running"):
        Firewalld(runner).pick_zone([("trusted", None)], True, "network 'n'")


def test_routed_zone_only_with_its_policy(on_path) -> None:
    choices, explicit = zone_choices(network("<forward mode='route'/>"))
    with_policy = Scripted({**RUNNING, ("--get-policies",): (0, "allow-host-ipv6 virtfw-routed-out\n")})
    assert Firewalld(with_policy).pick_zone(choices, explicit, "n") == "virtfw-routed"
    without = Scripted({**RUNNING, ("--get-policies",): (0, "allow-host-ipv6\n")})
    assert Firewalld(without).pick_zone(choices, explicit, "n") == "virtfw"


def test_a_missing_zone_is_refused_with_the_way_out(on_path) -> None:
    runner = Scripted({**RUNNING, ("--get-zones",): (0, "public trusted\n")})
    with pytest.raises(VirtfwError, match="no zone 'virtfw': virtfw install-files .* firewall-cmd --reload"):
        Firewalld(runner).pick_zone([("virtfw", None)], False, "network 'n'")
    with pytest.raises(VirtfwError, match="no zone 'work'"):
        Firewalld(runner).pick_zone([("work", None)], True, "network 'n'")


def test_firewalld_is_asked_once_per_command(on_path) -> None:
    runner = Scripted(RUNNING)
    fw = Firewalld(runner)
    for _ in range(3):
        assert fw.pick_zone([("virtfw", None)], False, "n") == "virtfw"
    assert runner.log == [["firewall-cmd", "--state"], ["firewall-cmd", "--get-zones"]]


def test_only_our_binding_is_taken_out(on_path) -> None:
    moved = Scripted({**RUNNING, ("--get-zone-of-interface=vb0",): (0, "public\n")})
    assert not Firewalld(moved).take_out_of_zone("vb0", "virtfw")
    assert ["firewall-cmd", "--zone=virtfw", "--remove-interface=vb0"] not in moved.log
    ours = Scripted({**RUNNING, ("--get-zone-of-interface=vb0",): (0, "virtfw\n")})
    assert Firewalld(ours).take_out_of_zone("vb0", "virtfw")
    assert ours.log[-1] == ["firewall-cmd", "--zone=virtfw", "--remove-interface=vb0"]
