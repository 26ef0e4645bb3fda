# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""max_connections: one local user's stalled connections cannot take a listener from everyone else."""

from __future__ import annotations

import socket
import typing as t

import pytest
import socks_client
from engine_helpers import LoopbackServer, echo_handler, echo_roundtrip, wait_until
from test_engine import bound, running, tunnel_for

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.forward_set import DEFAULT_MAX_CONNECTIONS


def _closed_at_once(sock: socket.socket) -> bool:
    """The tunnel closed this connection without forwarding it: end of stream or a reset, not data or a timeout."""
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:  # still open: the tunnel admitted it
        return False


@pytest.mark.parametrize("kind", ["local", "dynamic"])
def test_connections_beyond_max_connections_are_refused_and_counted(sshd: t.Any, kind: str) -> None:
    with LoopbackServer(echo_handler) as echo:
        forwards = {"local_forwards": [f"0:127.0.0.1:{echo.port}"]} if kind == "local" else {"dynamic_forwards": ["127.0.0.1:0"]}
        with running(tunnel_for(sshd, name=f"cap-{kind}", max_connections=3, **forwards)) as engine:
            address = bound(engine)
            runtime = next(iter(engine.forwards.values()))
            stalled = []
            try:
                for _index in range(3):
                    # Connected and then silent, as a local user holding the listener would be.
                    stalled.append(socket.create_connection(address, timeout=10))
                assert wait_until(lambda: runtime.counters.connections_active == 3, 10), runtime.counters.as_dict()
                extra = socket.create_connection(address, timeout=10)
                try:
                    assert _closed_at_once(extra)
                finally:
                    extra.close()
                assert wait_until(lambda: runtime.counters.connections_refused == 1, 10), runtime.counters.as_dict()
                status = engine.status()["forwards"][0]
                assert status["connections_refused"] == 1 and status["connections_active"] == 3
                # Below the cap again, the listener serves the next client as usual.
                stalled.pop().close()
                assert wait_until(lambda: runtime.counters.connections_active == 2, 10), runtime.counters.as_dict()

                def connect() -> socket.socket:
                    client = socket.create_connection(address, timeout=10)
                    if kind == "dynamic":
                        socks_client.client_connect(client, "127.0.0.1", echo.port, version=5)
                    return client

                assert echo_roundtrip(address, b"served below the cap", connect=connect) == b"served below the cap"
            finally:
                for sock in stalled:
                    sock.close()


def test_the_default_and_the_range() -> None:
    assert DEFAULT_MAX_CONNECTIONS == 4096
    for bad in (0, 100001, "many"):
        with pytest.raises(SpecError, match="max_connections"):
            tunnel_for(_FakeSshd(), max_connections=bad)


class _FakeSshd:
    host = "127.0.0.1"
    port = 22
    user = "root"
    client_key = "/nonexistent/key"
    known_hosts = "/nonexistent/known_hosts"

    def hop(self) -> dict[str, t.Any]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "private_key_file": self.client_key,
            "known_hosts_file": self.known_hosts,
            "use_agent": False,
        }
