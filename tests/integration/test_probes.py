# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Protocol-aware probes through real tunnels: each protocol passes against its server and fails against a wrong one."""

from __future__ import annotations

import contextlib
import pathlib
import socket
import ssl
import struct
import subprocess
import sys
import threading
import typing as t

import pytest
import yaml
from engine_helpers import LoopbackServer, sshd_hop, wait_until
from test_engine import running

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import use_deque_pipes

use_deque_pipes()


def tunnel_for(sshd: t.Any, **overrides: t.Any) -> t.Any:
    return parse_declaration({"name": "probes", **sshd_hop(sshd), "connect_timeout": 5, **overrides})


def probe_local(sshd: t.Any, port: int, probe: t.Any, host: str = "127.0.0.1") -> dict[str, t.Any]:
    with running(tunnel_for(sshd, local_forwards=[{"listen_port": 0, "dest_host": host, "dest_port": port, "probe": probe}])) as engine:
        return engine.probe()[0]


# -- stand-in servers: a few bytes of each protocol, as the real servers send them ----------------------------------
def _redis(conn: socket.socket, answer: bytes) -> None:
    conn.settimeout(5)
    if conn.recv(64).startswith(b"*1\r\n$4\r\nPING"):
        conn.sendall(answer)


def _mysql(conn: socket.socket) -> None:
    payload = b"\x0a" + b"10.11.6-MariaDB-0+deb12u1\x00" + struct.pack("<I", 7) + b"abcdefgh\x00" + b"\xff\xf7\x08\x02\x00" + b"\x00" * 13
    conn.sendall(struct.pack("<I", len(payload))[:3] + b"\x00" + payload)
    conn.settimeout(2)
    with contextlib.suppress(OSError):
        conn.recv(16)


def _http_400(conn: socket.socket) -> None:
    conn.settimeout(5)
    conn.recv(64)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def _silent_close(conn: socket.socket) -> None:
    conn.settimeout(5)
    conn.recv(64)


@pytest.fixture(scope="module")
def servers() -> t.Iterator[dict[str, LoopbackServer]]:
    made = {
        "redis": LoopbackServer(lambda conn: _redis(conn, b"+PONG\r\n")),
        "redis_auth": LoopbackServer(lambda conn: _redis(conn, b"-NOAUTH Authentication required.\r\n")),
        "mysql": LoopbackServer(_mysql),
        "http400": LoopbackServer(_http_400),
        "closer": LoopbackServer(_silent_close),
    }
    try:
        yield made
    finally:
        for server in made.values():
            server.stop()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[LoopbackServer]:
    where = tmp_path_factory.mktemp("tls")
    key, cert = where / "key.pem", where / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/O=Burrow Test/CN=db.probe.test",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))

    def handle(conn: socket.socket) -> None:
        conn.settimeout(5)
        with context.wrap_socket(conn, server_side=True) as tls:
            with contextlib.suppress(OSError, ssl.SSLError):
                tls.recv(1)

    server = LoopbackServer(handle)
    try:
        yield server
    finally:
        server.stop()


# -- PostgreSQL -------------------------------------------------------------------------------------------------------
def test_postgresql_up_reports_the_authentication_method(sshd: t.Any, postgres: t.Any) -> None:
    result = probe_local(sshd, postgres.port, "postgresql")
    assert result["ok"] is True, result
    assert result["answer"] == "scram-sha-256" and result["detail"] == "PostgreSQL requested scram-sha-256", result
    assert result["protocol"] == "postgresql" and result["latency_ms"] > 0


def test_postgresql_stopped_with_a_tcp_listener_in_its_place(sshd: t.Any, postgres: t.Any, sandbox_session: t.Any) -> None:
    sandbox_session.stop_postgres()
    try:
        standin = socket.create_server((postgres.host, postgres.port))
        try:
            answered: list[bytes] = []

            def serve() -> None:
                for _index in range(3):
                    with contextlib.suppress(OSError):
                        conn = standin.accept()[0]
                        with conn:
                            conn.settimeout(5)
                            answered.append(conn.recv(64))
                            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

            thread = threading.Thread(target=serve, daemon=True)
            thread.start()
            pg_result = probe_local(sshd, postgres.port, "postgresql", postgres.host)
            tcp_result = probe_local(sshd, postgres.port, "tcp", postgres.host)
            assert pg_result["ok"] is False and pg_result["error"] == "PostgreSQL probe: expected PostgreSQL, got 'HTTP/1.1 400 Bad Request'", pg_result
            assert tcp_result["ok"] is True, tcp_result
        finally:
            with contextlib.suppress(OSError):
                standin.shutdown(socket.SHUT_RDWR)  # wakes the accept() so the port is free for PostgreSQL again
            standin.close()
            thread.join(10)
    finally:
        sandbox_session.start_postgres_again()
    assert probe_local(sshd, postgres.port, "postgresql")["ok"] is True


def test_postgresql_probe_names_a_silent_close(sshd: t.Any, servers: dict[str, LoopbackServer]) -> None:
    result = probe_local(sshd, servers["closer"].port, "postgresql")
    assert result["ok"] is False and "connection closed without a PostgreSQL answer" in result["error"], result


# -- the other protocols, each against its server and a wrong one --------------------------------------------------------
def test_ssh_probe(sshd: t.Any, http_server: t.Any) -> None:
    good = probe_local(sshd, sshd.port, "ssh")
    assert good["ok"] is True and good["answer"].startswith("SSH-2.0-"), good
    bad = probe_local(sshd, http_server.port, {"type": "ssh", "timeout": 3})
    assert bad["ok"] is False and "SSH" in bad["error"], bad


def test_http_probe(sshd: t.Any, http_server: t.Any, servers: dict[str, LoopbackServer]) -> None:
    good = probe_local(sshd, http_server.port, {"type": "http", "path": "/", "status": 200})
    assert good["ok"] is True and " 200 " in good["answer"], good
    wrong_status = probe_local(sshd, servers["http400"].port, {"type": "http", "status": 200})
    assert wrong_status["ok"] is False and "expected status 200" in wrong_status["error"], wrong_status
    bad = probe_local(sshd, sshd.port, "http")
    assert bad["ok"] is False and "expected HTTP, got 'SSH-2.0-" in bad["error"], bad


def test_tls_probe(sshd: t.Any, tls_server: LoopbackServer, http_server: t.Any) -> None:
    good = probe_local(sshd, tls_server.port, "tls")
    assert good["ok"] is True and good["answer"] == "O=Burrow Test, CN=db.probe.test", good
    bad = probe_local(sshd, http_server.port, {"type": "tls", "timeout": 3})
    assert bad["ok"] is False and bad["error"].startswith("TLS probe:"), bad


def test_redis_probe(sshd: t.Any, servers: dict[str, LoopbackServer]) -> None:
    good = probe_local(sshd, servers["redis"].port, "redis")
    assert good["ok"] is True and good["detail"] == "Redis answered PONG", good
    auth = probe_local(sshd, servers["redis_auth"].port, "redis")
    assert auth["ok"] is True and auth["detail"] == "Redis answered, needs AUTH", auth
    bad = probe_local(sshd, servers["http400"].port, "redis")
    assert bad["ok"] is False and "expected Redis, got 'HTTP/1.1 400 Bad Request'" in bad["error"], bad


def test_mysql_probe(sshd: t.Any, servers: dict[str, LoopbackServer]) -> None:
    good = probe_local(sshd, servers["mysql"].port, "mysql")
    assert good["ok"] is True and good["detail"] == "MariaDB 10.11.6-MariaDB-0+deb12u1 greeted", good
    bad = probe_local(sshd, sshd.port, "mysql")
    assert bad["ok"] is False and "expected MySQL, got 'SSH-2.0-" in bad["error"], bad


def test_closed_destination_names_the_refusal(sshd: t.Any) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        closed = holder.getsockname()[1]
    result = probe_local(sshd, closed, "redis")
    assert result["ok"] is False and "connect failed" in result["error"], result


# -- -R and -D ------------------------------------------------------------------------------------------------------------
def test_remote_forward_probes_the_local_destination(sshd: t.Any, servers: dict[str, LoopbackServer]) -> None:
    forwards = [{"listen_port": 0, "dest_host": "127.0.0.1", "dest_port": servers["redis"].port, "probe": "redis"}]
    with running(tunnel_for(sshd, remote_forwards=forwards)) as engine:
        result = engine.probe()[0]
    assert result["ok"] is True and result["kind"] == "remote" and result["detail"] == "Redis answered PONG", result


def test_dynamic_forward_probes_through_socks(sshd: t.Any, postgres: t.Any, servers: dict[str, LoopbackServer]) -> None:
    forwards = [
        {"listen_port": 0, "probe_target": f"127.0.0.1:{postgres.port}", "probe": "postgresql"},
        {"listen_port": 0, "probe_target": f"127.0.0.1:{servers['mysql'].port}", "probe": "postgresql", "socks_username": "u", "socks_password": "p"},
    ]
    with running(tunnel_for(sshd, dynamic_forwards=forwards)) as engine:
        through, wrong = engine.probe()
        assert engine.forwards[through["key"]].counters.as_dict()["connections_total"] == 1, "the probe went through the SOCKS listener"
    assert through["ok"] is True and through["answer"] == "scram-sha-256", through
    assert wrong["ok"] is False and "expected PostgreSQL" in wrong["error"], wrong


# -- the grammar --------------------------------------------------------------------------------------------------------
def test_probe_does_not_change_the_forward_key(sshd: t.Any) -> None:
    plain = tunnel_for(sshd, local_forwards=[{"listen_port": 0, "dest_host": "db", "dest_port": 5432}]).forwards[0]
    probed = tunnel_for(sshd, local_forwards=[{"listen_port": 0, "dest_host": "db", "dest_port": 5432, "probe": "postgresql"}]).forwards[0]
    assert plain.key() == probed.key() and probed.probe is not None and probed.probe.type == "postgresql"


@pytest.mark.parametrize(
    ("forward", "kind", "message"),
    [
        ({"listen_port": 0, "dest_host": "db", "dest_port": 5432, "probe": "oracle"}, "local", "local_forwards[0].probe.type"),
        ({"listen_port": 0, "dest_host": "db", "dest_port": 80, "probe": {"type": "http", "status": 42}}, "local", "local_forwards[0].probe.status"),
        ({"listen_port": 0, "probe": "redis"}, "dynamic", "needs probe_target"),
        ({"listen_port": 0, "dest_host": "db", "dest_port": 5432, "probe_target": "x:1"}, "remote", "applies to SOCKS forwards only"),
    ],
)
def test_probe_declaration_errors(sshd: t.Any, forward: dict[str, t.Any], kind: str, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        tunnel_for(sshd, **{f"{kind}_forwards": [forward]})


# -- wait_for_probe holds a play until PostgreSQL answers -------------------------------------------------------------------
def test_wait_for_probe_holds_the_play_until_postgresql_starts(
    sshd: t.Any, postgres: t.Any, sandbox_session: t.Any, ansible_playbook: t.Any, tmp_path: pathlib.Path
) -> None:
    state_dir = tmp_path / "state"
    play = [
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "tunnel to the database, waiting for PostgreSQL",
                    "burrow.ssh.tunnel": {
                        "name": "pgwait",
                        **sshd_hop(sshd),
                        "local_forwards": [{"listen_port": 0, "dest_host": postgres.host, "dest_port": postgres.port, "probe": "postgresql"}],
                        "wait_for_probe": True,
                        "probe_timeout": 60,
                        "lifetime": "play",
                    },
                    "register": "pgwait",
                },
            ],
        }
    ]
    playbook = tmp_path / "wait.yml"
    playbook.write_text(yaml.safe_dump(play))
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("localhost ansible_python_interpreter=" + str(pathlib.Path(sys.executable)) + "\n")
    sandbox_session.stop_postgres()
    started = threading.Event()

    def start_when_the_tunnel_is_up() -> None:
        # the background step: PostgreSQL comes back once the play is already waiting on its tunnel
        if wait_until((state_dir / "pgwait.json").exists, 120):
            sandbox_session.start_postgres_again()
            started.set()

    helper = threading.Thread(target=start_when_the_tunnel_is_up, daemon=True)
    helper.start()
    try:
        result = ansible_playbook(playbook, inventory, env={"BURROW_STATE_DIR": str(state_dir)}, timeout=180)
    finally:
        helper.join(150)
        if not started.is_set():
            sandbox_session.start_postgres_again()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    task = result.json["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert task["probe"][0]["ok"] is True and task["probe"][0]["detail"] == "PostgreSQL requested scram-sha-256", task["probe"]
    assert task["probe_waited"] > 0
