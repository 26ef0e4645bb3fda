# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""burrow.ssh.tunneled against a target sshd in a network namespace, reached through a bastion sshd on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import typing as t

import pytest
from test_ssh_config import _ca, _signed_key

TARGET_DIR = pathlib.Path(__file__).resolve().parent / "targets" / "connection_tunneled"
# The /24 of the veth pair; another third octet (BURROW_CT_SUBNET_OCTET) lets two runs share the machine.
_OCTET = int(os.environ.get("BURROW_CT_SUBNET_OCTET", "7"))
if not 0 <= _OCTET <= 255:
    raise ValueError(f"BURROW_CT_SUBNET_OCTET must be 0..255, not {_OCTET}")
BASTION_SIDE = f"10.203.{_OCTET}.1"
TARGET_ADDRESS = f"10.203.{_OCTET}.2"

pytestmark = [pytest.mark.needs_root, pytest.mark.slow]


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


@contextlib.contextmanager
def network_namespace() -> t.Iterator[str]:
    """A namespace holding 10.203.7.2/24, joined by a veth pair to 10.203.7.1/24 in the root namespace; deleted on exit."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    token = secrets.token_hex(3)
    name = f"burrow-ct-{token}"
    outside, inside = f"bct{token}", f"bcti{token}"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", name)
        _ip("addr", "add", f"{BASTION_SIDE}/24", "dev", outside)
        _ip("link", "set", outside, "up")
        _ip("-n", name, "addr", "add", f"{TARGET_ADDRESS}/24", "dev", inside)
        _ip("-n", name, "link", "set", inside, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        with contextlib.suppress(RuntimeError):
            _ip("link", "del", outside)
        _ip("netns", "del", name)


class Lab:
    """Bastion and target sshd, a combined known_hosts, an HTTP server on the controller side, an isolated broker dir."""

    def __init__(self, sandbox: t.Any, netns: str, workdir: pathlib.Path) -> None:
        self.sandbox = sandbox
        self.netns = netns
        self.workdir = workdir
        # The bastion logs each direct-tcpip request (DEBUG1): proof that the target was reached through it.
        self.bastion = sandbox.start_sshd(name="bastion", extra_config="LogLevel DEBUG1\n")
        self.target = sandbox.start_sshd(name="target", netns=netns, listen=TARGET_ADDRESS)
        self.http = sandbox.start_http(body=b"page served on the controller side\n")
        self.http_body = sandbox.http_body.decode()
        self.known_hosts = workdir / "known_hosts"
        self.known_hosts.write_text(self.bastion.known_hosts.read_text() + self.target.known_hosts.read_text())
        self.known_hosts.chmod(0o600)
        self.state_dir = workdir / "state"
        self.state_dir.mkdir(mode=0o700)
        self.local_tmp = workdir / "local"
        self.local_tmp.mkdir(mode=0o700)
        self.forward_ports = {"tunneled-pipelining": 31081, "tunneled-no-pipelining": 31082}
        self.socks_ports = {"tunneled-pipelining": 31091, "tunneled-no-pipelining": 31092}

    def inventory(self, known_hosts: pathlib.Path | None = None, via_inventory_host: bool = False, **extra: t.Any) -> pathlib.Path:
        common = {
            "ansible_connection": "burrow.ssh.tunneled",
            "ansible_host": TARGET_ADDRESS,
            "ansible_port": self.target.port,
            "ansible_user": self.target.user,
            "ansible_ssh_private_key_file": str(self.target.client_key),
            "ansible_python_interpreter": str(pathlib.Path(sys.executable)),
            "burrow_via": [{"host": self.bastion.host, "port": self.bastion.port, "user": self.bastion.user, "private_key_file": str(self.bastion.client_key)}],
            "burrow_known_hosts_file": str(known_hosts or self.known_hosts),
            "burrow_use_agent": False,
        }
        common.update(extra)
        common = {key: value for key, value in common.items() if value is not None}
        hosts = {}
        for host, pipelining in (("tunneled-pipelining", True), ("tunneled-no-pipelining", False)):
            hosts[host] = {
                "ansible_pipelining": pipelining,
                "forward_port": self.forward_ports[host],
                "socks_port": self.socks_ports[host],
                "burrow_remote_forwards": [f"127.0.0.1:{self.forward_ports[host]}:127.0.0.1:{self.http.port}"],
                "burrow_reverse_socks": [f"127.0.0.1:{self.socks_ports[host]}"],
            }
        inventory: dict[str, t.Any] = {"tunneled": {"hosts": hosts, "vars": common}}
        if via_inventory_host:
            # The bastion is an inventory host of its own (not in the play), named in burrow_via.
            inventory["jump_hosts"] = {
                "hosts": {
                    "jump1": {
                        "ansible_host": self.bastion.host,
                        "ansible_port": self.bastion.port,
                        "ansible_user": self.bastion.user,
                        "ansible_ssh_private_key_file": str(self.bastion.client_key),
                    }
                }
            }
            common["burrow_via"] = ["jump1"]
        path = self.workdir / f"inventory-{secrets.token_hex(3)}.json"
        path.write_text(json.dumps(inventory))
        return path

    def run(
        self, ansible_playbook: t.Callable[..., t.Any], playbook: str, inventory: pathlib.Path, env: dict[str, str] | None = None, **extra_vars: t.Any
    ) -> t.Any:
        variables = {"local_tmp": str(self.local_tmp), "run_id": secrets.token_hex(3), "target_address": TARGET_ADDRESS, **extra_vars}
        run_env = {"BURROW_STATE_DIR": str(self.state_dir), **(env or {})}
        return ansible_playbook(TARGET_DIR / playbook, inventory, extra_vars=variables, env=run_env, timeout=600)

    def broker_sockets(self) -> list[pathlib.Path]:
        return sorted(self.state_dir.glob("broker-*.sock"))


def _auth_count(sshd: t.Any) -> int:
    return sshd.log_path.read_text(errors="replace").count("Accepted publickey")


def _failures(result: t.Any) -> str:
    return (result.stdout[-6000:] + "\n" + result.stderr[-3000:]).strip()


def _ok_tasks(result: t.Any, host: str) -> list[str]:
    names = []
    for play in result.json["plays"]:
        for task in play["tasks"]:
            outcome = task["hosts"].get(host)
            if outcome is not None and not outcome.get("failed") and not outcome.get("unreachable") and not outcome.get("skipped"):
                names.append(task["task"]["name"])
    return names


def _host_result(result: t.Any, host: str, task_name: str) -> dict[str, t.Any]:
    for play in result.json["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"] == task_name and host in task["hosts"]:
                return task["hosts"][host]
    raise AssertionError(f"no result for {task_name} on {host}")


def _wait_broker_gone(lab: Lab, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not lab.broker_sockets():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def lab() -> t.Iterator[Lab]:
    from sandbox import Sandbox

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="burrow-ct-"))
    try:
        with network_namespace() as netns, Sandbox() as box:
            lab = Lab(box, netns, workdir)
            try:
                yield lab
            finally:
                _stop_brokers(lab)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _stop_brokers(lab: Lab) -> None:
    """The broker exits on its own once the playbook has; if a test left one behind, stop it by its pid."""
    if _wait_broker_gone(lab, 5.0):
        return
    from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.client import BrokerClient

    with contextlib.suppress(Exception):
        client = BrokerClient(str(lab.state_dir))
        sock = client._try_connect()
        if sock is not None:
            sock.close()
            client.call({"op": "shutdown"}, timeout=5)
    _wait_broker_gone(lab, 5.0)


def test_standard_connection_checks_through_the_bastion(lab: Lab, ansible_playbook: t.Callable[..., t.Any]) -> None:
    have_sudo = shutil.which("sudo") is not None
    bastion_log_before = lab.bastion.log_path.read_text(errors="replace")
    result = lab.run(ansible_playbook, "test_connection.yml", lab.inventory(), become_su=os.geteuid() == 0, become_sudo=have_sudo)
    assert result.returncode == 0, _failures(result)
    for host in ("tunneled-pipelining", "tunneled-no-pipelining"):
        done = _ok_tasks(result, host)
        for task in (
            "Wait for the connection",
            "Check the raw output",
            "Check the unicode round trip",
            "The target sees its namespace address",
            "Copied and fetched files are identical, byte for byte",
            "Check the prompted become (the prompt and the success marker are not in the output)",
            "Check after reset",
            "Wait for the connection after the reset",
        ):
            assert task in done, f"{task} did not pass on {host}"
        if os.geteuid() == 0:
            assert "Check su" in done
        if have_sudo:
            assert "Check sudo" in done
    # Every connection to the target went through the bastion (its direct-tcpip requests name the target).
    new_log = lab.bastion.log_path.read_text(errors="replace")[len(bastion_log_before) :]
    assert f"target {TARGET_ADDRESS} port {lab.target.port}" in new_log
    assert _wait_broker_gone(lab), "the session broker did not exit after the playbook"


def test_second_and_later_tasks_reuse_the_session(lab: Lab, ansible_playbook: t.Callable[..., t.Any]) -> None:
    bastion_before, target_before = _auth_count(lab.bastion), _auth_count(lab.target)
    result = lab.run(ansible_playbook, "commands.yml", lab.inventory(), task_count=8)
    assert result.returncode == 0, _failures(result)
    # 2 inventory hosts x 8 tasks: one target session per host, and the bastion connection shared by both.
    assert _auth_count(lab.target) - target_before == 2
    assert _auth_count(lab.bastion) - bastion_before == 1
    assert _wait_broker_gone(lab)


def test_remote_forward_and_reverse_socks_reach_the_controller_side(lab: Lab, ansible_playbook: t.Callable[..., t.Any]) -> None:
    have_curl = shutil.which("curl") is not None
    result = lab.run(ansible_playbook, "forwards.yml", lab.inventory(), expected_body=lab.http_body, http_port=lab.http.port, have_curl=have_curl)
    assert result.returncode == 0, _failures(result)
    for host in ("tunneled-pipelining", "tunneled-no-pipelining"):
        assert _host_result(result, host, "Fetch the controller-side page through the remote forward")["content"] == lab.http_body
        if have_curl:
            assert _host_result(result, host, "Fetch the same page through the reverse SOCKS proxy (curl on the target)")["stdout"] == lab.http_body.strip()
    assert _wait_broker_gone(lab)
    # Who used the forwards (burrow_audit defaults to file): kept after the session, one line per connection.
    for host in ("tunneled-pipelining", "tunneled-no-pipelining"):
        trail = lab.state_dir / f"connection-{host}.audit.jsonl"
        assert stat.S_IMODE(trail.stat().st_mode) == 0o600
        lines = [json.loads(line) for line in trail.read_text().splitlines()]
        page = [line for line in lines if line["destination"] == f"127.0.0.1:{lab.http.port}" and line["bytes_in"] >= len(lab.http_body.encode())]
        assert all(line["ended"] == "closed" and line["client"] for line in page), lines
        assert any(line["forward"] == f"remote 127.0.0.1:{lab.forward_ports[host]} -> 127.0.0.1:{lab.http.port}" for line in page), lines
        if have_curl:
            assert any(line["forward"] == f"remote 127.0.0.1:{lab.socks_ports[host]} -> socks" for line in page), lines
    # The forwards went away with the sessions: nothing listens on the target's forward ports any more.
    probe = subprocess.run(
        ["ip", "netns", "exec", lab.netns, "ss", "-Hltn", f"( sport = :{lab.forward_ports['tunneled-pipelining']} )"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if probe.returncode == 0:
        assert probe.stdout.strip() == ""


def test_bad_option_fails_before_any_handshake_naming_the_variable(lab: Lab, ansible_playbook: t.Callable[..., t.Any]) -> None:
    bastion_before, target_before = _auth_count(lab.bastion), _auth_count(lab.target)
    result = lab.run(ansible_playbook, "commands.yml", lab.inventory(burrow_via=["deploy@bastion;rm -rf /"]), task_count=1)
    assert result.returncode != 0
    outcome = _host_result(result, "tunneled-pipelining", "Command")
    message = json.dumps(outcome)
    assert "burrow_via[0]" in message, message
    assert (_auth_count(lab.bastion), _auth_count(lab.target)) == (bastion_before, target_before)
    assert _wait_broker_gone(lab)


def test_bastion_named_by_inventory_hostname(lab: Lab, ansible_playbook: t.Callable[..., t.Any]) -> None:
    bastion_log_before = lab.bastion.log_path.read_text(errors="replace")
    result = lab.run(ansible_playbook, "commands.yml", lab.inventory(via_inventory_host=True), task_count=2)
    assert result.returncode == 0, _failures(result)
    assert _ok_tasks(result, "tunneled-pipelining") == ["Command"]
    # The hop came from jump1's inventory variables: the bastion sshd carried the connection to the target.
    new_log = lab.bastion.log_path.read_text(errors="replace")[len(bastion_log_before) :]
    assert f"target {TARGET_ADDRESS} port {lab.target.port}" in new_log
    assert _wait_broker_gone(lab)


def test_ssh_config_alias_as_ansible_host(lab: Lab, ansible_playbook: t.Callable[..., t.Any]) -> None:
    """ansible_host may be an ssh_config alias, as with the builtin ssh connection: HostName, Port and User come from it."""
    config = lab.workdir / "ssh_config"
    config.write_text(f"Host burrow-ct-alias\n  HostName {TARGET_ADDRESS}\n  Port {lab.target.port}\n  User {lab.target.user}\n")
    inventory = lab.inventory(ansible_host="burrow-ct-alias", ansible_port=None, ansible_user=None, burrow_ssh_config_file=str(config))
    bastion_log_before = lab.bastion.log_path.read_text(errors="replace")
    result = lab.run(ansible_playbook, "commands.yml", inventory, task_count=1)
    assert result.returncode == 0, _failures(result)
    assert _ok_tasks(result, "tunneled-pipelining") == ["Command"]
    new_log = lab.bastion.log_path.read_text(errors="replace")[len(bastion_log_before) :]
    assert f"target {TARGET_ADDRESS} port {lab.target.port}" in new_log
    assert _wait_broker_gone(lab)


@pytest.mark.parametrize("hop", ["bastion", "target"])
def test_host_key_mismatch_on_either_hop_fails_clearly(lab: Lab, ansible_playbook: t.Callable[..., t.Any], hop: str) -> None:
    other = lab.target if hop == "bastion" else lab.bastion
    changed = lab.bastion if hop == "bastion" else lab.target
    # known_hosts holds a different key for the hop under test (another sshd's host key).
    name = changed.host if changed.port == 22 else f"[{changed.host}]:{changed.port}"
    wrong_key = other.host_pubkey_line
    lines = [line for line in lab.known_hosts.read_text().splitlines() if not line.startswith(name + " ")]
    lines.append(f"{name} {wrong_key}")
    known_hosts = lab.workdir / f"known_hosts-wrong-{hop}"
    known_hosts.write_text("\n".join(lines) + "\n")
    result = lab.run(ansible_playbook, "hostkey.yml", lab.inventory(known_hosts=known_hosts))
    assert result.returncode != 0
    outcome = _host_result(result, "tunneled-pipelining", "Raw")
    assert outcome.get("unreachable") is True
    message = outcome["msg"]
    assert "CHANGED" in message, message
    assert f"{changed.host}:{changed.port}" in message, message
    assert "ssh-keygen -R" in message, message
    assert "should-not-run" not in result.stdout
    assert _wait_broker_gone(lab)


def test_wrong_become_password_fails_clearly(lab: Lab, ansible_playbook: t.Callable[..., t.Any]) -> None:
    playbook = lab.workdir / "wrong_become.yml"
    playbook.write_text(
        "- hosts: tunneled\n  gather_facts: false\n  tasks:\n"
        "    - name: Wrong password\n      ansible.builtin.command: echo never\n"
        "      become: true\n      become_method: burrow_fakepw\n      vars:\n        ansible_become_password: not-the-password\n"
    )
    shutil.copytree(TARGET_DIR / "become_plugins", lab.workdir / "become_plugins", dirs_exist_ok=True)
    variables = {"local_tmp": str(lab.local_tmp)}
    result = ansible_playbook(playbook, lab.inventory(), extra_vars=variables, env={"BURROW_STATE_DIR": str(lab.state_dir)}, timeout=300)
    assert result.returncode != 0
    for host in ("tunneled-pipelining", "tunneled-no-pipelining"):
        outcome = _host_result(result, host, "Wrong password")
        assert outcome.get("failed") is True
        text = json.dumps(outcome)
        assert "Incorrect burrow_fakepw password" in text or "Sorry, try again" in text, text
        assert "never" not in outcome.get("stdout", "")
    assert _wait_broker_gone(lab)


def test_a_connection_listener_beyond_loopback_needs_allow_non_loopback_bind(lab: Lab, ansible_playbook: t.Callable[..., t.Any]) -> None:
    """Issue 16 item 5: the tunnel module's bind policy, for burrow_local_forwards (refused before any handshake)."""
    exposed = ["0.0.0.0:0:127.0.0.1:22"]
    bastion_before, target_before = _auth_count(lab.bastion), _auth_count(lab.target)
    refused = lab.run(ansible_playbook, "commands.yml", lab.inventory(burrow_local_forwards=exposed), task_count=1)
    assert refused.returncode != 0
    message = json.dumps(_host_result(refused, "tunneled-pipelining", "Command"))
    assert "burrow_local_forwards[0]: " in message and "set burrow_allow_non_loopback_bind=true" in message, message
    assert (_auth_count(lab.bastion), _auth_count(lab.target)) == (bastion_before, target_before)
    assert _wait_broker_gone(lab)

    allowed = lab.run(ansible_playbook, "commands.yml", lab.inventory(burrow_local_forwards=exposed, burrow_allow_non_loopback_bind=True), task_count=1)
    assert allowed.returncode == 0, _failures(allowed)
    # Some ansible-core versions wrap warnings at the terminal width: compare with the whitespace collapsed.
    output = " ".join((allowed.stdout + allowed.stderr).split())
    assert "burrow_local_forwards[0] listens on 0.0.0.0:0: reachable from other machines" in output, _failures(allowed)
    assert _wait_broker_gone(lab)


def test_a_connection_remote_forward_widened_by_gateway_ports_yes_needs_allow_non_loopback_bind(
    lab: Lab, ansible_playbook: t.Callable[..., t.Any], tmp_path: pathlib.Path
) -> None:
    """Issue 16 items 4 and 5: what the server really binds for a connection's loopback burrow_remote_forwards follows the
    bind policy: widened to every address by GatewayPorts yes, it fails unless burrow_allow_non_loopback_bind."""
    target = lab.sandbox.start_sshd(name="gw-target", netns=lab.netns, listen=TARGET_ADDRESS, extra_config="GatewayPorts yes\n")
    try:
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(lab.bastion.known_hosts.read_text() + target.known_hosts.read_text())
        known_hosts.chmod(0o600)
        hop = {"known_hosts": known_hosts, "ansible_port": target.port, "ansible_user": target.user, "ansible_ssh_private_key_file": str(target.client_key)}
        refused = lab.run(ansible_playbook, "commands.yml", lab.inventory(**hop), task_count=1)
        assert refused.returncode != 0, _failures(refused)
        message = json.dumps(_host_result(refused, "tunneled-pipelining", "Command"))
        assert "listens on every address" in message and "GatewayPorts" in message, message
        assert _wait_broker_gone(lab)

        allowed = lab.run(ansible_playbook, "commands.yml", lab.inventory(burrow_allow_non_loopback_bind=True, **hop), task_count=1)
        assert allowed.returncode == 0, _failures(allowed)
        output = " ".join((allowed.stdout + allowed.stderr).split())
        assert "on every address, not only 127.0.0.1" in output, _failures(allowed)
        assert _wait_broker_gone(lab)
    finally:
        target.stop()
        _stop_brokers(lab)


@pytest.fixture
def controller_agent(tmp_path: pathlib.Path) -> t.Iterator[tuple[pathlib.Path, str]]:
    """An ssh-agent on the controller with a fresh key: its socket and the key's fingerprint."""
    key = tmp_path / "agent_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "burrow-forwarded", "-f", str(key)], check=True, timeout=30)
    listed = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], check=True, capture_output=True, text=True, timeout=30)
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sock.exists(), "ssh-agent did not start"
        subprocess.run(["ssh-add", str(key)], env=dict(os.environ, SSH_AUTH_SOCK=str(sock)), check=True, capture_output=True, timeout=30)
        yield sock, listed.stdout.split()[1]
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_agent_forwarding_lists_the_controller_s_key_on_the_target_only_when_on(
    lab: Lab, ansible_playbook: t.Callable[..., t.Any], controller_agent: tuple[pathlib.Path, str]
) -> None:
    sock, fingerprint = controller_agent
    outcomes = {}
    for forward in (True, False):
        result = lab.run(ansible_playbook, "agent.yml", lab.inventory(burrow_forward_agent=forward), env={"SSH_AUTH_SOCK": str(sock)})
        assert result.returncode == 0, _failures(result)
        outcomes[forward] = _host_result(result, "tunneled-pipelining", "List the agent's keys on the target")
        assert _wait_broker_gone(lab)
    assert outcomes[True]["rc"] == 0 and fingerprint in outcomes[True]["stdout"], outcomes[True]
    # Off (the default): no SSH_AUTH_SOCK on the target, ssh-add cannot reach an agent (rc 2).
    assert outcomes[False]["rc"] != 0 and fingerprint not in outcomes[False]["stdout"], outcomes[False]


def test_ca_signed_certificate_alone_authenticates_the_connection(lab: Lab, ansible_playbook: t.Callable[..., t.Any], tmp_path: pathlib.Path) -> None:
    """burrow_certificate_file: a target sshd that trusts only a user CA (no authorized_keys) behind the bastion."""
    ca = _ca(tmp_path)
    key = _signed_key(tmp_path, ca, "ct-cert", lab.target.user, "+1h")
    certificate = tmp_path / "issued-cert.pub"  # not beside the key: only burrow_certificate_file names it
    os.rename(f"{key}-cert.pub", certificate)
    target = lab.sandbox.start_sshd(
        name="cert-target", netns=lab.netns, listen=TARGET_ADDRESS, extra_config=f"TrustedUserCAKeys {ca}.pub\nAuthorizedKeysFile none\n"
    )
    try:
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(lab.bastion.known_hosts.read_text() + target.known_hosts.read_text())
        known_hosts.chmod(0o600)
        inventory = lab.inventory(
            known_hosts=known_hosts, ansible_port=target.port, ansible_ssh_private_key_file=str(key), burrow_certificate_file=str(certificate)
        )
        result = lab.run(ansible_playbook, "commands.yml", inventory, task_count=2)
        assert result.returncode == 0, _failures(result)
        log = target.log_path.read_text(errors="replace")
        assert "Accepted publickey" in log and "ED25519-CERT" in log, log[-3000:]
        assert _wait_broker_gone(lab), "the session broker did not exit after the playbook"
    finally:
        target.stop()


# -- burrow_persist (issue 18): sessions that outlive the run ------------------------------------------------------------


def _broker_status(lab: Lab) -> dict[str, t.Any] | None:
    from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.client import BrokerClient

    client = BrokerClient(str(lab.state_dir))
    sock = client._try_connect()
    if sock is None:
        return None
    sock.close()
    try:
        return client.call({"op": "status"}, timeout=10)
    except Exception as exc:  # the broker was stopping: as good as gone
        return {"error": repr(exc), "sessions": []}


def _wait_status(lab: Lab, predicate: t.Callable[[dict[str, t.Any]], bool], timeout: float) -> dict[str, t.Any] | None:
    """The broker's status once predicate holds for it, polled until the deadline; None when it never did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _broker_status(lab)
        if status is not None and "error" not in status and predicate(status):
            return status
        time.sleep(0.1)
    return None


def _all_persisted(status: dict[str, t.Any]) -> bool:
    """Every session of the broker is counting down its burrow_persist (the run that used them has exited)."""
    return bool(status["sessions"]) and all(node["expires_in"] is not None for node in status["sessions"])


def _broker_log(lab: Lab) -> str:
    return "".join(path.read_text(errors="replace") for path in sorted(lab.state_dir.glob("broker-*.log")))


def test_persisted_sessions_serve_the_next_run_without_a_handshake(lab: Lab, ansible_playbook: t.Callable[..., t.Any]) -> None:
    inventory = lab.inventory(burrow_persist=60)
    try:
        first = lab.run(ansible_playbook, "commands.yml", inventory, task_count=2)
        assert first.returncode == 0, _failures(first)
        status = _wait_status(lab, _all_persisted, 30)
        assert status is not None, f"the broker did not keep the sessions after the run: {_broker_status(lab)}\n{_broker_log(lab)[-2000:]}"
        # Two target sessions and the bastion's, each with the whole persist ahead of it.
        assert len(status["sessions"]) == 3 and all(node["persist"] == 60 for node in status["sessions"]), status
        bastion_before, target_before = _auth_count(lab.bastion), _auth_count(lab.target)
        second = lab.run(ansible_playbook, "commands.yml", inventory, task_count=2)
        assert second.returncode == 0, _failures(second) + "\n" + _broker_log(lab)[-3000:]
        assert (_auth_count(lab.bastion), _auth_count(lab.target)) == (bastion_before, target_before), "the second run did an SSH handshake"
        assert _ok_tasks(second, "tunneled-pipelining") == ["Command"]

        # A persisted target transport killed while the broker is idle (its sshd session process gone): the next run
        # reconnects that hop alone, through the persisted bastion connection.
        assert _wait_status(lab, _all_persisted, 30) is not None
        from sandbox import _proc_stat, descendants

        children = [pid for pid in descendants(lab.target.pid) if (_proc_stat(pid) or ("", 0, 0))[1] == lab.target.pid]
        assert children, "no sshd session process on the target"
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        bastion_before, target_before = _auth_count(lab.bastion), _auth_count(lab.target)
        third = lab.run(ansible_playbook, "commands.yml", inventory, task_count=2)
        assert third.returncode == 0, _failures(third) + "\n" + _broker_log(lab)[-3000:]
        assert _auth_count(lab.target) - target_before == 2
        assert _auth_count(lab.bastion) == bastion_before
    finally:
        _stop_brokers(lab)


def test_the_session_broker_has_no_core_dumps(lab: Lab, ansible_playbook: t.Callable[..., t.Any]) -> None:
    """Issue 16 item 14: the broker holds the sessions' keys and passwords in memory: RLIMIT_CORE 0, soft and hard."""
    try:
        run = lab.run(ansible_playbook, "commands.yml", lab.inventory(burrow_persist=60), task_count=1)
        assert run.returncode == 0, _failures(run)
        status = _wait_status(lab, _all_persisted, 30)
        assert status is not None, f"the broker did not keep the sessions after the run: {_broker_status(lab)}"
        limits = pathlib.Path(f"/proc/{status['pid']}/limits").read_text().splitlines()
        core = [line.split()[4:6] for line in limits if line.startswith("Max core file size")]
        assert core == [["0", "0"]], core
    finally:
        _stop_brokers(lab)


def test_a_persisted_session_near_its_expiry_is_not_reused_and_the_broker_exits_after_it(lab: Lab, ansible_playbook: t.Callable[..., t.Any]) -> None:
    persist, margin = 14, 5.0  # margin: max(5 s, 10 % of 14 s), at most half of it
    inventory = lab.inventory(burrow_persist=persist)
    flag = lab.workdir / f"go-{secrets.token_hex(3)}"
    playbook = lab.workdir / "persist_second_run.yml"
    # The second run waits on the controller until the test has seen the persisted sessions enter their margin,
    # then connects: its first task through the plugin arrives while they still exist, near their expiry.
    playbook.write_text(
        "- hosts: tunneled\n  gather_facts: false\n  tasks:\n"
        f"    - name: Wait for the go\n      ansible.builtin.wait_for:\n        path: {flag}\n        sleep: 1\n        timeout: 300\n"
        "      delegate_to: localhost\n      run_once: true\n"
        "    - name: Command\n      ansible.builtin.command: echo second\n      changed_when: false\n"
    )
    try:
        first = lab.run(ansible_playbook, "commands.yml", inventory, task_count=1)
        assert first.returncode == 0, _failures(first)
        assert _wait_status(lab, _all_persisted, 30) is not None, _broker_status(lab)
        bastion_before, target_before = _auth_count(lab.bastion), _auth_count(lab.target)
        outcome: list[t.Any] = []
        variables = {"local_tmp": str(lab.local_tmp)}
        env = {"BURROW_STATE_DIR": str(lab.state_dir)}
        runner = threading.Thread(target=lambda: outcome.append(ansible_playbook(playbook, inventory, extra_vars=variables, env=env, timeout=600)))
        runner.start()
        try:
            in_margin = _wait_status(
                lab, lambda status: _all_persisted(status) and max(node["expires_in"] for node in status["sessions"]) <= margin, persist + 30
            )
            assert in_margin is not None, "the persisted sessions never reached their margin"
            assert all(node["persist_margin"] == margin for node in in_margin["sessions"]), in_margin
            flag.write_text("go\n")
        finally:
            runner.join(timeout=600)
        assert outcome and outcome[0].returncode == 0, _failures(outcome[0]) if outcome else "the second run did not finish"
        log = _broker_log(lab)
        assert "not reusing the session to" in log, f"the second run came after the sessions had expired (machine too slow?):\n{log[-3000:]}"
        # New sessions for both hosts and the bastion, not the ones about to expire.
        assert _auth_count(lab.target) - target_before == 2
        assert _auth_count(lab.bastion) - bastion_before == 1
        # The broker outlives the run for burrow_persist seconds, then closes the sessions and exits.
        status = _wait_status(lab, _all_persisted, 30)
        assert status is not None
        pid = status["pid"]
        assert _wait_broker_gone(lab, persist + 60), "the broker did not exit after burrow_persist"
        deadline = time.monotonic() + 30
        while pathlib.Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pathlib.Path(f"/proc/{pid}").exists(), "the broker process is still running"
        assert f"kept {persist:g} s after the last ansible-playbook that used it" in _broker_log(lab)
    finally:
        _stop_brokers(lab)
