# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The tunnel process never hands out a descriptor number that a Python object copied from its caller still names.

The fork copies every object of the caller (the module process; in the test suite, pytest with its servers and pipes).
When the tunnel process had closed the inherited descriptors, their numbers went to its first client sockets, while
the copied objects still named them: the garbage collector, finalising one such object (a socket in a reference
cycle), closed a live client connection under its relay, and the next accepted connection took the number. In the
1000-connection load test that delivered connection 4's bytes to connection 576 (full busy suite runs only).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import typing as t

import pytest

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process import spawn
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import TunnelPaths, ensure_state_dir
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration


def _descriptor_kind(fd: int) -> str:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return "closed"
    return "socket" if stat.S_ISSOCK(mode) else "other"


def test_a_copied_object_closing_its_descriptor_in_the_tunnel_process_never_closes_a_client(tmp_path: t.Any) -> None:
    held = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _index in range(5)]  # the caller's own sockets
    numbers = [sock.fileno() for sock in held]
    tunnel = parse_declaration({"name": "fds", "host": "127.0.0.1", "local_forwards": ["0:127.0.0.1:9"], "use_agent": False})
    paths = TunnelPaths(ensure_state_dir(str(tmp_path / "state")), "fds")

    def serve(ready_fd: int) -> int:  # runs in the detached process, as daemon.serve would
        clients = [socket.socket(socket.AF_INET, socket.SOCK_STREAM)]  # as accept() gives them: the lowest free numbers
        while clients[-1].fileno() < max(numbers) and len(clients) < 4096:  # until every number below the caller's is taken
            clients.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        for sock in held:
            with contextlib.suppress(OSError):  # a finaliser ignores EBADF too
                sock.close()  # what the garbage collector does when it finalises the caller's copied objects
        kinds = [_descriptor_kind(client.fileno()) for client in clients]
        os.write(ready_fd, json.dumps({"ok": True, "clients": [client.fileno() for client in clients], "kinds": kinds}).encode() + b"\n")
        return 0

    try:
        report = spawn._fork(tunnel, paths, 30, serve)
    finally:
        for sock in held:
            sock.close()
    closed = [number for number, kind in zip(report["clients"], report["kinds"]) if kind != "socket"]
    assert closed == [], f"the caller's objects named {numbers}; closing them closed the tunnel process's sockets {closed}"
    assert not set(report["clients"]) & set(numbers), (numbers, report["clients"])


def _no_proc(path: str) -> list[str]:
    raise OSError(f"{path}: no /proc here")


@pytest.mark.parametrize("listing", [True, False])
def test_every_inherited_descriptor_is_parked_on_dev_null_and_the_report_pipe_kept(listing: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without /proc the descriptors are found by fstat; either way the caller's pipes are released (Ansible waits for them)
    and the numbers stay taken."""
    read_end, write_end = os.pipe()
    report_read, report_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports and exits
        code = 1
        try:
            os.close(report_read)
            if not listing:
                monkeypatch.setattr(spawn.os, "listdir", _no_proc)
            null = os.open(os.devnull, os.O_RDWR)
            spawn._park_inherited_descriptors(null, keep=report_write)
            kinds = {str(fd): os.readlink(f"/proc/self/fd/{fd}") for fd in (read_end, write_end)}
            os.write(report_write, json.dumps(kinds).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(report_write)
    os.close(write_end)
    try:
        os.waitpid(pid, 0)
        seen = json.loads(os.read(report_read, 65536) or b"{}")
    finally:
        os.close(read_end)
        os.close(report_read)
    assert seen == {str(read_end): "/dev/null", str(write_end): "/dev/null"}
