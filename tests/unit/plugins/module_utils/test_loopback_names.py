# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 16 item 10: a listen name is resolved before the loopback check, and every address must be loopback."""

from __future__ import annotations

import socket
import typing as t

import pytest

from ansible_collections.burrow.ssh.plugins.module_utils._module_args import loopback_policy
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec import validate
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration

HOSTS = {"db.localhost": ["10.20.30.40"], "both.localhost": ["127.0.0.1", "192.0.2.7"], "lo.example": ["127.0.0.1", "::1"]}


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    """/etc/hosts as a test controls it: a name the test maps, anything else as the system resolves it."""
    real = socket.getaddrinfo

    def fake(host: str, *args: t.Any) -> list[t.Any]:
        if host in HOSTS:
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in HOSTS[host]]
        if host == "nowhere.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args)

    monkeypatch.setattr(validate, "RESOLVER", fake)


def _tunnel(listen: str) -> t.Any:
    return parse_declaration({"name": "t", "host": "bastion", "local_forwards": [f"{listen}:0:db:5432"]})


@pytest.mark.parametrize("name", ["db.localhost", "both.localhost", "nowhere.invalid"])
def test_a_name_that_is_not_only_loopback_needs_allow_non_loopback_bind(resolver: None, name: str) -> None:
    tunnel = _tunnel(name)
    with pytest.raises(SpecError, match=r"local_forwards\[0\]: listens beyond loopback"):
        loopback_policy(tunnel, False)
    assert loopback_policy(tunnel, True) == [f"local_forwards[0] listens on {name}:0: reachable from other machines"]


@pytest.mark.parametrize("name", ["localhost", "lo.example"])
def test_a_name_that_resolves_to_loopback_only_is_loopback(resolver: None, name: str) -> None:
    assert loopback_policy(_tunnel(name), False) == []


def test_a_remote_forward_s_name_is_the_server_s_to_resolve(resolver: None) -> None:
    tunnel = parse_declaration({"name": "t", "host": "bastion", "remote_forwards": ["db.localhost:0:localhost:80"]})
    assert loopback_policy(tunnel, False) == []
