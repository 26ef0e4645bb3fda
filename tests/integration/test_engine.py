# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The tunnel engine against the real sandbox sshd: data integrity, half-close, faults and refusals."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import typing as t

import pytest
import socks_client
from engine_helpers import (
    CHUNK,
    LoopbackServer,
    digest_after_eof_handler,
    echo_handler,
    echo_roundtrip,
    make_source_handler,
    open_fds,
    payload,
    recv_all,
    sha256,
    sshd_hop,
    wait_until,
)

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel import socks as _socks
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.engine import TunnelEngine
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import (
    AuthenticationFailed,
    ForwardRefused,
    HostKeyMismatch,
    HostKeyUnknown,
    PortInUse,
    TunnelError,
    Unreachable,
)
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.control import TunnelHandle
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.spawn import spawn
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import DequePipe, use_deque_pipes

# The tunnel process buffers channel input in a DequePipe; test the engine in that same configuration.
use_deque_pipes()

SIZES = [0, 1, 65535, 1024 * 1024, 64 * 1024 * 1024]


def tunnel_for(sshd: t.Any, name: str = "engine", **overrides: t.Any) -> t.Any:
    params: dict[str, t.Any] = {
        "name": name,
        **sshd_hop(sshd),
        "keepalive_interval": 1,
        "keepalive_count_max": 3,
        "connect_timeout": 5,
    }
    params.update(overrides)
    return parse_declaration(params)


@contextlib.contextmanager
def running(tunnel: t.Any) -> t.Iterator[TunnelEngine]:
    engine = TunnelEngine(tunnel)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop(deadline=2)


def bound(engine: TunnelEngine, index: int = 0) -> tuple[str, int]:
    forward = list(engine.forwards.values())[index]
    assert forward.bound is not None
    return str(forward.bound.host), int(forward.bound.port or 0)


@pytest.fixture(scope="module")
def echo() -> t.Iterator[LoopbackServer]:
    with LoopbackServer(echo_handler) as server:
        yield server


@pytest.fixture(scope="module")
def digest_server() -> t.Iterator[LoopbackServer]:
    with LoopbackServer(digest_after_eof_handler) as server:
        yield server


@pytest.mark.parametrize("size", SIZES, ids=[f"{size}B" for size in SIZES])
def test_local_forward_is_lossless(sshd: t.Any, echo: LoopbackServer, size: int) -> None:
    data = payload(size)
    with running(tunnel_for(sshd, local_forwards=[f"0:127.0.0.1:{echo.port}"])) as engine:
        assert sha256(echo_roundtrip(bound(engine), data)) == sha256(data)
        stats = list(engine.forwards.values())[0].counters
        assert wait_until(lambda: stats.connections_active == 0, 5)
        assert stats.bytes_out == size and stats.bytes_in == size


@pytest.mark.parametrize("size", [0, 1, 1024 * 1024, 64 * 1024 * 1024], ids=["0B", "1B", "1MiB", "64MiB"])
def test_download_direction_is_lossless(sshd: t.Any, size: int) -> None:
    data = payload(size, seed=11)
    with LoopbackServer(make_source_handler(data)) as source, running(tunnel_for(sshd, local_forwards=[f"0:127.0.0.1:{source.port}"])) as engine:
        with socket.create_connection(bound(engine), timeout=60) as client:
            client.shutdown(socket.SHUT_WR)
            assert sha256(recv_all(client)) == sha256(data)


@pytest.mark.parametrize("size", [0, 1, 1024 * 1024, 64 * 1024 * 1024], ids=["0B", "1B", "1MiB", "64MiB"])
def test_remote_forward_is_lossless(sshd: t.Any, echo: LoopbackServer, size: int) -> None:
    data = payload(size, seed=3)
    with running(tunnel_for(sshd, remote_forwards=[f"127.0.0.1:0:127.0.0.1:{echo.port}"])) as engine:
        host, port = bound(engine)
        assert port > 0, "the server's allocated port is reported"
        assert sha256(echo_roundtrip(("127.0.0.1", port), data)) == sha256(data)


@pytest.mark.parametrize("version", [4, "4a", 5])
@pytest.mark.parametrize("size", [0, 1024 * 1024, 64 * 1024 * 1024], ids=["0B", "1MiB", "64MiB"])
def test_dynamic_forward_socks_is_lossless(sshd: t.Any, echo: LoopbackServer, version: t.Any, size: int) -> None:
    data = payload(size, seed=5)
    target = "localhost" if version == "4a" else "127.0.0.1"
    with running(tunnel_for(sshd, dynamic_forwards=["127.0.0.1:0"])) as engine:

        def connect() -> socket.socket:
            sock = socket.create_connection(bound(engine), timeout=60)
            socks_client.client_connect(sock, target, echo.port, version=4 if version == "4a" else int(version))
            return sock

        assert sha256(echo_roundtrip(bound(engine), data, connect=connect)) == sha256(data)


def test_reverse_dynamic_forward_serves_socks_from_the_client_side(sshd: t.Any, echo: LoopbackServer) -> None:
    data = payload(256 * 1024)
    with running(tunnel_for(sshd, remote_forwards=["127.0.0.1:0"])) as engine:
        port = bound(engine)[1]

        def connect() -> socket.socket:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            socks_client.client_connect(sock, "127.0.0.1", echo.port, version=5)
            return sock

        assert echo_roundtrip(("127.0.0.1", port), data, connect=connect) == data


def test_socks5_username_password(sshd: t.Any, echo: LoopbackServer) -> None:
    forward = {"listen_host": "127.0.0.1", "listen_port": 0, "socks_username": "alice", "socks_password": "s3cret"}
    with running(tunnel_for(sshd, dynamic_forwards=[forward])) as engine:
        sock = socket.create_connection(bound(engine), timeout=10)
        socks_client.client_connect(sock, "127.0.0.1", echo.port, version=5, credentials=("alice", "s3cret"))
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        sock.close()
        bad = socket.create_connection(bound(engine), timeout=10)
        with pytest.raises(_socks.SocksError):
            socks_client.client_connect(bad, "127.0.0.1", echo.port, version=5, credentials=("alice", "wrong"))
        bad.close()
        # The listener survives a refused client.
        again = socket.create_connection(bound(engine), timeout=10)
        socks_client.client_connect(again, "127.0.0.1", echo.port, version=5, credentials=("alice", "s3cret"))
        again.close()


@pytest.mark.parametrize("size", [0, 1, 8 * 1024 * 1024], ids=["0B", "1B", "8MiB"])
def test_half_close_upload_then_reply(sshd: t.Any, digest_server: LoopbackServer, size: int) -> None:
    data = payload(size, seed=9)
    with running(tunnel_for(sshd, local_forwards=[f"0:127.0.0.1:{digest_server.port}"])) as engine:
        with socket.create_connection(bound(engine), timeout=30) as client:
            client.sendall(data)
            client.shutdown(socket.SHUT_WR)
            reply = recv_all(client)
        assert reply == sha256(data).encode() + b"\nEND\n"


@pytest.mark.parametrize("size", [0, 1, 8 * 1024 * 1024], ids=["0B", "1B", "8MiB"])
def test_half_close_through_remote_forward(sshd: t.Any, digest_server: LoopbackServer, size: int) -> None:
    data = payload(size, seed=10)
    with running(tunnel_for(sshd, remote_forwards=[f"127.0.0.1:0:127.0.0.1:{digest_server.port}"])) as engine:
        with socket.create_connection(("127.0.0.1", bound(engine)[1]), timeout=30) as client:
            client.sendall(data)
            client.shutdown(socket.SHUT_WR)
            assert recv_all(client) == sha256(data).encode() + b"\nEND\n"


def _channel_readers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "burrow-down"]


def test_a_connection_the_transport_can_serve_directly_has_one_thread(sshd: t.Any, echo: LoopbackServer) -> None:
    """-L: while the client's socket takes what arrives, no channel-reader thread is started (relay.py)."""
    with running(tunnel_for(sshd, local_forwards=[f"0:127.0.0.1:{echo.port}"])) as engine:
        assert wait_until(lambda: not _channel_readers(), 10), "readers of earlier tests still running"
        with socket.create_connection(bound(engine), timeout=10) as client:
            for index in range(20):
                message = f"ping {index}".encode()
                client.sendall(message)
                got = b""
                while len(got) < len(message):
                    got += client.recv(100)
                assert got == message
            assert _channel_readers() == []  # both directions moved data, on the connection's one thread
            client.shutdown(socket.SHUT_WR)
            assert recv_all(client) == b""  # the server's EOF, passed on by the connection thread turned reader
        stats = list(engine.forwards.values())[0].counters
        assert wait_until(lambda: stats.connections_active == 0, 5)
        assert stats.bytes_in == stats.bytes_out == sum(len(f"ping {index}") for index in range(20))


def test_a_client_that_stops_reading_gets_a_channel_reader(sshd: t.Any) -> None:
    """What the client's socket cannot take is buffered for a reader thread, which is then started; nothing is lost."""
    data = payload(8 * 1024 * 1024, seed=21)
    client_done = threading.Event()

    def source(conn: socket.socket) -> None:
        conn.sendall(data)
        client_done.wait(30)  # the connection stays open: only the full socket can start the reader
        conn.shutdown(socket.SHUT_WR)

    with LoopbackServer(source) as server, running(tunnel_for(sshd, local_forwards=[f"0:127.0.0.1:{server.port}"])) as engine:
        with socket.create_connection(bound(engine), timeout=30) as client:
            assert wait_until(lambda: len(_channel_readers()) == 1, 10), "no channel reader for a full socket"
            got = recv_all(client, limit=len(data))
            client_done.set()
            assert sha256(got[: len(data)]) == sha256(data)
            assert recv_all(client) == b""
        stats = list(engine.forwards.values())[0].counters
        assert wait_until(lambda: stats.connections_active == 0, 5)
        assert stats.bytes_in == len(data)


def test_half_close_server_side_first(sshd: t.Any) -> None:
    """The server sends and half-closes first, then keeps reading what the client sends afterwards."""
    received: list[bytes] = []

    def handler(conn: socket.socket) -> None:
        conn.sendall(b"hello")
        conn.shutdown(socket.SHUT_WR)
        received.append(recv_all(conn))

    with LoopbackServer(handler) as server, running(tunnel_for(sshd, local_forwards=[f"0:127.0.0.1:{server.port}"])) as engine:
        with socket.create_connection(bound(engine), timeout=10) as client:
            assert recv_all(client) == b"hello"
            client.sendall(b"after-eof")
            client.shutdown(socket.SHUT_WR)
            assert wait_until(lambda: received == [b"after-eof"], 10)


def test_slow_reader_keeps_memory_bounded_and_loses_nothing(sshd: t.Any, tmp_path: t.Any) -> None:
    """The tunnel process (the production path) must not buffer what a stalled reader cannot take."""
    data = payload(32 * 1024 * 1024, seed=13)
    got: list[bytes] = []
    sink_reading = threading.Event()

    def slow_sink(conn: socket.socket) -> None:
        time.sleep(4)  # stop reading while the client pushes
        sink_reading.set()
        got.append(recv_all(conn))
        conn.sendall(b"ok")

    state_dir = str(tmp_path / "state")
    with LoopbackServer(slow_sink) as sink:
        tunnel = tunnel_for(sshd, name="slow", local_forwards=[f"0:127.0.0.1:{sink.port}"])
        status = spawn(tunnel, state_dir)
        handle = TunnelHandle(state_dir, "slow")
        try:
            pid = int(status["pid"])
            baseline = _rss_kib(pid)
            peak = baseline
            with socket.create_connection(("127.0.0.1", status["forwards"][0]["bound_port"]), timeout=60) as client:
                sender = threading.Thread(target=lambda: (client.sendall(data), client.shutdown(socket.SHUT_WR)), daemon=True)
                sender.start()
                while not sink_reading.is_set():
                    peak = max(peak, _rss_kib(pid))
                    time.sleep(0.05)
                sender.join(60)
                assert recv_all(client) == b"ok"
        finally:
            handle.stop(deadline=2)
    assert sha256(got[0]) == sha256(data)
    # Bounded by the channel windows (4 MiB) and socket buffers, not by the 32 MiB pushed.
    assert peak - baseline < 12 * 1024, f"tunnel RSS grew from {baseline} to {peak} KiB while the reader stalled"


def test_bidirectional_saturation(sshd: t.Any, echo: LoopbackServer) -> None:
    data = payload(32 * 1024 * 1024, seed=17)
    with running(tunnel_for(sshd, local_forwards=[f"0:127.0.0.1:{echo.port}"])) as engine:
        assert sha256(echo_roundtrip(bound(engine), data, timeout=120)) == sha256(data)


def test_one_broken_client_does_not_affect_others(sshd: t.Any, echo: LoopbackServer) -> None:
    with running(tunnel_for(sshd, local_forwards=[f"0:127.0.0.1:{echo.port}"])) as engine:
        steady = socket.create_connection(bound(engine), timeout=10)
        for _attempt in range(50):
            rst = socket.create_connection(bound(engine), timeout=10)
            rst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            rst.sendall(b"x" * 1000)
            rst.close()  # RST
        steady.sendall(b"still here")
        assert steady.recv(100) == b"still here"
        steady.close()


def _take_some_then_close(conn: socket.socket) -> None:
    taken = 0
    while taken < 256 * 1024:
        data = conn.recv(CHUNK)
        if not data:
            return
        taken += len(data)


def _send_until_refused(address: tuple[str, int], deadline: float) -> None:
    block = b"\x5a" * (1024 * 1024)
    with socket.create_connection(address, timeout=10) as sock, contextlib.suppress(OSError):
        while time.monotonic() < deadline:
            sock.sendall(block)


def _read_some_then_close(address: tuple[str, int]) -> None:
    with socket.create_connection(address, timeout=10) as sock:
        _take_some_then_close(sock)


def _endless_source(conn: socket.socket) -> None:
    block = b"\xa5" * (1024 * 1024)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        conn.sendall(block)


def _closing_far_end(kind: str, echo: LoopbackServer) -> tuple[LoopbackServer, dict[str, list[str]]]:
    """A far end that closes while data flows (-L: a destination taking 256 KiB; -R: an endless source), and forwards
    to it (first) and to ``echo`` (second, the steady one)."""
    if kind == "local":
        server = LoopbackServer(_take_some_then_close)
        return server, {"local_forwards": [f"0:127.0.0.1:{server.port}", f"0:127.0.0.1:{echo.port}"]}
    server = LoopbackServer(_endless_source)
    return server, {"remote_forwards": [f"127.0.0.1:0:127.0.0.1:{server.port}", f"127.0.0.1:0:127.0.0.1:{echo.port}"]}


def _close_mid_send(kind: str, closing: tuple[str, int]) -> None:
    """One connection through the closing forward: -L sends until the far end closes; -R reads some and closes."""
    if kind == "local":
        _send_until_refused(closing, time.monotonic() + 5)
    else:
        _read_some_then_close(closing)


@pytest.mark.parametrize("kind", ["local", "remote"])
def test_far_end_closing_mid_send_never_ends_the_session(sshd: t.Any, echo: LoopbackServer, kind: str) -> None:
    # The far end closes while we still send into the channel (iperf3 does this with its data connection): sshd then
    # closes the channel, and if any of our data or EOF reached it after our CLOSE, sshd would drop the whole session
    # ("data packet referred to nonexistent channel"). Before channel_order.py, 4 of 5 iperf3 loops died that way.
    server, forwards = _closing_far_end(kind, echo)
    with server, running(tunnel_for(sshd, **forwards)) as engine:
        transport = engine.chain.target
        closing, steady = bound(engine, 0), bound(engine, 1)
        deadline = time.monotonic() + 60
        cycles = 0
        while cycles < 500 and time.monotonic() < deadline and transport.is_active():
            _close_mid_send(kind, closing)
            cycles += 1
        assert transport.is_active(), f"the session ended after {cycles} closed-mid-send connection(s): {transport.get_exception()!r}"
        assert engine.chain.target is transport and engine.reconnects == 0
        assert cycles >= 100, f"only {cycles} cycles in 60 s"
        assert echo_roundtrip(steady, b"same session") == b"same session"


@pytest.mark.parametrize("kind", ["local", "remote"])
def test_the_server_closing_channels_during_key_exchanges_never_stalls_the_session(sshd: t.Any, echo: LoopbackServer, kind: str) -> None:
    """The far end closes connections while data flows (-L: the destination; -R: the client) and the session rekeys every 256 KiB.

    paramiko sends the CLOSE answering the server's from its transport thread, the one thread that completes a key
    exchange; before BurrowTransport held such messages until NEWKEYS, that thread waited for the exchange it alone could
    finish, and after 30 s the session ended ("Key-exchange timed out waiting for key negotiation"; seen under load in the
    test above, and within a few cycles here).
    """
    from paramiko.common import MSG_NEWKEYS

    server, forwards = _closing_far_end(kind, echo)
    with server, running(tunnel_for(sshd, **forwards)) as engine:
        transport = engine.chain.target
        key_exchanges = [0]
        parse_newkeys = transport._handler_table[MSG_NEWKEYS]

        def counted(message: t.Any) -> None:
            key_exchanges[0] += 1
            parse_newkeys(message)

        transport._handler_table[MSG_NEWKEYS] = counted
        transport.packetizer.REKEY_BYTES = 256 * 1024  # paramiko's default: 512 MiB
        closing, steady = bound(engine, 0), bound(engine, 1)
        deadline = time.monotonic() + 90
        cycles, stalls = 0, []
        while cycles < 60 and time.monotonic() < deadline and transport.is_active():
            try:
                _close_mid_send(kind, closing)
            except TimeoutError:
                stalls.append(cycles)
                break
            cycles += 1
        assert not stalls and transport.is_active(), f"stalled at cycle {stalls} of {cycles}: {transport.get_exception()!r}"
        assert engine.chain.target is transport and engine.reconnects == 0
        assert cycles == 60, f"only {cycles} cycles in 90 s"
        assert key_exchanges[0] >= 60, f"only {key_exchanges[0]} key exchanges: the rekeys this test is about did not happen"
        assert echo_roundtrip(steady, b"same session") == b"same session"


def test_connect_close_cycles_leak_nothing(sshd: t.Any, echo: LoopbackServer) -> None:
    with running(tunnel_for(sshd, local_forwards=[f"0:127.0.0.1:{echo.port}"])) as engine:
        address = bound(engine)
        echo_roundtrip(address, b"warm-up")
        counters = list(engine.forwards.values())[0].counters
        assert wait_until(lambda: counters.connections_active == 0, 5)
        fds, threads = open_fds(), threading.active_count()
        for _cycle in range(1000):
            sock = socket.create_connection(address, timeout=10)
            sock.close()
        assert wait_until(lambda: counters.connections_active == 0, 30), counters.as_dict()
        assert wait_until(lambda: open_fds() <= fds + 2, 10), f"fds {fds} -> {open_fds()}"
        assert wait_until(lambda: threading.active_count() <= threads + 2, 10), f"threads {threads} -> {threading.active_count()}"
        assert echo_roundtrip(address, b"alive") == b"alive"


def test_concurrent_connections(sshd: t.Any, echo: LoopbackServer) -> None:
    data = payload(64 * 1024, seed=21)
    failures: list[str] = []
    with running(tunnel_for(sshd, local_forwards=[f"0:127.0.0.1:{echo.port}"])) as engine:
        address = bound(engine)

        def one() -> None:
            try:
                if echo_roundtrip(address, data, timeout=60) != data:
                    failures.append("mismatch")
            except Exception as exc:  # counted
                failures.append(repr(exc))

        threads = [threading.Thread(target=one) for _index in range(200)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
    assert failures == []


def test_sshd_restart_reconnects_within_backoff(sandbox: t.Any, echo: LoopbackServer) -> None:
    server = sandbox.start_sshd()
    with running(tunnel_for(server, local_forwards=[f"0:127.0.0.1:{echo.port}"], remote_forwards=[f"127.0.0.1:0:127.0.0.1:{echo.port}"])) as engine:
        remote_port = bound(engine, 1)[1]
        server.restart()
        started = time.monotonic()
        assert wait_until(lambda: engine.reconnects >= 1 and engine.state == "up", 30), engine.status()
        elapsed = time.monotonic() - started
        assert echo_roundtrip(bound(engine), b"after restart") == b"after restart"
        assert bound(engine, 1)[1] == remote_port, "the remote forward gets its allocated port back"
        assert echo_roundtrip(("127.0.0.1", remote_port), b"remote after restart") == b"remote after restart"
    assert elapsed < 30


def test_a_session_the_server_ends_is_noticed_at_once_not_at_the_next_keepalive(sandbox: t.Any, echo: LoopbackServer) -> None:
    server = sandbox.start_sshd()
    keepalive = 60  # far beyond the wait below: only the end of the transport can start the reconnect in time
    with running(tunnel_for(server, local_forwards=[f"0:127.0.0.1:{echo.port}"], keepalive_interval=keepalive)) as engine:
        assert echo_roundtrip(bound(engine), b"before") == b"before"
        first = engine.chain.target
        for pid in server.child_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # the per-connection sshd: our session ends as if the server dropped it
        started = time.monotonic()
        assert wait_until(lambda: engine.reconnects >= 1 and engine.state == "up", 20), engine.status()
        elapsed = time.monotonic() - started
        assert engine.chain.target is not first
        assert echo_roundtrip(bound(engine), b"after") == b"after"
    assert elapsed < keepalive / 3, f"reconnected after {elapsed:.1f} s"


def _end_seen_by(conn: socket.socket, deadline: float = 20) -> str:
    """How a connection ends for its owner: "reset" (RST) or "end of stream" (FIN), reading until then."""
    conn.settimeout(deadline)
    try:
        while conn.recv(65536):
            pass
    except ConnectionResetError:
        return "reset"
    return "end of stream"


def _kill_sessions(server: t.Any) -> None:
    for pid in server.child_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # the per-connection sshd: our session ends as if the server dropped it


def test_a_session_lost_mid_transfer_resets_the_local_client_not_a_clean_end(sandbox: t.Any, echo: LoopbackServer) -> None:
    """A -L transfer cut by the loss of the SSH session must not look complete: the client gets a reset, not a FIN."""
    server = sandbox.start_sshd()
    with running(tunnel_for(server, local_forwards=[f"0:127.0.0.1:{echo.port}"], keepalive_interval=60)) as engine:
        with socket.create_connection(bound(engine), timeout=10) as client:
            client.sendall(b"part of a transfer")
            assert recv_all(client, len(b"part of a transfer")) == b"part of a transfer"
            _kill_sessions(server)
            assert _end_seen_by(client) == "reset"


def test_a_session_lost_mid_transfer_resets_the_remote_forward_s_local_destination(sandbox: t.Any) -> None:
    """The same for -R: the local destination of a connection whose session died gets a reset, not an end of stream."""
    server = sandbox.start_sshd()
    accepted: list[socket.socket] = []
    arrived = threading.Event()

    def hold(conn: socket.socket) -> None:
        accepted.append(conn.dup())
        arrived.set()

    with LoopbackServer(hold) as destination:
        with running(tunnel_for(server, remote_forwards=[f"127.0.0.1:0:127.0.0.1:{destination.port}"], keepalive_interval=60)) as engine:
            _host, port = bound(engine)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(b"part of a transfer")
                assert arrived.wait(10), "the connection did not reach the destination"
                with accepted[0] as conn:
                    assert recv_all(conn, len(b"part of a transfer")) == b"part of a transfer"
                    _kill_sessions(server)
                    assert _end_seen_by(conn) == "reset"


def test_frozen_sshd_is_detected_within_budget(sandbox: t.Any, echo: LoopbackServer) -> None:
    server = sandbox.start_sshd()
    with running(tunnel_for(server, local_forwards=[f"0:127.0.0.1:{echo.port}"], keepalive_interval=1, keepalive_count_max=3)) as engine:
        assert wait_until(lambda: bool(server.child_pids()), 5)
        children = server.child_pids()
        for pid in children:
            os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            # A new connection to the (unfrozen) listener may succeed at once, so watch for the recorded loss.
            assert wait_until(lambda: engine.last_error is not None, 10), "a frozen peer must be noticed"
            detected = time.monotonic() - started
        finally:
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        # Budget: keepalive_interval x keepalive_count_max = 3 s, plus one interval of scheduling slack.
        assert detected <= 5, f"detected after {detected:.1f} s"
        assert engine.last_error is not None and "keepalive" in engine.last_error.message
        assert wait_until(lambda: engine.state == "up" and engine.reconnects == 1, 15), engine.status()
        assert echo_roundtrip(bound(engine), b"after freeze") == b"after freeze"
    # stop() returned (the context manager exited) despite the dead connection.


def test_forwarding_disabled_is_refused_precisely(sandbox: t.Any, echo: LoopbackServer) -> None:
    server = sandbox.start_sshd(extra_config="AllowTcpForwarding no\n")
    with running(tunnel_for(server, local_forwards=[f"0:127.0.0.1:{echo.port}"])) as engine:
        runtime = list(engine.forwards.values())[0]
        with socket.create_connection(bound(engine), timeout=10) as client:
            assert recv_all(client) == b""
        assert wait_until(lambda: runtime.counters.failures == 1, 5)
        assert "administratively prohibited" in runtime.counters.last_error
        assert "AllowTcpForwarding" in runtime.counters.last_error
        assert "sshd_forwarding" in runtime.counters.last_error
    with pytest.raises(ForwardRefused, match="PermitListen"):
        with running(tunnel_for(server, remote_forwards=[f"127.0.0.1:0:127.0.0.1:{echo.port}"])):
            pass


def test_permit_open_allows_only_the_listed_destination(sandbox: t.Any, echo: LoopbackServer, digest_server: LoopbackServer) -> None:
    server = sandbox.start_sshd(extra_config=f"PermitOpen 127.0.0.1:{echo.port}\n")
    forwards = [f"0:127.0.0.1:{echo.port}", f"0:127.0.0.1:{digest_server.port}"]
    with running(tunnel_for(server, local_forwards=forwards)) as engine:
        assert echo_roundtrip(bound(engine, 0), b"allowed") == b"allowed"
        with socket.create_connection(bound(engine, 1), timeout=10) as client:
            assert recv_all(client) == b""
        denied = list(engine.forwards.values())[1].counters
        assert wait_until(lambda: "PermitOpen" in denied.last_error, 5)


def test_permit_listen_refuses_other_ports(sandbox: t.Any, echo: LoopbackServer) -> None:
    allowed = _free_port()
    server = sandbox.start_sshd(extra_config=f"PermitListen 127.0.0.1:{allowed}\n")
    with running(tunnel_for(server, remote_forwards=[f"127.0.0.1:{allowed}:127.0.0.1:{echo.port}"])) as engine:
        assert echo_roundtrip(("127.0.0.1", allowed), b"ok") == b"ok"
        with pytest.raises(ForwardRefused, match="refused remote forward"):
            engine.apply([*[r.forward for r in engine.forwards.values()], *tunnel_for(server, remote_forwards=["127.0.0.1:0:127.0.0.1:1"]).forwards])
        assert len(engine.forwards) == 1, "a refused forward leaves the others as they were"


def test_local_port_in_use_names_the_holder_and_leaves_nothing(sshd: t.Any, echo: LoopbackServer) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    threads = threading.active_count()
    try:
        with pytest.raises(PortInUse, match=f"127.0.0.1:{port}.*already in use.*pid {os.getpid()}"):
            TunnelEngine(tunnel_for(sshd, local_forwards=[f"0:127.0.0.1:{echo.port}", f"{port}:127.0.0.1:{echo.port}"])).start()
        assert wait_until(lambda: threading.active_count() <= threads, 5), "no thread of the failed start survives"
    finally:
        holder.close()


def test_unknown_host_key_is_refused(sshd: t.Any, tmp_path: t.Any) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyUnknown, match=r"not known: ssh-ed25519 SHA256:") as info:
        TunnelEngine(tunnel_for(sshd, known_hosts_file=str(empty), dynamic_forwards=["127.0.0.1:0"])).start()
    assert sshd.host_key_fingerprint in str(info.value)


def test_accept_new_records_unknown_key_and_pinning_works(sshd: t.Any, tmp_path: t.Any) -> None:
    known = tmp_path / "known_hosts"
    with running(tunnel_for(sshd, known_hosts_file=str(known), host_key_checking="accept-new", dynamic_forwards=["127.0.0.1:0"])) as engine:
        assert any("accept-new" in warning for warning in engine.warnings)
    assert sshd.host_pubkey_line.split()[1] in known.read_text()
    with running(tunnel_for(sshd, known_hosts_file=str(tmp_path / "none"), host_key_fingerprint=sshd.host_key_fingerprint, dynamic_forwards=["127.0.0.1:0"])):
        pass
    with pytest.raises(HostKeyMismatch):
        TunnelEngine(
            tunnel_for(sshd, known_hosts_file=str(tmp_path / "none"), host_key_fingerprint="SHA256:" + "A" * 43, dynamic_forwards=["127.0.0.1:0"])
        ).start()


def test_changed_host_key_is_refused_even_with_accept_new(sandbox: t.Any) -> None:
    server = sandbox.start_sshd()
    server.regenerate_host_key()
    for policy in ("strict", "accept-new"):
        with pytest.raises(HostKeyMismatch, match="CHANGED"):
            TunnelEngine(tunnel_for(server, host_key_checking=policy, dynamic_forwards=["127.0.0.1:0"])).start()


def test_wrong_key_fails_authentication_with_the_methods_tried(sshd: t.Any, tmp_path: t.Any) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    with pytest.raises(AuthenticationFailed, match=r"tried publickey") as info:
        TunnelEngine(tunnel_for(sshd, private_key_file=str(other), dynamic_forwards=["127.0.0.1:0"])).start()
    assert "publickey" in str(info.value)


def test_two_hop_chain(sandbox: t.Any, echo: LoopbackServer) -> None:
    jump = sandbox.start_sshd(name="jump")
    inner = sandbox.start_sshd(name="inner")
    hop = {
        "host": jump.host,
        "port": jump.port,
        "user": jump.user,
        "private_key_file": str(jump.client_key),
        "known_hosts_file": str(jump.known_hosts),
    }
    tunnel = tunnel_for(inner, via=[hop], local_forwards=[f"0:127.0.0.1:{echo.port}"])
    assert len(tunnel.hops) == 2
    with running(tunnel) as engine:
        assert echo_roundtrip(bound(engine), b"two hops") == b"two hops"
        assert len(engine.chain.transports) == 2  # type: ignore[union-attr]


def test_unknown_key_on_the_jump_host_is_refused(sandbox: t.Any, tmp_path: t.Any) -> None:
    jump = sandbox.start_sshd(name="jump")
    inner = sandbox.start_sshd(name="inner")
    empty = tmp_path / "empty"
    empty.write_text("")
    hop = {"host": jump.host, "port": jump.port, "user": jump.user, "private_key_file": str(jump.client_key), "known_hosts_file": str(empty)}
    with pytest.raises(HostKeyUnknown, match=f"{jump.port}"):
        TunnelEngine(tunnel_for(inner, via=[hop], dynamic_forwards=["127.0.0.1:0"])).start()
    hop["known_hosts_file"] = str(jump.known_hosts)
    with pytest.raises(HostKeyUnknown, match=f"{inner.port}"):
        TunnelEngine(tunnel_for(inner, via=[hop], known_hosts_file=str(empty), dynamic_forwards=["127.0.0.1:0"])).start()


def test_live_apply_replaces_only_changed_forwards(sshd: t.Any, echo: LoopbackServer, digest_server: LoopbackServer) -> None:
    with running(tunnel_for(sshd, local_forwards=[f"0:127.0.0.1:{echo.port}", f"0:127.0.0.1:{digest_server.port}"])) as engine:
        keep = socket.create_connection(bound(engine, 0), timeout=10)
        keep.sendall(b"before")
        assert keep.recv(10) == b"before"
        new = tunnel_for(sshd, local_forwards=[f"0:127.0.0.1:{echo.port}", f"0:localhost:{digest_server.port}"]).forwards
        delta = engine.apply(new)
        assert len(delta["added"]) == 1 and len(delta["removed"]) == 1
        keep.sendall(b"after")
        assert keep.recv(10) == b"after", "a connection on an untouched forward survives the apply"
        keep.close()


def test_destination_down_keeps_the_tunnel_up_and_probe_says_so(sshd: t.Any) -> None:
    closed_port = _free_port()
    with running(tunnel_for(sshd, local_forwards=[f"0:127.0.0.1:{closed_port}"])) as engine:
        result = engine.probe()[0]
        assert result["ok"] is False and "connect failed" in result["error"]
        assert engine.state == "up"


def test_stop_finishes_within_deadline_with_active_clients(sshd: t.Any, echo: LoopbackServer) -> None:
    engine = TunnelEngine(tunnel_for(sshd, local_forwards=[f"0:127.0.0.1:{echo.port}"]))
    engine.start()
    clients = [socket.create_connection(bound(engine), timeout=10) for _index in range(5)]
    for client in clients:
        client.sendall(b"x")
        client.recv(1)
    started = time.monotonic()
    assert engine.stop(deadline=1) == 5, "the connections left after the drain time are cut and counted"
    assert time.monotonic() - started < 5
    for client in clients:
        client.settimeout(5)
        # Cut, not ended: a reset, never a clean end of stream that would pass for a complete transfer.
        with pytest.raises(ConnectionResetError):
            recv_all(client)
        client.close()
    with pytest.raises(OSError):
        socket.create_connection(bound(engine), timeout=2)


def test_stop_resets_the_local_destination_of_a_cut_remote_forward(sshd: t.Any) -> None:
    """Issue 16 item 13, remote side: a cut -R connection ends at its local destination with a reset, not an end of stream."""
    ended: list[str] = []
    received = threading.Event()
    done = threading.Event()

    def sink(conn: socket.socket) -> None:
        try:
            while True:
                if not conn.recv(65536):
                    ended.append("end of stream")
                    return
                received.set()
        except ConnectionResetError:
            ended.append("reset")
        finally:
            done.set()

    with LoopbackServer(sink) as destination:
        engine = TunnelEngine(tunnel_for(sshd, remote_forwards=[f"127.0.0.1:0:127.0.0.1:{destination.port}"]))
        engine.start()
        client = None
        try:
            _host, port = bound(engine)
            client = socket.create_connection(("127.0.0.1", port), timeout=10)
            client.sendall(b"part of a transfer")
            assert received.wait(10), "the connection did not reach the destination"
            assert engine.stop(deadline=0.5) == 1, "the connection left after the drain time is cut and counted"
        finally:
            if engine.state != "stopped":
                engine.stop(deadline=0)
            if client is not None:
                client.close()
        assert done.wait(10), "the destination's connection is still open after the stop"
        assert ended == ["reset"], ended


def test_errors_are_tunnel_errors_with_advice() -> None:
    error = ForwardRefused("x", advice="do y")
    assert isinstance(error, TunnelError) and str(error) == "x. do y"
    assert TunnelError.from_dict(error.to_dict()).kind == "forward_refused"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_reverse_dynamic_forward_enforces_socks_credentials(sshd: t.Any, echo: LoopbackServer) -> None:
    forward = {"listen_host": "127.0.0.1", "listen_port": 0, "socks_username": "bob", "socks_password": "pw"}
    with running(tunnel_for(sshd, remote_forwards=[forward])) as engine:
        port = bound(engine)[1]
        refused = socket.create_connection(("127.0.0.1", port), timeout=10)
        with pytest.raises(_socks.SocksError):
            socks_client.client_connect(refused, "127.0.0.1", echo.port, version=5)
        refused.close()
        allowed = socket.create_connection(("127.0.0.1", port), timeout=10)
        socks_client.client_connect(allowed, "127.0.0.1", echo.port, version=5, credentials=("bob", "pw"))
        allowed.sendall(b"authenticated")
        assert allowed.recv(32) == b"authenticated"
        allowed.close()


def test_ssh_config_aliases_and_proxyjump(sandbox: t.Any, echo: LoopbackServer, tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    jump = sandbox.start_sshd(name="jump")
    inner = sandbox.start_sshd(name="inner")
    known = tmp_path / "known_hosts"
    known.write_text(jump.known_hosts.read_text() + inner.known_hosts.read_text())
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host jumpalias\n  HostName {jump.host}\n  Port {jump.port}\n  User {jump.user}\n  IdentityFile {jump.client_key}\n\n"
        f"Host inneralias\n  HostName {inner.host}\n  Port {inner.port}\n  User {inner.user}\n  IdentityFile {inner.client_key}\n"
        "  ProxyJump jumpalias\n\n"
        f"Host *\n  UserKnownHostsFile {known}\n"
    )
    monkeypatch.setenv("BURROW_SSH_CONFIG", str(config))
    tunnel = parse_declaration({"name": "aliased", "host": "inneralias", "use_agent": False, "local_forwards": [f"0:127.0.0.1:{echo.port}"]})
    with running(tunnel) as engine:
        assert len(engine.chain.transports) == 2  # type: ignore[union-attr]
        assert echo_roundtrip(bound(engine), b"via ssh_config") == b"via ssh_config"


def test_unix_socket_listener_and_unix_socket_destination(sshd: t.Any, echo: LoopbackServer, tmp_path: t.Any) -> None:
    """-L /local.sock:host:port and -L port:/remote.sock (direct-streamlocal@openssh.com)."""
    remote_path = str(tmp_path / "remote-echo.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(remote_path)
    server.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _address = server.accept()
            except OSError:
                return
            with conn:
                echo_handler(conn)

    threading.Thread(target=serve, daemon=True).start()
    local_path = str(tmp_path / "local.sock")
    try:
        with running(tunnel_for(sshd, local_forwards=[f"{local_path}:127.0.0.1:{echo.port}", f"0:{remote_path}"])) as engine:
            assert oct(os.stat(local_path).st_mode & 0o777) == "0o600"

            def connect_unix() -> socket.socket:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(local_path)
                return sock

            data = payload(2 * 1024 * 1024, seed=23)
            assert sha256(echo_roundtrip(("unused", 0), data, connect=connect_unix)) == sha256(data)
            assert sha256(echo_roundtrip(bound(engine, 1), data)) == sha256(data)
        assert not os.path.exists(local_path), "the listener's socket file is removed on teardown"
    finally:
        stop.set()
        server.close()


def test_stale_unix_socket_file_is_replaced_but_a_live_one_is_not(sshd: t.Any, echo: LoopbackServer, tmp_path: t.Any) -> None:
    path = str(tmp_path / "busy.sock")
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(path)
    live.listen(1)
    try:
        with pytest.raises(TunnelError, match="in use"):
            TunnelEngine(tunnel_for(sshd, local_forwards=[f"{path}:127.0.0.1:{echo.port}"])).start()
    finally:
        live.close()
    # Now only a stale file remains (nobody listening): it is replaced.
    with running(tunnel_for(sshd, local_forwards=[f"{path}:127.0.0.1:{echo.port}"])):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        client.sendall(b"fresh")
        assert client.recv(5) == b"fresh"
        client.close()


def test_new_connections_are_held_during_a_reconnect(sandbox: t.Any, echo: LoopbackServer) -> None:
    """Listeners stay bound while the connection is rebuilt; a client that arrives meanwhile is served once it is back."""
    server = sandbox.start_sshd()
    with running(tunnel_for(server, local_forwards=[f"0:127.0.0.1:{echo.port}"], connect_timeout=10)) as engine:
        server.stop()
        assert wait_until(lambda: engine.state == "reconnecting", 10), engine.status()
        result: list[bytes] = []
        client = threading.Thread(target=lambda: result.append(echo_roundtrip(bound(engine), b"held", timeout=30)), daemon=True)
        client.start()
        # The client is accepted and waits for the connection to be back before the server returns.
        assert wait_until(lambda: engine.status()["connections_active"] == 1, 10), engine.status()
        server.restart()
        client.join(30)
        assert result == [b"held"]
        assert engine.reconnects == 1


def test_channels_use_the_deque_pipe(sshd: t.Any, echo: LoopbackServer) -> None:
    with running(tunnel_for(sshd, local_forwards=[f"0:127.0.0.1:{echo.port}"])) as engine:
        channel = engine.open_channel(list(engine.forwards.values())[0].forward.destination, ("127.0.0.1", 0))
        try:
            assert isinstance(channel.in_buffer, DequePipe)
            channel.sendall(b"abc")
            assert channel.recv(10) == b"abc"
        finally:
            channel.close()


def test_unreachable_hops_are_named(sshd: t.Any, echo: LoopbackServer) -> None:
    closed = _free_port()
    with pytest.raises(Unreachable, match=f"cannot connect to .*127.0.0.1:{closed}"):
        TunnelEngine(tunnel_for(sshd, name="nohop", via=[f"{sshd.user}@127.0.0.1:{closed}"], dynamic_forwards=["127.0.0.1:0"])).start()
    hop = {
        "host": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "private_key_file": str(sshd.client_key),
        "known_hosts_file": str(sshd.known_hosts),
    }
    beyond = tunnel_for(sshd, name="beyond", via=[hop], port=closed, dynamic_forwards=["127.0.0.1:0"])
    with pytest.raises(Unreachable, match=f"jump host .*{sshd.port} cannot reach the next hop .*{closed}: connect failed"):
        TunnelEngine(beyond).start()


def test_probe_of_a_remote_forward_checks_its_local_destination(sshd: t.Any) -> None:
    with LoopbackServer(echo_handler) as destination:
        with running(tunnel_for(sshd, remote_forwards=[f"127.0.0.1:0:127.0.0.1:{destination.port}"])) as engine:
            result = engine.probe()[0]
            assert result["ok"] is True, result
            destination_port = destination.port
            destination.stop()
            result = engine.probe()[0]
            # Issue 16 item 16: registered on the server is not enough, the destination is down.
            assert result["ok"] is False, f"probe says ok although the destination is down: {result}"
            assert result.get("destination_ok") is False, result
            assert f"cannot connect to 127.0.0.1:{destination_port}" in result["error"]
            assert "registered on the server" in result["error"]
            assert engine.state == "up"


@contextlib.contextmanager
def frozen_sessions(server: t.Any) -> t.Iterator[list[int]]:
    """SIGSTOP the server's per-connection processes: a half-dead session that still holds its -R listeners."""
    assert wait_until(lambda: bool(server.child_pids()), 5)
    children = server.child_pids()
    for pid in children:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield children
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def test_remote_port_held_by_the_earlier_session_is_retried_while_other_forwards_stay_up(sandbox: t.Any, echo: LoopbackServer) -> None:
    server = sandbox.start_sshd()
    remote_port = _free_port()
    tunnel = tunnel_for(server, local_forwards=[f"0:127.0.0.1:{echo.port}"], remote_forwards=[f"127.0.0.1:{remote_port}:127.0.0.1:{echo.port}"])
    with running(tunnel) as engine:
        with frozen_sessions(server):
            # The new session's tcpip-forward is refused while the frozen one holds the port: retried, not fatal.
            assert wait_until(lambda: engine.last_error is not None and engine.last_error.kind == "remote_port_held", 20), engine.status()
            status = engine.status()
            assert status["status"] == "reconnecting"
            assert f"remote port {remote_port} still held by an earlier session" in status["last_error"]["message"]
            assert echo_roundtrip(bound(engine, 0), b"local meanwhile") == b"local meanwhile", "the -L forward is up meanwhile"
            assert engine.state == "reconnecting", "still retrying the held port"
        # Thawed, the old session finds its client gone and exits (what ClientAlive eviction does): the port comes back.
        assert wait_until(lambda: engine.state == "up" and engine.reconnects == 1, 30), engine.status()
        assert echo_roundtrip(("127.0.0.1", remote_port), b"remote again") == b"remote again"


def test_remote_port_held_past_the_wait_takes_the_tunnel_down_with_advice(sandbox: t.Any, echo: LoopbackServer) -> None:
    server = sandbox.start_sshd()
    remote_port = _free_port()
    with running(tunnel_for(server, remote_forwards=[f"127.0.0.1:{remote_port}:127.0.0.1:{echo.port}"])) as engine:
        engine.held_port_wait = 3
        with frozen_sessions(server):
            assert wait_until(lambda: engine.state == "down", 30), engine.status()
        assert engine.last_error is not None and engine.last_error.kind == "forward_refused"
        assert f"remote port {remote_port} after 3 s" in engine.last_error.message
        assert "ClientAliveInterval" in engine.last_error.advice
