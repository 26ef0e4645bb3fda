# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""A set of forwards on one hop chain: added and applied all or nothing, dispatched, cut, probed.

The chain may be owned by someone else: the tunnel engine attaches its own (and a new one after each reconnect),
the connection plugin's broker attaches the chain of a host's session.
"""

from __future__ import annotations

import contextlib
import threading
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel import audit
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import (
    SSHD_FORWARDING_HINT,
    ConnectionLost,
    ForwardRefused,
    TunnelError,
)

# Imported at load time like everything the tunnel process runs (the module payload is gone once it has forked).
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.forward_probes import probe_forwards
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.forwards import ForwardRuntime
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.relay import (
    start_thread,
)
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Endpoint, Forward
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.chain import Chain
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import (
    OPEN_FAILURE_REASONS,
    paramiko,
)

# Four times the 1000 concurrent connections the load test and the benchmark carry through one forward (connections
# still closing count as active), and below the open-file limit the tunnel process raises itself to (process/daemon.py),
# so the cap, not EMFILE in accept(), is what a local user who floods a listener meets.
DEFAULT_MAX_CONNECTIONS = 4096
# How long a forwarded connection waits for the server to answer its channel open. ssh waits without a bound; a burst
# of 1000 opens queued behind each other on a busy machine outlasted connect_timeout (5 s) and reset the last clients.
# Liveness is the keepalive's job, and a transport that dies ends the wait at once; this bound only covers a server that
# never answers, and is about as long as sshd's own connect to a destination that drops SYNs (tcp_syn_retries 6).
CHANNEL_OPEN_TIMEOUT = 130.0


class ForwardSet:
    """Forwards on one hop chain: listeners, remote listeners, SOCKS and their relays, all or nothing.

    The chain may be owned by someone else: the tunnel engine attaches its own (and a new one after each reconnect),
    the connection plugin's broker attaches the chain of a host's session. Liveness and reconnection belong to the
    owner of the chain; a detached set keeps its local listeners and refuses new channels until it is attached again.
    """

    def __init__(self, target_label: str, connect_timeout: float, allow_non_loopback_bind: bool = False, max_connections: int | None = None) -> None:
        self.target_label = target_label
        # Per listener: a local user who opens and stalls connections cannot take the listener from everyone else.
        self.max_connections = max_connections if max_connections is not None else DEFAULT_MAX_CONNECTIONS
        self.connect_timeout = float(connect_timeout)
        # The bind policy for what the server really binds (remote_bind.py): an exposure of a loopback request fails unless allowed.
        self.allow_non_loopback_bind = allow_non_loopback_bind
        self.chain: Chain | None = None
        self.forwards: dict[str, ForwardRuntime] = {}
        self.connected = threading.Event()
        self.lock = threading.RLock()
        self._probes: dict[int, threading.Event] = {}
        self.audit: audit.AuditTrail | None = None  # set by the tunnel process: who used each forward (audit.py)

    # -- the chain ----------------------------------------------------------------------------------
    def attach(self, chain: Chain) -> None:
        """Carry the forwards on ``chain``: remote-forward channels of its target are dispatched here."""
        chain.target._tcp_handler = self._dispatch_remote
        chain.target.streamlocal_handler = self._dispatch_streamlocal
        with self.lock:
            self.chain = chain
        self.connected.set()

    def detach(self) -> None:
        """The chain went away: remote listeners are gone with it, new local connections wait or fail."""
        with self.lock:
            self.connected.clear()
            for runtime in self.forwards.values():
                if runtime.forward.kind == "remote":
                    runtime.active = False

    def transport(self) -> t.Any:
        chain = self.chain
        if chain is None or not chain.is_active():
            raise ConnectionLost(f"the SSH connection to {self.target_label} is down")
        return chain.target

    # -- forwards ------------------------------------------------------------------------------------
    def add(self, forward: Forward) -> ForwardRuntime:
        runtime = ForwardRuntime(forward, self)
        if forward.kind == "remote":
            runtime.request_remote(self.transport())
        else:
            runtime.bind_local()
        with self.lock:
            self.forwards[runtime.key] = runtime
        return runtime

    def rerequest_remote(self, only: t.Sequence[ForwardRuntime] | None = None) -> list[ForwardRuntime]:
        """After a reconnect: ask the new session for every remote listener (or those in ``only``) again.

        Returns the forwards the server refused although it granted them before: their port may still be held by our
        earlier session (the caller retries them). Any other failure raises.
        """
        refused: list[ForwardRuntime] = []
        candidates = list(self.forwards.values()) if only is None else list(only)
        for runtime in candidates:
            if runtime.forward.kind != "remote":
                continue
            try:
                runtime.request_remote(self.transport())
            except ForwardRefused:
                if runtime.bound is None:
                    raise
                refused.append(runtime)
        return refused

    def _remove(self, runtime: ForwardRuntime) -> None:
        chain = self.chain
        if runtime.forward.kind == "remote" and chain is not None and chain.is_active():
            with contextlib.suppress(Exception):
                runtime.cancel_remote(chain.target)
        runtime.close()

    def apply(self, forwards: t.Sequence[Forward]) -> dict[str, list[str]]:
        """Replace only the forwards that changed; connections on the others are untouched."""
        wanted = {forward.key(): forward for forward in forwards}
        with self.lock:
            removed = [key for key in self.forwards if key not in wanted]
            added = [key for key in wanted if key not in self.forwards]
            for key in removed:
                self._remove(self.forwards.pop(key))
            for key, runtime in self.forwards.items():
                runtime.forward = wanted[key]  # same listener and destination; a changed probe applies at once
            created: list[ForwardRuntime] = []
            try:
                for key in added:
                    created.append(self.add(wanted[key]))
            except BaseException:
                for runtime in created:
                    self.forwards.pop(runtime.key, None)
                    self._remove(runtime)
                raise
            # Keep the declared order so reports list forwards as the user wrote them.
            self.forwards = {key: self.forwards[key] for key in wanted if key in self.forwards}
        return {"added": added, "removed": removed}

    def stop_accepting(self) -> None:
        for runtime in list(self.forwards.values()):
            runtime.stop_listening()

    def reset_connections(self) -> int:
        """Cut every relayed connection still running (RST to sockets, CLOSE without EOF to channels); how many were cut."""
        cut = 0
        for runtime in list(self.forwards.values()):
            with runtime.counters._lock:
                live = list(runtime.counters.live)
            for connection in live:
                connection.reset()
                cut += 1
        return cut

    def connections_active(self) -> int:
        return sum(runtime.counters.connections_active for runtime in list(self.forwards.values()))

    def close(self) -> None:
        """Cancel remote listeners while the chain still carries them, close every listener; the chain stays open.

        The runtimes stay listed (inactive), so a stopped tunnel still reports what it was bound to.
        """
        with self.lock:
            runtimes = list(self.forwards.values())
        for runtime in runtimes:
            self._remove(runtime)
        self.connected.clear()

    def status(self) -> list[dict[str, t.Any]]:
        with self.lock:
            return [runtime.status() for runtime in self.forwards.values()]

    def warnings(self) -> list[str]:
        with self.lock:
            return [warning for runtime in self.forwards.values() for warning in runtime.warnings]

    # -- channels ------------------------------------------------------------------------------------
    def open_channel(self, destination: Endpoint, origin: tuple[str, int], timeout: float = CHANNEL_OPEN_TIMEOUT) -> t.Any:
        """A channel to ``destination``; ``timeout`` bounds the server's answer (the transport's death ends it sooner)."""
        if not self.connected.wait(self.connect_timeout) or self.chain is None:
            raise ConnectionLost(f"tunnel is reconnecting to {self.target_label}; connection not forwarded")
        transport = self.chain.target
        audit.note_destination(destination)
        try:
            if destination.is_unix():
                return transport.open_streamlocal(str(destination.path), timeout=timeout)
            return transport.open_channel("direct-tcpip", (str(destination.host), int(destination.port or 0)), origin, timeout=timeout)
        except paramiko.ChannelException as exc:
            reason = OPEN_FAILURE_REASONS.get(exc.code, exc.text)
            if exc.code == 1:
                raise ForwardRefused(
                    f"server {self.target_label} refused to open a channel to {destination}: {reason}",
                    advice="sshd's AllowTcpForwarding (yes or local), PermitOpen, AllowStreamLocalForwarding (for sockets) or DisableForwarding "
                    f"forbid it, or the key's permitopen option does; {SSHD_FORWARDING_HINT}",
                ) from exc
            raise TunnelError(f"server {self.target_label} could not connect to {destination}: {reason}", advice="is the destination up?") from exc
        except paramiko.SSHException as exc:
            raise ConnectionLost(f"cannot open a channel to {destination} through {self.target_label}: {exc}") from exc

    def expect_probe(self, port: int) -> threading.Event:
        event = threading.Event()
        self._probes[port] = event
        return event

    def cancel_probe(self, port: int) -> None:
        self._probes.pop(port, None)

    def _dispatch_remote(self, channel: t.Any, origin: tuple[str, int], server: tuple[str, int]) -> None:
        # Called on paramiko's transport thread: hand off at once.
        server_addr, server_port = server
        probe = self._probes.pop(int(server_port), None)
        if probe is not None:
            channel.close()
            probe.set()
            return
        runtime = None
        for candidate in list(self.forwards.values()):
            if candidate.forward.kind == "remote" and candidate.bound is not None and candidate.bound.port == server_port:
                runtime = candidate
                if (candidate.forward.listen.host or "") == server_addr:
                    break
        if runtime is None:
            channel.close()
            return
        try:
            handler = audit.wrap_handler(self.audit, runtime.key, runtime.forward.destination, runtime.handle_remote_channel, origin=origin)
            start_thread(handler, channel, name="burrow-remote")
        except RuntimeError:
            channel.close()

    def _dispatch_streamlocal(self, channel: t.Any, path: str) -> None:
        # Called on paramiko's transport thread: hand off at once.
        for runtime in list(self.forwards.values()):
            if runtime.forward.kind == "remote" and runtime.bound is not None and runtime.bound.path == path:
                try:
                    start_thread(runtime.handle_remote_channel, channel, name="burrow-remote")
                except RuntimeError:
                    channel.close()
                return
        channel.close()

    def probe(self, timeout: float | None = None) -> list[dict[str, t.Any]]:
        """Each forward's probe (declared, else the TCP-level check), all at once: see forward_probes.py."""
        return probe_forwards(self, timeout)
