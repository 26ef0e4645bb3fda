# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""50 ansible.builtin.command tasks against a host behind a bastion, per connection plugin, in one run.

burrow.ssh.tunneled vs ansible.builtin.ssh (ProxyJump + ControlPersist) vs ansible.builtin.paramiko_ssh (when the
installed ansible-core still has it; ProxyCommand through the bastion). The target sshd runs in a network namespace
(10.203.7.2) reached through a bastion sshd on loopback, as in the integration test. Needs root.

    .venv/bin/python tests/performance/bench_connection.py [--tasks 50] [--rounds 3] [--pipelining both|on|off]
        [--consecutive-rounds 5] [--consecutive-tasks 5]   (--rounds 0 --exec-runs 0: only the consecutive runs)

Besides the wall time of ansible-playbook, a callback (tests/performance/callback_plugins) records every task's
duration, so the report also gives the first task (connection set-up) and the median of the others (steady state).
ansible-core's run_command sometimes waits out a 1 s select() timeout on the target after a command has ended, for
any connection plugin (seen with connection: local too); those tasks are counted and left out of the steady-state
median, but they stay in the wall time, so the wall-time ratio is noisier than the per-task one.
A "two consecutive runs" part (issue 18) runs a short playbook twice in a row per plugin, cold before the first:
burrow.ssh.tunneled with burrow_persist: 60 against ssh with ControlPersist=60s (ansible's default ssh_args), and
reports both runs' wall times and the handshakes the second run did (sshd's "Accepted publickey" lines).
A second part times exec_command itself (no Ansible task around it): `true`, and 100 kB on stdin as a pipelined
module would send it, through the same bastion.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sandbox"))
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "tests"))

from conftest import ensure_collection_link  # noqa: E402
from sandbox import Sandbox  # noqa: E402
from test_connection_tunneled import TARGET_ADDRESS, network_namespace  # noqa: E402

ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
PY_SPY = REPO / ".venv" / "bin" / "py-spy"


def write_playbook(path: pathlib.Path, tasks: int) -> None:
    lines = ["- hosts: bench", "  gather_facts: false", "  tasks:"]
    for index in range(tasks):
        lines += [f"    - name: Command {index}", f"      ansible.builtin.command: echo {index}", "      changed_when: false"]
    path.write_text("\n".join(lines) + "\n")


STALL_SECONDS = 0.8


def summarize_tasks(timings: list[list[dict[str, t.Any]]]) -> dict[str, float]:
    """Over the rounds of one plugin: median first task, median of the later tasks without stalls, stall count."""
    firsts = [run[0]["seconds"] for run in timings if run]
    later = [item["seconds"] for run in timings for item in run[1:]]
    # A stall adds about 1 s to a task: anything 0.8 s above the median is one.
    limit = statistics.median(later) + STALL_SECONDS if later else 0.0
    steady = [value for value in later if value < limit]
    return {
        "first_ms": statistics.median(firsts) * 1000 if firsts else float("nan"),
        "steady_ms": statistics.median(steady) * 1000 if steady else float("nan"),
        "steady_mean_ms": statistics.fmean(steady) * 1000 if steady else float("nan"),
        "stalls": float(len(later) - len(steady)),
        "tasks": float(len(later)),
    }


EXEC_COMMANDS = {
    "true (no output)": ("true", None),
    "echo ~ (output)": ("/bin/sh -c 'echo ~ && sleep 0'", None),
    "wc -c, 100 kB stdin": ("wc -c", b"x" * 100_000),
}


def exec_latency(plugins: dict[str, tuple[str, dict[str, t.Any]]], runs: int, collections: pathlib.Path) -> dict[str, dict[str, float]]:
    """Median exec_command time per plugin and command; a new connection object per run, as Ansible's workers do."""
    from ansible.playbook.play_context import PlayContext
    from ansible.plugins.loader import connection_loader, init_plugin_loader

    init_plugin_loader([str(collections)])
    medians: dict[str, dict[str, float]] = {}
    for name, (plugin, variables) in plugins.items():
        samples: dict[str, list[float]] = {label: [] for label in EXEC_COMMANDS}
        for index in range(runs + 1):
            connection = connection_loader.get(plugin, PlayContext(), None)
            connection.set_options(var_options=variables)
            for label, (command, stdin) in EXEC_COMMANDS.items():
                started = time.perf_counter()
                rc, _out, err = connection.exec_command(command, in_data=stdin, sudoable=False)
                elapsed = time.perf_counter() - started
                if rc != 0:
                    raise RuntimeError(f"{name}: {command} failed with rc {rc}: {err[-500:]!r}")
                if index:  # the first run connects
                    samples[label].append(elapsed * 1000)
            connection.close()
        medians[name] = {label: statistics.median(values) for label, values in samples.items()}
    return medians


def stop_persisted(control_dir: pathlib.Path, state_dir: pathlib.Path) -> None:
    """Stop ssh's ControlPersist masters and a persisting burrow broker, so the next pair starts cold."""
    for sock in control_dir.iterdir():
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"], capture_output=True, timeout=30, check=False)
    if any(state_dir.glob("broker-*.sock")):
        from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.client import BrokerClient

        with contextlib.suppress(Exception):
            BrokerClient(str(state_dir)).call({"op": "shutdown"}, timeout=10)
    deadline = time.monotonic() + 10
    while any(state_dir.glob("broker-*.sock")) and time.monotonic() < deadline:
        time.sleep(0.05)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int | None) -> float:
    """User + system CPU seconds of a running process (all its threads), 0.0 when it is gone."""
    if pid is None:
        return 0.0
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def persistent_pids(control_dir: pathlib.Path, state_dir: pathlib.Path) -> list[int]:
    """The processes that outlive a run and serve the next: ssh's ControlPersist masters, burrow's session broker."""
    pids = []
    for sock in control_dir.iterdir():
        check = subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "check", "x"], capture_output=True, text=True, timeout=30, check=False)
        if "pid=" in check.stderr:
            pids.append(int(check.stderr.split("pid=", 1)[1].split(")", 1)[0]))
    if any(state_dir.glob("broker-*.sock")):
        from ansible_collections.burrow.ssh.plugins.plugin_utils._broker.client import BrokerClient

        with contextlib.suppress(Exception):
            pids.append(int(BrokerClient(str(state_dir)).call({"op": "status"}, timeout=10)["pid"]))
    return pids


def has_paramiko_ssh() -> bool:
    result = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-doc"), "-t", "connection", "-l"], capture_output=True, text=True, timeout=120, check=False)
    return "paramiko_ssh" in result.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pipelining", choices=("both", "on", "off"), default="both")
    parser.add_argument("--exec-runs", type=int, default=30, help="exec_command runs per plugin and command (0: skip)")
    parser.add_argument("--consecutive-rounds", type=int, default=5, help="rounds of two consecutive runs per plugin (0: skip)")
    parser.add_argument("--consecutive-tasks", type=int, default=5, help="tasks per playbook of the consecutive runs")
    parser.add_argument("--profile-second-run", type=pathlib.Path, help="py-spy collapsed stacks of the consecutive runs' second runs, into this directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespace)", file=sys.stderr)
        return 2
    collections = ensure_collection_link()
    work = pathlib.Path(tempfile.mkdtemp(prefix="burrow-bench-conn-"))
    work.chmod(0o700)
    results: dict[str, list[float]] = {}
    exec_results: dict[str, dict[str, float]] = {}
    task_times: dict[str, list[list[dict[str, t.Any]]]] = {}
    pairs: dict[str, list[tuple[float, float, int]]] = {}
    second_tasks: dict[str, list[list[dict[str, t.Any]]]] = {}
    second_cpu: dict[str, list[tuple[float, float]]] = {}
    try:
        with contextlib.ExitStack() as stack:
            import pytest

            try:
                netns = stack.enter_context(network_namespace())
            except pytest.skip.Exception as exc:
                print(f"skipped: {exc}", file=sys.stderr)
                return 2
            box = stack.enter_context(Sandbox())
            bastion = box.start_sshd(name="bastion")
            target = box.start_sshd(name="target", netns=netns, listen=TARGET_ADDRESS)
            known_hosts = work / "known_hosts"
            known_hosts.write_text(bastion.known_hosts.read_text() + target.known_hosts.read_text())
            known_hosts.chmod(0o600)
            ssh_config = work / "ssh_config"
            ssh_config.write_text(
                f"Host burrow-bastion\n  HostName {bastion.host}\n  Port {bastion.port}\n  User {bastion.user}\n  IdentityFile {bastion.client_key}\n"
                f"  IdentitiesOnly yes\n  UserKnownHostsFile {known_hosts}\n  StrictHostKeyChecking yes\n"
                f"Host {TARGET_ADDRESS}\n  UserKnownHostsFile {known_hosts}\n  StrictHostKeyChecking yes\n  IdentitiesOnly yes\n"
            )
            playbook = work / "bench.yml"
            write_playbook(playbook, args.tasks)
            control_dir = work / "cp"
            control_dir.mkdir(mode=0o700)
            state_dir = work / "state"
            state_dir.mkdir(mode=0o700)
            common = {
                "ansible_host": TARGET_ADDRESS,
                "ansible_port": target.port,
                "ansible_user": target.user,
                "ansible_ssh_private_key_file": str(target.client_key),
                "ansible_python_interpreter": sys.executable,
            }
            plugins: dict[str, dict[str, t.Any]] = {
                "burrow.ssh.tunneled": {
                    "ansible_connection": "burrow.ssh.tunneled",
                    "burrow_via": [{"host": bastion.host, "port": bastion.port, "user": bastion.user, "private_key_file": str(bastion.client_key)}],
                    "burrow_known_hosts_file": str(known_hosts),
                    "burrow_use_agent": False,
                },
                "ssh (ProxyJump + ControlPersist)": {
                    "ansible_connection": "ansible.builtin.ssh",
                    "ansible_ssh_common_args": f"-F {ssh_config} -o ProxyJump=burrow-bastion",
                },
            }
            if has_paramiko_ssh():
                plugins["paramiko_ssh (ProxyCommand)"] = {
                    "ansible_connection": "ansible.builtin.paramiko_ssh",
                    "ansible_paramiko_proxy_command": f"ssh -F {ssh_config} -W %h:%p burrow-bastion",
                    "ansible_paramiko_host_key_checking": False,
                }
            modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.pipelining]
            env = dict(os.environ)
            env.update(
                ANSIBLE_COLLECTIONS_PATH=str(collections),
                ANSIBLE_SSH_CONTROL_PATH_DIR=str(control_dir),
                ANSIBLE_HOST_KEY_CHECKING="True",
                ANSIBLE_PARAMIKO_HOST_KEY_CHECKING="False",
                ANSIBLE_DEPRECATION_WARNINGS="False",
                ANSIBLE_NOCOLOR="1",
                BURROW_STATE_DIR=str(state_dir),
                ANSIBLE_CALLBACK_PLUGINS=str(REPO / "tests" / "performance" / "callback_plugins"),
                ANSIBLE_CALLBACKS_ENABLED="burrow_task_timings",
                BURROW_TASK_TIMINGS=str(work / "timings.json"),
            )
            for round_index in range(args.rounds):
                for pipelining in modes:
                    for name, variables in plugins.items():
                        label = f"{name}, pipelining {'on' if pipelining else 'off'}"
                        inventory = work / "inventory.json"
                        host_vars = {**common, **variables, "ansible_pipelining": pipelining}
                        inventory.write_text(json.dumps({"bench": {"hosts": {"bench-host": {}}, "vars": host_vars}}))
                        started = time.monotonic()
                        run = subprocess.run(
                            [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook)], capture_output=True, text=True, env=env, timeout=900, check=False
                        )
                        elapsed = time.monotonic() - started
                        if run.returncode != 0:
                            print(f"{label}: FAILED (rc {run.returncode})\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}", file=sys.stderr)
                            return 1
                        results.setdefault(label, []).append(elapsed)
                        task_times.setdefault(label, []).append(json.loads((work / "timings.json").read_text()))
                        print(f"round {round_index + 1}: {label}: {elapsed:.2f} s", flush=True)
                        # Stop ssh's ControlPersist masters after each run so every run starts cold (the same for every plugin).
                        for sock in control_dir.iterdir():
                            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"], capture_output=True, timeout=30, check=False)
                        deadline = time.monotonic() + 10
                        while any(state_dir.glob("broker-*.sock")) and time.monotonic() < deadline:
                            time.sleep(0.05)
            if args.consecutive_rounds > 0:
                short = work / "short.yml"
                write_playbook(short, args.consecutive_tasks)
                persisted = {
                    "burrow.ssh.tunneled, burrow_persist 60": {**plugins["burrow.ssh.tunneled"], "burrow_persist": 60},
                    "ssh (ProxyJump + ControlPersist=60s)": plugins["ssh (ProxyJump + ControlPersist)"],
                }
                for round_index in range(args.consecutive_rounds):
                    for name, variables in persisted.items():
                        inventory = work / "inventory.json"
                        inventory.write_text(json.dumps({"bench": {"hosts": {"bench-host": {}}, "vars": {**common, **variables, "ansible_pipelining": True}}}))
                        times: list[float] = []
                        log_offset = target.log_path.stat().st_size
                        for run_index in range(2):
                            accepted = target.log_path.read_text(errors="replace").count("Accepted publickey")
                            # CPU of the run: ansible-playbook and everything it waited for (workers, ssh clients), plus
                            # what the processes kept from the first run (masters, broker) spent meanwhile.
                            kept = persistent_pids(control_dir, state_dir)
                            kept_before = {pid: process_cpu(pid) for pid in kept}
                            children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
                            started = time.monotonic()
                            command = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(short)]
                            if args.profile_second_run and run_index == 1:
                                # py-spy's own cost lands in the wall time: a profiled round's figures are not comparable.
                                plugin = "burrow" if name.startswith("burrow") else "ssh"
                                profile = args.profile_second_run / f"{plugin}-round{round_index + 1}.txt"
                                command = [str(PY_SPY), "record", "--subprocesses", "--rate", "500", "--format", "raw", "-o", str(profile), "--", *command]
                            run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, check=False)
                            times.append(time.monotonic() - started)
                            children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
                            if run_index == 1:
                                run_cpu = children_after.ru_utime + children_after.ru_stime - children_before.ru_utime - children_before.ru_stime
                                kept_cpu = sum(process_cpu(pid) - before for pid, before in kept_before.items())
                                second_cpu.setdefault(name, []).append((run_cpu, kept_cpu))
                            if run.returncode != 0:
                                print(f"{name}: FAILED (rc {run.returncode})\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}", file=sys.stderr)
                                return 1
                            if run_index == 1:
                                second_tasks.setdefault(name, []).append(json.loads((work / "timings.json").read_text()))
                        handshakes = target.log_path.read_text(errors="replace").count("Accepted publickey") - accepted
                        pairs.setdefault(name, []).append((times[0], times[1], handshakes))
                        print(f"round {round_index + 1}: {name}: {times[0]:.2f} s then {times[1]:.2f} s, handshakes in the second run {handshakes}", flush=True)
                        with target.log_path.open("rb") as log:
                            log.seek(log_offset)
                            # Why a session ended (a handshake the second run should not have needed): sshd says so.
                            lines = log.read().decode(errors="replace").splitlines()
                        ended = [line for line in lines if "Disconnecting" in line or "nonexistent channel" in line]
                        if ended:
                            print(f"  sshd ended sessions in this round: {ended[:5]}", flush=True)
                        stop_persisted(control_dir, state_dir)
            if args.exec_runs > 0:
                os.environ.update({key: env[key] for key in ("ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_SSH_CONTROL_PATH_DIR", "BURROW_STATE_DIR")})
                exec_plugins = {
                    name: (variables["ansible_connection"], {**common, **variables})
                    for name, variables in plugins.items()
                    if not name.startswith("paramiko_ssh")  # its ProxyCommand process per connection object is not its steady state
                }
                exec_results = exec_latency(exec_plugins, args.exec_runs, collections)
                for sock in control_dir.iterdir():
                    subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"], capture_output=True, timeout=30, check=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if results:
        print(f"\n{args.tasks} ansible.builtin.command tasks, 1 host behind a bastion, {args.rounds} round(s), median wall time of ansible-playbook:")
    for pipelining in ("on", "off"):
        rows = {label: statistics.median(times) for label, times in results.items() if label.endswith(f"pipelining {pipelining}")}
        if not rows:
            continue
        ours = next(value for label, value in rows.items() if label.startswith("burrow.ssh.tunneled"))
        ours_steady = summarize_tasks(task_times[next(label for label in rows if label.startswith("burrow.ssh.tunneled"))])["steady_ms"]
        for label, value in rows.items():
            per_task = value / args.tasks * 1000
            runs = ", ".join(f"{x:.2f}" for x in results[label])
            tasks = summarize_tasks(task_times[label])
            print(f"  {label:55s} wall {value:7.2f} s  {per_task:6.1f} ms/task  ratio {value / ours:5.2f}  (runs: {runs})")
            print(
                f"  {'':55s} first task {tasks['first_ms']:6.0f} ms, later tasks median {tasks['steady_ms']:6.1f} ms"
                f" (mean {tasks['steady_mean_ms']:6.1f}) ratio {tasks['steady_ms'] / ours_steady:5.2f},"
                f" {tasks['stalls']:.0f} of {tasks['tasks']:.0f} tasks hit the 1 s run_command stall"
            )
    if pairs:
        print(f"\ntwo consecutive runs of {args.consecutive_tasks} tasks (pipelining on), cold before the first, {args.consecutive_rounds} round(s), median:")
        ours_pair = next(rows for label, rows in pairs.items() if label.startswith("burrow"))
        for label, rows in pairs.items():
            second = [row[1] for row in rows]
            both = [row[0] + row[1] for row in rows]
            print(
                f"  {label:40s} first {statistics.median(row[0] for row in rows):5.2f} s, second {statistics.median(second):5.2f} s"
                f" (min {min(second):.2f}, max {max(second):.2f}; ratio {statistics.median(second) / statistics.median(r[1] for r in ours_pair):4.2f}),"
                f" both {statistics.median(both):5.2f} s (ratio {statistics.median(both) / statistics.median(r[0] + r[1] for r in ours_pair):4.2f}),"
                f" handshakes in the second run {sorted({row[2] for row in rows})}"
            )
            print(f"  {'':40s} runs (first, second): {', '.join(f'{a:.2f}/{b:.2f}' for a, b, _h in rows)}")
            tasks = summarize_tasks(second_tasks.get(label, []))
            ours_tasks = summarize_tasks(second_tasks.get(next(name for name in pairs if name.startswith("burrow")), []))
            print(
                f"  {'':40s} second run's tasks: first {tasks['first_ms']:6.0f} ms (ratio {tasks['first_ms'] / ours_tasks['first_ms']:4.2f}),"
                f" later median {tasks['steady_ms']:6.1f} ms (ratio {tasks['steady_ms'] / ours_tasks['steady_ms']:4.2f}),"
                f" {tasks['stalls']:.0f} of {tasks['tasks']:.0f} later tasks hit the 1 s run_command stall"
            )
            cpu = [run + kept for run, kept in second_cpu.get(label, [])]
            ours_cpu = [run + kept for run, kept in second_cpu.get(next(name for name in pairs if name.startswith("burrow")), [])]
            if cpu and ours_cpu:
                print(
                    f"  {'':40s} second run's CPU: median {statistics.median(cpu):5.2f} s (ratio {statistics.median(cpu) / statistics.median(ours_cpu):4.2f});"
                    f" runs (ansible-playbook with its workers and ssh clients + the masters or broker kept from the first run):"
                    f" {', '.join(f'{run:.2f}+{kept:.2f}' for run, kept in second_cpu[label])}"
                )
    if exec_results:
        print(f"\nexec_command through the bastion, median of {args.exec_runs} runs (a new connection object per run, session already up):")
        ours_exec = exec_results.get("burrow.ssh.tunneled", {})
        for name, row in exec_results.items():
            cells = ", ".join(f"{label} {value:6.1f} ms ({value / ours_exec[label]:4.2f}x)" for label, value in row.items())
            print(f"  {name:35s} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
