# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The tunnel process keeps secrets out of core files and logs 0600 only, across rotation too (issue 16, item 14)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import stat
import typing as t
from pathlib import Path

import pytest
from engine_helpers import wait_until
from test_engine import tunnel_for

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.private_log import PrivateRotatingFileHandler
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process import daemon
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


PR_SET_DUMPABLE = 4


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the check as another uid")
def test_a_hardened_process_is_not_dumpable() -> None:
    """Not dumpable: its /proc entries become root's, so the same (non-root) user can no longer read environ or mem.

    The kernel already clears the dumpable flag on setuid(), so the child sets it back, as a process started by that
    user has it, and the test checks that precondition before the child hardens itself.
    """
    to_parent, child_end = os.pipe()
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the hardened child, as another user
        try:
            os.close(to_parent)
            os.close(go_write)
            os.setgid(65534)
            os.setuid(65534)
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
            os.write(child_end, b"dumpable")
            os.read(go_read, 1)
            disable_core_dumps()
            os.write(child_end, b"ready")
            os.read(go_read, 1)  # until the parent kills it
        finally:
            os._exit(0)
    os.close(child_end)
    os.close(go_read)
    try:
        assert os.read(to_parent, 8) == b"dumpable"
        assert os.stat(f"/proc/{pid}/environ").st_uid == 65534, "precondition: the child is dumpable before hardening"
        os.write(go_write, b"g")
        assert os.read(to_parent, 5) == b"ready"
        assert os.stat(f"/proc/{pid}/environ").st_uid == 0, "still dumpable: /proc/<pid>/environ is the user's"
        assert core_limit(pid) == ["0", "0"]
    finally:
        os.close(to_parent)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(go_write)


def test_the_tunnel_process_log_is_0600_after_rotation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler the tunnel process installs (daemon._setup_logging), not only the handler class, keeps 0600."""
    path = tmp_path / "tunnel.log"
    monkeypatch.setattr(daemon, "LOG_MAX_BYTES", 200)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    old_umask = os.umask(0o022)
    try:
        daemon._setup_logging(str(path))
        installed = root.handlers[:]
        try:
            for index in range(20):
                logging.getLogger("burrow.test.tunnel-log").warning("line %d %s", index, "x" * 40)
        finally:
            for handler in installed:
                handler.close()
    finally:
        os.umask(old_umask)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    rotated = tmp_path / "tunnel.log.1"
    assert rotated.exists(), "the log did not rotate"
    for file in (path, rotated):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, f"{file} is {stat.S_IMODE(file.stat().st_mode):04o}"


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
