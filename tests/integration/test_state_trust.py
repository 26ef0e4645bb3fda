# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""State directories and entries that are not this user's own are refused on every read (issue 16, item 1).

The attacker is another local user (uid 65534 here) who can write to the state directory: a planted state file names
a live process of the victim, a planted control socket answers with a forged status. Run as root, like the attack.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import typing as t
from pathlib import Path

import pytest
from engine_helpers import wait_until
from test_engine import tunnel_for
from test_tunnel_module import write_play

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel import manage
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import UntrustedState
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process import protocol
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.control import TunnelHandle, list_handles
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import process_start_time
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.spawn import spawn

ATTACKER = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plants files as another uid: needs root")


@pytest.fixture
def victim() -> t.Iterator[subprocess.Popen]:
    """A live process of this user that a planted state file names."""
    process = subprocess.Popen(["sleep", "600"])
    assert wait_until(lambda: process_start_time(process.pid) is not None, 5)
    yield process
    process.kill()
    process.wait()


def plant_state(directory: Path, name: str, pid: int, uid: int = ATTACKER) -> Path:
    state = directory / f"{name}.json"
    spec = {"name": name, "hops": [], "forwards": []}
    state.write_text(json.dumps({"name": name, "pid": pid, "start_time": process_start_time(pid), "digest": "x", "spec": spec}))
    os.chmod(state, 0o600)
    os.chown(state, uid, uid)
    return state


def foreign_dir(tmp_path: Path) -> Path:
    """A state directory owned by the attacker, as XDG_RUNTIME_DIR after sudo -E, or a state_dir in /tmp."""
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    os.chown(directory, ATTACKER, ATTACKER)
    return directory


def test_foreign_state_dir_is_refused_and_the_named_process_survives(tmp_path: Path, victim: subprocess.Popen) -> None:
    directory = foreign_dir(tmp_path)
    plant_state(directory, "db", victim.pid)
    for attempt in (
        lambda: manage.ensure_absent("db", str(directory), check_mode=False, drain_timeout=1),
        lambda: manage.ensure_absent("*", str(directory), check_mode=False, drain_timeout=1),
        lambda: TunnelHandle(str(directory), "db").inspect(),
        lambda: list_handles(str(directory)),
    ):
        with pytest.raises(UntrustedState) as refused:
            attempt()
        assert str(directory) in str(refused.value) and f"uid {ATTACKER}" in str(refused.value)
        assert "state_dir" in str(refused.value), "the message says what to do"
    assert victim.poll() is None, "the planted pid was signalled"
    assert (directory / "db.json").exists(), "nothing of the attacker's directory is removed either"


def test_symlinked_or_loose_state_dir_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(UntrustedState, match="symbolic link"):
        TunnelHandle(str(link), "db")
    real.chmod(0o777)
    with pytest.raises(UntrustedState, match="mode 0777"):
        TunnelHandle(str(real), "db")


def test_planted_entries_in_an_own_dir_are_refused(tmp_path: Path, victim: subprocess.Popen) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    plant_state(directory, "db", victim.pid)
    with pytest.raises(UntrustedState, match=f"state file {directory}/db.json belongs to .*uid {ATTACKER}"):
        manage.ensure_absent("db", str(directory), check_mode=False, drain_timeout=1)
    (directory / "db.json").unlink()
    (directory / "db.json").symlink_to("/etc/passwd")
    with pytest.raises(UntrustedState, match="symbolic link"):
        TunnelHandle(str(directory), "db")
    (directory / "db.json").unlink()
    lone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lone.bind(str(directory / "db.sock"))
    lone.close()
    os.chown(directory / "db.sock", ATTACKER, ATTACKER)
    with pytest.raises(UntrustedState, match=f"control socket {directory}/db.sock belongs to .*uid {ATTACKER}"):
        TunnelHandle(str(directory), "db").inspect()
    assert victim.poll() is None


def test_own_state_file_naming_another_users_process_is_not_signalled(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    other = subprocess.Popen(["sleep", "600"], user=ATTACKER)
    try:
        assert wait_until(lambda: process_start_time(other.pid) is not None, 5)
        plant_state(directory, "db", other.pid, uid=os.getuid())
        report = TunnelHandle(str(directory), "db").inspect()
        assert report["status"] == "stale"
        manage.ensure_absent("db", str(directory), check_mode=False, drain_timeout=0.5)
        assert other.poll() is None, "another user's process was signalled"
    finally:
        other.kill()
        other.wait()


def test_socket_served_by_another_uid_is_never_sent_a_request(tmp_path: Path) -> None:
    """Bound as this user (the file passes the owner check), served by the attacker: SO_PEERCRED refuses it."""
    path = str(tmp_path / "fake.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o600)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the attacker's process
        try:
            os.setgid(ATTACKER)
            os.setuid(ATTACKER)
            server.listen(4)
            while True:  # the readiness probe connects and sends nothing; answer the first real request, forged
                conn = server.accept()[0]
                received = conn.recv(65536)
                if received:
                    conn.sendall(b'{"ok": true, "status": {"status": "up"}}\n')
                    conn.close()
                    break
                conn.close()
        finally:
            os._exit(0)
    server.close()
    try:
        assert wait_until(lambda: _listening(path), 5)
        with pytest.raises(UntrustedState, match=f"uid {ATTACKER}"):
            protocol.call(path, {"op": "status"}, 5, "tunnel fake")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _listening(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def test_own_tunnel_still_works_in_an_own_dir(sshd: t.Any, tmp_path: Path) -> None:
    state_dir = str(tmp_path / "state")
    spawn(tunnel_for(sshd, name="mine", dynamic_forwards=["127.0.0.1:0"]), state_dir)
    assert TunnelHandle(state_dir, "mine").inspect()["status"] == "up"
    assert manage.ensure_absent("mine", state_dir, check_mode=False, drain_timeout=1).changed
    assert os.listdir(state_dir) == []


def test_modules_refuse_a_foreign_state_dir_with_a_clear_message(
    ansible_playbook: t.Any, sandbox_session: t.Any, tmp_path: Path, victim: subprocess.Popen
) -> None:
    directory = foreign_dir(tmp_path)
    plant_state(directory, "db", victim.pid)
    tasks = """\
        - burrow.ssh.tunnel_info:
            name: db
            state_dir: "{{ state_dir }}"
          register: info
          ignore_errors: true
        - burrow.ssh.tunnel:
            name: db
            state: absent
            state_dir: "{{ state_dir }}"
          register: absent
          ignore_errors: true
        - burrow.ssh.tunnel:
            <<: *server
            name: db
            dynamic_forwards: ["127.0.0.1:0"]
          register: present
          ignore_errors: true
        - ansible.builtin.copy:
            content: "{{ [info, absent, present] | to_json }}"
            dest: "{{ out }}"
            mode: "0600"
    """
    out = tmp_path / "out.json"
    inventory = sandbox_session.write_inventory(tmp_path / "inventory.yml")
    try:
        result = ansible_playbook(write_play(tmp_path, tasks), inventory, {"state_dir": str(directory), "out": str(out)})
        assert result.returncode == 0, result.stdout[-4000:]
        for task in json.loads(out.read_text()):
            assert task["failed"], task
            assert "Module failed" not in task["msg"], task["msg"]  # ansible-core 2.19+ prefixes "Task failed: "
            assert "error" in task, f"not a clean refusal (the module raised): {task['msg']}"
            assert f"state directory {directory} belongs to" in task["msg"] and f"uid {ATTACKER}" in task["msg"], task["msg"]
            assert task["error"]["kind"] == "untrusted_state"
        assert victim.poll() is None, "state: absent signalled the planted pid"
    finally:
        _kill_tunnels_started_in(directory, spare=victim.pid)


def _kill_tunnels_started_in(directory: Path, spare: int) -> None:
    """When a refusal fails, the play starts a real tunnel in the directory: end it, so a failure leaves nothing."""
    for state in directory.glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            pid = int(json.loads(state.read_text())["pid"])
            if pid != spare and Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"burrow-tunnel"):
                os.kill(pid, signal.SIGKILL)
