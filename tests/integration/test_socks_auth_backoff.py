# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 16 item 9 (first half): failed SOCKS username/password attempts are slowed per listener and logged.

Before: 1300-1800 guesses per second on one listener, nothing logged.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import typing as t

from test_engine import running, tunnel_for

PASSWORD = "correct-horse"


def _attempt(port: int, password: str, connect_to: int = 0) -> bool:
    """One RFC 1929 attempt; True when accepted (and, with connect_to, a CONNECT to 127.0.0.1:connect_to granted)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"\x05\x01\x02")
        if sock.recv(2) != b"\x05\x02":
            return False
        user = b"u"
        secret = password.encode()
        sock.sendall(b"\x01" + bytes([len(user)]) + user + bytes([len(secret)]) + secret)
        if sock.recv(2) != b"\x01\x00":
            return False
        if not connect_to:
            return True
        sock.sendall(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + connect_to.to_bytes(2, "big"))
        return sock.recv(2) == b"\x05\x00"


def _guesses_per_second(port: int, seconds: float, threads: int = 8) -> float:
    count = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def guess() -> None:
        while time.monotonic() < deadline:
            try:
                _attempt(port, "wrong")
            except OSError:
                continue
            with lock:
                count[0] += 1

    workers = [threading.Thread(target=guess) for _index in range(threads)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(seconds + 40)
    return count[0] / (time.monotonic() - started)


def test_failed_socks_authentication_is_slowed_and_logged(sshd: t.Any, caplog: t.Any) -> None:
    caplog.set_level(logging.WARNING, logger="burrow.tunnel")
    forward = {"listen_port": 0, "socks_username": "u", "socks_password": PASSWORD}
    with running(tunnel_for(sshd, dynamic_forwards=[forward])) as engine:
        port = engine.status()["forwards"][0]["bound_port"]
        rate = _guesses_per_second(port, 3.0)
        print(f"SOCKS guesses per second with backoff (8 parallel clients): {rate:.2f}")
        assert rate < 5, f"{rate:.1f} guesses/s: failed attempts are not slowed"
        failures = [record.getMessage() for record in caplog.records if "SOCKS authentication failed" in record.getMessage()]
        assert failures and all("wrong" not in line for line in failures), failures[:3]
        assert "user 'u'" in failures[0] and "127.0.0.1" in failures[0]
        # The right password still gets in once its turn comes, and resets the backoff.
        assert _attempt(port, PASSWORD, connect_to=sshd.port)
        started = time.monotonic()
        assert _attempt(port, PASSWORD, connect_to=sshd.port)
        assert time.monotonic() - started < 1.5, "a success resets the backoff"
