# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The 1000-connection burst of bench_forwarding.py, alone: burrow.ssh and ``ssh -N -L`` alternating, with the CPU.

    .venv/bin/python tests/performance/bench_burst.py [--rounds 3] [--connections 1000] [--profile FILE]

A first burst goes straight to the echo service (it is a Python thread per connection too, and its first burst costs it
more), then each round runs the same burst (asyncio clients, 64 KiB echoed each, through -L to the benchmark's echo service)
through burrow.ssh's tunnel process and through ``ssh -N -L``, against one sandbox sshd, and reports the wall time, the
failures and the tunnel process's user and system CPU (from /proc). ``--profile`` records the first burrow.ssh burst with
``py-spy record --gil`` (collapsed stacks): only samples of the thread holding the GIL; that round's figures include
py-spy's own cost.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import typing as t

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import bench_forwarding as bench  # noqa: E402

bench._setup_import_paths()

from sandbox import Sandbox  # noqa: E402

PROFILE_START_SECONDS = 1.5  # py-spy attaches before the burst starts


def one_burst(tunnel: t.Any, block: bytes, connections: int) -> dict[str, t.Any]:
    user_before, system_before = bench.proc_cpu_times(tunnel.pid)
    row = bench.measure_concurrency(tunnel.entry("L"), block, connections)
    user_after, system_after = bench.proc_cpu_times(tunnel.pid)
    row["cpu_user_s"] = round(user_after - user_before, 2)
    row["cpu_system_s"] = round(system_after - system_before, 2)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--profile", type=pathlib.Path, help="py-spy --gil collapsed stacks of the first burrow.ssh burst")
    args = parser.parse_args()
    rounds = max(1, min(args.rounds, 20))
    connections = max(1, min(args.connections, 2000))
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="burrow-bench-burst-"))
    sandbox = Sandbox()
    service = None
    tunnels: list[t.Any] = []
    rows: list[dict[str, t.Any]] = []
    try:
        sshd = sandbox.start_sshd()
        service = subprocess.Popen([sys.executable, bench.__file__, "_service"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        service_port = int(json.loads(bench._read_line(service, 20))["port"])
        burrow = bench.start_burrow(sshd, service_port, str(workdir / "state"))
        tunnels.append(burrow)
        openssh = bench.start_openssh(sshd, service_port, workdir)
        tunnels.append(openssh)
        block = bench.make_block()
        # The echo service is a Python thread per connection too: its first burst, straight to it, warms it up for both.
        warm = bench.measure_concurrency(bench.Entry("direct", "direct", service_port), block, connections)
        print(json.dumps({"round": 0, "tool": "direct (warm-up)", **warm}), flush=True)
        time.sleep(1.0)
        for round_index in range(rounds):
            for tunnel in (burrow, openssh):
                profiler = None
                if args.profile and tunnel is burrow and round_index == 0:
                    py_spy = [str(bench.REPO / ".venv" / "bin" / "py-spy"), "record", "--gil", "--threads", "--rate", "250", "--format", "raw"]
                    profiler = subprocess.Popen([*py_spy, "-o", str(args.profile), "-p", str(tunnel.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(PROFILE_START_SECONDS)
                row = {"round": round_index + 1, "tool": tunnel.tool, **one_burst(tunnel, block, connections)}
                if profiler is not None:
                    profiler.send_signal(signal.SIGINT)
                    profiler.wait(60)
                    row["profiled"] = True
                rows.append(row)
                print(json.dumps(row), flush=True)
                time.sleep(1.0)  # the tunnel closes the burst's channels before the next one (as in bench_forwarding.py)
    finally:
        for tunnel in tunnels:
            bench.kill_pid(tunnel.pid)
        bench.stop_popen(service)
        sandbox.stop()
    for tool in ("burrow", "openssh"):
        mine = [row for row in rows if row["tool"] == tool and not row.get("profiled")]
        if mine:
            walls = sorted(row["wall_s"] for row in mine)
            cpus = sorted(row["cpu_user_s"] + row["cpu_system_s"] for row in mine)
            failures = [row["failures"] for row in mine]
            print(f"{tool:8} wall s {walls}  CPU s {[round(cpu, 2) for cpu in cpus]}  failures {failures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
