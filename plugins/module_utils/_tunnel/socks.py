# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""SOCKS4, SOCKS4a and SOCKS5 (RFC 1928, RFC 1929 username/password) on one connected stream.

Server side: `negotiate()` reads one client's handshake and returns where it wants to go; the caller
opens the way there, then answers with `reply_success()` or `reply_failure()`. Client side:
`client_connect()`, used by probes, tests and benchmarks.

The stream is anything with `recv`, `sendall`, `gettimeout` and `settimeout`: a `socket.socket` or a
paramiko `Channel` (reverse dynamic forwards). Only CONNECT is supported. Domain names are passed
through untouched, to be resolved on the far side; nothing here resolves a name.

The timeout set on the stream by the caller bounds the whole handshake, not each `recv`: a client
that dribbles one byte at a time cannot hold a worker longer than that. The stream's own timeout is
restored before returning.
"""

from __future__ import annotations

import hmac
import socket
import struct
import time
import typing as t
from dataclasses import dataclass

SOCKS4_VERSION = 0x04
SOCKS5_VERSION = 0x05
SOCKS4_REPLY_VERSION = 0x00
SOCKS4_OK = 0x5A
SOCKS4_REJECTED = 0x5B

CMD_CONNECT = 0x01
CMD_BIND = 0x02
CMD_UDP_ASSOCIATE = 0x03

ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04

METHOD_NO_AUTH = 0x00
METHOD_GSSAPI = 0x01
METHOD_USERNAME_PASSWORD = 0x02
METHOD_NO_ACCEPTABLE = 0xFF

AUTH_VERSION = 0x01
AUTH_SUCCESS = 0x00
AUTH_FAILURE = 0x01

REPLY_SUCCEEDED = 0
REPLY_GENERAL_FAILURE = 1
REPLY_NOT_ALLOWED = 2
REPLY_NETWORK_UNREACHABLE = 3
REPLY_HOST_UNREACHABLE = 4
REPLY_CONNECTION_REFUSED = 5
REPLY_TTL_EXPIRED = 6
REPLY_COMMAND_NOT_SUPPORTED = 7
REPLY_ADDRESS_TYPE_NOT_SUPPORTED = 8

MAX_DOMAIN = 255
# Server reads are this large so that a request and the first payload bytes usually arrive in one call;
# whatever follows the request is handed back in SocksRequest.leftover.
RECV_CHUNK = 4096
MIN_MAX_HEADER = 64

REPLY_MESSAGES = {
    REPLY_SUCCEEDED: "succeeded",
    REPLY_GENERAL_FAILURE: "general failure",
    REPLY_NOT_ALLOWED: "connection not allowed by ruleset",
    REPLY_NETWORK_UNREACHABLE: "network unreachable",
    REPLY_HOST_UNREACHABLE: "host unreachable",
    REPLY_CONNECTION_REFUSED: "connection refused",
    REPLY_TTL_EXPIRED: "TTL expired",
    REPLY_COMMAND_NOT_SUPPORTED: "command not supported",
    REPLY_ADDRESS_TYPE_NOT_SUPPORTED: "address type not supported",
}
_COMMAND_NAMES = {CMD_CONNECT: "CONNECT", CMD_BIND: "BIND", CMD_UDP_ASSOCIATE: "UDP ASSOCIATE"}
_METHOD_NAMES = {METHOD_NO_AUTH: "no authentication", METHOD_GSSAPI: "GSSAPI", METHOD_USERNAME_PASSWORD: "username/password"}
_SOCKS5_REFUSAL = bytes((SOCKS5_VERSION, 0, 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0))
_SOCKS4_REFUSAL = bytes((SOCKS4_REPLY_VERSION, SOCKS4_REJECTED, 0, 0, 0, 0, 0, 0))


class SocksError(Exception):
    """A SOCKS handshake failed. `reason` is short and precise; `code` is the reply code involved, if any.

    Raised by `negotiate()` after it has already sent the client the right refusal when the protocol has
    one (the caller just closes the stream), and by `client_connect()` with the code the server answered.
    """

    def __init__(self, reason: str, *, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class SocksRequest:
    """One client's CONNECT request. SOCKS4a is reported as version 4 with a domain name in `host`."""

    version: int
    host: str
    port: int
    leftover: bytes = b""
    username: str | None = None


class _Stream(t.Protocol):
    def recv(self, size: int) -> bytes: ...  # pragma: no cover

    def sendall(self, data: bytes) -> t.Any: ...  # pragma: no cover

    def gettimeout(self) -> float | None: ...  # pragma: no cover

    def settimeout(self, timeout: float | None) -> t.Any: ...  # pragma: no cover


class _Reader:
    """Buffered reads with one deadline for the whole exchange.

    With `chunk`, reads up to that many bytes at once and keeps the surplus (server side: the surplus is the
    client's pipelined payload). Without, reads exactly what is asked (client side: after the handshake the
    stream belongs to the caller, so not one byte more may be taken from it).
    """

    def __init__(self, stream: _Stream, peer: str, timeout: float | None, chunk: int | None) -> None:
        self.stream = stream
        self.peer = peer
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.chunk = chunk
        self.buf = bytearray()
        self.pos = 0

    def _fill(self, need: int, stage: str) -> None:
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise SocksError(f"{self.peer} sent no complete {stage} within {self.timeout:g} s")
            self.stream.settimeout(remaining)
        size = max(need, self.chunk) if self.chunk else need
        try:
            data = self.stream.recv(size)
        except socket.timeout as exc:
            raise SocksError(f"{self.peer} sent no complete {stage} within {self.timeout:g} s") from exc
        if not data:
            if not self.buf:
                raise SocksError(f"{self.peer} closed the connection before sending anything")
            raise SocksError(f"{self.peer} closed the connection in the middle of the {stage} ({len(self.buf)} bytes received in all)")
        self.buf += data

    def take(self, count: int, stage: str) -> bytes:
        while len(self.buf) - self.pos < count:
            self._fill(count - (len(self.buf) - self.pos), stage)
        data = bytes(self.buf[self.pos : self.pos + count])
        self.pos += count
        return data

    def byte(self, stage: str) -> int:
        return self.take(1, stage)[0]

    def take_until_nul(self, limit: int, stage: str) -> bytes | None:
        """Bytes up to a NUL (consumed, not returned), or None if more than `limit` bytes come before it."""
        while True:
            end = self.buf.find(b"\0", self.pos, self.pos + limit + 1)
            if end >= 0:
                data = bytes(self.buf[self.pos : end])
                self.pos = end + 1
                return data
            if len(self.buf) - self.pos > limit:
                return None
            self._fill(1, stage)

    def leftover(self) -> bytes:
        return bytes(self.buf[self.pos :])


def _send_refusal(stream: _Stream, data: bytes) -> None:
    """Best effort: the client may be gone already, and the SocksError about to be raised is what matters."""
    try:
        stream.sendall(data)
    except OSError:
        pass


def _refuse5(stream: _Stream, code: int, reason: str) -> SocksError:
    _send_refusal(stream, bytes((SOCKS5_VERSION, code)) + _SOCKS5_REFUSAL[2:])
    return SocksError(reason, code=code)


def _refuse4(stream: _Stream, reason: str) -> SocksError:
    _send_refusal(stream, _SOCKS4_REFUSAL)
    return SocksError(reason, code=SOCKS4_REJECTED)


def _domain_problem(raw: bytes) -> str | None:
    if not raw:
        return "empty domain name"
    if len(raw) > MAX_DOMAIN:
        return f"domain name longer than {MAX_DOMAIN} bytes"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"domain name is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
    for char in text:
        if ord(char) < 0x20 or ord(char) == 0x7F:
            return f"domain name contains control character 0x{ord(char):02x}"
    return None


def _version_hint(version: int) -> str:
    if chr(version) in "CDGHOPT":
        return " (an HTTP request? this port speaks SOCKS4/4a/5)"
    if version == 0x16:
        return " (a TLS handshake? this port speaks SOCKS4/4a/5)"
    if version == 0x53:
        return " (an SSH client? this port speaks SOCKS4/4a/5)"
    return ""


def _command_name(command: int) -> str:
    return _COMMAND_NAMES.get(command, "unknown")


def _method_names(methods: t.Iterable[int]) -> str:
    return ", ".join(f"0x{method:02x} ({_METHOD_NAMES.get(method, 'other')})" for method in methods) or "none"


def negotiate(sock: _Stream, *, credentials: tuple[str, str] | None = None, max_header: int = 1024) -> SocksRequest:
    """Read one SOCKS4/4a/5 CONNECT request from a client and return it; reply nothing on success.

    `credentials` (user, password) requires SOCKS5 username/password authentication (RFC 1929) and refuses
    SOCKS4, which cannot authenticate; without it, SOCKS5 clients must offer "no authentication".
    `max_header` bounds the one message whose length the client controls without limit, the SOCKS4/4a
    request (its NUL-terminated userid and domain); SOCKS5 messages are bounded by the protocol (513 bytes).
    Raises SocksError (the refusal, when the protocol has one, is already sent) or OSError from the stream.
    """
    if max_header < MIN_MAX_HEADER:
        raise ValueError(f"max_header must be at least {MIN_MAX_HEADER}, got {max_header}")
    previous_timeout = sock.gettimeout()
    reader = _Reader(sock, "client", previous_timeout, RECV_CHUNK)
    try:
        version = reader.byte("SOCKS version byte")
        if version == SOCKS5_VERSION:
            return _negotiate5(sock, reader, credentials)
        if version == SOCKS4_VERSION:
            return _negotiate4(sock, reader, credentials, max_header)
        # Not SOCKS at all, so there is no refusal the client would understand: the caller closes.
        raise SocksError(f"unsupported SOCKS version 0x{version:02x}{_version_hint(version)}")
    finally:
        try:
            sock.settimeout(previous_timeout)
        except OSError:
            pass


def _negotiate5(sock: _Stream, reader: _Reader, credentials: tuple[str, str] | None) -> SocksRequest:
    stage = "SOCKS5 method selection"
    count = reader.byte(stage)
    methods = reader.take(count, stage)
    wanted = METHOD_NO_AUTH if credentials is None else METHOD_USERNAME_PASSWORD
    if wanted not in methods:
        _send_refusal(sock, bytes((SOCKS5_VERSION, METHOD_NO_ACCEPTABLE)))
        if not methods:
            reason = "SOCKS5 client offered no authentication method"
        else:
            reason = f"no acceptable SOCKS5 authentication method: client offered {_method_names(methods)}, listener requires {_method_names([wanted])}"
        raise SocksError(reason, code=METHOD_NO_ACCEPTABLE)
    sock.sendall(bytes((SOCKS5_VERSION, wanted)))
    username = None if credentials is None else _authenticate(sock, reader, credentials)

    stage = "SOCKS5 request"
    version, command, _reserved, atyp = reader.take(4, stage)
    if version != SOCKS5_VERSION:
        raise _refuse5(sock, REPLY_GENERAL_FAILURE, f"SOCKS5 request has version 0x{version:02x}, expected 0x05")
    raw = b""
    if atyp == ATYP_IPV4:
        host = socket.inet_ntop(socket.AF_INET, reader.take(4, stage))
    elif atyp == ATYP_IPV6:
        host = socket.inet_ntop(socket.AF_INET6, reader.take(16, stage))
    elif atyp == ATYP_DOMAIN:
        raw = reader.take(reader.byte(stage), stage)
        host = ""
    else:
        raise _refuse5(sock, REPLY_ADDRESS_TYPE_NOT_SUPPORTED, f"SOCKS5 address type 0x{atyp:02x} not supported")
    (port,) = struct.unpack("!H", reader.take(2, stage))
    # The whole request is read before any refusal below, so the client is not reset with unread bytes.
    if command != CMD_CONNECT:
        raise _refuse5(sock, REPLY_COMMAND_NOT_SUPPORTED, f"SOCKS5 command 0x{command:02x} ({_command_name(command)}) not supported")
    if atyp == ATYP_DOMAIN:
        problem = _domain_problem(raw)
        if problem is not None:
            raise _refuse5(sock, REPLY_GENERAL_FAILURE, problem)
        host = raw.decode("utf-8")
    if port == 0:
        raise _refuse5(sock, REPLY_GENERAL_FAILURE, "destination port 0 is not valid")
    return SocksRequest(version=5, host=host, port=port, leftover=reader.leftover(), username=username)


def _authenticate(sock: _Stream, reader: _Reader, credentials: tuple[str, str]) -> str:
    stage = "SOCKS5 username/password authentication"
    version = reader.byte(stage)
    if version != AUTH_VERSION:
        _send_refusal(sock, bytes((AUTH_VERSION, AUTH_FAILURE)))
        raise SocksError(f"SOCKS5 username/password authentication has version 0x{version:02x}, expected 0x01", code=AUTH_FAILURE)
    user = reader.take(reader.byte(stage), stage)
    password = reader.take(reader.byte(stage), stage)
    # Both comparisons always run, in constant time for equal lengths: no hint about which part was wrong.
    user_ok = hmac.compare_digest(user, credentials[0].encode("utf-8"))
    password_ok = hmac.compare_digest(password, credentials[1].encode("utf-8"))
    if not (user_ok and password_ok):
        _send_refusal(sock, bytes((AUTH_VERSION, AUTH_FAILURE)))
        shown = user.decode("utf-8", "backslashreplace")
        raise SocksError(f"SOCKS5 username/password rejected for user {shown!r}", code=AUTH_FAILURE)
    sock.sendall(bytes((AUTH_VERSION, AUTH_SUCCESS)))
    return credentials[0]


def _negotiate4(sock: _Stream, reader: _Reader, credentials: tuple[str, str] | None, max_header: int) -> SocksRequest:
    stage = "SOCKS4 request"
    head = reader.take(7, stage)
    command = head[0]
    (port,) = struct.unpack("!H", head[1:3])
    address = head[3:7]
    userid_limit = max_header - 9
    userid = reader.take_until_nul(userid_limit, stage)
    if userid is None:
        raise _refuse4(sock, f"SOCKS4 userid longer than {userid_limit} bytes")
    socks4a = address[:3] == b"\0\0\0" and address[3] != 0
    raw = b""
    if socks4a:
        budget = max_header - 9 - len(userid) - 1
        raw_or_none = reader.take_until_nul(min(MAX_DOMAIN, budget), "SOCKS4a request")
        if raw_or_none is None:
            if budget < MAX_DOMAIN:
                raise _refuse4(sock, f"SOCKS4a request longer than {max_header} bytes")
            raise _refuse4(sock, f"domain name longer than {MAX_DOMAIN} bytes")
        raw = raw_or_none
    # The whole request is read before any refusal below, so the client is not reset with unread bytes.
    if credentials is not None:
        raise _refuse4(sock, "SOCKS4 cannot authenticate and this listener requires SOCKS5 with username/password")
    if command != CMD_CONNECT:
        raise _refuse4(sock, f"SOCKS4 command 0x{command:02x} ({_command_name(command)}) not supported")
    if socks4a:
        problem = _domain_problem(raw)
        if problem is not None:
            raise _refuse4(sock, problem)
        host = raw.decode("utf-8")
    else:
        host = socket.inet_ntop(socket.AF_INET, address)
    if port == 0:
        raise _refuse4(sock, "destination port 0 is not valid")
    username = userid.decode("utf-8", "backslashreplace") if userid else None
    return SocksRequest(version=4, host=host, port=port, leftover=reader.leftover(), username=username)


def _ipv4(host: str) -> bytes | None:
    try:
        return socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return None


def _ipv6(host: str) -> bytes | None:
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return socket.inet_pton(socket.AF_INET6, literal.split("%", 1)[0])
    except OSError:
        return None


def _encode_address(host: str) -> bytes:
    """SOCKS5 ATYP and address for an IPv4/IPv6 literal (brackets allowed) or a domain name."""
    packed = _ipv4(host)
    if packed is not None:
        return bytes((ATYP_IPV4,)) + packed
    packed = _ipv6(host)
    if packed is not None:
        return bytes((ATYP_IPV6,)) + packed
    raw = host.encode("utf-8")
    problem = _domain_problem(raw)
    if problem is not None:
        raise ValueError(f"cannot send {host!r} over SOCKS: {problem}")
    return bytes((ATYP_DOMAIN, len(raw))) + raw


def _check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")


def reply_success(sock: _Stream, req: SocksRequest, bound: tuple[str, int] = ("0.0.0.0", 0)) -> None:
    """Tell the client its CONNECT succeeded; `bound` is the address reported (SOCKS4 carries only IPv4)."""
    host, port = bound
    _check_port(port)
    if req.version == SOCKS4_VERSION:
        sock.sendall(bytes((SOCKS4_REPLY_VERSION, SOCKS4_OK)) + struct.pack("!H", port) + (_ipv4(host) or b"\0\0\0\0"))
        return
    sock.sendall(bytes((SOCKS5_VERSION, REPLY_SUCCEEDED, 0)) + _encode_address(host) + struct.pack("!H", port))


def reply_failure(sock: _Stream, req: SocksRequest, code: int) -> None:
    """Tell the client its CONNECT failed with a SOCKS5 REP code (1-8); SOCKS4 has only 0x5B."""
    if code not in REPLY_MESSAGES or code == REPLY_SUCCEEDED:
        raise ValueError(f"SOCKS reply code must be 1-8, got {code}")
    if req.version == SOCKS4_VERSION:
        sock.sendall(_SOCKS4_REFUSAL)
        return
    sock.sendall(bytes((SOCKS5_VERSION, code)) + _SOCKS5_REFUSAL[2:])
