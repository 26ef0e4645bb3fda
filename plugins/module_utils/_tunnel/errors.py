# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The one error envelope: typed tunnel errors that say what failed, where, and what to do next.

Every error that crosses a process boundary (tunnel process to module, session broker to worker) travels as
`to_dict()` and comes back as the same class with `from_dict()`; callers match classes, never strings.
`permanent` errors (bad credentials, host keys, policy refusals, bad declarations) are never retried by the
supervisor; transient ones (network, server restarting) are retried with backoff.
"""

from __future__ import annotations

import typing as t

SSHD_FORWARDING_HINT = "burrow.ssh.sshd_forwarding can change it"


SECRET_KEYS = frozenset({"password", "socks_password", "private_key", "private_key_passphrase", "passphrase"})
HIDDEN = "<hidden>"


def redact(value: object) -> object:
    """A value fit for an error message: secret keys of dicts (at any depth) shown as <hidden>.

    Errors are shown where Ansible's no_log masking does not reach (the connection plugin, the broker's log).
    """
    if isinstance(value, dict):
        return {key: HIDDEN if key in SECRET_KEYS and item is not None else redact(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(item) for item in value)
    return value


class TunnelError(Exception):
    """Base class: `kind` is a stable identifier shown to users and matched in tests."""

    kind = "error"
    permanent = True

    def __init__(self, message: str, *, advice: str = "", hop: str = "", field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.advice = advice
        self.hop = hop
        self.field = field

    def __str__(self) -> str:
        text = self.message
        if self.advice:
            text = f"{text}. {self.advice}"
        return text

    def to_dict(self) -> dict[str, t.Any]:
        return {"kind": self.kind, "message": self.message, "advice": self.advice, "hop": self.hop, "field": self.field, "permanent": self.permanent}

    @classmethod
    def from_dict(cls, data: t.Mapping[str, t.Any]) -> TunnelError:
        """The error `to_dict()` described, as its own class (TunnelError for a kind this side does not know)."""
        kind = data.get("kind")
        found = next((candidate for candidate in _all_error_classes() if candidate.kind == kind), TunnelError)
        error = found.__new__(found)
        fields = {name: str(data.get(name) or "") for name in ("advice", "hop", "field")}
        TunnelError.__init__(error, str(data.get("message") or "unknown error"), **fields)
        if isinstance(error, SpecError):
            error.value = None
            error.reason = error.message
        return error

    @classmethod
    def wrap(cls, exc: BaseException) -> TunnelError:
        """Any exception as an envelope: a TunnelError as it is, anything else as a permanent generic error."""
        if isinstance(exc, TunnelError):
            return exc
        return TunnelError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


class SpecError(TunnelError, ValueError):
    """A declaration error: which option (as a path like ``via[0].host``), the value given, and why."""

    kind = "invalid_option"

    def __init__(self, field: str, value: object, reason: str) -> None:
        super().__init__(f"{field}: {reason} (got {redact(value)!r})", field=field)
        self.value = value
        self.reason = reason


class HostKeyUnknown(TunnelError):
    kind = "host_key_unknown"


class HostKeyMismatch(TunnelError):
    kind = "host_key_mismatch"


class AuthenticationFailed(TunnelError):
    kind = "authentication_failed"


class Unreachable(TunnelError):
    kind = "unreachable"
    permanent = False


class ConnectionLost(TunnelError):
    kind = "connection_lost"
    permanent = False


class ForwardRefused(TunnelError):
    kind = "forward_refused"


class RemotePortHeld(TunnelError):
    """After a reconnect the server refused a remote forward it granted before: an earlier, half-dead session of ours
    may still hold the port until sshd notices it is gone (ClientAliveInterval x ClientAliveCountMax). Retried."""

    kind = "remote_port_held"
    permanent = False


class PortInUse(TunnelError):
    kind = "port_in_use"


class ExposedListener(TunnelError):
    """The server listens wider than a loopback request asked (sshd's GatewayPorts yes) and exposure was not allowed."""

    kind = "exposed_listener"


class NotSupported(TunnelError):
    kind = "not_supported"


class ControlError(TunnelError):
    kind = "control_error"
    permanent = False


class StateWriteFailed(TunnelError):
    """The tunnel's own files (state, control socket, log) could not be written: a full disk, a read-only mount."""

    kind = "state_write_failed"


class UntrustedState(TunnelError):
    """A state directory or one of its entries is not this user's own (owner, mode or type): never read, signalled or trusted."""

    kind = "untrusted_state"


class RemoteFileNotFound(TunnelError):
    kind = "not_found"


class TransferFailed(TunnelError):
    kind = "sftp_error"


def _all_error_classes() -> list[type[TunnelError]]:
    found: list[type[TunnelError]] = []
    pending: list[type[TunnelError]] = [TunnelError]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(current.__subclasses__())
    return found
