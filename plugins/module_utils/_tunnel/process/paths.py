# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Where a tunnel's files live: a per-user 0700 directory with a state file, a control socket and a log."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import pwd
import resource
import stat
import tempfile
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import UntrustedState

# sun_path is 108 bytes on Linux and 104 on the BSDs; stay under the smaller one.
MAX_SOCKET_PATH = 103
STATE_SUFFIX = ".json"
MAX_STATE_BYTES = 4 * 1024 * 1024


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


STATE_DIR_ADVICE = (
    "Set state_dir to a directory of this user (after sudo -E or su without -, XDG_RUNTIME_DIR may still name the other "
    "user's; BURROW_STATE_DIR or state_dir override it)"
)


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _check_info(path: str, info: os.stat_result, what: str, want: t.Callable[[int], bool], type_name: str, loose_bits: int) -> None:
    """Refuse an entry that is a symlink, of the wrong type, another user's, or open to group/others (loose_bits)."""
    if stat.S_ISLNK(info.st_mode):
        raise UntrustedState(f"{what} {path} is a symbolic link (owned by {_owner(info.st_uid)}); refusing to follow it", advice=STATE_DIR_ADVICE)
    if not want(info.st_mode):
        raise UntrustedState(f"{what} {path} is not a {type_name} (owned by {_owner(info.st_uid)})", advice="Remove it, or s" + STATE_DIR_ADVICE[1:])
    if info.st_uid != os.getuid():
        raise UntrustedState(
            f"{what} {path} belongs to {_owner(info.st_uid)}, not to this user ({_owner(os.getuid())}); refusing to trust it",
            advice=STATE_DIR_ADVICE,
        )
    if stat.S_IMODE(info.st_mode) & loose_bits:
        raise UntrustedState(
            f"{what} {path} has mode {stat.S_IMODE(info.st_mode):04o} (owned by {_owner(info.st_uid)}), open to group or others; refusing to trust it",
            advice="Check that nothing in it was planted, then chmod go-rwx it, or s" + STATE_DIR_ADVICE[1:],
        )


def check_state_dir(path: str) -> bool:
    """True if the state directory exists and is this user's own (not a symlink, a directory, not writable by others).

    Every read of a state directory goes through this, not only spawn: a directory someone else can write to may hold
    a planted state file (a pid to signal) or control socket (a forged answer).
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise UntrustedState(f"state directory {path} cannot be examined: {exc.strerror or exc}", advice=STATE_DIR_ADVICE) from exc
    _check_info(path, info, "state directory", stat.S_ISDIR, "directory", 0o022)
    return True


def check_state_entry(path: str, kind: str) -> bool:
    """True if the entry exists, is this user's own, of the kind (file | socket) and not open to others; never a symlink."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if kind == "socket":  # writable by others = others can connect; who serves it is checked on connect (SO_PEERCRED)
        _check_info(path, info, "control socket", stat.S_ISSOCK, "socket", 0o022)
    else:
        _check_info(path, info, "state file", stat.S_ISREG, "regular file", 0o077)
    return True


def read_state_file(path: str) -> t.Optional[str]:
    """The text of a state file, checked on the open descriptor (no symlink followed, no race between check and read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError:
        check_state_entry(path, "file")  # says why (a symlink, a socket...) or, if it vanished meanwhile, nothing
        return None
    with os.fdopen(fd, "rb") as handle:
        _check_info(path, os.fstat(fd), "state file", stat.S_ISREG, "regular file", 0o077)
        return handle.read(MAX_STATE_BYTES).decode("utf-8", errors="replace")


def ensure_state_dir(path: str) -> str:
    path = os.path.abspath(os.path.expanduser(path))
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise UntrustedState(f"state directory {path} cannot be created: {exc.strerror or exc}", advice=STATE_DIR_ADVICE) from exc
    # Group/other bits on this user's own directory are tightened here, as before; writable by others is refused.
    _check_info(path, info, "state directory", stat.S_ISDIR, "directory", 0o022)
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
        # Who used the tunnel (audit.py): JSON lines, 0600, one rotated file; removed with the other files.
        self.audit = os.path.join(state_dir, name + ".audit.jsonl")
        self.rotated_audit = self.audit + ".1"
        self.lock = os.path.join(state_dir, "." + name + ".lock")
        socket_path = os.path.join(state_dir, name + ".sock")
        if len(socket_path.encode()) > MAX_SOCKET_PATH:
            socket_path = os.path.join(state_dir, "s-" + hashlib.sha256(name.encode()).hexdigest()[:16] + ".sock")
        if len(socket_path.encode()) > MAX_SOCKET_PATH:
            raise ValueError(f"state directory {state_dir} is too long for a Unix socket path (limit {MAX_SOCKET_PATH} bytes); choose a shorter state_dir")
        self.socket = socket_path

    def files(self) -> tuple[str, ...]:
        """Every file a tunnel leaves while it runs (the lock file is removed separately, only when free)."""
        return (self.state, self.socket, self.log, self.rotated_log, self.audit, self.rotated_audit)


class GroupPaths:
    """The files of a process group's tunnel host: its socket (``add`` requests), its lock and its own log.

    Dot-prefixed: a tunnel name starts with a letter or digit, so no tunnel's files can collide with a group's.
    """

    def __init__(self, state_dir: str, group: str) -> None:
        self.dir = state_dir
        self.group = group
        self.lock = os.path.join(state_dir, ".group-" + group + ".lock")
        self.log = os.path.join(state_dir, ".group-" + group + ".log")
        self.rotated_log = self.log + ".1"
        socket_path = os.path.join(state_dir, ".group-" + group + ".sock")
        if len(socket_path.encode()) > MAX_SOCKET_PATH:
            socket_path = os.path.join(state_dir, ".group-" + hashlib.sha256(group.encode()).hexdigest()[:16] + ".sock")
        if len(socket_path.encode()) > MAX_SOCKET_PATH:
            raise ValueError(f"state directory {state_dir} is too long for a Unix socket path (limit {MAX_SOCKET_PATH} bytes); choose a shorter state_dir")
        self.socket = socket_path


def list_tunnel_names(state_dir: str) -> list[str]:
    """Names with a state file, plus control sockets left behind without one (orphans to report and clean)."""
    if not check_state_dir(state_dir):
        return []
    entries = os.listdir(state_dir)
    names = {entry[: -len(STATE_SUFFIX)] for entry in entries if entry.endswith(STATE_SUFFIX) and not entry.startswith(".")}
    for entry in entries:
        if entry.endswith(".sock") and not entry.startswith(("s-", ".")) and entry[: -len(".sock")] not in names:
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


def process_uid(pid: int) -> int | None:
    """The real uid of a process (from /proc/<pid>/status, readable even when the process is not dumpable)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


PR_SET_DUMPABLE = 4


def disable_core_dumps() -> None:
    """No core file (RLIMIT_CORE 0) and not dumpable (no ptrace by the same user, /proc/<pid>/mem and environ root's).

    For the long-lived processes that hold secrets in memory: the tunnel process and the session broker.
    """
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


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
