# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Running the sshd binary (``sshd -t``, ``sshd -T``) and reloading a running sshd. No Ansible import."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Dict, Optional, Sequence, Set, Tuple

from .model import SshdConfigError

DEFAULT_PID_FILE = "/run/sshd.pid"


class ValidationError(SshdConfigError):
    """``sshd -t`` rejected the candidate configuration."""


def find_sshd(explicit: Optional[str] = None) -> Optional[str]:
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for candidate in ("/usr/sbin/sshd", "/usr/local/sbin/sshd"):
        if os.access(candidate, os.X_OK):
            return candidate
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(directory, "sshd")
        if directory and os.access(candidate, os.X_OK):
            return candidate
    return None


def run_sshd(sshd: str, args: Sequence[str], timeout: float = 30.0) -> Tuple[int, str, str]:
    try:
        proc = subprocess.run([sshd, *args], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SshdConfigError(f"{sshd} {' '.join(args)} did not finish within {timeout:.0f} s") from exc
    except OSError as exc:
        raise SshdConfigError(f"cannot run {sshd}: {exc}") from exc
    return proc.returncode, proc.stdout, proc.stderr


def validate_file(sshd: str, path: str) -> None:
    """``sshd -t -f path``; raises ValidationError with sshd's own message."""
    rc, out, err = run_sshd(sshd, ["-t", "-f", path])
    if rc != 0:
        message = (err.strip() or out.strip() or f"exit code {rc}").replace("\n", "; ")
        raise ValidationError(message)


def effective_values(sshd: str, path: str, connection_spec: Optional[str] = None) -> Dict[str, str]:
    """``sshd -T -f path [-C spec]`` as a dict keyword (lower case) -> value text."""
    args = ["-T", "-f", path]
    if connection_spec:
        args += ["-C", connection_spec]
    rc, out, err = run_sshd(sshd, args)
    if rc != 0:
        raise SshdConfigError(f"sshd -T failed: {(err.strip() or out.strip()).replace(chr(10), '; ')}")
    values: Dict[str, str] = {}
    for line in out.splitlines():
        key, _sep, value = line.partition(" ")
        if key and key not in values:
            values[key] = value.strip()
    return values


def listen_socket_inodes(pid: int) -> Set[str]:
    """Inodes of the TCP sockets in LISTEN state held by ``pid`` (to see an sshd re-exec after SIGHUP).

    The socket tables are read from ``/proc/PID/net``: those of the process's own network namespace, so an sshd in
    another namespace (a container, ``ip netns exec``) is seen too, where ``/proc/net`` shows only ours.
    """
    listening: Set[str] = set()
    for table in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                next(handle, None)
                for row in handle:
                    cols = row.split()
                    if len(cols) > 9 and cols[3] == "0A":
                        listening.add(cols[9])
        except OSError:
            continue
    held: Set[str] = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return held
    for name in names:
        try:
            target = os.readlink(os.path.join(fd_dir, name))
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in listening:
            held.add(target[8:-1])
    return held


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pid(pid_file: str) -> int:
    try:
        with open(pid_file, encoding="ascii") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError) as exc:
        raise SshdConfigError(f"cannot read a pid from {pid_file}: {exc}; is sshd running? set pid_file or reload_method") from exc


def sighup_and_wait(pid: int, timeout: float = 10.0) -> bool:
    """SIGHUP sshd and wait until it listens on new sockets (sshd re-executes itself on SIGHUP).

    Returns True when the re-exec was seen within ``timeout``.
    """
    before = listen_socket_inodes(pid)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as exc:
        raise SshdConfigError(f"sshd pid {pid} does not exist: is sshd running?") from exc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if not pid_alive(pid):
            return False
        now = listen_socket_inodes(pid)
        if now and not (now & before):
            return True
    return False
