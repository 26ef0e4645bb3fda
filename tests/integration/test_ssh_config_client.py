# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ssh_config client keywords against real sshds: ServerAlive*, IdentityAgent, StrictHostKeyChecking, Compression."""

from __future__ import annotations

import os
import pathlib
import subprocess
import time
import typing as t

import pytest
from engine_helpers import LoopbackServer, echo_handler, echo_roundtrip, frozen, wait_until
from test_engine import bound, running

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.engine import TunnelEngine
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import AuthenticationFailed, HostKeyUnknown
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration


@pytest.fixture(scope="module")
def echo() -> t.Iterator[LoopbackServer]:
    with LoopbackServer(echo_handler) as server:
        yield server


def host_entry(server: t.Any, *lines: str, identity: bool = True, known_hosts: pathlib.Path | None = None) -> str:
    """A Host block 'aliased' for the sshd, with the extra keyword lines."""
    text = f"Host aliased\n  HostName {server.host}\n  Port {server.port}\n  User {server.user}\n"
    if identity:
        text += f"  IdentityFile {server.client_key}\n"
    text += f"  UserKnownHostsFile {known_hosts or server.known_hosts}\n"
    return text + "".join(f"  {line}\n" for line in lines)


def use_config(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, text: str, name: str = "config") -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text)
    monkeypatch.setenv("BURROW_SSH_CONFIG", str(path))
    return path


def test_server_alive_from_ssh_config_detects_a_frozen_session_in_about_2_s(
    sandbox: t.Any, echo: LoopbackServer, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sandbox.start_sshd()
    use_config(tmp_path, monkeypatch, host_entry(server, "ServerAliveInterval 1", "ServerAliveCountMax 2"))
    # No keepalive options: the config's 1 s x 2 applies (the defaults would take 5 s x 3).
    tunnel = parse_declaration({"name": "alive", "host": "aliased", "use_agent": False, "local_forwards": [f"0:127.0.0.1:{echo.port}"]})
    with running(tunnel) as engine:
        assert engine.liveness() == (1.0, 2)
        assert wait_until(lambda: bool(server.child_pids()), 5)
        with frozen(server.child_pids()):  # the sshd session process serving the tunnel stops
            started = time.monotonic()
            assert wait_until(lambda: engine.last_error is not None, 15), "a frozen session must be noticed"
            detected = time.monotonic() - started
        print(f"frozen session detected after {detected:.2f} s (ServerAliveInterval 1, ServerAliveCountMax 2)")
        # 2 unanswered requests of 1 s each, after at most one 1 s pause since the last answer.
        assert 1.5 <= detected <= 3.5, f"detected after {detected:.2f} s"
        assert "2 keepalive request(s) within 2 s" in engine.last_error.message
        assert wait_until(lambda: engine.state == "up" and engine.reconnects == 1, 15), engine.status()
        assert echo_roundtrip(bound(engine), b"after freeze") == b"after freeze"


@pytest.fixture
def agent(sshd: t.Any, tmp_path: pathlib.Path) -> t.Iterator[pathlib.Path]:
    """An ssh-agent holding the sshd's client key (the only key it accepts); the socket path."""
    sock = tmp_path / "agent.sock"
    process = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(sock.exists, 10), "ssh-agent did not start"
        env = dict(os.environ, SSH_AUTH_SOCK=str(sock))
        subprocess.run(["ssh-add", str(sshd.client_key)], env=env, check=True, capture_output=True, timeout=30)
        yield sock
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_identity_agent_none_stops_agent_use_and_a_path_names_the_agent(
    sshd: t.Any, agent: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"  # no default identity files: the agent's key is the only way in
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    declaration = {"name": "agent", "host": "aliased", "dynamic_forwards": ["127.0.0.1:0"]}
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent))
    use_config(tmp_path, monkeypatch, host_entry(sshd, identity=False))
    with running(parse_declaration(declaration)) as engine:
        assert engine.state == "up"
    use_config(tmp_path, monkeypatch, host_entry(sshd, "IdentityAgent none", identity=False))
    with pytest.raises(AuthenticationFailed, match="none \\(no key, agent key or password"):
        TunnelEngine(parse_declaration(declaration)).start()
    # An explicit use_agent wins over the config, as with ssh's command line.
    with running(parse_declaration(dict(declaration, use_agent=True))) as engine:
        assert engine.state == "up"
    # IdentityAgent naming the socket works without SSH_AUTH_SOCK.
    monkeypatch.delenv("SSH_AUTH_SOCK")
    use_config(tmp_path, monkeypatch, host_entry(sshd, f"IdentityAgent {agent}", identity=False))
    with running(parse_declaration(declaration)) as engine:
        assert engine.state == "up"


def test_strict_host_key_checking_accept_new_from_the_config_behaves_like_the_option(
    sshd: t.Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    declaration = {"name": "accept-new", "host": "aliased", "use_agent": False, "dynamic_forwards": ["127.0.0.1:0"]}
    outcomes = {}
    for way in ("config", "option"):
        known = tmp_path / f"known_hosts.{way}"
        known.write_text("")
        lines = ["StrictHostKeyChecking accept-new"] if way == "config" else []
        use_config(tmp_path, monkeypatch, host_entry(sshd, *lines, known_hosts=known), name=f"config.{way}")
        params = dict(declaration, host_key_checking="accept-new") if way == "option" else declaration
        with running(parse_declaration(params)) as engine:
            outcomes[way] = (engine.state, list(engine.warnings), known.read_text())
    assert outcomes["config"][0] == outcomes["option"][0] == "up"
    assert outcomes["config"][2] == outcomes["option"][2] != ""
    assert sshd.host_pubkey_line.split()[1] in outcomes["config"][2]
    assert any("accept-new" in warning for warning in outcomes["config"][1])
    # Without it the same unknown key is refused (strict by default), and the option wins over the config.
    known = tmp_path / "known_hosts.strict"
    known.write_text("")
    use_config(tmp_path, monkeypatch, host_entry(sshd, "StrictHostKeyChecking accept-new", known_hosts=known), name="config.strict")
    with pytest.raises(HostKeyUnknown):
        TunnelEngine(parse_declaration(dict(declaration, host_key_checking="strict"))).start()
    assert known.read_text() == ""


def _compression_lines(server: t.Any) -> list[str]:
    return [line for line in server.log_path.read_text(errors="replace").splitlines() if "kex: client->server" in line]


def test_sshd_log_shows_compression_negotiated_when_asked_and_not_otherwise(
    sandbox: t.Any, echo: LoopbackServer, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sandbox.start_sshd(extra_config="LogLevel DEBUG1\n")
    monkeypatch.setenv("BURROW_SSH_CONFIG", "none")
    base = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "private_key_file": str(server.client_key),
        "known_hosts_file": str(server.known_hosts),
        "use_agent": False,
        "local_forwards": [f"0:127.0.0.1:{echo.port}"],
    }
    seen: dict[str, list[str]] = {}
    for name, extra in (("plain", {}), ("compressed", {"compression": True})):
        before = len(_compression_lines(server))

        def logged(before: int = before) -> bool:
            return len(_compression_lines(server)) > before

        with running(parse_declaration(dict(base, name=name, **extra))) as engine:
            assert echo_roundtrip(bound(engine), b"x" * 4096) == b"x" * 4096
            warned = [warning for warning in engine.status()["warnings"] if "compression is on" in warning]
        assert wait_until(logged, 10), "sshd logged no kex line"
        seen[name] = _compression_lines(server)[before:]
        assert bool(warned) == (name == "compressed"), warned
    assert all("compression: none" in line for line in seen["plain"]), seen
    assert all("compression: zlib@openssh.com" in line for line in seen["compressed"]), seen
    # From the ssh_config: Compression yes for the host.
    use_config(tmp_path, monkeypatch, host_entry(server, "Compression yes"))
    before = len(_compression_lines(server))
    with running(parse_declaration({"name": "from-config", "host": "aliased", "use_agent": False, "local_forwards": [f"0:127.0.0.1:{echo.port}"]})):
        pass
    assert wait_until(lambda: len(_compression_lines(server)) > before, 10)
    assert "compression: zlib@openssh.com" in _compression_lines(server)[before]
