# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Typed tunnel errors. Each one says what failed, where, and what to do next.

`permanent` errors (bad credentials, host keys, policy refusals) are never retried by the supervisor;
transient ones (network, server restarting) are retried with backoff.
"""

from __future__ import annotations

import typing as t

SSHD_FORWARDING_HINT = "burrow.ssh.sshd_forwarding can change it"


class TunnelError(Exception):
    """Base class: `kind` is a stable identifier shown to users and matched in tests."""

    kind = "error"
    permanent = True

    def __init__(self, message: str, *, advice: str = "", hop: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.advice = advice
        self.hop = hop

    def __str__(self) -> str:
        text = self.message
        if self.advice:
            text = f"{text}. {self.advice}"
        return text

    def to_dict(self) -> dict[str, t.Any]:
        return {"kind": self.kind, "message": self.message, "advice": self.advice, "hop": self.hop, "permanent": self.permanent}

    @classmethod
    def from_dict(cls, data: dict[str, t.Any]) -> TunnelError:
        for candidate in _all_error_classes():
            if candidate.kind == data.get("kind"):
                error = candidate.__new__(candidate)
                TunnelError.__init__(error, str(data.get("message", "")), advice=str(data.get("advice", "")), hop=str(data.get("hop", "")))
                return error
        return TunnelError(str(data.get("message", "unknown error")), advice=str(data.get("advice", "")), hop=str(data.get("hop", "")))


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


class PortInUse(TunnelError):
    kind = "port_in_use"


class NotSupported(TunnelError):
    kind = "not_supported"


class ControlError(TunnelError):
    kind = "control_error"
    permanent = False


def _all_error_classes() -> list[type[TunnelError]]:
    found: list[type[TunnelError]] = []
    pending: list[type[TunnelError]] = [TunnelError]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(current.__subclasses__())
    return found
