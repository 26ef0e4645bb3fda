# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Security in the lab: loopback listeners, host keys on every hop, strict KEX, secrets, file modes, policy matrix, restricted key."""

from __future__ import annotations

import os
import pathlib
import socket
import stat
import subprocess
import time
import typing as t

import pytest
from engine_helpers import LoopbackServer, echo_handler, wait_until
from helpers import read_reply, record, spawn_tunnel, stop_all
from topology import PG_PORT, Lab, connect_in

from ansible_collections.burrow.ssh.plugins.module_utils._module_args import tunnel_from_module
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.engine import TunnelEngine
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import ForwardRefused, HostKeyMismatch, HostKeyUnknown, SpecError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration

pytestmark = pytest.mark.needs_root


def test_listeners_default_to_loopback(lab: Lab, tmp_path: pathlib.Path) -> None:
    state_dir = str(tmp_path / "state")
    try:
        status = spawn_tunnel(lab.params("loopback", local_forwards=[f"0:{lab.db}:{lab.db_echo_port}"], dynamic_forwards=["0"]), state_dir)[0]
        lines = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, timeout=10, check=True).stdout.splitlines()
        mine = [line.split()[3] for line in lines if f"pid={status['pid']}," in line]
        # Two forwards, each on both loopback families (127.0.0.1 and ::1, as OpenSSH binds localhost), nothing else.
        assert all(address.startswith(("127.0.0.1:", "[::1]:")) for address in mine), mine
        assert len({address.rsplit(":", 1)[1] for address in mine}) == 2 and len(mine) in (2, 4), mine
    finally:
        stop_all(state_dir)
    record("security", default_listeners=mine)


def test_non_loopback_bind_needs_the_option_and_warns(lab: Lab) -> None:
    params = lab.params("exposed", local_forwards=[f"{lab.ctl}:0:{lab.db}:{lab.db_echo_port}"])
    with pytest.raises(SpecError, match="allow_non_loopback_bind"):
        tunnel_from_module(params)
    tunnel, warnings = tunnel_from_module(dict(params, allow_non_loopback_bind=True))
    assert tunnel.forwards and any("reachable from other machines" in warning for warning in warnings), warnings


def test_unknown_and_changed_host_keys_are_refused_on_every_hop(lab: Lab, tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(HostKeyUnknown, match=str(lab.bastion_sshd.port)):
        TunnelEngine(parse_declaration(lab.params("hk", known_hosts_file=str(empty), dynamic_forwards=["0"]))).start()
    with pytest.raises(HostKeyUnknown, match=str(lab.db_sshd.port)):
        TunnelEngine(parse_declaration(lab.params("hk", via_db=True, known_hosts_file=str(empty), dynamic_forwards=["0"]))).start()
    refused = {}
    for hop, sshd in (("bastion", lab.bastion_sshd), ("db", lab.db_sshd)):
        sshd.regenerate_host_key()
        try:
            for policy in ("strict", "accept-new"):
                with pytest.raises(HostKeyMismatch, match="CHANGED") as info:
                    TunnelEngine(parse_declaration(lab.params("hk", via_db=True, host_key_checking=policy, dynamic_forwards=["0"]))).start()
                refused[f"{hop}/{policy}"] = str(info.value)[:120]
        finally:
            sshd._write_known_hosts()  # the lab's clients trust the new key again
    record("security", changed_host_key_refused=sorted(refused))


def test_strict_kex_is_negotiated_on_every_hop(lab: Lab) -> None:
    engine = TunnelEngine(parse_declaration(lab.params("kex", via_db=True, dynamic_forwards=["0"])))
    engine.start()
    try:
        transports = engine.chain.transports  # type: ignore[union-attr]
        assert len(transports) == 2
        assert [transport.agreed_on_strict_kex for transport in transports] == [True, True]
    finally:
        engine.stop(deadline=1)
    record("security", strict_kex_hops=2)


def test_secrets_stay_out_of_argv_environ_state_and_log(lab: Lab, tmp_path: pathlib.Path) -> None:
    secret = f"Sw0rdfish-{time.time_ns()}"
    state_dir = tmp_path / "state"
    forward = {"listen_host": "127.0.0.1", "listen_port": 0, "socks_username": "me", "socks_password": secret}
    try:
        spawn_tunnel(lab.params("secret", dynamic_forwards=[forward]), str(state_dir))
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                for name in ("cmdline", "environ"):
                    try:
                        data = pathlib.Path(f"/proc/{entry}/{name}").read_bytes()
                    except OSError:
                        continue
                    assert secret.encode() not in data, f"/proc/{entry}/{name}"
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
        files = [path for path in state_dir.iterdir() if path.is_file()]
        assert files
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            assert secret.encode() not in path.read_bytes(), path
    finally:
        stop_all(state_dir)


# forward-control.sh: Y/N for (local, remote) per AllowTcpForwarding x PermitOpen, then x PermitListen
LPERM = {
    "yes": {"none": "YY", "mismatch": "NY", "match": "YY"},
    "local": {"none": "YN", "mismatch": "NN", "match": "YN"},
    "remote": {"none": "NY", "mismatch": "NY", "match": "NY"},
    "no": {"none": "NN", "mismatch": "NN", "match": "NN"},
}
RPERM = {
    "yes": {"none": "YY", "mismatch": "YN", "match": "YY"},
    "local": {"none": "YN", "mismatch": "YN", "match": "YN"},
    "remote": {"none": "NY", "mismatch": "NN", "match": "NY"},
    "no": {"none": "NN", "mismatch": "NN", "match": "NN"},
}


def _cell(lab: Lab, sshd: t.Any, echo: LoopbackServer, remote_port: int) -> tuple[str, str, str]:
    hop = {"host": sshd.host, "port": sshd.port, "user": sshd.user, "private_key_file": str(sshd.client_key), "known_hosts_file": str(sshd.known_hosts)}
    params = dict(lab.params("policy"), **hop)
    engine = TunnelEngine(parse_declaration(dict(params, local_forwards=[f"0:{lab.db}:{lab.db_echo_port}"])))
    engine.start()
    try:
        runtime = next(iter(engine.forwards.values()))
        try:
            with socket.create_connection(("127.0.0.1", runtime.bound.port), timeout=10) as client:  # type: ignore[union-attr]
                client.sendall(b"cell")
                client.shutdown(socket.SHUT_WR)
                local_ok = read_reply(client) == b"cell"
        except ConnectionResetError:
            local_ok = False  # the refused channel closes the client connection, sometimes with a reset
        if not local_ok:
            assert wait_until(lambda: "administratively prohibited" in runtime.counters.last_error, 5), runtime.counters.last_error
        local_error = "" if local_ok else runtime.counters.last_error
    finally:
        engine.stop(deadline=1)
    remote_error = ""
    try:
        engine = TunnelEngine(parse_declaration(dict(params, remote_forwards=[f"127.0.0.1:{remote_port}:127.0.0.1:{echo.port}"])))
        engine.start()
    except ForwardRefused as exc:
        remote_error = str(exc)
        assert f"{remote_port}" in remote_error, remote_error
        return ("Y" if local_ok else "N") + "N", local_error, remote_error
    try:
        sock = connect_in(lab.bastion_ns, ("127.0.0.1", remote_port))
        sock.sendall(b"rcell")
        sock.shutdown(socket.SHUT_WR)
        assert read_reply(sock) == b"rcell"
        sock.close()
    finally:
        engine.stop(deadline=1)
    return ("Y" if local_ok else "N") + "Y", local_error, remote_error


def test_policy_matrix_matches_forward_control_cell_for_cell(lab: Lab) -> None:
    results: dict[str, str] = {}
    with LoopbackServer(echo_handler) as echo:
        remote_port = 40000 + os.getpid() % 20000
        configs = []
        for allow, row in LPERM.items():
            for column, expected in row.items():
                value = {"none": "", "mismatch": f"PermitOpen {lab.db}:1\n", "match": f"PermitOpen {lab.db}:{lab.db_echo_port}\n"}[column]
                configs.append((f"AllowTcpForwarding {allow} / PermitOpen {column}", f"AllowTcpForwarding {allow}\n{value}", expected))
        for allow, row in RPERM.items():
            for column, expected in row.items():
                if column == "none":
                    continue  # the same configuration as the lperm "none" column
                value = {"mismatch": "PermitListen 127.0.0.1:1\n", "match": f"PermitListen 127.0.0.1:{remote_port}\n"}[column]
                configs.append((f"AllowTcpForwarding {allow} / PermitListen {column}", f"AllowTcpForwarding {allow}\n{value}", expected))
        configs.append(("DisableForwarding yes", "DisableForwarding yes\n", "NN"))
        for index, (label, extra, expected) in enumerate(configs):
            sshd = lab.sandbox.start_sshd(netns=lab.bastion_ns, listen=lab.bastion, name=f"policy{index}", extra_config=extra)
            try:
                got, local_error, remote_error = _cell(lab, sshd, echo, remote_port)
            finally:
                sshd.stop()
            results[label] = got
            assert got == expected, f"{label}: expected local/remote {expected}, got {got} ({local_error} | {remote_error})"
    record("security", policy_matrix=results)


def test_restricted_key_reaches_the_database_and_nothing_else(lab: Lab) -> None:
    sshd = lab.sandbox.start_sshd(
        netns=lab.bastion_ns, listen=lab.bastion, name="restricted", authorized_key_options=f'restrict,port-forwarding,permitopen="{lab.db}:{PG_PORT}"'
    )
    hop = {"host": sshd.host, "port": sshd.port, "user": sshd.user, "private_key_file": str(sshd.client_key), "known_hosts_file": str(sshd.known_hosts)}
    others = [f"{lab.db}:{lab.db_sshd.port}", f"{lab.db}:{lab.db_echo_port}", f"127.0.0.1:{sshd.port}", f"{lab.bastion}:{lab.bastion_sshd.port}"]
    forwards = [f"0:{lab.db}:{PG_PORT}"] + [f"0:{other}" for other in others]
    engine = TunnelEngine(parse_declaration(dict(lab.params("restricted"), **hop, local_forwards=forwards)))
    engine.start()
    try:
        runtimes = list(engine.forwards.values())
        result = lab.psql(runtimes[0].bound.port, "select string_agg(item, ',' order by id) from inventory")  # type: ignore[union-attr]
        assert result.returncode == 0 and result.stdout.strip() == "bastion,tunnel,socks", result.stderr
        for runtime in runtimes[1:]:
            with socket.create_connection(("127.0.0.1", runtime.bound.port), timeout=10) as client:  # type: ignore[union-attr]
                client.settimeout(10)
                assert read_reply(client) == b""
            assert wait_until(lambda runtime=runtime: "administratively prohibited" in runtime.counters.last_error, 5), runtime.counters.last_error
    finally:
        engine.stop(deadline=1)
        sshd.stop()
    record("security", restricted_key={"database": "reached", "refused": others})
