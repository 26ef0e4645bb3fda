# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The tunnel process's control protocol, shared by both ends: one JSON line in, one JSON line out.

Requests: ``{"op": "status"}``, ``{"op": "probe"}``, ``{"op": "apply", "local_forwards": [...], ...}``,
``{"op": "stop", "deadline": 10}``. Answers: ``{"ok": true, ...}`` or ``{"ok": false, "error": <TunnelError.to_dict()>}``.
The start report on the spawn pipe uses the same error envelope.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import ControlError, TunnelError, UntrustedState

MAX_LINE_BYTES = 1024 * 1024


def read_line(conn: socket.socket) -> bytes:
    """One JSON line of the control protocol; bounded."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_LINE_BYTES:
            raise ValueError("request too large")
    return data


def encode(message: t.Mapping[str, t.Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def failure(exc: BaseException) -> dict[str, t.Any]:
    """The answer for a request that failed: the error envelope of ``exc``."""
    return {"ok": False, "error": TunnelError.wrap(exc).to_dict()}


def check_peer(sock: socket.socket, path: str, who: str) -> None:
    """The process behind a control socket must be this user's (SO_PEERCRED): a planted socket is never sent a request."""
    peer_cred = getattr(socket, "SO_PEERCRED", None)
    if peer_cred is None:  # not Linux: the socket's owner and mode were checked before connecting
        return
    pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, peer_cred, struct.calcsize("3i")))
    if uid != os.getuid():
        raise UntrustedState(
            f"{who}: control socket {path} is served by process {pid} of uid {uid}, not by this user (uid {os.getuid()}); refusing to trust it",
            advice="Remove the socket, or set state_dir to a directory only this user can write to",
        )


def call(path: str, request: t.Mapping[str, t.Any], timeout: float, who: str) -> dict[str, t.Any]:
    """Send one request to the control socket at ``path``; the answer, or the TunnelError it carries."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        check_peer(sock, path, who)
        sock.sendall(encode(request))
        data = read_line(sock)
    except (OSError, ValueError) as exc:
        raise ControlError(f"{who}: control socket {path} did not answer: {getattr(exc, 'strerror', None) or exc}") from exc
    finally:
        sock.close()
    try:
        response = json.loads(data)
    except ValueError as exc:
        raise ControlError(f"{who}: unreadable answer on the control socket") from exc
    if not response.get("ok"):
        raise TunnelError.from_dict(response.get("error") or {})
    return dict(response)
