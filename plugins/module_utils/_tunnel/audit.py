# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Who used a tunnel: one JSON line per accepted forwarded connection, and a summary per local uid.

A connection is followed from its accept to its end in the thread that handles it: ``audited()`` wraps a forward's
handler (the hook at accept), learns who the client is while it is still connected, and writes the line when the
handler returns (the hook at close). In between, the code that already runs in that thread reports what only it knows
through ``note_destination`` (the SOCKS target), ``note_refused`` (Counters.failed) and ``note_relay`` (relay's
bytes and how it ended). Nothing is done per packet; with no trail attached (the connection plugin's broker, tests)
the handler runs unwrapped.

The kernel tells who a local client is: for a Unix socket SO_PEERCRED (pid, uid); for loopback TCP, the row of the
client's own socket in /proc/net/tcp{,6} (its uid column and inode), and the process holding that inode when /proc
lets us read its descriptors (root, or the same user). Only the process name is recorded, never its command line.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import logging.handlers
import os
import pwd
import re
import socket
import struct
import threading
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import TunnelError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.private_log import PrivateRotatingFileHandler
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.sock_diag import socket_owner

# Distinct uids kept in the in-memory summary; later ones are counted under uid null (the file has every line).
MAX_SUMMARY_UIDS = 256
# The audit file and its one rotated file: at about 350 bytes a line, the last 6000 connections or so.
AUDIT_MAX_BYTES = 1024 * 1024
SYSLOG_ADDRESS = "/dev/log"
ENDINGS = ("closed", "reset", "refused", "cut")
# A SOCKS client may type a password where the user name goes: the user a refused client sent is never recorded.
_CLIENT_USER = re.compile(r"for user '.*'$|for user \".*\"$")

_current = threading.local()
# Measured: scanning the client user's processes for each of 1000 concurrent connections starved the transport thread
# on a busy machine. Past this many connections being accepted or relayed at once, a new connection's audit line has
# its client address and uid (sock_diag.py: one request) but no pid.
PID_LOOKUP_MAX_OPEN = 32
# The pid scan reads every descriptor of the client user's processes: with 38,000 open files among root's processes,
# 32 scans at once held the GIL long enough that channel opens of the tunnel's transport timed out (tests/reliability/
# test_load.py). One scan runs at a time; a connection accepted meanwhile is recorded with its uid but no pid.
_pid_scan = threading.Lock()


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _user_name(uid: int | None) -> str | None:
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _proc_address(text: str) -> tuple[str, int]:
    """``0100007F:1F90`` (IPv4) or 32 hex digits (IPv6), each 32-bit word in host byte order, as /proc/net/tcp prints."""
    address, port = text.split(":")
    words = [int(address[i : i + 8], 16) for i in range(0, len(address), 8)]
    packed = struct.pack(f"={len(words)}I", *words)
    family = socket.AF_INET if len(words) == 1 else socket.AF_INET6
    return socket.inet_ntop(family, packed), int(port, 16)


def _unmapped(host: str) -> str:
    return host[7:] if host.startswith("::ffff:") else host


def _same_host(a: str, b: str) -> bool:
    return _unmapped(a) == _unmapped(b)


def tcp_owner(client: tuple[str, int], server: tuple[str, int]) -> tuple[int, str] | None:
    """(uid, inode) of the local socket ``client`` that is connected to ``server``: sock_diag, else /proc/net/tcp{,6}."""
    with contextlib.suppress(OSError, ValueError):
        return socket_owner((_unmapped(client[0]), client[1]), (_unmapped(server[0]), server[1]))
    return _tcp_owner_from_proc(client, server)


def _tcp_owner_from_proc(client: tuple[str, int], server: tuple[str, int]) -> tuple[int, str] | None:
    for table in ("/proc/net/tcp", "/proc/net/tcp6") if ":" not in client[0] or client[0].startswith("::ffff:") else ("/proc/net/tcp6",):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as handle:
            next(handle, None)
            wanted_port = f":{client[1]:04X}"
            for line in handle:
                fields = line.split()
                # Compare the port text first: parsing every row made 1000 concurrent accepts quadratic (the load test).
                if len(fields) < 10 or not fields[1].endswith(wanted_port):
                    continue
                with contextlib.suppress(ValueError):
                    local, remote = _proc_address(fields[1]), _proc_address(fields[2])
                    if local[1] == client[1] and remote[1] == server[1] and _same_host(local[0], client[0]) and _same_host(remote[0], server[0]):
                        return int(fields[7]), fields[9]
    return None


def inode_holder(inode: str, uid: int) -> int | None:
    """The pid of a process of ``uid`` holding socket ``inode``; only that user's processes are searched."""
    target = f"socket:[{inode}]"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") == target:
                        return int(entry)
    return None


def _process_name(pid: int | None) -> str | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def peer_identity(client: t.Any, want_pid: bool = True, want_uid: bool = True) -> dict[str, t.Any]:
    """What the kernel says about a local client: client address, uid, user, pid, process (None when it does not tell)."""
    found: dict[str, t.Any] = {"client": None, "uid": None, "pid": None}
    try:
        family = client.family
        peer = client.getpeername()
    except (OSError, AttributeError):
        return found
    if family == socket.AF_UNIX:
        found["client"] = peer or "unix"  # a client socket usually has no name of its own
        with contextlib.suppress(OSError):
            pid, uid, _gid = struct.unpack("3i", client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
            found.update({"uid": uid, "pid": pid if pid > 0 else None})
    elif family in (socket.AF_INET, socket.AF_INET6):
        host, port = str(peer[0]), int(peer[1])
        found["client"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if want_uid and (_unmapped(host).startswith("127.") or host == "::1"):
            server = client.getsockname()
            owner = tcp_owner((host, port), (str(server[0]), int(server[1])))
            if owner is not None:
                found["uid"] = owner[0]
                if want_pid and _pid_scan.acquire(blocking=False):
                    try:
                        found["pid"] = inode_holder(owner[1], owner[0])
                    finally:
                        _pid_scan.release()
    return found


def note_destination(destination: t.Any) -> None:
    """The destination a connection is being relayed to (a SOCKS request's target), from the handler's thread."""
    entry = getattr(_current, "entry", None)
    if entry is not None:
        entry["destination"] = str(destination)


def note_refused(reason: str) -> None:
    """The connection was not relayed (Counters.failed in the handler's thread)."""
    entry = getattr(_current, "entry", None)
    if entry is not None:
        entry["ended"] = "refused"
        entry["error"] = _CLIENT_USER.sub("for a user (not recorded)", reason)[:300]


def note_relay(sent: int, received: int, ended: str) -> None:
    """relay() finished in the handler's thread: bytes each way and how it ended (closed | reset | cut)."""
    entry = getattr(_current, "entry", None)
    if entry is not None:
        entry.update({"bytes_out": sent, "bytes_in": received, "ended": ended})


class AuditTrail:
    """The sink of one tunnel's audit lines (a handler: rotating 0600 file or syslog) and their summary per uid."""

    def __init__(self, tunnel: str, sink: str, handler: logging.Handler, path: str | None = None) -> None:
        self.tunnel = tunnel
        self.sink = sink
        self.path = path
        self._logger = logging.Logger(f"burrow.audit.{tunnel}", logging.INFO)  # not registered: one per trail
        self._logger.propagate = False
        self._logger.addHandler(handler)
        self._lock = threading.Lock()
        self._by_uid: dict[int | None, dict[str, t.Any]] = {}
        self._open = 0  # local connections being followed now (PID_LOOKUP_MAX_OPEN)

    def wrap(self, key: str, destination: t.Any, handler: t.Callable[[t.Any], None], origin: t.Any = None) -> t.Callable[[t.Any], None]:
        """``handler`` for one accepted client, followed from accept to end. ``origin``: a remote forward's client address."""

        def run(client: t.Any) -> None:
            started = time.time()
            begun = time.monotonic()
            entry: dict[str, t.Any] = {"time": _iso(started), "tunnel": self.tunnel, "forward": key}
            if origin is not None:
                entry.update({"client": f"{origin[0]}:{origin[1]}", "uid": None, "pid": None})
            else:
                with self._lock:
                    self._open += 1
                    busy = self._open > PID_LOOKUP_MAX_OPEN
                # The uid is one sock_diag request and always looked up (a burst must not hide who connected); the pid
                # costs a scan of that user's processes: only while the tunnel is not in a burst.
                entry.update(peer_identity(client, want_pid=not busy))
            entry.update({"destination": str(destination) if destination is not None else None, "bytes_out": 0, "bytes_in": 0, "ended": "closed"})
            _current.entry = entry
            try:
                handler(client)
            finally:
                if origin is None:
                    with self._lock:
                        self._open -= 1
                _current.entry = None
                entry["duration"] = round(time.monotonic() - begun, 3)
                self.record(entry)

        return run

    def record(self, entry: dict[str, t.Any]) -> None:
        entry["user"] = _user_name(entry.get("uid"))
        entry["process"] = _process_name(entry.get("pid"))
        with contextlib.suppress(Exception):  # an audit sink that fails never breaks the tunnel; the daemon's log says why
            self._logger.info("%s", json.dumps(entry, sort_keys=True))
        uid = entry.get("uid")
        with self._lock:
            if uid not in self._by_uid and len(self._by_uid) >= MAX_SUMMARY_UIDS:
                uid = None
            usage = self._by_uid.setdefault(uid, {"uid": uid, "user": entry["user"], "connections": 0, "refused": 0, "bytes_out": 0, "bytes_in": 0})
            usage["connections"] += 1
            usage["refused"] += entry["ended"] == "refused"
            usage["bytes_out"] += int(entry["bytes_out"])
            usage["bytes_in"] += int(entry["bytes_in"])
            usage["last_use"] = _iso(time.time())

    def summary(self) -> dict[str, t.Any]:
        with self._lock:
            by_uid = sorted((dict(usage) for usage in self._by_uid.values()), key=lambda usage: (usage["uid"] is None, usage["uid"] or 0))
        return {"sink": self.sink, "file": self.path, "by_uid": by_uid}

    def close(self) -> None:
        for handler in list(self._logger.handlers):
            with contextlib.suppress(Exception):
                handler.close()
            self._logger.removeHandler(handler)


def wrap_handler(trail: AuditTrail | None, key: str, destination: t.Any, handler: t.Callable[[t.Any], None], origin: t.Any = None) -> t.Callable[[t.Any], None]:
    """The hook at accept: ``handler`` followed by ``trail``, or unchanged without one."""
    return handler if trail is None else trail.wrap(key, destination, handler, origin)


def syslog_handler(tunnel: str, address: str | None = None) -> logging.Handler:
    """A syslog handler (authpriv, info) whose lines read ``burrow-tunnel[pid]: {json}``; OSError when there is no syslog."""
    handler = logging.handlers.SysLogHandler(address=address or SYSLOG_ADDRESS, facility=logging.handlers.SysLogHandler.LOG_AUTHPRIV)
    handler.ident = f"burrow-tunnel[{os.getpid()}]: "
    return handler


def open_trail(name: str, sink: str, path: str) -> AuditTrail | None:
    """The trail of tunnel or connection ``name``: a 0600 rotating file at ``path``, syslog, or none."""
    if sink == "none":
        return None
    if sink == "syslog":
        try:
            return AuditTrail(name, "syslog", syslog_handler(name))
        except OSError as exc:
            raise TunnelError(
                f"audit=syslog: cannot reach the system logger at {SYSLOG_ADDRESS}: {exc.strerror or exc}",
                advice="run a syslog daemon or journald on this host, or use audit=file",
            ) from exc
    handler = PrivateRotatingFileHandler(path, maxBytes=AUDIT_MAX_BYTES, backupCount=1)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return AuditTrail(name, "file", handler, path=path)
