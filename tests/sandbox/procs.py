# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Finding processes from the outside, by what they hold open (stdlib only)."""

from __future__ import annotations

import contextlib
import os
import pathlib


def holders_of(path: pathlib.Path | str, prefix_only: bool = False) -> list[int]:
    """Processes with an open file under the directory ``path`` (or, with prefix_only, any path starting with it).

    The tunnel logs and control sockets are held open, so this finds tunnel processes, orphans included.
    """
    prefix = str(path) if prefix_only else str(pathlib.Path(path).resolve()) + os.sep
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}").startswith(prefix):
                        found.append(int(entry))
                        break
    return found
