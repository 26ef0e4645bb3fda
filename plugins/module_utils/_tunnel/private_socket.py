# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""A listening Unix socket that only its owner can connect to, from the moment it exists."""

from __future__ import annotations

import os
import socket


def listen_private_unix(path: str, backlog: int) -> socket.socket:
    """Bind ``path`` mode 0600 and listen; raises OSError (the socket closed).

    bind() creates the file with the mode the umask leaves, so the umask is 0177 around it: a chmod afterwards would
    leave a moment in which the socket is open to the directory's other users. The umask is process-wide; every caller
    binds inside a 0700 directory of its own, so a file another thread creates in that moment is only stricter.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    return sock
