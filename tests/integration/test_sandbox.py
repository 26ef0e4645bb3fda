# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The sandbox itself: real ssh client against its sshd, PostgreSQL, echo, HTTP, reconfigure/restart/rekey, cleanup."""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import socket
import subprocess
import sys
import threading
import time
import typing as t
import urllib.error
import urllib.request

import pytest
import yaml
from sandbox import Sandbox, Sshd, pid_alive, port_open

SANDBOX_PY = pathlib.Path(__file__).resolve().parent.parent / "sandbox" / "sandbox.py"


def ssh_argv(sshd: Sshd, *command: str, known_hosts: pathlib.Path | None = None, extra: t.Sequence[str] = ()) -> list[str]:
    """The real OpenSSH client with strict host key checking against the sandbox's known_hosts."""
    return [
        "ssh",
        "-F",
        "/dev/null",
        "-p",
        str(sshd.port),
        "-i",
        str(sshd.client_key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts or sshd.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        *extra,
        f"{sshd.user}@{sshd.host}",
        *command,
    ]


def run_ssh(sshd: Sshd, *command: str, stdin: bytes = b"", **kwargs: t.Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(ssh_argv(sshd, *command, **kwargs), input=stdin, capture_output=True, timeout=30, check=False)


def test_sshd_accepts_the_key_with_strict_known_hosts(sshd: Sshd) -> None:
    result = run_ssh(sshd, "id", "-un")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == sshd.user
    assert sshd.known_hosts.read_text().strip() == f"[{sshd.host}]:{sshd.port} {sshd.host_pubkey_line}"
    assert sshd.host_key_fingerprint.startswith("SHA256:")
    assert oct(sshd.client_key.stat().st_mode & 0o777) == "0o600"
    assert sshd.client_key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert sshd.client_pubkey.startswith("ssh-ed25519 ")
    assert pid_alive(sshd.pid)


def test_postgres_answers_three_rows(postgres: t.Any) -> None:
    assert postgres.query("select count(*) from inventory") == "3"
    assert postgres.query("select id, item from inventory order by id").splitlines() == ["1|bastion", "2|tunnel", "3|socks"]
    assert postgres.host == "127.0.0.1"
    assert postgres.password not in pathlib.Path(f"/proc/{postgres.pid}/cmdline").read_text()


def test_postgres_rejects_a_wrong_password(postgres: t.Any) -> None:
    env = dict(os.environ, PGPASSWORD="not-the-password", PGCONNECT_TIMEOUT="5")
    argv = [str(postgres.bindir / "psql"), "-X", "-At", "-h", postgres.host, "-p", str(postgres.port), "-U", postgres.user, "-d", postgres.database]
    result = subprocess.run([*argv, "-c", "select 1"], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode != 0
    assert "password authentication failed" in result.stderr


def test_echo_echoes_then_half_closes(echo_server: t.Any) -> None:
    data = secrets.token_bytes(3 * 1024 * 1024 + 17)
    with socket.create_connection((echo_server.host, echo_server.port), timeout=10) as conn:

        def send() -> None:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)  # half-close: we stop writing but keep reading

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        received = bytearray()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            part = conn.recv(256 * 1024)
            if not part:
                break  # the server shut down its write side after our EOF
            received += part
        sender.join(5)
    assert bytes(received) == data


def test_http_serves_the_body(http_server: t.Any, sandbox_session: Sandbox) -> None:
    with urllib.request.urlopen(f"http://{http_server.host}:{http_server.port}/", timeout=10) as response:
        assert response.status == 200
        assert response.read() == sandbox_session.http_body == b"burrow sandbox http\n"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://{http_server.host}:{http_server.port}/missing", timeout=10)
    assert info.value.code == 404


def test_inventory_holds_what_was_started(sandbox_session: Sandbox, sandbox_inventory: pathlib.Path) -> None:
    inventory = yaml.safe_load(sandbox_inventory.read_text())
    sshd = sandbox_session.sshd
    assert sshd is not None
    host = inventory["all"]["hosts"]["sandbox_sshd"]
    assert host["ansible_port"] == sshd.port
    assert host["ansible_host"] == "127.0.0.1"
    assert host["burrow_host_key_fingerprint"] == sshd.host_key_fingerprint
    assert inventory["all"]["hosts"]["localhost"] == {"ansible_connection": "local"}
    values = inventory["all"]["vars"]
    assert values["sandbox_echo_port"] == sandbox_session.echo.port  # type: ignore[union-attr]
    assert values["sandbox_http_body"] == "burrow sandbox http\n"
    assert values["sandbox_dir"] == str(sandbox_session.root)
    assert values["ansible_python_interpreter"] == sys.executable
    if sandbox_session.postgres is not None:
        assert values["sandbox_pg_password"] == sandbox_session.postgres.password
    assert oct(sandbox_inventory.stat().st_mode & 0o777) == "0o600"


def test_ssh_config_works_with_the_real_client(sshd: Sshd, sandbox_session: Sandbox) -> None:
    config = sandbox_session.ssh_config_path
    result = subprocess.run(["ssh", "-F", str(config), "sandbox-sshd", "echo", "via-config"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "via-config"


def test_reconfigure_applies_allow_tcp_forwarding_no(sandbox: Sandbox) -> None:
    sshd = sandbox.start_sshd()
    echo = sandbox.start_echo()
    before = run_ssh(sshd, stdin=b"through -W\n", extra=["-W", f"127.0.0.1:{echo.port}"])
    assert before.returncode == 0, before.stderr
    assert before.stdout == b"through -W\n"
    pid = sshd.pid
    sshd.reconfigure("AllowTcpForwarding no\n")
    effective = subprocess.run(["/usr/sbin/sshd", "-T", "-f", str(sshd.config_path)], capture_output=True, text=True, timeout=30, check=True).stdout
    assert "allowtcpforwarding no" in effective.splitlines()
    after = run_ssh(sshd, stdin=b"through -W\n", extra=["-W", f"127.0.0.1:{echo.port}"])
    assert after.returncode != 0
    assert b"prohibited" in after.stderr
    assert sshd.pid == pid  # SIGHUP: same listener process, re-executed
    assert run_ssh(sshd, "true").returncode == 0


def test_reconfigure_rejects_an_invalid_config_and_keeps_the_old_one(sandbox: Sandbox) -> None:
    sshd = sandbox.start_sshd()
    old = sshd.config_path.read_text()
    with pytest.raises(RuntimeError, match="rejected"):
        sshd.reconfigure("NoSuchKeyword yes\n")
    assert sshd.config_path.read_text() == old
    assert run_ssh(sshd, "true").returncode == 0


def test_restart_keeps_the_port(sandbox: Sandbox) -> None:
    sshd = sandbox.start_sshd()
    port, pid = sshd.port, sshd.pid
    sshd.restart()
    assert sshd.port == port
    assert sshd.pid != pid
    assert not pid_alive(pid)
    result = run_ssh(sshd, "true")
    assert result.returncode == 0, result.stderr


def test_regenerate_host_key_makes_strict_ssh_fail(sandbox: Sandbox, tmp_path: pathlib.Path) -> None:
    sshd = sandbox.start_sshd()
    old_fingerprint, known = sshd.host_key_fingerprint, sshd.known_hosts.read_text()
    sshd.regenerate_host_key()
    assert sshd.host_key_fingerprint != old_fingerprint
    assert sshd.known_hosts.read_text() == known
    refused = run_ssh(sshd, "true")
    assert refused.returncode == 255
    assert b"REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr
    fresh = tmp_path / "known_hosts"
    fresh.write_text(f"[{sshd.host}]:{sshd.port} {sshd.host_pubkey_line}\n")
    assert run_ssh(sshd, "true", known_hosts=fresh).returncode == 0


def test_authorized_key_options_are_applied(sandbox: Sandbox) -> None:
    echo = sandbox.start_echo()
    sshd = sandbox.start_sshd(authorized_key_options=f'restrict,port-forwarding,permitopen="127.0.0.1:{echo.port}"')
    allowed = run_ssh(sshd, stdin=b"ok", extra=["-N", "-W", f"127.0.0.1:{echo.port}"])
    assert allowed.stdout == b"ok", allowed.stderr
    denied = run_ssh(sshd, stdin=b"ok", extra=["-W", f"127.0.0.1:{echo.port + 1 if echo.port < 65535 else 1}"])
    assert denied.returncode != 0
    assert b"prohibited" in denied.stderr


def test_a_crash_inside_the_with_block_leaks_nothing() -> None:
    seen: dict[str, t.Any] = {}
    client: subprocess.Popen[bytes] | None = None
    try:
        with pytest.raises(RuntimeError, match="boom"):
            with Sandbox() as box:
                sshd = box.start_sshd()
                box.start_echo()
                box.start_http()
                box.start_postgres()
                # an open connection: sshd has per-connection children that must go too
                client = subprocess.Popen(ssh_argv(sshd, "sleep", "60"), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                deadline = time.monotonic() + 10
                while not sshd.child_pids() and time.monotonic() < deadline:
                    time.sleep(0.05)
                seen.update(
                    root=box.root,
                    port=sshd.port,
                    recorded=box.recorded_pids(),
                    children=sshd.child_pids(),
                    pids_file=box.pids_file.read_text(),
                    pg_children=[],
                    box=box,
                )
                if box.postgres is not None:
                    from sandbox import descendants

                    seen["pg_children"] = descendants(box.postgres.pid)
                raise RuntimeError("boom")
    finally:
        if client is not None:
            client.kill()
            client.wait(10)
    assert seen["children"], "an open ssh session should show per-connection sshd processes"
    assert all(f"{pid} " in seen["pids_file"] for pid in seen["recorded"])
    assert len(seen["recorded"]) >= 3
    leftovers = [pid for pid in [*seen["recorded"], *seen["children"], *seen["pg_children"]] if pid_alive(pid)]
    assert leftovers == []
    assert seen["box"].alive_recorded() == []
    assert not port_open("127.0.0.1", seen["port"])
    assert not seen["root"].exists()


def test_a_failed_start_stops_what_was_already_started() -> None:
    with Sandbox() as box:
        echo = box.start_echo()
        with pytest.raises(RuntimeError, match="rejected"):
            box.start_sshd(extra_config="NoSuchKeyword yes\n")
        assert echo.pid in box.alive_recorded()
        root = box.root
    assert not pid_alive(echo.pid)
    assert not root.exists()


def test_stop_is_idempotent_and_a_given_dir_keeps_foreign_files(tmp_path: pathlib.Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    box = Sandbox(root=str(tmp_path))
    sshd = box.start_sshd()
    box.write_inventory(tmp_path / "inventory.yml")
    box.stop()
    box.stop()
    assert not pid_alive(sshd.pid)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


@pytest.mark.slow
def test_cli_run_exports_the_inventory_and_returns_the_exit_code(tmp_path: pathlib.Path) -> None:
    probe = (
        "import json, os, sys, yaml;"
        "inv = yaml.safe_load(open(sys.argv[1]));"
        "print(json.dumps({'arg': sys.argv[1], 'env': os.environ['BURROW_SANDBOX_INVENTORY'], 'dir': os.environ['BURROW_SANDBOX_DIR'],"
        " 'port': inv['all']['hosts']['sandbox_sshd']['ansible_port'], 'pg': 'sandbox_pg_port' in inv['all']['vars']}));"
        "sys.exit(7)"
    )
    cmd = [sys.executable, str(SANDBOX_PY), "run", "--no-postgres", "--workdir", str(tmp_path), "--", sys.executable, "-c", probe, "{inventory}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 7, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["arg"] == seen["env"] == str(tmp_path / "inventory.yml")
    assert seen["pg"] is False
    assert "sshd sshd: " in result.stderr
    assert not pathlib.Path(seen["dir"]).exists()
    assert not port_open("127.0.0.1", seen["port"])
    assert not (tmp_path / "inventory.yml").exists()


@pytest.mark.slow
def test_cli_run_cleans_up_on_sigterm() -> None:
    cmd = [
        sys.executable,
        str(SANDBOX_PY),
        "run",
        "--no-postgres",
        "--",
        sys.executable,
        "-c",
        "import os,time; print(os.environ['BURROW_SANDBOX_DIR'], flush=True); time.sleep(60)",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        root = pathlib.Path(proc.stdout.readline().strip())
        assert root.exists()
        pids = [int(line.split()[0]) for line in (root / "pids").read_text().splitlines() if not line.startswith("owner")]
        proc.terminate()
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert rc == 128 + 15
    assert pids
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert not root.exists()


@pytest.mark.slow
def test_cli_check_passes() -> None:
    result = subprocess.run([sys.executable, str(SANDBOX_PY), "check"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "alive after stop: []; dir exists: False" in result.stderr
    assert "[sandbox] OK" in result.stderr


@pytest.mark.slow
def test_ansible_playbook_helper_reaches_the_sandbox(ansible_playbook: t.Any, sandbox_inventory: pathlib.Path, tmp_path: pathlib.Path) -> None:
    playbook = tmp_path / "probe.yml"
    playbook.write_text(
        "- hosts: sandbox_sshd\n"
        "  gather_facts: false\n"
        "  vars:\n"
        '    ansible_ssh_common_args: "-o UserKnownHostsFile={{ burrow_known_hosts_file }} -o StrictHostKeyChecking=yes"\n'
        "  tasks:\n"
        "    - name: Run a command over Ansible's ssh connection\n"
        "      ansible.builtin.command: echo {{ marker }}\n"
        "      register: out\n"
        "      changed_when: false\n"
    )
    result = ansible_playbook(playbook, sandbox_inventory, {"marker": "burrow-marker"}, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "burrow-marker" not in " ".join(result.args)  # extra vars travel in a file, not argv
    task = result.json["plays"][0]["tasks"][0]
    assert task["hosts"]["sandbox_sshd"]["stdout"] == "burrow-marker"
    assert result.json["stats"]["sandbox_sshd"]["ok"] == 1


@pytest.mark.needs_root
def test_sshd_in_a_network_namespace(sandbox: Sandbox) -> None:
    netns = f"burrow-sb-{secrets.token_hex(3)}"
    address = f"10.203.{secrets.randbelow(200) + 20}.1"
    subprocess.run(["ip", "netns", "add", netns], check=True, timeout=30)
    try:
        subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"], check=True, timeout=30)
        subprocess.run(["ip", "netns", "exec", netns, "ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True, timeout=30)
        sshd = sandbox.start_sshd(netns=netns, listen=address, name="ns")
        assert sshd.known_hosts.read_text().startswith(f"[{address}]:{sshd.port} ")
        result = subprocess.run(["ip", "netns", "exec", netns, *ssh_argv(sshd, "true")], capture_output=True, timeout=30, check=False)
        assert result.returncode == 0, result.stderr
        assert not port_open(address, sshd.port, timeout=0.3)  # not reachable from the root namespace
        sandbox.stop()
        assert not pid_alive(sshd.pid)
    finally:
        sandbox.stop()
        subprocess.run(["ip", "netns", "del", netns], check=False, timeout=30)


def test_cleanup_removes_a_sandbox_whose_owner_was_killed(tmp_path: pathlib.Path) -> None:
    script = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from sandbox import Sandbox;"
        "box = Sandbox(); sshd = box.start_sshd(); echo = box.start_echo();"
        "print(box.root, sshd.pid, echo.pid, flush=True); time.sleep(60)"
    )
    owner = subprocess.Popen([sys.executable, "-c", script, str(SANDBOX_PY.parent)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        root_text, *pid_texts = owner.stdout.readline().split()
        owner.kill()  # no atexit, no signal handler: the children are orphaned
        owner.wait(10)
        root, pids = pathlib.Path(root_text), [int(p) for p in pid_texts]
        assert all(pid_alive(pid) for pid in pids)
        result = subprocess.run([sys.executable, str(SANDBOX_PY), "cleanup"], capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert f"removed orphaned sandbox {root}" in result.stderr
        assert [pid for pid in pids if pid_alive(pid)] == []
        assert not root.exists()
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)
