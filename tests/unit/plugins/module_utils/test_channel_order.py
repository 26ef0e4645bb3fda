# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Nothing of a channel reaches the wire after its CLOSE (channel_order.py); the race itself runs in test_engine."""

from __future__ import annotations

import socket
import types
import typing as t

import paramiko
import pytest
from paramiko.common import MSG_CHANNEL_CLOSE, MSG_CHANNEL_DATA, MSG_CHANNEL_EOF, MSG_CHANNEL_WINDOW_ADJUST, cMSG_CHANNEL_DATA, cMSG_CHANNEL_EOF

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.channel_order import ChannelMessage, OrderedChannel
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import BurrowTransport, credit_window


@pytest.fixture
def wire() -> t.Iterator[tuple[BurrowTransport, list[tuple[int, int]]]]:
    """A BurrowTransport whose packetizer records (message type, recipient channel) instead of encrypting."""
    ours, theirs = socket.socketpair()
    transport = BurrowTransport(ours)
    on_wire: list[tuple[int, int]] = []

    def send_message(message: t.Any) -> None:
        raw = message.asbytes()
        on_wire.append((raw[0], int.from_bytes(raw[1:5], "big")))

    transport.packetizer = types.SimpleNamespace(send_message=send_message, close=lambda: None)
    transport.active = True
    transport.clear_to_send.set()
    yield transport, on_wire
    transport.active = False
    ours.close()
    theirs.close()


def _channel(transport: BurrowTransport, chanid: int, remote: int) -> t.Any:
    channel = paramiko.Channel(chanid)
    transport._channels.put(chanid, channel)
    channel._set_transport(transport)
    channel._set_window(1 << 20, 32768)
    channel._set_remote_channel(remote, 1 << 20, 32768)
    return channel


def test_every_registered_channel_is_ordered(wire: tuple[BurrowTransport, list[tuple[int, int]]]) -> None:
    transport = wire[0]
    assert isinstance(_channel(transport, 1, 9), OrderedChannel)


def test_data_and_eof_built_before_the_close_never_follow_it(wire: tuple[BurrowTransport, list[tuple[int, int]]]) -> None:
    transport, on_wire = wire
    channel = _channel(transport, 1, 9)
    assert channel.send(b"early") == 5
    # What a sending thread holds when the transport thread's CLOSE overtakes it: built while the channel was open.
    late_data = ChannelMessage(channel, cMSG_CHANNEL_DATA)
    late_data.add_string(b"late")
    late_eof = ChannelMessage(channel, cMSG_CHANNEL_EOF)
    channel.close()
    assert on_wire == [(MSG_CHANNEL_DATA, 9), (MSG_CHANNEL_EOF, 9), (MSG_CHANNEL_CLOSE, 9)]
    with pytest.raises(OSError, match="closed"):
        transport._send_user_message(late_data)
    transport._send_user_message(late_eof)
    credit_window(channel, 1 << 19)
    assert on_wire[-1] == (MSG_CHANNEL_CLOSE, 9), "nothing after the CLOSE"


def test_a_new_channel_with_the_same_remote_id_still_sends(wire: tuple[BurrowTransport, list[tuple[int, int]]]) -> None:
    transport, on_wire = wire
    first = _channel(transport, 1, 9)
    first.close()
    second = _channel(transport, 2, 9)  # sshd reuses the id once both CLOSEs are exchanged
    assert second.send(b"x") == 1
    second.shutdown_write()
    second.in_window_sofar = 1 << 19
    credit_window(second, 1)
    assert on_wire[-3:] == [(MSG_CHANNEL_DATA, 9), (MSG_CHANNEL_EOF, 9), (MSG_CHANNEL_WINDOW_ADJUST, 9)]
