# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The same forward declared twice is refused, port 0 included, naming both entries (issue 16, item 3)."""

from __future__ import annotations

import typing as t

import pytest

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration, parse_forward_lists


@pytest.mark.parametrize(
    ("forwards", "first", "second"),
    [
        ({"local_forwards": ["0:db:5432", "0:db:5432"]}, "local_forwards[0]", "local_forwards[1]"),
        ({"local_forwards": ["0:db:5432", "127.0.0.1:0:db:5432"]}, "local_forwards[0]", "local_forwards[1]"),
        ({"local_forwards": ["0:a:1", "0:db:5432", {"listen_port": 0, "dest_host": "db", "dest_port": 5432}]}, "local_forwards[1]", "local_forwards[2]"),
        ({"dynamic_forwards": ["0", "127.0.0.1:0"]}, "dynamic_forwards[0]", "dynamic_forwards[1]"),
        ({"local_forwards": [], "remote_forwards": ["0:web:80", "0:web:80"]}, "remote_forwards[0]", "remote_forwards[1]"),
    ],
)
def test_same_forward_twice_is_refused(forwards: dict[str, t.Any], first: str, second: str) -> None:
    params = {"name": "appdb", "host": "bastion.example.com", **forwards}
    with pytest.raises(SpecError) as refused:
        parse_declaration(params)
    assert refused.value.field == second
    assert first in str(refused.value) and second in str(refused.value), str(refused.value)
    assert "same forward" in str(refused.value) and "remove one" in str(refused.value)


def test_port_zero_forwards_that_differ_are_kept() -> None:
    forwards = parse_forward_lists([("local_forwards", "local", ["0:db:5432", "0:db:5433"]), ("dynamic_forwards", "dynamic", ["0"])])
    assert len(forwards) == 3


def test_connection_plugin_lists_are_checked_too() -> None:
    with pytest.raises(SpecError, match=r"burrow_local_forwards\[0\]"):
        parse_forward_lists([("burrow_local_forwards", "local", ["0:db:5432", "0:db:5432"])])
