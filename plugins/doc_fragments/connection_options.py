# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # Options of the burrow.ssh.tunneled connection plugin: target, authentication, hop chain, host keys,
    # connection-scoped forwards and session reuse. Sources follow ansible.builtin.ssh where it has the same option.
    DOCUMENTATION = r"""
options:
  remote_addr:
    description:
      - Address of the target host (the last hop).
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_ssh_host
  port:
    description:
      - SSH port of the target host.
    type: int
    default: 22
    ini:
      - section: defaults
        key: remote_port
    env:
      - name: ANSIBLE_REMOTE_PORT
    vars:
      - name: ansible_port
      - name: ansible_ssh_port
    keyword:
      - name: port
  remote_user:
    description:
      - User to log in as on the target host. Hops of O(via) that do not name a user log in as this user too.
      - Defaults to the user running Ansible.
    type: str
    ini:
      - section: defaults
        key: remote_user
    env:
      - name: ANSIBLE_REMOTE_USER
    vars:
      - name: ansible_user
      - name: ansible_ssh_user
    cli:
      - name: user
    keyword:
      - name: remote_user
  password:
    description:
      - Password for the target host (password or keyboard-interactive authentication). Never given to the hops of O(via).
    type: str
    vars:
      - name: ansible_password
      - name: ansible_ssh_pass
      - name: ansible_ssh_password
  private_key_file:
    description:
      - Private key (OpenSSH or PEM; ed25519, ECDSA or RSA) for the target host and for the hops of O(via) that name none.
      - Without a key file, an agent key or a password, the default identities C(~/.ssh/id_ed25519), C(~/.ssh/id_ecdsa) and C(~/.ssh/id_rsa) are tried.
    type: path
    ini:
      - section: defaults
        key: private_key_file
    env:
      - name: ANSIBLE_PRIVATE_KEY_FILE
    vars:
      - name: ansible_private_key_file
      - name: ansible_ssh_private_key_file
    cli:
      - name: private_key_file
        option: '--private-key'
  private_key_passphrase:
    description:
      - Passphrase of O(private_key_file).
    type: str
    vars:
      - name: ansible_private_key_passphrase
      - name: ansible_ssh_private_key_passphrase
  use_agent:
    description:
      - Also offer the keys of the SSH agent (E(SSH_AUTH_SOCK)) on every hop.
      - When unset, each hop's C(IdentityAgent) from O(ssh_config_file) decides (V(none) turns the agent off, a path
        names its socket), else the agent is used. C(IdentitiesOnly yes) offers only the agent keys matching the hop's key file.
    type: bool
    vars:
      - name: burrow_use_agent
    env:
      - name: BURROW_USE_AGENT
    ini:
      - section: burrow_connection
        key: use_agent
  timeout:
    description:
      - Seconds to wait for each hop's TCP connection, SSH handshake and authentication, and for a privilege escalation prompt.
      - When unset, each hop's C(ConnectTimeout) from O(ssh_config_file), else V(10).
    type: int
    ini:
      - section: defaults
        key: timeout
    env:
      - name: ANSIBLE_TIMEOUT
      - name: ANSIBLE_SSH_TIMEOUT
    vars:
      - name: ansible_ssh_timeout
    cli:
      - name: timeout
  pipelining:
    description:
      - Send modules on the command's standard input instead of copying them to a temporary file first.
      - Works with C(sudo) also when it asks for a password (the prompt is answered before the module is sent).
    type: bool
    default: false
    ini:
      - section: defaults
        key: pipelining
      - section: connection
        key: pipelining
    env:
      - name: ANSIBLE_PIPELINING
    vars:
      - name: ansible_pipelining
      - name: ansible_ssh_pipelining
  via:
    description:
      - The jump hosts (bastions) to go through, first to last, before the target host.
      - Each entry is a string V(user@host:port) (also V(ssh://user@host:port); a comma-separated string is a ProxyJump list)
        or a dict with the keys C(host), C(port), C(user), C(private_key_file), C(private_key), C(private_key_passphrase),
        C(password), C(use_agent), C(host_key_checking), C(known_hosts_file), C(host_key_fingerprint).
      - An entry that is the name of an inventory host (set as a host or group variable) becomes that host's hop, made of its
        C(ansible_host), C(ansible_port), C(ansible_user), C(ansible_ssh_private_key_file), C(ansible_password),
        C(burrow_host_key_fingerprint) and C(burrow_known_hosts_file), preceded by the hops of its own C(burrow_via).
        Other names are host names.
      - A hop that does not set them uses O(remote_user), O(private_key_file), O(private_key_passphrase), O(use_agent), O(host_key_checking)
        and O(known_hosts_file); it never gets O(password).
      - When unset, a C(ProxyJump) for O(remote_addr) in O(ssh_config_file) is used (with C(HostName), C(Port), C(User) and C(IdentityFile) of each jump host).
    type: list
    elements: raw
    vars:
      - name: burrow_via
    env:
      - name: BURROW_VIA
  ssh_config_file:
    description:
      - OpenSSH client configuration (with its C(Include) files) read for C(HostName), C(User), C(Port), C(IdentityFile),
        C(CertificateFile), C(UserKnownHostsFile), C(ProxyCommand), and C(ProxyJump) when O(via) is unset. V("") disables it.
      - docs/ssh-config.md lists the keywords honoured and ignored; one that changes where or how ssh connects and that
        burrow cannot honour (such as C(ProxyUseFdpass yes)) is an error.
    type: str
    default: ~/.ssh/config
    vars:
      - name: burrow_ssh_config_file
    env:
      - name: BURROW_SSH_CONFIG_FILE
    ini:
      - section: burrow_connection
        key: ssh_config_file
  host_key_checking:
    description:
      - How every hop's host key is checked against O(known_hosts_file).
      - V(strict) refuses unknown and changed keys; V(accept-new) records unknown keys and refuses changed ones; V(off) accepts any key (with a warning).
      - C(ANSIBLE_HOST_KEY_CHECKING=False) and C(ansible_host_key_checking=false) mean V(off), true values mean V(strict);
        O(host_key_checking) set by C(burrow_host_key_checking) wins over them.
      - When none of them is set, each hop's C(StrictHostKeyChecking) from O(ssh_config_file) (V(yes) and V(ask) mean
        V(strict), V(no) and V(off) mean V(off)), else V(strict).
    type: str
    env:
      - name: ANSIBLE_HOST_KEY_CHECKING
      - name: BURROW_HOST_KEY_CHECKING
    ini:
      - section: defaults
        key: host_key_checking
      - section: burrow_connection
        key: host_key_checking
    vars:
      - name: ansible_host_key_checking
      - name: ansible_ssh_host_key_checking
      - name: burrow_host_key_checking
  known_hosts_file:
    description:
      - The known_hosts file of every hop that does not name its own.
      - When unset, the hop's C(UserKnownHostsFile) from O(ssh_config_file), else C(~/.ssh/known_hosts).
    type: path
    env:
      - name: BURROW_KNOWN_HOSTS_FILE
    ini:
      - section: burrow_connection
        key: known_hosts_file
    vars:
      - name: burrow_known_hosts_file
  host_key_fingerprint:
    description:
      - Pin the target host's key to this SHA256 fingerprint (as printed by C(ssh-keygen -lf)); known_hosts is then not consulted for the target.
    type: str
    vars:
      - name: burrow_host_key_fingerprint
  proxy_command:
    description:
      - Command whose standard input and output carry the SSH connection to the first hop (the first of O(via), else the target)
        instead of TCP, like OpenSSH C(ProxyCommand); C(%h), C(%p), C(%r), C(%n) and C(%%) are expanded. V(none) turns off
        a C(ProxyCommand) from O(ssh_config_file), which is used otherwise.
      - It runs without a shell unless it uses shell syntax, gets no C(ANSIBLE_*) or C(BURROW_*) environment variables and
        never a password; the host key is checked as for any hop.
    type: str
    vars:
      - name: burrow_proxy_command
  certificate_file:
    description:
      - OpenSSH user certificate for the key of every hop that sets none. Without it, a C(-cert.pub) beside the key file
        and C(CertificateFile) from O(ssh_config_file) are used. An expired certificate is not offered and the error says so.
    type: path
    vars:
      - name: burrow_certificate_file
  remote_forwards:
    description:
      - Remote forwards (C(ssh -R) syntax V([bind:]port:host:hostport) or the dict form of M(burrow.ssh.tunnel)) that live with the connection to this host.
      - The target connects to C(bind:port) and reaches C(host:hostport) as seen from the controller,
        for example a package mirror or proxy on the controller's network.
    type: list
    elements: raw
    default: []
    vars:
      - name: burrow_remote_forwards
  reverse_socks:
    description:
      - Reverse dynamic forwards (C(ssh -R [bind:]port) without destination), each a port or V(bind:port).
      - The target gets a SOCKS4/4a/5 proxy on C(bind:port) whose connections leave from the controller.
    type: list
    elements: raw
    default: []
    vars:
      - name: burrow_reverse_socks
  local_forwards:
    description:
      - Local forwards (C(ssh -L) syntax V([bind:]port:host:hostport)) that live with the connection to this host.
      - The controller listens, the target connects onwards.
    type: list
    elements: raw
    default: []
    vars:
      - name: burrow_local_forwards
  allow_non_loopback_bind:
    description:
      - Listeners of O(local_forwards), O(remote_forwards) and O(reverse_socks) on addresses other than loopback expose the
        forward to other machines. They are refused unless this is V(true), and then each one is reported as a warning;
        the same policy as the O(burrow.ssh.tunnel#module:allow_non_loopback_bind) option of M(burrow.ssh.tunnel).
    type: bool
    default: false
    vars:
      - name: burrow_allow_non_loopback_bind
  audit:
    description:
      - Who used the connection's forwards (O(local_forwards), O(remote_forwards), O(reverse_socks)), with the same
        JSON lines as the O(burrow.ssh.tunnel#module:audit) option of M(burrow.ssh.tunnel).
      - V(file) writes C(connection-SESSION.audit.jsonl) (mode 0600; C(SESSION) is O(session_name)) in the broker's state
        directory, rotated at 1 MiB with one previous file kept. Unlike a tunnel's file it is kept when the session
        ends, since the run it records is over by the time anyone reads it. V(syslog) sends the lines to the system
        logger; V(none) records nothing. A connection without forwards writes nothing.
    type: str
    choices: [file, syslog, none]
    default: file
    vars:
      - name: burrow_audit
  session_name:
    description:
      - The broker keeps one target session (with its forwards) per session name and hop chain, so two inventory hosts
        with the same address still get their own; jump host connections are shared whatever the name.
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: burrow_session_name
  forward_agent:
    description:
      - Forward the controller's SSH agent (E(SSH_AUTH_SOCK) of the ansible-playbook process) to the target, as C(ssh -A) does;
        its commands see an E(SSH_AUTH_SOCK), so a task can C(git clone) with the operator's keys.
      - When unset, the target's C(ForwardAgent) from O(ssh_config_file), else off.
      - Anyone with root (or the remote user's rights) on the target can use the agent's keys while the connection is
        open, to log in wherever those keys are accepted. Turn it on only for targets you trust as much as the controller,
        or load into the agent only the keys the task needs (C(ssh-add -c) asks before each use).
    type: bool
    vars:
      - name: burrow_forward_agent
    env:
      - name: BURROW_FORWARD_AGENT
  compression:
    description:
      - Compress every hop's SSH connection (C(zlib@openssh.com), as C(ssh -C)). When unset, each hop's C(Compression)
        from O(ssh_config_file), else off.
      - Compression on a connection that also carries forwarded traffic (O(local_forwards), O(remote_forwards),
        O(reverse_socks)) may leak information about that traffic to whoever can influence part of it (OpenSSH's
        advice); a warning says so when forwards are on a compressed connection.
    type: bool
    vars:
      - name: burrow_compression
    env:
      - name: BURROW_COMPRESSION
  persist_idle_timeout:
    description:
      - Seconds an unused session (and its forwards) is kept by the controller's session broker before it is closed.
      - "Sessions are closed anyway as soon as the ansible-playbook process that opened them has exited, or on C(meta: reset_connection)."
    type: int
    default: 60
    env:
      - name: BURROW_PERSIST_IDLE_TIMEOUT
    ini:
      - section: burrow_connection
        key: persist_idle_timeout
    vars:
      - name: burrow_persist_idle_timeout
  persist:
    description:
      - Seconds the controller's session broker keeps a session (and the jump host connections under it) after the last
        ansible-playbook process that used it has exited, like OpenSSH's C(ControlPersist), so the next run reuses it without
        an SSH handshake. V(0) (the default) ends the sessions with the run. While persisted, this replaces O(persist_idle_timeout);
        the broker exits when its last session has expired.
      - A session is never handed out in the last max(5 s, 10 % of O(persist)) of its time (at most half of it); a new session
        is opened instead and the old one is closed once idle, so a task never starts on a session about to expire.
      - The broker then holds the sessions' credentials in memory (passwords, key passphrases, decrypted keys) and an
        authenticated connection to every host after the run; any process of the controller user can run commands through it
        until it expires, as with a ControlPersist master socket. See the security page of the collection.
    type: int
    default: 0
    env:
      - name: BURROW_PERSIST
    ini:
      - section: burrow_connection
        key: persist
    vars:
      - name: burrow_persist
"""
