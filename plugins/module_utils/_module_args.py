# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The tunnel module's argument spec, its translation into a Tunnel declaration, and the loopback policy."""

from __future__ import annotations

import decimal
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import loopback_policy as spec_loopback_policy
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Forward, Tunnel

TUNNEL_ARGUMENT_SPEC: dict[str, t.Any] = {
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "choices": ["present", "absent", "restarted"], "default": "present"},
    "host": {"type": "str"},
    "port": {"type": "int"},
    "user": {"type": "str"},
    "via": {"type": "list", "elements": "raw", "default": []},
    "local_forwards": {"type": "list", "elements": "raw", "default": []},
    "remote_forwards": {"type": "list", "elements": "raw", "default": []},
    "dynamic_forwards": {"type": "list", "elements": "raw", "default": []},
    "allow_non_loopback_bind": {"type": "bool", "default": False},
    "private_key_file": {"type": "path"},
    "private_key": {"type": "str", "no_log": True},
    "private_key_passphrase": {"type": "str", "no_log": True},
    "password": {"type": "str", "no_log": True},
    "use_agent": {"type": "bool"},
    "host_key_checking": {"type": "str", "choices": ["strict", "accept-new", "off"]},
    "known_hosts_file": {"type": "path"},
    "host_key_fingerprint": {"type": "str", "no_log": False},
    "certificate_file": {"type": "path"},
    "proxy_command": {"type": "str"},
    "compression": {"type": "bool"},
    "keepalive_interval": {"type": "int"},
    "keepalive_count_max": {"type": "int"},
    "connect_timeout": {"type": "int"},
    "reconnect": {"type": "bool", "default": True},
    "audit": {"type": "str", "choices": ["file", "syslog", "none"], "default": "file"},
    "max_connections": {"type": "int"},
    "process_group": {"type": "str"},
    "lifetime": {"type": "str", "choices": ["persistent", "play"], "default": "persistent"},
    "ttl": {"type": "int"},
    "idle_timeout": {"type": "int"},
    "drain_timeout": {"type": "int", "default": 10},
    "wait_for_probe": {"type": "bool", "default": False},
    "probe_timeout": {"type": "int", "default": 60},
    "state_dir": {"type": "path"},
    "lifetime_owner": {"type": "dict"},
}

NON_DECLARATION_OPTIONS = ("state", "drain_timeout", "state_dir", "lifetime_owner", "wait_for_probe", "probe_timeout")


SECONDS_OPTIONS = ("ttl", "idle_timeout", "keepalive_interval", "connect_timeout", "drain_timeout")


def unset_nulls(args: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """Options given as null are unset (their default applies), as a playbook author expects of Ansible options."""
    return {key: value for key, value in args.items() if value is not None}


def refuse_non_finite_numbers(args: t.Mapping[str, t.Any]) -> None:
    """inf, -inf and nan for an integer option: a SpecError naming it (Ansible's own conversion dies with OverflowError)."""
    for key, spec in TUNNEL_ARGUMENT_SPEC.items():
        value = args.get(key)
        if spec.get("type") != "int" or value is None or isinstance(value, (bool, int)):
            continue
        try:
            finite = decimal.Decimal(str(value).strip()).is_finite()
        except (decimal.InvalidOperation, ValueError):
            continue  # not a number at all: Ansible's conversion names the option
        if not finite:
            what = "a whole number of seconds" if key in SECONDS_OPTIONS else "a whole number"
            unset = " (leave it unset for no limit)" if key in ("ttl", "idle_timeout") else ""
            raise SpecError(key, value, f"must be {what}, not infinite or NaN{unset}")


def declaration_from_module(params: t.Mapping[str, t.Any]) -> Tunnel:
    """The declaration in the module's options (the action plugin has already parsed the same options once)."""
    declaration = {key: value for key, value in params.items() if key not in NON_DECLARATION_OPTIONS and value is not None}
    return parse_declaration(declaration)


def loopback_policy(tunnel: Tunnel, allow_non_loopback_bind: bool) -> list[str]:
    """Refuse listeners beyond loopback unless allowed (and then warn): the engine's one policy, with the module's field names."""
    counters = {"local": 0, "remote": 0, "dynamic": 0}
    fields: list[tuple[str, Forward]] = []
    for forward in tunnel.forwards:
        fields.append((f"{forward.kind}_forwards[{counters[forward.kind]}]", forward))
        counters[forward.kind] += 1
    return spec_loopback_policy(fields, allow_non_loopback_bind)


def tunnel_from_module(params: t.Mapping[str, t.Any]) -> tuple[Tunnel, list[str]]:
    """The declaration and the warnings of the loopback policy."""
    tunnel = declaration_from_module(params)
    return tunnel, loopback_policy(tunnel, bool(params.get("allow_non_loopback_bind")))
