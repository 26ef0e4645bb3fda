# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Concurrent declarations of one tunnel name converge on one process (issue 16, item 2), against the sandbox sshd.

The everyday pattern: several hosts, forks, delegate_to: localhost, one tunnel name, no run_once.
"""

from __future__ import annotations

import json
import os
import socket
import typing as t
from pathlib import Path

import pytest
from engine_helpers import wait_until
from procs import holders_of
from test_engine import tunnel_for

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel import manage
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.control import TunnelHandle

RUNS = 4


def processes_logging_to(log: str) -> set[int]:
    """Every process that has the tunnel's log open: the tunnel processes carrying that name, orphans included."""
    return set(holders_of(log, prefix_only=True))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("port", ["any", "fixed"])
def test_concurrent_declarations_of_one_name_leave_one_process(sshd: t.Any, tmp_path: Path, port: str) -> None:
    state_dir = str(tmp_path / "state")
    listen = f"127.0.0.1:{free_port() if port == 'fixed' else 0}"
    tunnel = tunnel_for(sshd, name="shared", dynamic_forwards=[listen])
    log = TunnelHandle(state_dir, "shared").paths.log
    results = tmp_path / "results"
    results.mkdir()
    pids = []
    try:
        for index in range(RUNS):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - one concurrent run
                code = 1
                try:
                    outcome = manage.ensure_present(tunnel, state_dir, {}, check_mode=False, owner=None)
                    (results / str(index)).write_text(json.dumps({"action": outcome.action, "pid": outcome.report.get("pid")}))
                    code = 0
                except BaseException as exc:
                    (results / str(index)).write_text(json.dumps({"error": str(exc)}))
                finally:
                    os._exit(code)
            pids.append(pid)
        codes = [os.waitpid(pid, 0)[1] for pid in pids]
        outcomes = [json.loads((results / str(index)).read_text()) for index in range(RUNS)]
        assert codes == [0] * RUNS, outcomes
        assert sorted(outcome["action"] for outcome in outcomes) == ["created"] + ["unchanged"] * (RUNS - 1), outcomes
        running = processes_logging_to(log)
        assert len(running) == 1, f"{len(running)} tunnel processes carry the name: {running}"
        assert TunnelHandle(state_dir, "shared").pid in running, "the running tunnel is the one its state file names"
    finally:
        manage.ensure_absent("shared", state_dir, check_mode=False, drain_timeout=1)
    assert wait_until(lambda: not processes_logging_to(log), 10), "state: absent left a process carrying the name"
    assert os.listdir(state_dir) == [], "the lock file goes with the tunnel"
