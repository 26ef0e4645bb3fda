# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Client side of tunnel processes: spawn one, talk to it, find it, stop it, clean up after a dead one."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils import _daemon
from ansible_collections.burrow.ssh.plugins.module_utils._errors import ControlError, TunnelError
from ansible_collections.burrow.ssh.plugins.module_utils._paths import (
    TunnelPaths,
    ensure_state_dir,
    list_tunnel_names,
    process_start_time,
    read_text,
    remove_quietly,
)
from ansible_collections.burrow.ssh.plugins.module_utils._spec import Tunnel

KILL_GRACE = 3.0


class TunnelHandle:
    """What is known about one named tunnel on this host: its state file, its process, its socket."""

    def __init__(self, state_dir: str, name: str) -> None:
        self.paths = TunnelPaths(state_dir, name)
        self.name = name
        raw = read_text(self.paths.state)
        self.state: dict[str, t.Any] | None = None
        if raw:
            try:
                self.state = json.loads(raw)
            except ValueError:
                self.state = {"corrupt": True}

    @property
    def exists(self) -> bool:
        return self.state is not None or os.path.exists(self.paths.socket)

    @property
    def pid(self) -> int | None:
        if self.state and isinstance(self.state.get("pid"), int):
            return int(self.state["pid"])
        return None

    def process_alive(self) -> bool:
        pid = self.pid
        if pid is None or not self.state:
            return False
        return process_start_time(pid) == self.state.get("start_time")

    def request(self, op: str, timeout: float = 15.0, **fields: t.Any) -> dict[str, t.Any]:
        payload = dict(fields, op=op)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self.paths.socket)
            sock.sendall(json.dumps(payload).encode() + b"\n")
            data = _daemon.read_line(sock)
        except (OSError, ValueError) as exc:
            raise ControlError(f"tunnel {self.name}: control socket {self.paths.socket} did not answer: {exc.strerror or exc}") from exc
        finally:
            sock.close()
        try:
            response = json.loads(data)
        except ValueError as exc:
            raise ControlError(f"tunnel {self.name}: unreadable answer on the control socket") from exc
        if not response.get("ok"):
            raise TunnelError.from_dict(response.get("error") or {})
        return response

    def inspect(self, probe: bool = False) -> dict[str, t.Any]:
        """A report: status up | reconnecting | down | stale | absent, plus what the process says."""
        if not self.exists:
            return {"name": self.name, "status": "absent"}
        if self.state is None:
            return {"name": self.name, "status": "stale", "socket": self.paths.socket, "reason": "a control socket was left behind without a state file"}
        base: dict[str, t.Any] = {
            "name": self.name,
            "pid": self.pid,
            "state_file": self.paths.state,
            "socket": self.paths.socket,
            "log": self.paths.log,
            "digest": (self.state or {}).get("digest"),
            "spec": (self.state or {}).get("spec"),
        }
        if not self.process_alive():
            base.update({"status": "stale", "reason": "the tunnel process is gone but its files remain (killed or crashed)"})
            return base
        try:
            response = self.request("probe" if probe else "status")
        except TunnelError as exc:
            base.update({"status": "stale", "reason": f"the process {self.pid} is alive but does not answer: {exc}"})
            return base
        status = response["status"]
        base.update(status)
        if probe:
            base["probe"] = response.get("probe", [])
        return base

    def stop(self, deadline: float = 10.0) -> bool:
        """Stop the process (drain up to deadline, then force) and remove its files. True if anything existed."""
        existed = self.exists
        pid = self.pid if self.process_alive() else None
        if pid is not None:
            try:
                self.request("stop", timeout=5, deadline=deadline)
            except TunnelError:
                _signal(pid, signal.SIGTERM)
            if not _wait_gone(pid, self.state.get("start_time") if self.state else None, deadline + KILL_GRACE):
                _signal(pid, signal.SIGKILL)
                _wait_gone(pid, self.state.get("start_time") if self.state else None, KILL_GRACE)
        remove_quietly(self.paths.state, self.paths.socket, self.paths.log, self.paths.rotated_log)
        return existed


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, start_time: int | None, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if process_start_time(pid) != start_time or start_time is None:
            return True
        time.sleep(0.05)
    return process_start_time(pid) != start_time


def list_handles(state_dir: str) -> list[TunnelHandle]:
    return [TunnelHandle(state_dir, name) for name in list_tunnel_names(state_dir)]


def spawn(tunnel: Tunnel, state_dir: str, owner: dict[str, t.Any] | None = None, timeout: float | None = None) -> dict[str, t.Any]:
    """Start a detached tunnel process and wait until it reports its forwards up, or why not.

    Double fork + setsid so the process outlives the module and is not a child of Ansible; stdio on
    /dev/null and every other descriptor closed, or Ansible would wait for the module's pipes forever.
    Secrets reach the child in memory (the fork), never in argv, environment or files.
    """
    state_dir = ensure_state_dir(state_dir)
    paths = TunnelPaths(state_dir, tunnel.name)
    if timeout is None:
        timeout = tunnel.connect_timeout * (len(tunnel.hops) + 1) * 2 + 10
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
            code = _daemon.serve(tunnel, paths, write_fd, owner)
        except BaseException:  # noqa: BLE001 - a child must never return into the caller's code
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        os.waitpid(pid, 0)
        lines = _read_report(read_fd, timeout).splitlines()
    finally:
        os.close(read_fd)
    messages = [json.loads(line) for line in lines if line.strip()]
    report = next((message for message in messages if "ok" in message), None)
    if report is None:
        daemon_pid = next((message["starting"] for message in messages if "starting" in message), None)
        if daemon_pid:
            _signal(int(daemon_pid), signal.SIGKILL)
        remove_quietly(paths.state, paths.socket)
        raise ControlError(f"tunnel {tunnel.name}: the tunnel process did not report within {timeout:g} s and was killed; see {paths.log}")
    if not report.get("ok"):
        # The error travels in the task result; nothing of the failed start is left on disk.
        remove_quietly(paths.state, paths.socket, paths.log, paths.rotated_log)
        raise TunnelError.from_dict(report.get("error") or {})
    report["status"]["pid"] = report.get("pid")
    return report["status"]


def _read_report(fd: int, timeout: float) -> bytes:
    data = b""
    end = time.monotonic() + timeout
    while b'"ok"' not in data or not data.endswith(b"\n"):
        remaining = end - time.monotonic()
        if remaining <= 0:
            break
        ready = select.select([fd], [], [], remaining)[0]
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data
