# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Where this user's broker lives (socket, locks, log in the state directory) and which copy of the code it runs."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import time

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import ControlError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import default_state_dir, ensure_state_dir, process_start_time
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.protocol import PROTOCOL


def collection_root() -> str:
    """The directory that contains `ansible_collections/` for this copy of the collection."""
    here = os.path.abspath(__file__)
    parts = here.split(os.sep)
    # .../ansible_collections/<namespace>/<name>/plugins/plugin_utils/_broker/paths.py
    if len(parts) < 8 or parts[-7] != "ansible_collections":
        raise ControlError(f"cannot locate the collection root from {here}", advice="install burrow.ssh as a collection (ansible-galaxy collection install)")
    return os.sep.join(parts[:-7]) or os.sep


def broker_identity() -> str:
    """One broker per user, per copy and version of this code: an upgraded collection never talks to an old broker.

    The broker runs the collection's plugin_utils and module_utils, so all of their sources make up its version: each
    one's path, size and modification time (an install, upgrade, checkout or edit changes them). Not their contents:
    every task's worker computes this, and reading the 440 kB of sources cost it more than the rest of its broker client.
    """
    digest = hashlib.sha256()
    plugins = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    digest.update(f"{PROTOCOL}:{os.getuid()}:{plugins}:".encode())
    for tree in ("plugin_utils", "module_utils"):
        root = os.path.join(plugins, tree)
        for directory, subdirectories, names in sorted(os.walk(root)):
            subdirectories.sort()
            for name in sorted(names):
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    with contextlib.suppress(OSError):
                        info = os.stat(path)
                        digest.update(f"{os.path.relpath(path, plugins)}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:12]


class BrokerPaths:
    def __init__(self, state_dir: str | None = None) -> None:
        self.dir = ensure_state_dir(state_dir or default_state_dir())
        ident = broker_identity()
        self.socket = os.path.join(self.dir, f"broker-{ident}.sock")
        self.lock = os.path.join(self.dir, f"broker-{ident}.lock")
        self.spawn_lock = os.path.join(self.dir, f"broker-{ident}.spawn")
        self.log = os.path.join(self.dir, f"broker-{ident}.log")
        if len(self.socket.encode()) > 103:
            raise ControlError(f"state directory {self.dir} is too long for a Unix socket path", advice="set BURROW_STATE_DIR to a shorter directory")

    def connection_audit(self, session_name: str) -> str:
        """The audit file of a session's forwards; a name with characters a file name should not carry gets a digest."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", session_name)[:64].lstrip(".") or "session"
        if safe != session_name:
            safe += "-" + hashlib.sha256(session_name.encode()).hexdigest()[:8]
        return os.path.join(self.dir, f"connection-{safe}.audit.jsonl")


def owner_identity(pid: int) -> list[int]:
    return [pid, process_start_time(pid) or 0]


def flock_with_deadline(fd: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError as exc:
            if time.monotonic() >= deadline:
                raise ControlError("timed out waiting for another process starting the session broker") from exc
            time.sleep(0.01)
