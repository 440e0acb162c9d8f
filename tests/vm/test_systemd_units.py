"""virtfw's unit and firewall-service drop-ins under a real systemd (PID 1 in a VM).

One boot (helpers/systemdvm.py) runs, with systemd's own jobs:

- the control: the unit as it was (PartOf= the firewall services, no drop-ins).
  `systemctl stop nftables` (ExecStop: `nft flush ruleset`) stops virtfw.service with it,
  `systemctl start nftables` does not start it again: the network runs with no rules;
- the fix: `virtfw install-files` (unit and drop-ins), then for each firewall service
  restart, stop, start and reload, each followed by `virtfw verify` and a look at the
  rules themselves: nftables.service on the nftables backend; on the iptables backend
  stand-ins for iptables.service, ip6tables.service, ebtables.service (restore a ruleset
  file, flush on stop, as Fedora's iptables-services do) and netfilter-persistent.service
  (Debian's: no reload), then nftables.service again;
- a dnsmasq that reload revived inside nftables.service survives that service's stop.

Debian's own /lib/systemd/system/nftables.service is the one used (ProtectSystem=full,
ProtectHome=true: the drop-in's `+` is what lets the virtfw of this checkout run).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import systemdvm
from helpers.nsutil import ROOT

from virtfw.hostfiles import unit_text

pytestmark = pytest.mark.vm

PART_OF = "firewalld.service nftables.service iptables.service ip6tables.service ebtables.service"

IPT_RULES = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
"""

# What Fedora's iptables.init / ip6tables.init / ebtables do, in short: start and reload
# restore the whole saved ruleset (flushing every chain of each table), stop flushes all.
FLUSH = """#!/bin/sh
# stand-in firewall script: TOOL start|stop
tool=$1
case "$2" in
start|reload)
  case $tool in
    ebtables) for t in filter nat broute; do ebtables -t $t -F; ebtables -t $t -X; done
              ebtables -t filter -A INPUT -p ARP -j ACCEPT ;;
    *) $tool-restore < {rules} ;;
  esac ;;
stop)
  case $tool in
    ebtables) for t in filter nat broute; do ebtables -t $t -F; ebtables -t $t -X; done ;;
    *) for t in filter nat mangle raw; do $tool -t $t -F; $tool -t $t -X; done ;;
  esac ;;
esac
"""

STAND_IN = """[Unit]
Description=stand-in {name} (test)
DefaultDependencies=no
Wants=network-pre.target
Before=network-pre.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh {script} {tool} start
{reload}ExecStop=/bin/sh {script} {tool} stop
"""


def _scenario(folder: Path, virtfw: Path) -> str:
    (folder / "rules").write_text(IPT_RULES)
    flush = folder / "fw.sh"
    flush.write_text(FLUSH.format(rules=folder / "rules"))
    units = folder / "units"
    units.mkdir()
    for name, tool, reload in [
        ("iptables", "iptables", True), ("ip6tables", "ip6tables", True), ("ebtables", "ebtables", True),
    ]:  # fmt: skip
        text = STAND_IN.format(
            name=name, script=flush, tool=tool, reload=f"ExecReload=/bin/sh {flush} {tool} reload\n" if reload else ""
        )
        (units / f"{name}.service").write_text(text)
    # netfilter-persistent: iptables-persistent's start restores rules.v4 and rules.v6; with
    # FLUSH_ON_STOP=1 its stop flushes; no reload.
    (units / "netfilter-persistent.service").write_text(
        STAND_IN.format(name="netfilter-persistent", script=flush, tool="iptables", reload="")
        + f"ExecStart=/bin/sh {flush} ip6tables start\nExecStop=/bin/sh {flush} ip6tables stop\n"
    )
    # the unit as it was: PartOf= the firewall services (and no drop-ins)
    unit = (ROOT / "etc" / "systemd" / "virtfw.service").read_text()
    old = unit.replace("\n[Service]\n", f"\nPartOf={PART_OF}\n\n[Service]\n", 1)
    assert old != unit
    (folder / "old-virtfw.service").write_text(unit_text(old, [str(virtfw)]))
    return f"""
V={virtfw}
t() {{ cut -d' ' -f1 /proc/uptime; }}
note() {{ echo "NOTE $(t) $*" >> $OUT; }}
check() {{  # NAME WANT COMMAND...: WANT is yes or no
  name=$1; want=$2; shift 2
  if "$@" > /dev/null 2>&1; then got=yes; else got=no; fi
  echo "CHECK $name $want $got" >> $OUT
}}
nftrules() {{ nft list table ip virtfw_network; }}
iptrules() {{ iptables -t nat -S VIRTFW_PRT && iptables -S VIRTFW_FWO && iptables -S FORWARD | grep -q VIRTFW_FWO; }}
verified() {{ $V verify; }}
note boot $(systemctl is-system-running) pid1=$(cat /proc/1/comm) $(systemd-detect-virt)
systemd-analyze > /srv/analyze.txt 2>&1
mkdir -p /run/systemd/system
cp {units}/*.service /run/systemd/system/
cp {folder}/old-virtfw.service /run/systemd/system/virtfw.service
systemctl daemon-reload
for u in nftables iptables ip6tables ebtables netfilter-persistent; do systemctl start $u; done
note firewall services $(systemctl is-active nftables iptables ip6tables ebtables netfilter-persistent)

# ---- control: the unit with PartOf=, no drop-ins
export VIRTFW_BACKEND=nftables
systemctl start virtfw.service
$V net-start default >> /srv/virtfw.log 2>&1
check old.started yes nftrules
systemctl stop nftables
check old.virtfw-active-after-stop no systemctl is-active virtfw.service
systemctl start nftables
check old.virtfw-active-after-start no systemctl is-active virtfw.service
check old.rules-after-stop-start no nftrules
check old.verify-after-stop-start no verified
note control done

# ---- the fix: install-files writes the unit and the drop-ins
$V install-files --prefix /run/virtfw-prefix --unit-dir /run/systemd/system --firewalld-dir /nonexistent >> /srv/virtfw.log 2>&1
systemctl daemon-reload
systemctl show -p DropInPaths nftables.service > /srv/dropins.txt
systemctl show -p ExecReload nftables.service >> /srv/dropins.txt
systemctl restart virtfw.service
check new.virtfw-start yes systemctl is-active virtfw.service
check new.rules-back yes nftrules
for op in restart stop start reload; do
  systemctl $op nftables.service
  if [ $op = stop ]; then want=no; else want=yes; fi
  check nft.nftables.$op.active $want systemctl is-active nftables.service
  check nft.nftables.$op.rules yes nftrules
  check nft.nftables.$op.verify yes verified
done
note nftables done

# dnsmasq revived by reload inside nftables.service survives that service's stop
pkill -x dnsmasq; sleep 1
check dnsmasq.killed no pidof dnsmasq
systemctl restart nftables.service
check dnsmasq.revived yes pidof dnsmasq
systemctl stop nftables.service
check dnsmasq.survives-stop yes pidof dnsmasq
systemctl start nftables.service

# ---- iptables backend
systemctl set-environment VIRTFW_BACKEND=iptables
export VIRTFW_BACKEND=iptables
$V reload >> /srv/virtfw.log 2>&1
check ipt.switched yes iptrules
# the stand-ins' stop really flushes virtfw's chains (outside systemd: no drop-in runs)
/bin/sh {flush} iptables stop
check ipt.stand-in-stop-flushes no iptrules
$V reload >> /srv/virtfw.log 2>&1
check ipt.reloaded yes iptrules
for u in iptables ip6tables ebtables netfilter-persistent nftables; do
  for op in restart stop start reload; do
    if [ $u = netfilter-persistent ] && [ $op = reload ]; then
      check ipt.$u.reload-not-applicable no systemctl reload $u.service
      continue
    fi
    systemctl $op $u.service
    if [ $op = stop ]; then want=no; else want=yes; fi
    check ipt.$u.$op.active $want systemctl is-active $u.service
    check ipt.$u.$op.rules yes iptrules
    check ipt.$u.$op.verify yes verified
  done
  note $u done
done
check new.virtfw-still-active yes systemctl is-active virtfw.service
journalctl -b --no-pager -o short-monotonic > /srv/journal.txt 2>&1
note end
"""


def test_units_keep_rules_across_firewall_service_jobs(tmp_path: Path) -> None:
    why = systemdvm.missing()
    if why:
        pytest.skip(why)
    virtfw = systemdvm.virtfw_wrapper(tmp_path, ROOT)
    started = time.monotonic()
    results, console = systemdvm.boot(tmp_path, _scenario(tmp_path, virtfw))
    checks = {}
    for line in results.splitlines():
        words = line.split()
        if words[:1] == ["CHECK"] and len(words) == 4:
            checks[words[1]] = (words[2], words[3])
    assert checks, f"no results after {time.monotonic() - started:.0f} s; console: {console[-3000:]}"
    wrong = {name: wanted for name, wanted in checks.items() if wanted[0] != wanted[1]}
    assert "NOTE" in results and results.rstrip().endswith("end"), results
    assert not wrong, results
