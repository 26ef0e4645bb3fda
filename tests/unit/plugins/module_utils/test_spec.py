# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the declaration model: OpenSSH syntax, dict forms, hostile input, identity and secrets."""

from __future__ import annotations

import dataclasses
import json
import typing as t

import pytest

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.forms import (
    parse_dynamic_forward,
    parse_hop,
    parse_jump_list,
    parse_local_forward,
    parse_remote_forward,
)
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Endpoint, Forward, Hop, Tunnel
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.validate import is_loopback, validate_host, validate_name, validate_port, validate_user

SECRETS = ("hunter2-password", "passphrase-xyz", "-----BEGIN OPENSSH PRIVATE KEY-----secretkeybody", "socks-secret-pw")
FINGERPRINT = "SHA256:" + "A" * 42 + "E"


def base(**overrides: t.Any) -> dict[str, t.Any]:
    params: dict[str, t.Any] = {"name": "appdb", "host": "bastion.example.com", "local_forwards": ["15432:db.internal:5432"]}
    params.update(overrides)
    return params


def expect_error(field: str, function: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any) -> SpecError:
    with pytest.raises(SpecError) as info:
        function(*args, **kwargs)
    assert info.value.field == field, str(info.value)
    assert str(info.value).startswith(f"{field}: ")
    assert str(info.value).endswith(f"(got {info.value.value!r})")
    return info.value


# -- SpecError -------------------------------------------------------------------------------------


def test_spec_error_format() -> None:
    error = SpecError("via[0].host", "-x", "must not start with '-'")
    assert str(error) == "via[0].host: must not start with '-' (got '-x')"
    assert error.field == "via[0].host"
    assert error.value == "-x"
    assert isinstance(error, ValueError)


# -- ports -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "allow_zero", "expected"),
    [
        (1, False, 1),
        (22, False, 22),
        (65535, False, 65535),
        ("22", False, 22),
        ("65535", True, 65535),
        (0, True, 0),
        ("0", True, 0),
    ],
)
def test_port_accepted(value: object, allow_zero: bool, expected: int) -> None:
    assert validate_port(value, "port", allow_zero=allow_zero) == expected


@pytest.mark.parametrize(
    ("value", "allow_zero"),
    [
        (0, False),
        ("0", False),
        (-1, True),
        ("-1", True),
        (65536, True),
        (131073, True),
        ("131073", True),
        ("2000blah", True),
        ("blah2000", True),
        ("22 ", True),
        (" 22", True),
        ("+22", True),
        ("2_2", True),
        ("２２", True),  # full-width digits: str.isdigit() would say yes
        ("", True),
        (None, True),
        (True, True),
        (False, True),
        (22.0, True),
        (22.5, True),
        ([22], True),
        ("9" * 5000, True),
    ],
)
def test_port_refused(value: object, allow_zero: bool) -> None:
    error = expect_error("local_forwards[3]", validate_port, value, "local_forwards[3]", allow_zero)
    assert "65535" in str(error)
    assert error.value is value


# -- hosts, users, names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "normalised"),
    [
        ("db.internal", "db.internal"),
        ("DB.Internal", "db.internal"),
        ("10.0.0.1", "10.0.0.1"),
        ("::1", "::1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("my_host-1", "my_host-1"),
        ("localhost", "localhost"),
        ("a" * 63 + "." + "b" * 63, "a" * 63 + "." + "b" * 63),
    ],
)
def test_host_accepted(host: str, normalised: str) -> None:
    assert validate_host(host, "host") == normalised


HOSTILE = [
    "a;b",
    "a'b",
    "a`id`",
    "$(id)",
    "a)b",
    "a(b",
    "a\nb",
    "a\x00b",
    "a b",
    "-oProxyCommand=x",
    "-x",
    "a|b",
    "a&b",
    "a>b",
    "a\\b",
    "a\tb",
    "${IFS}",
]


@pytest.mark.parametrize("host", [*HOSTILE, "", "a" * 254, "a..b", "[::1]", "::1::2", "1:2", "exa mple", "host.-bad"])
def test_host_refused(host: str) -> None:
    error = expect_error("via[0].host", validate_host, host, "via[0].host")
    assert error.value == host


@pytest.mark.parametrize("host", [None, 5, ["h"]])
def test_host_refused_non_string(host: object) -> None:
    expect_error("host", validate_host, host, "host")


@pytest.mark.parametrize(
    ("host", "fragment"),
    [("a;b", "';'"), ("a\nb", "newline"), ("a\x00b", "NUL"), ("a`b", "backtick"), ("-oProxyCommand=x", "'-'"), ("a b", "space")],
)
def test_host_error_names_the_character(host: str, fragment: str) -> None:
    assert fragment in str(expect_error("host", validate_host, host, "host"))


@pytest.mark.parametrize("user", ["alice", "svc.backup", "svc-deploy_2", "alice@corp.example", "u+tag"])
def test_user_accepted(user: str) -> None:
    assert validate_user(user, "user") == user


@pytest.mark.parametrize("user", [*HOSTILE, "", "a" * 257, "al ice"])
def test_user_refused(user: str) -> None:
    expect_error("via[1].user", validate_user, user, "via[1].user")


@pytest.mark.parametrize("name", ["a", "appdb", "App.DB_2-x", "0", "a" * 64])
def test_name_accepted(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", ".a", "_a", "a b", "abc\n", "abc\r", "a/b", "a;b", "a" * 65, "*", "é", None, 3])
def test_name_refused(name: object) -> None:
    expect_error("name", validate_name, name)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("", False),
        ("::", False),
        ("10.0.0.1", False),
        ("128.0.0.1", False),
        ("localhost.example.com", False),
        ("db.internal", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# -- local forwards --------------------------------------------------------------------------------

LOCAL_FORMS = [
    ("15432:db.internal:5432", Endpoint("127.0.0.1", 15432), Endpoint("db.internal", 5432), "local 127.0.0.1:15432 -> db.internal:5432"),
    ("0:db.internal:5432", Endpoint("127.0.0.1", 0), Endpoint("db.internal", 5432), "local 127.0.0.1:0 -> db.internal:5432"),
    ("10.1.2.3:8080:web:80", Endpoint("10.1.2.3", 8080), Endpoint("web", 80), "local 10.1.2.3:8080 -> web:80"),
    ("localhost:8080:web:80", Endpoint("localhost", 8080), Endpoint("web", 80), "local localhost:8080 -> web:80"),
    ("[::1]:8080:[::2]:80", Endpoint("::1", 8080), Endpoint("::2", 80), "local [::1]:8080 -> [::2]:80"),
    ("[::1]:8080:web:80", Endpoint("::1", 8080), Endpoint("web", 80), "local [::1]:8080 -> web:80"),
    ("8080:[2001:db8::5]:80", Endpoint("127.0.0.1", 8080), Endpoint("2001:db8::5", 80), "local 127.0.0.1:8080 -> [2001:db8::5]:80"),
    ("*:8080:web:80", Endpoint("", 8080), Endpoint("web", 80), "local *:8080 -> web:80"),
    (":8080:web:80", Endpoint("", 8080), Endpoint("web", 80), "local *:8080 -> web:80"),
    ("0.0.0.0:8080:web:80", Endpoint("0.0.0.0", 8080), Endpoint("web", 80), "local 0.0.0.0:8080 -> web:80"),
    ("15432:/run/postgresql/.s.PGSQL.5432", Endpoint("127.0.0.1", 15432), Endpoint(path="/run/postgresql/.s.PGSQL.5432"), None),
    ("127.0.0.2:15432:/run/pg.sock", Endpoint("127.0.0.2", 15432), Endpoint(path="/run/pg.sock"), "local 127.0.0.2:15432 -> /run/pg.sock"),
    ("/tmp/local.sock:db:5432", Endpoint(path="/tmp/local.sock"), Endpoint("db", 5432), "local /tmp/local.sock -> db:5432"),
    ("/tmp/local.sock:/run/remote.sock", Endpoint(path="/tmp/local.sock"), Endpoint(path="/run/remote.sock"), "local /tmp/local.sock -> /run/remote.sock"),
]


@pytest.mark.parametrize(("text", "listen", "destination", "key"), LOCAL_FORMS)
def test_local_string_forms(text: str, listen: Endpoint, destination: Endpoint, key: str | None) -> None:
    forward = parse_local_forward(text)
    assert forward.kind == "local"
    assert forward.listen == listen
    assert forward.destination == destination
    assert forward.socks_username is None
    if key is not None:
        assert forward.key() == key


@pytest.mark.parametrize(
    ("text", "exposed"),
    [("8080:web:80", False), ("[::1]:8080:web:80", False), ("localhost:8080:web:80", False), ("*:8080:web:80", True), (":8080:web:80", True)]
    + [("0.0.0.0:8080:web:80", True), ("10.1.2.3:8080:web:80", True), ("/tmp/l.sock:web:80", False)],
)
def test_local_exposure(text: str, exposed: bool) -> None:
    assert parse_local_forward(text).exposes_beyond_loopback is exposed


LOCAL_EQUIVALENTS = [
    ("15432:db.internal:5432", {"listen_port": 15432, "dest_host": "db.internal", "dest_port": 5432}),
    ("15432:db.internal:5432", {"listen_host": "127.0.0.1", "listen_port": "15432", "dest_host": "DB.internal", "dest_port": "5432"}),
    ("15432:db.internal:5432", {"port": 15432, "host": "db.internal", "host_port": 5432}),
    ("127.0.0.1:15432:db.internal:5432", {"bind_address": "127.0.0.1", "port": 15432, "host": "db.internal", "host_port": 5432}),
    ("[::1]:8080:[::2]:80", {"listen_host": "::1", "listen_port": 8080, "dest_host": "::2", "dest_port": 80}),
    ("[::1]:8080:[::2]:80", {"listen_host": "[::1]", "listen_port": 8080, "dest_host": "[0:0::2]", "dest_port": 80}),
    ("*:8080:web:80", {"listen_host": "*", "listen_port": 8080, "dest_host": "web", "dest_port": 80}),
    ("*:8080:web:80", {"listen_host": "", "listen_port": 8080, "dest_host": "web", "dest_port": 80}),
    ("8080:/run/x.sock", {"listen_port": 8080, "dest_path": "/run/x.sock"}),
    ("/tmp/l.sock:web:80", {"listen_path": "/tmp/l.sock", "dest_host": "web", "dest_port": 80}),
    ("/tmp/l.sock:/run/x.sock", {"listen_path": "/tmp/l.sock", "dest_path": "/run/x.sock"}),
]


@pytest.mark.parametrize(("text", "data"), LOCAL_EQUIVALENTS)
def test_local_string_and_dict_are_equal(text: str, data: dict[str, t.Any]) -> None:
    from_text = parse_local_forward(text)
    from_dict = parse_local_forward(data)
    assert from_text == from_dict
    assert from_text.key() == from_dict.key()
    assert hash(from_text) == hash(from_dict)


BROKEN_LOCAL = [
    "[::1:5432",
    "::1]:5432",
    "[::1]5432:h:1",
    "::1:5432:h:1",
    "::1:5432",
    "8080:::1:80",
    "8080:[::1:80",
    "8080:[::1]]:80",
    "[]:8080:h:80",
    "[[::1]]:8080:h:80",
    "8080",
    "8080:h",
    "h:8080",
    "a:b:c:d:e",
    "1:2:3:4:5:6",
    "8080:h:80:",
    "8080:h:",
    "8080::80",
    "0:h:0",
    "-1:h:80",
    "65536:h:80",
    "131073:h:80",
    "8080:h:65536",
    "2000blah:h:80",
    "blah2000:h:80",
    "8080:h:22 ",
    "8080:h;id:80",
    "8080:h'x:80",
    "8080:`id`:80",
    "8080:$(id):80",
    "8080:h)x:80",
    "8080:h\nx:80",
    "8080:h\x00x:80",
    "8080:-oProxyCommand=x:80",
    "-oProxyCommand=x:8080:h:80",
    "-L8080:h:80",
    "x y:8080:h:80",
    "8080:relative.sock",
    "8080:run/relative.sock",
    "relative.sock:/run/x.sock",
    "/tmp/l.sock",
    "",
]


@pytest.mark.parametrize("text", BROKEN_LOCAL)
def test_local_broken_forms(text: str) -> None:
    error = expect_error("local_forwards[2]", parse_local_forward, text, "local_forwards[2]")
    assert error.value == text or error.value in text


@pytest.mark.parametrize("value", [None, 8080, ["8080:h:80"], True])
def test_local_refuses_other_types(value: object) -> None:
    expect_error("local_forwards[0]", parse_local_forward, value)


def test_ipv6_errors_say_brackets() -> None:
    for text in ("::1:5432:h:1", "::1:5432"):
        assert "brackets" in str(expect_error("local_forwards[0]", parse_local_forward, text))
    assert "']'" in str(expect_error("local_forwards[0]", parse_local_forward, "[::1:5432"))
    assert "after ']'" in str(expect_error("local_forwards[0]", parse_local_forward, "[::1]5432:h:1"))


@pytest.mark.parametrize(
    ("path", "ok"),
    [("/" + "a" * 102, True), ("/" + "a" * 103, False), ("/" + "a" * 200, False), ("/tmp/" + "é" * 49, True), ("/tmp/" + "é" * 50, False)],
)
def test_unix_path_length(path: str, ok: bool) -> None:
    if ok:
        assert parse_local_forward(f"8080:{path}").destination == Endpoint(path=path)
        assert parse_local_forward({"listen_path": path, "dest_host": "h", "dest_port": 1}).listen.path == path
        return
    error = expect_error("local_forwards[0]", parse_local_forward, f"8080:{path}")
    assert "103 bytes" in str(error)
    assert error.value == path
    dict_error = expect_error("local_forwards[0].listen_path", parse_local_forward, {"listen_path": path, "dest_host": "h", "dest_port": 1})
    assert "103 bytes" in str(dict_error)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"listen_path": "relative.sock", "dest_host": "h", "dest_port": 1}, "local_forwards[0].listen_path"),
        ({"listen_port": 1, "dest_path": "run/x.sock"}, "local_forwards[0].dest_path"),
        ({"listen_port": 1, "dest_path": "/run/x\x00.sock"}, "local_forwards[0].dest_path"),
        ({"listen_port": 1, "dest_path": "/run/x\n.sock"}, "local_forwards[0].dest_path"),
        ({"listen_port": 1, "dest_host": "h", "dest_port": 1, "colour": "red"}, "local_forwards[0].colour"),
        ({"listen_port": 1, "dest_host": "h", "dest_port": 1, "socks_username": "u"}, "local_forwards[0].socks_username"),
        ({"listen_port": 1, "port": 2, "dest_host": "h", "dest_port": 1}, "local_forwards[0].port"),
        ({"listen_port": 1}, "local_forwards[0]"),
        ({"dest_host": "h", "dest_port": 1}, "local_forwards[0]"),
        ({"listen_port": 1, "dest_host": "h"}, "local_forwards[0].dest_host"),
        ({"listen_port": 1, "dest_port": 1}, "local_forwards[0].dest_port"),
        ({"listen_port": 1, "dest_host": "h", "dest_port": 1, "dest_path": "/x"}, "local_forwards[0].dest_path"),
        ({"listen_port": 1, "listen_path": "/x", "dest_host": "h", "dest_port": 1}, "local_forwards[0].listen_path"),
        ({"listen_port": 70000, "dest_host": "h", "dest_port": 1}, "local_forwards[0].listen_port"),
        ({"listen_port": True, "dest_host": "h", "dest_port": 1}, "local_forwards[0].listen_port"),
        ({"listen_port": 1, "dest_host": "h", "dest_port": 0}, "local_forwards[0].dest_port"),
        ({"listen_port": 1, "dest_host": "-oProxyCommand=x", "dest_port": 1}, "local_forwards[0].dest_host"),
        ({"listen_host": "a;b", "listen_port": 1, "dest_host": "h", "dest_port": 1}, "local_forwards[0].listen_host"),
    ],
)
def test_local_dict_errors(data: dict[str, t.Any], field: str) -> None:
    expect_error(field, parse_local_forward, data)


def test_unknown_key_is_named() -> None:
    error = expect_error("local_forwards[0].colour", parse_local_forward, {"listen_port": 1, "dest_host": "h", "dest_port": 1, "colour": "red"})
    assert "colour" in str(error)
    assert "dest_host" in str(error)


# -- remote forwards -------------------------------------------------------------------------------

REMOTE_FORMS = [
    ("9000:localhost:80", Endpoint("127.0.0.1", 9000), Endpoint("localhost", 80), "remote 127.0.0.1:9000 -> localhost:80"),
    ("0:localhost:80", Endpoint("127.0.0.1", 0), Endpoint("localhost", 80), "remote 127.0.0.1:0 -> localhost:80"),
    ("0.0.0.0:9000:10.0.0.5:80", Endpoint("0.0.0.0", 9000), Endpoint("10.0.0.5", 80), "remote 0.0.0.0:9000 -> 10.0.0.5:80"),
    ("[::1]:9000:[::1]:80", Endpoint("::1", 9000), Endpoint("::1", 80), "remote [::1]:9000 -> [::1]:80"),
    ("9000", Endpoint("127.0.0.1", 9000), None, "remote 127.0.0.1:9000 -> socks"),
    ("127.0.0.1:9000", Endpoint("127.0.0.1", 9000), None, "remote 127.0.0.1:9000 -> socks"),
    ("*:9000", Endpoint("", 9000), None, "remote *:9000 -> socks"),
    ("[::1]:9000", Endpoint("::1", 9000), None, "remote [::1]:9000 -> socks"),
    ("9000:/run/app.sock", Endpoint("127.0.0.1", 9000), Endpoint(path="/run/app.sock"), "remote 127.0.0.1:9000 -> /run/app.sock"),
    ("/run/remote.sock:localhost:80", Endpoint(path="/run/remote.sock"), Endpoint("localhost", 80), "remote /run/remote.sock -> localhost:80"),
    ("/run/remote.sock:/run/local.sock", Endpoint(path="/run/remote.sock"), Endpoint(path="/run/local.sock"), "remote /run/remote.sock -> /run/local.sock"),
]


@pytest.mark.parametrize(("text", "listen", "destination", "key"), REMOTE_FORMS)
def test_remote_string_forms(text: str, listen: Endpoint, destination: Endpoint | None, key: str) -> None:
    forward = parse_remote_forward(text)
    assert (forward.kind, forward.listen, forward.destination) == ("remote", listen, destination)
    assert forward.key() == key


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ("9000:localhost:80", {"listen_port": 9000, "dest_host": "localhost", "dest_port": 80}),
        ("9000:localhost:80", {"port": 9000, "host": "localhost", "host_port": 80}),
        ("9000", {"listen_port": 9000}),
        ("[::1]:9000", {"listen_host": "::1", "listen_port": 9000}),
        ("9000:/run/app.sock", {"listen_port": 9000, "dest_path": "/run/app.sock"}),
    ],
)
def test_remote_string_and_dict_are_equal(text: str, data: dict[str, t.Any]) -> None:
    assert parse_remote_forward(text) == parse_remote_forward(data)
    assert parse_remote_forward(text).key() == parse_remote_forward(data).key()


@pytest.mark.parametrize("text", ["65536", "-1", "blah", "9000:h", "9000:h:", "::1:9000", "[::1:9000", "9000:h:80:x:y", "9000:h;x:80", "/rel:x", "x.sock"])
def test_remote_broken_forms(text: str) -> None:
    expect_error("remote_forwards[1]", parse_remote_forward, text, "remote_forwards[1]")


def test_reverse_dynamic_with_credentials() -> None:
    forward = parse_remote_forward({"listen_port": 9000, "socks_username": "u", "socks_password": "pw"})
    assert forward.destination is None
    assert forward.socks_username == "u"
    expect_error(
        "remote_forwards[0].socks_username",
        parse_remote_forward,
        {"listen_port": 1, "dest_host": "h", "dest_port": 1, "socks_username": "u", "socks_password": "p"},
    )


# -- dynamic forwards ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "listen", "key"),
    [
        ("1080", Endpoint("127.0.0.1", 1080), "dynamic 127.0.0.1:1080"),
        ("0", Endpoint("127.0.0.1", 0), "dynamic 127.0.0.1:0"),
        ("127.0.0.1:1080", Endpoint("127.0.0.1", 1080), "dynamic 127.0.0.1:1080"),
        ("[::1]:1080", Endpoint("::1", 1080), "dynamic [::1]:1080"),
        ("*:1080", Endpoint("", 1080), "dynamic *:1080"),
        ("localhost:1080", Endpoint("localhost", 1080), "dynamic localhost:1080"),
    ],
)
def test_dynamic_string_forms(text: str, listen: Endpoint, key: str) -> None:
    forward = parse_dynamic_forward(text)
    assert (forward.kind, forward.listen, forward.destination) == ("dynamic", listen, None)
    assert forward.key() == key
    assert parse_dynamic_forward({"listen_host": listen.host, "listen_port": listen.port}) == forward


@pytest.mark.parametrize("text", ["", "1080:h:80", "h:1080:x", "/tmp/s.sock", "::1:1080", "[::1]1080", "65536", "1080 ", "a;b:1080", "-D1080"])
def test_dynamic_broken_forms(text: str) -> None:
    expect_error("dynamic_forwards[0]", parse_dynamic_forward, text)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"listen_port": 1080, "dest_host": "h"}, "dynamic_forwards[0].dest_host"),
        ({"listen_port": 1080, "listen_path": "/x"}, "dynamic_forwards[0].listen_path"),
        ({"listen_port": 1080, "socks_username": "u"}, "dynamic_forwards[0]"),
        ({"listen_port": 1080, "socks_password": "p"}, "dynamic_forwards[0]"),
        ({"listen_port": 1080, "socks_username": "u" * 256, "socks_password": "p"}, "dynamic_forwards[0].socks_username"),
        ({"listen_port": 1080, "socks_username": "u", "socks_password": ""}, "dynamic_forwards[0].socks_password"),
        ({"listen_port": 1080, "socks_username": "u", "socks_password": 5}, "dynamic_forwards[0].socks_password"),
        ({}, "dynamic_forwards[0]"),
    ],
)
def test_dynamic_dict_errors(data: dict[str, t.Any], field: str) -> None:
    expect_error(field, parse_dynamic_forward, data)


def test_socks_password_is_secret() -> None:
    forward = parse_dynamic_forward({"listen_port": 1080, "socks_username": "alice", "socks_password": "socks-secret-pw"})
    assert forward.socks_password == "socks-secret-pw"
    for text in (repr(forward), forward.key(), json.dumps(forward.public_dict()), str(forward)):
        assert "socks-secret-pw" not in text
    assert forward.public_dict()["socks_username"] == "alice"
    # The password is not part of equality: a changed password is not a different listener.
    other = dataclasses.replace(forward, socks_password="another")
    assert other == forward


def test_wrong_type_secret_is_not_echoed() -> None:
    with pytest.raises(SpecError) as info:
        parse_dynamic_forward({"listen_port": 1080, "socks_username": "u", "socks_password": 123456789})
    assert "123456789" not in str(info.value)


# -- public_dict / key / endpoints -----------------------------------------------------------------


def test_forward_public_dict_fields() -> None:
    forward = parse_local_forward("[::1]:0:/run/x.sock")
    assert forward.public_dict() == {
        "kind": "local",
        "key": "local [::1]:0 -> /run/x.sock",
        "listen_host": "::1",
        "listen_port": 0,
        "listen_path": None,
        "dest_host": None,
        "dest_port": None,
        "dest_path": "/run/x.sock",
        "socks_username": None,
        "probe": None,
    }
    json.dumps(forward.public_dict())


@pytest.mark.parametrize(
    ("endpoint", "text", "unix"),
    [(Endpoint("127.0.0.1", 5432), "127.0.0.1:5432", False), (Endpoint("::1", 5432), "[::1]:5432", False), (Endpoint(path="/run/x.sock"), "/run/x.sock", True)]
    + [(Endpoint("", 80), "*:80", False)],
)
def test_endpoint_str(endpoint: Endpoint, text: str, unix: bool) -> None:
    assert str(endpoint) == text
    assert endpoint.is_unix() is unix


def test_models_are_frozen() -> None:
    forward = parse_local_forward("1:h:2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        forward.kind = "remote"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Hop("h").port = 1  # type: ignore[misc]


# -- hops ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "user", "host", "port"),
    [
        ("bastion", None, "bastion", 22),
        ("alice@bastion", "alice", "bastion", 22),
        ("alice@bastion:2222", "alice", "bastion", 2222),
        ("bastion:2222", None, "bastion", 2222),
        ("user@[::1]:2222", "user", "::1", 2222),
        ("[::1]:2222", None, "::1", 2222),
        ("[::1]", None, "::1", 22),
        ("::1", None, "::1", 22),
        ("2001:db8::7", None, "2001:db8::7", 22),
        ("ssh://user@h:2223", "user", "h", 2223),
        ("ssh://h", None, "h", 22),
        ("ssh://user@[::1]:2223/", "user", "::1", 2223),
        ("alice@corp.example@bastion", "alice@corp.example", "bastion", 22),
        ("10.0.0.1:22", None, "10.0.0.1", 22),
    ],
)
def test_hop_strings(text: str, user: str | None, host: str, port: int) -> None:
    hop = parse_hop(text)
    assert (hop.user, hop.host, hop.port) == (user, host, port)
    # Unset (the ssh_config or the default applies where they are read): strict and the agent.
    assert (hop.host_key_checking, hop.use_agent) == (None, None)
    assert (hop.host_key_policy, hop.agent_enabled) == ("strict", True)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("", "via[0]"),
        ("-oProxyCommand=x", "via[0]"),
        ("alice@-oProxyCommand=x", "via[0].host"),
        ("-oProxyCommand=x@h", "via[0]"),
        ("al;ice@h", "via[0].user"),
        ("$(id)@h", "via[0].user"),
        ("h;id", "via[0].host"),
        ("h`id`", "via[0].host"),
        ("h\nid", "via[0].host"),
        ("h\x00", "via[0].host"),
        ("h:0", "via[0].port"),
        ("h:65536", "via[0].port"),
        ("h:22 ", "via[0].port"),
        ("h:2000blah", "via[0].port"),
        ("[::1:22", "via[0]"),
        ("::1]:22", "via[0]"),
        ("[::1]22", "via[0]"),
        ("[]:22", "via[0]"),
        ("user@", "via[0]"),
        ("ssh://h/path", "via[0]"),
        ("1:2:3:zz", "via[0]"),
    ],
)
def test_hop_string_errors(text: str, field: str) -> None:
    expect_error(field, parse_hop, text)


def test_hop_dict_and_defaults() -> None:
    hop = parse_hop(
        {"host": "[::1]", "port": "2222", "password": "hunter2-password", "host_key_fingerprint": FINGERPRINT + "="},
        defaults={"user": "deploy", "private_key_file": "~/.ssh/id_ed25519", "host_key_checking": "accept-new", "password": "other"},
    )
    assert hop.host == "::1"
    assert hop.port == 2222
    assert hop.user == "deploy"
    assert hop.private_key_file == "~/.ssh/id_ed25519"
    assert hop.host_key_checking == "accept-new"
    assert hop.password == "hunter2-password"  # the hop's own setting wins over the default
    assert hop.host_key_fingerprint == FINGERPRINT
    assert hop.label() == "deploy@[::1]:2222"
    assert parse_hop("bastion", defaults={"user": "ops"}).label() == "ops@bastion:22"
    assert parse_hop("me@bastion", defaults={"user": "ops"}).user == "me"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"port": 22}, "via[0].host"),
        ({"host": "h", "colour": "red"}, "via[0].colour"),
        ({"host": "h", "port": 0}, "via[0].port"),
        ({"host": "h", "port": True}, "via[0].port"),
        ({"host": "-oProxyCommand=x"}, "via[0].host"),
        ({"host": "h", "user": "-l"}, "via[0].user"),
        ({"host": "h", "host_key_checking": "no"}, "via[0].host_key_checking"),
        ({"host": "h", "host_key_fingerprint": "MD5:aa:bb"}, "via[0].host_key_fingerprint"),
        ({"host": "h", "host_key_fingerprint": FINGERPRINT + "\n"}, "via[0].host_key_fingerprint"),
        ({"host": "h", "host_key_fingerprint": "SHA256:short"}, "via[0].host_key_fingerprint"),
        ({"host": "h", "use_agent": "maybe"}, "via[0].use_agent"),
        ({"host": "h", "private_key_file": ""}, "via[0].private_key_file"),
        ({"host": "h", "known_hosts_file": "/x\n"}, "via[0].known_hosts_file"),
        ({"host": "h", "password": 1234}, "via[0].password"),
    ],
)
def test_hop_dict_errors(data: dict[str, t.Any], field: str) -> None:
    expect_error(field, parse_hop, data)


def test_hop_secrets_hidden() -> None:
    hop = parse_hop({"host": "h", "password": SECRETS[0], "private_key_passphrase": SECRETS[1], "private_key": SECRETS[2]})
    public = hop.public_dict()
    assert public["has_password"] is True
    assert public["has_key"] is True
    assert public["has_passphrase"] is True
    for secret in SECRETS[:3]:
        assert secret not in repr(hop)
        assert secret not in json.dumps(public)
        assert secret not in hop.label()


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("u1@j1:2221,u2@j2:2222", ["u1@j1:2221", "u2@j2:2222"]),
        ("j1", ["j1:22"]),
        ("ssh://user@h:2223", ["user@h:2223"]),
        ("ssh://a@j1:2221,ssh://b@[::1]:2222", ["a@j1:2221", "b@[::1]:2222"]),
        ("j1, j2", ["j1:22", "j2:22"]),
    ],
)
def test_jump_lists(text: str, labels: list[str]) -> None:
    assert [hop.label() for hop in parse_jump_list(text)] == labels


@pytest.mark.parametrize(("text", "field"), [("j1,,j2", "via[1]"), ("j1,-oProxyCommand=x", "via[1]"), ("j1;id", "via.host"), ("", "via"), (",j1", "via[0]")])
def test_jump_list_errors(text: str, field: str) -> None:
    expect_error(field, parse_jump_list, text)


# -- the whole declaration -------------------------------------------------------------------------


def test_parse_declaration_full() -> None:
    tunnel = parse_declaration(
        base(
            host="alice@target.example:2200",
            via=["u1@j1:2221", {"host": "j2", "port": 2222, "user": "u2", "host_key_checking": "accept-new"}],
            remote_forwards=["9000"],
            dynamic_forwards=[{"listen_port": 1080, "socks_username": "s", "socks_password": "socks-secret-pw"}],
            private_key_file="/keys/id",
            keepalive_interval=15,
            keepalive_count_max="4",
            connect_timeout=7,
            lifetime="play",
            ttl=3600,
            idle_timeout=600,
            reconnect=False,
            state="present",
            allow_non_loopback_bind=False,
            drain_timeout=3,
            state_dir="/tmp/x",
        ),
        ignore=("state", "allow_non_loopback_bind", "drain_timeout", "state_dir"),
    )
    assert isinstance(tunnel, Tunnel)
    assert [hop.label() for hop in tunnel.hops] == ["u1@j1:2221", "u2@j2:2222", "alice@target.example:2200"]
    assert all(hop.private_key_file == "/keys/id" for hop in tunnel.hops)
    assert tunnel.hops[1].host_key_checking == "accept-new"
    assert [forward.kind for forward in tunnel.forwards] == ["local", "remote", "dynamic"]
    assert (tunnel.keepalive_interval, tunnel.keepalive_count_max, tunnel.connect_timeout) == (15, 4, 7)
    assert (tunnel.lifetime, tunnel.ttl, tunnel.idle_timeout, tunnel.reconnect) == ("play", 3600, 600, False)


def test_tunnel_defaults() -> None:
    tunnel = parse_declaration({"name": "t", "host": "h", "port": None, "via": None, "ttl": None})
    assert tunnel.hops == (Hop("h"),)
    assert tunnel.forwards == ()
    assert (tunnel.keepalive_interval, tunnel.keepalive_count_max, tunnel.connect_timeout) == (None, None, None)
    settings = tunnel.identity()
    assert (settings["keepalive_interval"], settings["keepalive_count_max"], settings["connect_timeout"]) == (5, 3, 10)
    assert (tunnel.lifetime, tunnel.ttl, tunnel.idle_timeout, tunnel.reconnect) == ("persistent", None, None, True)


def test_target_port_user_and_fingerprint() -> None:
    tunnel = parse_declaration(base(host="target", port="2200", user="bob", via="j1", host_key_fingerprint=FINGERPRINT))
    jump, target = tunnel.hops
    assert target.label() == "bob@target:2200"
    assert target.host_key_fingerprint == FINGERPRINT
    # user is the default of every hop; a fingerprint pins one host's key, so only the target's.
    assert jump.label() == "bob@j1:22"
    assert jump.host_key_fingerprint is None
    assert parse_declaration(base(host="bob@target:2200", port=2200, user="bob")).hops[-1].label() == "bob@target:2200"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"name": "t"}, "host"),
        ({"name": "t", "host": ""}, "host"),
        ({"host": "h"}, "name"),
        ({"name": "bad name", "host": "h"}, "name"),
        ({"name": "t", "host": "h;id"}, "host.host"),
        ({"name": "t", "host": "-oProxyCommand=x"}, "host"),
        ({"name": "t", "host": "h", "port": 0}, "port"),
        ({"name": "t", "host": "h", "port": "2000blah"}, "port"),
        ({"name": "t", "host": "h", "user": "$(id)"}, "user"),
        ({"name": "t", "host": "h:22", "port": 23}, "port"),
        ({"name": "t", "host": "a@h", "user": "b"}, "user"),
        ({"name": "t", "host": "h", "via": ["j1", "-oProxyCommand=x"]}, "via[1]"),
        ({"name": "t", "host": "h", "via": [{"host": "j1"}, {"host": "j;2"}]}, "via[1].host"),
        ({"name": "t", "host": "h", "via": "j1,j2;x"}, "via[1].host"),
        ({"name": "t", "host": "h", "via": 5}, "via"),
        ({"name": "t", "host": "h", "local_forwards": ["1:a:1", "2:b"]}, "local_forwards[1]"),
        ({"name": "t", "host": "h", "local_forwards": ["1:a:1", {"listen_port": 70000, "dest_host": "b", "dest_port": 1}]}, "local_forwards[1].listen_port"),
        ({"name": "t", "host": "h", "remote_forwards": ["70000"]}, "remote_forwards[0]"),
        ({"name": "t", "host": "h", "dynamic_forwards": ["1080", "x;y:1081"]}, "dynamic_forwards[1]"),
        ({"name": "t", "host": "h", "keepalive_interval": 0}, "keepalive_interval"),
        ({"name": "t", "host": "h", "keepalive_interval": 3601}, "keepalive_interval"),
        ({"name": "t", "host": "h", "keepalive_count_max": 101}, "keepalive_count_max"),
        ({"name": "t", "host": "h", "connect_timeout": True}, "connect_timeout"),
        ({"name": "t", "host": "h", "ttl": 0}, "ttl"),
        ({"name": "t", "host": "h", "idle_timeout": -5}, "idle_timeout"),
        ({"name": "t", "host": "h", "lifetime": "forever"}, "lifetime"),
        ({"name": "t", "host": "h", "reconnect": "perhaps"}, "reconnect"),
        ({"name": "t", "host": "h", "host_key_checking": "no"}, "host_key_checking"),
        ({"name": "t", "host": "h", "host_key_fingerprint": "nope"}, "host_key_fingerprint"),
        ({"name": "t", "host": "h", "colour": "red"}, "colour"),
    ],
)
def test_tunnel_errors(params: dict[str, t.Any], field: str) -> None:
    expect_error(field, parse_declaration, params)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"via": "j1,j2,j1"}, "via[2]"),
        ({"via": ["j1:22", {"host": "J1"}]}, "via[1]"),
        ({"via": ["[::1]:2222", "::1"], "host": "[0::1]:2222"}, "host"),
        ({"via": ["bastion.example.com"]}, "host"),
        ({"via": ["10.0.0.1"], "host": "10.0.0.1:22"}, "host"),
    ],
)
def test_hop_loops(params: dict[str, t.Any], field: str) -> None:
    error = expect_error(field, parse_declaration, base(**params))
    assert "twice" in str(error)


def test_same_host_different_ports_is_no_loop() -> None:
    assert len(parse_declaration(base(via=["bastion.example.com:2222"])).hops) == 2


@pytest.mark.parametrize(
    ("forwards", "field"),
    [
        ({"local_forwards": ["8080:a:1", "8080:b:2"]}, "local_forwards[1]"),
        ({"local_forwards": ["8080:a:1", "127.0.0.1:8080:b:2"]}, "local_forwards[1]"),
        ({"local_forwards": ["8080:a:1", "8080:a:1"]}, "local_forwards[1]"),
        ({"local_forwards": ["*:8080:a:1", "127.0.0.1:8080:b:2"]}, "local_forwards[1]"),
        ({"local_forwards": ["localhost:8080:a:1", "8080:b:2"]}, "local_forwards[1]"),
        ({"local_forwards": ["0.0.0.0:8080:a:1", "[::1]:8080:b:2"]}, "local_forwards[1]"),
        ({"local_forwards": ["/tmp/l.sock:a:1", "/tmp/l.sock:b:2"]}, "local_forwards[1]"),
        ({"local_forwards": ["1080:a:1"], "dynamic_forwards": ["1080"]}, "dynamic_forwards[0]"),
        ({"dynamic_forwards": ["1080", {"listen_port": 1080}]}, "dynamic_forwards[1]"),
        ({"local_forwards": [], "remote_forwards": ["9000", "9000:h:80"]}, "remote_forwards[1]"),
    ],
)
def test_duplicate_listeners(forwards: dict[str, t.Any], field: str) -> None:
    error = expect_error(field, parse_declaration, base(**forwards))
    assert "same address" in str(error)


@pytest.mark.parametrize(
    "forwards",
    [
        {"local_forwards": ["0:a:1", "0:b:2"]},
        {"local_forwards": ["127.0.0.1:8080:a:1", "127.0.0.2:8080:b:2"]},
        {"local_forwards": ["[::1]:8080:a:1", "127.0.0.1:8080:b:2"]},
        {"local_forwards": ["9000:a:1"], "remote_forwards": ["9000:h:80"]},
        {"local_forwards": ["8080:a:1", "8081:a:1"]},
    ],
)
def test_distinct_listeners(forwards: dict[str, t.Any]) -> None:
    assert len(parse_declaration(base(**forwards)).forwards) == sum(len(v) for v in forwards.values())


# -- identity, digest, secrets ---------------------------------------------------------------------


def secret_params() -> dict[str, t.Any]:
    return base(
        via=[{"host": "j1", "password": SECRETS[0]}],
        private_key=SECRETS[2],
        private_key_passphrase=SECRETS[1],
        dynamic_forwards=[{"listen_port": 1080, "socks_username": "s", "socks_password": SECRETS[3]}],
    )


def test_secrets_absent_everywhere() -> None:
    tunnel = parse_declaration(secret_params())
    texts = [repr(tunnel), json.dumps(tunnel.identity()), json.dumps(tunnel.public_dict()), tunnel.digest()]
    texts += [forward.key() for forward in tunnel.forwards] + [repr(forward) for forward in tunnel.forwards]
    texts += [hop.label() for hop in tunnel.hops]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text
    assert tunnel.hops[0].password == SECRETS[0]
    assert tunnel.hops[1].private_key == SECRETS[2]
    assert tunnel.forwards[1].socks_password == SECRETS[3]


def test_identity_excludes_forwards_and_is_json_safe() -> None:
    one = parse_declaration(base())
    two = parse_declaration(base(local_forwards=["9999:other:1"], dynamic_forwards=["1080"]))
    assert one.identity() == two.identity()
    assert one.digest() == two.digest()
    assert "forwards" not in one.identity()
    assert json.loads(json.dumps(one.public_dict()))["forwards"][0]["key"] == "local 127.0.0.1:15432 -> db.internal:5432"


@pytest.mark.parametrize(
    "change",
    [
        {"host": "other.example.com"},
        {"port": 2200},
        {"user": "someone"},
        {"via": ["j1"]},
        {"keepalive_interval": 6},
        {"keepalive_count_max": 4},
        {"connect_timeout": 11},
        {"lifetime": "play"},
        {"ttl": 60},
        {"idle_timeout": 60},
        {"reconnect": False},
        {"host_key_checking": "accept-new"},
        {"known_hosts_file": "/tmp/kh"},
        {"host_key_fingerprint": FINGERPRINT},
        {"private_key_file": "/keys/id"},
        {"use_agent": False},
        {"password": "now-with-a-password"},
    ],
)
def test_digest_changes_with_identity(change: dict[str, t.Any]) -> None:
    assert parse_declaration(base()).digest() != parse_declaration(base(**change)).digest()


def test_digest_stable_across_dict_ordering() -> None:
    params = secret_params()
    params.update(keepalive_interval=9, via=[{"password": SECRETS[0], "port": 2222, "host": "j1", "user": "u"}])
    reordered = dict(reversed(list(params.items())))
    reordered["via"] = [dict(reversed(list(params["via"][0].items())))]
    first, second = parse_declaration(params), parse_declaration(reordered)
    assert first.digest() == second.digest()
    assert first == second
    assert len(first.digest()) == 64
    assert first.digest() == parse_declaration(params).digest()


def test_digest_ignores_secret_values() -> None:
    # Secrets are not part of the identity: only whether one is set (has_password) is.
    one = parse_declaration(base(password="first"))
    two = parse_declaration(base(password="second"))
    assert one.digest() == two.digest()


def test_tunnel_needs_a_hop() -> None:
    with pytest.raises(SpecError):
        Tunnel(name="x", hops=(), forwards=())


def test_forward_equality_ignores_nothing_but_password() -> None:
    a = Forward("dynamic", Endpoint("127.0.0.1", 1080), None, "u", "p1")
    b = Forward("dynamic", Endpoint("127.0.0.1", 1080), None, "v", "p1")
    assert a != b
    assert a.key() != b.key()


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("local_forwards", "127.0.0.1:db.internal:5432", "lacks the listen port: '127.0.0.1' stands where the port belongs"),
        ("local_forwards", "15432:db.internal:", "lacks the destination port"),
        ("local_forwards", "15432:db.internal:postgres", "lacks the destination port: 'postgres' stands where the port belongs"),
        ("dynamic_forwards", "localhost:", "lacks the listen port; expected [bind_address:]port"),
        ("remote_forwards", "0.0.0.0", "lacks the listen port: '0.0.0.0'"),
    ],
)
def test_an_incomplete_forward_names_the_missing_part(option: str, value: str, words: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_declaration(base(**{option: [value]}))
    assert caught.value.field == f"{option}[0]"
    assert words in str(caught.value), str(caught.value)
