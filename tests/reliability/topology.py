# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A production-like network lab in network namespaces: controller (root ns), bastion, database host, edge host.

::

    controller (root ns) 10.203.N.1 ── 10.203.N.2 bastion 10.203.2.1 ── 10.203.2.2 db (sshd, PostgreSQL, echo)
                                                  bastion 10.203.3.1 ── 10.203.3.2 edge (NAT, no inbound)

N is picked per lab among the /24s not yet on a root-namespace interface (several labs can coexist). The db and edge
subnets exist only inside the namespaces. The root namespace gets one veth end with one address and nothing else: no
route, no firewall rule. nftables rules live in the namespaces: db accepts only the bastion's address, edge accepts no
inbound connection, the bastion masquerades edge traffic towards the controller and forwards nothing else.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pathlib
import pwd
import random
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import typing as t

CLONE_NEWNET = 0x40000000
DB_SUBNET = "10.203.2"
EDGE_SUBNET = "10.203.3"
PG_PORT = 5432
_LIBC = ctypes.CDLL(None, use_errno=True)


class LabError(RuntimeError):
    """The lab could not be built; the message names the failing command."""


def run(argv: list[str], netns: str | None = None, check: bool = True, timeout: float = 30, **kwargs: t.Any) -> subprocess.CompletedProcess[str]:
    full = (["ip", "netns", "exec", netns] if netns else []) + argv
    result = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(full)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def tools_missing() -> list[str]:
    return [tool for tool in ("ip", "nft", "setpriv", "ss") if shutil.which(tool) is None]


def in_netns(netns: str, func: t.Callable[..., t.Any], *args: t.Any, timeout: float = 30) -> t.Any:
    """Run func(*args) on a helper thread that entered netns (setns is per thread); sockets it makes stay there."""
    result: list[t.Any] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if _LIBC.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(func(*args))
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    thread = threading.Thread(target=body, daemon=True, name=f"netns-{netns}")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"call in netns {netns} did not finish within {timeout} s")
    if errors:
        raise errors[0]
    return result[0]


def connect_in(netns: str, address: tuple[str, int], timeout: float = 10) -> socket.socket:
    """A TCP connection made from inside netns (the socket belongs to that namespace)."""
    return t.cast(socket.socket, in_netns(netns, socket.create_connection, address, timeout, timeout=timeout + 5))


def _pick_subnet() -> int:
    used = run(["ip", "-4", "-o", "addr", "show"]).stdout
    candidates = [octet for octet in range(100, 200) if f" 10.203.{octet}." not in used]
    if not candidates:
        raise LabError("no free 10.203.x.0/24 for the controller link")
    return random.choice(candidates)


class Lab:
    """Build with build(), always tear down with teardown() (idempotent, also after a half-built lab)."""

    def __init__(self, sandbox: t.Any) -> None:
        self.sandbox = sandbox
        self.tag = secrets.token_hex(3)
        self.bastion_ns = f"burrow-rel-{self.tag}-bastion"
        self.db_ns = f"burrow-rel-{self.tag}-db"
        self.edge_ns = f"burrow-rel-{self.tag}-edge"
        self.root_veth = f"brc{self.tag}"
        self.octet = 0
        self.ctl = ""
        self.bastion = ""
        self.bastion_db = f"{DB_SUBNET}.1"
        self.db = f"{DB_SUBNET}.2"
        self.bastion_edge = f"{EDGE_SUBNET}.1"
        self.edge = f"{EDGE_SUBNET}.2"
        self.bastion_sshd: t.Any = None
        self.db_sshd: t.Any = None
        self.db_echo_port = 0
        self.pg_password = secrets.token_urlsafe(18)
        self.pg_dir: pathlib.Path | None = None
        self.pg_bindir: pathlib.Path | None = None
        self._built_ns: list[str] = []
        self._records: list[t.Any] = []

    # -- build ----------------------------------------------------------------------------------------------
    def build(self, postgres: bool = True) -> Lab:
        self.octet = _pick_subnet()
        self.ctl, self.bastion = f"10.203.{self.octet}.1", f"10.203.{self.octet}.2"
        for name in (self.bastion_ns, self.db_ns, self.edge_ns):
            run(["ip", "netns", "add", name])
            self._built_ns.append(name)
            run(["ip", "link", "set", "lo", "up"], netns=name)
        self._veth(self.root_veth, None, self.ctl, "b0", self.bastion_ns, self.bastion)
        self._veth(f"bd{self.tag}", self.bastion_ns, self.bastion_db, "d0", self.db_ns, self.db, rename_first="b1")
        self._veth(f"be{self.tag}", self.bastion_ns, self.bastion_edge, "e0", self.edge_ns, self.edge, rename_first="b2")
        run(["ip", "route", "add", "default", "via", self.bastion_edge], netns=self.edge_ns)
        run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], netns=self.bastion_ns)
        self._nft(self.bastion_ns, self._bastion_rules())
        self._nft(self.db_ns, self._db_rules())
        self._nft(self.edge_ns, self._edge_rules())
        self.bastion_sshd = self.sandbox.start_sshd(netns=self.bastion_ns, listen=self.bastion, name="bastion")
        self.db_sshd = self.sandbox.start_sshd(netns=self.db_ns, listen=self.db, name="db")
        self.db_echo_port = self.start_echo(self.db_ns, self.db)
        if postgres:
            self.start_postgres()
        return self

    def _veth(self, first: str, first_ns: str | None, first_addr: str, second: str, second_ns: str, second_addr: str, rename_first: str = "") -> None:
        peer = f"p{secrets.token_hex(4)}"
        run(["ip", "link", "add", first, "type", "veth", "peer", "name", peer])
        run(["ip", "link", "set", peer, "netns", second_ns])
        run(["ip", "link", "set", peer, "name", second], netns=second_ns)
        name = first
        if first_ns:
            run(["ip", "link", "set", first, "netns", first_ns])
            if rename_first:
                run(["ip", "link", "set", first, "name", rename_first], netns=first_ns)
                name = rename_first
        run(["ip", "addr", "add", f"{first_addr}/24", "dev", name], netns=first_ns)
        run(["ip", "link", "set", name, "up"], netns=first_ns)
        run(["ip", "addr", "add", f"{second_addr}/24", "dev", second], netns=second_ns)
        run(["ip", "link", "set", second, "up"], netns=second_ns)

    @staticmethod
    def _nft(netns: str, rules: str) -> None:
        run(["nft", "-f", "-"], netns=netns, input=rules)

    def _bastion_rules(self) -> str:
        return (
            "table inet burrow_lab {\n"
            "  chain forward { type filter hook forward priority 0; policy drop;\n"
            "    ct state established,related accept\n"
            f'    iifname "b2" oifname "b0" ip saddr {EDGE_SUBNET}.0/24 accept\n'
            "  }\n"
            "}\n"
            "table ip burrow_lab_nat {\n"
            "  chain postrouting { type nat hook postrouting priority 100; policy accept;\n"
            f'    oifname "b0" ip saddr {EDGE_SUBNET}.0/24 masquerade\n'
            "  }\n"
            "}\n"
        )

    def _db_rules(self) -> str:
        return (
            "table inet burrow_lab {\n"
            "  chain input { type filter hook input priority 0; policy drop;\n"
            "    iif lo accept\n"
            "    ct state established,related accept\n"
            f"    ip saddr {self.bastion_db} accept\n"
            "  }\n"
            "}\n"
        )

    @staticmethod
    def _edge_rules() -> str:
        return (
            "table inet burrow_lab {\n"
            "  chain input { type filter hook input priority 0; policy drop;\n"
            "    iif lo accept\n"
            "    ct state established,related accept\n"
            "  }\n"
            "}\n"
        )

    # -- services ---------------------------------------------------------------------------------------------
    def start_echo(self, netns: str, host: str) -> int:
        """The sandbox's echo server (a separate process, threads per connection) inside netns; returns its port."""
        helper = pathlib.Path(sys.modules[type(self.sandbox).__module__].__file__ or "")
        log = self.sandbox._path(f"echo-{netns}-{secrets.token_hex(2)}.log")
        argv = ["ip", "netns", "exec", netns, sys.executable, str(helper), "_serve-echo", host, "0"]
        record = self.sandbox._spawn(f"echo:{netns}", argv, log, stop_signal=signal.SIGTERM, kill_tree=False, stdout=subprocess.PIPE)
        self._records.append(record)
        line = b""
        deadline = time.monotonic() + 10
        proc = record.proc
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ)
                while time.monotonic() < deadline and not line.endswith(b"\n"):
                    if sel.select(timeout=0.1):
                        part = os.read(proc.stdout.fileno(), 64)
                        if not part:
                            break
                        line += part
        finally:
            proc.stdout.close()
        if not line.startswith(b"PORT "):
            raise LabError(f"echo in {netns} did not start: {log.read_text(errors='replace')[-500:]}")
        return int(line.split()[1])

    def start_postgres(self) -> None:
        """PostgreSQL in the db namespace on 10.203.2.2:5432, scram-sha-256 for the bastion's address only."""
        bindirs = sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
        bindir = next((path for path in bindirs if (path / "initdb").exists() and (path / "postgres").exists()), None)
        if bindir is None:
            raise LabError("PostgreSQL server binaries not found under /usr/lib/postgresql")
        self.pg_bindir = bindir
        account = pwd.getpwnam("postgres")
        base = self.sandbox._path("pg-db")
        base.mkdir(mode=0o700)
        os.chown(base, account.pw_uid, account.pw_gid)
        root_mode = self.sandbox.root.stat().st_mode & 0o777
        self.sandbox.root.chmod(root_mode | 0o011)  # traverse only, as the sandbox does for its own PostgreSQL
        self.pg_dir = base
        data, sock = base / "data", base / "sock"
        as_pg = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups", "--"]
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["LC_ALL"] = "C"
        run(
            [*as_pg, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--auth-host=scram-sha-256", "--no-sync"],
            cwd=str(base),
            env=env,
            timeout=120,
        )
        with open(data / "pg_hba.conf", "a", encoding="ascii") as hba:
            hba.write(f"host all all {self.bastion_db}/32 scram-sha-256\n")
        run([*as_pg, "mkdir", "-m", "0700", str(sock)])
        argv = [
            "ip",
            "netns",
            "exec",
            self.db_ns,
            *as_pg,
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-c",
            f"listen_addresses={self.db}",
            "-c",
            f"port={PG_PORT}",
        ]
        argv += [
            "-c",
            f"unix_socket_directories={sock}",
            "-c",
            "fsync=off",
            "-c",
            "shared_buffers=16MB",
            "-c",
            "max_connections=100",
            "-c",
            "logging_collector=off",
        ]
        record = self.sandbox._spawn("postgres:db", argv, base / "postgres.log", stop_signal=signal.SIGINT, kill_tree=False, cwd=str(base), env=env)
        self._records.append(record)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if run([str(bindir / "pg_isready"), "-q", "-h", str(sock), "-p", str(PG_PORT)], check=False).returncode == 0:
                break
            if not record.alive():
                raise LabError(f"postgres in {self.db_ns} exited: {(base / 'postgres.log').read_text(errors='replace')[-800:]}")
            time.sleep(0.1)
        else:
            raise LabError("postgres in the db namespace did not become ready within 30 s")
        escaped = self.pg_password.replace("'", "''")
        setup = (
            f"CREATE ROLE burrow LOGIN PASSWORD '{escaped}';\nCREATE DATABASE burrow OWNER burrow;\n"
            "\\c burrow\nCREATE TABLE inventory(id int primary key, item text);\n"
            "INSERT INTO inventory VALUES (1,'bastion'),(2,'tunnel'),(3,'socks');\nALTER TABLE inventory OWNER TO burrow;\n"
        )
        psql = [*as_pg, str(bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(sock), "-p", str(PG_PORT), "-U", "postgres", "-d", "postgres"]
        run(psql, input=setup, env=env, cwd=str(base))

    def psql(self, port: int, sql: str, host: str = "127.0.0.1") -> subprocess.CompletedProcess[str]:
        """psql over TCP with the password in PGPASSWORD (never argv)."""
        if self.pg_bindir is None:
            raise LabError("postgres was not started")
        env = dict(os.environ, PGPASSWORD=self.pg_password, PGCONNECT_TIMEOUT="5")
        argv = [str(self.pg_bindir / "psql"), "-X", "-At", "-h", host, "-p", str(port), "-U", "burrow", "-d", "burrow", "-c", sql]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30, check=False)

    # -- faults ---------------------------------------------------------------------------------------------
    def blackhole_bastion(self, controller_port: int = 0) -> None:
        """Drop everything between the controller and the bastion (or one controller-side TCP port), in the bastion namespace."""
        inbound = f"ip saddr {self.ctl}" + (f" tcp sport {controller_port}" if controller_port else "")
        outbound = f"ip daddr {self.ctl}" + (f" tcp dport {controller_port}" if controller_port else "")
        rules = (
            "table inet burrow_fault {\n"
            f"  chain input {{ type filter hook input priority -10; policy accept; {inbound} drop; }}\n"
            f"  chain output {{ type filter hook output priority -10; policy accept; {outbound} drop; }}\n"
            "}\n"
        )
        self._nft(self.bastion_ns, rules)

    def heal_bastion(self) -> None:
        run(["nft", "delete", "table", "inet", "burrow_fault"], netns=self.bastion_ns, check=False)

    # -- tunnel parameters --------------------------------------------------------------------------------------
    def bastion_hop(self) -> dict[str, t.Any]:
        return dict(self.bastion_sshd.hop(use_agent=None))

    def params(self, name: str = "lab", via_db: bool = False, **overrides: t.Any) -> dict[str, t.Any]:
        """tunnel_from_params() input for a tunnel to the bastion (or through it to the db sshd)."""
        if via_db:
            sshd = self.db_sshd
            base: dict[str, t.Any] = {"host": sshd.host, "port": sshd.port, "user": sshd.user, "private_key_file": str(sshd.client_key)}
            base["known_hosts_file"] = str(sshd.known_hosts)
            base["via"] = [self.bastion_hop()]
        else:
            base = self.bastion_hop()
        base.update({"name": name, "use_agent": False, "keepalive_interval": 1, "keepalive_count_max": 3, "connect_timeout": 5})
        base.update(overrides)
        return base

    # -- teardown -----------------------------------------------------------------------------------------------
    def teardown(self) -> list[str]:
        """Stop the lab's processes, delete namespaces and the root veth. Returns what could not be removed."""
        problems: list[str] = []
        with contextlib.suppress(Exception):
            self.heal_bastion()
        # every process whose network namespace is one of ours (sshd sessions, tunnel processes started inside)
        for pid in self.processes_in_namespaces():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        run(["ip", "link", "del", self.root_veth], check=False)
        for name in self._built_ns:
            result = run(["ip", "netns", "del", name], check=False)
            if result.returncode != 0:
                problems.append(f"netns {name}: {result.stderr.strip()}")
        self._built_ns = []
        if self.ctl and self.ctl in run(["ip", "-4", "-o", "addr", "show"]).stdout:
            problems.append(f"{self.ctl} still on a root-namespace interface")
        return problems

    def processes_in_namespaces(self) -> list[int]:
        inodes = set()
        for name in self._built_ns:
            with contextlib.suppress(OSError):
                inodes.add(os.stat(f"/run/netns/{name}").st_ino)
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                        found.append(int(entry))
        return found
