# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Open an authenticated SSH Transport through a chain of hops, verifying every hop's host key."""

from __future__ import annotations

import base64
import collections
import dataclasses
import fcntl
import getpass
import hashlib
import io
import os
import socket
import threading
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._errors import (
    AuthenticationFailed,
    ForwardRefused,
    HostKeyMismatch,
    HostKeyUnknown,
    TunnelError,
    Unreachable,
)
from ansible_collections.burrow.ssh.plugins.module_utils._spec import Hop, SpecError, parse_jump_list

try:
    import paramiko
    import paramiko.channel
    from paramiko.buffered_pipe import PipeTimeout
    from paramiko.common import cMSG_CHANNEL_OPEN, cMSG_GLOBAL_REQUEST
    from paramiko.message import Message

    HAS_PARAMIKO = True
    PARAMIKO_IMPORT_ERROR: str | None = None
    _TransportBase: t.Any = paramiko.Transport
except ImportError as _exc:  # pragma: no cover - exercised by the missing_required_lib path
    HAS_PARAMIKO = False
    PARAMIKO_IMPORT_ERROR = str(_exc)
    _TransportBase = object

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
DEFAULT_IDENTITY_FILES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")

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

    def set_event(self, event: threading.Event) -> None:
        with self._lock:
            self._event = event
            if self._closed or self._size:
                event.set()
            else:
                event.clear()

    def feed(self, data: bytes) -> None:
        with self._lock:
            if self._event is not None:
                self._event.set()
            if data:
                self._chunks.append(bytes(data))
                self._size += len(data)
            self._cv.notify_all()

    def read_ready(self) -> bool:
        with self._lock:
            return self._size > 0

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        with self._lock:
            if not self._size:
                if self._closed:
                    return b""
                if timeout == 0.0:
                    raise PipeTimeout()
                while not self._size and not self._closed:
                    then = time.time()
                    self._cv.wait(timeout)
                    if timeout is not None:
                        timeout -= time.time() - then
                        if timeout <= 0.0:
                            raise PipeTimeout()
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

    def __len__(self) -> int:
        with self._lock:
            return self._size


def use_deque_pipes() -> None:
    """Make every paramiko Channel created from now on in this process buffer its input in a DequePipe.

    Process-wide (paramiko creates channels inline), so only the tunnel process calls it.
    """
    if HAS_PARAMIKO:
        paramiko.channel.BufferedPipe = DequePipe  # type: ignore[misc,assignment]


class BurrowTransport(_TransportBase):  # type: ignore[misc,valid-type]
    """paramiko Transport with the two requests paramiko lacks: deadlines on global requests and streamlocal channels."""

    _preferred_ciphers = PREFERRED_CIPHERS
    _preferred_macs = PREFERRED_MACS
    # paramiko's transport thread wakes every _active_check_timeout (0.1 s) only to notice a local close(); at 10 Hz
    # that made 100 idle tunnels use 6-8 % of a core (tests/scale). Peer EOF and data still wake it at once, and
    # close() does not wait for the thread, so 1 s costs nothing but a thread that lingers up to 1 s after close().
    _active_check_timeout = 1.0

    def __init__(self, sock: t.Any) -> None:
        super().__init__(sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE)
        self._burrow_request_lock = threading.Lock()

    def request(self, kind: str, data: tuple[t.Any, ...] = (), timeout: float = 10.0) -> tuple[bool, t.Any]:
        """Send a want-reply global request; return (answered, response message or None when refused).

        paramiko's own global_request waits forever on a dead peer; this one gives up at the deadline
        (answered=False), which is how liveness is detected.
        """
        with self._burrow_request_lock:
            if not self.active:
                return False, None
            event = threading.Event()
            self.completion_event = event
            message = Message()
            message.add_byte(cMSG_GLOBAL_REQUEST)
            message.add_string(kind)
            message.add_boolean(True)
            message.add(*data)
            self._send_user_message(message)
            deadline = time.monotonic() + timeout
            while not event.wait(0.05):
                if not self.active or time.monotonic() >= deadline:
                    return False, None
            return True, self.global_response

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
            channel = paramiko.Channel(chanid)
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


@dataclasses.dataclass
class Chain:
    """The transports of one connection: one per hop, the last one reaches the target server."""

    hops: tuple[Hop, ...]
    transports: list[t.Any]

    @property
    def target(self) -> t.Any:
        return self.transports[-1]

    def is_active(self) -> bool:
        return bool(self.transports) and all(transport.is_active() for transport in self.transports)

    def close(self) -> None:
        for transport in reversed(self.transports):
            try:
                transport.close()
            except Exception:  # noqa: BLE001 - closing must never raise
                pass


def fingerprint(key: t.Any) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def known_hosts_path(hop: Hop) -> str:
    return os.path.expanduser(hop.known_hosts_file or "~/.ssh/known_hosts")


def _load_known_hosts(path: str) -> t.Any:
    keys = paramiko.HostKeys()
    if os.path.exists(path):
        try:
            keys.load(path)
        except (OSError, paramiko.SSHException) as exc:
            raise HostKeyUnknown(f"cannot read known_hosts file {path}: {exc}", advice="fix or replace the file") from exc
    return keys


def _preferred_key_types(known: t.Any, name: str) -> list[str]:
    entry = known.lookup(name)
    if not entry:
        return []
    types = list(entry.keys())
    if "ssh-rsa" in types:
        types = ["rsa-sha2-512", "rsa-sha2-256", *types]
    return types


def verify_host_key(transport: t.Any, hop: Hop) -> list[str]:
    """Apply the hop's host-key policy. Returns warnings; raises HostKeyUnknown / HostKeyMismatch."""
    key = transport.get_remote_server_key()
    name = known_hosts_name(hop.host, hop.port)
    actual = fingerprint(key)
    key_line = f"{name} {key.get_name()} {key.get_base64()}"
    label = hop.label()
    if hop.host_key_fingerprint:
        if hop.host_key_fingerprint.rstrip("=") != actual:
            raise HostKeyMismatch(
                f"host key of {label} is {actual}, but host_key_fingerprint pins {hop.host_key_fingerprint}",
                advice="if the server's key really changed, update host_key_fingerprint; otherwise someone may be intercepting the connection",
                hop=label,
            )
        return []
    if hop.host_key_checking == "off":
        return [f"host key checking is off for {label}: accepted {key.get_name()} {actual} without verification"]
    path = known_hosts_path(hop)
    known = _load_known_hosts(path)
    entry = known.lookup(name)
    if entry and key.get_name() in entry:
        if entry[key.get_name()] == key:
            return []
        raise HostKeyMismatch(
            f"host key of {label} CHANGED: the server presented {key.get_name()} {actual}, known_hosts file {path} has a different key for {name}",
            advice="if the change is expected, remove the old line (ssh-keygen -R '" + name + "' -f " + path + ") and verify the new fingerprint; "
            "otherwise someone may be intercepting the connection. accept-new never accepts a changed key",
            hop=label,
        )
    if entry and hop.host_key_checking != "off":
        # The host is known with other key types only: treat a new type like a changed key (OpenSSH does the same).
        raise HostKeyMismatch(
            f"host key of {label}: the server presented {key.get_name()} {actual}, but {path} only knows {', '.join(sorted(entry.keys()))} for {name}",
            advice="verify the new key out of band and add it to known_hosts",
            hop=label,
        )
    if hop.host_key_checking == "accept-new":
        _append_known_host(path, key_line)
        return [f"added {key.get_name()} {actual} for {name} to {path} (accept-new)"]
    raise HostKeyUnknown(
        f"host key of {label} is not known: {key.get_name()} {actual} is not in {path}",
        advice=f"verify the fingerprint, then add this line to {path}: {key_line} (or use host_key_checking=accept-new, or pin host_key_fingerprint)",
        hop=label,
    )


def _append_known_host(path: str, line: str) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _key_classes() -> list[t.Any]:
    return [paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey]


def load_private_key(*, path: str | None = None, content: str | None = None, passphrase: str | None = None, label: str = "") -> t.Any:
    """Load an OpenSSH or PEM private key from a file or from its content."""
    source = os.path.expanduser(path) if path else "private_key"
    text: str | None = content
    if text is None and path:
        try:
            with open(os.path.expanduser(path), encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise AuthenticationFailed(
                f"cannot read private_key_file {source} for {label}: {exc.strerror}", advice="check the path and its permissions", hop=label
            ) from exc
    if not text:
        raise AuthenticationFailed(f"private key {source} for {label} is empty", hop=label)
    last_error: Exception | None = None
    for key_class in _key_classes():
        try:
            return key_class.from_private_key(io.StringIO(text), password=passphrase)
        except paramiko.PasswordRequiredException as exc:
            raise AuthenticationFailed(
                f"private key {source} for {label} is encrypted", advice="give its passphrase in private_key_passphrase (no_log)", hop=label
            ) from exc
        except (paramiko.SSHException, ValueError) as exc:
            last_error = exc
    if passphrase and last_error is not None and "checkints" in str(last_error).lower():
        raise AuthenticationFailed(f"wrong passphrase for private key {source} ({label})", advice="check private_key_passphrase", hop=label)
    raise AuthenticationFailed(
        f"cannot load private key {source} for {label}: {last_error}",
        advice="use an ed25519, ECDSA or RSA key in OpenSSH or PEM format (DSA is not supported)",
        hop=label,
    )


def _candidate_keys(hop: Hop) -> list[tuple[str, t.Any]]:
    label = hop.label()
    keys: list[tuple[str, t.Any]] = []
    if hop.private_key:
        keys.append(("private_key", load_private_key(content=hop.private_key, passphrase=hop.private_key_passphrase, label=label)))
    if hop.private_key_file:
        keys.append((hop.private_key_file, load_private_key(path=hop.private_key_file, passphrase=hop.private_key_passphrase, label=label)))
    if hop.use_agent and os.environ.get("SSH_AUTH_SOCK"):
        try:
            agent = paramiko.Agent()
            keys.extend((f"agent key {fingerprint(key)}", key) for key in agent.get_keys())
        except paramiko.SSHException:
            pass
    if not keys and not hop.password:
        for default in DEFAULT_IDENTITY_FILES:
            expanded = os.path.expanduser(default)
            if os.path.exists(expanded):
                try:
                    keys.append((default, load_private_key(path=expanded, passphrase=hop.private_key_passphrase, label=label)))
                except AuthenticationFailed:
                    continue
    return keys


def authenticate(transport: t.Any, hop: Hop) -> None:
    user = hop.user or getpass.getuser()
    label = hop.label()
    tried: list[str] = []
    allowed: list[str] = []
    for source, key in _candidate_keys(hop):
        try:
            remaining = transport.auth_publickey(user, key)
            if transport.is_authenticated():
                return
            allowed = list(remaining)
        except paramiko.BadAuthenticationType as exc:
            allowed = list(exc.allowed_types)
            tried.append(f"publickey ({source}: method not accepted)")
            break
        except paramiko.AuthenticationException:
            tried.append(f"publickey ({source})")
        if not transport.is_active():
            break
    if hop.password and transport.is_active():
        try:
            transport.auth_password(user, hop.password)
            if transport.is_authenticated():
                return
        except paramiko.BadAuthenticationType as exc:
            allowed = list(exc.allowed_types)
            tried.append("password (method not accepted)")
            if "keyboard-interactive" in allowed:
                secret = hop.password
                try:
                    transport.auth_interactive(user, lambda _title, _instructions, prompts: [secret for _prompt in prompts])
                    if transport.is_authenticated():
                        return
                except paramiko.AuthenticationException:
                    tried.append("keyboard-interactive")
        except paramiko.AuthenticationException:
            tried.append("password")
    if not tried:
        tried.append("none (no key, agent key or password was available)")
    accepted = f"; the server accepts: {', '.join(allowed)}" if allowed else ""
    raise AuthenticationFailed(
        f"authentication failed for {user}@{hop.host}:{hop.port}; tried {', '.join(tried)}{accepted}",
        advice="check private_key_file / private_key / password / use_agent for this hop and the server's authorized_keys",
        hop=label,
    )


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


def _connect_socket(hop: Hop, timeout: float) -> socket.socket:
    try:
        sock = socket.create_connection((hop.host, hop.port), timeout=timeout)
    except socket.gaierror as exc:
        raise Unreachable(f"cannot resolve {hop.host} (hop {hop.label()}): {exc.strerror}", advice="check the host name and DNS", hop=hop.label()) from exc
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        if isinstance(exc, socket.timeout):
            reason = f"no answer within {timeout:g} s"
        raise Unreachable(f"cannot connect to {hop.label()}: {reason}", advice="check that sshd runs there and that the port is open", hop=hop.label()) from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)
    if QUICKACK_OPTION:  # Linux
        sock = QuickAckSocket(fileno=sock.detach())
    return sock


def _channel_to_next_hop(previous: t.Any, previous_hop: Hop, hop: Hop, timeout: float) -> t.Any:
    try:
        channel = previous.open_channel("direct-tcpip", (hop.host, hop.port), ("127.0.0.1", 0), timeout=timeout)
    except paramiko.ChannelException as exc:
        reason = OPEN_FAILURE_REASONS.get(exc.code, exc.text)
        if exc.code == 1:
            raise ForwardRefused(
                f"jump host {previous_hop.label()} refused to connect to the next hop {hop.label()}: {reason}",
                advice="that sshd's AllowTcpForwarding / PermitOpen / DisableForwarding forbid it; " + "burrow.ssh.sshd_forwarding can change them",
                hop=previous_hop.label(),
            ) from exc
        raise Unreachable(f"jump host {previous_hop.label()} cannot reach the next hop {hop.label()}: {reason}", hop=hop.label()) from exc
    except paramiko.SSHException as exc:
        raise Unreachable(f"jump host {previous_hop.label()} did not open a channel to {hop.label()}: {exc}", hop=hop.label()) from exc
    return channel


def connect_hop(sock: t.Any, hop: Hop, timeout: float) -> tuple[t.Any, list[str]]:
    transport = BurrowTransport(sock)
    transport.banner_timeout = timeout
    transport.auth_timeout = timeout
    transport.handshake_timeout = timeout
    if not hop.host_key_fingerprint and hop.host_key_checking != "off":
        types = _preferred_key_types(_load_known_hosts(known_hosts_path(hop)), known_hosts_name(hop.host, hop.port))
        supported = [name for name in types if name in transport.get_security_options().key_types]
        if supported:
            transport.get_security_options().key_types = supported
    try:
        transport.start_client(timeout=timeout)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        transport.close()
        raise Unreachable(
            f"SSH handshake with {hop.label()} failed: {exc or type(exc).__name__}", advice="is an SSH server listening there?", hop=hop.label()
        ) from exc
    try:
        warnings = verify_host_key(transport, hop)
        authenticate(transport, hop)
    except BaseException:
        transport.close()
        raise
    return transport, warnings


def _ssh_config_path() -> str | None:
    path = os.path.expanduser(os.environ.get("BURROW_SSH_CONFIG", "~/.ssh/config"))
    return path if path != "none" and os.path.isfile(path) else None


def _apply_ssh_config_entry(hop: Hop, entry: dict[str, t.Any]) -> Hop:
    """Fill what the declaration left open from a ~/.ssh/config Host entry, as ssh(1) would."""
    changes: dict[str, t.Any] = {}
    hostname = entry.get("hostname")
    if hostname and hostname != hop.host:
        changes["host"] = hostname
    if hop.user is None and entry.get("user"):
        changes["user"] = entry["user"]
    if hop.port == 22 and entry.get("port"):
        changes["port"] = int(entry["port"])
    if hop.private_key_file is None and hop.private_key is None and entry.get("identityfile"):
        existing = [path for path in entry["identityfile"] if os.path.exists(os.path.expanduser(path))]
        if existing:
            changes["private_key_file"] = existing[0]
    if hop.known_hosts_file is None and entry.get("userknownhostsfile"):
        changes["known_hosts_file"] = str(entry["userknownhostsfile"]).split()[0]
    return dataclasses.replace(hop, **changes) if changes else hop


def resolve_ssh_config(hops: t.Sequence[Hop]) -> list[Hop]:
    """Apply ~/.ssh/config (Host, HostName, User, Port, IdentityFile, UserKnownHostsFile, ProxyJump).

    ProxyJump from the config is used only when the declaration gives no jump hosts of its own,
    like ssh -J overriding the config. BURROW_SSH_CONFIG=none turns the lookup off.
    """
    path = _ssh_config_path()
    if path is None or not HAS_PARAMIKO:
        return list(hops)
    try:
        config = paramiko.SSHConfig.from_path(path)
    except (OSError, paramiko.SSHException, ValueError):
        return list(hops)
    resolved = [_apply_ssh_config_entry(hop, config.lookup(hop.host)) for hop in hops]
    if len(resolved) == 1:
        jump = config.lookup(hops[0].host).get("proxyjump")
        if jump and jump.lower() != "none":
            try:
                jumps = parse_jump_list(jump, field=f"ProxyJump of {hops[0].host} in {path}")
            except SpecError as exc:
                raise Unreachable(str(exc), advice=f"fix the ProxyJump line in {path}") from exc
            defaults = {"host_key_checking": hops[0].host_key_checking, "use_agent": hops[0].use_agent}
            jumps = [dataclasses.replace(hop, **defaults) for hop in jumps]
            resolved = [_apply_ssh_config_entry(hop, config.lookup(hop.host)) for hop in jumps] + resolved
    return resolved


def open_chain(hops: t.Sequence[Hop], connect_timeout: float = 10.0) -> tuple[Chain, list[str]]:
    """Connect hop by hop: TCP to the first, then a direct-tcpip channel of each hop to the next."""
    hops = resolve_ssh_config(hops)
    transports: list[t.Any] = []
    warnings: list[str] = []
    chain = Chain(hops=tuple(hops), transports=transports)
    try:
        for index, hop in enumerate(hops):
            if index == 0:
                sock: t.Any = _connect_socket(hop, connect_timeout)
            else:
                sock = _channel_to_next_hop(transports[-1], hops[index - 1], hop, connect_timeout)
            transport, hop_warnings = connect_hop(sock, hop, connect_timeout)
            transports.append(transport)
            warnings.extend(hop_warnings)
    except TunnelError:
        chain.close()
        raise
    except (OSError, EOFError, paramiko.SSHException) as exc:
        chain.close()
        failing = hops[len(transports)] if len(transports) < len(hops) else hops[-1]
        raise Unreachable(f"connection to {failing.label()} failed: {exc or type(exc).__name__}", hop=failing.label()) from exc
    return chain, warnings
