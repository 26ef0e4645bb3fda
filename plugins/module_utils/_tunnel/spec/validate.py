# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Scalar validators of a declaration: names, hosts, users, ports, paths, fingerprints, choices.

Each refuses what a shell, ssh's option parser or a log line would read as something else, and raises a
SpecError that names the field and the value.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import typing as t

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError

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
TRUE_STRINGS = ("true", "yes", "on", "1")
FALSE_STRINGS = ("false", "no", "off", "0")
ALL_INTERFACES = ""
DEFAULT_BIND = "127.0.0.1"

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


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
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
    address = parse_ip(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # ::ffff:a.b.c.d is the IPv4 address a.b.c.d: binding it on an IPv6-only socket fails with "Invalid argument",
        # and the kernel reaches it as IPv4 anyway, so it is stored (and bound, reported, compared) as a.b.c.d.
        return str(address.ipv4_mapped)
    if address is not None:
        return address.compressed
    if ":" in host:
        base, sep, zone = host.partition("%")
        address = parse_ip(base)
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


def validate_range(value: object, field: str, low: int, high: int) -> int:
    number = _int_value(value, field, f"an integer from {low} to {high}")
    if number < low or number > high:
        raise SpecError(field, value, f"must be an integer from {low} to {high}")
    return number


def validate_bool(value: object, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in TRUE_STRINGS + FALSE_STRINGS:
        return value.lower() in TRUE_STRINGS
    raise SpecError(field, value, "must be a boolean (true or false)")


def validate_choice(value: object, field: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise SpecError(field, value, "must be one of " + ", ".join(choices))
    return value


def validate_file(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(field, value, "must be a non-empty path")
    if any(ord(char) < 32 for char in value):
        raise SpecError(field, value, "must not contain NUL, newlines or other control characters")
    return value


def validate_secret(value: object, field: str) -> str:
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
    address = parse_ip(name.partition("%")[0])
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


# The resolver a loopback check uses for names (a seam for tests; socket.getaddrinfo otherwise).
RESOLVER: t.Callable[..., t.Any] = socket.getaddrinfo


def resolves_to_loopback(host: str) -> bool:
    """Whether every address a listen name resolves to here is loopback (what binding it would use).

    A name is never taken on its word: ``db.localhost`` mapped to a routable address in /etc/hosts is not loopback.
    IP addresses are checked as they are; a name that does not resolve is not loopback.
    """
    if not isinstance(host, str):
        return False
    name = host.strip("[]")
    if parse_ip(name.partition("%")[0]) is not None:
        return is_loopback(name)
    try:
        infos = RESOLVER(name, None, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(is_loopback(str(address)) for address in addresses)


def listen_host(value: object, field: str) -> str:
    """A bind address: empty or '*' mean all interfaces; brackets around IPv6 are accepted and removed."""
    if value is None:
        return DEFAULT_BIND
    if isinstance(value, str):
        if value in ("", "*"):
            return ALL_INTERFACES
        if value.startswith("[") and value.endswith("]"):
            value = value[1:-1]
    return validate_host(t.cast(str, value), field)


def dest_host(value: object, field: str) -> str:
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    return validate_host(t.cast(str, value), field)
