# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every scenario playbook, run as `ansible-playbook burrow.ssh.<name>` against the sandbox.

Where reachability matters (expose_service, multi_hop, airgapped_packages) the servers run in a network namespace
with 10.203.x.x addresses that exist only on this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import typing as t
import urllib.request

import pytest
import yaml
from engine_helpers import echo_roundtrip

REPO = pathlib.Path(__file__).resolve().parents[2]
NO_CONTROL_MASTER = {"ANSIBLE_SSH_ARGS": "-o ControlMaster=no -o ControlPath=none"}


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, timeout=30, capture_output=True)


@contextlib.contextmanager
def network_namespace(subnet: int) -> t.Iterator[tuple[str, str, str]]:
    """A namespace reached over a veth pair: (name, root-side address, namespace address) in 10.203.<subnet>.0/24."""
    name = f"burrow-pb-{secrets.token_hex(3)}"
    outside, inside = f"bpo{secrets.token_hex(3)}", f"bpi{secrets.token_hex(3)}"
    root_address, ns_address = f"10.203.{subnet}.1", f"10.203.{subnet}.2"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", name)
        _ip("addr", "add", f"{root_address}/24", "dev", outside)
        _ip("link", "set", outside, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{ns_address}/24", "dev", inside)
        _ip("netns", "exec", name, "ip", "link", "set", inside, "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield name, root_address, ns_address
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", outside)
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


@pytest.fixture
def state_dir(tmp_path: pathlib.Path) -> t.Iterator[pathlib.Path]:
    path = tmp_path / "state"
    yield path
    if path.is_dir():
        for state in path.glob("*.json"):
            with contextlib.suppress(ProcessLookupError, KeyError, ValueError, OSError):
                os.kill(int(json.loads(state.read_text())["pid"]), signal.SIGKILL)


def _env(state_dir: pathlib.Path, **extra: str) -> dict[str, str]:
    return {"BURROW_STATE_DIR": str(state_dir), **NO_CONTROL_MASTER, **extra}


def _task(result: t.Any, name: str) -> dict[str, t.Any]:
    for play in result.json["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"].split(" : ")[-1] == name:
                return task["hosts"]
    raise AssertionError(f"task {name!r} not in the run")


def _ok(result: t.Any) -> None:
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def _left(state_dir: pathlib.Path) -> list[str]:
    return sorted(path.stem for path in state_dir.glob("*.json")) if state_dir.is_dir() else []


def test_bastion_database(sandbox_session: t.Any, postgres: t.Any, sandbox_inventory: pathlib.Path, ansible_playbook: t.Any, state_dir: pathlib.Path) -> None:
    result = ansible_playbook(
        "burrow.ssh.bastion_database",
        sandbox_inventory,
        {
            "bastion": "sandbox_sshd",
            "database_host": postgres.host,
            "database_port": postgres.port,
            "database_command": ["psql", "-U", postgres.user, "-d", postgres.database, "-At", "-c", "select item from inventory order by id"],
            "database_environment": {"PGPASSWORD": postgres.password},
        },
        env=_env(state_dir),
    )
    _ok(result)
    command = _task(result, "Run the deployment step against the database")["localhost"]
    assert command["stdout_lines"] == ["bastion", "tunnel", "socks"]
    assert command["cmd"][0] == "psql"
    # lifetime=play: the tunnel is gone with the ansible-playbook process.
    assert wait_gone(state_dir)


def test_bastion_database_stops_when_the_database_is_down(
    sandbox_session: t.Any, sandbox_inventory: pathlib.Path, ansible_playbook: t.Any, state_dir: pathlib.Path
) -> None:
    # A loopback port nobody listens on: the tunnel comes up (its listener is local), the database does not answer.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    result = ansible_playbook(
        "burrow.ssh.bastion_database",
        sandbox_inventory,
        {"bastion": "sandbox_sshd", "database_host": "127.0.0.1", "database_port": closed_port, "database_command": ["true"]},
        env=_env(state_dir),
    )
    assert result.returncode != 0
    check = _task(result, "Stop when the database does not answer through the tunnel")["localhost"]
    assert check.get("failed") is True
    assert f"127.0.0.1:{closed_port} does not answer through the tunnel" in check["msg"]
    assert "Run the deployment step against the database" not in [task["task"]["name"] for play in result.json["plays"] for task in play["tasks"]]
    assert wait_gone(state_dir)


def wait_gone(state_dir: pathlib.Path, timeout: float = 15.0) -> bool:
    from engine_helpers import wait_until

    return wait_until(lambda: _left(state_dir) == [], timeout=timeout)


def test_socks_proxy(sandbox_session: t.Any, http_server: t.Any, sandbox_inventory: pathlib.Path, ansible_playbook: t.Any, state_dir: pathlib.Path) -> None:
    extra = {"socks_server": "sandbox_sshd", "socks_port": 0, "socks_check_url": f"http://localhost:{http_server.port}/"}
    result = ansible_playbook("burrow.ssh.socks_proxy", sandbox_inventory, extra, env=_env(state_dir))
    _ok(result)
    assert _task(result, "Fetch the check URL through the proxy")["localhost"]["stdout"] + "\n" == sandbox_session.http_body.decode()
    assert _left(state_dir) == ["socks-proxy"], "a SOCKS proxy stays up (lifetime persistent)"
    removed = ansible_playbook("burrow.ssh.socks_proxy", sandbox_inventory, {"socks_state": "absent"}, env=_env(state_dir))
    _ok(removed)
    assert _task(removed, "Open (or remove) the dynamic forward")["localhost"]["removed"] == ["socks-proxy"]
    assert _left(state_dir) == []


def test_socks_proxy_with_credentials(
    sandbox_session: t.Any, http_server: t.Any, sandbox_inventory: pathlib.Path, ansible_playbook: t.Any, state_dir: pathlib.Path
) -> None:
    extra = {
        "socks_server": "sandbox_sshd",
        "socks_port": 0,
        "socks_username": "alice",
        "socks_password": secrets.token_hex(8),
        "socks_check_url": f"http://localhost:{http_server.port}/",
        "socks_ttl": 120,
    }
    result = ansible_playbook("burrow.ssh.socks_proxy", sandbox_inventory, extra, env=_env(state_dir))
    _ok(result)
    assert extra["socks_password"] not in result.stdout
    _ok(ansible_playbook("burrow.ssh.socks_proxy", sandbox_inventory, {"socks_state": "absent"}, env=_env(state_dir)))


@pytest.mark.needs_root
def test_expose_service_through_gateway_ports(sandbox: t.Any, ansible_playbook: t.Any, tmp_path: pathlib.Path, state_dir: pathlib.Path) -> None:
    service = sandbox.start_http(body=b"exposed through the public server\n")
    with network_namespace(31) as (netns, _root_address, public_address):
        public = sandbox.start_sshd(netns=netns, listen=public_address, extra_config="GatewayPorts clientspecified\n")
        inventory = sandbox.write_inventory(tmp_path / "inventory.yml")
        extra = {
            "public_server": "sandbox_sshd",
            "expose_bind": public_address,
            "service_port": service.port,
            "expose_check_url": f"http://{public_address}:PORT/",
        }
        result = ansible_playbook("burrow.ssh.expose_service", inventory, extra, env=_env(state_dir))
        _ok(result)
        forward = _task(result, "Open (or remove) the remote forward")["localhost"]["tunnel"]["remote_forwards"][0]
        assert forward["bound_host"] == public_address
        assert _task(result, "Fetch the check URL (on the public server) from here")["localhost"]["content"] == "exposed through the public server\n"
        with urllib.request.urlopen(f"http://{public_address}:{forward['listen_port']}/", timeout=10) as response:  # 10.203.x test address
            assert response.read() == b"exposed through the public server\n"
        _ok(ansible_playbook("burrow.ssh.expose_service", inventory, {**extra, "expose_state": "absent"}, env=_env(state_dir)))
        assert _left(state_dir) == []
        with pytest.raises(OSError):
            socket.create_connection((public_address, forward["listen_port"]), timeout=3).close()
        assert public.pid > 0


@pytest.mark.needs_root
def test_multi_hop_reaches_a_server_only_a_can_reach(sandbox: t.Any, ansible_playbook: t.Any, tmp_path: pathlib.Path, state_dir: pathlib.Path) -> None:
    with network_namespace(32) as (netns, _root_address, a_address):
        hop_a = sandbox.start_sshd(netns=netns, listen=a_address, name="a")
        # B listens on the namespace's own loopback: nothing outside the namespace can reach it, A can.
        hop_b = sandbox.start_sshd(netns=netns, listen="127.0.0.1", name="b")
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", hop_b.port), timeout=2).close()
        inventory = sandbox.write_inventory(tmp_path / "inventory.yml")
        extra = {
            "multi_hop_via": [
                {
                    "host": a_address,
                    "port": hop_a.port,
                    "user": hop_a.user,
                    "private_key_file": str(hop_a.client_key),
                    "known_hosts_file": str(hop_a.known_hosts),
                }
            ],
            "multi_hop_target": "127.0.0.1",
            "multi_hop_target_port": hop_b.port,
            "multi_hop_target_user": hop_b.user,
            "multi_hop_private_key_file": str(hop_b.client_key),
            "multi_hop_known_hosts_file": str(hop_b.known_hosts),
            "multi_hop_banner_check": True,
        }
        result = ansible_playbook("burrow.ssh.multi_hop", inventory, extra, env=_env(state_dir))
        _ok(result)
        forwards = _task(result, "Open the forwards through every hop")["localhost"]["tunnel"]["local_forwards"]
        assert forwards[0]["key"].endswith(f"127.0.0.1:{hop_b.port}")
        assert _task(result, "Read B's SSH banner through the chain")["localhost"]["match_groups"] == []
        assert wait_gone(state_dir)


@pytest.mark.needs_root
def test_airgapped_host_pulls_through_the_controller(sandbox: t.Any, ansible_playbook: t.Any, tmp_path: pathlib.Path, state_dir: pathlib.Path) -> None:
    mirror = sandbox.start_http(body=b"Packages.gz from the mirror\n")
    with network_namespace(33) as (netns, _root_address, airgapped_address):
        airgapped = sandbox.start_sshd(netns=netns, listen=airgapped_address)
        # Without the tunnel the host cannot reach the mirror (its loopback is its own).
        direct = subprocess.run(
            ["ip", "netns", "exec", netns, "curl", "--silent", "--max-time", "3", f"http://127.0.0.1:{mirror.port}/"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert direct.returncode != 0
        inventory = tmp_path / "inventory.yml"
        host_vars = {
            "ansible_host": airgapped_address,
            "ansible_port": airgapped.port,
            "ansible_user": airgapped.user,
            "ansible_ssh_private_key_file": str(airgapped.client_key),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={airgapped.known_hosts} -o StrictHostKeyChecking=yes",
            "burrow_known_hosts_file": str(airgapped.known_hosts),
            "ansible_python_interpreter": str(REPO / ".venv" / "bin" / "python"),
        }
        inventory.write_text(yaml.safe_dump({"all": {"children": {"airgapped": {"hosts": {"airgapped1": host_vars}}}}}))
        apt_file = tmp_path / "80burrow-proxy"
        extra = {
            "airgapped_mirror_port": mirror.port,
            "airgapped_proxy_port": 3128,
            "airgapped_check_url": "http://127.0.0.1:PORT/",
            "airgapped_apt_proxy": True,
            "airgapped_apt_proxy_file": str(apt_file),
            "airgapped_become": False,
        }
        result = ansible_playbook("burrow.ssh.airgapped_packages", inventory, extra, env=_env(state_dir))
        _ok(result)
        assert _task(result, "Fetch the check URL through the forward")["airgapped1"]["content"] == "Packages.gz from the mirror\n"
        assert _task(result, "Point APT at the forwarded proxy")["airgapped1"]["changed"] is True
        assert not apt_file.exists(), "the APT proxy config is removed at the end"
        assert wait_gone(state_dir)


def test_persistent_tunnels_playbook_without_systemd(
    sandbox_session: t.Any, echo_server: t.Any, sandbox_inventory: pathlib.Path, ansible_playbook: t.Any, state_dir: pathlib.Path
) -> None:
    """The playbook's role run with tunnels_systemd=false (this container has no systemd); the systemd path is in test_role_tunnels."""
    extra = {
        "target": "localhost",
        "persistent_become": False,
        "tunnels_systemd": False,
        "tunnels_state_dir": str(state_dir),
        "tunnels_defaults": {"host": "sandbox_sshd"},
        "tunnels_list": [{"name": "edge-echo", "local_forwards": [f"127.0.0.1:0:127.0.0.1:{echo_server.port}"]}],
    }
    result = ansible_playbook("burrow.ssh.persistent_tunnels", sandbox_inventory, extra, env=_env(state_dir))
    _ok(result)
    port = _task(result, "Converge the tunnels run by burrow.ssh.tunnel")["localhost"]["results"][0]["tunnel"]["port"]
    assert echo_roundtrip(("127.0.0.1", port), b"edge") == b"edge"
    _ok(ansible_playbook("burrow.ssh.persistent_tunnels", sandbox_inventory, {**extra, "tunnels_list": [], "tunnels_purge": True}, env=_env(state_dir)))
    assert _left(state_dir) == []
