# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Where the server really binds a remote forward (GatewayPorts), against an sshd in a network namespace.

The namespace is reached over a veth pair with 10.203.98.0/24 addresses that exist only on this machine; its only
non-loopback address is 10.203.98.2, and the root namespace (10.203.98.1) plays "another host". A test sshd on 127.0.0.1
cannot show an exposure: its host has no address but loopback ones (127.0.0.2 is loopback too, so reaching it proves
nothing about other machines). Issue 16 item 4: what the server really binds for a loopback request.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
import typing as t

import pytest
from engine_helpers import LoopbackServer, echo_handler, echo_roundtrip
from test_engine import bound, running, tunnel_for

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.engine import TunnelEngine
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import ExposedListener

ROOT_ADDRESS = "10.203.98.1"
NS_ADDRESS = "10.203.98.2"

pytestmark = pytest.mark.needs_root


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, timeout=30, capture_output=True)


@pytest.fixture
def namespace() -> t.Iterator[str]:
    name = f"burrow-gw-{secrets.token_hex(3)}"
    outside, inside = f"bgw{secrets.token_hex(3)}", f"bgi{secrets.token_hex(3)}"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", name)
        _ip("addr", "add", f"{ROOT_ADDRESS}/24", "dev", outside)
        _ip("link", "set", outside, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{NS_ADDRESS}/24", "dev", inside)
        _ip("netns", "exec", name, "ip", "link", "set", inside, "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield name
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", outside)
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


@pytest.fixture
def echo_on_veth() -> t.Iterator[LoopbackServer]:
    # The remote forward's destination, reached from the tunnel process in the root namespace.
    with LoopbackServer(echo_handler) as server:
        yield server


def test_gateway_ports_no_is_reported_as_a_loopback_bind(sandbox: t.Any, namespace: str, echo_on_veth: LoopbackServer) -> None:
    server = sandbox.start_sshd(netns=namespace, listen=NS_ADDRESS, extra_config="GatewayPorts no\n")
    with running(tunnel_for(server, remote_forwards=[f"{NS_ADDRESS}:0:127.0.0.1:{echo_on_veth.port}"])) as engine:
        host, port = bound(engine)
        assert host == "127.0.0.1", "sshd bound loopback, whatever was asked"
        warnings = engine.status()["warnings"]
        assert any("GatewayPorts" in warning and "sshd_forwarding" in warning for warning in warnings), warnings
        # Nothing listens on the namespace's veth address: the request was not honoured.
        with pytest.raises(OSError):
            socket.create_connection((NS_ADDRESS, port), timeout=3).close()


def test_gateway_ports_clientspecified_honours_the_address(sandbox: t.Any, namespace: str, echo_on_veth: LoopbackServer) -> None:
    server = sandbox.start_sshd(netns=namespace, listen=NS_ADDRESS, extra_config="GatewayPorts clientspecified\n")
    with running(tunnel_for(server, remote_forwards=[f"{NS_ADDRESS}:0:127.0.0.1:{echo_on_veth.port}"])) as engine:
        host, port = bound(engine)
        assert host == NS_ADDRESS
        assert engine.status()["warnings"] == []
        assert echo_roundtrip((NS_ADDRESS, port), b"from the root namespace") == b"from the root namespace"


def _reachable_from_outside(port: int) -> bool:
    try:
        socket.create_connection((NS_ADDRESS, port), timeout=5).close()
    except OSError:
        return False
    return True


def test_a_loopback_request_widened_by_gateway_ports_yes_fails(sandbox: t.Any, namespace: str, echo_on_veth: LoopbackServer) -> None:
    server = sandbox.start_sshd(netns=namespace, listen=NS_ADDRESS, extra_config="GatewayPorts yes\n")
    engine = TunnelEngine(tunnel_for(server, remote_forwards=[f"127.0.0.1:0:127.0.0.1:{echo_on_veth.port}"]))
    try:
        with pytest.raises(ExposedListener) as caught:
            engine.start()
    finally:
        engine.stop(deadline=2)
    message = str(caught.value)
    assert "127.0.0.1" in message and NS_ADDRESS in message and "GatewayPorts" in message, message
    assert "allow_non_loopback_bind" in caught.value.advice
    port = int(message.split(f"answered on {NS_ADDRESS}:")[1].split(",", maxsplit=1)[0])
    assert not _reachable_from_outside(port), "the exposed listener was cancelled"


def test_a_widened_loopback_request_allowed_is_reported_truthfully(sandbox: t.Any, namespace: str, echo_on_veth: LoopbackServer) -> None:
    server = sandbox.start_sshd(netns=namespace, listen=NS_ADDRESS, extra_config="GatewayPorts yes\n")
    tunnel = tunnel_for(server, remote_forwards=[f"127.0.0.1:0:127.0.0.1:{echo_on_veth.port}"], allow_non_loopback_bind=True)
    with running(tunnel) as engine:
        host, port = bound(engine)
        assert host == "*", "every address of the server, not the 127.0.0.1 that was asked"
        warnings = engine.status()["warnings"]
        assert any("every address" in warning and "GatewayPorts" in warning for warning in warnings), warnings
        assert echo_roundtrip((NS_ADDRESS, port), b"from another host") == b"from another host"


def test_a_non_loopback_request_widened_is_a_warning(sandbox: t.Any, namespace: str, echo_on_veth: LoopbackServer) -> None:
    server = sandbox.start_sshd(netns=namespace, listen=NS_ADDRESS, extra_config="GatewayPorts yes\n")
    with running(tunnel_for(server, remote_forwards=[f"{NS_ADDRESS}:0:127.0.0.1:{echo_on_veth.port}"], allow_non_loopback_bind=True)) as engine:
        host, _port = bound(engine)
        assert host == "*"
        assert any("every address, not only 10.203.98.2" in warning for warning in engine.status()["warnings"])


def test_a_loopback_request_honoured_stays_quiet(sandbox: t.Any, namespace: str, echo_on_veth: LoopbackServer) -> None:
    server = sandbox.start_sshd(netns=namespace, listen=NS_ADDRESS, extra_config="GatewayPorts clientspecified\n")
    with running(tunnel_for(server, remote_forwards=[f"127.0.0.1:0:127.0.0.1:{echo_on_veth.port}"])) as engine:
        host, port = bound(engine)
        assert host == "127.0.0.1"
        assert engine.status()["warnings"] == []
        assert not _reachable_from_outside(port)
