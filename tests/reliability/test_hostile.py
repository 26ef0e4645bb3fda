# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile input: declarations rejected precisely before anything starts; malformed SOCKS on a live listener."""

from __future__ import annotations

import socket
import struct
import typing as t

import pytest
import socks_client
from engine_helpers import wait_until
from helpers import all_pids, read_reply, record
from topology import Lab

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.engine import TunnelEngine
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration

BASE = {"name": "hostile", "host": "127.0.0.1", "port": 22, "user": "root", "use_agent": False, "dynamic_forwards": ["127.0.0.1:0"]}
BAD = [
    ({"port": -1}, "port"),
    ({"port": 65536}, "port"),
    ({"port": 0}, "port"),
    ({"port": "22 "}, "port"),
    ({"port": True}, "port"),
    ({"local_forwards": [{"listen_port": False, "dest_host": "db", "dest_port": 5432}]}, "local_forwards[0]"),
    ({"local_forwards": ["0:db:0"]}, "local_forwards[0]"),
    ({"local_forwards": ["0:db:65536"]}, "local_forwards[0]"),
    ({"local_forwards": ["-1:db:5432"]}, "local_forwards[0]"),
    ({"host": "db;id"}, "host"),
    ({"host": "db`id`"}, "host"),
    ({"host": "$(id)"}, "host"),
    ({"host": "db\nProxyCommand x"}, "host"),
    ({"host": "db\x00x"}, "host"),
    ({"host": "-oProxyCommand=touch /tmp/pwned"}, "host"),
    ({"user": "root;id"}, "user"),
    ({"user": "`id`"}, "user"),
    ({"user": "$(id)"}, "user"),
    ({"user": "a\nb"}, "user"),
    ({"user": "a\x00b"}, "user"),
    ({"user": "-oProxyCommand=x"}, "user"),
    ({"via": ["ops@$(id)"]}, "via[0]"),
    ({"dynamic_forwards": ["[::1:1080"]}, "dynamic_forwards[0]"),
    ({"local_forwards": ["[::1]x:0:db:5432"]}, "local_forwards[0]"),
    ({"local_forwards": ["0:[fe80::1:5432"]}, "local_forwards[0]"),
    ({"local_forwards": ["/" + "s" * 120 + ":db:5432"]}, "local_forwards[0]"),
    ({"local_forwards": ["0:/" + "s" * 120]}, "local_forwards[0]"),
]


@pytest.mark.parametrize(("override", "field"), BAD, ids=[f"{field}-{index}" for index, (_override, field) in enumerate(BAD)])
def test_bad_declaration_is_rejected_naming_the_field_and_spawns_nothing(override: dict[str, t.Any], field: str) -> None:
    before = all_pids()
    params = dict(BASE, **override)
    with pytest.raises(SpecError) as info:
        parse_declaration(params)
    assert field in str(info.value), str(info.value)
    assert not [pid for pid in all_pids() - before if _parent(pid) in before and _is_ours(pid)]


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            raw = handle.read()
    except OSError:
        return 0
    return int(raw[raw.rfind(")") + 2 :].split()[1])


def _is_ours(pid: int) -> bool:
    import os

    return _parent(pid) == os.getpid()


def _socks5_request(command: int, atyp: int, address: bytes, port: int = 80) -> bytes:
    return bytes((5, command, 0, atyp)) + address + struct.pack(">H", port)


MALFORMED = [
    ("bad version", b"\x06\x01\x00", None, "unsupported SOCKS version 0x06"),
    ("bad command", b"\x05\x01\x00" + _socks5_request(0x09, 1, bytes((10, 203, 2, 2))), b"\x05\x00\x05\x07", "command 0x09"),
    ("bad address type", b"\x05\x01\x00" + _socks5_request(1, 0x07, b"\x00" * 4), b"\x05\x00\x05\x08", "address type 0x07"),
    ("300-byte domain", b"\x04\x01\x00\x50\x00\x00\x00\x01user\x00" + b"d" * 300 + b"\x00", b"\x00\x5b", "longer than"),
    ("broken auth", b"\x05\x01\x00", b"\x05\xff", ""),
]


@pytest.mark.needs_root
def test_malformed_socks_is_rejected_and_the_listener_and_other_clients_carry_on(lab: Lab) -> None:
    forwards = ["127.0.0.1:0", {"listen_host": "127.0.0.1", "listen_port": 0, "socks_username": "u", "socks_password": "p"}]
    engine = TunnelEngine(parse_declaration(lab.params("socks", dynamic_forwards=forwards)))
    engine.start()
    try:
        plain, authed = (runtime for runtime in engine.forwards.values())
        steady = socket.create_connection(("127.0.0.1", plain.bound.port), timeout=10)  # type: ignore[union-attr]
        socks_client.client_connect(steady, lab.db, lab.db_echo_port, version=5)
        pids = all_pids()
        seen = {}
        for name, request, expected_prefix, message in MALFORMED:
            target = authed if name == "broken auth" else plain
            failures = target.counters.failures
            with socket.create_connection(("127.0.0.1", target.bound.port), timeout=10) as bad:  # type: ignore[union-attr]
                bad.settimeout(10)
                bad.sendall(request)
                reply = read_reply(bad)
            if expected_prefix is None:
                assert reply == b"", f"{name}: {reply!r}"
            else:
                assert reply.startswith(expected_prefix), f"{name}: {reply!r}"
            assert wait_until(lambda target=target, failures=failures: target.counters.failures == failures + 1, 5), name
            assert message in target.counters.last_error, f"{name}: {target.counters.last_error}"
            seen[name] = target.counters.last_error
            steady.sendall(name.encode())
            assert steady.recv(64) == name.encode(), "the client in flight is unaffected"
        assert all_pids() - pids == set() or all(_parent(pid) != 0 and not _is_ours(pid) for pid in all_pids() - pids), "nothing spawned"
        fresh = socket.create_connection(("127.0.0.1", plain.bound.port), timeout=10)  # type: ignore[union-attr]
        socks_client.client_connect(fresh, lab.db, lab.db_echo_port, version=5)
        fresh.sendall(b"still accepting")
        assert fresh.recv(64) == b"still accepting"
        fresh.close()
        steady.close()
        record("hostile", socks_rejections=seen, declarations_rejected=len(BAD))
    finally:
        engine.stop(deadline=1)
