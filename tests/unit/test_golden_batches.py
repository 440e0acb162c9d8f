"""Golden files of the four firewall backends' exact batches, through a fake runner.

Each scenario drives one backend (``NftablesBackend``, ``IptablesBackend``,
``NftFilterBackend``, ``EbiptablesFilterBackend``) through ``tests/helpers/fakerunner.py``,
which runs nothing and answers the backend's reads from a model its batches update. The
golden file ``tests/golden/<backend>/<scenario>.txt`` holds every command of the
scenario's last step with its stdin or batch file, then the removal records (and what
``before_apply`` was handed) as JSON. A refactor that changes nothing keeps them equal.

Regenerate them all (after a change that is meant to change the batches, then review
the diff):

    VIRTFW_REGEN_GOLDEN=1 python -m pytest tests/unit/test_golden_batches.py

Without it a mismatch fails with a unified diff. No root and no firewall tool needed.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers.fakerunner import FakeRunner

from virtfw.config import Config, shipped_dir
from virtfw.filter.instantiate import binding_owner, instantiate
from virtfw.filter.model import Binding
from virtfw.filter.store import FilterStore
from virtfw.filter.xml import parse_filter
from virtfw.net.policy import network_rules
from virtfw.net.xml import parse_network
from virtfw.rules.backend import Installed, merged_base
from virtfw.rules.netrules import RuleSet
from virtfw.rules.nft.filter import NftFilterBackend
from virtfw.rules.nft.network import NftablesBackend
from virtfw.rules.portrules import PortRules
from virtfw.rules.xtables.filter import EbiptablesFilterBackend
from virtfw.rules.xtables.network import IptablesBackend

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
REGENERATE = os.environ.get("VIRTFW_REGEN_GOLDEN") == "1"
REGEN_COMMAND = "VIRTFW_REGEN_GOLDEN=1 python -m pytest tests/unit/test_golden_batches.py"

# ---- inputs ----------------------------------------------------------------------------

NETWORKS = {
    "default": (shipped_dir() / "networks" / "default.xml").read_text(),
    "routed": """<network>
  <name>routed</name>
  <bridge name="virbr1"/>
  <forward mode="route" dev="eth0"/>
  <ip address="192.168.100.1" netmask="255.255.255.0"/>
  <ip family="ipv6" address="2001:db8:ca2:2::1" prefix="64"/>
</network>""",
    "isolated": """<network>
  <name>isolated</name>
  <bridge name="virbr2"/>
  <ip address="10.10.0.1" prefix="24">
    <dhcp><range start="10.10.0.10" end="10.10.0.99"/></dhcp>
  </ip>
</network>""",
    "natrange": """<network>
  <name>natrange</name>
  <bridge name="virbr3"/>
  <forward mode="nat">
    <nat><address start="203.0.113.10" end="203.0.113.20"/><port start="2000" end="3000"/></nat>
  </forward>
  <ip address="192.168.50.1" prefix="24"/>
</network>""",
}

USER_FILTER = """<filter name="golden-user" chain="root">
  <rule action="accept" direction="in" priority="100">
    <tcp dstportstart="22"/>
  </rule>
  <rule action="accept" direction="inout" priority="200">
    <icmp/>
  </rule>
  <rule action="accept" direction="inout" priority="300">
    <mac protocolid="arp"/>
  </rule>
  <rule action="drop" direction="inout" priority="1000">
    <all/>
  </rule>
</filter>"""

PORTS = {
    "vnet0": Binding("vnet0", "52:54:00:12:34:56", "clean-traffic", {"IP": ["192.168.122.10"]}),
    "vnet1": Binding("vnet1", "52:54:00:ab:cd:ef", "golden-user"),
}


def rulesets(*names: str) -> list[RuleSet]:
    return [network_rules(parse_network(NETWORKS[name], f"{name}.xml")) for name in names]


def ports(store: FilterStore, *specs: str) -> list[PortRules]:
    """Port rules by 'PORT' (its binding above) or 'PORT=FILTER' (that filter on PORT)."""
    found = []
    for spec in specs:
        port, _, filter_name = spec.partition("=")
        binding = PORTS[port]
        if filter_name:
            binding = Binding(binding.portdev, binding.mac, filter_name, binding.params)
        found.append(instantiate(binding, store.load))
    return found


# ---- records as JSON ---------------------------------------------------------------------


def as_json(value):
    """A record as stored: ``to_json()`` where the object has it, dicts and lists inside."""
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, dict):
        return {key: as_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_json(item) for item in value]
    return value


def installed_json(installed: Installed) -> dict:
    return {"removals": as_json(installed.removals), "base": as_json(installed.base)}


# ---- scenarios ---------------------------------------------------------------------------


@dataclass
class Step:
    """One scenario's run: the backend, the runner, where its last step began, its results."""

    backend: Any
    runner: FakeRunner = field(default_factory=FakeRunner)
    mark: int = 0
    results: list[tuple[str, object]] = field(default_factory=list)

    def start(self) -> None:
        """The step the golden file shows begins here (earlier calls only set the scene)."""
        self.mark = len(self.runner.calls)

    def add(self, title: str, value: object) -> None:
        self.results.append((title, as_json(value)))


class Recorder:
    """A ``before_apply`` that keeps the records it was handed, as JSON at that moment."""

    def __init__(self) -> None:
        self.handed: list[dict] = []

    def __call__(self, installed: Installed) -> None:
        self.handed.append(json.loads(json.dumps(installed_json(installed))))


Scenario = Callable[[Step, FilterStore], None]


def install(step: Step, backend, items: list, **kwargs) -> Installed:
    """The step's one install, with its before_apply records and result in the golden file."""
    recorder = Recorder()
    installed = backend.install(step.runner, items, before_apply=recorder, **kwargs)
    step.add("handed to before_apply", recorder.handed)
    step.add("installed", installed_json(installed))
    return installed


# networks: the same scenarios for both network backends


def net_install(*names: str) -> Scenario:
    def scenario(step: Step, store: FilterStore) -> None:
        step.start()
        install(step, step.backend, rulesets(*names))

    return scenario


def _merged(old, new):
    """Two installs' base records as one (how the managers combine them)."""
    if old is None or new is None:
        return new or old
    return old.merged(new)


def net_add_second(step: Step, store: FilterStore) -> None:
    first = step.backend.install(step.runner, rulesets("default"))
    step.start()
    second = install(step, step.backend, rulesets("isolated"))
    step.add("merge_base(first, second)", _merged(first.base, second.base))


def net_rebuild(step: Step, store: FilterStore) -> None:
    step.backend.install(step.runner, rulesets("default"))
    step.backend.install(step.runner, rulesets("isolated"))
    step.start()
    install(step, step.backend, rulesets("default", "isolated"), rebuild=True)


def net_remove(step: Step, store: FilterStore) -> None:
    first = step.backend.install(step.runner, rulesets("default"))
    second = step.backend.install(step.runner, rulesets("isolated"))
    base = _merged(first.base, second.base)
    step.start()
    returned = [
        step.backend.remove(step.runner, first.removals["default"]),
        step.backend.remove(step.runner, second.removals["isolated"]),
        step.backend.remove(step.runner, base),
    ]
    step.add("returned", returned)


def net_remove_handed(step: Step, store: FilterStore) -> None:
    """What a process killed after before_apply leaves: those records are removed."""
    handed: list[Installed] = []
    step.backend.install(step.runner, rulesets("default"), before_apply=handed.append)
    intent = handed[0]
    step.start()
    returned = [step.backend.remove(step.runner, intent.removals["default"])]
    if intent.base:
        returned.append(step.backend.remove(step.runner, intent.base))
    step.add("returned", returned)


NETWORK_SCENARIOS: dict[str, Scenario] = {
    "install_default": net_install("default"),
    "install_routed": net_install("routed"),
    "install_isolated": net_install("isolated"),
    "install_nat_range": net_install("natrange"),
    "install_two_networks": net_install("default", "routed"),
    "add_second_network": net_add_second,
    "rebuild": net_rebuild,
    "remove": net_remove,
    "remove_records_handed_before_apply": net_remove_handed,
}

# filters: the same scenarios for both filter backends


def filter_install(*specs: str) -> Scenario:
    def scenario(step: Step, store: FilterStore) -> None:
        step.start()
        install(step, step.backend, ports(store, *specs))

    return scenario


def filter_replace(step: Step, store: FilterStore) -> None:
    first = step.backend.install(step.runner, ports(store, "vnet0"))
    step.start()
    owner = binding_owner("vnet0")
    install(step, step.backend, ports(store, "vnet0=golden-user"), old={owner: first.removals[owner]})


def filter_new_port(step: Step, store: FilterStore) -> None:
    """A create next to other bindings: the binding manager passes new_ports=True."""
    first = step.backend.install(step.runner, ports(store, "vnet0"))
    step.start()
    second = install(step, step.backend, ports(store, "vnet1"), new_ports=True)
    step.add("merge_base(first, second)", merged_base(first.base, second.base))


def filter_rebuild(step: Step, store: FilterStore) -> None:
    step.backend.install(step.runner, ports(store, "vnet0", "vnet1"))
    step.start()
    install(step, step.backend, ports(store, "vnet0", "vnet1"), rebuild=True)


def filter_rebuild_reuse(step: Step, store: FilterStore) -> None:
    """A reload that installs one port again from its record (nftables only)."""
    first = step.backend.install(step.runner, ports(store, "vnet0", "vnet1"))
    step.start()
    owner = binding_owner("vnet0")
    install(step, step.backend, ports(store, "vnet1"), rebuild=True, reuse={owner: first.removals[owner]})


def filter_remove(step: Step, store: FilterStore) -> None:
    installed = step.backend.install(step.runner, ports(store, "vnet0", "vnet1"))
    step.start()
    returned = [step.backend.remove(step.runner, installed.removals[binding_owner(p)]) for p in ("vnet0", "vnet1")]
    returned.append(step.backend.remove(step.runner, installed.base))
    step.add("returned", returned)


FILTER_SCENARIOS: dict[str, Scenario] = {
    "install_clean_traffic": filter_install("vnet0"),
    "install_user_filter": filter_install("vnet1"),
    "install_two_ports": filter_install("vnet0", "vnet1"),
    "replace": filter_replace,
    "new_port_next_to_others": filter_new_port,
    "rebuild": filter_rebuild,
    "remove": filter_remove,
}

BACKENDS = {
    "nft-network": (NftablesBackend, NETWORK_SCENARIOS),
    "iptables-network": (IptablesBackend, NETWORK_SCENARIOS),
    "nft-filter": (NftFilterBackend, {**FILTER_SCENARIOS, "rebuild_reuse": filter_rebuild_reuse}),
    "ebiptables-filter": (EbiptablesFilterBackend, FILTER_SCENARIOS),
}
CASES = [(backend, name) for backend, (_, scenarios) in BACKENDS.items() for name in scenarios]


# ---- the golden files ------------------------------------------------------------------


def render(backend: str, scenario: str, step: Step) -> str:
    cls = BACKENDS[backend][0]
    out = [
        f"# {cls.__name__} ({cls.__module__}), scenario {scenario}: the commands of its last step.",
        f"# '$' a change, '?' a read; '| ' the stdin or batch file. Regenerate: {REGEN_COMMAND}",
        "",
        "## commands",
        step.runner.transcript(since=step.mark) or "(none)",
    ]
    for title, value in step.results:
        out += ["", f"## {title}", json.dumps(value, indent=2, sort_keys=True)]
    return "\n".join(out) + "\n"


def check_golden(path: Path, text: str) -> None:
    __tracebackhide__ = True  # the diff says it all
    if REGENERATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    if not path.is_file():
        pytest.fail(f"{path} does not exist; create it with: {REGEN_COMMAND}")
    expected = path.read_text()
    if text != expected:
        diff = difflib.unified_diff(
            expected.splitlines(keepends=True), text.splitlines(keepends=True), f"{path} (golden)", "now"
        )
        pytest.fail(f"the batches differ from the golden file (if meant: {REGEN_COMMAND}):\n" + "".join(diff))


@pytest.fixture
def store(tmp_path: Path) -> FilterStore:
    store = FilterStore(Config(tmp_path / "etc", tmp_path / "run"))
    store.overrides["golden-user"] = parse_filter(USER_FILTER, "golden-user.xml")
    return store


@pytest.mark.parametrize(("backend", "scenario"), CASES, ids=[f"{b}/{s}" for b, s in CASES])
def test_batches_match_golden_file(backend: str, scenario: str, store: FilterStore, monkeypatch) -> None:
    # The xtables backends look for nft on PATH before asking which tables will appear.
    monkeypatch.setattr(shutil, "which", lambda tool, *args, **kwargs: f"/usr/sbin/{tool}")
    cls, scenarios = BACKENDS[backend]
    step = Step(cls())
    scenarios[scenario](step, store)
    check_golden(GOLDEN / backend / f"{scenario}.txt", render(backend, scenario, step))


def test_every_golden_file_belongs_to_a_scenario() -> None:
    """A scenario renamed or dropped leaves no stale golden file behind."""
    expected = {GOLDEN / backend / f"{scenario}.txt" for backend, scenario in CASES}
    found = set(GOLDEN.glob("*/*.txt"))
    assert found - expected == set(), f"stale golden files; remove them: {sorted(map(str, found - expected))}"


def test_the_fake_runner_refuses_what_it_does_not_model() -> None:
    """No real tool behind the golden files: an unknown command is an error, not a run."""
    from helpers.fakerunner import UnexpectedCommand

    runner = FakeRunner()
    with pytest.raises(UnexpectedCommand):
        runner.run(["ip", "link", "show"], change=False)
    with pytest.raises(UnexpectedCommand):
        runner.run(["nft", "-f", "-"], stdin="add flowtable ip t f\n")
    assert runner.calls == []
