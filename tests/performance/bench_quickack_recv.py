# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reader-thread CPU per MB of paramiko's receive pattern over loopback TCP, for variants of QuickAckSocket.recv.

paramiko reads each SSH packet with read_all(16) then read_all(rest), looping on sock.recv. This replays that loop
against a local writer sending 32 KiB packets and reports the reader thread's CPU time per MB (median of interleaved
runs), so variants of the re-arm of TCP_QUICKACK can be compared on a busy machine. Linux only. Usage:
    python tests/performance/bench_quickack_recv.py [--runs 7] [--size-mib 256]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import threading
import time
import typing as t

QUICKACK_OPTION: int = getattr(socket, "TCP_QUICKACK", 0)
PACKET_SIZE = 32 * 1024 + 16 + 20  # sshd's 32 KiB channel packet with its SSH framing, roughly
HEADER_SIZE = 16  # the AES block paramiko reads first


def _rearm(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, QUICKACK_OPTION, 1)
    except OSError:
        pass


class EveryRead(socket.socket):
    """What QuickAckSocket does: re-arm after every recv."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        _rearm(self)
        return data


class NoRearm(socket.socket):
    """The bound: no re-arm at all (loses the connection plugin's exec latency win)."""


class BodyReadsOnly(socket.socket):
    """Re-arm only after reads larger than the 16-byte packet header."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        if bufsize > HEADER_SIZE:
            _rearm(self)
        return data


class AtMostEveryMillisecond(socket.socket):
    """Re-arm only when the previous re-arm is over 1 ms old."""

    _last_rearm = 0.0

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        now = time.monotonic()
        if now - self._last_rearm > 0.001:
            self._last_rearm = now
            _rearm(self)
        return data


class ChunkedReads(socket.socket):
    """One recv_into of up to 256 KiB, one re-arm, and paramiko's reads served from that buffer (one more copy)."""

    _chunk: memoryview | None = None
    _start = 0
    _end = 0

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self._start < self._end:
            end = min(self._start + bufsize, self._end)
            data = bytes(self._chunk[self._start : end])  # type: ignore[index]
            self._start = end
            return data
        if self._chunk is None:
            self._chunk = memoryview(bytearray(256 * 1024))
        received = self.recv_into(self._chunk)
        _rearm(self)
        taken = min(received, bufsize)
        self._start, self._end = taken, received
        return bytes(self._chunk[:taken])


VARIANTS: dict[str, type[socket.socket]] = {
    "every read (current)": EveryRead,
    "no re-arm (bound)": NoRearm,
    "body reads only": BodyReadsOnly,
    "at most every 1 ms": AtMostEveryMillisecond,
    "256 KiB chunked reads": ChunkedReads,
}


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    out = b""  # paramiko's read_all concatenates the same way
    while size > 0:
        data = sock.recv(size)
        if not data:
            raise EOFError
        out += data
        size -= len(data)
    return out


def reader_cpu_ms_per_mb(variant: type[socket.socket], total: int) -> float:
    listener = socket.create_server(("127.0.0.1", 0))

    def write() -> None:
        conn, _address = listener.accept()
        burst = os.urandom(PACKET_SIZE) * 32
        sent = 0
        while sent < total:
            conn.sendall(burst)
            sent += len(burst)
        conn.close()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    plain = socket.create_connection(listener.getsockname())
    plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock = variant(fileno=plain.detach())
    received = 0
    started = time.thread_time()
    try:
        while True:
            _read_exactly(sock, HEADER_SIZE)
            _read_exactly(sock, PACKET_SIZE - HEADER_SIZE)
            received += PACKET_SIZE
    except EOFError:
        pass
    cpu = time.thread_time() - started
    writer.join()
    sock.close()
    listener.close()
    return cpu * 1000 / (received / 1e6)


def main(argv: t.Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--size-mib", type=int, default=256)
    args = parser.parse_args(argv)
    figures: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _run in range(args.runs):
        for name, variant in VARIANTS.items():  # interleaved, so load changes hit every variant alike
            figures[name].append(reader_cpu_ms_per_mb(variant, args.size_mib * 1024 * 1024))
    print(f"load average {os.getloadavg()[0]:.2f}; reader thread CPU ms/MB, median (min-max) of {args.runs} runs")
    base = statistics.median(figures["every read (current)"])
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"  {name:24} {median:.3f} ({min(values):.3f}-{max(values):.3f})  x current {median / base:.2f}")


if __name__ == "__main__":
    main()
