# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The declaration model of a tunnel: hops, forwards, liveness and lifetime settings, and their identity.

Parses the OpenSSH syntax of ``ssh -L``, ``-R``, ``-D`` and ``-J`` (and the dict forms of the module
options), refuses anything that could be read as a shell metacharacter or an ssh option, and gives the
identity used for idempotency. Standard library only: this file runs on managed hosts.

Choices made here, on purpose:

* An omitted bind address means ``127.0.0.1`` for every kind of forward. OpenSSH decides from
  ``GatewayPorts`` (client side) and asks the server for "localhost" (remote side); we always ask for
  loopback so that a forward is never exposed by accident. A local listener left without an address, or given
  ``localhost``, binds ``127.0.0.1`` and ``::1`` on one port (as OpenSSH's localhost does), so no other local user can
  take the IPv6 half of ``localhost:P``; the key still says ``127.0.0.1`` (identity unchanged on upgrade).
* ``*`` and an empty bind address both mean "all interfaces", stored as ``""`` like OpenSSH passes it to
  the server; such a forward ``exposes_beyond_loopback``. ``0.0.0.0`` and ``::`` are kept as given.
* IPv6 addresses are written in brackets inside the colon syntax (``[::1]:8080:[::2]:80``); a bare
  ``::1:5432`` is ambiguous and refused. IP addresses are normalised (``[0:0::1]`` and ``::1`` are equal, an
  IPv4-mapped ``::ffff:127.0.0.1`` is ``127.0.0.1``), host names are lower-cased.
* Unix socket paths are absolute and at most 103 bytes: ``sun_path`` is 104 bytes on the BSDs and macOS,
  terminating NUL included (108 on Linux), so 103 is the portable maximum.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.probes import ProbeSpec
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.defaults import (  # what an unset setting means
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HOST_KEY_CHECKING,
    DEFAULT_KEEPALIVE_COUNT_MAX,
    DEFAULT_KEEPALIVE_INTERVAL,
    DEFAULT_USE_AGENT,
)
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.validate import ALL_INTERFACES, is_loopback, resolves_to_loopback

KINDS = ("local", "remote", "dynamic")
HOST_KEY_CHECKING = ("strict", "accept-new", "off")
LIFETIMES = ("persistent", "play")
HOP_KEYS = (
    "host",
    "port",
    "user",
    "private_key_file",
    "private_key",
    "private_key_passphrase",
    "password",
    "use_agent",
    "host_key_checking",
    "known_hosts_file",
    "host_key_fingerprint",
    "certificate_file",
    "proxy_command",
    "compression",
)
# Tunnel-wide settings that every hop inherits unless it sets its own (a tunnel-wide proxy_command is the first hop's).
HOP_DEFAULT_KEYS = tuple(key for key in HOP_KEYS if key not in ("host", "port", "host_key_fingerprint", "proxy_command"))


def format_host(host: str) -> str:
    if host == ALL_INTERFACES:
        return "*"
    return f"[{host}]" if ":" in host else host


@dataclasses.dataclass(frozen=True)
class Endpoint:
    host: str | None = None
    port: int | None = None
    path: str | None = None
    # A listen address left out (stored as 127.0.0.1, so keys and digests of existing declarations stay the same) binds
    # loopback in both families, like ``localhost``: not part of equality or of the key.
    default_bind: bool = dataclasses.field(default=False, compare=False)

    @property
    def both_loopback_families(self) -> bool:
        """Whether a local listener binds 127.0.0.1 and ::1 on one port (OpenSSH's localhost)."""
        return self.path is None and (self.default_bind or self.host == "localhost")

    def is_unix(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        return f"{format_host(self.host or '')}:{self.port}"


@dataclasses.dataclass(frozen=True)
class Forward:
    kind: str
    listen: Endpoint
    destination: Endpoint | None
    socks_username: str | None = None
    socks_password: str | None = dataclasses.field(default=None, repr=False, compare=False)
    # How to check the service behind the forward; not part of key(): a changed probe is applied live.
    probe: ProbeSpec | None = None

    def key(self) -> str:
        if self.destination is not None:
            target = str(self.destination)
        elif self.kind == "remote":
            target = "socks"
        else:
            target = ""
        text = f"{self.kind} {self.listen}" + (f" -> {target}" if target else "")
        if self.socks_username is not None:
            text += f" (socks user {self.socks_username})"
        return text

    def public_dict(self) -> dict[str, t.Any]:
        destination = self.destination or Endpoint()
        return {
            "kind": self.kind,
            "key": self.key(),
            "listen_host": self.listen.host,
            "listen_port": self.listen.port,
            "listen_path": self.listen.path,
            "dest_host": destination.host,
            "dest_port": destination.port,
            "dest_path": destination.path,
            "socks_username": self.socks_username,
            "probe": self.probe.public_dict() if self.probe is not None else None,
        }

    @property
    def exposes_beyond_loopback(self) -> bool:
        if self.listen.is_unix():
            return False
        host = self.listen.host or ""
        if self.kind == "remote":
            # The server resolves a remote forward's name; what it really bound is verified once it answers.
            return not is_loopback(host)
        # A local listener binds what the name resolves to here: every address must be loopback.
        return not resolves_to_loopback(host)


@dataclasses.dataclass(frozen=True)
class Hop:
    host: str
    port: int = 22
    user: str | None = None
    private_key_file: str | None = None
    private_key: str | None = dataclasses.field(default=None, repr=False)
    private_key_passphrase: str | None = dataclasses.field(default=None, repr=False)
    password: str | None = dataclasses.field(default=None, repr=False)
    # None: not declared; the ssh_config (IdentityAgent, StrictHostKeyChecking) or the default applies.
    use_agent: bool | None = None
    host_key_checking: str | None = None
    known_hosts_file: str | None = None
    host_key_fingerprint: str | None = None
    # An OpenSSH user certificate for the hop's key (else the key's "-cert.pub" beside it is used when it exists).
    certificate_file: str | None = None
    # The command whose stdin/stdout carry the first hop's SSH connection instead of TCP (ssh's ProxyCommand);
    # 'none' turns a configured one off. Tokens %h %p %r %n %% are expanded when the ssh_config is applied.
    proxy_command: str | None = None
    # zlib@openssh.com on this hop's connection (ssh -C); None: Compression from the ssh_config, else off.
    compression: bool | None = None
    # Filled from the ssh_config only (never part of a declaration's identity): IdentityAgent ("none" or a socket
    # path), IdentitiesOnly, the extra UserKnownHostsFile and GlobalKnownHostsFile files, HostKeyAlias,
    # ServerAliveInterval/CountMax and ConnectTimeout of this host, ForwardAgent (connection plugin).
    identity_agent: str | None = None
    identities_only: bool | None = None
    extra_known_hosts_files: t.Tuple[str, ...] = ()
    global_known_hosts_files: t.Tuple[str, ...] = ()
    host_key_alias: str | None = None
    server_alive_interval: int | None = None
    server_alive_count_max: int | None = None
    connect_timeout: float | None = None
    forward_agent: bool | None = None

    @property
    def agent_enabled(self) -> bool:
        """Whether agent keys are offered: use_agent when declared, else not when IdentityAgent is none."""
        if self.use_agent is not None:
            return self.use_agent
        return self.identity_agent is None or self.identity_agent.lower() != "none"

    @property
    def host_key_policy(self) -> str:
        return self.host_key_checking or DEFAULT_HOST_KEY_CHECKING

    def label(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{user}{format_host(self.host)}:{self.port}"

    def public_dict(self) -> dict[str, t.Any]:
        return {
            "label": self.label(),
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "private_key_file": self.private_key_file,
            "has_key": self.private_key is not None,
            "has_passphrase": self.private_key_passphrase is not None,
            "has_password": self.password is not None,
            # Unset values appear as their defaults, so that the identity of an unchanged declaration stays what it was.
            "use_agent": DEFAULT_USE_AGENT if self.use_agent is None else self.use_agent,
            "host_key_checking": self.host_key_policy,
            "known_hosts_file": self.known_hosts_file,
            "host_key_fingerprint": self.host_key_fingerprint,
            "certificate_file": self.certificate_file,
            "proxy_command": self.proxy_command,
            # Added keys appear only when set: a declaration without them keeps its digest.
            **({"compression": self.compression} if self.compression is not None else {}),
        }


@dataclasses.dataclass(frozen=True)
class Tunnel:
    name: str
    hops: t.Tuple[Hop, ...]
    forwards: t.Tuple[Forward, ...]
    # None: not declared; the target's ServerAliveInterval/ServerAliveCountMax and every hop's ConnectTimeout from the
    # ssh_config apply, else the DEFAULT_* values (see the effective_* properties).
    keepalive_interval: int | None = None
    keepalive_count_max: int | None = None
    connect_timeout: int | None = None
    lifetime: str = "persistent"
    ttl: int | None = None
    idle_timeout: int | None = None
    reconnect: bool = True
    audit: str = "file"  # who used the tunnel: file (NAME.audit.jsonl in the state directory) | syslog | none
    # The bind policy for what the server really binds (a loopback request that sshd's GatewayPorts yes widens fails
    # unless allowed). Not part of identity() or digest(): changing it replaces no running tunnel, it is sent with `apply`.
    allow_non_loopback_bind: bool = False
    max_connections: int | None = None  # per listener; None: DEFAULT_MAX_CONNECTIONS (forward_set.py)
    # Tunnels of one process_group share one host process per state directory (process/host.py); None: a process of its own.
    # Part of the identity (a change is a replace); unset adds nothing to it, so existing digests stay the same.
    process_group: str | None = None

    def __post_init__(self) -> None:
        if not self.hops:
            raise SpecError("host", None, "a tunnel needs at least one hop (its target server)")

    @property
    def effective_connect_timeout(self) -> int:
        return self.connect_timeout if self.connect_timeout is not None else DEFAULT_CONNECT_TIMEOUT

    def _settings(self) -> dict[str, t.Any]:
        # Unset values as their defaults: digests of declarations made before "unset" existed stay the same.
        return {
            "keepalive_interval": self.keepalive_interval if self.keepalive_interval is not None else DEFAULT_KEEPALIVE_INTERVAL,
            "keepalive_count_max": self.keepalive_count_max if self.keepalive_count_max is not None else DEFAULT_KEEPALIVE_COUNT_MAX,
            "connect_timeout": self.effective_connect_timeout,
            "lifetime": self.lifetime,
            "ttl": self.ttl,
            "idle_timeout": self.idle_timeout,
            "reconnect": self.reconnect,
            # Added keys appear only when not the default: a declaration without them keeps its digest.
            **({"audit": self.audit} if self.audit != "file" else {}),
            **({"max_connections": self.max_connections} if self.max_connections is not None else {}),
            **({"process_group": self.process_group} if self.process_group is not None else {}),
        }

    def identity(self) -> dict[str, t.Any]:
        """What a running tunnel cannot change live: its hops and settings (forwards are applied as a delta)."""
        data = {"name": self.name, "hops": [hop.public_dict() for hop in self.hops]}
        data.update(self._settings())
        return data

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode("utf-8")).hexdigest()

    def public_dict(self) -> dict[str, t.Any]:
        data = {
            "name": self.name,
            "hops": [hop.public_dict() for hop in self.hops],
            "forwards": [forward.public_dict() for forward in self.forwards],
        }
        data.update(self._settings())
        return data
