# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""A readable process title (``burrow-tunnel appdb``) for ps, top and /proc, without a new dependency.

A tunnel process is forked from an Ansible module, so its command line is the module's interpreter and a deleted
AnsiballZ path. Linux gives two places to say better: the thread name (prctl PR_SET_NAME: ``ps -o comm``, top, at
most 15 bytes) and the argument area that ``ps aux`` and /proc/PID/cmdline show, which a process may overwrite in
its own memory. Both are best effort: elsewhere, or when /proc is not mounted, the title stays as it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

PR_SET_NAME = 15
COMM_MAX = 15  # TASK_COMM_LEN is 16 with its NUL
# /proc/PID/stat fields after the command name: arg_start and arg_end are fields 48 and 49 of the whole line.
ARG_START_INDEX = 48 - 3
ARG_END_INDEX = 49 - 3


def _argument_area() -> tuple[int, int] | None:
    with open("/proc/self/stat", encoding="ascii", errors="replace") as handle:
        data = handle.read()
    fields = data[data.rindex(")") + 2 :].split()
    if len(fields) <= ARG_END_INDEX:
        return None
    start, end = int(fields[ARG_START_INDEX]), int(fields[ARG_END_INDEX])
    return (start, end) if 0 < start < end else None


def set_process_title(title: str) -> None:
    """Show ``title`` as this process's name (thread name and command line) where the platform allows it."""
    encoded = title.encode("utf-8", "replace")
    with contextlib.suppress(OSError, AttributeError, ValueError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(encoded[:COMM_MAX]), 0, 0, 0)
    with contextlib.suppress(OSError, ValueError):
        area = _argument_area()
        if area is None:
            return
        start, end = area
        size = end - start
        # Keep the last byte a NUL so readers stop inside the area; pad with NULs so nothing of the old line shows.
        payload = encoded[: size - 1].ljust(size, b"\0")
        with open("/proc/self/mem", "r+b", buffering=0) as memory:
            memory.seek(start)
            memory.write(payload)
