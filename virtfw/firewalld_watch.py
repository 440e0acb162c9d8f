"""``virtfw watch-firewalld``: put virtfw's zone bindings and rules back whenever firewalld
reloads or restarts, as libvirt and netavark do.

A firewalld reload (its default FlushAllOnReload) and a restart drop the runtime zone
bindings net-start made, and firewalld's iptables backend flushes every chain besides:
guests lose DHCP, DNS and forwarding until ``virtfw reload`` runs. firewalld says so on
the system bus, with its ``Reloaded`` signal (``firewall-cmd --reload``, and
``systemctl reload firewalld``, which returns before it has finished) and, for a
restart, the bus's ``NameOwnerChanged`` for its name. This command listens for both
through ``dbus-monitor`` (found on PATH; the bus is the system bus, or
``DBUS_SYSTEM_BUS_ADDRESS``) and answers each burst of them with one ``virtfw reload``,
run as a process of its own once firewalld says it runs. It reloads once at start too:
firewalld may have restarted while nothing listened. It runs until killed; the unit
``virtfw-firewalld.service`` runs it.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Callable

from virtfw.errors import VirtfwError

NAME = "org.fedoraproject.FirewallD1"
MATCHES = [
    f"type='signal',interface='{NAME}',member='Reloaded'",
    f"type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='{NAME}'",
]
QUIET = 0.5  # seconds without a further signal before reloading (firewalld sends bursts)
READY = 60.0  # seconds to wait for firewalld to say it runs after it took its name


def is_trigger(line: str) -> bool:
    """A line of ``dbus-monitor`` that starts one of the signals listened for."""
    return line.startswith("signal ") and ("member=Reloaded" in line or "member=NameOwnerChanged" in line)


def wait_running(firewall_cmd: str, limit: float) -> bool:
    """Whether firewalld says it runs within ``limit`` seconds (after a restart it takes its
    bus name before it has loaded its rules)."""
    deadline = time.monotonic() + limit
    while True:
        proc = subprocess.run([firewall_cmd, "--state"], capture_output=True, text=True, check=False)
        if proc.returncode == 0 and proc.stdout.strip() == "running":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def watch(reload_argv: list[str], dbus_monitor: str, firewall_cmd: str | None, say: Callable[[str], None]) -> int:
    """Reload now, then after each burst of firewalld's signals (once none has come for
    QUIET seconds), until the monitor ends; its exit status."""

    def reload(why: str) -> None:
        if firewall_cmd and not wait_running(firewall_cmd, READY):
            say(f"{why}: firewalld does not run; nothing to put back")
            return
        proc = subprocess.run(reload_argv, capture_output=True, text=True, check=False)
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        say(f"{why}: virtfw reload: {lines[-1] if lines else 'done'}")

    monitor = subprocess.Popen([dbus_monitor, "--system", *MATCHES], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert monitor.stdout is not None
    fd = monitor.stdout.fileno()
    try:
        reload("start")  # after the monitor listens: a signal meanwhile is not missed
        pending, rest = False, b""
        while True:
            if not select.select([fd], [], [], QUIET if pending else None)[0]:
                pending = False
                reload("firewalld reloaded or restarted")
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            *lines, rest = (rest + chunk).split(b"\n")
            pending = pending or any(is_trigger(line.decode(errors="replace")) for line in lines)
    finally:
        monitor.terminate()
        monitor.wait()
    return monitor.returncode


def main(reload_argv: list[str], say: Callable[[str], None]) -> None:
    """Watch until the bus goes away (an error: the unit restarts the watcher)."""
    from virtfw.rules.runner import find_tool

    dbus_monitor = find_tool("dbus-monitor")
    if dbus_monitor is None:
        raise VirtfwError("dbus-monitor not found on PATH (Debian and Ubuntu: package dbus-bin; Fedora: dbus-tools)")
    say(f"watching firewalld on the system bus ({os.environ.get('DBUS_SYSTEM_BUS_ADDRESS', 'its default address')})")
    status = watch(reload_argv, dbus_monitor, find_tool("firewall-cmd"), say)
    raise VirtfwError(f"dbus-monitor ended (exit {status}): the system bus went away")
