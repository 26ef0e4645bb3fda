# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""One run at a time per tunnel name: an flock on ``.<name>.lock`` in the state directory.

Held around inspect-create-replace-remove, so runs that declare one name at once (forks, delegate_to: localhost,
no run_once) converge on one process instead of racing to start two. The lock file is removed when the name ends
up with no tunnel; a waiter that then holds a removed file's lock notices (inode check) and locks the new file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import ControlError, UntrustedState
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import GroupPaths, TunnelPaths

LOCK_TIMEOUT = 300.0
LOCK_POLL = 0.05


def _open_locked(path: str, end: float) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            os.close(fd)
            raise UntrustedState(f"lock file {path} is not a regular file of this user (uid {info.st_uid}); refusing to use it")
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            if time.monotonic() >= end:
                os.close(fd)
                raise ControlError(
                    f"another run has held the lock {path} for more than {LOCK_TIMEOUT:g} s",
                    advice="wait for it to finish, or find it with fuser " + path,
                )
            time.sleep(LOCK_POLL)
        try:
            current = os.lstat(path)
        except FileNotFoundError:
            current = None
        if current is not None and (current.st_dev, current.st_ino) == (info.st_dev, info.st_ino):
            return fd
        os.close(fd)  # the holder before us removed the file: lock the one that is there now


@contextlib.contextmanager
def _held(lock: str, kept_by: str, timeout: float) -> t.Iterator[None]:
    """Exclusive lock on ``lock``; on release its file is removed when ``kept_by`` (what the lock guards) is gone."""
    fd = _open_locked(lock, time.monotonic() + timeout)
    try:
        yield
    finally:
        if not os.path.lexists(kept_by):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
        os.close(fd)


def _remove_if_free(lock: str, kept_by: str) -> None:
    """Remove ``lock``'s file when ``kept_by`` is gone, unless a run holds the lock now (that run removes it itself)."""
    with contextlib.suppress(OSError, ControlError, UntrustedState):
        fd = _open_locked(lock, time.monotonic())
        try:
            if not os.path.lexists(kept_by):
                os.unlink(lock)
        finally:
            os.close(fd)


def name_lock(paths: TunnelPaths, timeout: float = LOCK_TIMEOUT) -> t.ContextManager[None]:
    """Exclusive per-name lock; the state directory must exist. Removes the lock file if the name has no state left."""
    return _held(paths.lock, paths.state, timeout)


def remove_lock_file_if_free(paths: TunnelPaths) -> None:
    """A tunnel that ends on its own (play over, ttl, idle) removes its name's lock file, unless a run holds it now.

    The lock is taken without waiting: a run that holds it removes the file itself when it leaves no tunnel behind.
    """
    _remove_if_free(paths.lock, paths.state)


def group_lock(paths: GroupPaths, timeout: float = LOCK_TIMEOUT) -> t.ContextManager[None]:
    """Exclusive per-group lock around finding or starting the group's host: two first tunnels of a group end in one host.

    The lock file is removed on release when no host socket is left (the host removes it too when it ends, if free).
    """
    return _held(paths.lock, paths.socket, timeout)


def remove_group_lock_if_free(paths: GroupPaths) -> None:
    """The host's end: remove the group's lock file unless a run holds it now (that run removes it itself)."""
    _remove_if_free(paths.lock, paths.socket)
