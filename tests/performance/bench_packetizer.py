# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Same-run A/B of the packet layer alone: paramiko's Packetizer against burrow.ssh's BatchPacketizer (ssh/packetizer.py).

bench_forwarding.py measures whole tunnels against OpenSSH, and between two of its invocations on a shared machine the
per-row CPU ratios move by 0.3 or more, too much to show what one change to the tunnel process does. This measures the
one thread that the change touches, with ``time.thread_time()`` (CPU of that thread only), AES-GCM
as negotiated, over loopback TCP read through the transport's QuickAckSocket, 32 KiB CHANNEL_DATA payloads (sshd's
largest), the two implementations alternating round by round:

- send: a relay thread's work per 256 KiB read: paramiko's ``send_message`` for each of 8 packets, against one
  ``send_channel_data`` of 8 (a second thread drains the raw bytes);
- read: the transport thread's work: ``read_message`` for every packet with paramiko's read_all, against the
  read-ahead one (a second thread writes the packets, batched).

    .venv/bin/python tests/performance/bench_packetizer.py --mib 256 --rounds 5
"""

from __future__ import annotations

import argparse
import pathlib
import socket
import statistics
import sys
import threading
import time
import typing as t

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".build" / "collections"))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402
from paramiko.common import MSG_CHANNEL_DATA  # noqa: E402
from paramiko.message import Message  # noqa: E402
from paramiko.packet import Packetizer  # noqa: E402

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.packetizer import BatchPacketizer  # noqa: E402
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import QuickAckSocket  # noqa: E402

KEY = bytes(range(16))
IV = bytes(range(100, 112))
PAYLOAD = 32768 - 64  # paramiko's margin under sshd's 32 KiB packets, as Channel sends them
PER_READ = 8  # packets in one 256 KiB relay read


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A loopback TCP connection whose reading end is the transport's own socket class (TCP_QUICKACK after each read)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        reading = QuickAckSocket(socket.AF_INET, socket.SOCK_STREAM)
        reading.connect(listener.getsockname())
        writing, _address = listener.accept()
    return writing, reading


def _pair(sender_class: type, reader_class: type) -> tuple[t.Any, t.Any, socket.socket, socket.socket]:
    ours, theirs = _tcp_pair()
    for sock in (ours, theirs):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sender, reader = sender_class(ours), reader_class(theirs)
    sender.set_outbound_cipher(AESGCM(KEY), 16, None, 16, None, aead=True, iv_out=IV)
    reader.set_inbound_cipher(AESGCM(KEY), 16, None, 16, None, aead=True, iv_in=IV)
    return sender, reader, ours, theirs


def _message(chunk: bytes) -> Message:
    message = Message()
    message.add_byte(bytes((MSG_CHANNEL_DATA,)))
    message.add_int(7)
    message.add_string(chunk)
    return message


def measure_send(batched: bool, packets: int) -> float:
    """CPU ms per MB of payload of the sending thread."""
    sender, _reader, ours, theirs = _pair(BatchPacketizer, Packetizer)
    block = bytes(PAYLOAD * PER_READ)
    drained = threading.Thread(target=_drain, args=(theirs,), daemon=True)
    drained.start()
    started = time.thread_time()
    view = memoryview(block)
    for _index in range(packets // PER_READ):
        if batched:
            sender.send_channel_data(7, [view[i * PAYLOAD : (i + 1) * PAYLOAD] for i in range(PER_READ)])
        else:
            for i in range(PER_READ):
                sender.send_message(_message(block[i * PAYLOAD : (i + 1) * PAYLOAD]))  # Channel._send slices as this does
    used = time.thread_time() - started
    ours.shutdown(socket.SHUT_WR)
    drained.join(60)
    ours.close()
    theirs.close()
    return used * 1000 / (packets * PAYLOAD / 1e6)


def _drain(sock: socket.socket) -> None:
    while sock.recv(1 << 20):
        pass


def measure_read(read_ahead: bool, packets: int) -> float:
    """CPU ms per MB of payload of the reading thread."""
    sender, reader, ours, theirs = _pair(BatchPacketizer, BatchPacketizer if read_ahead else Packetizer)
    block = memoryview(bytes(PAYLOAD * PER_READ))

    def write() -> None:
        for _index in range(packets // PER_READ):
            sender.send_channel_data(7, [block[i * PAYLOAD : (i + 1) * PAYLOAD] for i in range(PER_READ)])

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    started = time.thread_time()
    for _index in range(packets // PER_READ * PER_READ):
        kind, _message = reader.read_message()
        if kind != MSG_CHANNEL_DATA:
            raise RuntimeError(f"unexpected message {kind}")
    used = time.thread_time() - started
    writer.join(60)
    ours.close()
    theirs.close()
    return used * 1000 / (packets * PAYLOAD / 1e6)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256, help="payload per measurement (8-1024)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each measuring both implementations (1-10)")
    args = parser.parse_args(argv)
    packets = max(8, min(args.mib, 1024)) * (1 << 20) // PAYLOAD // PER_READ * PER_READ
    rounds = max(1, min(args.rounds, 10))
    results: dict[str, list[float]] = {"send paramiko": [], "send batched": [], "read paramiko": [], "read ahead": []}
    ratios: dict[str, list[float]] = {"send": [], "read": []}
    for index in range(rounds):
        order = (False, True) if index % 2 == 0 else (True, False)  # alternate which goes first
        send = {flag: measure_send(flag, packets) for flag in order}
        read = {flag: measure_read(flag, packets) for flag in order}
        results["send paramiko"].append(send[False])
        results["send batched"].append(send[True])
        results["read paramiko"].append(read[False])
        results["read ahead"].append(read[True])
        ratios["send"].append(send[True] / send[False])
        ratios["read"].append(read[True] / read[False])
        print(f"round {index + 1}/{rounds}: send {send[False]:.3f} -> {send[True]:.3f} ms/MB, read {read[False]:.3f} -> {read[True]:.3f} ms/MB", flush=True)

    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"

    print(f"\n| thread, {packets * PAYLOAD / 1e6:.0f} MB of 32 KiB packets, AES-GCM | paramiko ms/MB | burrow.ssh ms/MB | burrow / paramiko, per round |")
    print("|---|---|---|---|")
    send_row = " | ".join((spread(results["send paramiko"]), spread(results["send batched"]), spread(ratios["send"])))
    print(f"| relay thread sending (8 packets per 256 KiB read) | {send_row} |")
    print(f"| transport thread reading | {spread(results['read paramiko'])} | {spread(results['read ahead'])} | {spread(ratios['read'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
