# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 16 item 15: inf and NaN, IPv4-mapped IPv6 addresses, and null as unset."""

from __future__ import annotations

import typing as t

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.burrow.ssh.plugins.action.tunnel import USER_ARGUMENT_SPEC
from ansible_collections.burrow.ssh.plugins.module_utils._module_args import refuse_non_finite_numbers, tunnel_from_module, unset_nulls
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration

BASE = {"name": "t", "host": "127.0.0.1", "port": 22, "use_agent": False}


def _as_the_action_plugin(args: dict[str, t.Any]) -> t.Any:
    """The action plugin's order: nulls unset, non-finite numbers refused, Ansible's conversion, then the grammar."""
    args = unset_nulls(args)
    refuse_non_finite_numbers(args)
    converted = ArgumentSpecValidator(USER_ARGUMENT_SPEC).validate(args)
    assert not converted.error_messages, converted.error_messages
    return tunnel_from_module(dict(converted.validated_parameters, **{key: converted.validated_parameters[key] for key in args}))[0]


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("ttl", "inf", "ttl: must be a whole number of seconds, not infinite or NaN (leave it unset for no limit) (got 'inf')"),
        ("ttl", float("inf"), "ttl: must be a whole number of seconds, not infinite or NaN"),
        ("idle_timeout", "NaN", "idle_timeout: must be a whole number of seconds, not infinite or NaN (leave it unset"),
        ("keepalive_interval", "-Infinity", "keepalive_interval: must be a whole number of seconds, not infinite or NaN (got"),
        ("port", " infinity ", "port: must be a whole number, not infinite or NaN"),
    ],
)
def test_infinite_and_nan_numbers_are_refused_naming_the_option(option: str, value: t.Any, reason: str) -> None:
    with pytest.raises(SpecError) as refused:
        _as_the_action_plugin(dict(BASE, **{option: value}))
    assert refused.value.field == option
    assert str(refused.value).startswith(reason)


def test_finite_numbers_and_other_strings_are_left_to_ansible_s_conversion() -> None:
    refuse_non_finite_numbers({"ttl": "60", "idle_timeout": 30, "port": "ssh", "keepalive_interval": 1.0})
    assert _as_the_action_plugin(dict(BASE, ttl="60")).ttl == 60


@pytest.mark.parametrize(
    ("declared", "listen", "dest"),
    [
        ("[::ffff:127.0.0.1]:0:db:5432", "127.0.0.1:0", "db:5432"),
        ("[::ffff:7f00:2]:15432:[::ffff:10.0.0.5]:5432", "127.0.0.2:15432", "10.0.0.5:5432"),
        ({"listen_host": "[::FFFF:127.0.0.1]", "listen_port": 0, "dest_host": "::ffff:192.0.2.1", "dest_port": 80}, "127.0.0.1:0", "192.0.2.1:80"),
    ],
)
def test_an_ipv4_mapped_ipv6_address_is_the_ipv4_address(declared: t.Any, listen: str, dest: str) -> None:
    """Binding [::ffff:127.0.0.1] on an IPv6-only socket failed with "Invalid argument": it is stored as 127.0.0.1."""
    forward = parse_declaration(dict(BASE, local_forwards=[declared])).forwards[0]
    assert (str(forward.listen), str(forward.destination)) == (listen, dest)
    assert not forward.exposes_beyond_loopback


def test_a_mapped_non_loopback_address_is_beyond_loopback() -> None:
    with pytest.raises(SpecError, match=r"local_forwards\[0\]: listens beyond loopback.*got '10.1.1.1:1'"):
        _as_the_action_plugin(dict(BASE, local_forwards=["[::ffff:10.1.1.1]:1:db:5432"]))


def test_null_for_an_optional_option_is_unset() -> None:
    optional = ("via", "local_forwards", "remote_forwards", "keepalive_interval", "host_key_checking", "ttl", "user", "lifetime", "reconnect")
    nulls = dict.fromkeys(optional)
    tunnel = _as_the_action_plugin(dict(BASE, port=None, **nulls))
    default = _as_the_action_plugin(dict(BASE))
    assert tunnel.digest() == default.digest()
    assert tunnel.hops[-1].port == 22 and tunnel.hops[-1].host_key_policy == "strict"


def test_null_for_a_required_option_is_missing() -> None:
    converted = ArgumentSpecValidator(USER_ARGUMENT_SPEC).validate(unset_nulls(dict(BASE, name=None)))
    assert converted.error_messages == ["missing required arguments: name"]
