# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""DequePipe's direct delivery: order kept, the window credited only for delivered bytes, and by the reader."""

from __future__ import annotations

import socket
import threading
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh import transport
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import DequePipe


def _wait_for(condition: t.Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_data_goes_straight_to_the_socket_while_the_reader_waits(monkeypatch: t.Any) -> None:
    monkeypatch.setattr(transport, "CREDIT_BATCH", 8)
    pipe = DequePipe()
    sink, peer = socket.socketpair()
    credited: list[tuple[str, int]] = []
    pipe.attach_sink(sink, lambda amount: credited.append((threading.current_thread().name, amount)))
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(pipe.read(1 << 22)), name="reader", daemon=True)
    reader.start()
    _wait_for(lambda: pipe._reader_waiting)
    pipe.feed(b"hello")
    assert peer.recv(100) == b"hello"
    assert pipe.delivered_directly == 5 and not credited  # below the batch: credited later
    pipe.feed(b"world!")
    assert peer.recv(100) == b"world!"
    _wait_for(lambda: bool(credited) and pipe._reader_waiting)
    assert credited == [("reader", 11)]  # by the reader, never the transport thread
    big = bytes(range(256)) * 4096  # 1 MiB: more than the socket buffer takes
    pipe.feed(big)
    reader.join(5)
    direct = pipe.delivered_directly - 11
    assert 0 < direct < len(big)
    assert got == [big[direct:]]  # what the socket did not take, for the reader's sendall
    stream = b""
    while len(stream) < direct:
        stream += peer.recv(1 << 20)
    assert stream == big[:direct]
    sink.close()
    peer.close()


def test_buffered_data_keeps_later_data_buffered() -> None:
    pipe = DequePipe()
    sink, peer = socket.socketpair()
    pipe.attach_sink(sink, lambda amount: None)
    pipe.feed(b"first")  # no reader waiting: buffered
    pipe._reader_waiting = True  # even with a reader waiting, nothing may overtake the buffer
    pipe.feed(b"second")
    pipe._reader_waiting = False
    assert pipe.read(100) == b"firstsecond"
    assert pipe.delivered_directly == 0
    sink.close()
    peer.close()


def test_a_closed_sink_falls_back_to_the_buffer() -> None:
    pipe = DequePipe()
    sink, peer = socket.socketpair()
    pipe.attach_sink(sink, lambda amount: None)
    peer.close()
    sink.shutdown(socket.SHUT_WR)
    pipe._reader_waiting = True
    pipe.feed(b"data")
    pipe._reader_waiting = False
    assert pipe.read(100) == b"data"
    sink.close()


def test_without_a_reader_the_transport_thread_delivers_and_credits(monkeypatch: t.Any) -> None:
    monkeypatch.setattr(transport, "CREDIT_BATCH", 8)
    pipe = DequePipe()
    sink, peer = socket.socketpair()
    credited: list[int] = []
    asked: list[str] = []
    pipe.attach_sink(sink, credited.append, on_reader_needed=lambda: asked.append("reader"))
    pipe.feed(b"hello")
    assert peer.recv(100) == b"hello" and not credited  # below the batch
    pipe.feed(b"world!")
    assert peer.recv(100) == b"world!"
    assert credited == [11]  # by the feeding (transport) thread itself: there is no reader to do it
    assert asked == [] and pipe.delivered_directly == 11
    sink.close()
    peer.close()


def test_what_the_socket_cannot_take_asks_for_a_reader_once() -> None:
    pipe = DequePipe()
    sink, peer = socket.socketpair()
    asked: list[str] = []
    pipe.attach_sink(sink, lambda amount: None, on_reader_needed=lambda: asked.append("reader"))
    big = bytes(range(256)) * 4096  # 1 MiB: more than the socket buffer takes
    pipe.feed(big)
    pipe.feed(b"later")  # buffered behind the rest, and no second request
    assert asked == ["reader"]
    direct = pipe.delivered_directly
    assert 0 < direct < len(big)
    assert pipe.read(len(big)) == big[direct:] + b"later"
    sink.close()
    peer.close()


def test_the_end_of_the_stream_asks_for_a_reader() -> None:
    pipe = DequePipe()
    sink, peer = socket.socketpair()
    asked: list[str] = []
    pipe.attach_sink(sink, lambda amount: None, on_reader_needed=lambda: asked.append("reader"))
    pipe.close()
    assert asked == ["reader"]
    assert pipe.read(100) == b""
    sink.close()
    peer.close()


def test_data_that_arrived_before_the_sink_asks_for_a_reader_at_once() -> None:
    pipe = DequePipe()
    sink, peer = socket.socketpair()
    pipe.feed(b"early")  # the server answered before the relay attached the socket
    asked: list[str] = []
    pipe.attach_sink(sink, lambda amount: None, on_reader_needed=lambda: asked.append("reader"))
    assert asked == ["reader"]
    pipe.feed(b"late")  # must queue behind "early", not overtake it
    assert pipe.delivered_directly == 0
    assert pipe.read(100) == b"earlylate"
    sink.close()
    peer.close()


def test_once_a_reader_reads_nothing_overtakes_what_it_took_out() -> None:
    pipe = DequePipe()
    sink, peer = socket.socketpair()
    pipe.attach_sink(sink, lambda amount: None, on_reader_needed=lambda: None)
    pipe.feed(b"x")  # no reader: straight to the socket
    assert peer.recv(10) == b"x"
    pipe._chunks.append(b"taken")  # the reader took something out and is writing it
    pipe._size = 5
    assert pipe.read(5) == b"taken"
    pipe.feed(b"next")  # the reader is not waiting: buffered, not sent ahead of "taken"
    assert pipe.delivered_directly == 1
    assert pipe.read(10) == b"next"
    sink.close()
    peer.close()
