# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The session broker's wire format, shared by the worker side (client.py) and the broker (server.py).

Frames of one type byte, a 4-byte big-endian length and the payload. A request is one `J` (JSON) frame; the answer
is one `J` frame (``{"ok": true, ...}`` or ``{"ok": false, "error": <TunnelError.to_dict()>}``), except for `exec`,
whose answer is followed by a stream of `O`/`E` (stdout/stderr) frames and a final `X` (exit status) frame, while
the client may send `I` (stdin) frames and one `D` (stdin EOF) frame.
"""

from __future__ import annotations

import json
import socket
import struct
import typing as t

PROTOCOL = 1
FRAME = struct.Struct(">cI")
MAX_FRAME = 64 * 1024 * 1024
READ_SIZE = 256 * 1024

KIND_JSON = b"J"
KIND_STDOUT = b"O"
KIND_STDERR = b"E"
KIND_STDIN = b"I"
KIND_STDIN_EOF = b"D"
KIND_EXIT = b"X"


def send_frame(sock: socket.socket, kind: bytes, payload: bytes = b"") -> None:
    header = FRAME.pack(kind, len(payload))
    if len(payload) <= 65536:
        sock.sendall(header + payload)
    else:
        sock.sendall(header)
        sock.sendall(payload)


def send_json(sock: socket.socket, data: dict[str, t.Any], kind: bytes = KIND_JSON) -> None:
    send_frame(sock, kind, json.dumps(data, separators=(",", ":")).encode("utf-8"))


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = sock.recv(min(remaining, READ_SIZE))
        if not chunk:
            raise EOFError("connection closed in the middle of a frame")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """The next frame, or None at a clean end of stream."""
    first = sock.recv(FRAME.size)
    if not first:
        return None
    if len(first) < FRAME.size:
        first += _recv_exact(sock, FRAME.size - len(first))
    kind, length = FRAME.unpack(first)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes exceeds the limit")
    return kind, _recv_exact(sock, length) if length else b""
