# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""JSON Schema (draft 2020-12) of a burrow.ssh.tunnel declaration: a published document for editors and docs.

It is not a gate: the declaration grammar in plugins/module_utils/_tunnel/spec validates every declaration (in the
action plugin, the module and the tunnel process). tests/unit/plugins/module_utils/test_schema.py holds the two
to the same verdict on a corpus of valid and hostile declarations. ``docs/tunnel.schema.json`` is written from
``TUNNEL_SCHEMA`` by ``scripts/gen_schema.py``; not shipped in the collection.
"""

from __future__ import annotations

import typing as t

SCHEMA_ID = "urn:burrow.ssh:schema:tunnel"

# No shell or ssh-option metacharacters anywhere, never a leading '-'.
HOST_PATTERN = r"^[A-Za-z0-9_:][A-Za-z0-9_.:%-]{0,252}$"
HOST_HINT = "a host name or IP address (letters, digits, '.', '-', '_', ':' and '%' for IPv6; no spaces or shell metacharacters, no leading '-')"
BRACKETED_HOST_PATTERN = r"^(\[[0-9A-Fa-f:.%A-Za-z_-]{2,60}\]|[A-Za-z0-9_:][A-Za-z0-9_.:%-]{0,252})$"
LISTEN_HOST_PATTERN = r"^(|\*|\[[0-9A-Fa-f:.%A-Za-z_-]{2,60}\]|[A-Za-z0-9_:][A-Za-z0-9_.:%-]{0,252})$"
LISTEN_HOST_HINT = "a bind address: an IP address, a host name, '*' or '' for all interfaces (no shell metacharacters, no leading '-')"
USER_PATTERN = r"^[A-Za-z0-9_.][A-Za-z0-9_.@+-]{0,255}$"
USER_HINT = "a user name (letters, digits, '.', '_', '-', '+', '@'; no spaces or shell metacharacters, no leading '-')"
HOP_STRING_PATTERN = (
    r"^(ssh://)?([A-Za-z0-9_.][A-Za-z0-9_.@+-]{0,255}@)?(\[[0-9A-Fa-f:.%A-Za-z_-]{2,60}\]|[A-Za-z0-9_:][A-Za-z0-9_.:%-]{0,252})(:[0-9]{1,5})?/?$"
)
HOP_STRING_HINT = "[ssh://][user@]host[:port] with IPv6 in brackets (no spaces or shell metacharacters, no leading '-')"
JUMP_LIST_PATTERN = r"^[^,\s;'\"`$()<>|&\\-][^\s;'\"`$()<>|&\\]*$"
JUMP_LIST_HINT = "hops as [user@]host[:port], separated by commas (no spaces or shell metacharacters, no leading '-')"
FORWARD_STRING_PATTERN = r"^[^-\s;'\"`$()<>|&\\][^\s;'\"`$()<>|&\\]{0,511}$"
FORWARD_STRING_HINT = "OpenSSH forward syntax like [bind_address:]port:host:hostport (no spaces or shell metacharacters, no leading '-')"
PATH_PATTERN = r"^/[^\x00-\x1f]{0,102}$"
PATH_HINT = "an absolute Unix socket path of at most 103 bytes without control characters"
FILE_PATTERN = r"^[^\x00-\x1f]+$"
FILE_HINT = "a path without control characters"
NAME_PATTERN = r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63}|\*)$"
GROUP_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
NAME_HINT = "1 to 64 letters, digits, '.', '_' or '-' starting with a letter or digit ('*' with state=absent)"
FINGERPRINT_PATTERN = r"^(SHA256|sha256):[A-Za-z0-9+/]{43}=?$"
FINGERPRINT_HINT = "an OpenSSH fingerprint SHA256:<43 base64 characters>"
DIGITS_PATTERN = r"^[0-9]{1,5}$"
DIGITS_HINT = "digits only"


def _port(minimum: int) -> dict[str, t.Any]:
    """An integer port, or a string of digits (templated values); _spec checks the range of the string form."""
    return {"oneOf": [{"type": "integer", "minimum": minimum, "maximum": 65535}, {"type": "string", "pattern": DIGITS_PATTERN}]}


def _integer(minimum: int, maximum: int, description: str) -> dict[str, t.Any]:
    return {"description": description, "type": "integer", "minimum": minimum, "maximum": maximum}


SECRET: dict[str, t.Any] = {"type": "string", "writeOnly": True}

HOP_SETTINGS: dict[str, t.Any] = {
    "private_key_file": {"description": "Private key file.", "type": "string", "minLength": 1, "pattern": FILE_PATTERN},
    "private_key": dict(SECRET, description="Private key content (secret)."),
    "private_key_passphrase": dict(SECRET, description="Passphrase of the private key (secret)."),
    "password": dict(SECRET, description="Password, also used for keyboard-interactive (secret)."),
    "use_agent": {"description": "Offer the keys of the ssh-agent in SSH_AUTH_SOCK.", "type": "boolean"},
    "host_key_checking": {"description": "Host key policy.", "enum": ["strict", "accept-new", "off"]},
    "known_hosts_file": {"description": "known_hosts file (default ~/.ssh/known_hosts).", "type": "string", "minLength": 1, "pattern": FILE_PATTERN},
    "certificate_file": {"description": "OpenSSH user certificate for the key.", "type": "string", "minLength": 1, "pattern": FILE_PATTERN},
    "proxy_command": {"description": "Command that carries the connection to the first hop (ProxyCommand).", "type": "string", "minLength": 1},
    "compression": {"description": "Compress the connection (zlib@openssh.com); may leak information about forwarded traffic.", "type": "boolean"},
}

HOP_DICT: dict[str, t.Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["host"],
    "properties": {
        "host": {"description": "Host name or IP address of the hop.", "type": "string", "pattern": BRACKETED_HOST_PATTERN},
        "port": _port(1),
        "user": {"type": "string", "pattern": USER_PATTERN},
        **HOP_SETTINGS,
        "host_key_fingerprint": {"description": "Pins the hop's host key.", "type": "string", "pattern": FINGERPRINT_PATTERN},
    },
}

HOP: dict[str, t.Any] = {
    "description": "A jump host: [ssh://][user@]host[:port], an inventory host name, or a dict.",
    "oneOf": [{"type": "string", "pattern": HOP_STRING_PATTERN}, {"$ref": "#/$defs/hop_dict"}],
}

_LISTEN = {
    "listen_host": {"description": "Bind address; default 127.0.0.1; '*' or '' = all interfaces.", "type": "string", "pattern": LISTEN_HOST_PATTERN},
    "bind_address": {"description": "Alias of listen_host.", "type": "string", "pattern": LISTEN_HOST_PATTERN},
    "listen_port": _port(0),
    "port": dict(_port(0), description="Alias of listen_port."),
}
_DESTINATION = {
    "listen_path": {"description": "Listen on this Unix socket instead of a TCP port.", "type": "string", "pattern": PATH_PATTERN},
    "dest_host": {"type": "string", "pattern": BRACKETED_HOST_PATTERN},
    "host": {"description": "Alias of dest_host.", "type": "string", "pattern": BRACKETED_HOST_PATTERN},
    "dest_port": _port(1),
    "host_port": dict(_port(1), description="Alias of dest_port."),
    "dest_path": {"description": "Destination Unix socket.", "type": "string", "pattern": PATH_PATTERN},
}
_SOCKS = {
    "socks_username": {"description": "RFC 1929 user name required from SOCKS5 clients.", "type": "string", "minLength": 1, "maxLength": 255},
    "socks_password": dict(SECRET, description="RFC 1929 password (secret).", minLength=1, maxLength=255),
}

_PROBE_TYPES = ["tcp", "postgresql", "mysql", "redis", "http", "tls", "ssh"]
_PROBE = {
    "probe": {
        "description": "How to check the service behind the forward (tunnel_info probe=true, tunnel wait_for_probe=true).",
        "oneOf": [
            {"enum": _PROBE_TYPES},
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "type": {"enum": _PROBE_TYPES},
                    "path": {"type": "string", "pattern": "^/[^\\s]*$"},
                    "method": {"enum": ["GET", "HEAD", "get", "head"]},
                    "status": {"type": "integer", "minimum": 100, "maximum": 599},
                    "server_name": {"type": "string"},
                    "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
                },
            },
        ],
    },
}
_PROBE_TARGET = {"probe_target": {"description": "host:port probed through a SOCKS forward.", "type": "string", "minLength": 3}}


def _forward(dict_ref: str, description: str) -> dict[str, t.Any]:
    return {
        "description": description,
        "type": "array",
        "items": {"oneOf": [{"type": "string", "pattern": FORWARD_STRING_PATTERN}, {"$ref": f"#/$defs/{dict_ref}"}]},
    }


TUNNEL_SCHEMA: dict[str, t.Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "burrow.ssh.tunnel declaration",
    "description": "Options of the burrow.ssh.tunnel module (and of the items of the burrow.ssh.tunnels role).",
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"description": "Identity of the tunnel on the host that runs it.", "type": "string", "pattern": NAME_PATTERN},
        "state": {"enum": ["present", "absent", "restarted"], "default": "present"},
        "probe": {"description": "Open a channel to each local forward's destination and report it (tunnel_info).", "type": "boolean"},
        "host": {"description": "The SSH server that carries the forwards: [ssh://][user@]host[:port].", "type": "string", "pattern": HOP_STRING_PATTERN},
        "port": _port(1),
        "user": {"description": "User on host, and default user of the hops.", "type": "string", "pattern": USER_PATTERN},
        "via": {
            "description": "Jump hosts before host, in order (ProxyJump).",
            "oneOf": [{"type": "array", "items": {"$ref": "#/$defs/hop"}}, {"type": "string", "pattern": JUMP_LIST_PATTERN}],
        },
        "local_forwards": _forward("local_forward", "ssh -L: [bind_address:]port:host:hostport, Unix sockets, or dicts."),
        "remote_forwards": _forward("remote_forward", "ssh -R: [bind_address:]port:host:hostport, or [bind_address:]port for reverse SOCKS."),
        "dynamic_forwards": _forward("dynamic_forward", "ssh -D: [bind_address:]port, or dicts with SOCKS5 credentials."),
        "allow_non_loopback_bind": {"description": "Allow listeners beyond loopback (then warn).", "type": "boolean"},
        **HOP_SETTINGS,
        "host_key_fingerprint": {"description": "Pins the host key of host (the target).", "type": "string", "pattern": FINGERPRINT_PATTERN},
        "keepalive_interval": _integer(1, 3600, "Seconds between keepalive requests."),
        "keepalive_count_max": _integer(1, 100, "Unanswered keepalives before the connection is declared dead."),
        "connect_timeout": _integer(1, 600, "Seconds allowed for each hop's connection."),
        "reconnect": {"description": "Reconnect with backoff when the connection drops.", "type": "boolean"},
        "max_connections": _integer(1, 100000, "Connections each listener serves at once; more are refused and counted (default 4096)."),
        "process_group": {
            "description": "Tunnels with the same process_group share one process per state directory; unset: a process of its own.",
            "type": "string",
            "pattern": GROUP_PATTERN,
        },
        "audit": {
            "description": "Who used the tunnel, one JSON line per connection: file (0600, in state_dir), syslog (authpriv) or none.",
            "enum": ["file", "syslog", "none"],
        },
        "lifetime": {"description": "persistent: until state=absent; play: until the ansible-playbook process exits.", "enum": ["persistent", "play"]},
        "ttl": {"oneOf": [_integer(1, 315360000, "Stop after this many seconds."), {"type": "null"}]},
        "idle_timeout": {"oneOf": [_integer(1, 315360000, "Stop after this many seconds without a connection."), {"type": "null"}]},
        "drain_timeout": _integer(0, 3600, "Seconds open connections may drain when the tunnel stops."),
        "wait_for_probe": {"description": "Return only when every forward's probe passes (until probe_timeout).", "type": "boolean"},
        "probe_timeout": _integer(1, 3600, "Seconds wait_for_probe waits for every probe to pass."),
        "state_dir": {"description": "State directory (default $XDG_RUNTIME_DIR/burrow or ~/.ansible/burrow).", "type": "string", "pattern": FILE_PATTERN},
        "lifetime_owner": {"description": "Set by the action plugin for lifetime=play.", "type": "object"},
    },
    "if": {"properties": {"state": {"const": "absent"}}, "required": ["state"]},
    "else": {"required": ["host"], "properties": {"name": {"not": {"const": "*"}}}},
    "$defs": {
        "hop": HOP,
        "hop_dict": HOP_DICT,
        "local_forward": {
            "type": "object",
            "additionalProperties": False,
            "properties": {**_LISTEN, **_DESTINATION, **_PROBE},
        },
        "remote_forward": {
            "type": "object",
            "additionalProperties": False,
            "properties": {**_LISTEN, **_DESTINATION, **_SOCKS, **_PROBE, **_PROBE_TARGET},
        },
        "dynamic_forward": {
            "type": "object",
            "additionalProperties": False,
            "properties": {**_LISTEN, **_SOCKS, **_PROBE, **_PROBE_TARGET},
        },
    },
}

# Reading a oneOf failure: the branch that matches the value's JSON type is the one the user meant.
