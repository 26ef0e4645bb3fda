# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 16 items 4, 7, 9: new settings reach the tunnel process without changing the identity of existing declarations.

A running tunnel must not be replaced (digest) nor its forwards re-bound (key) on upgrade; the golden values below are
what the collection computed before these settings existed.
"""

from __future__ import annotations

import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._module_args import declaration_from_module
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration

DECLARATION: dict[str, t.Any] = {
    "name": "t",
    "host": "h",
    "local_forwards": ["1:h:1", "localhost:2:h:2"],
    "dynamic_forwards": [{"listen_port": 3, "socks_username": "u", "socks_password": "p"}],
    "remote_forwards": ["4:localhost:4"],
}
GOLDEN_DIGEST = "6a7afcdf29fd36b79d1b5c370d86aebac74d17bc58b28d74c1adec2646069db4"
GOLDEN_KEYS = ["local 127.0.0.1:1 -> h:1", "local localhost:2 -> h:2", "remote 127.0.0.1:4 -> localhost:4", "dynamic 127.0.0.1:3 (socks user u)"]


def test_the_identity_of_an_existing_declaration_is_unchanged() -> None:
    tunnel = parse_declaration(DECLARATION)
    assert tunnel.digest() == GOLDEN_DIGEST
    assert [forward.key() for forward in tunnel.forwards] == GOLDEN_KEYS


def test_allow_non_loopback_bind_reaches_the_declaration_outside_its_digest() -> None:
    allowed = declaration_from_module({**DECLARATION, "allow_non_loopback_bind": True, "state": "present"})
    assert allowed.allow_non_loopback_bind is True
    assert parse_declaration(DECLARATION).allow_non_loopback_bind is False
    assert allowed.digest() == GOLDEN_DIGEST


def test_process_group_is_part_of_the_identity_only_when_set() -> None:
    grouped = parse_declaration({**DECLARATION, "process_group": "site-a"})
    assert grouped.process_group == "site-a"
    assert grouped.digest() != GOLDEN_DIGEST, "a changed process_group replaces the tunnel"
    assert parse_declaration({**DECLARATION, "process_group": "site-b"}).digest() not in (GOLDEN_DIGEST, grouped.digest())
    assert [forward.key() for forward in grouped.forwards] == GOLDEN_KEYS
    # Unset (as the module passes it: None) leaves the digest of every existing declaration unchanged.
    assert declaration_from_module({**DECLARATION, "process_group": None, "state": "present"}).digest() == GOLDEN_DIGEST
