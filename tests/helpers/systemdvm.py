"""systemd as PID 1 in a VM (the stock kernel of helpers/stockvm.py), for what only systemd
itself can show: how virtfw's units and the firewall-service drop-ins behave when
`systemctl stop|start|restart|reload` runs the real jobs.

`vng --systemd` boots the whole multi-user.target (too slow under QEMU's emulator, and its
mounts are made only in a login on the console). Here systemd boots into one service of
its own making instead: `systemd.run=SCRIPT` (systemd-run-generator) makes
kernel-command-line.service of SCRIPT the default unit, with only sysinit.target and
basic.target in front of it; `systemd.run_success_action=` powers the VM off when it ends.
vng's `--systemd` starts ``/bin/sh -c "mount --bind FSTAB /etc/fstab && ... exec /sbin/init"``
with FSTAB from its configuration (`systemd.fstab` of virtme-ng.conf, read from $HOME): a
private HOME whose configuration ends that command with `exec INIT` runs our INIT instead
as PID 1, which mounts the results directory and execs /lib/systemd/systemd.

What the guest can write: only the results directory (the one read-write share, mounted at
/srv), /run and the kernel. The host's file system is shared read-only; in particular the
guest's /tmp is the host's, read-only (systemd-tmpfiles-setup.service, which would empty a
writable /tmp at boot, is masked all the same). `container=` (empty) in PID 1's environment
keeps systemd from taking the VM for a Docker container (the shared root has /.dockerenv),
and the same options are passed on the kernel command line and as systemd's arguments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import stockvm

#: One boot, every scenario (TCG is slow; Python starts take seconds in the guest).
BOOT_TIMEOUT = 1500

# Units sysinit.target pulls in that the scenarios do not need (time, apparmor, random
# seed, udev's coldplug) or that must not run on a shared /tmp.
MASKED = [
    "systemd-tmpfiles-setup.service", "systemd-tmpfiles-clean.timer", "systemd-tmpfiles-setup-dev.service",
    "apparmor.service", "systemd-timesyncd.service", "systemd-pstore.service", "systemd-udev-trigger.service",
    "systemd-random-seed.service", "systemd-update-utmp.service", "systemd-journal-flush.service",
    "systemd-binfmt.service", "ldconfig.service", "systemd-firstboot.service", "systemd-machine-id-commit.service",
    "e2scrub_reap.service", "getty@.service", "serial-getty@.service", "console-getty.service",
]  # fmt: skip


def missing() -> str | None:
    why = stockvm.missing()
    if why:
        return why
    if (
        not Path("/lib/systemd/systemd").exists()
        or not Path("/lib/systemd/system-generators/systemd-run-generator").exists()
    ):
        return "systemd (with systemd-run-generator) is not installed"
    return None


def virtfw_wrapper(folder: Path, source: Path) -> Path:
    """An executable ``virtfw`` that runs this checkout with this interpreter (the units run
    it by its absolute path)."""
    script = folder / "bin" / "virtfw"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(source)!r})\n"
        "from virtfw.cli.main import main\nmain()\n"
    )
    script.chmod(0o755)
    return script


def boot(folder: Path, scenario: str) -> tuple[str, str]:
    """Boot with systemd as PID 1 running the shell ``scenario`` as its only job; return the
    results file's text (written to $OUT, i.e. /srv/results.txt) and the console's."""
    out = folder / "out"
    out.mkdir(exist_ok=True)
    script = folder / "scenario.sh"
    script.write_text("#!/bin/sh\nOUT=/srv/results.txt\n" + scenario)
    script.chmod(0o755)
    options = [
        f"systemd.run={script}",
        "systemd.run_success_action=poweroff-force",
        "systemd.run_failure_action=poweroff-force",
        "systemd.show_status=1",
        *(f"systemd.mask={unit}" for unit in MASKED),
    ]
    init = folder / "init.sh"
    init.write_text(
        "#!/bin/sh\n"
        "/bin/mount -n -t 9p -o rw,version=9p2000.L,trans=virtio,access=any,msize=524288 virtme.initmount0 /srv\n"
        'echo "INIT $(cut -d" " -f1 /proc/uptime)" > /srv/init.txt\n'
        "export container=\n"
        f"exec /lib/systemd/systemd {' '.join(options)}\n"
    )
    init.chmod(0o755)
    home = folder / "home"
    (home / ".config" / "virtme-ng").mkdir(parents=True, exist_ok=True)
    conf = {
        "default_opts": {},
        "clean_exclude": [],
        "systemd": {"masks": [], "fstab": f"/dev/null /etc/fstab && exec {init} && :"},
    }
    (home / ".config" / "virtme-ng" / "virtme-ng.conf").write_text(json.dumps(conf))
    kernel = stockvm._kernel()
    vng = stockvm._vng() or "vng"
    argv = [
        vng, "--run", str(kernel), "--user", "root", "--memory", "1G", "--cpus", "1",
        "--busybox", str(stockvm._busybox()), "--disable-kvm", "--disable-microvm",
        f"--rwdir=/srv={out}", "--systemd", *(item for option in options for item in ("--append", option)),
    ]  # fmt: skip
    env = {
        **os.environ,
        "HOME": str(home),
        "PATH": f"{Path(vng).parent}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
    }
    try:
        console = subprocess.run(
            argv, capture_output=True, text=True, timeout=BOOT_TIMEOUT, check=False, env=env, stdin=subprocess.DEVNULL
        )
        text = console.stdout + console.stderr
    except subprocess.TimeoutExpired as exc:
        text = f"TIMEOUT after {BOOT_TIMEOUT} s\n" + (exc.stdout or b"").decode(errors="replace")
    (folder / "console.txt").write_text(text)
    results = out / "results.txt"
    return (results.read_text() if results.exists() else ""), text
