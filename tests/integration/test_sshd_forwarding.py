# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""burrow.ssh.sshd_forwarding (module and role) against a real sshd on loopback.

The module runs through ansible-playbook (localhost, connection local) and edits the test sshd's own
config file; reloads go to that sshd by SIGHUP (reload_method=signal, pid_file from its config).
The sshd comes from tests/sandbox when it exists, else from a small fixture in this file.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / ".build" / "collections"
SSHD = "/usr/sbin/sshd"
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="sshd tests run as root"),
    pytest.mark.skipif(not os.access(SSHD, os.X_OK), reason="needs /usr/sbin/sshd"),
    pytest.mark.timeout(300),
]

BASE_EXTRA = "Match User nobody\n    AllowTcpForwarding no\n"


# -- the sshd under test -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class OwnSshd:
    """A throwaway sshd on 127.0.0.1 with the same attributes as the sandbox's."""

    def __init__(self, base: Path, extra_config: str) -> None:
        self.base = base
        self.host = "127.0.0.1"
        self.port = free_port()
        self.user = "root"
        self.client_key = str(base / "client_key")
        self.known_hosts = str(base / "known_hosts")
        self.config_path = str(base / "sshd_config")
        self.log_path = str(base / "sshd.log")
        self.pid_file = str(base / "sshd.pid")
        host_key = base / "host_key"
        for key in (host_key, Path(self.client_key)):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (base / "authorized_keys").write_text(Path(self.client_key + ".pub").read_text())
        Path(self.known_hosts).write_text(f"[127.0.0.1]:{self.port} {Path(str(host_key) + '.pub').read_text()}")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        Path(self.config_path).write_text(
            textwrap.dedent(
                f"""\
                # test sshd for burrow.ssh.sshd_forwarding
                Port {self.port}
                ListenAddress 127.0.0.1
                HostKey {host_key}
                PidFile {self.pid_file}
                AuthorizedKeysFile {base}/authorized_keys
                PasswordAuthentication no
                UsePAM no
                StrictModes no
                AllowTcpForwarding yes
                GatewayPorts clientspecified
                AllowStreamLocalForwarding yes
                LogLevel VERBOSE
                """
            )
            + extra_config
        )
        subprocess.run([SSHD, "-f", self.config_path, "-E", self.log_path], check=True, timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not os.path.exists(self.pid_file):
            time.sleep(0.05)
        self.pid = int(Path(self.pid_file).read_text().split()[0])

    def child_pids(self) -> List[int]:
        out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True, check=False).stdout
        return [int(p) for p in out.split()]

    def stop(self) -> None:
        for pid in [*self.child_pids(), self.pid]:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pid_alive(self.pid):
            time.sleep(0.05)


def pid_file_of(server: Any) -> str:
    """The PidFile of the sshd under test, read from its config."""
    for line in Path(server.config_path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].lower() == "pidfile":
            return parts[1]
    return "/run/sshd.pid"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    """The sshd under test, config ending in a Match block."""
    try:
        sys.path.insert(0, str(REPO / "tests" / "sandbox"))
        from sandbox import Sandbox  # type: ignore[import-not-found]
    except ImportError:
        Sandbox = None
    if Sandbox is not None:
        with Sandbox() as sb:
            yield sb.start_sshd(extra_config=BASE_EXTRA)
        return
    base = tmp_path / "sshd"
    base.mkdir()
    sshd = OwnSshd(base, BASE_EXTRA)
    try:
        yield sshd
    finally:
        sshd.stop()


@pytest.fixture
def echo_server() -> Iterator[int]:
    """A TCP echo service on 127.0.0.1 (thread); yields its port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        conn.settimeout(30)
        with conn:
            try:
                while not stop.is_set():
                    data = conn.recv(65536)
                    if not data:
                        break
                    conn.sendall(data)
            except OSError:
                pass

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn = listener.accept()[0]
            except socket.timeout:
                continue
            except OSError:
                break
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


# -- helpers ---------------------------------------------------------------------------------------------


def ssh_base(server: Any) -> List[str]:
    return [
        "ssh",
        "-F",
        "/dev/null",
        "-N",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={server.known_hosts}",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ExitOnForwardFailure=yes",
        "-i",
        str(server.client_key),
        "-p",
        str(server.port),
    ]


def ssh_accepts(server: Any) -> bool:
    """A fresh login through the sshd (proves it still accepts connections)."""
    cmd = [c for c in ssh_base(server) if c != "-N"] + [f"{server.user}@{server.host}", "echo", "burrow-ok"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
        if proc.returncode == 0 and "burrow-ok" in proc.stdout:
            return True
        time.sleep(0.2)
    return False


def sshd_t(config: str, spec: Optional[str] = None) -> Dict[str, str]:
    args = [SSHD, "-T", "-f", config] + (["-C", spec] if spec else [])
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=30).stdout
    values: Dict[str, str] = {}
    for line in out.splitlines():
        key, _sep, value = line.partition(" ")
        values.setdefault(key, value)
    return values


def run_module(tmp_path: Path, server: Any, args: Dict[str, Any], check: bool = False, diff: bool = False) -> Dict[str, Any]:
    """One burrow.ssh.sshd_forwarding task via ansible-playbook; returns the registered result and the output."""
    task_args = {"config_file": str(server.config_path), "reload_method": "signal", "pid_file": pid_file_of(server), **args}
    return run_tasks(tmp_path, [{"name": "under test", "burrow.ssh.sshd_forwarding": task_args, "register": "r", "ignore_errors": True}], check, diff)


def run_tasks(tmp_path: Path, tasks: List[Dict[str, Any]], check: bool = False, diff: bool = False) -> Dict[str, Any]:
    out_file = tmp_path / f"result-{time.monotonic_ns()}.json"
    dump = {"ansible.builtin.copy": {"content": "{{ r | to_json }}", "dest": str(out_file), "mode": "0600"}, "check_mode": False}
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [*tasks, dump]}]
    playbook = tmp_path / f"play-{time.monotonic_ns()}.yml"
    playbook.write_text(json.dumps(play))
    proc = run_playbook(playbook, check=check, diff=diff)
    assert out_file.exists(), proc.stdout + proc.stderr
    result = json.loads(out_file.read_text())
    result["_stdout"] = proc.stdout
    return result


def run_playbook(playbook: Path, check: bool = False, diff: bool = False, extra_vars: Optional[Dict[str, Any]] = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCALHOST_WARNING": "0",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        }
    )
    cmd = [ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local", str(playbook)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, check=False)


@pytest.fixture(autouse=True)
def collection_link() -> None:
    link = COLLECTIONS / "ansible_collections" / "burrow" / "ssh"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(REPO)


# -- tests ------------------------------------------------------------------------------------------------


def test_global_value_goes_above_trailing_match_and_second_run_is_unchanged(tmp_path: Path, server: Any) -> None:
    result = run_module(tmp_path, server, {"client_alive_interval": 17, "allow_agent_forwarding": False})
    assert not result.get("failed"), result
    assert result["changed"] is True
    assert result["reloaded"] is True
    assert result["effective"] == {"clientaliveinterval": "17", "allowagentforwarding": "no"}
    lines = Path(server.config_path).read_text().splitlines()
    match_at = next(i for i, line in enumerate(lines) if line.startswith("Match User nobody"))
    assert lines.index("ClientAliveInterval 17") < match_at
    assert lines.index("AllowAgentForwarding no") < match_at
    # sshd -T -C proves the global value applies inside the Match too, and the Match value still holds
    nobody = sshd_t(str(server.config_path), "user=nobody,host=localhost,addr=127.0.0.1")
    assert nobody["clientaliveinterval"] == "17"
    assert nobody["allowtcpforwarding"] == "no"
    other = sshd_t(str(server.config_path), "user=other,host=localhost,addr=127.0.0.1")
    assert other["clientaliveinterval"] == "17"
    assert other["allowtcpforwarding"] == "yes"
    before = Path(server.config_path).read_bytes()
    again = run_module(tmp_path, server, {"client_alive_interval": 17, "allow_agent_forwarding": False})
    assert again["changed"] is False, again
    assert again["reloaded"] is False
    assert Path(server.config_path).read_bytes() == before
    assert ssh_accepts(server)


def test_match_value_only_applies_to_that_match(tmp_path: Path, server: Any) -> None:
    result = run_module(tmp_path, server, {"match": "User tunnel", "gateway_ports": "no", "permit_listen": ["127.0.0.1:8080"]})
    assert not result.get("failed"), result
    assert result["changed"] is True
    assert result["connection_spec"] == "user=tunnel"
    assert result["effective"] == {"gatewayports": "no", "permitlisten": "127.0.0.1:8080"}
    text = Path(server.config_path).read_text()
    assert text.endswith("Match User tunnel\n    GatewayPorts no\n    PermitListen 127.0.0.1:8080\n")
    tunnel = sshd_t(str(server.config_path), "user=tunnel,host=localhost,addr=127.0.0.1")
    assert tunnel["gatewayports"] == "no"
    other = sshd_t(str(server.config_path), "user=other,host=localhost,addr=127.0.0.1")
    assert other["gatewayports"] == "clientspecified"
    assert other["permitlisten"] == "any"
    assert sshd_t(str(server.config_path))["gatewayports"] == "clientspecified"
    again = run_module(tmp_path, server, {"match": "user   tunnel", "gateway_ports": "no", "permit_listen": ["127.0.0.1:8080"]})
    assert again["changed"] is False, again


def test_earlier_value_in_drop_in_is_reported_not_shadowed(tmp_path: Path, server: Any) -> None:
    drop = tmp_path / "sshd_config.d"
    drop.mkdir()
    (drop / "50-vendor.conf").write_text("# vendor default\nGatewayPorts no\n")
    config = Path(server.config_path)
    config.write_text(f"Include {drop}/*.conf\n" + config.read_text())
    before = config.read_bytes()
    result = run_module(tmp_path, server, {"gateway_ports": "yes"})
    assert result.get("failed") is True
    assert f"{drop}/50-vendor.conf line 2" in result["msg"]
    assert "Change or remove it there" in result["msg"]
    assert config.read_bytes() == before
    # sshd indeed reads the drop-in first: a line written in the main file would have been dead
    assert sshd_t(str(config))["gatewayports"] == "no"
    same = run_module(tmp_path, server, {"gateway_ports": "no"})
    assert not same.get("failed"), same
    assert same["changed"] is False
    assert same["effective"] == {"gatewayports": "no"}


def test_later_duplicate_is_left_and_reported(tmp_path: Path, server: Any) -> None:
    config = Path(server.config_path)
    text = config.read_text().replace("LogLevel VERBOSE\n", "LogLevel VERBOSE\nGatewayPorts yes\n")
    config.write_text(text)
    result = run_module(tmp_path, server, {"gateway_ports": "no"})
    assert not result.get("failed"), result
    assert result["changed"] is True
    assert any("is ignored by sshd" in w for w in result["sshd_warnings"])
    new = config.read_text()
    assert "GatewayPorts no\n" in new
    assert "GatewayPorts yes\n" in new
    assert new.index("GatewayPorts no") < new.index("GatewayPorts yes")
    assert result["effective"] == {"gatewayports": "no"}


def test_bad_value_fails_before_any_write(tmp_path: Path, server: Any) -> None:
    before = Path(server.config_path).read_bytes()
    result = run_module(tmp_path, server, {"gateway_ports": "maybe"})
    assert result.get("failed") is True
    assert "gateway_ports" in result["msg"]
    assert "maybe" in result["msg"]
    bad_list = run_module(tmp_path, server, {"permit_open": ["any", "127.0.0.1:80"]})
    assert bad_list.get("failed") is True
    assert "PermitOpen" in bad_list["msg"]
    assert Path(server.config_path).read_bytes() == before
    assert pid_alive(server.pid)
    assert ssh_accepts(server)


def test_sshd_t_rejection_leaves_file_and_sshd_untouched(tmp_path: Path, server: Any) -> None:
    """A keyword illegal inside Match (a hand edit not yet reloaded): sshd -t refuses, nothing is replaced."""
    config = Path(server.config_path)
    config.write_text(config.read_text() + "Match User nobody2\n    Port 2222\n")
    before = config.read_bytes()
    result = run_module(tmp_path, server, {"client_alive_interval": 5})
    assert result.get("failed") is True
    assert "Directive 'Port' is not allowed within a Match block" in result["msg"]
    assert "left untouched" in result["msg"]
    assert "already invalid" in result["msg"]
    assert config.read_bytes() == before
    assert not list(config.parent.glob(".sshd_config.*"))  # candidate removed
    assert pid_alive(server.pid)
    assert ssh_accepts(server)


def test_sshd_t_rejects_gateway_ports_maybe_in_candidate(tmp_path: Path, server: Any) -> None:
    """Bypassing the argument spec, sshd -t itself refuses 'GatewayPorts maybe' with its own message."""
    sys.path.insert(0, str(COLLECTIONS))
    from ansible_collections.burrow.ssh.plugins.module_utils._sshd.sshd import ValidationError, validate_file

    candidate = tmp_path / "candidate"
    candidate.write_text(Path(server.config_path).read_text().replace("GatewayPorts clientspecified", "GatewayPorts maybe"))
    with pytest.raises(ValidationError) as err:
        validate_file(SSHD, str(candidate))
    assert 'unsupported option "maybe"' in str(err.value)


def test_check_mode_with_diff_writes_nothing(tmp_path: Path, server: Any) -> None:
    before = Path(server.config_path).read_bytes()
    mtime = os.stat(server.config_path).st_mtime_ns
    result = run_module(tmp_path, server, {"gateway_ports": "no", "client_alive_interval": 23}, check=True, diff=True)
    assert not result.get("failed"), result
    assert result["changed"] is True
    assert result["reloaded"] is False
    assert Path(server.config_path).read_bytes() == before
    assert os.stat(server.config_path).st_mtime_ns == mtime
    diff = result["diff"]
    assert diff["before"] == before.decode()
    delta = [line for line in difflib.ndiff(diff["before"].splitlines(), diff["after"].splitlines()) if line[:2] in ("- ", "+ ")]
    # exactly these lines change (an existing ClientAliveInterval line, if any, is replaced in place)
    old_interval = [f"- {line}" for line in diff["before"].splitlines() if line.startswith("ClientAliveInterval ")]
    assert sorted(delta) == sorted(["+ ClientAliveInterval 23", "+ GatewayPorts no", "- GatewayPorts clientspecified", *old_interval])
    after = diff["after"].splitlines()
    assert after.index("ClientAliveInterval 23") < after.index("Match User nobody")
    assert diff["before_header"] == f"{server.config_path} (content)"
    assert "-GatewayPorts clientspecified" in result["_stdout"]
    assert "+GatewayPorts no" in result["_stdout"]
    assert "+ClientAliveInterval 23" in result["_stdout"]
    # the candidate was validated and asked: what the values would be
    assert result["effective"] == {"gatewayports": "no", "clientaliveinterval": "23"}
    assert sshd_t(str(server.config_path))["gatewayports"] == "clientspecified"


def test_backup_keeps_the_previous_file(tmp_path: Path, server: Any) -> None:
    before = Path(server.config_path).read_bytes()
    result = run_module(tmp_path, server, {"client_alive_count_max": 4, "backup": True})
    assert result["changed"] is True, result
    backup = Path(result["backup_file"])
    try:
        assert backup.read_bytes() == before
        assert Path(server.config_path).read_bytes() != before
    finally:
        backup.unlink()


def _push(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    got = b""
    deadline = time.monotonic() + 15
    while len(got) < len(payload) and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def _wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_open_tunnel_survives_reload(tmp_path: Path, server: Any, echo_server: int) -> None:
    local = free_port()
    proc = subprocess.Popen(
        [*ssh_base(server), "-L", f"127.0.0.1:{local}:127.0.0.1:{echo_server}", f"{server.user}@{server.host}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_port(local)
        with socket.create_connection(("127.0.0.1", local), timeout=15) as conn:
            first = os.urandom(200_000)
            assert _push(conn, first) == first
            result = run_module(tmp_path, server, {"client_alive_interval": 31, "gateway_ports": "no"})
            assert not result.get("failed"), result
            assert result["reloaded"] is True
            assert result["reload_method"] == "signal"
            assert result["pid"] == server.pid
            second = os.urandom(200_000)
            assert _push(conn, second) == second
        assert proc.poll() is None
        with socket.create_connection(("127.0.0.1", local), timeout=15) as conn2:
            third = b"after reload, new channel"
            assert _push(conn2, third) == third
        assert ssh_accepts(server)
    finally:
        _stop(proc)


def _bound_addresses(port: int, timeout: float = 15) -> List[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
        found = [line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()]
        if found:
            return sorted(found)
        time.sleep(0.1)
    return []


@pytest.mark.parametrize(("policy", "expected"), [("no", ["127.0.0.1"]), ("clientspecified", ["0.0.0.0"])])
def test_gateway_ports_decides_where_remote_forward_binds(tmp_path: Path, server: Any, echo_server: int, policy: str, expected: List[str]) -> None:
    if policy == "no":
        result = run_module(tmp_path, server, {"gateway_ports": "no"})
        assert result["changed"] is True, result
    else:
        run_module(tmp_path, server, {"gateway_ports": "no"})
        result = run_module(tmp_path, server, {"gateway_ports": "clientspecified"})
        assert result["changed"] is True, result
    assert result["effective"] == {"gatewayports": policy}
    remote = free_port()
    proc = subprocess.Popen(
        [*ssh_base(server), "-R", f"0.0.0.0:{remote}:127.0.0.1:{echo_server}", f"{server.user}@{server.host}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        bound = _bound_addresses(remote)
        # GatewayPorts no binds loopback only (127.0.0.1, and [::1] when IPv6 is up)
        assert [a for a in bound if a != "[::1]"] == expected, bound
        with socket.create_connection(("127.0.0.1", remote), timeout=15) as conn:
            assert _push(conn, b"through -R") == b"through -R"
    finally:
        _stop(proc)


ROLE_PLAY = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: burrow.ssh.sshd_forwarding
"""


def test_role_sets_global_and_match_blocks_and_reloads_by_handler(tmp_path: Path, server: Any) -> None:
    playbook = tmp_path / "role.yml"
    playbook.write_text(ROLE_PLAY)
    extra = {
        "sshd_forwarding_config_file": str(server.config_path),
        "sshd_forwarding_reload_method": "signal",
        "sshd_forwarding_pid_file": pid_file_of(server),
        "sshd_forwarding_gateway_ports": "no",
        "sshd_forwarding_allow_tcp_forwarding": "yes",
        "sshd_forwarding_match_blocks": [
            {"match": "User tunnel", "gateway_ports": "clientspecified", "allow_tcp_forwarding": "remote", "permit_listen": ["0.0.0.0:8080"]},
        ],
    }
    log_before = Path(server.log_path).read_text() if os.path.exists(server.log_path) else ""
    proc = run_playbook(playbook, extra_vars=extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "RUNNING HANDLER [burrow.ssh.sshd_forwarding : Reload sshd]" in proc.stdout
    assert re.search(r"localhost\s*: ok=\d+\s+changed=[1-9]", proc.stdout), proc.stdout
    assert sshd_t(str(server.config_path))["gatewayports"] == "no"
    tunnel = sshd_t(str(server.config_path), "user=tunnel")
    assert (tunnel["gatewayports"], tunnel["allowtcpforwarding"], tunnel["permitlisten"]) == ("clientspecified", "remote", "0.0.0.0:8080")
    assert pid_alive(server.pid)
    assert ssh_accepts(server)
    if os.path.exists(server.log_path):
        assert "Received SIGHUP" in Path(server.log_path).read_text()[len(log_before) :]
    again = run_playbook(playbook, extra_vars=extra)
    assert again.returncode == 0, again.stdout + again.stderr
    assert re.search(r"localhost\s*: ok=\d+\s+changed=0", again.stdout), again.stdout
    assert "RUNNING HANDLER" not in again.stdout


def test_role_rejects_bad_variables_before_touching_anything(tmp_path: Path, server: Any) -> None:
    playbook = tmp_path / "role.yml"
    playbook.write_text(ROLE_PLAY)
    before = Path(server.config_path).read_bytes()
    proc = run_playbook(playbook, extra_vars={"sshd_forwarding_config_file": str(server.config_path), "sshd_forwarding_gateway_ports": "maybe"})
    assert proc.returncode != 0
    assert "sshd_forwarding_gateway_ports" in proc.stdout
    assert Path(server.config_path).read_bytes() == before


def test_scenario_playbook_prepares_server_for_exposed_remote_forwards(tmp_path: Path, server: Any) -> None:
    extra = {
        "sshd_forwarding_config_file": str(server.config_path),
        "sshd_forwarding_reload_method": "signal",
        "sshd_forwarding_pid_file": pid_file_of(server),
        "expose_user": "tunnel",
        "expose_permit_listen": ["0.0.0.0:8080"],
        "expose_become": False,
    }
    proc = run_playbook(REPO / "playbooks" / "expose_service_prepare_server.yml", extra_vars={"target": "localhost", **extra})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tunnel = sshd_t(str(server.config_path), "user=tunnel")
    assert tunnel["gatewayports"] == "clientspecified"
    assert tunnel["allowtcpforwarding"] in ("remote", "yes")
    assert tunnel["permitlisten"] == "0.0.0.0:8080"
    assert ssh_accepts(server)


def test_no_sshd_processes_left_by_fixture(server: Any) -> None:
    """Sanity of the fixture itself: the sshd under test is a real listening daemon on loopback."""
    assert pid_alive(server.pid)
    assert shutil.which("ss")
    assert _bound_addresses(server.port) == ["127.0.0.1"]


def test_integration_target_four_steps(tmp_path: Path, server: Any) -> None:
    """tests/integration/targets/sshd_forwarding: check, apply, check again, apply again."""
    playbook = tmp_path / "target.yml"
    tasks = REPO / "tests" / "integration" / "targets" / "sshd_forwarding" / "tasks" / "main.yml"
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [{"ansible.builtin.include_tasks": str(tasks)}]}]))
    proc = run_playbook(playbook, extra_vars={"sshd_config": str(server.config_path), "sshd_pid_file": pid_file_of(server)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"localhost\s*: ok=\d+\s+changed=2\s", proc.stdout), proc.stdout  # check run + first apply
    assert sshd_t(str(server.config_path), "user=burrow-target")["allowtcpforwarding"] == "local"
    assert ssh_accepts(server)
