# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the sshd_config model: pure text in, text out (no sshd needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ansible_collections.burrow.ssh.plugins.module_utils._sshd.model import (
    ConflictError,
    InvalidValueError,
    SshdConfig,
    derive_connection_spec,
    include_targets,
    normalise_criteria,
    normalise_value,
    parse_line,
    render_value,
)

BASE = """# header comment
Port 22
  # indented comment

GatewayPorts no   # keep me
AllowTcpForwarding yes
"""


def model(text: str, tmp_path: Path | None = None) -> SshdConfig:
    path = str(tmp_path / "sshd_config") if tmp_path else "/nonexistent/sshd_config"
    return SshdConfig(path, text, include_base=str(tmp_path) if tmp_path else "/nonexistent")


def test_render_is_verbatim_without_edits() -> None:
    text = "# c\r\nPort 22\r\n\r\n\tMatch   User  x\r\n\tX11Forwarding no"
    assert model(text).render() == text


def test_replace_in_place_keeps_comment_and_layout() -> None:
    cfg = model(BASE)
    change, warnings = cfg.set("GatewayPorts", "clientspecified")
    assert change.action == "replaced"
    assert change.line == 5
    assert change.old == "no"
    assert warnings == []
    assert cfg.render() == BASE.replace("GatewayPorts no   # keep me", "GatewayPorts clientspecified # keep me")


def test_keyword_lookup_is_case_insensitive_and_keeps_spelling() -> None:
    cfg = model("gatewayports=no\n")
    cfg.set("GatewayPorts", "yes")
    assert cfg.render() == "gatewayports=yes\n"


def test_same_value_is_unchanged() -> None:
    cfg = model(BASE)
    change, _warnings = cfg.set("GatewayPorts", "NO")
    assert change.action == "unchanged"
    assert cfg.render() == BASE


def test_first_value_wins_later_duplicate_reported_not_touched() -> None:
    text = "GatewayPorts no\nPort 22\nGatewayPorts yes\n"
    cfg = model(text)
    change, warnings = cfg.set("gatewayports", "clientspecified")
    assert change.line == 1
    assert cfg.render() == "GatewayPorts clientspecified\nPort 22\nGatewayPorts yes\n"
    assert len(warnings) == 1
    assert "line 3" in warnings[0]
    assert "ignored" in warnings[0]


def test_global_insert_goes_before_first_match_not_at_end() -> None:
    text = "Port 22\nUsePAM no\n\n# tunnel users\nMatch User tunnel\n    AllowTcpForwarding remote\n"
    cfg = model(text)
    change, _warnings = cfg.set("GatewayPorts", "clientspecified")
    assert change.action == "inserted"
    assert change.line == 3
    assert cfg.render() == "Port 22\nUsePAM no\nGatewayPorts clientspecified\n\n# tunnel users\nMatch User tunnel\n    AllowTcpForwarding remote\n"


def test_global_value_inside_match_block_does_not_count_as_global() -> None:
    text = "Port 22\nMatch User tunnel\n    GatewayPorts yes\n"
    cfg = model(text)
    assert cfg.effective("gatewayports") is None
    assert cfg.effective("gatewayports", "user tunnel").lineno == 3  # type: ignore[union-attr]
    change, _warnings = cfg.set("GatewayPorts", "no")
    assert change.action == "inserted"
    assert cfg.render() == "Port 22\nGatewayPorts no\nMatch User tunnel\n    GatewayPorts yes\n"


def test_global_insert_without_final_newline_and_without_match() -> None:
    cfg = model("Port 22")
    cfg.set("ClientAliveInterval", 30)
    assert cfg.render() == "Port 22\nClientAliveInterval 30\n"


def test_global_insert_when_only_match_blocks() -> None:
    cfg = model("# only a block\nMatch all\n  X11Forwarding no\n")
    cfg.set("GatewayPorts", "no")
    assert cfg.render() == "GatewayPorts no\n# only a block\nMatch all\n  X11Forwarding no\n"


def test_match_block_created_at_end() -> None:
    cfg = model(BASE)
    change, _warnings = cfg.set("AllowTcpForwarding", "remote", match="User   tunnel")
    assert change.action == "block_created"
    assert cfg.render() == BASE + "\nMatch User tunnel\n    AllowTcpForwarding remote\n"
    # second keyword goes into the same block, not a new one
    change2, _warnings = cfg.set("GatewayPorts", "clientspecified", match="user tunnel")
    assert change2.action == "inserted"
    assert cfg.render().count("Match") == 1
    assert cfg.render().endswith("Match User tunnel\n    AllowTcpForwarding remote\n    GatewayPorts clientspecified\n")


def test_match_block_existing_uses_its_indentation_and_stops_at_next_match() -> None:
    text = "Port 22\nMatch User a\n\tX11Forwarding no\n\n# next\nMatch User b\n\tGatewayPorts yes\n"
    cfg = model(text)
    cfg.set("GatewayPorts", "no", match="User a")
    assert cfg.render() == "Port 22\nMatch User a\n\tX11Forwarding no\n\tGatewayPorts no\n\n# next\nMatch User b\n\tGatewayPorts yes\n"


def test_match_replace_only_in_the_right_block() -> None:
    text = "GatewayPorts no\nMatch User a\n  GatewayPorts yes\nMatch User b\n  GatewayPorts yes\n"
    cfg = model(text)
    change, warnings = cfg.set("GatewayPorts", "clientspecified", match="User b")
    assert change.line == 5
    assert cfg.render() == "GatewayPorts no\nMatch User a\n  GatewayPorts yes\nMatch User b\n  GatewayPorts clientspecified\n"
    assert warnings == []  # User a and User b cannot both match one connection


def test_no_warning_for_disjoint_user_blocks() -> None:
    cfg = model("Match User a\n  GatewayPorts yes\nMatch Address 10.0.0.0/8\n  GatewayPorts no\n")
    _change, warnings = cfg.set("GatewayPorts", "clientspecified", match="User b")
    assert len(warnings) == 1
    assert "Match address 10.0.0.0/8" in warnings[0]


def test_match_criteria_normalised() -> None:
    assert normalise_criteria("  USER tunnel   Address 10.0.0.0/8 ") == "user tunnel address 10.0.0.0/8"
    assert normalise_criteria("User=Tunnel") == "user Tunnel"


def test_include_drop_in_read_first_is_a_conflict(tmp_path: Path) -> None:
    drop = tmp_path / "sshd_config.d"
    drop.mkdir()
    (drop / "10-a.conf").write_text("# vendor\nGatewayPorts no\n")
    (drop / "20-b.conf").write_text("GatewayPorts yes\n")
    text = f"Include {drop}/*.conf\nPort 22\nGatewayPorts clientspecified\n"
    cfg = model(text, tmp_path)
    first = cfg.effective("gatewayports")
    assert first is not None
    assert first.path == str(drop / "10-a.conf")
    assert first.lineno == 2
    with pytest.raises(ConflictError) as err:
        cfg.set("GatewayPorts", "clientspecified")
    assert "10-a.conf line 2" in str(err.value)
    assert cfg.render() == text


def test_include_drop_in_with_same_value_is_fine(tmp_path: Path) -> None:
    drop = tmp_path / "d"
    drop.mkdir()
    (drop / "a.conf").write_text("GatewayPorts clientspecified\n")
    text = "Include d/*.conf\nPort 22\n"  # relative: resolved against the include base (/etc/ssh for sshd)
    cfg = model(text, tmp_path)
    change, _warnings = cfg.set("GatewayPorts", "clientspecified")
    assert change.action == "unchanged"
    assert cfg.render() == text


def test_include_after_value_does_not_conflict(tmp_path: Path) -> None:
    (tmp_path / "late.conf").write_text("GatewayPorts yes\n")
    text = f"GatewayPorts no\nInclude {tmp_path}/late.conf\n"
    cfg = model(text, tmp_path)
    _change, warnings = cfg.set("GatewayPorts", "clientspecified")
    assert cfg.render().startswith("GatewayPorts clientspecified\n")
    assert any("late.conf line 1" in w for w in warnings)


def test_match_inside_included_file_ends_with_that_file(tmp_path: Path) -> None:
    (tmp_path / "m.conf").write_text("Match User x\n  GatewayPorts yes\n")
    text = f"Include {tmp_path}/m.conf\nGatewayPorts no\n"
    cfg = model(text, tmp_path)
    eff = cfg.effective("gatewayports")
    assert eff is not None
    assert eff.path.endswith("sshd_config")
    assert eff.scope is None
    assert cfg.effective("gatewayports", "user x").path.endswith("m.conf")  # type: ignore[union-attr]


def test_include_inside_match_block_is_conditional(tmp_path: Path) -> None:
    (tmp_path / "in.conf").write_text("AllowTcpForwarding no\n")
    text = f"Port 22\nMatch User t\n  Include {tmp_path}/in.conf\n"
    cfg = model(text, tmp_path)
    assert cfg.effective("allowtcpforwarding") is None
    with pytest.raises(ConflictError):
        cfg.set("AllowTcpForwarding", "remote", match="User t")


def test_include_glob_order_is_lexical(tmp_path: Path) -> None:
    for name in ("b.conf", "a.conf", "c.txt"):
        (tmp_path / name).write_text("")
    assert include_targets("*.conf", str(tmp_path)) == [str(tmp_path / "a.conf"), str(tmp_path / "b.conf")]


@pytest.mark.parametrize(
    ("keyword", "value", "expected"),
    [
        ("gatewayports", "ClientSpecified", "clientspecified"),
        ("disableforwarding", True, "yes"),
        ("allowagentforwarding", False, "no"),
        ("clientaliveinterval", 15, "15"),
        ("permitopen", ["127.0.0.1:5432", "[::1]:*", "db.internal:5432"], "127.0.0.1:5432 [::1]:* db.internal:5432"),
        ("permitopen", ["ANY"], "any"),
        ("permitlisten", ["8080", "0.0.0.0:8443", "localhost:*"], "8080 0.0.0.0:8443 localhost:*"),
    ],
)
def test_render_value_accepts(keyword: str, value: object, expected: str) -> None:
    assert render_value(keyword, value) == expected


@pytest.mark.parametrize(
    ("keyword", "value", "needle"),
    [
        ("gatewayports", "maybe", "GatewayPorts: unsupported value 'maybe'"),
        ("allowtcpforwarding", "both", "AllowTcpForwarding"),
        ("clientaliveinterval", -1, "ClientAliveInterval"),
        ("clientalivecountmax", "x", "ClientAliveCountMax"),
        ("permitopen", ["any", "127.0.0.1:80"], "must be the only entry"),
        ("permitopen", ["127.0.0.1"], "expected host:port"),
        ("permitopen", ["127.0.0.1:99999"], "invalid port"),
        ("permitopen", ["h:80 # x"], "no spaces"),
        ("permitopen", [], "empty"),
        ("permitlisten", ["[::1]8080"], "[ipv6]:port"),
    ],
)
def test_render_value_rejects_with_field_and_value(keyword: str, value: object, needle: str) -> None:
    with pytest.raises(InvalidValueError) as err:
        render_value(keyword, value)
    assert needle in str(err.value)


def test_bad_value_leaves_model_untouched() -> None:
    cfg = model(BASE)
    with pytest.raises(InvalidValueError):
        cfg.set("GatewayPorts", "maybe")
    assert cfg.render() == BASE


def test_normalise_value_matches_sshd_t_output() -> None:
    assert normalise_value("permitlisten", "8080 localhost:9000") == normalise_value("permitlisten", "*:8080 localhost:9000")
    assert normalise_value("gatewayports", "ClientSpecified # c") != ""
    assert normalise_value("permitopen", '"any"') == "any"


def test_parse_line_trailing_comment_and_equals() -> None:
    parsed = parse_line("  PermitOpen = a:1 b:2  # two\n")
    assert (parsed.keyword, parsed.indent, parsed.value, parsed.comment) == ("permitopen", "  ", "a:1 b:2", "  # two")
    assert parse_line("#GatewayPorts yes\n").keyword is None


@pytest.mark.parametrize(
    ("criteria", "spec"),
    [
        ("User tunnel", "user=tunnel"),
        ("Address 10.0.0.0/8", "addr=10.0.0.1"),
        ("User tunnel Address 192.0.2.7", "user=tunnel,addr=192.0.2.7"),
        ("Host a.example LocalPort 2222", "host=a.example,lport=2222"),
        ("Group admins", None),
        ("User !root", None),
        ("User tun*", None),
    ],
)
def test_derive_connection_spec(criteria: str, spec: str | None) -> None:
    assert derive_connection_spec(criteria) == spec


SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@pytest.mark.skipif(not os.access(SSHD, os.X_OK) or os.geteuid() != 0 or not os.path.isdir("/run/sshd"), reason="needs sshd, root and /run/sshd")
def test_rendered_edits_pass_sshd_t_and_sshd_t_agrees(tmp_path: Path) -> None:
    """The model's idea of the effective value is what sshd -T reports (global and -C Match)."""
    key = tmp_path / "hk"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    text = f"HostKey {key}\nPidFile {tmp_path}/pid\nGatewayPorts no\n\nMatch User nobody\n    X11Forwarding no\n"
    cfg = model(text, tmp_path)
    cfg.set("GatewayPorts", "clientspecified")
    cfg.set("AllowTcpForwarding", "remote")
    cfg.set("GatewayPorts", "yes", match="User tunnel")
    cfg.set("PermitListen", ["0.0.0.0:8080"], match="User tunnel")
    path = tmp_path / "sshd_config"
    path.write_text(cfg.render())
    glob_out = subprocess.run([SSHD, "-T", "-f", str(path)], capture_output=True, text=True, check=True).stdout
    assert "gatewayports clientspecified" in glob_out.splitlines()
    assert "allowtcpforwarding remote" in glob_out.splitlines()
    match_out = subprocess.run([SSHD, "-T", "-f", str(path), "-C", "user=tunnel"], capture_output=True, text=True, check=True).stdout
    assert "gatewayports yes" in match_out.splitlines()
    assert "permitlisten 0.0.0.0:8080" in match_out.splitlines()
    other = subprocess.run([SSHD, "-T", "-f", str(path), "-C", "user=other"], capture_output=True, text=True, check=True).stdout
    assert "gatewayports clientspecified" in other.splitlines()
