# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Loopback servers and clients with known behaviour, to drive the tunnel engine in tests and benchmarks."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import socket
import threading
import time
import typing as t

CHUNK = 256 * 1024


def payload(size: int, seed: int = 7) -> bytes:
    """Seeded pseudo-random bytes (fast to make, not compressible)."""
    rng = random.Random(seed)
    return rng.randbytes(size) if hasattr(rng, "randbytes") else os.urandom(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LoopbackServer:
    """A threaded TCP server on 127.0.0.1 with a per-connection handler; stops and joins cleanly."""

    def __init__(self, handler: t.Callable[[socket.socket], None], host: str = "127.0.0.1") -> None:
        self.handler = handler
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(4096)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._loop, daemon=True)
        self._accept.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self.sock.accept()[0]
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
            thread.start()
            self._threads = [th for th in self._threads if th.is_alive()]
            self._threads.append(thread)

    def _run(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self.handler(conn)

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._accept.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def echo_handler(conn: socket.socket) -> None:
    """Echo until EOF, then half-close: works for concurrent reads and writes of any size."""
    while True:
        data = conn.recv(CHUNK)
        if not data:
            break
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)


def digest_after_eof_handler(conn: socket.socket) -> None:
    """Reply only after the client's EOF: the sha256 of everything received, then a marker. Tests half-close."""
    digest = hashlib.sha256()
    while True:
        data = conn.recv(CHUNK)
        if not data:
            break
        digest.update(data)
    conn.sendall(digest.hexdigest().encode() + b"\nEND\n")
    conn.shutdown(socket.SHUT_WR)


def make_source_handler(data: bytes) -> t.Callable[[socket.socket], None]:
    """Send `data` and close at once, without reading: the download direction."""

    def handler(conn: socket.socket) -> None:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            while conn.recv(CHUNK):
                pass

    return handler


def recv_all(sock: socket.socket, limit: int | None = None) -> bytes:
    parts = []
    total = 0
    while True:
        data = sock.recv(CHUNK)
        if not data:
            break
        parts.append(data)
        total += len(data)
        if limit is not None and total >= limit:
            break
    return b"".join(parts)


def echo_roundtrip(address: tuple[str, int], data: bytes, timeout: float = 60.0, connect: t.Callable[[], socket.socket] | None = None) -> bytes:
    """Send data while receiving concurrently, half-close, return what came back."""
    sock = connect() if connect else socket.create_connection(address, timeout=timeout)
    sock.settimeout(timeout)
    received: list[bytes] = []

    def reader() -> None:
        received.append(recv_all(sock))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    view = memoryview(data)
    for offset in range(0, len(data), CHUNK):
        sock.sendall(view[offset : offset + CHUNK])
    sock.shutdown(socket.SHUT_WR)
    thread.join(timeout)
    sock.close()
    if thread.is_alive():
        raise TimeoutError("echo did not finish")
    return received[0]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_until(predicate: t.Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@contextlib.contextmanager
def frozen(pids: t.Sequence[int]) -> t.Iterator[None]:
    """The processes stopped (SIGSTOP) for the block, continued afterwards even when it fails."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def sshd_hop(sshd: t.Any) -> dict[str, t.Any]:
    """The options that reach the sandbox sshd with its client key and known_hosts (no agent)."""
    return dict(sshd.hop())
