# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The lab itself is what production looks like: only the bastion reaches the database, the edge is unreachable."""

from __future__ import annotations

import socket
import typing as t

import pytest
from engine_helpers import LoopbackServer, echo_handler, echo_roundtrip
from topology import PG_PORT, Lab, connect_in, run

pytestmark = pytest.mark.needs_root


def _refused(address: tuple[str, int], netns: str | None = None) -> bool:
    try:
        sock = connect_in(netns, address, timeout=2) if netns else socket.create_connection(address, timeout=2)
    except OSError:
        return True
    sock.close()
    return False


def test_only_the_bastion_reaches_the_database(lab: Lab) -> None:
    # controller: no route to the db subnet through the lab (never probed from here: the host's default route leads outside)
    assert lab.root_veth not in run(["ip", "route", "get", lab.db]).stdout
    assert lab.db_ns not in run(["ip", "route", "show"]).stdout
    # bastion: PostgreSQL, sshd and echo answer
    for port in (PG_PORT, lab.db_sshd.port, lab.db_echo_port):
        assert not _refused((lab.db, port), lab.bastion_ns), port
    # edge: routed through the bastion but dropped by the db namespace's nftables (only 10.203.2.1 is accepted)
    assert _refused((lab.db, PG_PORT), lab.edge_ns)
    sock = connect_in(lab.bastion_ns, (lab.db, lab.db_echo_port))
    sock.sendall(b"db echo")
    assert sock.recv(16) == b"db echo"
    sock.close()


def test_edge_reaches_out_through_nat_but_accepts_nothing(lab: Lab) -> None:
    peers: list[t.Any] = []

    def handler(conn: socket.socket) -> None:
        peers.append(conn.getpeername()[0])
        echo_handler(conn)

    with LoopbackServer(handler, host=lab.ctl) as server:
        assert echo_roundtrip(("unused", 0), b"from edge", connect=lambda: connect_in(lab.edge_ns, (lab.ctl, server.port))) == b"from edge"
    assert peers == [lab.bastion], "edge traffic is masqueraded as the bastion's address"
    # nothing gets in: a listener on the edge host is unreachable from the bastion and the controller
    listener = connect_in.__globals__["in_netns"](lab.edge_ns, _listen, lab.edge)
    try:
        port = listener.getsockname()[1]
        assert _refused((lab.edge, port), lab.bastion_ns)
    finally:
        listener.close()


def _listen(host: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((host, 0))
    sock.listen(4)
    return sock
