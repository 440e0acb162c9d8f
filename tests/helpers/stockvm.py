"""A stock distribution kernel under QEMU, for what this machine's kernel cannot do.

The machines the suite runs on have a kernel without bridge connection tracking or
bridge reject; Debian's stock kernel has both. ``virtme-ng`` (``vng``) boots it on
QEMU's emulator (nested KVM hangs here) with the host's file system shared read-only
and ``/tmp`` writable, so the host's own ``ip``, ``nft`` and iptables run inside.

Python is slow in that guest (seconds per start), so virtfw does not run there: the
host renders each binding's batches exactly as virtfw would apply them on such a kernel
(through the fake runner, whose kernel has the features), and one guest script per
boot builds namespaces, applies the batches with the real tools and sends traffic with
a static busybox, writing one ``CHECK name wanted got`` line per probe. Every VM test of
a session shares one boot.

Found (or the tests skip, saying what is missing): ``vng`` on PATH or in /opt/vng/bin,
a kernel ``/boot/vmlinuz-*`` whose modules are installed, a static busybox
(``VIRTFW_VM_BUSYBOX`` or /opt/bbs/bin/busybox), ``qemu-system-x86_64``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

#: How long one boot with every scenario may take, at most (the emulator is slow).
BOOT_TIMEOUT = 900


def _vng() -> str | None:
    return shutil.which("vng") or next((str(p) for p in [Path("/opt/vng/bin/vng")] if p.exists()), None)


def _kernel() -> Path | None:
    for image in sorted(Path("/boot").glob("vmlinuz-*"), reverse=True):
        if (Path("/lib/modules") / image.name.removeprefix("vmlinuz-") / "kernel").is_dir():
            return image
    return None


def _busybox() -> Path | None:
    path = Path(os.environ.get("VIRTFW_VM_BUSYBOX", "/opt/bbs/bin/busybox"))
    return path if path.is_file() else None


def missing() -> str | None:
    """What is missing to boot the stock kernel here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    needs = {
        "vng (pip install virtme-ng)": _vng(),
        "a kernel with modules in /boot (apt-get install linux-image-amd64)": _kernel(),
        "a static busybox (busybox-static, unpacked to /opt/bbs)": _busybox(),
        "qemu-system-x86_64 (apt-get install qemu-system-x86)": shutil.which("qemu-system-x86_64"),
    }
    absent = [what for what, found in needs.items() if not found]
    return "stock-kernel VM unavailable: missing " + ", ".join(absent) if absent else None


# The guest's shell library: fresh namespaces, probes, one CHECK line per probe.
PRELUDE = r"""
BB={busybox}
OUT={out}
: > $OUT
for m in nf_conntrack_bridge nft_ct nft_connlimit veth bridge br_netfilter; do modprobe $m 2>>$OUT.log; done
uname -r > $OUT.kernel
fresh() {{  # host h with bridge br0; guests g1 (port vg1, .10, MAC ...:01) and g2 (vg2, .11, ...:02)
  for n in h g1 g2; do ip netns del $n 2>/dev/null; ip netns add $n; ip -n $n link set lo up; done
  ip -n h link add br0 type bridge stp_state 0 forward_delay 0
  ip -n h link set br0 up
  ip netns exec h sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0
  for i in 1 2; do
    ip -n h link add vg$i type veth peer name eth0 netns g$i
    ip -n h link set vg$i master br0 up
    ip -n g$i addr add 192.168.131.1$((i-1))/24 dev eth0
    ip -n g$i link set eth0 address 52:54:00:00:00:0$i
    ip -n g$i link set eth0 up
  done
  sleep 1
}}
check() {{  # NAME WANT COMMAND...: WANT is pass or block
  name=$1; want=$2; shift 2
  if "$@"; then got=pass; else got=block; fi
  echo "CHECK $name $want $got" >> $OUT
}}
note() {{ echo "NOTE $*" >> $OUT; }}
tcp() {{  # SRC-NS DST-NS DST-IP PORT [SPORT]: a connection that carries the listener's banner
  ip netns exec $2 $BB nc -l -p $4 -e /bin/uname > /dev/null 2>&1 &
  l=$!; sleep 1
  if [ -n "$5" ]; then
    got=$(ip netns exec $1 $BB nc -w 3 -p $5 $3 $4 < /dev/null 2>/dev/null)
  else
    got=$(ip netns exec $1 $BB nc -w 3 $3 $4 < /dev/null 2>/dev/null)
  fi
  kill $l 2>/dev/null; wait $l 2>/dev/null
  [ -n "$got" ]
}}
hold() {{  # SRC-NS DST-NS DST-IP PORT: a connection left open in the background (both ends'
  # stdin stay open: an end that reads EOF closes the connection)
  (sleep 60 | ip netns exec $2 $BB nc -l -p $4 > /dev/null 2>&1 &)
  sleep 1
  (sleep 60 | ip netns exec $1 $BB nc $3 $4 > /dev/null 2>&1 &)
  sleep 1
}}
ping1() {{ ip netns exec $1 $BB ping -c 1 -W 2 $2 > /dev/null 2>&1; }}
apply() {{  # FILE: an nft batch in h
  if ip netns exec h nft -f $1 2>>$OUT.log; then echo "APPLIED $1" >> $OUT; else echo "REFUSED $1" >> $OUT; fi
}}
"""


@dataclass
class GuestScript:
    """The scenarios of one boot: shell lines, and the batch files they apply."""

    folder: Path
    lines: list[str] = field(default_factory=list)
    batches: int = 0

    def batch(self, text: str) -> str:
        self.batches += 1
        path = self.folder / f"batch-{self.batches}.nft"
        path.write_text(text)
        return str(path)

    def replay(self, commands: list[tuple[list[str], str]]) -> None:
        """Lines that run COMMANDS in namespace h, each with its stdin, as one APPLIED/REFUSED."""
        for argv, stdin in commands:
            self.batches += 1
            path = self.folder / f"stdin-{self.batches}.txt"
            path.write_text(stdin)
            line = " ".join(shlex.quote(word) for word in argv)
            self.lines.append(
                f'if ip netns exec h {line} < {path} 2>>$OUT.log; then echo "APPLIED {path}" >> $OUT; '
                f'else echo "REFUSED {path}" >> $OUT; fi'
            )

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def run(self) -> dict[str, tuple[str, str]]:
        """Boot, run every scenario, and return {check: (wanted, got)} (plus APPLIED/REFUSED)."""
        out = self.folder / "results.txt"
        script = self.folder / "guest.sh"
        script.write_text(PRELUDE.format(busybox=_busybox(), out=out) + "\n".join(self.lines) + "\n")
        kernel = _kernel()
        assert kernel is not None
        argv = [
            _vng() or "vng", "--run", str(kernel), "--user", "root", "--memory", "1G", "--cpus", "1",
            "--busybox", str(_busybox()), "--disable-kvm", "--disable-microvm", "--rwdir", "/tmp",
            "--exec", f"sh {script}",
        ]  # fmt: skip
        vng_dir = str(Path(argv[0]).parent)  # vng runs virtme-run from beside itself
        env = {**os.environ, "PATH": f"{vng_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}
        console = subprocess.run(argv, capture_output=True, text=True, timeout=BOOT_TIMEOUT, check=False, env=env)
        (self.folder / "console.txt").write_text(console.stdout + console.stderr)
        if not out.exists():
            raise AssertionError(f"the VM wrote no results (vng exit {console.returncode}): {console.stderr[-2000:]}")
        results: dict[str, tuple[str, str]] = {}
        for line in out.read_text().splitlines():
            words = line.split()
            if words and words[0] == "CHECK" and len(words) == 4:
                results[words[1]] = (words[2], words[3])
            elif words and words[0] in ("APPLIED", "REFUSED"):
                results[f"batch:{Path(words[1]).name}"] = ("APPLIED", words[0])
        return results


# ---- what virtfw would apply on such a kernel ------------------------------------------

SHIPPED = Path(__file__).resolve().parents[2] / "etc" / "nwfilter"


def port_rules(filters: list[str], root: str, port: str, mac: str, params: dict[str, list[str]] | None = None):
    """The PortRules virtfw instantiates for a binding of ``root`` (XML texts in ``filters``,
    and the shipped filters for any filterref)."""
    from virtfw.filter.instantiate import instantiate
    from virtfw.filter.model import Binding
    from virtfw.filter.xml import parse_filter

    defined = {f.name: f for f in (parse_filter(text, "test filter") for text in filters)}

    def lookup(name: str):
        if name in defined:
            return defined[name]
        return parse_filter((SHIPPED / f"{name}.xml").read_bytes(), f"{name}.xml")

    return instantiate(Binding(portdev=port, mac=mac, filter=root, params=dict(params or {})), lookup)


def changes(rules, backend: str) -> list[tuple[list[str], str]]:
    """Every changing command (argv, stdin) a filter backend runs for these PortRules on an
    empty host whose kernel has what the rules need (the fake runner's host)."""
    from helpers.fakerunner import FakeRunner
    from virtfw.rules.backend import load_filter_backend

    runner = FakeRunner()
    load_filter_backend(backend).install(runner, [rules])
    return [(call.argv, call.text or "") for call in runner.calls if call.change]


def nft_batch(rules) -> str:
    """The one ``nft -f`` batch the nftables backend applies for these PortRules on an empty
    host whose kernel has bridge conntrack (the fake runner's kernel)."""
    from helpers.fakerunner import FakeRunner
    from virtfw.rules.nft.filter import NftFilterBackend

    runner = FakeRunner()
    NftFilterBackend().install(runner, [rules])
    applied = [call.text or "" for call in runner.calls if call.change and call.argv == ["nft", "-f", "-"]]
    assert len(applied) == 1, applied
    return applied[0]
