# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""One supervised tunnel: its own SSH connection, its forwards, liveness and reconnection.

Usable in-process (tests, benchmarks) and inside the detached tunnel process (process/daemon.py). The forwards
themselves live in a ForwardSet, which the connection plugin's broker also attaches to chains it owns.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import ConnectionLost, ForwardRefused, NotSupported, RemotePortHeld, TunnelError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.forward_set import ForwardSet
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.forwards import ForwardRuntime
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.relay import configure_threads, start_thread
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import (
    DEFAULT_KEEPALIVE_COUNT_MAX,
    DEFAULT_KEEPALIVE_INTERVAL,
    Endpoint,
    Forward,
    Tunnel,
)
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.chain import Chain, ChainBuilder, compression_warning
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import HAS_PARAMIKO

LOG = logging.getLogger("burrow.tunnel")
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 30.0
# After cutting the connections left at the end of the drain time, how long their relays get to finish.
CUT_GRACE = 2.0
# After a reconnect, how long a remote forward refused by the server is retried: our earlier, half-dead session may
# still hold its port. sshd drops such a session after ClientAliveInterval x ClientAliveCountMax (CountMax defaults to
# 3); 300 s covers intervals up to 100 s. With ClientAlive off only TCP keepalive evicts it (hours): the tunnel then
# goes down with advice to set ClientAliveInterval. Documented in docs/reliability.md.
HELD_PORT_WAIT = 300.0
HELD_PORT_BACKOFF_MAX = 10.0


def _held_name(runtime: t.Any) -> str:
    """A refused remote listener as the messages name it: its port, or its socket path on the server."""
    bound = runtime.bound
    if bound is not None and bound.path:
        return f"socket {bound.path}"
    return f"port {bound.port if bound is not None else '?'}"


class TunnelEngine:
    """The running tunnel: connect, bind every forward (all or nothing), watch liveness, reconnect."""

    def __init__(self, tunnel: Tunnel, builder: ChainBuilder | None = None) -> None:
        if not HAS_PARAMIKO:
            raise NotSupported("paramiko is not installed", advice="install paramiko >= 3.4 where the tunnel runs")
        configure_threads()
        self.tunnel = tunnel
        self.builder = builder if builder is not None else ChainBuilder(connect_timeout=tunnel.connect_timeout)
        self.forward_set = ForwardSet(tunnel.hops[-1].label(), tunnel.effective_connect_timeout, tunnel.allow_non_loopback_bind, tunnel.max_connections)
        self.state = "starting"
        self.reconnects = 0
        self.last_error: TunnelError | None = None
        self.warnings: list[str] = []
        self.started_at = time.time()  # shown to users; every duration below is measured on the monotonic clock
        self.started_monotonic = time.monotonic()
        # Idle is counted from the latest of: the start, the last connection opened, closed or failed on any forward,
        # and the last `state: present` that found the tunnel unchanged (touch), so a declared tunnel is not idle between plays.
        self.touched_at = self.started_monotonic
        self.connected_at = 0.0
        self.cut_connections = 0
        self.held_port_wait = HELD_PORT_WAIT
        self.stopping = threading.Event()
        # Set by stop() and by the end of any transport of the chain: a session the server dropped is noticed at once,
        # not at the next keepalive (5 s by default), which is how long the forwards would refuse every connection.
        self._wake = threading.Event()
        self._lock = self.forward_set.lock
        self._supervisor: threading.Thread | None = None

    @property
    def target_label(self) -> str:
        return self.forward_set.target_label

    @property
    def chain(self) -> Chain | None:
        return self.forward_set.chain

    @property
    def forwards(self) -> dict[str, ForwardRuntime]:
        return self.forward_set.forwards

    @property
    def connected(self) -> threading.Event:
        return self.forward_set.connected

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect and establish every forward; on any failure nothing is left bound. Raises TunnelError."""
        try:
            self._connect()
            for forward in self.tunnel.forwards:
                self.forward_set.add(forward)
        except BaseException:
            self._teardown()
            raise
        self.state = "up"
        self._supervisor = start_thread(self._supervise, name="burrow-supervisor")

    def _connect(self) -> None:
        chain, warnings = self.builder.open(self.tunnel.hops)
        compressed = [hop.label() for hop in chain.hops if hop.compression]
        if compressed and self.tunnel.forwards:
            warnings = [*warnings, compression_warning(compressed)]
        with self._lock:
            self.warnings = warnings
            self.connected_at = time.monotonic()
        self.forward_set.attach(chain)
        for transport in chain.transports:
            transport.on_end(self._wake.set)
        LOG.info("connected to %s through %d hop(s)", self.target_label, len(chain.transports) - 1)

    def stop(self, deadline: float = 10.0) -> int:
        """Stop accepting, let active connections drain until the deadline, then cut the rest and close everything.

        Returns how many connections were cut. They are reset (RST), not closed, so that no client takes a cut
        transfer for a complete one.
        """
        self.stopping.set()
        self._wake.set()
        self.state = "stopping"
        self.forward_set.stop_accepting()
        end = time.monotonic() + max(0.0, deadline)
        while time.monotonic() < end and self.forward_set.connections_active():
            time.sleep(0.05)
        cut = self.forward_set.reset_connections()
        if cut:
            LOG.warning("cut %d connection(s) still active after the drain time of %g s", cut, deadline)
            end = time.monotonic() + CUT_GRACE
            while time.monotonic() < end and self.forward_set.connections_active():
                time.sleep(0.05)
        self.cut_connections = cut
        self._teardown()
        self.state = "stopped"
        return cut

    def _teardown(self) -> None:
        chain = self.chain
        self.forward_set.close()
        if chain is not None:
            chain.close()

    def open_channel(self, destination: Endpoint, origin: tuple[str, int]) -> t.Any:
        return self.forward_set.open_channel(destination, origin)

    # -- supervision -------------------------------------------------------------------------------
    def liveness(self) -> tuple[float, int]:
        """Keepalive interval and count: the tunnel's when declared, else the target's ServerAlive* from the ssh_config."""
        target = self.chain.hops[-1] if self.chain is not None else self.tunnel.hops[-1]
        interval = self.tunnel.keepalive_interval or target.server_alive_interval or DEFAULT_KEEPALIVE_INTERVAL
        count_max = self.tunnel.keepalive_count_max or target.server_alive_count_max or DEFAULT_KEEPALIVE_COUNT_MAX
        return float(interval), int(count_max)

    def _supervise(self) -> None:
        # Liveness budget: keepalive_count_max unanswered want-reply requests, keepalive_interval each. Each keepalive
        # is sent without waiting and checked one interval later: one wake-up per interval (idle CPU, tests/scale).
        interval, count_max = self.liveness()
        misses = 0
        in_flight: int | None = None  # request number of the last keepalive sent on the current chain
        due = time.monotonic() + interval
        while not self._pause(due - time.monotonic()):
            chain = self.chain
            active = chain is not None and chain.is_active()
            if active and time.monotonic() < due:
                continue  # woken by the end of a transport of an earlier chain
            due = time.monotonic() + interval
            if active:
                target = chain.target
                if in_flight is not None and not target.answered(in_flight):
                    misses += 1
                else:
                    misses = 0
                if misses < count_max:
                    in_flight = target.send_keepalive()
                    continue
                reason = f"no answer from {self.target_label} to {misses} keepalive request(s) within {misses * interval:g} s"
            else:
                reason = f"the SSH connection to {self.target_label} closed"
            if self.stopping.is_set():
                return
            in_flight = None
            misses = 0
            self._connection_lost(ConnectionLost(reason))
            if not self.tunnel.reconnect or not self._reconnect():
                return
            due = time.monotonic() + interval

    def _pause(self, seconds: float) -> bool:
        """Wait one keepalive interval, less when woken (see _wake); True when the tunnel is stopping."""
        self._wake.wait(seconds)
        self._wake.clear()
        return self.stopping.is_set()

    def _connection_lost(self, error: TunnelError) -> None:
        LOG.warning("%s", error)
        with self._lock:
            self.forward_set.detach()
            self.last_error = error
            self.state = "reconnecting" if self.tunnel.reconnect else "down"
            if self.chain is not None:
                self.chain.close()

    def _reconnect(self) -> bool:
        delay = BACKOFF_INITIAL
        while not self.stopping.is_set():
            try:
                self._connect()
                held = self.forward_set.rerequest_remote()
                if held and not self._wait_for_held_ports(held):
                    return not self.stopping.is_set() and self.state != "down"
                with self._lock:
                    self.reconnects += 1
                    self.state = "up"
                LOG.info("reconnected to %s (reconnect #%d)", self.target_label, self.reconnects)
                return True
            except TunnelError as exc:
                self.last_error = exc
                self.forward_set.detach()
                if self.chain is not None:
                    self.chain.close()
                if exc.permanent:
                    LOG.error("giving up: %s", exc)
                    self.state = "down"
                    for runtime in self.forwards.values():
                        runtime.close()
                    return False
                LOG.warning("reconnect failed, next try in %.1f s: %s", delay, exc)
            if self.stopping.wait(delay):
                return False
            delay = min(delay * 2, BACKOFF_MAX)
        return False

    def _wait_for_held_ports(self, held: list[ForwardRuntime]) -> bool:
        """Retry remote forwards whose port an earlier session still holds, on the new connection, with backoff.

        The other forwards are up meanwhile (the chain is attached); the status is ``reconnecting``. True once every
        port is back; False when the connection dropped again (the caller reconnects) or the wait ran out (down).
        """
        give_up = time.monotonic() + self.held_port_wait
        delay = BACKOFF_INITIAL
        while held:
            ports = ", ".join(_held_name(runtime) for runtime in held)
            sockets = any(runtime.forward.listen.is_unix() for runtime in held)
            error = RemotePortHeld(
                f"remote {ports} still held by an earlier session on {self.target_label}",
                advice="the server keeps a half-dead session's listeners until its ClientAliveInterval x ClientAliveCountMax "
                f"evicts it; retrying for up to {self.held_port_wait:g} s while the other forwards stay up"
                + ("; a Unix socket file left by an earlier session is bound again only with sshd's StreamLocalBindUnlink yes" if sockets else ""),
            )
            with self._lock:
                self.last_error = error
                self.state = "reconnecting"
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                final = ForwardRefused(
                    f"server {self.target_label} still refused remote {ports} after {self.held_port_wait:g} s of retries since the reconnect",
                    advice="an earlier session may still hold it: set sshd's ClientAliveInterval (and ClientAliveCountMax) so half-dead "
                    "sessions are evicted sooner, or stop what holds the port on the server; then run the task again"
                    + ("; for a Unix socket path set sshd's StreamLocalBindUnlink yes so a file left behind is replaced" if sockets else ""),
                )
                LOG.error("giving up: %s", final)
                with self._lock:
                    self.last_error = final
                    self.state = "down"
                self.forward_set.detach()
                self._teardown()
                return False
            LOG.warning("%s; next try in %.1f s", error, min(delay, remaining))
            if self.stopping.wait(min(delay, remaining)):
                return False
            delay = min(delay * 2, HELD_PORT_BACKOFF_MAX)
            chain = self.chain
            if chain is None or not chain.is_active():
                self._connection_lost(ConnectionLost(f"the SSH connection to {self.target_label} closed while waiting for remote port {ports}"))
                return False
            try:
                held = self.forward_set.rerequest_remote(held)
            except TunnelError as exc:
                self._connection_lost(exc)
                return False
        return True

    # -- live changes and reports ---------------------------------------------------------------------
    def apply(self, forwards: t.Sequence[Forward]) -> dict[str, list[str]]:
        """Replace only the forwards that changed; connections on the others are untouched."""
        return self.forward_set.apply(forwards)

    def connection_details(self) -> dict[str, t.Any]:
        """The hop chain as connected (after ssh_config) and the cipher the target negotiated: what -v shows."""
        chain = self.chain
        if chain is None:
            return {"hops": [hop.label() for hop in self.tunnel.hops], "cipher": None}
        target = chain.target if chain.transports else None
        cipher = getattr(target, "remote_cipher", None) if target is not None else None
        return {"hops": [hop.label() for hop in chain.hops], "cipher": cipher or None}

    def status(self) -> dict[str, t.Any]:
        with self._lock:
            runtimes = list(self.forwards.values())
            return {
                **self.connection_details(),
                "name": self.tunnel.name,
                "status": self.state,
                "reconnects": self.reconnects,
                "last_error": self.last_error.to_dict() if self.last_error else None,
                "started_at": self.started_at,
                "uptime": round(time.monotonic() - self.connected_at, 3) if self.connected.is_set() else 0,
                "forwards": self.forward_set.status(),
                "warnings": list(self.warnings) + self.forward_set.warnings(),
                "idle_seconds": self.idle_seconds(runtimes),
                "connections_active": sum(r.counters.connections_active for r in runtimes),
                "audit": self.forward_set.audit.summary() if self.forward_set.audit is not None else None,
            }

    def idle_seconds(self, runtimes: list[ForwardRuntime] | None = None) -> float:
        """Seconds since the last activity (monotonic): start, touch, or any connection opened, closed or failed."""
        if runtimes is None:
            with self._lock:
                runtimes = list(self.forwards.values())
        latest = max([self.touched_at, *(r.counters.last_activity for r in runtimes)])
        return round(max(0.0, time.monotonic() - latest), 3)

    def touch(self) -> None:
        """A `state: present` found this tunnel as declared: it is in use, restart the idle count."""
        self.touched_at = time.monotonic()

    def probe(self, timeout: float | None = None) -> list[dict[str, t.Any]]:
        return self.forward_set.probe(timeout)
