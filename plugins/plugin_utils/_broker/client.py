# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The worker side of the session broker: locating or starting the broker, requests and command streams.

Ansible compiles a collection's Python files from source in every worker process (no bytecode cache), once per
task: this file and the protocol hold only what a worker needs; the broker's own code lives in server.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import ConnectionLost, ControlError, TunnelError
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.paths import BrokerPaths, collection_root, flock_with_deadline
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.protocol import (
    KIND_EXIT,
    KIND_JSON,
    KIND_STDERR,
    KIND_STDIN,
    KIND_STDIN_EOF,
    KIND_STDOUT,
    READ_SIZE,
    recv_frame,
    send_frame,
    send_json,
)

SPAWN_TIMEOUT = 20.0

_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.daemon import daemon_main; "
    "sys.exit(daemon_main(sys.argv[2:]))"
)


class BrokerGone(ControlError):
    """The broker closed the connection without answering: it was stopping. Safe to retry once."""


class ExecStream:
    """One running command: frames in both directions over a dedicated broker connection."""

    def __init__(self, sock: socket.socket, started: dict[str, t.Any]) -> None:
        self.sock = sock
        self.started = started
        self.rc: int | None = None
        self.signal: str | None = None
        self.stdin_gone = False

    def send_stdin(self, data: bytes) -> None:
        view = memoryview(data)
        for offset in range(0, len(view), READ_SIZE):
            self._send_input(KIND_STDIN, bytes(view[offset : offset + READ_SIZE]))

    def close_stdin(self) -> None:
        self._send_input(KIND_STDIN_EOF, b"")

    def _send_input(self, kind: bytes, payload: bytes) -> None:
        # The broker closes its end once the command has exited, even when the command never read its input (a wrong
        # become password, a missing interpreter). The output and the exit status are then already queued on this
        # socket for read()/collect(): the input is moot, not the stream lost.
        if self.stdin_gone:
            return
        try:
            send_frame(self.sock, kind, payload)
        except (BrokenPipeError, ConnectionResetError):
            self.stdin_gone = True

    def read(self, timeout: float | None = None) -> tuple[bytes, bytes] | None:
        """Next (kind, data) frame; kind O, E or X (data is then the exit JSON). None when timed out."""
        if timeout is not None:
            ready = select.select([self.sock], [], [], max(0.0, timeout))[0]
            if not ready:
                return None
        frame = recv_frame(self.sock)
        if frame is None:
            raise ConnectionLost("the session broker closed the command's stream before its exit status")
        kind, data = frame
        if kind == KIND_EXIT:
            status = json.loads(data.decode("utf-8"))
            if status.get("error"):
                raise TunnelError.from_dict(status["error"])
            self.rc = int(status.get("rc", -1))
            self.signal = status.get("signal")
        return kind, data

    def collect(self, stdout: bytearray, stderr: bytearray) -> int:
        while self.rc is None:
            frame = self.read()
            if frame is None:  # pragma: no cover - read() without timeout never returns None
                continue
            kind, data = frame
            if kind == KIND_STDOUT:
                stdout += data
            elif kind == KIND_STDERR:
                stderr += data
        return self.rc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class BrokerClient:
    """Talk to this user's broker, starting it first when it is not running."""

    def __init__(self, state_dir: str | None = None, spawn_timeout: float = SPAWN_TIMEOUT) -> None:
        self.paths = BrokerPaths(state_dir)
        self.spawn_timeout = spawn_timeout

    def _try_connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.paths.socket)
        except OSError:
            sock.close()
            return None
        return sock

    def connect(self) -> socket.socket:
        sock = self._try_connect()
        if sock is not None:
            return sock
        lock_fd = os.open(self.paths.spawn_lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            flock_with_deadline(lock_fd, self.spawn_timeout)
            sock = self._try_connect()
            if sock is None:
                self._spawn()
                sock = self._wait_for_socket()
        finally:
            os.close(lock_fd)
        return sock

    def _spawn(self) -> None:
        # A fresh interpreter (nothing inherited from Ansible's worker: threads, locks, display queue), in its own
        # session, stdio on /dev/null, no other fds; it forks once more and the intermediate exits at once (double fork).
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.paths.socket)
        process = subprocess.Popen(  # fixed argv, no shell
            [sys.executable, "-c", _BOOT, collection_root(), self.paths.dir],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
            cwd="/",
        )
        try:
            process.wait(timeout=self.spawn_timeout)
        except subprocess.TimeoutExpired as exc:
            process.kill()
            process.wait()
            raise ControlError("the session broker did not detach in time", advice=f"see {self.paths.log}") from exc

    def _wait_for_socket(self) -> socket.socket:
        deadline = time.monotonic() + self.spawn_timeout
        delay = 0.005
        while time.monotonic() < deadline:
            sock = self._try_connect()
            if sock is not None:
                return sock
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        raise ControlError(
            f"the session broker did not start within {self.spawn_timeout:g} s", advice=f"its log may say why: {self.paths.log}; {_log_tail(self.paths.log)}"
        )

    def call(self, request: dict[str, t.Any], timeout: float | None = None) -> dict[str, t.Any]:
        """One request, one answer. Raises the broker's TunnelError (same class as raised there)."""
        try:
            return self._call_once(request, timeout)
        except BrokerGone:
            # The broker was stopping when we connected (it had just become idle): a new one takes over.
            return self._call_once(request, timeout)

    def _call_once(self, request: dict[str, t.Any], timeout: float | None) -> dict[str, t.Any]:
        sock = self.connect()
        try:
            sock.settimeout(timeout)
            send_json(sock, request)
            frame = recv_frame(sock)
        except (OSError, EOFError) as exc:
            raise ControlError(f"lost the session broker during {request.get('op')}: {exc}") from exc
        finally:
            sock.close()
        if frame is None:
            raise BrokerGone(f"the session broker gave no answer to {request.get('op')}")
        if frame[0] != KIND_JSON:
            raise ControlError(f"the session broker gave a wrong answer to {request.get('op')}")
        answer = json.loads(frame[1].decode("utf-8"))
        if not answer.get("ok"):
            raise TunnelError.from_dict(answer.get("error") or {"message": "unknown broker error"})
        return answer

    def exec(self, request: dict[str, t.Any], stdin: bytes | None = None, eof: bool = False) -> ExecStream:
        """Start a command. `stdin` and `eof` are sent right behind the request (no wait for the start): one round trip less."""
        try:
            return self._exec_once(request, stdin, eof)
        except BrokerGone:
            return self._exec_once(request, stdin, eof)

    def _exec_once(self, request: dict[str, t.Any], stdin: bytes | None, eof: bool) -> ExecStream:
        sock = self.connect()
        try:
            send_json(sock, dict(request, op="exec"))
            stream = ExecStream(sock, {})
            if stdin:
                stream.send_stdin(stdin)
            if eof:
                stream.close_stdin()
            frame = recv_frame(sock)
        except (OSError, EOFError) as exc:
            sock.close()
            raise ControlError(f"lost the session broker while starting a command: {exc}") from exc
        if frame is None or frame[0] != KIND_JSON:
            sock.close()
            raise BrokerGone("the session broker gave no answer to exec")
        answer = json.loads(frame[1].decode("utf-8"))
        if not answer.get("ok"):
            sock.close()
            raise TunnelError.from_dict(answer.get("error") or {"message": "unknown broker error"})
        return ExecStream(sock, answer)


def _log_tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return " | ".join(handle.read().splitlines()[-lines:])
    except OSError:
        return "no log"
