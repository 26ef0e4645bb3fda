# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One HTTP/1.0 listener per inventory host, each answering ``GET /`` with that host's marker line.

Stdlib only, one thread, one process per site (the scale test runs one inside each network namespace)::

    python marker_server.py BIND_HOST PORTS_FILE NAME [NAME...]

It binds BIND_HOST:0 once per NAME, writes ``{"NAME": port, ...}`` to PORTS_FILE (atomically, 0600) when every
listener is up, and answers each request with ``burrow-scale-marker NAME SITE`` (SITE = $BURROW_SCALE_SITE).
SIGTERM ends it.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys
import time

MAX_REQUEST = 8192
CLIENT_DEADLINE = 10.0


def marker(name: str, site: str) -> bytes:
    return f"burrow-scale-marker {name} {site}\n".encode()


def response(body: bytes) -> bytes:
    head = f"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


def serve(bind_host: str, ports_file: str, names: list[str]) -> int:
    site = os.environ.get("BURROW_SCALE_SITE", "")
    stop = [False]

    def on_term(_signum: int, _frame: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    sel = selectors.DefaultSelector()
    ports: dict[str, int] = {}
    for name in names:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((bind_host, 0))
        listener.listen(128)
        listener.setblocking(False)
        sel.register(listener, selectors.EVENT_READ, ("listen", name))
        ports[name] = listener.getsockname()[1]
    tmp = f"{ports_file}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(ports, handle)
    os.replace(tmp, ports_file)
    clients: dict[socket.socket, tuple[str, bytes, float]] = {}
    while not stop[0]:
        for key, _events in sel.select(timeout=0.5):
            kind, name = key.data
            sock = _as_socket(key.fileobj)
            if kind == "listen":
                try:
                    conn = sock.accept()[0]
                except OSError:
                    continue
                conn.setblocking(False)
                clients[conn] = (name, b"", time.monotonic() + CLIENT_DEADLINE)
                sel.register(conn, selectors.EVENT_READ, ("client", name))
                continue
            held_name, data, deadline = clients[sock]
            try:
                chunk = sock.recv(MAX_REQUEST)
            except OSError:
                chunk = b""
            data += chunk
            if chunk and b"\r\n\r\n" not in data and len(data) < MAX_REQUEST:
                clients[sock] = (held_name, data, deadline)
                continue
            if chunk:
                sock.setblocking(True)
                sock.settimeout(5)
                try:
                    sock.sendall(response(marker(held_name, site)))
                except OSError:
                    pass
            sel.unregister(sock)
            del clients[sock]
            sock.close()
        now = time.monotonic()
        for sock in [sock for sock, (_n, _d, deadline) in clients.items() if deadline < now]:
            sel.unregister(sock)
            del clients[sock]
            sock.close()
    return 0


def _as_socket(fileobj: object) -> socket.socket:
    if not isinstance(fileobj, socket.socket):
        raise TypeError(f"unexpected selector object {fileobj!r}")
    return fileobj


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.stderr.write(__doc__ or "")
        sys.exit(2)
    sys.exit(serve(sys.argv[1], sys.argv[2], sys.argv[3:]))
