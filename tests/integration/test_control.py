# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The tunnel process from the outside: spawn, inspect, orphans, stop, and what stays on disk."""

from __future__ import annotations

import os
import signal
import socket
import stat
import threading
import typing as t

import pytest
from engine_helpers import LoopbackServer, recv_all, wait_until
from test_engine import tunnel_for

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.manage import ensure_absent
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.control import TunnelHandle, list_handles
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import process_start_time
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.spawn import spawn


def test_spawned_tunnel_is_detached_and_stop_leaves_no_file(sshd: t.Any, tmp_path: t.Any) -> None:
    state_dir = str(tmp_path / "state")
    status = spawn(tunnel_for(sshd, name="detached", dynamic_forwards=["127.0.0.1:0"]), state_dir)
    pid = int(status["pid"])
    try:
        # Double fork: a new session (away from Ansible's terminal and process group), not its leader.
        assert os.getsid(pid) not in (pid, os.getsid(0))
        assert os.getpgid(pid) != os.getpgid(0)
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            assert int(handle.read().rsplit(")", 1)[1].split()[1]) != os.getpid(), "not a child of the caller"
        fds = os.listdir(f"/proc/{pid}/fd")
        for fd in ("0", "1", "2"):
            assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
        # Inherited descriptors are parked on /dev/null (spawn._park_inherited_descriptors); its own are few.
        own = [fd for fd in fds if os.readlink(f"/proc/{pid}/fd/{fd}") != "/dev/null"]
        assert len(own) < 40, own
        assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
        for name in os.listdir(state_dir):
            assert stat.S_IMODE(os.stat(os.path.join(state_dir, name)).st_mode) == 0o600, name
        report = TunnelHandle(state_dir, "detached").inspect(probe=True)
        assert report["status"] == "up" and report["pid"] == pid
    finally:
        assert TunnelHandle(state_dir, "detached").stop(deadline=2) is True
    assert wait_until(lambda: process_start_time(pid) is None, 5)
    assert os.listdir(state_dir) == []


def test_orphans_are_reported_stale_and_cleaned(sshd: t.Any, tmp_path: t.Any) -> None:
    state_dir = str(tmp_path / "state")
    status = spawn(tunnel_for(sshd, name="victim", dynamic_forwards=["127.0.0.1:0"]), state_dir)
    os.kill(int(status["pid"]), signal.SIGKILL)
    # A control socket left behind by some other crash, without any state file.
    lone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lone.bind(os.path.join(state_dir, "lonely.sock"))
    lone.close()
    # Right after SIGKILL the process may still exist for a moment ("alive but does not answer"): wait, with a deadline,
    # for the state a dead process leaves, rather than for the first "stale" (the race this test lost under load).
    assert wait_until(lambda: "gone" in str(TunnelHandle(state_dir, "victim").inspect().get("reason", "")), 15)
    reports = {handle.name: handle.inspect() for handle in list_handles(state_dir)}
    assert reports["victim"]["status"] == "stale" and "gone" in reports["victim"]["reason"]
    assert reports["lonely"]["status"] == "stale" and "left behind" in reports["lonely"]["reason"]
    for handle in list_handles(state_dir):
        handle.stop(deadline=1)
    assert os.listdir(state_dir) == []


def test_failed_start_leaves_nothing(sshd: t.Any, tmp_path: t.Any) -> None:
    state_dir = str(tmp_path / "state")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        port = holder.getsockname()[1]
        try:
            spawn(tunnel_for(sshd, name="clash", local_forwards=[f"{port}:127.0.0.1:22"]), state_dir)
        except Exception as exc:  # the type is checked below
            assert "already in use" in str(exc)
        else:
            raise AssertionError("a clashing port must fail the start")
    finally:
        holder.close()
    assert os.listdir(state_dir) == []


def test_absent_during_a_transfer_resets_the_client_and_counts_the_cut(sshd: t.Any, tmp_path: t.Any) -> None:
    state_dir = str(tmp_path / "state")
    stop_source = threading.Event()

    def endless_source(conn: socket.socket) -> None:
        block = b"x" * 65536
        while not stop_source.is_set():
            conn.sendall(block)

    with LoopbackServer(endless_source) as source:
        status = spawn(tunnel_for(sshd, name="transfer", local_forwards=[f"0:127.0.0.1:{source.port}"]), state_dir)
        port = int(status["forwards"][0]["bound_port"])
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            assert len(recv_all(client, limit=1024 * 1024)) >= 1024 * 1024, "the transfer is under way"
            outcome = ensure_absent("transfer", state_dir, check_mode=False, drain_timeout=1)
            assert outcome.report["cut_connections"] == 1, outcome.report
            # The client never sees a clean end of stream: whatever was in flight, then a reset.
            with pytest.raises(ConnectionResetError):
                while client.recv(1024 * 1024):
                    pass
        finally:
            stop_source.set()
            client.close()
            ensure_absent("transfer", state_dir, check_mode=False, drain_timeout=0)  # never leave it running on a failure
    assert wait_until(lambda: process_start_time(int(status["pid"])) is None, 5)
    assert os.listdir(state_dir) == [] or os.listdir(state_dir) == ["transfer.lock"]
