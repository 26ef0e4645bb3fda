# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Where a tunnel's files live: a per-user 0700 directory with a state file, a control socket and a log."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
import typing as t

# sun_path is 108 bytes on Linux and 104 on the BSDs; stay under the smaller one.
MAX_SOCKET_PATH = 103
STATE_SUFFIX = ".json"


def default_state_dir() -> str:
    override = os.environ.get("BURROW_STATE_DIR")
    if override:
        return override
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return os.path.join(runtime, "burrow")
    return os.path.expanduser("~/.ansible/burrow")


def resolve_state_dir(configured: str | None) -> str:
    """The state_dir option when given, else this user's default."""
    return configured or default_state_dir()


def ensure_state_dir(path: str) -> str:
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"state directory {path} is not a directory")
    if info.st_uid != os.getuid():
        raise PermissionError(f"state directory {path} belongs to uid {info.st_uid}, not to this user ({os.getuid()})")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


class TunnelPaths:
    def __init__(self, state_dir: str, name: str) -> None:
        self.dir = state_dir
        self.name = name
        self.state = os.path.join(state_dir, name + STATE_SUFFIX)
        self.log = os.path.join(state_dir, name + ".log")
        self.rotated_log = self.log + ".1"
        socket_path = os.path.join(state_dir, name + ".sock")
        if len(socket_path.encode()) > MAX_SOCKET_PATH:
            socket_path = os.path.join(state_dir, "s-" + hashlib.sha256(name.encode()).hexdigest()[:16] + ".sock")
        if len(socket_path.encode()) > MAX_SOCKET_PATH:
            raise ValueError(f"state directory {state_dir} is too long for a Unix socket path (limit {MAX_SOCKET_PATH} bytes); choose a shorter state_dir")
        self.socket = socket_path


def list_tunnel_names(state_dir: str) -> list[str]:
    """Names with a state file, plus control sockets left behind without one (orphans to report and clean)."""
    if not os.path.isdir(state_dir):
        return []
    entries = os.listdir(state_dir)
    names = {entry[: -len(STATE_SUFFIX)] for entry in entries if entry.endswith(STATE_SUFFIX) and not entry.startswith(".")}
    for entry in entries:
        if entry.endswith(".sock") and not entry.startswith("s-") and entry[: -len(".sock")] not in names:
            names.add(entry[: -len(".sock")])
    return sorted(names)


def process_start_time(pid: int) -> int | None:
    """The process start time in clock ticks since boot: (pid, start time) identifies a process despite pid reuse."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            data = handle.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()
    with contextlib.suppress(IndexError, ValueError):
        if fields[0] == "Z":
            return None
        return int(fields[19])
    return None


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def write_private_file(path: str, content: str) -> None:
    """Write atomically, 0600 from creation (never briefly world-readable)."""
    directory = os.path.dirname(path)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def remove_quietly(*paths: str) -> list[str]:
    removed = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            removed.append(path)
    return removed


def read_text(path: str) -> t.Optional[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return None
