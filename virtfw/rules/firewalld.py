"""firewalld, where it runs: which zone a network's bridge is in, through ``firewall-cmd``.

virtfw's own tables do a network's filtering, as on any host. But firewalld's tables sit
beside them and reject, by default, what comes in on an interface of no zone and what is
forwarded between zones that no policy lets through: a guest's DHCP and DNS requests,
and its forwarded traffic (firewalld #397, which made libvirt add a zone of its own). So
where firewalld runs, a network's bridge goes into a zone at net-start (``--change-interface``,
runtime only: virtfw re-applies it rather than edit firewalld's permanent configuration),
and leaves it at net-destroy. Which zone is the network's (``<bridge zone>``) or virtfw's
shipped one (``net.policy.zone_choices``); the zone files are firewalld's to load
(``virtfw install-files``, then ``firewall-cmd --reload``).

Calls go through ``firewall-cmd``, firewalld's own client, found on PATH like every tool:
no ``firewall-cmd`` on PATH means no firewalld to talk to (Debian and Ubuntu hosts
without it pay nothing). Every name passed was checked before (``names.is_zone_name``,
``names.is_ifname``).
"""

from __future__ import annotations

from virtfw.errors import VirtfwError
from virtfw.rules.runner import Result, Runner, find_tool

TOOL = "firewall-cmd"
NOT_RUNNING = 252  # firewall-cmd's exit status when firewalld does not run
_LOAD_ZONES = "virtfw install-files puts virtfw's zones in /etc/firewalld, then firewall-cmd --reload loads them"


class Firewalld:
    """firewalld as one command sees it: whether it runs, and its zones and policies, asked
    once (each ``firewall-cmd`` is a Python process and a D-Bus call)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._running: bool | None = None
        self._names: dict[str, set[str]] = {}

    @property
    def running(self) -> bool:
        """Whether firewalld runs (``firewall-cmd --state``); False without firewall-cmd."""
        if self._running is None:
            result = self._ask("--state") if find_tool(TOOL) is not None else None
            self._running = result is not None and result.returncode == 0 and result.stdout.strip() == "running"
        return self._running

    def _ask(self, *args: str) -> Result:
        return self.runner.run([TOOL, *args], change=False, check=False, quiet=True)

    def _listed(self, option: str) -> set[str]:
        if option not in self._names:
            result = self._ask(option)
            if result.returncode != 0:
                raise VirtfwError(f"firewall-cmd {option} failed: {(result.stderr or result.stdout).strip()}")
            self._names[option] = set(result.stdout.split())
        return self._names[option]

    def pick_zone(self, choices: list[tuple[str, str | None]], explicit: bool, what: str) -> str | None:
        """The first of ``choices`` (zone, and a policy it also needs) that firewalld has;
        None where firewalld does not run and the zone is only virtfw's default. A zone
        asked for by name needs firewalld; a missing zone is an error either way, since the
        bridge would be left to firewalld's default zone, which rejects guests' DHCP."""
        if not choices:
            return None
        if not self.running:
            if explicit:
                raise VirtfwError(
                    f"{what}: <bridge zone='{choices[0][0]}'> needs firewalld, which is not running; "
                    "start firewalld, or remove the zone attribute"
                )
            return None
        for zone, policy in choices:
            if zone in self._listed("--get-zones") and (policy is None or policy in self._listed("--get-policies")):
                return zone
        wanted = choices[-1][0]
        if explicit:
            raise VirtfwError(f"{what}: firewalld has no zone '{wanted}'; define it, or name another in <bridge zone>")
        raise VirtfwError(f"{what}: firewalld has no zone '{wanted}': {_LOAD_ZONES}")

    def zone_of(self, interface: str) -> str | None:
        """The zone firewalld has ``interface`` in at runtime; None for none (or no firewalld)."""
        if not self.running:
            return None
        result = self._ask(f"--get-zone-of-interface={interface}")
        return (result.stdout.strip() or None) if result.returncode == 0 else None

    def put_in_zone(self, interface: str, zone: str) -> None:
        """Put ``interface`` in ``zone`` at runtime (moved from any zone it was in)."""
        result = self.runner.run([TOOL, f"--zone={zone}", f"--change-interface={interface}"], check=False)
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip()
            raise VirtfwError(f"firewalld did not put {interface} in zone '{zone}': {message}")

    def take_out_of_zone(self, interface: str, zone: str) -> bool:
        """Take ``interface`` out of ``zone`` where firewalld has it there; whether it did.
        Only virtfw's own binding goes: an interface someone moved to another zone stays."""
        if not self.running or (not self.runner.dry_run and self.zone_of(interface) != zone):
            return False
        result = self.runner.run([TOOL, f"--zone={zone}", f"--remove-interface={interface}"], check=False)
        return result.returncode == 0
