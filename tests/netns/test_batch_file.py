"""nft's batch as an in-memory file (issue 11), with the real nft, in a namespace.

``nft -j -e -a -f PATH`` reads PATH twice (JSON parser first, then its own): the batch
must be re-readable from the start, leave no file behind, and an nft syntax error must
name the batch line, never a temp file's path.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from helpers.nsutil import ROOT, netns

PROBE = r"""
import json, sys
from virtfw.errors import ToolError
from virtfw.rules.runner import Runner
runner, argv = Runner(), ["nft", "-j", "-e", "-a", "-f"]
good = runner.run_file(argv, "add table inet vfwbatch\nadd chain inet vfwbatch c\nadd rule inet vfwbatch c counter accept\n")
try:
    runner.run_file(argv, "add table inet vfwbatch\nadd rule inet vfwbatch c bogus thing\n")
    bad = None
except ToolError as exc:
    bad = str(exc)
print(json.dumps({"echo": json.loads(good.stdout), "error": bad}))
"""


def _batch_files() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("virtfw-")}


def test_real_nft_reads_the_batch_and_its_error_names_the_line() -> None:
    before = _batch_files()
    with netns("vfwB") as ns:
        done = ns.run(["env", f"PYTHONPATH={ROOT}", sys.executable, "-c", PROBE], check=False)
        assert done.returncode == 0, done.stderr
        found = json.loads(done.stdout)
        listed = ns.run(["nft", "list", "table", "inet", "vfwbatch"], check=False)
    rules = [item["add"]["rule"] for item in found["echo"]["nftables"] if "rule" in item.get("add", {})]
    assert len(rules) == 1 and rules[0]["handle"] > 0  # applied, and echoed with its handle
    assert "counter" in listed.stdout
    error = found["error"]
    assert error and error.startswith("nft failed: batch line 2 (add rule inet vfwbatch c bogus thing): Error:")
    assert "/tmp/" not in error and "/proc/self/fd" not in error
    assert _batch_files() == before
