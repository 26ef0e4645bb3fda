# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""docs/ssh-config.md's keyword table says what config.py does: HONOURED and REFUSED are exactly its rows."""

from __future__ import annotations

import pathlib
import re

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh import config

TABLE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "ssh-config.md"


def rows() -> dict[str, str]:
    status: dict[str, str] = {}
    for line in TABLE.read_text().splitlines():
        match = re.match(r"\|\s*([A-Za-z, ]+?)\s*\|\s*(honoured|ignored|refused)\s*\|", line)
        if match:
            for keyword in match.group(1).split(","):
                assert keyword.strip().lower() not in status, f"{keyword} appears twice in {TABLE.name}"
                status[keyword.strip().lower()] = match.group(2)
    return status


def test_the_table_lists_exactly_the_honoured_and_refused_keywords() -> None:
    table = rows()
    assert {k for k, v in table.items() if v == "honoured"} == set(config.HONOURED)
    assert {k for k, v in table.items() if v == "refused"} == set(config.REFUSED)
    assert set(config.REFUSED_HARMLESS) <= set(config.REFUSED)


def test_refused_keywords_are_errors_and_their_harmless_values_are_not(tmp_path: pathlib.Path) -> None:
    import pytest

    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import Unreachable

    for keyword in config.REFUSED:
        path = tmp_path / f"{keyword}.conf"
        path.write_text(f"Host h\n  {keyword} somewhere\n")
        with pytest.raises(Unreachable, match=keyword):
            config.SshConfig(str(path)).lookup("h")
    for keyword, harmless in config.REFUSED_HARMLESS.items():
        path = tmp_path / f"{keyword}-ok.conf"
        path.write_text(f"Host h\n  {keyword} {harmless}\n")
        assert keyword not in config.SshConfig(str(path)).lookup("h")


def test_include_inside_a_host_block_applies_to_that_block_only(tmp_path: pathlib.Path) -> None:
    (tmp_path / "inner.conf").write_text("Host other\n  User inner\n")
    main = tmp_path / "config"
    main.write_text("Host a\n  Include inner.conf\n  Port 2222\n")
    parsed = config.SshConfig(str(main))
    assert parsed.lookup("a").get("port") == "2222"
    assert "port" not in parsed.lookup("other")
