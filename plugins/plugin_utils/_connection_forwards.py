# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Forwards carried by a burrow.ssh.tunneled connection: the tunnel engine's forwards on a chain the broker owns."""

from __future__ import annotations

import contextlib
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._spec import (
    Forward,
    SpecError,
    Tunnel,
    _check_listeners,
    parse_local_forward,
    parse_remote_forward,
)

OPTION_NAMES = {"local": "burrow_local_forwards", "remote": "burrow_remote_forwards", "reverse_socks": "burrow_reverse_socks"}


def parse_declared(declared: t.Mapping[str, t.Sequence[t.Any]]) -> list[Forward]:
    """The connection's forwards from the three host variables; raises SpecError naming the variable and index."""
    forwards: list[tuple[str, Forward]] = []
    for kind, option in OPTION_NAMES.items():
        for index, item in enumerate(declared.get(kind) or []):
            field = f"{option}[{index}]"
            if kind == "local":
                forward = parse_local_forward(item, field)
            else:
                value = str(item) if isinstance(item, int) else item
                forward = parse_remote_forward(value, field)
                if kind == "reverse_socks" and forward.destination is not None:
                    raise SpecError(field, item, "is a SOCKS listener: give [bind:]port only (use burrow_remote_forwards for a fixed destination)")
            forwards.append((field, forward))
    _check_listeners(forwards)
    return [forward for _field, forward in forwards]


def _engine_class() -> t.Any:
    # Imported late: the engine needs paramiko, which Ansible's worker processes never import.
    from ansible_collections.burrow.ssh.plugins.module_utils._engine import TunnelEngine
    from ansible_collections.burrow.ssh.plugins.module_utils._ssh import Chain

    class ChainForwards(TunnelEngine):
        """The engine's forwards (listeners, remote listeners, SOCKS, relays) on a chain it does not own.

        No supervisor and no reconnect: liveness and reconnection are the broker's business. A dead session is
        dropped with its forwards and the next task opens a new one, forwards included.
        """

        @classmethod
        def for_node(cls, node: t.Any, connect_timeout: float) -> TunnelEngine:
            nodes = node.chain()
            hops = tuple(item.hop for item in nodes)
            tunnel = Tunnel(name="connection", hops=hops, forwards=(), connect_timeout=max(1, int(connect_timeout)), reconnect=False)
            engine = cls(tunnel)
            engine.chain = Chain(hops=hops, transports=[item.transport for item in nodes])
            node.transport._tcp_handler = engine._dispatch_remote
            engine.connected_at = time.time()
            engine.connected.set()
            engine.state = "up"
            return engine

        def close_forwards(self) -> None:
            self.stopping.set()
            chain = self.chain
            for runtime in list(self.forwards.values()):
                if runtime.forward.kind == "remote" and chain is not None and chain.target.is_active():
                    with contextlib.suppress(Exception):
                        runtime.cancel_remote(chain.target)
                runtime.close()
            self.forwards = {}
            self.connected.clear()
            self.state = "stopped"

    return ChainForwards


_CLASS: t.Any = None


def chain_forwards_class() -> t.Any:
    global _CLASS
    if _CLASS is None:
        _CLASS = _engine_class()
    return _CLASS
