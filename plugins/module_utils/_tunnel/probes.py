# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Protocol-aware probes: just enough of PostgreSQL, MySQL, Redis, HTTP, TLS and SSH to prove a service answers.

Standard library only. A probe runs on a stream someone else opened (an SSH channel for ``-L``, a socket to the local
destination for ``-R``, a SOCKS connection through the tunnel's own listener for ``-D``), sends a few bytes, reads the
answer before a deadline and reports what answered. It never sends credentials: PostgreSQL is asked for its
authentication request only, MySQL's greeting is read, Redis gets PING.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import time
import typing as t

PROBE_TYPES = ("tcp", "postgresql", "mysql", "redis", "http", "tls", "ssh")
DEFAULT_TIMEOUT = 5.0
PROTOCOL_NAMES = {"tcp": "TCP", "postgresql": "PostgreSQL", "mysql": "MySQL", "redis": "Redis", "http": "HTTP", "tls": "TLS", "ssh": "SSH"}
PG_AUTH = {0: "no authentication (trust)", 2: "Kerberos V5", 3: "a cleartext password", 5: "md5", 7: "GSSAPI", 9: "SSPI"}
# SQLSTATEs that mean "PostgreSQL is there but cannot take connections yet" (starting, shutting down, full).
PG_NOT_READY = ("57P03", "57P01", "53300")
CERT_NAMES = {"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O", "2.5.4.11": "OU"}


@dataclasses.dataclass(frozen=True)
class ProbeSpec:
    """What to probe and what counts as an answer (``status`` for HTTP: exact, else any status below 500)."""

    type: str = "tcp"
    path: str = "/"
    method: str = "GET"
    status: int | None = None
    server_name: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    target: str | None = None  # host:port probed through a SOCKS forward

    def public_dict(self) -> dict[str, t.Any]:
        return dataclasses.asdict(self)


class ProbeFailed(Exception):
    """The service did not answer as the protocol says; the message names what answered instead."""


class Stream:
    """A socket or SSH channel with one deadline for the whole probe."""

    def __init__(self, sock: t.Any, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline

    def _arm(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline")
        self.sock.settimeout(remaining)

    def send(self, data: bytes) -> None:
        self._arm()
        self.sock.sendall(data)

    def recv(self, size: int = 4096) -> bytes:
        self._arm()
        return bytes(self.sock.recv(size))

    def read_exactly(self, size: int, what: str) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.recv(size - len(data))
            if not chunk:
                raise ProbeFailed(f"connection closed without {what}" + (f" (got {shown(data)})" if data else ""))
            data += chunk
        return data

    def read_line(self, what: str, limit: int = 1024) -> bytes:
        data = b""
        while b"\n" not in data and len(data) < limit:
            chunk = self.recv(limit - len(data))
            if not chunk:
                break
            data += chunk
        if not data:
            raise ProbeFailed(f"connection closed without {what}")
        return data.split(b"\n", 1)[0].rstrip(b"\r")

    def close(self) -> None:
        try:
            self.sock.close()
        except Exception:  # noqa: BLE001 - closing a probe's stream must never fail the report
            pass


class TlsStream(Stream):
    """TLS over any stream (an SSH channel is not a socket): ssl.SSLObject with memory BIOs.

    ssl is imported here, by the first TLS probe: at module load it cost every tunnel process 0.8 MiB of its own memory, 1.3 MiB RSS (measured), and
    it is the standard library's, never the module payload's, so a late import finds it.
    """

    def __init__(self, inner: Stream, server_name: str | None) -> None:
        import ssl  # pylint: disable=import-outside-toplevel

        self.ssl = ssl
        super().__init__(inner.sock, inner.deadline)
        self.inner = inner
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the probe proves a TLS server answers; it does not authenticate it
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=server_name or None)

    def _pump(self, call: t.Callable[[], t.Any]) -> t.Any:
        while True:
            try:
                result = call()
            except self.ssl.SSLWantReadError:
                self._flush()
                data = self.inner.recv(16384)
                if not data:
                    self.incoming.write_eof()
                    raise ProbeFailed("connection closed during the TLS handshake") from None
                self.incoming.write(data)
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        pending = self.outgoing.read()
        if pending:
            self.inner.send(pending)

    def handshake(self) -> None:
        try:
            self._pump(self.tls.do_handshake)
        except self.ssl.SSLError as exc:
            raise ProbeFailed(f"TLS handshake failed: {exc.reason or exc}") from exc

    def send(self, data: bytes) -> None:
        self._pump(lambda: self.tls.write(data))

    def recv(self, size: int = 4096) -> bytes:
        try:
            return bytes(self._pump(lambda: self.tls.read(size)))
        except self.ssl.SSLZeroReturnError:
            return b""


def shown(data: bytes, limit: int = 40) -> str:
    """The first line of what answered, printable, quoted."""
    line = data.split(b"\n", 1)[0].rstrip(b"\r")[:limit]
    return repr(line.decode("latin-1"))


def _unexpected(protocol: str, stream: Stream, first: bytes) -> ProbeFailed:
    """A wrong protocol answered: read a little more (briefly) so the message names it."""
    data = first
    stream.deadline = min(stream.deadline, time.monotonic() + 0.3)
    try:
        while b"\n" not in data and len(data) < 64:
            chunk = stream.recv(64)
            if not chunk:
                break
            data += chunk
    except (OSError, ProbeFailed):  # ssl.SSLError is an OSError
        pass
    return ProbeFailed(f"expected {protocol}, got {shown(data)}")


# -- the protocols ---------------------------------------------------------------------------------------------
def _tcp(stream: Stream, spec: ProbeSpec, host: str) -> tuple[str, str]:
    return "connection accepted", "TCP connection accepted"


def _postgresql(stream: Stream, spec: ProbeSpec, host: str) -> tuple[str, str]:
    stream.send(struct.pack("!II", 8, 80877103))  # SSLRequest
    answer = stream.recv(1)
    if not answer:
        raise ProbeFailed("connection closed without a PostgreSQL answer")
    ssl_note = ""
    if answer == b"S":
        tls = TlsStream(stream, spec.server_name)
        tls.handshake()
        stream, ssl_note = tls, " over TLS"
    elif answer != b"N":
        raise _unexpected("PostgreSQL", stream, answer)
    body = b"user\x00burrow_probe\x00database\x00burrow_probe\x00application_name\x00burrow.ssh probe\x00\x00"
    stream.send(struct.pack("!II", 8 + len(body), 196608) + body)
    head = stream.recv(1)
    if not head:
        raise ProbeFailed("connection closed without a PostgreSQL answer to the startup message")
    if head not in (b"R", b"E"):
        raise _unexpected("PostgreSQL", stream, head)
    length = struct.unpack("!I", stream.read_exactly(4, "a complete PostgreSQL message"))[0]
    if not 4 <= length <= 8192:
        raise ProbeFailed(f"expected PostgreSQL, got a message of length {length}")
    payload = stream.read_exactly(length - 4, "a complete PostgreSQL message")
    with_ssl = ssl_note
    if head == b"E":
        fields = {item[:1].decode("latin-1"): item[1:].decode("utf-8", "replace") for item in payload.split(b"\x00") if item}
        code, message = fields.get("C", "?"), fields.get("M", "")
        if code in PG_NOT_READY:
            raise ProbeFailed(f"PostgreSQL answered but cannot take connections: {code} {message}")
        return f"error {code}", f"PostgreSQL answered{with_ssl} and refused the probe's role: {code} {message}"
    code = struct.unpack("!I", payload[:4])[0]
    if code == 10:
        mechanisms = [item.decode("ascii", "replace").lower() for item in payload[4:].split(b"\x00") if item]
        method = ", ".join(mechanisms) or "SASL"
    else:
        method = PG_AUTH.get(code, f"authentication type {code}")
    with_stream_terminate(stream)
    return method, f"PostgreSQL requested {method}{with_ssl}"


def with_stream_terminate(stream: Stream) -> None:
    try:
        stream.send(b"X\x00\x00\x00\x04")
    except (OSError, ProbeFailed):  # ssl.SSLError is an OSError
        pass


def _mysql(stream: Stream, spec: ProbeSpec, host: str) -> tuple[str, str]:
    header = stream.recv(4)
    if not header:
        raise ProbeFailed("connection closed without a MySQL greeting")
    if len(header) < 4 or header[3] != 0 or header[:3] == b"\x00\x00\x00":
        raise _unexpected("MySQL", stream, header)
    length = header[0] | header[1] << 8 | header[2] << 16
    if length > 16384:
        raise _unexpected("MySQL", stream, header)
    payload = stream.read_exactly(length, "a complete MySQL greeting")
    if payload[:1] == b"\xff":
        code = struct.unpack("<H", payload[1:3])[0] if len(payload) >= 3 else 0
        message = payload[3:].decode("utf-8", "replace").lstrip("#")
        raise ProbeFailed(f"MySQL answered with error {code}: {message}")
    if payload[:1] != b"\x0a" or b"\x00" not in payload[1:]:
        raise _unexpected("MySQL", stream, header + payload)
    version = payload[1:].split(b"\x00", 1)[0].decode("utf-8", "replace")
    flavour = "MariaDB" if "mariadb" in version.lower() else "MySQL"
    return version, f"{flavour} {version} greeted"


def _redis(stream: Stream, spec: ProbeSpec, host: str) -> tuple[str, str]:
    stream.send(b"*1\r\n$4\r\nPING\r\n")
    line = stream.read_line("a Redis answer")
    if line == b"+PONG":
        return "+PONG", "Redis answered PONG"
    if line.startswith(b"-NOAUTH"):
        return "-NOAUTH", "Redis answered, needs AUTH"
    if line.startswith(b"-"):
        raise ProbeFailed(f"Redis answered with an error: {line[1:].decode('utf-8', 'replace')}")
    raise ProbeFailed(f"expected Redis, got {shown(line)}")


def _http(stream: Stream, spec: ProbeSpec, host: str) -> tuple[str, str]:
    host_header = f"[{host}]" if ":" in host else host
    request = f"{spec.method} {spec.path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: burrow.ssh-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    stream.send(request.encode("ascii"))
    line = stream.read_line("an HTTP answer")
    parts = line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProbeFailed(f"expected HTTP, got {shown(line)}")
    status = int(parts[1])
    answered = line.decode("latin-1")
    if spec.status is not None and status != spec.status:
        raise ProbeFailed(f"HTTP {spec.method} {spec.path} answered {answered!r}, expected status {spec.status}")
    if spec.status is None and status >= 500:
        raise ProbeFailed(f"HTTP {spec.method} {spec.path} answered {answered!r} (a server error)")
    return answered, f"HTTP {spec.method} {spec.path} answered {answered!r}"


def _tls(stream: Stream, spec: ProbeSpec, host: str) -> tuple[str, str]:
    server_name = spec.server_name or (host if host and not host.replace(".", "").isdigit() and ":" not in host else None)
    tls = TlsStream(stream, server_name)
    tls.handshake()
    der = tls.tls.getpeercert(binary_form=True)
    subject = certificate_subject(der) if der else ""
    version = tls.tls.version() or "TLS"
    return subject or "no certificate", f"{version} handshake completed; certificate subject {subject or '(none)'}"


def _ssh(stream: Stream, spec: ProbeSpec, host: str) -> tuple[str, str]:
    for _line in range(10):  # RFC 4253: a server may send other lines before its banner
        line = stream.read_line("an SSH banner", limit=255)
        if line.startswith(b"SSH-"):
            banner = line.decode("utf-8", "replace")
            return banner, f"SSH server {banner}"
        if not line.isascii() or line[:5].upper().startswith(b"HTTP/"):
            break
    raise ProbeFailed(f"expected SSH, got {shown(line)}")


PROTOCOLS: dict[str, t.Callable[[Stream, ProbeSpec, str], tuple[str, str]]] = {
    "tcp": _tcp,
    "postgresql": _postgresql,
    "mysql": _mysql,
    "redis": _redis,
    "http": _http,
    "tls": _tls,
    "ssh": _ssh,
}


# -- a minimal DER reader for the certificate subject ----------------------------------------------------------
def _der_items(data: bytes) -> t.Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + 2 <= len(data):
        tag, length = data[offset], data[offset + 1]
        offset += 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[offset : offset + count], "big")
            offset += count
        yield tag, data[offset : offset + length]
        offset += length


def _oid(data: bytes) -> str:
    parts = [data[0] // 40, data[0] % 40]
    value = 0
    for byte in data[1:]:
        value = value << 7 | byte & 0x7F
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(str(part) for part in parts)


def certificate_subject(der: bytes) -> str:
    """``CN=db.internal, O=Example`` from a DER certificate (empty when it cannot be read)."""
    try:
        certificate = next(_der_items(der))[1]
        tbs = list(_der_items(next(_der_items(certificate))[1]))
        if tbs and tbs[0][0] == 0xA0:  # explicit version
            tbs = tbs[1:]
        names = []
        for _set_tag, rdn in _der_items(tbs[4][1]):
            for _seq_tag, attribute in _der_items(rdn):
                (_oid_tag, oid), (_value_tag, value) = list(_der_items(attribute))[:2]
                names.append(f"{CERT_NAMES.get(_oid(oid), _oid(oid))}={value.decode('utf-8', 'replace')}")
        return ", ".join(names)
    except (StopIteration, IndexError, ValueError):
        return ""


# -- SOCKS5 client (for -D: the probe goes through the tunnel's own listener) ----------------------------------
def socks5_connect(stream: Stream, host: str, port: int, credentials: tuple[str, str] | None) -> None:
    stream.send(b"\x05\x01\x02" if credentials else b"\x05\x01\x00")
    method = stream.read_exactly(2, "a SOCKS answer")
    if credentials and method == b"\x05\x02":
        user, password = (value.encode("utf-8") for value in credentials)
        stream.send(b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password)
        if stream.read_exactly(2, "a SOCKS authentication answer")[1] != 0:
            raise ProbeFailed("the SOCKS listener refused the forward's own credentials")
    elif method[1:] != b"\x00":
        raise ProbeFailed(f"the SOCKS listener offered no usable method ({method!r})")
    name = host.encode("idna")
    stream.send(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", port))
    reply = stream.read_exactly(4, "a SOCKS reply")
    if reply[1] != 0:
        reasons = {2: "not allowed by the server", 3: "network unreachable", 4: "host unreachable", 5: "connection refused"}
        raise ProbeFailed(f"the tunnel could not connect to {host}:{port}: {reasons.get(reply[1], f'SOCKS reply {reply[1]}')}")
    skip = {1: 4, 4: 16}.get(reply[3])
    if skip is None:
        skip = stream.read_exactly(1, "a SOCKS reply")[0]
    stream.read_exactly(skip + 2, "a SOCKS reply")


# -- running one ------------------------------------------------------------------------------------------------
def run(spec: ProbeSpec, opener: t.Callable[[float], t.Any], host: str, timeout: float | None = None) -> dict[str, t.Any]:
    """Open a stream with ``opener(seconds)`` and speak ``spec.type`` on it before the deadline; a result dict, never raises.

    ``opener`` raises an exception whose message says why the stream could not be opened (a refused channel, a
    closed destination port): that is the failure reported.
    """
    budget = min(spec.timeout, timeout) if timeout is not None else spec.timeout
    started = time.monotonic()
    deadline = started + max(budget, 0.1)
    protocol = PROTOCOL_NAMES[spec.type]
    result: dict[str, t.Any] = {"protocol": spec.type}
    stream = None
    try:
        stream = Stream(opener(max(deadline - started, 0.1)), deadline)
        answer, detail = PROTOCOLS[spec.type](stream, spec, host)
        result.update(ok=True, answer=answer, detail=detail)
    except ProbeFailed as exc:
        result.update(ok=False, error=f"{protocol} probe: {exc}")
    except (socket.timeout, TimeoutError):
        result.update(ok=False, error=f"{protocol} probe: no {protocol} answer within {budget:g}s")
    except (OSError, struct.error) as exc:  # ssl.SSLError is an OSError
        result.update(ok=False, error=f"{protocol} probe: {exc}")
    except Exception as exc:  # noqa: BLE001 - the opener's own errors (TunnelError) name what failed
        result.update(ok=False, error=str(exc))
    finally:
        if stream is not None:
            stream.close()
    result["latency_ms"] = round((time.monotonic() - started) * 1000, 2)
    return result
