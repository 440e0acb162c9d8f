#!/usr/bin/python
# GNU Lesser General Public License v2.1 or later (see https://www.gnu.org/licenses/lgpl-2.1.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: virtfw_network
short_description: Manage virtfw virtual networks
description:
  - Defines, starts, stops, marks for autostart and removes virtual networks with the C(virtfw)
    command line (C(net-define), C(net-start), C(net-destroy), C(net-autostart), C(net-undefine)).
  - Idempotent. The definition given is defined into an empty scratch configuration of its own
    (beside a copy of the stored definitions, so that the UUID and bridge name virtfw would keep or
    pick are the same) and C(net-dumpxml --inactive) of both is compared, so formatting, attribute
    order and defaults make no difference; only a definition that means something else is stored.
version_added: "0.1.0"
options:
  name:
    description: Name of the network; the definition given must have this C(<name>).
    type: str
    required: true
  xml:
    description: The libvirt C(<network>) definition, as text.
    type: str
  src:
    description: Path of a file on the target holding the C(<network>) definition.
    type: path
  state:
    description:
      - C(present) the definition is stored (the network is neither started nor stopped).
      - C(started) it is stored and active; C(stopped) it is stored and not active.
      - C(absent) it is destroyed if active and then undefined.
      - C(xml) or C(src) is needed for a network not defined yet.
    type: str
    choices: [present, absent, started, stopped]
    default: present
  autostart:
    description: Whether the network is marked to start at boot (C(net-autostart)); left as it is when unset.
    type: bool
  restart:
    description:
      - With C(state=present) or C(state=started), destroy and start again an active network whose
        running configuration differs from its (new) stored definition.
      - Without it, a redefinition reaches an active network at its next C(net-start), as with virtfw, and a
        warning says so.
    type: bool
    default: false
extends_documentation_fragment:
  - virtfw.virtfw.virtfw
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author:
  - virtfw developers
"""

EXAMPLES = r"""
- name: A NAT network, started and started at boot
  virtfw.virtfw.virtfw_network:
    name: lab
    xml: |
      <network>
        <name>lab</name>
        <forward mode='nat'/>
        <bridge name='virbr10'/>
        <ip address='192.168.100.1' netmask='255.255.255.0'>
          <dhcp><range start='192.168.100.2' end='192.168.100.254'/></dhcp>
        </ip>
      </network>
    state: started
    autostart: true

- name: From a file already on the host, restarted when its definition changed
  virtfw.virtfw.virtfw_network:
    name: isolated
    src: /srv/networks/isolated.xml
    state: started
    restart: true

- name: Stop the shipped default network
  virtfw.virtfw.virtfw_network:
    name: default
    state: stopped

- name: Remove a network (net-destroy, then net-undefine)
  virtfw.virtfw.virtfw_network:
    name: lab
    state: absent
    config_dir: /etc/virtfw
"""

RETURN = r"""
name:
  description: Name of the network.
  returned: always
  type: str
  sample: lab
status:
  description: State of the network afterwards (in check mode, the state it would have).
  returned: always
  type: str
  sample: active
  choices: [active, inactive, absent]
autostart:
  description: Whether the network is (or would be) marked for autostart.
  returned: always
  type: bool
xml:
  description: The stored definition afterwards, as C(net-dumpxml --inactive) prints it (empty when absent).
  returned: always
  type: str
commands:
  description: The virtfw commands run to make the change (in check mode, the one run with C(--dry-run)).
  returned: always
  type: list
  elements: list
dry_run:
  description: What C(virtfw --dry-run) printed for the first change (check mode only).
  returned: when in check mode and a change would be made
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.virtfw.virtfw.plugins.module_utils.virtfw import (
    COMMON_ARGS,
    Virtfw,
    apply,
    definition_file,
    xml_name,
)


def canonical(vf, module, name, path, rows):
    """What ``net-define path`` would store, as ``net-dumpxml --inactive`` prints it: defined
    into a scratch configuration holding the stored definitions (their UUIDs and bridges decide
    the UUID kept and the bridge picked, and conflicts are refused as they would be)."""
    scratch = vf.scratch()
    networks = scratch.config_dir + "/networks"
    os.mkdir(networks, 0o700)
    for row in rows:
        if row.get("persistent") and row.get("state") != "broken":
            rc, text, _ = vf.run(["net-dumpxml", "--inactive", row["name"]], fail=False)
            if rc == 0:
                with open(os.path.join(networks, row["name"] + ".xml"), "w") as handle:
                    handle.write(text)
    scratch.run(["-q", "net-define", path])
    return scratch.out(["net-dumpxml", "--inactive", name])


def describe(status, autostart):
    return "status: {}\nautostart: {}\n".format(status, "yes" if autostart else "no")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name={"type": "str", "required": True},
            xml={"type": "str"},
            src={"type": "path"},
            state={"type": "str", "default": "present", "choices": ["present", "absent", "started", "stopped"]},
            autostart={"type": "bool"},
            restart={"type": "bool", "default": False},
            **COMMON_ARGS,
        ),
        mutually_exclusive=[("xml", "src")],
        supports_check_mode=True,
    )
    params = module.params
    name, state = params["name"], params["state"]
    vf = Virtfw(module)

    rows = vf.json(["net-list", "--all", "--json"])
    row = next((r for r in rows if r.get("name") == name), None)
    defined = bool(row and row.get("persistent"))
    active = bool(row and row.get("state") == "active")
    was_autostart = bool(row and row.get("autostart"))
    before = vf.out(["net-dumpxml", "--inactive", name]) if defined else ""
    before_status = "active" if active else "inactive" if defined else "absent"

    commands = []
    after, status, autostart = before, before_status, was_autostart
    if state == "absent":
        if active:
            commands.append(["net-destroy", name])
        if defined:
            commands.append(["net-undefine", name])
        after, status, autostart = "", "absent", False
    else:
        if params["xml"] is not None or params["src"] is not None:
            path = definition_file(module, params["xml"], params["src"])
            found = xml_name(path)
            if found is not None and found != name:
                module.fail_json(msg=f"the definition is of network '{found}', not '{name}'")
            after = canonical(vf, module, name, path, rows)
            if after != before:
                commands.append(["net-define", path])
        elif not defined:
            module.fail_json(msg=f"network '{name}' is not defined: give its definition (xml or src)")
        if status == "absent":
            status = "inactive"
        if params["autostart"] is not None and params["autostart"] != was_autostart:
            commands.append(["net-autostart", name] + ([] if params["autostart"] else ["--disable"]))
            autostart = params["autostart"]
        running = vf.out(["net-dumpxml", name]) if active else None
        if state == "started" and not active:
            commands.append(["net-start", name])
            status = "active"
        elif state == "stopped" and active:
            commands.append(["net-destroy", name])
            status = "inactive"
        elif active and running != after:
            if params["restart"]:
                commands += [["net-destroy", name], ["net-start", name]]
            else:
                module.warn(
                    f"network '{name}' is active with another configuration than its stored definition: "
                    "it takes effect at the next net-start (restart=true does that)"
                )

    dry_run = apply(vf, module, commands)
    if commands and not module.check_mode:
        rows = vf.json(["net-list", "--all", "--json"])
        row = next((r for r in rows if r.get("name") == name), None)
        after = vf.out(["net-dumpxml", "--inactive", name]) if row and row.get("persistent") else ""
        status = "absent" if not row else row.get("state", "inactive")
        autostart = bool(row and row.get("autostart"))
    result = {
        "changed": bool(commands),
        "name": name,
        "status": status,
        "autostart": autostart,
        "xml": after,
        "commands": vf.commands,
    }
    if dry_run is not None:
        result["dry_run"] = dry_run
    if module._diff:
        result["diff"] = [
            {
                "before": before,
                "after": after,
                "before_header": f"network {name} (stored definition)",
                "after_header": f"network {name} (stored definition)",
            },
            {
                "before": describe(before_status, was_autostart),
                "after": describe(status, autostart),
                "before_header": f"network {name}",
                "after_header": f"network {name}",
            },
        ]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
