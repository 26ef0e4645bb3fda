#!/usr/bin/env python
# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run one burrow.ssh tunnel in the foreground, for a service manager (the burrow-tunnel@.service unit).

    burrow_tunnel_service.py [--check] [--state-dir DIR] DECLARATION.json

DECLARATION.json holds the options of burrow.ssh.tunnel (name, host, forwards, keys ...), written 0600 by
the burrow.ssh.tunnels role. The tunnel engine is the collection's own (a copy of plugins/module_utils next
to this file); it reconnects by itself, and the service manager restarts the process if it exits.
SIGTERM drains and stops the tunnel; the exit status is 0 then, 1 when the tunnel could not start,
2 for a declaration error (restarting would not help).
--check validates the declaration and the imports (paramiko) and exits without connecting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=wrong-import-position
from ansible_collections.burrow.ssh.plugins.module_utils._module_args import NON_DECLARATION_OPTIONS, tunnel_from_module
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.errors import SpecError
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process import daemon
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import TunnelPaths, ensure_state_dir, process_start_time
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.model import Tunnel
from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import HAS_PARAMIKO, PARAMIKO_IMPORT_ERROR

EXIT_START_FAILED = 1
EXIT_BAD_DECLARATION = 2


def load_declaration(path: str) -> tuple[Tunnel, list[str]]:
    with open(path, encoding="utf-8") as handle:
        params = json.load(handle)
    if not isinstance(params, dict):
        raise SpecError("declaration", path, "must be a JSON object of burrow.ssh.tunnel options")
    if params.get("lifetime", "persistent") != "persistent":
        raise SpecError("lifetime", params.get("lifetime"), "must be persistent for a tunnel kept up by a service")
    if params.get("process_group") is not None:
        # One unit runs one tunnel in the foreground: a shared tunnel host would outlive or die with the wrong unit.
        raise SpecError("process_group", params.get("process_group"), "is not supported for a tunnel kept up by a service (one unit per tunnel)")
    allowed = {key: value for key, value in params.items() if key not in NON_DECLARATION_OPTIONS or key == "allow_non_loopback_bind"}
    return tunnel_from_module(allowed)


def _relay_reports(read_fd: int) -> None:
    """The engine reports its start as JSON lines; the journal gets them on stderr."""
    with os.fdopen(read_fd, "rb") as reports:
        for line in reports:
            sys.stderr.write("burrow-tunnel: " + line.decode("utf-8", "replace"))
            sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one burrow.ssh tunnel in the foreground.")
    parser.add_argument("declaration", help="JSON file with the burrow.ssh.tunnel options of one tunnel")
    parser.add_argument("--state-dir", help="state dir (default $RUNTIME_DIRECTORY, else /run/burrow-tunnels)")
    parser.add_argument("--check", action="store_true", help="validate the declaration and the imports, then exit")
    args = parser.parse_args(argv)
    try:
        tunnel, warnings = load_declaration(args.declaration)
    except (OSError, ValueError, SpecError) as exc:
        sys.stderr.write(f"burrow-tunnel: invalid declaration {args.declaration}: {exc}\n")
        return EXIT_BAD_DECLARATION
    for warning in warnings:
        sys.stderr.write(f"burrow-tunnel: warning: {warning}\n")
    if not HAS_PARAMIKO:
        sys.stderr.write(f"burrow-tunnel: paramiko is not importable by {sys.executable}: {PARAMIKO_IMPORT_ERROR}\n")
        return EXIT_BAD_DECLARATION
    if args.check:
        sys.stdout.write(json.dumps({"ok": True, "name": tunnel.name, "forwards": [forward.key() for forward in tunnel.forwards]}) + "\n")
        return 0
    state_dir = ensure_state_dir(args.state_dir or os.environ.get("RUNTIME_DIRECTORY", "").split(":", maxsplit=1)[0] or "/run/burrow-tunnels")
    paths = TunnelPaths(state_dir, tunnel.name)
    try:
        with open(paths.state, encoding="utf-8") as handle:
            previous = json.load(handle)
    except (OSError, ValueError):
        previous = {}
    pid = previous.get("pid")
    if isinstance(pid, int) and pid != os.getpid() and process_start_time(pid) == previous.get("start_time"):
        sys.stderr.write(f"burrow-tunnel: tunnel {tunnel.name} already runs as pid {pid} in {state_dir}\n")
        return EXIT_START_FAILED
    read_fd, write_fd = os.pipe()
    relay = threading.Thread(target=_relay_reports, args=(read_fd,), name="burrow-reports", daemon=True)
    relay.start()
    code = daemon.serve(tunnel, paths, write_fd, None)
    relay.join(timeout=2)
    return code


if __name__ == "__main__":
    sys.exit(main())
