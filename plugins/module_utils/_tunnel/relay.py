# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The data plane: listeners, and the pump that moves bytes between a socket and an SSH channel.

Each relayed connection has a thread per direction, with blocking calls: a direction that waits for
the peer's window (backpressure) never stalls the other one, EOF is passed on as a half-close in each
direction separately, and the connection is closed only when both are done. For -L and -D the thread
that reads the channel is started only when needed: while the transport thread can write the
channel's data straight into the client's socket, the connection's one thread serves both directions
in turn (relay()).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import struct
import threading
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel import audit
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.private_socket import listen_private_unix
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import deliver_directly

# Measured: 256 KiB reads double download throughput against 16 KiB reads (docs/performance.md).
READ_SIZE = 256 * 1024
# Measured: a backlog of 5 reset most of 200 simultaneous connects; the kernel caps it at somaxconn anyway.
LISTEN_BACKLOG = 4096
# Each relay thread only loops over recv/send: a small stack keeps 1000 connections cheap.
THREAD_STACK_SIZE = 512 * 1024
# After the remote side ends its direction, how long to wait for its CLOSE before closing the client anyway.
CLOSE_POLL_INTERVAL = 0.2


class Counters:
    """Per-forward traffic counters; updated once per finished direction, so the hot loop stays lean."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.connections_total = 0
        self.connections_refused = 0  # beyond max_connections
        self.connections_active = 0
        self.failures = 0
        self.bytes_out = 0  # from the listening side's client towards the destination
        self.bytes_in = 0
        self.last_error = ""
        # time.monotonic(): idle_timeout must not follow the wall clock (a clock step of days ended or kept tunnels).
        self.last_activity = time.monotonic()
        self.live: set[Connection] = set()  # relays in progress, so a stop can cut them

    def opened(self, limit: int | None = None) -> bool:
        """Count a new connection; False (counted as refused, not opened) when ``limit`` connections are already active."""
        with self._lock:
            self.last_activity = time.monotonic()
            if limit is not None and self.connections_active >= limit:
                self.connections_refused += 1
                return False
            self.connections_total += 1
            self.connections_active += 1
            return True

    def closed(self, sent: int, received: int) -> None:
        with self._lock:
            self.connections_active -= 1
            self.bytes_out += sent
            self.bytes_in += received
            self.last_activity = time.monotonic()

    def failed(self, reason: str) -> None:
        audit.note_refused(reason)  # the connection being handled in this thread, if it is audited
        with self._lock:
            self.failures += 1
            self.last_error = reason
            self.last_activity = time.monotonic()

    def as_dict(self) -> dict[str, t.Any]:
        return {
            "connections_total": self.connections_total,
            "connections_active": self.connections_active,
            "connections_refused": self.connections_refused,
            "failures": self.failures,
            "bytes_out": self.bytes_out,
            "bytes_in": self.bytes_in,
            "last_error": self.last_error,
        }


def start_thread(target: t.Callable[..., None], *args: t.Any, name: str = "burrow") -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


def tune_socket(sock: socket.socket) -> None:
    # Measured: Nagle + delayed ACK add 43 ms to the first reply of every new connection.
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _close_quietly(thing: t.Any) -> None:
    with contextlib.suppress(Exception):
        thing.close()


class Connection:
    """One relayed connection, registered while it runs so that a stop past its drain time can cut it."""

    def __init__(self, client: t.Any, channel: t.Any) -> None:
        self.ends = (client, channel)
        self.cut = threading.Event()

    def reset(self) -> None:
        """Cut without an orderly end: a socket end gets a TCP RST (SO_LINGER 0), a channel end CLOSE without EOF.

        A cut transfer must never look complete to the far end, as a clean EOF would.
        """
        self.cut.set()
        for end in self.ends:
            if hasattr(end, "shutdown_write"):
                end.eof_sent = True  # paramiko then sends only CHANNEL_CLOSE
            _reset(end)


def relay(client: t.Any, channel: t.Any, counters: Counters, leftover: bytes = b"") -> str:
    """Move bytes both ways until both directions ended; closes both ends. Blocking.

    `client` is a socket (or a channel, for remote forwards where the roles swap); `channel` is the
    SSH channel (or a socket). Both need recv, sendall and a way to half-close. Returns how it ended:
    closed (both directions ended with EOF), reset (an error or RST in either direction) or cut (by a stop).
    """
    finished = threading.Event()
    state = {"in": 0, "broken": False}
    connection = Connection(client, channel)
    with counters._lock:
        counters.live.add(connection)
    # Measured (docs/performance.md): the transport thread writing received data straight into the socket, instead
    # of waking the relay thread for every packet, took the 1-byte RTT p50 from 1.34x to 0.94x ssh and the CPU per MB
    # of the rows that read the channel from 1.14-1.29x to 1.06-1.13x ssh (same-run A/B, 128 MiB x 3).
    # -L/-D read the channel downstream; -R (roles swapped) reads it in this thread.
    channel_reader_is_downstream = hasattr(channel, "shutdown_write")
    # The downstream reader of -L/-D starts only when the transport thread cannot deliver by itself (the client's
    # socket is full, or the channel ends while the client still sends); else this thread becomes the reader once its
    # own direction has ended. Measured (docs/performance.md, the 1000-connection burst): a thread costs 0.1-0.4 ms of
    # CPU to start and end here, and the burst's 2000 threads contended for the GIL.
    readers: list[threading.Thread] = []
    reader_lock = threading.Lock()
    reader_role = {"taken": False}

    def start_reader() -> None:
        with reader_lock:
            if reader_role["taken"]:
                return
            reader_role["taken"] = True
            try:
                readers.append(start_thread(downstream, name="burrow-down"))
            except RuntimeError:  # no thread to be had (on the transport thread): cut this connection, not the session
                reader_role["taken"] = False  # this thread reads what is left, once the cut has ended its direction
                connection.reset()

    def downstream() -> None:
        received = 0
        try:
            while True:
                data = channel.recv(READ_SIZE)
                if not data:
                    break
                client.sendall(data)
                received += len(data)
            if connection.cut.is_set():
                return
            if _lost_without_eof(channel):
                state["broken"] = True
                _reset(client)
                return
            _half_close(client)
            # The peer ended its direction; if it closes the channel entirely, stop waiting for the client.
            while not finished.is_set() and not _fully_closed(channel):
                finished.wait(CLOSE_POLL_INTERVAL)
            if not finished.is_set():
                _abort(client)
        except Exception:  # any failure of one connection ends only that connection
            state["broken"] = True
            if not connection.cut.is_set():  # a cut connection must not get a FIN before its RST
                _abort(client)
                _abort(channel)
        finally:
            state["in"] = received

    if channel_reader_is_downstream:
        direct = deliver_directly(channel, client, on_reader_needed=start_reader)
    else:
        direct = deliver_directly(client, channel)
    if direct is None or not channel_reader_is_downstream:
        start_reader()
    sent = 0
    try:
        if leftover:
            channel.sendall(leftover)
            sent += len(leftover)
        while True:
            data = client.recv(READ_SIZE)
            if not data:
                break
            channel.sendall(data)
            sent += len(data)
        if connection.cut.is_set():
            pass
        elif _lost_without_eof(client):
            state["broken"] = True
            _reset(channel)
        else:
            _half_close(channel)
    except Exception:  # e.g. RST from the client: end this connection only
        state["broken"] = True
        if not connection.cut.is_set():
            _abort(channel)
            _abort(client)
    with reader_lock:
        read_here = not reader_role["taken"]
        reader_role["taken"] = True
    finished.set()
    if read_here:
        downstream()
    for reader in readers:
        reader.join()
    if direct is not None:
        direct.detach_sink()
        if channel_reader_is_downstream:
            state["in"] = int(state["in"]) + direct.delivered_directly
        else:
            sent += direct.delivered_directly
    # Closing from the forwarding side (not waiting for the server's CLOSE) avoids paramiko's
    # rekey-during-close deadlock (paramiko #822, reproduced in research/performance-anchors.md).
    _close_quietly(channel)
    _close_quietly(client)
    with counters._lock:
        counters.live.discard(connection)
    counters.closed(sent, int(state["in"]))
    ended = "cut" if connection.cut.is_set() else "reset" if state["broken"] else "closed"
    audit.note_relay(sent, int(state["in"]), ended)  # the audit line is written when the handler returns
    return ended


def _lost_without_eof(end: t.Any) -> bool:
    """A channel that ended without the server's EOF: the SSH session died or the channel was closed under the relay.

    Passing that on as a clean end of stream (FIN) would make a cut transfer look complete to the socket's peer.
    """
    return hasattr(end, "shutdown_write") and not getattr(end, "eof_received", True)


def _reset(end: t.Any) -> None:
    """Reset a socket end (TCP RST once it is closed) and wake whatever blocks on it; a channel end is just closed."""
    with contextlib.suppress(Exception):
        if hasattr(end, "shutdown_write"):
            end.close()
        else:
            end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            end.shutdown(socket.SHUT_RD)  # wakes a blocked recv; sends nothing; the close then sends RST


def _half_close(end: t.Any) -> None:
    with contextlib.suppress(Exception):
        if hasattr(end, "shutdown_write"):
            end.shutdown_write()
        else:
            end.shutdown(socket.SHUT_WR)


def _abort(end: t.Any) -> None:
    with contextlib.suppress(Exception):
        if hasattr(end, "shutdown_write"):
            end.close()
        else:
            end.shutdown(socket.SHUT_RDWR)


def _fully_closed(end: t.Any) -> bool:
    # A paramiko Channel is closed once the server sent CLOSE; a plain socket only closes on our side.
    return bool(getattr(end, "closed", False))


class Listener:
    """A listening socket (TCP or Unix) with an accept thread that hands each client to `handler`."""

    def __init__(self, sock: socket.socket, handler: t.Callable[[socket.socket], None], name: str, unix_path: str | None = None) -> None:
        self.sock = sock
        self.handler = handler
        self.name = name
        self.unix_path = unix_path
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int] | str:
        if self.unix_path:
            return self.unix_path
        host, port = self.sock.getsockname()[:2]
        return host, port

    def start(self) -> None:
        self._thread = start_thread(self._accept_loop, name=f"burrow-accept-{self.name}")

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _address = self.sock.accept()
            except OSError:
                if self._stopped.is_set():
                    return
                time.sleep(0.05)
                continue
            tune_socket(client)
            try:
                start_thread(self.handler, client, name=f"burrow-conn-{self.name}")
            except RuntimeError:
                _close_quietly(client)

    def close(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        _close_quietly(self.sock)
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self.unix_path:
            with contextlib.suppress(OSError):
                os.unlink(self.unix_path)


def bind_tcp(host: str, port: int) -> socket.socket:
    """Bind and listen; raises OSError (EADDRINUSE etc.) for the caller to explain."""
    bind_host = host or "0.0.0.0"
    infos = socket.getaddrinfo(bind_host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, socktype, proto, _canon, address = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


# How many ports 0 to try when the port the kernel gave for 127.0.0.1 is already taken on ::1 by someone else.
LOOPBACK_PAIR_ATTEMPTS = 8


def _ipv6_unavailable(exc: OSError) -> bool:
    return exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT)


def bind_loopback_pair(port: int) -> list[socket.socket]:
    """127.0.0.1 and ::1 on one port (OpenSSH's localhost); ::1 is left out only where the host has no IPv6 loopback.

    For port 0 the first bind allocates and the second takes that port; when someone holds it on ::1, both are given
    up and another port is tried. Raises OSError; an EADDRINUSE on ::1 carries ``filename="::1"`` for the message.
    """
    for attempt in range(LOOPBACK_PAIR_ATTEMPTS):
        first = bind_tcp("127.0.0.1", port)
        try:
            second = bind_tcp("::1", first.getsockname()[1])
        except OSError as exc:
            first.close()
            if _ipv6_unavailable(exc):
                return [bind_tcp("127.0.0.1", port)]
            if exc.errno == errno.EADDRINUSE and port == 0 and attempt + 1 < LOOPBACK_PAIR_ATTEMPTS:
                continue
            raise OSError(exc.errno, exc.strerror, "::1") from exc
        return [first, second]
    raise AssertionError("unreachable")  # pragma: no cover


def bind_unix(path: str) -> socket.socket:
    """Bind a Unix socket listener 0600. A stale socket file (nobody listening) is replaced; anything else is an error."""
    if os.path.lexists(path):
        mode = os.lstat(path).st_mode
        if not stat.S_ISSOCK(mode):
            raise FileExistsError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1)
            probe.connect(path)
        except OSError:
            os.unlink(path)
        else:
            raise OSError(98, f"{path} is in use by a running listener")
        finally:
            probe.close()
    return listen_private_unix(path, LISTEN_BACKLOG)


def describe_holder(port: int) -> str:
    """Who listens on a local TCP port, when /proc shows it (same user or root)."""
    try:
        inodes: set[str] = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError), open(table, encoding="ascii") as handle:
                for line in handle.readlines()[1:]:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
        if not inodes:
            return ""
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        target = os.readlink(f"/proc/{pid}/fd/{fd}")
                        if target.startswith("socket:[") and target[8:-1] in inodes:
                            with open(f"/proc/{pid}/comm", encoding="utf-8") as comm:
                                return f" (held by pid {pid}, {comm.read().strip()})"
    except OSError:
        return ""
    return ""


def configure_threads() -> None:
    with contextlib.suppress(ValueError, RuntimeError):
        threading.stack_size(THREAD_STACK_SIZE)
