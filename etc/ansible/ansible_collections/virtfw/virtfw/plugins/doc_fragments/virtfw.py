# Options shared by the virtfw modules.
# GNU Lesser General Public License v2.1 or later (see https://www.gnu.org/licenses/lgpl-2.1.txt)

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  config_dir:
    description:
      - virtfw's configuration directory (C(--config-dir)).
      - Default is virtfw's own (C(/etc/virtfw) for root).
    type: path
  state_dir:
    description:
      - virtfw's state directory (C(--state-dir)).
      - Default is virtfw's own (C(/run/virtfw) for root).
    type: path
  backend:
    description:
      - The firewall backend (C(--backend)).
      - Default is virtfw's choice (C(firewall_backend) of C(network.conf), else nftables when C(nft) is present).
    type: str
    choices: [nftables, iptables]
  virtfw:
    description:
      - Path of the C(virtfw) command on the target.
      - Default is C(virtfw) found on C(PATH) (and the usual sbin directories).
    type: path
requirements:
  - virtfw on the managed host
notes:
  - Every command is run with an argument list, never through a shell.
  - When virtfw refuses a request, the task fails with virtfw's one C(error:) line as its message.
  - Check mode runs the first change that would be made with virtfw's C(--dry-run) (which validates it
    against the current state and changes nothing) and leaves out the changes that depend on it.
"""
