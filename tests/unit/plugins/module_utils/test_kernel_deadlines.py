# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A settled session's socket: blocking (no poll before each recv and send), with the kernel ending a wait at the deadline."""

from __future__ import annotations

import errno
import socket
import time

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.packetizer import BatchPacketizer
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import kernel_deadlines


def test_a_read_with_nothing_to_read_ends_at_the_kernel_deadline_with_eagain() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert kernel_deadlines(ours, 0.2)
        assert ours.gettimeout() is None, "a Python timeout would poll before every recv"
        started = time.monotonic()
        try:
            ours.recv(10)
        except OSError as exc:
            assert exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
        else:
            raise AssertionError("recv returned with nothing sent")
        assert time.monotonic() - started >= 0.15
        theirs.sendall(b"there")
        assert ours.recv(10) == b"there"


def test_the_packetizer_takes_the_kernel_deadline_as_its_read_timeout() -> None:
    """A timed-out wait goes through paramiko's timeout handling (here: a closed packetizer ends the read with EOFError)."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        kernel_deadlines(ours, 0.1)
        reader = BatchPacketizer(ours)
        checks = []
        reader._check_keepalive = lambda: checks.append(time.monotonic()) or (len(checks) >= 2 and reader.close())  # type: ignore[method-assign]
        try:
            reader.read_all(4)
        except EOFError:
            pass
        else:
            raise AssertionError("read_all returned with nothing sent")
        assert len(checks) == 2, "each deadline passed is one timeout for the packetizer"
