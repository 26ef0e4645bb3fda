# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Start a detached tunnel process and wait for its start report (ExitOnForwardFailure semantics)."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import signal
import socket
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import ControlError, TunnelError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process import daemon, host, protocol
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.control import signal_quietly
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.lock import group_lock
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import (
    GroupPaths,
    TunnelPaths,
    check_state_entry,
    ensure_state_dir,
    remove_quietly,
)
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.protocol import check_peer
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.wire import tunnel_to_wire
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Tunnel


def spawn(tunnel: Tunnel, state_dir: str, owner: dict[str, t.Any] | None = None, timeout: float | None = None) -> dict[str, t.Any]:
    """Start a detached tunnel process and wait until it reports its forwards up, or why not.

    Double fork + setsid so the process outlives the module and is not a child of Ansible; stdio on
    /dev/null and every other descriptor closed, or Ansible would wait for the module's pipes forever.
    Secrets reach the child in memory (the fork), never in argv, environment or files.

    A tunnel with a process_group is added to its group's running host (``add`` over the uid-checked group socket),
    or starts that host (the same double fork, this tunnel its first) when none runs: under the group's lock, so two
    first tunnels of one group end in one host. Either way the same start report, or the same precise error.
    """
    state_dir = ensure_state_dir(state_dir)
    paths = TunnelPaths(state_dir, tunnel.name)
    if timeout is None:
        timeout = tunnel.effective_connect_timeout * (len(tunnel.hops) + 1) * 2 + 10
    if tunnel.process_group is None:
        return _started(tunnel, paths, _fork(tunnel, paths, timeout, lambda fd: daemon.serve(tunnel, paths, fd, owner)))
    group = GroupPaths(state_dir, tunnel.process_group)
    with group_lock(group):
        report = _add_to_host(group, tunnel, owner, timeout)
        if report is None:  # no host runs for the group: this tunnel starts it
            report = _fork(tunnel, paths, timeout, lambda fd: host.serve_host(tunnel, state_dir, fd, owner))
    return _started(tunnel, paths, report)


def _fork(tunnel: Tunnel, paths: TunnelPaths, timeout: float, serve: t.Callable[[int], int]) -> dict[str, t.Any]:
    """Double fork, run ``serve(ready_fd)`` in the grandchild; its start report (killed and raised if none)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_fd)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            os.chdir("/")
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            _park_inherited_descriptors(null, keep=write_fd)
            code = serve(write_fd)
        except BaseException:  # a child must never return into the caller's code
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    started = time.monotonic()
    try:
        os.waitpid(pid, 0)
        data, ended = _read_report(read_fd, timeout)
    finally:
        os.close(read_fd)
    messages = [json.loads(line) for line in data.splitlines() if line.strip()]
    report = next((message for message in messages if "ok" in message), None)
    if report is None:
        # Never a host serving others: a host that has not reported its first tunnel has no other (the group lock is held).
        daemon_pid = next((message["starting"] for message in messages if "starting" in message), None)
        if daemon_pid:
            signal_quietly(int(daemon_pid), signal.SIGKILL)
        log_tail = _tail(paths.log)
        remove_quietly(*paths.files())
        elapsed = time.monotonic() - started
        if ended:
            raise ControlError(
                f"tunnel {tunnel.name}: the tunnel process ended {elapsed:.1f} s after its start without reporting"
                + (f"; its log said: {log_tail}" if log_tail else ""),
                advice=f"check that {paths.dir} is writable and has free space (df -h {paths.dir})",
            )
        raise ControlError(
            f"tunnel {tunnel.name}: the tunnel process did not report within {timeout:g} s and was killed" + (f"; its log said: {log_tail}" if log_tail else "")
        )
    return dict(report)


def _park_inherited_descriptors(null: int, keep: int) -> None:
    """Point every descriptor inherited from the caller (but ``keep``) at /dev/null ``null``, instead of closing it.

    The caller's pipes must go, or Ansible waits for the module's output forever; but closing them handed their numbers
    to the tunnel process's first client sockets while the objects the fork copied from the caller (a socket or file in
    a reference cycle, say) still named them. When the garbage collector finalised one, it closed a live client
    connection under its relay, and the next accepted connection took the number: in the 1000-connection load test,
    connection 4's bytes reached connection 576 (full suite runs only, where pytest, the caller, holds many such objects).
    Parked on /dev/null, the numbers stay taken for as long as the copied objects may close them.
    """
    try:
        inherited = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: ask each number below the limit
        limit = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 65536)
        inherited = [fd for fd in range(3, limit) if _is_open(fd)]
    for fd in inherited:
        if fd > 2 and fd not in (keep, null):
            with contextlib.suppress(OSError):  # EBUSY or EINTR: that one stays as it is
                os.dup2(null, fd)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _add_to_host(group: GroupPaths, tunnel: Tunnel, owner: dict[str, t.Any] | None, timeout: float) -> dict[str, t.Any] | None:
    """Send ``add`` to the group's running host: its start report, or None when no host runs (or it is ending).

    The socket is checked like every state path (this user's, not a symlink) and its server's uid with SO_PEERCRED;
    the declaration, secrets included, crosses it as JSON in memory only.
    """
    if not check_state_entry(group.socket, "socket"):
        return None
    who = f"tunnel {tunnel.name} (process group {group.group})"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(group.socket)
        except (FileNotFoundError, ConnectionRefusedError):
            return None  # a dead host's socket: the new host replaces it
        check_peer(sock, group.socket, who)
        try:
            sock.sendall(protocol.encode({"op": "add", "tunnel": tunnel_to_wire(tunnel), "owner": owner}))
            data = protocol.read_line(sock)
        except (BrokenPipeError, ConnectionResetError):
            return None  # the host ended between connect and answer
        except (OSError, ValueError) as exc:
            raise ControlError(
                f"{who}: the tunnel host did not report the start within {timeout:g} s: {getattr(exc, 'strerror', None) or exc}",
                advice=f"see its log {group.log} and the tunnel's log",
            ) from exc
    finally:
        sock.close()
    if not data:
        return None  # closed without an answer: the host is ending
    try:
        report = json.loads(data)
    except ValueError as exc:
        raise ControlError(f"{who}: unreadable answer from the tunnel host") from exc
    if not report.get("ok") and report.get("ending"):
        return None  # its last tunnel ended while this one was on its way: a new host takes it
    return dict(report)


def _started(tunnel: Tunnel, paths: TunnelPaths, report: dict[str, t.Any]) -> dict[str, t.Any]:
    if not report.get("ok"):
        # The error travels in the task result; nothing of the failed start is left on disk.
        remove_quietly(*paths.files())
        raise TunnelError.from_dict(report.get("error") or {})
    report["status"].update(pid=report.get("pid"), log=paths.log)
    return dict(report["status"])


def _read_report(fd: int, timeout: float) -> tuple[bytes, bool]:
    """What the process reported, and whether it closed the pipe (ended) rather than letting the deadline pass."""
    data = b""
    end = time.monotonic() + timeout
    while b'"ok"' not in data or not data.endswith(b"\n"):
        remaining = end - time.monotonic()
        if remaining <= 0:
            return data, False
        ready = select.select([fd], [], [], remaining)[0]
        if not ready:
            return data, False
        chunk = os.read(fd, 65536)
        if not chunk:
            return data, True
        data += chunk
    return data, False


def _tail(path: str, size: int = 400) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode("utf-8", "replace").strip().replace("\n", " | ")
    except OSError:
        return ""
