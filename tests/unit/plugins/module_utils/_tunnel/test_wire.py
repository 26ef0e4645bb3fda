# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A grouped tunnel's declaration crosses the group socket as JSON and arrives as the same Tunnel, secrets included."""

from __future__ import annotations

import json

import pytest

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.wire import tunnel_from_wire, tunnel_to_wire
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration

FULL = {
    "name": "grouped",
    "host": "deploy@db.example.com:2222",
    "via": [{"host": "bastion.example.com", "user": "ops", "password": "s3cret", "host_key_fingerprint": "SHA256:" + "A" * 43}],
    "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n",
    "private_key_passphrase": "pass",
    "local_forwards": ["0:db.internal:5432", {"listen_port": 0, "dest_host": "api", "dest_port": 80, "probe": {"type": "http", "status": 200}}],
    "remote_forwards": ["/run/burrow/.s.PGSQL.5432:127.0.0.1:5432"],
    "dynamic_forwards": [{"listen_port": 1080, "socks_username": "u", "socks_password": "p"}],
    "ttl": 60,
    "max_connections": 10,
    "audit": "none",
    "process_group": "site-a",
}


def test_a_declaration_survives_the_wire_unchanged() -> None:
    tunnel = parse_declaration(FULL)
    back = tunnel_from_wire(json.loads(json.dumps(tunnel_to_wire(tunnel))))
    assert back == tunnel
    assert back.digest() == tunnel.digest()
    assert back.hops[0].password == "s3cret" and back.hops[-1].private_key == tunnel.hops[-1].private_key
    assert back.forwards[-1].socks_password == "p", "compare=False fields travel too"
    assert back.forwards[0].listen.default_bind == tunnel.forwards[0].listen.default_bind


@pytest.mark.parametrize("bad", [[], {"name": "x", "nonsense": 1}, {"name": "x", "hops": [{"host": "h", "evil": 1}]}])
def test_anything_else_is_refused(bad: object) -> None:
    with pytest.raises((ValueError, TypeError, SpecError)):
        tunnel_from_wire(bad)  # type: ignore[arg-type]


def test_process_group_is_validated_like_a_name() -> None:
    with pytest.raises(SpecError) as caught:
        parse_declaration({**FULL, "process_group": "../x"})
    assert caught.value.field == "process_group"
