# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Who used a tunnel: the audit trail of a real tunnel process through the sandbox sshd (issue 18)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import typing as t

import pytest
from engine_helpers import LoopbackServer, echo_handler, recv_all, wait_until
from test_engine import tunnel_for

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.control import TunnelHandle
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import TunnelPaths
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.spawn import spawn
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.summary import describe

NOBODY = 65534
# The other local user's client: a plain interpreter (it needs only socket), run as uid 65534.
CLIENT = """
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20) as sock:
    sock.sendall(b"n" * int(sys.argv[2]))
    sock.shutdown(socket.SHUT_WR)
    got = 0
    while True:
        data = sock.recv(65536)
        if not data:
            break
        got += len(data)
sys.exit(0 if got == int(sys.argv[2]) else 3)
"""


def _lines(path: str) -> list[dict[str, t.Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _echo_through(port: int, size: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"r" * size)
        sock.shutdown(socket.SHUT_WR)
        assert len(recv_all(sock)) == size


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid")
def test_two_local_users_through_roots_tunnel_are_named_with_their_bytes(sshd: t.Any, tmp_path: t.Any) -> None:
    state_dir = str(tmp_path / "state")
    paths = TunnelPaths(state_dir, "shared")
    with LoopbackServer(echo_handler) as echo:
        status = spawn(tunnel_for(sshd, name="shared", local_forwards=[f"0:127.0.0.1:{echo.port}"]), state_dir)
        port = int(status["forwards"][0]["bound_port"])
        try:
            _echo_through(port, 3000)
            _echo_through(port, 2000)
            other = subprocess.run(["/usr/bin/python3", "-c", CLIENT, str(port), "7000"], user=NOBODY, group=NOBODY, timeout=60, check=False)
            assert other.returncode == 0
            # The line is written when the relay ends, just after the client saw its end of stream.
            assert wait_until(lambda: os.path.exists(paths.audit) and len(_lines(paths.audit)) == 3, 10)
            assert stat.S_IMODE(os.stat(paths.audit).st_mode) == 0o600
            lines = _lines(paths.audit)
            by_uid = {line["uid"]: [] for line in lines}
            for line in lines:
                by_uid[line["uid"]].append(line)
            assert set(by_uid) == {0, NOBODY}
            nobody = by_uid[NOBODY][0]
            assert nobody["bytes_out"] == 7000 and nobody["bytes_in"] == 7000 and nobody["ended"] == "closed"
            assert nobody["process"] == "python3" and isinstance(nobody["pid"], int) and nobody["user"] == "nobody"
            assert nobody["destination"] == f"127.0.0.1:{echo.port}" and nobody["forward"] == status["forwards"][0]["key"]
            assert nobody["client"].startswith("127.0.0.1:") and nobody["time"].endswith("Z") and nobody["duration"] >= 0
            assert sorted(line["bytes_out"] for line in by_uid[0]) == [2000, 3000]
            assert all(line["pid"] == os.getpid() for line in by_uid[0]), "the pid holding the client socket"

            report = TunnelHandle(state_dir, "shared").inspect()
            usage = {entry["uid"]: entry for entry in report["audit"]["by_uid"]}
            assert report["audit"]["sink"] == "file" and report["audit"]["file"] == paths.audit
            assert usage[0]["connections"] == 2 and usage[0]["bytes_out"] == 5000 and usage[0]["bytes_in"] == 5000
            assert usage[NOBODY]["connections"] == 1 and usage[NOBODY]["bytes_out"] == 7000 and usage[NOBODY]["user"] == "nobody"
            assert "used by root (2, 10.0 kB), nobody (1, 14.0 kB), last " in describe(report)
        finally:
            TunnelHandle(state_dir, "shared").stop(deadline=2)
    # The audit file goes with the tunnel's other files.
    assert not os.path.exists(paths.audit) and not os.path.exists(paths.rotated_audit)


def test_unix_listener_names_the_peer_and_refusals_are_recorded(sshd: t.Any, tmp_path: t.Any) -> None:
    state_dir = str(tmp_path / "state")
    listen = str(tmp_path / "db.sock")
    paths = TunnelPaths(state_dir, "unixaudit")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()  # nothing listens there: the server cannot connect
    with LoopbackServer(echo_handler) as echo:
        forwards = [f"{listen}:127.0.0.1:{echo.port}", f"0:127.0.0.1:{refused_port}"]
        status = spawn(tunnel_for(sshd, name="unixaudit", local_forwards=forwards), state_dir)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(20)
                sock.connect(listen)
                sock.sendall(b"u" * 1234)
                sock.shutdown(socket.SHUT_WR)
                assert len(recv_all(sock)) == 1234
            with socket.create_connection(("127.0.0.1", int(status["forwards"][1]["bound_port"])), timeout=20) as sock:
                assert recv_all(sock) == b""
            assert wait_until(lambda: os.path.exists(paths.audit) and len(_lines(paths.audit)) == 2, 10)
            unix, refused = sorted(_lines(paths.audit), key=lambda line: line["ended"])
            assert unix["uid"] == os.getuid() and unix["pid"] == os.getpid() and unix["bytes_in"] == 1234 and unix["ended"] == "closed"
            assert refused["ended"] == "refused" and refused["bytes_out"] == 0 and "could not connect" in refused["error"]
            assert refused["uid"] == os.getuid()
        finally:
            TunnelHandle(state_dir, "unixaudit").stop(deadline=2)
    assert not os.path.exists(paths.audit)


def test_audit_none_writes_nothing(sshd: t.Any, tmp_path: t.Any) -> None:
    state_dir = str(tmp_path / "state")
    with LoopbackServer(echo_handler) as echo:
        status = spawn(tunnel_for(sshd, name="quiet", audit="none", local_forwards=[f"0:127.0.0.1:{echo.port}"]), state_dir)
        try:
            _echo_through(int(status["forwards"][0]["bound_port"]), 100)
            report = TunnelHandle(state_dir, "quiet").inspect()
            assert report["audit"] is None and report["forwards"][0]["connections_total"] == 1
            assert not os.path.exists(TunnelPaths(state_dir, "quiet").audit)
        finally:
            TunnelHandle(state_dir, "quiet").stop(deadline=2)
