#!/usr/bin/python
# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: tunnel_info
short_description: Report the tunnels of burrow.ssh on a host, with an optional end-to-end probe
version_added: 0.1.0
description:
  - Lists the tunnels started by M(burrow.ssh.tunnel) for the current user on the host that runs the task,
    with their status, bound addresses and ports, traffic counters, reconnects and last error.
  - With O(probe=true), checks every forward end to end and reports success and latency, or what failed. A forward
    with a C(probe) (see M(burrow.ssh.tunnel)) speaks that protocol (PostgreSQL, MySQL, Redis, HTTP, TLS, SSH) and
    reports what answered; a local forward without one opens a channel to its destination (TCP level). Local forwards
    are probed through the SSH channel, remote forwards at their local destination, SOCKS forwards through their
    listener to C(probe_target). Probes run at once, each within its timeout.
  - Finds orphans (state whose process is gone) and reports them as V(stale). It never changes anything.
author:
  - burrow.ssh team (@burrow-ssh)
requirements:
  - paramiko >= 3.4 on the host that runs the tunnels
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: N/A
    description: Changes nothing, so there is no diff.
  platform:
    support: full
    platforms: posix
    description: Any POSIX host with Python and paramiko.
  action_group:
    support: full
    description: Use C(group/burrow.ssh.tunnels) in C(module_defaults) to set O(state_dir) once.
    membership:
      - burrow.ssh.tunnels
options:
  name:
    description: The tunnel to report. Omitted, every tunnel of this user on this host.
    type: str
  probe:
    description: Check every forward end to end.
    type: bool
    default: false
  state_dir:
    description: Where the tunnels' state lives; see M(burrow.ssh.tunnel).
    type: path
seealso:
  - module: burrow.ssh.tunnel
"""

EXAMPLES = r"""
- name: Is the database tunnel up, and does the database answer through it?
  burrow.ssh.tunnel_info:
    name: appdb
    probe: true
  delegate_to: localhost
  register: info

- name: Fail when the destination does not answer
  ansible.builtin.assert:
    that: info.tunnels[0].probe | selectattr('ok', 'equalto', false) | list | length == 0

- name: All tunnels on the controller
  burrow.ssh.tunnel_info:
  delegate_to: localhost
  register: all_tunnels
"""

RETURN = r"""
summary:
  description: One line per tunnel for a person to read (also in C(msg), which C(-v) shows).
  returned: always
  type: list
  elements: str
  sample:
    - "appdb: up 2h5m via ops@bastion:22; -L 127.0.0.1:43512 -> db.internal:5432; 3 connections (1 active); used by alice (3, 885.3 kB), last 2m ago"
tunnels:
  description: One entry per tunnel found (a named tunnel that does not exist is reported with status V(absent)).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The tunnel's name.
      type: str
      sample: appdb
    status:
      description: V(up), V(reconnecting), V(down), V(stale) (process gone or not answering) or V(absent).
      type: str
      sample: up
    pid:
      description: The tunnel process (for a tunnel with a C(process_group), the group's host process).
      type: int
      sample: 41234
    process_group:
      description: The O(burrow.ssh.tunnel#module:process_group) the tunnel runs in; absent for a tunnel with a process of its own.
      type: str
      returned: when the tunnel has a process group
      sample: site-a
    shares_process_with:
      description:
        - The other tunnels running in the same process (same group, pid and start time), so what a crash of that process
          takes down with this tunnel. Empty for a tunnel with a process of its own.
      type: list
      elements: str
      returned: when the tunnel has a process group
      sample: [site-a-2, site-a-3]
    forwards:
      description: Each forward with C(key), C(kind), C(bound_host), C(bound_port), C(bound_path), C(connections_total),
        C(connections_active), C(bytes_in), C(bytes_out), C(failures), C(last_error).
      type: list
      elements: dict
      sample: []
    reconnects:
      description: Times the connection was rebuilt.
      type: int
      sample: 0
    last_error:
      description: The last error, with C(kind), C(message) and C(advice).
      type: dict
      sample: null
    uptime:
      description: Seconds since the current SSH connection was established.
      type: float
      sample: 12.5
    probe:
      description:
        - With O(probe=true), per forward C(key), C(kind), C(ok), C(latency_ms); with a declared probe also
          C(protocol), C(target), C(answer) and C(detail) (for instance V(PostgreSQL requested scram-sha-256)), or C(error)
          naming what answered instead (for instance V(PostgreSQL probe - expected PostgreSQL, got 'HTTP/1.1 400')).
        - Without a declared probe, a local forward opens a channel to its destination through the server; a remote forward
          is C(ok) only if the server holds its listener and its destination answers a connection from the side that runs
          the tunnel (C(destination_ok)).
      type: list
      elements: dict
      sample: [{"key": "local 127.0.0.1:0 -> db.internal:5432", "ok": true, "latency_ms": 1.2}]
    audit:
      description:
        - Who used the tunnel since it started (see O(burrow.ssh.tunnel#module:audit)), or V(null) with C(audit=none).
        - C(sink) (V(file) or V(syslog)), C(file) (the 0600 JSON-lines file, with V(file)) and C(by_uid), one entry per
          local uid (C(uid) V(null) - clients of remote forwards and clients the kernel does not name) with C(user),
          C(connections), C(refused), C(bytes_out), C(bytes_in) and C(last_use) (UTC, ISO 8601).
      type: dict
      returned: when the tunnel is up, reconnecting or down
      sample: {"sink": "file", "file": "/run/user/0/burrow/appdb.audit.jsonl", "by_uid": [{"uid": 1001, "user": "alice",
        "connections": 3, "refused": 0, "bytes_out": 5120, "bytes_in": 880213, "last_use": "2026-03-02T10:15:04.120Z"}]}
    reason:
      description: Why a tunnel is V(stale).
      type: str
      sample: the tunnel process is gone but its files remain (killed or crashed)
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import TunnelError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.control import TunnelHandle, list_handles
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import resolve_state_dir
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.summary import describe


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str"},
            "probe": {"type": "bool", "default": False},
            "state_dir": {"type": "path"},
        },
        supports_check_mode=True,
    )
    state_dir = resolve_state_dir(module.params["state_dir"])
    name = module.params["name"]
    try:
        handles = [TunnelHandle(state_dir, name)] if name else list_handles(state_dir)
        tunnels = [handle.inspect(probe=module.params["probe"]) for handle in handles]
    except TunnelError as exc:
        module.fail_json(msg=str(exc), error=exc.to_dict())
    summary = [describe(report) for report in tunnels]
    module.exit_json(changed=False, tunnels=tunnels, summary=summary, msg="\n".join(summary) if summary else "no tunnels")


if __name__ == "__main__":
    main()
