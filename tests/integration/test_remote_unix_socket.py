# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Remote Unix-socket listeners (ssh -R /path/on/server:...): psql on the server side reaches the sandbox PostgreSQL.

The sshd runs on this machine, so "the server side" is a directory here: psql connects to ``host=<dir> port=<port>``,
that is to the socket ``<dir>/.s.PGSQL.<port>`` that sshd listens on for the tunnel.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import shutil
import socket
import subprocess
import tempfile
import textwrap
import typing as t

import pytest
from engine_helpers import wait_until
from test_engine import running, tunnel_for

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.engine import TunnelEngine
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import ForwardRefused
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.manage import ensure_absent

# Each psql waits at most this long for the server (it goes through sshd and the tunnel on a loaded machine).
PSQL_TIMEOUT = 60


@pytest.fixture
def server_dir() -> t.Iterator[pathlib.Path]:
    """A short directory "on the server" (a Unix socket path must stay under 108 bytes)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="burrow-R-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def psql_via_socket(postgres: t.Any, directory: pathlib.Path, sql: str) -> subprocess.CompletedProcess[str]:
    """psql as a program on the server would run it: by socket directory and port, the password in the environment."""
    conninfo = f"host={directory} port={postgres.port} user={postgres.user} dbname={postgres.database}"
    argv = [str(postgres.bindir / "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql]
    return subprocess.run(argv, env=postgres.psql_env(), capture_output=True, text=True, timeout=PSQL_TIMEOUT, check=False)


def assert_psql(postgres: t.Any, directory: pathlib.Path, sql: str, expected: str) -> None:
    result = psql_via_socket(postgres, directory, sql)
    assert result.returncode == 0, f"psql through {directory}/.s.PGSQL.{postgres.port} failed: {result.stderr.strip()}"
    assert result.stdout.strip() == expected, result.stdout


def socket_path(directory: pathlib.Path, postgres: t.Any) -> str:
    return str(directory / f".s.PGSQL.{postgres.port}")


def accepts(path: str) -> bool:
    with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)) as probe:
        probe.settimeout(5)
        try:
            probe.connect(path)
        except OSError:
            return False
        return True


@pytest.fixture
def unlinking_sshd(sandbox: t.Any) -> t.Any:
    """An sshd that re-binds a socket path left by an earlier session, as a remote Unix listener needs across reconnects."""
    return sandbox.start_sshd(name="streamlocal", extra_config="StreamLocalBindUnlink yes\n")


def test_remote_unix_listener_carries_psql_to_tcp_and_to_a_socket_and_rebinds_after_reconnect(
    unlinking_sshd: t.Any, postgres: t.Any, server_dir: pathlib.Path
) -> None:
    to_tcp = server_dir / "tcp"
    to_socket = server_dir / "unix"
    to_tcp.mkdir()
    to_socket.mkdir()
    forwards = [
        f"{socket_path(to_tcp, postgres)}:127.0.0.1:{postgres.port}",  # -R /path/on/server:host:port
        f"{socket_path(to_socket, postgres)}:{postgres.socket_dir}/.s.PGSQL.{postgres.port}",  # -R /path/on/server:/local.sock
    ]
    # Over TCP PostgreSQL sees a client address; over its own Unix socket it sees none.
    tcp_sql = "SELECT current_user || ' tcp=' || (inet_client_addr() IS NOT NULL)"
    with running(tunnel_for(unlinking_sshd, name="pg-socket", remote_forwards=forwards, connect_timeout=30)) as engine:
        status = engine.status()
        assert [forward["bound_path"] for forward in status["forwards"]] == [socket_path(to_tcp, postgres), socket_path(to_socket, postgres)]
        assert_psql(postgres, to_tcp, tcp_sql, f"{postgres.user} tcp=true")
        assert_psql(postgres, to_socket, tcp_sql, f"{postgres.user} tcp=false")
        unlinking_sshd.restart()
        # The socket files of the dead session are still there; StreamLocalBindUnlink lets the new session bind them.
        assert wait_until(lambda: engine.state == "up" and engine.reconnects >= 1, 60), engine.status()
        assert_psql(postgres, to_tcp, "SELECT count(*) >= 0 FROM inventory", "t")
        assert_psql(postgres, to_socket, "SELECT count(*) >= 0 FROM inventory", "t")
        counted = {forward["bound_path"]: forward for forward in engine.status()["forwards"]}
        assert counted[socket_path(to_tcp, postgres)]["connections_total"] >= 2, counted
    # Stopping cancels the listeners (cancel-streamlocal-forward@openssh.com): nobody accepts on the paths any more.
    assert wait_until(lambda: not accepts(socket_path(to_tcp, postgres)) and not accepts(socket_path(to_socket, postgres)), 30)


def test_socket_file_left_on_the_server_is_refused_without_stream_local_bind_unlink(sandbox: t.Any, postgres: t.Any, server_dir: pathlib.Path) -> None:
    server = sandbox.start_sshd(name="nounlink", extra_config="StreamLocalBindUnlink no\n")
    path = socket_path(server_dir, postgres)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # a file nobody listens on, as an earlier session leaves it
    stale.close()
    tunnel = tunnel_for(server, name="pg-stale", remote_forwards=[f"{path}:127.0.0.1:{postgres.port}"], connect_timeout=30)
    with pytest.raises(ForwardRefused) as raised:
        TunnelEngine(tunnel).start()
    assert f"sshd would not listen on the Unix socket {path}" in raised.value.message
    assert "StreamLocalBindUnlink yes" in raised.value.advice and "AllowStreamLocalForwarding" in raised.value.advice


def test_remote_unix_listener_refused_by_allow_stream_local_forwarding_names_the_option(sandbox: t.Any, postgres: t.Any, server_dir: pathlib.Path) -> None:
    server = sandbox.start_sshd(name="nostreamlocal", extra_config="AllowStreamLocalForwarding local\n")
    tunnel = tunnel_for(server, name="pg-denied", remote_forwards=[f"{socket_path(server_dir, postgres)}:127.0.0.1:{postgres.port}"], connect_timeout=30)
    with pytest.raises(ForwardRefused, match="sshd would not listen on the Unix socket") as raised:
        TunnelEngine(tunnel).start()
    assert "AllowStreamLocalForwarding must be yes or remote" in raised.value.advice


def test_reconnect_without_stream_local_bind_unlink_goes_down_with_advice_naming_it(sandbox: t.Any, postgres: t.Any, server_dir: pathlib.Path) -> None:
    server = sandbox.start_sshd(name="stale-after-reconnect", extra_config="StreamLocalBindUnlink no\n")
    path = socket_path(server_dir, postgres)
    with running(tunnel_for(server, name="pg-rebind", remote_forwards=[f"{path}:127.0.0.1:{postgres.port}"], connect_timeout=30)) as engine:
        assert_psql(postgres, server_dir, "SELECT 1", "1")
        engine.held_port_wait = 3
        server.restart()
        # The dead session's socket file stays behind and the new session may not bind over it.
        assert wait_until(lambda: engine.state == "down", 90), engine.status()
        error = engine.last_error
        assert error is not None and f"still refused remote socket {path}" in error.message, engine.status()
        assert "StreamLocalBindUnlink yes" in error.advice


PLAY = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: A Unix socket on the server that leads to the sandbox PostgreSQL
      burrow.ssh.tunnel:
        name: pg-socket-module
        host: "{{ sandbox_sshd_host }}"
        port: "{{ sandbox_sshd_port | int }}"
        user: "{{ sandbox_sshd_user }}"
        private_key_file: "{{ sandbox_client_key }}"
        known_hosts_file: "{{ sandbox_known_hosts }}"
        use_agent: false
        state_dir: "{{ state_dir }}"
        connect_timeout: 30
        remote_forwards:
          - "{{ listen_path }}:127.0.0.1:{{ pg_port }}"
      register: opened
    - name: psql on the server side, by socket directory and port
      ansible.builtin.command:
        argv:
          - "{{ psql }}"
          - -X
          - -At
          - -v
          - ON_ERROR_STOP=1
          - "host={{ listen_dir }} port={{ pg_port }} user={{ pg_user }} dbname={{ pg_db }}"
          - -c
          - SELECT 'via-module'
      environment:
        PGPASSWORD: "{{ pg_password }}"
        PGCONNECT_TIMEOUT: "60"
      register: queried
      changed_when: false
      no_log: true
    - name: Check it
      ansible.builtin.assert:
        that:
          - opened.tunnel.remote_forwards[0].bound_path == listen_path
          - queried.stdout == 'via-module'
    - name: Stop it
      burrow.ssh.tunnel:
        name: pg-socket-module
        state: absent
        state_dir: "{{ state_dir }}"
"""


def test_remote_unix_listener_through_the_module(
    ansible_playbook: t.Any, sandbox_inventory: pathlib.Path, postgres: t.Any, server_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    play = tmp_path / "pg-socket.yml"
    play.write_text(textwrap.dedent(PLAY))
    state_dir = tmp_path / "state"
    variables = {
        "state_dir": str(state_dir),
        "listen_dir": str(server_dir),
        "listen_path": socket_path(server_dir, postgres),
        "pg_port": postgres.port,
        "pg_user": postgres.user,
        "pg_db": postgres.database,
        "pg_password": postgres.password,
        "psql": str(postgres.bindir / "psql"),
    }
    try:
        result = ansible_playbook(play, sandbox_inventory, variables, timeout=600)
        assert result.returncode == 0, f"stdout:\n{result.stdout[-6000:]}\nstderr:\n{result.stderr[-3000:]}"
        assert not list(state_dir.glob("*.json")) or all(json.loads(path.read_text()).get("pid") is None for path in state_dir.glob("*.json"))
        assert not accepts(socket_path(server_dir, postgres)), "state: absent cancelled the remote listener"
    finally:
        # A play that failed half-way must not leave its tunnel process running after the test.
        if state_dir.is_dir():
            ensure_absent("*", str(state_dir), check_mode=False, drain_timeout=0)
