# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One inventory-hop resolver and one grammar: `via: [bastion]` means the same chain to the module and to the plugin."""

from __future__ import annotations

import dataclasses
import pathlib
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._module_args import declaration_from_module
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.session import build_session
from ansible_collections.burrow.ssh.plugins.plugin_utils._inventory_hops import resolve_inventory_hops, resolve_tunnel_hops

# The inventory where the two sides used to disagree: the action plugin ignored ansible_ssh_host, key passphrases and
# a bastion's own burrow_via; the connection plugin honoured them.
HOSTVARS: dict[str, dict[str, t.Any]] = {
    "outer": {"ansible_host": "192.0.2.1", "ansible_user": "gate"},
    "bastion1": {
        "ansible_ssh_host": "192.0.2.10",
        "ansible_ssh_port": "2222",
        "ansible_ssh_user": "ops",
        "ansible_ssh_private_key_file": "/keys/bastion1",
        "ansible_ssh_private_key_passphrase": "bastion-passphrase",
        "burrow_via": ["outer"],
    },
}


def chain_view(hops: t.Sequence[t.Any]) -> list[dict[str, t.Any]]:
    return [dataclasses.asdict(hop) for hop in hops]


def test_an_inventory_bastion_is_the_same_chain_for_the_module_and_the_connection_plugin() -> None:
    module_args = resolve_tunnel_hops({"name": "db", "host": "10.0.5.21", "user": "deploy", "via": ["bastion1"]}, HOSTVARS)
    tunnel = declaration_from_module(module_args)
    session = build_session(
        {"remote_addr": "10.0.5.21", "port": 22, "remote_user": "deploy", "ssh_config_file": "", "via": resolve_inventory_hops(["bastion1"], HOSTVARS)}
    )
    module_jumps = chain_view(tunnel.hops[:-1])
    plugin_jumps = chain_view(session.hops[:-1])
    assert module_jumps == plugin_jumps
    assert [(hop["host"], hop["port"], hop["user"]) for hop in module_jumps] == [("192.0.2.1", 22, "gate"), ("192.0.2.10", 2222, "ops")]
    assert module_jumps[1]["private_key_passphrase"] == "bastion-passphrase"
    assert module_jumps[1]["private_key_file"] == "/keys/bastion1"


def test_a_tunnel_host_that_is_an_inventory_host_brings_its_own_jump_hosts() -> None:
    args = resolve_tunnel_hops({"name": "db", "host": "bastion1"}, HOSTVARS)
    tunnel = declaration_from_module(args)
    assert [hop.label() for hop in tunnel.hops] == ["gate@192.0.2.1:22", "ops@192.0.2.10:2222"]
    assert tunnel.hops[-1].private_key_passphrase == "bastion-passphrase"


def test_an_ssh_config_alias_is_resolved_for_the_connection_plugin(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host vm\n  HostName 127.0.0.9\n  Port 2202\n  User alias-user\n", encoding="utf-8")
    session = build_session({"remote_addr": "vm", "port": 22, "ssh_config_file": str(config)})
    assert [(hop.host, hop.port, hop.user) for hop in session.hops] == [("127.0.0.9", 2202, "alias-user")]
