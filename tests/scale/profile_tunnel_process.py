# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Where an idle tunnel process spends its memory and CPU (the figures behind docs/scale.md's design notes).

    .venv/bin/python tests/scale/profile_tunnel_process.py [--tunnels 20] [--seconds 20]

memory: RSS (and CPU to get there) of a fresh interpreter after each import stage of the tunnel module, each stage in
its own process.
idle CPU: N tunnel processes spawned with ``_control.spawn()`` from a helper that imported the module (as the module
does), against one sandbox sshd on 127.0.0.1, idle for S seconds; CPU split by thread (threads are created in a
fixed order: main, paramiko transport, listener accept, keepalive supervisor, control socket). Three runs: paramiko's
own transport poll (``Transport._active_check_timeout`` = 0.1 s, set in the helper before the fork); the engine's
(``BurrowTransport`` sets 1 s); the engine's with ``gc.freeze()`` in the helper before forking, as a zygote would.
All tunnels of a run are forked from the one helper, so their PSS shows what sharing imported pages saves.
Everything is on loopback; every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
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
from scale_helpers import CLK_TCK, alive, memory  # noqa: E402

STAGES = {
    "python": "",
    "+ ansible.module_utils.basic": "import ansible.module_utils.basic",
    "+ paramiko": "import ansible.module_utils.basic, paramiko",
    "+ the tunnel module (engine, daemon, control)": "import ansible_collections.burrow.ssh.plugins.modules.tunnel",
}
THREAD_ROLES = ["main (lifetime poll, 0.5 s)", "paramiko transport (socket poll)", "listener accept", "keepalive supervisor (5 s)", "control socket"]


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
    from ansible_collections.burrow.ssh.plugins.module_utils import _ssh
    from ansible_collections.burrow.ssh.plugins.module_utils._control import spawn
    from ansible_collections.burrow.ssh.plugins.module_utils._spec import tunnel_from_params

    if cfg["poll"] is not None:
        _ssh.BurrowTransport._active_check_timeout = float(cfg["poll"])
    if cfg.get("freeze"):
        gc.freeze()  # a zygote would do this: imported objects leave the collector's lists, so children keep their pages shared
    pids = []
    for index in range(cfg["count"]):
        params = dict(cfg["params"], name=f"idle-{index:03d}", local_forwards=[f"127.0.0.1:0:127.0.0.1:{cfg['service_port']}"])
        pids.append(int(spawn(tunnel_from_params(params), cfg["state_dir"])["pid"]))
    print(json.dumps(pids), flush=True)
    return 0


def thread_ticks(pid: int) -> list[int]:
    """utime+stime per thread, in creation order (thread ids grow)."""
    ticks = []
    for tid in sorted(int(entry) for entry in os.listdir(f"/proc/{pid}/task")):
        with contextlib.suppress(OSError):
            raw = pathlib.Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            fields = raw[raw.rfind(")") + 2 :].split()
            ticks.append(int(fields[11]) + int(fields[12]))
    return ticks


def idle_run(box: t.Any, poll: float | None, count: int, seconds: float, freeze: bool = False) -> dict[str, t.Any]:
    from ansible_collections.burrow.ssh.plugins.module_utils._control import list_handles

    sshd, service = box.sshd, box.http
    state_dir = tempfile.mkdtemp(prefix="burrow-idle-")
    params = {
        "host": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "private_key_file": str(sshd.client_key),
        "known_hosts_file": str(sshd.known_hosts),
        "use_agent": False,
    }
    cfg = {"poll": poll, "freeze": freeze, "count": count, "params": params, "service_port": service.port, "state_dir": state_dir}
    pids: list[int] = []
    try:
        out = subprocess.run([sys.executable, __file__, "_spawn", json.dumps(cfg)], capture_output=True, text=True, timeout=300, check=True).stdout
        pids = json.loads(out)
        time.sleep(2)  # let the start settle
        before = {pid: thread_ticks(pid) for pid in pids}
        started = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        after = {pid: thread_ticks(pid) for pid in pids}
        per_role = [0] * len(THREAD_ROLES)
        for pid in pids:
            for index, (old, new) in enumerate(zip(before[pid], after[pid])):
                per_role[min(index, len(per_role) - 1)] += new - old
        total = sum(per_role) / CLK_TCK
        mems = [memory(pid) for pid in pids]
        mem = mems[0]

        def median(key: str) -> float:
            values = sorted(entry.get(key, 0.0) for entry in mems)
            return round(values[len(values) // 2], 1)

        from ansible_collections.burrow.ssh.plugins.module_utils._ssh import BurrowTransport

        return {
            "poll_s": poll if poll is not None else BurrowTransport._active_check_timeout,
            "tunnels": count,
            "seconds": round(elapsed, 1),
            "percent_of_one_core_all": round(100 * total / elapsed, 3),
            "percent_of_one_core_per_100": round(100 * total / elapsed * 100 / count, 2),
            "by_thread_percent_of_total": {role: round(100 * ticks / max(1, sum(per_role)), 1) for role, ticks in zip(THREAD_ROLES, per_role)},
            "threads": int(mem.get("threads", 0)),
            "gc_freeze_before_fork": freeze,
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
        for poll, freeze in ((0.1, False), (None, False), (None, True)):
            report["idle"].append(idle_run(box, poll, count, seconds, freeze))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
