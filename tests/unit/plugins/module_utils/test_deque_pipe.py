# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""DequePipe keeps paramiko's BufferedPipe contract: order, partial reads, events, timeouts, close."""

from __future__ import annotations

import threading
import time

import pytest
from paramiko.buffered_pipe import BufferedPipe, PipeTimeout

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import DequePipe


@pytest.mark.parametrize("pipe_class", [BufferedPipe, DequePipe])
def test_same_contract_as_buffered_pipe(pipe_class: type) -> None:
    pipe = pipe_class()
    event = threading.Event()
    pipe.set_event(event)
    assert not event.is_set() and not pipe.read_ready() and len(pipe) == 0
    pipe.feed(b"hello ")
    pipe.feed(b"world")
    assert event.is_set() and pipe.read_ready() and len(pipe) == 11
    assert pipe.read(3) == b"hel"
    assert pipe.read(100) == b"lo world"
    assert not event.is_set()
    with pytest.raises(PipeTimeout):
        pipe.read(1, timeout=0.0)
    started = time.monotonic()
    with pytest.raises(PipeTimeout):
        pipe.read(1, timeout=0.1)
    assert time.monotonic() - started >= 0.09
    pipe.feed(b"rest")
    assert pipe.empty() == b"rest"
    threading.Timer(0.05, pipe.feed, args=(b"late",)).start()
    assert pipe.read(10, timeout=5) == b"late"
    pipe.close()
    assert event.is_set()
    assert pipe.read(10) == b""


def test_reads_across_many_chunks_keep_order() -> None:
    pipe = DequePipe()
    data = bytes(range(256)) * 64
    for offset in range(0, len(data), 1000):
        pipe.feed(data[offset : offset + 1000])
    out = b""
    while len(out) < len(data):
        out += pipe.read(777)
    assert out == data and len(pipe) == 0
