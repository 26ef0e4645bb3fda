# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A small SOCKS4/4a/5 client for tests and benchmarks: it speaks to the engine's SOCKS listeners like a browser would.

Not shipped in the collection: only the server side lives in plugins/module_utils/_tunnel/socks.py.
"""

from __future__ import annotations

import struct

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.socks import (
    ATYP_DOMAIN,
    ATYP_IPV4,
    ATYP_IPV6,
    AUTH_SUCCESS,
    AUTH_VERSION,
    CMD_CONNECT,
    METHOD_NO_ACCEPTABLE,
    METHOD_NO_AUTH,
    METHOD_USERNAME_PASSWORD,
    REPLY_MESSAGES,
    REPLY_SUCCEEDED,
    SOCKS4_OK,
    SOCKS4_REPLY_VERSION,
    SOCKS4_VERSION,
    SOCKS5_VERSION,
    SocksError,
    _domain_problem,
    _encode_address,
    _ipv4,
    _ipv6,
    _method_names,
    _Reader,
    _Stream,
)


def client_connect(
    sock: _Stream,
    host: str,
    port: int,
    version: int = 5,
    credentials: tuple[str, str] | None = None,
    timeout: float | None = 10.0,
) -> None:
    """CONNECT to host:port through the SOCKS server at the other end of the already-connected `sock`.

    version 4 sends SOCKS4 for an IPv4 literal and SOCKS4a for a domain name; `credentials` are offered
    to a SOCKS5 server (RFC 1929) alongside "no authentication", and sent as the SOCKS4 userid.
    Reads exactly the server's replies, so the stream is positioned at the first payload byte on return.
    Raises SocksError (with `code` the server's answer) on refusal, ValueError on arguments SOCKS cannot carry.
    """
    if not 1 <= port <= 65535:
        raise ValueError(f"destination port {port} is out of range 1-65535")
    if version not in (SOCKS4_VERSION, SOCKS5_VERSION):
        raise ValueError(f"SOCKS version must be 4 or 5, got {version}")
    previous_timeout = sock.gettimeout()
    sock.settimeout(timeout)
    reader = _Reader(sock, "server", timeout, None)
    try:
        if version == SOCKS4_VERSION:
            _client4(sock, reader, host, port, credentials)
        else:
            _client5(sock, reader, host, port, credentials)
    finally:
        try:
            sock.settimeout(previous_timeout)
        except OSError:
            pass


def _client4(sock: _Stream, reader: _Reader, host: str, port: int, credentials: tuple[str, str] | None) -> None:
    userid = b"" if credentials is None else credentials[0].encode("utf-8")
    if b"\0" in userid:
        raise ValueError("SOCKS4 userid cannot contain NUL")
    packed = _ipv4(host)
    if packed is not None:
        request = bytes((SOCKS4_VERSION, CMD_CONNECT)) + struct.pack("!H", port) + packed + userid + b"\0"
    elif _ipv6(host) is not None:
        raise ValueError(f"SOCKS4 cannot carry the IPv6 address {host}: use SOCKS5")
    else:
        raw = host.encode("utf-8")
        problem = _domain_problem(raw)
        if problem is not None:
            raise ValueError(f"cannot send {host!r} over SOCKS4a: {problem}")
        request = bytes((SOCKS4_VERSION, CMD_CONNECT)) + struct.pack("!H", port) + b"\0\0\0\1" + userid + b"\0" + raw + b"\0"
    sock.sendall(request)
    reply_version, status = reader.take(8, "SOCKS4 reply")[:2]
    if reply_version not in (SOCKS4_REPLY_VERSION, SOCKS4_VERSION):
        raise SocksError(f"SOCKS4 reply has version 0x{reply_version:02x}, expected 0x00")
    if status != SOCKS4_OK:
        raise SocksError(f"SOCKS4 server refused CONNECT to {host}:{port} (0x{status:02x})", code=status)


def _client5(sock: _Stream, reader: _Reader, host: str, port: int, credentials: tuple[str, str] | None) -> None:
    address = _encode_address(host)
    methods = [METHOD_NO_AUTH] if credentials is None else [METHOD_NO_AUTH, METHOD_USERNAME_PASSWORD]
    sock.sendall(bytes((SOCKS5_VERSION, len(methods), *methods)))
    reply_version, method = reader.take(2, "SOCKS5 method selection reply")
    if reply_version != SOCKS5_VERSION:
        raise SocksError(f"SOCKS5 method selection reply has version 0x{reply_version:02x}, expected 0x05")
    if method == METHOD_NO_ACCEPTABLE:
        raise SocksError(f"SOCKS5 server accepted none of the offered authentication methods ({_method_names(methods)})", code=method)
    if method not in methods:
        raise SocksError(f"SOCKS5 server chose authentication method 0x{method:02x}, which was not offered", code=method)
    if method == METHOD_USERNAME_PASSWORD and credentials is not None:
        user = credentials[0].encode("utf-8")
        password = credentials[1].encode("utf-8")
        if len(user) > 255 or len(password) > 255:
            raise ValueError("SOCKS5 username and password are limited to 255 bytes each")
        sock.sendall(bytes((AUTH_VERSION, len(user))) + user + bytes((len(password),)) + password)
        _auth_version, status = reader.take(2, "SOCKS5 authentication reply")
        if status != AUTH_SUCCESS:
            raise SocksError(f"SOCKS5 server rejected the username/password for user {credentials[0]!r}", code=status)
    sock.sendall(bytes((SOCKS5_VERSION, CMD_CONNECT, 0)) + address + struct.pack("!H", port))
    stage = "SOCKS5 reply"
    reply_version, status, _reserved, atyp = reader.take(4, stage)
    if reply_version != SOCKS5_VERSION:
        raise SocksError(f"SOCKS5 reply has version 0x{reply_version:02x}, expected 0x05")
    if status != REPLY_SUCCEEDED:
        message = REPLY_MESSAGES.get(status, "unknown reply code")
        raise SocksError(f"SOCKS5 server refused CONNECT to {host}:{port}: {message} (0x{status:02x})", code=status)
    if atyp == ATYP_IPV4:
        reader.take(4 + 2, stage)
    elif atyp == ATYP_IPV6:
        reader.take(16 + 2, stage)
    elif atyp == ATYP_DOMAIN:
        reader.take(reader.byte(stage) + 2, stage)
    else:
        raise SocksError(f"SOCKS5 reply has address type 0x{atyp:02x}")
