# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The dict forms of forwards and hops (with their aliases), and the parsers that accept either form."""

from __future__ import annotations

import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.probes import PROBE_TYPES, ProbeSpec
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import HOP_KEYS, HOST_KEY_CHECKING, Endpoint, Forward, Hop
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.syntax import check_string, parse_colon_forward, split_hop_string
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.validate import (
    SOCKS_FIELD_MAX,
    dest_host,
    listen_host,
    validate_bool,
    validate_choice,
    validate_file,
    validate_fingerprint,
    validate_port,
    validate_secret,
    validate_socket_path,
    validate_user,
)

FORWARD_ALIASES = {"bind_address": "listen_host", "port": "listen_port", "host": "dest_host", "host_port": "dest_port"}
FORWARD_KEYS = {
    "local": ("listen_host", "listen_port", "listen_path", "dest_host", "dest_port", "dest_path", "probe"),
    "remote": ("listen_host", "listen_port", "listen_path", "dest_host", "dest_port", "dest_path", "socks_username", "socks_password", "probe", "probe_target"),
    "dynamic": ("listen_host", "listen_port", "socks_username", "socks_password", "probe", "probe_target"),
}
PROBE_KEYS = ("type", "path", "method", "status", "server_name", "timeout")
HTTP_METHODS = ("GET", "HEAD")


def _canonical_keys(value: t.Mapping[str, t.Any], kind: str, field: str) -> dict[str, t.Any]:
    allowed = FORWARD_KEYS[kind]
    result: dict[str, t.Any] = {}
    for raw_key, item in value.items():
        key = FORWARD_ALIASES.get(raw_key, raw_key) if isinstance(raw_key, str) else raw_key
        if key not in allowed:
            aliases = [alias for alias, target in FORWARD_ALIASES.items() if target in allowed]
            raise SpecError(f"{field}.{raw_key}", raw_key, f"is not a known key of a {kind} forward (known: {', '.join(allowed + tuple(aliases))})")
        if key in result:
            raise SpecError(f"{field}.{raw_key}", raw_key, f"repeats {key} (given both as {key} and as its alias)")
        if item is not None:
            result[key] = item
    return result


def _socks_credentials(data: dict[str, t.Any], field: str) -> tuple[str | None, str | None]:
    username = data.get("socks_username")
    password = data.get("socks_password")
    if username is None and password is None:
        return None, None
    if username is None or password is None:
        raise SpecError(field, "socks_username" if username is None else "socks_password", "needs both socks_username and socks_password (RFC 1929)")
    if not isinstance(username, str) or not 1 <= len(username.encode("utf-8")) <= SOCKS_FIELD_MAX or "\x00" in username:
        raise SpecError(f"{field}.socks_username", username, f"must be 1 to {SOCKS_FIELD_MAX} bytes without NUL")
    secret = validate_secret(password, f"{field}.socks_password")
    if not 1 <= len(secret.encode("utf-8")) <= SOCKS_FIELD_MAX:
        raise SpecError(f"{field}.socks_password", "<hidden>", f"must be 1 to {SOCKS_FIELD_MAX} bytes long")
    return username, secret


def _dict_listen(data: dict[str, t.Any], field: str) -> Endpoint:
    if "listen_path" in data:
        if "listen_port" in data or "listen_host" in data:
            raise SpecError(f"{field}.listen_path", data["listen_path"], "excludes listen_host and listen_port")
        return Endpoint(path=validate_socket_path(data["listen_path"], f"{field}.listen_path"))
    if "listen_port" not in data:
        raise SpecError(field, dict(data), "needs listen_port (or listen_path)")
    host = listen_host(data.get("listen_host"), f"{field}.listen_host")
    port = validate_port(data["listen_port"], f"{field}.listen_port", allow_zero=True)
    return Endpoint(host=host, port=port, default_bind=data.get("listen_host") is None)


def _dict_destination(data: dict[str, t.Any], field: str) -> Endpoint | None:
    if "dest_path" in data:
        if "dest_host" in data or "dest_port" in data:
            raise SpecError(f"{field}.dest_path", data["dest_path"], "excludes dest_host and dest_port")
        return Endpoint(path=validate_socket_path(data["dest_path"], f"{field}.dest_path"))
    if "dest_host" not in data and "dest_port" not in data:
        return None
    if "dest_host" not in data:
        raise SpecError(f"{field}.dest_port", data["dest_port"], "needs dest_host as well")
    if "dest_port" not in data:
        raise SpecError(f"{field}.dest_host", data["dest_host"], "needs dest_port as well")
    return Endpoint(host=dest_host(data["dest_host"], f"{field}.dest_host"), port=validate_port(data["dest_port"], f"{field}.dest_port", allow_zero=False))


def _parse_forward(kind: str, value: object, field: str) -> Forward:
    if not isinstance(value, t.Mapping):
        return parse_colon_forward(kind, value, field)
    data = _canonical_keys(value, kind, field)
    listen = _dict_listen(data, field)
    destination = _dict_destination(data, field) if kind != "dynamic" else None
    if kind == "local" and destination is None:
        raise SpecError(field, dict(value), "needs a destination: dest_host and dest_port, or dest_path")
    username, password = _socks_credentials(data, field)
    if username is not None and destination is not None:
        raise SpecError(f"{field}.socks_username", username, "applies to SOCKS forwards only (dynamic, or remote without a destination)")
    probe = parse_probe(data.get("probe"), data.get("probe_target"), destination, field)
    return Forward(kind, listen, destination, username, password, probe)


def _probe_target(value: object, field: str) -> str:
    user, host, port = split_hop_string(check_string(value, field), field)
    if port is None or user is not None:
        raise SpecError(field, value, "must be host:port, the destination probed through the SOCKS forward")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _known_keys(value: t.Mapping[str, t.Any], known: t.Sequence[str], field: str, what: str) -> dict[str, t.Any]:
    """The set items of a dict form, refusing keys it does not know."""
    data: dict[str, t.Any] = {}
    for key, item in value.items():
        if key not in known:
            raise SpecError(f"{field}.{key}", key, f"is not a known key of {what} (known: {', '.join(known)})")
        if item is not None:
            data[key] = item
    return data


def parse_probe(value: object, target: object, destination: Endpoint | None, field: str) -> ProbeSpec | None:
    """``probe: postgresql`` or ``probe: {type: http, path: /health, status: 200}``; SOCKS forwards need ``probe_target``."""
    if value is None and target is None:
        return None
    data: dict[str, t.Any] = {"type": "tcp"} if value is None else {"type": value} if isinstance(value, str) else {}
    if isinstance(value, t.Mapping):
        data.update(_known_keys(value, PROBE_KEYS, f"{field}.probe", "a probe"))
    elif value is not None and not isinstance(value, str):
        raise SpecError(f"{field}.probe", value, f"must be one of {', '.join(PROBE_TYPES)} or a dict with type")
    values: dict[str, t.Any] = {"type": validate_choice(data.get("type", "tcp"), f"{field}.probe.type", PROBE_TYPES)}
    if "path" in data:
        path = check_string(data["path"], f"{field}.probe.path")
        if not path.startswith("/") or any(char.isspace() or ord(char) < 32 for char in path):
            raise SpecError(f"{field}.probe.path", path, "must start with / and have no spaces or control characters")
        values["path"] = path
    if "method" in data:
        values["method"] = validate_choice(str(data["method"]).upper(), f"{field}.probe.method", HTTP_METHODS)
    if "status" in data:
        if isinstance(data["status"], bool) or not str(data["status"]).isdigit() or not 100 <= int(data["status"]) <= 599:
            raise SpecError(f"{field}.probe.status", data["status"], "must be an HTTP status from 100 to 599")
        values["status"] = int(data["status"])
    if "server_name" in data:
        values["server_name"] = dest_host(data["server_name"], f"{field}.probe.server_name")
    if "timeout" in data:
        try:
            timeout = float(data["timeout"])
        except (TypeError, ValueError):
            timeout = 0.0
        if isinstance(data["timeout"], bool) or not 0 < timeout <= 600:
            raise SpecError(f"{field}.probe.timeout", data["timeout"], "must be a number of seconds above 0, at most 600")
        values["timeout"] = timeout
    if destination is None:
        if target is None:
            raise SpecError(f"{field}.probe_target", None, "a SOCKS forward's probe needs probe_target: host:port, the destination to probe through it")
        values["target"] = _probe_target(target, f"{field}.probe_target")
    elif target is not None:
        raise SpecError(f"{field}.probe_target", target, "applies to SOCKS forwards only; this forward probes its destination")
    return ProbeSpec(**values)


def parse_local_forward(value: str | dict[str, t.Any], field: str = "local_forwards[0]") -> Forward:
    return _parse_forward("local", value, field)


def parse_remote_forward(value: str | dict[str, t.Any], field: str = "remote_forwards[0]") -> Forward:
    return _parse_forward("remote", value, field)


def parse_dynamic_forward(value: str | dict[str, t.Any], field: str = "dynamic_forwards[0]") -> Forward:
    return _parse_forward("dynamic", value, field)


def hop_from_fields(data: dict[str, t.Any], field: str) -> Hop:
    values: dict[str, t.Any] = {"host": data["host"]}
    if data.get("port") is not None:
        values["port"] = validate_port(data["port"], f"{field}.port", allow_zero=False)
    if data.get("user") is not None:
        values["user"] = validate_user(data["user"], f"{field}.user")
    for key in ("private_key_file", "known_hosts_file", "certificate_file"):
        if data.get(key) is not None:
            values[key] = validate_file(data[key], f"{field}.{key}")
    for key in ("private_key", "private_key_passphrase", "password"):
        if data.get(key) is not None:
            values[key] = validate_secret(data[key], f"{field}.{key}")
    if data.get("compression") is not None:
        values["compression"] = validate_bool(data["compression"], f"{field}.compression")
    if data.get("use_agent") is not None:
        values["use_agent"] = validate_bool(data["use_agent"], f"{field}.use_agent")
    if data.get("host_key_checking") is not None:
        values["host_key_checking"] = validate_choice(data["host_key_checking"], f"{field}.host_key_checking", HOST_KEY_CHECKING)
    if data.get("host_key_fingerprint") is not None:
        values["host_key_fingerprint"] = validate_fingerprint(data["host_key_fingerprint"], f"{field}.host_key_fingerprint")
    if data.get("proxy_command") is not None:
        values["proxy_command"] = validate_proxy_command(data["proxy_command"], f"{field}.proxy_command")
    return Hop(**values)


def validate_proxy_command(value: object, field: str) -> str:
    """A ProxyCommand: one line of text. It is the user's own command, run as the user, like ssh's."""
    if not isinstance(value, str) or not value.strip():
        raise SpecError(field, value, "must be a non-empty command line (or none)")
    if any(ord(char) < 32 and char != "\t" for char in value):
        raise SpecError(field, value, "must be one line without NUL or other control characters")
    return value.strip()


def parse_hop(value: str | dict[str, t.Any], field: str = "via[0]", defaults: dict[str, t.Any] | None = None) -> Hop:
    """One hop from ``user@host:port``, ``ssh://user@host:port`` or a dict; ``defaults`` fill what it leaves unset."""
    data: dict[str, t.Any] = {}
    if isinstance(value, t.Mapping):
        data = _known_keys(value, HOP_KEYS, field, "a hop")
        if "host" not in data:
            raise SpecError(f"{field}.host", None, "is required")
        data["host"] = dest_host(data["host"], f"{field}.host")
    else:
        user, host, port = split_hop_string(t.cast(str, value), field)
        data = {"host": host, "user": user, "port": port}
    for key, item in (defaults or {}).items():
        if key not in HOP_KEYS or key == "host":
            raise SpecError(field, key, "is not a hop setting that can have a default")
        if data.get(key) is None and item is not None:
            data[key] = item
    return hop_from_fields(data, field)


def parse_jump_list(value: str, field: str = "via") -> list[Hop]:
    """A ProxyJump list: ``u1@j1:2221,u2@j2:2222`` or ``ssh://user@h:2223``, split on commas."""
    text = check_string(value, field)
    parts = text.split(",")
    if len(parts) == 1:
        return [parse_hop(text, field)]
    return [parse_hop(part.strip(), f"{field}[{index}]") for index, part in enumerate(parts)]
