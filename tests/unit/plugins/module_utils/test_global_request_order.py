# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Each global request reply answers the request it belongs to: a keepalive left in flight, or a request that timed
out, never answers a later tcpip-forward (BurrowTransport numbers want-reply requests; replies come in order)."""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
import threading
import time
import typing as t

import paramiko
import pytest

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import BurrowTransport

FORWARDED_PORT = 40123
DEADLINE = 10.0


class _Server(paramiko.ServerInterface):
    """Refuses keepalives as sshd does, grants tcpip-forward with a port, and holds each reply until released."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.forward_held: threading.Event | None = None  # when set to an Event, the tcpip-forward reply waits for it
        self.release = {"keepalive@openssh.com": threading.Event(), "slow@burrow.test": threading.Event()}
        self.received: list[str] = []

    def unread_bytes(self) -> int:
        """What the client sent that the server's transport thread has not read yet (it is held in a reply)."""
        return _unread(self.sock)

    def get_allowed_auths(self, username: str) -> str:
        return "none"

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_global_request(self, kind: str, msg: paramiko.Message) -> bool | tuple[int, ...]:
        self.received.append(kind)
        if kind in self.release:
            # The server's transport thread stops here: every later reply waits too, in order, as on any SSH server.
            self.release[kind].wait(DEADLINE)
        return False

    def check_port_forward_request(self, address: str, port: int) -> int:
        self.received.append("tcpip-forward")
        if self.forward_held is not None:
            self.forward_held.wait(DEADLINE)
        return FORWARDED_PORT


def _unread(sock: socket.socket) -> int:
    return struct.unpack("i", fcntl.ioctl(sock, termios.FIONREAD, b"\0\0\0\0"))[0]


@pytest.fixture
def session() -> t.Iterator[tuple[BurrowTransport, _Server]]:
    ours, theirs = socket.socketpair()
    server = _Server(theirs)
    server_transport = paramiko.Transport(theirs)
    server_transport.add_server_key(paramiko.ECDSAKey.generate())
    server_transport.start_server(event=threading.Event(), server=server)  # with an event it does not block
    client = BurrowTransport(ours)
    client.start_client(timeout=DEADLINE)
    client.auth_none("user")
    yield client, server
    for event in server.release.values():
        event.set()
    if server.forward_held is not None:
        server.forward_held.set()
    client.close()
    server_transport.close()
    ours.close()
    theirs.close()


def _wait_until(condition: t.Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "condition not met within the deadline"
        time.sleep(0.01)


def test_a_keepalive_in_flight_does_not_answer_a_later_request(session: tuple[BurrowTransport, _Server]) -> None:
    client, server = session
    keepalive = client.send_keepalive()
    assert keepalive is not None
    _wait_until(lambda: server.received == ["keepalive@openssh.com"])
    assert not client.answered(keepalive), "the server has not replied yet"
    result: list[tuple[bool, t.Any]] = []
    requester = threading.Thread(target=lambda: result.append(client.request("tcpip-forward", ("127.0.0.1", 0), timeout=DEADLINE)))
    requester.start()
    server.release["keepalive@openssh.com"].set()  # the keepalive's failure reply goes first, then the forward's success
    requester.join(DEADLINE)
    assert client.answered(keepalive)
    assert result, "the request did not return"
    answered, response = result[0]
    assert answered and response is not None, "the keepalive's refusal was taken as the forward's reply"
    assert response.get_int() == FORWARDED_PORT


def test_the_late_reply_of_a_timed_out_request_does_not_answer_the_next(session: tuple[BurrowTransport, _Server]) -> None:
    client, server = session
    server.forward_held = threading.Event()
    assert client.request("slow@burrow.test", timeout=0.2) == (False, None)
    result: list[tuple[bool, t.Any]] = []
    requester = threading.Thread(target=lambda: result.append(client.request("tcpip-forward", ("127.0.0.1", 0), timeout=DEADLINE)))
    requester.start()
    _wait_until(lambda: server.unread_bytes() > 0)  # the forward is on the wire before the late reply is sent
    server.release["slow@burrow.test"].set()
    # The late refusal is sent and read by the client while the forward's own reply is still held by the server.
    _wait_until(lambda: server.received[-1:] == ["tcpip-forward"] and _unread(client.sock) == 0)
    requester.join(0.5)
    assert not result, f"the forward returned {result} before its reply was sent: the late refusal answered it"
    server.forward_held.set()
    requester.join(DEADLINE)
    assert result, "the request did not return"
    answered, response = result[0]
    assert answered and response is not None
    assert response.get_int() == FORWARDED_PORT


def test_a_refused_request_is_answered_with_no_response(session: tuple[BurrowTransport, _Server]) -> None:
    client, server = session
    server.release["keepalive@openssh.com"].set()
    assert client.request("no-such-request@burrow.test", timeout=DEADLINE) == (True, None)
    keepalive = client.send_keepalive()
    assert keepalive is not None
    _wait_until(lambda: client.answered(keepalive))


def test_no_keepalive_is_sent_once_the_session_is_over(session: tuple[BurrowTransport, _Server]) -> None:
    client, _server = session
    client.close()
    assert client.send_keepalive() is None
    assert client.request("tcpip-forward", ("127.0.0.1", 0), timeout=DEADLINE) == (False, None)


def test_a_keepalive_that_cannot_be_written_ends_the_session(session: tuple[BurrowTransport, _Server]) -> None:
    """A failed write may leave half a packet on the wire: the session ends (and so reconnects) instead of going on."""
    client, _server = session
    client.sock.shutdown(socket.SHUT_WR)  # every write from now on fails with EPIPE
    assert client.send_keepalive() is None
    assert not client.active


def test_a_request_that_cannot_be_written_ends_the_session_unanswered(session: tuple[BurrowTransport, _Server]) -> None:
    client, _server = session
    client.sock.shutdown(socket.SHUT_WR)
    assert client.request("tcpip-forward", ("127.0.0.1", 0), timeout=DEADLINE) == (False, None)
    assert not client.active
    assert client._awaited == {}, "the unsent request's waiter is left behind"
