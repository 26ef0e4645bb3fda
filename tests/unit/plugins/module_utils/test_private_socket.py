# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one way the collection creates a listening Unix socket: 0600 from bind(), whatever the caller's umask."""

from __future__ import annotations

import os
import pathlib
import socket
import stat

import pytest

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.private_socket import listen_private_unix


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_the_socket_is_0600_and_listening_and_the_umask_is_restored(tmp_path: pathlib.Path, umask: int) -> None:
    path = str(tmp_path / "s.sock")
    previous = os.umask(umask)
    try:
        sock = listen_private_unix(path, 4)
        restored = os.umask(umask)
    finally:
        os.umask(previous)
    try:
        assert restored == umask
        info = os.lstat(path)
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
    finally:
        sock.close()


def test_a_failed_bind_closes_the_socket_and_restores_the_umask(tmp_path: pathlib.Path) -> None:
    taken = str(tmp_path / "taken.sock")
    first = listen_private_unix(taken, 1)
    previous = os.umask(0o022)
    try:
        with pytest.raises(OSError):
            listen_private_unix(taken, 1)
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(previous)
        first.close()
