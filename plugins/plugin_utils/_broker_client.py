# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The worker side of the session broker: framing, locating or starting the broker, requests and command streams.

Ansible compiles a collection's Python files from source in every worker process (no bytecode cache), once per
task: this file holds only what a worker needs, and the broker's own code lives in _session_broker.

Wire format: frames of one type byte, a 4-byte big-endian length and the payload. A request is one `J`
(JSON) frame; the answer is one `J` frame, except for `exec`, whose answer is followed by a stream of
`O`/`E` (stdout/stderr) frames and a final `X` (exit status) frame, while the client may send `I` (stdin)
frames and one `D` (stdin EOF) frame.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._errors import ControlError
from ansible_collections.burrow.ssh.plugins.module_utils._paths import default_state_dir, ensure_state_dir, process_start_time

PROTOCOL = 1
FRAME = struct.Struct(">cI")
MAX_FRAME = 64 * 1024 * 1024
READ_SIZE = 256 * 1024
SPAWN_TIMEOUT = 20.0

KIND_JSON = b"J"
KIND_STDOUT = b"O"
KIND_STDERR = b"E"
KIND_STDIN = b"I"
KIND_STDIN_EOF = b"D"
KIND_EXIT = b"X"

_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from ansible_collections.burrow.ssh.plugins.plugin_utils._session_broker import daemon_main; "
    "sys.exit(daemon_main(sys.argv[2:]))"
)


class BrokerError(Exception):
    """An error reported by the broker (or met while talking to it); `data` is the TunnelError dict."""

    def __init__(self, data: dict[str, t.Any]) -> None:
        super().__init__(str(data.get("message", "session broker error")))
        self.data = data
        self.kind = str(data.get("kind", "error"))
        self.message = str(data.get("message", "session broker error"))
        self.advice = str(data.get("advice", ""))

    def __str__(self) -> str:
        return f"{self.message}. {self.advice}" if self.advice else self.message


class _NoAnswer(BrokerError):
    """The broker closed the connection without answering: it was stopping. Safe to retry once."""


# -- framing --------------------------------------------------------------------------------------------
def send_frame(sock: socket.socket, kind: bytes, payload: bytes = b"") -> None:
    header = FRAME.pack(kind, len(payload))
    if len(payload) <= 65536:
        sock.sendall(header + payload)
    else:
        sock.sendall(header)
        sock.sendall(payload)


def send_json(sock: socket.socket, data: dict[str, t.Any], kind: bytes = KIND_JSON) -> None:
    send_frame(sock, kind, json.dumps(data, separators=(",", ":")).encode("utf-8"))


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = sock.recv(min(remaining, READ_SIZE))
        if not chunk:
            raise EOFError("connection closed in the middle of a frame")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """The next frame, or None at a clean end of stream."""
    first = sock.recv(FRAME.size)
    if not first:
        return None
    if len(first) < FRAME.size:
        first += _recv_exact(sock, FRAME.size - len(first))
    kind, length = FRAME.unpack(first)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes exceeds the limit")
    return kind, _recv_exact(sock, length) if length else b""


# -- identity and paths ---------------------------------------------------------------------------------
def collection_root() -> str:
    """The directory that contains `ansible_collections/` for this copy of the collection."""
    here = os.path.abspath(__file__)
    parts = here.split(os.sep)
    # .../ansible_collections/<namespace>/<name>/plugins/plugin_utils/_broker_client.py
    if len(parts) < 7 or parts[-6] != "ansible_collections":
        raise ControlError(f"cannot locate the collection root from {here}", advice="install burrow.ssh as a collection (ansible-galaxy collection install)")
    return os.sep.join(parts[:-6]) or os.sep


def broker_identity() -> str:
    """One broker per user, per copy and version of this code: an upgraded collection never talks to an old broker.

    The broker runs the collection's plugin_utils and module_utils, so all of their sources make up its version.
    """
    digest = hashlib.sha256()
    here = os.path.dirname(os.path.abspath(__file__))
    digest.update(f"{PROTOCOL}:{os.getuid()}:{here}:".encode())
    for directory in (here, os.path.join(os.path.dirname(here), "module_utils")):
        with contextlib.suppress(OSError):
            for name in sorted(os.listdir(directory)):
                if name.endswith(".py"):
                    with contextlib.suppress(OSError), open(os.path.join(directory, name), "rb") as handle:
                        digest.update(name.encode() + b"\0" + handle.read())
    return digest.hexdigest()[:12]


class BrokerPaths:
    def __init__(self, state_dir: str | None = None) -> None:
        self.dir = ensure_state_dir(state_dir or default_state_dir())
        ident = broker_identity()
        self.socket = os.path.join(self.dir, f"broker-{ident}.sock")
        self.lock = os.path.join(self.dir, f"broker-{ident}.lock")
        self.spawn_lock = os.path.join(self.dir, f"broker-{ident}.spawn")
        self.log = os.path.join(self.dir, f"broker-{ident}.log")
        if len(self.socket.encode()) > 103:
            raise ControlError(f"state directory {self.dir} is too long for a Unix socket path", advice="set BURROW_STATE_DIR to a shorter directory")


def owner_identity(pid: int) -> list[int]:
    return [pid, process_start_time(pid) or 0]


# -- client (runs in Ansible's worker processes) --------------------------------------------------------------
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
            raise BrokerError({"kind": "connection_lost", "message": "the session broker closed the command's stream before its exit status"})
        kind, data = frame
        if kind == KIND_EXIT:
            status = json.loads(data.decode("utf-8"))
            if status.get("error"):
                raise BrokerError(status["error"])
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
        self.spawned = False

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
            _flock(lock_fd, self.spawn_timeout)
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
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
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
        self.spawned = True

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
        """One request, one answer. Raises BrokerError with the broker's typed error."""
        try:
            return self._call_once(request, timeout)
        except _NoAnswer:
            # The broker was stopping when we connected (it had just become idle): a new one takes over.
            return self._call_once(request, timeout)

    def _call_once(self, request: dict[str, t.Any], timeout: float | None) -> dict[str, t.Any]:
        sock = self.connect()
        try:
            sock.settimeout(timeout)
            send_json(sock, request)
            frame = recv_frame(sock)
        except (OSError, EOFError) as exc:
            raise BrokerError({"kind": "control_error", "message": f"lost the session broker during {request.get('op')}: {exc}"}) from exc
        finally:
            sock.close()
        if frame is None:
            raise _NoAnswer({"kind": "control_error", "message": f"the session broker gave no answer to {request.get('op')}"})
        if frame[0] != KIND_JSON:
            raise BrokerError({"kind": "control_error", "message": f"the session broker gave a wrong answer to {request.get('op')}"})
        answer = json.loads(frame[1].decode("utf-8"))
        if not answer.get("ok"):
            raise BrokerError(answer.get("error") or {"kind": "error", "message": "unknown broker error"})
        return answer

    def exec(self, request: dict[str, t.Any], stdin: bytes | None = None, eof: bool = False) -> ExecStream:
        """Start a command. `stdin` and `eof` are sent right behind the request (no wait for the start): one round trip less."""
        try:
            return self._exec_once(request, stdin, eof)
        except _NoAnswer:
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
            raise BrokerError({"kind": "control_error", "message": f"lost the session broker while starting a command: {exc}"}) from exc
        if frame is None or frame[0] != KIND_JSON:
            sock.close()
            raise _NoAnswer({"kind": "control_error", "message": "the session broker gave no answer to exec"})
        answer = json.loads(frame[1].decode("utf-8"))
        if not answer.get("ok"):
            sock.close()
            raise BrokerError(answer.get("error") or {"kind": "error", "message": "unknown broker error"})
        return ExecStream(sock, answer)


def _flock(fd: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError as exc:
            if time.monotonic() >= deadline:
                raise ControlError("timed out waiting for another process starting the session broker") from exc
            time.sleep(0.01)


def _log_tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return " | ".join(handle.read().splitlines()[-lines:])
    except OSError:
        return "no log"
