# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Faults in the lab: black hole, frozen and restarted sshd, reload, killed tunnel and Ansible, held remote port, dead destination."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import typing as t
from pathlib import Path

import pytest
from engine_helpers import LoopbackServer, echo_handler, wait_until
from helpers import proc_state, read_reply, record, spawn_tunnel, stop_all, stream_chunks
from topology import Lab, connect_in

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import TunnelError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.control import KILL_GRACE, TunnelHandle

pytestmark = pytest.mark.needs_root

KEEPALIVE = 1
COUNT_MAX = 3
BUDGET = KEEPALIVE * COUNT_MAX + KEEPALIVE + 1  # liveness budget plus one interval and scheduling slack
STOP_DEADLINE = 2
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def state_dir(tmp_path: Path) -> t.Iterator[str]:
    path = str(tmp_path / "state")
    yield path
    stop_all(path)


def _local(lab: Lab, name: str, **extra: t.Any) -> dict[str, t.Any]:
    return lab.params(name, local_forwards=[f"0:{lab.db}:{lab.db_echo_port}"], **extra)


def _detect_and_stop(handle: TunnelHandle, fault: str) -> None:
    started = time.monotonic()

    def noticed() -> bool:
        # When only the session is frozen, the listener still answers: the tunnel may be "up" again on a new
        # connection before a poll sees "reconnecting". The recorded loss is what proves the detection.
        report = handle.inspect()
        return report["status"] in ("reconnecting", "down") or "keepalive" in ((report.get("last_error") or {}).get("message") or "")

    assert wait_until(noticed, BUDGET + 2), handle.inspect()
    detected = time.monotonic() - started
    report = handle.inspect()
    assert "keepalive" in (report["last_error"] or {}).get("message", ""), report["last_error"]
    started = time.monotonic()
    assert handle.stop(deadline=STOP_DEADLINE) is True
    stopped = time.monotonic() - started
    assert stopped <= STOP_DEADLINE + KILL_GRACE + 1, f"teardown took {stopped:.1f} s"
    assert TunnelHandle(handle.paths.dir, handle.name).inspect()["status"] == "absent"
    assert detected <= BUDGET, f"{fault}: reported after {detected:.1f} s, budget {BUDGET} s"
    record("faults", **{fault: {"detected_s": round(detected, 2), "budget_s": BUDGET, "teardown_s": round(stopped, 2), "stop_deadline_s": STOP_DEADLINE}})


def test_blackholed_bastion_is_reported_and_teardown_meets_its_deadline(lab: Lab, state_dir: str) -> None:
    status, handle = spawn_tunnel(_local(lab, "blackhole"), state_dir)
    pid = int(status["pid"])
    lab.blackhole_bastion()
    try:
        _detect_and_stop(handle, "blackhole")
    finally:
        lab.heal_bastion()
    assert wait_until(lambda: proc_state(pid) in ("", "Z"), 5)


def test_frozen_sshd_is_reported_and_teardown_meets_its_deadline(lab: Lab, state_dir: str) -> None:
    sshd = lab.bastion_sshd
    before = set(sshd.child_pids())
    handle = spawn_tunnel(_local(lab, "frozen"), state_dir)[1]
    frozen = _session_processes(sshd, before)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        _detect_and_stop(handle, "sigstop")
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def _session_processes(sshd: t.Any, before: set[int]) -> list[int]:
    """The new session's processes once authenticated (sshd titles a pre-auth child ``[net]`` or ``[accepted]``)."""

    def settled() -> list[int]:
        new = sorted(set(sshd.child_pids()) - before)
        titles = []
        for pid in new:
            with contextlib.suppress(OSError):
                titles.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        return new if new and not any(b"[" in title for title in titles) else []

    assert wait_until(lambda: bool(settled()), 10), sorted(set(sshd.child_pids()) - before)
    return settled()


def test_channel_open_answered_after_connect_timeout_still_forwards(lab: Lab, state_dir: str) -> None:
    """ssh waits for the server's answer to a channel open, and so does a forward: connect_timeout bounds the connect to
    the server, not a busy server's answer (a burst of 1000 opens outlasted it and reset the last clients)."""
    sshd = lab.bastion_sshd
    before = set(sshd.child_pids())
    connect_timeout = 2
    # Keepalives far apart, so that only the open is late, not the liveness check.
    status, handle = spawn_tunnel(_local(lab, "late-open", connect_timeout=connect_timeout, keepalive_interval=60), state_dir)
    port = status["forwards"][0]["bound_port"]
    frozen = _session_processes(sshd, before)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        client = socket.create_connection(("127.0.0.1", port), timeout=30)
        client.sendall(b"answered late")
        client.shutdown(socket.SHUT_WR)
        # The stimulus, not a wait for a condition: the server stays silent for longer than connect_timeout.
        time.sleep(connect_timeout + 2)
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    with client:
        assert read_reply(client) == b"answered late"
    forward = handle.inspect()["forwards"][0]
    assert forward["failures"] == 0, forward


def test_restarted_sshd_is_back_within_backoff_and_counted(lab: Lab, state_dir: str) -> None:
    status, handle = spawn_tunnel(_local(lab, "restart"), state_dir)
    port = status["forwards"][0]["bound_port"]
    lab.bastion_sshd.restart()
    started = time.monotonic()
    # backoff starts at 1 s and doubles; the first retry after the loss must succeed: budget = detection + 1 s + connect
    assert wait_until(lambda: handle.inspect()["reconnects"] >= 1 and handle.inspect()["status"] == "up", 15), handle.inspect()
    elapsed = time.monotonic() - started
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(b"after restart")
        client.shutdown(socket.SHUT_WR)
        assert read_reply(client) == b"after restart"
    assert handle.inspect()["reconnects"] == 1
    assert elapsed <= 10, f"back after {elapsed:.1f} s"
    record("faults", restart={"back_after_s": round(elapsed, 2), "reconnects": 1})


def test_reloaded_sshd_keeps_open_connections_flowing(lab: Lab, state_dir: str) -> None:
    status, handle = spawn_tunnel(_local(lab, "reload"), state_dir)
    port = status["forwards"][0]["bound_port"]
    client = socket.create_connection(("127.0.0.1", port), timeout=30)
    sent, got = hashlib.sha256(), hashlib.sha256()
    received = [0]

    def reader() -> None:
        while True:
            data = client.recv(1 << 16)
            if not data:
                return
            got.update(data)
            received[0] += len(data)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    total = 0
    reloaded = False
    with client:
        for index, part in enumerate(stream_chunks(64 * 1024 * 1024, seed=4)):
            client.sendall(part)
            sent.update(part)
            total += len(part)
            if index == 16:
                reloaded = _reload(lab)
            if index >= 16:
                time.sleep(0.005)  # keep data flowing across the reload
        client.shutdown(socket.SHUT_WR)
        thread.join(60)
    assert reloaded and not thread.is_alive()
    assert received[0] == total and got.hexdigest() == sent.hexdigest()
    report = handle.inspect()
    assert report["reconnects"] == 0 and report["status"] == "up"
    record("faults", sighup={"bytes_through_reload": total, "sha256_equal": True, "reconnects": 0})


def test_killed_tunnel_is_stale_and_present_repairs_it(lab: Lab, state_dir: str, tmp_path: Path, ansible_playbook: t.Any) -> None:
    status, handle = spawn_tunnel(_local(lab, "killed"), state_dir)
    os.kill(int(status["pid"]), signal.SIGKILL)
    assert wait_until(lambda: proc_state(int(status["pid"])) in ("", "Z"), 5)
    play = _play(
        tmp_path,
        lab,
        state_dir,
        """\
        - burrow.ssh.tunnel_info:
            name: killed
            state_dir: "{{ state_dir }}"
          register: info
        - burrow.ssh.tunnel:
            <<: *bastion
            name: killed
            local_forwards: ["{{ forward }}"]
          register: repaired
        - ansible.builtin.copy:
            content: "{{ {'info': info, 'repaired': repaired} | to_json }}"
            dest: "{{ out }}"
            mode: "0600"
    """,
    )
    result = ansible_playbook(play, _inventory(tmp_path), _vars(lab, state_dir, tmp_path, forward=f"127.0.0.1:0:{lab.db}:{lab.db_echo_port}"))
    assert result.returncode == 0, _failure(result)
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["info"]["tunnels"][0]["status"] == "stale"
    assert out["repaired"]["changed"] is True and out["repaired"]["action"] == "repaired"
    assert out["repaired"]["tunnel"]["status"] == "up"
    assert handle.__class__(state_dir, "killed").inspect(probe=True)["probe"][0]["ok"] is True


def test_ansible_killed_mid_task_leaves_an_orphan_the_next_run_cleans(lab: Lab, state_dir: str, tmp_path: Path, ansible_playbook: t.Any) -> None:
    play = _play(
        tmp_path,
        lab,
        state_dir,
        """\
        - burrow.ssh.tunnel:
            <<: *bastion
            name: orphan
            local_forwards: ["{{ forward }}"]
        - ansible.builtin.command: sleep 1207
    """,
    )
    argv, env, vars_file = _playbook_command(play, tmp_path, _vars(lab, state_dir, tmp_path, forward=f"127.0.0.1:0:{lab.db}:{lab.db_echo_port}"))
    stale = set(_sleepers())
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: proc.poll() is not None or bool(set(_sleepers()) - stale), 90)
        assert proc.poll() is None, f"the playbook ended before its sleep task: {proc.stdout.read().decode()[-3000:] if proc.stdout else ''}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # ansible-playbook, its workers and the task, like the OOM killer or a kill -9 of the run
        for pid in set(_sleepers()) - stale:
            os.kill(pid, signal.SIGKILL)
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
        vars_file.unlink()
    orphan = TunnelHandle(state_dir, "orphan")
    pid = orphan.pid
    assert pid is not None and orphan.process_alive(), "the tunnel outlived the killed run"
    play = _play(
        tmp_path,
        lab,
        state_dir,
        """\
        - burrow.ssh.tunnel_info:
            state_dir: "{{ state_dir }}"
          register: found
        - burrow.ssh.tunnel:
            name: "*"
            state: absent
            state_dir: "{{ state_dir }}"
          register: cleaned
        - ansible.builtin.copy:
            content: "{{ {'found': found, 'cleaned': cleaned} | to_json }}"
            dest: "{{ out }}"
            mode: "0600"
    """,
        "clean.yml",
    )
    result = ansible_playbook(play, _inventory(tmp_path), _vars(lab, state_dir, tmp_path, forward=""))
    assert result.returncode == 0, _failure(result)
    out = json.loads((tmp_path / "out.json").read_text())
    assert [(tunnel["name"], tunnel.get("pid")) for tunnel in out["found"]["tunnels"]] == [("orphan", pid)]
    assert out["cleaned"]["changed"] is True and out["cleaned"]["tunnel"]["removed"] == ["orphan"]
    assert wait_until(lambda: proc_state(pid) in ("", "Z"), 5)
    assert os.listdir(state_dir) == []


def test_remote_port_held_by_a_dead_session_is_an_error_not_a_success(lab: Lab, state_dir: str) -> None:
    with LoopbackServer(echo_handler) as echo:
        port = _free_port_in(lab)
        params = lab.params("held", remote_forwards=[f"127.0.0.1:{port}:127.0.0.1:{echo.port}"])
        status = spawn_tunnel(params, state_dir)[0]
        # The old session cannot say goodbye: its TCP connection is black-holed, then the process dies (kill -9).
        lab.blackhole_bastion(controller_port=_ssh_source_port(int(status["pid"]), lab))
        try:
            os.kill(int(status["pid"]), signal.SIGKILL)
            assert wait_until(lambda: proc_state(int(status["pid"])) in ("", "Z"), 5)
            TunnelHandle(state_dir, "held").stop(deadline=1)
            started = time.monotonic()
            with pytest.raises(TunnelError) as info:
                spawn_tunnel(params, state_dir)
            elapsed = time.monotonic() - started
        finally:
            lab.heal_bastion()
        message = str(info.value)
        assert str(port) in message and "refused remote forward" in message, message
        assert elapsed < 20
        assert os.listdir(state_dir) == [], "a failed start leaves no state behind"
        record("faults", held_remote_port={"error": message[:200], "seconds": round(elapsed, 2)})
        # The same re-run after a clean kill -9 (the server sees the FIN): success only with a working listener.
        lab.bastion_sshd.restart()  # drops the stuck session that held the port
        fresh = lab.params("held2", remote_forwards=[f"127.0.0.1:{port}:127.0.0.1:{echo.port}"])
        status = spawn_tunnel(fresh, state_dir)[0]
        os.kill(int(status["pid"]), signal.SIGKILL)
        TunnelHandle(state_dir, "held2").stop(deadline=1)
        try:
            spawn_tunnel(fresh, state_dir)
        except TunnelError as exc:
            assert str(port) in str(exc), str(exc)
        else:
            sock = connect_in(lab.bastion_ns, ("127.0.0.1", port))
            sock.sendall(b"listener")
            sock.shutdown(socket.SHUT_WR)
            assert read_reply(sock) == b"listener", "success was reported, so the listener must work"
            sock.close()


def test_destination_down_behind_a_healthy_tunnel(lab: Lab, state_dir: str) -> None:
    closed = _free_port_in(lab, lab.db_ns, lab.db)
    handle = spawn_tunnel(lab.params("deaddest", local_forwards=[f"0:{lab.db}:{closed}"]), state_dir)[1]
    report = handle.inspect(probe=True)
    assert report["status"] == "up"
    assert report["probe"][0]["ok"] is False and "connect failed" in report["probe"][0]["error"], report["probe"]
    assert handle.inspect()["status"] == "up", "the tunnel stays up"
    record("faults", destination_down={"tunnel": "up", "probe": report["probe"][0]["error"][:160]})


# -- helpers -------------------------------------------------------------------------------------------------


def _free_port_in(lab: Lab, netns: str | None = None, host: str = "127.0.0.1") -> int:
    from topology import in_netns

    def pick() -> int:
        with socket.socket() as sock:
            sock.bind((host, 0))
            return int(sock.getsockname()[1])

    return int(in_netns(netns or lab.bastion_ns, pick))


def _failure(result: t.Any) -> str:
    messages = []
    for play in (result.json or {}).get("plays", []):
        for task in play.get("tasks", []):
            for host_result in task.get("hosts", {}).values():
                if host_result.get("failed"):
                    messages.append(f"{task.get('task', {}).get('name')}: {host_result.get('msg')}")
    return "; ".join(messages) or result.stdout[-3000:] + result.stderr[-2000:]


def _reload(lab: Lab) -> bool:
    """SIGHUP the bastion sshd and wait until it logs that it listens again (sshd re-executes itself)."""
    log = lab.bastion_sshd.log_path
    before = log.read_text(errors="replace").count("Server listening on")
    os.kill(lab.bastion_sshd.pid, signal.SIGHUP)
    return wait_until(lambda: log.read_text(errors="replace").count("Server listening on") > before, 10)


def _ssh_source_port(pid: int, lab: Lab) -> int:
    """The controller-side port of the tunnel process's SSH connection to the bastion (from ss)."""
    lines = subprocess.run(["ss", "-Htnp", "dst", f"{lab.bastion}:{lab.bastion_sshd.port}"], capture_output=True, text=True, timeout=10, check=True).stdout
    for line in lines.splitlines():
        if f"pid={pid}," in line:
            return int(line.split()[3].rsplit(":", 1)[1])
    raise AssertionError(f"no SSH connection of pid {pid} in: {lines}")


def _sleepers() -> list[int]:
    """The playbook's `sleep 1207` task processes (found by their exact argv)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/cmdline").read_bytes() == b"sleep\x001207\x00":
                    found.append(int(entry))
    return found


def _inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yml"
    path.write_text(f"all:\n  hosts:\n    localhost:\n      ansible_connection: local\n      ansible_python_interpreter: {sys.executable}\n")
    return path


def _vars(lab: Lab, state_dir: str, tmp_path: Path, **extra: t.Any) -> dict[str, t.Any]:
    return {"bastion": lab.bastion_hop(), "state_dir": state_dir, "out": str(tmp_path / "out.json"), **extra}


def _play(tmp_path: Path, lab: Lab, state_dir: str, tasks: str, name: str = "play.yml") -> Path:
    del lab, state_dir
    header = textwrap.dedent(
        """\
        - hosts: localhost
          gather_facts: false
          vars:
            conn: &bastion
              host: "{{ bastion.host }}"
              port: "{{ bastion.port | int }}"
              user: "{{ bastion.user }}"
              private_key_file: "{{ bastion.private_key_file }}"
              known_hosts_file: "{{ bastion.known_hosts_file }}"
              use_agent: false
              state_dir: "{{ state_dir }}"
          tasks:
        """
    )
    play = tmp_path / name
    play.write_text(header + textwrap.indent(textwrap.dedent(tasks), "    "))
    return play


def _playbook_command(play: Path, tmp_path: Path, variables: dict[str, t.Any]) -> tuple[list[str], dict[str, str], Path]:
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(variables))
    vars_file.chmod(0o600)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".build" / "collections"), ANSIBLE_RETRY_FILES_ENABLED="0")
    return [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(_inventory(tmp_path)), "-e", f"@{vars_file}", str(play)], env, vars_file
