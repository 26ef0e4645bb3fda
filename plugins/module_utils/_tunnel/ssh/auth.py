# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Authentication of one hop: key content, key file, agent keys, default identities, then password or keyboard-interactive."""

from __future__ import annotations

import datetime
import getpass
import io
import os
import socket
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import AuthenticationFailed
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Hop
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.hostkeys import fingerprint, fingerprint_blob
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.library import paramiko  # None without it: callers check HAS_PARAMIKO

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


CERT_SUFFIX = "-cert.pub"
# A certificate's fields after the key type's own public-key fields (PROTOCOL.certkeys).
CERT_KEY_FIELDS = {
    "ssh-ed25519-cert-v01@openssh.com": ("string",),
    "ssh-rsa-cert-v01@openssh.com": ("mpint", "mpint"),
    "ecdsa-sha2-nistp256-cert-v01@openssh.com": ("string", "string"),
    "ecdsa-sha2-nistp384-cert-v01@openssh.com": ("string", "string"),
    "ecdsa-sha2-nistp521-cert-v01@openssh.com": ("string", "string"),
}
USER_CERT = 1
CERT_TYPE_SUFFIX = "-cert-v01@openssh.com"


def _read_certified_key(blob: bytes) -> tuple[t.Any, bytes]:
    """(the certificate's message positioned after its key, the plain public blob of that key)."""
    message = paramiko.Message(blob)
    kind = message.get_text()
    fields = CERT_KEY_FIELDS.get(kind)
    if fields is None:
        raise ValueError(f"unsupported certificate type {kind}")
    message.get_string()  # nonce
    plain = paramiko.Message()
    plain.add_string(kind[: -len(CERT_TYPE_SUFFIX)])
    for field in fields:
        if field == "mpint":
            plain.add_mpint(message.get_mpint())
        else:
            plain.add_string(message.get_binary())
    return message, plain.asbytes()


def certified_public_key(blob: bytes) -> bytes:
    """The plain public key inside a certificate blob (what the same key's own public blob is)."""
    return _read_certified_key(blob)[1]


def certificate_validity(blob: bytes) -> tuple[int, list[str], int, int]:
    """(type, principals, valid_after, valid_before) of an OpenSSH certificate blob."""
    message = _read_certified_key(blob)[0]
    message.get_int64()  # serial
    cert_type = message.get_int()
    message.get_string()  # key id
    principals_blob = paramiko.Message(message.get_binary())
    principals: list[str] = []
    while principals_blob.get_remainder():
        principals.append(principals_blob.get_text())
    return cert_type, principals, message.get_int64(), message.get_int64()


def _when(stamp: int) -> str:
    if stamp >= 2**63:
        return "forever"
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def certificate_problem(cert_type: int, principals: list[str], valid_after: int, valid_before: int, user: str) -> str:
    """Why a certificate cannot log ``user`` in now ("" when it can): ssh checks this too before offering it."""
    now = int(time.time())
    if cert_type != USER_CERT:
        return "is a host certificate, not a user certificate"
    if now >= valid_before:
        return f"expired at {_when(valid_before)}"
    if now < valid_after:
        return f"is not valid before {_when(valid_after)}"
    if principals and user not in principals:
        return f"is not valid for user {user} (principals: {', '.join(principals)})"
    return ""


def attach_certificate(key: t.Any, key_source: str, hop: Hop, explicit: bool, notes: list[str]) -> tuple[str, t.Any] | None:
    """The key with its certificate loaded: the hop's certificate_file, else the key file's "-cert.pub".

    A certificate that is expired, not yet valid, not a user certificate or not for this user is not offered (a
    server would only say "denied"): the reason goes to ``notes`` for the error message if authentication fails.
    """
    label = hop.label()
    path = hop.certificate_file if explicit else key_source + CERT_SUFFIX
    if not path:
        return None
    expanded = os.path.expanduser(path)
    if not explicit and not os.path.isfile(expanded):
        return None
    try:
        blob = paramiko.PublicBlob.from_file(expanded)
    except (OSError, ValueError, paramiko.SSHException) as exc:
        raise AuthenticationFailed(
            f"cannot read certificate_file {expanded} for {label}: {exc}", advice="give an OpenSSH certificate (-cert.pub)", hop=label
        ) from exc
    try:
        cert_type, principals, valid_after, valid_before = certificate_validity(blob.key_blob)
    except (ValueError, paramiko.SSHException) as exc:
        raise AuthenticationFailed(f"cannot read certificate {expanded} for {label}: {exc}", hop=label) from exc
    problem = certificate_problem(cert_type, principals, valid_after, valid_before, hop.user or getpass.getuser())
    if problem:
        notes.append(f"the certificate {expanded} {problem}, so it was not offered")
        return None
    try:
        key.load_certificate(expanded)
    except (ValueError, paramiko.SSHException):
        if not explicit:  # an explicit certificate_file may belong to another of the hop's keys
            notes.append(f"the certificate {expanded} is not for the key {key_source}, so it was not offered")
        return None
    return f"{key_source} with certificate {path}", key


def _with_certificates(hop: Hop, source: str, loader: t.Callable[[], t.Any], notes: list[str]) -> list[tuple[str, t.Any]]:
    """A key as candidates: first with its certificate (when it has one), then plain, as ssh offers them."""
    keys: list[tuple[str, t.Any]] = []
    certified = None
    if hop.certificate_file:
        certified = attach_certificate(loader(), source, hop, True, notes)
    if certified is None and source != "private_key":
        certified = attach_certificate(loader(), source, hop, False, notes)
    if certified is not None:
        keys.append(certified)
    keys.append((source, loader()))
    return keys


def agent_socket_path(hop: Hop) -> str | None:
    """The agent socket of a hop: its IdentityAgent (a path, $VARIABLE or SSH_AUTH_SOCK), else $SSH_AUTH_SOCK; None for none."""
    if not hop.agent_enabled:
        return None
    chosen = hop.identity_agent
    if chosen is None or chosen == "SSH_AUTH_SOCK" or chosen.lower() == "none":
        # none with use_agent explicitly true: the task wins, with the usual socket.
        return os.environ.get("SSH_AUTH_SOCK") or None
    if chosen.startswith("$"):
        return os.environ.get(chosen[1:]) or None
    return os.path.expanduser(chosen)


def agent_keys(path: str) -> list[t.Any]:
    """The keys of the agent listening on ``path`` (paramiko's Agent reads only $SSH_AUTH_SOCK)."""
    agent = paramiko.Agent.__new__(paramiko.Agent)
    paramiko.agent.AgentSSH.__init__(agent)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(10)
        conn.connect(path)
        agent._connect(conn)
    except (OSError, paramiko.SSHException):
        conn.close()
        return []
    return list(agent.get_keys())


def agent_candidates(loaded: list[t.Any], user: str, notes: list[str]) -> list[tuple[str, t.Any]]:
    """The agent's keys as candidates, its certificates first (ssh-add loads a key's -cert.pub beside it too).

    paramiko's AgentKey signs with the certificate blob and names the certificate's algorithm, which is what sshd
    wants; a certificate that is expired, not yet valid or for another user is not offered, the reason noted.
    """
    certificates: list[tuple[str, t.Any]] = []
    plain: list[tuple[str, t.Any]] = []
    for key in loaded:
        name = key.get_name()
        if not name.endswith(CERT_TYPE_SUFFIX):
            plain.append((f"agent key {fingerprint(key)}", key))
            continue
        try:
            problem = certificate_problem(*certificate_validity(key.asbytes()), user)
            inner = fingerprint_blob(certified_public_key(key.asbytes()))
        except (ValueError, paramiko.SSHException) as exc:
            notes.append(f"the agent's certificate {fingerprint(key)} cannot be read ({exc}), so it was not offered")
            continue
        label = f"agent certificate for key {inner} ({key.comment or name})"
        if problem:
            notes.append(f"the agent's certificate for key {inner} ({key.comment or name}) {problem}, so it was not offered")
            continue
        certificates.append((label, key))
    return certificates + plain


def _public_halves(key: t.Any) -> set[bytes]:
    """The public blobs a key stands for: its own, and for an agent certificate the certified key's."""
    blob = key.asbytes()
    if key.get_name().endswith(CERT_TYPE_SUFFIX):
        try:
            return {blob, certified_public_key(blob)}
        except (ValueError, paramiko.SSHException):
            return {blob}
    return {blob}


def _candidate_keys(hop: Hop, notes: list[str]) -> list[tuple[str, t.Any]]:
    label = hop.label()
    passphrase = hop.private_key_passphrase
    keys: list[tuple[str, t.Any]] = []
    if hop.private_key:
        content = hop.private_key
        keys.extend(_with_certificates(hop, "private_key", lambda: load_private_key(content=content, passphrase=passphrase, label=label), notes))
    if hop.private_key_file:
        path = hop.private_key_file
        keys.extend(_with_certificates(hop, path, lambda: load_private_key(path=path, passphrase=passphrase, label=label), notes))
    socket_path = agent_socket_path(hop)
    if socket_path:
        loaded = agent_keys(socket_path)
        if hop.identities_only:
            # IdentitiesOnly: the agent signs only for the keys the hop names (their public halves), as with ssh;
            # a certificate the agent holds counts as its key's.
            named = {key.asbytes() for _source, key in keys}
            loaded = [key for key in loaded if _public_halves(key) & named]
        keys.extend(agent_candidates(loaded, hop.user or getpass.getuser(), notes))
    if not keys and not hop.password:
        for default in DEFAULT_IDENTITY_FILES:
            expanded = os.path.expanduser(default)
            if os.path.exists(expanded):
                try:
                    load_private_key(path=expanded, passphrase=hop.private_key_passphrase, label=label)
                except AuthenticationFailed:
                    continue
                keys.extend(_with_certificates(hop, default, lambda path=expanded: load_private_key(path=path, passphrase=passphrase, label=label), notes))
    return keys


def authenticate(transport: t.Any, hop: Hop) -> None:
    user = hop.user or getpass.getuser()
    label = hop.label()
    tried: list[str] = []
    allowed: list[str] = []
    notes: list[str] = []
    for source, key in _candidate_keys(hop, notes):
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
    noted = "".join(f"; {note}" for note in notes)
    raise AuthenticationFailed(
        f"authentication failed for {user}@{hop.host}:{hop.port}; tried {', '.join(tried)}{accepted}{noted}",
        advice="check private_key_file / private_key / password / use_agent for this hop and the server's authorized_keys",
        hop=label,
    )
