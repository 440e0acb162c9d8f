#!/usr/bin/python
# GNU Lesser General Public License v2.1 or later (see https://www.gnu.org/licenses/lgpl-2.1.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: virtfw_nwfilter
short_description: Manage virtfw network filters
description:
  - Defines and removes network filters (libvirt's nwfilter language) with the C(virtfw) command line
    (C(nwfilter-define), C(nwfilter-undefine)).
  - Idempotent. The filter given is defined into an empty scratch configuration of its own (beside the
    stored filter of that name, so that the UUID virtfw would keep is the same) and C(nwfilter-dumpxml)
    of both is compared, so formatting and spelled-out defaults make no difference. Only a filter that
    means something else is defined, since defining one re-instantiates every binding that uses it.
version_added: "0.1.0"
options:
  name:
    description: Name of the filter; the definition given must have this C(name) attribute.
    type: str
    required: true
  xml:
    description: The C(<filter>) definition, as text.
    type: str
  src:
    description: Path of a file on the target holding the C(<filter>) definition.
    type: path
  state:
    description:
      - C(present) the filter is defined as given (C(xml) or C(src) required).
      - C(absent) it is undefined (refused by virtfw while a binding or another filter uses it,
        and for filters only shipped with virtfw).
    type: str
    choices: [present, absent]
    default: present
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
- name: Block SSH to guests
  virtfw.virtfw.virtfw_nwfilter:
    name: no-ssh
    xml: |
      <filter name='no-ssh' chain='root'>
        <rule action='drop' direction='in' priority='500'>
          <tcp dstportstart='22'/>
        </rule>
        <filterref filter='clean-traffic'/>
      </filter>

- name: Remove it
  virtfw.virtfw.virtfw_nwfilter:
    name: no-ssh
    state: absent
"""

RETURN = r"""
name:
  description: Name of the filter.
  returned: always
  type: str
  sample: no-ssh
xml:
  description: The filter afterwards, as C(nwfilter-dumpxml) prints it (empty when absent).
  returned: always
  type: str
commands:
  description: The virtfw commands run to make the change (in check mode, the one run with C(--dry-run)).
  returned: always
  type: list
  elements: list
dry_run:
  description: What C(virtfw --dry-run) printed (check mode only), including the bindings it would re-instantiate.
  returned: when in check mode and a change would be made
  type: str
"""

import os
import xml.etree.ElementTree as ET

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.virtfw.virtfw.plugins.module_utils.virtfw import (
    COMMON_ARGS,
    Virtfw,
    apply,
    definition_file,
)


def filter_name(path):
    try:
        return ET.parse(path).getroot().get("name")
    except (ET.ParseError, OSError):
        return None


def canonical(vf, name, path, before):
    """What ``nwfilter-define path`` would store, as ``nwfilter-dumpxml`` prints it."""
    scratch = vf.scratch()
    folder = os.path.join(scratch.config_dir, "nwfilter")
    os.mkdir(folder, 0o700)
    if before:
        with open(os.path.join(folder, name + ".xml"), "w") as handle:
            handle.write(before)  # the UUID of the stored filter is kept by a definition without one
    scratch.run(["-q", "nwfilter-define", path])
    return scratch.out(["nwfilter-dumpxml", name])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name={"type": "str", "required": True},
            xml={"type": "str"},
            src={"type": "path"},
            state={"type": "str", "default": "present", "choices": ["present", "absent"]},
            **COMMON_ARGS,
        ),
        mutually_exclusive=[("xml", "src")],
        required_if=[("state", "present", ("xml", "src"), True)],
        supports_check_mode=True,
    )
    params = module.params
    name, state = params["name"], params["state"]
    vf = Virtfw(module)

    rows = vf.json(["nwfilter-list", "--json"])
    row = next((r for r in rows if r.get("name") == name), None)
    before = vf.out(["nwfilter-dumpxml", name]) if row and not row.get("broken") else ""

    commands = []
    if state == "absent":
        after = ""
        if row:
            commands.append(["nwfilter-undefine", name])
    else:
        path = definition_file(module, params["xml"], params["src"])
        found = filter_name(path)
        if found is not None and found != name:
            module.fail_json(msg=f"the definition is of filter '{found}', not '{name}'")
        after = canonical(vf, name, path, before)
        if after != before:
            commands.append(["nwfilter-define", path])

    dry_run = apply(vf, module, commands)
    if commands and not module.check_mode:
        rows = vf.json(["nwfilter-list", "--json"])
        row = next((r for r in rows if r.get("name") == name), None)
        after = vf.out(["nwfilter-dumpxml", name]) if row and not row.get("broken") else ""
    result = {"changed": bool(commands), "name": name, "xml": after, "commands": vf.commands}
    if dry_run is not None:
        result["dry_run"] = dry_run
    if module._diff:
        result["diff"] = {
            "before": before,
            "after": after,
            "before_header": f"nwfilter {name}",
            "after_header": f"nwfilter {name}",
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
