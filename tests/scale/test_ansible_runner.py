# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The scale scenario through ansible_runner.run(), the way AWX / AAP runs a job.

A private data directory (project/, inventory/), a fresh HOME, no XDG_RUNTIME_DIR and no BURROW_STATE_DIR: the
tunnels must keep their state under HOME/.ansible/burrow, and, declared with lifetime=play, be gone once the
runner job has ended. BURROW_SCALE_RUNNER_HOSTS (20) sets the size.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import stat
import tempfile
import time
import typing as t

import pytest
from sandbox import Sandbox
from scale_helpers import (
    PLAYBOOKS,
    Site,
    alive,
    env_int,
    established_to,
    fetch_marker,
    holders_of,
    host_names,
    kill_leftovers,
    listening_on,
    scale_sites,
    wait_until,
    write_inventory,
)

ansible_runner = pytest.importorskip("ansible_runner")

HOSTS = env_int("BURROW_SCALE_RUNNER_HOSTS", 20, 1, 100)
SITES = 2
REPO = pathlib.Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"

pytestmark = pytest.mark.slow


@pytest.fixture
def sites() -> t.Iterator[list[Site]]:
    with Sandbox() as box, scale_sites(box, host_names(HOSTS), SITES) as started:
        yield started


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch) -> t.Iterator[pathlib.Path]:
    """A fresh HOME; the runner's environment (a copy of ours) has neither XDG_RUNTIME_DIR nor BURROW_STATE_DIR."""
    # Short, like an execution environment's /runner: a deep HOME would push HOME/.ansible/burrow/NAME.sock past the
    # 104-byte Unix socket limit, and the module then fails (with that advice) before starting anything.
    path = pathlib.Path(tempfile.mkdtemp(prefix="bsh-home-", dir="/tmp"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("BURROW_STATE_DIR", raising=False)
    try:
        yield path
    finally:
        kill_leftovers(path / ".ansible" / "burrow")
        shutil.rmtree(path, ignore_errors=True)


def events_of(runner: t.Any, kind: str, task: str) -> dict[str, dict[str, t.Any]]:
    """{host: result} of the runner events of one kind (runner_on_ok, runner_on_failed) for a task name."""
    found = {}
    for event in runner.events:
        data = event.get("event_data") or {}
        if event.get("event") == kind and data.get("task") == task:
            found[data["host"]] = data.get("res") or {}
    return found


@pytest.mark.timeout(600)
def test_scale_scenario_through_ansible_runner(sites: list[Site], home: pathlib.Path, tmp_path: pathlib.Path, collections_path: pathlib.Path) -> None:
    hosts = host_names(HOSTS)
    private = tmp_path / "private"
    (private / "project").mkdir(parents=True)
    (private / "inventory").mkdir()
    for playbook in ("up.yml", "runner.yml"):
        shutil.copy(PLAYBOOKS / playbook, private / "project" / playbook)
    write_inventory(private / "inventory" / "hosts.yml", sites)
    state_dir = home / ".ansible" / "burrow"
    endpoints = [site.ssh_endpoint for site in sites]

    started = time.monotonic()
    runner = ansible_runner.run(
        private_data_dir=str(private),
        playbook="runner.yml",
        forks=50,
        extravars={"scale_lifetime": "play"},
        envvars={
            "HOME": str(home),
            "PATH": f"{ANSIBLE_PLAYBOOK.parent}{os.pathsep}{os.environ.get('PATH', '')}",  # runner runs `ansible-playbook` from PATH
            "ANSIBLE_COLLECTIONS_PATH": str(collections_path),
            "ANSIBLE_NOCOLOR": "1",
        },
        quiet=True,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    stdout = runner.stdout.read()[-6000:] if runner.stdout else ""
    assert runner.status == "successful" and runner.rc == 0, f"{runner.status} rc={runner.rc}\n{stdout}"

    declared = events_of(runner, "runner_on_ok", "Declare this host's tunnel")
    verified = events_of(runner, "runner_on_ok", "The marker names this host and its site")
    assert sorted(declared) == hosts
    assert sorted(verified) == hosts
    assert events_of(runner, "runner_on_failed", "The marker names this host and its site") == {}
    pids = {host: int(result["tunnel"]["pid"]) for host, result in declared.items()}
    ports = {host: int(result["tunnel"]["port"]) for host, result in declared.items()}
    assert len(set(ports.values())) == HOSTS and len(set(pids.values())) == HOSTS

    # While the job ran, the state lived under the fresh HOME: one state file and one control socket per tunnel.
    listed = events_of(runner, "runner_on_ok", "List the state directory")["localhost"]
    names = sorted(os.path.basename(entry["path"]) for entry in listed["files"])
    assert names == sorted([f"{host}.json" for host in hosts] + [f"{host}.sock" for host in hosts])
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert state_dir.stat().st_uid == os.getuid()

    # lifetime=play: the owner was the job's ansible-playbook process; once it exited, every tunnel stopped itself.
    assert wait_until(lambda: not any(alive(pid) for pid in pids.values()), 15), [pid for pid in pids.values() if alive(pid)]
    assert wait_until(lambda: not any(state_dir.glob("*.json")) and not any(state_dir.glob("*.sock")), 5), sorted(p.name for p in state_dir.iterdir())
    assert holders_of(state_dir) == []
    assert listening_on(list(ports.values())) == []
    assert wait_until(lambda: established_to(endpoints) == [], 10), established_to(endpoints)
    assert wait_until(lambda: all(site.sshd.child_pids() == [] for site in sites), 10)
    # A tunnel that ends with its play leaves nothing: no state file, no socket, no log.
    assert sorted(path.name for path in state_dir.iterdir()) == []
    for port in list(ports.values())[:3]:
        with pytest.raises(OSError):
            fetch_marker(port, timeout=2)
    print(f"\nansible-runner: {HOSTS} hosts up, verified and gone with the job in {elapsed:.1f} s (forks 50)")
