# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Opens tunnels of one process_group the way the tunnel module does, from a process that imported only what it imports.

The group's host is forked from this process and keeps every module this process imported, so this helper imports
the module's own imports (ansible.module_utils.basic and the tunnel module) and nothing of the benchmark: when it
imported bench_forwarding (asyncio, ssl, hashlib and more), the host it forked counted 7 MiB PSS that the module's
host never has.

Usage: group_module_helper.py JSON, with sys_path (entries to put first), state_dir, group and tunnels (the module
parameters of each tunnel). Prints one JSON report per tunnel.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[0])
    sys.path[:0] = cfg["sys_path"]
    import dataclasses  # noqa: PLC0415 - after sys.path is set, as the module's payload is

    import ansible.module_utils.basic  # noqa: F401, PLC0415 - the module's own imports

    import ansible_collections.burrow.ssh.plugins.modules.tunnel  # noqa: F401, PLC0415
    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel import manage  # noqa: PLC0415
    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration  # noqa: PLC0415

    for params in cfg["tunnels"]:
        tunnel = dataclasses.replace(parse_declaration(params), process_group=cfg["group"])
        outcome = manage.ensure_present(tunnel, cfg["state_dir"], {}, check_mode=False, owner=None)
        print(json.dumps(dict(outcome.report, name=params["name"])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
