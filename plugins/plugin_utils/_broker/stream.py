# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The broker's side of a running command: the channel relayed to the worker's connection as frames."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import paramiko
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker import protocol as wire


def pump(conn: socket.socket, channel: t.Any) -> None:
    """Relay one command's channel and its broker connection: stdin frames in, stdout/stderr frames and the exit status out."""
    write_lock = threading.Lock()

    def emit(kind: bytes, data: bytes) -> None:
        with write_lock:
            wire.send_frame(conn, kind, data)

    def stdin() -> None:
        broken = False
        try:
            while True:
                frame = wire.recv_frame(conn)
                if frame is None:
                    break
                kind, data = frame
                if broken:
                    continue  # the command stopped reading: drain, so the client never blocks on a full socket
                try:
                    if kind == wire.KIND_STDIN:
                        channel.sendall(data)
                    elif kind == wire.KIND_STDIN_EOF:
                        channel.shutdown_write()
                except (OSError, paramiko.SSHException):
                    broken = True
            if channel.exit_status_ready():
                return
        except (OSError, EOFError, ValueError):
            pass
        # The client went away before the command ended: stop the command.
        channel.close()

    def stderr() -> None:
        with contextlib.suppress(OSError, paramiko.SSHException):
            while True:
                data = channel.recv_stderr(wire.READ_SIZE)
                if not data:
                    break
                emit(wire.KIND_STDERR, data)

    threading.Thread(target=stdin, name="burrow-stdin", daemon=True).start()
    err_thread = threading.Thread(target=stderr, name="burrow-stderr", daemon=True)
    err_thread.start()
    try:
        while True:
            data = channel.recv(wire.READ_SIZE)
            if not data:
                break
            emit(wire.KIND_STDOUT, data)
    except (OSError, paramiko.SSHException):
        channel.close()
    err_thread.join()
    rc = channel.recv_exit_status()
    with contextlib.suppress(OSError):
        emit(wire.KIND_EXIT, json.dumps({"rc": rc}).encode())
