# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Process and socket accounting, tunnel processes in a state dir, streamed payloads: shared by the reliability tests."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import random
import socket
import struct
import threading
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.control import TunnelHandle
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.spawn import spawn
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration

STREAM_CHUNK = 1024 * 1024
FIGURES = pathlib.Path(__file__).resolve().parents[2] / ".build" / "reliability" / "figures.json"
_FIGURES_LOCK = threading.Lock()


def record(section: str, **values: t.Any) -> None:
    """Merge measured values into .build/reliability/figures.json under section (docs/reliability.md quotes them)."""
    with _FIGURES_LOCK:
        FIGURES.parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, t.Any] = {}
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(FIGURES.read_text())
        data.setdefault(section, {}).update(values)
        FIGURES.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def proc_state(pid: int) -> str:
    try:
        raw = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return raw[raw.rfind(")") + 2 :].split()[0]


def children(pid: int | None = None) -> list[int]:
    """Direct children of pid (default: this process), zombies included."""
    pid = pid or os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                raw = pathlib.Path(f"/proc/{entry}/stat").read_text()
                if int(raw[raw.rfind(")") + 2 :].split()[1]) == pid:
                    found.append(int(entry))
    return found


def all_pids() -> set[int]:
    return {int(entry) for entry in os.listdir("/proc") if entry.isdigit()}


def fd_kinds(pid: int | str = "self") -> dict[str, int]:
    """Open descriptors of a process by kind: socket, pipe, anon, file."""
    counts = {"socket": 0, "pipe": 0, "anon": 0, "file": 0}
    base = f"/proc/{pid}/fd"
    for entry in os.listdir(base):
        try:
            target = os.readlink(f"{base}/{entry}")
        except OSError:
            continue
        if target.startswith("socket:"):
            counts["socket"] += 1
        elif target.startswith("pipe:"):
            counts["pipe"] += 1
        elif target.startswith("anon_inode:"):
            counts["anon"] += 1
        else:
            counts["file"] += 1
    return counts


def spawn_tunnel(params: dict[str, t.Any], state_dir: str) -> tuple[dict[str, t.Any], TunnelHandle]:
    status = spawn(parse_declaration(params), state_dir)
    return status, TunnelHandle(state_dir, params["name"])


def stop_all(state_dir: str | pathlib.Path) -> None:
    """Stop every tunnel process recorded in state_dir (teardown helper; never by process name)."""
    path = pathlib.Path(state_dir)
    if not path.is_dir():
        return
    for state in path.glob("*.json"):
        with contextlib.suppress(Exception):
            TunnelHandle(str(path), state.stem).stop(deadline=1)


def stream_chunks(size: int, seed: int = 1) -> t.Iterator[bytes]:
    """size bytes of incompressible data, chunk by chunk (each chunk distinct), without holding them all in memory."""
    block = random.Random(seed).randbytes(STREAM_CHUNK)
    sent = 0
    index = 0
    while sent < size:
        part = struct.pack(">Q", index) + block[8 : min(STREAM_CHUNK, size - sent)]
        part = part[: size - sent]
        yield part
        sent += len(part)
        index += 1


def send_stream(sock: socket.socket, size: int, seed: int = 1) -> str:
    """Send the stream, half-close, return its sha256."""
    digest = hashlib.sha256()
    for part in stream_chunks(size, seed):
        digest.update(part)
        sock.sendall(part)
    sock.shutdown(socket.SHUT_WR)
    return digest.hexdigest()


def read_reply(sock: socket.socket, limit: int = 4096) -> bytes:
    data = b""
    while len(data) < limit:
        part = sock.recv(4096)
        if not part:
            break
        data += part
    return data
