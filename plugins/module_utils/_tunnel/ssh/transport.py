# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The SSH transport the engine and the broker use: paramiko's, with deadlines, streamlocal channels and lean buffers."""

from __future__ import annotations

import collections
import contextlib
import socket
import struct
import threading
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh import channel_order
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.global_requests import NumberedGlobalRequests
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.library import paramiko  # first: without invoke (library.py)
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.packetizer import BatchPacketizer

try:
    import paramiko.channel
    from paramiko.buffered_pipe import PipeTimeout
    from paramiko.common import cMSG_CHANNEL_OPEN, cMSG_CHANNEL_OPEN_SUCCESS
    from paramiko.message import Message

    HAS_PARAMIKO = True
    PARAMIKO_IMPORT_ERROR: str | None = None
    _TransportBase: t.Any = paramiko.Transport
except ImportError as _exc:  # pragma: no cover - exercised by the missing_required_lib path
    HAS_PARAMIKO = False
    PARAMIKO_IMPORT_ERROR = str(_exc)
    _TransportBase = object
    paramiko = None

# Measured (docs/performance.md): AES-GCM avoids paramiko's HMAC cost, the main crypto cost per packet;
# large windows and packets cut per-packet Python work. The window also bounds memory per slow channel.
WINDOW_SIZE = 4 * 1024 * 1024
MAX_PACKET_SIZE = 256 * 1024
PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
    "aes192-ctr",
)
PREFERRED_MACS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "hmac-sha2-256", "hmac-sha2-512")
# OpenSSH's PROTOCOL, section 2.4: remote Unix-socket listeners (ssh -R /path:...), which paramiko does not know.
STREAMLOCAL_FORWARD = "streamlocal-forward@openssh.com"
CANCEL_STREAMLOCAL_FORWARD = "cancel-streamlocal-forward@openssh.com"
FORWARDED_STREAMLOCAL = "forwarded-streamlocal@openssh.com"
# How long an authenticated session's transport thread waits in one read: only a rekey asked for by our own sends while
# nothing arrives waits for it (data or a window adjustment from the peer wakes it at once).
SETTLED_READ_TIMEOUT = 10.0
# One write carries at most 16 packets (512 KiB of sshd's 32 KiB packets); a relay reads 256 KiB at a time.
MAX_PACKETS_PER_WRITE = 16
# Directly delivered bytes the reader credits at once: one wake-up of the reader per 1 MiB. At 256 KiB, waking it took
# 25 % of the transport thread's samples on -L down (Condition.notify, py-spy); at 1 MiB 11 %, and the peer still has
# 3 of its 4 MiB of window while the credit is pending.
CREDIT_BATCH = WINDOW_SIZE // 4
# An int, not the IntFlag that ``|`` on socket's flags makes: Python 3.11 computes that in enum's Python code, which
# took 11 % of the transport thread's GIL time in a 1-byte round-trip run (py-spy --gil), once per delivered packet.
SEND_NOW_FLAGS = int(socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
OPEN_FAILURE_REASONS = {1: "administratively prohibited", 2: "connect failed", 3: "unknown channel type", 4: "resource shortage"}


class DequePipe:
    """Drop-in for paramiko's BufferedPipe (a channel's receive buffer) that keeps the received bytes objects in a deque.

    BufferedPipe copies every packet into an array.array, copies it out again with tobytes() and memmoves the rest
    of the buffer on every read. Measured through the tunnel process (docs/performance.md): the directions that read
    from the channel use 22-26 % less CPU per MB and move 20-24 % more MB/s.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._event: threading.Event | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._closed = False
        # Direct delivery (attach_sink): received data goes from the transport thread straight into the socket the
        # relay would copy it to, while the reader waits with nothing buffered, saving a thread handoff per packet.
        self._sink: socket.socket | None = None
        self._credit: t.Callable[[int], None] | None = None
        self._reader_waiting = False  # the reader sits in wait(): it finished writing whatever it read before
        # No reader yet (attach_sink with on_reader_needed): nothing was taken out, so direct delivery keeps the order,
        # and the transport thread credits the window itself. The first thing it cannot deliver asks for a reader.
        self._no_reader = False
        self._on_reader_needed: t.Callable[[], None] | None = None
        self._uncredited = 0  # delivered directly, not yet added to the SSH window (the reader does that)
        self.delivered_directly = 0

    def set_event(self, event: threading.Event) -> None:
        with self._lock:
            self._event = event
            if self._closed or self._size:
                event.set()
            else:
                event.clear()

    def attach_sink(self, sink: socket.socket, credit: t.Callable[[int], None], on_reader_needed: t.Callable[[], None] | None = None) -> None:
        """Let feed() send into ``sink`` (a blocking socket) itself; ``credit(n)`` later opens the window for those bytes.

        With ``on_reader_needed`` there is no reader yet: it is called once (on the transport thread, outside the lock)
        when data has to be buffered or the pipe closes, so that a reader is started only for a connection that needs one.
        """
        ask = None
        with self._lock:
            self._sink = sink
            self._credit = credit
            if on_reader_needed is not None:
                self._no_reader = True
                self._on_reader_needed = on_reader_needed
                # What arrived before the sink (the server may answer, even end, right after the channel opened).
                ask = self._reader_request() if self._size or self._closed else None
        if ask is not None:
            ask()

    def detach_sink(self) -> None:
        with self._lock:
            self._sink = None
            self._no_reader = False
            self._on_reader_needed = None

    def feed(self, data: bytes) -> None:
        credit = 0
        ask = None
        with self._lock:
            if self._event is not None:
                self._event.set()
            if data and (self._reader_waiting or self._no_reader) and not self._size and self._sink is not None and self._event is None:
                # Order holds: nothing is buffered and the reader, if any, waits: it has written all it took out before.
                sent = self._send_directly(data)
                self._uncredited += sent
                self.delivered_directly += sent
                data = data[sent:]
                if not data and self._uncredited >= CREDIT_BATCH:
                    if self._no_reader:
                        credit, self._uncredited = self._uncredited, 0  # no reader to do it: this thread credits
                    else:
                        self._cv.notify_all()  # the reader opens the window: one wake-up per batch, not per packet
            if data:
                self._chunks.append(bytes(data))
                self._size += len(data)
                ask = self._reader_request()
                self._cv.notify_all()
        if credit:
            # A window adjustment from the transport thread never waits for a key exchange (held until NEWKEYS).
            self._credit(credit)  # type: ignore[misc]
        if ask is not None:
            ask()

    def _reader_request(self) -> t.Callable[[], None] | None:
        """With the lock held: the callback to ask for a reader with, once (from then on the reader credits and drains)."""
        if not self._no_reader:
            return None
        self._no_reader = False
        return self._on_reader_needed

    def _send_directly(self, data: bytes) -> int:
        try:
            return self._sink.send(data, SEND_NOW_FLAGS)  # type: ignore[union-attr]
        except (BlockingIOError, InterruptedError):
            return 0  # the socket is full: buffer, and the reader's blocking sendall is the backpressure
        except OSError:
            self._sink = None  # the reader's own sendall reports the error
            return 0

    def read_ready(self) -> bool:
        with self._lock:
            return self._size > 0

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        with self._lock:
            self._no_reader = False  # a reader now: what it takes out must reach the socket before anything sent directly
            while True:
                if self._uncredited >= CREDIT_BATCH and self._credit is not None:
                    self._credit_delivered()
                    continue
                if self._size or self._closed:
                    break
                if timeout == 0.0:
                    raise PipeTimeout()
                then = time.time()
                self._reader_waiting = True
                try:
                    self._cv.wait(timeout)
                finally:
                    self._reader_waiting = False
                if timeout is not None and not self._size and not self._closed:
                    timeout -= time.time() - then
                    if timeout <= 0.0:
                        raise PipeTimeout()
            if not self._size:
                return b""
            parts = []
            taken = 0
            while self._chunks and taken < nbytes:
                chunk = self._chunks[0]
                if taken + len(chunk) <= nbytes:
                    parts.append(self._chunks.popleft())
                    taken += len(chunk)
                else:
                    cut = nbytes - taken
                    parts.append(chunk[:cut])
                    self._chunks[0] = chunk[cut:]
                    taken += cut
            self._size -= taken
            if not self._size and self._event is not None and not self._closed:
                self._event.clear()
            return parts[0] if len(parts) == 1 else b"".join(parts)

    def _credit_delivered(self) -> None:
        # Called with the lock held; credits outside it, since the window adjust waits out a key exchange.
        amount, self._uncredited = self._uncredited, 0
        self._lock.release()
        try:
            self._credit(amount)  # type: ignore[misc]
        finally:
            self._lock.acquire()

    def empty(self) -> bytes:
        with self._lock:
            out = b"".join(self._chunks)
            self._chunks.clear()
            self._size = 0
            if self._event is not None and not self._closed:
                self._event.clear()
            return out

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._cv.notify_all()
            if self._event is not None:
                self._event.set()
            ask = self._reader_request()  # the end of the stream is the reader's to pass on
        if ask is not None:
            ask()

    def __len__(self) -> int:
        with self._lock:
            return self._size


def credit_window(channel: t.Any, amount: int) -> None:
    """Add ``amount`` read bytes to the channel's receive window, as paramiko's Channel.recv does for what it returns."""
    ack = channel._check_add_window(amount)
    if ack > 0:
        channel.transport._send_user_message(channel_order.window_adjust(channel, ack))


def deliver_directly(channel: t.Any, sock: t.Any, on_reader_needed: t.Callable[[], None] | None = None) -> t.Any:
    """Have the transport thread send ``channel``'s data into ``sock`` itself while the reader idles; returns the pipe or None.

    Only for a DequePipe and a blocking socket (a socket with a timeout would poll before MSG_DONTWAIT). With
    ``on_reader_needed``, the reader does not exist yet (DequePipe.attach_sink).
    """
    pipe = getattr(channel, "in_buffer", None)
    if not isinstance(pipe, DequePipe) or not isinstance(sock, socket.socket) or sock.gettimeout() is not None:
        return None
    pipe.attach_sink(sock, lambda amount: credit_window(channel, amount), on_reader_needed)
    return pipe


def use_deque_pipes() -> None:
    """Make every paramiko Channel created from now on in this process buffer its input in a DequePipe.

    Process-wide (paramiko creates channels inline), so only the tunnel process calls it.
    """
    if HAS_PARAMIKO:
        paramiko.channel.BufferedPipe = DequePipe  # type: ignore[misc,assignment]


class BurrowTransport(NumberedGlobalRequests, _TransportBase):  # type: ignore[misc,valid-type]
    """paramiko Transport with the two requests paramiko lacks: deadlines on global requests and streamlocal channels."""

    _preferred_ciphers = PREFERRED_CIPHERS
    _preferred_macs = PREFERRED_MACS
    # paramiko's transport thread wakes every _active_check_timeout (0.1 s) only to notice a local close(); at 10 Hz
    # that made 100 idle tunnels use 6-8 % of a core (tests/scale). Peer EOF and data still wake it at once, and
    # close() does not wait for the thread, so 1 s costs nothing but a thread that lingers up to 1 s after close().
    # Once the session is authenticated (settle()) it waits SETTLED_READ_TIMEOUT instead: stop_thread() shuts the
    # socket down, which wakes the blocked read at once.
    _active_check_timeout = 1.0

    def __init__(self, sock: t.Any) -> None:
        super().__init__(sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE, packetizer_class=BatchPacketizer)
        self._init_global_requests()
        self._channels = channel_order.OrderingChannelMap()  # no channel exists yet: every one will be ordered
        self._ended = threading.Event()
        self._end_callbacks: list[t.Callable[[], None]] = []
        self._held_during_kex: list[t.Any] = []  # the transport thread's own user messages, sent once NEWKEYS is in
        # Called as handler(channel, socket_path) on the transport thread for each forwarded-streamlocal channel.
        self.streamlocal_handler: t.Callable[[t.Any, str], None] | None = None

    def run(self) -> None:
        try:
            super().run()
        finally:
            self._ended.set()
            for callback in list(self._end_callbacks):
                callback()

    def settle(self) -> None:
        """After authentication: the transport thread's reads wait SETTLED_READ_TIMEOUT, not 1 s (idle wake-ups, tests/scale).

        On a TCP socket the deadline is the kernel's (SO_RCVTIMEO, SO_SNDTIMEO on a blocking socket): a socket with a
        Python timeout polls before every recv and send, two system calls more per round trip; the kernel's timeout
        ends a wait with EAGAIN, which paramiko's reads and writes take as their timeout, as they take socket.timeout.
        """
        if isinstance(self.sock, socket.socket) and kernel_deadlines(self.sock, SETTLED_READ_TIMEOUT):
            return
        self.sock.settimeout(SETTLED_READ_TIMEOUT)

    def stop_thread(self) -> None:
        # A local close wakes the transport thread's blocked read by shutting the socket down (FIN, as the close would
        # send), instead of the thread noticing at its next read timeout.
        self.active = False
        if isinstance(self.sock, socket.socket):
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        super().stop_thread()

    def on_end(self, callback: t.Callable[[], None]) -> None:
        """Call ``callback`` (on the transport thread) once the session has ended, at once if it already has."""
        self._end_callbacks.append(callback)
        if self._ended.is_set():
            callback()

    def _send_user_message(self, data: t.Any) -> None:
        """paramiko's, except that the transport thread never waits for a key exchange: it is the thread that completes it.

        paramiko answers the server's CHANNEL_CLOSE from the transport thread (Channel._handle_close), and a remote
        forward nobody listens for is closed there too. During a rekey paramiko made that thread wait for the key exchange
        it alone could finish: after clear_to_send_timeout (30 s) the session ended with "Key-exchange timed out waiting
        for key negotiation" (seen under load in tests/integration/test_engine.py, the far end closing -R connections while
        data flowed). Such messages are held and sent, in order, right after NEWKEYS.
        """
        if threading.current_thread() is not self:
            super()._send_user_message(data)
            return
        with self.clear_to_send_lock:
            if not self.active:
                return
            if self.clear_to_send.is_set():
                self._send_message(data)
            else:
                self._held_during_kex.append(data)

    def send_channel_data(self, channel: t.Any, data: t.Any) -> None:
        """Channel.sendall: as many packets per write as the peer's window allows (channel_order.ChannelData).

        Raises OSError once the channel is closed (before or while sending), socket.timeout as paramiko's does.
        """
        view = memoryview(data).cast("B")
        while view:
            chunks = self._reserve_window(channel, view)
            self._send_user_message(channel_order.ChannelData(channel, chunks))
            view = view[sum(len(chunk) for chunk in chunks) :]

    @staticmethod
    def _reserve_window(channel: t.Any, view: memoryview) -> list[memoryview]:
        """Take up to the whole of ``view`` from the channel's send window, in packets the peer accepts."""
        with channel.lock:
            if channel.closed:
                raise OSError("Socket is closed")
            first = channel._wait_for_send_window(len(view))  # blocks for a window; caps at one packet
            if first == 0:
                raise OSError("Socket is closed")
            chunks = [view[:first]]
            taken = first
            packet_limit = channel.out_max_packet_size - 64  # paramiko's margin for the packet's header
            while taken < len(view) and channel.out_window_size > 0 and len(chunks) < MAX_PACKETS_PER_WRITE:
                size = min(len(view) - taken, channel.out_window_size, packet_limit)
                channel.out_window_size -= size
                chunks.append(view[taken : taken + size])
                taken += size
            return chunks

    def _parse_newkeys(self, m: t.Any) -> None:
        super()._parse_newkeys(m)
        with self.clear_to_send_lock:
            held, self._held_during_kex = self._held_during_kex, []
            for message in held:
                self._send_message(message)

    def _send_message(self, data: t.Any) -> None:
        # Every user message is sent with clear_to_send_lock held (paramiko's _send_user_message): a channel's CLOSE
        # and its data or EOF cannot pass each other here (channel_order.py).
        if isinstance(data, channel_order.ChannelData):
            channel_order.send_in_order(data, self._send_channel_data)
        elif isinstance(data, channel_order.ChannelMessage):
            channel_order.send_in_order(data, super()._send_message)
        else:
            super()._send_message(data)

    def _send_channel_data(self, data: channel_order.ChannelData) -> None:
        self.packetizer.send_channel_data(data.channel.remote_chanid, data.chunks)

    def _parse_channel_open(self, m: t.Any) -> None:
        """paramiko's channel-open parser, plus forwarded-streamlocal@openssh.com (a connection to a remote Unix listener)."""
        start = m.packet.tell()
        kind = m.get_text()
        handler = self.streamlocal_handler
        if kind != FORWARDED_STREAMLOCAL or handler is None:
            m.packet.seek(start)
            super()._parse_channel_open(m)  # paramiko rejects a streamlocal channel nobody asked for
            return
        remote_chanid = m.get_int()
        initial_window_size = m.get_int()
        max_packet_size = m.get_int()
        socket_path = m.get_text()
        m.get_string()  # reserved
        with self.lock:
            chanid = self._next_channel()
            channel = channel_order.OrderedChannel(chanid)
            self._channels.put(chanid, channel)
            self.channels_seen[chanid] = True
            channel._set_transport(self)
            channel._set_window(self.default_window_size, self.default_max_packet_size)
            channel._set_remote_channel(remote_chanid, initial_window_size, max_packet_size)
        reply = Message()
        reply.add_byte(cMSG_CHANNEL_OPEN_SUCCESS)
        reply.add_int(remote_chanid)
        reply.add_int(chanid)
        reply.add_int(self.default_window_size)
        reply.add_int(self.default_max_packet_size)
        self._send_message(reply)
        handler(channel, socket_path)

    def open_streamlocal(self, path: str, timeout: float = 10.0) -> t.Any:
        """Open a direct-streamlocal@openssh.com channel to a Unix socket on the server (ssh -L port:/path)."""
        if not self.active:
            raise paramiko.SSHException("SSH session not active")
        with self.lock:
            chanid = self._next_channel()
            message = Message()
            message.add_byte(cMSG_CHANNEL_OPEN)
            message.add_string("direct-streamlocal@openssh.com")
            message.add_int(chanid)
            message.add_int(self.default_window_size)
            message.add_int(self.default_max_packet_size)
            message.add_string(path)
            message.add_string("")
            message.add_int(0)
            channel = channel_order.OrderedChannel(chanid)
            self._channels.put(chanid, channel)
            self.channel_events[chanid] = event = threading.Event()
            self.channels_seen[chanid] = True
            channel._set_transport(self)
            channel._set_window(self.default_window_size, self.default_max_packet_size)
        self._send_user_message(message)
        deadline = time.monotonic() + timeout
        while not event.wait(0.05):
            if not self.active:
                raise self.saved_exception or paramiko.SSHException("SSH session closed while opening a channel")
            if time.monotonic() >= deadline:
                raise paramiko.SSHException("Timeout opening channel.")
        opened = self._channels.get(chanid)
        if opened is None:
            raise self.saved_exception or paramiko.SSHException("Unable to open channel.")
        return opened


def kernel_deadlines(sock: socket.socket, seconds: float) -> bool:
    """Make ``sock`` blocking with the kernel's send and receive timeouts; False (nothing changed) where it refuses them."""
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    except OSError:
        return False
    sock.settimeout(None)
    return True


class QuickAckSocket(socket.socket):
    """A TCP socket that acknowledges every segment at once instead of delaying the ACK.

    sshd leaves Nagle's algorithm on for a connection that opens no session (a jump host carrying only
    direct-tcpip channels, a tunnel), so when it writes two small packets in a row, such as a command's
    output and then its exit status, the second waits for our ACK of the first, which Linux delays by up
    to 40 ms. Measured through a bastion: a command with output took 131 ms instead of 89 ms. The kernel
    drops the flag on its own, so it is set again after every read.
    """

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        try:
            self.setsockopt(socket.IPPROTO_TCP, QUICKACK_OPTION, 1)
        except OSError:
            pass  # the connection is closing: the next read reports it
        return data


QUICKACK_OPTION: int = getattr(socket, "TCP_QUICKACK", 0)
