# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The controller-side session broker of the burrow.ssh.tunneled connection plugin (like OpenSSH's ControlPersist).

Ansible runs each task in a new worker process, so a connection plugin's own objects die after every task.
The broker is one detached process per controller user that holds the authenticated SSH transports:

* keyed by hop chain prefix, so hosts behind the same bastion share the bastion's transport;
* closed after an idle timeout, or as soon as every ansible-playbook process that used them has exited, or, with
  burrow_persist, that many seconds later (never handed out within persist_margin() of that expiry: a new one is opened);
* reached over a Unix socket (0600, in a 0700 directory, peer uid checked), which is the only way secrets
  travel: never argv, environment, files or logs.

Workers talk to it through client.py (the wire format is protocol.py) and send their raw connection options; the
broker validates them (session.py) and keeps the result for the next task. The hop chains are built by the engine's
ChainBuilder and the forwards carried by a connection are the engine's ForwardSet, attached to the host's chain.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import socket
import struct
import threading
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.audit import open_trail
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import (
    ConnectionLost,
    ControlError,
    RemoteFileNotFound,
    TransferFailed,
    TunnelError,
)
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.forward_set import ForwardSet
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.private_socket import listen_private_unix
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.chain import Chain, ChainBuilder, compression_warning
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.config import SshConfig
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import paramiko
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.agent import request_agent_forwarding
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.nodes import Node, owner_alive, persist_margin
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.paths import BrokerPaths
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.protocol import (
    KIND_JSON,
    READ_SIZE,
    recv_frame,
    send_json,
)
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.session import (
    DEFAULT_IDLE_TIMEOUT,
    Session,
    build_session,
    connection_audit_sink,
    parse_connection_forwards,
)
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.stream import pump

REAP_INTERVAL = 0.5
MAX_CACHED_SESSIONS = 4096

LOG = logging.getLogger("burrow.broker")
# Sessions arrive with their hops already resolved through ssh_config (session.py): extending a chain reads none.
NO_SSH_CONFIG = SshConfig(None)


class Broker:
    def __init__(self, paths: BrokerPaths) -> None:
        self.paths = paths
        self.nodes: dict[str, Node] = {}
        self.lock = threading.RLock()
        self.key_locks: dict[str, threading.Lock] = {}
        self.salt = os.urandom(32)
        self.handshakes = 0
        self.requests = 0
        self.active = 0
        self.owners: set[tuple[int, int]] = set()
        self.last_request = time.monotonic()
        self.max_idle = DEFAULT_IDLE_TIMEOUT
        self.stopping = threading.Event()
        self.server: socket.socket | None = None
        self.sessions: dict[str, Session] = {}
        # Persisted nodes taken out of service near their expiry, closed once idle (their replacements have their keys).
        self.retired: list[Node] = []

    # -- sessions ------------------------------------------------------------------------------------------
    def session(self, request: dict[str, t.Any]) -> Session:
        """The request's connection options as a validated Session, parsed once per distinct set of options."""
        options = request.get("options")
        if not isinstance(options, dict):
            raise ControlError("the request carries no connection options")
        digest = hmac.new(self.salt, json.dumps(options, sort_keys=True, default=str).encode("utf-8"), hashlib.sha256).hexdigest()
        with self.lock:
            cached = self.sessions.get(digest)
        if cached is not None:
            return cached
        session = build_session(options)
        with self.lock:
            if len(self.sessions) >= MAX_CACHED_SESSIONS:
                self.sessions.clear()
            self.sessions[digest] = session
        return session

    def _hop_key(self, previous: str, hop_data: dict[str, t.Any], name: str | None = None) -> str:
        # Secrets are part of the identity (other credentials, other session) but only as an HMAC with a per-process salt.
        material = previous + "|" + json.dumps(hop_data, sort_keys=True, default=str) + "|" + (name or "")
        return hmac.new(self.salt, material.encode("utf-8"), hashlib.sha256).hexdigest()

    def _key_lock(self, key: str) -> threading.Lock:
        with self.lock:
            return self.key_locks.setdefault(key, threading.Lock())

    def acquire(self, session: Session) -> tuple[Node, list[str], bool]:
        """The target node of this hop chain: reused when alive, otherwise connected through reused ancestors."""
        owner = session.owner
        if owner is not None:
            with self.lock:
                self.owners.add(owner)
        with self.lock:
            self.max_idle = max(self.max_idle, session.idle_timeout)
        warnings: list[str] = []
        parent: Node | None = None
        reused = True
        for hop, key in zip(session.hops, self.chain_keys(session)):
            with self._key_lock(key):
                with self.lock:
                    node = self.nodes.get(key)
                if node is not None and not node.transport.is_active():
                    LOG.info("session to %s is dead, reconnecting", node.label)
                    self.close_node(node)
                    node = None
                if node is not None and node.near_expiry(time.monotonic()):
                    # ansible/ansible#81777: a session about to expire is not handed out; a new one takes its place.
                    LOG.info(
                        "not reusing the session to %s: it expires in %.1f s (margin %g s); opening a new one",
                        node.label,
                        node.expires_in(time.monotonic()) or 0.0,
                        persist_margin(node.persist),
                    )
                    self.retire(node)
                    node = None
                if node is None:
                    reused = False
                    node = self._connect(key, hop, parent, session.connect_timeout, warnings)
                with self.lock:  # against reap() marking it orphaned meanwhile
                    node.touch(owner, session.idle_timeout, session.persist)
            parent = node
        if parent is None:
            raise ControlError("no hops given to the session broker")
        return parent, warnings, reused

    def _connect(self, key: str, hop: t.Any, parent: Node | None, timeout: float, warnings: list[str]) -> Node:
        previous = (parent.transport, parent.hop) if parent is not None else None
        transport, hop_warnings = ChainBuilder(connect_timeout=timeout, ssh_config=NO_SSH_CONFIG).extend(previous, hop)
        warnings.extend(hop_warnings)
        if hop.server_alive_interval:
            # ServerAliveInterval of this host: keep idle sessions (and NAT state on the way) alive between tasks.
            transport.set_keepalive(int(hop.server_alive_interval))
        node = Node(key, hop, transport, parent)
        with self.lock:
            self.nodes[key] = node
            self.handshakes += 1
            if parent is not None:
                parent.children.add(node)
        LOG.info("connected to %s%s", hop.label(), f" through {parent.label}" if parent is not None else "")
        return node

    def close_node(self, node: Node) -> None:
        with self.lock:
            if node.closed:
                return
            node.closed = True
            if self.nodes.get(node.key) is node:
                del self.nodes[node.key]
            if node in self.retired:
                self.retired.remove(node)
            children = list(node.children)
            if node.parent is not None:
                node.parent.children.discard(node)
        for child in children:
            self.close_node(child)
        if node.forwards is not None:
            with contextlib.suppress(Exception):
                node.forwards.close()
            if node.forwards.audit is not None:
                node.forwards.audit.close()
        if node.sftp is not None:
            with contextlib.suppress(Exception):
                node.sftp.close()
        with contextlib.suppress(Exception):
            node.transport.close()
        LOG.info("closed the session to %s", node.label)

    def retire(self, node: Node) -> None:
        """Take a node and the nodes behind it out of service; close them now when idle, else once they are (reap)."""
        with self.lock:
            subtree = [node]
            for item in subtree:
                subtree.extend(item.children)
            for item in subtree:
                if self.nodes.get(item.key) is item:
                    del self.nodes[item.key]
            self.retired.append(node)
        if not self._in_use(subtree):
            self.close_node(node)

    def _in_use(self, nodes: list[Node]) -> bool:
        return any(item.busy or item.forward_connections() for item in nodes if not item.closed)

    def chain_keys(self, session: Session) -> list[str]:
        """The node key of each hop: a prefix of the chain, so hosts behind the same bastion share its node."""
        keys: list[str] = []
        last = len(session.hops) - 1
        for index, hop in enumerate(session.hops):
            keys.append(self._hop_key(keys[-1] if keys else "", dataclasses.asdict(hop), session.name if index == last else None))
        return keys

    # -- operations ------------------------------------------------------------------------------------------
    def op_status(self, _conn: socket.socket, _request: dict[str, t.Any]) -> dict[str, t.Any]:
        with self.lock:
            nodes = [
                {
                    "hop": node.label,
                    "via": node.parent.label if node.parent else None,
                    "uses": node.uses,
                    "busy": node.busy,
                    "idle_seconds": round(time.monotonic() - node.last_used, 3),
                    "idle_timeout": node.idle_timeout,
                    "persist": node.persist,
                    "expires_in": None if expires is None else round(expires, 3),
                    "persist_margin": persist_margin(node.persist) if node.persist else None,
                    "forwards": node.forwards.status() if node.forwards is not None else [],
                }
                for node in self.nodes.values()
                for expires in (node.expires_in(time.monotonic()),)
            ]
            retired = len(self.retired)
        return {"ok": True, "pid": os.getpid(), "handshakes": self.handshakes, "requests": self.requests, "sessions": nodes, "retired": retired}

    def op_open(self, _conn: socket.socket, request: dict[str, t.Any]) -> dict[str, t.Any]:
        session = self.session(request)
        declared = request.get("forwards")
        # Parsed before connecting: a bad declaration fails the task before any handshake.
        wanted, policy_warnings = (None, []) if declared is None else parse_connection_forwards(declared)
        sink = "none" if declared is None else connection_audit_sink(declared)
        node, warnings, reused = self.acquire(session)
        warnings = [*policy_warnings, *warnings]
        forwards: list[dict[str, t.Any]] = []
        if wanted is not None:
            forwards = self._ensure_forwards(node, wanted, session, bool(declared.get("allow_non_loopback_bind")), sink)
            warnings.extend(w for f in forwards for w in f.get("warnings", []))
            compressed = [hop.label() for hop in session.hops if hop.compression]
            if forwards and compressed:
                warnings.append(compression_warning(compressed))
        node.uses += 1
        return {"ok": True, "reused": reused, "warnings": warnings, "handshakes": self.handshakes, "forwards": forwards, "label": session.label}

    def _ensure_forwards(self, node: Node, wanted: list[t.Any], session: Session, allow_non_loopback_bind: bool, sink: str) -> list[dict[str, t.Any]]:
        with node.forwards_lock:
            if node.forwards is None:
                if not wanted:
                    return []
                # No supervisor and no reconnect here: a dead session is dropped with its forwards, and the next task
                # opens a new one, forwards included.
                nodes = node.chain()
                trail = open_trail(session.name, sink, self.paths.connection_audit(session.name))
                node.forwards = ForwardSet(node.label, session.effective_connect_timeout)
                node.forwards.audit = trail
                node.forwards.attach(Chain(hops=tuple(item.hop for item in nodes), transports=[item.transport for item in nodes]))
            # What the server really binds is checked against the same policy as the declaration (remote_bind.py).
            node.forwards.allow_non_loopback_bind = allow_non_loopback_bind
            node.forwards.apply(wanted)
            return node.forwards.status()

    def op_reset(self, _conn: socket.socket, request: dict[str, t.Any]) -> dict[str, t.Any]:
        key = self.chain_keys(self.session(request))[-1]
        with self.lock:
            node = self.nodes.get(key)
        if node is not None:
            self.close_node(node)
        return {"ok": True, "closed": node is not None}

    def op_put(self, _conn: socket.socket, request: dict[str, t.Any]) -> dict[str, t.Any]:
        node, _warnings, _reused = self.acquire(self.session(request))
        self._busy(node, 1)
        try:
            sftp = self._sftp(node)
            try:
                sftp.put(request["local"], request["remote"], confirm=True)
            except FileNotFoundError as exc:
                raise RemoteFileNotFound(f"file or directory not found while copying {request['local']} to {request['remote']}: {exc}") from exc
            except OSError as exc:
                raise TransferFailed(f"SFTP upload of {request['local']} to {request['remote']} failed: {exc}") from exc
        finally:
            self._busy(node, -1)
        return {"ok": True}

    def op_fetch(self, _conn: socket.socket, request: dict[str, t.Any]) -> dict[str, t.Any]:
        node, _warnings, _reused = self.acquire(self.session(request))
        self._busy(node, 1)
        try:
            sftp = self._sftp(node)
            mode = 0o666 & ~int(request.get("umask", 0o022))
            try:
                remote = sftp.open(request["remote"], "rb")
            except FileNotFoundError as exc:
                raise RemoteFileNotFound(f"remote file {request['remote']} not found: {exc}") from exc
            except OSError as exc:
                raise TransferFailed(f"cannot open remote file {request['remote']}: {exc}") from exc
            with remote:
                remote.prefetch()
                fd = os.open(request["local"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
                with os.fdopen(fd, "wb") as local:
                    while True:
                        data = remote.read(READ_SIZE)
                        if not data:
                            break
                        local.write(data)
        finally:
            self._busy(node, -1)
        return {"ok": True}

    def _sftp(self, node: Node) -> t.Any:
        try:
            return node.sftp_client()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectionLost(f"cannot start SFTP on {node.label}: {exc}", advice="is the sftp subsystem enabled in the target's sshd_config?") from exc

    def _busy(self, node: Node, delta: int) -> None:
        with self.lock:
            node.busy += delta
            node.uses += 1 if delta > 0 else 0
        node.touch(None, None)

    def op_exec(self, conn: socket.socket, request: dict[str, t.Any]) -> None:
        session = self.session(request)
        node, warnings, reused = self.acquire(session)
        self._busy(node, 1)
        channel = None
        try:
            timeout = session.effective_connect_timeout
            try:
                channel = node.transport.open_session(timeout=timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                # A session that died between two tasks: reconnect once.
                LOG.info("cannot open a channel on %s (%s): reconnecting", node.label, exc)
                self._busy(node, -1)
                self.close_node(node)
                node, warnings, reused = self.acquire(session)
                self._busy(node, 1)
                try:
                    channel = node.transport.open_session(timeout=timeout)
                except (paramiko.SSHException, EOFError, OSError) as again:
                    raise ConnectionLost(f"cannot open a session channel on {node.label}: {again}", advice="the server may limit MaxSessions") from again
            agent_socket = request.get("agent_socket")
            if session.forward_agent and isinstance(agent_socket, str) and agent_socket:
                request_agent_forwarding(channel, agent_socket)
            if request.get("pty"):
                channel.get_pty(term="vt100", width=0, height=0)
            channel.exec_command(request["command"])
            send_json(conn, {"ok": True, "reused": reused, "warnings": warnings})
            pump(conn, channel)
        finally:
            if channel is not None:
                channel.close()
            self._busy(node, -1)

    OPS: t.ClassVar[dict[str, str]] = {
        "status": "op_status",
        "open": "op_open",
        "exec": "op_exec",
        "put": "op_put",
        "fetch": "op_fetch",
        "reset": "op_reset",
        "shutdown": "op_shutdown",
    }

    def op_shutdown(self, _conn: socket.socket, _request: dict[str, t.Any]) -> dict[str, t.Any]:
        self.stopping.set()
        return {"ok": True}

    # -- serving -------------------------------------------------------------------------------------------------
    def handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
                _pid, uid, _gid = struct.unpack("3i", creds)
                if uid != os.getuid():
                    LOG.warning("refused a connection from uid %d", uid)
                    return
                frame = recv_frame(conn)
                if frame is None or frame[0] != KIND_JSON:
                    return
                request = json.loads(frame[1].decode("utf-8"))
                with self.lock:
                    self.requests += 1
                    self.active += 1
                    self.last_request = time.monotonic()
                try:
                    self._dispatch(conn, request)
                finally:
                    with self.lock:
                        self.active -= 1
                        self.last_request = time.monotonic()
            except (OSError, EOFError, ValueError) as exc:
                LOG.debug("client connection ended: %s", exc)

    def _dispatch(self, conn: socket.socket, request: dict[str, t.Any]) -> None:
        method = self.OPS.get(str(request.get("op")))
        if method is None:
            send_json(conn, {"ok": False, "error": ControlError(f"unknown operation {request.get('op')!r}").to_dict()})
            return
        try:
            answer = getattr(self, method)(conn, request)
        except TunnelError as exc:
            answer = {"ok": False, "error": exc.to_dict()}
        except Exception as exc:  # one failing request must not take the broker down
            LOG.exception("request %s failed", request.get("op"))
            answer = {"ok": False, "error": TunnelError.wrap(exc).to_dict()}
        if answer is not None:
            send_json(conn, answer)

    def reap(self) -> None:
        now = time.monotonic()
        alive: dict[tuple[int, int], bool] = {}

        def is_alive(owner: tuple[int, int]) -> bool:
            if owner not in alive:
                alive[owner] = owner_alive(owner)
            return alive[owner]

        with self.lock:
            nodes = sorted(self.nodes.values(), key=lambda n: -len(n.chain()))
            retired = list(self.retired)
        for node in retired:
            subtree = [node]
            for item in subtree:
                subtree.extend(item.children)
            if not self._in_use(subtree):
                LOG.info("closing the retired session to %s: idle", node.label)
                self.close_node(node)
        orphans: set[Node] = set()
        for node in nodes:
            # Before the checks below skip the node: a bastion's persist counts from its last run too, not from its children's end.
            with self.lock:  # a run that picks the node up meanwhile (acquire) adds its owner under the same lock
                if not node.owners or any(is_alive(owner) for owner in list(node.owners)):
                    node.orphaned_at = None
                    continue
                orphans.add(node)
                if node.persist > 0 and node.orphaned_at is None:
                    node.orphaned_at = now
                    LOG.info("keeping the session to %s for %g s after the last ansible-playbook that used it", node.label, node.persist)
        for node in nodes:
            if node.closed or node.busy or node.children:
                continue
            if node.forward_connections():
                node.touch(None, None)
                continue
            reason = ""
            expires = node.expires_in(now)
            if not node.transport.is_active():
                reason = "the connection closed"
            elif node in orphans and node.persist <= 0:
                reason = "every ansible process that used it has exited"
            elif expires is not None:
                # Persisted after its run: burrow_persist replaces the idle timeout.
                reason = f"kept {node.persist:g} s after the last ansible-playbook that used it" if expires <= 0 else ""
            elif now - node.last_used > node.idle_timeout:
                reason = f"idle for {node.idle_timeout:g} s"
            if reason:
                LOG.info("closing the session to %s: %s", node.label, reason)
                self.close_node(node)
        with self.lock:
            self.owners = {owner for owner in self.owners if is_alive(owner)}
            if not self.nodes and not self.retired and not self.active and (not self.owners or now - self.last_request > self.max_idle):
                self.stopping.set()

    def serve(self) -> None:
        server = listen_private_unix(self.paths.socket, 256)
        server.settimeout(REAP_INTERVAL)
        self.server = server
        identity = os.stat(self.paths.socket).st_ino
        LOG.info("session broker %d listening on %s", os.getpid(), self.paths.socket)
        last_reap = time.monotonic()
        try:
            while not self.stopping.is_set():
                try:
                    conn = server.accept()[0]
                except socket.timeout:
                    conn = None
                if conn is not None:
                    conn.settimeout(None)
                    threading.Thread(target=self.handle, args=(conn,), name="burrow-client", daemon=True).start()
                # Every REAP_INTERVAL, also while requests keep coming (a persisted session must expire on time).
                if conn is None or time.monotonic() - last_reap > REAP_INTERVAL:
                    last_reap = time.monotonic()
                    self.reap()
        finally:
            with contextlib.suppress(OSError):
                if os.stat(self.paths.socket).st_ino == identity:
                    os.unlink(self.paths.socket)
            server.close()
            with self.lock:
                nodes = [node for node in [*self.nodes.values(), *self.retired] if node.parent is None]
            for node in nodes:
                self.close_node(node)
            LOG.info("session broker %d stopped", os.getpid())
