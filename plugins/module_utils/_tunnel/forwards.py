# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The forwards of a tunnel on a hop chain: what each one listens on, and the channels it opens or accepts."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel import audit, socks
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import (
    SSHD_FORWARDING_HINT,
    ConnectionLost,
    ForwardRefused,
    PortInUse,
    TunnelError,
)

# Imported at load time like everything the tunnel process runs (the module payload is gone once it has forked).
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.relay import (
    Counters,
    Listener,
    bind_loopback_pair,
    bind_tcp,
    bind_unix,
    describe_holder,
    relay,
    tune_socket,
)
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.remote_bind import verify_remote_bind
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Endpoint, Forward
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import (
    CANCEL_STREAMLOCAL_FORWARD,
    STREAMLOCAL_FORWARD,
)

if t.TYPE_CHECKING:  # a declared cycle: a runtime belongs to a ForwardSet (forward_set.py), which creates it
    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.forward_set import ForwardSet

LOG = logging.getLogger("burrow.tunnel")
SOCKS_HANDSHAKE_TIMEOUT = 10.0
# After a failed SOCKS authentication, attempts on that listener are spaced: 0.1 s doubling per failure in a row, at
# most 2 s (so at most 0.5 guesses/s however many connections guess in parallel); a success resets it. A client would
# wait at most SOCKS_AUTH_QUEUE_MAX s for its turn, else it is closed at once.
SOCKS_AUTH_DELAY = 0.1
SOCKS_AUTH_DELAY_MAX = 2.0
SOCKS_AUTH_QUEUE_MAX = 30.0


def _socks_refusal_code(error: TunnelError) -> int:
    """The SOCKS reply for a channel the server would not open: policy, a lost connection, or the destination."""
    if isinstance(error, ForwardRefused):
        return socks.REPLY_NOT_ALLOWED
    if isinstance(error, ConnectionLost):
        return socks.REPLY_GENERAL_FAILURE
    return socks.REPLY_CONNECTION_REFUSED


class ForwardRuntime:
    """One declared forward and what it is actually bound to."""

    def __init__(self, forward: Forward, owner: ForwardSet) -> None:
        self.forward = forward
        self.owner = owner
        self.counters = Counters()
        self.listener: Listener | None = None
        self.extra_listeners: list[Listener] = []  # ::1 beside 127.0.0.1 for localhost and the default bind
        self.bound_hosts: list[str] = []
        self._auth_lock = threading.Lock()
        self._auth_failures = 0  # in a row, on this listener
        self._auth_next = 0.0  # monotonic time of the next allowed attempt while failing
        self.bound: Endpoint | None = None
        self.warnings: list[str] = []
        self.active = False

    @property
    def key(self) -> str:
        return self.forward.key()

    # -- local side listeners (local and dynamic forwards) ------------------------------------
    def bind_local(self) -> None:
        listen = self.forward.listen
        handler = self._handle_dynamic if self.forward.kind == "dynamic" else self._handle_local
        extra: list[socket.socket] = []
        try:
            if listen.is_unix():
                sock = bind_unix(str(listen.path))
            elif listen.both_loopback_families:
                sock, *extra = bind_loopback_pair(int(listen.port or 0))
            else:
                sock = bind_tcp(listen.host or "", int(listen.port or 0))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                holder = describe_holder(int(listen.port or 0)) if not listen.is_unix() else ""
                where = f" on [::1]:{listen.port} (this listener binds 127.0.0.1 and ::1, as localhost means both)" if exc.filename == "::1" else ""
                raise PortInUse(
                    f"cannot listen on {listen} for {self.key}: address already in use{where}{holder}",
                    advice="choose another port, use port 0 to let burrow.ssh allocate one, or stop what holds it",
                ) from exc
            raise TunnelError(f"cannot listen on {listen} for {self.key}: {exc.strerror or exc}", advice="check the bind address and permissions") from exc
        handler = audit.wrap_handler(self.owner.audit, self.key, self.forward.destination, handler)  # one audit line per client
        self.listener = Listener(sock, handler, name=self.key, unix_path=listen.path if listen.is_unix() else None)
        self.extra_listeners = [Listener(other, handler, name=self.key) for other in extra]
        self.bound_hosts = [str(other.getsockname()[0]) for other in (sock, *extra)] if not listen.is_unix() else []
        address = self.listener.address
        if isinstance(address, str):
            self.bound = Endpoint(path=address)
        else:
            self.bound = Endpoint(host=address[0], port=address[1])
        self.listener.start()
        for other in self.extra_listeners:
            other.start()
        self.active = True

    def _opener_origin(self, client: socket.socket) -> tuple[str, int]:
        try:
            peer = client.getpeername()
            if isinstance(peer, tuple):
                return str(peer[0]), int(peer[1])
        except OSError:
            pass
        return "127.0.0.1", 0

    def _admitted(self, end: t.Any) -> bool:
        """Below max_connections: counted as opened. At the cap: closed at once and counted as refused (with one log line
        per refusal, so a local user filling the listener is seen), and the listener keeps serving others."""
        if self.counters.opened(self.owner.max_connections):
            return True
        LOG.warning("%s: refused a connection: %d connections are active (max_connections)", self.key, self.owner.max_connections)
        with contextlib.suppress(Exception):
            end.close()
        return False

    def _handle_local(self, client: socket.socket) -> None:
        if not self._admitted(client):
            return
        destination = self.forward.destination
        if destination is None:  # pragma: no cover - guarded by the spec
            client.close()
            self.counters.closed(0, 0)
            return
        try:
            channel = self.owner.open_channel(destination, self._opener_origin(client))
        except TunnelError as exc:
            self.counters.failed(str(exc))
            LOG.warning("%s: %s", self.key, exc)
            client.close()
            self.counters.closed(0, 0)
            return
        relay(client, channel, self.counters)

    def _socks_credentials(self) -> tuple[str, str] | None:
        if self.forward.socks_username is None:
            return None
        return self.forward.socks_username, self.forward.socks_password or ""

    def _auth_turn(self) -> float | None:
        """Seconds to wait before this connection may try to authenticate (None: the queue is too long, refuse)."""
        with self._auth_lock:
            if not self._auth_failures:
                return 0.0
            now = time.monotonic()
            start = max(now, self._auth_next)
            if start - now > SOCKS_AUTH_QUEUE_MAX:
                return None
            self._auth_next = start + min(SOCKS_AUTH_DELAY * 2 ** (self._auth_failures - 1), SOCKS_AUTH_DELAY_MAX)
            return start - now

    def _auth_result(self, client: socket.socket, error: Exception | None) -> None:
        if self.forward.socks_username is None:
            return
        if error is None:
            with self._auth_lock:
                self._auth_failures = 0
            return
        if getattr(error, "code", None) != socks.AUTH_FAILURE:
            return
        with self._auth_lock:
            self._auth_failures += 1
            failures = self._auth_failures
            self._auth_next = max(self._auth_next, time.monotonic() + min(SOCKS_AUTH_DELAY * 2 ** (failures - 1), SOCKS_AUTH_DELAY_MAX))
        origin = self._opener_origin(client)
        # One line per failure, never the attempted password (the reason names the user only).
        LOG.warning("%s: SOCKS authentication failed from %s:%s: %s (%d in a row; attempts on this listener are slowed)", self.key, *origin, error, failures)

    def _handle_dynamic(self, client: socket.socket) -> None:
        if not self._admitted(client):
            return
        try:
            wait = self._auth_turn() if self.forward.socks_username is not None else 0.0
            if wait is None:
                raise socks.SocksError("SOCKS authentication queue full after repeated failures: connection refused")
            if wait:
                time.sleep(wait)  # this connection's turn; spacing attempts is the point (per-listener backoff)
            client.settimeout(SOCKS_HANDSHAKE_TIMEOUT)
            request = socks.negotiate(client, credentials=self._socks_credentials())
            client.settimeout(None)
            self._auth_result(client, None)
        except (socks.SocksError, OSError) as exc:
            self._auth_result(client, exc)
            self.counters.failed(f"SOCKS: {getattr(exc, 'reason', exc)}")
            client.close()
            self.counters.closed(0, 0)
            return
        try:
            channel = self.owner.open_channel(Endpoint(host=request.host, port=request.port), self._opener_origin(client))
        except TunnelError as exc:
            code = _socks_refusal_code(exc)
            with contextlib.suppress(OSError):
                socks.reply_failure(client, request, code)
            self.counters.failed(str(exc))
            client.close()
            self.counters.closed(0, 0)
            return
        try:
            socks.reply_success(client, request)
        except OSError as exc:
            self.counters.failed(f"SOCKS reply: {exc}")
            channel.close()
            client.close()
            self.counters.closed(0, 0)
            return
        relay(client, channel, self.counters, leftover=request.leftover)

    # -- remote forwards ---------------------------------------------------------------------
    def request_remote(self, transport: t.Any) -> None:
        listen = self.forward.listen
        if listen.is_unix():
            self._request_remote_unix(transport, str(listen.path))
            return
        requested_port = int(listen.port or 0)
        # After a reconnect, ask for the port the server allocated the first time, so users see a stable port.
        if requested_port == 0 and self.bound is not None and self.bound.port:
            requested_port = int(self.bound.port)
        host = listen.host if listen.host is not None else ""
        answered, response = transport.request("tcpip-forward", (host, requested_port), timeout=self.owner.connect_timeout)
        if not answered:
            raise ConnectionLost(f"{self.owner.target_label}: no answer to the remote forward request for {self.key}")
        if response is None:
            raise ForwardRefused(
                f"server {self.owner.target_label} refused remote forward {self.key} (listen {host or '*'}:{requested_port})",
                advice="the server's AllowTcpForwarding must be yes or remote, PermitListen must allow the address and port, and "
                "DisableForwarding must be off; or the port is already in use on the server (for instance still held by a previous "
                f"session until sshd's ClientAliveInterval evicts it). {SSHD_FORWARDING_HINT}",
            )
        port = response.get_int() if requested_port == 0 else requested_port
        self.warnings = []
        # Every granted request is measured: sshd's GatewayPorts may bind loopback or every address, whatever was asked.
        self.bound = Endpoint(host=host, port=port)
        bound_host = verify_remote_bind(self, transport, host, port, self.owner.allow_non_loopback_bind)
        self.bound = Endpoint(host=bound_host, port=port)
        self.active = True

    def _request_remote_unix(self, transport: t.Any, path: str) -> None:
        """ssh -R /path/on/server:destination: streamlocal-forward@openssh.com; channels come back by socket path."""
        answered, response = transport.request(STREAMLOCAL_FORWARD, (path,), timeout=self.owner.connect_timeout)
        if answered and response is not None:
            self.warnings = []
            self.bound = Endpoint(path=path)
            self.active = True
            return
        if not answered:
            raise ConnectionLost(f"{self.owner.target_label}: no answer to the remote Unix socket forward request for {self.key}")
        raise ForwardRefused(
            f"server {self.owner.target_label} refused remote forward {self.key}: sshd would not listen on the Unix socket {path}",
            advice="the server's AllowStreamLocalForwarding must be yes or remote and DisableForwarding off; the directory of the path "
            "must exist and be writable by the login user; and when the socket file already exists (left by an earlier session, "
            "for instance before a reconnect) sshd binds it again only with StreamLocalBindUnlink yes (set it in sshd_config; "
            "burrow.ssh.sshd_forwarding sets AllowStreamLocalForwarding)",
        )

    def handle_remote_channel(self, channel: t.Any) -> None:
        if not self._admitted(channel):
            return
        destination = self.forward.destination
        leftover = b""
        try:
            if destination is None:
                channel.settimeout(SOCKS_HANDSHAKE_TIMEOUT)
                request = socks.negotiate(channel, credentials=self._socks_credentials())
                channel.settimeout(None)
                target = Endpoint(host=request.host, port=request.port)
            else:
                request = None
                target = destination
            audit.note_destination(target)
            try:
                sock = self.connect_destination(target)
            except TunnelError:
                if request is not None:
                    with contextlib.suppress(Exception):
                        socks.reply_failure(channel, request, socks.REPLY_CONNECTION_REFUSED)
                raise
            if request is not None:
                socks.reply_success(channel, request)
                leftover = request.leftover
        except (TunnelError, socks.SocksError, OSError) as exc:
            self.counters.failed(str(getattr(exc, "reason", exc)))
            LOG.warning("%s", exc)
            channel.close()
            self.counters.closed(0, 0)
            return
        if leftover:
            with contextlib.suppress(OSError):
                sock.sendall(leftover)
        # For a remote forward the SSH channel is the client side and the socket is the destination.
        relay(channel, sock, self.counters)

    def connect_destination(self, target: Endpoint) -> socket.socket:
        """A connection from this side to a remote forward's destination; TunnelError naming it when it is down."""
        try:
            if target.is_unix():
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(self.owner.connect_timeout)
                    sock.connect(str(target.path))
                except OSError:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection((str(target.host), int(target.port or 0)), timeout=self.owner.connect_timeout)
                tune_socket(sock)
            sock.settimeout(None)
        except OSError as exc:
            raise TunnelError(
                f"{self.key}: cannot connect to {target}: {exc.strerror or exc}",
                advice="the destination of a remote forward is reached from the side that runs the tunnel; is it up there?",
            ) from exc
        return sock

    def cancel_remote(self, transport: t.Any) -> None:
        if self.bound is None or not transport.is_active():
            return
        listen = self.forward.listen
        if listen.is_unix():
            transport.request(CANCEL_STREAMLOCAL_FORWARD, (str(listen.path),), timeout=5)
            return
        # Not paramiko's cancel_port_forward: it also drops the handler of every sibling remote forward.
        transport.request("cancel-tcpip-forward", (listen.host or "", int(self.bound.port or 0)), timeout=5)

    def stop_listening(self) -> None:
        for listener in [self.listener, *self.extra_listeners]:
            if listener is not None:
                listener.close()

    def close(self) -> None:
        self.active = False
        self.stop_listening()
        self.listener = None
        self.extra_listeners = []

    def status(self) -> dict[str, t.Any]:
        data = self.forward.public_dict()
        data.update(
            {
                "key": self.key,
                "active": self.active,
                "bound_host": self.bound.host if self.bound else None,
                "bound_port": self.bound.port if self.bound else None,
                "bound_path": self.bound.path if self.bound else None,
                # Every address listened on: 127.0.0.1 and ::1 for localhost and the default bind.
                "bound_hosts": self.bound_hosts or ([self.bound.host] if self.bound and self.bound.host is not None else []),
                "warnings": list(self.warnings),
            }
        )
        data.update(self.counters.as_dict())
        return data
