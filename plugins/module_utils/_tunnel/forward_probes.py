# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Probing a tunnel's forwards end to end: which stream each kind of forward probes through, and what counts as up.

The protocols themselves (PostgreSQL, HTTP, TLS ...) are in probes.py; this file chooses the path: -L a channel to
the destination, -R the local destination, -D the tunnel's own SOCKS listener to probe_target.
"""

from __future__ import annotations

import socket
import threading
import time
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel import probes
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import TunnelError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Endpoint

if t.TYPE_CHECKING:  # a declared cycle: forwards.py imports probe_forwards, this file needs its classes for types only
    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.forward_set import ForwardSet
    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.forwards import ForwardRuntime


def probe_forwards(forwards: ForwardSet, timeout: float | None = None) -> list[dict[str, t.Any]]:
    """Each forward's probe (declared, else the TCP-level check), all at once so the slowest sets the time."""
    runtimes = list(forwards.forwards.values())
    results: list[dict[str, t.Any]] = [{} for _runtime in runtimes]

    def one(index: int, runtime: ForwardRuntime) -> None:
        results[index] = {"key": runtime.key, "kind": runtime.forward.kind, **_probe_one(forwards, runtime, timeout)}

    threads = [threading.Thread(target=one, args=(index, runtime), name="burrow-probe", daemon=True) for index, runtime in enumerate(runtimes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _probe_one(forwards: ForwardSet, runtime: ForwardRuntime, timeout: float | None) -> dict[str, t.Any]:
    forward = runtime.forward
    spec = forward.probe
    if spec is None and forward.kind == "local":
        spec = probes.ProbeSpec("tcp")
    if spec is None and forward.kind == "remote" and forward.destination is not None:
        return _probe_remote(forwards, runtime)
    if spec is None:
        listening = forwards.connected.is_set() and runtime.active and (forward.kind == "remote" or runtime.listener is not None)
        detail = (
            "SOCKS listener accepting; destinations vary (set probe_target to probe one)"
            if forward.kind == "dynamic"
            else "remote listener registered on the server"
        )
        return {"ok": listening, "detail": detail if listening else "listener not active"}
    if spec.target is not None:
        target_host, target_port = spec.target.rsplit(":", 1)
        target = Endpoint(host=target_host.strip("[]"), port=int(target_port))
    else:
        target = forward.destination or Endpoint()
    result = probes.run(spec, lambda seconds: _probe_stream(forwards, runtime, target, seconds), str(target.host or "localhost"), timeout)
    return dict(result, target=str(target))


def _probe_stream(forwards: ForwardSet, runtime: ForwardRuntime, target: Endpoint, seconds: float) -> t.Any:
    """-L: a channel to the destination; -R: the local destination itself; -D: SOCKS through our own listener."""
    kind = runtime.forward.kind
    if kind == "local":
        return forwards.open_channel(target, ("127.0.0.1", 0), timeout=seconds)
    if kind == "remote" and runtime.forward.destination is not None:
        if target.is_unix():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(seconds)
            sock.connect(str(target.path))
            return sock
        return socket.create_connection((str(target.host), int(target.port or 0)), timeout=seconds)
    if kind == "remote":  # a remote SOCKS forward connects from here: the target directly
        return socket.create_connection((str(target.host), int(target.port or 0)), timeout=seconds)
    bound = runtime.bound
    if bound is None or runtime.listener is None:
        raise TunnelError(f"{runtime.key}: the SOCKS listener is not active")
    sock = socket.create_connection((str(bound.host), int(bound.port or 0)), timeout=seconds)
    try:
        probes.socks5_connect(probes.Stream(sock, time.monotonic() + seconds), str(target.host), int(target.port or 0), runtime._socks_credentials())
    except BaseException:
        sock.close()
        raise
    return sock


def _probe_remote(forwards: ForwardSet, runtime: ForwardRuntime) -> dict[str, t.Any]:
    """A remote forward works end to end only if the server holds its listener and this side reaches its destination."""
    registered = forwards.connected.is_set() and runtime.active
    destination = runtime.forward.destination
    if destination is None:
        detail = "remote SOCKS listener registered on the server; destinations vary"
        return {"ok": registered, "detail": detail if registered else "remote listener not registered"}
    started = time.monotonic()
    try:
        runtime.connect_destination(destination).close()
    except TunnelError as exc:
        state = "registered on the server" if registered else "not registered on the server"
        return {"ok": False, "destination_ok": False, "error": f"remote listener {state}, but {exc}"}
    latency = round((time.monotonic() - started) * 1000, 2)
    if not registered:
        return {"ok": False, "destination_ok": True, "latency_ms": latency, "detail": "remote listener not registered"}
    detail = "remote listener registered on the server; destination reachable from this side"
    return {"ok": True, "destination_ok": True, "latency_ms": latency, "detail": detail}
