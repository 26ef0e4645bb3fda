# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Channel data sent as a batch of SSH packets in one socket write, with one copy of each byte before encryption.

paramiko builds every 32 KiB CHANNEL_DATA packet (sshd's largest) on its own, copying the payload into a Message, out
of it, into the padded packet, into the cipher's input and, encrypted, behind the length field, then a send() for that
one packet; Channel.sendall also slices the rest of the caller's buffer after every packet (paramiko#2659). Here the
payloads of up to a window's worth of packets are each joined once with their header and padding, encrypted, and
written together.

Reads go the same way round: paramiko asks the socket for each packet's first block and then for its rest, two recv()
calls per packet, each followed by the TCP_QUICKACK setsockopt (transport.py). read_all here takes up to 256 KiB at
once from a socket and serves the packets from that. An AES-GCM packet is then decrypted and cut into its Message with
one copy of the payload where paramiko makes three, without paramiko's per-packet debug checks, and the handshake timer
is cancelled once, not after every packet (threading.Timer.cancel sets an Event each time). In a 1-byte round-trip run
those per-packet steps were a quarter of the transport thread's time holding the GIL (py-spy --gil).

Only AES-GCM without compression takes the batched send path (what the tunnel process negotiates); any other cipher state goes
through paramiko's own send_message one packet at a time, so nothing about it changes. The sequence numbers, the GCM
invocation counter and the rekey counters advance exactly as paramiko's do, under paramiko's own write lock.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.library import paramiko  # first: without invoke (library.py)

try:
    from paramiko.common import DEBUG, MSG_CHANNEL_DATA
    from paramiko.message import Message
    from paramiko.packet import NeedRekeyException, Packetizer
    from paramiko.ssh_exception import SSHException

    _PacketizerBase: t.Any = Packetizer
    _ReadAheadSockets: tuple[type, ...] = (socket.socket, paramiko.Channel)
except ImportError:  # pragma: no cover - the transport module reports the missing library
    _PacketizerBase = object
    MSG_CHANNEL_DATA = 94
    DEBUG = 10
    SSHException = NeedRekeyException = Exception
    _ReadAheadSockets = (socket.socket,)
    Message = None

SEQUENCE_MASK = 0xFFFFFFFF
GCM_COUNTER_MASK = 0xFFFFFFFFFFFFFFFF
DATA_HEADER = struct.Struct(">BII")  # SSH_MSG_CHANNEL_DATA, recipient channel, string length
PACKET_LENGTH = struct.Struct(">I")
# One recv() takes this much when it is there: eight of sshd's 32 KiB packets.
READ_AHEAD = 256 * 1024


class RawMessage:
    """The one method of paramiko's Message that Packetizer.send_message uses."""

    def __init__(self, payload: bytes) -> None:
        self._payload = payload

    def asbytes(self) -> bytes:
        return self._payload


class BatchPacketizer(_PacketizerBase):  # type: ignore[misc,valid-type]
    """paramiko's Packetizer plus send_channel_data (several CHANNEL_DATA packets, one write) and reads ahead."""

    def __init__(self, sock: t.Any) -> None:
        super().__init__(sock)
        # Only where recv(n) returns what is there: paramiko's ProxyCommand waits until it has all n bytes.
        self._reads_ahead = isinstance(sock, _ReadAheadSockets)
        self._ahead = b""
        self._ahead_at = 0

    def complete_handshake(self) -> None:
        # paramiko's Transport calls this after every packet; cancelling the (long finished) timer each time costs an
        # Event.set and a lock round per packet.
        if self._Packetizer__timer is not None and not self._Packetizer__handshake_complete:
            super().complete_handshake()

    def read_message(self) -> tuple[int, t.Any]:
        """paramiko's read_message; for AES-GCM without compression or packet dumps, with one copy of the payload."""
        if not self._Packetizer__aead_in or self._Packetizer__compress_engine_in is not None or self._Packetizer__dump_packets:
            return super().read_message()
        length_field = self.read_all(4, check_rekey=True)
        packet_size = PACKET_LENGTH.unpack(length_field)[0]
        sealed = self.read_all(packet_size + self._Packetizer__mac_size_in, check_rekey=False)
        iv = self._Packetizer__iv_in
        packet = self._Packetizer__block_engine_in.decrypt(iv, sealed, length_field)
        self._Packetizer__iv_in = iv[:4] + ((int.from_bytes(iv[4:], "big") + 1) & GCM_COUNTER_MASK).to_bytes(8, "big")
        padding = packet[0]
        if packet_size - padding < 2:
            raise SSHException("Invalid packet: no message in it")
        message = Message(packet[2 : packet_size - padding])
        sequence = self._Packetizer__sequence_number_in
        message.seqno = sequence
        sequence = (sequence + 1) & SEQUENCE_MASK
        if sequence == 0 and not self._initial_kex_done:
            raise SSHException("Sequence number rolled over during initial kex!")
        self._Packetizer__sequence_number_in = sequence
        self._count_received(packet_size + self._Packetizer__mac_size_in + 4)
        return packet[1], message

    def _count_received(self, raw_packet_size: int) -> None:
        # paramiko's rekey accounting for a received packet (read_message), unchanged.
        self._Packetizer__received_bytes += raw_packet_size
        self._Packetizer__received_packets += 1
        if self._Packetizer__need_rekey:
            self._Packetizer__received_bytes_overflow += raw_packet_size
            self._Packetizer__received_packets_overflow += 1
            if (
                self._Packetizer__received_packets_overflow >= self.REKEY_PACKETS_OVERFLOW_MAX
                or self._Packetizer__received_bytes_overflow >= self.REKEY_BYTES_OVERFLOW_MAX
            ):
                raise SSHException("Remote transport is ignoring rekey requests")
        elif self._Packetizer__received_packets >= self.REKEY_PACKETS or self._Packetizer__received_bytes >= self.REKEY_BYTES:
            self._log(DEBUG, f"Rekeying (hit {self._Packetizer__received_packets} packets, {self._Packetizer__received_bytes} bytes received)")
            self._Packetizer__received_bytes_overflow = 0
            self._Packetizer__received_packets_overflow = 0
            self._trigger_rekey()

    def read_all(self, n: int, check_rekey: bool = False) -> bytes:
        """paramiko's read_all (same timeouts, keepalives and rekey check), taking up to READ_AHEAD per recv()."""
        if not self._reads_ahead or self._Packetizer__remainder:
            return super().read_all(n, check_rekey)  # the bytes after the banner come first, as paramiko has them
        available = len(self._ahead) - self._ahead_at
        if available >= n:
            start = self._ahead_at
            self._ahead_at += n
            return self._ahead[start : start + n]
        parts = [self._ahead[self._ahead_at :]] if available else []
        self._ahead, self._ahead_at = b"", 0
        missing = n - available
        while missing > 0:
            if self.handshake_timed_out():
                raise EOFError()
            try:
                data = self._Packetizer__socket.recv(max(missing, READ_AHEAD))
            except socket.timeout:
                self._waited(check_rekey and not parts)
                continue
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    self._waited(check_rekey and not parts)
                    continue
                if self._Packetizer__closed:
                    raise EOFError() from exc
                raise
            if not data:
                raise EOFError()
            if len(data) > missing:
                self._ahead = data
                self._ahead_at = missing
                data = data[:missing]
            parts.append(data)
            missing -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _waited(self, may_rekey: bool) -> None:
        # What paramiko's read_all does when its socket's timeout passes without data.
        if self._Packetizer__closed:
            raise EOFError()
        if may_rekey and self._Packetizer__need_rekey:
            raise NeedRekeyException()
        self._check_keepalive()

    def send_channel_data(self, remote_chanid: int, chunks: list[memoryview]) -> None:
        """Send one CHANNEL_DATA packet per chunk, in order; the caller holds the transport's send lock and the window."""
        if not self._Packetizer__aead_out or self._Packetizer__compress_engine_out is not None or self._Packetizer__dump_packets:
            for chunk in chunks:
                self.send_message(RawMessage(DATA_HEADER.pack(MSG_CHANNEL_DATA, remote_chanid, len(chunk)) + bytes(chunk)))
            return
        with self._Packetizer__write_lock:
            engine = self._Packetizer__block_engine_out
            block_size = self._Packetizer__block_size_out
            fixed_iv = self._Packetizer__iv_out[:4]
            counter = int.from_bytes(self._Packetizer__iv_out[4:], "big")
            sequence = self._Packetizer__sequence_number_out
            # Padding is random for GCM (paramiko's choice, RFC 4253 allows either): one urandom call for the batch.
            padding_pool = os.urandom(block_size * len(chunks) + 4 * len(chunks))
            pool_at = 0
            wire: list[bytes] = []
            for chunk in chunks:
                header = DATA_HEADER.pack(MSG_CHANNEL_DATA, remote_chanid, len(chunk))
                payload_length = len(header) + len(chunk)
                # RFC 5647 7.2: the length field is not encrypted, so it does not count towards the block.
                padding = 3 + block_size - ((payload_length + 4) % block_size)
                length = PACKET_LENGTH.pack(payload_length + padding + 1)
                body = b"".join((bytes((padding,)), header, chunk, padding_pool[pool_at : pool_at + padding]))
                pool_at += padding
                wire.append(length)
                wire.append(engine.encrypt(fixed_iv + counter.to_bytes(8, "big"), body, length))
                counter = (counter + 1) & GCM_COUNTER_MASK
                sequence = (sequence + 1) & SEQUENCE_MASK
                if sequence == 0 and not self._initial_kex_done:
                    raise SSHException("Sequence number rolled over during initial kex!")
            self._Packetizer__iv_out = fixed_iv + counter.to_bytes(8, "big")
            self._Packetizer__sequence_number_out = sequence
            out = b"".join(wire)
            self.write_all(out)
            self._Packetizer__sent_bytes += len(out)
            self._Packetizer__sent_packets += len(chunks)
            self._request_rekey_when_due()

    def _request_rekey_when_due(self) -> None:
        # paramiko's own rule (send_message), after each write.
        due = self._Packetizer__sent_packets >= self.REKEY_PACKETS or self._Packetizer__sent_bytes >= self.REKEY_BYTES
        if due and not self._Packetizer__need_rekey:
            self._Packetizer__received_bytes_overflow = 0
            self._Packetizer__received_packets_overflow = 0
            self._trigger_rekey()


__all__ = ["BatchPacketizer", "paramiko"]
