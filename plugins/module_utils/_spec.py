# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The declaration model of a tunnel: hops, forwards, liveness and lifetime settings.

Parses the OpenSSH syntax of ``ssh -L``, ``-R``, ``-D`` and ``-J`` (and the dict forms of the module
options), refuses anything that could be read as a shell metacharacter or an ssh option, and gives the
identity used for idempotency. Standard library only: this file runs on managed hosts.

Choices made here, on purpose:

* An omitted bind address means ``127.0.0.1`` for every kind of forward. OpenSSH decides from
  ``GatewayPorts`` (client side) and asks the server for "localhost" (remote side); we always ask for
  loopback so that a forward is never exposed by accident.
* ``*`` and an empty bind address both mean "all interfaces", stored as ``""`` like OpenSSH passes it to
  the server; such a forward ``exposes_beyond_loopback``. ``0.0.0.0`` and ``::`` are kept as given.
* IPv6 addresses are written in brackets inside the colon syntax (``[::1]:8080:[::2]:80``); a bare
  ``::1:5432`` is ambiguous and refused. IP addresses are normalised (``[0:0::1]`` and ``::1`` are equal),
  host names are lower-cased.
* Unix socket paths are absolute and at most 103 bytes: ``sun_path`` is 104 bytes on the BSDs and macOS,
  terminating NUL included (108 on Linux), so 103 is the portable maximum.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import re
import typing as t

SOCKET_PATH_MAX = 103
SUN_PATH_SIZE = 104
HOST_MAX = 253
USER_MAX = 256
SOCKS_FIELD_MAX = 255  # RFC 1929: one length byte for the user name and for the password
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$")
USER_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.@+-]*$")
ZONE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
FINGERPRINT_RE = re.compile(r"^SHA256:([A-Za-z0-9+/]{43})=?$", re.IGNORECASE)
# Characters that a shell, ssh's option parser or a log line would read as something else; named in errors.
FORBIDDEN_CHARACTERS = {
    ";": "';'",
    "'": "a single quote",
    '"': "a double quote",
    "`": "a backtick",
    "$": "'$'",
    "(": "'('",
    ")": "')'",
    "\n": "a newline",
    "\r": "a carriage return",
    "\t": "a tab",
    "\x00": "a NUL byte",
    " ": "a space",
    "|": "'|'",
    "&": "'&'",
    "<": "'<'",
    ">": "'>'",
    "\\": "a backslash",
    "{": "'{'",
    "}": "'}'",
    ",": "a comma",
    "#": "'#'",
    "!": "'!'",
    "?": "'?'",
    "*": "'*'",
    "=": "'='",
}
KINDS = ("local", "remote", "dynamic")
HOST_KEY_CHECKING = ("strict", "accept-new", "off")
LIFETIMES = ("persistent", "play")
ALL_INTERFACES = ""
DEFAULT_BIND = "127.0.0.1"
# Options of the modules that are not part of the declaration itself; tunnel_from_params ignores them.
MODULE_OPTIONS = ("state", "probe", "allow_non_loopback_bind", "drain_timeout", "state_dir", "lifetime_owner")
HOP_KEYS = (
    "host",
    "port",
    "user",
    "private_key_file",
    "private_key",
    "private_key_passphrase",
    "password",
    "use_agent",
    "host_key_checking",
    "known_hosts_file",
    "host_key_fingerprint",
)
# Tunnel-wide settings that every hop inherits unless it sets its own.
HOP_DEFAULT_KEYS = ("user", "private_key_file", "private_key", "private_key_passphrase", "password", "use_agent", "host_key_checking", "known_hosts_file")
TRUE_STRINGS = ("true", "yes", "on", "1")
FALSE_STRINGS = ("false", "no", "off", "0")


class SpecError(ValueError):
    """A declaration error: which option (as a path like ``via[0].host``), the value given, and why."""

    def __init__(self, field: str, value: object, message: str) -> None:
        super().__init__(f"{field}: {message} (got {value!r})")
        self.field = field
        self.value = value
        self.message = message


# -- scalar validators ---------------------------------------------------------------------------


def _forbidden(text: str) -> str | None:
    for char in text:
        if char in FORBIDDEN_CHARACTERS:
            return FORBIDDEN_CHARACTERS[char]
        if ord(char) < 32 or ord(char) == 127:
            return f"the control character {char!r}"
    return None


def validate_name(name: str, field: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise SpecError(field, name, "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _check_ssh_word(value: object, field: str, what: str, type_hint: str, max_length: int) -> str:
    """The checks a host and a user share: a non-empty string ssh cannot mistake for an option or a shell word."""
    if not isinstance(value, str):
        raise SpecError(field, value, f"must be {type_hint}")
    if not value:
        raise SpecError(field, value, "must not be empty")
    if len(value) > max_length:
        raise SpecError(field, value, f"is {len(value)} characters long; {what}s are at most {max_length}")
    if value.startswith("-"):
        raise SpecError(field, value, "must not start with '-' (ssh would read it as an option)")
    bad = _forbidden(value)
    if bad:
        raise SpecError(field, value, f"contains {bad}, which is not allowed in a {what}")
    return value


def validate_host(host: str, field: str) -> str:
    """A host name, IPv4 or IPv6 address (IPv6 without brackets, optional %zone); returned normalised."""
    _check_ssh_word(host, field, "host name", "a host name or an IP address (a string)", HOST_MAX)
    if "[" in host or "]" in host:
        raise SpecError(field, host, "must not contain brackets here (write IPv6 addresses without them)")
    address = _ip(host)
    if address is not None:
        return address.compressed
    if ":" in host:
        base, sep, zone = host.partition("%")
        address = _ip(base)
        if sep and isinstance(address, ipaddress.IPv6Address) and ZONE_RE.fullmatch(zone):
            return f"{address.compressed}%{zone}"
        raise SpecError(field, host, "is not a valid IPv6 address")
    if not HOSTNAME_RE.fullmatch(host):
        raise SpecError(field, host, "is not a valid host name (letters, digits, '-', '_' and dots)")
    return host.lower()


def validate_user(user: str, field: str) -> str:
    _check_ssh_word(user, field, "user name", "a user name (a string)", USER_MAX)
    if not USER_RE.fullmatch(user):
        raise SpecError(field, user, "may hold letters, digits, '.', '_', '-', '+' and '@' only")
    return user


def _int_value(value: object, field: str, what: str) -> int:
    """An int, or a string of ASCII digits only. Never a bool, a float or None."""
    if isinstance(value, bool) or value is None:
        raise SpecError(field, value, f"must be {what}")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str) and value and len(value) <= 12 and all("0" <= char <= "9" for char in value):
        return int(value)
    raise SpecError(field, value, f"must be {what}")


def validate_port(value: object, field: str, allow_zero: bool) -> int:
    low = 0 if allow_zero else 1
    what = f"a port number from {low} to 65535" + (" (0 allocates a free port)" if allow_zero else "")
    port = _int_value(value, field, what)
    if port < low or port > 65535:
        raise SpecError(field, value, f"must be {what}")
    return port


def _validate_range(value: object, field: str, low: int, high: int) -> int:
    number = _int_value(value, field, f"an integer from {low} to {high}")
    if number < low or number > high:
        raise SpecError(field, value, f"must be an integer from {low} to {high}")
    return number


def _validate_bool(value: object, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in TRUE_STRINGS + FALSE_STRINGS:
        return value.lower() in TRUE_STRINGS
    raise SpecError(field, value, "must be a boolean (true or false)")


def _validate_choice(value: object, field: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise SpecError(field, value, "must be one of " + ", ".join(choices))
    return value


def _validate_file(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(field, value, "must be a non-empty path")
    if any(ord(char) < 32 for char in value):
        raise SpecError(field, value, "must not contain NUL, newlines or other control characters")
    return value


def _validate_secret(value: object, field: str) -> str:
    if not isinstance(value, str):
        # Never echo a secret back: the error shows its type only.
        raise SpecError(field, f"<{type(value).__name__}>", "must be a string")
    return value


def validate_socket_path(path: object, field: str) -> str:
    if not isinstance(path, str) or not path:
        raise SpecError(field, path, "must be an absolute Unix socket path")
    if "\x00" in path:
        raise SpecError(field, path, "must not contain a NUL byte")
    if any(ord(char) < 32 for char in path):
        raise SpecError(field, path, "must not contain newlines or other control characters")
    if not path.startswith("/"):
        raise SpecError(field, path, "must be an absolute path (start with '/')")
    size = len(path.encode("utf-8", "surrogateescape"))
    if size > SOCKET_PATH_MAX:
        raise SpecError(
            field,
            path,
            f"is {size} bytes long; Unix socket paths are limited to {SOCKET_PATH_MAX} bytes (sun_path is {SUN_PATH_SIZE} bytes with its NUL on BSD and macOS)",
        )
    return path


def validate_fingerprint(value: object, field: str) -> str:
    match = FINGERPRINT_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise SpecError(field, value, "must be an OpenSSH SHA256 fingerprint like SHA256:<43 base64 characters> (ssh-keygen -lf)")
    return "SHA256:" + match.group(1)


def is_loopback(host: str) -> bool:
    if not isinstance(host, str):
        return False
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    address = _ip(name.partition("%")[0])
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


# -- the model ------------------------------------------------------------------------------------


def _format_host(host: str) -> str:
    if host == ALL_INTERFACES:
        return "*"
    return f"[{host}]" if ":" in host else host


@dataclasses.dataclass(frozen=True)
class Endpoint:
    host: str | None = None
    port: int | None = None
    path: str | None = None

    def is_unix(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        return f"{_format_host(self.host or '')}:{self.port}"


@dataclasses.dataclass(frozen=True)
class Forward:
    kind: str
    listen: Endpoint
    destination: Endpoint | None
    socks_username: str | None = None
    socks_password: str | None = dataclasses.field(default=None, repr=False, compare=False)

    def key(self) -> str:
        if self.destination is not None:
            target = str(self.destination)
        elif self.kind == "remote":
            target = "socks"
        else:
            target = ""
        text = f"{self.kind} {self.listen}" + (f" -> {target}" if target else "")
        if self.socks_username is not None:
            text += f" (socks user {self.socks_username})"
        return text

    def public_dict(self) -> dict[str, t.Any]:
        destination = self.destination or Endpoint()
        return {
            "kind": self.kind,
            "key": self.key(),
            "listen_host": self.listen.host,
            "listen_port": self.listen.port,
            "listen_path": self.listen.path,
            "dest_host": destination.host,
            "dest_port": destination.port,
            "dest_path": destination.path,
            "socks_username": self.socks_username,
        }

    @property
    def exposes_beyond_loopback(self) -> bool:
        if self.listen.is_unix():
            return False
        return not is_loopback(self.listen.host or "")


@dataclasses.dataclass(frozen=True)
class Hop:
    host: str
    port: int = 22
    user: str | None = None
    private_key_file: str | None = None
    private_key: str | None = dataclasses.field(default=None, repr=False)
    private_key_passphrase: str | None = dataclasses.field(default=None, repr=False)
    password: str | None = dataclasses.field(default=None, repr=False)
    use_agent: bool = True
    host_key_checking: str = "strict"
    known_hosts_file: str | None = None
    host_key_fingerprint: str | None = None

    def label(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{user}{_format_host(self.host)}:{self.port}"

    def public_dict(self) -> dict[str, t.Any]:
        return {
            "label": self.label(),
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "private_key_file": self.private_key_file,
            "has_key": self.private_key is not None,
            "has_passphrase": self.private_key_passphrase is not None,
            "has_password": self.password is not None,
            "use_agent": self.use_agent,
            "host_key_checking": self.host_key_checking,
            "known_hosts_file": self.known_hosts_file,
            "host_key_fingerprint": self.host_key_fingerprint,
        }


@dataclasses.dataclass(frozen=True)
class Tunnel:
    name: str
    hops: t.Tuple[Hop, ...]
    forwards: t.Tuple[Forward, ...]
    keepalive_interval: int = 5
    keepalive_count_max: int = 3
    connect_timeout: int = 10
    lifetime: str = "persistent"
    ttl: int | None = None
    idle_timeout: int | None = None
    reconnect: bool = True

    def __post_init__(self) -> None:
        if not self.hops:
            raise SpecError("host", None, "a tunnel needs at least one hop (its target server)")

    def _settings(self) -> dict[str, t.Any]:
        return {
            "keepalive_interval": self.keepalive_interval,
            "keepalive_count_max": self.keepalive_count_max,
            "connect_timeout": self.connect_timeout,
            "lifetime": self.lifetime,
            "ttl": self.ttl,
            "idle_timeout": self.idle_timeout,
            "reconnect": self.reconnect,
        }

    def identity(self) -> dict[str, t.Any]:
        """What a running tunnel cannot change live: its hops and settings (forwards are applied as a delta)."""
        data = {"name": self.name, "hops": [hop.public_dict() for hop in self.hops]}
        data.update(self._settings())
        return data

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode("utf-8")).hexdigest()

    def public_dict(self) -> dict[str, t.Any]:
        data = {
            "name": self.name,
            "hops": [hop.public_dict() for hop in self.hops],
            "forwards": [forward.public_dict() for forward in self.forwards],
        }
        data.update(self._settings())
        return data


# -- the colon syntax -----------------------------------------------------------------------------


class _Field(t.NamedTuple):
    text: str
    bracketed: bool


def _split_fields(value: str, field: str) -> list[_Field]:
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


def _listen_host(value: object, field: str) -> str:
    """A bind address: empty or '*' mean all interfaces; brackets around IPv6 are accepted and removed."""
    if value is None:
        return DEFAULT_BIND
    if isinstance(value, str):
        if value in ("", "*"):
            return ALL_INTERFACES
        if value.startswith("[") and value.endswith("]"):
            value = value[1:-1]
    return validate_host(t.cast(str, value), field)


def _dest_host(value: object, field: str) -> str:
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    return validate_host(t.cast(str, value), field)


def _bind_field(item: _Field, field: str) -> str:
    if item.bracketed:
        if not item.text:
            raise SpecError(field, "[]", "has empty brackets")
        return validate_host(item.text, field)
    return _listen_host(item.text, field)


def _check_string(value: object, field: str) -> str:
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


def _parse_colon_forward(kind: str, value: object, field: str) -> Forward:
    text = _check_string(value, field)
    fields = _split_fields(text, field)
    _unbracketed_ipv6(text, field)
    count = len(fields)
    listen: Endpoint
    destination: Endpoint | None = None

    def tcp_listen(bind: _Field | None, port: _Field) -> Endpoint:
        if port.bracketed:
            raise SpecError(field, text, "has a bracketed port")
        host = DEFAULT_BIND if bind is None else _bind_field(bind, field)
        return Endpoint(host=host, port=validate_port(port.text, field, allow_zero=True))

    def tcp_dest(host: _Field, port: _Field) -> Endpoint:
        if port.bracketed or _is_path(host) or _is_path(port):
            raise SpecError(field, text, "expects host:hostport as the destination")
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


# -- dict forms -----------------------------------------------------------------------------------

FORWARD_ALIASES = {"bind_address": "listen_host", "port": "listen_port", "host": "dest_host", "host_port": "dest_port"}
FORWARD_KEYS = {
    "local": ("listen_host", "listen_port", "listen_path", "dest_host", "dest_port", "dest_path"),
    "remote": ("listen_host", "listen_port", "listen_path", "dest_host", "dest_port", "dest_path", "socks_username", "socks_password"),
    "dynamic": ("listen_host", "listen_port", "socks_username", "socks_password"),
}


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
    secret = _validate_secret(password, f"{field}.socks_password")
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
    host = _listen_host(data.get("listen_host"), f"{field}.listen_host")
    return Endpoint(host=host, port=validate_port(data["listen_port"], f"{field}.listen_port", allow_zero=True))


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
    return Endpoint(host=_dest_host(data["dest_host"], f"{field}.dest_host"), port=validate_port(data["dest_port"], f"{field}.dest_port", allow_zero=False))


def _parse_forward(kind: str, value: object, field: str) -> Forward:
    if not isinstance(value, t.Mapping):
        return _parse_colon_forward(kind, value, field)
    data = _canonical_keys(value, kind, field)
    listen = _dict_listen(data, field)
    destination = _dict_destination(data, field) if kind != "dynamic" else None
    if kind == "local" and destination is None:
        raise SpecError(field, dict(value), "needs a destination: dest_host and dest_port, or dest_path")
    username, password = _socks_credentials(data, field)
    if username is not None and destination is not None:
        raise SpecError(f"{field}.socks_username", username, "applies to SOCKS forwards only (dynamic, or remote without a destination)")
    return Forward(kind, listen, destination, username, password)


def parse_local_forward(value: str | dict[str, t.Any], field: str = "local_forwards[0]") -> Forward:
    return _parse_forward("local", value, field)


def parse_remote_forward(value: str | dict[str, t.Any], field: str = "remote_forwards[0]") -> Forward:
    return _parse_forward("remote", value, field)


def parse_dynamic_forward(value: str | dict[str, t.Any], field: str = "dynamic_forwards[0]") -> Forward:
    return _parse_forward("dynamic", value, field)


# -- hops -----------------------------------------------------------------------------------------


def _split_hop_string(value: str, field: str) -> tuple[str | None, str, int | None]:
    """``[ssh://][user@]host[:port]`` with IPv6 in brackets; a bare IPv6 address (no port) is accepted too."""
    text = _check_string(value, field)
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
        if _ip(text.partition("%")[0]) is None:
            raise SpecError(field, value, "is ambiguous: write IPv6 addresses in brackets, e.g. user@[::1]:2222")
        host_text = text
    elif ":" in text:
        host_text, _sep, port_text = text.partition(":")
        port = validate_port(port_text, f"{field}.port", allow_zero=False)
    else:
        host_text = text
    return user, validate_host(host_text, f"{field}.host"), port


def _hop_from_fields(data: dict[str, t.Any], field: str) -> Hop:
    values: dict[str, t.Any] = {"host": data["host"]}
    if data.get("port") is not None:
        values["port"] = validate_port(data["port"], f"{field}.port", allow_zero=False)
    if data.get("user") is not None:
        values["user"] = validate_user(data["user"], f"{field}.user")
    for key in ("private_key_file", "known_hosts_file"):
        if data.get(key) is not None:
            values[key] = _validate_file(data[key], f"{field}.{key}")
    for key in ("private_key", "private_key_passphrase", "password"):
        if data.get(key) is not None:
            values[key] = _validate_secret(data[key], f"{field}.{key}")
    if data.get("use_agent") is not None:
        values["use_agent"] = _validate_bool(data["use_agent"], f"{field}.use_agent")
    if data.get("host_key_checking") is not None:
        values["host_key_checking"] = _validate_choice(data["host_key_checking"], f"{field}.host_key_checking", HOST_KEY_CHECKING)
    if data.get("host_key_fingerprint") is not None:
        values["host_key_fingerprint"] = validate_fingerprint(data["host_key_fingerprint"], f"{field}.host_key_fingerprint")
    return Hop(**values)


def parse_hop(value: str | dict[str, t.Any], field: str = "via[0]", defaults: dict[str, t.Any] | None = None) -> Hop:
    """One hop from ``user@host:port``, ``ssh://user@host:port`` or a dict; ``defaults`` fill what it leaves unset."""
    data: dict[str, t.Any] = {}
    if isinstance(value, t.Mapping):
        for key, item in value.items():
            if key not in HOP_KEYS:
                raise SpecError(f"{field}.{key}", key, f"is not a known key of a hop (known: {', '.join(HOP_KEYS)})")
            if item is not None:
                data[key] = item
        if "host" not in data:
            raise SpecError(f"{field}.host", None, "is required")
        data["host"] = _dest_host(data["host"], f"{field}.host")
    else:
        user, host, port = _split_hop_string(t.cast(str, value), field)
        data = {"host": host, "user": user, "port": port}
    for key, item in (defaults or {}).items():
        if key not in HOP_KEYS or key == "host":
            raise SpecError(field, key, "is not a hop setting that can have a default")
        if data.get(key) is None and item is not None:
            data[key] = item
    return _hop_from_fields(data, field)


def parse_jump_list(value: str, field: str = "via") -> list[Hop]:
    """A ProxyJump list: ``u1@j1:2221,u2@j2:2222`` or ``ssh://user@h:2223``, split on commas."""
    text = _check_string(value, field)
    parts = text.split(",")
    if len(parts) == 1:
        return [parse_hop(text, field)]
    return [parse_hop(part.strip(), f"{field}[{index}]") for index, part in enumerate(parts)]


# -- the whole declaration ------------------------------------------------------------------------


def _as_list(value: object, field: str) -> list[t.Any]:
    if value is None:
        return []
    if isinstance(value, (str, t.Mapping)):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise SpecError(field, value, "must be a list")


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
    """Two forwards that listen on the same address would fail at start (ExitOnForwardFailure): refuse now."""
    seen: list[tuple[str, str, Forward]] = []
    for field, forward in forwards:
        side = "server" if forward.kind == "remote" else "client"
        for other_field, other_side, other in seen:
            if other_side == side and _same_listener(other.listen, forward.listen):
                where = "on the server" if side == "server" else "on this host"
                raise SpecError(field, str(forward.listen), f"listens on the same address {where} as {other_field} ({other.key()})")
        seen.append((field, side, forward))


def _check_loops(hops: list[tuple[str, Hop]]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for field, hop in hops:
        where = (hop.host, hop.port)
        if where in seen:
            raise SpecError(field, f"{_format_host(hop.host)}:{hop.port}", f"appears twice in the hop chain (also {seen[where]}): the chain would loop")
        seen[where] = field


def _via_entries(value: object) -> list[tuple[str, t.Any]]:
    if value is None:
        return []
    if isinstance(value, str):
        if "," not in value:
            return [("via[0]", value)] if value else []
        return [(f"via[{index}]", part.strip()) for index, part in enumerate(value.split(","))]
    entries: list[tuple[str, t.Any]] = []
    for index, item in enumerate(_as_list(value, "via")):
        if isinstance(item, str) and "," in item:
            entries.extend((f"via[{index}][{sub}]", part.strip()) for sub, part in enumerate(item.split(",")))
        else:
            entries.append((f"via[{index}]", item))
    return entries


def tunnel_from_params(params: dict[str, t.Any]) -> Tunnel:
    """The declaration from the module's options (unset options may be missing or None)."""
    known = set(HOP_KEYS) | {
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
    }
    for key in params:
        if key not in known and key not in MODULE_OPTIONS:
            raise SpecError(str(key), key, "is not a known option of a tunnel")

    def given(key: str) -> t.Any:
        return params.get(key)

    name = validate_name(given("name"), "name")
    defaults = {key: given(key) for key in HOP_DEFAULT_KEYS if given(key) is not None}

    hops: list[tuple[str, Hop]] = []
    for field, entry in _via_entries(given("via")):
        hops.append((field, parse_hop(entry, field, defaults)))

    host = given("host")
    if host is None or host == "":
        raise SpecError("host", host, "is required: the SSH server that carries the forwards")
    if isinstance(host, t.Mapping):
        raise SpecError("host", host, "must be a string like user@host:port")
    user, host_name, port = _split_hop_string(host, "host")
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
        hops.append(("host", _hop_from_fields(target, "host")))
    except SpecError as exc:
        # Tunnel-wide options are top-level fields: report 'port', not 'host.port'.
        short = exc.field[len("host.") :] if exc.field.startswith("host.") else exc.field
        raise SpecError(field_of.get(short, short), exc.value, exc.message) from exc
    _check_loops(hops)

    forwards: list[tuple[str, Forward]] = []
    parsers = (("local_forwards", parse_local_forward), ("remote_forwards", parse_remote_forward), ("dynamic_forwards", parse_dynamic_forward))
    for option, parser in parsers:
        for index, item in enumerate(_as_list(given(option), option)):
            field = f"{option}[{index}]"
            forwards.append((field, parser(item, field)))
    _check_listeners(forwards)

    settings: dict[str, t.Any] = {}
    ranges = {"keepalive_interval": (1, 3600), "keepalive_count_max": (1, 100), "connect_timeout": (1, 600)}
    for key, (low, high) in ranges.items():
        if given(key) is not None:
            settings[key] = _validate_range(given(key), key, low, high)
    for key in ("ttl", "idle_timeout"):
        if given(key) is not None:
            settings[key] = _validate_range(given(key), key, 1, 10 * 365 * 86400)
    if given("lifetime") is not None:
        settings["lifetime"] = _validate_choice(given("lifetime"), "lifetime", LIFETIMES)
    if given("reconnect") is not None:
        settings["reconnect"] = _validate_bool(given("reconnect"), "reconnect")
    return Tunnel(name=name, hops=tuple(hop for _field, hop in hops), forwards=tuple(forward for _field, forward in forwards), **settings)
