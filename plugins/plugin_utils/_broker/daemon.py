# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The broker process itself: detach once more, take the broker lock, log to a capped file, serve."""

from __future__ import annotations

import contextlib
import logging
import os
import signal

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import ControlError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import disable_core_dumps
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.title import set_process_title
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.relay import configure_threads
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.paths import BrokerPaths, flock_with_deadline
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.server import LOG, Broker

MAX_LOG_SIZE = 1024 * 1024


def _open_log(path: str) -> None:
    with contextlib.suppress(OSError):
        if os.path.getsize(path) > MAX_LOG_SIZE:
            os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    handler = logging.StreamHandler(os.fdopen(fd, "a", encoding="utf-8", buffering=1))
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(message)s"))
    root = logging.getLogger("burrow")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)


def daemon_main(argv: list[str]) -> int:
    """Entry point of the spawned interpreter: detach once more, take the broker lock, serve."""
    paths = BrokerPaths(argv[0])
    if os.fork():
        os._exit(0)  # the intermediate process: the spawner reaps it at once
    os.chdir("/")
    set_process_title(f"burrow-broker {paths.dir}")
    disable_core_dumps()  # the broker holds the sessions' keys, passphrases and passwords in memory
    lock_fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # A previous broker may still be stopping (its socket already gone): wait for it a little.
        flock_with_deadline(lock_fd, 10.0)
    except ControlError:
        return 0
    _open_log(paths.log)
    configure_threads()
    broker = Broker(paths)
    signal.signal(signal.SIGTERM, lambda *_args: broker.stopping.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(paths.socket)
    try:
        broker.serve()
    except Exception:  # the log is the only place left to say why
        LOG.exception("session broker failed")
        return 1
    finally:
        os.close(lock_fd)
    return 0
