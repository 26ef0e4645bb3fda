# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The play of issue 15: N hosts each open their own tunnel (delegate_to localhost) and verify it, side by side with
the same play built on ``ssh -fN -M``, in one run.

Variants, each an up play (declare the tunnel, fetch the host's marker through it, assert) and a down play, on the
sites of the scale test (tests/scale/scale_helpers.py: network namespaces as root, else sshds on loopback):

  burrow        burrow.ssh.tunnel, one tunnel process per tunnel (the default)
  burrow-group  the same with ``process_group: bench``: one tunnel host serves them all
  ssh           ``ssh -fN -M -S CTL -L 127.0.0.1:PORT:...`` per host, ``ssh -S CTL -O exit`` to end it

Per variant and round: wall time of the up play, CPU of ansible-playbook with its workers and modules, the RSS and
PSS of every process serving the tunnels (summed), their CPU while idle, and the wall time of the down play. The
rounds alternate the variants, so each ratio is taken inside one round; the table shows median (min-max).

    .venv/bin/python tests/scale/bench_play.py --hosts 40 --forks 20 --rounds 3 --json /tmp/play.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(REPO / "tests"), str(REPO / "tests" / "sandbox")]

from conftest import run_playbook  # noqa: E402 - after sys.path
from sandbox import Sandbox  # noqa: E402
from scale_helpers import (  # noqa: E402
    PLAYBOOKS,
    established_to,
    host_names,
    kill_leftovers,
    listening_on,
    memory,
    sample_idle_cpu,
    scale_sites,
    state_pids,
    task_results,
    use_namespaces,
    wait_until,
    write_inventory,
)

VARIANTS = ("burrow", "burrow-group", "ssh")
GROUP = "bench"
PLAY_TIMEOUT = 900


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ssh_masters(state_dir: pathlib.Path) -> list[int]:
    """The pids of the stand-in's ssh masters, as each answers ``-O check`` on its control socket in the state directory."""
    pids = []
    for control in sorted(state_dir.glob("*.ctl")):
        argv = ["ssh", "-F", "/dev/null", "-S", str(control), "-O", "check", "stand-in"]
        answer = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        match = re.search(r"pid=(\d+)", answer.stderr + answer.stdout)
        if match:
            pids.append(int(match.group(1)))
    return pids


def end_masters(state_dir: pathlib.Path) -> None:
    """Teardown guard for the stand-in: every master still running is killed."""
    for pid in ssh_masters(state_dir) if state_dir.is_dir() else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def failures(result: t.Any) -> str:
    """What the failed tasks said (the first few), from the sandbox_json document; the output's tail without one."""
    document = result.json or {}
    said = []
    for play in document.get("plays", []):
        for task in play.get("tasks", []):
            for host, outcome in task.get("hosts", {}).items():
                if outcome.get("failed") or outcome.get("unreachable"):
                    said.append(f"{host} {task.get('task', {}).get('name')}: {outcome.get('msg')} {str(outcome.get('stderr', ''))[-300:]}")
    return "\n".join(said[:5]) if said else result.stdout[-3000:]


def run_variant(variant: str, inventory: pathlib.Path, state_dir: pathlib.Path, forks: int, idle_seconds: float) -> dict[str, t.Any]:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    variables: dict[str, t.Any] = {"scale_state_dir": str(state_dir)}
    if variant == "burrow-group":
        variables["scale_process_group"] = GROUP
    up_play, down_play = (PLAYBOOKS / "up.yml", PLAYBOOKS / "down.yml") if variant != "ssh" else (PLAYBOOKS / "standin_up.yml", PLAYBOOKS / "standin_down.yml")
    env = {"ANSIBLE_FORKS": str(forks)}
    cpu_before = children_cpu()
    started = time.monotonic()
    up = run_playbook(up_play, inventory, variables, env=env, timeout=PLAY_TIMEOUT)
    up_s = time.monotonic() - started
    ansible_cpu = children_cpu() - cpu_before
    if up.returncode != 0:
        raise RuntimeError(f"{variant}: the up play failed: {failures(up)}\n{up.stderr[-2000:]}")
    verified = task_results(up.json, "The marker names this host and its site")
    failed = sorted(host for host, result in verified.items() if result.get("failed"))
    if failed or not verified:
        raise RuntimeError(f"{variant}: not verified: {failed or 'no results'}")
    pids = sorted(set(state_pids(state_dir).values())) if variant != "ssh" else ssh_masters(state_dir)
    per_process = [memory(pid) for pid in pids]
    idle = sample_idle_cpu(pids, idle_seconds)
    started = time.monotonic()
    down = run_playbook(down_play, inventory, variables, env=env, timeout=PLAY_TIMEOUT)
    down_s = time.monotonic() - started
    if down.returncode != 0:
        raise RuntimeError(f"{variant}: the down play failed: {failures(down)}\n{down.stderr[-2000:]}")
    gone = wait_until(lambda: not any(pathlib.Path(f"/proc/{pid}").exists() for pid in pids), 30)
    return {
        "up_and_verified_s": round(up_s, 2),
        "ansible_cpu_s": round(ansible_cpu, 2),
        "processes": len(pids),
        "rss_total_mib": round(sum(values.get("VmRSS", 0.0) for values in per_process), 1),
        "pss_total_mib": round(sum(values.get("Pss", 0.0) for values in per_process), 1),
        "idle_percent_of_one_core": idle["percent_of_one_core"],
        "down_s": round(down_s, 2),
        "processes_gone": gone,
    }


def summarise(rounds: list[dict[str, dict[str, t.Any]]], hosts: int) -> dict[str, t.Any]:
    summary: dict[str, t.Any] = {}
    for variant in VARIANTS:
        rows = [one[variant] for one in rounds if variant in one]
        if not rows:
            continue
        summary[variant] = {key: _spread([float(row[key]) for row in rows]) for key in rows[0] if key not in ("processes", "processes_gone")}
        summary[variant]["processes"] = rows[0]["processes"]
        summary[variant]["pss_per_tunnel_mib"] = _spread([float(row["pss_total_mib"]) / hosts for row in rows])
    for variant in ("burrow", "burrow-group"):
        ratios = [one[variant]["up_and_verified_s"] / one["ssh"]["up_and_verified_s"] for one in rounds if variant in one and "ssh" in one]
        if ratios:
            summary[variant]["up_x_ssh"] = _spread(ratios)
    return summary


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def markdown(summary: dict[str, t.Any], meta: dict[str, t.Any]) -> str:
    def cell(entry: dict[str, float]) -> str:
        return f"{entry['median']:g} ({entry['min']:g}-{entry['max']:g})"

    lines = [
        f"{meta['hosts']} hosts, forks {meta['forks']}, {meta['rounds']} round(s), {meta['mode']}, load average at the start {meta['load_before']}",
        "",
        "| variant | processes | up and verified s | x ssh | ansible CPU s | RSS total MiB | PSS per tunnel MiB | idle % of one core | down s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, row in summary.items():
        ratio = cell(row["up_x_ssh"]) if "up_x_ssh" in row else "1"
        lines.append(
            f"| {variant} | {row['processes']} | {cell(row['up_and_verified_s'])} | {ratio} | {cell(row['ansible_cpu_s'])} | {cell(row['rss_total_mib'])} "
            f"| {cell(row['pss_per_tunnel_mib'])} | {cell(row['idle_percent_of_one_core'])} | {cell(row['down_s'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=40, help="inventory hosts, each with its own tunnel (1-200)")
    parser.add_argument("--forks", type=int, default=20, help="ANSIBLE_FORKS (1-100)")
    parser.add_argument("--sites", type=int, default=2, help="sites (sshd + marker service each, 1-8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each running every variant once (1-5)")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="idle CPU window per variant (1-60)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--json", type=pathlib.Path, help="write the rounds and the summary as JSON here")
    args = parser.parse_args(argv)
    hosts = max(1, min(args.hosts, 200))
    forks = max(1, min(args.forks, 100))
    rounds_count = max(1, min(args.rounds, 5))
    idle_seconds = max(1.0, min(args.idle_seconds, 60.0))
    variants = [name for name in args.variants.split(",") if name in VARIANTS]
    names = host_names(hosts)
    meta = {
        "hosts": hosts,
        "forks": forks,
        "rounds": rounds_count,
        "mode": "network namespaces" if use_namespaces() else "loopback sshds",
        "load_before": " ".join(f"{value:.2f}" for value in os.getloadavg()),
        "cpus": os.cpu_count(),
    }
    rounds: list[dict[str, dict[str, t.Any]]] = []
    work = pathlib.Path(tempfile.mkdtemp(prefix="burrow-bench-play-"))
    try:
        with Sandbox() as box, scale_sites(box, names, max(1, min(args.sites, 8))) as sites:
            inventory = write_inventory(work / "inventory.yml", sites)
            document = json.loads(inventory.read_text())
            for host in document["all"]["children"]["scale"]["hosts"].values():
                host["scale_standin_port"] = free_port()
            inventory.write_text(json.dumps(document, indent=1))
            endpoints = [site.ssh_endpoint for site in sites]
            standin_ports = [int(host["scale_standin_port"]) for host in document["all"]["children"]["scale"]["hosts"].values()]

            def nothing_left() -> bool:
                return established_to(endpoints) == [] and listening_on(standin_ports) == []

            for index in range(rounds_count):
                one: dict[str, dict[str, t.Any]] = {}
                for variant in variants:
                    state_dir = work / f"state-{index}-{variant}"
                    try:
                        one[variant] = run_variant(variant, inventory, state_dir, forks, idle_seconds)
                    finally:
                        end_masters(state_dir)
                        kill_leftovers(state_dir)
                    print(f"round {index + 1}/{rounds_count} {variant:12} {json.dumps(one[variant])}", flush=True)
                    if not wait_until(nothing_left, 30):
                        raise RuntimeError(f"{variant}: SSH connections or listeners left after the down play")
                rounds.append(one)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = summarise(rounds, hosts)
    table = markdown(summary, meta)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rounds": rounds, "summary": summary, "markdown": table}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
