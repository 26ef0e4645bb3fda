# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one-line summary of a tunnel report."""

from __future__ import annotations

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.summary import describe

REPORT = {
    "name": "appdb",
    "status": "up",
    "started_at": 1000.0,
    "hops": ["ops@bastion:22", "deploy@10.0.5.21:22"],
    "reconnects": 1,
    "last_error": {"message": "no answer from deploy@10.0.5.21:22 to 3 keepalive request(s) within 15 s"},
    "forwards": [
        {
            "kind": "local",
            "bound_host": "127.0.0.1",
            "bound_port": 43512,
            "dest_host": "db.internal",
            "dest_port": 5432,
            "connections_total": 3,
            "connections_active": 1,
        },
        {"kind": "remote", "bound_host": "", "bound_port": 9000, "dest_host": "127.0.0.1", "dest_port": 3000, "connections_total": 0},
        {"kind": "dynamic", "bound_host": "::1", "bound_port": 1080, "connections_total": 2},
        {"kind": "local", "bound_path": "/tmp/pg.sock", "dest_path": "/run/postgresql/.s.PGSQL.5432"},
    ],
}


def test_a_running_tunnel_in_one_line() -> None:
    assert describe(REPORT, now=1000.0 + 7500) == (
        "appdb: up 2h5m via ops@bastion:22 -> deploy@10.0.5.21:22; -L 127.0.0.1:43512 -> db.internal:5432; "
        "-R *:9000 (on the server) -> 127.0.0.1:3000; -D [::1]:1080 -> SOCKS; -L /tmp/pg.sock -> /run/postgresql/.s.PGSQL.5432; "
        "5 connections (1 active); 1 reconnect(s); last error: no answer from deploy@10.0.5.21:22 to 3 keepalive request(s) within 15 s"
    )


def test_a_stale_tunnel_says_why() -> None:
    line = describe({"name": "gone", "status": "stale", "started_at": 1.0, "reason": "the tunnel process is gone but its files remain"})
    assert line == "gone: stale; the tunnel process is gone but its files remain"


def test_ages() -> None:
    for seconds, shown in ((5, "5s"), (125, "2m"), (90061, "1d1h")):
        assert describe({"name": "n", "status": "up", "started_at": 0.0}, now=float(seconds)) == f"n: up {shown}"
