"""A real firewalld, with a private D-Bus system bus, inside a test's network namespace.

firewalld is not installed on the machine (its package would start the service on the
host): .ci/run unpacks the Debian packages ``firewalld`` and ``python3-firewall`` under
/opt/firewalld and installs the libraries it needs (python3-dbus, python3-gi,
python3-nftables, dbus-daemon), which start no service. Here both daemons run under
``ip netns exec`` in a namespace the test made, so every rule firewalld writes lands in
that namespace, and are stopped (SIGTERM, then SIGKILL) when the context exits.

Nothing of the host is used: the bus is a ``dbus-daemon`` of its own (socket in the
test's tmp dir), the configuration is a copy of the package's /etc/firewalld in the tmp
dir, and firewalld's temporary dir (``/run/firewalld``, where it would put its
iptables-restore input) and pid file are redirected there too, by setting
``firewall.config`` before firewalld's script runs. firewalld runs on Debian's
/usr/bin/python3, where apt's python3-* modules are, not on the interpreter of the tests.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from helpers.nsutil import Netns, need_root

PREFIX = Path("/opt/firewalld")
FIREWALLD = PREFIX / "usr/sbin/firewalld"
FIREWALL_CMD = PREFIX / "usr/bin/firewall-cmd"
PYTHONPATH = PREFIX / "usr/lib/python3/dist-packages"
DEFAULT_CONFIG = PREFIX / "usr/lib/firewalld"
PACKAGE_ETC = PREFIX / "etc/firewalld"
# The package's D-Bus policy (root may own org.fedoraproject.FirewallD1, anyone may call it).
BUS_POLICIES = [PREFIX / "usr/share/dbus-1/system.d/FirewallD.conf", PREFIX / "etc/dbus-1/system.d/FirewallD.conf"]
SYSTEM_PYTHON = Path("/usr/bin/python3")

# firewalld.conf settings the harness fixes, whatever the package ships:
# nftables (the backend virtfw's zone support is about); one batch per change, not one
# nft call per rule (IndividualCalls=no, firewalld's default and fast); a reload starts
# from the permanent config (FlushAllOnReload=yes, the default: runtime interface
# bindings are dropped, see tests/netns/test_firewalld_harness.py); on exit firewalld
# removes its table (CleanupOnExit=yes), so a stopped firewalld leaves the namespace
# without its rules, as on a host where the service is stopped.
BASE_CONF = {
    "FirewallBackend": "nftables",
    "IndividualCalls": "no",
    "FlushAllOnReload": "yes",
    "CleanupOnExit": "yes",
    "CleanupModulesOnExit": "no",  # never unload kernel modules: they are the host's
    "Lockdown": "no",
    "LogDenied": "off",
    "DefaultZone": "public",
}

# Runs firewalld's own script after pointing its run-time paths into the tmp dir (argv:
# tempdir pidfile script args...). firewall.functions copies FIREWALLD_TEMPDIR at import,
# which happens after this, inside the script.
_LAUNCHER = """\
import runpy, sys
import firewall.config as config
config.FIREWALLD_TEMPDIR, config.FIREWALLD_PIDFILE = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[3:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

_BUS_CONFIG = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- A private system bus for one test (tests/helpers/firewalld.py): the default policy
     of dbus's system.conf, the system.d policy dirs, and firewalld's policy. -->
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
  <includedir>/etc/dbus-1/system.d</includedir>
{includes}
</busconfig>
"""

_STOP_GRACE = 15.0  # seconds between SIGTERM and SIGKILL (firewalld removes its table on SIGTERM)


@functools.cache
def missing() -> str | None:
    """Why firewalld cannot run here (None: it can). Cached: the probe starts a Python."""
    if not FIREWALLD.is_file() or not FIREWALL_CMD.is_file():
        return f"firewalld is not unpacked under {PREFIX} (see .ci/run)"
    if not any(p.is_file() for p in BUS_POLICIES):
        return f"firewalld's D-Bus policy is not under {PREFIX}"
    if shutil.which("dbus-daemon") is None:
        return "dbus-daemon is not installed (package dbus-daemon)"
    if not SYSTEM_PYTHON.is_file():
        return f"{SYSTEM_PYTHON} is missing"
    probe = (
        "import dbus, nftables, gi, firewall.config; gi.require_version('GLib', '2.0'); from gi.repository import GLib"
    )
    env = _daemon_env({"PYTHONPATH": str(PYTHONPATH)})
    proc = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", probe], check=False, capture_output=True, text=True, env=env, timeout=30
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"{SYSTEM_PYTHON} lacks firewalld's modules (python3-dbus python3-gi python3-nftables): {last}"
    return None


def need_firewalld() -> None:
    """Skip without firewalld's pieces; in CI (CI=true) .ci/run installs them, so fail."""
    need_root()
    reason = missing()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"firewalld harness: {reason}")
    pytest.skip(f"firewalld harness: {reason}")


def _daemon_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of the test, less the PYTHON* variables of the tests' interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(extra)
    return env


def _stop(proc: subprocess.Popen | None) -> None:
    """SIGTERM, wait a bounded time, then SIGKILL; always reaped."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=_STOP_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=_STOP_GRACE)


class Firewalld:
    """firewalld and its bus in ``ns``; files under ``root`` (a dir in the test's tmp_path).

    ``env`` is what a process in the namespace (virtfw) needs to reach this firewalld:
    the bus address, and a PATH whose ``firewall-cmd`` is a wrapper (``root/bin``) that
    runs the unpacked one on /usr/bin/python3 and on this bus, whatever its caller's
    environment says, so that it can never talk to another firewalld.
    """

    def __init__(self, ns: Netns, root: Path, socket: Path, timeout: float) -> None:
        self.ns = ns
        self.root = root
        self.socket = socket
        self.timeout = timeout
        self.etc = root / "etc-firewalld"
        self.log_path = root / "firewalld.log"
        self.bus_log_path = root / "dbus.log"
        self.address = f"unix:path={socket}"
        self.wrapper = root / "bin" / "firewall-cmd"
        self.env = {"DBUS_SYSTEM_BUS_ADDRESS": self.address, "PATH": f"{root / 'bin'}:{os.environ.get('PATH', '')}"}
        self.bus: subprocess.Popen | None = None
        self.proc: subprocess.Popen | None = None

    # --- files ------------------------------------------------------------------------

    def prepare(self, zones: Mapping[str, str], policies: Mapping[str, str], conf: Mapping[str, str]) -> None:
        """Config dir (package's /etc/firewalld + BASE_CONF + conf + the XML files), bus config, wrapper."""
        shutil.copytree(PACKAGE_ETC, self.etc)
        settings = {**BASE_CONF, **conf}
        lines = []
        for line in (self.etc / "firewalld.conf").read_text().splitlines():
            key = line.split("=", 1)[0].strip()
            lines.append(f"{key}={settings.pop(key)}" if not line.startswith("#") and key in settings else line)
        lines += [f"{key}={value}" for key, value in settings.items()]
        (self.etc / "firewalld.conf").write_text("\n".join(lines) + "\n")
        for subdir, files in (("zones", zones), ("policies", policies)):
            (self.etc / subdir).mkdir(exist_ok=True)
            for name, xml in files.items():
                (self.etc / subdir / f"{name}.xml").write_text(xml)
        (self.root / "run").mkdir()
        includes = "\n".join(f"  <include>{p}</include>" for p in BUS_POLICIES if p.is_file())
        (self.root / "bus.conf").write_text(_BUS_CONFIG.format(socket=self.socket, includes=includes))
        self.wrapper.parent.mkdir()
        self.wrapper.write_text(
            "#!/bin/sh\n"
            "# firewall-cmd of the unpacked firewalld on this test's bus (tests/helpers/firewalld.py)\n"
            "unset PYTHONHOME\n"
            f"export DBUS_SYSTEM_BUS_ADDRESS='{self.address}'\n"
            f"export PYTHONPATH='{PYTHONPATH}'\n"
            f'exec {SYSTEM_PYTHON} {FIREWALL_CMD} "$@"\n'
        )
        self.wrapper.chmod(0o755)

    def log(self) -> str:
        """firewalld's output (all its runs) and the bus's, for failure messages."""
        parts = []
        for path in (self.log_path, self.bus_log_path):
            text = path.read_text(errors="replace") if path.exists() else "(none)"
            parts.append(f"--- {path.name}\n{text}")
        return "\n".join(parts)

    # --- processes ----------------------------------------------------------------------

    def _spawn(self, argv: list[str], log: Path, env: Mapping[str, str]) -> subprocess.Popen:
        """``argv`` in the namespace; ``ip netns exec`` execs it, so the pid is the daemon's."""
        with log.open("a") as out:
            return subprocess.Popen(
                ["ip", "netns", "exec", self.ns.name, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_daemon_env(env),
                start_new_session=True,  # a ^C of the test run reaches pytest, which then stops us
            )

    def start_bus(self) -> None:
        argv = ["dbus-daemon", f"--config-file={self.root / 'bus.conf'}", "--nofork", "--nopidfile", "--nosyslog"]
        self.bus = self._spawn(argv, self.bus_log_path, {})
        deadline = time.monotonic() + self.timeout
        while not self.socket.exists():
            if self.bus.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dbus-daemon did not come up\n{self.log()}")
            time.sleep(0.05)

    def start(self) -> None:
        """Start firewalld and wait (bounded) until ``firewall-cmd --state`` says running."""
        assert self.proc is None or self.proc.poll() is not None, "firewalld already runs"
        with self.log_path.open("a") as out:
            out.write(f"=== harness: starting firewalld at {time.strftime('%H:%M:%S')}\n")
        argv = [str(SYSTEM_PYTHON), "-c", _LAUNCHER, str(self.root / "run"), str(self.root / "firewalld.pid")]
        argv += [str(FIREWALLD), "--nofork", "--nopid", "--log-target", "console"]
        argv += ["--system-config", str(self.etc), "--default-config", str(DEFAULT_CONFIG)]
        self.proc = self._spawn(
            argv, self.log_path, {"DBUS_SYSTEM_BUS_ADDRESS": self.address, "PYTHONPATH": str(PYTHONPATH)}
        )
        self.wait_running()

    def wait_running(self) -> None:
        deadline = time.monotonic() + self.timeout
        state = ""
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                pytest.fail(f"firewalld exited ({self.proc and self.proc.returncode})\n{self.log()}")
            state = self.run("--state", check=False, timeout=self.timeout).stdout.strip()
            if state == "running":
                return
            time.sleep(0.2)
        pytest.fail(f"firewalld not running after {self.timeout:.0f} s (state {state!r})\n{self.log()}")

    def stop(self) -> None:
        """Stop firewalld (its bus stays): SIGTERM lets it remove its table (CleanupOnExit)."""
        _stop(self.proc)

    def restart(self) -> None:
        """As ``systemctl restart firewalld``: stop, then start from the permanent config."""
        self.stop()
        self.start()

    def close(self) -> None:
        """firewalld first, while its bus is there for its clean-up, then the bus."""
        try:
            _stop(self.proc)
        finally:
            _stop(self.bus)

    # --- firewall-cmd ---------------------------------------------------------------------

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """``firewall-cmd ARGS`` in the namespace (the wrapper: right python, this bus)."""
        return self.ns.run([str(self.wrapper), *args], check=check, timeout=timeout)

    def cmd(self, *args: str) -> str:
        """The output of a ``firewall-cmd ARGS`` that must succeed."""
        return self.run(*args).stdout

    def reload(self) -> None:
        """``firewall-cmd --reload`` (returns once firewalld has reloaded), then check it runs."""
        self.cmd("--reload")
        self.wait_running()


@contextlib.contextmanager
def firewalld_in(
    ns: Netns,
    tmp_path: Path,
    *,
    zones: Mapping[str, str] | None = None,
    policies: Mapping[str, str] | None = None,
    conf: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Iterator[Firewalld]:
    """A running firewalld in ``ns``: ``zones``/``policies`` (name -> XML) go to its
    permanent config before it starts, ``conf`` overrides firewalld.conf (see BASE_CONF).

    Skips (fails in CI) when firewalld cannot run here. Both daemons are stopped on exit,
    also when the test fails.
    """
    need_firewalld()
    root = tmp_path / "firewalld"
    root.mkdir()
    socket = root / "bus.sock"
    short_dir = None
    if len(str(socket)) > 100:  # sun_path holds 108 bytes; pytest's tmp_path can be long
        short_dir = Path(tempfile.mkdtemp(prefix="vfwbus"))
        socket = short_dir / "bus.sock"
    fw = Firewalld(ns, root, socket, timeout)
    try:
        fw.prepare(zones or {}, policies or {}, conf or {})
        fw.start_bus()
        fw.start()
        yield fw
    finally:
        fw.close()
        if short_dir is not None:
            shutil.rmtree(short_dir, ignore_errors=True)
