# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A hundred inventory hosts in one play (forks 50), each with its own tunnel through real sshds, then all torn down.

As root the sshds run in network namespaces (one per site), each with a marker service on its own loopback;
otherwise they are several sshds on 127.0.0.1. Figures (up, memory, idle CPU, teardown) are printed and, with
BURROW_SCALE_REPORT=FILE, written as JSON; docs/scale.md quotes them.

Knobs (bounded): BURROW_SCALE_HOSTS (100), BURROW_SCALE_SITES (4), BURROW_SCALE_IDLE_SECONDS (30),
BURROW_SCALE_MODE=loopback (no namespaces even as root).
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import subprocess
import time
import typing as t

import pytest
from sandbox import Sandbox
from scale_helpers import (
    PLAYBOOKS,
    Site,
    alive,
    env_int,
    established_to,
    fetch_marker,
    holders_of,
    host_names,
    kill_leftovers,
    listening_on,
    marker_text,
    memory,
    sample_idle_cpu,
    scale_sites,
    site_of,
    state_pids,
    task_results,
    use_namespaces,
    wait_until,
    write_inventory,
)

from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.control import TunnelHandle

HOSTS = env_int("BURROW_SCALE_HOSTS", 100, 1, 200)
SITES = env_int("BURROW_SCALE_SITES", 4, 1, 8)
IDLE_SECONDS = env_int("BURROW_SCALE_IDLE_SECONDS", 30, 1, 120)
FORKS = 50
# Targets of issue 9 on the 2-core development machine, reported in the figures; the test fails at twice the target
# (a slower or busier CI machine must not fail it, a regression must). docs/scale.md says which targets are met.
UP_TARGET_S, UP_LIMIT_S = 60.0, 120.0
IDLE_CPU_TARGET_PCT, IDLE_CPU_LIMIT_PCT = 5.0, 10.0
RSS_BUDGET_MIB = 48.0  # per idle tunnel process, see docs/scale.md

pytestmark = pytest.mark.slow


@pytest.fixture
def sites() -> t.Iterator[list[Site]]:
    with Sandbox() as box, scale_sites(box, host_names(HOSTS), SITES) as started:
        yield started


@pytest.fixture
def state_dir(tmp_path: pathlib.Path) -> t.Iterator[pathlib.Path]:
    path = tmp_path / "state"
    yield path
    kill_leftovers(path)  # whatever a failed run left behind


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"stdout:\n{result.stdout[-6000:]}\nstderr:\n{result.stderr[-3000:]}"


def _report(figures: dict[str, t.Any]) -> None:
    print("\nscale figures:\n" + json.dumps(figures, indent=2, sort_keys=True))
    target = os.environ.get("BURROW_SCALE_REPORT")
    if target:
        pathlib.Path(target).write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


@pytest.mark.timeout(900)
def test_a_hundred_hosts_each_with_its_own_tunnel(
    ansible_playbook: t.Callable[..., subprocess.CompletedProcess[str]], sites: list[Site], state_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    hosts = host_names(HOSTS)
    where = site_of(sites)
    inventory = write_inventory(tmp_path / "inventory.yml", sites)
    variables = {"scale_state_dir": str(state_dir)}
    env = {"ANSIBLE_FORKS": str(FORKS)}
    figures: dict[str, t.Any] = {
        "hosts": HOSTS,
        "sites": SITES,
        "forks": FORKS,
        "mode": "network namespaces" if use_namespaces() else "loopback sshds",
        "cpus": os.cpu_count(),
    }
    endpoints = [site.ssh_endpoint for site in sites]

    # -- up and verified: one ansible-playbook run (declare, reach the marker through the allocated port, assert)
    figures["load_average_before"] = [round(value, 2) for value in os.getloadavg()]
    wall_start = time.time()
    started = time.monotonic()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    up = ansible_playbook(PLAYBOOKS / "up.yml", inventory, variables, env=env, timeout=600)
    figures["up_and_verified_s"] = round(time.monotonic() - started, 2)
    # ansible-playbook, its workers and module processes (reaped children); the detached tunnel processes are not in it
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    figures["up_ansible_cpu_s"] = round(after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime, 1)
    assert_ok(up)
    declared = task_results(up.json, "Declare this host's tunnel")
    verified = task_results(up.json, "The marker names this host and its site")
    assert sorted(declared) == hosts
    assert sorted(host for host, result in verified.items() if not result.get("failed")) == hosts
    assert all(result["changed"] and result["action"] == "created" for result in declared.values())

    ports = {host: int(result["tunnel"]["port"]) for host, result in declared.items()}
    pids = {host: int(result["tunnel"]["pid"]) for host, result in declared.items()}
    assert len(set(ports.values())) == HOSTS, "every tunnel has its own allocated port"
    assert len(set(pids.values())) == HOSTS, "every tunnel has its own process"
    assert state_pids(state_dir) == dict(pids)
    starts = sorted(json.loads((state_dir / f"{host}.json").read_text())["started_at"] for host in hosts)
    figures["tunnel_starts_after_play_start_s"] = [round(starts[0] - wall_start, 2), round(starts[-1] - wall_start, 2)]

    # -- again from outside Ansible: each host's port leads to its own marker, through its own site's sshd
    for host in hosts:
        assert fetch_marker(ports[host]) == marker_text(host, where[host].name), host
    assert len(listening_on(list(ports.values()))) == HOSTS
    assert len(established_to(endpoints)) == HOSTS, "one SSH connection per tunnel"

    # -- memory and idle CPU of the tunnel processes
    per_process = {host: memory(pid) for host, pid in pids.items()}

    def column(key: str) -> list[float]:
        return sorted(values.get(key, 0.0) for values in per_process.values())

    rss, pss = column("VmRSS"), column("Pss")
    figures["memory_mib"] = {
        "rss_min": round(rss[0], 1),
        "rss_median": round(rss[len(rss) // 2], 1),
        "rss_max": round(rss[-1], 1),
        "rss_total": round(sum(rss), 1),
        "rss_anon_median": round(column("RssAnon")[HOSTS // 2], 1),
        "rss_file_median": round(column("RssFile")[HOSTS // 2], 1),
        "pss_median": round(pss[len(pss) // 2], 1),
        "pss_total": round(sum(pss), 1),
        "threads_per_process": sorted(set(column("threads"))),
    }
    figures["idle_cpu"] = sample_idle_cpu(list(pids.values()), IDLE_SECONDS)
    for host in hosts:
        assert fetch_marker(ports[host]) == marker_text(host, where[host].name), f"{host} after {IDLE_SECONDS} s idle"
    reports = {host: TunnelHandle(str(state_dir), host).inspect() for host in hosts}
    assert {report["status"] for report in reports.values()} == {"up"}
    figures["reconnects_while_idle"] = sum(int(report.get("reconnects", 0)) for report in reports.values())
    figures["keepalives_per_second_all_tunnels"] = round(
        HOSTS / float(declared[hosts[0]].get("invocation", {}).get("module_args", {}).get("keepalive_interval") or 5), 1
    )

    # -- one task tears everything down
    started = time.monotonic()
    down = ansible_playbook(PLAYBOOKS / "down.yml", inventory, variables, env=env, timeout=300)
    figures["teardown_s"] = round(time.monotonic() - started, 2)
    assert_ok(down)
    removed = task_results(down.json, "Remove every tunnel")["localhost"]
    assert removed["changed"] is True
    assert sorted(removed["removed"]) == hosts

    # -- nothing left: processes, files, listeners, SSH connections, sshd sessions
    assert [pid for pid in pids.values() if alive(pid)] == []
    assert sorted(path.name for path in state_dir.iterdir()) == [], "state files, sockets and logs removed"
    assert holders_of(state_dir) == []
    assert listening_on(list(ports.values())) == []
    assert wait_until(lambda: established_to(endpoints) == [], 10), established_to(endpoints)
    assert wait_until(lambda: all(site.sshd.child_pids() == [] for site in sites), 10), "sshd session processes ended"
    figures["targets"] = {
        "up_and_verified_le_60s": figures["up_and_verified_s"] <= UP_TARGET_S,
        "idle_cpu_lt_5pct_of_one_core": figures["idle_cpu"]["percent_of_one_core"] < IDLE_CPU_TARGET_PCT,
        "rss_each_le_budget": rss[-1] <= RSS_BUDGET_MIB,
    }
    _report(figures)
    assert figures["up_and_verified_s"] <= UP_LIMIT_S
    assert figures["idle_cpu"]["percent_of_one_core"] < IDLE_CPU_LIMIT_PCT
    assert rss[-1] <= RSS_BUDGET_MIB
