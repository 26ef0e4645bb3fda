# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Load through the lab: 1000 concurrent connections, 500 create/check/destroy cycles without leaks, bulk bytes per kind."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import pytest
import socks_client
from engine_helpers import LoopbackServer, digest_after_eof_handler, wait_until
from helpers import all_pids, children, fd_kinds, proc_state, read_reply, record, send_stream, spawn_tunnel, stop_all
from procs import holders_of
from topology import Lab, connect_in, in_netns

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.engine import TunnelEngine
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration

pytestmark = pytest.mark.needs_root

CONCURRENT = 1000
CYCLES = 500
BULK = 1024 * 1024 * 1024  # about 6 s per kind here, so CI runs the full GiB


async def _one_client(port: int, index: int, opened: asyncio.Event, counter: list[int]) -> str:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
    counter[0] += 1
    if counter[0] == CONCURRENT:
        opened.set()
    await asyncio.wait_for(opened.wait(), 60)  # every connection is open at the same time before any data flows
    data = hashlib.sha256(str(index).encode()).digest() * 128  # 4 KiB, distinct per connection
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    received = await asyncio.wait_for(reader.read(), 60)
    writer.close()
    if received == data:
        return "ok"
    client_port = writer.get_extra_info("sockname")[1]
    return f"connection {index} (client port {client_port}): {len(received)} bytes back, content {_whose(received) if received else 'missing'}"


def _whose(received: bytes) -> str:
    """Another connection's bytes (a crossed channel) or garbled ones: what a failure needs to say to be chased."""
    owners = [index for index in range(CONCURRENT) if received == hashlib.sha256(str(index).encode()).digest() * 128]
    if owners:
        return f"is connection {owners[0]}'s"
    blocks = {received[offset : offset + 32] for offset in range(0, len(received), 32)}
    mine = {index for index in range(CONCURRENT) if hashlib.sha256(str(index).encode()).digest() in blocks}
    return f"differs (32-byte blocks of connections {sorted(mine)[:5]} among {len(blocks)} distinct blocks)"


async def _concurrent(port: int) -> list[str]:
    opened = asyncio.Event()
    counter = [0]
    return list(await asyncio.gather(*(_one_client(port, index, opened, counter) for index in range(CONCURRENT)), return_exceptions=False))


@contextlib.contextmanager
def _processes_holding_descriptors(count: int) -> t.Iterator[int]:
    """``count`` root processes each holding as many open files as the hard limit allows, as a full suite run leaves them.

    The audit trail's pid lookup reads every descriptor of the client user's processes; with 76,000 of them it starved
    the transport and the load test was reset (before one lookup at a time was allowed).
    """
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    each = min(hard, 20000) - 64
    script = (
        "import os, resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({hard}, {hard}))\n"
        f"fds = [os.open('/dev/null', os.O_RDONLY) for _ in range({each})]\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holders = [subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _holder in range(count)]
    try:
        for holder in holders:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        yield each * count
    finally:
        for holder in holders:
            holder.kill()
            holder.communicate()


def _audit_lines_of(failures: list[str], audit_path: Path) -> list[str]:
    """The audit lines (with their line numbers) of the failed connections' client ports: what the tunnel itself relayed for each.

    A crossed connection whose own line shows its bytes relayed in full was crossed inside the tunnel process; one whose
    line shows nothing came back from the server was crossed beyond it.
    """
    ports = set(re.findall(r"client port (\d+)", " ".join(failures)))
    try:
        lines = audit_path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return [f"audit file unreadable: {exc}"]
    return [f"{number}: {line}" for number, line in enumerate(lines) if any(f':{port}"' in line for port in ports)][:20]


def _failure_evidence(failures: list[str], handle: t.Any, status: dict[str, t.Any], lab: Lab, audit_path: Path) -> str:
    """What a failed burst leaves to chase it: the tunnel's own account, its log, its audit lines and what the bastion's sshd said."""
    try:
        inspected = handle.inspect()
        account = {key: inspected.get(key) for key in ("state", "reconnects", "last_error", "connections_active")}
        account["forward"] = inspected["forwards"][0]
    except Exception as exc:  # the evidence must not hide the failure
        account = {"inspect failed": str(exc)}
    log_tail = Path(status.get("log") or "/nonexistent").read_text(errors="replace").splitlines()[-15:] if status.get("log") else []
    sshd_log = getattr(lab.bastion_sshd, "log_path", None)
    sshd_lines = [line for line in Path(sshd_log).read_text(errors="replace").splitlines() if "hannel" in line or "isconnect" in line][-15:] if sshd_log else []
    audit_lines = _audit_lines_of(failures, audit_path)
    return f"{failures[:10]}; tunnel: {account}; tunnel log: {log_tail}; audit lines of the failed clients: {audit_lines}; bastion sshd: {sshd_lines}"


def test_1000_concurrent_connections_through_one_forward(lab: Lab, tmp_path: t.Any) -> None:
    """1000 connections at once through one forward with the audit trail on (the default), every byte verified."""
    state_dir = str(tmp_path / "state")
    try:
        with _processes_holding_descriptors(4) as descriptors:
            status, handle = spawn_tunnel(lab.params("load", local_forwards=[f"0:{lab.db}:{lab.db_echo_port}"]), state_dir)
            assert status["audit"]["sink"] == "file"
            port = status["forwards"][0]["bound_port"]
            started = time.monotonic()
            results = asyncio.run(asyncio.wait_for(_concurrent(port), 240))
            elapsed = time.monotonic() - started
        failures = [result for result in results if result != "ok"]
        assert failures == [], _failure_evidence(failures, handle, status, lab, Path(state_dir, "load.audit.jsonl"))
        report = handle.inspect()
        assert wait_until(lambda: handle.inspect()["connections_active"] == 0, 30), handle.inspect()["connections_active"]
        forward = handle.inspect()["forwards"][0]
        assert forward["failures"] == 0, forward
        assert report["reconnects"] == 0
        lines = [json.loads(line) for line in Path(state_dir, "load.audit.jsonl").read_text().splitlines()]
        assert len(lines) == CONCURRENT and {line["ended"] for line in lines} == {"closed"}
        assert all(line["client"].startswith("127.0.0.1:") for line in lines)
        # Every line: a burst must not hide who connected (the uid is one sock_diag request; only the pid scan is bounded).
        unattributed = [line["client"] for line in lines if line["uid"] != os.getuid()]
        assert unattributed == [], f"{len(unattributed)} connections of the burst without their uid, e.g. {unattributed[:3]}"
        verified = len(results) - len(failures)
        seconds = round(elapsed, 2)
        record("load_concurrent", connections=CONCURRENT, verified=verified, seconds=seconds, bytes_each_way=4096 * CONCURRENT, fds_elsewhere=descriptors)
    finally:
        stop_all(state_dir)


def _snapshot(lab: Lab) -> dict[str, t.Any]:
    kinds = fd_kinds()
    return {
        "fds": sum(kinds.values()),
        "sockets": kinds["socket"],
        "threads": threading.active_count(),
        "children": len(children()),
        "zombies": sum(1 for pid in children() if proc_state(pid) == "Z"),
        "bastion_sessions": len(lab.bastion_sshd.child_pids()),
    }


def test_500_create_check_destroy_cycles_leak_nothing(lab: Lab) -> None:
    tunnel = parse_declaration(lab.params("cycles", local_forwards=[f"0:{lab.db}:{lab.db_echo_port}"]))

    def cycle() -> float:
        started = time.monotonic()
        engine = TunnelEngine(tunnel)
        engine.start()
        try:
            port = next(iter(engine.forwards.values())).bound.port  # type: ignore[union-attr]
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(b"cycle")
                client.shutdown(socket.SHUT_WR)
                assert read_reply(client) == b"cycle"
            assert engine.probe()[0]["ok"] is True
        finally:
            engine.stop(deadline=2)
        return time.monotonic() - started

    threads_at_start = threading.active_count()
    for _warm in range(5):
        cycle()
    # The baseline is taken at rest: a stopped engine's transport threads end just after stop() returns (and on a busy
    # machine, a little later), so they would be counted in a baseline taken at once and missing from the final count.
    assert wait_until(lambda: _snapshot(lab)["bastion_sessions"] == 0, 10)
    wait_until(lambda: threading.active_count() <= threads_at_start, 10)
    before = _snapshot(lab)
    durations = [cycle() for _index in range(CYCLES)]

    def grown() -> dict[str, tuple[int, int]]:
        now = _snapshot(lab)
        return {key: (before[key], now[key]) for key in before if now[key] > before[key]}

    # A leak is growth; fewer threads or descriptors at the end than in the baseline is not one.
    assert wait_until(lambda: not grown(), 15), f"grown (before, after): {grown()}; threads alive: {[thread.name for thread in threading.enumerate()]}"
    first, last = statistics.median(durations[:50]), statistics.median(durations[-50:])
    assert last <= first * 1.5 + 0.02, f"cycle time grew: median of the first 50 {first * 1000:.1f} ms, of the last 50 {last * 1000:.1f} ms"
    record(
        "load_cycles",
        cycles=CYCLES,
        first50_median_ms=round(first * 1000, 1),
        last50_median_ms=round(last * 1000, 1),
        total_seconds=round(sum(durations), 1),
        before=before,
        after=_snapshot(lab),
    )


def _is_ours(pid: int, state_dir: str) -> bool:
    """A tunnel process of this test (its title names the tunnel) or anything holding a file in its state directory."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return cmdline.startswith(b"burrow-tunnel proc-cycles") or pid in holders_of(state_dir)


def test_tunnel_process_cycles_leave_no_process_or_file(lab: Lab, tmp_path: t.Any) -> None:
    state_dir = str(tmp_path / "state")
    params = lab.params("proc-cycles", local_forwards=[f"0:{lab.db}:{lab.db_echo_port}"], dynamic_forwards=["127.0.0.1:0"])
    pids_before = all_pids()
    spawned = []
    try:
        for _index in range(20):
            status, handle = spawn_tunnel(params, state_dir)
            spawned.append(int(status["pid"]))
            assert handle.inspect(probe=True)["probe"][0]["ok"] is True
            assert handle.stop(deadline=2) is True
    finally:
        stop_all(state_dir)
    assert wait_until(lambda: not any(proc_state(pid) not in ("", "Z") for pid in spawned), 10)
    assert os.listdir(state_dir) == []
    # Only this test's processes count: the machine is shared (CI, other runs), so other new pids are not ours.
    assert wait_until(lambda: not [pid for pid in all_pids() - pids_before if proc_state(pid) not in ("", "Z") and _is_ours(pid, state_dir)], 10)
    assert [pid for pid in children() if proc_state(pid) == "Z"] == []
    record("load_process_cycles", cycles=len(spawned))


def _bulk(lab: Lab, tmp_path: t.Any, kind: str, size: int) -> None:
    state_dir = str(tmp_path / "state")
    db_sink = in_netns(lab.db_ns, LoopbackServer, digest_after_eof_handler, lab.db)
    local_sink = LoopbackServer(digest_after_eof_handler)
    try:
        if kind == "local":
            params = lab.params("bulk", local_forwards=[f"0:{lab.db}:{db_sink.port}"])
        elif kind == "remote":
            params = lab.params("bulk", remote_forwards=[f"127.0.0.1:0:127.0.0.1:{local_sink.port}"])
        else:
            params = lab.params("bulk", dynamic_forwards=["127.0.0.1:0"])
        status = spawn_tunnel(params, state_dir)[0]
        port = status["forwards"][0]["bound_port"]
        if kind == "remote":
            client = connect_in(lab.bastion_ns, ("127.0.0.1", port), timeout=30)
        else:
            client = socket.create_connection(("127.0.0.1", port), timeout=30)
            if kind == "dynamic":
                socks_client.client_connect(client, lab.db, db_sink.port, version=5)
        client.settimeout(300)
        started = time.monotonic()
        with client:
            sent = send_stream(client, size, seed=len(kind))
            reply = read_reply(client)
        elapsed = time.monotonic() - started
        assert reply == sent.encode() + b"\nEND\n", f"{kind}: sha256 differs: sent {sent}, far end saw {reply[:64]!r}"
        record(
            "load_bulk",
            **{f"{kind}_{size // (1024 * 1024)}MiB": {"sha256_equal": True, "seconds": round(elapsed, 2), "MiB_per_s": round(size / 1048576 / elapsed, 1)}},
        )
    finally:
        stop_all(state_dir)
        db_sink.stop()
        local_sink.stop()


@pytest.mark.parametrize("kind", ["local", "remote", "dynamic"])
def test_one_gib_arrives_identical(lab: Lab, tmp_path: t.Any, kind: str) -> None:
    _bulk(lab, tmp_path, kind, BULK)
