# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""sock_diag names the owner of a loopback client socket as /proc/net/tcp does, in one request (sock_diag.py)."""

from __future__ import annotations

import contextlib
import os
import socket
import typing as t

import pytest

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel import audit
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.sock_diag import socket_owner


@contextlib.contextmanager
def connected(family: int, host: str) -> t.Iterator[tuple[socket.socket, socket.socket, socket.socket]]:
    try:
        listener = socket.socket(family)
        listener.bind((host, 0))
    except OSError as exc:
        pytest.skip(f"no {host} here: {exc}")
    with listener:
        listener.listen()
        client = socket.create_connection(listener.getsockname()[:2])
        accepted, _address = listener.accept()
        with client, accepted:
            yield listener, client, accepted


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_the_client_socket_is_found_with_its_uid_and_inode(family: int, host: str) -> None:
    with connected(family, host) as (listener, client, accepted):
        client_address, server_address = client.getsockname()[:2], listener.getsockname()[:2]
        owner = socket_owner(client_address, server_address)
        inode = os.stat(f"/proc/self/fd/{client.fileno()}").st_ino
        assert owner == (os.getuid(), str(inode))
        assert owner == audit._tcp_owner_from_proc(client_address, server_address)
        # The accepted end, asked the other way round, is another socket (its own inode).
        assert socket_owner(accepted.getsockname()[:2], accepted.getpeername()[:2]) == (os.getuid(), str(os.stat(f"/proc/self/fd/{accepted.fileno()}").st_ino))


def test_a_socket_that_is_gone_is_none() -> None:
    with connected(socket.AF_INET, "127.0.0.1") as (listener, client, _accepted):
        port = client.getsockname()[1]
        server_address = listener.getsockname()[:2]
        client.close()
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            unused = other.getsockname()[1]
        assert socket_owner(("127.0.0.1", unused), server_address) is None
        assert socket_owner(("127.0.0.1", port), ("127.0.0.2", server_address[1])) is None


def test_tcp_owner_answers_for_a_v4_mapped_peer_address() -> None:
    """The accepted side of a dual-stack listener sees ::ffff:127.0.0.1; the client's own socket is plain IPv4."""
    with connected(socket.AF_INET, "127.0.0.1") as (listener, client, _accepted):
        port = client.getsockname()[1]
        owner = audit.tcp_owner(("::ffff:127.0.0.1", port), ("::ffff:127.0.0.1", listener.getsockname()[1]))
        assert owner == (os.getuid(), str(os.stat(f"/proc/self/fd/{client.fileno()}").st_ino))
