# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The whole declaration: one grammar for the tunnel module, its action plugin, the tunnel process and the connection plugin."""

from __future__ import annotations

import dataclasses
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.forms import (
    hop_from_fields,
    parse_dynamic_forward,
    parse_hop,
    parse_local_forward,
    parse_remote_forward,
    validate_proxy_command,
)
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import (
    HOP_DEFAULT_KEYS,
    HOP_KEYS,
    LIFETIMES,
    Endpoint,
    Forward,
    Hop,
    Tunnel,
    format_host,
)
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.syntax import split_hop_string
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.validate import (
    ALL_INTERFACES,
    validate_bool,
    validate_choice,
    validate_name,
    validate_port,
    validate_range,
    validate_user,
)
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.via import as_list, split_via


def _same_listener(first: Endpoint, second: Endpoint) -> bool:
    if first.is_unix() or second.is_unix():
        return first.path == second.path
    if first.port != second.port or first.port == 0:
        return False
    hosts = {first.host or "", second.host or ""}
    if len(hosts) == 1:
        return True
    # A wildcard bind takes the port on every address; localhost is 127.0.0.1 and/or ::1.
    wildcard = {ALL_INTERFACES, "0.0.0.0", "::"}
    return bool(hosts & wildcard) or hosts in ({"localhost", "127.0.0.1"}, {"localhost", "::1"})


def _check_listeners(forwards: list[tuple[str, Forward]]) -> None:
    """Two forwards that listen on the same address would fail at start (ExitOnForwardFailure): refuse now.

    The same forward declared twice is refused too, port 0 included: it would bind two listeners, and only one can be
    tracked (the other would keep forwarding after an update, unseen by tunnel_info).
    """
    seen: list[tuple[str, str, Forward]] = []
    for field, forward in forwards:
        side = "server" if forward.kind == "remote" else "client"
        for other_field, other_side, other in seen:
            if other_side == side and _same_listener(other.listen, forward.listen):
                where = "on the server" if side == "server" else "on this host"
                raise SpecError(field, str(forward.listen), f"listens on the same address {where} as {other_field} ({other.key()})")
            if other.key() == forward.key():
                reason = f"declares the same forward as {other_field} ({other.key()}): remove one of {other_field} and {field}"
                raise SpecError(field, str(forward.listen), reason)
        seen.append((field, side, forward))


def _check_loops(hops: list[tuple[str, Hop]]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for field, hop in hops:
        where = (hop.host, hop.port)
        if where in seen:
            raise SpecError(field, f"{format_host(hop.host)}:{hop.port}", f"appears twice in the hop chain (also {seen[where]}): the chain would loop")
        seen[where] = field


FORWARD_PARSERS: dict[str, t.Callable[[t.Any, str], Forward]] = {
    "local": parse_local_forward,
    "remote": parse_remote_forward,
    "dynamic": parse_dynamic_forward,
}


def parse_forward_lists(lists: t.Sequence[tuple[str, str, t.Any]]) -> list[Forward]:
    """Forwards from (option name, kind, items) triples, checked together for listeners that would collide.

    ``kind`` is local, remote, dynamic, or reverse_socks (a remote SOCKS listener: ``[bind:]port`` only).
    """
    return [forward for _field, forward in parse_forward_fields(lists)]


def parse_forward_fields(lists: t.Sequence[tuple[str, str, t.Any]]) -> list[tuple[str, Forward]]:
    """As parse_forward_lists, each forward with the field it was declared in (``local_forwards[1]``)."""
    forwards: list[tuple[str, Forward]] = []
    for option, kind, items in lists:
        for index, item in enumerate(as_list(items, option)):
            field = f"{option}[{index}]"
            if kind == "reverse_socks":
                forward = parse_remote_forward(str(item) if isinstance(item, int) and not isinstance(item, bool) else item, field)
                if forward.destination is not None:
                    raise SpecError(field, item, "is a SOCKS listener: give [bind:]port only (use burrow_remote_forwards for a fixed destination)")
            else:
                forward = FORWARD_PARSERS[kind](item, field)
            forwards.append((field, forward))
    _check_listeners(forwards)
    return forwards


def loopback_policy(forwards: t.Iterable[tuple[str, Forward]], allow_non_loopback_bind: bool, allow_option: str = "allow_non_loopback_bind") -> list[str]:
    """The one bind policy (tunnel module and connection plugin): listeners beyond loopback are refused unless allowed.

    Allowed ones are returned as warnings. ``allow_option`` is the name the caller's user sets (the module's option or
    the connection's host variable), so the error says what to set.
    """
    warnings: list[str] = []
    for field, forward in forwards:
        if not forward.exposes_beyond_loopback:
            continue
        if not allow_non_loopback_bind:
            raise SpecError(
                field,
                str(forward.listen),
                f"listens beyond loopback, which exposes the forward to other machines; set {allow_option}=true if that is intended",
            )
        warnings.append(f"{field} listens on {forward.listen}: reachable from other machines")
    return warnings


def module_forward_lists(params: t.Mapping[str, t.Any]) -> list[Forward]:
    """The forwards of the tunnel module's three options (what the tunnel process applies live)."""
    return parse_forward_lists([(f"{kind}_forwards", kind, params.get(f"{kind}_forwards")) for kind in FORWARD_PARSERS])


DECLARATION_KEYS = frozenset(HOP_KEYS) | {
    "name",
    "via",
    "local_forwards",
    "remote_forwards",
    "dynamic_forwards",
    "keepalive_interval",
    "keepalive_count_max",
    "connect_timeout",
    "lifetime",
    "ttl",
    "idle_timeout",
    "reconnect",
    "audit",
    "max_connections",
    "allow_non_loopback_bind",
    "process_group",
}
AUDIT_SINKS = ("file", "syslog", "none")


def secret_values(tunnel: Tunnel) -> list[str]:
    """Every secret a declaration holds (hop credentials, SOCKS passwords): what results and logs must mask."""
    values = [getattr(hop, name) for hop in tunnel.hops for name in ("private_key", "private_key_passphrase", "password")]
    values.extend(forward.socks_password for forward in tunnel.forwards)
    return [value for value in values if isinstance(value, str) and value]


def parse_declaration(params: t.Mapping[str, t.Any], ignore: t.Iterable[str] = ()) -> Tunnel:
    """The one grammar: a Tunnel from the tunnel module's options (unset options may be missing or None).

    Options named in ``ignore`` (the module's own, such as state) are skipped; any other unknown key is an error.
    """
    skipped = set(ignore)
    for key in params:
        if key not in DECLARATION_KEYS and key not in skipped:
            raise SpecError(str(key), key, "is not a known option of a tunnel")

    def given(key: str) -> t.Any:
        return params.get(key)

    name = validate_name(given("name"), "name")
    defaults = {key: given(key) for key in HOP_DEFAULT_KEYS if given(key) is not None}

    hops: list[tuple[str, Hop]] = []
    for field, entry in split_via(given("via")):
        hops.append((field, parse_hop(entry, field, defaults)))

    host = given("host")
    if host is None or host == "":
        raise SpecError("host", host, "is required: the SSH server that carries the forwards")
    if isinstance(host, t.Mapping):
        raise SpecError("host", host, "must be a string like user@host:port")
    user, host_name, port = split_hop_string(host, "host")
    target: dict[str, t.Any] = {"host": host_name}
    for key, embedded in (("user", user), ("port", port)):
        explicit = given(key)
        if embedded is not None and explicit is not None:
            checked = validate_user(explicit, key) if key == "user" else validate_port(explicit, key, allow_zero=False)
            if checked != embedded:
                raise SpecError(key, explicit, f"contradicts the {key} given in host ({host!r})")
        target[key] = embedded if embedded is not None else explicit
    if given("host_key_fingerprint") is not None:
        target["host_key_fingerprint"] = given("host_key_fingerprint")
    target.update({key: value for key, value in defaults.items() if key != "user" or target.get("user") is None})
    for key in ("user", "port"):
        if target.get(key) is None:
            target.pop(key, None)
    field_of = {"host": "host", "port": "port", "user": "user"}
    try:
        hops.append(("host", hop_from_fields(target, "host")))
    except SpecError as exc:
        # Tunnel-wide options are top-level fields: report 'port', not 'host.port'.
        short = exc.field[len("host.") :] if exc.field.startswith("host.") else exc.field
        raise SpecError(field_of.get(short, short), exc.value, exc.reason) from exc
    if given("proxy_command") is not None and hops[0][1].proxy_command is None:
        # A tunnel-wide proxy_command carries the connection to the first hop only.
        first_field, first = hops[0]
        hops[0] = (first_field, dataclasses.replace(first, proxy_command=validate_proxy_command(given("proxy_command"), "proxy_command")))
    _check_loops(hops)

    forwards = module_forward_lists(params)

    settings: dict[str, t.Any] = {}
    ranges = {"keepalive_interval": (1, 3600), "keepalive_count_max": (1, 100), "connect_timeout": (1, 600)}
    for key, (low, high) in ranges.items():
        if given(key) is not None:
            settings[key] = validate_range(given(key), key, low, high)
    for key in ("ttl", "idle_timeout"):
        if given(key) is not None:
            settings[key] = validate_range(given(key), key, 1, 10 * 365 * 86400)
    if given("lifetime") is not None:
        settings["lifetime"] = validate_choice(given("lifetime"), "lifetime", LIFETIMES)
    if given("reconnect") is not None:
        settings["reconnect"] = validate_bool(given("reconnect"), "reconnect")
    if given("max_connections") is not None:
        settings["max_connections"] = validate_range(given("max_connections"), "max_connections", 1, 100000)
    if given("process_group") is not None:
        settings["process_group"] = validate_name(given("process_group"), "process_group")
    if given("audit") is not None:
        settings["audit"] = validate_choice(given("audit"), "audit", AUDIT_SINKS)
    if given("allow_non_loopback_bind") is not None:
        settings["allow_non_loopback_bind"] = validate_bool(given("allow_non_loopback_bind"), "allow_non_loopback_bind")
    return Tunnel(name=name, hops=tuple(hop for _field, hop in hops), forwards=tuple(forwards), **settings)
