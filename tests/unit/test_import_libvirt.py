"""``import-libvirt``: a libvirt config dir's networks, autostart marks and own filters.

A fake ``/etc/libvirt`` is laid out in ``tmp_path`` as libvirt keeps it
(``qemu/networks/NAME.xml``, ``qemu/networks/autostart/NAME.xml`` links, ``nwfilter/NAME.xml``):
from libvirt's own test corpus (tests marked ``shared``), or from small hand-written
definitions (the rest, which run on a clone too). The command never touches the kernel,
so everything runs as any user with its own config and state dirs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from helpers.cli import assert_ok, show, tree
from helpers.nsutil import ROOT, TESTDATA, virtfw_argv

Report = dict[tuple[str, str], tuple[str, str]]

LINE = re.compile(r"^(network|autostart|filter) (\S+): (imported|already present|skipped|refused)(?:: (.*))?$")


class Host:
    """virtfw with its own dirs, and a libvirt config dir to import from."""

    def __init__(self, tmp: Path) -> None:
        self.config_dir = tmp / "etc"
        self.state_dir = tmp / "run"
        self.libvirt = tmp / "libvirt"
        self.networks = self.libvirt / "qemu" / "networks"
        self.autostart = self.networks / "autostart"
        self.filters = self.libvirt / "nwfilter"
        for folder in (self.config_dir, self.autostart, self.filters):
            folder.mkdir(parents=True)

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        argv = virtfw_argv(*args, config_dir=self.config_dir, state_dir=self.state_dir)
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
        )  # fmt: skip

    def run_import(self, *options: str) -> tuple[subprocess.CompletedProcess, Report]:
        proc = self(*options, "import-libvirt", "--from", str(self.libvirt))
        assert "Traceback" not in proc.stdout + proc.stderr, show(proc)
        return proc, report(proc)

    def network(self, name: str, text: str, *, autostart: bool = False) -> None:
        (self.networks / f"{name}.xml").write_text(text)
        if autostart:
            os.symlink(f"/etc/libvirt/qemu/networks/{name}.xml", self.autostart / f"{name}.xml")

    def filter(self, name: str, text: str) -> None:
        (self.filters / f"{name}.xml").write_text(text)


def report(proc: subprocess.CompletedProcess) -> Report:
    """(kind, name) -> (outcome, why) of every item line; the summary line aside."""
    found: Report = {}
    for line in proc.stdout.splitlines():
        match = LINE.match(line)
        if match:
            kind, name, outcome, why = match.groups()
            assert (kind, name) not in found, f"{kind} {name} reported twice\n{show(proc)}"
            found[kind, name] = (outcome, why or "")
        else:
            assert re.fullmatch(r"\d+ imported, \d+ already present, \d+ skipped, \d+ refused", line) or (
                line == "Dry run: nothing was changed."
            ), f"unexpected line {line!r}\n{show(proc)}"
    return found


def names(found: Report, kind: str, outcome: str) -> set[str]:
    return {name for (k, name), (o, _) in found.items() if k == kind and o == outcome}


def assert_refused_count(proc: subprocess.CompletedProcess, count: int) -> None:
    assert proc.returncode == 1, show(proc)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {count} definition(s) refused"), show(proc)


def net_xml(name: str, bridge: str, address: str, uuid_: str | None = None) -> str:
    uuid_line = f"<uuid>{uuid_}</uuid>" if uuid_ else ""
    return (
        f"<network><name>{name}</name>{uuid_line}<bridge name='{bridge}'/><forward mode='nat'/>"
        f"<ip address='{address}' netmask='255.255.255.0'/></network>\n"
    )


def ref_filter(name: str, *refs: str, chain: str = "root") -> str:
    body = "".join(f"<filterref filter='{ref}'/>" for ref in refs)
    return f"<filter name='{name}' chain='{chain}'>{body}<rule action='drop' direction='in'/></filter>\n"


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


# ---------------------------------------------------------------------------------
# hand-written definitions: no ../shared needed
# ---------------------------------------------------------------------------------


def test_small_host_imports_orders_and_refuses(host: Host, tmp_path: Path) -> None:
    host.network("lan", net_xml("lan", "vlan0", "10.10.0.1"), autostart=True)
    host.network("dmz", net_xml("dmz", "vdmz0", "10.20.0.1"))
    host.network("bad", "<network><name>bad</name><forward mode='vepa'/></network>\n", autostart=True)
    host.network("misnamed", net_xml("other", "vmis0", "10.30.0.1"))
    os.symlink("/ghost/nowhere.xml", host.autostart / "ghost.xml")  # a mark without definition
    outside = tmp_path / "outside.xml"
    outside.write_text(net_xml("escape", "vesc0", "10.40.0.1"))
    os.symlink(outside, host.networks / "escape.xml")
    # a -> b -> c -> clean-traffic (shipped): imported in the order c, b, a
    host.filter("a", ref_filter("a", "b"))
    host.filter("b", ref_filter("b", "c"))
    host.filter("c", ref_filter("c", "clean-traffic"))
    host.filter("d", ref_filter("d", "missing"))
    host.filter("e", ref_filter("e", "d"))  # references a refused one
    host.filter("x", ref_filter("x", "y"))
    host.filter("y", ref_filter("y", "x"))
    host.filter("inside-link-target", ref_filter("inside-link-target"))
    os.symlink("inside-link-target.xml", host.filters / "linked.xml")  # within DIR: read, but misnamed
    (host.filters / "passwd.xml").symlink_to("/etc/passwd")
    host.filter("allow-arp", (ROOT / "etc" / "nwfilter" / "allow-arp.xml").read_text())
    host.filter(
        "no-ip-multicast",
        "<filter name='no-ip-multicast' chain='ipv4'><rule action='accept' direction='out'/></filter>",
    )
    host.filter("broken", "<filter name='broken'><rule action='maybe' direction='in'/></filter>")

    proc, found = host.run_import()
    assert names(found, "network", "imported") == {"lan", "dmz"}
    assert names(found, "network", "refused") == {"bad", "misnamed", "escape"}
    assert "vepa" in found["network", "bad"][1]
    assert "holds network 'other'" in found["network", "misnamed"][1]
    assert "outside" in found["network", "escape"][1]
    assert found["autostart", "lan"][0] == "imported"
    assert found["autostart", "bad"] == ("skipped", "network bad was not imported")
    assert found["autostart", "ghost"][0] == "skipped"
    assert ("autostart", "dmz") not in found

    assert names(found, "filter", "imported") == {"a", "b", "c", "inside-link-target"}
    assert "'missing', which is neither defined" in found["filter", "d"][1]
    assert "'d', which was refused" in found["filter", "e"][1]
    assert "cycle" in found["filter", "x"][1] and "cycle" in found["filter", "y"][1]
    assert "holds filter 'inside-link-target'" in found["filter", "linked"][1]
    assert "outside" in found["filter", "passwd"][1] and found["filter", "passwd"][0] == "refused"
    assert found["filter", "allow-arp"] == ("skipped", "a standard filter virtfw ships, identical")
    assert found["filter", "no-ip-multicast"][0] == "skipped" and "differ" in found["filter", "no-ip-multicast"][1]
    assert found["filter", "broken"][0] == "refused" and "maybe" in found["filter", "broken"][1]
    refused = sum(1 for outcome, _ in found.values() if outcome == "refused")
    assert_refused_count(proc, refused)

    files = tree(host.config_dir)
    assert set(files) == {
        "networks", "networks/lan.xml", "networks/dmz.xml", "networks/autostart", "networks/autostart/lan.xml",
        "nwfilter", "nwfilter/a.xml", "nwfilter/b.xml", "nwfilter/c.xml", "nwfilter/inside-link-target.xml",
    }  # fmt: skip
    listing = {row["name"]: row for row in json.loads(assert_ok(host("net-list", "--all", "--json")).stdout)}
    assert listing["lan"]["autostart"] and not listing["dmz"]["autostart"]
    assert listing["lan"]["bridge"] == "vlan0"
    assert "<filterref filter='b'/>" in assert_ok(host("nwfilter-dumpxml", "a")).stdout.replace('"', "'")

    again, second = host.run_import()
    assert tree(host.config_dir) == files, "the second run changed files"
    assert names(second, "network", "already present") == {"lan", "dmz"}
    assert names(second, "filter", "already present") == {"a", "b", "c", "inside-link-target"}
    assert not names(second, "network", "imported") | names(second, "filter", "imported")
    assert second["autostart", "lan"][0] == "already present"
    assert_refused_count(again, refused)


def test_clean_import_exits_0_and_is_idempotent(host: Host) -> None:
    host.network("lan", net_xml("lan", "vlan0", "10.10.0.1"), autostart=True)
    host.network("nouuid", "<network><name>nouuid</name><ip address='10.50.0.1' prefix='24'/></network>\n")
    host.filter("mine", ref_filter("mine", "clean-traffic"))  # no uuid: virtfw makes one, and keeps it
    proc, found = host.run_import()
    assert_ok(proc)
    assert proc.stderr == ""
    assert names(found, "network", "imported") == {"lan", "nouuid"}
    files = tree(host.config_dir)
    proc, found = host.run_import()
    assert_ok(proc)
    assert tree(host.config_dir) == files
    assert {outcome for outcome, _ in found.values()} == {"already present"}, show(proc)


def test_dry_run_writes_nothing(host: Host) -> None:
    host.network("lan", net_xml("lan", "vlan0", "10.10.0.1", str(uuid.uuid4())), autostart=True)
    host.network("lan2", net_xml("lan2", "vlan0", "10.11.0.1"))  # the bridge of lan, accepted just before
    host.filter("mine", ref_filter("mine", "other"))
    host.filter("other", ref_filter("other"))
    proc, dry = host.run_import("--dry-run")
    assert tree(host.config_dir) == {}
    assert not host.state_dir.exists()
    assert "Dry run: nothing was changed." in proc.stdout
    assert "bridge vlan0 is already used by network 'lan'" in dry["network", "lan2"][1]
    assert_refused_count(proc, 1)
    real, found = host.run_import()
    assert found == dry, "a dry run reports what the import does"
    assert real.returncode == proc.returncode == 1


def test_conflicts_with_virtfw_definitions_are_refused_and_the_rest_imported(host: Host, tmp_path: Path) -> None:
    kept_uuid = str(uuid.uuid4())
    mine = tmp_path / "mine.xml"
    mine.write_text(net_xml("mine", "vmine0", "10.60.0.1", kept_uuid))
    assert_ok(host("net-define", str(mine)))
    same = tmp_path / "same.xml"
    same.write_text(net_xml("same", "vsame0", "10.61.0.1"))
    assert_ok(host("net-define", str(same)))
    host.network("steals-bridge", net_xml("steals-bridge", "vmine0", "10.62.0.1"))
    host.network("steals-uuid", net_xml("steals-uuid", "vsteal0", "10.63.0.1", kept_uuid))
    host.network("mine", net_xml("mine", "vother0", "10.64.0.1", kept_uuid))  # same name, other content
    host.network("same", net_xml("same", "vsame0", "10.61.0.1"))  # identical but for the uuid virtfw made
    host.network("fine", net_xml("fine", "vfine0", "10.65.0.1"))
    host.network("shipped-bridge", net_xml("shipped-bridge", "virbr0", "10.66.0.1"))  # the shipped default's
    before = tree(host.config_dir)

    proc, found = host.run_import()
    assert "bridge vmine0 is already used by network 'mine'" in found["network", "steals-bridge"][1]
    assert f"network 'mine' already has uuid {kept_uuid}" in found["network", "steals-uuid"][1]
    assert "already defined in virtfw, differently" in found["network", "mine"][1]
    assert "bridge virbr0 is already used by network 'default'" in found["network", "shipped-bridge"][1]
    assert found["network", "same"] == ("already present", "")
    assert found["network", "fine"] == ("imported", "")
    assert_refused_count(proc, 4)
    after = tree(host.config_dir)
    assert set(after) - set(before) == {"networks/fine.xml"}
    assert {k: v for k, v in after.items() if k in before} == before, "virtfw's definitions changed"


def test_filter_conflicts(host: Host, tmp_path: Path) -> None:
    taken = str(uuid.uuid4())
    own = tmp_path / "own.xml"
    own.write_text(f"<filter name='own' chain='root'><uuid>{taken}</uuid><rule action='drop' direction='in'/></filter>")
    assert_ok(host("nwfilter-define", str(own)))
    host.filter("own", "<filter name='own' chain='root'><rule action='accept' direction='in'/></filter>")
    host.filter("twin", f"<filter name='twin' chain='root'><uuid>{taken}</uuid></filter>")
    host.filter("uses-own", ref_filter("uses-own", "own"))
    proc, found = host.run_import()
    assert "already defined in virtfw, differently" in found["filter", "own"][1]
    assert f"filter 'own' already has uuid {taken}" in found["filter", "twin"][1]
    assert found["filter", "uses-own"] == ("imported", "")  # references virtfw's own definition
    assert_refused_count(proc, 2)


def test_a_fifo_is_refused_unread(host: Host) -> None:
    os.mkfifo(host.filters / "pipe.xml")  # reading it would block for ever
    host.filter("mine", ref_filter("mine"))
    proc, found = host.run_import()
    assert found["filter", "pipe"] == ("refused", f"{host.filters / 'pipe.xml'} is not a regular file")
    assert found["filter", "mine"] == ("imported", "")
    assert_refused_count(proc, 1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 0000")
def test_unreadable_file_is_refused_and_the_rest_imported(host: Host) -> None:
    host.network("lan", net_xml("lan", "vlan0", "10.10.0.1"))
    host.network("secret", net_xml("secret", "vsec0", "10.11.0.1"))
    (host.networks / "secret.xml").chmod(0)
    proc, found = host.run_import()
    assert found["network", "secret"][0] == "refused" and "Permission denied" in found["network", "secret"][1]
    assert found["network", "lan"] == ("imported", "")
    assert_refused_count(proc, 1)


def test_not_a_libvirt_dir(host: Host, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for where, needle in ((empty, "neither qemu/networks/ nor nwfilter/"), (tmp_path / "none", "not a directory")):
        proc = host("import-libvirt", "--from", str(where))
        assert proc.returncode == 1 and proc.stderr.startswith("error: ") and needle in proc.stderr, show(proc)
    assert tree(host.config_dir) == {}


# ---------------------------------------------------------------------------------
# libvirt's own test corpus
# ---------------------------------------------------------------------------------

NETWORKS = TESTDATA / "networkxml2xmlin"
FILTERS = TESTDATA / "nwfilterxml2xmlin"
DEFAULTS = TESTDATA / "nwfilter-defaults"
# corpus file -> what import-libvirt makes of the network it holds (laid out under its name)
CORPUS_NETWORKS = {
    "nat-network.xml": ("default", "imported", "overrides the one virtfw ships"),
    "bandwidth-network.xml": ("test-net", "imported", ""),
    "empty-allow-ipv6.xml": ("empty", "imported", ""),
    "netboot-tftp.xml": ("tftp-only", "refused", "bridge virbr0 is already used by network 'default'"),
    "isolated-network.xml": ("private", "refused", "network 'default' already has uuid"),  # the corpus reuses it
    "vepa-net.xml": ("vepa-net", "refused", "forward mode 'vepa'"),
    "routed-network.xml": ("local", "refused", "network 'default' already has uuid"),  # the corpus reuses it
    "hostdev.xml": ("hostdev", "refused", "forward mode 'hostdev'"),
}
AUTOSTART = ["default", "test-net", "vepa-net"]


def lay_out_corpus(host: Host) -> None:
    """libvirt's corpus as a host's /etc/libvirt: each network under its name, with
    autostart links; every corpus filter named after its file (they are all 'testcase'
    there) and without its uuid (the corpus reuses a few); libvirt's standard filters
    with uuids of their own, as libvirt installs them, one of them changed."""
    for corpus, (name, _, _) in CORPUS_NETWORKS.items():
        (host.networks / f"{name}.xml").write_bytes((NETWORKS / corpus).read_bytes())
    for name in AUTOSTART:
        os.symlink(f"/etc/libvirt/qemu/networks/{name}.xml", host.autostart / f"{name}.xml")
    for path in sorted(FILTERS.glob("*.xml")):
        text = re.sub(r"<uuid>[^<]*</uuid>", "", path.read_text())
        text = re.sub(r"name=(['\"])testcase\1", f"name='{path.stem}'", text, count=1)
        host.filter(path.stem, text)
    for path in sorted(DEFAULTS.glob("*.xml")):
        text = re.sub(r"(<filter [^>]*>)", rf"\1<uuid>{uuid.uuid4()}</uuid>", path.read_text(), count=1)
        if path.stem == "no-mac-broadcast":
            text = text.replace("action='drop'", "action='accept'")
        host.filter(path.stem, text)


@pytest.mark.shared
def test_corpus_import(host: Host) -> None:
    lay_out_corpus(host)
    proc, found = host.run_import()
    for corpus, (name, outcome, why) in CORPUS_NETWORKS.items():
        got = found["network", name]
        assert got[0] == outcome and why in got[1], f"{corpus}: {got}"
    assert found["autostart", "default"][0] == found["autostart", "test-net"][0] == "imported"
    assert found["autostart", "vepa-net"][0] == "skipped"

    standard = {path.stem for path in DEFAULTS.glob("*.xml")}
    assert names(found, "filter", "skipped") == standard
    assert "differ" in found["filter", "no-mac-broadcast"][1]
    assert all(found["filter", n][1].endswith("identical") for n in standard - {"no-mac-broadcast"})
    corpus = {path.stem for path in FILTERS.glob("*.xml")}
    invalid = {name for name in corpus if name.endswith("-invalid")}
    assert names(found, "filter", "refused") == invalid, "each invalid corpus filter, and only those"
    assert names(found, "filter", "imported") == corpus - invalid
    for name in invalid:
        assert f"{name}.xml: line " in found["filter", name][1], found["filter", name]
    refused = sum(1 for outcome, _ in found.values() if outcome == "refused")
    assert_refused_count(proc, refused)

    files = tree(host.config_dir)
    assert {p for p in files if p.startswith("networks/") and p.endswith(".xml")} == {
        "networks/default.xml", "networks/test-net.xml", "networks/empty.xml",
        "networks/autostart/default.xml", "networks/autostart/test-net.xml",
    }  # fmt: skip
    assert {p for p in files if p.startswith("nwfilter/")} == {f"nwfilter/{n}.xml" for n in corpus - invalid}
    listing = {row["name"]: row for row in json.loads(assert_ok(host("net-list", "--all", "--json")).stdout)}
    assert listing["default"]["autostart"] and listing["test-net"]["autostart"] and not listing["empty"]["autostart"]

    again, second = host.run_import()
    assert tree(host.config_dir) == files, "the second run changed files"
    assert names(second, "network", "already present") == {"default", "test-net", "empty"}
    assert names(second, "filter", "already present") == corpus - invalid
    assert not {key for key, (outcome, _) in second.items() if outcome == "imported"}
    assert_refused_count(again, refused)


@pytest.mark.shared
def test_corpus_dry_run_writes_nothing(host: Host) -> None:
    lay_out_corpus(host)
    proc, dry = host.run_import("--dry-run")
    assert tree(host.config_dir) == {} and not host.state_dir.exists()
    real, found = host.run_import()
    assert found == dry
    assert real.returncode == proc.returncode == 1


@pytest.mark.shared
def test_corpus_network_conflicting_with_a_virtfw_definition(host: Host, tmp_path: Path) -> None:
    lay_out_corpus(host)
    mine = tmp_path / "mine.xml"
    mine.write_text(net_xml("mine", "virbr7", "10.70.0.1"))  # the bridge of the corpus's 'empty'
    assert_ok(host("net-define", str(mine)))
    proc, found = host.run_import()
    assert found["network", "empty"][0] == "refused"
    assert "bridge virbr7 is already used by network 'mine'" in found["network", "empty"][1]
    assert names(found, "network", "imported") == {"default", "test-net"}
    assert proc.returncode == 1


def test_json_report_is_the_same_report(host: Host) -> None:
    """``--json``: the items the text report lists (kind, name, outcome, why), the counts and
    the warnings, on stdout as JSON; a refusal still exits 1 with one error line."""
    host.network("lan", net_xml("lan", "vlan0", "10.10.0.1", str(uuid.uuid4())), autostart=True)
    host.network("lan2", net_xml("lan2", "vlan0", "10.11.0.1"))  # refused: lan's bridge
    host.filter("mine", ref_filter("mine"))
    _, found = host.run_import("--dry-run")
    proc = host("--dry-run", "import-libvirt", "--from", str(host.libvirt), "--json")
    assert proc.returncode == 1 and proc.stderr.startswith("error: 1 definition(s) refused"), show(proc)
    assert proc.stderr.count("\n") == 1, show(proc)
    data = json.loads(proc.stdout)
    assert {(i["kind"], i["name"]): (i["outcome"], i["why"]) for i in data["items"]} == found
    assert data["counts"]["refused"] == 1 and data["dry_run"] is True and data["warnings"] == []
    assert sum(data["counts"].values()) == len(data["items"])
    assert tree(host.config_dir) == {}
