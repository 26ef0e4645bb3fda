# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every ssh_config example in docs/ssh-config.md runs: each block is read by SshConfig and has the stated effect."""

from __future__ import annotations

import json
import os
import pathlib
import re
import typing as t

import pytest

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Hop
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.config import SshConfig

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "ssh-config.md"
EXAMPLE = re.compile(r"<!-- example: host=(\S+) expect=(\{.*?\}) -->\n```\n(.*?)```", re.S)


def examples() -> list[tuple[str, dict[str, t.Any], str]]:
    return [(host, json.loads(expect), body) for host, expect, body in EXAMPLE.findall(DOC.read_text())]


def _expand(value: t.Any) -> t.Any:
    if isinstance(value, str) and value.startswith("~"):
        return os.path.expanduser(value)
    if isinstance(value, list):
        return tuple(_expand(item) for item in value)
    return value


def write_files(body: str, directory: pathlib.Path) -> pathlib.Path:
    files: dict[str, list[str]] = {}
    current = "config"
    for line in body.splitlines():
        match = re.match(r"#\s*file:\s*(\S+)\s*$", line)
        if match:
            current = match.group(1)
            continue
        files.setdefault(current, []).append(line)
    for name, lines in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    return directory / "config"


def test_the_doc_has_examples() -> None:
    assert len(examples()) >= 5


@pytest.mark.parametrize(("host", "expect", "body"), examples(), ids=[host for host, _e, _b in examples()])
def test_example_has_its_effect(host: str, expect: dict[str, t.Any], body: str, tmp_path: pathlib.Path) -> None:
    config = SshConfig(str(write_files(body, tmp_path)))
    target = config.resolve([Hop(host=host)])[-1]
    for field, value in expect.items():
        assert getattr(target, field) == (_expand(value) if "known_hosts" in field else value), field


def test_an_explicit_option_wins_over_the_config(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "config"
    path.write_text("Host h\n  StrictHostKeyChecking no\n  IdentityAgent none\n  Compression yes\n  UserKnownHostsFile /x /y\n")
    hop = SshConfig(str(path)).resolve([Hop(host="h", host_key_checking="strict", use_agent=True, compression=False, known_hosts_file="/k")])[-1]
    assert (hop.host_key_checking, hop.agent_enabled, hop.compression, hop.known_hosts_file, hop.extra_known_hosts_files) == ("strict", True, False, "/k", ())
    unset = SshConfig(str(path)).resolve([Hop(host="h")])[-1]
    assert (unset.host_key_checking, unset.agent_enabled, unset.compression) == ("off", False, True)
    assert (unset.known_hosts_file, unset.extra_known_hosts_files) == ("/x", ("/y",))


def test_unset_settings_keep_the_digest_of_explicit_defaults() -> None:
    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration

    unset = parse_declaration({"name": "t", "host": "h", "local_forwards": ["1:h:1"]})
    explicit = parse_declaration(
        {
            "name": "t",
            "host": "h",
            "local_forwards": ["1:h:1"],
            "keepalive_interval": 5,
            "keepalive_count_max": 3,
            "connect_timeout": 10,
            "use_agent": True,
            "host_key_checking": "strict",
        }
    )
    assert unset.hops[-1].use_agent is None and unset.keepalive_interval is None
    assert unset.digest() == explicit.digest()
    # The digest a declaration had before "unset" existed (defaults stored as values): unchanged.
    assert "compression" not in unset.identity()["hops"][0]


@pytest.mark.parametrize(("word", "policy"), [("yes", "strict"), ("ask", "strict"), ("accept-new", "accept-new"), ("no", "off"), ("off", "off")])
def test_strict_host_key_checking_words(word: str, policy: str, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "config"
    path.write_text(f"Host h\n  StrictHostKeyChecking {word}\n")
    assert SshConfig(str(path)).resolve([Hop(host="h")])[-1].host_key_checking == policy
