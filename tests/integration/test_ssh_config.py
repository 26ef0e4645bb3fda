# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The user's ssh_config against real sshds: Include, ProxyCommand (ssh -W and an SSM-like stdio relay), certificates."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess
import sys
import typing as t

import pytest
from engine_helpers import LoopbackServer, echo_handler, echo_roundtrip, wait_until
from test_engine import bound, running

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.engine import TunnelEngine
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import AuthenticationFailed, SpecError, Unreachable
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration

RELAY = pathlib.Path(__file__).resolve().parents[1] / "sandbox" / "stdio_relay.py"
# Never resolvable: a hop named so is reachable through its ProxyCommand only.
UNREACHABLE_NAME = "target.burrow.invalid"


@pytest.fixture(scope="module")
def echo() -> t.Iterator[LoopbackServer]:
    with LoopbackServer(echo_handler) as server:
        yield server


def relay_pids(log: pathlib.Path) -> list[int]:
    return [int(line.split()[0]) for line in log.read_text().splitlines()] if log.exists() else []


def gone(pid: int) -> bool:
    """No such process, not even a zombie: the ProxyCommand was reaped."""
    return not os.path.exists(f"/proc/{pid}")


def write_proxied_config(tmp_path: pathlib.Path, target: t.Any, proxy_command: str) -> pathlib.Path:
    """A main config that only Includes (relative glob) the file declaring the host and its ProxyCommand."""
    known = tmp_path / "known_hosts"
    known.write_text(f"[{UNREACHABLE_NAME}]:{target.port} {target.host_pubkey_line}\n")
    included = tmp_path / "conf.d"
    included.mkdir()
    (included / "10-proxied.conf").write_text(
        f"Host proxied\n  HostName {UNREACHABLE_NAME}\n  Port {target.port}\n  User {target.user}\n"
        f"  IdentityFile {target.client_key}\n  ProxyCommand {proxy_command}\n"
    )
    config = tmp_path / "config"
    config.write_text(f"Host *\n  Include conf.d/*.conf\n  UserKnownHostsFile {known}\n")
    return config


def relay_command(log: pathlib.Path, target: t.Any) -> str:
    return f"{sys.executable} {RELAY} {log} {target.host} {target.port} %h %p %r %n %%"


def test_include_with_glob_relative_to_the_including_file(sshd: t.Any, echo: LoopbackServer, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nested = tmp_path / "nested"
    nested.mkdir()
    (nested / "b.conf").write_text(f"Host aliased\n  HostName {sshd.host}\n  Port {sshd.port}\n")
    (tmp_path / "a.conf").write_text(f"Include nested/*.conf\nHost aliased\n  User {sshd.user}\n  IdentityFile {sshd.client_key}\n")
    config = tmp_path / "config"
    config.write_text(f"Include {tmp_path}/a.conf missing-*.conf\nHost *\n  UserKnownHostsFile {sshd.known_hosts}\n")
    monkeypatch.setenv("BURROW_SSH_CONFIG", str(config))
    tunnel = parse_declaration({"name": "included", "host": "aliased", "use_agent": False, "local_forwards": [f"0:127.0.0.1:{echo.port}"]})
    with running(tunnel) as engine:
        assert echo_roundtrip(bound(engine), b"through Include") == b"through Include"


def test_include_loop_and_refused_keyword_are_errors_naming_them(sshd: t.Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loop = tmp_path / "loop.conf"
    loop.write_text("Include loop.conf\n")
    monkeypatch.setenv("BURROW_SSH_CONFIG", str(loop))
    with pytest.raises(Unreachable, match="Include loop"):
        TunnelEngine(parse_declaration({"name": "loop", "host": sshd.host, "dynamic_forwards": ["127.0.0.1:0"]})).start()
    fdpass = tmp_path / "fdpass.conf"
    fdpass.write_text(f"Host {sshd.host}\n  ProxyUseFdpass yes\n")
    monkeypatch.setenv("BURROW_SSH_CONFIG", str(fdpass))
    with pytest.raises(Unreachable, match="proxyusefdpass yes"):
        TunnelEngine(parse_declaration({"name": "fdpass", "host": sshd.host, "dynamic_forwards": ["127.0.0.1:0"]})).start()


def test_stdio_relay_proxycommand_from_an_included_file_is_reaped_on_reconnect_and_teardown(
    sshd: t.Any, echo: LoopbackServer, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "relay.log"
    monkeypatch.setenv("BURROW_SSH_CONFIG", str(write_proxied_config(tmp_path, sshd, relay_command(log, sshd))))
    tunnel = parse_declaration(
        {
            "name": "ssm-like",
            "host": "proxied",
            "use_agent": False,
            "keepalive_interval": 1,
            "keepalive_count_max": 2,
            "local_forwards": [f"0:127.0.0.1:{echo.port}"],
        }
    )
    with running(tunnel) as engine:
        assert echo_roundtrip(bound(engine), b"through the relay") == b"through the relay"
        first = relay_pids(log)
        assert len(first) == 1
        assert log.read_text().split(maxsplit=1)[1].strip() == f"{UNREACHABLE_NAME} {sshd.port} {sshd.user} proxied %"
        os.kill(first[0], 9)  # the proxy dies: the engine reconnects through a new one, and the dead one is reaped
        assert wait_until(lambda: len(relay_pids(log)) == 2 and gone(first[0]), timeout=30), "no reconnect through a new ProxyCommand"
        assert wait_until(lambda: echo_roundtrip(bound(engine), b"again") == b"again", timeout=15)
        second = relay_pids(log)[1]
    assert wait_until(lambda: gone(second), timeout=10), "the ProxyCommand outlived the tunnel"


def test_ssh_w_through_a_bastion_as_proxy_command_option_checks_the_host_key(
    sandbox: t.Any, echo: LoopbackServer, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bastion = sandbox.start_sshd(name="bastion")
    target = sandbox.start_sshd(name="target")
    monkeypatch.setenv("BURROW_SSH_CONFIG", "none")
    ssh_w = (
        f"ssh -F none -o BatchMode=yes -o UserKnownHostsFile={bastion.known_hosts} -o StrictHostKeyChecking=yes "
        f"-i {bastion.client_key} -p {bastion.port} -W %h:%p {bastion.user}@{bastion.host}"
    )
    params = {
        "name": "ssh-w",
        "host": target.host,
        "port": target.port,
        "user": target.user,
        "private_key_file": str(target.client_key),
        "known_hosts_file": str(target.known_hosts),
        "use_agent": False,
        "proxy_command": ssh_w,
        "local_forwards": [f"0:127.0.0.1:{echo.port}"],
    }
    with running(parse_declaration(params)) as engine:
        assert echo_roundtrip(bound(engine), b"via ssh -W") == b"via ssh -W"
    assert "Accepted publickey" in bastion.log_path.read_text(errors="replace"), "ssh -W did not go through the bastion"
    # The target's key is checked through the ProxyCommand as on any hop.
    (tmp_path / "empty_known_hosts").write_text("")
    with pytest.raises(Exception, match="not known"):
        TunnelEngine(parse_declaration({**params, "known_hosts_file": str(tmp_path / "empty_known_hosts")})).start()


def test_failing_proxy_command_reports_its_stderr_and_a_later_hop_cannot_have_one(sshd: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BURROW_SSH_CONFIG", "none")
    failing = {"name": "failing", "host": sshd.host, "port": sshd.port, "use_agent": False, "dynamic_forwards": ["127.0.0.1:0"]}
    with pytest.raises(Unreachable, match=r"exited with status 3: no route to the instance"):
        TunnelEngine(parse_declaration({**failing, "proxy_command": "echo no route to the instance >&2; exit 3"})).start()
    with pytest.raises(Unreachable, match="cannot run the ProxyCommand"):
        TunnelEngine(parse_declaration({**failing, "proxy_command": "/nonexistent/proxy %h"})).start()
    later = [{"host": "first.burrow.invalid"}, {"host": "second.burrow.invalid", "proxy_command": "nc %h %p"}]
    with pytest.raises(SpecError, match="first hop only"):
        TunnelEngine(parse_declaration({**failing, "via": later})).start()


def _ca(tmp_path: pathlib.Path) -> pathlib.Path:
    ca = tmp_path / "user_ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "burrow-test-ca", "-f", str(ca)], check=True)
    return ca


def _signed_key(tmp_path: pathlib.Path, ca: pathlib.Path, name: str, principal: str, validity: str) -> pathlib.Path:
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", f"burrow-{name}", "-n", principal, "-V", validity, f"{key}.pub"], check=True)
    return key


@pytest.fixture
def cert_sshd(sandbox: t.Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> tuple[t.Any, pathlib.Path]:
    """An sshd that trusts a user CA and has no authorized_keys; no ssh_config is read unless a test sets one."""
    monkeypatch.setenv("BURROW_SSH_CONFIG", "none")
    ca = _ca(tmp_path)
    server = sandbox.start_sshd(name="certs", extra_config=f"TrustedUserCAKeys {ca}.pub\nAuthorizedKeysFile none\n")
    return server, ca


def _cert_tunnel(server: t.Any, name: str, **extra: t.Any) -> t.Any:
    params = {
        "name": name,
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "known_hosts_file": str(server.known_hosts),
        "use_agent": False,
        "dynamic_forwards": ["127.0.0.1:0"],
    }
    params.update(extra)
    return parse_declaration(params)


def test_user_certificate_from_option_convention_and_ssh_config(
    cert_sshd: tuple[t.Any, pathlib.Path], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca = cert_sshd
    key = _signed_key(tmp_path, ca, "beside", server.user, "+1h")
    # Without the certificate the key alone is refused: there is no authorized_keys entry.
    moved = tmp_path / "elsewhere-cert.pub"
    os.rename(f"{key}-cert.pub", moved)
    with pytest.raises(AuthenticationFailed):
        TunnelEngine(_cert_tunnel(server, "plain", private_key_file=str(key))).start()
    with running(_cert_tunnel(server, "explicit", private_key_file=str(key), certificate_file=str(moved))) as engine:
        assert engine.chain is not None and engine.chain.is_active()
    os.rename(moved, f"{key}-cert.pub")
    with running(_cert_tunnel(server, "beside", private_key_file=str(key))) as engine:
        assert engine.chain is not None and engine.chain.is_active()
    os.rename(f"{key}-cert.pub", moved)
    config = tmp_path / "config"
    config.write_text(f"Host certhost\n  HostName {server.host}\n  IdentityFile {key}\n  CertificateFile {moved}\n")
    monkeypatch.setenv("BURROW_SSH_CONFIG", str(config))
    tunnel = _cert_tunnel(server, "configured", host="certhost")
    with running(tunnel) as engine:
        assert engine.chain is not None and engine.chain.is_active()
    assert "ED25519-CERT" in server.log_path.read_text(errors="replace")


def test_expired_certificate_fails_with_a_message_that_says_so(cert_sshd: tuple[t.Any, pathlib.Path], tmp_path: pathlib.Path) -> None:
    server, ca = cert_sshd
    expired = _signed_key(tmp_path, ca, "expired", server.user, "-2h:-1h")
    with pytest.raises(AuthenticationFailed, match=r"certificate .*expired-cert\.pub expired at .* UTC"):
        TunnelEngine(_cert_tunnel(server, "expired", private_key_file=str(expired))).start()
    other_user = _signed_key(tmp_path, ca, "otheruser", "someone-else", "+1h")
    with pytest.raises(AuthenticationFailed, match=rf"not valid for user {server.user} \(principals: someone-else\)"):
        TunnelEngine(_cert_tunnel(server, "otheruser", private_key_file=str(other_user))).start()


@contextlib.contextmanager
def _agent_with(tmp_path: pathlib.Path, *keys: pathlib.Path) -> t.Iterator[pathlib.Path]:
    """An ssh-agent of this test holding ``keys`` (ssh-add loads each key's -cert.pub beside it too); its socket."""
    sock = tmp_path / "agent.sock"
    process = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(sock.exists, 30), "ssh-agent did not start"
        env = dict(os.environ, SSH_AUTH_SOCK=str(sock))
        for key in keys:
            subprocess.run(["ssh-add", str(key)], env=env, check=True, capture_output=True, timeout=60)
        yield sock
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_certificate_held_in_the_agent_authenticates_without_a_key_file(
    cert_sshd: tuple[t.Any, pathlib.Path], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca = cert_sshd
    key = _signed_key(tmp_path, ca, "agented", server.user, "+1h")
    home = tmp_path / "home"  # no default identity files: the agent is the only way in
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    with _agent_with(tmp_path, key) as sock:
        listed = subprocess.run(["ssh-add", "-l"], check=True, env=dict(os.environ, SSH_AUTH_SOCK=str(sock)), capture_output=True, text=True, timeout=60)
        assert "ED25519-CERT" in listed.stdout, listed.stdout
        os.rename(key, tmp_path / "key-moved-away")
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        with running(_cert_tunnel(server, "agent-cert", use_agent=True)) as engine:
            assert engine.chain is not None and engine.chain.is_active()
    log = server.log_path.read_text(errors="replace")
    assert "Accepted publickey" in log and "ED25519-CERT" in log, log[-2000:]


def test_expired_certificate_in_the_agent_is_not_offered_and_the_error_says_why(
    cert_sshd: tuple[t.Any, pathlib.Path], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca = cert_sshd
    key = _signed_key(tmp_path, ca, "agent-expired", server.user, "-2h:-1h")
    monkeypatch.setenv("HOME", str(tmp_path))
    with _agent_with(tmp_path, key) as sock:
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        with pytest.raises(AuthenticationFailed, match=r"the agent's certificate .* expired at .* UTC, so it was not offered"):
            TunnelEngine(_cert_tunnel(server, "agent-expired", use_agent=True)).start()


PLAYBOOK = """
- hosts: proxied
  gather_facts: false
  tasks:
    - name: Run a command through the ProxyCommand
      ansible.builtin.raw: echo through-the-proxy
      register: out
    - name: Check it
      ansible.builtin.assert:
        that: "'through-the-proxy' in out.stdout"
"""


def _stop_broker(state_dir: pathlib.Path) -> None:
    from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.client import BrokerClient

    if not wait_until(lambda: not list(state_dir.glob("broker-*.sock")), timeout=10):
        with contextlib.suppress(Exception):
            BrokerClient(str(state_dir)).call({"op": "shutdown"}, timeout=5)


@pytest.mark.parametrize("kind", ["relay", "ssh-w"])
def test_connection_plugin_through_a_proxy_command_from_an_included_file(
    sandbox: t.Any, tmp_path: pathlib.Path, ansible_playbook: t.Callable[..., t.Any], kind: str
) -> None:
    target = sandbox.start_sshd(name="target")
    log = tmp_path / "relay.log"
    if kind == "relay":
        command = relay_command(log, target)
    else:
        bastion = sandbox.start_sshd(name="bastion")
        # The bastion reaches the target by address: ssh -W 127.0.0.1:%p (the name is unresolvable on purpose).
        command = (
            f"ssh -F none -o BatchMode=yes -o UserKnownHostsFile={bastion.known_hosts} -i {bastion.client_key} "
            f"-p {bastion.port} -W {target.host}:%p {bastion.user}@{bastion.host}"
        )
    config = write_proxied_config(tmp_path, target, command)
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"proxied": {"ansible_connection": "burrow.ssh.tunneled", "ansible_host": "proxied"}}}}))
    playbook = tmp_path / "proxied.yml"
    playbook.write_text(PLAYBOOK)
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    try:
        result = ansible_playbook(playbook, inventory, env={"BURROW_STATE_DIR": str(state_dir), "BURROW_SSH_CONFIG_FILE": str(config)}, timeout=300)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        if kind == "relay":
            assert relay_pids(log), "the relay was not used"
            assert wait_until(lambda: all(gone(pid) for pid in relay_pids(log)), timeout=30), "the broker left the ProxyCommand running"
        else:
            assert "Accepted publickey" in bastion.log_path.read_text(errors="replace"), "ssh -W did not go through the bastion"
    finally:
        _stop_broker(state_dir)
