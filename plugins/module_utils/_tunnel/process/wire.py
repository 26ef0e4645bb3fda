# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""A parsed declaration as JSON and back: how a grouped tunnel reaches its running host (``add`` on the group socket).

Secrets included: the bytes travel only over the uid-checked 0600 group socket, in memory, never argv, environment,
files or logs. Every field of the model is carried, so the host runs exactly the Tunnel the module parsed.
"""

from __future__ import annotations

import dataclasses
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.probes import ProbeSpec
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Endpoint, Forward, Hop, Tunnel


def _fields(value: t.Any) -> dict[str, t.Any]:
    return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}


def _endpoint(value: Endpoint | None) -> dict[str, t.Any] | None:
    return None if value is None else _fields(value)


def tunnel_to_wire(tunnel: Tunnel) -> dict[str, t.Any]:
    data = _fields(tunnel)
    data["hops"] = [
        dict(_fields(hop), extra_known_hosts_files=list(hop.extra_known_hosts_files), global_known_hosts_files=list(hop.global_known_hosts_files))
        for hop in tunnel.hops
    ]
    forwards = []
    for forward in tunnel.forwards:
        entry = _fields(forward)
        entry["listen"] = _endpoint(forward.listen)
        entry["destination"] = _endpoint(forward.destination)
        entry["probe"] = None if forward.probe is None else _fields(forward.probe)
        forwards.append(entry)
    data["forwards"] = forwards
    return data


def _known(cls: t.Any, data: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {sorted(unknown)}")
    return dict(data)


def tunnel_from_wire(data: t.Mapping[str, t.Any]) -> Tunnel:
    """The Tunnel of ``tunnel_to_wire``; ValueError for anything else."""
    if not isinstance(data, t.Mapping):
        raise ValueError("a declaration must be an object")
    fields = _known(Tunnel, data)
    hops = []
    for hop in fields.get("hops") or []:
        entry = _known(Hop, hop)
        entry["extra_known_hosts_files"] = tuple(entry.get("extra_known_hosts_files") or ())
        entry["global_known_hosts_files"] = tuple(entry.get("global_known_hosts_files") or ())
        hops.append(Hop(**entry))
    forwards = []
    for forward in fields.get("forwards") or []:
        entry = _known(Forward, forward)
        entry["listen"] = Endpoint(**_known(Endpoint, entry["listen"]))
        entry["destination"] = None if entry.get("destination") is None else Endpoint(**_known(Endpoint, entry["destination"]))
        entry["probe"] = None if entry.get("probe") is None else ProbeSpec(**_known(ProbeSpec, entry["probe"]))
        forwards.append(Forward(**entry))
    fields["hops"] = tuple(hops)
    fields["forwards"] = tuple(forwards)
    return Tunnel(**fields)
