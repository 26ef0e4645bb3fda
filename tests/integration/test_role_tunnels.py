# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The burrow.ssh.tunnels role: state per tunnel, purge, argument validation, and the systemd persistence files.

This container has no systemd as PID 1, so the units are installed with tunnels_systemd_manage=false, checked
with `systemd-analyze verify` when it is installed, and their ExecStart is run the way systemd would run it.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import typing as t

import pytest
import yaml
from engine_helpers import echo_roundtrip, wait_until

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.control import TunnelHandle

REPO = pathlib.Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"


def _server(sandbox: t.Any) -> dict[str, t.Any]:
    return dict(sandbox.sshd.hop())


def _role_play(tmp_path: pathlib.Path, name: str = "role.yml") -> pathlib.Path:
    play = tmp_path / name
    play.write_text(yaml.safe_dump([{"name": "Tunnels from the role", "hosts": "localhost", "gather_facts": False, "roles": [{"role": "burrow.ssh.tunnels"}]}]))
    return play


def _kill_recorded(state_dir: pathlib.Path) -> None:
    if state_dir.is_dir():
        for state in state_dir.glob("*.json"):
            try:
                os.kill(int(json.loads(state.read_text())["pid"]), signal.SIGKILL)
            except (ProcessLookupError, KeyError, ValueError, OSError):
                pass


@pytest.fixture
def state_dir(tmp_path: pathlib.Path) -> t.Iterator[pathlib.Path]:
    path = tmp_path / "state"
    yield path
    _kill_recorded(path)


def _task_results(result: t.Any, task_name: str) -> list[dict[str, t.Any]]:
    found = []
    for play in result.json["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"].split(" : ")[-1] == task_name:
                found.extend(task["hosts"].values())
    return found


def _tunnels(state_dir: pathlib.Path) -> list[str]:
    return sorted(path.stem for path in state_dir.glob("*.json")) if state_dir.is_dir() else []


def test_role_converges_each_tunnel_and_purges_undeclared_ones(
    sandbox_session: t.Any, echo_server: t.Any, sandbox_inventory: pathlib.Path, ansible_playbook: t.Any, tmp_path: pathlib.Path, state_dir: pathlib.Path
) -> None:
    play = _role_play(tmp_path)
    server = _server(sandbox_session)
    declared = [
        {"name": "role-echo", "local_forwards": [f"127.0.0.1:0:127.0.0.1:{echo_server.port}"]},
        {"name": "role-socks", "dynamic_forwards": ["127.0.0.1:0"]},
    ]
    base = {"tunnels_defaults": server, "tunnels_state_dir": str(state_dir)}
    first = ansible_playbook(play, sandbox_inventory, {**base, "tunnels_list": declared})
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    assert _tunnels(state_dir) == ["role-echo", "role-socks"]
    converge = _task_results(first, "Converge the tunnels run by burrow.ssh.tunnel")[0]["results"]
    assert [entry["action"] for entry in converge] == ["created", "created"]
    port = converge[0]["tunnel"]["port"]
    assert echo_roundtrip(("127.0.0.1", port), b"through the role") == b"through the role"

    again = ansible_playbook(play, sandbox_inventory, {**base, "tunnels_list": declared})
    assert again.returncode == 0, again.stdout[-3000:]
    assert again.json["stats"]["localhost"]["changed"] == 0
    assert [entry["action"] for entry in _task_results(again, "Converge the tunnels run by burrow.ssh.tunnel")[0]["results"]] == ["unchanged", "unchanged"]

    # state: absent per tunnel
    declared[0]["state"] = "absent"
    absent = ansible_playbook(play, sandbox_inventory, {**base, "tunnels_list": declared})
    assert absent.returncode == 0, absent.stdout[-3000:]
    assert _tunnels(state_dir) == ["role-socks"]
    with pytest.raises(OSError):
        echo_roundtrip(("127.0.0.1", port), b"x", timeout=3)

    # purge: a tunnel that is no longer declared at all is removed
    purge = ansible_playbook(
        play,
        sandbox_inventory,
        {**base, "tunnels_purge": True, "tunnels_list": [{"name": "role-echo2", "local_forwards": [f"127.0.0.1:0:127.0.0.1:{echo_server.port}"]}]},
    )
    assert purge.returncode == 0, purge.stdout[-3000:]
    assert _tunnels(state_dir) == ["role-echo2"]
    removed = _task_results(purge, "Remove the tunnels that are not declared")[0]["results"]
    assert [entry["removed"] for entry in removed] == [["role-socks"]]

    cleanup = ansible_playbook(play, sandbox_inventory, {**base, "tunnels_purge": True, "tunnels_list": []})
    assert cleanup.returncode == 0, cleanup.stdout[-3000:]
    assert _tunnels(state_dir) == []


def test_role_argument_spec_rejects_unknown_options(sandbox_inventory: pathlib.Path, ansible_playbook: t.Any, tmp_path: pathlib.Path) -> None:
    result = ansible_playbook(_role_play(tmp_path), sandbox_inventory, {"tunnels_list": [{"name": "x", "hots": "typo.example"}]})
    assert result.returncode != 0
    assert "hots" in result.stdout, result.stdout[-2000:]
    assert "Validation of arguments failed" in result.stdout
    assert "Supported parameters include" in result.stdout


def _unit_settings(unit: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.needs_root
def test_role_systemd_persistence_files_and_entry_point(
    sandbox_session: t.Any, echo_server: t.Any, sandbox_inventory: pathlib.Path, ansible_playbook: t.Any, tmp_path: pathlib.Path
) -> None:
    units, config, lib = tmp_path / "units", tmp_path / "etc-tunnels", tmp_path / "lib"
    units.mkdir()
    runtime = tmp_path / "run"
    paths = {
        "tunnels_systemd_manage": False,
        "tunnels_systemd_unit_dir": str(units),
        "tunnels_systemd_config_dir": str(config),
        "tunnels_systemd_lib_dir": str(lib),
        "tunnels_systemd_python": str(VENV_PYTHON),
    }
    declared = [{"name": "edge-echo", "systemd": True, "local_forwards": [f"127.0.0.1:0:127.0.0.1:{echo_server.port}"]}]
    play = _role_play(tmp_path)
    result = ansible_playbook(play, sandbox_inventory, {**paths, "tunnels_defaults": _server(sandbox_session), "tunnels_list": declared})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]

    unit_path = units / "burrow-tunnel@.service"
    declaration = config / "edge-echo.json"
    assert oct(config.stat().st_mode & 0o777) == "0o700"
    assert oct(declaration.stat().st_mode & 0o777) == "0o600"
    assert json.loads(declaration.read_text())["name"] == "edge-echo"
    assert "systemd" not in json.loads(declaration.read_text())
    settings = _unit_settings(unit_path.read_text())
    assert settings["Restart"] == ["always"]
    assert settings["WantedBy"] == ["multi-user.target"]

    # systemd-analyze verify needs an instance; it checks syntax and that ExecStart's binary exists.
    if shutil.which("systemd-analyze"):
        instance = units / "burrow-tunnel@edge-echo.service"
        shutil.copy(unit_path, instance)
        verify = subprocess.run(["systemd-analyze", "verify", "--man=no", str(instance)], capture_output=True, text=True, timeout=60, check=False)
        relevant = [line for line in verify.stderr.splitlines() if "burrow-tunnel" in line]
        assert verify.returncode == 0 and not relevant, verify.stderr
        instance.unlink()

    # Run ExecStart as systemd would (with %i = edge-echo), in the foreground, and use the tunnel.
    exec_start = settings["ExecStart"][0].replace("%i", "edge-echo").replace("/run/burrow-tunnels", str(runtime))
    proc = subprocess.Popen(shlex.split(exec_start), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        state = runtime / "edge-echo.json"
        assert wait_until(state.exists, timeout=30), proc.stderr.read() if proc.poll() is not None else "no state file"
        bound = json.loads(state.read_text())
        assert bound["pid"] == proc.pid
        status = TunnelHandle(str(runtime), "edge-echo").inspect()
        assert status["status"] == "up"
        port = status["forwards"][0]["bound_port"]
        assert echo_roundtrip(("127.0.0.1", port), b"kept up by the unit") == b"kept up by the unit"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not state.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()

    # An invalid declaration never replaces a valid one (copy validate runs the entry point's --check).
    broken = [{"name": "edge-echo", "systemd": True, "local_forwards": ["nonsense"]}]
    bad = ansible_playbook(play, sandbox_inventory, {**paths, "tunnels_defaults": _server(sandbox_session), "tunnels_list": broken})
    assert bad.returncode != 0
    assert json.loads(declaration.read_text())["local_forwards"] == declared[0]["local_forwards"]

    # Fully removable.
    removed = ansible_playbook(play, sandbox_inventory, {**paths, "tunnels_systemd_state": "absent"})
    assert removed.returncode == 0, removed.stdout[-3000:]
    assert not unit_path.exists() and not config.exists() and not lib.exists()
