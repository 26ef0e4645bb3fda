# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A self-contained sandbox on loopback: a real OpenSSH sshd, PostgreSQL, a TCP echo and an HTTP service.

Stdlib only. Importable (``from sandbox import Sandbox``) and a CLI::

    python tests/sandbox/sandbox.py check
    python tests/sandbox/sandbox.py run [--no-postgres] [--workdir DIR] -- CMD ARGS...

Everything started is recorded (pid and kernel start time) in ``ROOT/pids``; ``Sandbox.stop()`` stops it by
recorded pid (the process's stop signal, then SIGKILL after 5 s), also kills what the sshd listeners forked per
connection, and removes the sandbox directory. It is idempotent and registered with ``atexit``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import getpass
import http.server
import json
import os
import pathlib
import pwd
import secrets
import selectors
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import typing as t

SSHD = "/usr/sbin/sshd"
START_DEADLINE = 10.0
STOP_GRACE = 5.0
KILL_GRACE = 3.0
PORT_RETRIES = 5
CHUNK = 256 * 1024
HERE = pathlib.Path(__file__).resolve()


class SandboxError(RuntimeError):
    """A sandbox service could not be started or reconfigured; the message names the cause and the log."""


# --------------------------------------------------------------------------------------------------------------
# process helpers (Linux /proc)


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) of a process, or None when it does not exist."""
    try:
        raw = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None


def _start_time(pid: int) -> int:
    stat = _proc_stat(pid)
    return stat[2] if stat else 0


def pid_alive(pid: int, start_time: int = 0) -> bool:
    """True when the process exists, is not a zombie and (if given) has the recorded start time."""
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return not (start_time and stat[2] != start_time)


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _proc_stat(int(entry))
        if stat is not None:
            children.setdefault(stat[1], []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    """All live descendants of pid, parents before children."""
    children = _children_map()
    found: list[int] = []
    queue = list(children.get(pid, []))
    while queue and len(found) < 10000:
        child = queue.pop(0)
        found.append(child)
        queue.extend(children.get(child, []))
    return found


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _read_banner(host: str, port: int, timeout: float = 1.0) -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        data = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in data and len(data) < 512 and time.monotonic() < deadline:
            part = sock.recv(512)
            if not part:
                break
            data += part
        return data


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def _tail(path: pathlib.Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _run(argv: list[str], timeout: float = 60, **kwargs: t.Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def _netns_prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


_ACCUMULATING = {"port", "listenaddress", "hostkey"}


def _line_key(line: str) -> str:
    """The keyword of an sshd_config line, lower case (``subsystem NAME`` for subsystems)."""
    parts = line.strip().replace("=", " ", 1).split()
    if not parts or parts[0].startswith("#"):
        return ""
    key = parts[0].lower()
    return f"{key} {parts[1]}" if key == "subsystem" and len(parts) > 1 else key


def _top_level_keys(config: str) -> set[str]:
    keys: set[str] = set()
    for line in config.splitlines():
        key = _line_key(line)
        if key == "match":
            break
        if key:
            keys.add(key)
    return keys


class _Record:
    """One process started by the sandbox."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], stop_signal: int, kill_tree: bool) -> None:
        self.name = name
        self.proc = proc
        self.pid = proc.pid
        self.start_time = _start_time(proc.pid)
        self.stop_signal = stop_signal
        self.kill_tree = kill_tree

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            return False
        return pid_alive(self.pid, self.start_time)


# --------------------------------------------------------------------------------------------------------------
# services


class Service:
    """A TCP service (echo or HTTP) running as a subprocess of the sandbox."""

    def __init__(self, sandbox: Sandbox, record: _Record, host: str, port: int, kind: str) -> None:
        self._sandbox = sandbox
        self._record = record
        self.host = host
        self.port = port
        self.kind = kind
        self.pid_or_thread: int | threading.Thread = record.pid

    @property
    def pid(self) -> int:
        return self._record.pid

    def stop(self) -> None:
        self._sandbox._stop_records([self._record])


class Sshd:
    """One sshd listener of the sandbox, with its own host key, client key, known_hosts and log."""

    def __init__(
        self, sandbox: Sandbox, name: str, base: pathlib.Path, *, listen: str, port: int, extra_config: str, authorized_key_options: str, netns: str | None
    ) -> None:
        self._sandbox = sandbox
        self._record: _Record | None = None
        self.name = name
        self.base = base
        self.host = listen
        self.port = port
        self.netns = netns
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.extra_config = extra_config
        self.authorized_key_options = authorized_key_options
        self.config_path = base / "sshd_config"
        self.log_path = base / "sshd.log"
        self.pid_file = base / "sshd.pid"
        self.host_key = base / "ssh_host_ed25519_key"
        self.client_key = base / "client_ed25519"
        self.known_hosts = base / "known_hosts"
        self.authorized_keys = base / "authorized_keys"
        self.client_pubkey = ""
        self.host_pubkey_line = ""
        self.host_key_fingerprint = ""

    # -- keys and files ---------------------------------------------------------------------------------------
    def hop(self, use_agent: bool | None = False) -> dict[str, t.Any]:
        """The burrow.ssh hop options that reach this sshd with its client key and known_hosts (no agent by default)."""
        options: dict[str, t.Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "private_key_file": str(self.client_key),
            "known_hosts_file": str(self.known_hosts),
        }
        if use_agent is not None:
            options["use_agent"] = use_agent
        return options

    def _keygen(self, path: pathlib.Path, comment: str) -> None:
        for stale in (path, path.with_name(path.name + ".pub")):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        result = _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
        if result.returncode != 0:
            raise SandboxError(f"ssh-keygen failed for {path}: {result.stderr.strip()}")
        path.chmod(0o600)

    def _load_host_key(self) -> None:
        pub = self.host_key.with_name(self.host_key.name + ".pub")
        fields = pub.read_text().split()
        self.host_pubkey_line = f"{fields[0]} {fields[1]}"
        result = _run(["ssh-keygen", "-lf", str(pub)])
        if result.returncode != 0:
            raise SandboxError(f"ssh-keygen -lf {pub} failed: {result.stderr.strip()}")
        self.host_key_fingerprint = result.stdout.split()[1]

    def _known_hosts_host(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def _write_known_hosts(self) -> None:
        self.known_hosts.write_text(f"{self._known_hosts_host()} {self.host_pubkey_line}\n")
        self.known_hosts.chmod(0o600)

    def render_config(self, extra_config: str) -> str:
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.host_key}",
            f"PidFile {self.pid_file}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "AllowTcpForwarding yes",
            "GatewayPorts clientspecified",
            "AllowStreamLocalForwarding yes",
            "ClientAliveInterval 0",
            "LogLevel VERBOSE",
            "MaxStartups 200",
            "MaxSessions 100",
            "PrintMotd no",
            "Subsystem sftp internal-sftp",
        ]
        # sshd keeps the first value it reads: a keyword set at top level in extra_config (before any Match) replaces
        # the default line, so extra_config can override it; the extra text itself is appended verbatim.
        overridden = _top_level_keys(extra_config)
        kept = [line for line in lines if _line_key(line) not in overridden or _line_key(line) in _ACCUMULATING]
        return "\n".join(kept) + "\n" + (extra_config.rstrip("\n") + "\n" if extra_config else "")

    def prepare(self) -> None:
        self.base.mkdir(mode=0o700)
        self._keygen(self.host_key, f"burrow-sandbox-{self.name}-host")
        self._keygen(self.client_key, f"burrow-sandbox-{self.name}-client")
        pub = self.client_key.with_name(self.client_key.name + ".pub").read_text().split()
        self.client_pubkey = f"{pub[0]} {pub[1]}"
        prefix = f"{self.authorized_key_options} " if self.authorized_key_options else ""
        self.authorized_keys.write_text(f"{prefix}{self.client_pubkey} burrow-sandbox\n")
        self.authorized_keys.chmod(0o600)
        self._load_host_key()

    # -- process ------------------------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self._record.pid if self._record else 0

    def _validate(self) -> None:
        result = _run([SSHD, "-t", "-f", str(self.config_path)])
        if result.returncode != 0:
            raise SandboxError(f"sshd -t -f {self.config_path} rejected the config: {result.stderr.strip()}")

    def _banner_ok(self) -> bool:
        if self.netns:
            probe = _run([*_netns_prefix(self.netns), sys.executable, str(HERE), "_banner", self.host, str(self.port)], timeout=5)
            return probe.returncode == 0
        try:
            return _read_banner(self.host, self.port).startswith(b"SSH-2.0")
        except OSError:
            return False

    def start(self) -> None:
        """Start the listener; with a chosen port, retry on another free port when sshd cannot bind."""
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        choose = self.port == 0
        last_error = ""
        for _attempt in range(PORT_RETRIES if choose else 1):
            if choose:
                self.port = self._sandbox._pick_port(self.host, self.netns)
            self.config_path.write_text(self.render_config(self.extra_config))
            self._validate()
            self._write_known_hosts()
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            argv = [*_netns_prefix(self.netns), SSHD, "-D", "-e", "-f", str(self.config_path)]
            self._record = self._sandbox._spawn(f"sshd:{self.name}", argv, self.log_path, stop_signal=signal.SIGTERM, kill_tree=True)
            deadline = time.monotonic() + START_DEADLINE
            while time.monotonic() < deadline:
                if not self._record.alive():
                    break
                if self._banner_ok():
                    return
                time.sleep(0.05)
            log = self.log_path.read_text(errors="replace")[offset:]
            self._sandbox._stop_records([self._record])
            last_error = log.strip()[-800:]
            if "Address already in use" not in log and "Cannot bind" not in log:
                break
        raise SandboxError(f"sshd {self.name} did not accept on {self.host}:{self.port} within {START_DEADLINE:.0f} s; log {self.log_path}:\n{last_error}")

    def _wait_relisten(self, offset: int) -> None:
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            tail = self.log_path.read_text(errors="replace")[offset:]
            if "Server listening on" in tail and self._banner_ok():
                return
            if self._record is None or not self._record.alive():
                break
            time.sleep(0.05)
        raise SandboxError(f"sshd {self.name} did not listen again after SIGHUP; log {self.log_path}:\n{_tail(self.log_path)}")

    def reconfigure(self, extra_config: str) -> None:
        """Rewrite the config (same port and keys), validate it with sshd -t, SIGHUP and wait until it listens again."""
        old = self.config_path.read_text()
        self.config_path.write_text(self.render_config(extra_config))
        try:
            self._validate()
        except SandboxError:
            self.config_path.write_text(old)
            raise
        self.extra_config = extra_config
        if self._record is None or not self._record.alive():
            self.start()
            return
        offset = self.log_path.stat().st_size
        _signal(self._record.pid, signal.SIGHUP)
        self._wait_relisten(offset)

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    def stop(self) -> None:
        if self._record is not None:
            self._sandbox._stop_records([self._record])

    def child_pids(self) -> list[int]:
        """Per-connection processes under the listener (children and their children), parents first."""
        return descendants(self.pid) if self.pid else []

    def regenerate_host_key(self) -> None:
        """New host key, then restart; known_hosts keeps the old key (host_pubkey_line/fingerprint show the new one)."""
        self.previous_host_pubkey_line = self.host_pubkey_line
        self._keygen(self.host_key, f"burrow-sandbox-{self.name}-host")
        self._load_host_key()
        known = self.known_hosts.read_text()
        self.restart()
        self.known_hosts.write_text(known)


class Postgres:
    """A PostgreSQL server of the sandbox, with role/database ``burrow`` and the ``inventory`` table."""

    def __init__(self, base: pathlib.Path, bindir: pathlib.Path) -> None:
        self.base = base
        self.bindir = bindir
        self.datadir = base / "data"
        self.socket_dir = base / "sock"
        self.log_path = base / "postgres.log"
        self.host = "127.0.0.1"
        self.port = 0
        self.user = "burrow"
        self.password = secrets.token_urlsafe(18)
        self.database = "burrow"
        self.superuser = "postgres"
        self._record: _Record | None = None
        self._argv: list[str] = []
        self._env: dict[str, str] = {}

    @property
    def pid(self) -> int:
        return self._record.pid if self._record else 0

    def psql_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PGPASSWORD"] = self.password
        env["PGCONNECT_TIMEOUT"] = "5"
        return env

    def query(self, sql: str) -> str:
        """Run one SQL statement over TCP with scram-sha-256 auth (password in PGPASSWORD, never argv); stdout, unaligned."""
        argv = [str(self.bindir / "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p", str(self.port), "-U", self.user, "-d", self.database]
        result = _run([*argv, "-c", sql], env=self.psql_env(), timeout=30)
        if result.returncode != 0:
            raise SandboxError(f"psql failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout.strip()


# --------------------------------------------------------------------------------------------------------------
# the sandbox


def _postgres_bindir() -> pathlib.Path | None:
    candidates = sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    for path in candidates:
        if all((path / name).exists() for name in ("initdb", "postgres", "psql", "pg_isready")):
            return path
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return pathlib.Path(found).parent
    return None


class Sandbox:
    """Private temp dir plus the services started in it; a context manager that always cleans up."""

    def __init__(self, root: str | None = None) -> None:
        self._records: list[_Record] = []
        self.history: list[tuple[int, int, str]] = []  # every (pid, start_time, name) ever recorded
        self._stopped = False
        self._lock = threading.RLock()
        self._external: list[pathlib.Path] = []
        self._restore_mode: int | None = None
        self.skipped: dict[str, str] = {}
        self.sshds: dict[str, Sshd] = {}
        self.postgres: Postgres | None = None
        self.echo: Service | None = None
        self.http: Service | None = None
        self.http_body = b""
        if root is None:
            self.root = pathlib.Path(tempfile.mkdtemp(prefix="burrow-sandbox-", dir="/tmp"))
            self._own_root = True
        else:
            self.root = pathlib.Path(root).resolve()
            self._own_root = not self.root.exists()
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._own_root:
            self.root.chmod(0o700)
        self._created: list[pathlib.Path] = []
        self.pids_file = self._path("pids")
        self._write_pids()
        atexit.register(self.stop)

    # -- bookkeeping --------------------------------------------------------------------------------------------
    def _path(self, name: str) -> pathlib.Path:
        path = self.root / name
        if not self._own_root:
            self._created.append(path)
        return path

    def _write_pids(self) -> None:
        lines = [f"{r.pid} {r.start_time} {r.stop_signal} {r.name}" for r in self._records]
        tmp = self.pids_file.with_name("pids.tmp")
        tmp.write_text("".join(f"{line}\n" for line in [f"owner {os.getpid()} {_start_time(os.getpid())}", *lines]))
        tmp.chmod(0o600)
        tmp.replace(self.pids_file)

    def _spawn(self, name: str, argv: list[str], log_path: pathlib.Path, stop_signal: int, kill_tree: bool, **kwargs: t.Any) -> _Record:
        if self._stopped:
            raise SandboxError("sandbox already stopped")
        with self._lock, open(log_path, "ab") as log:
            kwargs.setdefault("stdout", log)
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=log, start_new_session=True, close_fds=True, **kwargs)
            record = _Record(name, proc, stop_signal, kill_tree)
            self._records.append(record)
            self.history.append((record.pid, record.start_time, name))
            self._write_pids()
        return record

    def _pick_port(self, host: str, netns: str | None) -> int:
        if not netns:
            return _free_port(host)
        result = _run([*_netns_prefix(netns), sys.executable, str(HERE), "_free-port", host], timeout=10)
        if result.returncode != 0:
            raise SandboxError(f"cannot pick a port in netns {netns}: {result.stderr.strip()}")
        return int(result.stdout.strip())

    def _stop_records(self, records: list[_Record]) -> None:
        """Stop signal to each record (and SIGTERM to sshd connection processes), wait 5 s, then SIGKILL survivors."""
        with self._lock:
            targets: list[tuple[int, int]] = []
            for record in records:
                if not record.alive():
                    continue
                tree = [(pid, _start_time(pid)) for pid in descendants(record.pid)]
                _signal(record.pid, record.stop_signal)
                for pid, _start in tree:
                    if record.kill_tree:
                        _signal(pid, signal.SIGTERM)
                targets.append((record.pid, record.start_time))
                targets.extend(tree)
            for sig, grace in ((None, STOP_GRACE), (signal.SIGKILL, KILL_GRACE)):
                if sig is not None:
                    for pid, start in targets:
                        if pid_alive(pid, start):
                            _signal(pid, sig)
                deadline = time.monotonic() + grace
                while time.monotonic() < deadline:
                    for record in records:
                        record.proc.poll()
                    if not any(pid_alive(pid, start) for pid, start in targets):
                        break
                    time.sleep(0.02)
            for record in records:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    record.proc.wait(timeout=0.5)
                if record in self._records:
                    self._records.remove(record)
            if self.pids_file.parent.exists() and not self._stopped:
                self._write_pids()

    def recorded_pids(self) -> list[int]:
        return [pid for pid, _start, _name in self.history]

    def alive_recorded(self) -> list[int]:
        return [pid for pid, start, _name in self.history if pid_alive(pid, start)]

    def stop(self) -> None:
        """Stop everything by recorded pid, remove the sandbox dir (or only what it created in a given dir). Idempotent."""
        with self._lock:
            if self._stopped:
                return
            try:
                self._stop_records(list(reversed(self._records)))
            finally:
                self._stopped = True
                for path in self._external:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                if self._own_root:
                    shutil.rmtree(self.root, ignore_errors=True)
                else:
                    for path in self._created:
                        if path.is_dir() and not path.is_symlink():
                            shutil.rmtree(path, ignore_errors=True)
                        else:
                            with contextlib.suppress(FileNotFoundError):
                                path.unlink()
                    if self._restore_mode is not None:
                        with contextlib.suppress(OSError):
                            self.root.chmod(self._restore_mode)
                with contextlib.suppress(Exception):
                    atexit.unregister(self.stop)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- services -----------------------------------------------------------------------------------------------
    def start_sshd(
        self,
        *,
        extra_config: str = "",
        listen: str = "127.0.0.1",
        port: int = 0,
        authorized_key_options: str = "",
        netns: str | None = None,
        name: str = "sshd",
    ) -> Sshd:
        if name in self.sshds:
            raise SandboxError(f"an sshd named {name!r} is already running in this sandbox")
        if netns and os.geteuid() != 0:
            raise SandboxError("netns needs root")
        sshd = Sshd(
            self,
            name,
            self._path(f"sshd-{name}"),
            listen=listen,
            port=port,
            extra_config=extra_config,
            authorized_key_options=authorized_key_options,
            netns=netns,
        )
        sshd.prepare()
        sshd.start()
        self.sshds[name] = sshd
        return sshd

    @property
    def sshd(self) -> Sshd | None:
        return self.sshds.get("sshd") or next(iter(self.sshds.values()), None)

    def _start_service(self, kind: str, listen: str, port: int, extra: list[str]) -> Service:
        log = self._path(f"{kind}-{secrets.token_hex(3)}.log")
        argv = [sys.executable, str(HERE), f"_serve-{kind}", listen, str(port), *extra]
        record = self._spawn(kind, argv, log, stop_signal=signal.SIGTERM, kill_tree=False, stdout=subprocess.PIPE)
        proc = record.proc
        deadline = time.monotonic() + START_DEADLINE
        line = b""
        try:
            # the child prints "PORT <n>" once it listens
            with selectors.DefaultSelector() as sel:
                assert proc.stdout is not None
                sel.register(proc.stdout, selectors.EVENT_READ)
                while time.monotonic() < deadline and not line.endswith(b"\n"):
                    if sel.select(timeout=0.1):
                        part = os.read(proc.stdout.fileno(), 64)
                        if not part:
                            break
                        line += part
            if not line.startswith(b"PORT "):
                raise SandboxError(f"{kind} service did not start: {_tail(log)}")
            bound = int(line.split()[1])
        except BaseException:
            self._stop_records([record])
            raise
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
        return Service(self, record, listen, bound, kind)

    def start_echo(self, listen: str = "127.0.0.1", port: int = 0) -> Service:
        """TCP echo: echoes until EOF, then shuts down its write side (half-close kept)."""
        self.echo = self._start_service("echo", listen, port, [])
        return self.echo

    def start_http(self, body: bytes = b"burrow sandbox http\n", listen: str = "127.0.0.1", port: int = 0) -> Service:
        """HTTP/1.0 server answering GET / with body (text/plain)."""
        body_file = self._path(f"http-body-{secrets.token_hex(3)}")
        body_file.write_bytes(body)
        self.http = self._start_service("http", listen, port, [str(body_file)])
        self.http_body = body
        return self.http

    def start_postgres(self) -> Postgres | None:
        """initdb + postgres on 127.0.0.1 (free port), role/db burrow, table inventory with 3 rows. None when absent."""
        bindir = _postgres_bindir()
        if bindir is None:
            self.skipped["postgres"] = "PostgreSQL server binaries (initdb, postgres, psql, pg_isready) not found"
            return None
        pg = Postgres(self._path("postgres"), bindir)
        pg.base.mkdir(mode=0o700)
        pg.socket_dir.mkdir(mode=0o700)
        preexec: list[str] = []
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                account = pwd.getpwnam("nobody")
            pg.superuser = account.pw_name if account.pw_name == "postgres" else "postgres"
            for path in (pg.base, pg.socket_dir):
                os.chown(path, account.pw_uid, account.pw_gid)
            # the server user must traverse the sandbox root (0711: traverse, no listing); files in it stay 0600/0700
            mode = self.root.stat().st_mode & 0o777
            if not mode & 0o001:
                if not self._own_root:
                    self._restore_mode = mode
                self.root.chmod(mode | 0o011)
            preexec = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups", "--"]
        else:
            pg.superuser = getpass.getuser()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        init = _run(
            [
                *preexec,
                str(bindir / "initdb"),
                "-D",
                str(pg.datadir),
                "-U",
                pg.superuser,
                "-A",
                "trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            cwd=str(pg.base),
            env=env,
            timeout=120,
        )
        if init.returncode != 0:
            raise SandboxError(f"initdb failed: {init.stderr.strip()[-800:]}")
        last_error = ""
        for _attempt in range(PORT_RETRIES):
            pg.port = _free_port(pg.host)
            argv = [
                *preexec,
                str(bindir / "postgres"),
                "-D",
                str(pg.datadir),
                "-c",
                f"listen_addresses={pg.host}",
                "-c",
                f"port={pg.port}",
                "-c",
                f"unix_socket_directories={pg.socket_dir}",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "shared_buffers=16MB",
                "-c",
                "max_connections=100",
                "-c",
                "logging_collector=off",
                "-c",
                "password_encryption=scram-sha-256",
            ]
            offset = pg.log_path.stat().st_size if pg.log_path.exists() else 0
            pg._argv, pg._env = argv, env
            if self._spawn_postgres(pg):
                break
            log = pg.log_path.read_text(errors="replace")[offset:]
            self._stop_records([pg._record])
            last_error = log.strip()[-800:]
            if "could not bind" not in log and "in use" not in log:
                raise SandboxError(f"postgres did not start: {last_error}")
        else:
            raise SandboxError(f"postgres could not bind a port: {last_error}")
        escaped = pg.password.replace("'", "''")
        setup = (
            f"CREATE ROLE {pg.user} LOGIN PASSWORD '{escaped}';\n"  # over stdin: the password never reaches argv
            f"CREATE DATABASE {pg.database} OWNER {pg.user};\n"
        )
        result = _run(
            [
                *preexec,
                str(bindir / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(pg.socket_dir),
                "-p",
                str(pg.port),
                "-U",
                pg.superuser,
                "-d",
                "postgres",
            ],
            input=setup,
            env=env,
            cwd=str(pg.base),
        )
        if result.returncode != 0:
            raise SandboxError(f"creating role/database failed: {result.stderr.strip()}")
        pg.query(
            "CREATE TABLE inventory(id int primary key, item text); INSERT INTO inventory VALUES (1,'bastion'),(2,'tunnel'),(3,'socks');"
        )  # over TCP with scram: proves the password auth path
        self.postgres = pg
        return pg

    def _spawn_postgres(self, pg: Postgres) -> bool:
        """Start the server with its recorded argv; True once pg_isready says it accepts connections (30 s deadline)."""
        # SIGINT is PostgreSQL's "fast shutdown" (SIGTERM would wait for clients); SIGKILL after 5 s still applies
        pg._record = self._spawn("postgres", pg._argv, pg.log_path, stop_signal=signal.SIGINT, kill_tree=False, cwd=str(pg.base), env=pg._env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and pg._record.alive():
            probe = _run([str(pg.bindir / "pg_isready"), "-q", "-h", str(pg.socket_dir), "-p", str(pg.port)], timeout=10)
            if probe.returncode == 0:
                return True
            time.sleep(0.1)
        return False

    def stop_postgres(self) -> None:
        """Stop the sandbox's PostgreSQL (fast shutdown); start_postgres_again brings it back on the same port."""
        if self.postgres is not None and self.postgres._record is not None:
            self._stop_records([self.postgres._record])

    def start_postgres_again(self) -> None:
        pg = self.postgres
        if pg is None or not self._spawn_postgres(pg):
            raise SandboxError(f"postgres did not start again: {pg.log_path.read_text(errors='replace')[-800:] if pg else 'never started'}")

    # -- files for Ansible and ssh ------------------------------------------------------------------------------
    def _remember_output(self, path: pathlib.Path) -> None:
        try:
            path.resolve().relative_to(self.root)
        except ValueError:
            self._external.append(path)
        else:
            if not self._own_root:
                self._created.append(path)

    def inventory_vars(self) -> dict[str, t.Any]:
        sshd = self.sshd
        values: dict[str, t.Any] = {"ansible_python_interpreter": sys.executable, "sandbox_dir": str(self.root)}
        if sshd is not None:
            values.update(
                sandbox_sshd_host=sshd.host,
                sandbox_sshd_port=sshd.port,
                sandbox_sshd_user=sshd.user,
                sandbox_client_key=str(sshd.client_key),
                sandbox_known_hosts=str(sshd.known_hosts),
                sandbox_host_key_fingerprint=sshd.host_key_fingerprint,
            )
        if self.postgres is not None:
            pg = self.postgres
            values.update(
                sandbox_pg_host=pg.host, sandbox_pg_port=pg.port, sandbox_pg_user=pg.user, sandbox_pg_database=pg.database, sandbox_pg_password=pg.password
            )
        if self.echo is not None:
            values["sandbox_echo_port"] = self.echo.port
        if self.http is not None:
            values["sandbox_http_port"] = self.http.port
            values["sandbox_http_body"] = self.http_body.decode("utf-8", errors="replace")
        return values

    def write_inventory(self, path: str | os.PathLike[str]) -> pathlib.Path:
        """YAML inventory (scalars written as JSON, which YAML reads verbatim); 0600: it holds the PostgreSQL password."""
        path = pathlib.Path(path)
        q = json.dumps
        out = ["all:", "  vars:"]
        out += [f"    {key}: {q(value)}" for key, value in self.inventory_vars().items()]
        out += ["  hosts:", "    localhost: {ansible_connection: local}"]
        sshd = self.sshd
        if sshd is not None:
            out += [
                "    sandbox_sshd:",
                f"      ansible_host: {q(sshd.host)}",
                f"      ansible_port: {sshd.port}",
                f"      ansible_user: {q(sshd.user)}",
                f"      ansible_ssh_private_key_file: {q(str(sshd.client_key))}",
                f"      burrow_known_hosts_file: {q(str(sshd.known_hosts))}",
                f"      burrow_host_key_fingerprint: {q(sshd.host_key_fingerprint)}",
            ]
        out += ["  children: {}"]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(out) + "\n")
        self._remember_output(path)
        return path

    def write_ssh_config(self, path: str | os.PathLike[str]) -> pathlib.Path:
        path = pathlib.Path(path)
        sshd = self.sshd
        if sshd is None:
            raise SandboxError("no sshd started: nothing to write in an ssh_config")
        text = (
            "Host sandbox-sshd\n"
            f"  HostName {sshd.host}\n"
            f"  Port {sshd.port}\n"
            f"  User {sshd.user}\n"
            f'  IdentityFile "{sshd.client_key}"\n'
            "  IdentitiesOnly yes\n"
            f'  UserKnownHostsFile "{sshd.known_hosts}"\n'
            "  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n"
        )
        path.write_text(text)
        path.chmod(0o600)
        self._remember_output(path)
        return path

    def start_all(self, postgres: bool = True) -> None:
        self.start_sshd()
        if postgres:
            self.start_postgres()
        else:
            self.skipped["postgres"] = "disabled (--no-postgres)"
        self.start_echo()
        self.start_http()

    def summary(self) -> str:
        lines = [f"sandbox dir {self.root}"]
        for sshd in self.sshds.values():
            lines.append(f"  sshd {sshd.name}: {sshd.user}@{sshd.host}:{sshd.port} pid {sshd.pid} host key {sshd.host_key_fingerprint}")
        if self.postgres is not None:
            pg = self.postgres
            lines.append(f"  postgres: {pg.user}@{pg.host}:{pg.port}/{pg.database} pid {pg.pid}")
        for name, reason in self.skipped.items():
            lines.append(f"  {name}: skipped ({reason})")
        for service in (self.echo, self.http):
            if service is not None:
                lines.append(f"  {service.kind}: {service.host}:{service.port} pid {service.pid}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# service processes (run as `sandbox.py _serve-echo HOST PORT` / `_serve-http HOST PORT BODYFILE`)


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 4096

    def __init__(self, host: str, port: int, handler: type[socketserver.BaseRequestHandler]) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), handler)


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        conn: socket.socket = self.request
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(OSError):
            while True:
                data = conn.recv(CHUNK)
                if not data:
                    break
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)


class _HttpHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "burrow-sandbox"
    body = b""

    def do_GET(self) -> None:  # http.server naming
        if self.path.split("?", 1)[0] != "/":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: t.Any) -> None:  # signature of the base class
        return


def _serve(kind: str, host: str, port: int, body_file: str | None) -> int:
    if kind == "http":
        _HttpHandler.body = pathlib.Path(body_file or "").read_bytes()
        server: socketserver.TCPServer = http.server.ThreadingHTTPServer((host, port), _HttpHandler)
        server.daemon_threads = True
    else:
        server = _Server(host, port, _EchoHandler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    sys.stdout.write(f"PORT {server.server_address[1]}\n")
    sys.stdout.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    with server:
        server.serve_forever(poll_interval=0.2)
    return 0


# --------------------------------------------------------------------------------------------------------------
# CLI


class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: t.Any) -> None:
    raise _Interrupted(signum)


def _install_signal_handlers() -> None:
    signal.signal(signal.SIGINT, _raise_interrupted)
    signal.signal(signal.SIGTERM, _raise_interrupted)


def _say(message: str) -> None:
    print(f"[sandbox] {message}", file=sys.stderr, flush=True)


def _collection_link() -> pathlib.Path:
    """.build/collections/ansible_collections/burrow/ssh -> this checkout; returns .build/collections."""
    repo = pathlib.Path(__file__).resolve().parents[2]
    collections = repo / ".build" / "collections"
    link = collections / "ansible_collections" / "burrow" / "ssh"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            link.symlink_to(repo)
    return collections


def cmd_run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        _say("nothing to run: give a command after --")
        return 2
    _install_signal_handlers()
    sandbox = Sandbox()
    proc: subprocess.Popen[bytes] | None = None
    try:
        sandbox.start_all(postgres=not args.no_postgres)
        workdir = pathlib.Path(args.workdir).resolve() if args.workdir else sandbox.root
        workdir.mkdir(parents=True, exist_ok=True)
        inventory = sandbox.write_inventory(workdir / "inventory.yml")
        ssh_config = sandbox.write_ssh_config(workdir / "ssh_config")
        _say(sandbox.summary())
        _say(f"inventory {inventory}, ssh_config {ssh_config}")
        env = dict(os.environ, BURROW_SANDBOX_INVENTORY=str(inventory), BURROW_SANDBOX_DIR=str(sandbox.root), BURROW_SANDBOX_SSH_CONFIG=str(ssh_config))
        # Scenario playbooks run from this checkout need the collection on the path, as scripts/demo does.
        env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(_collection_link()))
        argv = [arg.replace("{inventory}", str(inventory)) for arg in command]
        started = time.monotonic()
        proc = subprocess.Popen(argv, env=env)
        try:
            rc = proc.wait()
        except _Interrupted as exc:
            _say(f"signal {exc.signum}: stopping the command and the sandbox")
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(exc.signum)
            try:
                proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            rc = 128 + exc.signum
        _say(f"command exited {rc} after {time.monotonic() - started:.1f} s")
        return rc
    except _Interrupted as exc:
        _say(f"signal {exc.signum} during start: cleaning up")
        return 128 + exc.signum
    except SandboxError as exc:
        _say(f"start failed: {exc}")
        return 3
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sandbox.stop()
        _say("stopped; sandbox dir removed")


def cmd_check(args: argparse.Namespace) -> int:
    _install_signal_handlers()
    failures: list[str] = []
    sandbox = Sandbox()
    started = time.monotonic()
    try:
        sshd = sandbox.start_sshd()
        _say(f"sshd pid {sshd.pid} on {sshd.host}:{sshd.port}, host key {sshd.host_key_fingerprint} ({time.monotonic() - started:.2f} s)")
        mark = time.monotonic()
        pg = None if args.no_postgres else sandbox.start_postgres()
        if pg is not None:
            _say(f"postgres pid {pg.pid} on {pg.host}:{pg.port} ({time.monotonic() - mark:.2f} s)")
        else:
            _say(f"postgres skipped: {sandbox.skipped.get('postgres')}")
        echo = sandbox.start_echo()
        http_service = sandbox.start_http()
        _say(f"echo pid {echo.pid} on {echo.host}:{echo.port}; http pid {http_service.pid} on {http_service.host}:{http_service.port}")
        ssh = [
            "ssh",
            "-p",
            str(sshd.port),
            "-i",
            str(sshd.client_key),
            "-o",
            f"UserKnownHostsFile={sshd.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-F",
            "/dev/null",
            f"{sshd.user}@{sshd.host}",
            "true",
        ]
        result = _run(ssh, timeout=30)
        _say(f"ssh {sshd.user}@{sshd.host}:{sshd.port} true (strict host key): exit {result.returncode} {result.stderr.strip()}")
        if result.returncode != 0:
            failures.append("ssh")
        if pg is not None:
            count = pg.query("select count(*) from inventory")
            _say(f"postgres: select count(*) from inventory = {count}")
            if count != "3":
                failures.append("postgres")
        with socket.create_connection((echo.host, echo.port), timeout=5) as conn:
            conn.sendall(b"ping")
            conn.shutdown(socket.SHUT_WR)
            data = b""
            while len(data) < 64:
                part = conn.recv(64)
                if not part:
                    break
                data += part
        _say(f"echo: sent b'ping' + EOF, got {data!r} then EOF")
        if data != b"ping":
            failures.append("echo")
    except (_Interrupted, SandboxError, OSError, subprocess.SubprocessError) as exc:
        _say(f"FAILED: {exc}")
        failures.append("start")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pids = sandbox.recorded_pids()
        mark = time.monotonic()
        sandbox.stop()
        alive = sandbox.alive_recorded()
        _say(f"stopped in {time.monotonic() - mark:.2f} s; recorded pids {pids}, alive after stop: {alive}; dir exists: {sandbox.root.exists()}")
        if alive or sandbox.root.exists():
            failures.append("cleanup")
    _say("OK" if not failures else f"FAILED: {', '.join(failures)}")
    return 0 if not failures else 1


def cleanup_orphans(base: str = "/tmp") -> list[pathlib.Path]:
    """Stop what sandboxes whose owner process died (e.g. SIGKILL) left behind, and remove their dirs."""
    removed: list[pathlib.Path] = []
    for pids_file in sorted(pathlib.Path(base).glob("burrow-sandbox-*/pids")):
        try:
            lines = [line.split() for line in pids_file.read_text().splitlines() if line.strip()]
        except OSError:
            continue
        owner = next((fields for fields in lines if fields[0] == "owner"), None)
        if owner is None or pid_alive(int(owner[1]), int(owner[2])):
            continue
        targets = [(int(f[0]), int(f[1]), int(f[2])) for f in lines if f[0] != "owner" and len(f) >= 3]
        tree = [(child, _start_time(child)) for pid, start, _sig in targets if pid_alive(pid, start) for child in descendants(pid)]
        for pid, start, sig in targets:
            if pid_alive(pid, start):
                _signal(pid, sig)
        everything = [(pid, start) for pid, start, _sig in targets] + tree
        for sig in (None, signal.SIGKILL):
            if sig is not None:
                for pid, start in everything:
                    if pid_alive(pid, start):
                        _signal(pid, sig)
            deadline = time.monotonic() + STOP_GRACE
            while time.monotonic() < deadline and any(pid_alive(pid, start) for pid, start in everything):
                time.sleep(0.05)
        shutil.rmtree(pids_file.parent, ignore_errors=True)
        removed.append(pids_file.parent)
    return removed


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("_serve-echo", "_serve-http"):
        return _serve(argv[0][len("_serve-") :], argv[1], int(argv[2]), argv[3] if len(argv) > 3 else None)
    if argv and argv[0] == "_free-port":
        print(_free_port(argv[1]))
        return 0
    if argv and argv[0] == "_banner":
        try:
            return 0 if _read_banner(argv[1], int(argv[2])).startswith(b"SSH-2.0") else 1
        except OSError:
            return 1
    parser = argparse.ArgumentParser(prog="sandbox.py", description=__doc__.split("\n\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="start the sandbox, run a command against it, stop everything; exits with the command's code")
    run.add_argument("--no-postgres", action="store_true")
    run.add_argument("--workdir", help="where inventory.yml and ssh_config are written (default: the sandbox dir)")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS... ({inventory} is replaced by the inventory path)")
    check = sub.add_parser("check", help="start everything, prove ssh and PostgreSQL work, stop, prove nothing is left")
    check.add_argument("--no-postgres", action="store_true")
    clean = sub.add_parser("cleanup", help="stop and remove sandboxes under /tmp whose owner process is gone (killed with SIGKILL)")
    clean.add_argument("--base", default="/tmp")
    args = parser.parse_args(argv)
    if args.action == "cleanup":
        for path in cleanup_orphans(args.base):
            _say(f"removed orphaned sandbox {path}")
        return 0
    return cmd_run(args) if args.action == "run" else cmd_check(args)


if __name__ == "__main__":
    sys.exit(main())
