# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""paramiko is imported without invoke (5.2 MiB per tunnel process) or importlib.metadata, and ssh_config's Match exec still works."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import pathlib
import subprocess
import sys
import typing as t

import pytest

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh import library

COLLECTIONS = pathlib.Path(__file__).resolve().parents[4] / ".build" / "collections"

HAS_INVOKE = importlib.util.find_spec("invoke") is not None


def test_the_tunnel_process_code_imports_paramiko_but_not_invoke() -> None:
    """What the tunnel process and the group host import (their fork keeps it all): paramiko, without invoke and its 116 modules."""
    probe = (
        "import json, sys\n"
        "from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process import daemon, host, spawn\n"
        "from ansible_collections.burrow.ssh.plugins.module_utils._tunnel import engine, manage\n"
        "import paramiko.config\n"
        "print(json.dumps({'paramiko': 'paramiko.transport' in sys.modules, 'invoke': sorted(m for m in sys.modules if m.split('.')[0] == 'invoke'),"
        " 'config_invoke': paramiko.config.invoke is not None, 'asyncio': 'asyncio' in sys.modules,"
        " 'held back': sorted(m for m in ('importlib.metadata', 'email', 'ssl') if m in sys.modules), 'version': paramiko.__version__}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], env={"PYTHONPATH": str(COLLECTIONS)}, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    expected = {"paramiko": True, "invoke": [], "config_invoke": False, "asyncio": False, "held back": [], "version": importlib.metadata.version("paramiko")}
    assert seen == expected


def test_the_version_stand_in_agrees_with_importlib_metadata() -> None:
    """paramiko's version comes from its dist-info's name, as importlib.metadata reads it; anything else goes to the real one."""
    assert library.installed_version("paramiko") == importlib.metadata.version("paramiko")
    assert library.installed_version("cryptography") == importlib.metadata.version("cryptography")
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        library.installed_version("burrow-no-such-distribution")


def test_a_later_import_of_importlib_metadata_gets_the_real_module() -> None:
    probe = (
        "from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh import library\n"
        "import importlib.metadata\n"
        "print(importlib.metadata.version('paramiko'), hasattr(importlib.metadata, 'distributions'))"
    )
    result = subprocess.run([sys.executable, "-c", probe], env={"PYTHONPATH": str(COLLECTIONS)}, capture_output=True, text=True, timeout=120, check=False)
    assert (result.returncode, result.stdout.split()) == (0, [importlib.metadata.version("paramiko"), "True"]), result.stderr


def test_a_later_import_of_invoke_is_not_blocked() -> None:
    """The guard is lifted once paramiko is imported: other code importing invoke gets it."""
    if not HAS_INVOKE:
        pytest.skip("invoke is not installed")
    result = subprocess.run(
        [sys.executable, "-c", "from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh import library\nimport invoke\nprint(invoke.__name__)"],
        env={"PYTHONPATH": str(COLLECTIONS)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "invoke"), result.stderr


def _lookups(tmp_path: pathlib.Path, text: str, hosts: list[str]) -> list[list[t.Any]]:
    """(host, port) each host resolves to, in a fresh interpreter with stdin on /dev/null (invoke reads stdin; pytest's raises)."""
    config = tmp_path / "config"
    config.write_text(text)
    config.chmod(0o600)
    probe = (
        "import json, sys\n"
        "from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Hop\n"
        "from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.config import SshConfig\n"
        "config = SshConfig(sys.argv[1])\n"
        "print(json.dumps([[hop.host, hop.port] for hop in (config.apply(Hop(host=name)) for name in sys.argv[2:])]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(config), *hosts],
        env={"PYTHONPATH": str(COLLECTIONS), "PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


@pytest.mark.skipif(not HAS_INVOKE, reason="Match exec needs the invoke library")
def test_match_exec_runs_its_command_and_applies_only_when_it_succeeds(tmp_path: pathlib.Path) -> None:
    text = 'Match host db exec "exit 0"\n  HostName 127.0.0.9\n  Port 2201\nMatch host cache exec "exit 1"\n  HostName 127.0.0.10\n'
    assert _lookups(tmp_path, text, ["db", "cache"]) == [["127.0.0.9", 2201], ["cache", 22]]


def test_only_a_match_exec_line_loads_invoke() -> None:
    assert library.MATCH_EXEC.search('Host a\n  HostName b\nmatch   Host x EXEC "true"\n')
    assert not library.MATCH_EXEC.search("Host exec\n  HostName executor\n# Match exec in a comment? no: it starts with #\n")
