# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PSS per tunnel at 1, 10, 20, 50 idle -L tunnels, for four designs (issue 15, the figures in docs/architecture.md).

    .venv/bin/python tests/scale/measure_tunnel_memory.py --counts 1,10,20,50 [--runs 3] [--json out.json]

One sandbox OpenSSH sshd on 127.0.0.1 and one echo service (both from tests/performance/bench_forwarding.py's
helpers); every tunnel is verified by a 1-byte echo through it before it is counted. PSS is read from
/proc/PID/smaps_rollup (pages shared between processes divided among them), summed over each design's processes
and their descendants, divided by the number of tunnels. The designs, one after the other (each one's processes are
all stopped before the next starts, so they do not share pages with each other):

  spawn    today: each tunnel spawned with spawn() by a helper process that imported the tunnel module, one helper
           per tunnel (as each task's module process spawns its own tunnel); the tunnel process is that fork
  lean     one fresh interpreter per tunnel (subprocess, exec) that imports the tunnel process code only, no
           Ansible, and runs the tunnel process's own serve(); the declaration arrives on a stdin pipe
  shared   K TunnelEngine instances (threads) in one fresh interpreter, each with its own SSH connection and -L port
  shared+ctl  the same, each engine also with the control socket (and its thread) and audit trail serve() gives a tunnel
  group    the real process_group path (issue 15's tunnel host): each tunnel declared with process_group through
           manage.ensure_present() from a helper that imported the tunnel module, as the module does; the first one
           forks the group's host, the others are added to it over the group socket; the host's PSS is counted
  ssh      one `ssh -N -L` per tunnel (the reference)

    .venv/bin/python tests/scale/measure_tunnel_memory.py --designs group,ssh --counts 1,20,50
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import typing as t

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHILD = HERE / "lean_tunnel_child.py"
DESIGNS = ("spawn", "lean", "shared", "shared+ctl", "group", "ssh")
GROUP = "mem"
MAX_TUNNELS = 200
START_TIMEOUT = 60.0
HELPER = pathlib.Path(__file__).with_name("group_module_helper.py")
SETTLE_TIMEOUT = 10.0

sys.path.insert(0, str(REPO / "tests" / "performance"))
import bench_forwarding as bench  # noqa: E402 - tests/performance is not a package

bench._setup_import_paths()  # the ansible_collections link and tests/sandbox on sys.path


def collections_root() -> str:
    import ansible_collections.burrow.ssh as collection

    return str(pathlib.Path(collection.__path__[0]).parents[2])


def pss_kib(pids: t.Iterable[int]) -> int:
    from sandbox import descendants

    every = {p for pid in pids for p in (pid, *descendants(pid))}
    return sum(bench.proc_pss_kib(pid) for pid in every)


def settled_pss_kib(pids: list[int]) -> int:
    """PSS once two readings 0.25 s apart agree within 1 % (a thread or a freed arena may still be settling), or at the deadline."""
    end = time.monotonic() + SETTLE_TIMEOUT
    last = pss_kib(pids)
    while time.monotonic() < end:
        time.sleep(0.25)  # the poll interval of a condition wait, not the wait itself
        now = pss_kib(pids)
        if abs(now - last) <= 0.01 * max(now, 1):
            return now
        last = now
    return last


def echo_ok(port: int) -> None:
    """One byte through the tunnel and back (the benchmark's echo service); raises when it does not come back."""
    bench.first_byte(port, time.perf_counter())


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, t.Any]:
    return json.loads(bench._read_line(proc, timeout))


class Design:
    """Tunnels of one design, added a few at a time; stop() ends every process it started."""

    def __init__(self, cfg: dict[str, t.Any], state_dir: str) -> None:
        self.cfg = cfg
        self.state_dir = state_dir
        self.count = 0

    def add(self, count: int) -> None:  # start tunnels up to `count`, each verified by an echo
        raise NotImplementedError

    def pids(self) -> list[int]:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class SpawnDesign(Design):
    def __init__(self, cfg: dict[str, t.Any], state_dir: str) -> None:
        super().__init__(cfg, state_dir)
        self.tunnels: list[tuple[str, int]] = []

    def add(self, count: int) -> None:
        sshd, service_port = self.cfg["sshd"], self.cfg["service_port"]
        while self.count < count:
            name = f"mem-spawn-{self.count}"
            status = bench.spawn_burrow_many(sshd, service_port, self.state_dir, [name], kinds=("L",))[0]
            self.tunnels.append((name, int(status["pid"])))
            echo_ok(int(status["forwards"][0]["bound_port"]))
            self.count += 1

    def pids(self) -> list[int]:
        return [pid for _name, pid in self.tunnels]

    def stop(self) -> None:
        stop_side_by_side([(bench.stop_burrow, (self.state_dir, name, pid)) for name, pid in self.tunnels])


class LeanDesign(Design):
    def __init__(self, cfg: dict[str, t.Any], state_dir: str) -> None:
        super().__init__(cfg, state_dir)
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def add(self, count: int) -> None:
        from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.spawn import _read_report

        while self.count < count:
            name = f"mem-lean-{self.count}"
            read_fd, write_fd = os.pipe()
            try:
                proc = subprocess.Popen(
                    [sys.executable, str(CHILD), "daemon"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(write_fd,)
                )
                self.procs.append((name, proc))
                # pass_fds keeps the descriptor at its number in the child: that number is its ready pipe
                line = dict(self.cfg["hop"], name=name, state_dir=self.state_dir, ready_fd=write_fd, owner=bench.owner(), collections_root=self.cfg["root"])
                os.close(write_fd)
                write_fd = -1
                assert proc.stdin is not None
                proc.stdin.write(json.dumps(line).encode() + b"\n")  # the declaration, over a pipe
                proc.stdin.close()
                data, _ended = _read_report(read_fd, START_TIMEOUT)
            finally:
                os.close(read_fd)
                if write_fd >= 0:
                    os.close(write_fd)
            report = next((json.loads(text) for text in data.splitlines() if b'"ok"' in text), None)
            if not report or not report.get("ok"):
                raise RuntimeError(f"lean tunnel {name} did not start: {data!r}")
            echo_ok(int(report["status"]["forwards"][0]["bound_port"]))
            self.count += 1

    def pids(self) -> list[int]:
        return [proc.pid for _name, proc in self.procs]

    def stop(self) -> None:
        stop_side_by_side([(self._stop_one, (name, proc)) for name, proc in self.procs])

    def _stop_one(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        bench.stop_burrow(self.state_dir, name, proc.pid)
        bench.stop_popen(proc)


class SharedDesign(Design):
    control = False

    def __init__(self, cfg: dict[str, t.Any], state_dir: str) -> None:
        super().__init__(cfg, state_dir)
        self.proc = subprocess.Popen([sys.executable, str(CHILD), "engines"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            assert self.proc.stdin is not None
            line = dict(cfg["hop"], name="mem-shared", collections_root=cfg["root"], control=self.control, state_dir=state_dir)
            self.proc.stdin.write(json.dumps(line).encode() + b"\n")
            self.proc.stdin.flush()
        except BaseException:
            bench.stop_popen(self.proc)
            raise

    def add(self, count: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{count - self.count}\n".encode())
        self.proc.stdin.flush()
        answer = read_line(self.proc, START_TIMEOUT + 2 * (count - self.count))
        if answer["ansible"]:
            raise RuntimeError("the shared process imported ansible")
        for port in answer["ports"]:
            echo_ok(port)
            self.count += 1
        if self.count != count:
            raise RuntimeError(f"shared process started {self.count} tunnels, not {count}")

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def stop(self) -> None:
        bench.stop_popen(self.proc)  # closing stdin stops every engine; then SIGTERM, SIGKILL at deadlines


class SharedControlDesign(SharedDesign):
    control = True


class SshDesign(Design):
    def __init__(self, cfg: dict[str, t.Any], state_dir: str) -> None:
        super().__init__(cfg, state_dir)
        self.procs: list[subprocess.Popen[bytes]] = []

    def add(self, count: int) -> None:
        sshd, service_port = self.cfg["sshd"], self.cfg["service_port"]
        fresh = []
        while len(self.procs) < count:
            port = bench.free_port()
            argv = [*bench.ssh_base_argv(sshd), "-N", "-L", f"127.0.0.1:{port}:127.0.0.1:{service_port}", sshd.host]
            self.procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            fresh.append(port)
        for port in fresh:
            if not bench.wait_port(port, 30, 0.01):
                raise RuntimeError(f"ssh -N -L did not listen on {port}")
            echo_ok(port)
            self.count += 1

    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def stop(self) -> None:
        for proc in self.procs:  # ssh -N ignores its stdin: signal them all, then reap
            with contextlib.suppress(OSError):
                proc.terminate()
        for proc in self.procs:
            bench.stop_popen(proc)


class GroupDesign(Design):
    """Tunnels of one process_group through ensure_present (the module's own path): one host process for all of them."""

    def __init__(self, cfg: dict[str, t.Any], state_dir: str) -> None:
        super().__init__(cfg, state_dir)
        self.names: list[str] = []
        self.host_pid = 0

    def add(self, count: int) -> None:
        names = [f"mem-group-{index}" for index in range(self.count, count)]
        if not names:
            return
        cfg = {
            "sys_path": [collections_root()],
            "state_dir": self.state_dir,
            "group": GROUP,
            "tunnels": [bench.burrow_tunnel_params(self.cfg["hop"], name, kinds=("L",)) for name in names],
        }
        helper = subprocess.Popen([sys.executable, str(HELPER), json.dumps(cfg)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        try:
            for _name in names:
                report = read_line(helper, START_TIMEOUT)
                if self.host_pid and int(report["pid"]) != self.host_pid:
                    raise RuntimeError(f"tunnel {report.get('name')} runs in pid {report['pid']}, not in the group's host {self.host_pid}")
                self.host_pid = int(report["pid"])
                echo_ok(int(report["forwards"][0]["bound_port"]))
            helper.wait(10)
        finally:
            bench.stop_popen(helper)
        self.names += names
        self.count = count

    def pids(self) -> list[int]:
        return [self.host_pid]

    def stop(self) -> None:
        from ansible_collections.burrow.ssh.plugins.module_utils._tunnel import manage

        with contextlib.suppress(Exception):
            manage.ensure_absent("*", self.state_dir, check_mode=False, drain_timeout=0)
        end = time.monotonic() + 15
        while self.host_pid and bench.pid_alive(self.host_pid) and time.monotonic() < end:
            time.sleep(0.05)  # the poll interval of a condition wait with a deadline
        if self.host_pid and bench.pid_alive(self.host_pid):
            bench.kill_pid(self.host_pid)


def stop_side_by_side(jobs: list[tuple[t.Callable[..., None], tuple[t.Any, ...]]]) -> None:
    """Each stop waits for its process (bounded by the stop deadlines), so they run side by side, each joined with a bound."""
    threads = [threading.Thread(target=func, args=args, daemon=True) for func, args in jobs]
    for thread in threads:
        thread.start()
    end = time.monotonic() + 60
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))


CLASSES: dict[str, type[Design]] = {
    "spawn": SpawnDesign,
    "lean": LeanDesign,
    "shared": SharedDesign,
    "shared+ctl": SharedControlDesign,
    "group": GroupDesign,
    "ssh": SshDesign,
}


def measure_design(design_name: str, cfg: dict[str, t.Any], counts: list[int], state_dir: str, log: t.Callable[[str], None]) -> dict[int, float]:
    per_tunnel: dict[int, float] = {}
    design = CLASSES[design_name](cfg, state_dir)
    try:
        for count in counts:
            started = time.monotonic()
            design.add(count)
            pss = settled_pss_kib(design.pids()) / 1024
            per_tunnel[count] = round(pss / count, 2)
            log(f"  {design_name:6} {count:3} tunnels: PSS {pss:7.1f} MiB total, {pss / count:5.2f} MiB each ({time.monotonic() - started:.0f} s to start)")
    finally:
        design.stop()
    return per_tunnel


def one_run(
    sshd: t.Any, service_port: int, workdir: pathlib.Path, counts: list[int], designs: list[str], log: t.Callable[[str], None]
) -> dict[str, dict[int, float]]:
    cfg = {"sshd": sshd, "service_port": service_port, "hop": bench.hop_config(sshd, service_port), "root": collections_root()}
    results = {}
    for name in designs:
        state_dir = str(workdir / f"state-{name}")
        results[name] = measure_design(name, cfg, counts, state_dir, log)
        left = leftovers(state_dir)
        if left:
            raise RuntimeError(f"{name}: processes still running after stop: {left}")
    return results


def leftovers(state_dir: str) -> list[int]:
    from scale_helpers import kill_leftovers

    return kill_leftovers(pathlib.Path(state_dir)) if os.path.isdir(state_dir) else []


def summarise(runs: list[dict[str, dict[int, float]]], counts: list[int], designs: list[str]) -> list[dict[str, t.Any]]:
    rows = []
    for count in counts:
        row: dict[str, t.Any] = {"tunnels": count}
        for name in designs:
            values = [run[name][count] for run in runs if count in run.get(name, {})]
            if values:
                row[name] = {"median": round(statistics.median(values), 2), "min": min(values), "max": max(values), "runs": values}
            if values and len(rows) > 0 and name in rows[-1]:
                # what each further tunnel cost between the previous count and this one (total PSS difference)
                before = rows[-1]["tunnels"]
                steps = [(run[name][count] * count - run[name][before] * before) / (count - before) for run in runs if count in run.get(name, {})]
                row[name]["marginal"] = round(statistics.median(steps), 2)
        ssh = row.get("ssh", {}).get("median")
        for name in designs:
            if name != "ssh" and name in row and ssh:
                row[name]["ratio_to_ssh"] = round(row[name]["median"] / ssh, 1)
        rows.append(row)
    return rows


def render(rows: list[dict[str, t.Any]], designs: list[str], runs: int) -> str:
    head = ["tunnels"] + [f"{name} MiB/tunnel" + ("" if name == "ssh" else " (x ssh)") for name in designs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [str(row["tunnels"])]
        for name in designs:
            cell = row.get(name)
            if not cell:
                cells.append("-")
                continue
            text = f"{cell['median']:.2f}"
            if runs > 1:
                text += f" ({cell['min']:.2f}-{cell['max']:.2f})"
            if "ratio_to_ssh" in cell:
                text += f" x{cell['ratio_to_ssh']}"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "What each further tunnel cost (MiB PSS, total difference from the previous count / tunnels added, median of runs):", ""]
    lines += ["| tunnels | " + " | ".join(designs) + " |", "|" + "---|" * (len(designs) + 1)]
    for before, row in zip(rows, rows[1:]):
        cells = [f"{before['tunnels']} -> {row['tunnels']}"] + [f"{row[name]['marginal']:.2f}" if "marginal" in row.get(name, {}) else "-" for name in designs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--counts", default="1,10,20,50", help=f"comma-separated tunnel counts (at most {MAX_TUNNELS})")
    parser.add_argument("--runs", type=int, default=1, help="repeat the whole measurement (1-5); the table shows median and range")
    parser.add_argument("--designs", default=",".join(DESIGNS), help=f"which designs, of {','.join(DESIGNS)}")
    parser.add_argument("--json", type=pathlib.Path, help="write the per-run figures and the summary as JSON here")
    args = parser.parse_args(argv)
    counts = sorted({min(MAX_TUNNELS, max(1, int(count))) for count in args.counts.split(",") if count.strip()})
    designs = [name for name in args.designs.split(",") if name in DESIGNS]
    runs = max(1, min(5, args.runs))

    def log(message: str) -> None:
        print(message, flush=True)

    from sandbox import Sandbox

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="burrow-mem-"))
    workdir.chmod(0o700)
    sandbox = Sandbox()
    service: subprocess.Popen[bytes] | None = None
    results: list[dict[str, dict[int, float]]] = []
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        sshd = sandbox.start_sshd()
        log(f"sshd on {sshd.host}:{sshd.port} (pid {sshd.pid}); {', '.join(map(str, counts))} tunnels; {runs} run(s)")
        service = subprocess.Popen([sys.executable, bench.__file__, "_service"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        service_port = int(read_line(service, 20)["port"])
        for run in range(runs):
            log(f"== run {run + 1} of {runs}")
            results.append(one_run(sshd, service_port, workdir / f"run{run}", counts, designs, log))
    finally:
        bench.stop_popen(service)
        sandbox.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    rows = summarise(results, counts, designs)
    print(render(rows, designs, runs))
    if args.json:
        args.json.write_text(json.dumps({"when": when, "counts": counts, "runs": results, "summary": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
