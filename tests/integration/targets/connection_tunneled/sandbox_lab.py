# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Bastion and target sshd on loopback (tests/sandbox) for runme.sh: writes the inventory of four burrow.ssh.tunneled
hosts (direct or through the bastion, pipelining on or off), runs the command given after --, then checks that the
bastion carried the sessions of the hosts behind it and that the session broker exited. Exit status: the command's,
else 1 when a check after it fails."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import typing as t


def inventory(bastion: t.Any, target: t.Any, known_hosts: pathlib.Path) -> dict[str, t.Any]:
    common = {
        "ansible_connection": "burrow.ssh.tunneled",
        "ansible_host": target.host,
        "ansible_port": target.port,
        "ansible_user": target.user,
        "ansible_ssh_private_key_file": str(target.client_key),
        "ansible_python_interpreter": sys.executable,
        "burrow_known_hosts_file": str(known_hosts),
        "burrow_use_agent": False,
    }
    hop = {"host": bastion.host, "port": bastion.port, "user": bastion.user, "private_key_file": str(bastion.client_key)}
    hosts = {}
    for route in ("direct", "bastion"):
        for pipelining in (True, False):
            name = f"{route}-{'pipelining' if pipelining else 'no-pipelining'}"
            hosts[name] = {"ansible_pipelining": pipelining, **({"burrow_via": [hop]} if route == "bastion" else {})}
    return {"tunneled": {"hosts": hosts, "vars": common}}


def broker_gone(state_dir: pathlib.Path, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not list(state_dir.glob("broker-*.sock")):
            return True
        time.sleep(0.2)
    return False


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: sandbox_lab.py SANDBOX_DIR -- COMMAND [ARGS...]  (SANDBOX_DIR: the collection's tests/sandbox)", file=sys.stderr)
        return 2
    sys.path.insert(0, argv[0])
    from sandbox import Sandbox  # tests/sandbox/sandbox.py, stdlib only

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="burrow-lab-"))
    try:
        return run(Sandbox, workdir, argv[2:])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(sandbox_class: t.Any, workdir: pathlib.Path, command: list[str]) -> int:
    with sandbox_class() as box:
        # DEBUG1: the bastion logs each direct-tcpip request, the proof that a host was reached through it.
        bastion = box.start_sshd(name="bastion", extra_config="LogLevel DEBUG1\n")
        target = box.start_sshd(name="target")
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text(bastion.known_hosts.read_text() + target.known_hosts.read_text())
        state_dir = workdir / "state"
        state_dir.mkdir(mode=0o700)
        path = workdir / "inventory.json"
        path.write_text(json.dumps(inventory(bastion, target, known_hosts)))
        env = dict(os.environ, LAB_INVENTORY=str(path), LAB_DIR=str(workdir), BURROW_STATE_DIR=str(state_dir))
        rc = subprocess.run(command, env=env, check=False, timeout=900).returncode
        failures = []
        if f"target {target.host} port {target.port}" not in bastion.log_path.read_text(errors="replace"):
            failures.append("the bastion carried no session to the target (no direct-tcpip request in its log)")
        if not broker_gone(state_dir):
            failures.append(f"the session broker was still running 15 s after the command: {sorted(state_dir.iterdir())}")
    for failure in failures:
        print(f"sandbox_lab: FAILURE: {failure}", file=sys.stderr)
    if rc == 0 and not failures:
        print("sandbox_lab: the bastion carried the sessions behind it; the session broker exited")
    return rc or (1 if failures else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
