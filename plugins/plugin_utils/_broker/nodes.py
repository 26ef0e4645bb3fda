# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The broker's authenticated transports: one node per hop of a chain; hosts behind one bastion share its node."""

from __future__ import annotations

import threading
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import process_start_time
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.session import DEFAULT_IDLE_TIMEOUT

# A persisted session is never handed out this close to its expiry (ansible/ansible#81777: with ControlPersist, a task
# that starts as the master expires fails): max(5 s, 10 % of burrow_persist), at most half of it.
PERSIST_MARGIN_MIN = 5.0
PERSIST_MARGIN_SHARE = 0.1


def persist_margin(persist: float) -> float:
    return min(max(PERSIST_MARGIN_MIN, PERSIST_MARGIN_SHARE * persist), persist / 2)


def owner_alive(owner: tuple[int, int]) -> bool:
    pid, started = owner
    current = process_start_time(pid)
    if current is None:
        return False
    return not started or current == started


class Node:
    """One authenticated transport: a hop of some chain. Targets are leaves; bastions may have many children."""

    def __init__(self, key: str, hop: t.Any, transport: t.Any, parent: Node | None) -> None:
        self.key = key
        self.hop = hop
        self.transport = transport
        self.parent = parent
        # Node objects, not keys: a retired node's replacement has the same key.
        self.children: set[Node] = set()
        self.owners: set[tuple[int, int]] = set()
        self.idle_timeout = DEFAULT_IDLE_TIMEOUT
        # burrow_persist: seconds the session outlives the last ansible-playbook that used it (0: it does not).
        self.persist = 0.0
        # monotonic time at which the broker saw every owner gone (None while one is alive or none is known).
        self.orphaned_at: float | None = None
        self.last_used = time.monotonic()
        self.busy = 0
        self.uses = 0
        self.created = time.time()
        self.sftp: t.Any = None
        self.sftp_lock = threading.Lock()
        self.forwards: t.Any = None
        self.forwards_lock = threading.Lock()
        self.closed = False

    @property
    def label(self) -> str:
        return str(self.hop.label())

    def chain(self) -> list[Node]:
        nodes: list[Node] = []
        current: Node | None = self
        while current is not None:
            nodes.append(current)
            current = current.parent
        return list(reversed(nodes))

    def touch(self, owner: tuple[int, int] | None, idle_timeout: float | None, persist: float | None = None) -> None:
        now = time.monotonic()
        for node in self.chain():
            node.last_used = now
            if owner is not None:
                node.owners.add(owner)
                node.orphaned_at = None
            if idle_timeout is not None:
                node.idle_timeout = idle_timeout
            if persist is not None:
                node.persist = persist

    def expires_in(self, now: float) -> float | None:
        """Seconds left of a persisted session whose owners have all exited; None while it has no such deadline."""
        if self.orphaned_at is None or self.persist <= 0:
            return None
        return self.orphaned_at + self.persist - now

    def near_expiry(self, now: float) -> bool:
        left = self.expires_in(now)
        return left is not None and left <= persist_margin(self.persist)

    def sftp_client(self) -> t.Any:
        with self.sftp_lock:
            if self.sftp is None:
                self.sftp = self.transport.open_sftp_client()
            return self.sftp

    def forward_connections(self) -> int:
        if self.forwards is None:
            return 0
        return self.forwards.connections_active()
