# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Start a detached tunnel process and wait for its start report (ExitOnForwardFailure semantics)."""

from __future__ import annotations

import json
import os
import select
import signal
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import ControlError, TunnelError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process import daemon
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.control import signal_quietly
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import TunnelPaths, ensure_state_dir, remove_quietly
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Tunnel


def spawn(tunnel: Tunnel, state_dir: str, owner: dict[str, t.Any] | None = None, timeout: float | None = None) -> dict[str, t.Any]:
    """Start a detached tunnel process and wait until it reports its forwards up, or why not.

    Double fork + setsid so the process outlives the module and is not a child of Ansible; stdio on
    /dev/null and every other descriptor closed, or Ansible would wait for the module's pipes forever.
    Secrets reach the child in memory (the fork), never in argv, environment or files.
    """
    state_dir = ensure_state_dir(state_dir)
    paths = TunnelPaths(state_dir, tunnel.name)
    if timeout is None:
        timeout = tunnel.effective_connect_timeout * (len(tunnel.hops) + 1) * 2 + 10
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
            os.closerange(3, write_fd)
            os.closerange(write_fd + 1, 65536)
            code = daemon.serve(tunnel, paths, write_fd, owner)
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
                advice=f"check that {state_dir} is writable and has free space (df -h {state_dir})",
            )
        raise ControlError(
            f"tunnel {tunnel.name}: the tunnel process did not report within {timeout:g} s and was killed" + (f"; its log said: {log_tail}" if log_tail else "")
        )
    if not report.get("ok"):
        # The error travels in the task result; nothing of the failed start is left on disk.
        remove_quietly(*paths.files())
        raise TunnelError.from_dict(report.get("error") or {})
    report["status"].update(pid=report.get("pid"), log=paths.log)
    return report["status"]


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
