# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Client side of tunnel processes: find one, talk to it, stop it, clean up after a dead one (spawn.py starts them)."""

from __future__ import annotations

import json
import os
import signal
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import ControlError, TunnelError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process import protocol
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.lock import group_lock
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import (
    GroupPaths,
    TunnelPaths,
    check_state_dir,
    check_state_entry,
    list_tunnel_names,
    process_start_time,
    process_uid,
    read_state_file,
    remove_quietly,
)

KILL_GRACE = 3.0
PROBE_BUDGET = 45.0  # seconds a probe request may take when the caller sets no timeout


class TunnelHandle:
    """What is known about one named tunnel on this host: its state file, its process, its socket."""

    def __init__(self, state_dir: str, name: str) -> None:
        """Reads the state file; refuses (UntrustedState) a directory or entry that is not this user's own."""
        self.paths = TunnelPaths(state_dir, name)
        self.name = name
        self.cut_connections = 0  # set by stop(): connections still active after the drain time, reset
        self.state: dict[str, t.Any] | None = None
        self._socket_present = False
        if not check_state_dir(state_dir):
            return
        raw = read_state_file(self.paths.state)
        self._socket_present = check_state_entry(self.paths.socket, "socket")
        if raw:
            try:
                self.state = json.loads(raw)
            except ValueError:
                self.state = {"corrupt": True}

    @property
    def exists(self) -> bool:
        return self.state is not None or self._socket_present

    @property
    def pid(self) -> int | None:
        if self.state and isinstance(self.state.get("pid"), int):
            return int(self.state["pid"])
        return None

    def process_alive(self) -> bool:
        pid = self.pid
        if pid is None or not self.state:
            return False
        # The same process (start time, despite pid reuse) and this user's: never signal another user's process.
        return process_start_time(pid) == self.state.get("start_time") and process_uid(pid) == os.getuid()

    @property
    def group(self) -> str | None:
        group = (self.state or {}).get("group")
        return str(group) if isinstance(group, str) else None

    def siblings(self) -> list[str]:
        """The other tunnels in this tunnel's live process (a process group's host): what its crash takes down too."""
        if not self.group or not self.process_alive():
            return []
        names = []
        for name in list_tunnel_names(self.paths.dir):
            if name == self.name:
                continue
            other = TunnelHandle(self.paths.dir, name)
            if other.state and other.pid == self.pid and other.state.get("start_time") == (self.state or {}).get("start_time"):
                names.append(name)
        return names

    def request(self, op: str, timeout: float = 15.0, **fields: t.Any) -> dict[str, t.Any]:
        return protocol.call(self.paths.socket, dict(fields, op=op), timeout, f"tunnel {self.name}")

    def inspect(self, probe: bool = False, probe_timeout: float | None = None) -> dict[str, t.Any]:
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
        if self.group:
            base.update(process_group=self.group, shares_process_with=self.siblings())
        if not self.process_alive():
            base.update({"status": "stale", "reason": "the tunnel process is gone but its files remain (killed or crashed)"})
            return base
        try:
            if probe:
                # Probes run at once, each within its own timeout and at most the budget: leave room for the answer.
                budget = probe_timeout if probe_timeout else PROBE_BUDGET
                response = self.request("probe", timeout=budget + 15.0, probe_timeout=budget)
            else:
                response = self.request("status")
        except TunnelError as exc:
            base.update({"status": "stale", "reason": f"the process {self.pid} is alive but does not answer: {exc}"})
            return base
        status = response["status"]
        base.update(status)
        if probe:
            base["probe"] = response.get("probe", [])
        return base

    def stop(self, deadline: float = 10.0) -> bool:
        """Stop the tunnel (drain up to deadline, then force) and remove its files. True if anything existed.

        The process is signalled (SIGTERM, then SIGKILL) only when the tunnel is alone in it: never a process group's
        host that serves other tunnels. A grouped tunnel is locked with its group, so no tunnel joins the host meanwhile.
        """
        if not self.group:
            return self._stop(deadline)
        with group_lock(GroupPaths(self.paths.dir, self.group)):
            return self._stop(deadline)

    def _stop(self, deadline: float) -> bool:
        existed = self.exists
        pid = self.pid if self.process_alive() else None
        self.cut_connections = 0
        if pid is not None:
            start_time = self.state.get("start_time") if self.state else None
            others = self.siblings()
            try:
                # Answered once the tunnel has stopped, with the number of connections it cut after the drain time.
                answer = self.request("stop", timeout=deadline + 10, deadline=deadline, wait=True)
                self.cut_connections = int(answer.get("cut_connections") or 0)
                stopped = bool(answer.get("stopped", True))
            except TunnelError as exc:
                if others:
                    raise self._shared(pid, others, f"its control socket did not answer: {exc}") from exc
                signal_quietly(pid, signal.SIGTERM)
                stopped = False
            if others:
                if not stopped:
                    raise self._shared(pid, others, f"it did not stop within {deadline + 5:g} s")
            elif not _wait_gone(pid, start_time, deadline + KILL_GRACE):
                signal_quietly(pid, signal.SIGKILL)
                _wait_gone(pid, start_time, KILL_GRACE)
        remove_quietly(*self.paths.files())
        return existed

    def _shared(self, pid: int, others: list[str], why: str) -> ControlError:
        return ControlError(
            f"tunnel {self.name} (process group {self.group}) could not be stopped: {why}; its process {pid} also serves "
            f"{', '.join(others)}, so it is not signalled",
            advice=f"stop the whole group (state: absent for {', '.join([self.name, *others])}) or kill {pid}, which takes them all down",
        )


def signal_quietly(pid: int, signum: int) -> None:
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
