"""The standard network filters virtfw ships in etc/nwfilter.

Existing libvirt domain and binding configs reference these filters by name, so
what must not drift is: the set of names, each filter's chain and chain
priority, the variables it expects ($MAC, $IP, $IPV6, $DHCPSERVER,
$GATEWAY_MAC) and its effect.  Checked here:

- static: one well-formed <filter> per file, named after the file, with its own
  uuid; every filterref resolves to a shipped filter and the references form a
  DAG; chains, priorities and variables are the compatible ones; and, when
  libvirt's reference data is present (../shared/libvirt-testdata), every filter
  has the same rules as libvirt's, after normalizing what does not change the
  meaning (comments, uuid, layout, attribute order, address spelling, defaults);
- through the CLI: each file is accepted by ``nwfilter-define``, ``nwfilter-list``
  shows every shipped filter without any define, ``nwfilter-dumpxml`` returns it.

That each instantiates on a port, on both backends, is tested in a namespace in
``tests/netns/test_shipped_filters_bind.py``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import uuid
from pathlib import Path

import pytest
from helpers.cli import Cli
from helpers.nsutil import ROOT, TESTDATA, netns
from lxml import etree

SHIPPED = ROOT / "etc" / "nwfilter"
LIBVIRT_DEFAULTS = TESTDATA / "nwfilter-defaults"

# name -> (chain, explicit chain priority or None for the chain type's default).
# These are the values libvirt's own filters have; a libvirt user's filters that
# reference ours rely on them for ordering.
COMPAT = {
    "allow-arp": ("arp", None),
    "allow-dhcp": ("ipv4", None),
    "allow-dhcp-server": ("ipv4", None),
    "allow-dhcpv6": ("ipv6", None),
    "allow-dhcpv6-server": ("ipv6", None),
    "allow-incoming-ipv4": ("ipv4", None),
    "allow-incoming-ipv6": ("ipv6", None),
    "allow-ipv4": ("ipv4", None),
    "allow-ipv6": ("ipv6", None),
    "clean-traffic": ("root", None),
    "clean-traffic-gateway": ("root", None),
    "no-arp-ip-spoofing": ("arp-ip", -510),
    "no-arp-mac-spoofing": ("arp-mac", -520),
    "no-arp-spoofing": ("root", None),
    "no-ip-multicast": ("ipv4", None),
    "no-ipv6-multicast": ("ipv6", None),
    "no-ip-spoofing": ("ipv4-ip", -710),
    "no-ipv6-spoofing": ("ipv6-ip", -610),
    "no-mac-broadcast": ("ipv4", None),
    "no-mac-spoofing": ("mac", -800),
    "no-other-l2-traffic": ("root", None),
    "no-other-rarp-traffic": ("rarp", None),
    "qemu-announce-self": ("root", None),
    "qemu-announce-self-rarp": ("rarp", None),
}

# The variables a filter uses, through its filterrefs too (MAC comes from the binding).
VARIABLES = {
    "allow-dhcp-server": {"DHCPSERVER"},
    "allow-dhcpv6-server": {"DHCPSERVER"},
    "clean-traffic": {"MAC", "IP"},
    "clean-traffic-gateway": {"MAC", "IP", "GATEWAY_MAC"},
    "no-arp-ip-spoofing": {"IP"},
    "no-arp-mac-spoofing": {"MAC"},
    "no-arp-spoofing": {"MAC", "IP"},
    "no-ip-spoofing": {"IP"},
    "no-ipv6-spoofing": {"IPV6"},
    "no-mac-spoofing": {"MAC"},
    "qemu-announce-self": {"MAC"},
    "qemu-announce-self-rarp": {"MAC"},
}

_VAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def _files() -> list[Path]:
    return sorted(SHIPPED.glob("*.xml"))


def _parse(path: Path) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    return etree.parse(str(path), parser).getroot()


def _elements(parent: etree._Element) -> list[etree._Element]:
    return [child for child in parent if isinstance(child.tag, str)]


def _refs(root: etree._Element) -> list[str]:
    return [child.get("filter") for child in _elements(root) if child.tag == "filterref"]


def _uuid(root: etree._Element) -> str:
    return next(el.text.strip().lower() for el in _elements(root) if el.tag == "uuid")


def _own_variables(root: etree._Element) -> set[str]:
    found: set[str] = set()
    for el in root.iter():
        if isinstance(el.tag, str):
            for value in el.attrib.values():
                found.update(_VAR.findall(value))
    return found


@pytest.fixture(scope="module")
def shipped() -> dict[str, etree._Element]:
    return {path.stem: _parse(path) for path in _files()}


# ---------------------------------------------------------------- static


def test_the_standard_set_is_shipped():
    assert sorted(path.stem for path in _files()) == sorted(COMPAT)


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.stem)
def test_one_filter_per_file_named_after_it(path: Path):
    root = _parse(path)
    assert root.tag == "filter", f"{path.name}: root element is <{root.tag}>"
    assert root.get("name") == path.stem, f"{path.name}: filter name is {root.get('name')!r}"
    uuids = [el.text.strip() for el in _elements(root) if el.tag == "uuid"]
    assert len(uuids) == 1, f"{path.name}: expected one <uuid>, got {uuids}"
    assert str(uuid.UUID(uuids[0])) == uuids[0].lower(), f"{path.name}: malformed uuid {uuids[0]}"
    for child in _elements(root):
        assert child.tag in ("uuid", "rule", "filterref"), f"{path.name}: unexpected <{child.tag}>"


def test_uuids_are_distinct_and_not_libvirts(shipped):
    ours = [_uuid(root) for root in shipped.values()]
    assert len(set(ours)) == len(ours), "two shipped filters share a uuid"
    if LIBVIRT_DEFAULTS.is_dir():
        theirs = set(
            re.findall(
                r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                " ".join(p.read_text().lower() for p in LIBVIRT_DEFAULTS.glob("*.xml")),
            )
        )
        assert not theirs & set(ours)


def test_filterrefs_resolve_and_form_a_dag(shipped):
    missing = {name: [ref for ref in _refs(root) if ref not in shipped] for name, root in shipped.items()}
    missing = {name: refs for name, refs in missing.items() if refs}
    assert not missing, f"filterrefs to filters that are not shipped: {missing}"

    # depth-first search: a grey node met again is a cycle
    colour: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        colour[name] = "grey"
        for ref in _refs(shipped[name]):
            if colour.get(ref) == "grey":
                pytest.fail(f"filterref cycle: {' -> '.join(path + [name, ref])}")
            if ref not in colour:
                visit(ref, path + [name])
        colour[name] = "black"

    for name in sorted(shipped):
        if name not in colour:
            visit(name, [])


@pytest.mark.parametrize("name", sorted(COMPAT))
def test_chain_and_priority_are_compatible(shipped, name):
    root = shipped[name]
    chain, priority = COMPAT[name]
    assert root.get("chain", "root") == chain
    given = root.get("priority")
    assert (int(given) if given is not None else None) == priority


@pytest.mark.parametrize("name", sorted(COMPAT))
def test_variables_are_compatible(shipped, name):
    def closure(n: str) -> set[str]:
        found = _own_variables(shipped[n])
        for ref in _refs(shipped[n]):
            found |= closure(ref)
        return found

    assert closure(name) == VARIABLES.get(name, set())


def _norm_value(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value.lower()


def _meaning(root: etree._Element) -> list[tuple]:
    """What decides a filter's effect, with layout, comments, uuid and defaults normalized."""
    out: list[tuple] = [("filter", root.get("name"), root.get("chain", "root"), root.get("priority"))]
    for child in _elements(root):
        if child.tag == "filterref":
            params = tuple((p.get("name"), p.get("value")) for p in _elements(child))
            out.append(("filterref", child.get("filter"), params))
        elif child.tag == "rule":
            match = None
            elements = _elements(child)
            if elements:
                attrs = {key: _norm_value(value) for key, value in elements[0].attrib.items() if key != "comment"}
                attrs.setdefault("match", "yes")
                match = (elements[0].tag, tuple(sorted(attrs.items())))
            out.append(
                (
                    "rule",
                    child.get("action"),
                    child.get("direction"),
                    int(child.get("priority", "500")),
                    child.get("statematch", "true") in ("true", "1"),
                    match,
                )
            )
    return out


@pytest.mark.skipif(not LIBVIRT_DEFAULTS.is_dir(), reason="libvirt reference data not present")
@pytest.mark.parametrize("name", sorted(COMPAT))
def test_same_rules_as_libvirts_filter(shipped, name):
    """Written independently, but with the same effect as libvirt's filter of the same name."""
    assert _meaning(shipped[name]) == _meaning(_parse(LIBVIRT_DEFAULTS / f"{name}.xml"))


# ---------------------------------------------------------------- through the CLI


@pytest.fixture
def cli(tmp_path):
    if os.geteuid() == 0:
        with netns("vfwsf") as ns:
            yield Cli(tmp_path, ns)
    else:
        yield Cli(tmp_path)


def _listed(cli) -> dict[str, str]:
    """name -> uuid from ``nwfilter-list --json`` (a list of objects with name and uuid)."""
    data = json.loads(cli("nwfilter-list", "--json").stdout)
    if isinstance(data, dict):  # tolerate {"filters": [...]}
        data = next(iter(data.values()))
    return {str(entry["name"]): str(entry.get("uuid", "")).lower() for entry in data}


def test_every_shipped_filter_is_listed_without_defining(cli, shipped):
    listed = _listed(cli)
    assert set(COMPAT) <= set(listed), f"not listed: {sorted(set(COMPAT) - set(listed))}"
    for name, root in shipped.items():
        assert listed[name] == _uuid(root), f"{name}: listed uuid differs from the file's"
    plain = cli("nwfilter-list").stdout
    for name in COMPAT:
        assert re.search(rf"(^|\s){re.escape(name)}(\s|$)", plain, re.MULTILINE), f"{name} missing from nwfilter-list"


def test_every_shipped_file_is_accepted_by_nwfilter_define(cli):
    failed = {}
    for path in _files():
        proc = cli("nwfilter-define", str(path), check=False)
        if proc.returncode != 0:
            failed[path.name] = proc.stderr.strip()
    assert not failed, f"nwfilter-define refused shipped files: {failed}"
    # now defined in the config dir too; still each listed exactly once, same uuid
    listed = _listed(cli)
    assert set(COMPAT) <= set(listed)
    defined = sorted(p.name for p in (cli.config_dir / "nwfilter").glob("*.xml"))
    assert defined == sorted(p.name for p in _files())


@pytest.mark.parametrize("name", sorted(COMPAT))
def test_dumpxml_returns_the_filter(cli, shipped, name):
    out = cli("nwfilter-dumpxml", name).stdout
    root = etree.fromstring(out.encode())
    assert root.tag == "filter" and root.get("name") == name
    assert [r.get("filter") for r in root if r.tag == "filterref"] == _refs(shipped[name])
    assert len([r for r in root if r.tag == "rule"]) == len([r for r in _elements(shipped[name]) if r.tag == "rule"])
