# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ttl and idle_timeout (issue 16 item 11): the monotonic clock, and idle counted from the last use."""

from __future__ import annotations

import socket
import time
import typing as t

import pytest
from engine_helpers import wait_until
from test_engine import running, tunnel_for

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel import manage
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process import daemon
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.control import TunnelHandle
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import process_start_time

IDLE = 3


@pytest.mark.parametrize("step", [2 * 86400, -86400])
def test_a_wall_clock_step_neither_ends_nor_extends_a_tunnel(sshd: t.Any, monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """+2 days ended a 1-hour tunnel within 6 s, -1 day kept a 5 s one: both are measured on time.monotonic now."""
    tunnel = tunnel_for(sshd, name="clock", ttl=3600, idle_timeout=3600, dynamic_forwards=["127.0.0.1:0"])
    with running(tunnel) as engine:
        started = time.monotonic()
        real_time = time.time
        monkeypatch.setattr(time, "time", lambda: real_time() + step)
        status = engine.status()
        assert status["idle_seconds"] < 60 and status["uptime"] < 60
        assert daemon._lifetime_reason(tunnel, status, None, started) == ""
        short = tunnel_for(sshd, name="clock", ttl=1, dynamic_forwards=["127.0.0.1:0"])
        assert wait_until(lambda: daemon._lifetime_reason(short, engine.status(), None, started) == "ttl of 1 s reached", 10)


def _banner_through(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        return client.recv(64)


def _idle_seconds(state_dir: str, name: str) -> float:
    report = TunnelHandle(state_dir, name).inspect()
    return float(report.get("idle_seconds", -1)) if report["status"] == "up" else -1.0


@pytest.mark.parametrize("use", ["connection", "declared again"])
def test_idle_timeout_counts_from_the_last_use_not_from_creation(sshd: t.Any, tmp_path: t.Any, use: str) -> None:
    state_dir = str(tmp_path / "state")
    raw = {"local_forwards": [f"127.0.0.1:0:{sshd.host}:{sshd.port}"]}
    tunnel = tunnel_for(sshd, name="idle", idle_timeout=IDLE, **raw)
    outcome = manage.ensure_present(tunnel, state_dir, raw, check_mode=False, owner=None)
    assert outcome.action == "created"
    pid = int(outcome.report["pid"])
    port = int(outcome.report["forwards"][0]["bound_port"])
    try:
        assert wait_until(lambda: _idle_seconds(state_dir, "idle") >= IDLE - 1, IDLE + 5)
        if use == "connection":
            assert _banner_through(port).startswith(b"SSH-")
        else:
            assert manage.ensure_present(tunnel, state_dir, raw, check_mode=False, owner=None).action == "unchanged"
        assert 0 <= _idle_seconds(state_dir, "idle") < IDLE - 1
        # Past idle_timeout since creation, but not since the last use: still up.
        assert wait_until(lambda: _idle_seconds(state_dir, "idle") >= IDLE - 1, IDLE + 5)
        assert process_start_time(pid) is not None, "ended although used within idle_timeout"
        # Unused from now on: it ends within idle_timeout and one lifetime poll.
        assert wait_until(lambda: process_start_time(pid) is None, IDLE + daemon.LIFETIME_POLL_INTERVAL + 10)
    finally:
        TunnelHandle(state_dir, "idle").stop(deadline=1)
