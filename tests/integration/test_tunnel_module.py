# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""burrow.ssh.tunnel and tunnel_info through ansible-playbook, against the sandbox sshd and PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time
import typing as t
from pathlib import Path

import pytest
import yaml
from engine_helpers import wait_until

REPO = Path(__file__).resolve().parents[2]
TARGET = REPO / "tests" / "integration" / "targets" / "tunnel"


@pytest.fixture
def inventory(sandbox_session: t.Any, tmp_path: Path) -> Path:
    return sandbox_session.write_inventory(tmp_path / "inventory.yml")


@pytest.fixture
def state_dir(tmp_path: Path) -> t.Iterator[Path]:
    path = tmp_path / "state"
    yield path
    # Whatever a failed test left running is stopped here, by recorded pid.
    if path.is_dir():
        for state in path.glob("*.json"):
            with_pid = json.loads(state.read_text())
            try:
                os.kill(int(with_pid["pid"]), signal.SIGKILL)
            except (ProcessLookupError, KeyError, ValueError):
                pass


def write_play(tmp_path: Path, tasks: str, name: str = "play.yml", hosts: str = "localhost", extra: str = "") -> Path:
    play = tmp_path / name
    play.write_text(
        textwrap.dedent(
            f"""\
            - hosts: {hosts}
              gather_facts: false
              {extra}
              vars:
                server: &server
                  host: "{{{{ sandbox_sshd_host }}}}"
                  port: "{{{{ sandbox_sshd_port | int }}}}"
                  user: "{{{{ sandbox_sshd_user }}}}"
                  private_key_file: "{{{{ sandbox_client_key }}}}"
                  known_hosts_file: "{{{{ sandbox_known_hosts }}}}"
                  use_agent: false
                  state_dir: "{{{{ state_dir }}}}"
              tasks:
            """
        )
        + textwrap.indent(textwrap.dedent(tasks), "    ")
    )
    return play


def run(ansible_playbook: t.Any, play: Path, inventory: Path, state_dir: Path, **extra: t.Any) -> subprocess.CompletedProcess:
    variables = {"state_dir": str(state_dir), **extra.pop("extra_vars", {})}
    return ansible_playbook(play, inventory, variables, **extra)


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"stdout:\n{result.stdout[-6000:]}\nstderr:\n{result.stderr[-3000:]}"


def tunnel_pids(state_dir: Path) -> dict[str, int]:
    return {state.stem: int(json.loads(state.read_text())["pid"]) for state in state_dir.glob("*.json")} if state_dir.is_dir() else {}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_lifecycle_of_each_forward_kind(ansible_playbook: t.Any, inventory: Path, state_dir: Path) -> None:
    assert_ok(run(ansible_playbook, TARGET / "lifecycle.yml", inventory, state_dir))
    assert tunnel_pids(state_dir) == {}


def test_changed_forward_is_replaced_while_other_connections_survive(
    ansible_playbook: t.Any, inventory: Path, state_dir: Path, tmp_path: Path, sandbox_session: t.Any
) -> None:
    echo_port, http_port = sandbox_session.echo.port, sandbox_session.http.port
    tasks = """\
        - burrow.ssh.tunnel:
            <<: *server
            name: live
            local_forwards: "{{ forwards }}"
          register: result
        - ansible.builtin.copy:
            content: "{{ result | to_json }}"
            dest: "{{ state_dir }}/../result.json"
            mode: "0600"
    """
    play = write_play(tmp_path, tasks)
    first = [f"127.0.0.1:0:127.0.0.1:{echo_port}", f"127.0.0.1:0:127.0.0.1:{http_port}"]
    assert_ok(run(ansible_playbook, play, inventory, state_dir, extra_vars={"forwards": first}))
    created = json.loads((tmp_path / "result.json").read_text())
    echo_listen = created["tunnel"]["local_forwards"][0]["listen_port"]
    client = socket.create_connection(("127.0.0.1", echo_listen), timeout=10)
    client.sendall(b"before")
    assert client.recv(16) == b"before"

    second = [first[0], f"127.0.0.1:0:localhost:{http_port}"]
    assert_ok(run(ansible_playbook, play, inventory, state_dir, extra_vars={"forwards": second}))
    updated = json.loads((tmp_path / "result.json").read_text())
    assert updated["changed"] is True and updated["action"] == "updated"
    assert updated["tunnel"]["pid"] == created["tunnel"]["pid"]
    assert updated["tunnel"]["local_forwards"][0]["listen_port"] == echo_listen
    assert "localhost" in updated["diff"]["after"] and "localhost" not in updated["diff"]["before"]
    client.sendall(b"after")
    assert client.recv(16) == b"after", "the connection through the untouched forward survived"
    client.close()


def test_killed_tunnel_is_reported_stale_and_repaired(ansible_playbook: t.Any, inventory: Path, state_dir: Path, tmp_path: Path) -> None:
    tasks = """\
        - burrow.ssh.tunnel:
            <<: *server
            name: fragile
            dynamic_forwards: ["127.0.0.1:0"]
          register: created
    """
    assert_ok(run(ansible_playbook, write_play(tmp_path, tasks, "create.yml"), inventory, state_dir))
    pid = tunnel_pids(state_dir)["fragile"]
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not alive(pid), 5)
    check = """\
        - burrow.ssh.tunnel_info:
            name: fragile
            state_dir: "{{ state_dir }}"
          register: info
        - ansible.builtin.assert:
            that:
              - info.tunnels[0].status == 'stale'
              - info.tunnels[0].reason is search('gone')
        - burrow.ssh.tunnel:
            <<: *server
            name: fragile
            dynamic_forwards: ["127.0.0.1:0"]
          register: repaired
        - ansible.builtin.assert:
            that:
              - repaired is changed
              - repaired.action == 'repaired'
              - repaired.tunnel.status == 'up'
        - burrow.ssh.tunnel:
            name: fragile
            state: absent
            state_dir: "{{ state_dir }}"
    """
    assert_ok(run(ansible_playbook, write_play(tmp_path, check, "repair.yml"), inventory, state_dir))
    assert tunnel_pids(state_dir) == {}


@pytest.mark.parametrize("fail_play", [False, True], ids=["play-succeeds", "play-fails"])
def test_play_lifetime_ends_with_ansible_playbook(ansible_playbook: t.Any, inventory: Path, state_dir: Path, tmp_path: Path, fail_play: bool) -> None:
    tasks = """\
        - burrow.ssh.tunnel:
            <<: *server
            name: scoped
            local_forwards: ["127.0.0.1:0:127.0.0.1:{{ sandbox_echo_port }}"]
            lifetime: play
          register: scoped
        - ansible.builtin.copy:
            content: "{{ scoped.tunnel.pid }}"
            dest: "{{ state_dir }}/../scoped.pid"
            mode: "0600"
        - ansible.builtin.fail:
            msg: the play fails after opening the tunnel
          when: fail_play | bool
    """
    result = run(ansible_playbook, write_play(tmp_path, tasks), inventory, state_dir, extra_vars={"fail_play": fail_play})
    assert (result.returncode != 0) == fail_play, result.stdout[-3000:]
    pid = int((tmp_path / "scoped.pid").read_text())
    assert wait_until(lambda: not alive(pid), 10), "the tunnel must end when ansible-playbook exits"
    assert wait_until(lambda: tunnel_pids(state_dir) == {}, 5)


def test_ten_hosts_with_forks_get_their_own_ports(ansible_playbook: t.Any, inventory: Path, state_dir: Path, tmp_path: Path, sandbox_session: t.Any) -> None:
    combined = yaml.safe_load(inventory.read_text())
    children = combined["all"].get("children") or {}
    children["forks"] = {"hosts": {f"fork{index}": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable} for index in range(10)}}
    combined["all"]["children"] = children
    (tmp_path / "forks.yml").write_text(yaml.safe_dump(combined))
    tasks = """\
        - burrow.ssh.tunnel:
            <<: *server
            name: "fork-{{ inventory_hostname }}"
            local_forwards: ["127.0.0.1:0:127.0.0.1:{{ sandbox_echo_port }}"]
          delegate_to: localhost
          register: mine
        - ansible.builtin.wait_for:
            host: 127.0.0.1
            port: "{{ mine.tunnel.port }}"
            timeout: 5
        - ansible.builtin.set_fact:
            my_port: "{{ mine.tunnel.port }}"
        - ansible.builtin.assert:
            that: ansible_play_hosts | map('extract', hostvars, 'my_port') | unique | length == 10
          run_once: true
        - burrow.ssh.tunnel:
            name: "*"
            state: absent
            state_dir: "{{ state_dir }}"
          delegate_to: localhost
          run_once: true
    """
    play = write_play(tmp_path, tasks, hosts="forks")
    result = ansible_playbook(play, tmp_path / "forks.yml", {"state_dir": str(state_dir)}, env={"ANSIBLE_FORKS": "10"})
    assert_ok(result)
    assert tunnel_pids(state_dir) == {}


BAD_INPUTS = [
    ({"local_forwards": [{"listen_port": 70000, "dest_host": "db", "dest_port": 5432}]}, "local_forwards[0]"),
    ({"local_forwards": ["127.0.0.1:0:db:65536"]}, "local_forwards[0]"),
    ({"host": "-oProxyCommand=touch /tmp/pwned"}, "host"),
    ({"user": "root;id"}, "user"),
    ({"via": ["$(id)@bastion"]}, "via[0]"),
    ({"dynamic_forwards": ["[::1:1080"]}, "dynamic_forwards[0]"),
    ({"local_forwards": ["0:/" + "x" * 120]}, "local_forwards[0]"),
    ({"keepalive_interval": "yes"}, "keepalive_interval"),
    ({"remote_forwards": ["0.0.0.0:0:127.0.0.1:80"]}, "remote_forwards[0]"),
    ({"bogus_option": 1}, "bogus_option"),
    # Issue 16 item 15: Ansible's own int conversion died with "cannot convert Infinity to integer".
    ({"ttl": "inf"}, "ttl: must be a whole number of seconds, not infinite or NaN"),
]


@pytest.mark.parametrize(("override", "field"), BAD_INPUTS, ids=[field + "-" + str(i) for i, (_override, field) in enumerate(BAD_INPUTS)])
def test_bad_input_fails_with_the_field_and_leaves_nothing(
    ansible_playbook: t.Any, inventory: Path, state_dir: Path, tmp_path: Path, override: dict[str, t.Any], field: str
) -> None:
    base = {"name": "bad", "host": "127.0.0.1", "port": 22, "use_agent": False, "state_dir": str(state_dir)}
    base.update(override)
    (tmp_path / "args.json").write_text(json.dumps(base))
    tasks = """\
        - burrow.ssh.tunnel: "{{ lookup('file', args_file) | from_json }}"
    """
    result = run(ansible_playbook, write_play(tmp_path, tasks), inventory, state_dir, extra_vars={"args_file": str(tmp_path / "args.json")})
    assert result.returncode != 0
    assert field in result.stdout, result.stdout[-3000:]
    if field == "bogus_option":
        # Ansible's own wording, and the internal option set by the action plugin is not offered to the user.
        assert "Unsupported parameters for (burrow.ssh.tunnel) module: bogus_option" in result.stdout, result.stdout[-3000:]
        assert "lifetime_owner" not in result.stdout
    assert tunnel_pids(state_dir) == {}
    assert not state_dir.exists() or list(state_dir.iterdir()) == []
    assert not Path("/tmp/pwned").exists()


def test_database_through_local_forward(ansible_playbook: t.Any, inventory: Path, state_dir: Path, tmp_path: Path, sandbox_session: t.Any) -> None:
    if getattr(sandbox_session, "postgres", None) is None:
        pytest.skip("PostgreSQL binaries are not installed")
    tasks = """\
        - burrow.ssh.tunnel:
            <<: *server
            name: db
            local_forwards: ["127.0.0.1:0:{{ sandbox_pg_host }}:{{ sandbox_pg_port }}"]
          register: db
        - ansible.builtin.command:
            argv: [psql, -h, 127.0.0.1, -p, "{{ db.tunnel.port }}", -U, "{{ sandbox_pg_user }}", -d, "{{ sandbox_pg_database }}", -Atc,
                   "select string_agg(item, ',' order by id) from inventory"]
          environment:
            PGPASSWORD: "{{ sandbox_pg_password }}"
          register: rows
          changed_when: false
        - ansible.builtin.assert:
            that: rows.stdout == 'bastion,tunnel,socks'
        - burrow.ssh.tunnel:
            name: db
            state: absent
            state_dir: "{{ state_dir }}"
    """
    assert_ok(run(ansible_playbook, write_play(tmp_path, tasks), inventory, state_dir))


def test_no_secret_reaches_argv_state_or_log(ansible_playbook: t.Any, inventory: Path, state_dir: Path, tmp_path: Path) -> None:
    secret = "Sw0rdfish-" + str(time.time_ns())
    tasks = """\
        - burrow.ssh.tunnel:
            <<: *server
            name: secretive
            password: "{{ secret }}"
            dynamic_forwards:
              - {listen_host: 127.0.0.1, listen_port: 0, socks_username: me, socks_password: "{{ secret }}"}
          register: created
        - ansible.builtin.copy:
            content: "{{ created.tunnel.pid }}"
            dest: "{{ state_dir }}/../secretive.pid"
            mode: "0600"
    """
    result = run(ansible_playbook, write_play(tmp_path, tasks), inventory, state_dir, extra_vars={"secret": secret})
    assert_ok(result)
    pid = int((tmp_path / "secretive.pid").read_text())
    try:
        assert secret not in result.stdout
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read()
        assert secret.encode() not in cmdline
        # ps shows the tunnel by name, not as the module's deleted AnsiballZ payload.
        assert cmdline.rstrip(b"\0") == b"burrow-tunnel secretive", cmdline
        assert pathlib.Path(f"/proc/{pid}/comm").read_text().strip() == "burrow-tunnel s"
        with open(f"/proc/{pid}/environ", "rb") as handle:
            assert secret.encode() not in handle.read()
        for path in state_dir.iterdir():
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
                assert oct(path.stat().st_mode & 0o777) == "0o600", path
        assert oct(state_dir.stat().st_mode & 0o777) == "0o700"
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not alive(pid), 10)


def test_string_numbers_from_extra_vars_are_converted(ansible_playbook: t.Any, inventory: Path, state_dir: Path, tmp_path: Path) -> None:
    """-e values arrive as strings; like any Ansible module, "60" for an int option is accepted."""
    tasks = """\
        - burrow.ssh.tunnel:
            <<: *server
            name: strings
            dynamic_forwards: ["127.0.0.1:0"]
            ttl: "{{ ttl }}"
            keepalive_interval: "{{ interval }}"
          register: created
        - ansible.builtin.assert:
            that: created.tunnel.status == 'up'
        - burrow.ssh.tunnel:
            name: strings
            state: absent
            state_dir: "{{ state_dir }}"
    """
    assert_ok(run(ansible_playbook, write_play(tmp_path, tasks), inventory, state_dir, extra_vars={"ttl": "60", "interval": "7"}))


def test_null_options_are_unset_through_the_action_plugin(ansible_playbook: t.Any, inventory: Path, state_dir: Path, tmp_path: Path) -> None:
    """Issue 16 item 15: an option given as null is unset (its default applies), as the action plugin runs it."""
    tasks = """\
        - burrow.ssh.tunnel:
            <<: *server
            name: nulls
            dynamic_forwards: ["127.0.0.1:0"]
            via: null
            ttl: null
            idle_timeout: null
            keepalive_interval: null
            lifetime: null
            reconnect: null
          register: created
        - ansible.builtin.assert:
            that: created.tunnel.status == 'up'
        - burrow.ssh.tunnel:
            name: nulls
            state: absent
            state_dir: "{{ state_dir }}"
    """
    assert_ok(run(ansible_playbook, write_play(tmp_path, tasks), inventory, state_dir))
    assert tunnel_pids(state_dir) == {}


def test_passphrase_and_password_stay_out_of_verbose_output(ansible_playbook: t.Any, sandbox: t.Any, state_dir: Path, tmp_path: Path) -> None:
    """An encrypted key's passphrase and a password: not in -vvv output, argv, environ, state or log."""
    server = sandbox.start_sshd(name="passphrase")
    passphrase = "Pass-" + str(time.time_ns())
    password = "Word-" + str(time.time_ns())
    key = tmp_path / "encrypted_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(key)], check=True, timeout=30)
    with server.authorized_keys.open("a") as handle:
        handle.write((tmp_path / "encrypted_key.pub").read_text())
    inventory_path = sandbox.write_inventory(tmp_path / "inventory.yml")
    tasks = """\
        - burrow.ssh.tunnel:
            name: encrypted
            host: "{{ sandbox_sshd_host }}"
            port: "{{ sandbox_sshd_port | int }}"
            user: "{{ sandbox_sshd_user }}"
            private_key_file: "{{ key_file }}"
            private_key_passphrase: "{{ passphrase }}"
            password: "{{ password }}"
            known_hosts_file: "{{ sandbox_known_hosts }}"
            use_agent: false
            state_dir: "{{ state_dir }}"
            dynamic_forwards: ["127.0.0.1:0"]
          register: created
        - ansible.builtin.copy:
            content: "{{ created.tunnel.pid }}"
            dest: "{{ state_dir }}/../encrypted.pid"
            mode: "0600"
    """
    play = write_play(tmp_path, tasks)
    extra = {"key_file": str(key), "passphrase": passphrase, "password": password}
    result = run(ansible_playbook, play, inventory_path, state_dir, extra_vars=extra, env={"ANSIBLE_VERBOSITY": "3"})
    assert_ok(result)
    pid = int((tmp_path / "encrypted.pid").read_text())
    try:
        output = result.stdout + result.stderr
        assert "ESTABLISH LOCAL CONNECTION" in output or "<127.0.0.1>" in output or "EXEC" in output, "the run was verbose"
        for secret in (passphrase, password):
            assert secret not in output
            for proc in Path("/proc").iterdir():
                if proc.name.isdigit():
                    for name in ("cmdline", "environ"):
                        with contextlib.suppress(OSError):
                            assert secret.encode() not in (proc / name).read_bytes(), f"{secret[:5]}… in /proc/{proc.name}/{name}"
            for path in state_dir.iterdir():
                if path.is_file():
                    assert secret.encode() not in path.read_bytes(), path
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not alive(pid), 10)
