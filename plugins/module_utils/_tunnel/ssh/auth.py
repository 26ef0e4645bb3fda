# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Authentication of one hop: key content, key file, agent keys, default identities, then password or keyboard-interactive."""

from __future__ import annotations

import getpass
import io
import os
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import AuthenticationFailed
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Hop
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.hostkeys import fingerprint

try:
    import paramiko
except ImportError:  # pragma: no cover - the caller checks transport.HAS_PARAMIKO first
    paramiko = None


DEFAULT_IDENTITY_FILES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


def _key_classes() -> list[t.Any]:
    return [paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey]


def load_private_key(*, path: str | None = None, content: str | None = None, passphrase: str | None = None, label: str = "") -> t.Any:
    """Load an OpenSSH or PEM private key from a file or from its content."""
    source = os.path.expanduser(path) if path else "private_key"
    text: str | None = content
    if text is None and path:
        try:
            with open(os.path.expanduser(path), encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise AuthenticationFailed(
                f"cannot read private_key_file {source} for {label}: {exc.strerror}", advice="check the path and its permissions", hop=label
            ) from exc
    if not text:
        raise AuthenticationFailed(f"private key {source} for {label} is empty", hop=label)
    last_error: Exception | None = None
    for key_class in _key_classes():
        try:
            return key_class.from_private_key(io.StringIO(text), password=passphrase)
        except paramiko.PasswordRequiredException as exc:
            raise AuthenticationFailed(
                f"private key {source} for {label} is encrypted", advice="give its passphrase in private_key_passphrase (no_log)", hop=label
            ) from exc
        except (paramiko.SSHException, ValueError) as exc:
            last_error = exc
    if passphrase and last_error is not None and "checkints" in str(last_error).lower():
        raise AuthenticationFailed(f"wrong passphrase for private key {source} ({label})", advice="check private_key_passphrase", hop=label)
    raise AuthenticationFailed(
        f"cannot load private key {source} for {label}: {last_error}",
        advice="use an ed25519, ECDSA or RSA key in OpenSSH or PEM format (DSA is not supported)",
        hop=label,
    )


def _candidate_keys(hop: Hop) -> list[tuple[str, t.Any]]:
    label = hop.label()
    keys: list[tuple[str, t.Any]] = []
    if hop.private_key:
        keys.append(("private_key", load_private_key(content=hop.private_key, passphrase=hop.private_key_passphrase, label=label)))
    if hop.private_key_file:
        keys.append((hop.private_key_file, load_private_key(path=hop.private_key_file, passphrase=hop.private_key_passphrase, label=label)))
    if hop.use_agent and os.environ.get("SSH_AUTH_SOCK"):
        try:
            agent = paramiko.Agent()
            keys.extend((f"agent key {fingerprint(key)}", key) for key in agent.get_keys())
        except paramiko.SSHException:
            pass
    if not keys and not hop.password:
        for default in DEFAULT_IDENTITY_FILES:
            expanded = os.path.expanduser(default)
            if os.path.exists(expanded):
                try:
                    keys.append((default, load_private_key(path=expanded, passphrase=hop.private_key_passphrase, label=label)))
                except AuthenticationFailed:
                    continue
    return keys


def authenticate(transport: t.Any, hop: Hop) -> None:
    user = hop.user or getpass.getuser()
    label = hop.label()
    tried: list[str] = []
    allowed: list[str] = []
    for source, key in _candidate_keys(hop):
        try:
            remaining = transport.auth_publickey(user, key)
            if transport.is_authenticated():
                return
            allowed = list(remaining)
        except paramiko.BadAuthenticationType as exc:
            allowed = list(exc.allowed_types)
            tried.append(f"publickey ({source}: method not accepted)")
            break
        except paramiko.AuthenticationException:
            tried.append(f"publickey ({source})")
        if not transport.is_active():
            break
    if hop.password and transport.is_active():
        try:
            transport.auth_password(user, hop.password)
            if transport.is_authenticated():
                return
        except paramiko.BadAuthenticationType as exc:
            allowed = list(exc.allowed_types)
            tried.append("password (method not accepted)")
            if "keyboard-interactive" in allowed:
                secret = hop.password
                try:
                    transport.auth_interactive(user, lambda _title, _instructions, prompts: [secret for _prompt in prompts])
                    if transport.is_authenticated():
                        return
                except paramiko.AuthenticationException:
                    tried.append("keyboard-interactive")
        except paramiko.AuthenticationException:
            tried.append("password")
    if not tried:
        tried.append("none (no key, agent key or password was available)")
    accepted = f"; the server accepts: {', '.join(allowed)}" if allowed else ""
    raise AuthenticationFailed(
        f"authentication failed for {user}@{hop.host}:{hop.port}; tried {', '.join(tried)}{accepted}",
        advice="check private_key_file / private_key / password / use_agent for this hop and the server's authorized_keys",
        hop=label,
    )
