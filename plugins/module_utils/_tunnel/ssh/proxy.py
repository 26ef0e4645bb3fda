# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""ProxyCommand: a child process whose stdin and stdout carry the first hop's SSH connection (ssh -W, SSM, IAP...).

The child gets one end of a socketpair as stdin and stdout, so paramiko reads and writes a real socket. It runs
without a shell unless the command line needs one (pipes, redirections, variables, globs), in its own process group
so that teardown reaches what a shell started, and is reaped when the socket is closed: on teardown and before a
reconnect. It inherits the environment of the process minus what could carry burrow's or Ansible's secrets (tokens
of the user's own tools, such as AWS_SESSION_TOKEN, are theirs to use). Its stderr is kept, the last few KB, for the
error message when it fails.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import threading
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import Unreachable
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Hop

SHELL_CHARACTERS = frozenset("|&;<>()$`*?[]{}~!#\\")
STDERR_KEPT = 4096
# Environment variables never passed to a ProxyCommand: burrow's and Ansible's own settings may hold secrets.
WITHHELD_ENV_PREFIXES = ("ANSIBLE_", "BURROW_")
REAP_TIMEOUT = 2.0


def proxy_argv(command: str) -> list[str]:
    """The argv to run: the words of the command, or /bin/sh -c when it uses shell syntax."""
    if any(char in SHELL_CHARACTERS for char in command):
        return ["/bin/sh", "-c", command]
    try:
        words = shlex.split(command)
    except ValueError:
        return ["/bin/sh", "-c", command]
    return words or ["/bin/sh", "-c", command]


def proxy_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith(WITHHELD_ENV_PREFIXES)}


class ProxySocket(socket.socket):
    """Our end of the socketpair; closing it ends and reaps the ProxyCommand."""

    proc: subprocess.Popen[bytes] | None = None
    command = ""
    _stderr = b""
    _stderr_thread: threading.Thread | None = None

    def _collect_stderr(self, stream: t.IO[bytes]) -> None:
        while True:
            chunk = stream.read1(1024) if hasattr(stream, "read1") else stream.read(1024)
            if not chunk:
                break
            self._stderr = (self._stderr + chunk)[-STDERR_KEPT:]
        stream.close()

    def failure(self, wait: float = REAP_TIMEOUT) -> str:
        """What the ProxyCommand said, once it exited (waiting up to ``wait`` s): its exit status and stderr."""
        proc = self.proc
        if proc is None:
            return ""
        deadline = time.monotonic() + wait
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._stderr_thread is not None:
            self._stderr_thread.join(max(0.0, deadline - time.monotonic()))
        status = proc.poll()
        said = self._stderr.decode("utf-8", "replace").strip()
        state = "is still running" if status is None else f"exited with status {status}"
        return f"ProxyCommand {self.command!r} {state}" + (f": {said}" if said else "")

    def close(self) -> None:
        super().close()
        self.reap()

    def reap(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if proc.poll() is None:
            deadline = time.monotonic() + 0.2  # stdin at EOF: ssh -W and relays exit by themselves
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)
            except OSError:
                pass
            try:
                proc.wait(REAP_TIMEOUT)
            except subprocess.TimeoutExpired:
                continue


def open_proxy_socket(hop: Hop) -> ProxySocket:
    """Start the hop's ProxyCommand and return the socket connected to its stdin and stdout."""
    command = hop.proxy_command or ""
    ours, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen(
            proxy_argv(command),
            stdin=theirs,
            stdout=theirs,
            stderr=subprocess.PIPE,
            env=proxy_environment(),
            close_fds=True,
            start_new_session=True,
        )
    except OSError as exc:
        ours.close()
        raise Unreachable(
            f"cannot run the ProxyCommand {command!r} for {hop.label()}: {exc.strerror or exc}",
            advice="check the command and that it is on PATH",
            hop=hop.label(),
        ) from exc
    finally:
        theirs.close()
    sock = ProxySocket(fileno=ours.detach())
    sock.proc = proc
    sock.command = command
    stderr = proc.stderr
    if stderr is not None:
        sock._stderr_thread = threading.Thread(target=sock._collect_stderr, args=(stderr,), name="burrow-proxycommand-stderr", daemon=True)
        sock._stderr_thread.start()
    return sock
