# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The audit trail's pieces: /proc/net/tcp addresses, the kernel's word on a peer, sinks, redaction, the summary line."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import threading
import typing as t

import pytest

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel import audit
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.audit import AUDIT_MAX_BYTES
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import UntrustedState
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.daemon import _audit_trail
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import TunnelPaths
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.summary import describe


def test_proc_net_tcp_addresses() -> None:
    if socket.htonl(1) == 1:  # pragma: no cover - big-endian hosts print the words the other way round
        pytest.skip("little-endian sample")
    assert audit._proc_address("0100007F:1F90") == ("127.0.0.1", 8080)
    assert audit._proc_address("00000000000000000000000001000000:0016") == ("::1", 22)
    assert audit._proc_address("0000000000000000FFFF00000100007F:0050") == ("::ffff:127.0.0.1", 80)


def test_a_loopback_tcp_peer_is_named_by_uid_and_pid() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname()) as _client:
            accepted = server.accept()[0]
            with accepted:
                found = audit.peer_identity(accepted)
    assert found["uid"] == os.getuid() and found["pid"] == os.getpid() and found["client"].startswith("127.0.0.1:")


def test_one_pid_scan_at_a_time_the_others_keep_the_uid(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scan reads every descriptor of the client user's processes: concurrent scans starved the tunnel's transport."""
    release = threading.Event()
    scanning = threading.Event()
    calls: list[str] = []

    def slow_holder(inode: str, uid: int) -> int | None:
        calls.append(inode)
        scanning.set()
        assert release.wait(10)
        return os.getpid()

    monkeypatch.setattr(audit, "inode_holder", slow_holder)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(2)
        with socket.create_connection(server.getsockname()), socket.create_connection(server.getsockname()):
            first, second = server.accept()[0], server.accept()[0]
            with first, second:
                results: dict[str, dict[str, t.Any]] = {}
                scanner = threading.Thread(target=lambda: results.setdefault("first", audit.peer_identity(first)))
                scanner.start()
                assert scanning.wait(10)
                results["second"] = audit.peer_identity(second)  # while the first scan runs
                release.set()
                scanner.join(10)
    assert len(calls) == 1
    assert results["first"]["pid"] == os.getpid() and results["first"]["uid"] == os.getuid()
    assert results["second"]["pid"] is None and results["second"]["uid"] == os.getuid()


def test_a_unix_peer_is_named_by_peercred() -> None:
    left, right = socket.socketpair()
    with left, right:
        found = audit.peer_identity(left)
    assert (found["uid"], found["pid"], found["client"]) == (os.getuid(), os.getpid(), "unix")


def test_a_refused_socks_user_name_is_not_recorded(tmp_path: t.Any) -> None:
    handler = logging.FileHandler(str(tmp_path / "a.jsonl"))
    trail = audit.AuditTrail("t", "file", handler)

    def refuse(_client: t.Any) -> None:
        audit.note_refused("SOCKS: SOCKS5 username/password rejected for user 'hunter2-typed-here'")

    left, right = socket.socketpair()
    with left, right:
        trail.wrap("dynamic 127.0.0.1:1080", None, refuse)(left)
    trail.close()
    line = json.loads((tmp_path / "a.jsonl").read_text())
    assert line["ended"] == "refused" and "hunter2" not in json.dumps(line) and line["error"].endswith("for a user (not recorded)")
    assert trail.summary()["by_uid"][0]["refused"] == 1


def test_the_file_sink_is_0600_and_bounded(tmp_path: t.Any) -> None:
    paths = TunnelPaths(str(tmp_path), "bounded")
    trail = _audit_trail(parse_declaration({"name": "bounded", "host": "h"}), paths)
    assert trail is not None
    entry = {"uid": 0, "pid": None, "bytes_out": 1, "bytes_in": 2, "ended": "closed", "padding": "x" * 1000}
    for _line in range(2 * AUDIT_MAX_BYTES // 1000 + 50):
        trail.record(dict(entry))
    trail.close()
    for path in (paths.audit, paths.rotated_audit):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert os.path.getsize(path) <= AUDIT_MAX_BYTES + 2000
    assert sorted(os.listdir(tmp_path)) == ["bounded.audit.jsonl", "bounded.audit.jsonl.1"]
    assert trail.summary()["by_uid"][0]["connections"] == 2 * AUDIT_MAX_BYTES // 1000 + 50


def test_the_file_sink_refuses_a_planted_file(tmp_path: t.Any) -> None:
    paths = TunnelPaths(str(tmp_path), "planted")
    os.mkfifo(paths.audit, 0o600)
    with pytest.raises(OSError):  # a FIFO without a reader: ENXIO, never a blocked tunnel process
        _audit_trail(parse_declaration({"name": "planted", "host": "h"}), paths)
    if os.geteuid() == 0:  # root could append to anyone's file: another user's is refused
        os.unlink(paths.audit)
        with open(paths.audit, "w", encoding="utf-8"):
            pass
        os.chown(paths.audit, 65534, 65534)
        with pytest.raises(UntrustedState, match="not a regular file of this user"):
            _audit_trail(parse_declaration({"name": "planted", "host": "h"}), paths)


def test_the_syslog_sink(tmp_path: t.Any) -> None:
    address = str(tmp_path / "log")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as collector:
        collector.bind(address)
        collector.settimeout(10)
        trail = audit.AuditTrail("db", "syslog", audit.syslog_handler("db", address))
        trail.record({"uid": 0, "pid": None, "bytes_out": 5, "bytes_in": 6, "ended": "closed"})
        message = collector.recv(65536).decode()
        trail.close()
    # <86> = authpriv (10) * 8 + info (6)
    assert message.startswith(f"<86>burrow-tunnel[{os.getpid()}]: {{") and '"bytes_in": 6' in message


def test_audit_option() -> None:
    assert parse_declaration({"name": "t", "host": "h"}).audit == "file"
    assert parse_declaration({"name": "t", "host": "h"}).digest() == parse_declaration({"name": "t", "host": "h", "audit": "file"}).digest()
    assert parse_declaration({"name": "t", "host": "h", "audit": "none"}).digest() != parse_declaration({"name": "t", "host": "h"}).digest()
    with pytest.raises(Exception, match="audit"):
        parse_declaration({"name": "t", "host": "h", "audit": "journal"})


def test_the_summary_line_names_users() -> None:
    report = {
        "name": "db",
        "status": "up",
        "audit": {
            "by_uid": [
                {"uid": 0, "user": "root", "connections": 2, "bytes_out": 500, "bytes_in": 12000, "last_use": "1970-01-01T00:01:40.000Z"},
                {"uid": 1234, "user": None, "connections": 1, "bytes_out": 1, "bytes_in": 2, "last_use": "1970-01-01T00:00:10.000Z"},
                {"uid": None, "user": None, "connections": 1, "bytes_out": 0, "bytes_in": 0, "last_use": "1970-01-01T00:00:10.000Z"},
            ]
        },
    }
    assert describe(report, now=220.0) == "db: up; used by root (2, 12.5 kB), uid 1234 (1, 3 B), non-local (1, 0 B), last 2m ago"
