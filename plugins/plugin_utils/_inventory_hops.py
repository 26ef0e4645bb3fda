# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The one inventory-hop resolver, used by the tunnel action plugin and the tunneled connection plugin.

``via: [bastion1]`` (or ``burrow_via``) with ``bastion1`` in the inventory becomes the hop ``bastion1`` describes with
its own ``ansible_host``, ``ansible_port``, ``ansible_user``, key, key passphrase and password; when ``bastion1`` itself
has a ``burrow_via``, its hops come first. A name that is not an inventory host stays a host name (DNS or ssh_config).
"""

from __future__ import annotations

import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.via import split_via

# hop key -> the inventory variables that give it, first found wins (the same names the connection plugin reads).
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


def _inventory_host(hostvars: t.Any, name: str) -> t.Any:
    """The variables of inventory host ``name``, or None. Only hosts listed in the inventory count: Ansible also answers
    for the implicit localhost (127.0.0.1, ::1), which is an address here, not a host to take variables from."""
    try:
        if name not in set(hostvars):
            return None
        return hostvars.get(name)
    except (KeyError, TypeError):
        return None


class TemplatedHostvars:
    """hostvars for an action plugin: a host's raw variables, each templated when read.

    An action plugin's hostvars template lazily, which ansible-core 2.19 allows only inside a templating context;
    reading the raw value and templating it with the task's templar works on every supported version.
    """

    def __init__(self, hostvars: t.Any, template: t.Callable[[t.Any], t.Any]) -> None:
        self._hostvars = hostvars
        self._template = template

    def __iter__(self) -> t.Iterator[str]:
        return iter(self._hostvars)

    def get(self, name: str) -> t.Any:
        raw = self._hostvars.raw_get(name) if hasattr(self._hostvars, "raw_get") else self._hostvars.get(name)
        return None if raw is None else _TemplatedVars(raw, self._template)


class _TemplatedVars:
    def __init__(self, raw: t.Mapping[str, t.Any], template: t.Callable[[t.Any], t.Any]) -> None:
        self._raw = raw
        self._template = template

    def get(self, key: str) -> t.Any:
        value = self._raw.get(key)
        return None if value is None else self._template(value)


def _hop_of(name: str, host_vars: t.Any) -> dict[str, t.Any]:
    hop: dict[str, t.Any] = {"host": name}
    for key, names in HOP_VARIABLES.items():
        for variable in names:
            value = host_vars.get(variable)
            if value is not None and value != "":
                hop[key] = value
                break
    return hop


def resolve_inventory_hops(via: t.Any, hostvars: t.Any, option: str = "burrow_via", _seen: tuple[str, ...] = ()) -> t.Any:
    """``via`` with every inventory hostname replaced by that host's hop chain; anything else is left as given.

    Raises ValueError for a jump chain that loops back to a host already in it.
    """
    if hostvars is None or not isinstance(via, (str, list, tuple)):
        return via
    resolved: list[t.Any] = []
    changed = False
    for _field, entry in split_via(via, option):
        host_vars = _inventory_host(hostvars, entry) if isinstance(entry, str) and _is_plain_name(entry) else None
        if host_vars is None:
            resolved.append(entry)
            continue
        if entry in _seen or len(_seen) >= MAX_DEPTH:
            chain = " -> ".join((*_seen, entry))
            raise ValueError(f"{option}: the jump chain of inventory host {entry!r} loops or is too deep ({chain})")
        changed = True
        own_via = host_vars.get("burrow_via")
        if own_via:
            resolved.extend(resolve_inventory_hops(own_via, hostvars, option, (*_seen, entry)))
        resolved.append(_hop_of(entry, host_vars))
    return resolved if changed else via


def resolve_tunnel_hops(args: t.Mapping[str, t.Any], hostvars: t.Any) -> dict[str, t.Any]:
    """The tunnel module's options with inventory hostnames in ``via`` and ``host`` resolved.

    A ``host`` that is an inventory host takes that host's address and connection variables (explicit options win),
    and its own ``burrow_via`` hops go after the declared ``via``.
    """
    resolved = dict(args)
    via = resolve_inventory_hops(args.get("via") or [], hostvars, "via")
    host = args.get("host")
    if isinstance(host, str) and _is_plain_name(host) and _inventory_host(hostvars, host) is not None:
        chain = resolve_inventory_hops([host], hostvars, "host")
        *jumps, target = chain
        via = [*split_entries(via), *jumps]
        resolved["host"] = target.pop("host")
        for key, value in target.items():
            if resolved.get(key) is None:
                resolved[key] = value
    resolved["via"] = via
    return resolved


def split_entries(via: t.Any) -> list[t.Any]:
    return [entry for _field, entry in split_via(via)]
