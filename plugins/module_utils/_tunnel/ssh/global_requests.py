# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Global requests with deadlines, each reply matched to its own request.

Replies come in the order the requests were sent (RFC 4254, section 4), so each want-reply request gets a number and
each reply answers the oldest unanswered one: a keepalive left in flight cannot answer a later tcpip-forward, nor can
the late reply to a request that timed out.
"""

from __future__ import annotations

import math
import threading
import time
import typing as t

try:
    from paramiko.common import cMSG_GLOBAL_REQUEST
    from paramiko.message import Message
    from paramiko.ssh_exception import SSHException
except ImportError:  # pragma: no cover - transport.py reports the missing library
    pass


class _AwaitedReply:
    __slots__ = ("event", "response")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.response: t.Any = None


class NumberedGlobalRequests:
    """Mixed into paramiko's Transport (before it): request() with a deadline, and keepalives that do not wait."""

    active: bool
    _send_user_message: t.Callable[[t.Any], None]
    close: t.Callable[[], None]

    def _init_global_requests(self) -> None:
        self._request_lock = threading.Lock()
        self._requests_sent = 0  # under _request_lock
        self._replies_received = 0  # written by the transport thread only
        self._awaited: dict[int, _AwaitedReply] = {}

    def request(self, kind: str, data: tuple[t.Any, ...] = (), timeout: float = 10.0) -> tuple[bool, t.Any]:
        """Send a want-reply global request; return (answered, response message or None when refused).

        paramiko's own global_request waits forever on a dead peer; this one gives up at the deadline
        (answered=False).
        """
        awaited = _AwaitedReply()
        number = self._send_global_request(kind, data, awaited)
        if number is None:
            return False, None
        deadline = time.monotonic() + timeout
        # Polled, not waited once: a session that ends sends no reply, and its end must not cost the whole timeout.
        while not awaited.event.wait(0.05):
            if not self.active or time.monotonic() >= deadline:
                self._awaited.pop(number, None)
                return False, None
        return True, awaited.response

    def global_request(self, kind: str, data: t.Any = None, wait: bool = True) -> t.Any:
        # paramiko's own would match its reply through completion_event, outside the numbering.
        if not wait:
            return super().global_request(kind, data, wait=False)  # type: ignore[misc]
        return self.request(kind, tuple(data or ()), timeout=math.inf)[1]

    def send_keepalive(self) -> int | None:
        """Send a want-reply keepalive without waiting for it; its number for answered(), None once the session is over.

        The supervisor checks it one interval later instead of blocking on it: one wake-up per interval where a
        waiting request took 2.5 (idle CPU, tests/scale/profile_tunnel_process.py).
        """
        return self._send_global_request("keepalive@openssh.com", ())

    def answered(self, number: int) -> bool:
        """Whether want-reply request ``number`` (from send_keepalive) has had its reply, success or failure."""
        return self._replies_received >= number

    def _send_global_request(self, kind: str, data: tuple[t.Any, ...], awaited: _AwaitedReply | None = None) -> int | None:
        """Number and send one want-reply request; None when the session is over or ends because the write failed."""
        message = Message()
        message.add_byte(cMSG_GLOBAL_REQUEST)
        message.add_string(kind)
        message.add_boolean(True)
        message.add(*data)
        with self._request_lock:
            if not self.active:
                return None
            self._requests_sent += 1
            number = self._requests_sent
            if awaited is not None:
                self._awaited[number] = awaited  # before the send: the reply can arrive before _send_user_message returns
            try:
                self._send_user_message(message)
                return number
            except (OSError, EOFError, SSHException):
                self._awaited.pop(number, None)
        # A failed write can leave the stream mid-packet, and the request numbers would no longer match the replies:
        # the session cannot go on. Its end wakes the supervisor, which reconnects at once.
        self.close()
        return None

    def _parse_request_success(self, m: t.Any) -> None:
        self._reply_received(m)

    def _parse_request_failure(self, m: t.Any) -> None:
        self._reply_received(None)

    def _reply_received(self, response: t.Any) -> None:
        self._replies_received += 1
        awaited = self._awaited.pop(self._replies_received, None)
        if awaited is not None:
            awaited.response = response
            awaited.event.set()
