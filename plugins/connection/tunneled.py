# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: tunneled
short_description: Run tasks over SSH through bastions, with connection-scoped forwards and reused sessions
version_added: 1.0.0
description:
  - Connects to the target host over SSH (paramiko), through the jump hosts listed in O(via), checking every hop's host key.
  - Runs commands (with privilege escalation and pipelining) and copies files over SFTP on the last hop.
  - The authenticated sessions are held by a session broker on the controller, one process per user (like OpenSSH's C(ControlPersist)),
    so the second and later tasks against a host do no SSH handshake, and hosts behind the same bastion share the bastion's connection.
    The broker closes a session after O(persist_idle_timeout) seconds without use, and everything once the ansible-playbook process has exited.
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
"""

import os
import time
import typing as t
from importlib.util import find_spec

from ansible.errors import AnsibleAuthenticationFailure, AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound, AnsibleOptionsError
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

from ansible_collections.burrow.ssh.plugins.module_utils._spec import SpecError, parse_hop, parse_jump_list
from ansible_collections.burrow.ssh.plugins.plugin_utils import _connection_forwards
from ansible_collections.burrow.ssh.plugins.plugin_utils._session_broker import (
    KIND_EXIT,
    KIND_STDERR,
    KIND_STDOUT,
    BrokerClient,
    BrokerError,
    ExecStream,
    hop_to_wire,
    owner_identity,
)

display = Display()

# The worker never imports paramiko (the broker does): checking that it is installed costs no import time per task.
HAS_PARAMIKO = find_spec("paramiko") is not None
HOST_KEY_CHECKING_WORDS = {"true": "strict", "yes": "strict", "on": "strict", "1": "strict", "false": "off", "no": "off", "0": "off"}
AUTH_KINDS = ("authentication_failed",)
CONNECTION_KINDS = ("host_key_unknown", "host_key_mismatch", "unreachable", "connection_lost", "control_error", "forward_refused", "port_in_use")


class Connection(ConnectionBase):
    """SSH through a hop chain, sessions held by the controller's broker."""

    transport = "burrow.ssh.tunneled"
    has_pipelining = True

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: BrokerClient | None = None
        self._session: dict[str, t.Any] | None = None
        self._label = ""

    # -- options -------------------------------------------------------------------------------------------
    def _host_key_checking(self) -> str:
        value = self.get_option("host_key_checking")
        text = str(value).strip().lower() if value is not None else "strict"
        text = HOST_KEY_CHECKING_WORDS.get(text, text)
        if text not in ("strict", "accept-new", "off"):
            raise AnsibleOptionsError(f"burrow_host_key_checking must be strict, accept-new or off (or a boolean), not {value!r}")
        return text

    def _hop_defaults(self) -> dict[str, t.Any]:
        defaults: dict[str, t.Any] = {
            "user": self.get_option("remote_user"),
            "private_key_file": self.get_option("private_key_file"),
            "private_key_passphrase": self.get_option("private_key_passphrase"),
            "use_agent": self.get_option("use_agent"),
            "host_key_checking": self._host_key_checking(),
            "known_hosts_file": self.get_option("known_hosts_file"),
        }
        return {key: value for key, value in defaults.items() if value is not None and value != ""}

    def _build_session(self) -> dict[str, t.Any]:
        defaults = self._hop_defaults()
        host = str(self.get_option("remote_addr"))
        try:
            via = self._via_hops(host, defaults)
            target_data: dict[str, t.Any] = {"host": host, "port": self.get_option("port")}
            for key in ("password", "host_key_fingerprint"):
                if self.get_option(key):
                    target_data[key] = self.get_option(key)
            target = parse_hop(target_data, "ansible_host", defaults)
        except SpecError as exc:
            raise AnsibleOptionsError(f"burrow.ssh.tunneled: {exc}") from exc
        hops = [*via, target]
        self._label = target.label() + (" via " + ", ".join(hop.label() for hop in via) if via else "")
        return {
            "hops": [hop_to_wire(hop) for hop in hops],
            "name": str(self.get_option("session_name")),
            "connect_timeout": int(self.get_option("timeout")),
            "idle_timeout": int(self.get_option("persist_idle_timeout")),
            "owner": owner_identity(os.getppid()),
        }

    def _via_hops(self, host: str, defaults: dict[str, t.Any]) -> list[t.Any]:
        via = self.get_option("via")
        if isinstance(via, str):
            via = [via]
        if not via:
            return self._ssh_config_jumps(host, defaults)
        hops = []
        for index, entry in enumerate(via):
            field = f"burrow_via[{index}]"
            if isinstance(entry, str) and "," in entry:
                parts = [part.strip() for part in entry.split(",") if part.strip()]
                hops.extend(parse_hop(part, f"{field}[{sub}]", defaults) for sub, part in enumerate(parts))
            elif isinstance(entry, (str, dict)):
                hops.append(parse_hop(entry, field, defaults))
            else:
                raise SpecError(field, entry, "must be a string like user@host:port or a dict with a host key")
        return hops

    def _ssh_config_jumps(self, host: str, defaults: dict[str, t.Any]) -> list[t.Any]:
        """ProxyJump for the target from the OpenSSH client configuration, as ssh would resolve it."""
        path = os.path.expanduser(self.get_option("ssh_config_file") or "")
        if not path or not os.path.isfile(path):
            return []
        with open(path, encoding="utf-8", errors="replace") as handle:
            if "proxyjump" not in handle.read().lower():
                return []
        import paramiko

        config = paramiko.SSHConfig.from_path(path)
        jump = config.lookup(host).get("proxyjump")
        if not jump or jump.lower() == "none":
            return []
        hops = []
        for index, hop in enumerate(parse_jump_list(jump, "ProxyJump")):
            settings = config.lookup(hop.host)
            data: dict[str, t.Any] = {
                "host": settings.get("hostname", hop.host),
                "port": hop.port if hop.port != 22 else int(settings.get("port", 22)),
                "user": hop.user or settings.get("user"),
            }
            identities = settings.get("identityfile") or []
            if identities:
                data["private_key_file"] = identities[0]
            hops.append(parse_hop({key: value for key, value in data.items() if value is not None}, f"ProxyJump[{index}]", defaults))
        return hops

    def _forwards(self) -> dict[str, list[t.Any]]:
        declared = {
            "local": list(self.get_option("local_forwards") or []),
            "remote": list(self.get_option("remote_forwards") or []),
            "reverse_socks": list(self.get_option("reverse_socks") or []),
        }
        try:
            _connection_forwards.parse_declared(declared)
        except SpecError as exc:
            raise AnsibleOptionsError(f"burrow.ssh.tunneled: {exc}") from exc
        return declared

    # -- broker --------------------------------------------------------------------------------------------
    def _broker(self) -> BrokerClient:
        if self._client is None:
            try:
                self._client = BrokerClient()
            except (OSError, BrokerError) as exc:
                raise AnsibleConnectionFailure(f"burrow.ssh.tunneled: cannot use the state directory for the session broker: {exc}") from exc
        return self._client

    def _fail(self, exc: Exception, doing: str) -> t.NoReturn:
        kind = getattr(exc, "kind", "error")
        message = f"burrow.ssh.tunneled: {doing} {self._label}: {exc}"
        if kind in AUTH_KINDS:
            raise AnsibleAuthenticationFailure(message) from exc
        if kind == "not_found":
            raise AnsibleFileNotFound(message) from exc
        if kind in CONNECTION_KINDS:
            raise AnsibleConnectionFailure(message) from exc
        raise AnsibleError(message) from exc

    def _call(self, request: dict[str, t.Any], doing: str) -> dict[str, t.Any]:
        try:
            return self._broker().call(request)
        except BrokerError as exc:
            self._fail(exc, doing)
        except OSError as exc:
            raise AnsibleConnectionFailure(f"burrow.ssh.tunneled: session broker failed while {doing} {self._label}: {exc}") from exc

    # -- the connection contract -----------------------------------------------------------------------------
    def _connect(self) -> Connection:
        if self._connected:
            return self
        if not HAS_PARAMIKO:
            raise AnsibleError("burrow.ssh.tunneled needs the Python library paramiko on the controller: pip install 'paramiko>=3.4'")
        self._session = self._build_session()
        display.vvv(f"ESTABLISH BURROW TUNNELED CONNECTION FOR USER: {self.get_option('remote_user')} TO {self._label}", host=self.get_option("remote_addr"))
        started = time.monotonic()
        answer = self._call({"op": "open", "session": self._session, "forwards": self._forwards()}, "connecting to")
        state = "reused the SSH session" if answer.get("reused") else "opened a new SSH session"
        display.vvv(f"burrow: {state} to {self._label} in {time.monotonic() - started:.3f} s", host=self.get_option("remote_addr"))
        for forward in answer.get("forwards") or []:
            where = f"{forward.get('bound_host')}:{forward.get('bound_port')}" if forward.get("bound_port") else forward.get("bound_path")
            display.vvv(f"burrow: forward {forward.get('key')} bound at {where}", host=self.get_option("remote_addr"))
        for warning in answer.get("warnings") or []:
            display.warning(f"burrow.ssh.tunneled: {warning}")
        self._connected = True
        return self

    def _ensure_session(self) -> dict[str, t.Any]:
        if not self._connected or self._session is None:
            self._connect()
        if self._session is None:  # pragma: no cover - _connect sets it or raises
            raise AnsibleConnectionFailure("burrow.ssh.tunneled: no session")
        return self._session

    def exec_command(self, cmd: str, in_data: bytes | None = None, sudoable: bool = True) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        session = self._ensure_session()
        become_prompt = bool(sudoable and self.become and self.become.expect_prompt())
        # A pty lets su (and sudo with requiretty) prompt; with pipelined input the module goes on stdin, so no pty.
        pty = become_prompt and not in_data
        display.vvv(f"EXEC {cmd}", host=self.get_option("remote_addr"))
        # Without a prompt to answer, the input goes right behind the request; with one, only after the answer.
        early = not become_prompt
        request = {"session": session, "command": to_text(cmd, errors="surrogate_or_strict"), "pty": pty}
        try:
            stream = self._broker().exec(request, stdin=in_data if early else None, eof=early and not pty)
        except BrokerError as exc:
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
        except BrokerError as exc:
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
        timeout = float(self.get_option("timeout"))
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
        session = self._ensure_session()
        self._call({"op": "put", "session": session, "local": local, "remote": to_text(out_path, errors="surrogate_or_strict")}, "copying a file to")

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        display.vvv(f"FETCH {in_path} TO {out_path}", host=self.get_option("remote_addr"))
        session = self._ensure_session()
        umask = os.umask(0o022)
        os.umask(umask)
        local = os.path.abspath(to_text(out_path, errors="surrogate_or_strict"))
        remote = to_text(in_path, errors="surrogate_or_strict")
        self._call({"op": "fetch", "session": session, "remote": remote, "local": local, "umask": umask}, "fetching a file from")

    def reset(self) -> None:
        """Close the host's session in the broker (forwards included); the next task connects anew."""
        session = self._session or self._build_session()
        client = self._broker()
        sock = client._try_connect()
        if sock is not None:
            sock.close()
            answer = self._call({"op": "reset", "session": session}, "resetting the connection to")
            outcome = "closed the session" if answer.get("closed") else "found no session"
            display.vvv(f"burrow: reset {outcome} to {self._label}", host=self.get_option("remote_addr"))
        self._connected = False

    def close(self) -> None:
        # The session stays in the broker for the next task; only this task's view of it ends.
        self._connected = False
