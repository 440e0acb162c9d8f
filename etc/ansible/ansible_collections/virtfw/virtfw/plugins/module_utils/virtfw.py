# Shared code of the virtfw modules: running the virtfw command line, and canonical forms.
# GNU Lesser General Public License v2.1 or later (see https://www.gnu.org/licenses/lgpl-2.1.txt)

from __future__ import annotations

import json
import os
import tempfile
import xml.etree.ElementTree as ET

COMMON_ARGS = {
    "config_dir": {"type": "path"},
    "state_dir": {"type": "path"},
    "backend": {"type": "str", "choices": ["nftables", "iptables"]},
    "virtfw": {"type": "path"},
}


def error_line(stderr, stdout=""):
    """virtfw's one ``error:`` line, else the last line it printed."""
    for line in (stderr or "").splitlines():
        if line.startswith("error:"):
            return line.strip()
    lines = [line for line in ((stderr or "") + "\n" + (stdout or "")).splitlines() if line.strip()]
    return lines[-1].strip() if lines else "virtfw failed without a message"


def xml_name(path):
    """The <name> of the document at ``path``, or None when it cannot be read here (virtfw
    then says why, in its own words)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return None
    found = root.find("name")
    return found.text.strip() if found is not None and found.text else None


class Virtfw:
    """The virtfw command line on the target, with the module's directories and backend."""

    def __init__(self, module, config_dir=None, state_dir=None):
        self.module = module
        params = module.params
        self.command = params.get("virtfw") or module.get_bin_path(
            "virtfw", required=True, opt_dirs=["/usr/local/bin", "/usr/local/sbin", "/opt/virtfw/bin"]
        )
        self.config_dir = config_dir if config_dir is not None else params.get("config_dir")
        self.state_dir = state_dir if state_dir is not None else params.get("state_dir")
        self.backend = params.get("backend")
        self.commands = []  # every changing command run (argv), for the result

    def argv(self, args, dry_run=False):
        argv = [self.command]
        if self.config_dir:
            argv += ["--config-dir", self.config_dir]
        if self.state_dir:
            argv += ["--state-dir", self.state_dir]
        if self.backend:
            argv += ["--backend", self.backend]
        if dry_run:
            argv.append("--dry-run")
        return argv + list(args)

    def run(self, args, dry_run=False, fail=True):
        argv = self.argv(args, dry_run)
        rc, out, err = self.module.run_command(argv, check_rc=False, environ_update={"NO_COLOR": "1"})
        if rc != 0 and fail:
            self.module.fail_json(msg=error_line(err, out), rc=rc, cmd=argv, stdout=out, stderr=err)
        return rc, out, err

    def out(self, args):
        return self.run(args)[1]

    def json(self, args):
        text = self.out(args)
        try:
            return json.loads(text)
        except ValueError:
            self.module.fail_json(msg="virtfw printed no JSON for {}".format(" ".join(args)), stdout=text)

    def change(self, args, dry_run=False):
        """A command that changes something (with --dry-run in check mode); recorded."""
        self.commands.append(self.argv(args, dry_run))
        return self.run(args, dry_run)[1]

    def scratch(self):
        """The same virtfw over empty directories of its own under the module's temporary
        directory: what a definition becomes, defined there, is compared with what is stored."""
        top = tempfile.mkdtemp(prefix="virtfw-scratch-", dir=self.module.tmpdir)
        os.chmod(top, 0o700)
        config, state = os.path.join(top, "etc"), os.path.join(top, "run")
        for folder in (config, state):
            os.mkdir(folder, 0o700)
        return Virtfw(self.module, config_dir=config, state_dir=state)


def definition_file(module, xml, src):
    """The path of the definition: ``src`` as given, or ``xml`` written to a private file."""
    if src is not None:
        return src
    fd, path = tempfile.mkstemp(prefix="virtfw-", suffix=".xml", dir=module.tmpdir)
    with os.fdopen(fd, "w") as handle:
        handle.write(xml)
    return path


def apply(vf, module, commands):
    """Run ``commands`` in order; in check mode, only the first, with --dry-run (those after it
    depend on it having been done). Returns the dry run's output in check mode."""
    if not commands:
        return None
    if module.check_mode:
        return vf.change(commands[0], dry_run=True)
    for args in commands:
        vf.change(args)
    return None
