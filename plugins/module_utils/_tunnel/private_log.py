# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""A rotating log file that only its owner can read, and that is never a file someone else planted."""

from __future__ import annotations

import logging.handlers
import os
import stat
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import UntrustedState


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler whose files are 0600 from creation, the one recreated after rotation too."""

    def _open(self) -> t.Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():  # planted: a FIFO, or another user's file
            os.close(fd)
            raise UntrustedState(f"{self.baseFilename} is not a regular file of this user; refusing to write to it")
        os.fchmod(fd, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=getattr(self, "errors", None))
