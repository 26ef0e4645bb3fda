# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The OpenSSH string forms: ``-L``/``-R``/``-D`` colon syntax and ``[ssh://][user@]host[:port]`` hops."""

from __future__ import annotations

import re
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Endpoint, Forward
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.validate import (
    DEFAULT_BIND,
    listen_host,
    parse_ip,
    validate_host,
    validate_port,
    validate_socket_path,
    validate_user,
)


class _Field(t.NamedTuple):
    text: str
    bracketed: bool


def split_fields(value: str, field: str) -> list[_Field]:
    """Split on ':' outside brackets. ``[...]`` must be a whole field; anything else is a bracket error."""
    fields: list[_Field] = []
    index = 0
    length = len(value)
    while True:
        if index < length and value[index] == "[":
            end = value.find("]", index)
            if end < 0:
                raise SpecError(field, value, "has '[' without its closing ']'")
            inner = value[index + 1 : end]
            if "[" in inner:
                raise SpecError(field, value, "has nested '[' brackets")
            index = end + 1
            if index < length and value[index] != ":":
                raise SpecError(field, value, f"expects ':' right after ']' (found {value[index]!r})")
            fields.append(_Field(inner, True))
        else:
            end = value.find(":", index)
            end = length if end < 0 else end
            text = value[index:end]
            if "[" in text or "]" in text:
                raise SpecError(field, value, "has a misplaced bracket: write IPv6 addresses as [address] between ':' separators")
            fields.append(_Field(text, False))
            index = end
        if index >= length:
            return fields
        index += 1  # the ':'
        if index == length:
            fields.append(_Field("", False))
            return fields


def _is_path(item: _Field) -> bool:
    return not item.bracketed and item.text.startswith("/")


def bind_field(item: _Field, field: str) -> str:
    if item.bracketed:
        if not item.text:
            raise SpecError(field, "[]", "has empty brackets")
        return validate_host(item.text, field)
    return listen_host(item.text, field)


def check_string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise SpecError(field, value, "must be a string in OpenSSH syntax or a dict")
    if not value:
        raise SpecError(field, value, "must not be empty")
    if value.startswith("-"):
        raise SpecError(field, value, "must not start with '-' (ssh would read it as an option)")
    return value


def _outside_brackets(value: str) -> str:
    return re.sub(r"\[[^\]]*\]", "[]", value)


def _unbracketed_ipv6(value: str, field: str) -> None:
    if "::" in _outside_brackets(value):
        raise SpecError(field, value, "is ambiguous: write IPv6 addresses in brackets, e.g. [::1]:8080:[::1]:80")


def parse_colon_forward(kind: str, value: object, field: str) -> Forward:
    text = check_string(value, field)
    fields = split_fields(text, field)
    _unbracketed_ipv6(text, field)
    count = len(fields)
    listen: Endpoint
    destination: Endpoint | None = None

    def missing_port(port: _Field, which: str, example: str) -> None:
        # Name the part that is missing instead of "must be a port (got '127.0.0.1')" for the address in its place.
        if port.bracketed or not port.text:
            raise SpecError(field, text, f"lacks the {which} port; expected {example}")
        if not port.text.isdigit() and not port.text.startswith("-"):
            raise SpecError(field, text, f"lacks the {which} port: {port.text!r} stands where the port belongs; expected {example}")

    def tcp_listen(bind: _Field | None, port: _Field) -> Endpoint:
        example = "[bind_address:]port" + ("" if kind == "dynamic" or (kind == "remote" and count <= 2) else ":host:hostport")
        missing_port(port, "listen", example)
        host = DEFAULT_BIND if bind is None else bind_field(bind, field)
        return Endpoint(host=host, port=validate_port(port.text, field, allow_zero=True), default_bind=bind is None)

    def tcp_dest(host: _Field, port: _Field) -> Endpoint:
        if _is_path(host) or _is_path(port):
            raise SpecError(field, text, "expects host:hostport as the destination")
        missing_port(port, "destination", "[bind_address:]port:host:hostport")
        return Endpoint(host=validate_host(host.text, field), port=validate_port(port.text, field, allow_zero=False))

    def unix(item: _Field) -> Endpoint:
        return Endpoint(path=validate_socket_path(item.text, field))

    if kind == "dynamic":
        if count == 1 and not _is_path(fields[0]):
            return Forward(kind, tcp_listen(None, fields[0]), None)
        if count == 2 and not any(_is_path(item) for item in fields):
            return Forward(kind, tcp_listen(fields[0], fields[1]), None)
        raise SpecError(field, text, "expects [bind_address:]port, e.g. 1080 or 127.0.0.1:1080 or [::1]:1080")

    shapes = "[bind_address:]port:host:hostport, [bind_address:]port:/remote.sock, /local.sock:host:hostport or /local.sock:/remote.sock"
    if kind == "remote":
        shapes += ", or [bind_address:]port alone for a reverse SOCKS forward"
    if count == 1:
        if kind != "remote" or _is_path(fields[0]):
            raise SpecError(field, text, f"lacks a destination; expected {shapes}")
        listen = tcp_listen(None, fields[0])
    elif count == 2:
        first, second = fields
        if _is_path(first) and _is_path(second):
            listen, destination = unix(first), unix(second)
        elif _is_path(second):
            listen, destination = tcp_listen(None, first), unix(second)
        elif kind == "remote" and not _is_path(first):
            listen = tcp_listen(first, second)
        else:
            raise SpecError(field, text, f"does not match any form; expected {shapes}")
    elif count == 3:
        first, second, third = fields
        if _is_path(third):
            listen, destination = tcp_listen(first, second), unix(third)
        elif _is_path(first):
            listen, destination = unix(first), tcp_dest(second, third)
        else:
            listen, destination = tcp_listen(None, first), tcp_dest(second, third)
    elif count == 4:
        listen, destination = tcp_listen(fields[0], fields[1]), tcp_dest(fields[2], fields[3])
    else:
        raise SpecError(field, text, f"has too many ':' separators; expected {shapes} (IPv6 addresses in brackets)")
    return Forward(kind, listen, destination)


def split_hop_string(value: str, field: str) -> tuple[str | None, str, int | None]:
    """``[ssh://][user@]host[:port]`` with IPv6 in brackets; a bare IPv6 address (no port) is accepted too."""
    text = check_string(value, field)
    if text.lower().startswith("ssh://"):
        text = text[len("ssh://") :]
        if text.endswith("/"):
            text = text[:-1]
        if "/" in text or "?" in text:
            raise SpecError(field, value, "an ssh:// URI takes user@host:port only (no path or query)")
    user: str | None = None
    if "@" in text:
        user_text, _sep, text = text.rpartition("@")
        user = validate_user(user_text, f"{field}.user")
    if not text:
        raise SpecError(field, value, "lacks a host")
    port: int | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SpecError(field, value, "has '[' without its closing ']'")
        host_text, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise SpecError(field, value, "expects ':port' right after ']'")
            port = validate_port(rest[1:], f"{field}.port", allow_zero=False)
        if not host_text:
            raise SpecError(field, value, "has empty brackets")
    elif "]" in text:
        raise SpecError(field, value, "has ']' without its opening '['")
    elif text.count(":") > 1:
        if parse_ip(text.partition("%")[0]) is None:
            raise SpecError(field, value, "is ambiguous: write IPv6 addresses in brackets, e.g. user@[::1]:2222")
        host_text = text
    elif ":" in text:
        host_text, _sep, port_text = text.partition(":")
        port = validate_port(port_text, f"{field}.port", allow_zero=False)
    else:
        host_text = text
    return user, validate_host(host_text, f"{field}.host"), port
