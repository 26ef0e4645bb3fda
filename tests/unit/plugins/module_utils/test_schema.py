# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The declaration grammar is the validator; the published JSON Schema must agree with it on every case here."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import typing as t
from pathlib import Path

import jsonschema
import pytest

from ansible_collections.burrow.ssh.plugins.module_utils._module_args import NON_DECLARATION_OPTIONS
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration

REPO = Path(__file__).resolve().parents[4]
GEN = REPO / "scripts" / "gen_schema.py"
_SPEC = importlib.util.spec_from_file_location("burrow_tunnel_schema", REPO / "scripts" / "tunnel_schema.py")
assert _SPEC is not None and _SPEC.loader is not None
_SCHEMA_MODULE = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_SCHEMA_MODULE)
TUNNEL_SCHEMA: dict[str, t.Any] = _SCHEMA_MODULE.TUNNEL_SCHEMA
SCHEMA = jsonschema.Draft202012Validator(TUNNEL_SCHEMA)
MODULE_ONLY = (*NON_DECLARATION_OPTIONS, "probe")


def tunnel_from_params(params: dict[str, t.Any]) -> t.Any:
    return parse_declaration(params, ignore=MODULE_ONLY)


def schema_accepts(params: dict[str, t.Any]) -> bool:
    return bool(SCHEMA.is_valid(params))


FINGERPRINT = "SHA256:" + "q" * 43


def base(**overrides: t.Any) -> dict[str, t.Any]:
    params: dict[str, t.Any] = {"name": "appdb", "host": "bastion.example.com", "local_forwards": ["15432:db.internal:5432"]}
    params.update(overrides)
    return params


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(TUNNEL_SCHEMA)
    assert TUNNEL_SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert TUNNEL_SCHEMA["additionalProperties"] is False
    for name in ("hop_dict", "local_forward", "remote_forward", "dynamic_forward"):
        assert TUNNEL_SCHEMA["$defs"][name]["additionalProperties"] is False


def test_docs_file_is_current() -> None:
    on_disk = json.loads((REPO / "docs" / "tunnel.schema.json").read_text(encoding="utf-8"))
    assert on_disk == TUNNEL_SCHEMA
    result = subprocess.run([sys.executable, str(GEN), "--check"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_gen_schema_check_detects_stale_file(tmp_path: Path) -> None:
    target = tmp_path / "tunnel.schema.json"
    check = [sys.executable, str(GEN), "--check", "--output", str(target)]
    assert subprocess.run(check, capture_output=True, timeout=60, check=False).returncode == 1  # missing
    written = subprocess.run([sys.executable, str(GEN), "--output", str(target)], capture_output=True, text=True, timeout=60, check=False)
    assert written.returncode == 0, written.stderr
    assert json.loads(target.read_text(encoding="utf-8")) == TUNNEL_SCHEMA
    assert subprocess.run(check, capture_output=True, timeout=60, check=False).returncode == 0
    target.write_text(target.read_text(encoding="utf-8").replace('"minimum": 1', '"minimum": 2', 1), encoding="utf-8")
    stale = subprocess.run(check, capture_output=True, text=True, timeout=60, check=False)
    assert stale.returncode == 1
    assert "stale" in stale.stderr


def test_every_module_option_is_in_the_schema() -> None:
    from ansible_collections.burrow.ssh.plugins.module_utils._module_args import TUNNEL_ARGUMENT_SPEC

    properties = set(TUNNEL_SCHEMA["properties"])
    assert set(TUNNEL_ARGUMENT_SPEC) <= properties
    assert properties - set(TUNNEL_ARGUMENT_SPEC) <= {"probe"}
    for option, spec in TUNNEL_ARGUMENT_SPEC.items():
        if "choices" in spec:
            assert TUNNEL_SCHEMA["properties"][option]["enum"] == spec["choices"], option


VALID = [
    base(),
    {"name": "gone", "state": "absent"},
    {"name": "*", "state": "absent"},
    base(state="restarted", probe=False),
    base(host="alice@[::1]:2222", port=2222, user="alice"),
    base(host="ssh://alice@target:2200"),
    base(via="u1@j1:2221,u2@j2:2222"),
    base(via=["u1@j1:2221", "ssh://u@[::1]:22", {"host": "j3", "port": "2223", "user": "u3", "password": "pw", "host_key_checking": "accept-new"}]),
    base(via=[{"host": "[::1]", "host_key_fingerprint": FINGERPRINT, "known_hosts_file": "/tmp/kh", "use_agent": False}]),
    base(
        local_forwards=[
            "8080:web:80",
            "0:web:80",
            "[::1]:8080:[::2]:80",
            "*:8081:web:80",
            "8082:/run/x.sock",
            "/tmp/l.sock:web:80",
            "/tmp/m.sock:/run/y.sock",
            {"listen_host": "", "listen_port": 8083, "dest_host": "web", "dest_port": 80},
            {"bind_address": "127.0.0.1", "port": "8084", "host": "web", "host_port": 80},
            {"listen_path": "/tmp/n.sock", "dest_path": "/run/z.sock"},
        ]
    ),
    base(
        remote_forwards=["9000", "0.0.0.0:9001", "9002:localhost:80", {"listen_port": 0}, {"listen_port": 9003, "socks_username": "u", "socks_password": "p"}]
    ),
    base(dynamic_forwards=["1080", "[::1]:1081", {"listen_host": "127.0.0.1", "listen_port": 0, "socks_username": "u", "socks_password": "p"}]),
    base(
        private_key_file="~/.ssh/id_ed25519",
        private_key="-----BEGIN-----",
        private_key_passphrase="x",
        password="y",
        use_agent=True,
        host_key_checking="strict",
        known_hosts_file="/tmp/kh",
        host_key_fingerprint=FINGERPRINT,
        keepalive_interval=5,
        keepalive_count_max=3,
        connect_timeout=10,
        reconnect=True,
        lifetime="play",
        ttl=60,
        idle_timeout=None,
        allow_non_loopback_bind=False,
        drain_timeout=0,
        state_dir="/run/user/0/burrow",
        lifetime_owner={"pid": 1},
    ),
]


@pytest.mark.parametrize("params", VALID)
def test_valid_declarations(params: dict[str, t.Any]) -> None:
    assert schema_accepts(params), [error.message for error in SCHEMA.iter_errors(params)]
    if params.get("state") != "absent":
        tunnel_from_params(params)  # and the grammar agrees


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        (base(local_forwards=["1:h:2", {"port": 70000, "host": "x", "host_port": 1}]), "local_forwards[1].listen_port", "from 0 to 65535"),
        (base(port=0), "port", "from 1 to 65535"),
        (base(keepalive_interval=0), "keepalive_interval", "from 1 to 3600"),
        (base(keepalive_count_max=1000), "keepalive_count_max", "from 1 to 100"),
        (base(port=True), "port", "must be a port number"),
        (base(port=22.5), "port", "must be a port number"),
        (base(host_key_checking="no"), "host_key_checking", "strict, accept-new, off"),
        ({"name": "a"}, "host", "is required"),
        ({"host": "h"}, "name", "must be 1 to 64"),
        (base(colour="red"), "colour", "not a known option"),
        (base(via=[{"host": "h", "colour": "red"}]), "via[0].colour", "not a known key of a hop"),
        (base(dynamic_forwards=[{"listen_port": 1, "dest_host": "h"}]), "dynamic_forwards[0].dest_host", "not a known key of a dynamic forward"),
        (base(via=[{"host": "-oProxyCommand=x"}]), "via[0].host", "must not start with '-'"),
        (base(via=["-oProxyCommand=x"]), "via[0]", "must not start with '-'"),
        (base(name="*"), "name", "must be 1 to 64"),
        (base(via=5), "via", "must be a list"),
    ],
)
def test_error_messages(params: dict[str, t.Any], field: str, words: str) -> None:
    """The grammar names the field path and says why; the published schema refuses the same declaration."""
    with pytest.raises(SpecError) as caught:
        tunnel_from_params(params)
    assert caught.value.field == field, str(caught.value)
    assert str(caught.value).startswith(f"{field}: ") and words in str(caught.value), str(caught.value)
    assert not schema_accepts(params)


# Every hostile input: the grammar refuses it naming the field path and the value (the schema, where it can say it, too).
HOSTILE_VALUES = ["a;b", "a'b", "a`id`b", "$(id)", "a)b", "a\nb", "a\x00b", "-oProxyCommand=x", "a b"]
HOSTILE: list[tuple[dict[str, t.Any], str, object]] = []
for _value in HOSTILE_VALUES:
    HOSTILE += [
        (base(host=_value), "host", _value),
        (base(user=_value), "user", _value),
        (base(via=[_value]), "via[0]", _value),
        (base(via=[{"host": _value}]), "via[0].host", _value),
        (base(via=[{"host": "j", "user": _value}]), "via[0].user", _value),
        (base(local_forwards=[f"8080:{_value}:80"]), "local_forwards[0]", f"8080:{_value}:80"),
        (base(local_forwards=[{"listen_port": 1, "dest_host": _value, "dest_port": 1}]), "local_forwards[0].dest_host", _value),
        (base(local_forwards=[{"listen_host": _value, "listen_port": 1, "dest_host": "h", "dest_port": 1}]), "local_forwards[0].listen_host", _value),
        (base(remote_forwards=[f"{_value}:9000"]), "remote_forwards[0]", f"{_value}:9000"),
        (base(dynamic_forwards=[f"{_value}:1080"]), "dynamic_forwards[0]", f"{_value}:1080"),
    ]
for _port in (-1, 65536, 131073, "2000blah", "blah2000", "22 ", True, False, 1.5):
    HOSTILE += [
        (base(port=_port), "port", _port),
        (base(via=[{"host": "j", "port": _port}]), "via[0].port", _port),
        (base(local_forwards=[{"listen_port": _port, "dest_host": "h", "dest_port": 1}]), "local_forwards[0].listen_port", _port),
        (base(local_forwards=[{"listen_port": 1, "dest_host": "h", "dest_port": _port}]), "local_forwards[0].dest_port", _port),
        (base(local_forwards=[f"{_port}:h:80"]), "local_forwards[0]", f"{_port}:h:80"),
    ]
HOSTILE += [
    (base(port=0), "port", 0),
    (base(local_forwards=["8080:h:0"]), "local_forwards[0]", "8080:h:0"),
    (base(local_forwards=["[::1:5432"]), "local_forwards[0]", "[::1:5432"),
    (base(local_forwards=["::1]:5432"]), "local_forwards[0]", "::1]:5432"),
    (base(local_forwards=["[::1]5432:h:1"]), "local_forwards[0]", "[::1]5432:h:1"),
    (base(local_forwards=["::1:5432:h:1"]), "local_forwards[0]", "::1:5432:h:1"),
    (base(local_forwards=["8080:relative.sock"]), "local_forwards[0]", "8080:relative.sock"),
    (base(local_forwards=["8080:/" + "a" * 120]), "local_forwards[0]", "/" + "a" * 120),
    (base(local_forwards=[{"listen_port": 1, "dest_path": "/" + "a" * 120}]), "local_forwards[0].dest_path", "/" + "a" * 120),
    (base(local_forwards=[{"listen_port": 1, "dest_path": "rel.sock"}]), "local_forwards[0].dest_path", "rel.sock"),
    (base(local_forwards=["8080:a:1", "8080:b:2"]), "local_forwards[1]", "127.0.0.1:8080"),
    (base(via="j1,j2,j1"), "via[2]", "j1:22"),
    (base(via=["bastion.example.com"]), "host", "bastion.example.com:22"),
    (base(name="bad name"), "name", "bad name"),
    (base(name="-x"), "name", "-x"),
    (base(host_key_fingerprint="SHA256:short"), "host_key_fingerprint", "SHA256:short"),
    (base(lifetime="forever"), "lifetime", "forever"),
    (base(ttl=0), "ttl", 0),
]


@pytest.mark.parametrize(("params", "field", "value"), HOSTILE)
def test_hostile_input_is_refused(params: dict[str, t.Any], field: str, value: object) -> None:
    with pytest.raises(SpecError) as caught:
        tunnel_from_params(params)
    spec_error = caught.value
    assert spec_error.field.startswith(field), str(spec_error)
    # The grammar names the value, or the part of it that is wrong (the host inside a forward string).
    shown = str(spec_error.value)
    assert shown and (shown in str(value) or str(value) in shown), str(spec_error)
    assert repr(spec_error.value) in str(spec_error)


@pytest.mark.parametrize(
    "params",
    [
        base(password=12345678),
        base(private_key=["-----BEGIN-----"]),
        base(via=[{"host": "h", "password": 987654321}]),
        base(dynamic_forwards=[{"listen_port": 1, "socks_username": "u", "socks_password": 55555555}]),
    ],
)
def test_secret_values_not_echoed(params: dict[str, t.Any]) -> None:
    with pytest.raises(SpecError) as caught:
        tunnel_from_params(params)
    text = str(caught.value)
    for secret in ("12345678", "-----BEGIN-----", "987654321", "55555555"):
        assert secret not in text
    assert not schema_accepts(params)


def test_trailing_newline_is_refused() -> None:
    # Python's re lets '$' match before a final newline; the grammar must not. (The schema's patterns follow ECMA-262,
    # where '$' does not, but Python's jsonschema evaluates them with re.search: not checked here.)
    for params in (base(host="target\n"), base(user="bob\n"), base(local_forwards=["8080:h:80\n"])):
        with pytest.raises(SpecError):
            tunnel_from_params(params)


def test_schema_and_grammar_agree_on_ranges() -> None:
    properties = TUNNEL_SCHEMA["properties"]
    assert (properties["keepalive_interval"]["minimum"], properties["keepalive_interval"]["maximum"]) == (1, 3600)
    assert (properties["keepalive_count_max"]["minimum"], properties["keepalive_count_max"]["maximum"]) == (1, 100)
    for option, low, high in (("keepalive_interval", 1, 3600), ("keepalive_count_max", 1, 100), ("connect_timeout", 1, 600)):
        tunnel_from_params(base(**{option: low}))
        tunnel_from_params(base(**{option: high}))
        assert schema_accepts(base(**{option: low})) and schema_accepts(base(**{option: high}))
        for bad in (low - 1, high + 1):
            assert not schema_accepts(base(**{option: bad}))
            with pytest.raises(SpecError):
                tunnel_from_params(base(**{option: bad}))
