# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of burrow.ssh.tunneled: options to hop chain, become prompt handling, error mapping, broker framing."""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import typing as t

import pytest
import yaml
from ansible import constants as C
from ansible.errors import AnsibleAuthenticationFailure, AnsibleConnectionFailure, AnsibleFileNotFound, AnsibleOptionsError
from ansible.playbook.play_context import PlayContext

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError, TunnelError
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker import client
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker import server as broker
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.protocol import KIND_EXIT, KIND_STDERR, KIND_STDOUT
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.session import build_session
from ansible_collections.burrow.ssh.plugins.plugin_utils._inventory_hops import resolve_inventory_hops

pytest.importorskip("paramiko")
NAME = "burrow.ssh.tunneled"


@pytest.fixture(scope="module")
def plugin_class() -> t.Any:
    """The plugin class with its option definitions (its own DOCUMENTATION plus the doc fragment) registered."""
    from ansible_collections.burrow.ssh.plugins.connection import tunneled
    from ansible_collections.burrow.ssh.plugins.doc_fragments.connection_options import ModuleDocFragment

    options = dict(yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"])
    options.update(yaml.safe_load(tunneled.DOCUMENTATION).get("options") or {})
    C.config.initialize_plugin_configuration_definitions("connection", NAME, options)
    return tunneled.Connection


@pytest.fixture
def connection(plugin_class: t.Any) -> t.Any:
    conn = plugin_class(PlayContext(), io.StringIO())
    conn._load_name = NAME
    conn.set_options(direct={"remote_addr": "10.0.0.5", "remote_user": "deploy", "port": 2200, "private_key_file": "/keys/target", "use_agent": False})
    return conn


def test_via_strings_dicts_and_jump_lists_become_hops_before_the_target(connection: t.Any) -> None:
    connection.set_option("via", ["ops@b1.example:2221,b2.example", {"host": "b3.example", "private_key_file": "/keys/b3"}])
    connection.set_option("password", "target-secret")
    session = build_session(connection._session_options())
    hops = session.hops
    assert [(hop.host, hop.port, hop.user) for hop in hops] == [
        ("b1.example", 2221, "ops"),
        ("b2.example", 22, "deploy"),
        ("b3.example", 22, "deploy"),
        ("10.0.0.5", 2200, "deploy"),
    ]
    # Hops inherit the key but never the target's password.
    assert hops[1].private_key_file == "/keys/target"
    assert hops[2].private_key_file == "/keys/b3"
    assert [hop.password for hop in hops] == [None, None, None, "target-secret"]
    assert session.label == "deploy@10.0.0.5:2200 via ops@b1.example:2221, deploy@b2.example:22, deploy@b3.example:22"
    assert "target-secret" not in repr(session)


@pytest.mark.parametrize(("value", "expected"), [("False", "off"), ("yes", "strict"), ("accept-new", "accept-new"), ("strict", "strict")])
def test_host_key_checking_accepts_ansible_booleans(connection: t.Any, value: str, expected: str) -> None:
    connection.set_option("host_key_checking", value)
    assert {hop.host_key_checking for hop in build_session(connection._session_options()).hops} == {expected}


def test_bad_via_bad_checking_and_bad_forwards_are_spec_errors_naming_the_variable(connection: t.Any) -> None:
    from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.session import parse_connection_forwards

    connection.set_option("via", ["user@host;rm -rf /"])
    with pytest.raises(SpecError, match=r"burrow_via\[0\]"):
        build_session(connection._session_options())
    connection.set_option("via", [])
    connection.set_option("host_key_checking", "maybe")
    with pytest.raises(SpecError, match="burrow_host_key_checking: must be strict, accept-new or off"):
        build_session(connection._session_options())
    connection.set_option("reverse_socks", ["1080:localhost:80"])
    with pytest.raises(SpecError, match="SOCKS listener"):
        parse_connection_forwards(connection._forwards())


def test_the_broker_s_invalid_option_is_an_option_error(connection: t.Any) -> None:
    with pytest.raises(AnsibleOptionsError, match=r"burrow.ssh.tunneled: burrow_via\[0\]: bad"):
        connection._fail(TunnelError.from_dict({"kind": "invalid_option", "message": "burrow_via[0]: bad"}), "connecting to")


class FakeHostVars(dict):
    """hostvars as a task sees it: inventory hostname -> that host's variables."""


def test_inventory_hostnames_in_via_become_those_hosts_hops() -> None:
    hostvars = FakeHostVars(
        bastion1={"ansible_host": "192.0.2.10", "ansible_port": "2222", "ansible_user": "ops", "ansible_ssh_private_key_file": "/keys/b1"},
        inner={"ansible_host": "10.1.0.4", "burrow_via": ["bastion1"], "ansible_password": "inner-secret"},
        web1={"ansible_host": "10.1.0.9"},
    )
    assert resolve_inventory_hops(["inner"], hostvars) == [
        {"host": "192.0.2.10", "port": "2222", "user": "ops", "private_key_file": "/keys/b1"},
        {"host": "10.1.0.4", "password": "inner-secret"},
    ]
    # Not inventory hosts, or not plain names: left as given (DNS names, user@host:port, dicts).
    given = ["jump.example.com", "ops@bastion1:22", {"host": "bastion1"}]
    assert resolve_inventory_hops(given, hostvars) is given
    # A comma-separated ProxyJump string may mix both.
    assert resolve_inventory_hops("jump.example.com,bastion1", hostvars)[0] == "jump.example.com"
    # The resolved hops are valid hops for the broker's parser.
    hops = build_session({"remote_addr": "10.1.0.9", "port": 22, "remote_user": "deploy", "via": resolve_inventory_hops(["inner"], hostvars)}).hops
    assert [(hop.host, hop.port, hop.user) for hop in hops] == [("192.0.2.10", 2222, "ops"), ("10.1.0.4", 22, "deploy"), ("10.1.0.9", 22, "deploy")]


def test_inventory_jump_chain_loop_is_an_error() -> None:
    hostvars = FakeHostVars(a={"burrow_via": ["b"]}, b={"burrow_via": ["a"]})
    with pytest.raises(ValueError, match="loops"):
        resolve_inventory_hops(["a"], hostvars)


@pytest.mark.parametrize(
    ("kind", "exception"),
    [
        ("authentication_failed", AnsibleAuthenticationFailure),
        ("host_key_mismatch", AnsibleConnectionFailure),
        ("unreachable", AnsibleConnectionFailure),
        ("not_found", AnsibleFileNotFound),
    ],
)
def test_broker_errors_map_to_ansible_errors(connection: t.Any, kind: str, exception: type[Exception]) -> None:
    with pytest.raises(exception, match="the message. the advice"):
        connection._fail(TunnelError.from_dict({"kind": kind, "message": "the message", "advice": "the advice"}), "doing")


class FakeStream:
    """Frames as the broker would send them; records what the plugin writes to stdin."""

    def __init__(self, frames: list[tuple[bytes, bytes]]) -> None:
        self.frames = list(frames)
        self.stdin: list[bytes] = []
        self.rc: int | None = None

    def read(self, timeout: float | None = None) -> tuple[bytes, bytes] | None:
        if not self.frames:
            return None
        kind, data = self.frames.pop(0)
        if kind == KIND_EXIT:
            self.rc = json.loads(data)["rc"]
        return kind, data

    def send_stdin(self, data: bytes) -> None:
        self.stdin.append(data)


class FakeBecome:
    name = "sudo"
    prompt = "[sudo via ansible, key=abc] password:"
    success = "BECOME-SUCCESS-abc"

    def check_success(self, output: bytes) -> bool:
        return self.success.encode() in output

    def check_password_prompt(self, output: bytes) -> bool:
        return any(line.strip().startswith(self.prompt.encode()) for line in output.splitlines())

    def get_option(self, name: str) -> str:
        return "s3cret"


def test_password_prompt_on_stderr_is_answered_and_not_kept(connection: t.Any) -> None:
    connection.become = FakeBecome()
    stream = FakeStream([(KIND_STDERR, b"We trust you have received the usual lecture\n"), (KIND_STDERR, b"[sudo via ansible, key=abc] password:")])
    stdout, stderr = bytearray(), bytearray()
    connection._become_handshake(stream, stdout, stderr)
    assert stream.stdin == [b"s3cret\n"]
    assert stderr == b""
    assert stdout == b""


def test_success_marker_without_prompt_sends_nothing(connection: t.Any) -> None:
    connection.become = FakeBecome()
    stream = FakeStream([(KIND_STDOUT, b"BECOME-SUCC"), (KIND_STDOUT, b"ESS-abc\r\n{}")])
    stdout, stderr = bytearray(), bytearray()
    connection._become_handshake(stream, stdout, stderr)
    assert stream.stdin == []
    assert bytes(stdout) == b"BECOME-SUCCESS-abc\r\n{}"


def test_become_prompt_wait_has_a_deadline(connection: t.Any) -> None:
    connection.become = FakeBecome()
    connection.set_option("timeout", 1)
    with pytest.raises(AnsibleConnectionFailure, match="timed out after 1 s waiting for privilege escalation"):
        connection._become_handshake(FakeStream([(KIND_STDOUT, b"still starting")]), bytearray(), bytearray())


def test_frames_round_trip_over_a_socket_pair() -> None:
    left, right = socket.socketpair()
    with left, right:
        big = bytes(range(256)) * 1024

        def sender() -> None:
            # In a thread: 256 KiB may exceed the socket pair's buffer, so the reader must run meanwhile.
            client.send_frame(left, KIND_STDOUT, b"small")
            client.send_frame(left, KIND_STDERR, big)
            client.send_json(left, {"rc": 3}, KIND_EXIT)
            left.shutdown(socket.SHUT_WR)

        thread = threading.Thread(target=sender, daemon=True)
        thread.start()
        right.settimeout(30)
        assert client.recv_frame(right) == (KIND_STDOUT, b"small")
        assert client.recv_frame(right) == (KIND_STDERR, big)
        kind, data = client.recv_frame(right) or (b"", b"")
        assert (kind, json.loads(data)) == (KIND_EXIT, {"rc": 3})
        assert client.recv_frame(right) is None
        thread.join(30)


def test_input_after_the_command_exited_leaves_its_output_and_status_readable() -> None:
    """A wrong become password: the command exits without reading the module, the broker closes; the client still gets rc and stderr."""
    broker_end, client_end = socket.socketpair()
    with client_end:
        client.send_frame(client_end, b"I", b"the password\n")  # left unread by the broker
        client.send_frame(broker_end, KIND_STDERR, b"Sorry, try again.\n")
        client.send_json(broker_end, {"rc": 97}, KIND_EXIT)
        broker_end.close()
        stream = client.ExecStream(client_end, {})
        stream.send_stdin(b"module payload" * 1000)
        stream.close_stdin()
        stdout, stderr = bytearray(), bytearray()
        assert stream.collect(stdout, stderr) == 97
        assert (bytes(stdout), bytes(stderr)) == (b"", b"Sorry, try again.\n")


def test_hop_keys_share_prefixes_and_separate_credentials(tmp_path: t.Any) -> None:
    server = broker.Broker(broker.BrokerPaths(str(tmp_path / "state")))
    bastion = {"host": "b", "port": 22, "password": None}
    first = server._hop_key(server._hop_key("", bastion), {"host": "t1"}, "web1")
    second = server._hop_key(server._hop_key("", bastion), {"host": "t1"}, "web2")
    other_secret = server._hop_key(server._hop_key("", dict(bastion, password="x")), {"host": "t1"}, "web1")
    assert len({first, second, other_secret}) == 3
    assert server._hop_key("", bastion) == server._hop_key("", dict(bastion))
    assert "x" not in other_secret


@pytest.mark.parametrize("option", ["remote_forwards", "reverse_socks"])
def test_a_socks_password_is_never_in_a_forward_error(connection: t.Any, option: str) -> None:
    """A SOCKS forward with a password but no listen_port: the error names the variable, not the password."""
    from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.session import parse_connection_forwards

    connection.set_option(option, [{"socks_username": "alice", "socks_password": "socks-secret-pw"}])
    with pytest.raises(SpecError) as refused:
        parse_connection_forwards(connection._forwards())
    assert f"burrow_{option}[0]: needs listen_port" in str(refused.value)
    assert "socks-secret-pw" not in str(refused.value) and "<hidden>" in str(refused.value)
    # What the plugin prints: the error as it comes back from the broker, through _fail.
    with pytest.raises(AnsibleOptionsError) as shown:
        connection._fail(TunnelError.from_dict(refused.value.to_dict()), "connecting to")
    assert "socks-secret-pw" not in str(shown.value) and f"burrow_{option}[0]" in str(shown.value)


@pytest.mark.parametrize(
    ("option", "value", "field"),
    [
        ("local_forwards", "0.0.0.0:15432:db:5432", "burrow_local_forwards[0]"),
        ("local_forwards", "*:15432:db:5432", "burrow_local_forwards[0]"),
        ("remote_forwards", "0.0.0.0:8080:localhost:80", "burrow_remote_forwards[0]"),
        ("reverse_socks", "[::]:1080", "burrow_reverse_socks[0]"),
    ],
)
def test_the_connection_applies_the_tunnel_module_s_bind_policy(connection: t.Any, option: str, value: str, field: str) -> None:
    """Issue 16 item 5: a listener beyond loopback is refused unless burrow_allow_non_loopback_bind, and then a warning."""
    from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.session import parse_connection_forwards

    connection.set_option(option, [value])
    with pytest.raises(SpecError) as refused:
        parse_connection_forwards(connection._forwards())
    assert str(refused.value).startswith(f"{field}: ")
    assert "set burrow_allow_non_loopback_bind=true" in str(refused.value)
    connection.set_option("allow_non_loopback_bind", True)
    forwards, warnings = parse_connection_forwards(connection._forwards())
    assert len(forwards) == 1
    assert warnings == [f"{field} listens on {forwards[0].listen}: reachable from other machines"]


def test_loopback_listeners_of_a_connection_need_no_permission(connection: t.Any) -> None:
    from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.session import parse_connection_forwards

    connection.set_option("local_forwards", ["15432:db:5432", "[::1]:15433:db:5432"])
    connection.set_option("remote_forwards", ["localhost:8080:localhost:80"])
    forwards, warnings = parse_connection_forwards(connection._forwards())
    assert len(forwards) == 3 and warnings == []


def test_the_audit_sink_of_a_connection_defaults_to_file_and_names_a_bad_value(connection: t.Any) -> None:
    from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.session import connection_audit_sink

    assert connection_audit_sink(connection._forwards()) == "file"
    connection.set_option("audit", "none")
    assert connection_audit_sink(connection._forwards()) == "none"
    with pytest.raises(SpecError) as refused:
        connection_audit_sink({"audit": "journal"})
    assert str(refused.value).startswith("burrow_audit: ") and "file, syslog, none" in str(refused.value)


def test_a_session_s_audit_file_name_keeps_to_safe_characters(tmp_path: t.Any) -> None:
    from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.paths import BrokerPaths

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    paths = BrokerPaths(str(state))
    assert paths.connection_audit("web-1.example") == str(state / "connection-web-1.example.audit.jsonl")
    odd = os.path.basename(paths.connection_audit("../etc/passwd db"))
    assert odd.startswith("connection-_etc_passwd_db-") and "/" not in odd and odd.endswith(".audit.jsonl")
    assert paths.connection_audit("a b") != paths.connection_audit("a_b")


def test_a_worker_imports_only_the_broker_client_not_the_engine() -> None:
    """Ansible compiles a collection's sources in every task's worker: the plugin must not drag the engine in.

    Importing spec/model.py (and the probes it carries) for one constant made the plugin's load 4x its own cost.
    """
    import pathlib
    import subprocess
    import sys

    collections = pathlib.Path(__file__).resolve().parents[4] / ".build" / "collections"  # made by tests/conftest.py
    probe = (
        "import sys, json; sys.path.insert(0, sys.argv[1]);"
        "import ansible_collections.burrow.ssh.plugins.connection.tunneled;"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('ansible_collections.burrow') or m.startswith('paramiko'))))"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(collections)], capture_output=True, text=True, timeout=120, check=True)
    loaded = {name.rsplit(".", 1)[-1] if name.startswith("ansible_collections.burrow.ssh.plugins.") else name for name in json.loads(result.stdout)}
    assert loaded & {"model", "probes", "engine", "forward_set", "declaration", "server", "session", "paramiko"} == set(), loaded
    assert {"tunneled", "client", "protocol", "errors", "defaults"} <= loaded
