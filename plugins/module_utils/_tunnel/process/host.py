# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The tunnel host of a process_group: one process serves every tunnel of one (group, state directory) (issue 15).

Each tunnel keeps its TunnelRun (daemon.py: engine, control socket NAME.sock, state file, log, audit trail, lifetime).
Threads are tagged with the tunnel they work for (a new thread inherits its creator's tag), which routes log records
to that tunnel's log and lets the catch-all (threading.excepthook) mark the one tunnel whose thread raised as failed,
never the host or the other tunnels. More tunnels arrive with ``add`` on the group socket (0600, SO_PEERCRED checked);
the host ends with its last tunnel. A crash of the process (kill -9, OOM, a fault in a C extension) takes down the
whole group: the state files name the host's pid and start time, so every tunnel of the group is then seen stale.

Everything this file needs is imported at module load (see daemon.py): the process outlives the module's payload.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import ControlError, TunnelError, UntrustedState
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.private_log import PrivateRotatingFileHandler
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.private_socket import listen_private_unix
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process import protocol
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.daemon import (
    LOG_MAX_BYTES,
    TunnelRun,
    process_setup,
    reporter,
    state_write_failed,
)
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.lock import remove_group_lock_if_free
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import GroupPaths, TunnelPaths, remove_quietly
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.wire import tunnel_from_wire
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.relay import start_thread
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Tunnel

ADD_READ_TIMEOUT = 30.0
HOST_POLL_INTERVAL = 5.0
TAG = "_burrow_tunnel"


def thread_tunnel() -> str | None:
    """The tunnel the current thread works for (None: the host itself)."""
    return getattr(threading.current_thread(), TAG, None)


def _set_thread_tunnel(name: str | None) -> None:
    setattr(threading.current_thread(), TAG, name)


def _install_thread_tags() -> None:
    original = threading.Thread.__init__
    if getattr(original, "_burrow_tags", False):
        return

    def init(self: threading.Thread, *args: t.Any, **kwargs: t.Any) -> None:
        original(self, *args, **kwargs)
        setattr(self, TAG, thread_tunnel())

    init._burrow_tags = True  # type: ignore[attr-defined]
    threading.Thread.__init__ = init  # type: ignore[method-assign]


class _LogRouter(logging.Handler):
    """Each record to the log of the tunnel its thread works for; the host's own records to the group's log."""

    def __init__(self, host_handler: logging.Handler) -> None:
        super().__init__()
        self.host_handler = host_handler
        self.tunnels: dict[str, logging.Handler] = {}

    def emit(self, record: logging.LogRecord) -> None:
        name = thread_tunnel()
        handler = self.tunnels.get(name, self.host_handler) if name else self.host_handler
        handler.handle(record)

    def close(self) -> None:
        for handler in [self.host_handler, *self.tunnels.values()]:
            handler.close()
        super().close()


def _private_handler(path: str) -> logging.Handler:
    handler = PrivateRotatingFileHandler(path, maxBytes=LOG_MAX_BYTES, backupCount=1)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


def _peer_uid(conn: socket.socket) -> int | None:
    peer_cred = getattr(socket, "SO_PEERCRED", None)
    if peer_cred is None:  # pragma: no cover - not Linux: the socket's mode in the 0700 directory is the check
        return os.getuid()
    return int(struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, peer_cred, struct.calcsize("3i")))[1])


class TunnelHost:
    """name -> TunnelRun for one process group; ``add`` requests on the group socket; ends with its last tunnel."""

    def __init__(self, group: str, state_dir: str, router: _LogRouter) -> None:
        self.group = group
        self.state_dir = state_dir
        self.paths = GroupPaths(state_dir, group)
        self.router = router
        self.runs: dict[str, TunnelRun] = {}
        self.lock = threading.Lock()
        self.closing = False
        self.empty = threading.Event()
        self.log = logging.getLogger("burrow.host")
        self.sock: socket.socket | None = None

    # -- the group socket ------------------------------------------------------------------------
    def bind(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.paths.socket)  # a dead host's; the caller holds the group lock
        self.sock = listen_private_unix(self.paths.socket, 64)
        start_thread(self._serve, name="burrow-host")

    def _serve(self) -> None:
        sock = self.sock
        if sock is None:
            return
        while True:
            try:
                conn = sock.accept()[0]
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), name="burrow-host-client", daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            uid = _peer_uid(conn)
            if uid != os.getuid():
                self.log.warning("refused a request on %s from uid %s (this host serves uid %d only)", self.paths.socket, uid, os.getuid())
                refusal = UntrustedState(f"process group {self.group}: requests from uid {uid} are refused (this host serves uid {os.getuid()})")
                with contextlib.suppress(OSError):
                    conn.sendall(protocol.encode(protocol.failure(refusal)))
                return
            try:
                conn.settimeout(ADD_READ_TIMEOUT)
                request = json.loads(protocol.read_line(conn))
                if request.get("op") != "add":
                    raise ValueError(f"unknown op {request.get('op')!r}")
                tunnel = tunnel_from_wire(request.get("tunnel"))
                if tunnel.process_group != self.group:
                    raise ValueError(f"tunnel {tunnel.name} belongs to process group {tunnel.process_group!r}, not {self.group!r}")
                run = TunnelRun(tunnel, TunnelPaths(self.state_dir, tunnel.name), request.get("owner"))
            except (ValueError, TypeError, OSError, TunnelError) as exc:
                with contextlib.suppress(OSError):
                    conn.sendall(protocol.encode(protocol.failure(ControlError(f"bad request to the tunnel host of {self.group}: {exc}"))))
                return
            conn.settimeout(None)
            _set_thread_tunnel(tunnel.name)
            answer = self.add(run)
            try:
                conn.sendall(protocol.encode(answer))
            except OSError:
                if answer.get("ok"):  # the module gave up waiting: a tunnel nobody was told about does not stay
                    logging.getLogger("burrow.daemon").warning("the module that added the tunnel went away before its start report; stopping")
                    run.stop_deadline[0] = 0.0
                    run.stop_requested.set()

    # -- tunnels ---------------------------------------------------------------------------------------
    def add(self, run: TunnelRun) -> dict[str, t.Any]:
        """Start one tunnel in this host (on a thread tagged with its name): its start report."""
        name = run.tunnel.name
        with self.lock:
            if self.closing:
                return dict(protocol.failure(ControlError(f"the tunnel host of {self.group} is ending")), ending=True)
            if name in self.runs:
                return protocol.failure(ControlError(f"tunnel {name} already runs in the tunnel host of {self.group}"))
            self.runs[name] = run
        run.log_handler = self.router.tunnels[name] = _private_handler(run.paths.log)
        log = logging.getLogger("burrow.daemon")
        started = run.start(log)
        if not started.get("ok"):
            self._detach(run)
            self._close_if_empty()
            return started
        start_thread(self._live, run, name="burrow-lifetime")
        return started

    def _live(self, run: TunnelRun) -> None:
        log = logging.getLogger("burrow.daemon")
        try:
            run.live(log)
        except Exception:  # the lifetime of one tunnel ends; the host and the others go on
            log.exception("the tunnel's lifetime loop failed; stopping it")
            with contextlib.suppress(Exception):
                run.stop_engine(0)
        finally:
            # Files and name first, the answer to the stop request last: once the module hears "stopped" (and releases
            # the name's lock), nothing of this run can touch a new tunnel of the same name.
            self._detach(run)
            run.remove_files()
            if run.server is not None:
                run.server.finish()
            self._close_if_empty()

    def _detach(self, run: TunnelRun) -> None:
        name = run.tunnel.name
        if self.router.tunnels.get(name) is run.log_handler:
            self.router.tunnels.pop(name, None)
        if run.log_handler is not None:
            run.log_handler.close()
        with self.lock:
            if self.runs.get(name) is run:
                del self.runs[name]

    def _close_if_empty(self) -> None:
        with self.lock:
            if self.runs or self.closing:
                return
            # The last tunnel ended: no add is accepted any more. The path goes first, then the socket, so a run that
            # connects now gets refused and starts a new host (under the group lock) instead of talking to this one.
            self.closing = True
            with contextlib.suppress(OSError):
                os.unlink(self.paths.socket)
            if self.sock is not None:
                with contextlib.suppress(OSError):
                    self.sock.close()
        self.empty.set()

    def stop_all(self) -> None:
        with self.lock:
            runs = list(self.runs.values())
        for run in runs:
            run.stop_requested.set()

    def fail(self, name: str, what: str) -> None:
        """The catch-all: an exception escaped a thread of tunnel ``name``. Only that tunnel goes down."""
        with self.lock:
            run = self.runs.get(name)
            if run is None or run.failed:
                return
            run.failed = what
        logging.getLogger("burrow.daemon").error("tunnel %s failed: %s; it is reported down until state: present repairs it", name, what)
        if run.server is not None:
            run.server.failed = what
        if run.engine is not None:
            start_thread(run.stop_engine, 0.0, name="burrow-failed-stop")


def _install_catch_all(host: TunnelHost) -> None:
    def hook(args: t.Any) -> None:
        if args.exc_type is SystemExit:
            return
        name = getattr(args.thread, TAG, None) if args.thread is not None else None
        log = logging.getLogger("burrow.daemon" if name else "burrow.host")
        log.error("uncaught exception in thread %s", getattr(args.thread, "name", "?"), exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
        if name:
            host.fail(name, f"{args.exc_type.__name__}: {args.exc_value} (in thread {getattr(args.thread, 'name', '?')})")

    threading.excepthook = hook


def serve_host(first: Tunnel, state_dir: str, ready_fd: int, owner: dict[str, t.Any] | None = None) -> int:
    """Run the tunnel host of ``first.process_group`` with ``first`` as its first tunnel; more arrive with ``add``.

    The first tunnel's start result goes to ready_fd as serve() reports it; the host ends with its last tunnel.
    """
    group = str(first.process_group)
    gpaths = GroupPaths(state_dir, group)
    stop_requested = process_setup(f"burrow-tunnel-host {group}", None)
    router = _LogRouter(_private_handler(gpaths.log))
    root = logging.getLogger()
    root.handlers[:] = [router]
    root.setLevel(logging.INFO)
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    _install_thread_tags()
    host = TunnelHost(group, state_dir, router)
    _install_catch_all(host)
    report = reporter(ready_fd)
    try:
        host.bind()
    except OSError as exc:
        report(protocol.failure(state_write_failed(gpaths.socket, exc)))
        return 1
    _set_thread_tunnel(first.name)
    started = host.add(TunnelRun(first, TunnelPaths(state_dir, first.name), owner))
    _set_thread_tunnel(None)
    report(started)
    while not host.empty.wait(HOST_POLL_INTERVAL if not stop_requested.is_set() else 0.2):
        if stop_requested.is_set():  # SIGTERM: every tunnel of the group stops
            host.stop_all()
    host.log.info("the last tunnel of process group %s ended; the host exits", group)
    logging.shutdown()
    remove_quietly(gpaths.log, gpaths.rotated_log)
    remove_group_lock_if_free(gpaths)
    return 0 if started.get("ok") else 1
