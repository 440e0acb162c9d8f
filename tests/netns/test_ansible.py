"""The Ansible collection (etc/ansible): playbooks run with connection=local inside a
namespace the test creates, config and state dirs in tmp_path."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from helpers.nsutil import ROOT, dir_files, netns, run

COLLECTIONS = ROOT / "etc" / "ansible"


def _playbook_command() -> str | None:
    found = os.environ.get("VIRTFW_ANSIBLE_PLAYBOOK")
    if found:
        return found
    beside = Path(sys.executable).parent / "ansible-playbook"
    return str(beside) if beside.exists() else shutil.which("ansible-playbook")


PLAYBOOK = _playbook_command()
pytestmark = pytest.mark.skipif(
    PLAYBOOK is None,
    reason="ansible-core is not installed (pip install -e '.[test]', or VIRTFW_ANSIBLE_PLAYBOOK=path)",
)

NETWORK = """<network><name>ansnet</name><forward mode='nat'/><bridge name='virbr9'/>
<ip address='192.168.99.1' netmask='255.255.255.0'/></network>"""
FILTER = """<filter name='ans-no-ssh' chain='root'><rule action='drop' direction='in' priority='500'>
<tcp dstportstart='22'/></rule></filter>"""


def _play(state_net: str, state_filter: str, common: dict) -> list:
    return [
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "tasks": [
                {"virtfw.virtfw.virtfw_network": {"name": "ansnet", "xml": NETWORK, "state": state_net, **common}},
                {
                    "virtfw.virtfw.virtfw_nwfilter": {
                        "name": "ans-no-ssh",
                        "xml": FILTER,
                        "state": state_filter,
                        **common,
                    }
                },
            ],
        }
    ]


@pytest.fixture
def env(tmp_path):
    with netns("vfwans") as ns:
        wrapper = tmp_path / "virtfw"
        wrapper.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
            "from virtfw.cli.main import main\nmain()\n"
        )
        wrapper.chmod(0o755)
        common = {
            "config_dir": str(tmp_path / "etc"),
            "state_dir": str(tmp_path / "run"),
            "virtfw": str(wrapper),
        }
        (tmp_path / "etc").mkdir(mode=0o700)
        for d in ("ansible-tmp", "ansible-local"):
            (tmp_path / d).mkdir(mode=0o700)

        def playbook(name: str, data: list, *extra: str, fails: bool = False) -> str:
            path = tmp_path / f"{name}.json"  # JSON is YAML
            path.write_text(json.dumps(data))
            argv = ["ip", "netns", "exec", ns.name, "env", f"ANSIBLE_COLLECTIONS_PATH={COLLECTIONS}",
                    "ANSIBLE_STDOUT_CALLBACK=default", "ANSIBLE_NOCOLOR=1", f"ANSIBLE_REMOTE_TMP={tmp_path / 'ansible-tmp'}",
                    f"ANSIBLE_LOCAL_TEMP={tmp_path / 'ansible-local'}", f"HOME={tmp_path}",
                    "ANSIBLE_LOCALHOST_WARNING=false", "ANSIBLE_INVENTORY_UNPARSED_WARNING=false",
                    str(PLAYBOOK), "-i", "localhost,", "-e", "ansible_python_interpreter={{ ansible_playbook_python }}",
                    str(path), *extra]  # fmt: skip
            proc = run(argv, check=False, timeout=300)
            assert (proc.returncode != 0) == fails, proc.stdout[-4000:] + proc.stderr[-2000:]
            return proc.stdout

        def virtfw(*args: str) -> str:
            return ns.sh(str(wrapper), "--config-dir", common["config_dir"], "--state-dir", common["state_dir"], *args)

        try:
            yield playbook, virtfw, tmp_path
        finally:
            ns.run([str(wrapper), "--config-dir", common["config_dir"], "--state-dir", common["state_dir"],
                    "net-destroy", "ansnet"], check=False)  # fmt: skip


def _changed(output: str) -> int:
    """changed=N of localhost in the PLAY RECAP (ansible-core's own callback; its json one
    moved to ansible.posix)."""
    found = re.search(r"^localhost\s*:.*\bchanged=(\d+)", output, re.MULTILINE)
    assert found, output
    return int(found.group(1))


def test_playbook_idempotent_check_diff_absent(env) -> None:
    playbook, virtfw, tmp = env
    first = playbook("up", _up(tmp))
    assert _changed(first) == 2
    listed = json.loads(virtfw("net-list", "--all", "--json"))
    assert any(r["name"] == "ansnet" and r["state"] == "active" for r in listed)
    second = playbook("up", _up(tmp))
    assert _changed(second) == 0, second
    # check mode: a stop and a removal reported, nothing changed
    before = (virtfw("net-list", "--all", "--json"), dir_files(tmp / "etc"), dir_files(tmp / "run"))
    checked = playbook("down", _down(tmp), "--check", "--diff")
    assert _changed(checked) == 2
    after = (virtfw("net-list", "--all", "--json"), dir_files(tmp / "etc"), dir_files(tmp / "run"))
    assert before == after
    # diff: a changed definition shows the XML difference
    changed_play = _up(tmp)
    changed_play[0]["tasks"][0]["virtfw.virtfw.virtfw_network"]["xml"] = NETWORK.replace("nat", "route")
    diffed = playbook("route", changed_play, "--check", "--diff")
    assert '-  <forward mode="nat"/>' in diffed and '+  <forward mode="route"/>' in diffed, diffed
    # absent removes
    gone = playbook("down", _down(tmp))
    assert _changed(gone) == 2
    assert not any(r["name"] == "ansnet" for r in json.loads(virtfw("net-list", "--all", "--json")))
    assert "ans-no-ssh" not in virtfw("nwfilter-list", "--json")


def _common(tmp: Path) -> dict:
    return {"config_dir": str(tmp / "etc"), "state_dir": str(tmp / "run"), "virtfw": str(tmp / "virtfw")}


def _up(tmp: Path) -> list:
    return _play("started", "present", _common(tmp))


def _down(tmp: Path) -> list:
    return _play("absent", "absent", _common(tmp))


def _network_task(tmp: Path, **args) -> list:
    task = {"virtfw.virtfw.virtfw_network": {"name": "ansnet", **args, **_common(tmp)}}
    return [{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [task]}]


def _row(virtfw) -> dict:
    return next(r for r in json.loads(virtfw("net-list", "--all", "--json")) if r["name"] == "ansnet")


def test_src_autostart_restart_stopped_and_a_refused_definition(env) -> None:
    """A definition from a file on the host, marked for autostart; a changed file restarts
    the active network only with restart=true; stopped leaves it defined and inactive; a
    definition virtfw refuses fails the task with virtfw's message and changes nothing.
    Each run again reports no change."""
    playbook, virtfw, tmp = env
    src = tmp / "ansnet.xml"
    src.write_text(NETWORK)
    up = _network_task(tmp, src=str(src), state="started", autostart=True)
    assert _changed(playbook("src", up)) == 1
    row = _row(virtfw)
    assert row["state"] == "active" and row["autostart"], row
    assert _changed(playbook("src", up)) == 0
    # a changed definition: stored, but the running network is left as it runs ...
    src.write_text(NETWORK.replace("nat", "route"))
    assert _changed(playbook("src", up)) == 1
    running = json.loads((tmp / "run" / "networks" / "ansnet.json").read_text())["xml"]
    assert "mode='nat'" in running or 'mode="nat"' in running, running
    # ... until restart=true destroys and starts it again from the new one
    restarted = _network_task(tmp, src=str(src), state="started", autostart=True, restart=True)
    assert _changed(playbook("restart", restarted)) == 1
    running = json.loads((tmp / "run" / "networks" / "ansnet.json").read_text())["xml"]
    assert "mode='route'" in running or 'mode="route"' in running, running
    assert _changed(playbook("restart", restarted)) == 0
    # stopped: defined, not active, still marked
    stopped = _network_task(tmp, state="stopped")
    assert _changed(playbook("stopped", stopped)) == 1
    row = _row(virtfw)
    assert row["state"] == "inactive" and row["autostart"], row
    assert _changed(playbook("stopped", stopped)) == 0
    # a refused definition: the task fails with virtfw's own line; nothing changed
    before = (dir_files(tmp / "etc"), dir_files(tmp / "run"))
    bad = _network_task(tmp, xml=NETWORK.replace("<forward mode='nat'/>", "<forward mode='vepa'/>"), state="present")
    failed = playbook("bad", bad, fails=True)
    assert "forward mode 'vepa'" in failed, failed
    assert (dir_files(tmp / "etc"), dir_files(tmp / "run")) == before
    assert _changed(playbook("down", _network_task(tmp, state="absent"))) == 1
