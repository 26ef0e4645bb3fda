#!/usr/bin/python
# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: tunnel
short_description: Establish, update and tear down SSH port forwards (-L, -R, -D) as an idempotent task
version_added: 0.1.0
description:
  - Runs one named SSH tunnel on the host that executes the task (usually the controller, with C(delegate_to=localhost)),
    one SSH connection, through optional jump hosts, that carries any number of local, remote and dynamic (SOCKS) forwards.
  - The tunnel lives in its own detached process that survives the task. A second run with the same declaration
    reports O(state=present) unchanged and keeps the same process; a changed forward is replaced live without
    touching the others; a dead or stale tunnel is repaired.
  - Every hop's host key is checked against C(known_hosts) by default, listeners bind to loopback unless told
    otherwise, and secrets never reach argv, logs or state files.
author:
  - burrow.ssh team (@burrow-ssh)
requirements:
  - paramiko >= 3.4 on the host that runs the tunnel
attributes:
  check_mode:
    support: full
    description: Predicts the change; nothing is started or stopped.
  diff_mode:
    support: full
    description: Shows the tunnel's hops and forwards before and after.
  platform:
    support: full
    platforms: posix
    description: Any POSIX host with Python and paramiko; usually the controller.
  action_group:
    support: full
    description: Use C(group/burrow.ssh.tunnels) in C(module_defaults) to set shared options once.
    membership:
      - burrow.ssh.tunnels
options:
  name:
    description:
      - Identity of the tunnel on the host that runs it. Letters, digits, C(.), C(_) and C(-).
      - With O(state=absent), V(*) removes every tunnel of this user on this host.
    type: str
    required: true
  state:
    description:
      - V(present) makes sure the tunnel runs as declared; V(absent) stops it and releases every port and file;
        V(restarted) stops and starts it again (new process).
    type: str
    choices: [present, absent, restarted]
    default: present
  host:
    description:
      - The SSH server that carries the forwards. C(user@host:port) is accepted. When it names a host of the inventory,
        the action plugin takes its C(ansible_host), C(ansible_port), C(ansible_user) and key.
      - Required with O(state=present) and O(state=restarted).
    type: str
  port:
    description: SSH port of O(host).
    type: int
  user:
    description: User on O(host) (and default user of the hops). Defaults to the current user.
    type: str
  via:
    description:
      - Jump hosts before O(host), in order, like OpenSSH C(ProxyJump). Each item is C(user@host:port), an inventory
        host name, or a dict with C(host), C(port), C(user) and per-hop authentication and host key options
        (C(private_key_file), C(private_key), C(private_key_passphrase), C(password), C(use_agent),
        C(host_key_checking), C(known_hosts_file), C(host_key_fingerprint), C(certificate_file), C(proxy_command), C(compression)).
      - A single string C(u1@j1:2221,u2@j2) is split on commas.
    type: list
    elements: raw
    default: []
  local_forwards:
    description:
      - Local forwards (C(ssh -L)) in OpenSSH syntax C([bind_address:]port:host:hostport), with IPv6 in brackets,
        Unix sockets (C(port:/run/postgresql/.s.PGSQL.5432)), or dicts with C(listen_host), C(listen_port) or
        C(listen_path), C(dest_host), C(dest_port) or C(dest_path), and optionally C(probe).
      - C(probe) says how to check the service behind the forward through the tunnel, one of V(tcp), V(postgresql), V(mysql),
        V(redis), V(http), V(tls) or V(ssh), or a dict with C(type) and, as needed, C(path), C(method) (V(GET) or V(HEAD))
        and C(status) for HTTP (without C(status) any answer below 500 passes), C(server_name) for TLS SNI and
        C(timeout) (seconds, default 5). No credentials are sent. Changing a probe is applied live.
        M(burrow.ssh.tunnel_info) with C(probe=true) runs it; O(wait_for_probe) waits for it.
      - The bind address defaults to V(127.0.0.1). Port V(0) allocates a free port, reported in RV(tunnel.local_forwards)
        and kept on later runs.
    type: list
    elements: raw
    default: []
  remote_forwards:
    description:
      - Remote forwards (C(ssh -R)). C([bind_address:]port:host:hostport) opens a listener on the server that leads to
        C(host:hostport) as seen from this host. C([bind_address:]port) alone serves SOCKS from this side
        (reverse dynamic forward, OpenSSH 7.6 semantics).
      - C(/path/on/server:host:hostport) and C(/path/on/server:/local.sock) listen on a Unix socket on the server
        (C(streamlocal-forward@openssh.com)); sshd needs C(AllowStreamLocalForwarding yes) (the default) and, to
        bind the path again after a reconnect or over a file left by an earlier session, C(StreamLocalBindUnlink yes).
        The directory must exist on the server and be writable by the login user.
      - The server decides where it really binds (sshd C(GatewayPorts)); the module reports what it bound and warns
        when it differs. Port V(0) lets the server allocate one.
      - In the dict form, C(probe) (see O(local_forwards)) checks the destination as seen from this host; a SOCKS
        remote forward needs C(probe_target) (a C(host) and C(port) joined by a colon).
    type: list
    elements: raw
    default: []
  dynamic_forwards:
    description:
      - Dynamic forwards (C(ssh -D)), a SOCKS4, SOCKS4a and SOCKS5 server, C([bind_address:]port) or a dict with
        C(listen_host), C(listen_port), C(socks_username) and C(socks_password) (RFC 1929, SOCKS5 only).
      - C(probe_target) (a C(host) and C(port) joined by a colon) with an optional C(probe) (see O(local_forwards), default V(tcp)) checks that
        destination through the SOCKS listener and the tunnel.
    type: list
    elements: raw
    default: []
  allow_non_loopback_bind:
    description:
      - Listeners on addresses other than loopback expose the forward to other machines. They are refused unless
        this is V(true), and then produce a warning.
      - This also covers what the server really binds. A remote forward asked for loopback that the server binds on
        every address (sshd's C(GatewayPorts yes)) fails with C(exposed_listener) unless this is V(true); then it is
        kept with a warning and reported with C(bound_host) V(*).
      - Not part of the tunnel's identity; changing it does not replace a running tunnel.
    type: bool
    default: false
  private_key_file:
    description: Private key file for every hop that sets none (OpenSSH or PEM; ed25519, ECDSA or RSA).
    type: path
  private_key:
    description: Private key content, for keys kept in a vault.
    type: str
  private_key_passphrase:
    description: Passphrase of the private key.
    type: str
  password:
    description: Password (also used to answer keyboard-interactive prompts).
    type: str
  use_agent:
    description:
      - Offer the keys of the ssh-agent in C(SSH_AUTH_SOCK).
      - When unset, the hop's C(IdentityAgent) from the ssh_config decides (V(none) turns the agent off, a path or
        C(SSH_AUTH_SOCK) names the socket), else the agent is used. C(IdentitiesOnly yes) offers only the agent keys
        that match the hop's key file.
    type: bool
  host_key_checking:
    description:
      - V(strict) refuses unknown and changed keys. V(accept-new) records unknown keys in O(known_hosts_file) but
        never accepts a changed key. V(off) accepts anything and warns; use it only on isolated test networks.
      - When unset, C(ANSIBLE_HOST_KEY_CHECKING=False) (or C(host_key_checking = False) in ansible.cfg) means V(off) with a
        warning, as for the connection plugins; else the hop's C(StrictHostKeyChecking) from the ssh_config (V(yes) and V(ask)
        mean V(strict), V(accept-new) itself, V(no) and V(off) mean V(off)); else V(strict).
    type: str
    choices: [strict, accept-new, "off"]
  known_hosts_file:
    description:
      - The known_hosts file used for every hop that sets none.
      - When unset, the hop's C(UserKnownHostsFile) files (all of them) and C(GlobalKnownHostsFile) from the ssh_config,
        else C(~/.ssh/known_hosts). Keys are looked up under the C(HostKeyAlias) when the ssh_config sets one.
    type: path
  host_key_fingerprint:
    description: Pin the host key of O(host) by its C(SHA256:) fingerprint instead of using known_hosts.
    type: str
  certificate_file:
    description:
      - OpenSSH user certificate for the private key of every hop that sets none (as C(ssh -o CertificateFile)).
      - Without it, a C(-cert.pub) file beside a key file is used, and C(CertificateFile) from the ssh_config.
      - Certificates held in the agent (C(ssh-add) loads the C(-cert.pub) beside a key) are offered before its plain keys.
      - A certificate that has expired, is not yet valid or is not for the user is not offered, and the error says why.
    type: path
  proxy_command:
    description:
      - Command whose standard input and output carry the SSH connection to the first hop instead of TCP, like
        OpenSSH C(ProxyCommand) (C(ssh -W %h:%p bastion), C(aws ssm start-session ...), C(cloudflared access ssh ...)).
      - Tokens C(%h) (host name), C(%p) (port), C(%r) (remote user), C(%n) (the name as given) and C(%%) are expanded.
        V(none) turns off a C(ProxyCommand) from the ssh_config. Without it, the ssh_config's C(ProxyCommand) of the first hop is used.
      - It runs without a shell unless it uses shell syntax (pipes, redirections, variables), gets no C(ANSIBLE_*) or
        C(BURROW_*) environment variables and never a password or key; the host key is checked as for any hop.
      - It applies to the first hop only (O(via[0]) or O(host)); a hop dict may set its own only when it is the first.
    type: str
  keepalive_interval:
    description:
      - Seconds between keepalive requests that expect an answer.
      - When unset, the target's C(ServerAliveInterval) from the ssh_config, else V(5).
    type: int
  keepalive_count_max:
    description:
      - Unanswered keepalives after which the connection is declared dead and rebuilt. The liveness budget is
        O(keepalive_interval) times this.
      - When unset, the target's C(ServerAliveCountMax) from the ssh_config, else V(3).
    type: int
  connect_timeout:
    description:
      - Seconds allowed for each hop's TCP connect, SSH handshake and authentication.
      - When unset, each hop's C(ConnectTimeout) from the ssh_config, else V(10).
      - It does not bound a forwarded connection's wait for the server to open its channel; like C(ssh), the connection
        waits while the SSH connection is alive (keepalives watch it), up to 130 seconds.
    type: int
  compression:
    description:
      - Compress the SSH connection of every hop that sets none (C(zlib@openssh.com), as C(ssh -C)); when unset, the
        hop's C(Compression) from the ssh_config, else no compression.
      - Compression on a connection that carries forwarded traffic an attacker can influence may leak information
        about the rest of that traffic (as OpenSSH warns); the tunnel warns when it is on. Use it only for slow links
        carrying trusted traffic.
    type: bool
  reconnect:
    description: Rebuild a lost connection with exponential backoff (1 s doubling to 30 s). Authentication and host key errors are never retried.
    type: bool
    default: true
  max_connections:
    description:
      - How many connections each listener of the tunnel (local, remote and SOCKS) serves at once. A connection beyond it is
        closed at once, logged and counted in C(connections_refused) (M(burrow.ssh.tunnel_info)), so one local user's
        stalled connections cannot take a listener from everyone else.
      - Unset, 4096 (four times the 1000 concurrent connections the load tests carry through one forward, below the
        open-file limit the tunnel process raises itself to).
    type: int
  process_group:
    description:
      - Run the tunnel in the tunnel host process of this group (letters, digits, C(.), C(_) and C(-)) instead of a process of
        its own. Tunnels of one user with the same O(process_group) and O(state_dir) share one process; each further tunnel
        costs about 0.1 MiB instead of about 33 MiB (docs/architecture.md), but a crash of that process (C(kill -9), OOM kill,
        a fault in a C extension) takes down every tunnel of the group; the next O(state=present) restarts them.
      - Each grouped tunnel keeps its own SSH connection, supervision, control socket, state file, log and audit trail; an
        exception in one tunnel marks only that tunnel V(down). The host process ends with the last tunnel of its group.
      - The declaration, secrets included, reaches a running host as JSON over a Unix socket (mode 0600 in the 0700
        O(state_dir), both peers' uid checked), in memory only; unset, secrets reach the tunnel process through C(fork) only.
      - Changing it on a running tunnel replaces the tunnel (new connection). Unset, one process per tunnel, as before.
    type: str
  audit:
    description:
      - Who used the tunnel. One JSON line per accepted forwarded connection - time (UTC), forward, client address, the
        local C(uid), C(user), C(pid) and C(process) name of a loopback TCP or Unix socket client when the kernel tells
        them, destination, C(bytes_out), C(bytes_in), C(duration) and how it C(ended) (V(closed), V(reset), V(refused), V(cut)).
        No secret is recorded (no command line, no SOCKS user name or password).
      - V(file) writes C(NAME.audit.jsonl) (mode 0600) in O(state_dir), rotated at 1 MiB with one previous file kept,
        removed with the tunnel's other files when it ends. V(syslog) sends the lines to the system logger
        (C(/dev/log), facility authpriv) and keeps nothing on disk; the start fails when there is no system logger.
        V(none) records nothing.
      - M(burrow.ssh.tunnel_info) reports the connections and bytes per uid (C(audit.by_uid)) with V(file) or V(syslog).
    type: str
    choices: [file, syslog, none]
    default: file
  lifetime:
    description:
      - V(persistent) keeps the tunnel until O(state=absent), its O(ttl) or its O(idle_timeout).
      - V(play) ends it when the ansible-playbook run that declared it exits, even on failure or Ctrl-C.
        Only for tunnels on the controller (C(delegate_to=localhost)); elsewhere use O(ttl) or O(idle_timeout).
    type: str
    choices: [persistent, play]
    default: persistent
  ttl:
    description:
      - Stop the tunnel this many seconds after it started (measured on the monotonic clock, so a change of the system
        time neither ends nor extends it).
    type: int
  idle_timeout:
    description:
      - Stop the tunnel after this many seconds without use, measured on the monotonic clock.
      - Idle is counted from the latest of the start, the last connection opened, closed or refused on any of its
        forwards, and the last O(state=present) that found the tunnel as declared (C(unchanged)); a tunnel with an
        active connection is never idle.
    type: int
  drain_timeout:
    description:
      - On stop (O(state=absent), or a replace), how many seconds active connections may finish on their own.
      - Connections still active then are cut with a reset (TCP RST to local clients, a channel close without end of file
        on the server's side), so that no client takes a cut transfer for a complete one; C(tunnel.cut_connections) counts them.
    type: int
    default: 10
  wait_for_probe:
    description:
      - Return only when every forward's probe passes (the C(probe) of each forward; a local forward without one
        is checked at TCP level), probing again until O(probe_timeout). The task fails at the deadline with the
        last result of each probe, and the tunnel stays up.
      - Not in check mode.
    type: bool
    default: false
  probe_timeout:
    description: With O(wait_for_probe=true), how many seconds to wait for every probe to pass.
    type: int
    default: 60
  state_dir:
    description:
      - Where tunnel state files, control sockets and logs live (mode 0700).
        Defaults to C($XDG_RUNTIME_DIR/burrow), else C(~/.ansible/burrow); E(BURROW_STATE_DIR) overrides both.
    type: path
  lifetime_owner:
    description:
      - Set by the action plugin for O(lifetime=play) (the ansible-playbook process). Do not set it by hand.
    type: dict
notes:
  - The tunnel process runs as the user that runs the task, on the host that runs it.
  - Changing credentials alone does not restart a running tunnel; use O(state=restarted).
seealso:
  - module: burrow.ssh.tunnel_info
  - module: burrow.ssh.sshd_forwarding
"""

EXAMPLES = r"""
- name: Reach the database hidden behind the bastion
  burrow.ssh.tunnel:
    name: appdb
    host: bastion.example.com
    user: deploy
    private_key_file: ~/.ssh/deploy
    local_forwards:
      - "127.0.0.1:0:db.internal:5432"
    lifetime: play
  delegate_to: localhost
  register: appdb

- name: Use the allocated port
  ansible.builtin.debug:
    msg: "PostgreSQL is at 127.0.0.1:{{ appdb.tunnel.port }}"

- name: Expose a local web app on the server's port 8080 (loopback there)
  burrow.ssh.tunnel:
    name: webapp
    host: deploy@public.example.com
    remote_forwards:
      - "127.0.0.1:8080:127.0.0.1:3000"
  delegate_to: localhost

- name: A Unix socket on the server that leads to the local PostgreSQL (psql "host=/run/burrow port=5432" there)
  burrow.ssh.tunnel:
    name: pg-socket
    host: app.example.com
    remote_forwards:
      - "/run/burrow/.s.PGSQL.5432:127.0.0.1:5432"
  delegate_to: localhost

- name: A SOCKS proxy for a browser, through two jump hosts
  burrow.ssh.tunnel:
    name: socks
    host: inner.example.com
    via:
      - ops@bastion-a.example.com
      - ops@bastion-b.example.com:2222
    dynamic_forwards:
      - "127.0.0.1:1080"
  delegate_to: localhost

- name: Wait until PostgreSQL itself answers through the tunnel, not just the port
  burrow.ssh.tunnel:
    name: appdb
    host: deploy@bastion.example.com
    local_forwards:
      - listen_port: 0
        dest_host: db.internal
        dest_port: 5432
        probe: postgresql
      - listen_port: 0
        dest_host: api.internal
        dest_port: 8080
        probe: {type: http, path: /health, status: 200}
    dynamic_forwards:
      - listen_port: 1080
        probe_target: cache.internal:6379
        probe: redis
    wait_for_probe: true
    probe_timeout: 120
  delegate_to: localhost

- name: Fifty tunnels to one site in one process (about 0.8 MiB each instead of 33)
  burrow.ssh.tunnel:
    name: "site-a-{{ item }}"
    host: deploy@bastion-a.example.com
    process_group: site-a
    local_forwards:
      - "0:10.0.5.{{ item }}:5432"
  loop: "{{ range(1, 51) | list }}"
  delegate_to: localhost

- name: Tear down every tunnel of this user on the controller
  burrow.ssh.tunnel:
    name: "*"
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
tunnel:
  description: The tunnel as it runs after the task (or as predicted in check mode).
  returned: always
  type: dict
  contains:
    name:
      description: The tunnel's name.
      type: str
      sample: appdb
    status:
      description: V(up), V(reconnecting), V(down), V(stale) or V(absent).
      type: str
      sample: up
    pid:
      description: Process id of the tunnel process (with O(process_group), the group's host process).
      type: int
      sample: 41234
    port:
      description: The bound port of the first forward (the allocated one when port V(0) was asked).
      type: int
      sample: 40123
    local_forwards:
      description:
        - Local forwards with C(listen_port), C(bound_host), counters and C(warnings).
        - C(bound_hosts) lists every address listened on, V(127.0.0.1) and V(::1) for V(localhost) and the default bind.
      type: list
      elements: dict
      sample: [{"key": "local 127.0.0.1:0 -> db.internal:5432", "bound_host": "127.0.0.1", "listen_port": 40123}]
    remote_forwards:
      description: Remote forwards with C(listen_port) as the server bound it, and C(bound_host) as observed.
      type: list
      elements: dict
      sample: []
    dynamic_forwards:
      description: SOCKS listeners with C(listen_port).
      type: list
      elements: dict
      sample: []
    reconnects:
      description: How many times the connection was rebuilt.
      type: int
      sample: 0
    warnings:
      description: What the tunnel noticed (host keys accepted, servers that bound elsewhere than asked).
      type: list
      elements: str
      sample: []
    hops:
      description: The hop chain as connected, after C(~/.ssh/config) (jump hosts first, the SSH server last).
      type: list
      elements: str
      sample: ["ops@bastion.example.com:22", "deploy@10.0.5.21:22"]
    cipher:
      description: The cipher negotiated with the SSH server.
      type: str
      sample: aes128-gcm@openssh.com
    log:
      description: The tunnel process's log file (mode 0600, in the state directory).
      type: str
      sample: /run/user/1000/burrow/appdb.log
    cut_connections:
      description:
        - With O(state=absent), how many connections were still active after O(drain_timeout) and were cut (reset), summed
          over the tunnels removed. V(0) when every connection ended on its own.
      returned: when O(state=absent)
      type: int
      sample: 0
msg:
  description: One line for a person to read, shown by C(-v) (status, hops, listeners and destinations, connections).
  returned: when O(state=present) or O(state=restarted)
  type: str
  sample: "appdb: up 0s via deploy@bastion.example.com:22; -L 127.0.0.1:40123 -> db.internal:5432; 0 connections (0 active)"
action:
  description: What the task did, one of V(created), V(unchanged), V(updated), V(repaired), V(replaced), V(restarted), V(removed) or V(absent).
  returned: always
  type: str
  sample: created
removed:
  description: Names of the tunnels stopped by O(state=absent).
  returned: when O(state=absent)
  type: list
  elements: str
  sample: [appdb]
probe:
  description:
    - With O(wait_for_probe=true), the last result of each forward's probe; C(key), C(kind), C(protocol), C(ok),
      C(latency_ms), C(target), C(answer) (what answered, for instance V(scram-sha-256)) and C(detail) on success,
      C(error) on failure (naming what answered instead, for instance C(expected PostgreSQL, got 'HTTP/1.1 400')).
  returned: when O(wait_for_probe=true)
  type: list
  elements: dict
  sample: [{"key": "local 127.0.0.1:0 -> db.internal:5432", "kind": "local", "protocol": "postgresql", "ok": true,
            "answer": "scram-sha-256", "detail": "PostgreSQL requested scram-sha-256", "latency_ms": 4.1,
            "target": "db.internal:5432"}]
probe_waited:
  description: With O(wait_for_probe=true), seconds spent waiting for the probes.
  returned: when O(wait_for_probe=true)
  type: float
  sample: 3.5
"""

import typing as t

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.burrow.ssh.plugins.module_utils._module_args import TUNNEL_ARGUMENT_SPEC, declaration_from_module, loopback_policy
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel import manage
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError, TunnelError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import resolve_state_dir
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import secret_values
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import HAS_PARAMIKO, PARAMIKO_IMPORT_ERROR
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.summary import describe


def main() -> None:
    module = AnsibleModule(
        argument_spec=TUNNEL_ARGUMENT_SPEC,
        required_if=[("state", "present", ("host",)), ("state", "restarted", ("host",))],
        supports_check_mode=True,
    )
    params = module.params
    if not HAS_PARAMIKO:
        module.fail_json(msg=missing_required_lib("paramiko"), exception=PARAMIKO_IMPORT_ERROR)
    state_dir = resolve_state_dir(params["state_dir"])
    try:
        if params["state"] == "absent":
            outcome = manage.ensure_absent(params["name"], state_dir, check_mode=module.check_mode, drain_timeout=params["drain_timeout"])
            if outcome.report.get("cut_connections"):
                module.warn(
                    f"cut {outcome.report['cut_connections']} connection(s) still active after drain_timeout ({params['drain_timeout']} s); "
                    "their clients saw a reset, not an end of stream. Raise drain_timeout to let transfers finish"
                )
            module.exit_json(changed=outcome.changed, action=outcome.action, removed=outcome.report["removed"], tunnel=outcome.report, diff=outcome.diff or {})
        tunnel = declaration_from_module(params)
        # Secrets nested in list elements (per-hop credentials, SOCKS passwords) are elements of str-or-dict lists, which
        # the argument spec's no_log cannot reach: the parsed declaration names them, and every result masks them.
        module.no_log_values.update(secret_values(tunnel))
        for warning in loopback_policy(tunnel, params["allow_non_loopback_bind"]):
            module.warn(warning)
        outcome = manage.ensure_present(
            tunnel,
            state_dir,
            {kind: params[kind] for kind in ("local_forwards", "remote_forwards", "dynamic_forwards", "allow_non_loopback_bind")},
            check_mode=module.check_mode,
            owner=manage.owner_for(params),
            restart=params["state"] == "restarted",
            drain_timeout=params["drain_timeout"],
        )
    except SpecError as exc:
        module.fail_json(msg=str(exc), field=exc.field, error=exc.to_dict())
    except TunnelError as exc:
        module.fail_json(msg=str(exc), error=exc.to_dict())
    summary = manage.summarize(outcome.report)
    for warning in summary["warnings"]:
        module.warn(warning)
    result: dict[str, t.Any] = {"changed": outcome.changed, "action": outcome.action, "tunnel": summary, "diff": outcome.diff or {}}
    if params["wait_for_probe"] and not module.check_mode:
        try:
            passed, probes, waited = manage.wait_for_probes(state_dir, tunnel.name, float(params["probe_timeout"]))
        except TunnelError as exc:
            module.fail_json(msg=f"tunnel {tunnel.name}: probing failed: {exc}", error=exc.to_dict(), **result)
        result.update(probe=probes, probe_waited=waited)
        if not passed:
            failing = "; ".join(f"{entry.get('key', tunnel.name)}: {entry.get('error') or entry.get('detail')}" for entry in probes if not entry.get("ok"))
            module.fail_json(
                msg=f"tunnel {tunnel.name} is up but its probes did not pass within {params['probe_timeout']}s: {failing}. "
                "Is the service running behind the destination? The tunnel stays up; raise probe_timeout or fix the service and run again.",
                **result,
            )
    module.exit_json(msg=describe(outcome.report), **result)


if __name__ == "__main__":
    main()
