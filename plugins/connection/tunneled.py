# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: tunneled
short_description: Run tasks over SSH through bastions, with connection-scoped forwards and reused sessions
version_added: 0.1.0
description:
  - Connects to the target host over SSH (paramiko), through the jump hosts listed in O(via), checking every hop's host key.
  - Runs commands (with privilege escalation and pipelining) and copies files over SFTP on the last hop.
  - The authenticated sessions are held by a session broker on the controller, one process per user (like OpenSSH's C(ControlPersist)),
    so the second and later tasks against a host do no SSH handshake, and hosts behind the same bastion share the bastion's connection.
    The broker closes a session after O(persist_idle_timeout) seconds without use, and everything once the ansible-playbook process has exited,
    or O(persist) seconds later (then the next run reuses the sessions without a handshake).
  - Forwards declared for the host (O(remote_forwards), O(reverse_socks), O(local_forwards)) are set up when Ansible connects and
    removed with the session.
author:
  - burrow.ssh team (@burrow-ssh)
requirements:
  - paramiko >= 3.4 on the controller
extends_documentation_fragment:
  - burrow.ssh.connection_options
notes:
  - The broker's socket, lock and log live in C($XDG_RUNTIME_DIR/burrow) or C(~/.ansible/burrow) (E(BURROW_STATE_DIR) overrides), mode 0700.
    Secrets reach the broker only over that socket; they are never written to disk, argv, the environment or the log.
  - "C(meta: reset_connection) closes the host's session and its forwards; the next task opens a new one."
  - Works with ansible-core 2.18 to 2.21; it does not use ansible-core's C(paramiko_ssh) plugin, which 2.21 removed.
"""

EXAMPLES = r"""
# inventory.yml: a host reachable only through a bastion, pulling packages through the controller's proxy.
all:
  hosts:
    db1:
      ansible_host: 10.0.5.21
      ansible_user: deploy
      ansible_connection: burrow.ssh.tunneled
      burrow_via:
        - deploy@bastion.example.com:2222
      burrow_remote_forwards:
        - "127.0.0.1:3128:proxy.corp.example:3128"
      burrow_reverse_socks:
        - 1080
      burrow_host_key_checking: accept-new
    db2:
      ansible_host: 10.0.6.7
      ansible_connection: burrow.ssh.tunneled
      # An inventory hostname: bastion1's ansible_host, ansible_port, ansible_user and key make the hop.
      burrow_via:
        - bastion1
    bastion1:
      ansible_host: bastion.example.com
      ansible_port: 2222
      ansible_user: deploy
"""

import os
import time
import typing as t
from importlib.util import find_spec

from ansible.errors import AnsibleAuthenticationFailure, AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound, AnsibleOptionsError
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import (
    AuthenticationFailed,
    ConnectionLost,
    ControlError,
    ForwardRefused,
    HostKeyMismatch,
    HostKeyUnknown,
    PortInUse,
    RemoteFileNotFound,
    SpecError,
    TunnelError,
    Unreachable,
)
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.defaults import DEFAULT_CONNECT_TIMEOUT
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.client import BrokerClient, ExecStream
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.paths import owner_identity
from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.protocol import KIND_EXIT, KIND_STDERR, KIND_STDOUT
from ansible_collections.burrow.ssh.plugins.plugin_utils._inventory_hops import resolve_inventory_hops

display = Display()

# Ansible compiles a collection's Python files in every worker, once per task: the worker imports neither paramiko
# nor the option parser. It sends its raw options to the session broker, which validates them (once per set).
HAS_PARAMIKO = find_spec("paramiko") is not None
# The broker's errors arrive as the same classes (the error envelope, errors.py); each maps to the Ansible error
# that makes Ansible do the right thing (an unreachable host, a failed authentication, a bad option).
CONNECTION_ERRORS = (HostKeyUnknown, HostKeyMismatch, Unreachable, ConnectionLost, ControlError, ForwardRefused, PortInUse)
SESSION_OPTIONS = (
    "remote_addr",
    "port",
    "remote_user",
    "password",
    "private_key_file",
    "private_key_passphrase",
    "use_agent",
    "host_key_checking",
    "known_hosts_file",
    "host_key_fingerprint",
    "proxy_command",
    "certificate_file",
    "via",
    "ssh_config_file",
    "session_name",
    "timeout",
    "persist_idle_timeout",
    "persist",
    "forward_agent",
    "compression",
)


class Connection(ConnectionBase):
    """SSH through a hop chain, sessions held by the controller's broker."""

    transport = "burrow.ssh.tunneled"
    has_pipelining = True

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: BrokerClient | None = None
        self._label = ""

    # -- options -------------------------------------------------------------------------------------------
    def _resolve_option_variables(self, variables: t.Any, templar: t.Any) -> dict[str, t.Any]:
        """Ansible's option variables, with inventory hostnames in burrow_via replaced by those hosts' connection vars."""
        var_options = super()._resolve_option_variables(variables, templar)
        if var_options.get("burrow_via"):
            try:
                var_options["burrow_via"] = resolve_inventory_hops(var_options["burrow_via"], variables.get("hostvars"), "burrow_via")
            except ValueError as exc:
                raise AnsibleOptionsError(f"burrow.ssh.tunneled: {exc}") from exc
        return var_options

    def _session_options(self) -> dict[str, t.Any]:
        """What the broker needs to find or open this host's session (validated there, see _connection_session)."""
        options = {name: self.get_option(name) for name in SESSION_OPTIONS}
        options["owner"] = owner_identity(os.getppid())
        if not self._label:
            via = options.get("via") or []
            via_text = ", ".join(str(hop.get("host") if isinstance(hop, dict) else hop) for hop in ([via] if isinstance(via, str) else via))
            user = f"{options['remote_user']}@" if options.get("remote_user") else ""
            self._label = f"{user}{options['remote_addr']}:{options['port']}" + (f" via {via_text}" if via_text else "")
        return options

    def _forwards(self) -> dict[str, list[t.Any]]:
        return {
            "local": list(self.get_option("local_forwards") or []),
            "remote": list(self.get_option("remote_forwards") or []),
            "reverse_socks": list(self.get_option("reverse_socks") or []),
            "allow_non_loopback_bind": bool(self.get_option("allow_non_loopback_bind")),
            "audit": self.get_option("audit"),
        }

    # -- broker --------------------------------------------------------------------------------------------
    def _broker(self) -> BrokerClient:
        if self._client is None:
            try:
                self._client = BrokerClient()
            except (OSError, TunnelError) as exc:
                raise AnsibleConnectionFailure(f"burrow.ssh.tunneled: cannot use the state directory for the session broker: {exc}") from exc
        return self._client

    def _fail(self, exc: TunnelError, doing: str) -> t.NoReturn:
        if isinstance(exc, SpecError):
            raise AnsibleOptionsError(f"burrow.ssh.tunneled: {exc}") from exc
        message = f"burrow.ssh.tunneled: {doing} {self._label}: {exc}"
        if isinstance(exc, AuthenticationFailed):
            raise AnsibleAuthenticationFailure(message) from exc
        if isinstance(exc, RemoteFileNotFound):
            raise AnsibleFileNotFound(message) from exc
        if isinstance(exc, CONNECTION_ERRORS):
            raise AnsibleConnectionFailure(message) from exc
        raise AnsibleError(message) from exc

    def _call(self, request: dict[str, t.Any], doing: str) -> dict[str, t.Any]:
        try:
            return self._broker().call(request)
        except TunnelError as exc:
            self._fail(exc, doing)
        except OSError as exc:
            raise AnsibleConnectionFailure(f"burrow.ssh.tunneled: session broker failed while {doing} {self._label}: {exc}") from exc

    # -- the connection contract -----------------------------------------------------------------------------
    def _connect(self) -> Connection:
        if self._connected:
            return self
        if not HAS_PARAMIKO:
            raise AnsibleError("burrow.ssh.tunneled needs the Python library paramiko on the controller: pip install 'paramiko>=3.4'")
        options = self._session_options()
        display.vvv(f"ESTABLISH BURROW TUNNELED CONNECTION FOR USER: {self.get_option('remote_user')} TO {self._label}", host=self.get_option("remote_addr"))
        started = time.monotonic()
        answer = self._call({"op": "open", "options": options, "forwards": self._forwards()}, "connecting to")
        self._label = str(answer.get("label") or self._label)
        state = "reused the SSH session" if answer.get("reused") else "opened a new SSH session"
        display.vvv(f"burrow: {state} to {self._label} in {time.monotonic() - started:.3f} s", host=self.get_option("remote_addr"))
        for forward in answer.get("forwards") or []:
            where = f"{forward.get('bound_host')}:{forward.get('bound_port')}" if forward.get("bound_port") else forward.get("bound_path")
            display.vvv(f"burrow: forward {forward.get('key')} bound at {where}", host=self.get_option("remote_addr"))
        for warning in answer.get("warnings") or []:
            display.warning(f"burrow.ssh.tunneled: {warning}")
        self._connected = True
        return self

    def _connected_options(self) -> dict[str, t.Any]:
        """Connect when this task has not yet; the options that identify the host's session in the broker."""
        if not self._connected:
            self._connect()
        return self._session_options()

    def exec_command(self, cmd: str, in_data: bytes | None = None, sudoable: bool = True) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        options = self._connected_options()
        become_prompt = bool(sudoable and self.become and self.become.expect_prompt())
        # A pty lets su (and sudo with requiretty) prompt; with pipelined input the module goes on stdin, so no pty.
        pty = become_prompt and not in_data
        display.vvv(f"EXEC {cmd}", host=self.get_option("remote_addr"))
        # Without a prompt to answer, the input goes right behind the request; with one, only after the answer.
        early = not become_prompt
        request = {"options": options, "command": to_text(cmd, errors="surrogate_or_strict"), "pty": pty}
        # The broker is a separate process: it relays a forwarded agent to this worker's socket (a path, not a secret).
        request["agent_socket"] = os.environ.get("SSH_AUTH_SOCK") or None
        try:
            stream = self._broker().exec(request, stdin=in_data if early else None, eof=early and not pty)
        except TunnelError as exc:
            self._fail(exc, "running a command on")
        stdout = bytearray()
        stderr = bytearray()
        try:
            if become_prompt:
                self._become_handshake(stream, stdout, stderr)
                if stream.rc is None:
                    if in_data:
                        stream.send_stdin(in_data)
                    if not pty:
                        stream.close_stdin()
            if stream.rc is None:
                stream.collect(stdout, stderr)
        except TunnelError as exc:
            self._fail(exc, "running a command on")
        except OSError as exc:
            raise AnsibleConnectionFailure(f"burrow.ssh.tunneled: lost the session broker while running a command on {self._label}: {exc}") from exc
        finally:
            stream.close()
        if become_prompt and self.become is not None and self.become.check_incorrect_password(bytes(stdout) + bytes(stderr)):
            raise AnsibleError(f"Incorrect {self.become.name} password")
        return int(stream.rc if stream.rc is not None else -1), bytes(stdout), bytes(stderr)

    def _become_handshake(self, stream: ExecStream, stdout: bytearray, stderr: bytearray) -> None:
        """Wait for the become plugin's success marker or password prompt (on stdout or stderr) and answer the prompt."""
        become = self.become
        if become is None:  # pragma: no cover - guarded by the caller
            return
        timeout = float(self.get_option("timeout") or DEFAULT_CONNECT_TIMEOUT)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = to_text(bytes(stdout) + bytes(stderr), errors="surrogate_or_replace")
                raise AnsibleConnectionFailure(f"burrow.ssh.tunneled: timed out after {timeout:g} s waiting for privilege escalation on {self._label}: {seen}")
            frame = stream.read(remaining)
            if frame is None:
                continue
            kind, data = frame
            if kind == KIND_EXIT:
                return
            (stdout if kind == KIND_STDOUT else stderr).extend(data)
            if kind not in (KIND_STDOUT, KIND_STDERR):
                continue
            if become.check_success(bytes(stdout)) or become.check_success(bytes(stderr)):
                return
            if become.check_password_prompt(bytes(stdout)) or become.check_password_prompt(bytes(stderr)):
                password = become.get_option("become_pass")
                if not password:
                    raise AnsibleError(f"{become.name} asks for a password but none was supplied (become_password)")
                # What came before the answer is the prompt (and maybe a lecture): not command output.
                stdout.clear()
                stderr.clear()
                stream.send_stdin(to_bytes(password, errors="surrogate_or_strict") + b"\n")
                return

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        display.vvv(f"PUT {in_path} TO {out_path}", host=self.get_option("remote_addr"))
        local = os.path.abspath(to_text(in_path, errors="surrogate_or_strict"))
        if not os.path.exists(to_bytes(local, errors="surrogate_or_strict")):
            raise AnsibleFileNotFound(f"file or module does not exist: {local}")
        options = self._connected_options()
        self._call({"op": "put", "options": options, "local": local, "remote": to_text(out_path, errors="surrogate_or_strict")}, "copying a file to")

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        display.vvv(f"FETCH {in_path} TO {out_path}", host=self.get_option("remote_addr"))
        options = self._connected_options()
        umask = os.umask(0o022)
        os.umask(umask)
        local = os.path.abspath(to_text(out_path, errors="surrogate_or_strict"))
        remote = to_text(in_path, errors="surrogate_or_strict")
        self._call({"op": "fetch", "options": options, "remote": remote, "local": local, "umask": umask}, "fetching a file from")

    def reset(self) -> None:
        """Close the host's session in the broker (forwards included); the next task connects anew."""
        options = self._session_options()
        client = self._broker()
        sock = client._try_connect()
        if sock is not None:
            sock.close()
            answer = self._call({"op": "reset", "options": options}, "resetting the connection to")
            outcome = "closed the session" if answer.get("closed") else "found no session"
            display.vvv(f"burrow: reset {outcome} to {self._label}", host=self.get_option("remote_addr"))
        self._connected = False

    def close(self) -> None:
        # The session stays in the broker for the next task; only this task's view of it ends.
        self._connected = False
