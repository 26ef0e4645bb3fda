# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tunnels with one process_group share one tunnel host process (issue 15), against the sandbox sshd.

What sharing may cost and what it must not: a crash of the host takes down its group and nothing else; the stop of one
tunnel, an exception in one tunnel, a bad declaration added to the host leave the other tunnels of the host untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import typing as t
from pathlib import Path

import pytest
from engine_helpers import LoopbackServer, echo_handler, echo_roundtrip, frozen, wait_until
from test_engine import tunnel_for
from test_tunnel_module import assert_ok, run, write_play

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel import manage
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import TunnelError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.forwards import ForwardRuntime
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process import protocol
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.control import TunnelHandle
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import GroupPaths, process_start_time
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.wire import tunnel_to_wire

ATTACKER = 65534


@pytest.fixture(scope="module")
def echo() -> t.Iterator[LoopbackServer]:
    with LoopbackServer(echo_handler) as server:
        yield server


@pytest.fixture
def inventory(sandbox_session: t.Any, tmp_path: Path) -> Path:
    return Path(sandbox_session.write_inventory(tmp_path / "inventory.yml"))


@pytest.fixture
def state_dir(tmp_path: Path) -> t.Iterator[str]:
    path = str(tmp_path / "state")
    yield path
    with contextlib.suppress(TunnelError):
        manage.ensure_absent("*", path, check_mode=False, drain_timeout=0)


def up(sshd: t.Any, state_dir: str, name: str, echo: LoopbackServer, group: str | None = "g1", port: int | None = None) -> dict[str, t.Any]:
    """ensure_present of one -L tunnel to the echo server; the report (pid, forwards)."""
    extra = {"process_group": group} if group else {}
    tunnel = tunnel_for(sshd, name=name, local_forwards=[f"0:127.0.0.1:{port or echo.port}"], **extra)
    outcome = manage.ensure_present(tunnel, state_dir, {}, check_mode=False, owner=None)
    return dict(outcome.report, action=outcome.action)


def listen(report: dict[str, t.Any]) -> tuple[str, int]:
    return "127.0.0.1", int(report["forwards"][0]["bound_port"])


def echoes(address: tuple[str, int], data: bytes = b"ping") -> bool:
    try:
        return echo_roundtrip(address, data, timeout=10) == data
    except OSError:
        return False


def refused(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def alive(pid: int) -> bool:
    return process_start_time(pid) is not None


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_grouped_tunnels_share_one_process_and_each_forwards(sshd: t.Any, echo: LoopbackServer, state_dir: str) -> None:
    first = up(sshd, state_dir, "a", echo)
    second = up(sshd, state_dir, "b", echo)
    assert first["action"] == second["action"] == "created"
    assert first["pid"] == second["pid"], "one host process for the group"
    assert echoes(listen(first)) and echoes(listen(second))
    # What tunnel_info returns (TunnelHandle.inspect): the group and the tunnels a crash of the process takes down too.
    report_a, report_b = TunnelHandle(state_dir, "a").inspect(), TunnelHandle(state_dir, "b").inspect()
    assert (report_a["status"], report_a["process_group"], report_a["shares_process_with"]) == ("up", "g1", ["b"])
    assert (report_b["status"], report_b["process_group"], report_b["shares_process_with"]) == ("up", "g1", ["a"])
    # Declared again as it runs: unchanged, in the same process.
    again = up(sshd, state_dir, "a", echo)
    assert again["action"] == "unchanged" and again["pid"] == first["pid"]
    # Each tunnel logs to its own file (records routed by the thread that wrote them).
    assert "tunnel a up" in Path(state_dir, "a.log").read_text() and "tunnel a up" not in Path(state_dir, "b.log").read_text()


def test_a_changed_process_group_is_a_replace(sshd: t.Any, echo: LoopbackServer, state_dir: str) -> None:
    alone = up(sshd, state_dir, "a", echo, group=None)
    grouped = up(sshd, state_dir, "a", echo, group="g1")
    assert grouped["action"] == "replaced" and grouped["pid"] != alone["pid"]
    assert wait_until(lambda: not alive(alone["pid"]), 10)
    assert TunnelHandle(state_dir, "a").inspect()["process_group"] == "g1"


def test_absent_of_one_leaves_the_other_working_and_the_host_ends_with_the_last(sshd: t.Any, echo: LoopbackServer, state_dir: str) -> None:
    first = up(sshd, state_dir, "a", echo)
    second = up(sshd, state_dir, "b", echo)
    host = first["pid"]
    held = socket.create_connection(listen(first), timeout=10)
    held.settimeout(10)
    try:
        held.sendall(b"before")
        assert held.recv(16) == b"before"
        outcome = manage.ensure_absent("b", state_dir, check_mode=False, drain_timeout=1)
        assert outcome.report["removed"] == ["b"]
        assert alive(host), "the host serves a: it must not be signalled"
        assert wait_until(lambda: refused(listen(second)), 10), "b's listener is closed"
        held.sendall(b"after")
        assert held.recv(16) == b"after", "a's open connection survived b's stop"
        assert echoes(listen(first)), "a's listener still accepts"
        assert TunnelHandle(state_dir, "a").inspect()["shares_process_with"] == []
        assert not os.path.exists(os.path.join(state_dir, "b.json"))
    finally:
        held.close()
    manage.ensure_absent("a", state_dir, check_mode=False, drain_timeout=1)
    assert wait_until(lambda: not alive(host), 15), "the host exits with its last tunnel"
    assert wait_until(lambda: os.listdir(state_dir) == [], 5), os.listdir(state_dir)


def test_an_exception_in_one_tunnel_marks_only_that_tunnel_failed(sshd: t.Any, echo: LoopbackServer, state_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seam: the handler of a forwarded connection raises for one destination (patched before the host forks)."""
    with LoopbackServer(echo_handler) as doomed:
        original = ForwardRuntime._handle_local

        def handle(self: ForwardRuntime, client: socket.socket) -> None:
            if self.forward.destination is not None and self.forward.destination.port == doomed.port:
                client.close()
                raise RuntimeError("injected fault")
            original(self, client)

        monkeypatch.setattr(ForwardRuntime, "_handle_local", handle)
        good = up(sshd, state_dir, "good", echo)  # starts the host: it carries the patched handler
        bad = up(sshd, state_dir, "bad", echo, port=doomed.port)
        monkeypatch.undo()
        assert good["pid"] == bad["pid"]
        held = socket.create_connection(listen(good), timeout=10)
        held.settimeout(10)
        try:
            held.sendall(b"1")
            assert held.recv(1) == b"1"
            with contextlib.suppress(OSError):
                socket.create_connection(listen(bad), timeout=5).close()
            assert wait_until(lambda: TunnelHandle(state_dir, "bad").inspect()["status"] == "down", 10)
            report = TunnelHandle(state_dir, "bad").inspect()
            assert "RuntimeError: injected fault" in report["failed"]
            assert wait_until(lambda: refused(listen(bad)), 10), "a failed tunnel's listeners are closed"
            assert "injected fault" in Path(state_dir, "bad.log").read_text(), "the traceback goes to the failed tunnel's log"
            assert "injected fault" not in Path(state_dir, "good.log").read_text()
            assert alive(good["pid"])
            assert TunnelHandle(state_dir, "good").inspect()["status"] == "up"
            held.sendall(b"2")
            assert held.recv(1) == b"2", "the other tunnel's open connection is untouched"
            assert echoes(listen(good))
            # The next state: present repairs it (stop over its socket, add again), in the same host.
            repaired = up(sshd, state_dir, "bad", echo, port=doomed.port)
            assert repaired["action"] == "repaired" and repaired["pid"] == good["pid"]
            assert TunnelHandle(state_dir, "bad").inspect()["status"] == "up"
        finally:
            held.close()


def test_kill_9_of_the_host_takes_down_its_group_and_nothing_else(sshd: t.Any, echo: LoopbackServer, state_dir: str) -> None:
    a = up(sshd, state_dir, "a", echo)
    b = up(sshd, state_dir, "b", echo)
    other_group = up(sshd, state_dir, "c", echo, group="g2")
    alone = up(sshd, state_dir, "d", echo, group=None)
    assert a["pid"] == b["pid"] and len({a["pid"], other_group["pid"], alone["pid"]}) == 3
    os.kill(a["pid"], signal.SIGKILL)
    assert wait_until(lambda: not alive(a["pid"]), 10)
    for name in ("a", "b"):
        report = TunnelHandle(state_dir, name).inspect()
        assert report["status"] == "stale", report
    # The leader shows as a zombie while its other threads still close the shared descriptor table: wait for the listeners.
    assert wait_until(lambda: refused(listen(a)) and refused(listen(b)), 10), "the group's listeners went with the host"
    for name, report in (("c", other_group), ("d", alone)):
        assert TunnelHandle(state_dir, name).inspect()["status"] == "up"
        assert echoes(listen(report)), f"{name} is in another process and keeps forwarding"
    again_a, again_b = up(sshd, state_dir, "a", echo), up(sshd, state_dir, "b", echo)
    assert again_a["action"] == again_b["action"] == "repaired"
    assert again_a["pid"] == again_b["pid"] != a["pid"], "the group restarts in one new host"
    assert echoes(listen(again_a)) and echoes(listen(again_b))


def test_a_bad_declaration_added_to_a_running_host_fails_precisely_and_leaves_nothing(sshd: t.Any, echo: LoopbackServer, state_dir: str) -> None:
    good = up(sshd, state_dir, "good", echo)
    host = good["pid"]
    before = threads(host)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        taken = blocker.getsockname()[1]
        errors = []
        for name, group in (("alone", None), ("bad", "g1")):
            tunnel = tunnel_for(sshd, name=name, local_forwards=[f"{taken}:127.0.0.1:{echo.port}"], **({"process_group": group} if group else {}))
            with pytest.raises(TunnelError) as caught:
                manage.ensure_present(tunnel, state_dir, {}, check_mode=False, owner=None)
            errors.append((caught.value.kind, str(caught.value).replace(name, "NAME")))
    assert errors[0] == errors[1], "the same precise error, grouped or not"
    left = [entry for entry in os.listdir(state_dir) if "bad" in entry or "alone" in entry]
    assert left == [], "a failed start leaves no file"
    assert alive(host) and TunnelHandle(state_dir, "good").inspect()["shares_process_with"] == []
    assert wait_until(lambda: threads(host) == before, 10), "no engine of the failed start is left in the host"
    assert echoes(listen(good))


@pytest.mark.skipif(os.geteuid() != 0, reason="connects as another uid: needs root")
def test_the_host_refuses_an_add_from_another_uid(sshd: t.Any, echo: LoopbackServer, state_dir: str) -> None:
    up(sshd, state_dir, "good", echo)
    group = GroupPaths(state_dir, "g1")
    wire = json.dumps({"op": "add", "tunnel": tunnel_to_wire(tunnel_for(sshd, name="planted", local_forwards=["0:127.0.0.1:9"], process_group="g1"))})
    # Loosen the modes so the other uid can reach the socket at all: the host's own SO_PEERCRED check must refuse it.
    os.chmod(state_dir, 0o711)
    os.chmod(group.socket, 0o666)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the other uid's process
        code = 1
        try:
            os.close(read_fd)
            os.chdir(state_dir)
            os.setgid(ATTACKER)
            os.setuid(ATTACKER)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(os.path.basename(group.socket))
            try:
                sock.sendall(wire.encode() + b"\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the host refuses by uid before it reads: its answer is already in our receive buffer
            os.write(write_fd, protocol.read_line(sock))
            code = 0
        except BaseException as exc:
            os.write(write_fd, json.dumps({"child_error": repr(exc)}).encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        code = os.waitpid(pid, 0)[1]
        with os.fdopen(read_fd, "rb") as pipe:
            answer = json.loads(pipe.read())
        assert code == 0, answer
    finally:
        os.chmod(group.socket, 0o600)
        os.chmod(state_dir, 0o700)
    assert answer["ok"] is False and answer["error"]["kind"] == "untrusted_state", answer
    assert f"uid {ATTACKER} are refused" in answer["error"]["message"]
    assert not any(entry.startswith("planted") for entry in os.listdir(state_dir))
    assert TunnelHandle(state_dir, "good").inspect()["shares_process_with"] == []


def test_first_tunnels_of_a_group_started_at_once_end_in_one_host(sshd: t.Any, echo: LoopbackServer, state_dir: str, tmp_path: Path) -> None:
    """No host runs yet; three runs declare three tunnels of one group at once: the group lock makes one host."""
    results = tmp_path / "results"
    results.mkdir()
    names = ["r0", "r1", "r2"]
    pids = []
    for name in names:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - one concurrent run
            code = 1
            try:
                report = up(sshd, state_dir, name, echo)
                (results / name).write_text(json.dumps({"pid": report["pid"], "action": report["action"]}))
                code = 0
            except BaseException as exc:
                (results / name).write_text(json.dumps({"error": str(exc)}))
            finally:
                os._exit(code)
        pids.append(pid)
    codes = [os.waitpid(pid, 0)[1] for pid in pids]
    outcomes = [json.loads((results / name).read_text()) for name in names]
    assert codes == [0, 0, 0], outcomes
    assert len({outcome["pid"] for outcome in outcomes}) == 1, f"one host for the group: {outcomes}"
    for name in names:
        report = TunnelHandle(state_dir, name).inspect()
        assert report["status"] == "up" and sorted(report["shares_process_with"]) == sorted(set(names) - {name})
        assert echoes(listen(report))


def test_a_stop_that_gets_no_answer_never_signals_a_host_that_serves_others(
    sshd: t.Any, echo: LoopbackServer, state_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = up(sshd, state_dir, "a", echo)
    b = up(sshd, state_dir, "b", echo)

    def no_answer(self: TunnelHandle, op: str, timeout: float = 15.0, **fields: t.Any) -> dict[str, t.Any]:
        raise TunnelError(f"{op}: no answer (injected)")

    monkeypatch.setattr(TunnelHandle, "request", no_answer)
    with pytest.raises(TunnelError, match=r"could not be stopped: .*also serves a, so it is not signalled"):
        manage.ensure_absent("b", state_dir, check_mode=False, drain_timeout=0)
    monkeypatch.undo()
    assert alive(a["pid"]) and echoes(listen(a)) and echoes(listen(b)), "neither tunnel was touched"
    assert TunnelHandle(state_dir, "b").inspect()["status"] == "up", "b's files are kept: it still runs"


def test_the_module_and_tunnel_info_show_the_group(ansible_playbook: t.Any, inventory: Path, state_dir: str, tmp_path: Path, echo: LoopbackServer) -> None:
    """Through ansible-playbook: the option reaches the module (argument spec, schema, action plugin), tunnel_info shows it."""
    play = write_play(
        tmp_path,
        f"""
        - name: Two tunnels in one process group
          burrow.ssh.tunnel:
            <<: *server
            name: "{{{{ item }}}}"
            process_group: site-a
            local_forwards: ["0:127.0.0.1:{echo.port}"]
          loop: [one, two]
          register: up
        - burrow.ssh.tunnel_info:
            state_dir: "{{{{ state_dir }}}}"
          register: info
        - ansible.builtin.assert:
            that:
              - up.results[0].tunnel.pid == up.results[1].tunnel.pid
              - info.tunnels | map(attribute='process_group') | list == ['site-a', 'site-a']
              - info.tunnels[0].shares_process_with == ['two']
              - info.tunnels[1].shares_process_with == ['one']
        - burrow.ssh.tunnel:
            name: "*"
            state: absent
            state_dir: "{{{{ state_dir }}}}"
        """,
    )
    assert_ok(run(ansible_playbook, play, inventory, Path(state_dir)))
    assert wait_until(lambda: not os.path.isdir(state_dir) or os.listdir(state_dir) == [], 15), os.listdir(state_dir)


def test_a_frozen_peer_of_one_grouped_tunnel_touches_only_that_tunnel(sshd: t.Any, sandbox: t.Any, echo: LoopbackServer, state_dir: str) -> None:
    """SIGSTOP the sshd of one tunnel of the group: it notices by its keepalives and reconnects; the other goes on forwarding."""
    frozen_sshd = sandbox.start_sshd()
    tunnel = tunnel_for(frozen_sshd, name="a", local_forwards=[f"0:127.0.0.1:{echo.port}"], process_group="g1", keepalive_interval=1, keepalive_count_max=3)
    first = dict(manage.ensure_present(tunnel, state_dir, {}, check_mode=False, owner=None).report)
    second = up(sshd, state_dir, "b", echo)
    assert first["pid"] == second["pid"], "one host process for the group"
    assert echoes(listen(first)) and echoes(listen(second))
    assert wait_until(lambda: bool(frozen_sshd.child_pids()), 5)
    with frozen(frozen_sshd.child_pids()):
        assert wait_until(lambda: (TunnelHandle(state_dir, "a").inspect().get("last_error") or {}).get("message"), 20), "the frozen peer was not noticed"
        assert "keepalive" in TunnelHandle(state_dir, "a").inspect()["last_error"]["message"]
        assert echoes(listen(second), b"while a's peer is frozen"), "the other tunnel of the group stopped forwarding"
        assert TunnelHandle(state_dir, "b").inspect()["reconnects"] == 0
    recovered = wait_until(lambda: TunnelHandle(state_dir, "a").inspect().get("reconnects", 0) >= 1 and echoes(listen(first), b"after"), 30)
    assert recovered, TunnelHandle(state_dir, "a").inspect()
    assert alive(int(first["pid"])) and TunnelHandle(state_dir, "b").inspect()["pid"] == second["pid"]
