"""Tampered status files: a removal record that would remove something virtfw did not make
(another chain, a second batch smuggled in by a newline, nft syntax in a rule text) is
refused with one ``error:`` line and exit 1, and nothing in the kernel or the files changes.
``reload`` never runs a recorded removal of the same backend (it rebuilds virtfw's own
tables and chains from the definitions), so it repairs the record instead."""

from __future__ import annotations

import json
import os

import pytest
from helpers.nsutil import BACKENDS, Virtfw, dir_files, firewall_snapshot, netns

# (backend, key path in the status, hostile value) for a started network's firewall record
NETWORK_TAMPERING = [
    ("iptables", ("ipv4", "filter"), ["-D VIRTFW_FWO -j ACCEPT\nCOMMIT\n*filter\n-F INPUT"]),
    ("iptables", ("ipv4", "filter"), ["-F INPUT"]),
    ("iptables", ("ipv4", "filter"), ["-D FORWARD -j DOCKER"]),
    ("iptables", ("ipv4", "filter"), ["-D VIRTFW_FWO -j ACCEPT -t nat -F POSTROUTING"]),
    ("nftables", ("batch",), ["delete table ip filter"]),
    ("nftables", ("batch",), ["delete rule ip virtfw_network guest_nat handle 3\nflush ruleset"]),
    ("nftables", ("batch",), ["delete rule ip virtfw_network guest_nat handle 3 # %s \x00"]),
    ("nftables", ("tables",), {"inet": 1}),
]


@pytest.mark.netns
@pytest.mark.parametrize(("backend", "key", "value"), NETWORK_TAMPERING)
def test_tampered_network_record_is_refused_and_changes_nothing(tmp_path, backend, key, value) -> None:
    with netns("vfwH") as ns:
        vfw = Virtfw(ns, tmp_path, backend)
        vfw("net-start", "default")
        path = vfw.state_dir / "networks" / "default.json"
        status = json.loads(path.read_text())
        target = status["firewall"]
        for part in key[:-1]:
            target = target[part]
        target[key[-1]] = value
        path.write_text(json.dumps(status))
        before = (firewall_snapshot(ns), dir_files(vfw.state_dir))
        for command in (["net-destroy", "default"], ["verify"]):
            proc = vfw(*command, check=False)
            assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: status of network 'default'"), proc.stderr
            assert "Traceback" not in proc.stderr
        assert (firewall_snapshot(ns), dir_files(vfw.state_dir)) == before
        vfw("reload")
        assert json.loads(path.read_text())["firewall"] != status["firewall"]
        vfw("verify")
        vfw("net-destroy", "default")


@pytest.mark.netns
@pytest.mark.parametrize("backend", BACKENDS)
def test_tampered_binding_record_is_refused_and_changes_nothing(tmp_path, backend) -> None:
    with netns("vfwH") as ns:
        vfw = Virtfw(ns, tmp_path, backend)
        ns.run(["ip", "link", "add", "vnet0", "type", "veth", "peer", "name", "vnet0p"])
        binding = tmp_path / "binding.xml"
        binding.write_text(
            "<filterbinding><portdev name='vnet0'/><mac address='52:54:00:00:00:01'/>"
            "<filterref filter='no-mac-spoofing'/></filterbinding>"
        )
        vfw("nwfilter-binding-create", str(binding))
        path = vfw.state_dir / "bindings" / "vnet0.json"
        status = json.loads(path.read_text())
        record = status["firewall"]
        if backend == "nftables":
            key = next(iter(record["texts"]))
            record["texts"][key] = ["accept }\nflush ruleset\nchain x {"]
        else:
            record["ebtables"]["nat"] = ["-X PREROUTING"]
        path.write_text(json.dumps(status))
        before = (firewall_snapshot(ns), dir_files(vfw.state_dir))
        for command in (["nwfilter-binding-delete", "vnet0"], ["verify"]):
            proc = vfw(*command, check=False)
            assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: status of binding"), proc.stderr
        assert (firewall_snapshot(ns), dir_files(vfw.state_dir)) == before
        # reload refuses the record (nftables reinstalls records) or rebuilds over it (iptables)
        proc = vfw("reload", check=False)
        if proc.returncode == 0:
            vfw("verify")
        else:
            assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
            assert (firewall_snapshot(ns), dir_files(vfw.state_dir)) == before


# ---- directories someone else controls ---------------------------------------------------

NOBODY = 65534


def _state_dir_case(tmp_path, kind: str):
    """A state dir given with --state-dir that virtfw must refuse, and what it must leave."""
    state = tmp_path / "shared"
    if kind == "inside another user's dir":
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o755)
        os.chown(theirs, NOBODY, NOBODY)
        state = theirs / "state"
        state.mkdir(mode=0o700)  # even one of root's own, there: its owner can swap it
        return state
    if kind == "symlink":
        real = tmp_path / "elsewhere"
        real.mkdir(mode=0o700)
        state.symlink_to(real)
    else:
        state.mkdir()
        if kind == "world-writable":
            state.chmod(0o1777)
        elif kind == "group-writable":
            state.chmod(0o770)
        elif kind == "other owner":
            state.chmod(0o700)
            os.chown(state, NOBODY, NOBODY)
    return state


@pytest.mark.netns
@pytest.mark.parametrize(
    "kind", ["symlink", "world-writable", "group-writable", "other owner", "inside another user's dir"]
)
@pytest.mark.parametrize("command", [("net-start", "default"), ("net-list",), ("nwfilter-binding-list",)])
def test_state_dir_someone_else_controls_is_refused(tmp_path, kind: str, command: tuple[str, ...]) -> None:
    """Refused with one line, and nothing in it or in the kernel changes: no file, no chmod."""
    state = _state_dir_case(tmp_path, kind)
    with netns("vfwD") as ns:
        vfw = Virtfw(ns, tmp_path)
        vfw.state_dir = state
        before = (firewall_snapshot(ns), os.lstat(state).st_mode, sorted(os.listdir(state)))
        done = vfw(*command, check=False)
        assert done.returncode == 1, done
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: state dir"), done.stderr
        assert (firewall_snapshot(ns), os.lstat(state).st_mode, sorted(os.listdir(state))) == before


@pytest.mark.netns
def test_config_dir_someone_else_controls_is_refused(tmp_path) -> None:
    config = tmp_path / "etc-shared"
    config.mkdir()
    config.chmod(0o1777)
    with netns("vfwD") as ns:
        vfw = Virtfw(ns, tmp_path)
        vfw.config_dir = config
        done = vfw("net-list", "--all", check=False)
        assert done.returncode == 1 and done.stderr.startswith("error: config dir"), done
        assert os.lstat(config).st_mode & 0o7777 == 0o1777
