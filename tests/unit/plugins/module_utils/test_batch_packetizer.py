# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Batched CHANNEL_DATA packets read back by paramiko's own Packetizer, byte for byte, and by the read-ahead one (packetizer.py).

The batch builds SSH packets itself, so paramiko's reader is the judge: every packet must decrypt and authenticate
under the sequence of GCM nonces and sequence numbers paramiko expects, and the state left behind must be the state
paramiko's send_message would have left (a packet sent after the batch still reads). sshd itself reads them in
tests/integration/test_engine.py (transfers with sha256, rekeys every 256 KiB).
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import typing as t

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from paramiko.common import MSG_CHANNEL_DATA, MSG_IGNORE
from paramiko.message import Message
from paramiko.packet import Packetizer

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.packetizer import BatchPacketizer

KEY = bytes(range(16))
IV = bytes(range(100, 112))
MAC_KEY = bytes(range(32))


def _gcm_pair(reader_class: type) -> tuple[BatchPacketizer, Packetizer, tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    sender, reader = BatchPacketizer(ours), reader_class(theirs)
    sender.set_outbound_cipher(AESGCM(KEY), 16, None, 16, None, aead=True, iv_out=IV)
    reader.set_inbound_cipher(AESGCM(KEY), 16, None, 16, None, aead=True, iv_in=IV)
    return sender, reader, (ours, theirs)


def _ctr_pair(reader_class: type) -> tuple[BatchPacketizer, Packetizer, tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    sender, reader = BatchPacketizer(ours), reader_class(theirs)
    encryptor = Cipher(algorithms.AES(KEY), modes.CTR(bytes(16))).encryptor()
    decryptor = Cipher(algorithms.AES(KEY), modes.CTR(bytes(16))).decryptor()
    sender.set_outbound_cipher(encryptor, 16, hashlib.sha256, 32, MAC_KEY, sdctr=True)
    reader.set_inbound_cipher(decryptor, 16, hashlib.sha256, 32, MAC_KEY)
    return sender, reader, (ours, theirs)


@pytest.fixture(
    params=[(cipher, reader) for reader in (Packetizer, BatchPacketizer) for cipher in ("aes128-gcm", "aes128-ctr + hmac-sha2-256")],
    ids=lambda param: f"{param[0]}, read by {param[1].__name__}",
)
def pair(request: pytest.FixtureRequest) -> t.Iterator[tuple[BatchPacketizer, Packetizer]]:
    cipher, reader_class = request.param
    sender, reader, socks = _gcm_pair(reader_class) if cipher == "aes128-gcm" else _ctr_pair(reader_class)
    yield sender, reader
    for sock in socks:
        sock.close()


def _read(reader: Packetizer, count: int) -> tuple[list[tuple[int, bytes]], list[BaseException], threading.Thread]:
    """``count`` messages as (type, rest of the payload), read on a thread (the sender writes into a bounded socket)."""
    got: list[tuple[int, bytes]] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            for _index in range(count):
                kind, message = reader.read_message()
                got.append((kind, message.get_remainder()))
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return got, failures, thread


def _data(chanid: int, payload: bytes) -> bytes:
    return struct.pack(">II", chanid, len(payload)) + payload


def test_a_batch_reads_back_as_the_packets_it_was_given(pair: tuple[BatchPacketizer, Packetizer]) -> None:
    sender, reader = pair
    chunks = [os.urandom(32704), os.urandom(1), os.urandom(32704), os.urandom(777), b"", os.urandom(5000)]
    view = memoryview(b"".join(chunks))
    slices, at = [], 0
    for chunk in chunks:
        slices.append(view[at : at + len(chunk)])
        at += len(chunk)
    got, failures, thread = _read(reader, len(chunks) + 1)
    sender.send_channel_data(7, slices)
    after = Message()
    after.add_byte(bytes((MSG_IGNORE,)))
    after.add_string(b"paramiko's own path, after the batch")
    sender.send_message(after)
    thread.join(30)
    assert not failures, failures
    assert got[:-1] == [(MSG_CHANNEL_DATA, _data(7, chunk)) for chunk in chunks]
    assert got[-1][0] == MSG_IGNORE, "the nonce and sequence number left by the batch are the ones paramiko continues from"


def test_a_batch_asks_for_a_rekey_once_its_bytes_pass_the_limit(pair: tuple[BatchPacketizer, Packetizer]) -> None:
    sender, reader = pair
    sender.REKEY_BYTES = 100_000
    got, failures, thread = _read(reader, 4)
    sender.send_channel_data(3, [memoryview(os.urandom(30_000))] * 2)
    assert not sender.need_rekey()
    sender.send_channel_data(3, [memoryview(os.urandom(30_000))] * 2)
    assert sender.need_rekey()
    thread.join(30)
    assert not failures, failures
    assert len(got) == 4


def test_reading_ahead_keeps_the_bytes_it_did_not_need_for_the_next_packet() -> None:
    """Many small packets arrive in one recv(); each read_message still gets exactly its own, in order, then EOF."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        sender, reader = Packetizer(ours), BatchPacketizer(theirs)
        sender.set_outbound_cipher(AESGCM(KEY), 16, None, 16, None, aead=True, iv_out=IV)
        reader.set_inbound_cipher(AESGCM(KEY), 16, None, 16, None, aead=True, iv_in=IV)
        payloads = [os.urandom(size) for size in (1, 15, 16, 17, 300, 5000, 40000, 3)]
        for payload in payloads:
            message = Message()
            message.add_byte(bytes((MSG_CHANNEL_DATA,)))
            message.add_int(5)
            message.add_string(payload)
            sender.send_message(message)
        ours.shutdown(socket.SHUT_WR)
        got = [reader.read_message() for _payload in payloads]
        assert [(kind, message.get_remainder()) for kind, message in got] == [(MSG_CHANNEL_DATA, _data(5, payload)) for payload in payloads]
        with pytest.raises(EOFError):
            reader.read_message()


def test_received_packets_count_towards_a_rekey_and_number_their_messages() -> None:
    """The lean AES-GCM read path keeps paramiko's accounting: sequence numbers on the messages, a rekey asked for once."""
    sender, reader, socks = _gcm_pair(BatchPacketizer)
    with socks[0], socks[1]:
        reader.REKEY_BYTES = 50_000
        for _index in range(3):
            message = Message()
            message.add_byte(bytes((MSG_CHANNEL_DATA,)))
            message.add_int(5)
            message.add_string(os.urandom(20_000))
            sender.send_message(message)
        seqnos = []
        for _index in range(2):
            seqnos.append(reader.read_message()[1].seqno)
            assert not reader.need_rekey()
        seqnos.append(reader.read_message()[1].seqno)
        assert reader.need_rekey(), "60 KB received against a 50 KB limit"
        assert seqnos == [0, 1, 2]
