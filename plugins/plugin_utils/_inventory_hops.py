# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Jump hosts named by inventory hostname in burrow_via, replaced by the connection settings of those hosts.

``burrow_via: [bastion1]`` with ``bastion1`` in the inventory becomes the hop ``bastion1`` describes with its own
``ansible_host``, ``ansible_port``, ``ansible_user``, key and password; when ``bastion1`` itself has a
``burrow_via``, its hops come first. A name that is not an inventory host stays a host name (DNS or ssh_config).
"""

from __future__ import annotations

import typing as t

# hop key -> the inventory variables that give it, first found wins (the same names the plugin's options read).
HOP_VARIABLES: dict[str, tuple[str, ...]] = {
    "host": ("ansible_host", "ansible_ssh_host"),
    "port": ("ansible_port", "ansible_ssh_port"),
    "user": ("ansible_user", "ansible_ssh_user"),
    "private_key_file": ("ansible_ssh_private_key_file", "ansible_private_key_file"),
    "private_key_passphrase": ("ansible_ssh_private_key_passphrase", "ansible_private_key_passphrase"),
    "password": ("ansible_password", "ansible_ssh_pass", "ansible_ssh_password"),
    "host_key_fingerprint": ("burrow_host_key_fingerprint",),
    "known_hosts_file": ("burrow_known_hosts_file",),
}
MAX_DEPTH = 8


def _is_plain_name(entry: str) -> bool:
    return bool(entry) and not any(mark in entry for mark in ("@", ":", "/", "[", " "))


def _entries(via: t.Any) -> list[t.Any]:
    items = [via] if isinstance(via, str) else list(via) if isinstance(via, (list, tuple)) else [via]
    entries: list[t.Any] = []
    for item in items:
        if isinstance(item, str) and "," in item:
            entries.extend(part.strip() for part in item.split(",") if part.strip())
        else:
            entries.append(item)
    return entries


def _inventory_host(hostvars: t.Any, name: str) -> t.Any:
    try:
        return hostvars.get(name)
    except (KeyError, TypeError):
        return None


def resolve_inventory_hops(via: t.Any, hostvars: t.Any, _seen: tuple[str, ...] = ()) -> t.Any:
    """``via`` with every inventory hostname replaced by that host's hop chain; anything else is left as given.

    Raises ValueError for a jump chain that loops back to a host already in it.
    """
    if hostvars is None or not isinstance(via, (str, list, tuple)):
        return via
    resolved: list[t.Any] = []
    changed = False
    for entry in _entries(via):
        host_vars = _inventory_host(hostvars, entry) if isinstance(entry, str) and _is_plain_name(entry) else None
        if host_vars is None:
            resolved.append(entry)
            continue
        if entry in _seen or len(_seen) >= MAX_DEPTH:
            chain = " -> ".join((*_seen, entry))
            raise ValueError(f"burrow_via: the jump chain of inventory host {entry!r} loops or is too deep ({chain})")
        changed = True
        own_via = host_vars.get("burrow_via")
        if own_via:
            resolved.extend(_entries(resolve_inventory_hops(own_via, hostvars, (*_seen, entry))))
        hop: dict[str, t.Any] = {"host": entry}
        for key, names in HOP_VARIABLES.items():
            for name in names:
                value = host_vars.get(name)
                if value is not None and value != "":
                    hop[key] = value
                    break
        resolved.append(hop)
    return resolved if changed else via
