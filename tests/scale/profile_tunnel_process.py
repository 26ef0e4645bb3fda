# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Where an idle tunnel process spends its memory and CPU (the figures behind docs/scale.md's design notes).

    .venv/bin/python tests/scale/profile_tunnel_process.py [--tunnels 20] [--seconds 20]

memory: RSS (and CPU to get there) of a fresh interpreter after each import stage of the tunnel module, each stage in
its own process.
idle CPU: N tunnel processes spawned with ``_control.spawn()`` from a helper that imported the module (as the module
does), against one sandbox sshd on 127.0.0.1, idle for S seconds; CPU time and wake-ups per thread (schedstat) (threads are created in a
fixed order: main, paramiko transport, listener accept, keepalive supervisor, control socket). Three runs, the knobs
set in the helper before it forks: paramiko's own transport poll (``Transport._active_check_timeout`` = 0.1 s); the
engine as it is (``BurrowTransport`` sets 1 s, the tunnel process's main loop wakes every 0.5 s); the main loop at 2 s.
All tunnels of a run are forked from the one helper, so their PSS shows what sharing imported pages saves.
Everything is on loopback; every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import typing as t

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUILD = REPO / ".build" / "collections"
sys.path[:0] = [str(REPO / "tests" / "sandbox"), str(BUILD), str(HERE)]

from sandbox import Sandbox  # noqa: E402
from scale_helpers import alive, memory  # noqa: E402

STAGES = {
    "python": "",
    "+ ansible.module_utils.basic": "import ansible.module_utils.basic",
    "+ paramiko": "import ansible.module_utils.basic, paramiko",
    "+ the tunnel module (engine, daemon, control)": "import ansible_collections.burrow.ssh.plugins.modules.tunnel",
}
THREAD_ROLES = ["main (lifetime poll)", "paramiko transport (socket poll)", "listener accept", "keepalive supervisor (5 s)", "control socket"]


def import_stages() -> dict[str, dict[str, float]]:
    results = {}
    for label, statement in STAGES.items():
        code = f"import sys; sys.path.insert(0, {str(BUILD)!r}); {statement}\nimport pathlib\nprint(pathlib.Path('/proc/self/status').read_text())"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        values = {"cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 3)}
        for line in out.splitlines():
            key, _sep, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                values[key] = round(int(rest.split()[0]) / 1024, 1)
        results[label] = values
    return results


def spawn_helper(cfg: dict[str, t.Any]) -> int:
    """Runs in a child: import what the module imports, optionally change the poll, spawn the tunnels, print pids."""
    import ansible_collections.burrow.ssh.plugins.modules.tunnel  # noqa: F401 - the module's own imports
    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process import daemon as _daemon
    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.spawn import spawn
    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration
    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import BurrowTransport

    if cfg["poll"] is not None:
        BurrowTransport._active_check_timeout = float(cfg["poll"])
    if cfg.get("lifetime_poll"):
        _daemon.LIFETIME_POLL_INTERVAL = float(cfg["lifetime_poll"])
    pids = []
    for index in range(cfg["count"]):
        params = dict(cfg["params"], name=f"idle-{index:03d}", local_forwards=[f"127.0.0.1:0:127.0.0.1:{cfg['service_port']}"])
        pids.append(int(spawn(parse_declaration(params), cfg["state_dir"])["pid"]))
    print(json.dumps(pids), flush=True)
    return 0


def _daemon_poll() -> float:
    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process import daemon as _daemon

    return float(_daemon.LIFETIME_POLL_INTERVAL)


def thread_sched(pid: int) -> list[tuple[int, int]]:
    """(CPU ns, times scheduled) per thread from /proc/PID/task/TID/schedstat, in creation order (thread ids grow)."""
    found = []
    for tid in sorted(int(entry) for entry in os.listdir(f"/proc/{pid}/task")):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = pathlib.Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
            found.append((int(fields[0]), int(fields[2])))
    return found


def idle_run(box: t.Any, poll: float | None, count: int, seconds: float, lifetime_poll: float | None = None) -> dict[str, t.Any]:
    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.control import list_handles

    sshd, service = box.sshd, box.http
    state_dir = tempfile.mkdtemp(prefix="burrow-idle-")
    params = sshd.hop()
    cfg = {"poll": poll, "lifetime_poll": lifetime_poll, "count": count, "params": params, "service_port": service.port, "state_dir": state_dir}
    pids: list[int] = []
    try:
        out = subprocess.run([sys.executable, __file__, "_spawn", json.dumps(cfg)], capture_output=True, text=True, timeout=300, check=True).stdout
        pids = json.loads(out)
        time.sleep(2)  # let the start settle
        before = {pid: thread_sched(pid) for pid in pids}
        started = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        after = {pid: thread_sched(pid) for pid in pids}
        cpu_ns = [0] * len(THREAD_ROLES)
        runs = [0] * len(THREAD_ROLES)
        for pid in pids:
            for index, (old, new) in enumerate(zip(before[pid], after[pid])):
                role = min(index, len(THREAD_ROLES) - 1)
                cpu_ns[role] += new[0] - old[0]
                runs[role] += new[1] - old[1]
        total = sum(cpu_ns) / 1e9
        mems = [memory(pid) for pid in pids]
        mem = mems[0]

        def median(key: str) -> float:
            values = sorted(entry.get(key, 0.0) for entry in mems)
            return round(values[len(values) // 2], 1)

        from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import BurrowTransport

        return {
            "poll_s": poll if poll is not None else BurrowTransport._active_check_timeout,
            "tunnels": count,
            "seconds": round(elapsed, 1),
            "percent_of_one_core_all": round(100 * total / elapsed, 3),
            "percent_of_one_core_per_100": round(100 * total / elapsed * 100 / count, 2),
            "by_thread": {
                role: {"cpu_us_per_s_per_tunnel": round(ns / 1e3 / elapsed / count, 1), "wakeups_per_s_per_tunnel": round(n / elapsed / count, 2)}
                for role, ns, n in zip(THREAD_ROLES, cpu_ns, runs)
            },
            "threads": int(mem.get("threads", 0)),
            "lifetime_poll_s": lifetime_poll or _daemon_poll(),
            "rss_mib_median": median("VmRSS"),
            "pss_mib_median": median("Pss"),
            "private_mib_median": median("Private"),
        }
    finally:
        for handle in list_handles(state_dir):
            with contextlib.suppress(Exception):
                handle.stop(deadline=1)
        for pid in pids:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
        shutil.rmtree(state_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_spawn":
        return spawn_helper(json.loads(argv[1]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--tunnels", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    count = max(1, min(100, args.tunnels))
    seconds = max(1.0, min(120.0, args.seconds))
    report: dict[str, t.Any] = {"import_stages_mib": import_stages(), "idle": []}
    with Sandbox() as box:
        box.start_sshd()
        box.start_http()
        for poll, lifetime_poll in ((0.1, None), (None, None), (None, 2.0)):
            report["idle"].append(idle_run(box, poll, count, seconds, lifetime_poll))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
