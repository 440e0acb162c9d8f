"""What the running kernel's bridge family can do, probed once and remembered.

Filters mean what they say or are refused: a stateful layer-3 rule needs connection
tracking in the bridge family (``nf_conntrack_bridge``), ``connlimit-above`` needs
``ct count`` there too. Whether the kernel has them is asked with one ``nft -c``
(check only: the kernel validates the batch and keeps nothing) the first time a rule
needs it, and the answer is kept in the state dir, keyed by the boot and by the set
of loaded modules, so that a ``modprobe`` (or a reboot) is noticed without a process:
later commands read one small file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from virtfw.errors import VirtfwError
from virtfw.rules.runner import Runner

# Each feature: the nft statement that needs it, and what the kernel needs for it.
FEATURES: dict[str, tuple[str, str]] = {
    "conntrack": ("ct state established accept", "connection tracking in the bridge family (nf_conntrack_bridge)"),
    "ct_count": ("ct count over 1 drop", "connection counting in the bridge family (nft_connlimit)"),
}

_PROBE_TABLE = "virtfw_probe"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
MODULES = Path("/proc/modules")


def describe(feature: str) -> str:
    return FEATURES[feature][1]


def _probe_batch(features: list[str]) -> str:
    rules = "\n".join(FEATURES[f][0] for f in features)
    return (
        f"table bridge {_PROBE_TABLE} {{\n"
        "chain probe {\ntype filter hook prerouting priority 0; policy accept;\n"
        f"{rules}\n}}\n}}\n"
    )


def probe(runner: Runner) -> dict[str, bool]:
    """Ask the kernel (``nft -c``: nothing is kept): one process when it has everything."""

    def holds(features: list[str]) -> bool:
        return (
            runner.run(["nft", "-c", "-f", "-"], stdin=_probe_batch(features), change=False, check=False).returncode
            == 0
        )

    names = list(FEATURES)
    if holds(names):
        return dict.fromkeys(names, True)
    if not holds([]):  # not even an empty bridge chain: nft cannot ask the kernel (privileges?)
        if runner.dry_run:
            return dict.fromkeys(names, True)  # print what a capable kernel would be given
        raise VirtfwError("cannot ask the kernel what its bridge family supports (nft -c fails); are you root?")
    return {name: holds([name]) for name in names}


def _kernel_key() -> str:
    """Changes with a reboot and with every module loaded or unloaded."""
    try:
        boot = BOOT_ID.read_text().strip()
    except OSError:
        boot = "?"
    try:
        modules = hashlib.sha256(" ".join(line.split()[0] for line in MODULES.read_text().splitlines()).encode())
        loaded = modules.hexdigest()[:16]
    except (OSError, IndexError):
        loaded = "none"  # a kernel without loadable modules: what it has is built in
    return f"{boot} {loaded}"


@dataclass
class KernelFeatures:
    """The probe's answers, cached in ``path`` (a state-dir file virtfw writes itself)."""

    path: Path | None
    _known: dict[str, bool] | None = None

    def has(self, runner: Runner, feature: str) -> bool:
        if self._known is None:
            self._known = self._cached() or self._probed(runner)
        return self._known.get(feature, False)

    def _cached(self) -> dict[str, bool] | None:
        if self.path is None:
            return None
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        # Trust nothing read back: exactly our keys, booleans only, this kernel's key.
        if not isinstance(data, dict) or data.get("kernel") != _kernel_key():
            return None
        found = data.get("features")
        if not isinstance(found, dict) or set(found) != set(FEATURES):
            return None
        if not all(isinstance(value, bool) for value in found.values()):
            return None
        return dict(found)

    def _probed(self, runner: Runner) -> dict[str, bool]:
        found = probe(runner)
        if self.path is not None and not runner.dry_run:
            from virtfw.statefiles import write_json

            try:
                write_json(self.path, {"kernel": _kernel_key(), "features": found}, durable=False)
            except OSError:
                pass  # the answer is still right for this command; the next one asks again
        return found


WAYS_OUT = (
    "load the module (modprobe nf_conntrack_bridge, or nft_connlimit for connlimit-above), "
    "or use --backend iptables (its physdev rules track connections on any kernel)"
)


def needs_message(feature: str, what: str) -> str:
    """One line: the rule, what it needs, that this kernel lacks it, and the ways out."""
    return f"{what} needs {describe(feature)}, which this kernel does not have; {WAYS_OUT}"


def cache_path(state_dir: Path) -> Path:
    from virtfw.statefiles import KERNEL_CACHE  # written without the lock: see sweep_leftovers

    return state_dir / KERNEL_CACHE
