"""net-destroy removes the network's status file first, before the kernel changes.

* A state dir that refuses the removal (a read-only bind mount, in a mount namespace of
  the test's own: every write fails too, so no put-back could write the status again)
  makes net-destroy exit 1 with one ``error:`` line and change nothing: the bridge, the
  rules and dnsmasq are still there, and ``verify`` is happy.
* A net-destroy killed (SIGKILL) after that first step, at each of its tool calls (before
  the real tool runs, and after it ran), leaves remains that carry the network's name:
  ``verify`` names them (exit 3), ``net-start NAME`` is refused saying so, and the next
  ``net-destroy NAME`` removes them, leaving
  the namespace as it was before the network started. A network that was never started
  is still "not active".

Both backends; every namespace is made here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers.faults import Wrappers, error_problems, group_alive
from helpers.nsutil import BACKENDS, Netns, Virtfw, dir_files, firewall_snapshot, netns, verify_problems, virtfw_argv

pytestmark = pytest.mark.netns

WAIT = 20


def snapshot(ns: Netns, vfw: Virtfw) -> dict:
    links = json.loads(ns.sh("ip", "-j", "-d", "address", "show"))
    shown = sorted(
        f"{link['ifname']} {link.get('ifalias', '')} "
        + " ".join(sorted(f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])))
        for link in links
    )
    processes = []
    for pid in ns.sh("ip", "netns", "pids", ns.name).split():
        try:
            processes.append(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode())
        except OSError:
            continue
    return {
        "firewall": firewall_snapshot(ns),
        "links": shown,
        "processes": sorted(processes),
        "state": sorted(dir_files(vfw.state_dir, skip=("lock", "nft-kernel.json"))),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_state_dir_that_refuses_the_removal_changes_nothing(tmp_path: Path, backend: str) -> None:
    with netns("vfwD") as ns:
        vfw = Virtfw(ns, tmp_path, backend)
        vfw("net-start", "default")
        before = snapshot(ns, vfw)
        folder = vfw.state_dir / "networks"
        argv = virtfw_argv(
            "net-destroy", "default", config_dir=vfw.config_dir, state_dir=vfw.state_dir, backend=backend
        )
        script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
        proc = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(folder),
             "ip", "netns", "exec", ns.name, *argv],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert error_problems(proc) == [], proc.stderr
        assert "Read-only file system" in proc.stderr and "default.json" in proc.stderr, proc.stderr
        assert snapshot(ns, vfw) == before
        assert verify_problems(vfw) == []
        vfw("net-destroy", "default")


def destroy_calls(tmp_path: Path, backend: str) -> list[str]:
    """The tool calls of a clean net-destroy of the default network."""
    with netns("vfwD") as ns:
        vfw = Virtfw(ns, tmp_path / "count", backend)
        wrap = Wrappers(tmp_path / "count-wrap")
        vfw("net-start", "default")
        wrap.arm()
        vfw("net-destroy", "default", env=wrap.env)
        return wrap.calls()


def kill_destroy_at(ns: Netns, vfw: Virtfw, wrap: Wrappers, *, sleep_before: int = 0, sleep_after: int = 0) -> None:
    wrap.arm(sleep_before=sleep_before, sleep_after=sleep_after)
    argv = ["env", *(f"{k}={v}" for k, v in wrap.env.items()), "ip", "netns", "exec", ns.name]
    argv += virtfw_argv("net-destroy", "default", config_dir=vfw.config_dir, state_dir=vfw.state_dir,
                        backend=vfw.backend)  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + WAIT
    try:
        while not wrap.marker():
            assert proc.poll() is None, f"net-destroy ended ({proc.returncode}) before the instant"
            assert time.monotonic() < deadline, "the instant was not reached"
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=WAIT)
        while group_alive(proc.pid):
            assert time.monotonic() < deadline, "the killed group lives on"
            time.sleep(0.01)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_destroy_killed_after_its_status_went_is_finished_by_the_next(tmp_path: Path, backend: str) -> None:
    calls = destroy_calls(tmp_path, backend)
    assert calls, "net-destroy ran no tool"
    instants = [{"sleep_before": n} for n in range(1, len(calls) + 1)] + [
        {"sleep_after": n} for n in range(1, len(calls) + 1)
    ]
    failures = []
    for i, instant in enumerate(instants):
        with netns("vfwD") as ns:
            vfw = Virtfw(ns, tmp_path / f"k{i}", backend)
            wrap = Wrappers(tmp_path / f"k{i}-wrap")
            clean = snapshot(ns, vfw)
            vfw("net-start", "default")
            kill_destroy_at(ns, vfw, wrap, **instant)
            where = f"killed {'before' if 'sleep_before' in instant else 'after'} {calls[sum(instant.values()) - 1]}"
            assert not (vfw.state_dir / "networks" / "default.json").exists(), f"{where}: the status is still there"
            problems = verify_problems(vfw)
            if not any("destroy was interrupted" in p and "net-destroy default" in p for p in problems):
                failures.append(f"{where}: verify does not name the remains: {problems}")
            if i == 0:  # starting it again over its remains is refused, naming them
                proc = vfw("net-start", "default", check=False)
                if error_problems(proc) or "net-destroy default removes them" not in proc.stderr:
                    failures.append(f"{where}: net-start over the remains: {proc.stderr.strip()}")
            proc = vfw("net-destroy", "default", check=False)
            if proc.returncode != 0:
                failures.append(f"{where}: the next net-destroy: {proc.stderr.strip()}")
            elif snapshot(ns, vfw) != clean:
                failures.append(f"{where}: not the namespace of before the start")
            elif verify_problems(vfw) != []:
                failures.append(f"{where}: verify after it: {verify_problems(vfw)}")
    assert not failures, "\n".join(failures)


def test_a_network_never_started_is_not_active(tmp_path: Path) -> None:
    with netns("vfwD") as ns:
        vfw = Virtfw(ns, tmp_path, "nftables")
        proc = vfw("net-destroy", "default", check=False)
        assert error_problems(proc) == [] and "is not active" in proc.stderr, proc.stderr
