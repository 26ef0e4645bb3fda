# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The forwarding benchmark still runs end to end (--quick): every row present, every sha256 check passed.

Timings are never asserted: they depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import time
import typing as t

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BENCH = REPO / "tests" / "performance" / "bench_forwarding.py"
TOOLS = ("burrow", "openssh", "sshtunnel")

pytestmark = [
    pytest.mark.skipif(not pathlib.Path("/usr/sbin/sshd").exists() or shutil.which("ssh") is None, reason="needs OpenSSH client and server"),
    pytest.mark.timeout(420),
]


def _alive(pid: int) -> bool:
    stat = pathlib.Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, t.Any]:
    out = tmp_path_factory.mktemp("bench")
    argv = [sys.executable, str(BENCH), "--quick", "--json", str(out / "results.json"), "--out", str(out / "performance.md"), "--chart", str(out / "chart.png")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=400, check=False, cwd=REPO)
    assert proc.returncode == 0, f"benchmark failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = json.loads((out / "results.json").read_text())
    return {"results": results, "stdout": proc.stdout, "markdown": (out / "performance.md").read_text(), "chart": out / "chart.png"}


def test_every_throughput_row_present_and_sha256_verified(quick_run: dict[str, t.Any]) -> None:
    rows = {(row["tool"], row["kind"], row["direction"]): row for row in quick_run["results"]["throughput"]}
    expected = {("direct", "direct", d) for d in ("up", "down")}
    expected |= {(tool, kind, d) for tool in ("burrow", "openssh", "openssh-gcm") for kind in ("L", "R", "D") for d in ("up", "down")}
    expected |= {("sshtunnel", "L", d) for d in ("up", "down")}
    assert set(rows) == expected
    for key, row in rows.items():
        assert row["sha_ok"] is True, key
        assert row["runs"] == 1
        assert row["mbps"] > 0
        assert len(row["samples"]) == 1 and "tunnel_cpu_ms_per_mb" in row["samples"][0]
    assert "sha256: all transfers verified" in quick_run["stdout"]
    assert "aes128-gcm" in quick_run["results"]["ciphers"]["openssh-gcm"]


def test_same_run_ratios_for_every_row(quick_run: dict[str, t.Any]) -> None:
    results = quick_run["results"]
    python = {(row["kind"], row["direction"]): row for row in results["ratios"] if row["loadgen"] == "python"}
    assert set(python) == {(kind, d) for kind in ("L", "R", "D") for d in ("up", "down")}
    for key, row in python.items():
        for ref in ("openssh", "openssh-gcm"):
            assert row[f"mbps_x_{ref}"]["median"] > 0, key
            assert len(row[f"mbps_x_{ref}"]["runs"]) == 1, key
    # CPU per MB is in clock ticks: an 8 MiB transfer may take less than one tick of ssh's CPU, so its ratio may be absent.
    assert any("cpu_x_openssh" in row for row in python.values())
    assert [row["phase"] for row in results["load"]][0] == "throughput: start"


@pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 not installed (tests/performance/install-requirements)")
def test_iperf3_rows(quick_run: dict[str, t.Any]) -> None:
    results = quick_run["results"]
    rows = {(row["tool"], row["kind"], row["direction"]): row for row in results["throughput_iperf3"]}
    expected = {("direct", "direct", d) for d in ("up", "down")}
    expected |= {(tool, kind, d) for tool in ("burrow", "openssh", "openssh-gcm") for kind in ("L", "R") for d in ("up", "down")}
    assert set(rows) == expected
    failed = {key: [sample.get("why") for sample in row["samples"]] for key, row in rows.items() if not (row["sha_ok"] and row["mbps"] > 0)}
    assert not failed, f"iperf3 rows that did not count: {failed}\n{quick_run['stdout'][-4000:]}"
    iperf = [row for row in results["ratios"] if row["loadgen"] == "iperf3"]
    assert {(row["kind"], row["direction"]) for row in iperf} == {(kind, d) for kind in ("L", "R") for d in ("up", "down")}
    assert "iperf3 through the tunnels" in quick_run["markdown"]


def test_memory_per_tunnel_rows(quick_run: dict[str, t.Any]) -> None:
    rows = quick_run["results"]["memory_scale"]
    assert [row["tunnels"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert row["burrow_pss_per_tunnel"] > 0 and row["openssh_pss_per_tunnel"] > 0, row
        assert row["ratio"] > 0
    assert "### Memory per tunnel" in quick_run["markdown"]


def test_latency_concurrency_setup_and_memory_rows(quick_run: dict[str, t.Any]) -> None:
    results = quick_run["results"]
    assert set(results["rtt"]) == {"direct/direct", "burrow/L", "burrow/R", "burrow/D", "openssh/L", "openssh/R", "openssh/D", "sshtunnel/L"}
    assert all(row["count"] == 200 for row in results["rtt"].values())
    for tool in TOOLS:
        assert results["concurrency"][tool]["connections"] == 50
        assert len(results["setup"][tool]["runs_ms"]) == 3
        assert results["rss"][tool]["idle_mib"] > 0
        assert results["slow_reader"][tool]["received_mb"] > 0
    # Correctness, not speed: every echoed byte came back through burrow.ssh's tunnel.
    assert results["concurrency"]["burrow"]["failures"] == 0
    assert results["concurrency"]["burrow"]["outcome"] == {"ok": 50}
    assert len(results["targets"]) == 12
    assert results["ciphers"]["burrow"] and results["ciphers"]["openssh"] != "unknown"


def test_report_and_chart_written(quick_run: dict[str, t.Any]) -> None:
    markdown = quick_run["markdown"]
    for heading in ("### Issue 3 targets", "### Single-stream throughput", "### burrow.ssh / OpenSSH, ratios from the same run", "### Latency"):
        assert heading in markdown
    assert "### Concurrency, setup and memory" in markdown
    paths = ("| -L | burrow.ssh |", "| -R | OpenSSH ssh |", "| -L | OpenSSH ssh -c aes128-gcm |", "| -D | burrow.ssh |", "| -L | sshtunnel |", "| no tunnel |")
    for path in paths:
        assert path in markdown
    assert "MISMATCH" not in markdown
    if "no chart" not in quick_run["stdout"]:
        assert quick_run["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nothing_left_running(quick_run: dict[str, t.Any]) -> None:
    pids = quick_run["results"]["pids"]
    assert set(pids) >= {"sshd", "service", *TOOLS}
    end = time.monotonic() + 10
    while time.monotonic() < end and any(_alive(pid) for pid in pids.values()):
        time.sleep(0.1)
    assert [name for name, pid in pids.items() if _alive(pid)] == []
