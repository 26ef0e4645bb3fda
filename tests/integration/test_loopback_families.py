# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 16 item 7: localhost and the default bind hold 127.0.0.1 and ::1 on one port, against real sshd.

Before: the default bound 127.0.0.1 only, so a local user holding [::1]:P received the clients of localhost:P.
"""

from __future__ import annotations

import socket
import typing as t

import pytest
from engine_helpers import LoopbackServer, echo_handler, echo_roundtrip
from test_engine import running, tunnel_for

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.engine import TunnelEngine
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import PortInUse


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _ipv6_loopback(), reason="this host has no IPv6 loopback")


@pytest.fixture(scope="module")
def echo() -> t.Iterator[LoopbackServer]:
    with LoopbackServer(echo_handler) as server:
        yield server


@pytest.mark.parametrize("listen", ["0", "localhost:0", {"listen_port": 0}, {"listen_port": 0, "listen_host": "localhost"}])
def test_both_families_are_bound_on_one_port(sshd: t.Any, echo: LoopbackServer, listen: t.Any) -> None:
    forward = f"{listen}:127.0.0.1:{echo.port}" if isinstance(listen, str) else {**listen, "dest_host": "127.0.0.1", "dest_port": echo.port}
    with running(tunnel_for(sshd, local_forwards=[forward])) as engine:
        status = engine.status()["forwards"][0]
        assert status["bound_hosts"] == ["127.0.0.1", "::1"], status
        port = status["bound_port"]
        for address in ("127.0.0.1", "::1"):
            assert echo_roundtrip((address, port), b"through " + address.encode()) == b"through " + address.encode()


def test_an_explicit_family_binds_only_it(sshd: t.Any, echo: LoopbackServer) -> None:
    with running(tunnel_for(sshd, local_forwards=[f"127.0.0.1:0:127.0.0.1:{echo.port}"])) as engine:
        assert engine.status()["forwards"][0]["bound_hosts"] == ["127.0.0.1"]


def test_a_local_user_holding_ipv6_loopback_cannot_steal_connections(sshd: t.Any, echo: LoopbackServer) -> None:
    thief = socket.socket(socket.AF_INET6)
    thief.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    thief.bind(("::1", 0))
    thief.listen(8)
    port = thief.getsockname()[1]
    try:
        # A fixed port: refused, naming ::1 (ExitOnForwardFailure), instead of serving IPv4 while the thief has IPv6.
        with pytest.raises(PortInUse, match=rf"\[::1\]:{port}"):
            TunnelEngine(tunnel_for(sshd, local_forwards=[f"{port}:127.0.0.1:{echo.port}"])).start()
        with pytest.raises(PortInUse, match=rf"\[::1\]:{port}"):
            TunnelEngine(tunnel_for(sshd, dynamic_forwards=[f"localhost:{port}"])).start()
        # 127.0.0.1:port is free again: nothing was left bound by the refused starts.
        with socket.socket() as check:
            check.bind(("127.0.0.1", port))
    finally:
        thief.close()
