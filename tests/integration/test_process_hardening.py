# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The tunnel process keeps secrets out of core files and logs 0600 only, across rotation too (issue 16, item 5)."""

from __future__ import annotations

import logging
import os
import signal
import stat
import time
import typing as t
from pathlib import Path

import pytest
from engine_helpers import wait_until
from test_engine import tunnel_for

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.private_log import PrivateRotatingFileHandler
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.control import TunnelHandle
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import disable_core_dumps, process_start_time
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.spawn import spawn


def core_limit(pid: int) -> list[str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            return line.split()[4:6]
    raise AssertionError("no core limit line")


def test_tunnel_process_has_no_core_dumps(sshd: t.Any, tmp_path: Path) -> None:
    state_dir = str(tmp_path / "state")
    pid = int(spawn(tunnel_for(sshd, name="hard", dynamic_forwards=["127.0.0.1:0"]), state_dir)["pid"])
    try:
        assert core_limit(pid) == ["0", "0"]
    finally:
        TunnelHandle(state_dir, "hard").stop(deadline=1)
    assert wait_until(lambda: process_start_time(pid) is None, 5)


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the check as another uid")
def test_a_hardened_process_is_not_dumpable() -> None:
    """Not dumpable: its /proc entries become root's, so the same (non-root) user can no longer read environ or mem."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the hardened child, as another user
        try:
            os.close(read_fd)
            os.setgid(65534)
            os.setuid(65534)
            disable_core_dumps()
            os.write(write_fd, b"ready")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        assert os.read(read_fd, 5) == b"ready"
        assert os.stat(f"/proc/{pid}/environ").st_uid == 0, "still dumpable: /proc/<pid>/environ is the user's"
        assert core_limit(pid) == ["0", "0"]
    finally:
        os.close(read_fd)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_log_recreated_after_rotation_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "t.log"
    old_umask = os.umask(0o022)
    try:
        handler = PrivateRotatingFileHandler(str(path), maxBytes=200, backupCount=1)
        logger = logging.getLogger("burrow.test.rotation")
        logger.addHandler(handler)
        logger.propagate = False
        try:
            for index in range(20):
                logger.warning("line %d %s", index, "x" * 40)
        finally:
            logger.removeHandler(handler)
            handler.close()
    finally:
        os.umask(old_umask)
    rotated = tmp_path / "t.log.1"
    assert rotated.exists(), "the log did not rotate"
    for file in (path, rotated):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, f"{file} is {stat.S_IMODE(file.stat().st_mode):04o}"
