#!/usr/bin/python
# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: sshd_forwarding
short_description: Set sshd's port-forwarding policy where sshd really reads it, validated, without breaking sshd
version_added: 0.1.0
description:
  - Sets C(GatewayPorts), C(AllowTcpForwarding), C(AllowStreamLocalForwarding), C(PermitOpen), C(PermitListen),
    C(DisableForwarding), C(AllowAgentForwarding), C(ClientAliveInterval) and C(ClientAliveCountMax) in C(sshd_config),
    globally or inside one C(Match) block.
  - sshd keeps the first value it reads for a keyword, lines after a C(Match) line belong to that block, and files
    pulled in with C(Include) are read at the point of the C(Include). This module edits the occurrence that is
    effective. A global value is replaced in place or inserted before the first C(Match) block. A value for
    O(match) is set inside the first C(Match) block with those criteria, which is appended at the end of the file when
    missing. When an included file (a drop-in) already sets a different value that sshd reads first, the module
    fails and names that file and line instead of writing a line sshd would ignore.
  - Comments, blank lines, indentation and the order of lines are kept; only the lines that change are touched.
    Later duplicates of a keyword, which sshd ignores, are left alone and reported in RV(sshd_warnings).
  - Every change is checked with C(sshd -t -f <candidate>) before the live file is replaced atomically. When sshd
    rejects the candidate, the live file and the running sshd are left untouched and the task fails with sshd's own
    message.
  - After the reload the module asks sshd for the effective values with C(sshd -T) (with C(-C) for a O(match) block)
    and returns them in RV(effective); it fails when they differ from what was asked.
  - Options left unset are not touched.
author:
  - burrow.ssh team (@burrow-ssh)
requirements:
  - OpenSSH sshd on the target (C(sshd -t) and C(sshd -T) are used).
attributes:
  check_mode:
    support: full
    description: Predicts the change and the effective values.
    details: The candidate is validated with C(sshd -t) and C(sshd -T) in a temporary directory; nothing is written or reloaded.
  diff_mode:
    support: full
    description: Shows the configuration file before and after, as lineinfile does.
  platform:
    support: full
    platforms: posix
    description: Hosts running OpenSSH's sshd.
notes:
  - Run as root (C(become)) on a real server; C(sshd -t) needs to read the host keys.
  - C(Include) paths that are not absolute are resolved against C(/etc/ssh) by sshd, whatever the location of
    O(config_file); the module does the same.
  - Included files are only read, never written.
seealso:
  - name: sshd_config(5)
    description: The meaning of every keyword set by this module.
    link: https://man.openbsd.org/sshd_config
options:
  gateway_ports:
    description:
      - C(GatewayPorts). V(no) binds remote forwards to loopback whatever the client asks, V(yes) binds them to all
        addresses, V(clientspecified) lets the client choose the bind address.
    type: str
    choices: ["no", "yes", clientspecified]
  allow_tcp_forwarding:
    description: C(AllowTcpForwarding). V(local) allows only C(-L), V(remote) only C(-R).
    type: str
    choices: ["yes", "no", local, remote, all]
  allow_stream_local_forwarding:
    description: C(AllowStreamLocalForwarding) (Unix-domain socket forwards).
    type: str
    choices: ["yes", "no", local, remote, all]
  permit_open:
    description:
      - C(PermitOpen), the destinations allowed for local (C(-L)) forwards, each C(host:port) (C([ipv6]:port),
        C(*) allowed as host or port), or the single entry V(any) or V(none).
    type: list
    elements: str
  permit_listen:
    description:
      - C(PermitListen), the addresses remote (C(-R)) forwards may listen on, each C(port) or C(host:port), or the
        single entry V(any) or V(none).
    type: list
    elements: str
  disable_forwarding:
    description: C(DisableForwarding). V(true) disables every kind of forwarding, overriding the other options.
    type: bool
  allow_agent_forwarding:
    description: C(AllowAgentForwarding).
    type: bool
  client_alive_interval:
    description: C(ClientAliveInterval) in seconds; V(0) disables server-side keepalives.
    type: int
  client_alive_count_max:
    description: C(ClientAliveCountMax).
    type: int
  match:
    description:
      - Criteria of the C(Match) block to set the options in, as written after C(Match), for example V(User tunnel) or
        V(Address 10.0.0.0/8). Compared with whitespace collapsed and criterion names case-insensitive.
      - When no such block exists, C(Match <criteria>) is appended at the end of the file.
      - When unset, the options are set globally (before the first C(Match) block).
    type: str
  match_test:
    description:
      - Connection spec passed to C(sshd -T -C) to confirm the values of the O(match) block, for example
        V(user=tunnel,host=client.example.com,addr=192.0.2.10).
      - By default it is derived from simple criteria (C(User), C(Address), C(Host), C(LocalAddress),
        C(LocalPort)); for other criteria (C(Group), negations, wildcards) set it, or the check is skipped with a warning.
    type: str
  config_file:
    description: The sshd configuration file to edit.
    type: path
    default: /etc/ssh/sshd_config
  backup:
    description: Keep a timestamped copy of the file next to it before replacing it.
    type: bool
    default: false
  validate:
    description: Check the candidate with C(sshd -t -f) before replacing the live file. Turn off only to repair a system without sshd.
    type: bool
    default: true
  reload:
    description: Reload sshd after a change. Established sessions and their forwards survive a reload.
    type: bool
    default: true
  force_reload:
    description:
      - Reload sshd even when nothing changed, after validating the live file with C(sshd -t). For handlers; with no
        other option set, this is a validated reload and nothing else.
    type: bool
    default: false
  reload_method:
    description:
      - How to reload. V(auto) uses C(systemctl reload ssh) (or C(sshd)) when systemd is running, else
        C(service ssh reload) when such a script exists, else V(signal).
      - V(signal) sends C(SIGHUP) to the pid in O(pid_file) and waits until sshd has re-opened its listeners.
      - V(none) never reloads (same as O(reload=false)).
    type: str
    choices: [auto, service, signal, none]
    default: auto
  pid_file:
    description: Pid file of the sshd to signal. By default the C(PidFile) of O(config_file) as reported by C(sshd -T), else C(/run/sshd.pid).
    type: path
  sshd_binary:
    description: Path of sshd. By default the first of C(/usr/sbin/sshd), C(/usr/local/sbin/sshd), then C(sshd) in E(PATH).
    type: path
"""

EXAMPLES = r"""
- name: Let remote forwards listen on the address the client asks for
  burrow.ssh.sshd_forwarding:
    gateway_ports: clientspecified
    allow_tcp_forwarding: remote
  become: true

- name: Only the tunnel user may expose ports, on one port range owner
  burrow.ssh.sshd_forwarding:
    match: User tunnel
    gateway_ports: clientspecified
    allow_tcp_forwarding: remote
    permit_listen:
      - 0.0.0.0:8080
      - 0.0.0.0:8443
  become: true

- name: Forbid all forwarding from the 10.0.0.0/8 network, keep a backup
  burrow.ssh.sshd_forwarding:
    match: Address 10.0.0.0/8
    disable_forwarding: true
    backup: true
  become: true

- name: Change the file now, reload later from a handler
  burrow.ssh.sshd_forwarding:
    client_alive_interval: 30
    client_alive_count_max: 3
    reload: false
  become: true
  notify: Reload sshd
"""

RETURN = r"""
changes:
  description: The lines changed in O(config_file).
  returned: always
  type: list
  elements: dict
  sample:
    - {keyword: GatewayPorts, match: null, action: replaced, line: 14, old: "no", new: clientspecified}
    - {keyword: AllowTcpForwarding, match: User tunnel, action: block_created, line: 40, old: null, new: remote}
effective:
  description:
    - The values sshd reports with C(sshd -T) (lower-case keywords) for the options set, after the change (in check
      mode, what they would be). For O(match), for the connection in RV(connection_spec).
  returned: when options were set and sshd was found
  type: dict
  sample: {gatewayports: clientspecified, allowtcpforwarding: remote}
connection_spec:
  description: The C(sshd -T -C) spec used to confirm a O(match) block, null for global settings.
  returned: when options were set
  type: str
  sample: user=tunnel
sshd_warnings:
  description: Lines sshd ignores (later duplicates), earlier Match blocks that may win, confirmations skipped.
  returned: when there are any
  type: list
  elements: str
reloaded:
  description: Whether sshd was reloaded.
  returned: always
  type: bool
reload_method:
  description: How sshd was reloaded (V(service), V(signal) or V(none)).
  returned: when a reload was attempted
  type: str
backup_file:
  description: The backup made with O(backup=true).
  returned: when a backup was made
  type: str
  sample: /etc/ssh/sshd_config.2710.2026-01-05@10:12:01~
config_file:
  description: The file edited.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.burrow.ssh.plugins.module_utils._sshd.runner import run_module

FORWARDING_CHOICES = ["yes", "no", "local", "remote", "all"]


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "gateway_ports": {"type": "str", "choices": ["no", "yes", "clientspecified"]},
            "allow_tcp_forwarding": {"type": "str", "choices": FORWARDING_CHOICES},
            "allow_stream_local_forwarding": {"type": "str", "choices": FORWARDING_CHOICES},
            "permit_open": {"type": "list", "elements": "str"},
            "permit_listen": {"type": "list", "elements": "str"},
            "disable_forwarding": {"type": "bool"},
            "allow_agent_forwarding": {"type": "bool"},
            "client_alive_interval": {"type": "int"},
            "client_alive_count_max": {"type": "int"},
            "match": {"type": "str"},
            "match_test": {"type": "str"},
            "config_file": {"type": "path", "default": "/etc/ssh/sshd_config"},
            "backup": {"type": "bool", "default": False},
            "validate": {"type": "bool", "default": True},
            "reload": {"type": "bool", "default": True},
            "force_reload": {"type": "bool", "default": False},
            "reload_method": {"type": "str", "choices": ["auto", "service", "signal", "none"], "default": "auto"},
            "pid_file": {"type": "path"},
            "sshd_binary": {"type": "path"},
        },
        supports_check_mode=True,
    )
    run_module(module)


if __name__ == "__main__":
    main()
