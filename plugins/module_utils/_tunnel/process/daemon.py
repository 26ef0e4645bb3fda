# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The detached tunnel process: runs one TunnelEngine, serves the control socket, enforces the lifetime.

Everything this file needs is imported at module load: the process is forked from an Ansible module
whose AnsiballZ payload is deleted once the module exits, so nothing may be imported later.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import logging.handlers
import os
import resource
import signal
import socket
import threading
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.audit import AuditTrail, open_trail
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.engine import TunnelEngine
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import ControlError, StateWriteFailed, TunnelError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.private_log import PrivateRotatingFileHandler
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.private_socket import listen_private_unix
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process import protocol
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.lock import remove_lock_file_if_free
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import (
    TunnelPaths,
    disable_core_dumps,
    process_start_time,
    write_private_file,
)
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.title import set_process_title
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import module_forward_lists
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Tunnel
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import use_deque_pipes

LOG_MAX_BYTES = 1024 * 1024
# How often the main loop wakes: often enough that a play-scoped tunnel ends within about two seconds of
# ansible-playbook, rarely enough that 100 idle tunnels stay far below 5 % of a core (docs/scale.md).
# Stop requests do not wait for it: they set the event the loop sleeps on.
LIFETIME_POLL_INTERVAL = 2.0
IDLE_POLL_INTERVAL = 10.0
# A stop request that waits for the result is answered within its drain time plus this (cutting and closing).
STOP_REPLY_GRACE = 5.0

try:  # glibc only; elsewhere freed memory is simply not handed back early
    _MALLOC_TRIM: t.Any = ctypes.CDLL(None).malloc_trim
except (OSError, AttributeError):  # pragma: no cover - musl, macOS
    _MALLOC_TRIM = None


def _release_freed_memory() -> None:
    """Hand freed heap back to the OS. glibc keeps it in per-thread arenas: measured (docs/performance.md), a burst of
    1000 connections left the idle process at 88-113 MiB RSS without this, 49-51 MiB with it."""
    if _MALLOC_TRIM is not None:
        with contextlib.suppress(Exception):
            _MALLOC_TRIM(0)


def _audit_trail(tunnel: Tunnel, paths: TunnelPaths) -> AuditTrail | None:
    """Where the lines of who used the tunnel go (the tunnel's audit option)."""
    return open_trail(tunnel.name, tunnel.audit, paths.audit)


def _setup_logging(path: str) -> None:
    handler = PrivateRotatingFileHandler(path, maxBytes=LOG_MAX_BYTES, backupCount=1)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # paramiko logs every channel at INFO/DEBUG; keep the capped log for what users need.
    logging.getLogger("paramiko").setLevel(logging.WARNING)


class ControlServer:
    """JSON-lines requests on a Unix socket (0600 in a 0700 directory): status, touch, probe, apply, stop."""

    def __init__(self, path: str, engine: TunnelEngine, stop_requested: threading.Event, stop_deadline: list[float]) -> None:
        self.path = path
        self.engine = engine
        self.stop_requested = stop_requested
        self.stop_deadline = stop_deadline
        self.stopped = threading.Event()
        # Set by a tunnel host when an exception escaped one of this tunnel's threads: the tunnel is reported down.
        self.failed = ""
        self._replies = threading.Condition()
        self._waiting = 0
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.sock = listen_private_unix(path, 16)
        bound = os.lstat(path)
        self._inode = (bound.st_dev, bound.st_ino)
        self._thread = threading.Thread(target=self._serve, name="burrow-control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn = self.sock.accept()[0]
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), name="burrow-control-client", daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                line = protocol.read_line(conn)
                request = json.loads(line)
                response = self._dispatch(request)
            except TunnelError as exc:
                response = protocol.failure(exc)
            except (ValueError, OSError) as exc:
                response = protocol.failure(ControlError(f"bad control request: {exc}"))
            with contextlib.suppress(OSError):
                conn.sendall(protocol.encode(response))

    def _dispatch(self, request: dict[str, t.Any]) -> dict[str, t.Any]:
        op = request.get("op")
        if op == "status":
            return {"ok": True, "status": self._status()}
        if op == "touch":
            self.engine.touch()
            return {"ok": True}
        if op == "probe":
            timeout = request.get("probe_timeout")
            results = self.engine.probe(float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else None)
            return {"ok": True, "status": self._status(), "probe": results}
        if op == "apply":
            if self.failed:
                raise ControlError(f"tunnel {self.engine.tunnel.name} failed ({self.failed}); it must be restarted")
            forwards = module_forward_lists(request)
            # The bind policy travels with the forwards (it is not part of the digest): remote_bind.py applies it.
            self.engine.forward_set.allow_non_loopback_bind = bool(request.get("allow_non_loopback_bind"))
            delta = self.engine.apply(forwards)
            return {"ok": True, "delta": delta, "status": self.engine.status()}
        if op == "stop":
            self.stop_deadline[0] = float(request.get("deadline", 10))
            if not request.get("wait"):
                self.stop_requested.set()
                return {"ok": True}
            # The caller wants to know what the stop cut: answer once the engine has stopped.
            with self._replies:
                self._waiting += 1
            self.stop_requested.set()
            try:
                self.stopped.wait(self.stop_deadline[0] + STOP_REPLY_GRACE)
                return {"ok": True, "stopped": self.stopped.is_set(), "cut_connections": self.engine.cut_connections}
            finally:
                with self._replies:
                    self._waiting -= 1
                    self._replies.notify_all()
        raise ValueError(f"unknown op {op!r}")

    def _status(self) -> dict[str, t.Any]:
        status = self.engine.status()
        if self.failed:
            status.update(status="down", failed=self.failed)
        return status

    def finish(self) -> None:
        """The engine stopped: answer the stop requests that wait for it (briefly), then close."""
        self.stopped.set()
        with self._replies:
            self._replies.wait_for(lambda: self._waiting == 0, timeout=STOP_REPLY_GRACE)
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        # Only the socket this server bound: in a tunnel host, the next tunnel of the same name may have bound its own.
        with contextlib.suppress(OSError):
            current = os.lstat(self.path)
            if (current.st_dev, current.st_ino) == self._inode:
                os.unlink(self.path)


def _close_audit(trail: AuditTrail | None, paths: TunnelPaths) -> None:
    if trail is not None:
        trail.close()
    for path in (paths.audit, paths.rotated_audit):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _owner_alive(owner: dict[str, t.Any] | None) -> bool:
    if not owner:
        return True
    return process_start_time(int(owner["pid"])) == owner.get("start_time")


def _lifetime_reason(tunnel: Tunnel, status: dict[str, t.Any], owner: dict[str, t.Any] | None, started: float) -> str:
    if not _owner_alive(owner):
        return f"the owning ansible-playbook process (pid {owner['pid'] if owner else '?'}) exited (lifetime=play)"
    # Both on the monotonic clock: a wall-clock step (NTP, date -s, suspend) neither ends nor extends a tunnel.
    if tunnel.ttl and time.monotonic() - started >= tunnel.ttl:
        return f"ttl of {tunnel.ttl} s reached"
    if tunnel.idle_timeout and status["connections_active"] == 0 and status["idle_seconds"] >= tunnel.idle_timeout:
        return f"idle for {tunnel.idle_timeout} s"
    return ""


# Each forwarded connection holds one descriptor (its client socket); this keeps max_connections (default 4096, see
# forward_set.py) the limit a listener meets, not EMFILE in accept() at a soft limit of 1024.
OPEN_FILES_WANTED = 8192


def _raise_open_file_limit() -> None:
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def state_write_failed(path: str, exc: OSError) -> StateWriteFailed:
    return StateWriteFailed(
        f"cannot write {path}: {exc.strerror or exc}",
        advice=f"free space on the file system of {os.path.dirname(path)} (df -h {os.path.dirname(path)}) or choose another state_dir",
    )


class TunnelRun:
    """One tunnel inside a process (its own, or a group's host): its engine, control server, audit trail and stop."""

    def __init__(self, tunnel: Tunnel, paths: TunnelPaths, owner: dict[str, t.Any] | None) -> None:
        self.tunnel = tunnel
        self.paths = paths
        self.owner = owner
        self.stop_requested = threading.Event()
        self.stop_deadline = [10.0]
        self.engine: TunnelEngine | None = None
        self.server: ControlServer | None = None
        self.trail: AuditTrail | None = None
        self.stop_lock = threading.Lock()
        self.failed = ""  # set by a tunnel host's catch-all: why the tunnel is down
        self.log_handler: logging.Handler | None = None  # in a tunnel host: this tunnel's own log

    def start(self, log: logging.Logger) -> dict[str, t.Any]:
        """Start the engine, the control socket and the state file: the start report (ok, or the precise error)."""
        tunnel, paths = self.tunnel, self.paths
        engine = self.engine = TunnelEngine(tunnel)
        try:
            self.trail = engine.forward_set.audit = _audit_trail(tunnel, paths)
            engine.start()
        except TunnelError as exc:
            log.error("start failed: %s", exc)
            _close_audit(self.trail, paths)
            return protocol.failure(exc)
        except Exception as exc:  # reported to the module instead of dying silently
            log.exception("start failed")
            _close_audit(self.trail, paths)
            return protocol.failure(exc)
        try:
            self.server = ControlServer(paths.socket, engine, self.stop_requested, self.stop_deadline)
        except OSError as exc:
            engine.stop(deadline=0)
            _close_audit(self.trail, paths)
            return protocol.failure(state_write_failed(paths.socket, exc))
        state = {
            "name": tunnel.name,
            "pid": os.getpid(),
            "start_time": process_start_time(os.getpid()),
            "socket": paths.socket,
            "log": paths.log,
            "digest": tunnel.digest(),
            "spec": tunnel.public_dict(),
            "owner": self.owner,
            "started_at": engine.started_at,
            # A tunnel host's pid is every grouped tunnel's pid: a dead host makes them all stale at once.
            **({"group": tunnel.process_group} if tunnel.process_group else {}),
        }
        try:
            write_private_file(paths.state, json.dumps(state, indent=2, sort_keys=True))
        except OSError as exc:
            engine.stop(deadline=0)
            self.server.close()
            _close_audit(self.trail, paths)
            return protocol.failure(state_write_failed(paths.state, exc))
        log.info("tunnel %s up: %s", tunnel.name, ", ".join(engine.forwards))
        return {"ok": True, "status": engine.status(), "pid": os.getpid()}

    def live(self, log: logging.Logger) -> None:
        """Until a stop request or the end of its lifetime (owner, ttl, idle); then stop the engine and answer."""
        if self.engine is None or self.server is None:
            raise RuntimeError(f"tunnel {self.tunnel.name}: live() before start()")
        engine, tunnel, owner = self.engine, self.tunnel, self.owner
        started = time.monotonic()
        reason = ""
        # Forked from the module process: what the module freed before the fork is resident here until trimmed.
        _release_freed_memory()
        trimmed_at = time.monotonic()
        poll_interval = LIFETIME_POLL_INTERVAL if owner or tunnel.ttl or tunnel.idle_timeout else IDLE_POLL_INTERVAL
        while not self.stop_requested.wait(poll_interval):
            status = engine.status()
            reason = _lifetime_reason(tunnel, status, owner, started)
            if reason:
                self.stop_deadline[0] = 2.0
                break
            if status["connections_active"] == 0 and time.monotonic() - status["idle_seconds"] > trimmed_at:
                _release_freed_memory()  # once per quiet spell that follows traffic
                trimmed_at = time.monotonic()
        log.info("stopping: %s", reason or "stop requested")
        self.stop_engine(self.stop_deadline[0])
        log.info("stopped")  # the caller answers the stop requests that wait (server.finish) once it has cleaned up

    def stop_engine(self, deadline: float) -> None:
        """Stop the engine once (a failed tunnel's is stopped when it fails, its stop request finds it stopped)."""
        if self.engine is None:
            return
        with self.stop_lock:
            if self.engine.state != "stopped":
                self.engine.stop(deadline=deadline)

    def remove_files(self) -> None:
        # A tunnel that ends (absent, play over, ttl, idle) leaves nothing on disk, its audit file included: lasting
        # records belong to audit=syslog (the state directory is often XDG_RUNTIME_DIR, a tmpfs wiped at logout anyway).
        _close_audit(self.trail, self.paths)
        for path in (self.paths.state, self.paths.log, self.paths.rotated_log):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        remove_lock_file_if_free(self.paths)


def process_setup(title: str, log_path: str | None) -> threading.Event:
    """What every tunnel process does first: title, no core dumps, open-file limit, logging, signals."""
    set_process_title(title)
    disable_core_dumps()  # the process holds keys, passphrases and SOCKS passwords in memory
    _raise_open_file_limit()
    if log_path is not None:
        _setup_logging(log_path)
    stop_requested = threading.Event()

    def on_signal(_signum: int, _frame: t.Any) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    use_deque_pipes()
    return stop_requested


def reporter(ready_fd: int) -> t.Callable[[dict[str, t.Any]], None]:
    with contextlib.suppress(OSError):
        os.write(ready_fd, json.dumps({"starting": os.getpid()}).encode() + b"\n")

    def report(payload: dict[str, t.Any]) -> None:
        with contextlib.suppress(OSError):
            os.write(ready_fd, json.dumps(payload).encode() + b"\n")
        with contextlib.suppress(OSError):
            os.close(ready_fd)

    return report


def serve(tunnel: Tunnel, paths: TunnelPaths, ready_fd: int, owner: dict[str, t.Any] | None = None) -> int:
    """Run the tunnel until stopped. Reports the start result as one JSON line on ready_fd."""
    stop_requested = process_setup(f"burrow-tunnel {tunnel.name}", paths.log)
    log = logging.getLogger("burrow.daemon")
    report = reporter(ready_fd)
    run = TunnelRun(tunnel, paths, owner)
    run.stop_requested = stop_requested  # SIGTERM stops the tunnel, as a stop request does
    started = run.start(log)
    report(started)
    if not started.get("ok"):
        return 1
    run.live(log)
    if run.server is not None:
        run.server.finish()
    logging.shutdown()
    run.remove_files()
    return 0
