# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The SOCKS4/4a/5 handshake: server (`negotiate`, replies) against raw bytes, and the client helper against the server."""

from __future__ import annotations

import socket
import struct
import threading
import time
import typing as t
from dataclasses import dataclass

import pytest
import socks_client

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel import socks as _socks
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.socks import SocksError, SocksRequest

pytestmark = pytest.mark.timeout(60)

CREDS = ("alice", "s3cret")
PAYLOAD = b"GET / HTTP/1.0\r\n\r\n"
NOAUTH_GREETING = b"\x05\x01\x00"
AUTH_GREETING = b"\x05\x01\x02"
AUTH_OK = b"\x01\x05alice\x06s3cret"
ZERO_ADDR = b"\x00\x00\x00\x00\x00\x00"


def socks5_request(atyp_and_addr: bytes, port: int, command: int = 1) -> bytes:
    return bytes((5, command, 0)) + atyp_and_addr + struct.pack("!H", port)


def domain(name: bytes) -> bytes:
    return bytes((3, len(name))) + name


def socks4_request(ip: bytes, port: int, userid: bytes = b"", command: int = 1, host: bytes | None = None) -> bytes:
    data = bytes((4, command)) + struct.pack("!H", port) + ip + userid + b"\0"
    if host is not None:
        data += host + b"\0"
    return data


@pytest.fixture
def pair() -> t.Iterator[tuple[socket.socket, socket.socket]]:
    """(server end, client end), both with a timeout so that no test can hang."""
    server, client = socket.socketpair()
    server.settimeout(5)
    client.settimeout(5)
    try:
        yield server, client
    finally:
        server.close()
        client.close()


def read_all(sock: socket.socket) -> bytes:
    """Everything the server wrote to the client end, without blocking (the server side is done writing)."""
    sock.setblocking(False)
    chunks = []
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(5)
    return b"".join(chunks)


class OneByteStream:
    """A stream that hands out one byte per recv and has only the methods a paramiko Channel shares with a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.recv_calls = 0

    def recv(self, size: int) -> bytes:
        self.recv_calls += 1
        return self._sock.recv(min(size, 1))

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)


@dataclass
class Good:
    id: str
    data: bytes
    version: int
    host: str
    port: int
    wire: bytes  # what the server must have written back before reply_success
    username: str | None = None
    credentials: tuple[str, str] | None = None


GOOD = [
    Good("5-ipv4", NOAUTH_GREETING + socks5_request(b"\x01\x7f\x00\x00\x01", 22), 5, "127.0.0.1", 22, b"\x05\x00"),
    Good("5-ipv6", NOAUTH_GREETING + socks5_request(b"\x04" + socket.inet_pton(socket.AF_INET6, "::1"), 5432), 5, "::1", 5432, b"\x05\x00"),
    Good(
        "5-ipv6-full",
        NOAUTH_GREETING + socks5_request(b"\x04" + socket.inet_pton(socket.AF_INET6, "2001:db8::8:800:200c:417a"), 443),
        5,
        "2001:db8::8:800:200c:417a",
        443,
        b"\x05\x00",
    ),
    Good("5-domain", NOAUTH_GREETING + socks5_request(domain(b"example.com"), 80), 5, "example.com", 80, b"\x05\x00"),
    Good("5-domain-utf8", NOAUTH_GREETING + socks5_request(domain("bücher.example".encode()), 8080), 5, "bücher.example", 8080, b"\x05\x00"),
    Good("5-domain-255", NOAUTH_GREETING + socks5_request(domain(b"a" * 255), 65535), 5, "a" * 255, 65535, b"\x05\x00"),
    Good("5-many-methods", b"\x05\x03\x01\x02\x00" + socks5_request(b"\x01\x0a\x00\x00\x01", 1), 5, "10.0.0.1", 1, b"\x05\x00"),
    Good("5-auth-ipv4", AUTH_GREETING + AUTH_OK + socks5_request(b"\x01\x7f\x00\x00\x01", 22), 5, "127.0.0.1", 22, b"\x05\x02\x01\x00", "alice", CREDS),
    Good("5-auth-ipv6", AUTH_GREETING + AUTH_OK + socks5_request(b"\x04" + b"\0" * 15 + b"\1", 22), 5, "::1", 22, b"\x05\x02\x01\x00", "alice", CREDS),
    Good(
        "5-auth-domain",
        b"\x05\x02\x00\x02" + AUTH_OK + socks5_request(domain(b"db.internal"), 5432),
        5,
        "db.internal",
        5432,
        b"\x05\x02\x01\x00",
        "alice",
        CREDS,
    ),
    Good("4-ipv4", socks4_request(b"\x7f\x00\x00\x01", 22, b"bob"), 4, "127.0.0.1", 22, b"", "bob"),
    Good("4-no-userid", socks4_request(b"\xc0\xa8\x01\x02", 3306), 4, "192.168.1.2", 3306, b""),
    Good("4a-domain", socks4_request(b"\x00\x00\x00\x01", 80, b"bob", host=b"localhost"), 4, "localhost", 80, b"", "bob"),
    Good("4a-domain-255", socks4_request(b"\x00\x00\x00\xff", 80, host=b"b" * 255), 4, "b" * 255, 80, b""),
]


def good_ids(case: Good) -> str:
    return case.id


@pytest.mark.parametrize("case", GOOD, ids=good_ids)
@pytest.mark.parametrize("payload", [b"", PAYLOAD], ids=["alone", "pipelined"])
def test_negotiate_accepts(pair: tuple[socket.socket, socket.socket], case: Good, payload: bytes) -> None:
    server, client = pair
    client.sendall(case.data + payload)
    request = _socks.negotiate(server, credentials=case.credentials)
    assert request == SocksRequest(version=case.version, host=case.host, port=case.port, leftover=payload, username=case.username)
    assert read_all(client) == case.wire
    assert server.gettimeout() == 5


@pytest.mark.parametrize("case", GOOD, ids=good_ids)
def test_negotiate_one_byte_at_a_time(pair: tuple[socket.socket, socket.socket], case: Good) -> None:
    server, client = pair
    client.sendall(case.data + PAYLOAD)
    stream = OneByteStream(server)
    request = _socks.negotiate(stream, credentials=case.credentials)
    assert (request.host, request.port, request.username) == (case.host, case.port, case.username)
    # The reader asked for more only while the request was incomplete, and kept the surplus.
    assert stream.recv_calls == len(case.data)
    assert request.leftover == b""
    assert server.recv(len(PAYLOAD)) == PAYLOAD
    assert read_all(client) == case.wire


@pytest.mark.parametrize("case", GOOD, ids=good_ids)
def test_negotiate_split_sends_from_a_thread(pair: tuple[socket.socket, socket.socket], case: Good) -> None:
    """Real 1-byte sends with pauses: the server's recv sees the request arrive in pieces."""
    server, client = pair

    def dribble() -> None:
        for index in range(len(case.data)):
            client.sendall(case.data[index : index + 1])
            time.sleep(0.0005)
        client.sendall(PAYLOAD)

    sender = threading.Thread(target=dribble, daemon=True)
    sender.start()
    try:
        request = _socks.negotiate(server, credentials=case.credentials)
    finally:
        sender.join(10)
    assert not sender.is_alive()
    assert (request.host, request.port, request.username) == (case.host, case.port, case.username)
    received = request.leftover
    deadline = time.monotonic() + 5
    while len(received) < len(PAYLOAD) and time.monotonic() < deadline:
        received += server.recv(4096)
    assert received == PAYLOAD


@pytest.mark.parametrize("case", GOOD, ids=good_ids)
def test_negotiate_eof_at_every_offset(case: Good) -> None:
    for cut in range(len(case.data)):
        server, client = socket.socketpair()
        try:
            server.settimeout(5)
            client.sendall(case.data[:cut])
            client.shutdown(socket.SHUT_WR)
            with pytest.raises(SocksError) as info:
                _socks.negotiate(server, credentials=case.credentials)
            assert info.value.reason.startswith("client closed the connection"), (cut, info.value.reason)
            if cut == 0:
                assert info.value.reason == "client closed the connection before sending anything"
            else:
                assert f"({cut} bytes received in all)" in info.value.reason
        finally:
            server.close()
            client.close()


@dataclass
class Bad:
    id: str
    data: bytes
    reason: str
    wire: bytes
    credentials: tuple[str, str] | None = None
    code: int | None = None


REFUSE4 = b"\x00\x5b" + ZERO_ADDR


def refuse5(code: int) -> bytes:
    return b"\x05" + bytes((code,)) + b"\x00\x01" + ZERO_ADDR


BAD = [
    Bad("version-7", b"\x07\x01\x00", "unsupported SOCKS version 0x07", b""),
    Bad("version-0", b"\x00", "unsupported SOCKS version 0x00", b""),
    Bad("http", b"GET / HTTP/1.1\r\n\r\n", "unsupported SOCKS version 0x47 (an HTTP request? this port speaks SOCKS4/4a/5)", b""),
    Bad("tls", b"\x16\x03\x01\x02\x00", "unsupported SOCKS version 0x16 (a TLS handshake? this port speaks SOCKS4/4a/5)", b""),
    Bad(
        "5-bind",
        NOAUTH_GREETING + socks5_request(b"\x01\x7f\x00\x00\x01", 22, command=2),
        "SOCKS5 command 0x02 (BIND) not supported",
        b"\x05\x00" + refuse5(7),
        code=7,
    ),
    Bad(
        "5-udp-associate",
        NOAUTH_GREETING + socks5_request(b"\x01\x00\x00\x00\x00", 0, command=3),
        "SOCKS5 command 0x03 (UDP ASSOCIATE) not supported",
        b"\x05\x00" + refuse5(7),
        code=7,
    ),
    Bad(
        "5-command-9",
        NOAUTH_GREETING + socks5_request(domain(b"x"), 1, command=9),
        "SOCKS5 command 0x09 (unknown) not supported",
        b"\x05\x00" + refuse5(7),
        code=7,
    ),
    Bad("5-atyp-2", NOAUTH_GREETING + b"\x05\x01\x00\x02\x7f\x00\x00\x01\x00\x16", "SOCKS5 address type 0x02 not supported", b"\x05\x00" + refuse5(8), code=8),
    Bad("5-atyp-0", NOAUTH_GREETING + b"\x05\x01\x00\x00", "SOCKS5 address type 0x00 not supported", b"\x05\x00" + refuse5(8), code=8),
    Bad("5-domain-empty", NOAUTH_GREETING + socks5_request(domain(b""), 80), "empty domain name", b"\x05\x00" + refuse5(1), code=1),
    Bad(
        "5-domain-bad-utf8",
        NOAUTH_GREETING + socks5_request(domain(b"ex\xffample"), 80),
        "domain name is not valid UTF-8 (byte 0xff at offset 2)",
        b"\x05\x00" + refuse5(1),
        code=1,
    ),
    Bad(
        "5-domain-truncated-utf8",
        NOAUTH_GREETING + socks5_request(domain("é".encode()[:1]), 80),
        "domain name is not valid UTF-8 (byte 0xc3 at offset 0)",
        b"\x05\x00" + refuse5(1),
        code=1,
    ),
    Bad(
        "5-domain-control",
        NOAUTH_GREETING + socks5_request(domain(b"evil\nhost"), 80),
        "domain name contains control character 0x0a",
        b"\x05\x00" + refuse5(1),
        code=1,
    ),
    Bad("5-domain-nul", NOAUTH_GREETING + socks5_request(domain(b"a\0b"), 80), "domain name contains control character 0x00", b"\x05\x00" + refuse5(1), code=1),
    Bad("5-port-0", NOAUTH_GREETING + socks5_request(b"\x01\x7f\x00\x00\x01", 0), "destination port 0 is not valid", b"\x05\x00" + refuse5(1), code=1),
    Bad(
        "5-request-version",
        NOAUTH_GREETING + b"\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x16",
        "SOCKS5 request has version 0x04, expected 0x05",
        b"\x05\x00" + refuse5(1),
        code=1,
    ),
    Bad("5-no-methods", b"\x05\x00", "SOCKS5 client offered no authentication method", b"\x05\xff", code=0xFF),
    Bad(
        "5-only-userpass-offered",
        b"\x05\x01\x02",
        "no acceptable SOCKS5 authentication method: client offered 0x02 (username/password), listener requires 0x00 (no authentication)",
        b"\x05\xff",
        code=0xFF,
    ),
    Bad(
        "5-gssapi-offered",
        b"\x05\x02\x01\x80",
        "no acceptable SOCKS5 authentication method: client offered 0x01 (GSSAPI), 0x80 (other), listener requires 0x00 (no authentication)",
        b"\x05\xff",
        code=0xFF,
    ),
    Bad(
        "5-auth-required-noauth-offered",
        NOAUTH_GREETING + socks5_request(b"\x01\x7f\x00\x00\x01", 22),
        "no acceptable SOCKS5 authentication method: client offered 0x00 (no authentication), listener requires 0x02 (username/password)",
        b"\x05\xff",
        CREDS,
        0xFF,
    ),
    Bad("5-wrong-password", AUTH_GREETING + b"\x01\x05alice\x06s3creT", "SOCKS5 username/password rejected for user 'alice'", b"\x05\x02\x01\x01", CREDS, 1),
    Bad("5-wrong-user", AUTH_GREETING + b"\x01\x03bob\x06s3cret", "SOCKS5 username/password rejected for user 'bob'", b"\x05\x02\x01\x01", CREDS, 1),
    Bad("5-empty-creds", AUTH_GREETING + b"\x01\x00\x00", "SOCKS5 username/password rejected for user ''", b"\x05\x02\x01\x01", CREDS, 1),
    Bad("5-password-prefix", AUTH_GREETING + b"\x01\x05alice\x05s3cre", "SOCKS5 username/password rejected for user 'alice'", b"\x05\x02\x01\x01", CREDS, 1),
    Bad(
        "5-auth-version",
        AUTH_GREETING + b"\x05\x05alice\x06s3cret",
        "SOCKS5 username/password authentication has version 0x05, expected 0x01",
        b"\x05\x02\x01\x01",
        CREDS,
        1,
    ),
    Bad("4-bind", socks4_request(b"\x7f\x00\x00\x01", 22, command=2), "SOCKS4 command 0x02 (BIND) not supported", REFUSE4, code=0x5B),
    Bad("4a-bind", socks4_request(b"\x00\x00\x00\x01", 22, command=2, host=b"h"), "SOCKS4 command 0x02 (BIND) not supported", REFUSE4, code=0x5B),
    Bad(
        "4-with-credentials-required",
        socks4_request(b"\x7f\x00\x00\x01", 22, b"alice"),
        "SOCKS4 cannot authenticate and this listener requires SOCKS5 with username/password",
        REFUSE4,
        CREDS,
        0x5B,
    ),
    Bad(
        "4a-with-credentials-required",
        socks4_request(b"\x00\x00\x00\x07", 22, host=b"localhost"),
        "SOCKS4 cannot authenticate and this listener requires SOCKS5 with username/password",
        REFUSE4,
        CREDS,
        0x5B,
    ),
    Bad("4-userid-oversize-no-nul", socks4_request(b"\x7f\x00\x00\x01", 22)[:-1] + b"u" * 2000, "SOCKS4 userid longer than 1015 bytes", REFUSE4, code=0x5B),
    Bad("4-userid-oversize-nul", socks4_request(b"\x7f\x00\x00\x01", 22, b"u" * 1016), "SOCKS4 userid longer than 1015 bytes", REFUSE4, code=0x5B),
    Bad("4a-domain-256", socks4_request(b"\x00\x00\x00\x01", 80, host=b"d" * 256), "domain name longer than 255 bytes", REFUSE4, code=0x5B),
    Bad("4a-domain-long-no-nul", socks4_request(b"\x00\x00\x00\x01", 80) + b"d" * 600, "domain name longer than 255 bytes", REFUSE4, code=0x5B),
    Bad("4a-domain-empty", socks4_request(b"\x00\x00\x00\x01", 80, host=b""), "empty domain name", REFUSE4, code=0x5B),
    Bad(
        "4a-domain-bad-utf8",
        socks4_request(b"\x00\x00\x00\x01", 80, host=b"\xc3\x28"),
        "domain name is not valid UTF-8 (byte 0xc3 at offset 0)",
        REFUSE4,
        code=0x5B,
    ),
    Bad("4-port-0", socks4_request(b"\x7f\x00\x00\x01", 0), "destination port 0 is not valid", REFUSE4, code=0x5B),
]


def bad_ids(case: Bad) -> str:
    return case.id


@pytest.mark.parametrize("case", BAD, ids=bad_ids)
def test_negotiate_refuses(pair: tuple[socket.socket, socket.socket], case: Bad) -> None:
    server, client = pair
    client.sendall(case.data)
    client.shutdown(socket.SHUT_WR)
    with pytest.raises(SocksError) as info:
        _socks.negotiate(server, credentials=case.credentials)
    assert info.value.reason == case.reason
    assert str(info.value) == case.reason
    assert info.value.code == case.code
    server.shutdown(socket.SHUT_WR)
    assert read_all(client) == case.wire


WHOLE_REQUEST_READ = ("5-bind", "5-domain-bad-utf8", "5-port-0", "4-bind", "4-with-credentials-required", "4a-domain-bad-utf8")


@pytest.mark.parametrize("case", [c for c in BAD if c.id in WHOLE_REQUEST_READ], ids=bad_ids)
def test_refusal_reads_the_whole_request(pair: tuple[socket.socket, socket.socket], case: Bad) -> None:
    """When the request's length is known, it is read to the end before the refusal (no reset with unread bytes)."""
    server, client = pair
    client.sendall(case.data + b"TAIL")
    stream = OneByteStream(server)
    with pytest.raises(SocksError):
        _socks.negotiate(stream, credentials=case.credentials)
    assert stream.recv_calls == len(case.data)
    assert server.recv(16) == b"TAIL"


def test_max_header_bounds_the_socks4_request(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    client.sendall(socks4_request(b"\x00\x00\x00\x01", 80, b"u" * 40, host=b"h" * 40))
    with pytest.raises(SocksError) as info:
        _socks.negotiate(server, max_header=80)
    assert info.value.reason == "SOCKS4a request longer than 80 bytes"
    assert read_all(client) == REFUSE4


def test_max_header_userid_limit_follows_the_setting(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    client.sendall(socks4_request(b"\x7f\x00\x00\x01", 80, b"u" * 55))
    request = _socks.negotiate(server, max_header=64)
    assert request.username == "u" * 55
    client.sendall(socks4_request(b"\x7f\x00\x00\x01", 80, b"u" * 56))
    with pytest.raises(SocksError, match="SOCKS4 userid longer than 55 bytes"):
        _socks.negotiate(server, max_header=64)


def test_max_header_too_small_is_a_caller_error(pair: tuple[socket.socket, socket.socket]) -> None:
    with pytest.raises(ValueError, match="max_header must be at least 64"):
        _socks.negotiate(pair[0], max_header=10)


def test_silent_client_times_out(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    server.settimeout(0.2)
    client.sendall(b"\x05\x01")
    started = time.monotonic()
    with pytest.raises(SocksError) as info:
        _socks.negotiate(server)
    assert info.value.reason == "client sent no complete SOCKS5 method selection within 0.2 s"
    assert time.monotonic() - started < 2
    assert server.gettimeout() == 0.2


def test_dribbling_client_is_cut_at_the_handshake_deadline(pair: tuple[socket.socket, socket.socket]) -> None:
    """The caller's timeout bounds the whole handshake, not each recv."""
    server, client = pair
    server.settimeout(0.5)
    data = socks4_request(b"\x7f\x00\x00\x01", 22, b"u" * 200)
    stop = threading.Event()

    def dribble() -> None:
        for index in range(len(data)):
            if stop.wait(0.05):
                return
            try:
                client.sendall(data[index : index + 1])
            except OSError:
                return

    sender = threading.Thread(target=dribble, daemon=True)
    sender.start()
    started = time.monotonic()
    try:
        with pytest.raises(SocksError) as info:
            _socks.negotiate(server)
    finally:
        stop.set()
        sender.join(5)
    elapsed = time.monotonic() - started
    assert info.value.reason == "client sent no complete SOCKS4 request within 0.5 s"
    assert 0.4 < elapsed < 2
    assert not sender.is_alive()


def test_reset_by_client_surfaces_as_oserror() -> None:
    """A TCP reset mid-handshake is not a protocol error: the caller sees the OSError (it closes either way)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    accepted: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(5)
        client.settimeout(5)
        client.connect(listener.getsockname())
        conn, _peer = listener.accept()
        accepted.append(conn)
        conn.settimeout(5)
        client.sendall(b"\x05\x01")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        with pytest.raises(ConnectionResetError):
            _socks.negotiate(conn)
    finally:
        for sock in (client, listener, *accepted):
            sock.close()


# -- replies ---------------------------------------------------------------------------------


REQ5 = SocksRequest(version=5, host="example.com", port=80)
REQ4 = SocksRequest(version=4, host="10.0.0.1", port=80)


@pytest.mark.parametrize(
    ("request_", "bound", "wire"),
    [
        (REQ5, None, b"\x05\x00\x00\x01" + ZERO_ADDR),
        (REQ5, ("127.0.0.1", 1080), b"\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38"),
        (REQ5, ("::1", 2), b"\x05\x00\x00\x04" + b"\0" * 15 + b"\1\x00\x02"),
        (REQ5, ("[::1]", 2), b"\x05\x00\x00\x04" + b"\0" * 15 + b"\1\x00\x02"),
        (REQ5, ("gw.example", 9), b"\x05\x00\x00\x03\x0agw.example\x00\x09"),
        (REQ4, None, b"\x00\x5a" + ZERO_ADDR),
        (REQ4, ("192.168.0.1", 1080), b"\x00\x5a\x04\x38\xc0\xa8\x00\x01"),
        (REQ4, ("::1", 1080), b"\x00\x5a\x04\x38\x00\x00\x00\x00"),
    ],
)
def test_reply_success(pair: tuple[socket.socket, socket.socket], request_: SocksRequest, bound: tuple[str, int] | None, wire: bytes) -> None:
    server, client = pair
    if bound is None:
        _socks.reply_success(server, request_)
    else:
        _socks.reply_success(server, request_, bound)
    assert read_all(client) == wire


@pytest.mark.parametrize("code", range(1, 9))
def test_reply_failure(pair: tuple[socket.socket, socket.socket], code: int) -> None:
    server, client = pair
    _socks.reply_failure(server, REQ5, code)
    _socks.reply_failure(server, REQ4, code)
    assert read_all(client) == refuse5(code) + REFUSE4


@pytest.mark.parametrize("code", [0, 9, 0x5B, -1])
def test_reply_failure_rejects_unknown_codes(pair: tuple[socket.socket, socket.socket], code: int) -> None:
    server, client = pair
    with pytest.raises(ValueError, match="SOCKS reply code must be 1-8"):
        _socks.reply_failure(server, REQ5, code)
    assert read_all(client) == b""


# -- client helper against the server --------------------------------------------------------


class ServerThread:
    """Runs negotiate + a reply in a thread on the server end, and records the outcome."""

    def __init__(self, sock: socket.socket, credentials: tuple[str, str] | None = None, refuse: int | None = None, greeting: bytes = b"") -> None:
        self.sock = sock
        self.credentials = credentials
        self.refuse = refuse
        self.greeting = greeting
        self.request: SocksRequest | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.request = _socks.negotiate(self.sock, credentials=self.credentials)
            if self.refuse is not None:
                _socks.reply_failure(self.sock, self.request, self.refuse)
            else:
                _socks.reply_success(self.sock, self.request, ("127.0.0.1", 4242))
                self.sock.sendall(self.greeting)
        except (SocksError, OSError) as exc:
            self.error = exc

    def __enter__(self) -> ServerThread:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.thread.join(10)
        assert not self.thread.is_alive()


ROUND_TRIPS = [
    ("4-ipv4", 4, "127.0.0.1", None, "127.0.0.1", None),
    ("4-userid", 4, "127.0.0.1", ("carol", ""), "127.0.0.1", "carol"),
    ("4a-domain", 4, "localhost", None, "localhost", None),
    ("5-ipv4", 5, "127.0.0.1", None, "127.0.0.1", None),
    ("5-ipv6", 5, "::1", None, "::1", None),
    ("5-ipv6-brackets", 5, "[::1]", None, "::1", None),
    ("5-domain", 5, "db.internal", None, "db.internal", None),
    ("5-utf8-domain", 5, "bücher.example", None, "bücher.example", None),
]


@pytest.mark.parametrize("case", [r[1:] for r in ROUND_TRIPS], ids=[r[0] for r in ROUND_TRIPS])
def test_client_connect_round_trip(pair: tuple[socket.socket, socket.socket], case: tuple[int, str, tuple[str, str] | None, str, str | None]) -> None:
    version, host, client_creds, expected_host, expected_user = case
    server, client = pair
    # The server greets right after its reply: the client helper must leave those bytes in the stream.
    with ServerThread(server, greeting=b"hello") as thread:
        socks_client.client_connect(client, host, 5432, version=version, credentials=client_creds, timeout=3)
        client.sendall(b"ping")
    assert thread.error is None
    assert thread.request is not None
    assert (thread.request.version, thread.request.host, thread.request.port, thread.request.username) == (version, expected_host, 5432, expected_user)
    assert client.recv(5) == b"hello"
    assert client.gettimeout() == 5
    assert thread.request.leftover + server.recv(4 - len(thread.request.leftover)) == b"ping"


@pytest.mark.parametrize("server_creds", [None, CREDS], ids=["server-noauth", "server-auth"])
def test_client_connect_with_credentials(pair: tuple[socket.socket, socket.socket], server_creds: tuple[str, str] | None) -> None:
    """The client offers no-auth and username/password; the server picks what it requires."""
    server, client = pair
    with ServerThread(server, credentials=server_creds) as thread:
        socks_client.client_connect(client, "10.203.0.7", 22, credentials=CREDS, timeout=3)
    assert thread.error is None
    assert thread.request is not None
    assert thread.request.username == ("alice" if server_creds else None)


@pytest.mark.parametrize(("version", "refusal", "code"), [(5, 5, 5), (5, 2, 2), (4, 5, 0x5B), (4, 1, 0x5B)])
def test_client_connect_reports_the_refusal_code(pair: tuple[socket.socket, socket.socket], version: int, refusal: int, code: int) -> None:
    server, client = pair
    with ServerThread(server, refuse=refusal) as thread, pytest.raises(SocksError) as info:
        socks_client.client_connect(client, "127.0.0.1", 9, version=version, timeout=3)
    assert thread.error is None
    assert info.value.code == code
    if version == 5:
        assert info.value.reason == f"SOCKS5 server refused CONNECT to 127.0.0.1:9: {_socks.REPLY_MESSAGES[refusal]} (0x{refusal:02x})"
    else:
        assert info.value.reason == "SOCKS4 server refused CONNECT to 127.0.0.1:9 (0x5b)"


def test_client_connect_wrong_password(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    with ServerThread(server, credentials=CREDS) as thread, pytest.raises(SocksError) as info:
        socks_client.client_connect(client, "127.0.0.1", 9, credentials=("alice", "nope"), timeout=3)
    assert info.value.code == 1
    assert info.value.reason == "SOCKS5 server rejected the username/password for user 'alice'"
    assert isinstance(thread.error, SocksError)
    assert thread.error.reason == "SOCKS5 username/password rejected for user 'alice'"


def test_client_connect_without_credentials_to_auth_server(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    with ServerThread(server, credentials=CREDS) as thread, pytest.raises(SocksError) as info:
        socks_client.client_connect(client, "127.0.0.1", 9, timeout=3)
    assert info.value.code == 0xFF
    assert "accepted none of the offered authentication methods" in info.value.reason
    assert isinstance(thread.error, SocksError)


def test_client_connect_socks4_to_auth_server(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    with ServerThread(server, credentials=CREDS) as thread, pytest.raises(SocksError) as info:
        socks_client.client_connect(client, "127.0.0.1", 9, version=4, credentials=CREDS, timeout=3)
    assert info.value.code == 0x5B
    assert isinstance(thread.error, SocksError)
    assert thread.error.reason.startswith("SOCKS4 cannot authenticate")


def test_client_connect_server_closes(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    server.shutdown(socket.SHUT_WR)
    with pytest.raises(SocksError) as info:
        socks_client.client_connect(client, "127.0.0.1", 9, timeout=3)
    assert info.value.reason == "server closed the connection before sending anything"
    assert server.recv(16) == b"\x05\x01\x00"


def test_client_connect_silent_server_times_out(pair: tuple[socket.socket, socket.socket]) -> None:
    _server, client = pair
    started = time.monotonic()
    with pytest.raises(SocksError, match=r"^server sent no complete SOCKS5 method selection reply within 0.2 s$"):
        socks_client.client_connect(client, "127.0.0.1", 9, timeout=0.2)
    assert time.monotonic() - started < 2
    assert client.gettimeout() == 5


@pytest.mark.parametrize(
    ("host", "port", "version", "message"),
    [
        ("d" * 256, 80, 5, "domain name longer than 255 bytes"),
        ("d" * 256, 80, 4, "domain name longer than 255 bytes"),
        ("", 80, 5, "empty domain name"),
        ("::1", 80, 4, "SOCKS4 cannot carry the IPv6 address ::1"),
        ("127.0.0.1", 0, 5, "destination port 0 is out of range"),
        ("127.0.0.1", 65536, 5, "destination port 65536 is out of range"),
        ("127.0.0.1", 80, 6, "SOCKS version must be 4 or 5"),
    ],
)
def test_client_connect_rejects_what_socks_cannot_carry(pair: tuple[socket.socket, socket.socket], host: str, port: int, version: int, message: str) -> None:
    server, client = pair
    with pytest.raises(ValueError, match=message):
        socks_client.client_connect(client, host, port, version=version)
    assert read_all(server) == b""


def test_over_loopback_tcp_with_pipelined_payload() -> None:
    """The whole exchange over a real TCP connection on 127.0.0.1, data flowing both ways after the handshake."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    accepted: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(5)
        client.settimeout(5)
        client.connect(listener.getsockname())
        conn, _peer = listener.accept()
        accepted.append(conn)
        conn.settimeout(5)
        with ServerThread(conn, credentials=CREDS, greeting=b"banner\n") as thread:
            socks_client.client_connect(client, "db.internal", 5432, credentials=CREDS, timeout=3)
            assert client.recv(7) == b"banner\n"
        assert thread.request is not None
        assert (thread.request.host, thread.request.port, thread.request.username) == ("db.internal", 5432, "alice")
        client.sendall(b"x" * 100000)
        client.shutdown(socket.SHUT_WR)
        received = bytearray(thread.request.leftover)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            data = conn.recv(65536)
            if not data:
                break
            received += data
        assert bytes(received) == b"x" * 100000
    finally:
        for sock in (client, listener, *accepted):
            sock.close()
