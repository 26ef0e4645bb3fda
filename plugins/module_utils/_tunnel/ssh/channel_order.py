# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Nothing of a channel is sent after its CHANNEL_CLOSE: OpenSSH ends the whole session for that.

paramiko checks ``Channel.closed`` under the channel's lock, then releases the lock and sends (holding it across the
send could deadlock a key exchange). When the server closes the channel in between (the far end of a forward went
away while we were still sending to it), the transport thread answers with our CLOSE, which can reach the wire
before the data or EOF the other thread already built. sshd frees the channel once both CLOSEs are exchanged and
answers anything more for it with ``Disconnecting: data packet referred to nonexistent channel N`` (or ``ieof
packet``), taking every forward and session of the connection down with it. Seen with iperf3 through -L and -R
(it closes its data connection while the client still sends): the session died after 5 to 21 transfers of 64 MiB.

The fix rides on the lock paramiko already holds for every user message (``clear_to_send_lock``): the transport
sends a channel's CLOSE and the channel's data under it, so checking under it whether that CLOSE went out decides
the order exactly.
"""

from __future__ import annotations

import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.library import paramiko  # first: without invoke (library.py)

try:
    from paramiko.common import cMSG_CHANNEL_CLOSE, cMSG_CHANNEL_DATA, cMSG_CHANNEL_EOF, cMSG_CHANNEL_WINDOW_ADJUST
    from paramiko.message import Message
    from paramiko.transport import ChannelMap

    _ChannelBase: t.Any = paramiko.Channel
    _MessageBase: t.Any = Message
    _ChannelMapBase: t.Any = ChannelMap
except ImportError:  # pragma: no cover - the transport module reports the missing library
    _ChannelBase = _MessageBase = _ChannelMapBase = object


class ChannelMessage(_MessageBase):  # type: ignore[misc,valid-type]
    """A message about one channel, so that the transport can tell, as it sends it, whether that channel's CLOSE went out."""

    def __init__(self, channel: t.Any, kind: bytes) -> None:
        super().__init__()
        self.channel = channel
        self.kind = kind
        self.add_byte(kind)
        self.add_int(channel.remote_chanid)


class ChannelData:
    """CHANNEL_DATA packets for one channel, already cut to the window and packet size, that the transport writes at once.

    Sent as a user message like a ChannelMessage, so the kex wait, the transport thread's held messages and the CLOSE
    ordering of send_in_order apply to it unchanged; the packetizer builds the packets (packetizer.py).
    """

    def __init__(self, channel: t.Any, chunks: list[memoryview]) -> None:
        self.channel = channel
        self.chunks = chunks
        self.kind = cMSG_CHANNEL_DATA


class OrderedChannel(_ChannelBase):  # type: ignore[misc,valid-type]
    """paramiko's Channel, whose data, EOF and window adjustments are ChannelMessages (see the module docstring)."""

    close_sent = False  # set by the transport, under its send lock, once this channel's CLOSE is on the wire

    def send(self, s: bytes) -> int:
        return int(self._send(s, ChannelMessage(self, cMSG_CHANNEL_DATA)))

    def sendall(self, s: bytes) -> None:
        # Several packets per write (transport.send_channel_data), not paramiko's send() per packet on a re-sliced buffer.
        self.transport.send_channel_data(self, s)

    def _send_eof(self) -> t.Any:
        # Called with the channel lock held, as paramiko's is.
        if self.eof_sent:
            return None
        self.eof_sent = True
        self._log(paramiko.common.DEBUG, f"EOF sent ({self._name})")
        return ChannelMessage(self, cMSG_CHANNEL_EOF)

    def _close_internal(self) -> tuple[t.Any, t.Any]:
        eof, close = super()._close_internal()
        if close is None:
            return eof, close
        return eof, ChannelMessage(self, cMSG_CHANNEL_CLOSE)


def window_adjust(channel: t.Any, amount: int) -> t.Any:
    """The WINDOW_ADJUST message adding ``amount`` bytes to ``channel``'s receive window."""
    message = ChannelMessage(channel, cMSG_CHANNEL_WINDOW_ADJUST)
    message.add_int(amount)
    return message


def send_in_order(message: ChannelMessage | ChannelData, send: t.Callable[[t.Any], None]) -> None:
    """``send(message)`` unless the channel's CLOSE is already out; call with the transport's send lock held.

    Data after the CLOSE raises, as paramiko's send on a closed channel does; EOF and window adjustments are dropped
    (the channel is gone: they mean nothing any more).
    """
    channel = message.channel
    if channel.close_sent:
        if message.kind == cMSG_CHANNEL_DATA:
            raise OSError("Socket is closed")
        return
    send(message)
    if message.kind == cMSG_CHANNEL_CLOSE:
        channel.close_sent = True


class OrderingChannelMap(_ChannelMapBase):  # type: ignore[misc,valid-type]
    """paramiko's channel map, making each channel an OrderedChannel as it is registered, before any thread uses it.

    paramiko builds its Channel objects inline (open_channel, the channel-open parser); registration is the one step
    every one of them passes before it is handed to anybody.
    """

    def put(self, chanid: int, chan: t.Any) -> None:
        if isinstance(chan, _ChannelBase) and not isinstance(chan, OrderedChannel):
            chan.__class__ = OrderedChannel
        super().put(chanid, chan)

    def get(self, chanid: int) -> t.Any:
        # The transport thread looks its channel up for every packet received: a dict read is atomic under the GIL,
        # and paramiko's lock around it, with WeakValueDictionary.get, was 8 % of that thread's GIL time (py-spy --gil).
        ref = self._map.data.get(chanid)
        return None if ref is None else ref()
