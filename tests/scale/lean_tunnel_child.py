# Copyright (c) 2026, the burrow.ssh team
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The child processes of tests/scale/measure_tunnel_memory.py: a fresh interpreter that imports the tunnel code only.

Kept apart from the measuring script so that the child imports nothing the measurement does not want counted
(no Ansible, no asyncio, no sandbox). The declaration (with whatever secrets it holds) arrives as one JSON line on
stdin, a pipe from the parent: never argv, environment or a file.

    python lean_tunnel_child.py daemon   one tunnel, run by the tunnel process's own serve() (control socket,
                                         state file, audit trail), its start report on the fd named in the line
    python lean_tunnel_child.py engines  many TunnelEngine instances in this one process: each line "N" on stdin
                                         starts N more (one -L each), answered by one JSON line of bound ports;
                                         with "control" in the first line each engine also gets the control socket
                                         and audit trail serve() would give it
"""

from __future__ import annotations

import json
import os
import sys
import typing as t


def _declaration(cfg: dict[str, t.Any], name: str) -> t.Any:
    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.spec.declaration import parse_declaration

    service = f"127.0.0.1:{cfg['service_port']}"
    params = {
        "name": name,
        "host": cfg["host"],
        "port": cfg["port"],
        "user": cfg["user"],
        "private_key_file": cfg["key"],
        "known_hosts_file": cfg["known_hosts"],
        "use_agent": False,
        "lifetime": "play",
        "ttl": 3600,
        "local_forwards": [f"127.0.0.1:0:{service}"],
        "remote_forwards": [],
        "dynamic_forwards": [],
    }
    return parse_declaration(params)


def run_daemon(cfg: dict[str, t.Any]) -> int:
    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process import daemon
    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import TunnelPaths, ensure_state_dir

    tunnel = _declaration(cfg, cfg["name"])
    paths = TunnelPaths(ensure_state_dir(cfg["state_dir"]), tunnel.name)
    if any(name == "ansible" or name.startswith("ansible.") for name in sys.modules):
        os.write(cfg["ready_fd"], b'{"ok": false, "error": {"message": "ansible was imported"}}\n')
        return 1
    return daemon.serve(tunnel, paths, cfg["ready_fd"], cfg.get("owner"))


def run_engines(cfg: dict[str, t.Any]) -> int:
    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.engine import TunnelEngine
    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.ssh.transport import use_deque_pipes

    use_deque_pipes()  # as daemon.serve() does
    engines = []
    extras: list[t.Callable[[], None]] = []
    try:
        for line in sys.stdin:  # the parent closes stdin to stop us
            ports = []
            for _index in range(max(0, min(200, int(line.strip() or 0)))):
                engine = TunnelEngine(_declaration(cfg, f"{cfg['name']}-{len(engines)}"))
                if cfg.get("control"):
                    extras.append(_control_and_audit(engine, cfg["state_dir"]))
                engine.start()
                engines.append(engine)
                ports.append(int(engine.status()["forwards"][0]["bound_port"]))
            print(json.dumps({"ports": ports, "ansible": any(name.split(".")[0] == "ansible" for name in sys.modules)}), flush=True)
    finally:
        for engine in engines:
            engine.stop(deadline=0)
        for close in extras:
            close()
    return 0


def _control_and_audit(engine: t.Any, state_dir: str) -> t.Callable[[], None]:
    """What serve() gives each tunnel besides its engine: its audit trail (audit=file) and its control socket."""
    import threading

    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process import daemon
    from ansible_collections.burrow.ssh.plugins.module_utils._tunnel.process.paths import TunnelPaths, ensure_state_dir

    paths = TunnelPaths(ensure_state_dir(state_dir), engine.tunnel.name)
    trail = engine.forward_set.audit = daemon._audit_trail(engine.tunnel, paths)
    server = daemon.ControlServer(paths.socket, engine, threading.Event(), [0.0])

    def close() -> None:
        server.close()
        daemon._close_audit(trail, paths)

    return close


def main() -> int:
    cfg = json.loads(sys.stdin.readline())
    sys.path.insert(0, cfg["collections_root"])
    return run_daemon(cfg) if sys.argv[1] == "daemon" else run_engines(cfg)


if __name__ == "__main__":
    sys.exit(main())
