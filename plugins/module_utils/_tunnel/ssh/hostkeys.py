# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Host-key policy per hop: known_hosts (strict, accept-new), a pinned fingerprint, or off with a warning."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import HostKeyMismatch, HostKeyUnknown
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Hop
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.library import paramiko  # None without it: callers check HAS_PARAMIKO


def fingerprint(key: t.Any) -> str:
    return fingerprint_blob(key.asbytes())


def fingerprint_blob(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


# OpenSSH's GlobalKnownHostsFile default.
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")


def known_hosts_path(hop: Hop) -> str:
    """The user's (first) known_hosts file: where accept-new records a key."""
    return os.path.expanduser(hop.known_hosts_file or "~/.ssh/known_hosts")


def known_hosts_paths(hop: Hop) -> list[str]:
    """Every file consulted, in ssh's order: the user's files (UserKnownHostsFile), then the global ones."""
    user = [known_hosts_path(hop), *(os.path.expanduser(path) for path in hop.extra_known_hosts_files)]
    return user + [os.path.expanduser(path) for path in (hop.global_known_hosts_files or GLOBAL_KNOWN_HOSTS)]


def hop_known_hosts_name(hop: Hop) -> str:
    """The name a hop's key is stored under: its HostKeyAlias (without the port, as ssh), else host or [host]:port."""
    return hop.host_key_alias or known_hosts_name(hop.host, hop.port)


def load_hop_known_hosts(hop: Hop) -> t.Any:
    keys = paramiko.HostKeys()
    for path in known_hosts_paths(hop):
        load_known_hosts(path, keys)
    return keys


def load_known_hosts(path: str, keys: t.Any = None) -> t.Any:
    """The keys of a known_hosts file (added to ``keys`` when given); a missing file has none."""
    keys = keys if keys is not None else paramiko.HostKeys()
    if os.path.exists(path):
        try:
            keys.load(path)
        except (OSError, paramiko.SSHException) as exc:
            raise HostKeyUnknown(f"cannot read known_hosts file {path}: {exc}", advice="fix or replace the file") from exc
    return keys


def preferred_key_types(known: t.Any, name: str) -> list[str]:
    entry = known.lookup(name)
    if not entry:
        return []
    types = list(entry.keys())
    if "ssh-rsa" in types:
        types = ["rsa-sha2-512", "rsa-sha2-256", *types]
    return types


def verify_host_key(transport: t.Any, hop: Hop) -> list[str]:
    """Apply the hop's host-key policy. Returns warnings; raises HostKeyUnknown / HostKeyMismatch."""
    key = transport.get_remote_server_key()
    name = hop_known_hosts_name(hop)
    actual = fingerprint(key)
    key_line = f"{name} {key.get_name()} {key.get_base64()}"
    label = hop.label()
    if hop.host_key_fingerprint:
        if hop.host_key_fingerprint.rstrip("=") != actual:
            raise HostKeyMismatch(
                f"host key of {label} is {actual}, but host_key_fingerprint pins {hop.host_key_fingerprint}",
                advice="if the server's key really changed, update host_key_fingerprint; otherwise someone may be intercepting the connection",
                hop=label,
            )
        return []
    if hop.host_key_policy == "off":
        return [f"host key checking is off for {label}: accepted {key.get_name()} {actual} without verification"]
    path = known_hosts_path(hop)
    consulted = known_hosts_paths(hop)
    if len(consulted) > 1:
        path_text = ", ".join(p for p in consulted if p == path or os.path.exists(p))
    else:
        path_text = path
    known = load_hop_known_hosts(hop)
    entry = known.lookup(name)
    if entry and key.get_name() in entry:
        if entry[key.get_name()] == key:
            return []
        raise HostKeyMismatch(
            f"host key of {label} CHANGED: the server presented {key.get_name()} {actual}, known_hosts file(s) {path_text} have a different key for {name}",
            advice="if the change is expected, remove the old line (ssh-keygen -R '" + name + "' -f " + path + ") and verify the new fingerprint; "
            "otherwise someone may be intercepting the connection. accept-new never accepts a changed key",
            hop=label,
        )
    if entry:
        # The host is known with other key types only: treat a new type like a changed key (OpenSSH does the same).
        raise HostKeyMismatch(
            f"host key of {label}: the server presented {key.get_name()} {actual}, but {path_text} only know {', '.join(sorted(entry.keys()))} for {name}",
            advice="verify the new key out of band and add it to known_hosts",
            hop=label,
        )
    if hop.host_key_policy == "accept-new":
        _append_known_host(path, key_line)
        return [f"added {key.get_name()} {actual} for {name} to {path} (accept-new)"]
    raise HostKeyUnknown(
        f"host key of {label} is not known: {key.get_name()} {actual} is not in {path_text}",
        advice=f"verify the fingerprint, then add this line to {path}: {key_line} (or use host_key_checking=accept-new, or pin host_key_fingerprint)",
        hop=label,
    )


def _append_known_host(path: str, line: str) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
