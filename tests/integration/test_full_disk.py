# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A tunnel whose state directory is on a full file system fails at once with the cause, and leaves nothing behind."""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import subprocess
import typing as t

import pytest
from engine_helpers import wait_until
from test_engine import tunnel_for

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import StateWriteFailed, TunnelError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.spawn import spawn

pytestmark = pytest.mark.needs_root


@contextlib.contextmanager
def full_file_system(where: pathlib.Path) -> t.Iterator[pathlib.Path]:
    """A 256 KiB tmpfs mounted for the test, filled until the kernel says ENOSPC; unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "burrow-full", str(where)], check=True, timeout=30)
    try:
        state_dir = where / "state"
        state_dir.mkdir(mode=0o700)
        fd = os.open(where / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with contextlib.suppress(OSError):
                for _block in range(1024):  # bounded: 1024 x 4 KiB is far more than the 256 KiB the mount holds
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        with pytest.raises(OSError) as caught:
            (where / "probe").write_bytes(b"\0" * 4096)
        assert caught.value.errno == errno.ENOSPC
        yield state_dir
    finally:
        _unmount(where)


def _unmount(where: pathlib.Path) -> None:
    """umount, retried while the failed tunnel process is still exiting with its log open in the mount (busy CI run 1 of
    2026-12-02 left the mount behind: one umount, EBUSY, ignored); lazily detached and failed if it stays busy."""
    attempts: list[str] = []

    def unmounted() -> bool:
        result = subprocess.run(["umount", str(where)], capture_output=True, text=True, check=False, timeout=30)
        attempts.append(result.stderr.strip())
        return not os.path.ismount(where)

    if not wait_until(unmounted, 30, interval=0.2):
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=30)
        pytest.fail(f"{where} stayed mounted for 30 s ({attempts[-1]}): a process kept a file open in it")


def test_a_full_disk_fails_the_start_naming_the_cause_and_leaves_nothing(sshd: t.Any, tmp_path: pathlib.Path) -> None:
    with full_file_system(tmp_path / "mnt") as state_dir:
        with pytest.raises(TunnelError) as caught:
            spawn(tunnel_for(sshd, name="fulldisk", dynamic_forwards=["127.0.0.1:0"]), str(state_dir), timeout=60)
        error = caught.value
        # The cause, not "did not report within 50 s": either the files could not be written, or the process ended at once.
        text = str(error)
        assert isinstance(error, StateWriteFailed) or "ended" in text, text
        assert "No space left on device" in text or "free space" in text, text
        assert "df -h" in text, text
        assert wait_until(lambda: sorted(path.name for path in state_dir.iterdir()) == [], 10), sorted(p.name for p in state_dir.iterdir())
