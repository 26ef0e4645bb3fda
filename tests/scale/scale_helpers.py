# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The scale scenario: sites (an sshd plus a marker service each), an inventory of many hosts spread over them,
and what the tests measure on the tunnel processes (/proc) and their sockets (ss).

As root every site is a network namespace reached over its own veth pair (10.203.S.0/24, S picked free at run
time), with its sshd on the namespace side and the marker service on the namespace's own loopback: a tunnel that
reached the wrong sshd would read another site's marker. Without root the sites are several sshds on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import typing as t
import urllib.request

from procs import holders_of

HERE = pathlib.Path(__file__).resolve().parent
MARKER_SERVER = HERE / "marker_server.py"
PLAYBOOKS = HERE / "playbooks"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
START_DEADLINE = 15.0


def env_int(name: str, default: int, low: int, high: int) -> int:
    """An integer knob from the environment, clamped so every run stays bounded."""
    try:
        value = int(os.environ.get(name, default))
    except ValueError:
        value = default
    return max(low, min(high, value))


def use_namespaces() -> bool:
    if os.environ.get("BURROW_SCALE_MODE") == "loopback":
        return False
    return os.geteuid() == 0 and shutil.which("ip") is not None


def host_names(count: int) -> list[str]:
    return [f"scale-h{index:03d}" for index in range(count)]


def marker_text(host: str, site: str) -> str:
    return f"burrow-scale-marker {host} {site}\n"


# ----------------------------------------------------------------------------------------------------------------
# sites


@dataclasses.dataclass
class Site:
    name: str
    sshd: t.Any  # sandbox.Sshd
    netns: str | None
    markers: dict[str, int]  # inventory host -> marker port on the site's loopback
    marker_pid: int

    @property
    def ssh_endpoint(self) -> tuple[str, int]:
        return self.sshd.host, int(self.sshd.port)


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, timeout=30, capture_output=True)


def _used_third_octets() -> set[int]:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=30, check=False).stdout
    return {int(match) for match in re.findall(r"inet 10\.203\.(\d+)\.", out)}


class Namespaces:
    """Network namespaces with a veth pair each; removed by close() (links first, then the namespaces)."""

    def __init__(self) -> None:
        self.created: list[tuple[str, str]] = []  # (netns, outside link)

    def add(self, index: int, octet: int) -> tuple[str, str]:
        """Create one namespace; returns (netns name, the sshd address inside it)."""
        tag = secrets.token_hex(3)
        name, outside, inside = f"burrow-scale-{tag}-{index}", f"bsc{tag}{index}", f"bsi{tag}{index}"
        _ip("netns", "add", name)
        self.created.append((name, outside))
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", name)
        _ip("addr", "add", f"10.203.{octet}.1/24", "dev", outside)
        _ip("link", "set", outside, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"10.203.{octet}.2/24", "dev", inside)
        _ip("netns", "exec", name, "ip", "link", "set", inside, "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        return name, f"10.203.{octet}.2"

    def close(self) -> None:
        for name, outside in reversed(self.created):
            subprocess.run(["ip", "link", "del", outside], check=False, timeout=30, capture_output=True)
            subprocess.run(["ip", "netns", "del", name], check=False, timeout=30, capture_output=True)
        self.created.clear()


def free_octets(count: int) -> list[int]:
    used = _used_third_octets()
    candidates = [octet for octet in range(100, 250) if octet not in used]
    if len(candidates) < count:
        raise RuntimeError(f"not enough free 10.203.x.0/24 subnets for {count} namespaces")
    return sorted(random.sample(candidates, count))


def start_marker(sandbox: t.Any, site: str, netns: str | None, names: list[str]) -> tuple[dict[str, int], int]:
    """Start the site's marker service (recorded by the sandbox, so its stop() ends it); wait for its port map."""
    ports_file = sandbox.root / f"markers-{site}.json"
    argv = [sys.executable, str(MARKER_SERVER), "127.0.0.1", str(ports_file), *names]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    env = dict(os.environ, BURROW_SCALE_SITE=site)
    # The sandbox's own bookkeeping (pid + start time, SIGTERM then SIGKILL on stop, orphan cleanup) covers it.
    record = sandbox._spawn(f"marker:{site}", argv, sandbox.root / f"markers-{site}.log", stop_signal=signal.SIGTERM, kill_tree=False, env=env)
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        if ports_file.exists():
            return {str(k): int(v) for k, v in json.loads(ports_file.read_text()).items()}, record.pid
        if not record.alive():
            break
        time.sleep(0.05)
    log = (sandbox.root / f"markers-{site}.log").read_text(errors="replace")[-800:]
    raise RuntimeError(f"marker service of {site} did not start: {log}")


@contextlib.contextmanager
def scale_sites(sandbox: t.Any, hosts: list[str], site_count: int) -> t.Iterator[list[Site]]:
    """site_count sites, hosts spread round-robin over them. Namespaces are removed after the sandbox stopped."""
    namespaces = Namespaces()
    try:
        octets = free_octets(site_count) if use_namespaces() else []
        sites: list[Site] = []
        for index in range(site_count):
            name = f"site{index}"
            members = hosts[index::site_count]
            netns, listen = None, "127.0.0.1"
            if octets:
                netns, listen = namespaces.add(index, octets[index])
            sshd = sandbox.start_sshd(name=name, netns=netns, listen=listen)
            markers, marker_pid = start_marker(sandbox, name, netns, members)
            sites.append(Site(name, sshd, netns, markers, marker_pid))
        yield sites
    finally:
        sandbox.stop()
        namespaces.close()


def site_of(sites: list[Site]) -> dict[str, Site]:
    return {host: site for site in sites for host in site.markers}


def write_inventory(path: pathlib.Path, sites: list[Site]) -> pathlib.Path:
    """YAML inventory (written as JSON, which YAML reads verbatim): group `scale` with one host per marker."""
    hosts: dict[str, dict[str, t.Any]] = {}
    for site in sites:
        sshd = site.sshd
        for host, port in site.markers.items():
            hosts[host] = {
                "ansible_connection": "local",
                "scale_site": site.name,
                "scale_ssh_host": sshd.host,
                "scale_ssh_port": int(sshd.port),
                "scale_ssh_user": sshd.user,
                "scale_client_key": str(sshd.client_key),
                "scale_known_hosts": str(sshd.known_hosts),
                "scale_marker_port": port,
            }
    inventory = {
        "all": {
            "vars": {"ansible_python_interpreter": sys.executable},
            "hosts": {"localhost": {"ansible_connection": "local"}},
            "children": {"scale": {"hosts": dict(sorted(hosts.items()))}},
        }
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(inventory, handle, indent=1)
    return path


# ----------------------------------------------------------------------------------------------------------------
# the play's results


def task_results(document: dict[str, t.Any], task_name: str) -> dict[str, dict[str, t.Any]]:
    """{host: result} of the task with that name in a sandbox_json document."""
    for play in document.get("plays", []):
        for task in play.get("tasks", []):
            if task["task"]["name"] == task_name:
                return dict(task["hosts"])
    return {}


def fetch_marker(port: int, timeout: float = 10.0) -> str:
    """GET / through a tunnel's local port (never through a proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/", timeout=timeout) as answer:
        return answer.read().decode()


# ----------------------------------------------------------------------------------------------------------------
# processes (/proc) and sockets (ss)


def state_pids(state_dir: pathlib.Path) -> dict[str, int]:
    """{tunnel name: pid} from the state files, for processes that still have the recorded start time."""
    if not state_dir.is_dir():
        return {}
    found = {}
    for state in state_dir.glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            data = json.loads(state.read_text())
            pid = int(data["pid"])
            if start_time(pid) == data.get("start_time"):
                found[state.stem] = pid
    return found


def start_time(pid: int) -> int | None:
    try:
        return int(_stat_fields(pid)[19])
    except (OSError, IndexError, ValueError):
        return None


def _stat_fields(pid: int) -> list[str]:
    raw = pathlib.Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rfind(")") + 2 :].split()


def alive(pid: int) -> bool:
    try:
        return _stat_fields(pid)[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12])


def memory(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon, RssFile (/proc/PID/status), Pss and Private (smaps_rollup) in MiB, and the thread count."""
    values: dict[str, float] = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _sep, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            values[key] = int(rest.split()[0]) / 1024
        elif key == "Threads":
            values["threads"] = int(rest.split()[0])
    with contextlib.suppress(OSError):
        for line in pathlib.Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _sep, rest = line.partition(":")
            if key == "Pss":
                values["Pss"] = int(rest.split()[0]) / 1024
            elif key in ("Private_Clean", "Private_Dirty"):
                values["Private"] = values.get("Private", 0.0) + int(rest.split()[0]) / 1024
    return values


def sample_idle_cpu(pids: list[int], seconds: float) -> dict[str, t.Any]:
    """CPU used by the given processes over `seconds` of wall time (utime+stime deltas)."""
    before = {pid: cpu_ticks(pid) for pid in pids}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    after = {pid: cpu_ticks(pid) for pid in pids if alive(pid)}
    deltas = {pid: after[pid] - before[pid] for pid in after}
    total = sum(deltas.values()) / CLK_TCK
    return {
        "seconds": round(elapsed, 2),
        "processes": len(after),
        "cpu_seconds": round(total, 3),
        "percent_of_one_core": round(100 * total / elapsed, 3),
        "max_ticks_one_process": max(deltas.values(), default=0),
    }


def ss_lines(*filters: str) -> list[str]:
    """`ss -Htn` lines in the root namespace (TCP, no header, numeric) for the given state/filter arguments."""
    result = subprocess.run(["ss", "-Htn", *filters], capture_output=True, text=True, timeout=30, check=False)
    return [line for line in result.stdout.splitlines() if line.strip()]


def listening_on(ports: list[int]) -> list[str]:
    wanted = {str(port) for port in ports}
    return [line for line in ss_lines("state", "listening") if line.split()[2].rsplit(":", 1)[-1] in wanted]


def established_to(endpoints: list[tuple[str, int]]) -> list[str]:
    """Client side connections (in this namespace) to the given sshd endpoints."""
    wanted = {f"{host}:{port}" for host, port in endpoints}
    return [line for line in ss_lines("state", "established") if line.split()[3] in wanted]


def wait_until(predicate: t.Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def kill_leftovers(state_dir: pathlib.Path) -> list[int]:
    """Teardown guard: SIGKILL every process still holding a file of the state dir (a failed test's tunnels)."""
    if not state_dir.is_dir():
        return []
    pids = sorted(set(holders_of(state_dir)) | set(state_pids(state_dir).values()))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    return pids
